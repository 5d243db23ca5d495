import type pg from 'pg';
import type { MailboxUsage, QuotaLimit, QuotaStore } from '../quota/store.ts';
import { statement } from './pool.ts';

// Quotas in the cluster's PostgreSQL: every node moves the same counters, each move one
// statement (the row lock of an UPDATE serialises concurrent deliveries to one mailbox).

const upsertLimit = statement('quota_limit_set', 'INSERT INTO popgate_quota_limits (subject, limit_bytes) VALUES ($1, $2) ON CONFLICT (subject) DO UPDATE SET limit_bytes = excluded.limit_bytes');
const removeLimit = statement('quota_limit_remove', 'DELETE FROM popgate_quota_limits WHERE subject = $1');
const getLimits = statement<{ subject: string; limit_bytes: string | null }>('quota_limits_get', 'SELECT subject, limit_bytes FROM popgate_quota_limits WHERE subject = $1 OR subject = $2');
const listLimits = statement<{ subject: string; limit_bytes: string | null }>('quota_limits_list', 'SELECT subject, limit_bytes FROM popgate_quota_limits ORDER BY subject');
const getUsage = statement<{ used: string; warned: boolean }>('quota_usage_get', 'SELECT used, warned FROM popgate_mailbox_usage WHERE address = $1');
const listUsage = statement<{ address: string; used: string; warned: boolean }>('quota_usage_list', 'SELECT address, used, warned FROM popgate_mailbox_usage ORDER BY address');
const addUsage = statement<{ used: string }>('quota_usage_add', 'UPDATE popgate_mailbox_usage SET used = greatest(0, used + $2) WHERE address = $1 RETURNING used');
const setUsage = statement<{ used: string }>(
  'quota_usage_set',
  'INSERT INTO popgate_mailbox_usage (address, used) VALUES ($1, $2) ON CONFLICT (address) DO UPDATE SET used = excluded.used RETURNING used',
);
// ON CONFLICT DO NOTHING returns no row for an existing counter: the SELECT of the same
// statement snapshot would not see a row inserted concurrently, so the value is read after.
const insertUsage = statement('quota_usage_insert', 'INSERT INTO popgate_mailbox_usage (address, used) VALUES ($1, $2) ON CONFLICT (address) DO NOTHING');
const claimWarning = statement('quota_warning_claim', 'UPDATE popgate_mailbox_usage SET warned = true WHERE address = $1 AND NOT warned');
const clearWarning = statement('quota_warning_clear', 'UPDATE popgate_mailbox_usage SET warned = false WHERE address = $1 AND warned');
const forgetUsage = statement('quota_usage_forget', 'DELETE FROM popgate_mailbox_usage WHERE address = $1');

/** bigint columns come back as text from pg (they may pass 2^53; ours never do). */
const limitOf = (value: string | null): QuotaLimit => (value === null ? null : Number(value));

export class PostgresQuotaStore implements QuotaStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async setLimit(subject: string, limit: QuotaLimit | undefined): Promise<void> {
    if (limit === undefined) await removeLimit(this.#pool, [subject]);
    else await upsertLimit(this.#pool, [subject, limit]);
  }

  async limits(address: string, domain: string): Promise<{ user?: QuotaLimit; domain?: QuotaLimit }> {
    const found: { user?: QuotaLimit; domain?: QuotaLimit } = {};
    for (const row of (await getLimits(this.#pool, [address, domain])).rows) found[row.subject === address ? 'user' : 'domain'] = limitOf(row.limit_bytes);
    return found;
  }

  async listLimits(): Promise<{ subject: string; limit: QuotaLimit }[]> {
    return (await listLimits(this.#pool)).rows.map((row) => ({ subject: row.subject, limit: limitOf(row.limit_bytes) }));
  }

  async usage(address: string): Promise<MailboxUsage | undefined> {
    const row = (await getUsage(this.#pool, [address])).rows[0];
    return row && { used: Number(row.used), warned: row.warned };
  }

  async listUsage(): Promise<({ address: string } & MailboxUsage)[]> {
    return (await listUsage(this.#pool)).rows.map((row) => ({ address: row.address, used: Number(row.used), warned: row.warned }));
  }

  async add(address: string, delta: number): Promise<number | undefined> {
    const row = (await addUsage(this.#pool, [address, delta])).rows[0];
    return row && Number(row.used);
  }

  async setUsage(address: string, used: number, onlyIfMissing: boolean): Promise<number> {
    if (!onlyIfMissing) return Number((await setUsage(this.#pool, [address, used])).rows[0].used);
    await insertUsage(this.#pool, [address, used]);
    return Number((await getUsage(this.#pool, [address])).rows[0]?.used ?? used);
  }

  async claimWarning(address: string): Promise<boolean> {
    return (await claimWarning(this.#pool, [address])).rowCount === 1;
  }

  async clearWarning(address: string): Promise<void> {
    await clearWarning(this.#pool, [address]);
  }

  async forget(address: string): Promise<void> {
    await forgetUsage(this.#pool, [address]);
    await removeLimit(this.#pool, [address]);
  }
}
