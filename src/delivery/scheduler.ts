import { RecipientsRefused, type MessageAcceptance } from '../acceptance/acceptance.ts';
import { headerFromDomain, type DkimSigner } from '../dkim/sign.ts';
import type { MailMetrics } from '../metrics/metrics.ts';
import type { Logger } from '../log/logger.ts';
import type { MailPolicy } from '../policy/mail-policy.ts';
import type { OutboundQueue } from '../queue/queue.ts';
import type { QueuedMessage, RecipientUpdate } from '../queue/store.ts';
import { buildDsn, type DsnRecipient } from './dsn.ts';
import type { Route, Router, Target } from './route.ts';
import { ClientSession, SessionError, type Answer, type ClientSettings } from './smtp-client.ts';
import { Status } from './status.ts';

// The delivery scheduler: takes due messages from the queue, hands each recipient domain to
// a destination (one per next hop) that keeps a few SMTP sessions open and sends message
// after message over them, records every answer, and decides per message: done, retry
// later, or bounce. RFC 5321 §4.5.4 (retry strategy) and §6.1 (responsibility until a final
// answer) are the rules it follows.

export interface DeliverySettings {
  hostname: string;
  maxConnections: number;
  maxConnectionsPerDestination: number;
  maxMessagesPerConnection: number;
  /** Waits between attempts; the last one repeats until maxLifetimeMs. */
  retryScheduleMs: number[];
  maxLifetimeMs: number;
  /** 0: never warn about delayed mail. */
  delayWarningMs: number;
  /** Bounces carry the whole message up to this size, otherwise its header only. */
  bounceReturnLimit: number;
  /** Client settings for a route (the relayhost may have its own TLS and login). */
  clientFor(route: Extract<Route, { ok: true }>): ClientSettings;
  /** How often the queue is looked at even when nothing woke the scheduler (CLI changes). */
  pollMs: number;
  /** How long a message being delivered stays claimed if its delivery never ends. */
  leaseMs: number;
  /**
   * The name this scheduler's leases carry (Backends.holder). It releases only its own leases,
   * never those of another node sharing the queue; a dead owner's leases run out after leaseMs.
   */
  leaseOwner: string;
}

export interface DeliveryDeps {
  queue: OutboundQueue;
  router: Router;
  signer: DkimSigner;
  policy: MailPolicy;
  /** Where mail the scheduler makes or delivers itself is taken in: local copies, forwards, bounces. */
  acceptance: MessageAcceptance;
  log: Logger;
  /** Where each recipient's outcome is counted (src/metrics). */
  metrics?: Pick<MailMetrics, 'delivery'>;
}

type Outcome = 'delivered' | 'deferred' | 'bounced';

interface Prepared {
  raw: Buffer;
  /** The message as it leaves: DKIM-signed when a key exists for its From: domain. */
  outgoing?: Buffer;
  /** Why it cannot leave right now (signing failed). */
  problem?: Answer;
}

interface Job {
  message: QueuedMessage;
  domain: string;
  recipients: string[];
  prepare(): Promise<Prepared>;
  done(updates: RecipientUpdate[]): void;
}

interface Destination {
  key: string;
  jobs: Job[];
  workers: number;
}

export class DeliveryScheduler {
  readonly #settings: DeliverySettings;
  readonly #deps: DeliveryDeps;
  /** When each message in flight was claimed (performance.now()), for the delivery-time histogram. */
  readonly #claimedAt = new Map<string, number>();
  readonly #log: Logger;
  readonly #inFlight = new Set<string>();
  readonly #running = new Set<Promise<void>>();
  readonly #destinations = new Map<string, Destination>();
  readonly #sessions = new Set<ClientSession>();
  readonly #maxInFlight: number;
  #connections = 0;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #again = false;
  #stopped = true;

  constructor(settings: DeliverySettings, deps: DeliveryDeps) {
    this.#settings = settings;
    this.#deps = deps;
    this.#log = deps.log;
    this.#maxInFlight = Math.max(100, settings.maxConnections * 10);
  }

  /** Whatever a run under the same lease owner was delivering when it stopped (or crashed) is due again at once. */
  async start(): Promise<void> {
    await this.#deps.queue.releaseLeases(Date.now(), this.#settings.leaseOwner);
    this.#stopped = false;
    this.wake();
  }

