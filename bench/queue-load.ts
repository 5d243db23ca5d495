import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'smol-toml';
import { generateKey } from '../src/dkim/keys.ts';
import { silentLogger } from '../src/log/logger.ts';
import { OutboundQueue } from '../src/queue/queue.ts';
import { SqliteQueueStore } from '../src/sqlite/queue-index.ts';
import { Spool } from '../src/queue/spool.ts';
import { freePort } from './popgate-server.ts';

// Outbound queue throughput: a popgate child starts with N messages already queued (as if
// relayed by customers) and delivers them to a local sink SMTP server through the transport
// map. Timed from the child accepting connections to the sink's last 250, and to the queue
// being empty (every spool entry removed). The sink is small and fast (it only counts and
// checks messages) so that it does not bound the figure; it offers PIPELINING and no STARTTLS.

export interface QueueRunOptions {
  messages: number;
  size: number;
  /** Recipient domains, each its own destination (all mapped to the sink). */
  domains: number;
  /** DKIM-sign every message (RSA 2048) on its way out. */
  dkim: boolean;
  cpuProfDir?: string;
}

export interface QueueRunResult {
  delivered: number;
  /** Sink's last 250, from the child accepting connections. */
  deliveredMs: number;
  /** Queue empty (spool files removed), from the same start. */
  drainedMs: number;
  messagesPerSecond: number;
  signed: number;
  connections: number;
}

const HOSTNAME = 'bench.example.test';

