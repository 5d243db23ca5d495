import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { Logger } from '../log/logger.ts';
import { LeasedMaildropLocks, type LeaseSettings, type LeaseStore } from '../mailstore/leased-locks.ts';

// Maildrop locks shared by the worker processes of one machine, in the embedded SQLite file
// (WAL) on the counters connection (openCountersDatabase: a lock costs no fsync; a lock lost
// in a power cut is a lock whose process is gone too). One row per held lock: its holder's
// token and when its lease ends, on the machine's clock, which every worker shares.
//
// Each operation is one statement, and so one transaction of its own. Taking a lock is an
// upsert whose update applies only to an expired row: a write statement takes SQLite's write
// lock before it reads (as BEGIN IMMEDIATE would), so two workers cannot both find the lock
// free, and the busy timeout makes the second wait for the first.

class SqliteLeases implements LeaseStore {
  readonly #take: StatementSync;
  readonly #renew: StatementSync;
  readonly #release: StatementSync;

  constructor(db: DatabaseSync) {
    db.exec(`CREATE TABLE IF NOT EXISTS maildrop_locks (
      address TEXT PRIMARY KEY,
      token TEXT NOT NULL,
      lease_end INTEGER NOT NULL
    ) STRICT`);
    this.#take = db.prepare(
      `INSERT INTO maildrop_locks (address, token, lease_end) VALUES (?1, ?2, ?3 + ?4)
       ON CONFLICT (address) DO UPDATE SET token = excluded.token, lease_end = excluded.lease_end
       WHERE maildrop_locks.lease_end <= ?3`,
    );
    this.#renew = db.prepare('UPDATE maildrop_locks SET lease_end = ?3 WHERE address = ?1 AND token = ?2');
    this.#release = db.prepare('DELETE FROM maildrop_locks WHERE address = ? AND token = ?');
  }

  async take(address: string, token: string, leaseMs: number): Promise<boolean> {
    return Number(this.#take.run(address, token, Date.now(), leaseMs).changes) === 1;
  }

  async renew(address: string, token: string, leaseMs: number): Promise<boolean> {
    return Number(this.#renew.run(address, token, Date.now() + leaseMs).changes) === 1;
  }

  async release(address: string, token: string): Promise<void> {
    this.#release.run(address, token);
  }
}

export class SqliteMaildropLocks extends LeasedMaildropLocks {
  constructor(db: DatabaseSync, settings: LeaseSettings, log: Logger) {
    super(new SqliteLeases(db), settings, log);
  }

  /**
   * Forgets every lock, or those of one process (by its pid, part of every holder name): for
   * the primary before its workers start, when no process of this machine can hold one, and
   * when a worker died, whose sessions went with it. Otherwise they would wait for their leases.
   */
  static releaseAll(db: DatabaseSync, pid?: number): number {
    new SqliteLeases(db); // the table, if this is the first start
    const result = pid === undefined ? db.prepare('DELETE FROM maildrop_locks').run() : db.prepare("DELETE FROM maildrop_locks WHERE token LIKE '%/' || ? || '/%'").run(String(pid));
    return Number(result.changes);
  }
}
