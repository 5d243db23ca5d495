import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Pop3Connection, type Endpoint } from './pop3-load.ts';
import { SmtpConnection } from './smtp-load.ts';
import { summarize, type LatencySummary } from './stats.ts';

// Idle connections: what thousands of connected but silent clients cost a server, and whether
// it still serves a new session promptly while they sit there. Works against any server
// (popgate, or a peer such as Postfix, Dovecot or Haraka) on an SMTP and/or a POP3 endpoint:
//
//   1. the server's memory (RSS and PSS summed over `pids()`) is measured: the baseline;
//   2. C connections to each endpoint are opened (200 at a time) and each waits for its
//      greeting, then sends nothing;
//   3. the memory is measured again with all of them held;
//   4. P fresh connections, one after another and alternately SMTP and POP3, time connect to
//      the complete greeting line (SMTP: the final "220 " line; POP3: "+OK"), then QUIT;
//   5. every held connection is asked NOOP: those that answer (POP3: any status line, as NOOP
//      is -ERR before a login; SMTP: 250) are the ones the server still holds.
//
// The sockets live in a child process (this file in child mode), started through /bin/sh with
// the open-file limit raised: 2 x 10,000 sockets exceed a default `ulimit -n`. The parent
// measures /proc while the child holds the connections; they talk in JSON lines over the
// child's stdin and stdout. Where the limit cannot be raised far enough (no CAP_SYS_RESOURCE,
// e.g. in a container, and a hard limit below what is needed), the connections are shared out
// over several such children, at most `maxChildren`; beyond that runIdle fails and says why.
//
// Servers limit connections per client address (Postfix's anvil: 50; popgate: pop3 50, smtp
// 20 by default), so when the endpoint is on loopback the idle connections come from many
// addresses of 127.0.0.0/8 (all of it is loopback on Linux): at most `perSource` (40) per
// address, SMTP from 127.1.x.y and POP3 from 127.2.x.y; the probes from 127.3.0.y, a new
// address every 50 probes (so a per-address rate limit of 120 a minute is not hit).

export interface IdleOptions {
  smtp?: Endpoint;
  pop3?: Endpoint;
  /** Idle connections per protocol. */
  connections: number;
  /** Fresh sessions timed while the idle connections are held (default 200). */
  probes?: number;
  /** The server's processes; called at each measurement (servers that fork per connection have new ones). */
  pids: () => number[];
  /** Idle connections per loopback source address (default 40). */
  perSource?: number;
  /** Connections being opened at once (default 200). */
  concurrency?: number;
  /** A connection whose connect or greeting takes longer fails (default 30,000 ms). */
  connectTimeoutMs?: number;
  /** Opening every idle connection must end within this; the rest count as failed (default 300,000 ms). */
  openTimeoutMs?: number;
  /** Pause between the last connection opened and the memory measurement (default 1,000 ms). */
  settleMs?: number;
  /** Child processes the connections may be shared over when one cannot open enough files (default 8). */
  maxChildren?: number;
  /** Progress lines (default: none). */
  progress?: (text: string) => void;
}

export interface MemoryFigures {
  rssBytes: number;
  /** Absent unless /proc/<pid>/smaps_rollup was readable for every process. */
  pssBytes?: number;
}

export interface IdleResult {
  /** Idle connections that got their greeting. */
  held: { smtp: number; pop3: number };
  /** Idle connections that could not be opened (refused, reset, no greeting within the timeout). */
  failed: number;
  /** From the first connect to the last idle connection's greeting (or failure). */
  openMs: number;
  baseline: MemoryFigures;
  loaded: MemoryFigures;
  /** Connect to complete greeting line of the probes that succeeded, in ms. */
  greeting: LatencySummary;
  /** Held connections that still answered NOOP at the end. */
  stillOpen: number;
  stillOpenByProtocol: { smtp: number; pop3: number };
  /** Probes that failed (refused, reset, no greeting within the timeout). */
  probeFailed: number;
  /** The distinct error messages, most frequent first (at most 10), with their counts. */
  errors: string[];
  /** Processes measured at baseline and when loaded. */
  processes: { baseline: number; loaded: number };
  /** Client processes that held the connections, and their open-file limit. */
  clients: { processes: number; fileLimit: number };
}

