import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'smol-toml';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { freePort, PopgateChild } from './popgate-server.ts';
import { runConnects, runLogins, runRetr, type Endpoint, type SessionResult, type RetrResult } from './pop3-load.ts';
import { fmt, matchesOnly, median, Samples, summarize } from './stats.ts';
import { MessageSet, relayLag, runAccept, verifyMaildirDelivery, type AcceptResult } from './smtp-load.ts';
import { comparisonChart, comparisonTable, runComparison, type ComparisonResult } from './compare.ts';
import { processTree, runIdle } from './idle-load.ts';
import { runLargeMailbox } from './mailbox-load.ts';
import { fillMailboxes } from './messages.ts';
import { runQueueDelivery } from './queue-load.ts';
import { runFiltering } from './filter.ts';
import { PAGE_RATE, runWebBesideMail } from './web-load.ts';
import { runImport } from './import-load.ts';
import { runScaleOut, type ScaleOptions } from './scale.ts';
import { runSubmission } from './submission-load.ts';
import { runQuotaRows } from './quota.ts';

// `npm run bench`: popgate's POP3 and SMTP performance on this machine. Starts popgate as a
// child process (so the load generator does not share its event loop) on a temporary data dir
// with pre-filled mailboxes, runs each workload several times and prints the medians.
//
//   npm run bench                      full run (3 runs of each workload)
//   npm run bench -- --quick           smoke test: small mailboxes, 1 run
//   npm run bench -- --target mail.example.net:110 --user a@example.net --password secret
//                                      the POP3 generator against a running server
//   npm run bench -- --smtp-target mail.example.net:25 --smtp-to someone@example.net
//                                      the SMTP generator against a running server (it sends
//                                      real mail to that address: thousands of messages)
//   npm run bench -- --peers --chart docs/benchmarks.svg
//                                      popgate beside Postfix, Dovecot and Haraka (installed from Debian and
//                                      npm first: needs root), ratios against the targets (bench/compare.ts)
//   npm run bench -- --target mail.example.net:110 --user big@example.net --password secret --large --only large
//                                      login + STAT + UIDL on a (large) mailbox of a running server
//   npm run bench -- --target host:110 --smtp-target host:25 --idle-connections 1000 --server-pid PID --only idle
//                                      idle connections held on a running server; its RSS from /proc
//   npm run bench -- --only import      moving in: popgate import dovecot of 10 x 10,000 messages of 4 KB
//   npm run -s bench -- --json > results.json
//                                      JSON on stdout, the table on stderr
//
// Options: --runs N, --pipeline N (RETR depth of the main rows, default 1), --messages N
// (per mailbox), --logins N, --smtp-messages N (1 KB messages per SMTP run; the 100 KB rows
// send 15% of that), --lag-samples N (relay-lag samples per run), --only TEXT (just the
// workloads whose name contains TEXT, e.g. "retr", "login", "smtp", "accept", "lag", "workers",
// "cluster", "filtering" or "web"; "a|b" for either), --cpu-prof DIR (profile the popgate children with node
// --cpu-prof; a profile's name carries the pid the progress lines give), --queue-messages N
// (messages per outbound queue run), --filtering-workers N (`[server] workers` of both popgates
// of the filtering row; 1 by default, like every row), --comparison-only (with --peers: the comparison table
// alone, without the scale-out, filtering and web rows that follow it), --comparison-workers N
// (`[server] workers` of popgate in the comparison table, 1 by default; its memory is then the sum over
// the primary and the workers).
//
// Outbound queue: a popgate child starts with N 1 KB messages queued and delivers them through
// the transport map to a local sink SMTP server (bench/queue-load.ts); messages/s from the
// child accepting connections to the sink's last 250, for 1 and 10 destinations and with DKIM.
//
// Scale-out (bench/scale.ts, near the end, also with --peers): popgate with [server] workers = 2 against
// workers = 1 (RETR 10 KB and SMTP accept 1 KB, 10 clients), and a cluster of two nodes sharing a
// private redis-server and PostgreSQL and one data folder against one embedded node (SMTP accept,
// POP3 login, RETR, and the relay lag from a POP3 login on one node to relay through the other),
// runs alternating between the configurations; each row notes the CPU of every process involved
// (from /proc) and what bounds it. Without redis-server or PostgreSQL the cluster rows are skipped;
// with --peers they are installed, and Postfix's 1 KB accept is measured again beside the cluster.
//
// Filtering (bench/filter.ts, last, also with --peers): SMTP accept of 1 KB DKIM-signed messages with
// SPF, DKIM and DMARC checked (records served by a DNS server on loopback) against the same
// popgate with [filter] enabled = false, and with --peers against Postfix; runs alternate as above.
//
// Web pages beside mail (bench/web-load.ts, after filtering, --only web): SMTP accept 1 KB and RETR
// 10 KB with 10 clients on a popgate with [http] listen, alone and while help pages are asked at
// 200 requests/s from a child process; runs alternate, as above.
//
// SMTP workloads: MAIL/RCPT/DATA to a local user over 10 connections, with and without
// PIPELINING; popgate answers 250 only once the message and its Maildir entry are fsync'd, so
// the figures include that. Afterwards every accepted message is looked up in the Maildir:
// each must be there once, byte for byte. The relay lag: from the POP3 "+OK" to a login to the
// first 250 to RCPT TO a remote address over SMTP from the same (fresh) loopback address.

