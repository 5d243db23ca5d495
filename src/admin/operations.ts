import type { AccountStore } from '../accounts/store.ts';
import type { AuditLog } from '../audit/store.ts';
import type { ForwardingStore } from '../forwarding/store.ts';
import type { Mailstore } from '../mailstore/store.ts';
import type { LoginGuard } from '../policy/login-guard.ts';
import type { SendLimits } from '../policy/send-limits.ts';
import type { OutboundQueue } from '../queue/queue.ts';
import type { QueuedMessage } from '../queue/store.ts';
import type { QuotaStore } from '../quota/store.ts';
import type { PopBeforeSmtp } from '../relay-auth/pop-before-smtp.ts';
import type { VacationStore } from '../vacation/store.ts';

// The administrative changes, once, for the CLI and the console alike: each does the change
// through the same stores and rules, records who did it in the audit log, and answers the
// sentence both show. Passwords go to the stores and nowhere else: never into an entry.

/** Who asks: "cli", "admin NAME"; the client address of a web request ("" for the CLI). */
export interface Actor {
  actor: string;
  ip: string;
}

/** A change that cannot be made as asked (nothing was changed): the CLI exits 1, the console answers 4xx. */
export class OperationError extends Error {
  /** 404 for something that is not there, 400 for a request that cannot be right. */
  readonly status: 400 | 404;
  constructor(status: 400 | 404, message: string) {
    super(message);
    this.status = status;
  }
}

/** Spool ids are letters and digits only: anything else cannot name a message, nor a path. */
export const QUEUE_ID = /^[A-Za-z0-9]{1,64}$/;

const PICKUP = 'a running server picks up due mail within a few seconds (if none runs, it goes out when popgate serve starts)';

/** The stores the operations change (a part of the server's Backends, named here so nothing imports the server). */
export interface OperationBackends {
  accounts: AccountStore;
  mailstore: Mailstore;
  quotaStore: QuotaStore;
  forwarding: ForwardingStore;
  vacations: VacationStore;
  popBeforeSmtp: PopBeforeSmtp;
  queue: OutboundQueue;
  sendLimits: SendLimits;
  guard: LoginGuard;
  audit: AuditLog;
}

export class AdminOperations {
  readonly #b: OperationBackends;
  readonly #who: Actor;
  readonly #audit: AuditLog;

  constructor(backends: OperationBackends, who: Actor) {
    this.#b = backends;
    this.#who = who;
    this.#audit = backends.audit;
  }

  async #done(action: string, subject: string, detail: string): Promise<string> {
    await this.#audit.record({ at: Date.now(), actor: this.#who.actor, ip: this.#who.ip, action, subject, detail });
    return detail;
  }

  async addDomain(name: string): Promise<string> {
    await this.#b.accounts.addDomain(name);
    return this.#done('domain.add', name, `added domain ${name}; next: popgate user add someone@${name}`);
  }

  async removeDomain(name: string): Promise<string> {
    await this.#b.accounts.removeDomain(name);
    return this.#done('domain.remove', name, `removed domain ${name}`);
  }

  async addUser(address: string, password: string): Promise<string> {
    const added = await this.#b.accounts.addUser(address, password);
    const mailbox = await this.#b.mailstore.create(added.address);
    return this.#done('user.add', added.address, `added ${added.address} (mailbox ${mailbox})`);
  }

  async setPassword(address: string, password: string): Promise<string> {
    if (!(await this.#b.accounts.getUser(address))) throw new OperationError(404, `no such user: ${address} (see popgate user list)`);
    await this.#b.accounts.setPassword(address, password);
    return this.#done('user.passwd', address.toLowerCase(), `password changed for ${address}`);
  }

  async removeUser(address: string): Promise<string> {
    const { accounts, mailstore, quotaStore, forwarding, vacations } = this.#b;
    await accounts.removeUser(address);
    const removed = address.toLowerCase();
    await Promise.all([quotaStore.forget(removed), forwarding.remove(removed), vacations.remove(removed)]);
    return this.#done('user.remove', removed, `removed ${address}; its mail is still in ${mailstore.location(removed)} (delete that folder to erase it)`);
  }

  async addAlias(alias: string, targets: string[]): Promise<string> {
    await this.#b.accounts.addAlias(alias, targets);
    return this.#done('alias.add', alias.toLowerCase(), `${alias} -> ${targets.join(', ')}`);
  }

  async removeAlias(alias: string, targets: string[] = []): Promise<string> {
    await this.#b.accounts.removeAlias(alias, targets);
    return this.#done('alias.remove', alias.toLowerCase(), `removed ${alias}${targets.length ? ` -> ${targets.join(', ')}` : ''}`);
  }

  async revokeGrant(address: string, user?: string): Promise<string> {
    const removed = await this.#b.popBeforeSmtp.revoke(address, user);
    if (removed === 0) throw new OperationError(404, `no grant for ${address}${user ? ` and ${user}` : ''} (see popgate relay list)`);
    return this.#done('grant.revoke', user ? `${address} ${user}` : address, `revoked ${removed} grant(s) for ${address}; it must log in to POP3 again before relaying`);
  }

  /** The queued message with this id; OperationError 404 when there is none (or the id cannot be one). */
  async queuedMessage(id: string): Promise<QueuedMessage> {
    const message = QUEUE_ID.test(id) ? await this.#b.queue.get(id) : undefined;
    if (!message) throw new OperationError(404, `no queued message ${id}: see popgate queue list`);
    return message;
  }

  /** Makes one message (or all, without an id) due now. */
  async retryQueue(id?: string): Promise<string> {
    if (id !== undefined) {
      await this.queuedMessage(id);
      await this.#b.queue.retryNow(id, Date.now());
      return this.#done('queue.retry', id, `1 message due now (${id}); ${PICKUP}`);
    }
    const total = (await this.#b.queue.list()).length;
    if (total === 0) return 'queue is empty';
    const changed = await this.#b.queue.retryNow(undefined, Date.now());
    return this.#done('queue.retry', '*', `${total} message(s) due now (${changed} were waiting for a later attempt); ${PICKUP}`);
  }

  /** Removes a message without a bounce. */
  async deleteQueued(id: string): Promise<string> {
    const message = await this.queuedMessage(id);
    await this.#b.queue.remove(id);
    const open = message.recipients.filter((r) => r.state === 'pending' || r.state === 'failed').map((r) => r.address);
    const done = message.recipients.length - open.length;
    const to = open.length > 0 ? open.join(', ') : 'no recipient still waiting';
    return this.#done(
      'queue.delete',
      id,
      `deleted ${id} from ${message.from === '' ? '<>' : message.from} to ${to}${done > 0 ? ` (${done} already delivered or bounced)` : ''}; ` +
        'no bounce was sent, so tell the sender yourself if they should know',
    );
  }

  /** Forgets sending counts (of a user) and failed logins and lockouts (of a user or address); all without a subject. */
  async resetLimits(subject?: string): Promise<string> {
    const sent = subject === undefined || subject.includes('@') ? await this.#b.sendLimits.reset(subject) : 0;
    const logins = await this.#b.guard.reset(subject);
    return this.#done(
      'limits.reset',
      subject ?? '*',
      `cleared ${sent} counted message(s) and ${logins} failed-login record(s)${subject ? ` of ${subject}` : ''}: sending and logging in are allowed again at once`,
    );
  }
}
