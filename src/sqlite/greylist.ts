import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { GreylistStore, TripletRecord } from '../filter/greylist.ts';

interface TripletRow {
  first_seen: number;
  passed: number;
  expires_at: number;
}

const toRecord = (row: TripletRow): TripletRecord => ({ firstSeen: row.first_seen, passed: row.passed === 1, expiresAt: row.expires_at });

/**
 * Greylisted triplets and remembered client networks in the embedded database, on the counters
 * connection (openCountersDatabase): every first attempt of every spam run writes a row, which
 * must not cost a disk sync, and a record lost in a power cut only costs one more retry.
 * Expired rows are ignored by every lookup and deleted by sweep().
 */
export class SqliteGreylistStore implements GreylistStore {
  readonly #triplet: StatementSync;
  readonly #network: StatementSync;
  readonly #recordAttempt: StatementSync;
  readonly #recordPass: StatementSync;
  readonly #rememberNetwork: StatementSync;
  readonly #sweepTriplets: StatementSync;
  readonly #sweepNetworks: StatementSync;

  constructor(db: DatabaseSync) {
    db.exec(`CREATE TABLE IF NOT EXISTS greylist_triplets (
      triplet TEXT PRIMARY KEY,
      first_seen INTEGER NOT NULL,
      passed INTEGER NOT NULL,
      expires_at INTEGER NOT NULL
    ) STRICT`);
    db.exec('CREATE INDEX IF NOT EXISTS greylist_triplets_expires_at ON greylist_triplets (expires_at)');
    db.exec('CREATE TABLE IF NOT EXISTS greylist_networks (network TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT');
    this.#triplet = db.prepare('SELECT first_seen, passed, expires_at FROM greylist_triplets WHERE triplet = ? AND expires_at > ?');
    this.#network = db.prepare('SELECT expires_at FROM greylist_networks WHERE network = ? AND expires_at > ?');
    // A live record is kept as it is; an expired one (or none) is replaced.
    this.#recordAttempt = db.prepare(
      `INSERT INTO greylist_triplets (triplet, first_seen, passed, expires_at) VALUES (?1, ?2, 0, ?3)
       ON CONFLICT (triplet) DO UPDATE SET first_seen = ?2, passed = 0, expires_at = ?3 WHERE greylist_triplets.expires_at <= ?2`,
    );
    this.#recordPass = db.prepare(
      `INSERT INTO greylist_triplets (triplet, first_seen, passed, expires_at) VALUES (?1, ?2, 1, ?3)
       ON CONFLICT (triplet) DO UPDATE SET
         first_seen = CASE WHEN greylist_triplets.expires_at > ?2 THEN greylist_triplets.first_seen ELSE ?2 END,
         passed = 1, expires_at = ?3`,
    );
    this.#rememberNetwork = db.prepare(
      `INSERT INTO greylist_networks (network, expires_at) VALUES (?1, ?2)
       ON CONFLICT (network) DO UPDATE SET expires_at = ?2`,
    );
    this.#sweepTriplets = db.prepare('DELETE FROM greylist_triplets WHERE expires_at <= ?');
    this.#sweepNetworks = db.prepare('DELETE FROM greylist_networks WHERE expires_at <= ?');
  }

  async lookup(triplet: string, network: string, now: number): Promise<{ triplet?: TripletRecord; networkUntil?: number }> {
    const row = this.#triplet.get(triplet, now) as TripletRow | undefined;
    const remembered = this.#network.get(network, now) as { expires_at: number } | undefined;
    return { triplet: row && toRecord(row), networkUntil: remembered?.expires_at };
  }

  async recordAttempt(triplet: string, now: number, expiresAt: number): Promise<TripletRecord> {
    this.#recordAttempt.run(triplet, now, expiresAt);
    return toRecord(this.#triplet.get(triplet, now) as unknown as TripletRow);
  }

  async recordPass(triplet: string, network: string, now: number, until: number): Promise<void> {
    this.#recordPass.run(triplet, now, until);
    this.#rememberNetwork.run(network, until);
  }

  async rememberNetwork(network: string, _now: number, until: number): Promise<void> {
    this.#rememberNetwork.run(network, until);
  }

  async sweep(now: number): Promise<void> {
    this.#sweepTriplets.run(now);
    this.#sweepNetworks.run(now);
  }
}
