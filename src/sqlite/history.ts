import type { DatabaseSync, StatementSync } from 'node:sqlite';
import type { HistoryPoint, HistoryStore } from '../admin/history-store.ts';
import { statementCache } from './open.ts';

/** The dashboard history on the counters connection (no fsync per write: a lost bucket is a dip in a chart). */
export class SqliteHistoryStore implements HistoryStore {
  readonly #sql: (sql: string) => StatementSync;

  constructor(counters: DatabaseSync) {
    counters.exec('CREATE TABLE IF NOT EXISTS dashboard_history (metric TEXT NOT NULL, bucket INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (metric, bucket)) STRICT');
    this.#sql = statementCache(counters);
  }

  async add(bucket: number, deltas: ReadonlyMap<string, number>): Promise<void> {
    const upsert = this.#sql('INSERT INTO dashboard_history (metric, bucket, value) VALUES (?, ?, ?) ON CONFLICT (metric, bucket) DO UPDATE SET value = value + excluded.value');
    for (const [metric, delta] of deltas) upsert.run(metric, bucket, delta);
  }

  async set(bucket: number, values: ReadonlyMap<string, number>): Promise<void> {
    const upsert = this.#sql('INSERT INTO dashboard_history (metric, bucket, value) VALUES (?, ?, ?) ON CONFLICT (metric, bucket) DO UPDATE SET value = excluded.value');
    for (const [metric, value] of values) upsert.run(metric, bucket, value);
  }

  async since(since: number): Promise<HistoryPoint[]> {
    return (this.#sql('SELECT metric, bucket, value FROM dashboard_history WHERE bucket >= ? ORDER BY bucket, metric').all(since) as unknown as HistoryPoint[]).map((row) => ({ ...row }));
  }

  async prune(before: number): Promise<void> {
    this.#sql('DELETE FROM dashboard_history WHERE bucket < ?').run(before);
  }
}