export async function runQueueDelivery(options: QueueRunOptions): Promise<QueueRunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-bench-queue-'));
  // One sink address per destination (127.0.0.2, .3, ...): each is a next hop of its own.
  const sink = await startFastSink(Array.from({ length: options.domains }, (_, i) => `127.0.0.${2 + i}`));
  const logPath = join(dir, 'popgate.log');
  try {
    const data = join(dir, 'data');
    const domains = Array.from({ length: options.domains }, (_, i) => `dest${i}.example`);
    if (options.dkim) generateKey(join(data, 'dkim'), HOSTNAME, 'popgate', 'rsa');
    const queue = new OutboundQueue(new Spool(data), SqliteQueueStore.open(data), silentLogger());
    const filler = 'x'.repeat(70);
    for (let i = 0; i < options.messages; i++) {
      const to = `user${i % 100}@${domains[i % domains.length]}`;
      let text = `From: Customer <customer@${HOSTNAME}>\r\nTo: <${to}>\r\nSubject: queue bench ${i}\r\nMessage-ID: <q${i}@${HOSTNAME}>\r\n\r\n`;
      while (text.length < options.size) text += `${filler}\r\n`;
      await queue.enqueue({ id: Spool.newId(), from: `customer@${HOSTNAME}`, to: [to], receivedAt: Date.now(), clientIp: '192.0.2.1', authorizedUser: `customer@${HOSTNAME}` }, Buffer.from(text));
    }
    await queue.close();

    const pop3Port = await freePort();
    const config = {
      hostname: HOSTNAME,
      data_dir: data,
      shutdown_grace: '1s',
      log: { level: 'info' },
      // One process, as this row has always measured (the default is one worker per core; only
      // one of them would deliver the queue anyway).
      server: { workers: 1 },
      pop3: { listen: [`127.0.0.1:${pop3Port}`] },
      smtp: { listen: [] },
      dns: { servers: ['127.0.0.1:9'], timeout: '1s' },
      outbound: { transport: Object.fromEntries(domains.map((d, i) => [d, `127.0.0.${2 + i}:${sink.ports[i]}`])) },
    };
    const configPath = join(dir, 'popgate.toml');
    writeFileSync(configPath, stringify(config) + '\n');

    const root = resolve(import.meta.dirname, '..');
    // The log goes to a file, as in production; one line per attempt is part of the work.
    const logFd = openSync(logPath, 'w');
    const nodeFlags = options.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${resolve(options.cpuProfDir)}`] : [];
    const child = spawn(process.execPath, [...nodeFlags, join(root, 'bin/popgate.js'), 'serve', '--config', configPath], { cwd: root, stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    try {
      const started = await waitFor(() => readFileSync(logPath, 'utf8').includes('"listener":"pop3"'), 30_000, 'popgate to start', child);
      await waitFor(() => sink.count >= options.messages, 120_000, `${options.messages} messages at the sink`, child);
      const deliveredMs = sink.lastAt - started;
      const spool = join(data, 'queue');
      await waitFor(() => !readdirSync(spool).some((name) => name.endsWith('.json') || name.endsWith('.eml')), 60_000, 'an empty queue', child);
      const drainedMs = performance.now() - started;
      const exited = new Promise((done) => child.once('exit', done));
      child.kill('SIGTERM');
      await exited;
      if (sink.bad > 0) throw new Error(`queue bench: ${sink.bad} messages reached the sink damaged`);
      if (options.dkim && sink.signed !== sink.count) throw new Error(`queue bench: ${sink.count - sink.signed} of ${sink.count} messages arrived without a DKIM signature`);
      return {
        delivered: sink.count,
        deliveredMs,
        drainedMs,
        messagesPerSecond: options.messages / (deliveredMs / 1000),
        signed: sink.signed,
        connections: sink.connections,
      };
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  } catch (error) {
    let tail = '';
    try {
      tail = readFileSync(logPath, 'utf8').split('\n').slice(-10).join('\n');
    } catch {
      // no log yet
    }
    throw new Error(`${(error as Error).message}${tail ? `\npopgate log (last lines):\n${tail}` : ''}`);
  } finally {
    await Promise.all(sink.servers.map((server) => new Promise((done) => server.close(done))));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string, child: { exitCode: number | null }): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (check()) return performance.now();
    if (child.exitCode !== null) throw new Error(`popgate exited (${child.exitCode}) while waiting for ${what}`);
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

interface FastSink {
  servers: Server[];
  ports: number[];
  count: number;
  signed: number;
  bad: number;
  connections: number;
  lastAt: number;
}

/** A minimal SMTP receiver: answers every command, counts each message and checks its end. */
async function startFastSink(hosts: string[]): Promise<FastSink> {
  const sink: FastSink = { servers: [], ports: [], count: 0, signed: 0, bad: 0, connections: 0, lastAt: 0 };
  const onConnection = (socket: Socket) => {
    sink.connections++;
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.write('220 sink.example ESMTP\r\n');
    let buffer: Buffer = Buffer.alloc(0);
    let inData = false;
    socket.on('data', (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      const replies: string[] = [];
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end === -1) break;
          const message = buffer.subarray(0, end + 2);
          buffer = buffer.subarray(end + 5);
          inData = false;
          sink.count++;
          sink.lastAt = performance.now();
          if (message.subarray(0, 15).toString() === 'DKIM-Signature:') sink.signed++;
          if (message.indexOf('Subject: queue bench ') === -1 || /(?<!\r)\n/.test(message.toString('latin1'))) sink.bad++;
          replies.push('250 2.0.0 Ok');
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol === -1) break;
        const line = buffer.subarray(0, eol).toString('latin1');
        buffer = buffer.subarray(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO') replies.push('250-sink.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600');
        else if (verb === 'DATA') {
          replies.push('354 End data with <CR><LF>.<CR><LF>');
          inData = true;
        } else if (verb === 'QUIT') {
          replies.push('221 Bye');
          socket.end(replies.join('\r\n') + '\r\n');
          return;
        } else replies.push('250 Ok');
      }
      if (replies.length > 0) socket.write(replies.join('\r\n') + '\r\n');
    });
  };
  for (const host of hosts) {
    const server = createServer(onConnection);
    await new Promise<void>((done) => server.listen(0, host, done));
    sink.servers.push(server);
    sink.ports.push((server.address() as { port: number }).port);
  }
  return sink;
}
