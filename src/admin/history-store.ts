// The dashboard's 24-hour history: one value per metric per 5-minute bucket, shared by every
// process of a machine and every node of a cluster. Counters are added into a bucket by each
// process (so N workers' deltas sum up); gauges are set by the one process that samples them.

export interface HistoryPoint {
  metric: string;
  /** The bucket's start, in ms since 1970 (a multiple of the bucket length). */
  bucket: number;
  value: number;
}

export interface HistoryStore {
  /** Adds each delta to its metric's value in `bucket` (creating it at 0). */
  add(bucket: number, deltas: ReadonlyMap<string, number>): Promise<void>;
  /** Sets each gauge's value in `bucket`, replacing what was there. */
  set(bucket: number, values: ReadonlyMap<string, number>): Promise<void>;
  /** Every point in buckets from `since` on, oldest first. */
  since(since: number): Promise<HistoryPoint[]>;
  /** Drops buckets older than `before`. */
  prune(before: number): Promise<void>;
}
