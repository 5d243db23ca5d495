import type { Logger } from '../log/logger.ts';

// Sending limits per user, whichever way the user was authorized (SMTP AUTH or a
// POP-before-SMTP grant): a compromised account is a provider's real spam problem. Over a
// limit, mail is refused (the protocol words the reply), never queued silently.

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

/** A limit a user has reached. */
export interface LimitExceeded {
  limit: 'messages_per_hour' | 'messages_per_day' | 'recipients_per_day';
  max: number;
  /** worth retrying later (the hourly limit) */
  temporary: boolean;
}

/**
 * Counts of relayed mail per user; SQLite here, Redis for a cluster later. The hour and the
 * day are the ones before `now`, judged when asked: old counts need no sweep to stop counting.
 */
export interface SendLimitStore {
  /** Counts one relayed message with its relayed recipients, sent at `now`. */
  record(user: string, recipients: number, now: number): Promise<void>;
  /** The user's messages later than `now` - 1 hour and `now` - 1 day, and their recipients within the day. */
  usage(user: string, now: number): Promise<SendUsage>;
  /** The usage of every user who relayed within the day before `now`, ordered by user. */
  list(now: number): Promise<SendUsage[]>;
  /** Forgets a user's counts (everyone's when undefined); resolves to how many messages were forgotten. */
  reset(user?: string): Promise<number>;
  /** Housekeeping: forgets messages sent a day or more before `now`. */
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
  async checkMessage(user: string, now = Date.now()): Promise<LimitExceeded | undefined> {
    if (this.#exempt.has(user.toLowerCase())) return undefined;
    const usage = await this.#store.usage(user, now);
    if (usage.messagesLastDay >= this.#settings.messagesPerDay) return this.#exceeded('messages_per_day', this.#settings.messagesPerDay, usage);
    if (usage.messagesLastHour >= this.#settings.messagesPerHour) return this.#exceeded('messages_per_hour', this.#settings.messagesPerHour, usage);
    return undefined;
  }

  /** At each relayed RCPT: `already` recipients of this message count too. */
  async checkRecipient(user: string, already: number, now = Date.now()): Promise<LimitExceeded | undefined> {
    if (this.#exempt.has(user.toLowerCase())) return undefined;
    const usage = await this.#store.usage(user, now);
    if (usage.recipientsLastDay + already >= this.#settings.recipientsPerDay) return this.#exceeded('recipients_per_day', this.#settings.recipientsPerDay, usage);
    return undefined;
  }

  #exceeded(limit: LimitExceeded['limit'], max: number, usage: SendUsage): LimitExceeded {
    this.#log.warn({ event: 'send_limit', limit, ...usage }, 'sending limit reached');
    return { limit, max, temporary: limit === 'messages_per_hour' };
  }

  /** After the 250: the message and its relayed recipients count. */
  async recordSent(user: string, recipients: number, now = Date.now()): Promise<void> {
    await this.#store.record(user, recipients, now);
  }

  /** A user's relayed mail within the hour and the day (for `popgate limits show`). */
  usage(user: string, now = Date.now()): Promise<SendUsage> {
    return this.#store.usage(user, now);
  }

  /** Every user who relayed mail within the day. */
  list(now = Date.now()): Promise<SendUsage[]> {
    return this.#store.list(now);
  }

  /** Lets a user (everyone when undefined) send again at once; resolves to how many messages were forgotten. */
  reset(user?: string): Promise<number> {
    return this.#store.reset(user);
  }

  sweep(now = Date.now()): Promise<void> {
    return this.#store.sweep(now);
  }
}
