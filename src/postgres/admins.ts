import type pg from 'pg';
import type { AdminAccount, AdminSession, AdminStore } from '../admin/store.ts';
import { statement } from './pool.ts';

const add = statement('admins_add', 'INSERT INTO popgate_admins (name, password_hash, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING');
const setHash = statement('admins_set_hash', 'UPDATE popgate_admins SET password_hash = $2 WHERE name = $1');
const remove = statement('admins_remove', 'DELETE FROM popgate_admins WHERE name = $1');
const list = statement<{ name: string; created_at: string }>('admins_list', 'SELECT name, created_at FROM popgate_admins ORDER BY name');
const hash = statement<{ password_hash: string }>('admins_hash', 'SELECT password_hash FROM popgate_admins WHERE name = $1');
const createSession = statement('admin_sessions_create', 'INSERT INTO popgate_admin_sessions (id_hash, admin, created_at, last_seen_at) VALUES ($1, $2, $3, $3)');
// One statement: the session comes back only if live, and is marked seen in the same step.
const useSession = statement<{ admin: string; created_at: string }>(
  'admin_sessions_use',
  'UPDATE popgate_admin_sessions SET last_seen_at = greatest(last_seen_at, $2::bigint) WHERE id_hash = $1 AND created_at > $2::bigint - $4::bigint AND last_seen_at > $2::bigint - $3::bigint RETURNING admin, created_at',
);
const endSession = statement('admin_sessions_end', 'DELETE FROM popgate_admin_sessions WHERE id_hash = $1');
const endSessionsOf = statement('admin_sessions_end_of', 'DELETE FROM popgate_admin_sessions WHERE admin = $1');

/** Administrators and their sessions in the cluster's PostgreSQL: every node sees a login at once. */
export class PostgresAdminStore implements AdminStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async add(name: string, passwordHash: string, now: number): Promise<boolean> {
    return ((await add(this.#pool, [name, passwordHash, now])).rowCount ?? 0) > 0;
  }

  async setPasswordHash(name: string, passwordHash: string): Promise<boolean> {
    return ((await setHash(this.#pool, [name, passwordHash])).rowCount ?? 0) > 0;
  }

  async remove(name: string): Promise<boolean> {
    await endSessionsOf(this.#pool, [name]);
    return ((await remove(this.#pool, [name])).rowCount ?? 0) > 0;
  }

  async list(): Promise<AdminAccount[]> {
    return (await list(this.#pool)).rows.map((row) => ({ name: row.name, createdAt: Number(row.created_at) }));
  }

  async passwordHash(name: string): Promise<string | undefined> {
    return (await hash(this.#pool, [name])).rows[0]?.password_hash;
  }

  async createSession(idHash: string, admin: string, now: number): Promise<void> {
    await createSession(this.#pool, [idHash, admin, now]);
  }

  async useSession(idHash: string, now: number, idleMs: number, absoluteMs: number): Promise<AdminSession | undefined> {
    const row = (await useSession(this.#pool, [idHash, now, idleMs, absoluteMs])).rows[0];
    if (!row) {
      // Expired (or never there): gone either way.
      await endSession(this.#pool, [idHash]);
      return undefined;
    }
    return { admin: row.admin, createdAt: Number(row.created_at), lastSeenAt: now };
  }

  async endSession(idHash: string): Promise<void> {
    await endSession(this.#pool, [idHash]);
  }

  async endSessionsOf(admin: string): Promise<number> {
    return (await endSessionsOf(this.#pool, [admin])).rowCount ?? 0;
  }
}
