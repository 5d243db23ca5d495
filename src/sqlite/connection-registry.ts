import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { ConnectionRegistry } from '../net/connection-registry.ts';

// Connections per client address, and their rate, counted together by the worker processes
// of one machine in the embedded SQLite file (WAL), on the counters connection
// (openCountersDatabase: no fsync per commit; after a crash the holders' leases make stale
// rows stop counting anyway).
//
// Tables: the live connections (service, ip, holder, id); the holders with the end of their
// heartbeat's lease; a token bucket per service and address. Admission and token taking are
// each one statement: a write statement takes SQLite's write lock before it reads (as BEGIN
// IMMEDIATE would), so what it counts cannot change before it writes, and another worker waits
// (busy timeout) rather than interleaving. Heartbeats also do the housekeeping: rows of dead
// holders and buckets that have filled up again are deleted there, off the hot path.

export class SqliteConnectionRegistry implements ConnectionRegistry {
  readonly #admit: StatementSync;
  readonly #release: StatementSync;
  readonly #heartbeat: StatementSync;
  readonly #forgetHolders: StatementSync;
  readonly #forgetConnections: StatementSync;
  readonly #forgetBuckets: StatementSync;
  readonly #takeToken: StatementSync;

  constructor(db: DatabaseSync) {
    db.exec(`CREATE TABLE IF NOT EXISTS connections (
      service TEXT NOT NULL,
      ip TEXT NOT NULL,
      holder TEXT NOT NULL,
      id TEXT NOT NULL,
      PRIMARY KEY (service, ip, holder, id)
    ) STRICT, WITHOUT ROWID`);
    db.exec('CREATE TABLE IF NOT EXISTS connection_holders (holder TEXT PRIMARY KEY, alive_until INTEGER NOT NULL) STRICT');
    db.exec(`CREATE TABLE IF NOT EXISTS connection_buckets (
      service TEXT NOT NULL,
      ip TEXT NOT NULL,
      tokens REAL NOT NULL,
      at INTEGER NOT NULL,
      per_minute INTEGER NOT NULL,
      PRIMARY KEY (service, ip)
    ) STRICT`);
    // Counts only connections of holders alive at now (?5); inserts below the maximum (?6).
    this.#admit = db.prepare(
      `INSERT INTO connections (service, ip, holder, id)
       SELECT ?1, ?2, ?3, ?4
       WHERE (SELECT count(*) FROM connections c JOIN connection_holders h ON h.holder = c.holder
              WHERE c.service = ?1 AND c.ip = ?2 AND h.alive_until > ?5) < ?6`,
    );
    this.#release = db.prepare('DELETE FROM connections WHERE service = ? AND ip = ? AND holder = ? AND id = ?');
    this.#heartbeat = db.prepare(
      `INSERT INTO connection_holders (holder, alive_until) VALUES (?, ?)
       ON CONFLICT (holder) DO UPDATE SET alive_until = excluded.alive_until`,
    );
    this.#forgetHolders = db.prepare('DELETE FROM connection_holders WHERE alive_until <= ?');
    this.#forgetConnections = db.prepare('DELETE FROM connections WHERE holder NOT IN (SELECT holder FROM connection_holders)');
    this.#forgetBuckets = db.prepare('DELETE FROM connection_buckets WHERE tokens + max(0, ? - at) * per_minute / 60000.0 >= per_minute');
    // A new bucket starts full (?3 tokens) less the one taken. An existing one is refilled in
    // proportion to the time since it was last seen (never backwards: a clock set back refills
    // nothing), and the update applies only when that leaves a whole token to take.
    this.#takeToken = db.prepare(
      `INSERT INTO connection_buckets (service, ip, tokens, at, per_minute) VALUES (?1, ?2, ?3 - 1, ?4, ?3)
       ON CONFLICT (service, ip) DO UPDATE SET
         tokens = min(?3, tokens + max(0, ?4 - at) * ?3 / 60000.0) - 1,
         at = max(at, ?4),
         per_minute = ?3
       WHERE min(?3, tokens + max(0, ?4 - at) * ?3 / 60000.0) >= 1`,
    );
  }

  /** Counts only the connections of holders alive at `now`: a holder heartbeats before it admits. */
  async admit(service: string, ip: string, holder: string, id: string, max: number, now: number): Promise<boolean> {
    return Number(this.#admit.run(service, ip, holder, id, now, max).changes) === 1;
  }

  async release(service: string, ip: string, holder: string, id: string): Promise<void> {
    this.#release.run(service, ip, holder, id);
  }

  async heartbeat(holder: string, now: number, leaseMs: number): Promise<void> {
    this.#heartbeat.run(holder, now + leaseMs);
    this.#forgetHolders.run(now);
    this.#forgetConnections.run();
    this.#forgetBuckets.run(now);
  }

  async takeToken(service: string, ip: string, perMinute: number, now: number): Promise<boolean> {
    return Number(this.#takeToken.run(service, ip, perMinute, now).changes) === 1;
  }

  /** The database belongs to whoever opened it. */
  async close(): Promise<void> {}
}
