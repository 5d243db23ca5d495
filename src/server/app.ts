import type { SecureContext } from 'node:tls';
import { SqliteAccountStore } from '../sqlite/accounts.ts';
import type { AccountStore } from '../accounts/store.ts';
import type { Config } from '../config/schema.ts';
import { openCountersDatabase, openDatabase } from '../sqlite/open.ts';
import type { Logger } from '../log/logger.ts';
import { LocalMaildropLocks, type MaildropLocks, type Mailstore } from '../mailstore/store.ts';
import { MaildirStore } from '../mailstore/maildir.ts';
import { formatListenAddress, parseListenAddress, type ListenAddress } from '../net/listen.ts';
import { LoginGuard, type LoginFailureStore } from '../policy/login-guard.ts';
import { SqliteLoginFailureStore } from '../sqlite/login-failures.ts';
import { PopBeforeSmtp } from '../relay-auth/pop-before-smtp.ts';
import type { RelayAuthStore } from '../relay-auth/store.ts';
import { SqliteRelayAuthStore } from '../sqlite/relay-grants.ts';
import { Pop3Server } from '../pop3/server.ts';
import { LoginService, type LoginHook } from '../auth/login.ts';
import { MessageAcceptance } from '../acceptance/acceptance.ts';
import { FreeSpace } from '../smtp/free-space.ts';
import { IncomingBodies } from '../smtp/incoming-body.ts';
import { MailPolicy, wideRelayNetworks } from '../policy/mail-policy.ts';
import { SendLimits, type SendLimitStore } from '../policy/send-limits.ts';
import { SqliteSendLimitStore } from '../sqlite/send-counts.ts';
import { Spool } from '../queue/spool.ts';
import { OutboundQueue } from '../queue/queue.ts';
import { SqliteQueueStore } from '../sqlite/queue-index.ts';
import { SystemDnsResolver } from '../dns/resolver.ts';
import { Router } from '../delivery/route.ts';
import { DeliveryScheduler } from '../delivery/scheduler.ts';
import { DkimKeyring } from '../dkim/keys.ts';
import { DkimSigner } from '../dkim/sign.ts';
import { parseNextHop, type NextHop, type Parsed } from '../net/next-hop.ts';
import { isIP } from 'node:net';
import { randomHex } from '../mail/random.ts';
import { DatabaseSync } from 'node:sqlite';
import type { ConnectionRegistry } from '../net/connection-registry.ts';
import { SqliteConnectionRegistry } from '../sqlite/connection-registry.ts';
import { SqliteMaildropLocks } from '../sqlite/maildrop-locks.ts';
import { withFallback } from './fallback.ts';
import { LocalAccountEvents, type AccountEvents } from '../accounts/events.ts';
import type { QueueStore } from '../queue/store.ts';
import type { DomainSettingsStore } from '../filter/domain-settings.ts';
import { SqliteDomainSettingsStore } from '../sqlite/domain-settings.ts';
import { InboundFilter } from '../filter/filter.ts';
import { CheckThread } from '../filter/check-thread.ts';
import { FilterDns } from '../filter/dns.ts';
import { DnsLists, type ListZone } from '../filter/dns-lists.ts';
import { Greylisting, type GreylistStore } from '../filter/greylist.ts';
import { RspamdClient } from '../filter/rspamd.ts';
import { SqliteGreylistStore } from '../sqlite/greylist.ts';
import { tellPrimary, type WorkerMessage } from './workers.ts';
import { hostname, networkInterfaces } from 'node:os';
import { SmtpServer } from '../smtp/server.ts';
import { loadSecureContext, resolveTlsFiles, tlsFilesStamp } from '../tls/context.ts';
import { PrometheusMetrics, type MailMetrics } from '../metrics/metrics.ts';
import { countAcceptedMessages, countRelayDecisions } from '../metrics/instrument.ts';
import { answerMetricsRequests } from '../metrics/workers.ts';
import type { WebService } from '../web/service.ts';
import { MailboxQuotas, QuotaTrackingMailstore } from '../quota/quota.ts';
import { parseQuota } from '../quota/size.ts';
import type { QuotaStore } from '../quota/store.ts';
import type { ForwardingStore } from '../forwarding/store.ts';
import type { VacationStore } from '../vacation/store.ts';
import { VacationResponder } from '../vacation/vacation.ts';
import { SqliteQuotaStore } from '../sqlite/quotas.ts';
import { SqliteForwardingStore } from '../sqlite/forwarding.ts';
import { SqliteVacationStore } from '../sqlite/vacation.ts';
import { RememberingForwardingStore } from '../forwarding/cached.ts';
import { RememberingVacationStore } from '../vacation/cached.ts';
import { Srs } from '../srs/srs.ts';
import { srsSecret } from '../srs/secret.ts';
import { DeliveryServices } from '../mailbox-services/services.ts';
import { AdminAccounts } from '../admin/accounts.ts';
import { HistoryRecorder } from '../admin/history.ts';
import type { AuditLog } from '../audit/store.ts';
import type { HistoryStore } from '../admin/history-store.ts';
import { SqliteAdminStore } from '../sqlite/admins.ts';
import { SqliteAuditLog } from '../sqlite/audit-log.ts';
import { SqliteHistoryStore } from '../sqlite/history.ts';

