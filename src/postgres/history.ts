import type pg from 'pg';
import type { HistoryPoint, HistoryStore } from '../admin/history-store.ts';
import { statement } from './pool.ts';

// unnest: one statement per flush whatever the number of metrics.
const add = statement(
  'history_add',
  'INSERT INTO popgate_dashboard_history (metric, bucket, value) SELECT m, $1, v FROM unnest($2::text[], $3::float8[]) AS d(m, v) ON CONFLICT (metric, bucket) DO UPDATE SET value = popgate_dashboard_history.value + excluded.value',
);
const set = statement(
  'history_set',
  'INSERT INTO popgate_dashboard_history (metric, bucket, value) SELECT m, $1, v FROM unnest($2::text[], $3::float8[]) AS d(m, v) ON CONFLICT (metric, bucket) DO UPDATE SET value = excluded.value',
);
const since = statement<{ metric: string; bucket: string; value: number }>('history_since', 'SELECT metric, bucket, value FROM popgate_dashboard_history WHERE bucket >= $1 ORDER BY bucket, metric');
const prune = statement('history_prune', 'DELETE FROM popgate_dashboard_history WHERE bucket < $1');

/** The dashboard history in the cluster's PostgreSQL: every node adds its counts to the same buckets. */
export class PostgresHistoryStore implements HistoryStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async add(bucket: number, deltas: ReadonlyMap<string, number>): Promise<void> {
    if (deltas.size > 0) await add(this.#pool, [bucket, [...deltas.keys()], [...deltas.values()]]);
  }

  async set(bucket: number, values: ReadonlyMap<string, number>): Promise<void> {
    if (values.size > 0) await set(this.#pool, [bucket, [...values.keys()], [...values.values()]]);
  }

  async since(from: number): Promise<HistoryPoint[]> {
    return (await since(this.#pool, [from])).rows.map((row) => ({ metric: row.metric, bucket: Number(row.bucket), value: Number(row.value) }));
  }

  async prune(before: number): Promise<void> {
    await prune(this.#pool, [before]);
  }
}
