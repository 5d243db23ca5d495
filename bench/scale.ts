import { availableParallelism, tmpdir } from 'node:os';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'smol-toml';
import { LocalAccountEvents } from '../src/accounts/events.ts';
import { silentLogger } from '../src/log/logger.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { PostgresAccountStore } from '../src/postgres/accounts.ts';
import { migrate } from '../src/postgres/migrate.ts';
import { createPool } from '../src/postgres/pool.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { findEngine, startPostgres, startRedis, type RunningEngine } from '../test/helpers/engines.ts';
import { fillMailboxes } from './messages.ts';
import { startPostfix, type RunningPeer } from './peers/index.ts';
import { runLogins, runRetr, type Endpoint } from './pop3-load.ts';
import { freePort, PopgateChild } from './popgate-server.ts';
import { cpuBetween, cpuOfTrees, diskFlushes, machineCpu, type CpuSnapshot, type DiskFlushes, type MachineCpu } from './proc.ts';
import { MessageSet, relayLag, runAccept, verifyMaildirDelivery, type AcceptMessages } from './smtp-load.ts';
import { fmt, matchesOnly, median, Samples, summarize, type LatencySummary } from './stats.ts';

// The scale-out rows of `npm run bench`: what more processes and more machines buy.
//
// - workers: popgate with `[server] workers = 2` against `workers = 1` on this machine, POP3
//   RETR of 10 KB messages and SMTP accept of 1 KB messages, 10 clients each.
// - cluster: two popgate nodes (127.0.1.1 and 127.0.1.2, one process each) sharing a private
//   redis-server and PostgreSQL started here and one data folder, against one embedded node
//   (SQLite, one process): SMTP accept 1 KB, POP3 login and POP3 RETR 10 KB with 10 clients
//   spread over both nodes; and the relay lag across nodes, POP3 "+OK" on node A to the first
//   250 to RCPT TO a remote address on node B from the same client address. With --peers,
//   Postfix's 1 KB accept is measured again here, alternating with the cluster, for the ratio.
//
// Every configuration runs at once on its own data (the same mailboxes, copied), and each
// measurement alternates between them run after run, the order reversed every other run
// (A B, B A, ...), so a noisy neighbour or a slow drift hurts both alike. A figure is the median
// of the runs; a ratio is the median of the per-run ratios (each pair measured back to back).
//
// What bounds a figure is read from /proc around each run (bench/proc.ts): the CPU time of
// every popgate process (primary and workers, or each node), of redis-server and PostgreSQL
// (the postmaster and its backends), of the load generator (this process) and of the whole
// machine, and for SMTP the flushes of the disk under the data folder (each fsync ends in
// one). Each row's note gives them, with the reading they suggest.

export interface ScaleOptions {
  quick: boolean;
  /** Alternating runs per measurement, at least (RETR runs are short and get more). */
  runs: number;
  only?: string;
  /** `[server] workers` of both popgates of the filtering row (1 unless --filtering-workers). */
  filteringWorkers?: number;
  /** Postfix beside the cluster's SMTP accept (installed by the --peers run before). */
  peers: boolean;
  /** 10 KB messages in each of the ten RETR mailboxes. */
  messagesPerMailbox: number;
  /** 1 KB messages per SMTP accept run. */
  smtpMessages: number;
  /** Unmeasured 1 KB messages per configuration before its first SMTP run. */
  smtpWarmUp: number;
  /** Logins per login run. */
  logins: number;
  /** Relay-lag samples per run and configuration. */
  lagSamples: number;
  /** A CPU profile of every popgate child (node --cpu-prof) into this folder. */
  cpuProfDir?: string;
  progress: (text: string) => void;
}

export interface ScaleRow {
  workload: string;
  unit: string;
  /** The figure of each run, in the order measured. */
  runs: number[];
  latency?: LatencySummary;
  /** What the figure is and what bounds it. */
  note: string;
  details?: Record<string, unknown>;
}

export interface ScaleResult {
  rows: ScaleRow[];
  /** Rows that could not run here, and why. */
  skipped: string[];
}

export const HOSTNAME = 'bench.example.test';
export const PASSWORD = 'bench-password-1';
export const CLIENTS = 10;
export const MAILBOXES = 10;
const RETR_SIZE = 10 * 1024;
export const ACCEPT_SIZE = 1024;
export const mailboxUser = (i: number) => `scale-box${String(i + 1).padStart(2, '0')}@${HOSTNAME}`;
const loginUser = (i: number) => `scale-login${String(i + 1).padStart(2, '0')}@${HOSTNAME}`;
const RELAY_USER = `scale-relay@${HOSTNAME}`;
export const WARM_SINK = `scale-warm@${HOSTNAME}`;
export const ACCEPT_SINK = `scale-1k@${HOSTNAME}`;
const INBOUND_SENDER = 'sender@example.org';
/** Only RCPT is sent to it, never DATA. */
const REMOTE_RECIPIENT = 'relay-probe@example.com';
/** Accept traffic comes from an address without a POP-before-SMTP grant, as MX traffic does (see bench/run.ts). */
export const ACCEPT_SOURCE = '127.0.0.2';
/** The cluster's nodes, as two machines would be. */
const NODE_ADDRESSES = ['127.0.1.1', '127.0.1.2'] as const;
/** Between runs, so what one configuration does after its sessions end does not land in the next one's run. */
const SETTLE_MS = 250;
const RATIO_TARGETS = { workersRetr: 1.3, clusterOverPostfix: 2 };
const LAG_TARGET_MS = 5;

