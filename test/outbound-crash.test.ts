import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { silentLogger } from '../src/log/logger.ts';
import { OutboundQueue } from '../src/queue/queue.ts';
import { Spool } from '../src/queue/spool.ts';
import { SqliteQueueStore } from '../src/sqlite/queue-index.ts';
import { startDns, type TestDns } from './helpers/dns.ts';
import { until } from './helpers/outbound.ts';
import { exited, spawnServer, writeConfig, type ServerProcess } from './helpers/process.ts';
import { startSink, type ReceivedMessage, type Sink } from './helpers/sink.ts';
import { Xorshift32 } from './helpers/wire.ts';

// kill -9 during delivery loses nothing. popgate owns a relayed message from its 250 until a
// next hop answers 250 for it (RFC 5321 §6.1): a real popgate process is killed while it
// delivers a queue to a real SMTP sink, restarted on the same data dir, and every message
// must still arrive. A message whose answer was in flight may arrive twice (§6.1 accepts
// duplicates); none may be lost, and the queue must end empty, spool and index alike.
// The restarted server takes its leases under the same name (node and worker slot) as the
// killed one, so it takes back at once what the killed one was delivering.

const MESSAGES = 20;
/** Sessions popgate opens to one next hop: at most this many answers are in flight at a kill. */
const SESSIONS = 4;

interface CrashWorld {
  dns: TestDns;
  sink: Sink;
  dir: string;
  data: string;
  config: string;
  /** Every server process this test started (killed at the end if still running). */
  children: ChildProcess[];
  start(): Promise<ServerProcess>;
}

let world: CrashWorld | undefined;

afterEach(async () => {
  if (!world) return;
  for (const child of world.children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
  }
  await world.sink.close();
  await world.dns.close();
  rmSync(world.dir, { recursive: true, force: true });
  world = undefined;
});

/** A DNS zone sending remote.example to a sink on 127.0.0.2, and a config for popgate. */
async function startCrashWorld(): Promise<CrashWorld> {
  const dns = await startDns({
    'remote.example': { MX: [[10, 'mx.remote.example']] },
    'mx.remote.example': { A: ['127.0.0.2'] },
  });
  const sink = await startSink({ host: '127.0.0.2' });
  const dir = mkdtempSync(join(tmpdir(), 'popgate-outbound-crash-'));
  const data = join(dir, 'data');
  const config = writeConfig(
    dir,
    [
      'hostname = "mail.example.test"',
      `data_dir = "${data}"`,
      'shutdown_grace = "1s"',
      // One process, so "killed" means every process that delivers is gone at that moment
      // (test/workers.test.ts covers killing workers).
      '[server]',
      'workers = 1',
      '[pop3]',
      'listen = ["127.0.0.1:0"]',
      '[smtp]',
      'listen = []',
      '[dns]',
      `servers = ["${dns.address}"]`,
      'timeout = "2s"',
      '[outbound]',
      'enabled = true',
      `port = ${sink.port}`,
      'retry_schedule = ["300ms"]',
      'connect_timeout = "2s"',
      'command_timeout = "10s"',
      `max_connections_per_domain = ${SESSIONS}`,
      '',
    ].join('\n'),
  );
  const created: CrashWorld = {
    dns,
    sink,
    dir,
    data,
    config,
    children: [],
    async start() {
      const server = await spawnServer(config);
      created.children.push(server.child);
      return server;
    },
  };
  world = created;
  return created;
}

/** Queues `count` messages, one recipient each, as SMTP would have after 250; returns their subjects. */
async function prefill(data: string, count: number, tag: string): Promise<string[]> {
  const queue = new OutboundQueue(new Spool(data), SqliteQueueStore.open(data), silentLogger());
  const subjects: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const subject = `${tag} ${i} ${Spool.newId()}`;
      subjects.push(subject);
      const message = `From: Alice <alice@example.test>\r\nTo: user${i}@remote.example\r\nSubject: ${subject}\r\nMessage-ID: <${tag}.${i}@example.test>\r\n\r\nMessage ${i} of ${count}.\r\n`;
      await queue.enqueue({ id: Spool.newId(), from: 'alice@example.test', to: [`user${i}@remote.example`], receivedAt: Date.now(), clientIp: '192.0.2.10', authorizedUser: 'alice@example.test' }, Buffer.from(message));
    }
  } finally {
    await queue.close();
  }
  return subjects;
}