const CHILD_FLAG = '--idle-load-child';
const RAISE_LIMIT = 'ulimit -n 1048576 2>/dev/null || ulimit -n 200000 2>/dev/null; exec "$0" "$@"';

// --- memory of the server ---

/** RSS (and PSS, where readable) summed over processes; processes that have gone are skipped. */
export function processMemory(pids: readonly number[]): MemoryFigures & { processes: number } {
  let rss = 0;
  let pss = 0;
  let pssReadable = true;
  let processes = 0;
  for (const pid of new Set(pids)) {
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'latin1');
    } catch {
      continue; // exited between pids() and now
    }
    const vmRss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    if (!vmRss) continue; // a zombie or a kernel thread
    processes++;
    rss += Number(vmRss[1]) * 1024;
    try {
      const rollup = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'));
      if (rollup) pss += Number(rollup[1]) * 1024;
      else pssReadable = false;
    } catch {
      pssReadable = false;
    }
  }
  return pssReadable && processes > 0 ? { rssBytes: rss, pssBytes: pss, processes } : { rssBytes: rss, processes };
}

/** A process and all its descendants (from /proc/<pid>/stat), for `pids` of servers that fork. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
    } catch {
      continue;
    }
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses. Zombies hold no
    // memory and are left out.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') continue;
    const ppid = Number(fields[1]);
    const list = children.get(ppid);
    if (list) list.push(Number(entry));
    else children.set(ppid, [Number(entry)]);
  }
  const result: number[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    result.push(pid);
    for (const child of children.get(pid) ?? []) stack.push(child);
  }
  return result;
}

// --- parent ---

/** What the parent passes to a child (everything but the pids callback). */
interface ChildOptions {
  smtp?: Endpoint;
  pop3?: Endpoint;
  connections: number;
  /** This child's share of the idle connections: indices [first, end) of both protocols interleaved. */
  first: number;
  end: number;
  probes: number;
  perSource: number;
  concurrency: number;
  connectTimeoutMs: number;
  openTimeoutMs: number;
  probeTimeoutMs: number;
  checkTimeoutMs: number;
}

type ErrorList = [string, number][];

interface ReadyMessage {
  event: 'ready';
  /** The child's soft limit on open files after /bin/sh tried to raise it (null: unlimited or unknown). */
  fileLimit: number | null;
}
interface HeldMessage {
  event: 'held';
  held: { smtp: number; pop3: number };
  failed: number;
  openMs: number;
  errors: ErrorList;
}
interface ProbedMessage {
  event: 'probed';
  greetingMs: number[];
  failed: number;
  errors: ErrorList;
}
interface ClosedMessage {
  event: 'closed';
  stillOpen: { smtp: number; pop3: number };
  errors: ErrorList;
}
interface ErrorMessage {
  event: 'error';
  message: string;
}
type ChildMessage = ReadyMessage | HeldMessage | ProbedMessage | ClosedMessage | ErrorMessage;

export class IdleLoadError extends Error {}

/** Files a child needs besides its idle connections: probes, the connections being opened, stdio, node's own. */
const CHILD_RESERVE = 64;

