import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { Vacation, VacationStore } from '../vacation/store.ts';
import { statementCache } from './open.ts';

/** Vacation replies in the embedded database; the replies sent go through the counters connection. */
export class SqliteVacationStore implements VacationStore {
  readonly #settings: (sql: string) => StatementSync;
  readonly #counters: (sql: string) => StatementSync;

  constructor(db: DatabaseSync, counters: DatabaseSync = db) {
    db.exec(`CREATE TABLE IF NOT EXISTS vacations (
      address TEXT PRIMARY KEY, subject TEXT NOT NULL, body TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER
    ) STRICT;
    CREATE TABLE IF NOT EXISTS vacation_replies (
      address TEXT NOT NULL, sender TEXT NOT NULL, sent_at INTEGER NOT NULL, PRIMARY KEY (address, sender)
    ) STRICT`);
    this.#settings = statementCache(db);
    this.#counters = statementCache(counters);
  }

  async get(address: string): Promise<Vacation | undefined> {
    const row = this.#settings('SELECT subject, body, since, until FROM vacations WHERE address = ?').get(address) as VacationRow | undefined;
    return row && vacationOf(row);
  }

  async set(address: string, vacation: Vacation): Promise<void> {
    this.#settings(
      'INSERT INTO vacations (address, subject, body, since, until) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (address) DO UPDATE SET subject = ?2, body = ?3, since = ?4, until = ?5',
    ).run(address, vacation.subject, vacation.body, vacation.since, vacation.until ?? null);
    this.#settings('DELETE FROM vacation_replies WHERE address = ?').run(address);
  }

  async remove(address: string): Promise<boolean> {
    this.#settings('DELETE FROM vacation_replies WHERE address = ?').run(address);
    return this.#settings('DELETE FROM vacations WHERE address = ?').run(address).changes > 0;
  }

  async list(): Promise<({ address: string } & Vacation)[]> {
    return (this.#settings('SELECT address, subject, body, since, until FROM vacations ORDER BY address').all() as unknown as ({ address: string } & VacationRow)[]).map((row) => ({
      address: row.address,
      ...vacationOf(row),
    }));
  }

  async claimReply(address: string, sender: string, now: number, intervalMs: number): Promise<boolean> {
    // One statement: inserted, or updated only when the last reply is old enough.
    const result = this.#counters(
      'INSERT INTO vacation_replies (address, sender, sent_at) VALUES (?1, ?2, ?3) ON CONFLICT (address, sender) DO UPDATE SET sent_at = ?3 WHERE sent_at <= ?3 - ?4',
    ).run(address, sender, now, intervalMs);
    return result.changes === 1;
  }

  async sweep(before: number): Promise<number> {
    return Number(this.#counters('DELETE FROM vacation_replies WHERE sent_at < ?').run(before).changes);
  }
}

interface VacationRow {
  subject: string;
  body: string;
  since: number;
  until: number | null;
}

function vacationOf(row: VacationRow): Vacation {
  return { subject: row.subject, body: row.body, since: row.since, ...(row.until === null ? {} : { until: row.until }) };
}