function subjectOf(message: ReceivedMessage): string {
  return /^Subject: (.*)\r$/m.exec(message.data.toString('utf8'))?.[1] ?? '';
}

/** The spool entries (envelopes) and stray message files left in data_dir/queue. */
function spoolFiles(data: string): { envelopes: string[]; messages: string[] } {
  let names: string[] = [];
  try {
    names = readdirSync(join(data, 'queue'));
  } catch {
    // no queue folder: nothing spooled
  }
  return { envelopes: names.filter((n) => n.endsWith('.json')), messages: names.filter((n) => n.endsWith('.eml')) };
}

function parseLogLine(line: string): Record<string, unknown> {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return {};
  }
}

function count(subjects: string[], messages: ReceivedMessage[]): Map<string, number> {
  const arrivals = new Map(subjects.map((s) => [s, 0]));
  for (const message of messages) {
    const subject = subjectOf(message);
    if (arrivals.has(subject)) arrivals.set(subject, arrivals.get(subject)! + 1);
  }
  return arrivals;
}

/** Lets a restarted server drain the queue, stops it, and checks spool and index are empty. */
async function drainAndCheck(crash: CrashWorld, subjects: string[], hint: string): Promise<ServerProcess> {
  const server = await crash.start();
  try {
    await until(() => [...count(subjects, crash.sink.messages).values()].every((n) => n > 0), 20_000, `every message at the sink (${hint})`);
    await until(() => spoolFiles(crash.data).envelopes.length === 0, 10_000, `an empty spool (${hint})`);
  } catch (error) {
    throw new Error(`${(error as Error).message}\n--- server output ---\n${server.output.slice(-30).join('\n')}`);
  }
  server.child.kill('SIGTERM');
  assert.equal(await exited(server.child), 0, 'a clean stop after draining');
  assert.deepEqual(spoolFiles(crash.data), { envelopes: [], messages: [] }, `nothing left in the spool, not even a stray .eml (${hint})`);
  const store = SqliteQueueStore.open(crash.data);
  try {
    assert.deepEqual(await store.list(), [], `the queue index is empty (${hint})`);
  } finally {
    await store.close();
  }
  return server;
}

