import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { AccountChange } from '../src/accounts/events.ts';
import { RedisAccountEvents } from '../src/redis/account-events.ts';
import { RedisConnection } from '../src/redis/client.ts';
import { RedisConnectionRegistry } from '../src/redis/connection-registry.ts';
import { RedisGreylistStore } from '../src/redis/greylist.ts';
import { RedisLoginFailureStore } from '../src/redis/login-failures.ts';
import { RedisMaildropLocks } from '../src/redis/maildrop-locks.ts';
import { RedisRelayAuthStore } from '../src/redis/relay-grants.ts';
import { RedisSendLimitStore } from '../src/redis/send-counts.ts';
import { freePort, missingEngine, startRedis, type RunningEngine } from './helpers/engines.ts';

// The Redis backends when Redis goes away, against the real engine: while it is stopped every
// store method rejects promptly (no hang, no unhandled rejection, no crash); once it is started
// again the same store objects work again by themselves, and a subscriber hears changes again.

const TRIPLET = '192.0.2.0/24 "alice@example.test" "bob@example.net"';

/** Generous: a connection attempt gives up after 2 s; a hang is forever. */
const PROMPTLY_MS = 4000;

/** How an operation settled, and how long it took; a hang shows as 'hung' after 8 s. */
async function settle(operation: () => Promise<unknown>): Promise<{ outcome: 'resolved' | 'rejected' | 'hung'; ms: number; error?: unknown }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), 8000)));
  try {
    const outcome = await Promise.race([operation().then(() => 'resolved' as const), hung]);
    return { outcome, ms: Date.now() - started };
  } catch (error) {
    return { outcome: 'rejected', ms: Date.now() - started, error };
  } finally {
    clearTimeout(timer);
  }
}

/** Retries `attempt` until it succeeds, for at most `withinMs`; resolves to its result. */
async function eventually<T>(attempt: () => Promise<T>, withinMs: number): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