/** A running popgate: every service of one config, wired to the backends it names. */
export interface App {
  config: Config;
  accounts: AccountStore;
  mailstore: Mailstore;
  pop3: Pop3Server;
  smtp: SmtpServer;
  queue: OutboundQueue;
  delivery: DeliveryScheduler;
  /** Bound addresses per service, e.g. { pop3: ["127.0.0.1:2110"] } (useful with port 0). */
  addresses: Record<string, string[]>;
  popBeforeSmtp: PopBeforeSmtp;
  /** Every store of this process (for the administrative side: the CLI's operations, the console). */
  backends: Backends;
  /** The inbound filter, unless [filter] enabled = false (its verdict counts feed the metrics). */
  filter?: InboundFilter;
  /** Hooks run before "+OK" to every successful POP3 login. */
  onLogin: LoginHook[];
  /** The help pages, automatic setup, health checks and metrics (src/web), when a web listener is configured. */
  web: WebService | undefined;
  /** This process's counters (src/metrics). */
  metrics: PrometheusMetrics;
  /** Re-reads the certificate files (SIGHUP), so a renewed certificate needs no restart. */
  reloadTls(): void;
  close(): Promise<void>;
}

/** How long a process counts as alive in shared connection counts without a heartbeat. */
const HOLDER_LEASE_MS = 30_000;

/** How this process serves: alone, or as one of the workers of a machine (src/server/workers.ts). */
export interface AppRole {
  worker?: { slot: number; count: number };
}

