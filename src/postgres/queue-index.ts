import type pg from 'pg';
import type { Envelope, NextAttempt, QueuedMessage, QueuedRecipient, QueueStore, RecipientState, RecipientUpdate } from '../queue/store.ts';
import { statement } from './pool.ts';

// The outbound queue index of a cluster, in PostgreSQL (tables in migrate.ts); the spool files
// on shared storage stay the truth. Every method is one statement, so none holds a transaction
// open across round trips, and a message comes back with its recipients in the same answer.
//
// Claiming is where several nodes meet. The claim picks the due messages FOR UPDATE SKIP LOCKED
// and moves them to the end of the lease in the same statement: rows another node is claiming
// at that moment are locked, so they are skipped instead of waited for (and never taken twice),
// and a claim costs the same whatever the others do. A leased message's next attempt is the end
// of its lease, so the due index holds only messages nobody is delivering.

const MESSAGE_COLUMNS = 'id, sender, received_at, client_ip, authorized_user, size, attempts, next_attempt_at, last_error, warned, lease_owner';

/** A message's recipients, in the order they were added, as one JSON array. */
const RECIPIENTS_OF = (message: string) => `(
  SELECT coalesce(json_agg(json_build_object(
    'address', r.address, 'state', r.state, 'status', r.status, 'diagnostic', r.diagnostic, 'remote_mta', r.remote_mta, 'updated_at', r.updated_at
  ) ORDER BY r.position), '[]')
  FROM popgate_queue_recipients r WHERE r.message_id = ${message}.id
) AS recipients`;

interface MessageRow {
  id: string;
  sender: string;
  received_at: string;
  client_ip: string;
  authorized_user: string | null;
  size: string;
  attempts: number;
  next_attempt_at: string;
  last_error: string | null;
  warned: boolean;
  lease_owner: string | null;
  recipients: RecipientJson[];
}

interface RecipientJson {
  address: string;
  state: RecipientState;
  status: string | null;
  diagnostic: string | null;
  remote_mta: string | null;
  updated_at: number | null;
}

const sql = {
  // Idempotent: a message already indexed inserts no row, so its recipients are not added again.
  add: statement(
    'popgate_queue_add',
    `WITH message AS (
       INSERT INTO popgate_queue_messages (id, sender, received_at, client_ip, authorized_user, size, next_attempt_at)
       VALUES ($1, $2, $3, $4, $5, $6, $3)
       ON CONFLICT (id) DO NOTHING
       RETURNING id
     )
     INSERT INTO popgate_queue_recipients (message_id, position, address, state)
     SELECT message.id, r.position, r.address, 'pending' FROM message, unnest($7::text[]) WITH ORDINALITY AS r (address, position)
     ON CONFLICT (message_id, address) DO NOTHING`,
  ),
  ids: statement<{ id: string }>('popgate_queue_ids', 'SELECT id FROM popgate_queue_messages'),
  claim: statement<MessageRow>(
    'popgate_queue_claim',
    `WITH due AS (
       SELECT id FROM popgate_queue_messages
       WHERE next_attempt_at <= $2
       ORDER BY next_attempt_at, received_at
       LIMIT $3
       FOR UPDATE SKIP LOCKED
     ), claimed AS (
       UPDATE popgate_queue_messages m SET lease_owner = $4, next_attempt_at = $1
       FROM due WHERE m.id = due.id
       RETURNING ${MESSAGE_COLUMNS.split(', ').map((column) => `m.${column}`).join(', ')}
     )
     SELECT claimed.*, ${RECIPIENTS_OF('claimed')} FROM claimed ORDER BY received_at, id`,
  ),
  releaseLeases: statement('popgate_queue_release_leases', 'UPDATE popgate_queue_messages SET lease_owner = NULL, next_attempt_at = $1 WHERE lease_owner = $2'),
  nextDueAt: statement<{ at: string | null }>('popgate_queue_next_due_at', 'SELECT min(next_attempt_at) AS at FROM popgate_queue_messages'),
  get: statement<MessageRow>('popgate_queue_get', `SELECT ${MESSAGE_COLUMNS}, ${RECIPIENTS_OF('m')} FROM popgate_queue_messages m WHERE id = $1`),
  list: statement<MessageRow>('popgate_queue_list', `SELECT ${MESSAGE_COLUMNS}, ${RECIPIENTS_OF('m')} FROM popgate_queue_messages m ORDER BY received_at, id`),
  // The answers (as parallel arrays) and the next attempt in one statement, so they change together.
  recordAttempt: statement(
    'popgate_queue_record_attempt',
    `WITH answers AS (
       UPDATE popgate_queue_recipients r
       SET state = u.state, status = u.status, diagnostic = u.diagnostic, remote_mta = u.remote_mta, updated_at = $7
       FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u (address, state, status, diagnostic, remote_mta)
       WHERE r.message_id = $1 AND r.address = u.address
     )
     UPDATE popgate_queue_messages
     SET attempts = $8, next_attempt_at = $9, last_error = $10, warned = $11, lease_owner = NULL
     WHERE id = $1`,
  ),
  retryAll: statement('popgate_queue_retry_all', 'UPDATE popgate_queue_messages SET next_attempt_at = $1 WHERE next_attempt_at > $1 AND lease_owner IS NULL'),
  retryOne: statement(
    'popgate_queue_retry_one',
    'UPDATE popgate_queue_messages SET next_attempt_at = least(next_attempt_at, $1) WHERE id = $2 AND lease_owner IS NULL',
  ),
  remove: statement('popgate_queue_remove', 'DELETE FROM popgate_queue_messages WHERE id = $1'),
};

