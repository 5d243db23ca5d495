import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { LocalAccountEvents } from '../src/accounts/events.ts';
import { PostgresAccountStore } from '../src/postgres/accounts.ts';
import { migrate } from '../src/postgres/migrate.ts';
import { createPool, type PoolOptions } from '../src/postgres/pool.ts';
import { PostgresQueueStore } from '../src/postgres/queue-index.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { capturingLogger } from './helpers/outbound.ts';
import { freshSchema } from './helpers/postgres.ts';

// PostgreSQL going away under running stores: every method rejects with an error within a few
// seconds (never hangs, never crashes the process, no unhandled rejection), and the same store
// objects work again once the server is back, without being reopened. Twice: a server that
// stopped (connections refused) and one that froze (connections accepted, nothing answered).
// A write the client gave up on while the server was frozen may still be carried out when it
// wakes (it was sent, only the answer never came), so the frozen case checks that the stores
// work afterwards, not what the state is.

const PASSWORD = 'correct horse battery';
/** Generous for a noisy machine: the pool's own limits are a second or two. */
const PROMPT_MS = 10_000;

let engine: RunningEngine & { socketDir: string };
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => void unhandled.push(reason);

interface Node {
  pool: pg.Pool;
  accounts: PostgresAccountStore;
  queue: PostgresQueueStore;
  lines: Record<string, unknown>[];
  close(): Promise<void>;
}

/** One node's stores on a pool of their own, on a fresh schema with a populated directory and queue. */
async function openNode(options: PoolOptions): Promise<Node> {
  const schema = await freshSchema(engine);
  const { log, lines } = capturingLogger();
  const pool = createPool(schema.url, log, options);
  await migrate(pool);
  const accounts = await PostgresAccountStore.open(pool, { events: new LocalAccountEvents(), log });
  const queue = new PostgresQueueStore(pool);
  await accounts.addDomain('example.test');
  await accounts.addUser('alice@example.test', PASSWORD);
  await accounts.addAlias('info@example.test', ['alice@example.test']);
  await queue.add({ id: 'Q1', from: 'alice@example.test', to: ['bob@remote.test'], receivedAt: Date.now(), clientIp: '192.0.2.7' }, 100);
  return {
    pool,
    accounts,
    queue,
    lines,
    async close() {
      await accounts.close();
      await pool.end();
      await schema.drop();
    },
  };
}

/** Every method of both stores, on names the stores have not remembered (a memo answers without the server). */
function everyMethod(node: Node): Record<string, () => Promise<unknown>> {
  const { accounts, queue } = node;
  const now = Date.now();
  return {
    addDomain: () => accounts.addDomain('new.test'),
    removeDomain: () => accounts.removeDomain('example.test'),
    listDomains: () => accounts.listDomains(),
    isLocalDomain: () => accounts.isLocalDomain('other.test'),
    addUser: () => accounts.addUser('carol@example.test', PASSWORD),
    setPassword: () => accounts.setPassword('alice@example.test', 'another password'),
    removeUser: () => accounts.removeUser('alice@example.test'),
    listUsers: () => accounts.listUsers(),
    getUser: () => accounts.getUser('alice@example.test'),
    authenticate: () => accounts.authenticate('alice@example.test', PASSWORD),
    setApopSecret: () => accounts.setApopSecret('alice@example.test', 'apop secret'),
    getApopSecret: () => accounts.getApopSecret('alice@example.test'),
    lookup: () => accounts.lookup('nobody@example.test'),
    sendableAddresses: () => accounts.sendableAddresses('alice@example.test'),
    addAlias: () => accounts.addAlias('sales@example.test', ['alice@example.test']),
    removeAlias: () => accounts.removeAlias('info@example.test'),
    listAliases: () => accounts.listAliases(),
    'queue.add': () => queue.add({ id: 'Q2', from: '', to: ['x@remote.test'], receivedAt: now, clientIp: '192.0.2.7' }, 10),
    'queue.ids': () => queue.ids(),
    'queue.claim': () => queue.claim(now, 10, 60_000, 'mx1/1/a'),
    'queue.releaseLeases': () => queue.releaseLeases(now, 'mx1/1/a'),
    'queue.nextDueAt': () => queue.nextDueAt(),
    'queue.get': () => queue.get('Q1'),
    'queue.list': () => queue.list(),
    'queue.recordAttempt': () => queue.recordAttempt('Q1', [], { attempts: 1, nextAttemptAt: now, warned: false }, now),
    'queue.retryNow': () => queue.retryNow(undefined, now),
    'queue.remove': () => queue.remove('Q1'),
  };
}