export async function startApp(config: Config, log: Logger, role: AppRole = {}): Promise<App> {
  const worker = role.worker;
  const backends = await openBackends(config, log);
  const { accounts, mailstore, locks, guard, popBeforeSmtp, sendLimits, queue, holder } = backends;
  // Shared connection counts know this process by its holder name, alive while it heartbeats.
  const connections = backends.connections && { registry: backends.connections, holder };
  const heartbeat = () =>
    connections?.registry.heartbeat(holder, Date.now(), HOLDER_LEASE_MS).catch((error) => log.error({ err: error }, 'cannot renew this process in the connection counts'));
  // Before the first connection: counts only hold for holders that are alive.
  await heartbeat();
  const heartbeats = setInterval(heartbeat, HOLDER_LEASE_MS / 3);
  heartbeats.unref();
  const tlsFiles = await resolveTlsFiles(config, (message) => log.info({ event: 'tls_generated' }, message));
  let secureContext: SecureContext | undefined = tlsFiles && loadSecureContext(tlsFiles);

  if (config.auth.plaintext_without_tls === 'anywhere') {
    log.warn(
      { event: 'legacy_plaintext' },
      'auth.plaintext_without_tls = "anywhere": passwords may cross the network unencrypted (legacy clients and devices only)',
    );
  }

  // Store-wide gauges (grants, queue) are read by one process only: alone, or worker 1.
  const metrics = new PrometheusMetrics(
    !worker || worker.slot === 1 ? { liveGrants: async () => (await popBeforeSmtp.list()).length, queue: async () => queueGauges(await queue.list()) } : undefined,
    (error) => log.error({ event: 'metrics_store_failed', err: error }, 'cannot read a store for the metrics'),
  );
  const stopAnsweringMetrics = worker ? answerMetricsRequests(metrics) : () => {};
  // The console's 24-hour charts: every process adds its counts; worker 1 (or the only process) samples the gauges.
  const history = new HistoryRecorder(
    backends.history,
    () => metrics.registry.getMetricsAsJSON(),
    !worker || worker.slot === 1 ? async () => new Map([['queue_size', (await queue.list()).length], ['grants_live', (await popBeforeSmtp.list()).length]]) : undefined,
    log,
  );
  history.start();
  const login = new LoginService(accounts, guard, { plaintextWithoutTls: config.auth.plaintext_without_tls, defaultDomain: config.auth.default_domain }, metrics);
  // The grant is recorded before POP3 answers "+OK", so SMTP sees it with zero lag.
  login.hooks.push(async (event) => void (await popBeforeSmtp.onLogin(event)));
  // Expired grants are already ignored at lookup; this only keeps the table small.
  const sweeper = setInterval(() => void popBeforeSmtp.sweep().catch((error) => log.error({ err: error }, 'grant sweep failed')), 60_000);
  sweeper.unref();
  const pop3 = new Pop3Server(
    {
      hostname: config.hostname,
      maxConnections: config.pop3.max_connections,
      maxConnectionsPerIp: config.pop3.max_connections_per_ip,
      maxConnectionRatePerIp: config.pop3.max_connection_rate_per_ip,
      trustedNetworks: config.auth.trusted_networks,
      idleTimeoutMs: config.pop3.idle_timeout,
      commandTimeoutMs: config.pop3.command_timeout,
      maxLineLength: config.pop3.max_line_length,
      apop: config.pop3.apop,
      implementation: config.pop3.implementation,
      clientWorkarounds: config.pop3.client_workarounds,
    },
    { login, mailstore, locks, log, tls: () => secureContext, reusePort: worker !== undefined, connections, metrics },
  );

  // Workers start on data their primary already brought in line (prepareData).
  if (!worker) await queue.recover();
  // Mailbox services (docs/mailbox-services.md): quotas, forwarding with SRS, vacation replies.
  const srs = config.srs.enabled
    ? new Srs({ secret: await srsSecret(config.data_dir, config.srs.secret), domain: config.srs.domain || config.hostname, maxAgeDays: Math.floor(config.srs.max_age / 86_400_000) })
    : undefined;
  const vacation = new VacationResponder(backends.vacations, { intervalMs: config.vacation.interval, hostname: config.hostname }, log);
  const services = new DeliveryServices({ accounts, quotas: backends.quotas, srs, vacation, log }, { hostname: config.hostname, bounceReturnLimit: config.outbound.bounce_size_limit });
  const acceptance = countAcceptedMessages(new MessageAcceptance(config.hostname, mailstore, queue, log, services), metrics);
  const policy = countRelayDecisions(
    new MailPolicy(
      accounts,
      popBeforeSmtp,
      {
        enforceSender: config.pop_before_smtp.enforce_sender,
        windowMs: config.pop_before_smtp.window,
        postmaster: config.smtp.postmaster,
        fromCheckEnforced: async (domain) => (await backends.domainSettings.get(domain)).from_check !== 'off',
        relayNetworks: config.smtp.relay_networks,
      },
      { quotas: backends.quotas, forwarding: backends.forwarding, srs },
    ),
    metrics,
  );
  for (const network of wideRelayNetworks(config.smtp.relay_networks)) {
    log.warn({ event: 'relay_network_wide', network }, `smtp.relay_networks: ${network} is wider than a /16 (IPv4) or /48 (IPv6): every client in it may relay`);
  }
  const inbound = config.filter.enabled ? createInboundFilter(config, backends, log) : undefined;
  const filter = inbound?.filter;
  if (filter) metrics.exportFilterVerdicts(() => filter.counts.entries());
  const limitSweeper = setInterval(() => {
    void sendLimits.sweep().catch((error) => log.error({ err: error }, 'send-limit sweep failed'));
    void guard.sweep().catch((error) => log.error({ err: error }, 'login-limit sweep failed'));
    void inbound?.sweep().catch((error) => log.error({ err: error }, 'greylist sweep failed'));
    void backends.vacations.sweep(Date.now() - config.vacation.interval).catch((error) => log.error({ err: error }, 'vacation reply sweep failed'));
  }, 600_000);
  limitSweeper.unref();
  const smtp = new SmtpServer(
    {
      hostname: config.hostname,
      maxMessageSize: config.smtp.max_message_size,
      maxRecipients: config.smtp.max_recipients,
      maxLineLength: config.smtp.max_line_length,
      maxConnections: config.smtp.max_connections,
      maxConnectionsPerIp: config.smtp.max_connections_per_ip,
      maxConnectionRatePerIp: config.smtp.max_connection_rate_per_ip,
      trustedNetworks: config.auth.trusted_networks,
      idleTimeoutMs: config.smtp.idle_timeout,
      commandTimeoutMs: config.smtp.command_timeout,
      dataTimeoutMs: config.smtp.data_timeout,
      maxErrors: config.smtp.max_errors,
      errorDelayMs: config.smtp.error_delay,
      authOnPort25: config.smtp.auth,
      popBeforeSmtpOnSubmission: config.submission.pop_before_smtp,
    },
    {
      policy,
      login,
      acceptance,
      log,
      tls: () => secureContext,
      sendLimits,
      reusePort: worker !== undefined,
      connections,
      filter,
      bodies: new IncomingBodies(queue.spool.incomingDir, { memoryPerMessage: 256 * 1024, memoryTotal: config.smtp.max_data_memory }),
      freeSpace: new FreeSpace(config.data_dir, config.smtp.min_free_space, log),
      metrics,
    },
  );

  // Renewed certificates (certbot, ACME clients) are picked up without a restart or SIGHUP.
  let tlsStamp = tlsFiles ? tlsFilesStamp(tlsFiles) : '';
  const tlsWatcher = setInterval(() => {
    if (tlsFiles && tlsFilesStamp(tlsFiles) !== tlsStamp) app.reloadTls();
  }, config.tls.reload_check);
  tlsWatcher.unref();
  const addresses: Record<string, string[]> = { pop3: [], pop3s: [], smtp: [], submission: [], submissions: [], http: [], https: [], metrics: [] };
  // Queue leases are taken under a name that outlives this process: the node and the worker
  // slot. A restarted process (after kill -9, a crash) releases its predecessor's leases at
  // once; another node's live leases carry another name and are left alone.
  const leaseOwner = `${config.cluster.node || hostname()}/${worker?.slot ?? 1}`;
  const delivery = createDeliveryScheduler(config, { queue, policy, acceptance, log, metrics }, () => addresses.smtp, leaseOwner);
  // One worker of a machine delivers the queue (slot 1); the others tell it, through their
  // primary, when they have queued mail, so relayed mail leaves at once whoever accepted it.
  const delivers = !worker || worker.slot === 1;
  if (delivers) queue.onEnqueue(() => delivery.wake());
  else queue.onEnqueue(() => tellPrimary({ type: 'queued' }));
  const onWake = (message: WorkerMessage) => {
    if (message.type === 'wake_delivery') delivery.wake();
  };
  if (worker && delivers) process.on('message', onWake);
  let web: WebService | undefined;
  const app: App = {
    config,
    accounts,
    mailstore,
    pop3,
    smtp,
    queue,
    delivery,
    popBeforeSmtp,
    backends,
    filter,
    addresses,
    onLogin: login.hooks,
    get web() {
      return web;
    },
    metrics,
    reloadTls() {
      if (!tlsFiles) return;
      // A half-written or mismatched pair keeps the certificate in use (and says so).
      tlsStamp = tlsFilesStamp(tlsFiles); // one attempt (and one log line) per change
      try {
        secureContext = loadSecureContext(tlsFiles);
        web?.reloadTls();
        log.info({ event: 'tls_reloaded', cert: tlsFiles.cert }, 'TLS certificate reloaded');
      } catch (error) {
        log.error({ event: 'tls_reload_failed', cert: tlsFiles.cert, err: error }, 'cannot load the new TLS certificate: still serving the previous one');
      }
    },
    async close() {
      process.off('message', onWake);
      clearInterval(heartbeats);
      clearInterval(sweeper);
      clearInterval(tlsWatcher);
      clearInterval(limitSweeper);
      stopAnsweringMetrics();
      await Promise.all([pop3.close(config.shutdown_grace), smtp.close(config.shutdown_grace), delivery.stop(config.shutdown_grace), web?.close()]);
      await history.stop();
      inbound?.close();
      await backends.close();
    },
  };
  try {
    for (const entry of config.pop3.listen) addresses.pop3.push(formatListenAddress(await pop3.listen(listenAddress(entry, config.pop3.proxy_protocol_from), false)));
    for (const entry of config.smtp.listen) addresses.smtp.push(formatListenAddress(await smtp.listen(listenAddress(entry, config.smtp.proxy_protocol_from))));
    for (const entry of config.pop3s.listen) addresses.pop3s.push(formatListenAddress(await pop3.listen(listenAddress(entry, config.pop3s.proxy_protocol_from), true)));
    for (const role of ['submission', 'submissions'] as const) {
      for (const entry of config[role].listen) addresses[role].push(formatListenAddress(await smtp.listen(listenAddress(entry, config[role].proxy_protocol_from), role)));
    }
    // The primary of several workers serves [metrics] listen itself, for all of them.
    const webConfig = worker ? { ...config, metrics: { ...config.metrics, listen: [] } } : config;
    // Loaded only when used: the web framework costs start-up time a mail-only node need not pay.
    if (webConfig.http.listen.length + webConfig.https.listen.length + webConfig.metrics.listen.length > 0) {
      const { WebService } = await import('../web/service.ts');
      web = await WebService.start({
        config: webConfig,
        log,
        stores: { isLocalDomain: (domain) => accounts.isLocalDomain(domain), listDomains: () => accounts.listDomains(), popBeforeSmtp },
        backends,
        addresses: () => addresses,
        tlsFiles,
        metrics: { contentType: metrics.registry.contentType, text: () => metrics.registry.metrics() },
        ready: () => readiness(backends),
        reusePort: worker !== undefined,
        selfService: {
          stores: { login, accounts, quotas: backends.quotas, forwarding: backends.forwarding, vacations: backends.vacations },
          // A customer's own changes go to the same audit log as the console's and the CLI's.
          recordChange: (change) => backends.audit.record({ at: Date.now(), actor: `customer ${change.address}`, ip: change.ip, action: `self_service.${change.action}`, subject: change.address, detail: change.detail }),
        },
      });
      for (const kind of ['http', 'https', 'metrics'] as const) addresses[kind].push(...web.addresses[kind]);
    }
  } catch (error) {
    await app.close();
    throw error;
  }
  if (!delivers) log.info({ event: 'outbound_elsewhere' }, 'worker 1 delivers the outbound queue');
  else if (config.outbound.enabled) await delivery.start();
  else log.warn({ event: 'outbound_disabled' }, 'outbound.enabled = false: relayed mail is queued but not delivered');
  return app;
}