const WORKLOADS = {
  retr: `POP3 RETR 10 KB, ${CLIENTS} clients`,
  accept: `SMTP accept 1 KB, ${CLIENTS} clients, no pipelining`,
  login: `POP3 login (USER/PASS), ${CLIENTS} clients`,
  lag: 'relay lag, POP3 +OK to SMTP RCPT 250',
};
/** The rows' names, for the table and for --only (each contains "workers" or "cluster"). */
const LABELS = {
  workersOne: (workload: string) => `workers = 1: ${workload}`,
  workersTwo: (workload: string) => `workers = 2: ${workload}`,
  workersRatio: (workload: string) => `workers = 2 / workers = 1: ${workload}`,
  single: (workload: string) => `cluster baseline, 1 node: ${workload}`,
  cluster: (workload: string) => `cluster of 2 nodes: ${workload}`,
  clusterRatio: (workload: string) => `cluster of 2 nodes / 1 node: ${workload}`,
  peer: (peer: string, workload: string) => `cluster peer, ${peer}: ${workload}`,
  overPeer: (workload: string) => `cluster of 2 nodes / Postfix: ${workload}`,
  clusterLag: 'cluster relay lag, node A to node B: POP3 +OK to SMTP RCPT 250',
};

// --- configurations ---

/** A group of processes whose CPU time is reported together: popgate's own, or an engine's, or a peer's. */
interface ProcessGroup {
  /** "popgate", "node A", "redis-server", "postgres", "Postfix". */
  name: string;
  role: 'popgate' | 'engine' | 'peer';
  /** The roots of the group's process trees, read at each snapshot. */
  roots(): number[];
}

/** One server set-up under test, running for the whole measurement. */
export interface Configuration {
  /** As the rows name it: "workers = 2", "cluster of 2 nodes", "Postfix 3.7.11". */
  name: string;
  pop3: Endpoint[];
  smtp: Endpoint[];
  groups: ProcessGroup[];
  /** The folder whose disk's flushes are counted. */
  dataDir: string;
  /** A server that delivers after its 250 (Postfix): waits until the accepted messages are in the Maildir, as part of the run. */
  awaitDelivery?(address: string, accepted: number): Promise<void>;
  /** After a run, outside its readings: the accepted messages are in the Maildir (popgate: each once, byte for byte). */
  verify(address: string, messages: AcceptMessages, accepted: number): void;
  /** Fresh client addresses for the relay-lag samples of this configuration. */
  lagSource(): string;
}

/** The popgate children of a section, so that whatever happens none outlives it. */
export class Children {
  readonly #running = new Map<PopgateChild, string>();
  readonly #cpuProfDir: string | undefined;

  constructor(cpuProfDir?: string) {
    this.#cpuProfDir = cpuProfDir;
  }

