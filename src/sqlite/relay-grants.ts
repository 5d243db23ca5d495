import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { RelayAuthStore, RelayGrant } from '../relay-auth/store.ts';

interface Row {
  key: string;
  user: string;
  granted_at: number;
  expires_at: number;
}

const toGrant = (row: Row): RelayGrant => ({ key: row.key, user: row.user, grantedAt: row.granted_at, expiresAt: row.expires_at });

/** Grants in the embedded SQLite file: they survive a restart, and the CLI can see them. */
export class SqliteRelayAuthStore implements RelayAuthStore {
  readonly #db: DatabaseSync;
  readonly #upsertRenew: StatementSync;
  readonly #upsertFixed: StatementSync;
  readonly #check: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    db.exec(`CREATE TABLE IF NOT EXISTS relay_grants (
      key TEXT NOT NULL,
      user TEXT NOT NULL,
      granted_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      PRIMARY KEY (key, user)
    ) STRICT`);
    this.#upsertRenew = db.prepare(
      `INSERT INTO relay_grants (key, user, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4)
       ON CONFLICT (key, user) DO UPDATE SET granted_at = ?3, expires_at = ?4
       RETURNING key, user, granted_at, expires_at`,
    );
    // Fixed window: a live grant keeps its expiry; an expired one starts a new window.
    this.#upsertFixed = db.prepare(
      `INSERT INTO relay_grants (key, user, granted_at, expires_at) VALUES (?1, ?2, ?3, ?4)
       ON CONFLICT (key, user) DO UPDATE SET
         granted_at = CASE WHEN expires_at > ?3 THEN granted_at ELSE ?3 END,
         expires_at = CASE WHEN expires_at > ?3 THEN expires_at ELSE ?4 END
       RETURNING key, user, granted_at, expires_at`,
    );
    this.#check = db.prepare('SELECT key, user, granted_at, expires_at FROM relay_grants WHERE key = ? AND expires_at > ? ORDER BY granted_at DESC');
  }

  async grant(key: string, user: string, now: number, windowMs: number, renew: boolean): Promise<RelayGrant> {
    const statement = renew ? this.#upsertRenew : this.#upsertFixed;
    return toGrant(statement.get(key, user, now, now + windowMs) as unknown as Row);
  }

  async check(key: string, now: number): Promise<RelayGrant[]> {
    return (this.#check.all(key, now) as unknown as Row[]).map(toGrant);
  }

  async revoke(key: string, user?: string): Promise<number> {
    const result = user === undefined
      ? this.#db.prepare('DELETE FROM relay_grants WHERE key = ?').run(key)
      : this.#db.prepare('DELETE FROM relay_grants WHERE key = ? AND user = ?').run(key, user);
    return Number(result.changes);
  }

  async list(now: number): Promise<RelayGrant[]> {
    return (this.#db.prepare('SELECT key, user, granted_at, expires_at FROM relay_grants WHERE expires_at > ? ORDER BY key, user').all(now) as unknown as Row[]).map(toGrant);
  }

  async sweep(now: number): Promise<number> {
    return Number(this.#db.prepare('DELETE FROM relay_grants WHERE expires_at <= ?').run(now).changes);
  }
}