/** The outbound queue as the metrics show it. */
function queueGauges(messages: { receivedAt: number }[]): { size: number; oldestReceivedAt: number | undefined } {
  let oldest: number | undefined;
  for (const message of messages) if (oldest === undefined || message.receivedAt < oldest) oldest = message.receivedAt;
  return { size: messages.length, oldestReceivedAt: oldest };
}

/** Whether this process can serve mail: the stores a login and a relay need answer (/healthz/ready). */
async function readiness(backends: Backends): Promise<void> {
  await backends.accounts.isLocalDomain('healthz.invalid');
  // RFC 5737 documentation address: a lookup nobody holds a grant for.
  await backends.popBeforeSmtp.authorization('192.0.2.1');
  await backends.queue.nextDueAt();
}

/** The storage behind one config, seen through its interfaces. */
export interface Backends {
  /** This process's name in shared state (connection counts, locks, queue leases): host, pid and a random part. */
  holder: string;
  accounts: AccountStore;
  mailstore: Mailstore;
  locks: MaildropLocks;
  popBeforeSmtp: PopBeforeSmtp;
  guard: LoginGuard;
  sendLimits: SendLimits;
  queue: OutboundQueue;
  /** Where connections per address are counted when several processes serve the same clients. */
  connections?: ConnectionRegistry;
  /** Per-domain overrides of the inbound filter settings (`popgate domain set`). */
  domainSettings: DomainSettingsStore;
  /** Account and domain changes announced to every process (Redis in a cluster). */
  events: AccountEvents;
  /** Greylisted triplets and remembered client networks (`[filter] greylisting`). */
  greylist: GreylistStore;
  /** Mailbox limits and usage counters (`popgate user quota`). */
  quotaStore: QuotaStore;
  /** The quota rules over quotaStore; absent when [quota] enabled = false. */
  quotas?: MailboxQuotas;
  /** Per-user forwarding rules (`popgate user forward`). */
  forwarding: ForwardingStore;
  /** Vacation replies and the replies sent (`popgate user vacation`). */
  vacations: VacationStore;
  /** The console's administrators and sessions (`popgate admin`). */
  admins: AdminAccounts;
  /** Who changed what (the console, the CLI, customers' pages). */
  audit: AuditLog;
  /** The dashboard's 24-hour charts. */
  history: HistoryStore;
  close(): Promise<void>;
}

