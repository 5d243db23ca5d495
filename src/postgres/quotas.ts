import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type pg from 'pg';
import type { MailboxUsage, QuotaLimit, QuotaStore } from '../quota/store.ts';
import { statement } from './pool.ts';

// Quotas in the cluster's PostgreSQL: every node moves the same counters (the row lock of an
// UPDATE serialises concurrent moves of one mailbox).
//
// One UPDATE per delivery was a round trip to PostgreSQL per message, paid in CPU by the node
// and by PostgreSQL. So, as the embedded store does (src/sqlite/quotas.ts), deliveries' moves
// are held back for a moment and written together in one statement; this store's own reads
// write them first, and other nodes see them within COUNTER_WRITE_DELAY_MS. A node killed while
// it holds moves would leave counters short: before the first move of a batch is held, the
// batch gets a row in popgate_counter_writers with a lease, and the statement that writes the
// batch's moves removes it. Every store looks for rows whose lease ran out (their writer died,
// or could not reach PostgreSQL for that long) and then forgets every counter, so each mailbox
// is counted from its folder at its next use, as after a crash of PostgreSQL (the counters'
// table is unlogged and starts empty). Forgetting too much costs a recount, never a wrong count.

/**
 * How long a delivery's counter move is held back, to be written with the others of that moment:
 * as long as in the embedded store (src/sqlite/quotas.ts). Each batch costs two statements (its
 * writer row, then the moves); at 20 ms a node of `npm run bench`'s cluster wrote a batch per
 * few messages and PostgreSQL spent about twice the CPU per delivered message (docs/cluster.md).
 * Other nodes trust a counter they read for up to a second (KNOWN_FOR_MS) anyway.
 */
export const COUNTER_WRITE_DELAY_MS = 100;
/**
 * A counter value this store wrote or read within this long is trusted to answer a held-back
 * move; an older one is read again by writing the move at once (as in src/sqlite/quotas.ts).
 */
const KNOWN_FOR_MS = 1000;
const KNOWN_MAX = 10_000;
/** A batch's row outlives its write by far (milliseconds); past this its writer is taken for dead. */
const WRITER_LEASE_MS = 10_000;
/** When a background write failed (PostgreSQL away), how long until the next try. */
const WRITE_RETRY_MS = 1000;
/** How often a store looks for the rows of dead writers. */
const DEAD_WRITER_CHECK_MS = 5_000;

const upsertLimit = statement('quota_limit_set', 'INSERT INTO popgate_quota_limits (subject, limit_bytes) VALUES ($1, $2) ON CONFLICT (subject) DO UPDATE SET limit_bytes = excluded.limit_bytes');
const removeLimit = statement('quota_limit_remove', 'DELETE FROM popgate_quota_limits WHERE subject = $1');
const getLimits = statement<{ subject: string; limit_bytes: string | null }>('quota_limits_get', 'SELECT subject, limit_bytes FROM popgate_quota_limits WHERE subject = $1 OR subject = $2');
const listLimits = statement<{ subject: string; limit_bytes: string | null }>('quota_limits_list', 'SELECT subject, limit_bytes FROM popgate_quota_limits ORDER BY subject');
const getUsage = statement<{ used: string; warned: boolean }>('quota_usage_get', 'SELECT used, warned FROM popgate_mailbox_usage WHERE address = $1');
const listUsage = statement<{ address: string; used: string; warned: boolean }>('quota_usage_list', 'SELECT address, used, warned FROM popgate_mailbox_usage ORDER BY address');
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
const registerWriter = statement(
  'quota_writer_register',
  "INSERT INTO popgate_counter_writers (instance, batch, node, expires_at) VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 millisecond')",
);
// One statement, so the moves and the removal of their batches' rows are one transaction.
// Addresses in order: two nodes writing the same mailboxes lock their rows in the same order.
const writeMoves = statement<{ address: string; used: string }>(
  'quota_moves_write',
  `WITH moved AS (
     UPDATE popgate_mailbox_usage AS usage SET used = greatest(0, usage.used + move.delta)
     FROM unnest($1::text[], $2::bigint[]) AS move (address, delta)
     WHERE usage.address = move.address
     RETURNING usage.address, usage.used
   ), written AS (
     DELETE FROM popgate_counter_writers WHERE instance = $3 AND batch = ANY ($4::bigint[])
   )
   SELECT address, used FROM moved`,
);
const forgetCountersOfDeadWriters = statement<{ writers: number }>(
  'quota_dead_writers_forget',
  `WITH dead AS (
     DELETE FROM popgate_counter_writers WHERE expires_at < clock_timestamp() RETURNING node
   ), forgotten AS (
     DELETE FROM popgate_mailbox_usage WHERE EXISTS (SELECT 1 FROM dead)
   )
   SELECT count(*)::integer AS writers FROM dead`,
);

