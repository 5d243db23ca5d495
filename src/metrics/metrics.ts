import { Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';

// What popgate counts, through one small interface that the services are handed (connections
// in src/net/service.ts, logins in src/auth/login.ts, deliveries in src/delivery/scheduler.ts,
// relay decisions and accepted messages around the policy and the acceptance service in
// src/server/app.ts). Protocol code never imports prom-client: a test or the CLI passes
// `noMetrics`. Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/):
// a `popgate_` prefix, the unit in the name, `_total` on counters.

export type LoginResult = 'success' | 'failed' | 'locked' | 'plaintext' | 'refused' | 'unavailable';
export type RelayResult = 'allowed' | 'denied' | 'unavailable';
export type AcceptOutcome = 'accepted' | 'failed';
export type DeliveryOutcome = 'delivered' | 'deferred' | 'bounced';

export interface MailMetrics {
  /** A client connection admitted on a listener ("pop3", "pop3s", "smtp", "submission" …). */
  connectionOpened(listener: string): void;
  connectionClosed(listener: string, seconds: number): void;
  login(protocol: 'pop3' | 'smtp' | 'web', result: LoginResult, seconds: number): void;
  /** A failed login that locked out an address or an account. */
  lockout(): void;
  /** RCPT to a remote address: relayed, refused, or not decidable (grant store away). */
  relayDecision(result: RelayResult): void;
  messageAccepted(outcome: AcceptOutcome, seconds: number): void;
  /** One recipient's delivery attempt. */
  delivery(outcome: DeliveryOutcome, seconds: number): void;
}

/** Counts nothing: the CLI's and the tests' default. */
export const noMetrics: MailMetrics = {
  connectionOpened() {},
  connectionClosed() {},
  login() {},
  lockout() {},
  relayDecision() {},
  messageAccepted() {},
  delivery() {},
};

/** Values only a store knows, read at scrape time by one process (every worker shares the store). */
export interface StoreGauges {
  liveGrants(): Promise<number>;
  /** Messages in the outbound queue, and when the oldest was received (ms since 1970). */
  queue(): Promise<{ size: number; oldestReceivedAt: number | undefined }>;
}

interface StoreReading {
  grants: number;
  queue: { size: number; oldestReceivedAt: number | undefined };
}

// Connections and logins are quick; an SMTP DATA or a delivery may take minutes.
const SHORT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const LONG_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];

/** The Prometheus implementation: one registry per process; the primary of workers merges them. */
export class PrometheusMetrics implements MailMetrics {
  readonly registry = new Registry();
  readonly #connections: Counter<'listener'>;
  readonly #open: Gauge<'listener'>;
  readonly #connectionSeconds: Histogram<'listener'>;
  readonly #logins: Counter<'protocol' | 'result'>;
  readonly #loginSeconds: Histogram<'protocol'>;
  readonly #lockouts: Counter;
  readonly #relay: Counter<'result'>;
  readonly #accepted: Counter<'outcome'>;
  readonly #acceptSeconds: Histogram;
  readonly #deliveries: Counter<'outcome'>;
  readonly #deliverySeconds: Histogram<'outcome'>;

