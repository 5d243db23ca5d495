import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { PrometheusMetrics } from './metrics.ts';

// Metrics of `[server] workers`: each worker counts in its own registry; the primary, which
// serves [metrics] listen, asks every worker for its values over the IPC channel node:cluster
// already opened (src/server/workers.ts) and merges them with prom-client's aggregation
// (counters and histograms summed per label set). prom-client's own AggregatorRegistry
// .clusterMetrics() is not used: it expects the primary to own the listening socket, and
// assumes every worker answers; here a worker being restarted simply does not count for that
// scrape.

type Snapshot = MetricObjectWithValues<MetricValue<string>>[];

/** Worker → primary and primary → worker messages of a scrape. */
export type MetricsMessage = { type: 'metrics_request'; id: string } | { type: 'metrics_snapshot'; id: string; metrics: Snapshot };

/** How long the primary waits for the workers' values. */
const COLLECT_TIMEOUT_MS = 2000;

/** In a worker: answer the primary's requests with this process's values. */
export function answerMetricsRequests(metrics: PrometheusMetrics): () => void {
  const onMessage = (message: MetricsMessage) => {
    if (message?.type !== 'metrics_request') return;
    void metrics.snapshot().then(
      (snapshot) => process.connected && process.send?.({ type: 'metrics_snapshot', id: message.id, metrics: snapshot } satisfies MetricsMessage),
      () => {}, // a failed collection is a worker missing from this scrape
    );
  };
  process.on('message', onMessage);
  return () => process.off('message', onMessage);
}

/** In the primary: the merged Prometheus text of every worker that answers in time. */
export async function collectFromWorkers(): Promise<string> {
  const workers = Object.values(cluster.workers ?? {}).filter((worker) => worker?.isConnected());
  const id = randomUUID();
  const snapshots: Snapshot[] = [];
  await new Promise<void>((resolve) => {
    let waiting = workers.length;
    if (waiting === 0) return resolve();
    const timer = setTimeout(finish, COLLECT_TIMEOUT_MS);
    const onMessage = (_worker: unknown, message: MetricsMessage) => {
      if (message?.type !== 'metrics_snapshot' || message.id !== id) return;
      snapshots.push(message.metrics);
      if (--waiting === 0) finish();
    };
    cluster.on('message', onMessage);
    function finish() {
      clearTimeout(timer);
      cluster.off('message', onMessage);
      resolve();
    }
    for (const worker of workers) worker!.send({ type: 'metrics_request', id } satisfies MetricsMessage);
  });
  return AggregatorRegistry.aggregate(snapshots).metrics();
}