const USAGE = `usage: node bench/run.ts [--quick] [--json] [--runs N] [--pipeline N] [--messages N] [--logins N]
                         [--smtp-messages N] [--lag-samples N] [--queue-messages N] [--only TEXT] [--cpu-prof DIR]
                         [--peers [--chart FILE.svg] [--comparison-only] [--comparison-workers N]] [--filtering-workers N]
                         [--target HOST:PORT [--user ADDRESS ...] [--password PASSWORD] [--large]]
                         [--smtp-target HOST:PORT --smtp-to ADDRESS [--smtp-from ADDRESS]]
                         [--idle-connections N [--server-pid PID]]`;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    target: { type: 'string' },
    user: { type: 'string', multiple: true },
    password: { type: 'string' },
    runs: { type: 'string' },
    pipeline: { type: 'string' },
    messages: { type: 'string' },
    logins: { type: 'string' },
    'smtp-messages': { type: 'string' },
    'lag-samples': { type: 'string' },
    'smtp-target': { type: 'string' },
    'smtp-to': { type: 'string' },
    'smtp-from': { type: 'string' },
    'cpu-prof': { type: 'string' },
    'comparison-only': { type: 'boolean' },
    'filtering-workers': { type: 'string' },
    'comparison-workers': { type: 'string' },
    peers: { type: 'boolean', default: false },
    chart: { type: 'string' },
    'idle-connections': { type: 'string' },
    'server-pid': { type: 'string' },
    large: { type: 'boolean', default: false },
    'queue-messages': { type: 'string' },
    only: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    process.stderr.write(`bench: --${name} must be a positive whole number\n${USAGE}\n`);
    process.exit(2);
  }
  return value;
}

const quick = args.quick;
const settings = {
  runs: positive('runs', args.runs, quick ? 1 : 3),
  pipeline: positive('pipeline', args.pipeline, 1),
  messagesPerMailbox: positive('messages', args.messages, quick ? 100 : 1000),
  logins: positive('logins', args.logins, quick ? 20 : 200),
  connects: quick ? 100 : 1000,
  mailboxes: 10,
  concurrentClients: 10,
  messageSize: 10 * 1024,
};
const smtpSmall = positive('smtp-messages', args['smtp-messages'], quick ? 200 : 2000);
const smtpSettings = {
  /** 1 KB messages per run. */
  smallMessages: smtpSmall,
  /** 100 KB messages per run. */
  largeMessages: args['smtp-messages'] !== undefined ? Math.max(10, Math.round(smtpSmall * 0.15)) : quick ? 30 : 300,
  smallSize: 1024,
  largeSize: 100 * 1024,
  /** Relay-lag samples per run. */
  lagSamples: positive('lag-samples', args['lag-samples'], quick ? 5 : 30),
  /** Unmeasured 1 KB messages before the first SMTP row, so the JITs are warm. */
  warmUp: quick ? 50 : 300,
};

const queueMessages = positive('queue-messages', args['queue-messages'], quick ? 200 : 2000);

// The table goes to stdout, unless the JSON does; progress always goes to stderr.
const tableOut = args.json ? process.stderr : process.stdout;
const progress = (text: string) => process.stderr.write(`${text}\n`);

const HOSTNAME = 'bench.example.test';
const PASSWORD = 'bench-password-1';
const mailboxUser = (i: number) => `bench${String(i + 1).padStart(2, '0')}@${HOSTNAME}`;
const loginUser = (i: number) => `login${String(i + 1).padStart(2, '0')}@${HOSTNAME}`;
/** The user who logs in for the relay-lag samples (and relays as itself). */
const RELAY_USER = `relay01@${HOSTNAME}`;
/** An address in a domain popgate does not handle: RCPT to it is relay. Only RCPT is sent, never DATA. */
const REMOTE_RECIPIENT = 'relay-probe@example.com';
/** A sender from elsewhere, as inbound mail on port 25 has. */
const INBOUND_SENDER = 'sender@example.org';
/**
 * SMTP accept traffic comes from this address, not 127.0.0.1: the POP3 login rows leave
 * POP-before-SMTP grants on 127.0.0.1, and inbound mail from a granted address costs popgate
 * a look-up of the grant holders' addresses on every MAIL, which mail from other MTAs does not.
 */
const ACCEPT_SOURCE = '127.0.0.2';
const smtpSinks = ['smtp-warmup', 'smtp-1k', 'smtp-1k-pipe', 'smtp-100k', 'smtp-100k-pipe'].map((local) => `${local}@${HOSTNAME}`);
/** The mailbox authenticated submission sends to (local, so the outbound queue is not measured here). */
const SUBMISSION_SINK = `submission-sink@${HOSTNAME}`;
let submissionEndpoint: Endpoint | undefined;
let smtpEndpoint: Endpoint | undefined;

// --- cleanup: the child server and the temporary data dir go away whatever happens ---

let server: PopgateChild | undefined;
let dataDir: string | undefined;

function cleanupSync(): void {
  server?.killSync();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  dataDir = undefined;
}

async function stopServer(): Promise<void> {
  await server?.stop();
}

let interrupted = false;
process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    progress(`\nbench: ${signal}, stopping the server and removing the temporary data`);
    void stopServer().finally(() => {
      cleanupSync();
      process.exit(130);
    });
  });
}

// --- test data ---

