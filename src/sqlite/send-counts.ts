import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { SendLimitStore, SendUsage } from '../policy/send-limits.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * One row per relayed message, in the embedded database through the counters connection
 * (openCountersDatabase): relaying adds no fsync, and `popgate limits` sees the counts.
 */
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
