import type { IncomingMessage, MailboxServices, MessageAcceptance, RefusedRecipient } from '../acceptance/acceptance.ts';
import type { AccountStore } from '../accounts/store.ts';
import { buildDsn } from '../delivery/dsn.ts';
import { forwardedCopy } from '../forwarding/forwarding.ts';
import type { Logger } from '../log/logger.ts';
import type { Refusal } from '../policy/mail-policy.ts';
import type { MailboxQuotas } from '../quota/quota.ts';
import type { Srs } from '../srs/srs.ts';
import type { VacationResponder } from '../vacation/vacation.ts';

// What message acceptance asks of the mailbox services, in one place: room in each mailbox
// (quotas), how a forwarded copy leaves (SRS, loops), and what follows a delivery (a report
// of the recipients refused, vacation replies). Each feature is optional; app.ts wires them
// as the config says.

export interface MailboxServiceParts {
  accounts: AccountStore;
  quotas?: MailboxQuotas;
  srs?: Srs;
  vacation?: VacationResponder;
  log: Logger;
}

export interface MailboxServiceSettings {
  hostname: string;
  /** Return the whole refused message in the report up to this size (outbound.bounce_size_limit). */
  bounceReturnLimit: number;
}

/** RFC 3463 statuses of the refusals a report names. */
const STATUS: Partial<Record<Refusal['reason'], string>> = { 'mailbox-full': '5.2.2', 'forwarding-loop': '5.4.6' };

export class DeliveryServices implements MailboxServices {
  readonly #parts: MailboxServiceParts;
  readonly #settings: MailboxServiceSettings;

  constructor(parts: MailboxServiceParts, settings: MailboxServiceSettings) {
    this.#parts = parts;
    this.#settings = settings;
  }

  async mailbox(mailbox: string, size: number): Promise<Refusal | undefined> {
    const quotas = this.#parts.quotas;
    if (!quotas) return undefined;
    let decision;
    try {
      decision = await quotas.check(mailbox, size);
    } catch (error) {
      this.#parts.log.error({ event: 'quota_unavailable', mailbox, err: error }, 'cannot check the mailbox quota');
      return { reason: 'mailbox-unavailable', address: mailbox };
    }
    return decision.ok ? undefined : { reason: 'mailbox-full', address: mailbox, permanent: decision.permanent };
  }

  async forward(sender: string, by: string, content: readonly Buffer[]): Promise<{ ok: true; sender: string; header: Buffer } | { ok: false; refusal: Refusal }> {
    const domain = sender.slice(sender.lastIndexOf('@') + 1).toLowerCase();
    const own = sender !== '' && (domain === this.#parts.srs?.domain || (await this.#parts.accounts.isLocalDomain(domain)));
    const copy = forwardedCopy(sender, by, content, { srs: this.#parts.srs, isOwnDomain: () => own });
    if (copy.ok) return copy;
    this.#parts.log.warn({ event: 'forwarding_loop', by, sender }, 'mail forwarding loop: the copy is not forwarded again');
    return { ok: false, refusal: { reason: 'forwarding-loop', address: by } };
  }

  async delivered(message: IncomingMessage, outcome: { id: string; mailboxes: readonly string[]; refused: readonly RefusedRecipient[] }, acceptance: MessageAcceptance): Promise<void> {
    if (outcome.refused.length > 0) await this.#report(message, outcome.id, outcome.refused, acceptance);
    const vacation = this.#parts.vacation;
    if (!vacation) return;
    for (const user of outcome.mailboxes) {
      try {
        const answer = await vacation.reply(user, () => this.#parts.accounts.sendableAddresses(user), message);
        if (answer.decision !== 'reply') continue;
        // Signed for the user's own domain: the reply's From: is the user.
        const id = await acceptance.accept({
          sender: '',
          mailboxes: [],
          remote: [message.sender],
          content: [answer.reply],
          clientIp: '127.0.0.1',
          authorizedUser: user,
          signingDomain: user.slice(user.lastIndexOf('@') + 1),
        });
        this.#parts.log.info({ event: 'vacation_reply', user, to: message.sender, queueId: id }, 'vacation reply queued');
      } catch (error) {
        // The message is delivered; a reply that cannot be made is only logged.
        this.#parts.log.error({ event: 'vacation_failed', user, to: message.sender, err: error }, 'cannot send the vacation reply');
      }
    }
  }

  /** The sender learns which recipients did not get the message (RFC 3464), as from the queue. */
  async #report(message: IncomingMessage, id: string, refused: readonly RefusedRecipient[], acceptance: MessageAcceptance): Promise<void> {
    const log = this.#parts.log;
    const recipients = refused.map((r) => r.address);
    if (message.sender === '') {
      log.warn({ event: 'bounce_discarded', queueId: id, recipients }, 'recipients refused a message with a null sender: no report is sent');
      return;
    }
    try {
      const dsn = buildDsn({
        reportingMta: this.#settings.hostname,
        queueId: id,
        to: message.sender,
        arrivalDate: Date.now(),
        recipients: refused.map((r) => ({
          address: r.address,
          action: 'failed' as const,
          status: STATUS[r.refusal.reason] ?? '5.0.0',
          diagnostic: r.refusal.reason === 'mailbox-full' ? 'Mailbox full: the recipient is over its quota' : `Mail forwarding loop for <${r.address}>`,
        })),
        original: Buffer.concat(message.content),
        returnLimit: this.#settings.bounceReturnLimit,
      });
      const dsnId = await acceptance.accept({ sender: '', mailboxes: [], remote: [message.sender], content: [dsn], clientIp: '127.0.0.1' });
      log.info({ event: 'bounce', queueId: id, dsnId, to: message.sender, recipients }, 'recipients refused the message: report queued for the sender');
    } catch (error) {
      log.error({ event: 'bounce_failed', queueId: id, recipients, err: error }, 'cannot queue the report of refused recipients');
    }
  }
}