/** bigint columns come back as text from pg (they may pass 2^53; ours never do). */
const limitOf = (value: string | null): QuotaLimit => (value === null ? null : Number(value));

/** Deliveries' moves held back together, under one row of popgate_counter_writers. */
interface Batch {
  id: number;
  /** The batch's row is written: its moves may be held. Rejects when it could not be. */
  registered: Promise<void>;
  moves: Map<string, number>;
  timer?: NodeJS.Timeout;
  /** Handed to the writer: later moves go to another batch. */
  closed: boolean;
}

export interface PostgresQuotaStoreOptions {
  /** This node's name, shown in its writer rows (default: the machine's). */
  node?: string;
  /** How long a batch's row is taken as its writer being alive (tests shorten it). */
  writerLeaseMs?: number;
}

export class PostgresQuotaStore implements QuotaStore {
  readonly #pool: pg.Pool;
  readonly #node: string;
  readonly #writerLeaseMs: number;
  readonly #instance = randomUUID();
  #nextBatch = 1;
  #batch: Batch | undefined;
  /** Moves to write with the next statement: closed batches' (with their rows) and those written at once. */
  #unwritten = { moves: new Map<string, number>(), batches: [] as Batch[] };
  /** The write in progress, if any: writes happen one after the other. */
  #writing: Promise<void> = Promise.resolve();
  /** Each mailbox's counter as this store last wrote or read it, held moves included. */
  readonly #known = new Map<string, { used: number; at: number }>();
  readonly #deadWriterCheck: NodeJS.Timeout;

  constructor(pool: pg.Pool, options: PostgresQuotaStoreOptions = {}) {
    this.#pool = pool;
    this.#node = options.node ?? hostname();
    this.#writerLeaseMs = options.writerLeaseMs ?? WRITER_LEASE_MS;
    // A failed check (PostgreSQL away) is simply made again at the next one.
    const check = () => void this.forgetCountersOfDeadWriters().catch(() => {});
    this.#deadWriterCheck = setInterval(check, Math.min(DEAD_WRITER_CHECK_MS, this.#writerLeaseMs / 2));
    this.#deadWriterCheck.unref();
    check();
  }