/**
 * Opens the backends a config names, for the server and the CLI alike, so both always work on
 * the same state. This is the one place that picks an implementation for each interface:
 *
 * - one process (the default of `npm start`): one SQLite file under data_dir, Maildir
 *   folders, the queue index beside the spool, and in-process maildrop locks and counters;
 * - several workers on one machine (`[server] workers`): the same SQLite file shared by them
 *   (WAL), with maildrop locks and connection counts in it too;
 * - a cluster (`[cluster] redis`): grants, failed logins, sending counts, maildrop locks,
 *   connection counts and account-change announcements in Redis. What a node can decide alone
 *   while Redis is away (failed logins, sending counts, maildrop locks) falls back to this
 *   node's own memory; grants do not: relay fails closed (451) until Redis is back;
 * - shared accounts and queue (`[database] url`): domains, users, aliases and the queue index
 *   in PostgreSQL (migrated at start), with data_dir on storage every node mounts: each node
 *   stages spool files in a folder of its own, and Maildir listings are not kept between
 *   logins.
 */
export async function openBackends(config: Config, log: Logger): Promise<Backends> {
  const holder = `${config.hostname}/${process.pid}/${randomHex(4)}`;
  const closing: (() => Promise<void> | void)[] = [];
  const close = async () => {
    for (const step of closing.splice(0)) await step();
  };
  try {
    return await open();
  } catch (error) {
    await close();
    throw error;
  }

  async function open(): Promise<Backends> {
    const db = openDatabase(config.data_dir);
    closing.push(() => db.close());
    // Failed logins, sending counts and POP-before-SMTP grants go through a second connection
    // whose commits wait for no fsync: every POP3 login writes a grant, and an fsync on the
    // event loop per login capped logins at some 60 a second. A grant lost in a crash costs the
    // customer one more POP3 login; lost counts forgive a little.
    const counters = openCountersDatabase(config.data_dir);
    closing.unshift(() => counters.close());
    let grants: RelayAuthStore = new SqliteRelayAuthStore(counters);
    let failures: LoginFailureStore = new SqliteLoginFailureStore(counters);
    let sendCounts: SendLimitStore = new SqliteSendLimitStore(counters);
    let locks: MaildropLocks = new LocalMaildropLocks();
    let connections: ConnectionRegistry | undefined;
    let events: AccountEvents = new LocalAccountEvents();
    let greylist: GreylistStore = new SqliteGreylistStore(counters);
    // Each engine's client is loaded only by a node configured for it (src/redis/backends.ts,
    // src/postgres/backends.ts): an embedded node, and each of its workers, never pays its memory.
    if (config.cluster.redis !== '') {
      const {
        RedisConnection,
        RedisAccountEvents,
        RedisConnectionRegistry,
        RedisGreylistStore,
        RedisLoginFailureStore,
        RedisMaildropLocks,
        RedisRelayAuthStore,
        RedisSendLimitStore,
      } = await import('../redis/backends.ts');
      const redis = await RedisConnection.open({ url: config.cluster.redis }, log);
      closing.unshift(() => redis.close());
      // This node's own memory, for what it may decide alone while Redis is away.
      const local = new DatabaseSync(':memory:');
      closing.push(() => local.close());
      grants = new RedisRelayAuthStore(redis);
      failures = withFallback<LoginFailureStore>('failed logins', new RedisLoginFailureStore(redis), new SqliteLoginFailureStore(local), log);
      sendCounts = withFallback<SendLimitStore>('sending counts', new RedisSendLimitStore(redis), new SqliteSendLimitStore(local), log);
      const redisLocks = new RedisMaildropLocks(redis, { holder }, log);
      closing.unshift(() => redisLocks.close());
      locks = withFallback<MaildropLocks>('maildrop locks', redisLocks, new LocalMaildropLocks(), log);
      connections = new RedisConnectionRegistry(redis);
      events = new RedisAccountEvents(redis, log);
      // A retry must be recognised on whichever node it lands; while Redis is away this node
      // greylists alone (a retry may be greylisted once more: a delay, never a loss).
      greylist = withFallback<GreylistStore>('greylisting', new RedisGreylistStore(redis), new SqliteGreylistStore(local), log);
    } else if (config.server.workers > 1) {
      const sqliteLocks = new SqliteMaildropLocks(counters, { holder }, log);
      closing.unshift(() => sqliteLocks.close());
      locks = sqliteLocks;
      connections = new SqliteConnectionRegistry(counters);
    }
    // Accounts and the queue index: in PostgreSQL when several nodes share them, which also
    // means the spool and the Maildirs are on storage every node mounts.
    const shared = config.database.url !== '';
    let accounts: AccountStore;
    let index: QueueStore;
    let domainSettings: DomainSettingsStore;
    let quotaStore: QuotaStore;
    let forwarding: ForwardingStore;
    let vacations: VacationStore;
    let admins: AdminAccounts;
    let audit: AuditLog;
    let history: HistoryStore;
    const sessionLimits = { idleMs: config.admin.session_idle, absoluteMs: config.admin.session_max };
    if (shared) {
      const {
        createPool,
        migrate,
        PostgresAccountStore,
        PostgresAdminStore,
        PostgresAuditLog,
        PostgresDomainSettingsStore,
        PostgresForwardingStore,
        PostgresHistoryStore,
        PostgresQueueStore,
        PostgresQuotaStore,
        PostgresVacationStore,
      } = await import('../postgres/backends.ts');
      const pool = createPool(config.database.url, log);
      closing.push(() => pool.end());
      try {
        await migrate(pool);
      } catch (error) {
        throw new Error(`cannot use PostgreSQL at ${safeUrl(config.database.url)}: ${(error as Error).message}`);
      }
      const postgresAccounts = await PostgresAccountStore.open(pool, { events, log, verifiedLoginCacheMs: config.auth.verified_login_cache });
      closing.unshift(() => postgresAccounts.close());
      accounts = postgresAccounts;
      index = new PostgresQueueStore(pool);
      domainSettings = new PostgresDomainSettingsStore(pool);
      const postgresQuotas = new PostgresQuotaStore(pool, { node: config.cluster.node || hostname() });
      // The counter moves it holds back are written before the pool ends.
      closing.unshift(() => postgresQuotas.close());
      quotaStore = postgresQuotas;
      forwarding = new PostgresForwardingStore(pool);
      vacations = new PostgresVacationStore(pool);
      admins = new AdminAccounts(new PostgresAdminStore(pool), sessionLimits);
      audit = new PostgresAuditLog(pool);
      history = new PostgresHistoryStore(pool);
    } else {
      accounts = new SqliteAccountStore(db, false, config.auth.verified_login_cache);
      index = SqliteQueueStore.open(config.data_dir);
      domainSettings = new SqliteDomainSettingsStore(db);
      const usage = SqliteQuotaStore.openUsageDatabase(config.data_dir);
      const sqliteQuotas = new SqliteQuotaStore(db, usage);
      // The counter moves it holds back are written before the file closes.
      closing.push(async () => {
        await sqliteQuotas.flush();
        usage.close();
      });
      quotaStore = sqliteQuotas;
      forwarding = new SqliteForwardingStore(db);
      vacations = new SqliteVacationStore(db, counters);
      admins = new AdminAccounts(new SqliteAdminStore(db, counters), sessionLimits);
      audit = new SqliteAuditLog(db);
      history = new SqliteHistoryStore(counters);
    }
    // Asked at every delivery and rarely set: remembered for a second, forgotten on every node
    // as soon as one sets them (src/forwarding/cached.ts).
    const rememberedForwarding = await RememberingForwardingStore.open(forwarding, events, log);
    const rememberedVacations = await RememberingVacationStore.open(vacations, events, log);
    closing.unshift(() => {
      rememberedForwarding.close();
      rememberedVacations.close();
    });
    forwarding = rememberedForwarding;
    vacations = rememberedVacations;
    const queue = new OutboundQueue(new Spool(config.data_dir, shared ? config.cluster.node || hostname() : undefined), index, log);
    closing.unshift(() => queue.close());
    const maildir = new MaildirStore(config.data_dir, config.hostname, { shared });
    const quotas = config.quota.enabled ? createMailboxQuotas(config, quotaStore, maildir, log) : undefined;
    return {
      holder,
      accounts,
      // With quotas, every delivery and deletion moves the mailbox's usage counter.
      mailstore: quotas ? new QuotaTrackingMailstore(maildir, quotas) : maildir,
      quotaStore,
      quotas,
      forwarding,
      vacations,
      locks,
      popBeforeSmtp: createPopBeforeSmtp(config, grants, log),
      guard: createLoginGuard(config, failures, log),
      sendLimits: createSendLimits(config, sendCounts, log),
      queue,
      connections,
      domainSettings,
      events,
      greylist,
      admins,
      audit,
      history,
      close,
    };
  }
}