async function setUp(): Promise<{ endpoint: Endpoint; configPath: string; messageBytes: number }> {
  dataDir = mkdtempSync(join(tmpdir(), 'popgate-bench-'));
  const port = await freePort();
  const smtpPort = await freePort();
  const submissionPort = await freePort();
  const configPath = join(dataDir, 'popgate.toml');
  const config = {
    hostname: HOSTNAME,
    data_dir: dataDir,
    shutdown_grace: '1s',
    log: { level: 'warn' },
    // One process, as these rows have always measured (the default is one worker per core);
    // the scale-out rows (bench/scale.ts) compare it with more.
    server: { workers: 1 },
    // The accept rows measure the SMTP path as they always have, without inbound filtering
    // (on by default since [filter]); the filtering row (bench/filter.ts) compares the two.
    filter: { enabled: false },
    pop3: { listen: [`127.0.0.1:${port}`], max_connection_rate_per_ip: 0 },
    pop3s: { listen: [] },
    // Limits opened up so the benchmark measures the server, not its abuse protection;
    // [pop_before_smtp] keeps its defaults (10 minute sliding window, /32 keys).
    smtp: { listen: [`127.0.0.1:${smtpPort}`], max_connections_per_ip: 10_000, max_connection_rate_per_ip: 0, max_errors: 1000, error_delay: '0ms' },
    submission: { listen: [`127.0.0.1:${submissionPort}`] },
    // A certificate for STARTTLS on submission (the other rows do not use TLS).
    tls: { self_signed: true },
    submissions: { listen: [] },
  };
  writeFileSync(configPath, stringify(config) + '\n');

  const started = performance.now();
  const accounts = new SqliteAccountStore(openDatabase(dataDir), true);
  const mailstore = new MaildirStore(dataDir, HOSTNAME);
  try {
    await accounts.addDomain(HOSTNAME);
    const users = [
      ...Array.from({ length: settings.mailboxes }, (_, i) => mailboxUser(i)),
      ...Array.from({ length: settings.concurrentClients }, (_, i) => loginUser(i)),
      RELAY_USER,
      ...smtpSinks,
      SUBMISSION_SINK,
    ];
    for (const user of users) {
      await accounts.addUser(user, PASSWORD);
      await mailstore.ensure(user);
    }
  } finally {
    await accounts.close();
  }

  const total = settings.mailboxes * settings.messagesPerMailbox;
  progress(`setup: ${settings.mailboxes} mailboxes x ${settings.messagesPerMailbox} messages of ~${settings.messageSize / 1024} KB in ${dataDir}`);
  const mailboxes = Array.from({ length: settings.mailboxes }, (_, i) => mailboxUser(i));
  const messageBytes = await fillMailboxes((user, message) => mailstore.deliver(user, message), mailboxes, settings.messagesPerMailbox, settings.messageSize);
  progress(`setup: ${total} messages (${(messageBytes / 1e6).toFixed(1)} MB) delivered in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  smtpEndpoint = { host: '127.0.0.1', port: smtpPort };
  submissionEndpoint = { host: '127.0.0.1', port: submissionPort };
  return { endpoint: { host: '127.0.0.1', port }, configPath, messageBytes };
}

// --- workloads and results ---

/**
 * CPU seconds the popgate child has used, so a figure can be given as CPU per message: on a
 * shared, noisy machine that varies far less than the wall-clock rate, and it shows what an
 * optimisation saved.
 */
function serverCpuSeconds(): { user: number; system: number } | undefined {
  return server?.cpuSeconds();
}

/** Microseconds of server CPU per item between two serverCpuSeconds() readings, as text for progress lines. */
function cpuPer(before: { user: number; system: number } | undefined, items: number): { text: string; us?: number } {
  const after = serverCpuSeconds();
  if (before === undefined || after === undefined || items === 0) return { text: '' };
  const user = ((after.user - before.user) * 1e6) / items;
  const system = ((after.system - before.system) * 1e6) / items;
  return { text: `, server CPU ${fmt(user + system)} µs/msg (user ${fmt(user)}, system ${fmt(system)})`, us: user + system };
}

interface Row {
  workload: string;
  unit: string;
  median: number;
  runs: number[];
  /** Latency percentiles in ms over the samples of all runs; absent for derived rows (MB/s). */
  latency?: { p50: number; p99: number; max: number; count: number };
  /** Anything else worth keeping in the JSON (e.g. the RCPT tries of the relay lag). */
  details?: Record<string, unknown>;
  /** What the figure is and what bounds it, printed under the table (the scale-out rows have one). */
  note?: string;
}

const rows: Row[] = [];
const skipped: string[] = [];

/** The scale-out rows (bench/scale.ts) into the table: they come with their runs, latency and note. */
/** The scale-out rows (bench/scale.ts), the filtering row (bench/filter.ts), the web row (bench/web-load.ts): all alternate configurations run by run. */
async function runScaleRows(peers: boolean): Promise<void> {
  const options: ScaleOptions = {
    quick,
    runs: settings.runs,
    only: args.only,
    peers,
    messagesPerMailbox: settings.messagesPerMailbox,
    smtpMessages: smtpSettings.smallMessages,
    smtpWarmUp: smtpSettings.warmUp,
    // More than the main rows' logins: a run of 200 lasts a fifth of a second.
    logins: args.logins !== undefined ? settings.logins : quick ? 50 : 500,
    lagSamples: smtpSettings.lagSamples,
    cpuProfDir: args['cpu-prof'],
    filteringWorkers: positive('filtering-workers', args['filtering-workers'], 1),
    progress,
  };
  for (const result of [await runScaleOut(options), await runFiltering(options), await runWebBesideMail(options)]) {
    for (const row of result.rows) rows.push({ ...row, median: median(row.runs) });
    skipped.push(...result.skipped);
  }
}

function addRow(workload: string, unit: string, runs: number[], samples?: Samples, details?: Record<string, unknown>): void {
  const row: Row = { workload, unit, median: median(runs), runs };
  if (samples) row.latency = summarize(samples.values());
  if (details) row.details = details;
  rows.push(row);
}

const selected = (label: string) => matchesOnly(args.only, label);

async function measureSessions(label: string, unit: string, run: () => Promise<SessionResult>): Promise<void> {
  if (!selected(label)) return;
  const perSecond: number[] = [];
  const samples = new Samples();
  for (let i = 0; i < settings.runs; i++) {
    const result = await run();
    perSecond.push(result.perSecond);
    samples.add(result.latency);
    progress(`  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.perSecond)} ${unit} (${result.sessions} in ${fmt(result.elapsedMs / 1000)} s)`);
  }
  addRow(label, unit, perSecond, samples);
}

async function measureRetr(label: string, run: () => Promise<RetrResult>): Promise<void> {
  if (!selected(label)) return;
  const messages: number[] = [];
  const megabytes: number[] = [];
  const samples = new Samples();
  const cpu: number[] = [];
  for (let i = 0; i < settings.runs; i++) {
    const before = serverCpuSeconds();
    const result = await run();
    const used = cpuPer(before, result.messages);
    if (used.us !== undefined) cpu.push(used.us);
    messages.push(result.messagesPerSecond);
    megabytes.push(result.megabytesPerSecond);
    samples.add(result.latency);
    progress(
      `  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.messagesPerSecond)} msg/s, ${fmt(result.megabytesPerSecond)} MB/s ` +
        `(${result.messages} messages, ${(result.octets / 1e6).toFixed(1)} MB verified, in ${fmt(result.elapsedMs / 1000)} s${used.text})`,
    );
  }
  addRow(label, 'msg/s', messages, samples, cpu.length > 0 ? { serverCpuUsPerMessage: cpu } : undefined);
  addRow(label, 'MB/s', megabytes);
}

async function runWorkloads(endpoint: Endpoint, users: { mailboxes: string[]; logins: string[]; password: string } | undefined, maxMessages?: number): Promise<void> {
  const clients = settings.concurrentClients;
  progress('workloads:');
  await measureSessions('connect+greeting+QUIT (no auth), 1 client', 'sessions/s', () => runConnects({ endpoint, clients: 1, total: settings.connects }));
  await measureSessions(`connect+greeting+QUIT (no auth), ${clients} clients`, 'sessions/s', () => runConnects({ endpoint, clients, total: settings.connects }));
  if (!users) {
    skipped.push('login and RETR workloads: they need --user and --password');
    return;
  }
  const { mailboxes, logins, password } = users;
  await measureSessions('POP3 login (USER/PASS), 1 client', 'logins/s', () =>
    runLogins({ endpoint, users: logins.slice(0, 1), password, clients: 1, total: settings.logins }),
  );
  if (logins.length >= clients) {
    await measureSessions(`POP3 login (USER/PASS), ${clients} clients`, 'logins/s', () =>
      runLogins({ endpoint, users: logins.slice(0, clients), password, clients, total: settings.logins }),
    );
  } else {
    skipped.push(`login with ${clients} clients: needs ${clients} accounts (--user given ${logins.length} times); one maildrop allows one session`);
  }

  const depth = settings.pipeline;
  const depthLabel = (d: number) => (d === 1 ? 'no pipelining' : `pipeline ${d}`);
  const retrRows: { label: string; users: string[]; pipeline: number }[] = [{ label: `RETR, 1 client, ${depthLabel(depth)}`, users: mailboxes.slice(0, 1), pipeline: depth }];
  if (mailboxes.length >= clients) {
    retrRows.push({ label: `RETR, ${clients} clients, ${depthLabel(depth)}`, users: mailboxes.slice(0, clients), pipeline: depth });
  } else {
    skipped.push(`RETR with ${clients} clients: needs ${clients} mailboxes (--user given ${mailboxes.length} times)`);
  }
  if (depth !== 10) retrRows.push({ label: 'RETR, 1 client, pipeline 10', users: mailboxes.slice(0, 1), pipeline: 10 });
  if (!retrRows.some((row) => selected(row.label))) return;

  // One unmeasured pass first, so the page cache and both JITs are warm for every measured run.
  progress('  warm-up: RETR, 1 client (not measured)');
  await runRetr({ endpoint, users: mailboxes.slice(0, 1), password, pipeline: depth, maxMessages });
  for (const row of retrRows) {
    await measureRetr(row.label, () => runRetr({ endpoint, users: row.users, password, pipeline: row.pipeline, maxMessages }));
  }
}

// --- SMTP workloads ---

interface SmtpTarget {
  smtp: Endpoint;
  /** The recipient of an accept row: a local user of the server. */
  recipient: (row: number) => string;
  from: string;
  /** Source address of the accept connections. */
  localAddress?: string;
  /** Maildir folder of an address, when the benchmark can read it (its own popgate child). */
  maildirOf?: (address: string) => string;
  /** POP3 for the relay-lag samples; absent when they cannot be taken. */
  lag?: { pop3: Endpoint; user: string; password: string };
}

/** Files already checked per Maildir, and messages that got 250 per recipient. */
const checkedFiles = new Map<string, Set<string>>();
const acceptedPerRecipient = new Map<string, number>();
let messagesVerified = 0;
const runTag = Date.now().toString(36);

/** After a run: every message that got 250 is in the recipient's Maildir, once, byte for byte (verifyMaildirDelivery). */
function verifyDelivery(target: SmtpTarget, address: string, messages: MessageSet, result: AcceptResult): void {
  acceptedPerRecipient.set(address, (acceptedPerRecipient.get(address) ?? 0) + result.accepted);
  if (!target.maildirOf) return;
  const maildir = target.maildirOf(address);
  const checked = checkedFiles.get(maildir) ?? new Set<string>();
  checkedFiles.set(maildir, checked);
  try {
    messagesVerified += verifyMaildirDelivery(maildir, messages, result.accepted, checked);
  } catch (error) {
    throw new Error(`SMTP: to ${address}: ${(error as Error).message}`);
  }
}

async function measureAccept(target: SmtpTarget, row: number, label: string, size: number, total: number, pipelining: boolean): Promise<void> {
  if (!selected(label)) return;
  const clients = settings.concurrentClients;
  const to = target.recipient(row);
  const perSecond: number[] = [];
  const megabytes: number[] = [];
  const samples = new Samples();
  const cpu: number[] = [];
  for (let i = 0; i < settings.runs; i++) {
    const messages = new MessageSet({ size, from: target.from, to, tag: `${runTag}-${row}-${i}` });
    const before = target.maildirOf ? serverCpuSeconds() : undefined;
    const result = await runAccept({ endpoint: target.smtp, clients, total, messages, from: target.from, to, pipelining, localAddress: target.localAddress });
    const used = cpuPer(before, result.accepted);
    if (used.us !== undefined) cpu.push(used.us);
    verifyDelivery(target, to, messages, result);
    perSecond.push(result.messagesPerSecond);
    megabytes.push(result.megabytesPerSecond);
    samples.add(result.latency);
    progress(
      `  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.messagesPerSecond)} msg/s, ${fmt(result.megabytesPerSecond)} MB/s ` +
        `(${result.accepted} messages of ${size} octets, all 250${target.maildirOf ? ', all in the Maildir' : ''}, in ${fmt(result.elapsedMs / 1000)} s${used.text})`,
    );
  }
  addRow(label, 'msg/s', perSecond, samples, cpu.length > 0 ? { serverCpuUsPerMessage: cpu } : undefined);
  if (size >= 10 * 1024) addRow(label, 'MB/s', megabytes);
}

/** Fresh loopback addresses for the relay-lag samples: 127.0.0.50 to .254, then 127.0.1.1 and on. */
function lagSource(i: number): string {
  if (i < 205) return `127.0.0.${50 + i}`;
  const j = i - 205;
  return `127.0.${1 + Math.floor(j / 254)}.${1 + (j % 254)}`;
}

async function measureRelayLag(target: SmtpTarget, label: string): Promise<void> {
  if (!selected(label)) return;
  if (!target.lag) {
    skipped.push('relay lag: needs --target (POP3 on loopback), --smtp-target (on loopback), --user and --password');
    return;
  }
  const { pop3, user, password } = target.lag;
  const runMedians: number[] = [];
  const samples = new Samples();
  const tries: number[] = [];
  let reconnects = 0;
  let source = 0;
  for (let i = 0; i < settings.runs; i++) {
    const lags: number[] = [];
    for (let n = 0; n < smtpSettings.lagSamples; n++) {
      const result = await relayLag({ pop3, smtp: target.smtp, user, password, remoteRecipient: REMOTE_RECIPIENT, source: lagSource(source++) });
      lags.push(result.lagMs);
      samples.push(result.lagMs);
      tries.push(result.tries);
      reconnects += result.reconnects;
    }
    runMedians.push(median(lags));
    progress(`  ${label}, run ${i + 1}/${settings.runs}: median ${fmt(median(lags))} ms over ${lags.length} logins (RCPT tries: ${lags.length === 0 ? '-' : Math.max(...tries.slice(-lags.length))} at most)`);
  }
  const firstTry = tries.filter((t) => t === 1).length;
  const maxTries = Math.max(...tries);
  const triesText = maxTries === 1 ? `RCPT ok at 1st try ${firstTry}/${tries.length}` : `RCPT ok at 1st try ${firstTry}/${tries.length}, up to ${maxTries} tries`;
  addRow(`${label}, ${triesText}`, 'ms', runMedians, samples, { tries: { firstTry, samples: tries.length, max: maxTries, mean: tries.reduce((a, b) => a + b, 0) / tries.length }, reconnects });
}

async function runSmtpWorkloads(target: SmtpTarget): Promise<void> {
  const clients = settings.concurrentClients;
  const { smallMessages, largeMessages, smallSize, largeSize } = smtpSettings;
  const rows = [
    { label: `SMTP accept 1 KB, ${clients} clients, no pipelining`, size: smallSize, total: smallMessages, pipelining: false },
    { label: `SMTP accept 1 KB, ${clients} clients, pipelining`, size: smallSize, total: smallMessages, pipelining: true },
    { label: `SMTP accept 100 KB, ${clients} clients, no pipelining`, size: largeSize, total: largeMessages, pipelining: false },
    { label: `SMTP accept 100 KB, ${clients} clients, pipelining`, size: largeSize, total: largeMessages, pipelining: true },
  ];
  if (rows.some((row) => selected(row.label))) {
    // One unmeasured pass first, so both JITs are warm for the measured runs (and checked too).
    progress(`  warm-up: SMTP accept, ${smtpSettings.warmUp} messages (not measured)`);
    const warmTo = target.recipient(0);
    const warm = new MessageSet({ size: smallSize, from: target.from, to: warmTo, tag: `${runTag}-0` });
    const result = await runAccept({ endpoint: target.smtp, clients, total: smtpSettings.warmUp, messages: warm, from: target.from, to: warmTo, pipelining: true, localAddress: target.localAddress });
    verifyDelivery(target, warmTo, warm, result);
  }
  for (const [i, row] of rows.entries()) await measureAccept(target, i + 1, row.label, row.size, row.total, row.pipelining);

  // And once more at the end, per mailbox: the files in new/ are exactly the messages that got 250.
  if (target.maildirOf) {
    for (const [address, accepted] of acceptedPerRecipient) {
      const dir = join(target.maildirOf(address), 'new');
      const stored = existsSync(dir) ? readdirSync(dir).filter((name) => !name.startsWith('.')).length : 0;
      if (stored !== accepted) throw new Error(`SMTP: ${accepted} messages to ${address} got 250, but ${dir} holds ${stored} files`);
    }
    if (acceptedPerRecipient.size > 0) progress(`  verified: ${messagesVerified} messages that got 250 are each in the recipient's Maildir once, byte for byte`);
  }

  await measureRelayLag(target, 'relay lag, POP3 +OK to SMTP RCPT 250');
}

