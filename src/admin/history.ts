import type { Logger } from '../log/logger.ts';
import type { HistoryPoint, HistoryStore } from './history-store.ts';

// The dashboard's 24-hour history, fed without touching the mail paths: every process reads
// its own Prometheus counters (src/metrics/metrics.ts) on a timer and adds what grew since the
// last reading into the current 5-minute bucket of the shared HistoryStore; the one process
// that delivers the queue also samples the store-wide gauges (queue size, live grants). One
// store write per process per minute, however much mail flows.

export const BUCKET_MS = 5 * 60_000;
export const HISTORY_MS = 24 * 3600_000;
const FLUSH_MS = 60_000;

/** The charted series: what each counts, and which Prometheus counter (and labels) feed it. */
export const COUNTER_SERIES = {
  connections: { title: 'Connections', metric: 'popgate_connections_total', match: {} },
  logins_ok: { title: 'Successful logins', metric: 'popgate_logins_total', match: { result: 'success' } },
  logins_failed: { title: 'Failed logins', metric: 'popgate_logins_total', match: { result: '!success' } },
  relays_allowed: { title: 'Relays allowed', metric: 'popgate_relay_decisions_total', match: { result: 'allowed' } },
  relays_denied: { title: 'Relays refused', metric: 'popgate_relay_decisions_total', match: { result: 'denied' } },
  messages_accepted: { title: 'Messages accepted', metric: 'popgate_messages_accepted_total', match: { outcome: 'accepted' } },
  deliveries_delivered: { title: 'Delivered', metric: 'popgate_deliveries_total', match: { outcome: 'delivered' } },
  deliveries_deferred: { title: 'Deferred', metric: 'popgate_deliveries_total', match: { outcome: 'deferred' } },
  deliveries_bounced: { title: 'Bounced', metric: 'popgate_deliveries_total', match: { outcome: 'bounced' } },
  lockouts: { title: 'Lockouts', metric: 'popgate_lockouts_total', match: {} },
} as const;
export const GAUGE_SERIES = { queue_size: { title: 'Queue size' }, grants_live: { title: 'Live grants' } } as const;
export type SeriesName = keyof typeof COUNTER_SERIES | keyof typeof GAUGE_SERIES;

/** What the recorder reads: prom-client's metrics as JSON (the registry's getMetricsAsJSON). */
export type CounterSnapshot = () => Promise<{ name: string; values: { value: number; labels: Partial<Record<string, string | number>> }[] }[]>;

function matches(labels: Partial<Record<string, string | number>>, match: Record<string, string>): boolean {
  return Object.entries(match).every(([key, wanted]) => (wanted.startsWith('!') ? String(labels[key]) !== wanted.slice(1) : String(labels[key]) === wanted));
}

/** Each counter series' total in a snapshot. */
export function seriesTotals(snapshot: Awaited<ReturnType<CounterSnapshot>>): Map<string, number> {
  const totals = new Map<string, number>();
  for (const [series, { metric, match }] of Object.entries(COUNTER_SERIES)) {
    const found = snapshot.find((m) => m.name === metric);
    totals.set(series, (found?.values ?? []).filter((v) => matches(v.labels, match)).reduce((sum, v) => sum + v.value, 0));
  }
  return totals;
}

export class HistoryRecorder {
  readonly #store: HistoryStore;
  readonly #counters: CounterSnapshot;
  readonly #gauges: (() => Promise<Map<string, number>>) | undefined;
  readonly #log: Logger;
  #last: Map<string, number> | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** `gauges`: given to the one process that samples the store-wide values. */
  constructor(store: HistoryStore, counters: CounterSnapshot, gauges: (() => Promise<Map<string, number>>) | undefined, log: Logger) {
    this.#store = store;
    this.#counters = counters;
    this.#gauges = gauges;
    this.#log = log;
  }

  start(): void {
    this.#timer = setInterval(() => void this.flush().catch((error) => this.#log.error({ event: 'history_flush_failed', err: error }, 'cannot record the dashboard history')), FLUSH_MS);
    this.#timer.unref();
  }

  /** Adds what the counters grew since the last flush (the first flush only takes a reading). */
  async flush(now = Date.now()): Promise<void> {
    const bucket = now - (now % BUCKET_MS);
    const totals = seriesTotals(await this.#counters());
    const previous = this.#last;
    this.#last = totals;
    if (previous) {
      const deltas = new Map<string, number>();
      for (const [series, total] of totals) {
        const delta = total - (previous.get(series) ?? 0);
        if (delta > 0) deltas.set(series, delta);
      }
      if (deltas.size > 0) await this.#store.add(bucket, deltas);
    }
    if (this.#gauges) {
      await this.#store.set(bucket, await this.#gauges());
      await this.#store.prune(now - HISTORY_MS - BUCKET_MS);
    }
  }

  /** The last counts, then stops (a graceful stop loses no delta). */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush().catch((error) => this.#log.error({ event: 'history_flush_failed', err: error }, 'cannot record the dashboard history'));
  }
}

/** One series over the last 24 hours: a value per bucket, oldest first (0 where nothing was recorded). */
export function seriesValues(points: readonly HistoryPoint[], series: SeriesName, now: number): number[] {
  const first = now - (now % BUCKET_MS) - HISTORY_MS + BUCKET_MS;
  const values = new Array<number>(HISTORY_MS / BUCKET_MS).fill(0);
  for (const point of points) {
    const slot = (point.bucket - first) / BUCKET_MS;
    if (point.metric === series && slot >= 0 && slot < values.length) values[slot] = point.value;
  }
  return values;
}