/** Runs every method at once; each must reject with an Error within PROMPT_MS. */
async function everyMethodRejects(node: Node): Promise<void> {
  const outcomes = await Promise.all(
    Object.entries(everyMethod(node)).map(async ([name, call]) => {
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), PROMPT_MS)));
      const outcome = await Promise.race([call().then(() => 'resolved', (error: unknown) => (error instanceof Error ? 'rejected' : 'rejected without an Error')), hung]);
      clearTimeout(timer);
      return { name, outcome, ms: Date.now() - started };
    }),
  );
  const wrong = outcomes.filter((o) => o.outcome !== 'rejected');
  assert.deepEqual(wrong, [], `every method rejects within ${PROMPT_MS} ms`);
}

/** The same objects answer again, without reopening anything, once the server is back. */
async function worksAgain(node: Node): Promise<void> {
  const { accounts, queue } = node;
  await accounts.addDomain('back.test');
  assert.ok((await accounts.listDomains()).includes('back.test'));
  await accounts.addUser('dave@back.test', PASSWORD);
  assert.deepEqual(await accounts.authenticate('dave@back.test', PASSWORD), { address: 'dave@back.test' });
  assert.deepEqual(await accounts.lookup('dave@back.test'), { kind: 'user' });
  await queue.add({ id: 'BACK', from: 'dave@back.test', to: ['bob@remote.test'], receivedAt: Date.now(), clientIp: '192.0.2.7' }, 10);
  assert.ok((await queue.claim(Date.now() + 1000, 10, 60_000, 'mx1/1/b')).some((m) => m.id === 'BACK'));
  assert.ok((await queue.releaseLeases(Date.now(), 'mx1/1/b')) >= 1);
}

/** The postmaster and its processes, as PostgreSQL wrote them down (postmaster.pid) and ps knows them. */
function serverProcesses(): number[] {
  const postmaster = Number(readFileSync(join(engine.socketDir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = spawnSync('ps', ['-o', 'pid=', '--ppid', String(postmaster)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  return [postmaster, ...children];
}

/** Signals each process; one that has exited meanwhile (a backend whose client left) is skipped. */
function signal(pids: number[], name: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }
}

describe('PostgreSQL stores when the server goes away', { skip: missingEngine('postgres') }, () => {
  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    engine = await startPostgres();
  });
  after(async () => {
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtException', onUnhandled);
    await engine?.destroy();
  });

  test('stopped: every method rejects promptly, the lost connections are logged, and the same stores work once it is back', async () => {
    const node = await openNode({});
    try {
      await engine.stop();
      await everyMethodRejects(node);
      await everyMethodRejects(node); // still failing, still promptly: nothing got stuck
      await engine.start();
      await worksAgain(node);
      assert.deepEqual(await node.accounts.listDomains(), ['back.test', 'example.test'], 'none of the failed changes happened');
      assert.deepEqual(await node.accounts.authenticate('alice@example.test', PASSWORD), { address: 'alice@example.test' });
      assert.deepEqual(await node.accounts.listAliases(), [{ alias: 'info@example.test', targets: ['alice@example.test'] }]);
      assert.deepEqual((await node.queue.list()).map((m) => [m.id, m.attempts]), [['Q1', 0], ['BACK', 0]]);
      assert.ok(
        node.lines.some((line) => line.event === 'postgres_connection_lost'),
        'the idle connections the server dropped were logged, not thrown',
      );
      assert.deepEqual(unhandled, [], 'no unhandled rejection or exception');
    } finally {
      await node.close();
    }
  });

  test('frozen (connections accepted, nothing answered): every method rejects within the timeouts, and works when it wakes', async () => {
    // Short limits keep the test quick; the defaults are a few seconds.
    const node = await openNode({ statementTimeoutMs: 1000, connectTimeoutMs: 1000 });
    // Connections the pool holds idle, and new ones alike, must give up.
    await Promise.all(Array.from({ length: 4 }, () => node.accounts.listDomains()));
    const processes = serverProcesses();
    try {
      signal(processes, 'SIGSTOP');
      await everyMethodRejects(node);
      signal(processes, 'SIGCONT');
      await worksAgain(node);
      assert.deepEqual(unhandled, [], 'no unhandled rejection or exception');
    } finally {
      // Awake before closing: ending the pool waits for its connections.
      signal(processes, 'SIGCONT');
      await node.close();
    }
  });
});
