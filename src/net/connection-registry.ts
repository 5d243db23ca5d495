// Live connections per client address, and new connections per address per minute: what the
// per-address limits of every service count. One process keeps them in memory
// (LocalConnectionRegistry); the workers of one machine or the nodes of a cluster share them
// through a backend, so a client cannot get N times the limit by landing on N processes.
//
// Entries belong to a holder (a process). A holder announces it is alive with `heartbeat`;
// the entries of a holder whose heartbeat has lapsed no longer count, so a process killed with
// kill -9 stops holding connections it can no longer serve. Times come from the caller.

export interface ConnectionRegistry {
  /**
   * Registers connection `id` (unique within its holder) from `ip` on `service`, unless `ip`
   * already has `max` live connections there, counting only holders alive at `now`.
   * Resolves to whether it was admitted.
   */
  admit(service: string, ip: string, holder: string, id: string, max: number, now: number): Promise<boolean>;
  /** Forgets a connection (it closed). Releasing one that is not registered does nothing. */
  release(service: string, ip: string, holder: string, id: string): Promise<void>;
  /** `holder` is alive until `now + leaseMs`; a holder renews well before that. */
  heartbeat(holder: string, now: number, leaseMs: number): Promise<void>;
  /**
   * Takes a token from `ip`'s bucket for `service`: it holds `perMinute` tokens at most and
   * refills at `perMinute` a minute. Resolves to false when it is empty (the connection is
   * over the rate).
   */
  takeToken(service: string, ip: string, perMinute: number, now: number): Promise<boolean>;
  close(): Promise<void>;
}

/** The registry of one process: everything in memory, holders always alive. */
export class LocalConnectionRegistry implements ConnectionRegistry {
  /** The live connections ("holder id") per service and address. */
  readonly #connections = new Map<string, Set<string>>();
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  async admit(service: string, ip: string, holder: string, id: string, max: number): Promise<boolean> {
    const key = `${service} ${ip}`;
    const ids = this.#connections.get(key) ?? new Set<string>();
    if (ids.size >= max) return false;
    ids.add(`${holder} ${id}`);
    this.#connections.set(key, ids);
    return true;
  }

  async release(service: string, ip: string, holder: string, id: string): Promise<void> {
    const key = `${service} ${ip}`;
    const ids = this.#connections.get(key);
    if (!ids?.delete(`${holder} ${id}`)) return;
    if (ids.size === 0) this.#connections.delete(key);
  }

  async heartbeat(): Promise<void> {}

  async takeToken(service: string, ip: string, perMinute: number, now: number): Promise<boolean> {
    const key = `${service} ${ip}`;
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      if (this.#buckets.size >= 100_000) {
        // Under a flood of addresses, forget the full buckets (nothing is lost by that).
        for (const [other, b] of this.#buckets) if (b.tokens + ((now - b.at) * perMinute) / 60_000 >= perMinute) this.#buckets.delete(other);
        if (this.#buckets.size >= 100_000) this.#buckets.clear();
      }
      bucket = { tokens: perMinute, at: now };
      this.#buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(perMinute, bucket.tokens + ((now - bucket.at) * perMinute) / 60_000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  async close(): Promise<void> {}
}