async function measureSubmission(): Promise<void> {
  const clients = settings.concurrentClients;
  const label = `submission 1 KB, ${clients} clients, STARTTLS + AUTH PLAIN per message`;
  if (!selected(label) || !submissionEndpoint) return;
  const total = quick ? 50 : 500;
  const perSecond: number[] = [];
  const samples = new Samples();
  for (let i = 0; i < settings.runs; i++) {
    const result = await runSubmission({ endpoint: submissionEndpoint, clients, total, user: RELAY_USER, password: PASSWORD, to: SUBMISSION_SINK, size: 1024 });
    perSecond.push(result.messagesPerSecond);
    for (const ms of result.latency) samples.push(ms);
    progress(`  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.messagesPerSecond)} msg/s (${result.sent} messages, each on its own TLS connection with a login, in ${fmt(result.elapsedMs / 1000)} s)`);
  }
  addRow(label, 'msg/s', perSecond, samples);
}

// --- outbound queue ---

/** Moving in from Dovecot: `popgate import dovecot` of 10 mailboxes (bench/import-load.ts). */
async function runImportWorkloads(): Promise<void> {
  const perUser = quick ? 1000 : 10_000;
  const label = `import from Dovecot Maildirs, 10 x ${perUser.toLocaleString('en')} messages of 4 KB (hard links)`;
  if (!selected(label)) return;
  const perSecond: number[] = [];
  const seconds: number[] = [];
  for (let i = 0; i < settings.runs; i++) {
    const result = await runImport({ users: 10, messagesPerUser: perUser, size: 4096 }, progress);
    progress(`  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.messagesPerSecond)} msg/s, ${fmt(result.seconds)} s in all (${result.linked} hard links)`);
    perSecond.push(result.messagesPerSecond);
    seconds.push(result.seconds);
  }
  addRow(label, 'msg/s', perSecond);
  addRow(`${label}: total time`, 's', seconds);
}