/** Quotas as [quota] sets them (src/quota/quota.ts), counting in `mailstore`. */
export function createMailboxQuotas(config: Config, store: QuotaStore, mailstore: Mailstore, log: Logger): MailboxQuotas {
  const parsed = parseQuota(config.quota.default);
  return new MailboxQuotas(
    store,
    mailstore,
    { defaultLimit: parsed.ok ? parsed.limit : null, soft: config.quota.soft, warningPercent: config.quota.warning, hostname: config.hostname },
    log,
  );
}

/** Inbound filtering as [filter] sets it (src/filter/filter.ts), with its housekeeping. */
export function createInboundFilter(config: Config, backends: Backends, log: Logger): { filter: InboundFilter; sweep(): Promise<void>; close(): void } {
  const settings = config.filter;
  const dns = new FilterDns(config.dns.servers, config.dns.timeout);
  const zones: ListZone[] = [...settings.dnsbl.map((zone) => listZone(zone, 'reject')), ...settings.dnswl.map((zone) => listZone(zone, 'allow'))];
  // The lists are asked while the greeting goes out and awaited at RCPT, so they get the
  // resolver's timeout, not the whole message's deadline.
  const lists = zones.length > 0 ? new DnsLists(zones, dns, { deadlineMs: config.dns.timeout }, log) : undefined;
  // Made even when off by default: `popgate domain set D greylisting=true` turns it on per domain.
  const greylisting = new Greylisting(backends.greylist, { delayMs: settings.greylist_delay, retryWindowMs: settings.greylist_retry_window, rememberMs: settings.greylist_remember }, log);
  const rspamd = settings.rspamd.url === '' ? undefined : new RspamdClient({ url: settings.rspamd.url, timeoutMs: settings.rspamd.timeout }, log);
  // SPF, DKIM, DMARC and ARC on a thread of their own, beside the sessions (src/filter/check-thread.ts).
  const checks = new CheckThread({ hostname: config.hostname, dnsServers: config.dns.servers, dnsTimeoutMs: config.dns.timeout, deadlineMs: settings.deadline });
  const filter = new InboundFilter(
    {
      hostname: config.hostname,
      dmarc: settings.dmarc,
      spfFail: settings.spf_fail,
      temporaryErrors: settings.temporary_errors,
      greylisting: settings.greylisting,
      pregreetDelayMs: settings.pregreet_delay,
      spamScore: settings.spam_score,
      subjectTag: settings.subject_tag,
      trustedNetworks: config.auth.trusted_networks,
      rspamd: rspamd === undefined ? undefined : { onFailure: settings.rspamd.on_failure, outbound: settings.rspamd.outbound },
    },
    {
      authenticator: checks,
      lists,
      greylisting,
      rspamd,
      domains: backends.domainSettings,
      events: backends.events,
      log,
    },
  );
  return {
    filter,
    sweep: () => greylisting.sweep(),
    close: () => {
      rspamd?.close();
      void checks.close();
    },
  };
}