export async function runIdle(options: IdleOptions): Promise<IdleResult> {
  if (!options.smtp && !options.pop3) throw new IdleLoadError('runIdle: give an SMTP or a POP3 endpoint (or both)');
  if (!Number.isInteger(options.connections) || options.connections < 0) throw new IdleLoadError('runIdle: connections must be a whole number');
  const progress = options.progress ?? (() => {});
  const protocols = (options.smtp ? 1 : 0) + (options.pop3 ? 1 : 0);
  const total = protocols * options.connections;
  const concurrency = Math.max(1, options.concurrency ?? 200);
  const maxChildren = Math.max(1, options.maxChildren ?? 8);
  const spec: Omit<ChildOptions, 'first' | 'end' | 'concurrency' | 'probes'> = {
    smtp: options.smtp,
    pop3: options.pop3,
    connections: options.connections,
    perSource: options.perSource ?? 40,
    connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
    openTimeoutMs: options.openTimeoutMs ?? 300_000,
    probeTimeoutMs: 120_000,
    checkTimeoutMs: 120_000,
  };
  const settleMs = options.settleMs ?? 1000;
  const margin = 60_000;

  const baseline = processMemory(options.pids());
  const children: ChildLink[] = [];
  const start = () => {
    const child = new ChildLink(spawn('/bin/sh', ['-c', RAISE_LIMIT, process.execPath, import.meta.filename, CHILD_FLAG], { stdio: ['pipe', 'pipe', 'pipe'] }));
    children.push(child);
    return child;
  };
  try {
    // One child first: its open-file limit tells how many connections one process can hold.
    const { fileLimit } = (await start().next('ready', margin)) as ReadyMessage;
    const limit = fileLimit ?? Infinity;
    const perChildConcurrency = (count: number) => Math.ceil(concurrency / count);
    let count = 1;
    while (count <= maxChildren && Math.ceil(total / count) + perChildConcurrency(count) + CHILD_RESERVE > limit) count++;
    if (count > maxChildren) {
      throw new IdleLoadError(
        `the open-file limit could not be raised: ${total} connections need about ${total + concurrency + CHILD_RESERVE} descriptors, ` +
          `but /bin/sh could not raise ulimit -n above ${limit} (no CAP_SYS_RESOURCE, or the hard limit is lower), and sharing them ` +
          `over ${maxChildren} processes is not enough: run as root with CAP_SYS_RESOURCE, raise the hard limit (e.g. in ` +
          `/etc/security/limits.conf or systemd's LimitNOFILE), raise maxChildren, or open fewer connections`,
      );
    }
    if (count > 1) {
      progress(`idle: the open-file limit is ${limit} and could not be raised; ${total} connections shared over ${count} client processes`);
      for (let i = 1; i < count; i++) start();
      for (const child of children.slice(1)) await child.next('ready', margin);
    }
    const share = Math.ceil(total / count);
    children.forEach((child, i) => {
      const first = Math.min(total, i * share);
      const childSpec: ChildOptions = { ...spec, first, end: Math.min(total, first + share), concurrency: perChildConcurrency(count), probes: i === 0 ? (options.probes ?? 200) : 0 };
      child.send(JSON.stringify(childSpec));
    });

    const held = (await Promise.all(children.map((child) => child.next('held', spec.openTimeoutMs + margin)))) as HeldMessage[];
    const heldCount = { smtp: sum(held, (h) => h.held.smtp), pop3: sum(held, (h) => h.held.pop3) };
    const failed = sum(held, (h) => h.failed);
    const openMs = Math.max(...held.map((h) => h.openMs));
    progress(`idle: ${heldCount.smtp} SMTP + ${heldCount.pop3} POP3 connections held (${failed} failed) in ${(openMs / 1000).toFixed(1)} s`);
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    const loaded = processMemory(options.pids());

    children[0].send('probe');
    const probed = (await children[0].next('probed', spec.probeTimeoutMs + margin)) as ProbedMessage;
    for (const child of children) child.send('close');
    const closed = (await Promise.all(children.map((child) => child.next('closed', spec.checkTimeoutMs + margin)))) as ClosedMessage[];
    await Promise.all(children.map((child) => child.exited(10_000)));

    const counts = new Map<string, number>();
    for (const [message, n] of [...held, probed, ...closed].flatMap((m) => m.errors)) counts.set(message, (counts.get(message) ?? 0) + n);
    const stillOpen = { smtp: sum(closed, (c) => c.stillOpen.smtp), pop3: sum(closed, (c) => c.stillOpen.pop3) };
    return {
      held: heldCount,
      failed,
      openMs,
      baseline: memoryFigures(baseline),
      loaded: memoryFigures(loaded),
      greeting: summarize(probed.greetingMs),
      stillOpen: stillOpen.smtp + stillOpen.pop3,
      stillOpenByProtocol: stillOpen,
      probeFailed: probed.failed,
      errors: [...counts]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 10)
        .map(([message, n]) => `${n} x ${message}`),
      processes: { baseline: baseline.processes, loaded: loaded.processes },
      clients: { processes: count, fileLimit: limit },
    };
  } finally {
    for (const child of children) child.kill();
  }
}

