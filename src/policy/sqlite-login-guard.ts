import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { Logger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';
import type { GuardVerdict, LoginGuard, LoginGuardSettings } from './login-guard.ts';

// The login guard in the embedded database, so `popgate limits show/reset` sees and clears
// what the server counts, and lockouts survive a restart. It is given the counters
// connection (openCountersDatabase): a flood of failed logins must not become a flood of
// disk syncs.

export interface LockoutRow {
  /** "ip 192.0.2.7" or "user alice@example.net". */
  key: string;
  failures: number;
  lockedUntil?: number;
}

export class SqliteLoginGuard implements LoginGuard {
  readonly #db: DatabaseSync;
  readonly #settings: LoginGuardSettings;
  readonly #trusted: NetworkList;
  readonly #log: Logger;
  readonly #insert: StatementSync;
  readonly #count: StatementSync;
  readonly #prune: StatementSync;
  readonly #lockout: StatementSync;
  readonly #lock: StatementSync;
  readonly #unlock: StatementSync;

  constructor(db: DatabaseSync, settings: LoginGuardSettings, log: Logger) {
    this.#db = db;
    this.#settings = settings;
    this.#trusted = new NetworkList(settings.trustedNetworks);
    this.#log = log;
    db.exec('CREATE TABLE IF NOT EXISTS login_failures (key TEXT NOT NULL, at INTEGER NOT NULL) STRICT');
    db.exec('CREATE INDEX IF NOT EXISTS login_failures_key_at ON login_failures (key, at)');
    db.exec('CREATE TABLE IF NOT EXISTS login_lockouts (key TEXT PRIMARY KEY, until INTEGER NOT NULL) STRICT');
    this.#insert = db.prepare('INSERT INTO login_failures (key, at) VALUES (?, ?)');
    this.#count = db.prepare('SELECT count(*) AS n FROM login_failures WHERE key = ? AND at > ?');
    this.#prune = db.prepare('DELETE FROM login_failures WHERE key = ? AND at <= ?');
    this.#lockout = db.prepare('SELECT until FROM login_lockouts WHERE key = ?');
    this.#lock = db.prepare('INSERT INTO login_lockouts (key, until) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET until = excluded.until');
    this.#unlock = db.prepare('DELETE FROM login_lockouts WHERE key = ?');
  }

  async check(ip: string, user?: string): Promise<GuardVerdict> {
    if (this.#trusted.has(ip)) return { locked: false };
    const now = Date.now();
    for (const [key, scope] of keysOf(ip, user)) {
      const row = this.#lockout.get(key) as { until: number } | undefined;
      if (!row) continue;
      if (row.until > now) return { locked: true, retryAfterMs: row.until - now, scope };
      this.#unlock.run(key);
      this.#prune.run(key, Number.MAX_SAFE_INTEGER);
      this.#log.info({ event: 'lockout_released', [scope === 'address' ? 'ip' : 'user']: key.slice(key.indexOf(' ') + 1) }, 'login lockout released');
    }
    return { locked: false };
  }

  async failure(ip: string, user: string | undefined): Promise<{ delayMs: number; locked: boolean }> {
    if (this.#trusted.has(ip)) return { delayMs: 0, locked: false };
    const now = Date.now();
    let highest = 0;
    let locked = false;
    for (const [key, scope] of keysOf(ip, user)) {
      this.#prune.run(key, now - this.#settings.windowMs);
      this.#insert.run(key, now);
      const count = (this.#count.get(key, now - this.#settings.windowMs) as { n: number }).n;
      highest = Math.max(highest, count);
      const threshold = scope === 'address' ? this.#settings.threshold : this.#settings.accountThreshold;
      const current = this.#lockout.get(key) as { until: number } | undefined;
      if (count >= threshold && !(current && current.until > now)) {
        this.#lock.run(key, now + this.#settings.lockoutMs);
        locked = true;
        this.#log.warn({ event: 'lockout', scope, ip, user, failures: count, lockoutMs: this.#settings.lockoutMs }, `${scope} locked out after failed logins`);
      }
    }
    return { delayMs: this.#settings.failureDelayMs * Math.min(highest, 5), locked };
  }

  // Failures are not forgiven by a success: otherwise whoever holds one valid account could
  // interleave good logins with guesses at other accounts' passwords and never be locked out.
  // They age out of the window instead.
  async success(): Promise<void> {}

  /** Addresses and accounts with recent failures or a lockout. */
  async list(now = Date.now()): Promise<LockoutRow[]> {
    const rows = this.#db
      .prepare(
        `SELECT k.key AS key, (SELECT count(*) FROM login_failures f WHERE f.key = k.key AND f.at > ?1) AS failures, l.until AS until
         FROM (SELECT key FROM login_failures WHERE at > ?1 UNION SELECT key FROM login_lockouts WHERE until > ?2) k
         LEFT JOIN login_lockouts l ON l.key = k.key ORDER BY k.key`,
      )
      .all(now - this.#settings.windowMs, now) as { key: string; failures: number; until: number | null }[];
    return rows.map((r) => ({ key: r.key, failures: r.failures, lockedUntil: r.until !== null && r.until > now ? r.until : undefined }));
  }

  /** Forgets the failures and lockout of an address or account (all when undefined). */
  async reset(subject?: string): Promise<number> {
    if (subject === undefined) {
      const n = Number(this.#db.prepare('DELETE FROM login_lockouts').run().changes);
      this.#db.prepare('DELETE FROM login_failures').run();
      return n;
    }
    let removed = 0;
    for (const key of [`ip ${subject}`, `user ${subject.toLowerCase()}`]) {
      removed += Number(this.#unlock.run(key).changes);
      removed += Number(this.#prune.run(key, Number.MAX_SAFE_INTEGER).changes);
    }
    return removed;
  }

  async sweep(now = Date.now()): Promise<void> {
    this.#db.prepare('DELETE FROM login_failures WHERE at <= ?').run(now - this.#settings.windowMs);
    this.#db.prepare('DELETE FROM login_lockouts WHERE until <= ?').run(now);
  }

}

function keysOf(ip: string, user: string | undefined): [string, 'address' | 'account'][] {
  const keys: [string, 'address' | 'account'][] = [[`ip ${ip}`, 'address']];
  if (user) keys.push([`user ${user.toLowerCase()}`, 'account']);
  return keys;
}