/** A [filter] dnsbl/dnswl entry: a zone name alone takes the list's usual action. */
function listZone(entry: string | { zone: string; action?: ListZone['action']; weight: number; codes: string[] }, action: ListZone['action']): ListZone {
  if (typeof entry === 'string') return { zone: entry, action, weight: 0, codes: [] };
  return { zone: entry.zone, action: entry.action ?? action, weight: entry.weight, codes: entry.codes };
}

export function createPopBeforeSmtp(config: Config, store: RelayAuthStore, log: Logger): PopBeforeSmtp {
  const settings = config.pop_before_smtp;
  return new PopBeforeSmtp(
    store,
    {
      windowMs: settings.window,
      mode: settings.mode,
      prefixes: { ipv4: settings.ipv4_prefix, ipv6: settings.ipv6_prefix },
      neverGrant: settings.never_grant,
      maxUsersPerKey: settings.max_users_per_ip,
    },
    log,
  );
}

export function createDeliveryScheduler(
  config: Config,
  deps: { queue: OutboundQueue; policy: MailPolicy; acceptance: MessageAcceptance; log: Logger; metrics?: MailMetrics },
  smtpAddresses: () => string[],
  leaseOwner: string,
): DeliveryScheduler {
  const outbound = config.outbound;
  const hop = (text: string): NextHop => valid(parseNextHop(text, 25));
  const router = new Router(new SystemDnsResolver(config.dns.servers, config.dns.timeout), {
    hostname: config.hostname,
    port: outbound.port,
    relayhost: outbound.relayhost === '' ? undefined : hop(outbound.relayhost),
    transport: new Map(Object.entries(outbound.transport).map(([domain, target]) => [domain.toLowerCase(), hop(target)])),
    maxHosts: 5,
    isOwnEndpoint: (ip, port) => isOwnEndpoint(smtpAddresses(), ip, port),
  });
  const client = {
    hostname: config.hostname,
    connectTimeoutMs: outbound.connect_timeout,
    commandTimeoutMs: outbound.command_timeout,
    localAddress: outbound.source_address || undefined,
  };
  return new DeliveryScheduler(
    {
      hostname: config.hostname,
      maxConnections: outbound.max_connections,
      maxConnectionsPerDestination: outbound.max_connections_per_domain,
      maxMessagesPerConnection: outbound.max_messages_per_connection,
      retryScheduleMs: outbound.retry_schedule,
      maxLifetimeMs: outbound.max_lifetime,
      delayWarningMs: outbound.delay_warning,
      bounceReturnLimit: outbound.bounce_size_limit,
      pollMs: 2000,
      // Longer than any one attempt can take (the config insists), so a live delivery keeps it.
      leaseMs: outbound.lease,
      leaseOwner,
      clientFor: (route) =>
        route.via === 'relayhost'
          ? {
              ...client,
              tls: outbound.relayhost_tls,
              auth: outbound.relayhost_user ? { user: outbound.relayhost_user, pass: outbound.relayhost_password } : undefined,
            }
          : { ...client, tls: outbound.tls },
    },
    { ...deps, router, signer: new DkimSigner(new DkimKeyring(config.dkim.keys_dir, config.dkim.selector)) },
  );
}