async function runQueueWorkloads(): Promise<void> {
  const rowsWanted = [
    { label: 'queue delivery 1 KB to a sink, 1 destination', domains: 1, dkim: false },
    { label: 'queue delivery 1 KB to a sink, 10 destinations', domains: 10, dkim: false },
    { label: 'queue delivery 1 KB to a sink, 10 destinations, DKIM RSA-2048', domains: 10, dkim: true },
  ].filter((row) => selected(row.label));
  for (const row of rowsWanted) {
    const perSecond: number[] = [];
    const drained: number[] = [];
    for (let i = 0; i < settings.runs; i++) {
      const result = await runQueueDelivery({ messages: queueMessages, size: 1024, domains: row.domains, dkim: row.dkim, cpuProfDir: args['cpu-prof'] });
      perSecond.push(result.messagesPerSecond);
      drained.push(queueMessages / (result.drainedMs / 1000));
      progress(
        `  ${row.label}, run ${i + 1}/${settings.runs}: ${fmt(result.messagesPerSecond)} msg/s (${result.delivered} delivered in ${fmt(result.deliveredMs / 1000)} s` +
          ` over ${result.connections} connections${row.dkim ? `, ${result.signed} signed` : ''}; queue empty after ${fmt(result.drainedMs / 1000)} s)`,
      );
    }
    addRow(row.label, 'msg/s', perSecond, undefined, { drainedPerSecond: drained });
  }
}

