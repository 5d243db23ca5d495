import type pg from 'pg';
import type { AuditEntry, AuditFilter, AuditLog } from '../audit/store.ts';
import { statement } from './pool.ts';

const record = statement('audit_record', 'INSERT INTO popgate_audit_log (at, actor, ip, action, subject, detail) VALUES ($1, $2, $3, $4, $5, $6)');
// NULL parameters match everything: one prepared statement for every combination of filters.
const recent = statement<{ id: string; at: string; actor: string; ip: string; action: string; subject: string; detail: string }>(
  'audit_recent',
  `SELECT id, at, actor, ip, action, subject, detail FROM popgate_audit_log
   WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR subject = $3)
   ORDER BY id DESC LIMIT $4`,
);

/** The audit log in the cluster's PostgreSQL: one log for every node. */
export class PostgresAuditLog implements AuditLog {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async record(entry: AuditEntry): Promise<void> {
    await record(this.#pool, [entry.at, entry.actor, entry.ip, entry.action, entry.subject, entry.detail]);
  }

  async recent(limit: number, filter: AuditFilter = {}): Promise<(AuditEntry & { id: number })[]> {
    const { rows } = await recent(this.#pool, [filter.actor ?? null, filter.action ?? null, filter.subject ?? null, limit]);
    return rows.map((row) => ({ id: Number(row.id), at: Number(row.at), actor: row.actor, ip: row.ip, action: row.action, subject: row.subject, detail: row.detail }));
  }
}