/** The queue index on a shared pool (whose schema `migrate` has brought up to date). */
export class PostgresQueueStore implements QueueStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async add(envelope: Envelope, size: number): Promise<void> {
    await sql.add(this.#pool, [envelope.id, envelope.from, envelope.receivedAt, envelope.clientIp, envelope.authorizedUser ?? null, size, envelope.to]);
  }

  async ids(): Promise<Set<string>> {
    return new Set((await sql.ids(this.#pool)).rows.map((row) => row.id));
  }

  async claim(now: number, limit: number, leaseMs: number, owner: string): Promise<QueuedMessage[]> {
    return (await sql.claim(this.#pool, [now + leaseMs, now, limit, owner])).rows.map(toMessage);
  }

  async releaseLeases(now: number, owner: string): Promise<number> {
    return (await sql.releaseLeases(this.#pool, [now, owner])).rowCount ?? 0;
  }

  async nextDueAt(): Promise<number | undefined> {
    const [row] = (await sql.nextDueAt(this.#pool)).rows;
    return row.at === null ? undefined : Number(row.at);
  }

  async get(id: string): Promise<QueuedMessage | undefined> {
    const [row] = (await sql.get(this.#pool, [id])).rows;
    return row && toMessage(row);
  }

  async list(): Promise<QueuedMessage[]> {
    return (await sql.list(this.#pool)).rows.map(toMessage);
  }

  async recordAttempt(id: string, updates: RecipientUpdate[], next: NextAttempt, now: number): Promise<void> {
    await sql.recordAttempt(this.#pool, [
      id,
      updates.map((u) => u.address),
      updates.map((u) => u.state),
      updates.map((u) => u.status ?? null),
      updates.map((u) => u.diagnostic ?? null),
      updates.map((u) => u.remoteMta ?? null),
      now,
      next.attempts,
      next.nextAttemptAt,
      next.lastError ?? null,
      next.warned,
    ]);
  }

  async retryNow(id: string | undefined, now: number): Promise<number> {
    const result = id === undefined ? await sql.retryAll(this.#pool, [now]) : await sql.retryOne(this.#pool, [now, id]);
    return result.rowCount ?? 0;
  }

  async remove(id: string): Promise<void> {
    await sql.remove(this.#pool, [id]);
  }

  /** Nothing to close: the pool is shared, and ended by its maker. */
  async close(): Promise<void> {}
}

function toMessage(row: MessageRow): QueuedMessage {
  return {
    id: row.id,
    from: row.sender,
    receivedAt: Number(row.received_at),
    clientIp: row.client_ip,
    authorizedUser: row.authorized_user ?? undefined,
    size: Number(row.size),
    attempts: row.attempts,
    nextAttemptAt: Number(row.next_attempt_at),
    lastError: row.last_error ?? undefined,
    warned: row.warned,
    leaseOwner: row.lease_owner ?? undefined,
    recipients: row.recipients.map(
      (r): QueuedRecipient => ({
        address: r.address,
        state: r.state,
        status: r.status ?? undefined,
        diagnostic: r.diagnostic ?? undefined,
        remoteMta: r.remote_mta ?? undefined,
        updatedAt: r.updated_at ?? undefined,
      }),
    ),
  };
}
