import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { openSqlite, statementCache, writeTransaction } from './open.ts';
import type { Envelope, NextAttempt, QueuedMessage, QueuedRecipient, QueueStore, RecipientState, RecipientUpdate } from '../queue/store.ts';

interface MessageRow {
  id: string;
  sender: string;
  received_at: number;
  client_ip: string;
  authorized_user: string | null;
  size: number;
  attempts: number;
  next_attempt_at: number;
  last_error: string | null;
  warned: number;
  lease_owner: string | null;
}

interface RecipientRow {
  message_id: string;
  address: string;
  state: RecipientState;
  status: string | null;
  diagnostic: string | null;
  remote_mta: string | null;
  updated_at: number | null;
}

/**
 * The embedded queue index, in its own SQLite file beside the spool (data_dir/queue/). The
 * spool files are the truth: the index is rebuilt from them at start (see OutboundQueue.recover),
 * so its commits need not wait for the disk (synchronous = NORMAL) and add no fsync to the
 * path that answers 250. A state change lost to a power cut means at worst one repeated
 * attempt, which RFC 5321 §6.1 accepts; never a lost message.
 */
export class SqliteQueueStore implements QueueStore {
  readonly #db: DatabaseSync;
  readonly #sql: (sql: string) => StatementSync;
  readonly #insertMessage: StatementSync;
  readonly #insertRecipient: StatementSync;
  readonly #claim: StatementSync;
  readonly #recipientsOf: StatementSync;
  readonly #updateRecipient: StatementSync;

