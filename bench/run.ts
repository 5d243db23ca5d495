import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'smol-toml';
import { SqliteAccountStore } from '../src/accounts/sqlite.ts';
import { openDatabase } from '../src/db/sqlite.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { runConnects, runLogins, runRetr, type Endpoint, type SessionResult, type RetrResult } from './pop3-load.ts';
import { median, Samples, summarize } from './stats.ts';
import { makeSmtpMessage, relayLag, runAccept } from './smtp-load.ts';

// `npm run bench`: popgate's POP3 performance on this machine. Starts popgate as a child
// process (so the load generator does not share its event loop) on a temporary data dir with
// pre-filled mailboxes, runs each workload several times and prints the medians.
//
//   npm run bench                      full run (3 runs of each workload)
//   npm run bench -- --quick           smoke test: small mailboxes, 1 run
//   npm run bench -- --target mail.example.net:110 --user a@example.net --password secret
//                                      the POP3 generator against a running server
//   npm run -s bench -- --json > results.json
//                                      JSON on stdout, the table on stderr
//
// Options: --runs N, --pipeline N (RETR depth of the main rows, default 1), --messages N
// (per mailbox), --logins N, --only TEXT (just the workloads whose name contains TEXT, e.g.
// "retr" or "login"), --cpu-prof DIR (profile the popgate child with node --cpu-prof).

const USAGE = `usage: node bench/run.ts [--quick] [--json] [--runs N] [--pipeline N] [--messages N] [--logins N]
                         [--only TEXT] [--cpu-prof DIR] [--target HOST:PORT [--user ADDRESS ...] [--password PASSWORD]]`;

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
    'cpu-prof': { type: 'string' },
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
  smtpSmall: quick ? 200 : 2000,
  smtpLarge: quick ? 30 : 300,
  relayLagSamples: quick ? 5 : 30,
};

// The table goes to stdout, unless the JSON does; progress always goes to stderr.
const tableOut = args.json ? process.stderr : process.stdout;
const progress = (text: string) => process.stderr.write(`${text}\n`);

const HOSTNAME = 'bench.example.test';
const PASSWORD = 'bench-password-1';
const mailboxUser = (i: number) => `bench${String(i + 1).padStart(2, '0')}@${HOSTNAME}`;
const loginUser = (i: number) => `login${String(i + 1).padStart(2, '0')}@${HOSTNAME}`;
const SINK = `sink@${HOSTNAME}`;
let smtpEndpoint: Endpoint | undefined;

// --- cleanup: the child server and the temporary data dir go away whatever happens ---

let server: ChildProcess | undefined;
let dataDir: string | undefined;
let serverOutput = '';

function cleanupSync(): void {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  dataDir = undefined;
}

