import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { MailboxUsage, QuotaLimit, QuotaStore } from '../quota/store.ts';
import { openSqlite, statementCache } from './open.ts';

// Quotas in the embedded database. Limits are settings and live in popgate.sqlite beside the
// accounts. The usage counters move with every delivery and deletion and live in a file of
// their own, data_dir/usage.sqlite, without fsync per commit: a commit to a SQLite file makes
// every other connection to it drop its page cache, and counters in popgate.sqlite would do
// that to the account lookups at every delivery. A power cut can lose the last moves, which a
// recount (`popgate user quota USER --recount`) corrects.

const LIMITS = `
CREATE TABLE IF NOT EXISTS quota_limits (
  subject TEXT PRIMARY KEY,
  limit_bytes INTEGER
) STRICT;
`;
const USAGE = `
CREATE TABLE IF NOT EXISTS mailbox_usage (
  address TEXT PRIMARY KEY,
  used INTEGER NOT NULL,
  warned INTEGER NOT NULL DEFAULT 0
) STRICT;
`;

export class SqliteQuotaStore implements QuotaStore {
  readonly #settings: (sql: string) => StatementSync;
  readonly #counters: (sql: string) => StatementSync;

  /** `db`: popgate.sqlite (fully synced); `usage`: the counters' own file (openUsageDatabase). */
  constructor(db: DatabaseSync, usage: DatabaseSync) {
    db.exec(LIMITS);
    usage.exec(USAGE);
    this.#settings = statementCache(db);
    this.#counters = statementCache(usage);
  }

  /** data_dir/usage.sqlite: WAL, no fsync per commit (see above). */
  static openUsageDatabase(dataDir: string): DatabaseSync {
    mkdirSync(dataDir, { recursive: true });
    return openSqlite(join(dataDir, 'usage.sqlite'), 'NORMAL');
  }

  async setLimit(subject: string, limit: QuotaLimit | undefined): Promise<void> {
    if (limit === undefined) this.#settings('DELETE FROM quota_limits WHERE subject = ?').run(subject);
    else this.#settings('INSERT INTO quota_limits (subject, limit_bytes) VALUES (?1, ?2) ON CONFLICT (subject) DO UPDATE SET limit_bytes = ?2').run(subject, limit);
  }

  async limits(address: string, domain: string): Promise<{ user?: QuotaLimit; domain?: QuotaLimit }> {
    const rows = this.#settings('SELECT subject, limit_bytes FROM quota_limits WHERE subject IN (?, ?)').all(address, domain) as { subject: string; limit_bytes: number | null }[];
    const found: { user?: QuotaLimit; domain?: QuotaLimit } = {};
    for (const row of rows) found[row.subject === address ? 'user' : 'domain'] = row.limit_bytes;
    return found;
  }

  async listLimits(): Promise<{ subject: string; limit: QuotaLimit }[]> {
    return (this.#settings('SELECT subject, limit_bytes FROM quota_limits ORDER BY subject').all() as { subject: string; limit_bytes: number | null }[]).map((row) => ({
      subject: row.subject,
      limit: row.limit_bytes,
    }));
  }

  async usage(address: string): Promise<MailboxUsage | undefined> {
    const row = this.#counters('SELECT used, warned FROM mailbox_usage WHERE address = ?').get(address) as { used: number; warned: number } | undefined;
    return row && { used: row.used, warned: row.warned === 1 };
  }

  async listUsage(): Promise<({ address: string } & MailboxUsage)[]> {
    return (this.#counters('SELECT address, used, warned FROM mailbox_usage ORDER BY address').all() as { address: string; used: number; warned: number }[]).map((row) => ({
      address: row.address,
      used: row.used,
      warned: row.warned === 1,
    }));
  }

  async add(address: string, delta: number): Promise<number | undefined> {
    const row = this.#counters('UPDATE mailbox_usage SET used = max(0, used + ?) WHERE address = ? RETURNING used').get(delta, address) as { used: number } | undefined;
    return row?.used;
  }

  async setUsage(address: string, used: number, onlyIfMissing: boolean): Promise<number> {
    const sql = onlyIfMissing
      ? 'INSERT INTO mailbox_usage (address, used) VALUES (?1, ?2) ON CONFLICT (address) DO NOTHING'
      : 'INSERT INTO mailbox_usage (address, used) VALUES (?1, ?2) ON CONFLICT (address) DO UPDATE SET used = ?2';
    this.#counters(sql).run(address, used);
    return (this.#counters('SELECT used FROM mailbox_usage WHERE address = ?').get(address) as { used: number }).used;
  }

  async claimWarning(address: string): Promise<boolean> {
    return this.#counters('UPDATE mailbox_usage SET warned = 1 WHERE address = ? AND warned = 0').run(address).changes === 1;
  }

  async clearWarning(address: string): Promise<void> {
    this.#counters('UPDATE mailbox_usage SET warned = 0 WHERE address = ? AND warned = 1').run(address);
  }

  async forget(address: string): Promise<void> {
    this.#counters('DELETE FROM mailbox_usage WHERE address = ?').run(address);
    this.#settings('DELETE FROM quota_limits WHERE subject = ?').run(address);
  }
}
