import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { HistoryStore } from '../../src/admin/history-store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every HistoryStore promises: counters added into a bucket sum across writers (workers,
// nodes), gauges replace, reads start at a bucket, and old buckets can be dropped.

export function historyStoreContract(backend: string, open: OpenStore<HistoryStore>): void {
  describe(`HistoryStore contract: ${backend}`, () => {
    test('deltas add up per metric and bucket, gauges replace, prune drops old buckets', () =>
      withStore(open, async ({ store }) => {
        await store.add(300_000, new Map([['logins_ok', 2], ['relays_denied', 1]]));
        await store.add(300_000, new Map([['logins_ok', 3]]));
        await store.add(600_000, new Map([['logins_ok', 1.5]]));
        await store.set(600_000, new Map([['queue_size', 7]]));
        await store.set(600_000, new Map([['queue_size', 4]]));
        await store.add(0, new Map([['logins_ok', 9]]));
        await store.add(900_000, new Map());
        assert.deepEqual(await store.since(300_000), [
          { metric: 'logins_ok', bucket: 300_000, value: 5 },
          { metric: 'relays_denied', bucket: 300_000, value: 1 },
          { metric: 'logins_ok', bucket: 600_000, value: 1.5 },
          { metric: 'queue_size', bucket: 600_000, value: 4 },
        ]);
        await store.prune(600_000);
        assert.deepEqual((await store.since(0)).map((p) => p.bucket), [600_000, 600_000]);
      }));

    test('two instances adding into one bucket at once lose nothing', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        const other = await reopen();
        await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? store : other).add(300_000, new Map([['connections', 1]]))));
        assert.deepEqual(await store.since(0), [{ metric: 'connections', bucket: 300_000, value: 20 }]);
      }));
  });
}
