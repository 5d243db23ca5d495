import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { BUCKET_MS, HistoryRecorder, seriesValues } from '../src/admin/history.ts';
import { silentLogger } from '../src/log/logger.ts';
import { PrometheusMetrics } from '../src/metrics/metrics.ts';
import { openCountersDatabase } from '../src/sqlite/open.ts';
import { SqliteHistoryStore } from '../src/sqlite/history.ts';
import { barChart } from '../src/web/admin/charts.ts';

// The dashboard history as two worker processes feed it: each reads its own Prometheus
// counters and adds what grew into the shared 5-minute buckets; only the sampling process
// records the gauges; the chart draws one bar per bucket that holds something.

test('two processes\' counter deltas sum in one bucket; gauges come from the sampling process only', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-history-'));
  const databases = [openCountersDatabase(dir), openCountersDatabase(dir)];
  try {
    const [first, second] = [new PrometheusMetrics(), new PrometheusMetrics()];
    const store = new SqliteHistoryStore(databases[0]);
    const recorders = [
      new HistoryRecorder(store, () => first.registry.getMetricsAsJSON(), async () => new Map([['queue_size', 3]]), silentLogger()),
      new HistoryRecorder(new SqliteHistoryStore(databases[1]), () => second.registry.getMetricsAsJSON(), undefined, silentLogger()),
    ];
    const now = 1_700_000_000_000 - (1_700_000_000_000 % BUCKET_MS) + 60_000;
    // Counts made before a process's first reading are not history (they may be hours old).
    first.login('pop3', 'success', 0.01);
    for (const recorder of recorders) await recorder.flush(now);
    first.login('pop3', 'success', 0.01);
    first.login('smtp', 'failed', 0.01);
    second.login('pop3', 'success', 0.01);
    second.login('pop3', 'locked', 0.01);
    second.relayDecision('denied');
    first.lockout();
    for (const recorder of recorders) await recorder.flush(now + 30_000);
    const points = await store.since(0);
    const value = (metric: string) => points.find((p) => p.metric === metric)?.value;
    assert.equal(value('logins_ok'), 2);
    assert.equal(value('logins_failed'), 2);
    assert.equal(value('relays_denied'), 1);
    assert.equal(value('lockouts'), 1);
    assert.equal(value('queue_size'), 3);
    assert.equal(value('grants_live'), undefined);
    // Nothing new: no row grows.
    for (const recorder of recorders) await recorder.flush(now + 40_000);
    assert.equal((await store.since(0)).find((p) => p.metric === 'logins_ok')?.value, 2);

    const values = seriesValues(points, 'logins_ok', now);
    assert.equal(values.length, 288);
    assert.equal(values[values.length - 1], 2);
    const svg = barChart('Successful logins', values, '2 in 24 hours');
    assert.equal(svg.match(/<rect /g)?.length, 1);
    assert.match(svg, /aria-label="Successful logins: 2 in 24 hours, at most 2 in 5 minutes"/);
    assert.equal(barChart('<script>', [0], 'x').includes('<script>'), false);
  } finally {
    for (const db of databases) db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