// --- output ---


function machine() {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) model = line.split(':').slice(1).join(':').trim();
  } catch {
    // not Linux: os.cpus() has the model
  }
  return { cores: availableParallelism(), cpu: model, node: process.version, platform: `${process.platform}-${process.arch}`, memoryGB: Math.round(totalmem() / 2 ** 30) };
}

function printTable(info: ReturnType<typeof machine>, target: string, messageBytes: number | undefined): void {
  const header = ['workload', 'median', 'p50', 'p99', 'unit', 'runs'];
  const body = rows.map((row) => [
    row.workload,
    fmt(row.median),
    row.latency ? `${fmt(row.latency.p50)} ms` : '',
    row.latency ? `${fmt(row.latency.p99)} ms` : '',
    row.unit,
    row.runs.map(fmt).join(' / '),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const numeric = new Set([1, 2, 3]);
  const line = (cells: string[]) =>
    '| ' + cells.map((cell, i) => (numeric.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join(' | ') + ' |';
  const out: string[] = [
    '',
    `popgate POP3/SMTP benchmark — ${target}`,
    `machine: ${info.cores} cores, ${info.cpu}, ${info.memoryGB} GB, node ${info.node} (${info.platform})`,
    `runs per workload: ${settings.runs}${rows.some((row) => row.note) ? ', the scale-out rows more (see runs)' : ''} (median shown; p50/p99 are latencies over the samples of all runs)` +
      (messageBytes !== undefined
        ? `; mailboxes: ${settings.messagesPerMailbox} messages, ${(messageBytes / (settings.mailboxes * settings.messagesPerMailbox) / 1000).toFixed(1)} kB average`
        : ''),
    '',
    line(header),
    '|' + widths.map((w, i) => (numeric.has(i) ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|',
    ...body.map(line),
    '',
  ];
  const has = (prefix: string) => rows.some((row) => row.workload.startsWith(prefix));
  if (has('POP3 login')) out.push('login = connect, greeting, USER, PASS, QUIT, latency per login (popgate checks passwords with scrypt, N=2^14).');
  if (has('RETR')) {
    out.push(
      'RETR = every message of a mailbox, octets checked against LIST; timed from all clients logged in to the last reply;',
      '       latency per RETR (with pipelining it includes the wait behind earlier RETRs). MB = 10^6 message octets.',
    );
  }
  if (has('SMTP accept')) {
    out.push(
      'SMTP accept = MAIL, RCPT to a local user, DATA, message (1 KB = 1,024 octets, 100 KB = 102,400), connections kept open;',
      '       latency per message, MAIL written to 250 received; pipelining = MAIL/RCPT/DATA in one write, the message right',
      '       after the 354 (RFC 2920).' + (smtpEndpoint ? " popgate answers 250 only after the Maildir file and its directory are" : ''),
    );
    if (smtpEndpoint) out.push("       fsync'd; afterwards every message that got 250 was found in the Maildir, once, byte for byte.");
  }
  if (has('submission')) {
    out.push(
      'submission = nodemailer sends each 1 KB message on a new connection to the port 587 role: EHLO, STARTTLS, EHLO, AUTH PLAIN',
      '       (scrypt N=2^14 password check), MAIL, RCPT to a local mailbox, DATA, QUIT; latency per message.',
    );
  }
  if (has('queue delivery')) {
    out.push(
      `queue delivery = popgate starts with ${queueMessages} queued 1 KB messages (one recipient each) and delivers them over SMTP to a`,
      '       local sink through the transport map: messages/s from popgate accepting connections to the last 250 at the sink.',
      '       The queue index and spool are updated and removed as in production; one log line per attempt goes to a file.',
    );
  }
  if (has('import')) {
    out.push(
      'import = `popgate import dovecot` of Dovecot-style Maildirs with a dovecot-uidlist each (default UIDL format), into an empty',
      '       popgate on the same file system: users created, every message hard-linked under its old UIDL, journal and folders',
      "       fsync'd; timed from the command's start to its exit.",
    );
  }
  if (has('relay lag')) {
    out.push(
      'relay lag = POP3 USER/PASS from a loopback address without a grant (relay from it refused first), then MAIL+RCPT to a remote',
      '       domain over SMTP from the same address at once, retried every 1 ms: time from the POP3 "+OK" to the 250 to RCPT.',
      `       ${smtpSettings.lagSamples} logins per run; median = median of the run medians, p50/p99 over all logins.`,
    );
  }
  if (has('workers = ')) {
    out.push(
      'workers = N = popgate with [server] workers = N (node:cluster; each worker listens itself with SO_REUSEPORT), on copies of the same',
      '       data, the same generator and message shapes as the rows above; runs alternate between the two, the order reversed every other',
      '       run; a ratio row is the median of the per-run ratios.',
    );
  }
  if (has('cluster')) {
    out.push(
      'cluster of 2 nodes = two popgate processes (workers = 1 each) on 127.0.1.1 and 127.0.1.2 sharing a private redis-server, a private',
      '       PostgreSQL (started by the benchmark) and one data folder, the clients spread over both; 1 node = popgate embedded (SQLite,',
      '       workers = 1). Runs alternate between them as above; CPU per message or login in popgate, redis-server and postgres (the',
      "       postmaster and its backends) is taken from /proc. The relay lag across nodes: POP3 \"+OK\" on node A to the 250 to RCPT on node B.",
    );
  }
  if (has('filtering')) {
    out.push(
      'filtering on = popgate with [filter] as by default: SPF, DKIM and DMARC checked on every message (mailauth), the records from a',
      '       DNS server on loopback; the 1 KB messages (signature included) signed with RSA 2048 by a domain with SPF -all and DMARC',
      '       p=reject, each found marked spf=pass, dkim=pass, dmarc=pass; filtering off = [filter] enabled = false, same messages.',
      '       Runs alternate between them (and Postfix with --peers) as above.',
    );
  }
  if (has('web pages')) {
    out.push(
      'web pages beside mail = one popgate with [http] listen runs the SMTP accept and RETR rows above with no web traffic and, runs',
      `       alternating, while a child process asks it for help pages at ${PAGE_RATE} requests/s (open loop: sent on the clock, latency from`,
      '       the scheduled time; keep-alive); answered = answers within the run per second of it. Any answer but 200 fails the row.',
    );
  }
  const notes = rows.filter((row) => row.note);
  if (notes.length > 0) {
    out.push(
      '',
      'What bounds each row (CPU in cores = CPU seconds over the wall time of its runs, from /proc; generator = the benchmark process,',
      'machine = all of this machine\'s CPUs; the "bound" is the reading these figures suggest):',
      ...notes.map((row) => `- ${row.workload} (${row.unit}): ${row.note}`),
    );
  }
  for (const note of skipped) out.push(`skipped: ${note}`);
  tableOut.write(out.join('\n') + '\n');
}

// --- main ---

/** popgate beside Postfix, Dovecot and Haraka (bench/compare.ts), or popgate alone for the large-mailbox and idle rows. */
async function runComparisonRows(peers: boolean): Promise<ComparisonResult> {
  return runComparison({
    peers,
    families: peers ? undefined : ['large', 'idle'],
    quick,
    runs: settings.runs,
    only: args.only,
    progress,
    cpuProfDir: args['cpu-prof'],
    workers: positive('comparison-workers', args['comparison-workers'], 1),
  });
}

async function main(): Promise<void> {
  const info = machine();
  if (args.peers) {
    const result = await runComparisonRows(true);
    const versions = Object.values(result.versions).join(', ');
    tableOut.write(
      [
        '',
        `popgate and its peers, same machine, same run, loopback${quick ? ' (--quick)' : ''}`,
        `machine: ${info.cores} cores, ${info.cpu}, ${info.memoryGB} GB, node ${info.node} (${info.platform})`,
        `servers: ${versions}`,
        `runs per workload: ${settings.runs}, alternating between the servers; medians shown`,
        '',
        comparisonTable(result),
        '',
      ].join('\n'),
    );
    if (args.chart) {
      writeFileSync(args.chart, comparisonChart(result, `popgate vs Postfix ${result.versions.Postfix?.split(' ')[1] ?? ''}, Dovecot ${result.versions.Dovecot?.split(' ')[1] ?? ''}, Haraka ${result.versions.Haraka?.split(' ')[1] ?? ''} — ${info.cores} cores, loopback`));
      progress(`chart: ${args.chart}`);
    }
    // The comparison table alone (docs/benchmarks.md's main table): the scale-out, filtering
    // and web rows take as long again and have runs of their own (--only).
    if (!args['comparison-only']) {
      progress('scale-out and filtering rows (workers, cluster, filtering on and off; Postfix again beside the cluster and the filtering):');
      await runScaleRows(true);
    }
    if (rows.length > 0 || skipped.length > 0) printTable(info, `scale-out, same run${quick ? ' (--quick)' : ''}`, undefined);
    if (args.json) process.stdout.write(JSON.stringify({ machine: info, quick, ...result, scaleOut: { results: rows, skipped } }, null, 2) + '\n');
    return;
  }
  let messageBytes: number | undefined;
  let target: string;
  let comparison: ComparisonResult | undefined;
  const hostPort = (flag: string, text: string): Endpoint => {
    const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
    if (!match) throw new Error(`${flag} must be host:port, not ${text}`);
    return { host: match[1], port: Number(match[2]) };
  };
  if (args.target || args['smtp-target']) {
    const users = (args.user ?? []).flatMap((u) => u.split(',')).filter((u) => u !== '');
    const credentials = users.length > 0 && args.password !== undefined ? { mailboxes: users, logins: users, password: args.password } : undefined;
    const pop3 = args.target ? hostPort('--target', args.target) : undefined;
    target = `against ${[args.target, args['smtp-target']].filter(Boolean).join(' and ')}`;
    if (pop3) {
      progress(`target: ${args.target}${credentials ? ` as ${users.join(', ')}` : ' (no --user/--password: connection workloads only)'}`);
      await runWorkloads(pop3, credentials, args.messages !== undefined || quick ? settings.messagesPerMailbox : undefined);
    }
    if (args['smtp-target'] && (args['smtp-to'] || !args['idle-connections'])) {
      const to = args['smtp-to'];
      if (!to) throw new Error('--smtp-target needs --smtp-to ADDRESS: a mailbox on that server for the test messages');
      const smtp = hostPort('--smtp-target', args['smtp-target']);
      // The lag samples log in from 127.0.0.50 and up, so both servers must be on loopback.
      const loopback = (e: Endpoint | undefined) => e !== undefined && /^127\./.test(e.host);
      progress(`SMTP target: ${args['smtp-target']}, messages to ${to} (not checked on disk: the benchmark cannot read that mailbox)`);
      skipped.push('SMTP accept: the delivered messages are not checked in the mailbox (only the 250s), as the server is not the benchmark\'s own');
      await runSmtpWorkloads({
        smtp,
        recipient: () => to,
        from: args['smtp-from'] ?? INBOUND_SENDER,
        lag: loopback(pop3) && loopback(smtp) && credentials ? { pop3: pop3!, user: users[0], password: credentials.password } : undefined,
      });
    }
    if (args.large && pop3 && credentials) {
      const result = await runLargeMailbox({ endpoint: pop3, user: users[0], password: credentials.password, runs: settings.runs + 1 });
      progress(`  large mailbox (${result.messages} messages): login + STAT ${result.loginStatMs.map(fmt).join(' / ')} ms, UIDL ${result.uidlMs.map(fmt).join(' / ')} ms`);
      addRow(`mailbox of ${result.messages} messages: login + STAT, first login`, 'ms', result.loginStatMs.slice(0, 1));
      addRow(`mailbox of ${result.messages} messages: login + STAT, later logins`, 'ms', result.loginStatMs.slice(1));
      addRow(`mailbox of ${result.messages} messages: UIDL`, 'ms', result.uidlMs.slice(1));
    }
    if (args['idle-connections']) {
      const connections = positive('idle-connections', args['idle-connections'], 1000);
      const smtp = args['smtp-target'] ? hostPort('--smtp-target', args['smtp-target']) : undefined;
      const serverPid = args['server-pid'] ? positive('server-pid', args['server-pid'], 1) : undefined;
      const result = await runIdle({ smtp, pop3, connections, pids: () => (serverPid ? processTree(serverPid) : []), perSource: 20, progress });
      const memory = serverPid ? `, server RSS ${fmt(result.loaded.rssBytes / 1e6)} MB (before: ${fmt(result.baseline.rssBytes / 1e6)} MB)` : ' (give --server-pid PID for its memory)';
      progress(`  idle: held ${result.held.smtp} SMTP + ${result.held.pop3} POP3, ${result.failed} failed, still open at the end ${result.stillOpen}${memory}`);
      addRow(`idle ${connections} per protocol: new session greeting`, 'ms', [result.greeting.p50]);
      if (serverPid) addRow(`idle ${connections} per protocol: server RSS`, 'MB', [result.loaded.rssBytes / 1e6]);
    }
  } else if (args.only !== undefined && matchesOnly(args.only, 'import') && !['pop3', 'smtp', 'retr', 'queue', 'large', 'idle', 'relay', 'submission', 'login'].some((word) => matchesOnly(args.only, word))) {
    // Only the import rows: no server and no pre-filled mailboxes needed.
    target = `popgate import dovecot as a child process${quick ? ' (--quick)' : ''}`;
    await runImportWorkloads();
  } else {
    const { endpoint, configPath, messageBytes: bytes } = await setUp();
    messageBytes = bytes;
    server = await PopgateChild.start({ configPath, endpoint, cpuProfDir: args['cpu-prof'] });
    progress(`server: popgate pid ${server.pid} on ${endpoint.host}:${endpoint.port}${args['cpu-prof'] ? ` (CPU profile to ${args['cpu-prof']})` : ''}`);
    target = `popgate child process on ${endpoint.host}:${endpoint.port} (SMTP ${smtpEndpoint!.port})${quick ? ' (--quick)' : ''}`;
    await runWorkloads(endpoint, {
      mailboxes: Array.from({ length: settings.mailboxes }, (_, i) => mailboxUser(i)),
      logins: Array.from({ length: settings.concurrentClients }, (_, i) => loginUser(i)),
      password: PASSWORD,
    });
    const mailstore = new MaildirStore(dataDir!, HOSTNAME);
    await runSmtpWorkloads({
      smtp: smtpEndpoint!,
      recipient: (row) => smtpSinks[row],
      from: INBOUND_SENDER,
      localAddress: ACCEPT_SOURCE,
      maildirOf: (address) => mailstore.pathOf(address),
      lag: { pop3: endpoint, user: RELAY_USER, password: PASSWORD },
    });
    await measureSubmission();
    await stopServer();
    progress('outbound queue:');
    await runQueueWorkloads();
    progress('moving in:');
    await runImportWorkloads();
    if (selected('quota')) {
      progress('quota accounting (two fresh popgate children):');
      const quota = await runQuotaRows({ runs: settings.runs, messages: smtpSettings.smallMessages, progress, cpuProfDir: args['cpu-prof'] });
      addRow('SMTP accept 1 KB, 10 clients, quotas off', 'msg/s', quota.off, undefined, { serverCpuUsPerMessage: quota.cpuOff });
      addRow('SMTP accept 1 KB, 10 clients, quotas on (1 GB)', 'msg/s', quota.on, undefined, { serverCpuUsPerMessage: quota.cpuOn });
    }
    if (server.child.exitCode !== 0) throw new Error(`popgate exited with ${server.child.exitCode ?? server.child.signalCode} on SIGTERM:\n${server.output}`);
    if (server.output.trim() !== '') progress(`server output (warnings and errors):\n${server.output.trim()}`);
    progress('large mailbox and idle connections (a fresh popgate child):');
    comparison = await runComparisonRows(false);
    await runScaleRows(false);
  }
  printTable(info, target, messageBytes);
  if (comparison && comparison.rows.length > 0) tableOut.write(`\n${comparisonTable(comparison)}\n`);
  if (args.json) {
    process.stdout.write(
      JSON.stringify({ machine: info, target, quick, settings: { ...settings, smtp: smtpSettings }, messageBytes, results: rows, skipped, largeAndIdle: comparison }, null, 2) + '\n',
    );
  }
}

try {
  await main();
} catch (error) {
  // After Ctrl-C the workloads fail as the server goes away; the signal handler exits.
  if (interrupted) await new Promise(() => {});
  process.stderr.write(`bench: ${(error as Error).stack ?? error}\n`);
  if (server && server.output.trim() !== '') process.stderr.write(`server output:\n${server.output.trim()}\n`);
  await stopServer().catch(() => {});
  cleanupSync();
  process.exit(1);
}
cleanupSync();
