import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { Logger } from '../log/logger.ts';

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

export interface LimitExceeded {
  limit: 'messages_per_hour' | 'messages_per_day' | 'recipients_per_day';
  max: number;
  /** worth retrying later (the hourly limit) */
  temporary: boolean;
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

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export class SqliteSendLimitStore implements SendLimitStore {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #usage: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    db.exec(`CREATE TABLE IF NOT EXISTS send_events (
      user TEXT NOT NULL,
      at INTEGER NOT NULL,
      recipients INTEGER NOT NULL
    ) STRICT`);
    db.exec('CREATE INDEX IF NOT EXISTS send_events_user_at ON send_events (user, at)');
    this.#insert = db.prepare('INSERT INTO send_events (user, at, recipients) VALUES (?, ?, ?)');
    this.#usage = db.prepare(
      `SELECT count(*) AS day, coalesce(sum(recipients), 0) AS recipients, coalesce(sum(at > ?2), 0) AS hour
       FROM send_events WHERE user = ?1 AND at > ?3`,
    );
  }

  async record(user: string, recipients: number, now: number): Promise<void> {
    this.#insert.run(user, now, recipients);
  }

  async usage(user: string, now: number): Promise<SendUsage> {
    const row = this.#usage.get(user, now - HOUR, now - DAY) as { day: number; recipients: number; hour: number };
    return { user, messagesLastHour: row.hour, messagesLastDay: row.day, recipientsLastDay: row.recipients };
  }

  async list(now: number): Promise<SendUsage[]> {
    const users = (this.#db.prepare('SELECT DISTINCT user FROM send_events WHERE at > ? ORDER BY user').all(now - DAY) as { user: string }[]).map((r) => r.user);
    return Promise.all(users.map((user) => this.usage(user, now)));
  }

  async reset(user?: string): Promise<number> {
    const result = user === undefined ? this.#db.prepare('DELETE FROM send_events').run() : this.#db.prepare('DELETE FROM send_events WHERE user = ?').run(user);
    return Number(result.changes);
  }

  async sweep(now: number): Promise<void> {
    this.#db.prepare('DELETE FROM send_events WHERE at <= ?').run(now - DAY);
  }
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
    if (usage.messagesLastDay >= this.#settings.messagesPerDay) {
      this.#log.warn({ event: 'send_limit', limit: 'messages_per_day', ...usage }, 'sending limit reached');
      return { limit: 'messages_per_day', max: this.#settings.messagesPerDay, temporary: false };
    }
    if (usage.messagesLastHour >= this.#settings.messagesPerHour) {
      this.#log.warn({ event: 'send_limit', limit: 'messages_per_hour', ...usage }, 'sending limit reached');
      return { limit: 'messages_per_hour', max: this.#settings.messagesPerHour, temporary: true };
    }
    return undefined;
  }

  /** At each relayed RCPT: `already` recipients of this message count too. */
  async checkRecipient(user: string, already: number, now = Date.now()): Promise<LimitExceeded | undefined> {
    if (this.#exempt.has(user.toLowerCase())) return undefined;
    const usage = await this.#store.usage(user, now);
    if (usage.recipientsLastDay + already >= this.#settings.recipientsPerDay) {
      this.#log.warn({ event: 'send_limit', limit: 'recipients_per_day', ...usage }, 'sending limit reached');
      return { limit: 'recipients_per_day', max: this.#settings.recipientsPerDay, temporary: false };
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