  /**
   * `stores`: given to one process only (the single process, or worker 1), so the merged
   * value of every worker is the store's value, not N times it.
   */
  constructor(stores?: StoreGauges, onStoreError?: (error: unknown) => void) {
    const registers = [this.registry];
    this.#connections = new Counter({ name: 'popgate_connections_total', help: 'Client connections admitted, by listener', labelNames: ['listener'], registers });
    this.#open = new Gauge({ name: 'popgate_connections_open', help: 'Client connections open now, by listener', labelNames: ['listener'], registers });
    this.#connectionSeconds = new Histogram({ name: 'popgate_connection_duration_seconds', help: 'How long client connections lasted', labelNames: ['listener'], buckets: LONG_BUCKETS, registers });
    this.#logins = new Counter({ name: 'popgate_logins_total', help: 'Login attempts by protocol and result', labelNames: ['protocol', 'result'], registers });
    this.#loginSeconds = new Histogram({ name: 'popgate_login_duration_seconds', help: 'Time to answer a login (failure delay included)', labelNames: ['protocol'], buckets: SHORT_BUCKETS, registers });
    this.#lockouts = new Counter({ name: 'popgate_lockouts_total', help: 'Lockouts started by failed logins', registers });
    this.#relay = new Counter({ name: 'popgate_relay_decisions_total', help: 'Recipients at remote domains: relayed, denied, or undecidable', labelNames: ['result'], registers });
    this.#accepted = new Counter({ name: 'popgate_messages_accepted_total', help: 'Messages taken in (mailboxes and queue) by outcome', labelNames: ['outcome'], registers });
    this.#acceptSeconds = new Histogram({ name: 'popgate_message_acceptance_duration_seconds', help: 'Time to store a message durably', buckets: SHORT_BUCKETS, registers });
    this.#deliveries = new Counter({ name: 'popgate_deliveries_total', help: 'Outbound delivery attempts per recipient by outcome', labelNames: ['outcome'], registers });
    this.#deliverySeconds = new Histogram({ name: 'popgate_delivery_duration_seconds', help: 'Time from a message being claimed to a recipient\'s answer', labelNames: ['outcome'], buckets: LONG_BUCKETS, registers });
    if (!stores) return;
    // prom-client collects the gauges of one scrape concurrently: they share one reading of
    // the stores.
    // The first collect of a scrape starts the reading; the others, called in the same tick,
    // share it while it is pending; the next scrape reads afresh. While the store is away its
    // gauges are NaN ("unknown" to Prometheus) rather than a stale or made-up number.
    let pending: Promise<StoreReading | undefined> | undefined;
    const read = () =>
      (pending ??= Promise.all([stores.liveGrants(), stores.queue()])
        .then(
          ([grants, queue]) => ({ grants, queue }),
          (error: unknown) => {
            onStoreError?.(error);
            return undefined;
          },
        )
        .finally(() => (pending = undefined)));
    const storeGauge = (name: string, help: string, value: (reading: StoreReading) => number) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          const values = await read();
          this.set(values ? value(values) : NaN);
        },
      });
    new Gauge({
      name: 'popgate_store_up',
      help: '1 if the shared stores answered this scrape, else 0',
      registers,
      async collect() {
        this.set((await read()) ? 1 : 0);
      },
    });
    storeGauge('popgate_pop_before_smtp_grants', 'POP-before-SMTP grants live now', (values) => values.grants);
    storeGauge('popgate_queue_messages', 'Messages in the outbound queue', (values) => values.queue.size);
    storeGauge('popgate_queue_oldest_age_seconds', 'Age of the oldest message in the outbound queue (0 when empty)', (values) =>
      values.queue.oldestReceivedAt === undefined ? 0 : Math.max(0, (Date.now() - values.queue.oldestReceivedAt) / 1000),
    );
  }

  /**
   * The inbound filter's verdicts (src/filter/filter.ts counts them itself), exported as
   * popgate_filter_verdicts_total{check, result} at each scrape.
   */
  exportFilterVerdicts(counts: () => { check: string; result: string; count: number }[]): void {
    new Counter({
      name: 'popgate_filter_verdicts_total',
      help: 'Inbound filter verdicts by check (spf, dkim, dmarc, arc, dnsbl, greylist, pregreet, rspamd, message) and result',
      labelNames: ['check', 'result'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { check, result, count } of counts()) if (count > 0) this.inc({ check, result }, count);
      },
    });
  }

  connectionOpened(listener: string): void {
    this.#connections.inc({ listener });
    this.#open.inc({ listener });
  }

  connectionClosed(listener: string, seconds: number): void {
    this.#open.dec({ listener });
    this.#connectionSeconds.observe({ listener }, seconds);
  }

  login(protocol: 'pop3' | 'smtp' | 'web', result: LoginResult, seconds: number): void {
    this.#logins.inc({ protocol, result });
    this.#loginSeconds.observe({ protocol }, seconds);
  }

  lockout(): void {
    this.#lockouts.inc();
  }

  relayDecision(result: RelayResult): void {
    this.#relay.inc({ result });
  }

  messageAccepted(outcome: AcceptOutcome, seconds: number): void {
    this.#accepted.inc({ outcome });
    if (outcome === 'accepted') this.#acceptSeconds.observe(seconds);
  }

  delivery(outcome: DeliveryOutcome, seconds: number): void {
    this.#deliveries.inc({ outcome });
    this.#deliverySeconds.observe({ outcome }, seconds);
  }

  /** This process's values, as prom-client's aggregation takes them (sent to the primary over IPC). */
  snapshot(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    return this.registry.getMetricsAsJSON();
  }
}

/** Seconds since a `performance.now()` reading. */
export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}