  /** Look at the queue now (a message was queued, or an operator asked). */
  wake(): void {
    if (this.#stopped) return;
    this.#arm(0);
  }

  /** Messages being delivered right now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Stops taking messages, lets running transactions finish for up to `graceMs`, then closes
   * every session. Whatever was not answered stays queued, and its leases are released so that
   * another node, or this one after a restart under a new name, takes it at once.
   */
  async stop(graceMs: number): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    for (const destination of this.#destinations.values()) {
      for (const job of destination.jobs.splice(0)) job.done([]);
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.#running]), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const session of this.#sessions) session.close();
    try {
      await this.#deps.queue.releaseLeases(Date.now(), this.#settings.leaseOwner);
    } catch (error) {
      this.#log.error({ event: 'queue_error', err: error }, 'cannot release the leases at stop: those messages wait until their leases run out');
    }
  }

  #arm(delayMs: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#tick(), Math.max(0, Math.min(delayMs, 2 ** 31 - 1)));
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    this.#ticking = true;
    try {
      do {
        this.#again = false;
        const room = this.#maxInFlight - this.#inFlight.size;
        if (room <= 0) break;
        const due = await this.#deps.queue.claim(Date.now(), room, this.#settings.leaseMs, this.#settings.leaseOwner);
        for (const message of due) if (!this.#inFlight.has(message.id)) this.#track(message);
        if (due.length === room) this.#again = true;
      } while (this.#again && !this.#stopped);
      const next = await this.#nextDueAt();
      this.#arm(next === undefined ? this.#settings.pollMs : Math.min(this.#settings.pollMs, next - Date.now()));
    } catch (error) {
      this.#log.error({ event: 'queue_error', err: error }, 'queue scan failed; trying again shortly');
      this.#arm(this.#settings.pollMs);
    } finally {
      this.#ticking = false;
    }
  }

  async #nextDueAt(): Promise<number | undefined> {
    if (this.#inFlight.size >= this.#maxInFlight) return undefined;
    return this.#deps.queue.nextDueAt();
  }

  #track(message: QueuedMessage): void {
    this.#inFlight.add(message.id);
    this.#claimedAt.set(message.id, performance.now());
    const run = this.#process(message)
      .catch((error) => this.#log.error({ event: 'queue_error', queueId: message.id, err: error }, 'delivery run failed; the message stays queued'))
      .finally(() => {
        this.#inFlight.delete(message.id);
        this.#claimedAt.delete(message.id);
        this.#running.delete(run);
        this.wake();
      });
    this.#running.add(run);
  }

  /** One attempt at every pending recipient of a message, then the decision. */
  async #process(message: QueuedMessage): Promise<void> {
    const pending = message.recipients.filter((r) => r.state === 'pending').map((r) => r.address);
    let updates: RecipientUpdate[] = [];
    // The spool file is read (and signed) once per attempt, by whichever needs it first;
    // a bounce reuses the same bytes.
    let prepared: Promise<Prepared> | undefined;
    const prepare = () => (prepared ??= this.#prepare(message));
    if (pending.length > 0) {
      const byDomain = new Map<string, string[]>();
      for (const address of pending) {
        const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
        byDomain.set(domain, [...(byDomain.get(domain) ?? []), address]);
      }
      const jobs: Promise<RecipientUpdate[]>[] = [];
      for (const [domain, recipients] of byDomain) {
        jobs.push(
          (async () =>
            (await this.#deps.policy.isLocalDomain(domain))
              ? this.#deliverLocally(message, recipients, prepare)
              : new Promise<RecipientUpdate[]>((resolve) => this.#submit({ message, domain, recipients, prepare, done: resolve })))(),
        );
      }
      updates = (await Promise.all(jobs)).flat();
    }
    // Stopping: what was not answered stays due and is tried first after the restart.
    if (!this.#stopped) await this.#decide(message, updates, async () => (await prepare()).raw);
  }

  async #prepare(message: QueuedMessage): Promise<Prepared> {
    const raw = await this.#deps.queue.read(message.id);
    const result = await this.#deps.signer.sign(raw, await this.#deps.queue.signingDomain(message.id));
    if (result.signed) return { raw, outgoing: result.message };
    if (result.reason !== 'failed') return { raw, outgoing: raw };
    this.#log.error({ event: 'dkim_failed', queueId: message.id, error: result.error }, 'DKIM signing failed: the message waits until the key is fixed');
    return { raw, problem: { code: 0, status: Status.securityTemporary, text: `DKIM signing failed (${result.error}); popgate keeps the message and retries` } };
  }

  // --- local recipients (a bounce to a local sender, for example) ---

  async #deliverLocally(message: QueuedMessage, recipients: string[], prepare: () => Promise<Prepared>): Promise<RecipientUpdate[]> {
    const { raw } = await prepare();
    const updates: RecipientUpdate[] = [];
    for (const address of recipients) {
      let update: RecipientUpdate;
      try {
        const targets = await this.#deps.policy.localTargets(address);
        if (!targets) {
          update = { address, state: 'failed', status: Status.noSuchUser, diagnostic: `No such user here: <${address}>` };
        } else {
          await this.#deps.acceptance.accept({
            sender: message.from,
            mailboxes: targets.mailboxes,
            remote: [],
            forwarded: targets.remote.length > 0 ? [{ by: address, to: targets.remote }] : [],
            content: [raw],
            clientIp: message.clientIp,
            authorizedUser: message.authorizedUser,
          });
          update = { address, state: 'delivered', status: Status.delivered, diagnostic: `delivered to ${[...targets.mailboxes, ...targets.remote].join(', ')}` };
        }
      } catch (error) {
        // A full mailbox (hard quota) or a forwarding loop will not change by waiting: bounced.
        const refusal = error instanceof RecipientsRefused ? error.refusal : undefined;
        const final = refusal?.reason === 'forwarding-loop' || (refusal?.reason === 'mailbox-full' && refusal.permanent);
        update = final
          ? { address, state: 'failed', status: refusal.reason === 'mailbox-full' ? '5.2.2' : '5.4.6', diagnostic: (error as Error).message }
          : { address, state: 'pending', status: Status.localError, diagnostic: `local delivery failed: ${(error as Error).message}` };
      }
      this.#logAttempt(message, address, undefined, update);
      updates.push(update);
    }
    return updates;
  }

  // --- destinations: per next hop, a few sessions, messages one after another ---

  #submit(job: Job): void {
    const key = this.#deps.router.destinationKey(job.domain);
    let destination = this.#destinations.get(key);
    if (!destination) {
      destination = { key, jobs: [], workers: 0 };
      this.#destinations.set(key, destination);
    }
    destination.jobs.push(job);
    this.#pump(destination);
  }

  #pump(destination: Destination): void {
    while (
      !this.#stopped &&
      destination.jobs.length > 0 &&
      destination.workers < this.#settings.maxConnectionsPerDestination &&
      this.#connections < this.#settings.maxConnections
    ) {
      destination.workers++;
      this.#connections++;
      void this.#work(destination).finally(() => {
        destination.workers--;
        this.#connections--;
        if (destination.workers === 0 && destination.jobs.length === 0) this.#destinations.delete(destination.key);
        for (const other of this.#destinations.values()) if (other.jobs.length > 0) this.#pump(other);
      });
    }
  }

  /** One connection's life: open, send queued jobs for this destination, close. */
  async #work(destination: Destination): Promise<void> {
    let session: ClientSession | undefined;
    try {
      while (destination.jobs.length > 0 && !this.#stopped) {
        const job = destination.jobs.shift()!;
        try {
          session = await this.#send(job, destination, session);
        } catch (error) {
          // A local fault (the spool file unreadable, say) must not strand the other jobs:
          // this one is answered as deferred and the worker carries on.
          this.#log.error({ event: 'queue_error', queueId: job.message.id, err: error }, 'delivery failed on our side; the message stays queued');
          const answer: Answer = { code: 0, status: Status.localError, text: `local error: ${(error as Error).message}` };
          job.done(job.recipients.map((address) => this.#update(job.message, address, answer, undefined, false)));
          if (session) this.#close(session);
          session = undefined;
        }
      }
    } finally {
      if (session) this.#close(session);
    }
  }

  /** Sends one job, opening a session if needed; returns the session to reuse, if any. */
  async #send(job: Job, destination: Destination, current: ClientSession | undefined): Promise<ClientSession | undefined> {
    const prepared = await job.prepare();
    if (!prepared.outgoing) {
      job.done(job.recipients.map((address) => this.#update(job.message, address, prepared.problem!, undefined)));
      return current;
    }
    let session = current;
    if (!session || !session.usable || session.sent >= this.#settings.maxMessagesPerConnection) {
      if (session) this.#close(session);
      session = undefined;
      const route = await this.#deps.router.route(job.domain);
      if (!route.ok) {
        const answer: Answer = { code: 0, status: route.status, text: route.reason };
        job.done(job.recipients.map((address) => this.#update(job.message, address, answer, undefined, route.permanent)));
        return undefined;
      }
      const opened = await this.#open(route);
      if (opened instanceof SessionError) {
        // The next hop is unreachable: every job waiting for it now would fail the same
        // way, so they are answered at once and retried on their own schedules.
        for (const waiting of [job, ...destination.jobs.splice(0)]) {
          waiting.done(waiting.recipients.map((address) => this.#update(waiting.message, address, opened.answer, opened.target, opened.permanent)));
        }
        return undefined;
      }
      session = opened.session;
    }
    try {
      const answers = await session.send(job.message.from, job.recipients, prepared.outgoing);
      job.done(answers.map((a) => this.#update(job.message, a.recipient, a, session)));
      return session;
    } catch (error) {
      if (!(error instanceof SessionError)) throw error;
      job.done(job.recipients.map((address) => this.#update(job.message, address, error.answer, session)));
      this.#close(session);
      return undefined;
    }
  }

  /** Tries the route's targets in order (RFC 5321 §5.1); the first that answers is used. */
  async #open(route: Extract<Route, { ok: true }>): Promise<{ session: ClientSession } | (SessionError & { target?: Target; permanent?: boolean })> {
    const settings = this.#settings.clientFor(route);
    let last: (SessionError & { target?: Target; permanent?: boolean }) | undefined;
    let allRefusedPermanently = true;
    for (const target of route.targets) {
      try {
        const session = await ClientSession.open(target, settings);
        this.#sessions.add(session);
        return { session };
      } catch (error) {
        if (!(error instanceof SessionError)) throw error;
        last = Object.assign(error, { target });
        // A refused login (relayhost) is a setting to fix, never a reason to bounce.
        if (error.answer.code < 500 || !error.tryNextHost) allRefusedPermanently = false;
        this.#log.info(
          { event: 'connect_failed', host: target.host, ip: target.ip, port: target.port, reply: error.answer.text },
          `cannot use ${target.host} [${target.ip}]:${target.port}`,
        );
        if (!error.tryNextHost || this.#stopped) break;
      }
    }
    // Every host refused the session with 5xx: no next hop will take this mail.
    last!.permanent = allRefusedPermanently;
    return last!;
  }

  #close(session: ClientSession): void {
    session.close();
    this.#sessions.delete(session);
  }

  /** An answer becomes a recipient's new state, with its log line. */
  #update(message: QueuedMessage, address: string, answer: Answer, via: ClientSession | Target | undefined, permanent?: boolean): RecipientUpdate {
    const target = via instanceof ClientSession ? via.target : via;
    const final = permanent ?? answer.code >= 500;
    const state = answer.code >= 200 && answer.code < 300 ? 'delivered' : final ? 'failed' : 'pending';
    const update: RecipientUpdate = {
      address,
      state,
      status: answer.status,
      diagnostic: answer.text,
      remoteMta: target?.host,
    };
    this.#logAttempt(message, address, via, update);
    return update;
  }

  #logAttempt(message: QueuedMessage, recipient: string, via: ClientSession | Target | undefined, update: RecipientUpdate): void {
    const session = via instanceof ClientSession ? via : undefined;
    const target = session?.target ?? (via as Target | undefined);
    const outcome: Outcome = update.state === 'delivered' ? 'delivered' : update.state === 'failed' ? 'bounced' : 'deferred';
    this.#deps.metrics?.delivery(outcome, (performance.now() - (this.#claimedAt.get(message.id) ?? performance.now())) / 1000);
    this.#log[outcome === 'delivered' ? 'info' : 'warn'](
      {
        event: 'delivery',
        queueId: message.id,
        from: message.from,
        recipient,
        host: target?.host ?? 'local',
        ip: target?.ip,
        port: target?.port,
        tls: session ? session.tls : false,
        tlsVerified: session?.tls ? session.verified : undefined,
        status: update.status,
        reply: update.diagnostic,
        attempt: message.attempts + 1,
        outcome,
      },
      `${recipient}: ${outcome}`,
    );
  }

  // --- after an attempt: done, retry, or bounce ---

  /**
   * Decides from the attempt's answers (held in memory, so a finished message costs one
   * write: its removal): done, bounce some recipients, or try again later. A crash before
   * the write repeats the attempt, which RFC 5321 §6.1 accepts; nothing is lost.
   */
  async #decide(message: QueuedMessage, updates: RecipientUpdate[], original: () => Promise<Buffer>): Promise<void> {
    const now = Date.now();
    const age = now - message.receivedAt;
    const byAddress = new Map(updates.map((u) => [u.address, u]));
    const recipients: RecipientUpdate[] = message.recipients.map((r) => byAddress.get(r.address) ?? r);
    const changed = new Set(byAddress.keys());
    if (age >= this.#settings.maxLifetimeMs) {
      // RFC 5321 §4.5.4.1: give up after the configured time and tell the sender.
      const days = Math.round((age / 86_400_000) * 10) / 10;
      for (const [i, r] of recipients.entries()) {
        if (r.state !== 'pending') continue;
        recipients[i] = { ...r, state: 'failed', status: r.status?.startsWith('4.') ? r.status : Status.expired, diagnostic: `gave up after ${days} days: ${r.diagnostic ?? 'no answer'}` };
        changed.add(r.address);
      }
    }
    const failed = recipients.filter((r) => r.state === 'failed');
    if (failed.length > 0) {
      await this.#bounce(message, original, failed.map((r) => ({ address: r.address, action: 'failed', status: r.status ?? Status.otherPermanent, diagnostic: r.diagnostic, remoteMta: r.remoteMta })));
      for (const [i, r] of recipients.entries()) {
        if (r.state !== 'failed') continue;
        recipients[i] = { ...r, state: 'bounced' };
        changed.add(r.address);
      }
    }
    const pending = recipients.filter((r) => r.state === 'pending');
    if (pending.length === 0) {
      await this.#deps.queue.remove(message.id);
      this.#log.debug(
        { event: 'queue_done', queueId: message.id, delivered: recipients.filter((r) => r.state === 'delivered').length, bounced: recipients.filter((r) => r.state === 'bounced').length },
        'message left the queue',
      );
      return;
    }
    let warned = message.warned;
    if (this.#settings.delayWarningMs > 0 && !warned && message.from !== '' && age >= this.#settings.delayWarningMs) {
      await this.#bounce(
        message,
        original,
        pending.map((r) => ({ address: r.address, action: 'delayed', status: r.status?.startsWith('4.') ? r.status : Status.otherTemporary, diagnostic: r.diagnostic, remoteMta: r.remoteMta })),
      );
      warned = true;
    }
    const schedule = this.#settings.retryScheduleMs;
    const wait = schedule[Math.min(message.attempts, schedule.length - 1)];
    const next = Math.min(now + wait, message.receivedAt + this.#settings.maxLifetimeMs);
    await this.#deps.queue.recordAttempt(
      message.id,
      recipients.filter((r) => changed.has(r.address)),
      { attempts: message.attempts + 1, nextAttemptAt: next, lastError: pending[0].diagnostic, warned },
      now,
    );
    this.#log.info(
      { event: 'queue_retry', queueId: message.id, pending: pending.length, attempts: message.attempts + 1, nextAttemptAt: new Date(next).toISOString() },
      'deferred: the pending recipients are tried again later',
    );
  }

  /**
   * A DSN to the envelope sender (RFC 3464), queued like any message before the recipients
   * count as bounced. Never to the null sender (RFC 5321 §4.5.5): that would loop.
   */
  async #bounce(message: QueuedMessage, original: () => Promise<Buffer>, recipients: DsnRecipient[]): Promise<void> {
    const failed = recipients.filter((r) => r.action === 'failed');
    if (message.from === '') {
      if (failed.length > 0) {
        this.#log.warn({ event: 'bounce_discarded', queueId: message.id, recipients: failed.map((r) => r.address) }, 'undeliverable message with a null sender: no bounce is sent');
      }
      return;
    }
    const raw = await original();
    const dsn = buildDsn({
      reportingMta: this.#settings.hostname,
      queueId: message.id,
      to: message.from,
      arrivalDate: message.receivedAt,
      recipients,
      original: raw,
      returnLimit: this.#settings.bounceReturnLimit,
      retryUntil: message.receivedAt + this.#settings.maxLifetimeMs,
    });
    // popgate wrote this report and its From: (the mailer-daemon of its own host name).
    const signingDomain = headerFromDomain(dsn);
    const id = await this.#deps.acceptance.accept({ sender: '', mailboxes: [], remote: [message.from], content: [dsn], clientIp: '127.0.0.1', signingDomain });
    this.#log.info(
      { event: failed.length > 0 ? 'bounce' : 'delay_warning', queueId: message.id, dsnId: id, to: message.from, recipients: recipients.map((r) => r.address) },
      failed.length > 0 ? 'bounce queued for the sender' : 'delay warning queued for the sender',
    );
  }
}