async function stopServer(): Promise<void> {
  const child = server;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
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

/** A small deterministic PRNG (mulberry32), so every run delivers the same mail. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her ' +
  'she there been one all we their has would when if so no will can more out up about into them some could time only new ' +
  'mailbox server message delivery account password invoice meeting report quarter budget schedule customer network ' +
  'please regards thanks attached following update review tomorrow morning afternoon office project deadline'
).split(' ');

/** One RFC 5322 message of about `size` octets: CRLF line ends, and some lines beginning with ".". */
function makeMessage(random: () => number, index: number, to: string, size: number): Buffer {
  const word = () => WORDS[Math.floor(random() * WORDS.length)];
  const date = new Date(Date.UTC(2025, 0, 1) + index * 61_000).toUTCString().replace('GMT', '+0000');
  const lines = [
    `Return-Path: <sender${index % 97}@example.net>`,
    `Received: from client.example.net (client.example.net [192.0.2.${index % 250}])`,
    `\tby mx.example.net with ESMTPS id ${index.toString(36)}x${Math.floor(random() * 1e9).toString(36)}`,
    `\tfor <${to}>; ${date}`,
    `From: Sender ${index % 97} <sender${index % 97}@example.net>`,
    `To: <${to}>`,
    `Subject: ${word()} ${word()} ${word()} #${index}`,
    `Date: ${date}`,
    `Message-ID: <${index}.${Math.floor(random() * 1e12).toString(36)}@example.net>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
  ];
  let length = lines.reduce((sum, line) => sum + line.length + 2, 0);
  const target = size * (0.9 + random() * 0.2);
  while (length < target) {
    let line: string;
    const kind = random();
    if (kind < 0.005) line = '.'; // a line of one dot: stuffed to ".." on the wire
    else if (kind < 0.02) line = `.${word()} ${word()} ${word()}`; // leading dot, e.g. ".htaccess" or "...and so on"
    else if (kind < 0.07) line = '';
    else {
      line = word();
      while (line.length < 60 + random() * 12) line += ` ${word()}`;
    }
    lines.push(line);
    length += line.length + 2;
  }
  return Buffer.from(lines.join('\r\n') + '\r\n');
}

async function setUp(): Promise<{ endpoint: Endpoint; configPath: string; messageBytes: number }> {
  dataDir = mkdtempSync(join(tmpdir(), 'popgate-bench-'));
  const port = await freePort();
  const smtpPort = await freePort();
  const configPath = join(dataDir, 'popgate.toml');
  const config = {
    hostname: HOSTNAME,
    data_dir: dataDir,
    shutdown_grace: '1s',
    log: { level: 'warn' },
    pop3: { listen: [`127.0.0.1:${port}`] },
    pop3s: { listen: [] },
    // Limits opened up so the benchmark measures the server, not its abuse protection.
    smtp: { listen: [`127.0.0.1:${smtpPort}`], max_connections_per_ip: 1000, error_delay: '0ms' },
    pop_before_smtp: { never_grant: [] },
    submission: { listen: [] },
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
      SINK,
    ];
    for (const user of users) {
      await accounts.addUser(user, PASSWORD);
      await mailstore.ensure(user);
    }
  } finally {
    await accounts.close();
  }

  // deliver() syncs every file and directory; several at a time keep the disk busy.
  const total = settings.mailboxes * settings.messagesPerMailbox;
  progress(`setup: ${settings.mailboxes} mailboxes x ${settings.messagesPerMailbox} messages of ~${settings.messageSize / 1024} KB in ${dataDir}`);
  let next = 0;
  let messageBytes = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (;;) {
        const n = next++;
        if (n >= total) return;
        // Mailbox-major order, so message numbers follow delivery order within each mailbox.
        const mailbox = n % settings.mailboxes;
        const index = Math.floor(n / settings.mailboxes);
        const message = makeMessage(prng(index * 1000 + mailbox + 1), index, mailboxUser(mailbox), settings.messageSize);
        messageBytes += message.length;
        await mailstore.deliver(mailboxUser(mailbox), message);
      }
    }),
  );
  progress(`setup: ${total} messages (${(messageBytes / 1e6).toFixed(1)} MB) delivered in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  smtpEndpoint = { host: '127.0.0.1', port: smtpPort };
  return { endpoint: { host: '127.0.0.1', port }, configPath, messageBytes };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function startServer(configPath: string, endpoint: Endpoint): Promise<void> {
  const root = resolve(import.meta.dirname, '..');
  const nodeFlags = args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${resolve(args['cpu-prof'])}`] : [];
  const child = spawn(process.execPath, [...nodeFlags, join(root, 'src/cli/main.ts'), 'serve', '--config', configPath], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server = child;
  const keep = (chunk: Buffer) => {
    serverOutput = (serverOutput + chunk.toString('utf8')).slice(-8000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`popgate exited during start (${child.exitCode ?? child.signalCode}):\n${serverOutput}`);
    if (await accepts(endpoint)) break;
    if (Date.now() > deadline) throw new Error(`popgate did not accept connections on ${endpoint.host}:${endpoint.port} within 30 s:\n${serverOutput}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  progress(`server: popgate pid ${child.pid} on ${endpoint.host}:${endpoint.port}${args['cpu-prof'] ? ` (CPU profile to ${args['cpu-prof']})` : ''}`);
}

function accepts(endpoint: Endpoint): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: endpoint.host, port: endpoint.port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// --- workloads and results ---

interface Row {
  workload: string;
  unit: string;
  median: number;
  runs: number[];
  /** Latency percentiles in ms over the samples of all runs; absent for derived rows (MB/s). */
  latency?: { p50: number; p99: number; max: number; count: number };
}

const rows: Row[] = [];
const skipped: string[] = [];

function addRow(workload: string, unit: string, runs: number[], samples?: Samples): void {
  const row: Row = { workload, unit, median: median(runs), runs };
  if (samples) row.latency = summarize(samples.values());
  rows.push(row);
}

const selected = (label: string) => args.only === undefined || label.toLowerCase().includes(args.only.toLowerCase());

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
  for (let i = 0; i < settings.runs; i++) {
    const result = await run();
    messages.push(result.messagesPerSecond);
    megabytes.push(result.megabytesPerSecond);
    samples.add(result.latency);
    progress(
      `  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.messagesPerSecond)} msg/s, ${fmt(result.megabytesPerSecond)} MB/s ` +
        `(${result.messages} messages, ${(result.octets / 1e6).toFixed(1)} MB verified, in ${fmt(result.elapsedMs / 1000)} s)`,
    );
  }
  addRow(label, 'msg/s', messages, samples);
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

async function runSmtpWorkloads(smtp: Endpoint, pop3: Endpoint): Promise<void> {
  const clients = settings.concurrentClients;
  let expected = 0;
  const accept = async (label: string, size: number, total: number, pipelining: boolean) => {
    if (!selected(label)) return;
    const message = makeSmtpMessage(size, `sender@remote.example`, SINK);
    const perSecond: number[] = [];
    const samples = new Samples();
    for (let i = 0; i < settings.runs; i++) {
      const result = await runAccept({ endpoint: smtp, clients, total, message, from: 'sender@remote.example', to: SINK, pipelining });
      expected += result.accepted;
      perSecond.push(result.perSecond);
      for (const ms of result.latency) samples.push(ms);
      progress(`  ${label}, run ${i + 1}/${settings.runs}: ${fmt(result.perSecond)} msg/s (${result.accepted} in ${fmt(result.elapsedMs / 1000)} s)`);
    }
    addRow(label, 'msg/s', perSecond, samples);
  };
  await accept(`SMTP accept 1 KB, ${clients} clients, fsync, no pipelining`, 1024, settings.smtpSmall, false);
  await accept(`SMTP accept 1 KB, ${clients} clients, fsync, pipelining`, 1024, settings.smtpSmall, true);
  await accept(`SMTP accept 100 KB, ${clients} clients, fsync, pipelining`, 100 * 1024, settings.smtpLarge, true);
  // Every 250 must be a file in the Maildir: a benchmark of lost mail would be worthless.
  const stored = readdirSync(join(dataDir!, 'mail', HOSTNAME, 'sink', 'new')).length;
  if (stored !== expected) throw new Error(`SMTP: ${expected} messages accepted but ${stored} in the Maildir`);

  const lagLabel = 'POP3 login to relay permitted (lag)';
  if (!selected(lagLabel)) return;
  const lags: number[] = [];
  let maxTries = 0;
  for (let i = 0; i < settings.relayLagSamples; i++) {
    const { lagMs, tries } = await relayLag({ pop3, smtp, user: loginUser(0), password: PASSWORD, source: `127.0.${1 + Math.floor(i / 200)}.${50 + (i % 200)}` });
    lags.push(lagMs);
    maxTries = Math.max(maxTries, tries);
  }
  progress(`  ${lagLabel}: ${lags.length} samples, at most ${maxTries} RCPT attempt(s) needed`);
  const samples = new Samples();
  for (const ms of lags) samples.push(ms);
  addRow(`${lagLabel}, RCPT tries needed: ${maxTries}`, 'ms', [median(lags)], samples);
}

// --- output ---

function fmt(value: number): string {
  if (!Number.isFinite(value)) return '-';
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

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
    `popgate POP3 benchmark — ${target}`,
    `machine: ${info.cores} cores, ${info.cpu}, ${info.memoryGB} GB, node ${info.node} (${info.platform})`,
    `runs per workload: ${settings.runs} (median shown; p50/p99 are latencies over the samples of all runs)` +
      (messageBytes !== undefined
        ? `; mailboxes: ${settings.messagesPerMailbox} messages, ${(messageBytes / (settings.mailboxes * settings.messagesPerMailbox) / 1000).toFixed(1)} kB average`
        : ''),
    '',
    line(header),
    '|' + widths.map((w, i) => (numeric.has(i) ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|',
    ...body.map(line),
    '',
    'login = connect, greeting, USER, PASS, QUIT, latency per login (popgate checks passwords with scrypt, N=2^14).',
    'RETR = every message of a mailbox, octets checked against LIST; timed from all clients logged in to the last reply;',
    '       latency per RETR (with pipelining it includes the wait behind earlier RETRs). MB = 10^6 message octets.',
  ];
  for (const note of skipped) out.push(`skipped: ${note}`);
  tableOut.write(out.join('\n') + '\n');
}

// --- main ---

async function main(): Promise<void> {
  const info = machine();
  let messageBytes: number | undefined;
  let target: string;
  if (args.target) {
    const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(args.target);
    if (!match) throw new Error(`--target must be host:port, not ${args.target}`);
    const endpoint = { host: match[1], port: Number(match[2]) };
    const users = (args.user ?? []).flatMap((u) => u.split(',')).filter((u) => u !== '');
    const credentials = users.length > 0 && args.password !== undefined ? { mailboxes: users, logins: users, password: args.password } : undefined;
    target = `against ${args.target}`;
    progress(`target: ${args.target}${credentials ? ` as ${users.join(', ')}` : ' (no --user/--password: connection workloads only)'}`);
    await runWorkloads(endpoint, credentials, args.messages !== undefined || quick ? settings.messagesPerMailbox : undefined);
  } else {
    const { endpoint, configPath, messageBytes: bytes } = await setUp();
    messageBytes = bytes;
    await startServer(configPath, endpoint);
    target = `popgate child process on ${endpoint.host}:${endpoint.port}${quick ? ' (--quick)' : ''}`;
    await runWorkloads(endpoint, {
      mailboxes: Array.from({ length: settings.mailboxes }, (_, i) => mailboxUser(i)),
      logins: Array.from({ length: settings.concurrentClients }, (_, i) => loginUser(i)),
      password: PASSWORD,
    });
    await runSmtpWorkloads(smtpEndpoint!, endpoint);
    await stopServer();
    if (server && server.exitCode !== 0) throw new Error(`popgate exited with ${server.exitCode ?? server.signalCode} on SIGTERM:\n${serverOutput}`);
    if (serverOutput.trim() !== '') progress(`server output (warnings and errors):\n${serverOutput.trim()}`);
  }
  printTable(info, target, messageBytes);
  if (args.json) {
    process.stdout.write(
      JSON.stringify({ machine: info, target, quick, settings, messageBytes, results: rows, skipped }, null, 2) + '\n',
    );
  }
}

try {
  await main();
} catch (error) {
  // After Ctrl-C the workloads fail as the server goes away; the signal handler exits.
  if (interrupted) await new Promise(() => {});
  process.stderr.write(`bench: ${(error as Error).stack ?? error}\n`);
  if (serverOutput.trim() !== '') process.stderr.write(`server output:\n${serverOutput.trim()}\n`);
  await stopServer().catch(() => {});
  cleanupSync();
  process.exit(1);
}
cleanupSync();
