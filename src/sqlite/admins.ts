import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { AdminAccount, AdminSession, AdminStore } from '../admin/store.ts';
import { statementCache } from './open.ts';

/**
 * Administrators in the embedded database (synced commits); their sessions on the counters
 * connection, whose commits wait for no fsync: a session is touched on every console request,
 * and one lost in a power cut only means logging in again.
 */
export class SqliteAdminStore implements AdminStore {
  readonly #sql: (sql: string) => StatementSync;
  readonly #sessions: (sql: string) => StatementSync;

  constructor(db: DatabaseSync, counters: DatabaseSync) {
    db.exec('CREATE TABLE IF NOT EXISTS admins (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL) STRICT');
    counters.exec(
      'CREATE TABLE IF NOT EXISTS admin_sessions (id_hash TEXT PRIMARY KEY, admin TEXT NOT NULL, created_at INTEGER NOT NULL, last_seen_at INTEGER NOT NULL) STRICT',
    );
    counters.exec('CREATE INDEX IF NOT EXISTS admin_sessions_admin ON admin_sessions (admin)');
    this.#sql = statementCache(db);
    this.#sessions = statementCache(counters);
  }

  async add(name: string, passwordHash: string, now: number): Promise<boolean> {
    return this.#sql('INSERT INTO admins (name, password_hash, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING').run(name, passwordHash, now).changes > 0;
  }

  async setPasswordHash(name: string, passwordHash: string): Promise<boolean> {
    return this.#sql('UPDATE admins SET password_hash = ? WHERE name = ?').run(passwordHash, name).changes > 0;
  }

  async remove(name: string): Promise<boolean> {
    await this.endSessionsOf(name);
    return this.#sql('DELETE FROM admins WHERE name = ?').run(name).changes > 0;
  }

  async list(): Promise<AdminAccount[]> {
    return (this.#sql('SELECT name, created_at FROM admins ORDER BY name').all() as { name: string; created_at: number }[]).map((row) => ({ name: row.name, createdAt: row.created_at }));
  }

  async passwordHash(name: string): Promise<string | undefined> {
    return (this.#sql('SELECT password_hash FROM admins WHERE name = ?').get(name) as { password_hash: string } | undefined)?.password_hash;
  }

  async createSession(idHash: string, admin: string, now: number): Promise<void> {
    this.#sessions('INSERT INTO admin_sessions (id_hash, admin, created_at, last_seen_at) VALUES (?, ?, ?, ?)').run(idHash, admin, now, now);
  }

  async useSession(idHash: string, now: number, idleMs: number, absoluteMs: number): Promise<AdminSession | undefined> {
    const row = this.#sessions('SELECT admin, created_at, last_seen_at FROM admin_sessions WHERE id_hash = ?').get(idHash) as
      | { admin: string; created_at: number; last_seen_at: number }
      | undefined;
    if (!row) return undefined;
    if (row.created_at <= now - absoluteMs || row.last_seen_at <= now - idleMs) {
      await this.endSession(idHash);
      return undefined;
    }
    this.#sessions('UPDATE admin_sessions SET last_seen_at = max(last_seen_at, ?) WHERE id_hash = ?').run(now, idHash);
    return { admin: row.admin, createdAt: row.created_at, lastSeenAt: now };
  }

  async endSession(idHash: string): Promise<void> {
    this.#sessions('DELETE FROM admin_sessions WHERE id_hash = ?').run(idHash);
  }

  async endSessionsOf(admin: string): Promise<number> {
    return Number(this.#sessions('DELETE FROM admin_sessions WHERE admin = ?').run(admin).changes);
  }
}
