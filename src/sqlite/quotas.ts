import { mkdirSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { MailboxUsage, QuotaLimit, QuotaStore } from '../quota/store.ts';
import { openSqlite, statementCache, writeTransaction } from './open.ts';

// Quotas in the embedded database. Limits are settings and live in popgate.sqlite beside the
// accounts. The usage counters move with every delivery and deletion and live in a file of
// their own, data_dir/usage.sqlite, without fsync per commit: a commit to a SQLite file makes
// every other connection to it drop its page cache, and counters in popgate.sqlite would do
// that to the account lookups at every delivery. A power cut can lose the last moves, which a
// recount (`popgate user quota USER --recount`) corrects.
//
// Even without fsync a commit costs the event loop tens of microseconds (the WAL write and its
// locks), and with one per delivery that was nearly all of what quotas cost SMTP accept
// (docs/benchmarks.md, "Quotas"). So deliveries' moves are held back for a moment and written
// together in one transaction; this instance's reads write them first, so through one store
// nothing is ever missing, and other processes see them within COUNTER_WRITE_DELAY_MS. A
// process that dies holding moves (kill -9) would leave counters short: from its first held
// move until it closes the store (flush()), it has a row in counter_writers. A store that finds
// the row of a dead process on its machine forgets every counter, and each mailbox is counted
// from its folder at its next use, as after a crash of PostgreSQL (src/postgres/quotas.ts).
// The row stays while the process runs rather than coming and going with each batch: a commit
// of its own per batch, and the checkpoints (with their fsyncs) that the extra commits brought
// on, cost as much again as the batch.

/** How long a delivery's counter move is held back, to be written with the others of that moment. */
export const COUNTER_WRITE_DELAY_MS = 100;
/**
 * A counter value this instance wrote or read within this long is trusted to answer a held-back
 * move; an older one is read again by writing the move at once. Matches how long MailboxQuotas
 * trusts the values it was given (src/quota/quota.ts).
 */
const KNOWN_FOR_MS = 1000;
/** Mailboxes whose counter values are remembered at most (then all are forgotten at once). */
const KNOWN_MAX = 10_000;

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
CREATE TABLE IF NOT EXISTS counter_writers (
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  instance TEXT NOT NULL,
  PRIMARY KEY (host, pid, instance)
) STRICT;
`;

export class SqliteQuotaStore implements QuotaStore {
  readonly #settings: (sql: string) => StatementSync;
  readonly #counters: (sql: string) => StatementSync;
  readonly #usageDb: DatabaseSync;
  /** Octets moved per mailbox and not yet written. */
  readonly #held = new Map<string, number>();
  /** Each mailbox's counter as this instance last wrote or read it, held moves included. */
  readonly #known = new Map<string, { used: number; at: number }>();
  #writeTimer: NodeJS.Timeout | undefined;
  /** This store's row in counter_writers once it has held a move: the machine, the process, and which store of it. */
  readonly #writer = [hostname(), process.pid, randomUUID()] as const;
  #writerRowWritten = false;

  /** `db`: popgate.sqlite (fully synced); `usage`: the counters' own file (openUsageDatabase). */
  constructor(db: DatabaseSync, usage: DatabaseSync) {
    db.exec(LIMITS);
    usage.exec(USAGE);
    this.#settings = statementCache(db);
    this.#counters = statementCache(usage);
    this.#usageDb = usage;
    this.#forgetCountersOfDeadWriters();
  }

  /** A writer that died holding moves left counters short: all are counted again (see above). */
  #forgetCountersOfDeadWriters(): void {
    const [host] = this.#writer;
    const writers = this.#counters('SELECT DISTINCT pid FROM counter_writers WHERE host = ?').all(host) as { pid: number }[];
    // Another machine's processes cannot be checked from here: their rows are left alone.
    const dead = writers.filter((writer) => writer.pid !== process.pid && !processAlive(writer.pid));
    if (dead.length === 0) return;
    writeTransaction(this.#usageDb, () => {
      this.#counters('DELETE FROM mailbox_usage').run();
      for (const writer of dead) this.#counters('DELETE FROM counter_writers WHERE host = ? AND pid = ?').run(host, writer.pid);
    });
  }

  /** Writes the counter moves held back, and takes this store off counter_writers; before closing the database, and for readers elsewhere. */
  async flush(): Promise<void> {
    this.#writeHeld();
    if (this.#writerRowWritten) {
      this.#counters('DELETE FROM counter_writers WHERE host = ? AND pid = ? AND instance = ?').run(...this.#writer);
      this.#writerRowWritten = false;
    }
  }

  #writeHeld(): void {
    if (this.#held.size === 0) return;
    const held = [...this.#held];
    const now = Date.now();
    writeTransaction(this.#usageDb, () => {
      for (const [address, delta] of held) {
        const row = this.#counters('UPDATE mailbox_usage SET used = max(0, used + ?) WHERE address = ? RETURNING used').get(delta, address) as { used: number } | undefined;
        // No counter any more (forgotten, or a dead writer's cleared them all): the folder,
        // which holds the message, is counted at the mailbox's next use.
        if (row) this.#know(address, row.used, now);
        else this.#known.delete(address);
      }
    });
    this.#held.clear();
    clearTimeout(this.#writeTimer);
    this.#writeTimer = undefined;
  }


  #know(address: string, used: number, now: number): void {
    if (this.#known.size >= KNOWN_MAX && !this.#known.has(address)) this.#known.clear();
    this.#known.set(address, { used, at: now });
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
    this.#writeHeld();
    const row = this.#counters('SELECT used, warned FROM mailbox_usage WHERE address = ?').get(address) as { used: number; warned: number } | undefined;
    return row && { used: row.used, warned: row.warned === 1 };
  }

  async listUsage(): Promise<({ address: string } & MailboxUsage)[]> {
    this.#writeHeld();
    return (this.#counters('SELECT address, used, warned FROM mailbox_usage ORDER BY address').all() as { address: string; used: number; warned: number }[]).map((row) => ({
      address: row.address,
      used: row.used,
      warned: row.warned === 1,
    }));
  }

  async add(address: string, delta: number): Promise<number | undefined> {
    const now = Date.now();
    const known = this.#known.get(address);
    // Deliveries to a counter seen a moment ago are held back; a deletion (which the floor at
    // zero must judge against the real value) or a counter not seen lately is written now.
    if (delta >= 0 && known && now - known.at < KNOWN_FOR_MS) {
      if (!this.#writerRowWritten) {
        // Before the first held move returns: a crash from here on is seen by the next store.
        this.#counters('INSERT OR IGNORE INTO counter_writers (host, pid, instance) VALUES (?, ?, ?)').run(...this.#writer);
        this.#writerRowWritten = true;
      }
      if (this.#held.size === 0) {
        this.#writeTimer = setTimeout(() => this.#writeHeldInBackground(), COUNTER_WRITE_DELAY_MS);
        this.#writeTimer.unref();
      }
      this.#held.set(address, (this.#held.get(address) ?? 0) + delta);
      known.used += delta;
      return known.used;
    }
    this.#writeHeld();
    const row = this.#counters('UPDATE mailbox_usage SET used = max(0, used + ?) WHERE address = ? RETURNING used').get(delta, address) as { used: number } | undefined;
    if (row) this.#know(address, row.used, now);
    else this.#known.delete(address);
    return row?.used;
  }

  /** The timer's write: a failure keeps the moves held, and the next read or move tries again and reports it. */
  #writeHeldInBackground(): void {
    this.#writeTimer = undefined;
    // Closed without flush() first: nothing can be written any more, and the next store of
    // this file counts the mailboxes again (this instance's row is still there).
    if (!this.#usageDb.isOpen) return;
    try {
      this.#writeHeld();
    } catch {
      this.#writeTimer = setTimeout(() => this.#writeHeldInBackground(), COUNTER_WRITE_DELAY_MS);
      this.#writeTimer.unref();
    }
  }

  async setUsage(address: string, used: number, onlyIfMissing: boolean): Promise<number> {
    const sql = onlyIfMissing
      ? 'INSERT INTO mailbox_usage (address, used) VALUES (?1, ?2) ON CONFLICT (address) DO NOTHING'
      : 'INSERT INTO mailbox_usage (address, used) VALUES (?1, ?2) ON CONFLICT (address) DO UPDATE SET used = ?2';
    this.#writeHeld();
    this.#counters(sql).run(address, used);
    const counted = (this.#counters('SELECT used FROM mailbox_usage WHERE address = ?').get(address) as { used: number }).used;
    this.#know(address, counted, Date.now());
    return counted;
  }

  async claimWarning(address: string): Promise<boolean> {
    this.#writeHeld();
    return this.#counters('UPDATE mailbox_usage SET warned = 1 WHERE address = ? AND warned = 0').run(address).changes === 1;
  }

  async clearWarning(address: string): Promise<void> {
    this.#writeHeld();
    this.#counters('UPDATE mailbox_usage SET warned = 0 WHERE address = ? AND warned = 1').run(address);
  }

  async forget(address: string): Promise<void> {
    this.#writeHeld();
    this.#known.delete(address);
    this.#counters('DELETE FROM mailbox_usage WHERE address = ?').run(address);
    this.#settings('DELETE FROM quota_limits WHERE subject = ?').run(address);
  }
}

/** Whether a process of this machine still runs (signal 0 only checks; EPERM: it runs as another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