  static open(dataDir: string): SqliteQueueStore {
    const dir = join(dataDir, 'queue');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return new SqliteQueueStore(openSqlite(join(dir, 'index.sqlite'), 'NORMAL'));
  }

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#sql = statementCache(db);
    db.exec('PRAGMA foreign_keys = ON');
    db.exec(`CREATE TABLE IF NOT EXISTS queue_messages (
      id TEXT PRIMARY KEY,
      sender TEXT NOT NULL,
      received_at INTEGER NOT NULL,
      client_ip TEXT NOT NULL,
      authorized_user TEXT,
      size INTEGER NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      next_attempt_at INTEGER NOT NULL,
      last_error TEXT,
      warned INTEGER NOT NULL DEFAULT 0,
      lease_owner TEXT
    ) STRICT`);
    addLeaseOwners(db);
    db.exec('CREATE INDEX IF NOT EXISTS queue_messages_due ON queue_messages (next_attempt_at)');
    db.exec(`CREATE TABLE IF NOT EXISTS queue_recipients (
      message_id TEXT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE,
      address TEXT NOT NULL,
      state TEXT NOT NULL,
      status TEXT,
      diagnostic TEXT,
      remote_mta TEXT,
      updated_at INTEGER,
      PRIMARY KEY (message_id, address)
    ) STRICT`);
    this.#insertMessage = db.prepare(
      `INSERT OR IGNORE INTO queue_messages (id, sender, received_at, client_ip, authorized_user, size, next_attempt_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#insertRecipient = db.prepare(`INSERT OR IGNORE INTO queue_recipients (message_id, address, state) VALUES (?, ?, 'pending')`);
    // A leased message's next attempt moves to the lease's end, so the due range of the index
    // holds only messages nobody is delivering: a claim costs the same with 1 or 1,000 in flight.
    this.#claim = db.prepare(
      `UPDATE queue_messages SET lease_owner = ?4, next_attempt_at = ?1
       WHERE id IN (SELECT id FROM queue_messages WHERE next_attempt_at <= ?2 ORDER BY next_attempt_at, received_at LIMIT ?3)
       RETURNING *`,
    );
    this.#recipientsOf = db.prepare('SELECT * FROM queue_recipients WHERE message_id = ? ORDER BY rowid');
    this.#updateRecipient = db.prepare(
      `UPDATE queue_recipients SET state = ?, status = ?, diagnostic = ?, remote_mta = ?, updated_at = ? WHERE message_id = ? AND address = ?`,
    );
  }

  async add(envelope: Envelope, size: number): Promise<void> {
    writeTransaction(this.#db, () => {
      this.#insertMessage.run(envelope.id, envelope.from, envelope.receivedAt, envelope.clientIp, envelope.authorizedUser ?? null, size, envelope.receivedAt);
      for (const address of envelope.to) this.#insertRecipient.run(envelope.id, address);
    });
  }

  async ids(): Promise<Set<string>> {
    return new Set((this.#sql('SELECT id FROM queue_messages').all() as { id: string }[]).map((row) => row.id));
  }

  async claim(now: number, limit: number, leaseMs: number, owner: string): Promise<QueuedMessage[]> {
    let rows: MessageRow[] = [];
    writeTransaction(this.#db, () => {
      rows = this.#claim.all(now + leaseMs, now, limit, owner) as unknown as MessageRow[];
    });
    return rows.sort((a, b) => a.received_at - b.received_at).map((row) => this.#toMessage(row));
  }

  async releaseLeases(now: number, owner: string): Promise<number> {
    return Number(this.#sql('UPDATE queue_messages SET lease_owner = NULL, next_attempt_at = ? WHERE lease_owner = ?').run(now, owner).changes);
  }

  async nextDueAt(): Promise<number | undefined> {
    const row = this.#sql('SELECT min(next_attempt_at) AS at FROM queue_messages').get() as { at: number | null };
    return row.at ?? undefined;
  }

  async get(id: string): Promise<QueuedMessage | undefined> {
    const row = this.#sql('SELECT * FROM queue_messages WHERE id = ?').get(id) as MessageRow | undefined;
    return row && this.#toMessage(row);
  }

  async list(): Promise<QueuedMessage[]> {
    return (this.#sql('SELECT * FROM queue_messages ORDER BY received_at, id').all() as unknown as MessageRow[]).map((row) => this.#toMessage(row));
  }

  async recordAttempt(id: string, updates: RecipientUpdate[], next: NextAttempt, now: number): Promise<void> {
    writeTransaction(this.#db, () => {
      for (const u of updates) this.#updateRecipient.run(u.state, u.status ?? null, u.diagnostic ?? null, u.remoteMta ?? null, now, id, u.address);
      this.#sql('UPDATE queue_messages SET attempts = ?, next_attempt_at = ?, last_error = ?, warned = ?, lease_owner = NULL WHERE id = ?')
        .run(next.attempts, next.nextAttemptAt, next.lastError ?? null, next.warned ? 1 : 0, id);
    });
  }

  async retryNow(id: string | undefined, now: number): Promise<number> {
    const result =
      id === undefined
        ? this.#sql('UPDATE queue_messages SET next_attempt_at = ? WHERE next_attempt_at > ? AND lease_owner IS NULL').run(now, now)
        : this.#sql('UPDATE queue_messages SET next_attempt_at = min(next_attempt_at, ?) WHERE id = ? AND lease_owner IS NULL').run(now, id);
    return Number(result.changes);
  }

  async remove(id: string): Promise<void> {
    this.#sql('DELETE FROM queue_messages WHERE id = ?').run(id);
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }

  #toMessage(row: MessageRow): QueuedMessage {
    const recipients = (this.#recipientsOf.all(row.id) as unknown as RecipientRow[]).map(
      (r): QueuedRecipient => ({
        address: r.address,
        state: r.state,
        status: r.status ?? undefined,
        diagnostic: r.diagnostic ?? undefined,
        remoteMta: r.remote_mta ?? undefined,
        updatedAt: r.updated_at ?? undefined,
      }),
    );
    return {
      id: row.id,
      from: row.sender,
      receivedAt: row.received_at,
      clientIp: row.client_ip,
      authorizedUser: row.authorized_user ?? undefined,
      size: row.size,
      attempts: row.attempts,
      nextAttemptAt: row.next_attempt_at,
      lastError: row.last_error ?? undefined,
      warned: row.warned === 1,
      leaseOwner: row.lease_owner ?? undefined,
      recipients,
    };
  }

}

/**
 * Leases have owners since several nodes may share a queue. An index written before has a
 * `leased` flag instead: the column is added (checked and altered in one write transaction, so a
 * CLI and a server opening the file at once do it once) and the flag dropped. A message that
 * was leased keeps its time, the end of that lease, without an owner: it falls due when the
 * lease would have ended, as the leases of a process that is gone do.
 */
function addLeaseOwners(db: DatabaseSync): void {
  writeTransaction(db, () => {
    const columns = (db.prepare("SELECT name FROM pragma_table_info('queue_messages')").all() as { name: string }[]).map((c) => c.name);
    if (!columns.includes('lease_owner')) {
      db.exec('ALTER TABLE queue_messages ADD COLUMN lease_owner TEXT');
      db.exec('ALTER TABLE queue_messages DROP COLUMN leased');
    }
  });
}