function sum<T>(list: readonly T[], value: (item: T) => number): number {
  return list.reduce((total, item) => total + value(item), 0);
}

function memoryFigures(m: MemoryFigures): MemoryFigures {
  return m.pssBytes === undefined ? { rssBytes: m.rssBytes } : { rssBytes: m.rssBytes, pssBytes: m.pssBytes };
}

/** The parent's end of the line protocol: JSON lines from the child's stdout, commands to its stdin. */
class ChildLink {
  readonly #child: ChildProcess;
  readonly #messages: ChildMessage[] = [];
  #waiter: (() => void) | undefined;
  #stderr = '';
  #exit: string | undefined;

  constructor(child: ChildProcess) {
    this.#child = child;
    child.stderr!.on('data', (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString('utf8')).slice(-4000);
    });
    child.stdin!.on('error', () => {}); // the child went away; reported by next()
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.trim() === '') return;
      try {
        this.#messages.push(JSON.parse(line) as ChildMessage);
      } catch {
        this.#stderr = (this.#stderr + `\n(stdout) ${line}`).slice(-4000);
        return;
      }
      this.#wake();
    });
    child.on('exit', (code, signal) => {
      this.#exit = signal ? `signal ${signal}` : `exit code ${code}`;
      this.#wake();
    });
    child.on('error', (error) => {
      this.#exit = `failed to start: ${error.message}`;
      this.#wake();
    });
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  send(line: string): void {
    this.#child.stdin!.write(`${line}\n`);
  }

  /** The next message, which must be `event`; rejects on an error message, an exit or the timeout. */
  async next(event: ChildMessage['event'], timeoutMs: number): Promise<ChildMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const message = this.#messages.shift();
      if (message) {
        if (message.event === 'error') throw new IdleLoadError(`idle-load child: ${message.message}`);
        if (message.event !== event) throw new IdleLoadError(`idle-load child: expected "${event}", got "${message.event}"`);
        return message;
      }
      if (this.#exit !== undefined) {
        throw new IdleLoadError(`idle-load child ended (${this.#exit}) before "${event}"${this.#stderr.trim() ? `:\n${this.#stderr.trim()}` : ''}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new IdleLoadError(`idle-load child: no "${event}" within ${Math.round(timeoutMs / 1000)} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  async exited(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.#exit === undefined && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  kill(): void {
    if (this.#exit === undefined && this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
  }
}

// --- child ---

/** Error messages counted by text, with the varying source addresses taken out. */
class ErrorCounts {
  readonly #counts = new Map<string, number>();

  add(error: unknown): void {
    const text = (error instanceof Error ? error.message : String(error)).replace(/ from 127\.\d+\.\d+\.\d+/g, '').slice(0, 300);
    this.#counts.set(text, (this.#counts.get(text) ?? 0) + 1);
  }

  take(): [string, number][] {
    const list = [...this.#counts];
    this.#counts.clear();
    return list;
  }
}

function isLoopback(endpoint: Endpoint): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(endpoint.host);
}

/** The n-th source address of a /16 of loopback (127.<range>.x.y with y in 1..254). */
function loopbackAddress(range: number, n: number): string {
  const x = Math.floor(n / 254);
  if (x > 255) throw new IdleLoadError(`too many source addresses needed in 127.${range}.0.0/16 (raise perSource)`);
  return `127.${range}.${x}.${(n % 254) + 1}`;
}

/** The soft limit on open files, from /proc/self/limits (undefined where there is none). */
function openFileLimit(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
    if (!match) return undefined;
    return match[1] === 'unlimited' ? Infinity : Number(match[1]);
  } catch {
    return undefined;
  }
}

async function pool(count: number, concurrency: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(count, Math.max(1, concurrency)) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

/** Resolves to `promise`'s value, or rejects after `ms` (calling `onTimeout` to clean up). */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout();
      reject(new IdleLoadError(`${what}: no answer within ${Math.round(ms / 1000)} s`));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** A connection that got its SMTP greeting: the final "220 " line. */
async function openSmtp(endpoint: Endpoint, localAddress: string | undefined, timeoutMs: number): Promise<SmtpConnection> {
  let connection: SmtpConnection | undefined;
  const opened = (async () => {
    // The socket's inactivity timeout (timeoutMs) also covers the connect.
    connection = await SmtpConnection.open(endpoint, { localAddress, timeoutMs });
    await connection.expect(220, 'greeting');
    return connection;
  })();
  try {
    return await withTimeout(opened, timeoutMs, `SMTP ${endpoint.host}:${endpoint.port} connect and greeting`, () => connection?.close());
  } catch (error) {
    connection?.close();
    opened.catch(() => {});
    throw error;
  }
}

async function openPop3(endpoint: Endpoint, localAddress: string | undefined, timeoutMs: number): Promise<Pop3Connection> {
  // Pop3Connection.connect times the connect and greeting with the socket's inactivity timeout.
  const { connection } = await Pop3Connection.connect(endpoint, timeoutMs, localAddress);
  return connection;
}

async function childMain(): Promise<void> {
  const out = (message: ChildMessage) => process.stdout.write(`${JSON.stringify(message)}\n`);
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const nextLine = async (): Promise<string> => {
    const { value, done } = await lines.next();
    if (done) process.exit(1); // the parent went away: the sockets go with this process
    return value.trim();
  };
  const limit = openFileLimit();
  out({ event: 'ready', fileLimit: limit === undefined || limit === Infinity ? null : limit });
  const spec = JSON.parse(await nextLine()) as ChildOptions;

  const protocols = [spec.smtp ? ('smtp' as const) : undefined, spec.pop3 ? ('pop3' as const) : undefined].filter((p) => p !== undefined);
  const needed = spec.end - spec.first + spec.concurrency + CHILD_RESERVE;
  if (limit !== undefined && limit < needed) {
    out({ event: 'error', message: `the open-file limit could not be raised: ${spec.end - spec.first} connections need about ${needed} descriptors, but ulimit -n is ${limit}` });
    process.exit(1);
  }

  // Idle connections, the two protocols interleaved; this child opens indices [first, end).
  const errors = new ErrorCounts();
  const smtpHeld: SmtpConnection[] = [];
  const pop3Held: Pop3Connection[] = [];
  let failed = 0;
  const startedAt = performance.now();
  const deadline = startedAt + spec.openTimeoutMs;
  await pool(spec.end - spec.first, spec.concurrency, async (offset) => {
    const index = spec.first + offset;
    const protocol = protocols[index % protocols.length];
    const n = Math.floor(index / protocols.length);
    const endpoint = protocol === 'smtp' ? spec.smtp! : spec.pop3!;
    const left = deadline - performance.now();
    if (left <= 0) {
      failed++;
      errors.add(new IdleLoadError(`not attempted: opening took longer than ${Math.round(spec.openTimeoutMs / 1000)} s in all`));
      return;
    }
    const localAddress = isLoopback(endpoint) ? loopbackAddress(protocol === 'smtp' ? 1 : 2, Math.floor(n / spec.perSource)) : undefined;
    const timeoutMs = Math.min(spec.connectTimeoutMs, left);
    try {
      if (protocol === 'smtp') {
        const connection = await openSmtp(endpoint, localAddress, timeoutMs);
        connection.socket.setTimeout(0);
        smtpHeld.push(connection);
      } else {
        const connection = await openPop3(endpoint, localAddress, timeoutMs);
        connection.socket.setTimeout(0);
        pop3Held.push(connection);
      }
    } catch (error) {
      failed++;
      errors.add(error);
    }
  });
  const openMs = performance.now() - startedAt;
  out({ event: 'held', held: { smtp: smtpHeld.length, pop3: pop3Held.length }, failed, openMs, errors: errors.take() });

  // The first child runs the probes; the others go straight on to the check.
  let command = await nextLine();
  if (command === 'probe') {
    out(await probe(spec, protocols, errors));
    command = await nextLine();
  }
  if (command !== 'close') process.exit(1);
  out(await check(spec, [...smtpHeld, ...pop3Held], errors));
  process.exit(0);
}

/** Fresh sessions, one at a time, alternately SMTP and POP3: connect to greeting, then QUIT. */
async function probe(spec: ChildOptions, protocols: ('smtp' | 'pop3')[], errors: ErrorCounts): Promise<ProbedMessage> {
  const greetingMs: number[] = [];
  let probeFailed = 0;
  const probeDeadline = performance.now() + spec.probeTimeoutMs;
  for (let i = 0; i < spec.probes; i++) {
    const protocol = protocols[i % protocols.length];
    const endpoint = protocol === 'smtp' ? spec.smtp! : spec.pop3!;
    const left = probeDeadline - performance.now();
    if (left <= 0) {
      probeFailed++;
      errors.add(new IdleLoadError(`probe not attempted: the probes took longer than ${Math.round(spec.probeTimeoutMs / 1000)} s in all`));
      continue;
    }
    const localAddress = isLoopback(endpoint) ? loopbackAddress(3, Math.floor(i / 50)) : undefined;
    const timeoutMs = Math.min(spec.connectTimeoutMs, left);
    const t0 = performance.now();
    try {
      if (protocol === 'smtp') {
        const connection = await openSmtp(endpoint, localAddress, timeoutMs);
        greetingMs.push(performance.now() - t0);
        await withTimeout(connection.quit(), timeoutMs, 'SMTP QUIT', () => connection.close());
      } else {
        const connection = await openPop3(endpoint, localAddress, timeoutMs);
        greetingMs.push(performance.now() - t0);
        try {
          await withTimeout(connection.quit(), timeoutMs, 'POP3 QUIT', () => connection.close());
        } finally {
          connection.close();
        }
      }
    } catch (error) {
      probeFailed++;
      errors.add(error);
    }
  }
  return { event: 'probed', greetingMs, failed: probeFailed, errors: errors.take() };
}

/** Which held connections does the server still serve? NOOP on each, then close it. */
async function check(spec: ChildOptions, held: (SmtpConnection | Pop3Connection)[], errors: ErrorCounts): Promise<ClosedMessage> {
  const checkDeadline = performance.now() + spec.checkTimeoutMs;
  const stillOpen = { smtp: 0, pop3: 0 };
  await pool(held.length, spec.concurrency, async (index) => {
    const connection = held[index];
    const left = checkDeadline - performance.now();
    try {
      if (left <= 0) throw new IdleLoadError('NOOP not sent: the check took too long in all');
      if (connection instanceof SmtpConnection) {
        if (connection.closed) throw new IdleLoadError('SMTP: connection closed by the server while idle');
        const reply = await withTimeout(connection.ask('NOOP'), Math.min(spec.connectTimeoutMs, left), 'SMTP NOOP', () => connection.close());
        if (reply.code !== 250) throw new IdleLoadError(`SMTP NOOP: ${reply.raw.slice(0, 200)}`);
        stillOpen.smtp++;
      } else {
        // Any status line will do: NOOP is -ERR before a login (RFC 1939 allows it only in TRANSACTION).
        await withTimeout(connection.command('NOOP'), Math.min(spec.connectTimeoutMs, left), 'POP3 NOOP', () => connection.close());
        stillOpen.pop3++;
      }
    } catch (error) {
      errors.add(error);
    } finally {
      connection.close();
    }
  });
  return { event: 'closed', stillOpen, errors: errors.take() };
}

function isThisFileRunAsChild(): boolean {
  if (process.argv[2] !== CHILD_FLAG || !process.argv[1]) return false;
  try {
    return realpathSync(process.argv[1]) === realpathSync(import.meta.filename);
  } catch {
    return false;
  }
}

if (isThisFileRunAsChild()) {
  try {
    await childMain();
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ event: 'error', message: (error as Error).stack ?? String(error) })}\n`);
    process.exit(1);
  }
}