/** A logger whose lines are kept, to see what the stores said. */
function recordingLogger() {
  const lines: { event?: string; level: number }[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

describe('Redis backends when Redis goes away', { skip: missingEngine('redis-server') }, () => {
  let redis: RunningEngine;
  let connection: RedisConnection;
  let stores: ReturnType<typeof openStores>;
  const { log, lines } = recordingLogger();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  function openStores(redisConnection: RedisConnection) {
    return {
      grants: new RedisRelayAuthStore(redisConnection),
      failures: new RedisLoginFailureStore(redisConnection),
      sends: new RedisSendLimitStore(redisConnection),
      locks: new RedisMaildropLocks(redisConnection, { leaseMs: 600 }, log),
      registry: new RedisConnectionRegistry(redisConnection),
      events: new RedisAccountEvents(redisConnection, log),
      greylist: new RedisGreylistStore(redisConnection),
    };
  }

  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    redis = await startRedis();
    // A command timeout far longer than "promptly": what makes the stores fail at once while
    // Redis is down is that the client queues nothing offline, not the timeout (tested below).
    connection = await RedisConnection.open({ url: redis.url, keyPrefix: 'popgate-failure:', commandTimeoutMs: 30_000 }, log);
    stores = openStores(connection);
  });
  after(async () => {
    await stores?.locks.close();
    await connection?.close();
    await redis?.destroy();
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtException', onUnhandled);
  });

  /** Every method of every store, as a call with plausible arguments. */
  function everyMethod(now: number): [string, () => Promise<unknown>][] {
    const { grants, failures, sends, locks, registry, events, greylist } = stores;
    return [
      ['grants.grant', () => grants.grant('192.0.2.7', 'alice@example.test', now, 600_000, true)],
      ['grants.check', () => grants.check('192.0.2.7', now)],
      ['grants.revoke', () => grants.revoke('192.0.2.7')],
      ['grants.list', () => grants.list(now)],
      ['grants.sweep', () => grants.sweep(now)],
      ['failures.addFailure', () => failures.addFailure('ip 192.0.2.7', now, 60_000)],
      ['failures.lockOut', () => failures.lockOut('ip 192.0.2.7', now + 60_000, now)],
      ['failures.lockoutEnd', () => failures.lockoutEnd('ip 192.0.2.7')],
      ['failures.list', () => failures.list(now, 60_000)],
      ['failures.reset', () => failures.reset()],
      ['failures.sweep', () => failures.sweep(now)],
      ['sends.record', () => sends.record('alice@example.test', 1, now)],
      ['sends.usage', () => sends.usage('alice@example.test', now)],
      ['sends.list', () => sends.list(now)],
      ['sends.reset', () => sends.reset()],
      ['sends.sweep', () => sends.sweep(now)],
      ['locks.acquire', () => locks.acquire('alice@example.test')],
      ['registry.admit', () => registry.admit('pop3', '192.0.2.7', 'node-1', 'c1', 5, now)],
      ['registry.release', () => registry.release('pop3', '192.0.2.7', 'node-1', 'c1')],
      ['registry.heartbeat', () => registry.heartbeat('node-1', now, 15_000)],
      ['registry.takeToken', () => registry.takeToken('pop3', '192.0.2.7', 60, now)],
      ['events.publish', () => events.publish({ kind: 'user', subject: 'alice@example.test' })],
      ['greylist.lookup', () => greylist.lookup(TRIPLET, '192.0.2.0/24', now)],
      ['greylist.recordAttempt', () => greylist.recordAttempt(TRIPLET, now, now + 600_000)],
      ['greylist.recordPass', () => greylist.recordPass(TRIPLET, '192.0.2.0/24', now, now + 600_000)],
      ['greylist.rememberNetwork', () => greylist.rememberNetwork('192.0.2.0/24', now, now + 600_000)],
    ];
  }

  test('while Redis is stopped every store method rejects promptly; nothing hangs or crashes; then the same objects work again', async () => {
    const heard: AccountChange[] = [];
    await stores.events.subscribe((change) => heard.push(change));
    const held = await stores.locks.acquire('held@example.test');
    assert.ok(held);
    for (const [name, call] of everyMethod(Date.now())) assert.equal((await settle(call)).outcome, 'resolved', `${name} works before`);

    // Operations in flight at the moment Redis dies settle too.
    const inFlight = Array.from({ length: 50 }, (_, i) => {
      const methods = everyMethod(Date.now());
      return settle(methods[i % methods.length][1]);
    });
    await redis.stop();
    for (const result of await Promise.all(inFlight)) assert.notEqual(result.outcome, 'hung');

    const methods = everyMethod(Date.now());
    const results = await Promise.all(methods.map(([, call]) => settle(call)));
    for (const [i, [name]] of methods.entries()) {
      const result = results[i];
      assert.equal(result.outcome, 'rejected', `${name} rejects while Redis is down`);
      assert.ok(result.ms < PROMPTLY_MS, `${name} rejected after ${result.ms} ms`);
      assert.ok(result.error instanceof Error, `${name} rejects with an Error`);
    }
    // Releasing a lock cannot fail the session that ends: it logs and leaves the lease to run out.
    const release = await settle(held);
    assert.equal(release.outcome, 'resolved');
    assert.ok(release.ms < PROMPTLY_MS);
    // A first subscription (a new connection) cannot be made either, and says so in time.
    const lateEvents = new RedisAccountEvents(connection, log);
    const lateSubscription = await settle(() => lateEvents.subscribe(() => {}));
    assert.equal(lateSubscription.outcome, 'rejected');
    assert.ok(lateSubscription.ms < PROMPTLY_MS);
    // Renewals of the lock held below keep failing quietly in the background meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 500));

    await redis.start();
    // The client reconnects by itself (backoff capped at 1 s); the stores are not recreated.
    await eventually(() => stores.grants.check('192.0.2.7', Date.now()), 10_000);
    const now = Date.now();
    for (const [name, call] of everyMethod(now)) {
      const result = await settle(call);
      assert.equal(result.outcome, 'resolved', `${name} works again: ${result.error}`);
    }
    // Redis restarted empty (no persistence): the scripts are loaded again on first use (NOSCRIPT → EVAL).
    assert.equal((await stores.grants.grant('192.0.2.9', 'bob@example.test', now, 600_000, true)).user, 'bob@example.test');
    assert.deepEqual((await stores.grants.check('192.0.2.9', now)).map((grant) => grant.user), ['bob@example.test']);
    const lock = await stores.locks.acquire('carol@example.test');
    assert.ok(lock);
    assert.equal(await stores.locks.acquire('carol@example.test'), undefined);
    await lock();
    assert.ok((await lateEvents.subscribe(() => {})) instanceof Function, 'a subscription that failed can be made now');

    // The subscriber resubscribed by itself: changes reach it again.
    await eventually(async () => {
      await stores.events.publish({ kind: 'domain', subject: 'back.example.test' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.ok(heard.some((change) => change.subject === 'back.example.test'));
    }, 10_000);

    assert.deepEqual(unhandled, [], 'no unhandled rejection or exception');
    const events = lines.map((line) => line.event);
    assert.ok(events.includes('redis_unavailable'), 'the loss was logged');
    assert.ok(events.includes('redis_available'), 'and the return');
    assert.ok(events.includes('maildrop_lock_release_failed'));
  });
});

describe('Redis that accepts connections but does not answer', { skip: missingEngine('redis-server') }, () => {
  let redis: RunningEngine;
  let proxy: Server;
  let proxyPort: number;
  const sockets = new Set<Socket>();
  /** Holds everything in both directions, as a stopped Redis behind a live TCP connection would (new connections too). */
  let stalled = false;
  const stall = (on: boolean) => {
    stalled = on;
    for (const socket of sockets) if (on) socket.pause();
    else socket.resume();
  };

  before(async () => {
    redis = await startRedis();
    proxyPort = await freePort();
    // A plain TCP relay to the real redis-server that can be made to stop relaying.
    proxy = createServer((client) => {
      const server = connect(redis.port, '127.0.0.1');
      sockets.add(client).add(server);
      if (stalled) {
        client.pause();
        server.pause();
      }
      client.on('data', (chunk) => server.write(chunk));
      server.on('data', (chunk) => client.write(chunk));
      for (const socket of [client, server]) {
        socket.on('error', () => {});
        socket.on('close', () => {
          client.destroy();
          server.destroy();
          sockets.delete(socket);
        });
      }
    });
    await new Promise<void>((resolve) => proxy.listen(proxyPort, '127.0.0.1', resolve));
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => proxy.close(resolve));
    await redis.destroy();
  });

  test('a command waiting for a reply is rejected after the command timeout; the connection works again once answers flow', async () => {
    const connection = await RedisConnection.open({ url: `redis://127.0.0.1:${proxyPort}`, keyPrefix: 'popgate-stall:', commandTimeoutMs: 500 }, pino({ level: 'silent' }));
    try {
      const grants = new RedisRelayAuthStore(connection);
      await grants.grant('192.0.2.7', 'alice@example.test', Date.now(), 600_000, true);
      stall(true);
      const result = await settle(() => grants.check('192.0.2.7', Date.now()));
      assert.equal(result.outcome, 'rejected');
      assert.ok(result.ms < PROMPTLY_MS, `rejected after ${result.ms} ms`);
      stall(false);
      assert.equal((await grants.check('192.0.2.7', Date.now())).length, 1);
    } finally {
      stall(false);
      await connection.close();
    }
  });

  test('opening a connection to a Redis that does not answer fails within the connect timeout, saying where', async () => {
    stall(true);
    try {
      const result = await settle(() => RedisConnection.open({ url: `redis://127.0.0.1:${proxyPort}`, connectTimeoutMs: 500 }, pino({ level: 'silent' })));
      assert.equal(result.outcome, 'rejected');
      assert.ok(result.ms < PROMPTLY_MS);
      assert.match(String(result.error), new RegExp(`cannot reach Redis at redis://127\\.0\\.0\\.1:${proxyPort}`));
    } finally {
      stall(false);
    }
  });

  test('a URL that is not a Redis URL is refused with a clear error, its password never shown', async () => {
    await assert.rejects(RedisConnection.open({ url: 'http://user:secret@127.0.0.1:6379' }, pino({ level: 'silent' })), (error: Error) => {
      assert.match(error.message, /expected a redis:\/\/ or rediss:\/\/ URL/);
      assert.doesNotMatch(error.message, /secret/);
      return true;
    });
    await assert.rejects(RedisConnection.open({ url: 'not a url' }, pino({ level: 'silent' })), /not a Redis URL/);
  });
});