  /**
   * Forgets every counter when some writer's lease ran out with moves unwritten (see above);
   * resolves to how many such writers there were. Called every few seconds by every store.
   */
  async forgetCountersOfDeadWriters(): Promise<number> {
    return (await forgetCountersOfDeadWriters(this.#pool)).rows[0].writers;
  }

  /** Writes the counter moves held back; before the pool ends, and for readers elsewhere. */
  flush(): Promise<void> {
    return this.#writeHeld();
  }

  /** Writes what is held and stops looking for dead writers; the pool stays open. */
  async close(): Promise<void> {
    clearInterval(this.#deadWriterCheck);
    await this.#writeHeld();
  }

  /** Closes the current batch and writes every unwritten move, after any write in progress. */
  #writeHeld(): Promise<void> {
    const batch = this.#batch;
    if (batch) {
      this.#batch = undefined;
      batch.closed = true;
      clearTimeout(batch.timer);
      for (const [address, delta] of batch.moves) this.#unwritten.moves.set(address, (this.#unwritten.moves.get(address) ?? 0) + delta);
      this.#unwritten.batches.push(batch);
    }
    this.#writing = this.#writing.catch(() => {}).then(() => this.#writeUnwritten());
    return this.#writing;
  }

  async #writeUnwritten(): Promise<void> {
    const { moves, batches } = this.#unwritten;
    if (moves.size === 0 && batches.length === 0) return;
    this.#unwritten = { moves: new Map(), batches: [] };
    try {
      // A row still on its way must not arrive after the statement that removes it.
      await Promise.allSettled(batches.map((batch) => batch.registered));
      const addresses = [...moves.keys()].sort();
      const rows = (await writeMoves(this.#pool, [addresses, addresses.map((address) => moves.get(address)), this.#instance, batches.map((batch) => batch.id)])).rows;
      const now = Date.now();
      const written = new Map(rows.map((row) => [row.address, Number(row.used)]));
      for (const address of addresses) {
        const used = written.get(address);
        // No counter any more (forgotten): the folder, which holds the messages, is counted at
        // the mailbox's next use.
        if (used === undefined) this.#known.delete(address);
        else this.#know(address, used, now);
      }
    } catch (error) {
      // Kept for the next write, with their rows: if this node dies first, the others see it.
      for (const [address, delta] of moves) this.#unwritten.moves.set(address, (this.#unwritten.moves.get(address) ?? 0) + delta);
      this.#unwritten.batches.push(...batches);
      throw error;
    }
  }

  /** The timer's write: a failure keeps the moves, and a later write (or read) takes them along. */
  #writeHeldInBackground(): void {
    if (this.#pool.ending) return;
    this.#writeHeld().catch(() => {
      const retry = setTimeout(() => this.#writeHeldInBackground(), WRITE_RETRY_MS);
      retry.unref();
    });
  }

  #know(address: string, used: number, now: number): void {
    if (this.#known.size >= KNOWN_MAX && !this.#known.has(address)) this.#known.clear();
    this.#known.set(address, { used, at: now });
  }

  /** The batch taking moves now, its row asked for when it opens. */
  #openBatch(): Batch {
    const batch: Batch = { id: this.#nextBatch++, registered: Promise.resolve(), moves: new Map(), closed: false };
    batch.registered = (async () => {
      await registerWriter(this.#pool, [this.#instance, batch.id, this.#node, this.#writerLeaseMs]);
    })();
    batch.registered.then(
      () => {
        if (batch.closed) return;
        batch.timer = setTimeout(() => this.#writeHeldInBackground(), COUNTER_WRITE_DELAY_MS);
        batch.timer.unref();
      },
      () => {
        // Nothing was held under it; the next delivery opens another.
        if (this.#batch === batch) this.#batch = undefined;
      },
    );
    return batch;
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
    await this.#writeHeld();
    const row = (await getUsage(this.#pool, [address])).rows[0];
    return row && { used: Number(row.used), warned: row.warned };
  }

  async listUsage(): Promise<({ address: string } & MailboxUsage)[]> {
    await this.#writeHeld();
    return (await listUsage(this.#pool)).rows.map((row) => ({ address: row.address, used: Number(row.used), warned: row.warned }));
  }

  async add(address: string, delta: number): Promise<number | undefined> {
    const known = this.#known.get(address);
    // Deliveries to a counter seen a moment ago are held back; a deletion (which the floor at
    // zero must judge against the real value) or a counter not seen lately is written now.
    if (delta >= 0 && known && Date.now() - known.at < KNOWN_FOR_MS) {
      const batch = (this.#batch ??= this.#openBatch());
      // Before the first held move returns: a death from here on is seen by the other nodes.
      await batch.registered;
      if (!batch.closed) {
        batch.moves.set(address, (batch.moves.get(address) ?? 0) + delta);
        known.used += delta;
        return known.used;
      }
    }
    // Written now, in the statement that writes what is held: a deletion is judged against a
    // counter that has every delivery before it. Moves already waiting for the open batch's
    // row join it first.
    await this.#batch?.registered.catch(() => {});
    this.#unwritten.moves.set(address, (this.#unwritten.moves.get(address) ?? 0) + delta);
    await this.#writeHeld();
    return this.#known.get(address)?.used;
  }

  async setUsage(address: string, used: number, onlyIfMissing: boolean): Promise<number> {
    await this.#writeHeld();
    const counted = onlyIfMissing
      ? (await insertUsage(this.#pool, [address, used]), Number((await getUsage(this.#pool, [address])).rows[0]?.used ?? used))
      : Number((await setUsage(this.#pool, [address, used])).rows[0].used);
    this.#know(address, counted, Date.now());
    return counted;
  }

  async claimWarning(address: string): Promise<boolean> {
    await this.#writeHeld();
    return (await claimWarning(this.#pool, [address])).rowCount === 1;
  }

  async clearWarning(address: string): Promise<void> {
    await this.#writeHeld();
    await clearWarning(this.#pool, [address]);
  }

  async forget(address: string): Promise<void> {
    await this.#writeHeld();
    this.#known.delete(address);
    await forgetUsage(this.#pool, [address]);
    await removeLimit(this.#pool, [address]);
  }
}
