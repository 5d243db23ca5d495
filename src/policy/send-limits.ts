import type { Logger } from '../log/logger.ts';
import type { Reply } from './mail-policy.ts';

// Sending limits per user, whichever way the user was authorized (SMTP AUTH or a
// POP-before-SMTP grant): a compromised account is a provider's real spam problem. Over a
// limit, mail is refused with a clear reply, never queued silently.

export interface SendLimitSettings {
  messagesPerHour: number;
  messagesPerDay: number;
  recipientsPerDay: number;
  /** Users without limits (a newsletter account the provider vouches for). */
  exemptUsers: readonly string[];
}

export interface SendUsage {
  user: string;
  messagesLastHour: number;
  messagesLastDay: number;
  recipientsLastDay: number;
}

/** Counts of relayed mail per user; SQLite here, Redis for a cluster later. */
export interface SendLimitStore {
  record(user: string, recipients: number, now: number): Promise<void>;
  usage(user: string, now: number): Promise<SendUsage>;
  list(now: number): Promise<SendUsage[]>;
  reset(user?: string): Promise<number>;
  sweep(now: number): Promise<void>;
}

export class SendLimits {
  readonly #store: SendLimitStore;
  readonly #settings: SendLimitSettings;
  readonly #exempt: Set<string>;
  readonly #log: Logger;

  constructor(store: SendLimitStore, settings: SendLimitSettings, log: Logger) {
    this.#store = store;
    this.#settings = settings;
    this.#exempt = new Set(settings.exemptUsers.map((u) => u.toLowerCase()));
    this.#log = log;
  }

  /** At MAIL FROM: may this user relay one more message? */
  async checkMessage(user: string, now = Date.now()): Promise<Reply | undefined> {
    if (this.#exempt.has(user.toLowerCase())) return undefined;
    const usage = await this.#store.usage(user, now);
    if (usage.messagesLastDay >= this.#settings.messagesPerDay) {
      this.#log.warn({ event: 'send_limit', limit: 'messages_per_day', ...usage }, 'sending limit reached');
      return { code: 550, enhanced: '5.7.1', text: `Sending limit reached: ${this.#settings.messagesPerDay} messages per day. Contact your provider if you need more` };
    }
    if (usage.messagesLastHour >= this.#settings.messagesPerHour) {
      this.#log.warn({ event: 'send_limit', limit: 'messages_per_hour', ...usage }, 'sending limit reached');
      return { code: 450, enhanced: '4.7.1', text: `Sending limit reached: ${this.#settings.messagesPerHour} messages per hour. Please try again later` };
    }
    return undefined;
  }

  /** At each relayed RCPT: `already` recipients of this message count too. */
  async checkRecipient(user: string, already: number, now = Date.now()): Promise<Reply | undefined> {
    if (this.#exempt.has(user.toLowerCase())) return undefined;
    const usage = await this.#store.usage(user, now);
    if (usage.recipientsLastDay + already >= this.#settings.recipientsPerDay) {
      this.#log.warn({ event: 'send_limit', limit: 'recipients_per_day', ...usage }, 'sending limit reached');
      return { code: 550, enhanced: '5.7.1', text: `Sending limit reached: ${this.#settings.recipientsPerDay} recipients per day. Contact your provider if you need more` };
    }
    return undefined;
  }

  /** After the 250: the message and its relayed recipients count. */
  async recordSent(user: string, recipients: number, now = Date.now()): Promise<void> {
    await this.#store.record(user, recipients, now);
  }

  sweep(now = Date.now()): Promise<void> {
    return this.#store.sweep(now);
  }
}