/** A value the config schema has already checked. */
function valid<T>(parsed: Parsed<T>): T {
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.value;
}

/** A listener of the config: its address, and the load balancers that send it PROXY headers. */
function listenAddress(text: string, proxyProtocolFrom: readonly string[]): ListenAddress {
  return { ...valid(parseListenAddress(text)), proxyProtocolFrom };
}

/**
 * What the primary of several workers does once before they start, so they do not race over
 * it: the development certificate, the database schema, and the queue brought in line with
 * its spool after a crash.
 */
export async function prepareData(config: Config, log: Logger): Promise<void> {
  await resolveTlsFiles(config, (message) => log.info({ event: 'tls_generated' }, message));
  // The locks of this machine's previous run (a crash leaves them) belong to nobody now.
  releaseWorkerLocks(config, log);
  const backends = await openBackends(config, log);
  try {
    await backends.queue.recover();
  } finally {
    await backends.close();
  }
}

/**
 * Releases the maildrop locks a dead worker held (by its pid), or every lock of this machine
 * before the workers start. For the embedded backends only: a cluster's locks in Redis belong
 * to other nodes too, and run out with their leases.
 */
export function releaseWorkerLocks(config: Config, log: Logger, pid?: number): void {
  if (config.cluster.redis !== '') return;
  const counters = openCountersDatabase(config.data_dir);
  try {
    const released = SqliteMaildropLocks.releaseAll(counters, pid);
    if (released > 0) log.info({ event: 'maildrop_locks_released', released, pid }, pid === undefined ? 'maildrop locks of the previous run released' : `maildrop locks of worker process ${pid} released`);
  } finally {
    counters.close();
  }
}

/** A URL as it may be shown: without its password. */
function safeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/** Whether ip:port reaches one of our own SMTP listeners (an MX pointing back at us). */
function isOwnEndpoint(listening: string[], ip: string, port: number): boolean {
  return listening.some((address) => {
    const at = address.lastIndexOf(':');
    const host = address.slice(0, at).replace(/^\[|\]$/g, '');
    if (Number(address.slice(at + 1)) !== port) return false;
    if (host === ip) return true;
    if (host !== '0.0.0.0' && host !== '::') return false;
    // A wildcard listener is reached through every local address (asked only in this case).
    if (ip === '::1' || (isIP(ip) === 4 && ip.startsWith('127.'))) return true;
    return Object.values(networkInterfaces()).some((list) => list?.some((entry) => entry.address === ip));
  });
}

export function createSendLimits(config: Config, store: SendLimitStore, log: Logger): SendLimits {
  return new SendLimits(
    store,
    {
      messagesPerHour: config.limits.messages_per_hour,
      messagesPerDay: config.limits.messages_per_day,
      recipientsPerDay: config.limits.recipients_per_day,
      exemptUsers: config.limits.exempt_users,
    },
    log,
  );
}

export function createLoginGuard(config: Config, store: LoginFailureStore, log: Logger): LoginGuard {
  return new LoginGuard(
    store,
    {
      failureDelayMs: config.auth.failure_delay,
      threshold: config.auth.lockout_threshold,
      accountThreshold: config.auth.account_lockout_threshold,
      windowMs: config.auth.lockout_window,
      lockoutMs: config.auth.lockout_duration,
      trustedNetworks: config.auth.trusted_networks,
    },
    log,
  );
}