  async start(name: string, configPath: string, endpoint: Endpoint): Promise<PopgateChild> {
    const server = await PopgateChild.start({ configPath, endpoint, cpuProfDir: this.#cpuProfDir });
    this.#running.set(server, name);
    return server;
  }

  /** SIGTERM, and the exit code checked: a popgate that does not stop cleanly is worth knowing about. */
  async stop(server: PopgateChild): Promise<void> {
    const name = this.#running.get(server) ?? 'popgate';
    this.#running.delete(server);
    const exit = await server.stop();
    if (exit !== 0) throw new Error(`${name}: popgate exited with ${exit} on SIGTERM:\n${server.output}`);
  }

  /** After a failure: stops the rest, and shows what they printed. */
  async stopAll(progress: (text: string) => void): Promise<void> {
    for (const [server, name] of [...this.#running]) {
      this.#running.delete(server);
      await server.stop();
      if (server.output.trim() !== '') progress(`${name}: popgate output (warnings and errors):\n${server.output.trim()}`);
    }
  }

  killSync(): void {
    for (const server of this.#running.keys()) server.killSync();
  }
}

/** The popgate settings every configuration shares: the limits opened as in bench/run.ts. */
function popgateConfig(dataDir: string, host: string, ports: { pop3: number; smtp: number }, extra: Record<string, unknown>): string {
  return (
    stringify({
      hostname: HOSTNAME,
      data_dir: dataDir,
      shutdown_grace: '1s',
      log: { level: 'warn' },
      // Scale-out is measured on the SMTP path of the other rows, without inbound filtering
      // (its cost is the filtering row's, bench/filter.ts).
      filter: { enabled: false },
      ...extra,
      pop3: { listen: [`${host}:${ports.pop3}`], max_connection_rate_per_ip: 0 },
      pop3s: { listen: [] },
      // error_delay 0: a relay attempt refused before the grant arrives must not be slowed, or
      // the lag would measure the delay rather than the grant.
      smtp: { listen: [`${host}:${ports.smtp}`], max_connections_per_ip: 10_000, max_connection_rate_per_ip: 0, max_errors: 1000, error_delay: '0ms' },
      submission: { listen: [] },
      submissions: { listen: [] },
    }) + '\n'
  );
}

/** Fresh loopback addresses from 127.<block>.0.1 on, one per relay-lag sample (each starts without a grant). */
function lagSources(block: number): () => string {
  let next = 0;
  return () => {
    const n = next++;
    if (n >= 250 * 250) throw new Error('more relay-lag samples than fresh source addresses');
    return `127.${block}.${Math.floor(n / 250)}.${1 + (n % 250)}`;
  };
}

/** Checks an accept run against popgate's Maildir (verifyMaildirDelivery), remembering the files seen. */
function maildirChecker(maildir: (address: string) => string, checkAdded?: (added: Buffer, file: string) => void): Configuration['verify'] {
  const checked = new Map<string, Set<string>>();
  return (address, messages, accepted) => {
    const folder = maildir(address);
    const seen = checked.get(folder) ?? new Set<string>();
    checked.set(folder, seen);
    verifyMaildirDelivery(folder, messages, accepted, seen, checkAdded);
  };
}

/**
 * One popgate node on 127.0.0.1 with `workers` processes; `extra` adds or replaces sections of
 * its configuration, `checkAdded` checks the headers it puts on each accepted message.
 */
export async function startSingle(
  children: Children,
  name: string,
  dataDir: string,
  workers: number,
  lagBlock: number,
  extra: { config?: Record<string, unknown>; checkAdded?: (added: Buffer, file: string) => void } = {},
): Promise<{ config: Configuration; server: PopgateChild }> {
  const ports = { pop3: await freePort(), smtp: await freePort() };
  const configPath = join(dataDir, 'popgate.toml');
  writeFileSync(configPath, popgateConfig(dataDir, '127.0.0.1', ports, { server: { workers }, ...extra.config }));
  const pop3 = { host: '127.0.0.1', port: ports.pop3 };
  const server = await children.start(name, configPath, pop3);
  const mailstore = new MaildirStore(dataDir, HOSTNAME);
  const maildir = (address: string) => mailstore.pathOf(address);
  return {
    server,
    config: {
      name,
      pop3: [pop3],
      smtp: [{ host: '127.0.0.1', port: ports.smtp }],
      groups: [{ name: 'popgate', role: 'popgate', roots: () => [server.pid] }],
      dataDir,
      verify: maildirChecker(maildir, extra.checkAdded),
      lagSource: lagSources(lagBlock),
    },
  };
}

// --- accounts and mail ---

const allUsers = () => [
  ...Array.from({ length: MAILBOXES }, (_, i) => mailboxUser(i)),
  ...Array.from({ length: CLIENTS }, (_, i) => loginUser(i)),
  RELAY_USER,
  WARM_SINK,
  ACCEPT_SINK,
];

/** The embedded node's data: SQLite accounts, every user's Maildir, the RETR mailboxes filled. */
export async function prepareSingleData(dataDir: string, options: Pick<ScaleOptions, 'messagesPerMailbox' | 'progress'>, fillRetr: boolean): Promise<void> {
  const accounts = new SqliteAccountStore(openDatabase(dataDir), true);
  const mailstore = new MaildirStore(dataDir, HOSTNAME);
  try {
    await accounts.addDomain(HOSTNAME);
    for (const user of allUsers()) {
      await accounts.addUser(user, PASSWORD);
      await mailstore.ensure(user);
    }
  } finally {
    await accounts.close();
  }
  if (!fillRetr) return;
  const started = performance.now();
  const boxes = Array.from({ length: MAILBOXES }, (_, i) => mailboxUser(i));
  const octets = await fillMailboxes((user, message) => mailstore.deliver(user, message), boxes, options.messagesPerMailbox, RETR_SIZE);
  options.progress(`  setup: ${MAILBOXES} mailboxes x ${options.messagesPerMailbox} messages (${fmt(octets / 1e6)} MB) in ${fmt((performance.now() - started) / 1000)} s`);
}

/** The cluster's accounts in PostgreSQL (the schema migrated first, as a node would). */
async function prepareClusterAccounts(url: string): Promise<void> {
  const log = silentLogger();
  const pool = createPool(url, log);
  try {
    await migrate(pool);
    const accounts = await PostgresAccountStore.open(pool, { events: new LocalAccountEvents(), log });
    try {
      await accounts.addDomain(HOSTNAME);
      for (const user of allUsers()) await accounts.addUser(user, PASSWORD);
    } finally {
      await accounts.close();
    }
  } finally {
    await pool.end();
  }
}

// --- CPU and disk readings ---

interface Reading {
  at: number;
  groups: Map<string, CpuSnapshot>;
  generator: NodeJS.CpuUsage;
  machine?: MachineCpu;
  flushes?: DiskFlushes;
}

function takeReading(config: Configuration): Reading {
  return {
    at: performance.now(),
    groups: new Map(config.groups.map((group) => [group.name, cpuOfTrees(group.roots())])),
    generator: process.cpuUsage(),
    machine: machineCpu(),
    flushes: diskFlushes(config.dataDir),
  };
}

interface ProcessTotal {
  group: string;
  role: ProcessGroup['role'];
  pid: number;
  /** The group's root (a primary, a node, a postmaster) rather than one of its children. */
  root: boolean;
  seconds: number;
}

/** CPU seconds, flushes and items summed over the runs of one configuration in one measurement. */
class UsageTotals {
  wallSeconds = 0;
  items = 0;
  readonly groupSeconds = new Map<string, number>();
  readonly #groupRoles = new Map<string, ProcessGroup['role']>();
  readonly processes = new Map<string, ProcessTotal>();
  generatorSeconds = 0;
  machineSeconds: number | undefined = 0;
  stealSeconds: number | undefined = 0;
  flushes: number | undefined = 0;
  device: string | undefined;

  add(config: Configuration, before: Reading, after: Reading, items: number): void {
    this.wallSeconds += (after.at - before.at) / 1000;
    this.items += items;
    for (const group of config.groups) {
      const used = cpuBetween(before.groups.get(group.name)!, after.groups.get(group.name)!);
      this.groupSeconds.set(group.name, (this.groupSeconds.get(group.name) ?? 0) + used.total);
      this.#groupRoles.set(group.name, group.role);
      const roots = new Set(group.roots());
      for (const [pid, seconds] of used.perProcess) {
        const key = `${group.name}/${pid}`;
        const total = this.processes.get(key) ?? { group: group.name, role: group.role, pid, root: roots.has(pid), seconds: 0 };
        total.seconds += seconds;
        this.processes.set(key, total);
      }
    }
    this.generatorSeconds += (after.generator.user - before.generator.user + after.generator.system - before.generator.system) / 1e6;
    if (this.machineSeconds !== undefined && before.machine && after.machine) {
      this.machineSeconds += after.machine.busy - before.machine.busy;
      this.stealSeconds! += after.machine.steal - before.machine.steal;
    } else {
      this.machineSeconds = this.stealSeconds = undefined;
    }
    if (this.flushes !== undefined && before.flushes && after.flushes) {
      this.flushes += after.flushes.flushes - before.flushes.flushes;
      this.device = after.flushes.device;
    } else {
      this.flushes = undefined;
    }
  }

  cores(seconds: number): number {
    return this.wallSeconds > 0 ? seconds / this.wallSeconds : NaN;
  }

  /** Microseconds of CPU per item. */
  perItem(seconds: number): number {
    return this.items > 0 ? (seconds * 1e6) / this.items : NaN;
  }

  roleSeconds(role: ProcessGroup['role']): number {
    return [...this.groupSeconds].filter(([name]) => this.#groupRoles.get(name) === role).reduce((sum, [, seconds]) => sum + seconds, 0);
  }
}

const CORES = availableParallelism();

/**
 * popgate's CPU as the note lists it: the total, then each node of a cluster, or the primary
 * and each worker of one node with workers ("primary 0.000, workers 0.61 + 0.58").
 */
function popgateCpu(config: Configuration, totals: UsageTotals): string {
  const groups = config.groups.filter((group) => group.role === 'popgate');
  const total = totals.roleSeconds('popgate');
  if (groups.length > 1) {
    return `popgate ${fmt(totals.cores(total))} (${groups.map((group) => `${group.name} ${fmt(totals.cores(totals.groupSeconds.get(group.name) ?? 0))}`).join(', ')})`;
  }
  const processes = [...totals.processes.values()].filter((p) => p.role === 'popgate');
  const root = processes.find((p) => p.root);
  const workers = processes.filter((p) => !p.root).sort((a, b) => a.pid - b.pid);
  if (workers.length === 0) return `popgate ${fmt(totals.cores(total))}`;
  const each = workers.map((w) => fmt(totals.cores(w.seconds))).join(' + ');
  return `popgate ${fmt(totals.cores(total))} (primary ${fmt(totals.cores(root?.seconds ?? 0))}, ${workers.length === 1 ? 'worker' : 'workers'} ${each})`;
}

/**
 * What the figures suggest bounds a row, from the CPU readings: all cores busy; one process at a
 * full core (a Node process serves its connections on one thread); the disk's flushes while the
 * CPUs have room; or else the round trips of the clients, each waiting for its reply.
 */
function boundOf(totals: UsageTotals, flushesCount: boolean): string {
  const machine = totals.machineSeconds !== undefined ? totals.cores(totals.machineSeconds) : undefined;
  if (machine !== undefined && machine >= 0.85 * CORES) {
    const ours = [...totals.groupSeconds.values()].reduce((a, b) => a + b, 0) + totals.generatorSeconds;
    const others = Math.max(0, machine - totals.cores(ours));
    return `the CPUs: ${fmt(machine)} of ${CORES} cores busy${others >= 0.1 ? `, ${fmt(others)} of them by other processes` : ''}, shared by the server processes and the generator`;
  }
  const candidates = [
    ...[...totals.processes.values()].map((p) => ({ label: p.root ? p.group : `a ${p.group} ${p.role === 'popgate' ? 'worker' : 'child process'}`, seconds: p.seconds })),
    { label: 'the load generator', seconds: totals.generatorSeconds },
  ];
  const busiest = candidates.sort((a, b) => b.seconds - a.seconds)[0];
  if (busiest && totals.cores(busiest.seconds) >= 0.85) {
    return `one core: ${busiest.label} at ${fmt(totals.cores(busiest.seconds))} core (one thread serves all its connections)`;
  }
  const flushes = totals.flushes;
  if (flushesCount && flushes !== undefined && totals.items > 0 && flushes / totals.items >= 0.3) {
    return `the disk's flushes: each message waits for its fsyncs (${fmt(flushes / totals.wallSeconds)} flushes/s) while the CPUs have room`;
  }
  return `waiting, not work: each of the ${CLIENTS} clients waits for its reply (round trips, engine look-ups) while the CPUs have room`;
}

/** The note of a configuration's row: CPU in cores, CPU per item, flushes, and the bound. */
function usageNote(config: Configuration, totals: UsageTotals, item: string, flushesCount: boolean): { note: string; details: Record<string, unknown> } {
  const parts: string[] = [];
  const others = config.groups.filter((group) => group.role !== 'popgate');
  const cpu: string[] = [];
  const popgate = config.groups.some((group) => group.role === 'popgate');
  if (popgate) cpu.push(popgateCpu(config, totals));
  for (const group of others) cpu.push(`${group.name} ${fmt(totals.cores(totals.groupSeconds.get(group.name) ?? 0))}`);
  cpu.push(`generator ${fmt(totals.cores(totals.generatorSeconds))}`);
  const machine = totals.machineSeconds !== undefined ? totals.cores(totals.machineSeconds) : undefined;
  if (machine !== undefined) {
    const ours = [...totals.groupSeconds.values()].reduce((a, b) => a + b, 0) + totals.generatorSeconds;
    const stolen = totals.stealSeconds !== undefined && totals.cores(totals.stealSeconds) >= 0.02 ? `, stolen by the host ${fmt(totals.cores(totals.stealSeconds))}` : '';
    cpu.push(`machine ${fmt(machine)} of ${CORES} (other processes ${fmt(Math.max(0, machine - totals.cores(ours)))}${stolen})`);
  }
  parts.push(`CPU in cores: ${cpu.join(', ')}`);
  const perItem = [
    ...(popgate ? [`popgate ${fmt(totals.perItem(totals.roleSeconds('popgate')))}`] : []),
    ...others.map((group) => `${group.name} ${fmt(totals.perItem(totals.groupSeconds.get(group.name) ?? 0))}`),
  ];
  parts.push(`CPU µs per ${item}: ${perItem.join(', ')}${others.some((group) => group.role === 'engine') ? " (the engines' background work included)" : ''}`);
  const flushes = totals.flushes;
  if (flushesCount && flushes !== undefined) {
    parts.push(`disk flushes (${totals.device}, all processes): ${fmt(flushes / totals.wallSeconds)}/s, ${fmt(flushes / totals.items)} per ${item}`);
  }
  const bound = boundOf(totals, flushesCount);
  parts.push(`bound: ${bound}`);
  const details: Record<string, unknown> = {
    configuration: config.name,
    items: totals.items,
    seconds: totals.wallSeconds,
    popgateCpuUsPerItem: totals.perItem(totals.roleSeconds('popgate')),
    cpuCores: Object.fromEntries([...totals.groupSeconds].map(([name, seconds]) => [name, totals.cores(seconds)])),
    cpuCoresPerProcess: [...totals.processes.values()].map((p) => ({ group: p.group, pid: p.pid, root: p.root, cores: totals.cores(p.seconds) })),
    cpuUsPerItem: Object.fromEntries([...totals.groupSeconds].map(([name, seconds]) => [name, totals.perItem(seconds)])),
    generatorCores: totals.cores(totals.generatorSeconds),
    machineBusyCores: machine,
    stolenCores: totals.stealSeconds !== undefined ? totals.cores(totals.stealSeconds) : undefined,
    bound,
  };
  if (flushesCount && flushes !== undefined) details.diskFlushes = { device: totals.device, perSecond: flushes / totals.wallSeconds, perItem: flushes / totals.items };
  return { note: parts.join('; '), details };
}

// --- alternating measurements ---

interface RunFigure {
  /** The row's figure for this run (a rate, or the median lag in ms). */
  value: number;
  /** Messages, logins or samples: what CPU is counted per. */
  items: number;
  latency?: Samples;
  /** Extra words for the progress line. */
  text?: string;
  /** A check that is not part of the run (reading the delivered files). */
  check?: () => void;
}

interface Series {
  config: Configuration;
  values: number[];
  latency: Samples;
  totals: UsageTotals;
}

/** Marks the timed part of a run, when the workload has parts that are not (RETR's logins and listings). */
interface Timed {
  start(): void;
  end(): void;
}

/**
 * `runs` runs of `one` on each configuration in turn, the order reversed every other run, with
 * the CPU and disk read around each run, or around its timed part where `one` marks it.
 */
export async function alternate(
  label: string,
  unit: string,
  configs: Configuration[],
  runs: number,
  options: ScaleOptions,
  one: (config: Configuration, run: number, timed: Timed) => Promise<RunFigure>,
): Promise<Series[]> {
  const series = configs.map((config) => ({ config, values: [] as number[], latency: new Samples(), totals: new UsageTotals() }));
  for (let run = 0; run < runs; run++) {
    const order = run % 2 === 0 ? series : [...series].reverse();
    for (const entry of order) {
      await sleep(SETTLE_MS);
      let before = takeReading(entry.config);
      let after: Reading | undefined;
      const figure = await one(entry.config, run, {
        start: () => void (before = takeReading(entry.config)),
        end: () => void (after = takeReading(entry.config)),
      });
      after ??= takeReading(entry.config);
      figure.check?.();
      entry.totals.add(entry.config, before, after, figure.items);
      entry.values.push(figure.value);
      if (figure.latency) entry.latency.add(figure.latency);
      options.progress(`  ${label}, ${entry.config.name}, run ${run + 1}/${runs}: ${fmt(figure.value)} ${unit}${figure.text ? ` (${figure.text})` : ''}`);
    }
  }
  return series;
}

/** Per-run ratios of two series measured back to back. */
function pairedRatios(over: Series, under: Series): number[] {
  return over.values.map((value, i) => value / under.values[i]);
}

/** The CPU one item costs a configuration in all its processes (popgate, engines, a peer's), in µs. */
function serverCpuPerItem(entry: Series): number {
  return entry.totals.perItem([...entry.totals.groupSeconds.values()].reduce((a, b) => a + b, 0));
}

export function ratioRow(workload: string, over: Series, under: Series, item: string, target?: number): ScaleRow {
  const runs = pairedRatios(over, under);
  const ofMedians = median(over.values) / median(under.values);
  const met = target === undefined ? undefined : median(runs) >= target;
  const parts = [
    `${over.config.name} over ${under.config.name}: the median of the per-run ratios (each run pair back to back); the ratio of the medians is ${fmt(ofMedians)}x`,
    `server CPU per ${item} (every process of each, engines included): ${fmt(serverCpuPerItem(over))} µs against ${fmt(serverCpuPerItem(under))} µs`,
  ];
  if (target !== undefined) parts.push(`target at least ${target}x: ${met ? 'met' : 'NOT met'}`);
  return {
    workload,
    unit: 'x',
    runs,
    note: parts.join('; '),
    details: { ratioOfMedians: ofMedians, serverCpuUsPerItem: { [over.config.name]: serverCpuPerItem(over), [under.config.name]: serverCpuPerItem(under) }, ...(target !== undefined ? { target, met } : {}) },
  };
}

export function seriesRow(workload: string, unit: string, entry: Series, item: string, flushesCount: boolean, lead?: string): ScaleRow {
  const { note, details } = usageNote(entry.config, entry.totals, item, flushesCount);
  return {
    workload,
    unit,
    runs: entry.values,
    latency: entry.latency.length > 0 ? summarize(entry.latency.values()) : undefined,
    note: lead ? `${lead}; ${note}` : note,
    details,
  };
}

// --- the workloads, as one run each ---

export const retrRun = (users: string[]) => async (config: Configuration, run: number, timed: Timed): Promise<RunFigure> => {
  // The mailboxes move one client on each run, so over the runs each meets every node.
  const shift = run % users.length;
  // CPU is read over the transfers alone, not the logins and listings before them.
  const result = await runRetr({ endpoint: config.pop3, users: users.slice(shift).concat(users.slice(0, shift)), password: PASSWORD, timed });
  return { value: result.messagesPerSecond, items: result.messages, latency: result.latency, text: `${fmt(result.megabytesPerSecond)} MB/s, ${result.messages} messages checked against LIST` };
};

/** What an accept run sends: the envelope sender, and the messages for a run's tag and recipient. */
export interface AcceptTraffic {
  from: string;
  messages(tag: string, to: string): AcceptMessages;
}

/** 1 KB messages from a sender without DNS records, numbered afresh for each run. */
const PLAIN_TRAFFIC: AcceptTraffic = {
  from: INBOUND_SENDER,
  messages: (tag, to) => new MessageSet({ size: ACCEPT_SIZE, from: INBOUND_SENDER, to, tag }),
};

export function acceptRun(options: Pick<ScaleOptions, 'smtpMessages'>, tag: string, { to = ACCEPT_SINK, total = options.smtpMessages, traffic = PLAIN_TRAFFIC } = {}) {
  return async (config: Configuration, run: number): Promise<RunFigure> => {
    const messages = traffic.messages(`${tag}-${config.name.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '')}-${run}`, to);
    const result = await runAccept({ endpoint: config.smtp, clients: CLIENTS, total, messages, from: traffic.from, to, pipelining: false, localAddress: ACCEPT_SOURCE });
    // A server that delivers after its 250 (Postfix) finishes inside its own run, CPU and all.
    await config.awaitDelivery?.(to, result.accepted);
    return {
      value: result.messagesPerSecond,
      items: result.accepted,
      latency: result.latency,
      text: `${result.accepted} messages, all 250, all in the Maildir`,
      check: () => config.verify(to, messages, result.accepted),
    };
  };
}

const loginRun = (options: ScaleOptions) => async (config: Configuration): Promise<RunFigure> => {
  const users = Array.from({ length: CLIENTS }, (_, i) => loginUser(i));
  const result = await runLogins({ endpoint: config.pop3, users, password: PASSWORD, clients: CLIENTS, total: options.logins });
  return { value: result.perSecond, items: result.sessions, latency: result.latency };
};

/** Relay-lag samples: POP3 login on the configuration's first node, relay through its last one. */
function lagRun(samples: number, tries: Map<Configuration, number[]>) {
  return async (config: Configuration): Promise<RunFigure> => {
    const lags = new Samples(samples);
    const runTries = tries.get(config) ?? [];
    tries.set(config, runTries);
    for (let n = 0; n < samples; n++) {
      const result = await relayLag({
        pop3: config.pop3[0],
        smtp: config.smtp[config.smtp.length - 1],
        user: RELAY_USER,
        password: PASSWORD,
        remoteRecipient: REMOTE_RECIPIENT,
        source: config.lagSource(),
      });
      lags.push(result.lagMs);
      runTries.push(result.tries);
    }
    return { value: median(lags.values()), items: samples, latency: lags, text: `median of ${samples} logins` };
  };
}

// --- the section ---

const workersLabels = (workload: string) => [LABELS.workersOne(workload), LABELS.workersTwo(workload), LABELS.workersRatio(workload)];
const clusterLabels = (workload: string) => [LABELS.single(workload), LABELS.cluster(workload), LABELS.clusterRatio(workload)];

export async function runScaleOut(options: ScaleOptions): Promise<ScaleResult> {
  const { progress, quick } = options;
  const rows: ScaleRow[] = [];
  const skipped: string[] = [];
  const runs = quick ? 2 : Math.max(options.runs, 9);
  // One RETR run lasts about a second: more of them, so a burst of noise moves the median little.
  const retrRuns = quick ? 3 : Math.max(options.runs, 15);
  const selected = (...labels: string[]) => labels.some((label) => matchesOnly(options.only, label));

  const workersWanted = {
    retr: selected(...workersLabels(WORKLOADS.retr)),
    accept: selected(...workersLabels(WORKLOADS.accept)),
  };
  const clusterWanted = {
    accept: selected(...clusterLabels(WORKLOADS.accept), LABELS.peer('Postfix', WORKLOADS.accept), LABELS.overPeer(WORKLOADS.accept)),
    login: selected(...clusterLabels(WORKLOADS.login)),
    retr: selected(...clusterLabels(WORKLOADS.retr)),
    lag: selected(LABELS.clusterLag, LABELS.single(WORKLOADS.lag)),
  };
  let clusterAny = Object.values(clusterWanted).some(Boolean);
  const workersAny = Object.values(workersWanted).some(Boolean);
  const missing = (['redis-server', 'postgres'] as const).filter((engine) => !findEngine(engine));
  if (clusterAny && missing.length > 0) {
    skipped.push(
      `cluster rows: ${missing.map((m) => (m === 'postgres' ? 'PostgreSQL' : m)).join(' and ')} not installed here ` +
        `(apt-get install ${missing.map((m) => (m === 'postgres' ? 'postgresql' : m)).join(' ')}, or run with --peers as root, which installs them)`,
    );
    clusterAny = false;
  }
  if (!workersAny && !clusterAny) return { rows, skipped };

  const root = mkdtempSync(join(tmpdir(), 'popgate-scale-'));
  const children = new Children(options.cpuProfDir);
  /** With the signal that ends each at once: SIGQUIT is PostgreSQL's immediate shutdown, which takes its backends along. */
  const engines: { engine: RunningEngine; signal: NodeJS.Signals }[] = [];
  let postfix: RunningPeer | undefined;
  const killAll = () => {
    children.killSync();
    for (const { engine, signal } of engines) {
      try {
        if (engine.pid !== undefined) process.kill(engine.pid, signal);
      } catch {
        // already gone
      }
    }
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', killAll);
  try {
    progress('scale-out: workers, and a cluster of two nodes');
    const dirs = { single: join(root, 'workers-1'), double: join(root, 'workers-2'), cluster: join(root, 'cluster') };
    await prepareSingleData(dirs.single, options, workersWanted.retr || clusterWanted.retr);
    // The other configurations start from copies of the same data (SQLite file and Maildirs).
    if (workersAny) cpSync(dirs.single, dirs.double, { recursive: true });
    if (clusterAny) cpSync(join(dirs.single, 'mail'), join(dirs.cluster, 'mail'), { recursive: true });

    const single = await startSingle(children, 'workers = 1', dirs.single, 1, 40);
    progress(`  server: workers = 1, popgate pid ${single.server.pid}, POP3 ${single.config.pop3[0].port}, SMTP ${single.config.smtp[0].port}`);
    const boxes = Array.from({ length: MAILBOXES }, (_, i) => mailboxUser(i));
    const spread = 'the kernel spreads the connections over the workers (SO_REUSEPORT)';

    // --- workers = 2 against workers = 1 ---
    if (workersAny) {
      const double = await startSingle(children, 'workers = 2', dirs.double, 2, 41);
      progress(`  server: workers = 2, popgate pid ${double.server.pid} (the primary), POP3 ${double.config.pop3[0].port}, SMTP ${double.config.smtp[0].port}`);
      const pair = [single.config, double.config];
      if (workersWanted.retr) {
        await warmRetr(pair, boxes, progress);
        const [one, two] = await alternate(`workers: ${WORKLOADS.retr}`, 'msg/s', pair, retrRuns, options, retrRun(boxes));
        rows.push(
          seriesRow(LABELS.workersOne(WORKLOADS.retr), 'msg/s', one, 'message', false),
          seriesRow(LABELS.workersTwo(WORKLOADS.retr), 'msg/s', two, 'message', false, spread),
          ratioRow(LABELS.workersRatio(WORKLOADS.retr), two, one, 'message', RATIO_TARGETS.workersRetr),
        );
      }
      if (workersWanted.accept) {
        await warmAccept(pair, options);
        const [one, two] = await alternate(`workers: ${WORKLOADS.accept}`, 'msg/s', pair, runs, options, acceptRun(options, 'workers'));
        rows.push(
          seriesRow(LABELS.workersOne(WORKLOADS.accept), 'msg/s', one, 'message', true),
          seriesRow(LABELS.workersTwo(WORKLOADS.accept), 'msg/s', two, 'message', true, spread),
          ratioRow(LABELS.workersRatio(WORKLOADS.accept), two, one, 'message'),
        );
      }
      // Stopped before the cluster runs: the machine's cores are all there is.
      await children.stop(double.server);
    }

    // --- a cluster of two nodes against one embedded node ---
    if (clusterAny) {
      progress('  starting a private redis-server and PostgreSQL');
      const [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
      engines.push({ engine: redis, signal: 'SIGKILL' }, { engine: postgres, signal: 'SIGQUIT' });
      await prepareClusterAccounts(postgres.url);
      const cluster = await startCluster(children, dirs.cluster, redis, postgres);
      progress(
        `  server: cluster, nodes on ${cluster.config.pop3.map((e) => e.host).join(' and ')}, popgate pids ${cluster.servers.map((s) => s.pid).join(' and ')}; ` +
          `redis-server pid ${redis.pid}, postmaster pid ${postgres.pid}`,
      );
      const baseline: Configuration = { ...single.config, name: '1 node (SQLite)' };
      const pair = [baseline, cluster.config];

      if (clusterWanted.accept) {
        const configs = [...pair];
        if (options.peers) {
          postfix = await startPostfix({
            workDir: mkdirp(join(root, 'postfix-work')),
            domain: HOSTNAME,
            recipients: [WARM_SINK, ACCEPT_SINK].map((address) => ({ address, password: PASSWORD, maildir: mkMaildir(join(root, 'postfix-mail', address)) })),
          });
          progress(`  server: ${postfix.version}, SMTP ${postfix.smtp!.port}`);
          configs.push(postfixConfiguration(postfix, root));
        }
        await warmAccept(configs, options);
        const [one, two, peer] = await alternate(`cluster: ${WORKLOADS.accept}`, 'msg/s', configs, runs, options, acceptRun(options, 'cluster'));
        rows.push(
          seriesRow(LABELS.single(WORKLOADS.accept), 'msg/s', one, 'message', true),
          seriesRow(LABELS.cluster(WORKLOADS.accept), 'msg/s', two, 'message', true, `clients spread over both nodes (${CLIENTS / 2} each)`),
          ratioRow(LABELS.clusterRatio(WORKLOADS.accept), two, one, 'message'),
        );
        if (peer) {
          rows.push(
            seriesRow(
              LABELS.peer(peer.config.name, WORKLOADS.accept),
              'msg/s',
              peer,
              'message',
              true,
              'measured here with the same generator, alternating with the cluster and the single node (not taken from the comparison table); its run lasts until the accepted mail is in its Maildir',
            ),
            ratioRow(LABELS.overPeer(WORKLOADS.accept), two, peer, 'message', RATIO_TARGETS.clusterOverPostfix),
          );
        }
        await postfix?.stop();
        postfix = undefined;
      }
      if (clusterWanted.login) {
        await alternate(`warm-up: ${WORKLOADS.login} (not measured)`, 'logins/s', pair, 1, options, loginRun(options));
        const [one, two] = await alternate(`cluster: ${WORKLOADS.login}`, 'logins/s', pair, runs, options, loginRun(options));
        const cache = 'a verified password is remembered (auth.verified_login_cache, on by default), so scrypt runs at the first login of each user only';
        rows.push(
          seriesRow(LABELS.single(WORKLOADS.login), 'logins/s', one, 'login', false, cache),
          seriesRow(LABELS.cluster(WORKLOADS.login), 'logins/s', two, 'login', false, `clients spread over both nodes; ${cache}`),
          ratioRow(LABELS.clusterRatio(WORKLOADS.login), two, one, 'login'),
        );
      }
      if (clusterWanted.retr) {
        await warmRetr(pair, boxes, progress);
        const [one, two] = await alternate(`cluster: ${WORKLOADS.retr}`, 'msg/s', pair, retrRuns, options, retrRun(boxes));
        rows.push(
          seriesRow(LABELS.single(WORKLOADS.retr), 'msg/s', one, 'message', false),
          seriesRow(LABELS.cluster(WORKLOADS.retr), 'msg/s', two, 'message', false, 'mailboxes spread over both nodes; on shared storage Maildir listings are read afresh at each login'),
          ratioRow(LABELS.clusterRatio(WORKLOADS.retr), two, one, 'message'),
        );
      }
      if (clusterWanted.lag) {
        const tries = new Map<Configuration, number[]>();
        await alternate('warm-up: relay lag (not measured)', 'ms', pair, 1, options, lagRun(3, new Map()));
        const [one, two] = await alternate('cluster: relay lag', 'ms', pair, runs, options, lagRun(options.lagSamples, tries));
        rows.push(
          lagRow(
            LABELS.single(WORKLOADS.lag),
            one,
            tries.get(one.config)!,
            'the grant is written to SQLite before the "+OK"',
            'the SMTP round trip (MAIL and RCPT in one write) with its look-ups in SQLite, inside the process: the grant, the sender\'s addresses, the sending counts',
          ),
          lagRow(
            LABELS.clusterLag,
            two,
            tries.get(two.config)!,
            'node A writes the grant to Redis before its "+OK"',
            'the SMTP round trip to node B (MAIL and RCPT in one write) with its look-ups one after the other, each a round trip to another process: ' +
              'at MAIL the grant (Redis), the sender\'s addresses (PostgreSQL) and the sending counts (Redis), at RCPT the sending counts (Redis); ' +
              'on 2 cores each one waits for that process to be scheduled',
            LAG_TARGET_MS,
          ),
        );
      }
      for (const server of cluster.servers) await children.stop(server);
    }
    await children.stop(single.server);
    for (const { engine } of engines.splice(0)) await engine.destroy();
    return { rows, skipped };
  } finally {
    await postfix?.stop().catch((error) => progress(`stopping Postfix: ${(error as Error).message}`));
    await children.stopAll(progress);
    for (const { engine } of engines) await engine.destroy().catch(() => undefined);
    process.off('exit', killAll);
    rmSync(root, { recursive: true, force: true });
  }
}

export function mkdirp(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function mkMaildir(dir: string): string {
  for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(dir, sub), { recursive: true });
  return dir;
}

/** Unmeasured RETR runs over every mailbox per configuration: page cache and JIT warm. */
async function warmRetr(configs: Configuration[], boxes: string[], progress: (text: string) => void): Promise<void> {
  for (const config of configs) {
    progress(`  warm-up: ${WORKLOADS.retr} on ${config.name} (not measured)`);
    await runRetr({ endpoint: config.pop3, users: boxes, password: PASSWORD });
  }
}

/** Unmeasured 1 KB messages per configuration (to a sink of their own), checked like the rest. */
export async function warmAccept(configs: Configuration[], options: Pick<ScaleOptions, 'smtpMessages' | 'smtpWarmUp' | 'progress'>, traffic?: AcceptTraffic): Promise<void> {
  for (const config of configs) {
    options.progress(`  warm-up: SMTP accept on ${config.name} (not measured)`);
    const warm = await acceptRun(options, 'warm', { to: WARM_SINK, total: options.smtpWarmUp, traffic })(config, 0);
    warm.check?.();
  }
}

/** Two nodes, one process each, on 127.0.1.1 and 127.0.1.2, sharing the engines and `dataDir`. */
async function startCluster(children: Children, dataDir: string, redis: RunningEngine, postgres: RunningEngine): Promise<{ config: Configuration; servers: PopgateChild[] }> {
  const nodes = await Promise.all(
    NODE_ADDRESSES.map(async (host, i) => {
      const name = `node ${'AB'[i]}`;
      const ports = { pop3: await freePort(host), smtp: await freePort(host) };
      const configPath = join(dataDir, `node-${'ab'[i]}.toml`);
      const cluster = { redis: redis.url, node: `node-${'ab'[i]}` };
      writeFileSync(configPath, popgateConfig(dataDir, host, ports, { server: { workers: 1 }, cluster, database: { url: postgres.url } }));
      const pop3 = { host, port: ports.pop3 };
      const server = await children.start(`cluster ${name}`, configPath, pop3);
      return { name, server, pop3, smtp: { host, port: ports.smtp } };
    }),
  );
  const mailstore = new MaildirStore(dataDir, HOSTNAME, { shared: true });
  const maildir = (address: string) => mailstore.pathOf(address);
  return {
    servers: nodes.map((node) => node.server),
    config: {
      name: 'cluster of 2 nodes',
      pop3: nodes.map((node) => node.pop3),
      smtp: nodes.map((node) => node.smtp),
      groups: [
        ...nodes.map((node): ProcessGroup => ({ name: node.name, role: 'popgate', roots: () => [node.server.pid] })),
        { name: 'redis-server', role: 'engine', roots: () => (redis.pid !== undefined ? [redis.pid] : []) },
        { name: 'postgres', role: 'engine', roots: () => (postgres.pid !== undefined ? [postgres.pid] : []) },
      ],
      dataDir,
      verify: maildirChecker(maildir),
      lagSource: lagSources(30),
    },
  };
}

/** Postfix as a configuration of the accept measurement: it delivers after its 250, so a run waits for the files. */
export function postfixConfiguration(postfix: RunningPeer, root: string): Configuration {
  const maildir = (address: string) => join(root, 'postfix-mail', address);
  const counted = new Map<string, number>();
  return {
    name: postfix.version,
    pop3: [],
    smtp: [postfix.smtp!],
    groups: [{ name: 'Postfix', role: 'peer', roots: () => postfix.pids() }],
    dataDir: root,
    async awaitDelivery(address, accepted) {
      const dir = join(maildir(address), 'new');
      const expected = (counted.get(address) ?? 0) + accepted;
      const deadline = Date.now() + 120_000;
      const count = () => (existsSync(dir) ? readdirSync(dir).filter((name) => !name.startsWith('.')).length : 0);
      while (count() < expected) {
        if (Date.now() > deadline) throw new Error(`Postfix: ${accepted} messages got 250 but only ${count() - (counted.get(address) ?? 0)} reached ${dir} within 120 s`);
        await sleep(20);
      }
      counted.set(address, expected);
    },
    // Postfix stores its own line ends (LF): only the count is checked, in awaitDelivery.
    verify: () => undefined,
    lagSource: () => {
      throw new Error('Postfix has no POP-before-SMTP');
    },
  };
}

/** A relay-lag row: the median of the run medians, p50/p99 over every sample, the RCPT tries. */
function lagRow(workload: string, entry: Series, tries: number[], how: string, bound: string, target?: number): ScaleRow {
  const summary = summarize(entry.latency.values());
  const firstTry = tries.filter((t) => t === 1).length;
  const parts = [
    `${summary.count} logins, each from a fresh address; p50 ${fmt(summary.p50)} ms, p99 ${fmt(summary.p99)} ms; RCPT accepted at the first try ${firstTry}/${tries.length}`,
    how,
    `bound: ${bound}`,
  ];
  // The row's figure, the median of the run medians, is what the target is held against.
  if (target !== undefined) parts.push(`target under ${target} ms: ${median(entry.values) < target ? 'met' : 'NOT met'}`);
  return {
    workload,
    unit: 'ms',
    runs: entry.values,
    latency: summary,
    note: parts.join('; '),
    details: { configuration: entry.config.name, firstTry, samples: tries.length, maxTries: Math.max(...tries), ...(target !== undefined ? { targetMs: target } : {}) },
  };
}
