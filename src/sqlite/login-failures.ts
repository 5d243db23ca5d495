import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { LockoutRow, LoginFailureStore } from '../policy/login-guard.ts';

/**
 * Failed logins and lockouts in the embedded database, so `popgate limits show/reset` sees
 * and clears what the server counts, and lockouts survive a restart. It is given the counters
 * connection (openCountersDatabase): a flood of failed logins must not become a flood of
 * disk syncs.
 */
export class SqliteLoginFailureStore implements LoginFailureStore {
  readonly #db: DatabaseSync;
  readonly #insert: StatementSync;
  readonly #count: StatementSync;
  readonly #prune: StatementSync;
  readonly #lockoutEnd: StatementSync;
  readonly #lockOut: StatementSync;
  readonly #unlock: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    db.exec('CREATE TABLE IF NOT EXISTS login_failures (key TEXT NOT NULL, at INTEGER NOT NULL) STRICT');
    db.exec('CREATE INDEX IF NOT EXISTS login_failures_key_at ON login_failures (key, at)');
    db.exec('CREATE TABLE IF NOT EXISTS login_lockouts (key TEXT PRIMARY KEY, until INTEGER NOT NULL) STRICT');
    this.#insert = db.prepare('INSERT INTO login_failures (key, at) VALUES (?, ?)');
    this.#count = db.prepare('SELECT count(*) AS n FROM login_failures WHERE key = ? AND at > ?');
    this.#prune = db.prepare('DELETE FROM login_failures WHERE key = ? AND at <= ?');
    this.#lockoutEnd = db.prepare('SELECT until FROM login_lockouts WHERE key = ?');
    // A live lockout is kept as it is; an ended one (or none) is replaced.
    this.#lockOut = db.prepare(
      `INSERT INTO login_lockouts (key, until) VALUES (?1, ?2)
       ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE login_lockouts.until <= ?3`,
    );
    this.#unlock = db.prepare('DELETE FROM login_lockouts WHERE key = ?');
  }

  async addFailure(key: string, now: number, windowMs: number): Promise<number> {
    this.#prune.run(key, now - windowMs);
    this.#insert.run(key, now);
    return (this.#count.get(key, now - windowMs) as { n: number }).n;
  }

  async lockOut(key: string, until: number, now: number): Promise<boolean> {
    return Number(this.#lockOut.run(key, until, now).changes) > 0;
  }

  async lockoutEnd(key: string): Promise<number | undefined> {
    return (this.#lockoutEnd.get(key) as { until: number } | undefined)?.until;
  }

  async list(now: number, windowMs: number): Promise<LockoutRow[]> {
    const rows = this.#db
      .prepare(
        `SELECT k.key AS key, (SELECT count(*) FROM login_failures f WHERE f.key = k.key AND f.at > ?1) AS failures, l.until AS until
         FROM (SELECT key FROM login_failures WHERE at > ?1 UNION SELECT key FROM login_lockouts WHERE until > ?2) k
         LEFT JOIN login_lockouts l ON l.key = k.key ORDER BY k.key`,
      )
      .all(now - windowMs, now) as { key: string; failures: number; until: number | null }[];
    return rows.map((r) => ({ key: r.key, failures: r.failures, lockedUntil: r.until !== null && r.until > now ? r.until : undefined }));
  }

  async reset(keys?: readonly string[]): Promise<{ failures: number; lockouts: number }> {
    if (keys === undefined) {
      const lockouts = Number(this.#db.prepare('DELETE FROM login_lockouts').run().changes);
      const failures = Number(this.#db.prepare('DELETE FROM login_failures').run().changes);
      return { failures, lockouts };
    }
    let failures = 0;
    let lockouts = 0;
    for (const key of keys) {
      lockouts += Number(this.#unlock.run(key).changes);
      failures += Number(this.#prune.run(key, Number.MAX_SAFE_INTEGER).changes);
    }
    return { failures, lockouts };
  }

  async sweep(before: number): Promise<void> {
    this.#db.prepare('DELETE FROM login_failures WHERE at <= ?').run(before);
    this.#db.prepare('DELETE FROM login_lockouts WHERE until <= ?').run(before);
  }
}