describe('kill -9 during delivery loses nothing', () => {
  test('killed while the next hop holds the answer to DATA: every message is sent again after the restart', { timeout: 60_000 }, async () => {
    const crash = await startCrashWorld();
    const subjects = await prefill(crash.data, MESSAGES, 'held');

    // The sink keeps every DATA answer waiting until the test lets go.
    const held = new Set<ReceivedMessage>();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let firstHeld!: () => void;
    const inFlight = new Promise<void>((resolve) => (firstHeld = resolve));
    crash.sink.behaviour.hold = (message) => {
      held.add(message);
      firstHeld();
      return gate;
    };

    const first = await crash.start();
    await inFlight;
    first.child.kill('SIGKILL');
    await exited(first.child);
    assert.ok(held.size >= 1 && held.size <= SESSIONS, `1 to ${SESSIONS} messages were in flight at the kill (${held.size})`);
    assert.equal(crash.sink.messages.length, 0, 'no DATA was answered before the kill');
    assert.equal(spoolFiles(crash.data).envelopes.length, MESSAGES, 'a message without an answer stays in the spool');
    const index = SqliteQueueStore.open(crash.data);
    const leased = (await index.list()).filter((m) => m.leaseOwner !== undefined);
    await index.close();
    assert.ok(leased.length >= held.size, 'what the killed process was delivering is still leased to it');

    // The sink answers now, to a connection nobody is listening to any more: popgate never
    // saw a 250 for these, so it must send them again.
    crash.sink.behaviour.hold = undefined;
    release();
    await drainAndCheck(crash, subjects, 'after a kill with DATA pending');

    const afterRestart = crash.sink.messages.filter((m) => !held.has(m));
    const delivered = count(subjects, afterRestart);
    for (const [subject, n] of delivered) assert.equal(n, 1, `"${subject}" arrives exactly once from the restarted server`);
    const total = count(subjects, crash.sink.messages);
    const heldSubjects = new Set([...held].map(subjectOf));
    for (const [subject, n] of total) {
      assert.equal(n, heldSubjects.has(subject) ? 2 : 1, `"${subject}": only a message whose answer was in flight at the kill is duplicated`);
    }
  });

  test('killed at random moments while messages flow (seeded; POPGATE_CRASH_SEED replays a run)', { timeout: 90_000 }, async () => {
    const seed = Number(process.env.POPGATE_CRASH_SEED ?? (Date.now() % 0x7fffffff) + 1);
    const rng = new Xorshift32(seed);
    const hint = `seed ${seed}`;
    const crash = await startCrashWorld();
    const messages = 30;
    const subjects = await prefill(crash.data, messages, 'random');
    const kills = 3;

    let arrivalsThisRun = 0;
    let onArrival: (() => void) | undefined;
    crash.sink.behaviour.data = () => {
      arrivalsThisRun++;
      onArrival?.();
      return undefined;
    };

    for (let round = 0; round < kills; round++) {
      arrivalsThisRun = 0;
      // Kill a few milliseconds after the k-th message of this run reaches the sink: anywhere
      // between the sink's 250, the index update, and the removal of the spool files.
      const k = 1 + rng.below(8);
      const delayMs = rng.below(12);
      const server = await crash.start();
      onArrival = () => {
        if (arrivalsThisRun === k) setTimeout(() => server.child.kill('SIGKILL'), delayMs);
      };
      const deadline = Date.now() + 20_000;
      while (server.child.exitCode === null && server.child.signalCode === null && spoolFiles(crash.data).envelopes.length > 0) {
        assert.ok(Date.now() < deadline, `round ${round} made no progress (${hint})\n${server.output.slice(-20).join('\n')}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      server.child.kill('SIGKILL'); // the queue drained before the k-th arrival: kill it anyway
      await exited(server.child);
      onArrival = undefined;
    }

    await drainAndCheck(crash, subjects, hint);
    const total = count(subjects, crash.sink.messages);
    for (const [subject, n] of total) assert.ok(n >= 1, `"${subject}" arrived (${hint})`);
    const duplicates = [...total.values()].reduce((sum, n) => sum + n - 1, 0);
    // A duplicate needs a 250 the killed process had not recorded yet: at most one per session per kill.
    assert.ok(duplicates <= kills * SESSIONS, `${duplicates} duplicates for ${kills} kills (${hint})`);
  });

  test('recovery indexes spooled messages whose index rows are gone, and they are still delivered', { timeout: 60_000 }, async () => {
    const crash = await startCrashWorld();
    const subjects = await prefill(crash.data, MESSAGES, 'reindex');
    const first = await crash.start();
    // Kill as the fifth message arrives at the sink, then throw the whole index away.
    let arrivals = 0;
    crash.sink.behaviour.data = () => {
      if (++arrivals === 5) first.child.kill('SIGKILL');
      return undefined;
    };
    await exited(first.child);
    crash.sink.behaviour.data = undefined;
    const left = spoolFiles(crash.data).envelopes.length;
    assert.ok(left > 0 && left < MESSAGES, `part of the queue was delivered before the kill (${left} of ${MESSAGES} left)`);
    for (const name of readdirSync(join(crash.data, 'queue')).filter((n) => n.startsWith('index.sqlite'))) rmSync(join(crash.data, 'queue', name));

    const server = await drainAndCheck(crash, subjects, 'after losing the index');
    const recovered = server.output.map(parseLogLine).find((entry) => entry.event === 'queue_recovered');
    assert.ok(recovered, 'the restart logs the recovery');
    assert.equal(recovered.indexed, left, 'every spooled message was indexed again from its files');
    for (const [subject, n] of count(subjects, crash.sink.messages)) assert.ok(n >= 1, `"${subject}" arrived`);
  });
});
