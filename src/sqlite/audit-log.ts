import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { AuditEntry, AuditFilter, AuditLog } from '../audit/store.ts';
import { statementCache } from './open.ts';

type Row = { id: number; at: number; actor: string; ip: string; action: string; subject: string; detail: string };

/** The audit log in the embedded database, synced like the accounts it records changes to. */
export class SqliteAuditLog implements AuditLog {
  readonly #sql: (sql: string) => StatementSync;

  constructor(db: DatabaseSync) {
    db.exec(`CREATE TABLE IF NOT EXISTS audit_log (
      id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL, ip TEXT NOT NULL,
      action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL) STRICT`);
    this.#sql = statementCache(db);
  }

  async record(entry: AuditEntry): Promise<void> {
    this.#sql('INSERT INTO audit_log (at, actor, ip, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)').run(entry.at, entry.actor, entry.ip, entry.action, entry.subject, entry.detail);
  }

  async recent(limit: number, filter: AuditFilter = {}): Promise<(AuditEntry & { id: number })[]> {
    // NULL parameters match everything: one statement for every combination of filters.
    const rows = this.#sql(
      `SELECT id, at, actor, ip, action, subject, detail FROM audit_log
       WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR subject = ?3)
       ORDER BY id DESC LIMIT ?4`,
    ).all(filter.actor ?? null, filter.action ?? null, filter.subject ?? null, limit) as Row[];
    return rows.map((row) => ({ ...row }));
  }
}
