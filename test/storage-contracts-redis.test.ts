import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { AccountChange } from '../src/accounts/events.ts';
import { silentLogger } from '../src/log/logger.ts';
import { RedisAccountEvents } from '../src/redis/account-events.ts';
import { RedisConnection } from '../src/redis/client.ts';
import { RedisConnectionRegistry } from '../src/redis/connection-registry.ts';
import { RedisGreylistStore } from '../src/redis/greylist.ts';
import { RedisLoginFailureStore } from '../src/redis/login-failures.ts';
import { RedisMaildropLocks } from '../src/redis/maildrop-locks.ts';
import { RedisRelayAuthStore } from '../src/redis/relay-grants.ts';
import { RedisSendLimitStore } from '../src/redis/send-counts.ts';
import { accountEventsContract } from './contracts/account-events.ts';
import type { OpenedStore } from './contracts/backend.ts';
import { connectionRegistryContract } from './contracts/connection-registry.ts';
import { greylistStoreContract } from './contracts/greylist-store.ts';
import { loginFailureStoreContract } from './contracts/login-failure-store.ts';
import { maildropLocksContract } from './contracts/maildrop-locks.ts';
import { relayAuthStoreContract } from './contracts/relay-auth-store.ts';
import { sendLimitStoreContract } from './contracts/send-limit-store.ts';
import { missingEngine, startRedis, type RunningEngine } from './helpers/engines.ts';

// Every storage contract that a Redis backend implements, against a private redis-server.
// Each test opens its stores under a key prefix of its own, so tests never see each other's
// keys; reopen() opens a second connection under the same prefix, as another node would.

describe('Redis backends', { skip: missingEngine('redis-server') }, () => {
  let redis: RunningEngine;
  let tests = 0;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis?.destroy());

  /** A fresh key prefix per test; each instance gets its own connection to Redis. */
  function onRedis<Store>(make: (connection: RedisConnection) => Store & { close?: () => Promise<void> }): () => Promise<OpenedStore<Store>> {
    return async () => {
      const keyPrefix = `popgate-test-${++tests}:`;
      const opened: { connection: RedisConnection; store: Store & { close?: () => Promise<void> } }[] = [];
      const instance = async () => {
        const connection = await RedisConnection.open({ url: redis.url, keyPrefix }, silentLogger());
        const store = make(connection);
        opened.push({ connection, store });
        return store;
      };
      return {
        store: await instance(),
        reopen: instance,
        close: async () => {
          for (const { connection, store } of opened) {
            await store.close?.();
            await connection.close();
          }
        },
      };
    };
  }

  relayAuthStoreContract('Redis', onRedis((connection) => new RedisRelayAuthStore(connection)));
  loginFailureStoreContract('Redis', onRedis((connection) => new RedisLoginFailureStore(connection)));
  sendLimitStoreContract('Redis', onRedis((connection) => new RedisSendLimitStore(connection)));
  greylistStoreContract('Redis', onRedis((connection) => new RedisGreylistStore(connection)));
  accountEventsContract('Redis', onRedis((connection) => new RedisAccountEvents(connection, silentLogger())));
  connectionRegistryContract('Redis', onRedis((connection) => new RedisConnectionRegistry(connection)));
  const LOCK_LEASE_MS = 300;
  maildropLocksContract('Redis', onRedis((connection) => new RedisMaildropLocks(connection, { leaseMs: LOCK_LEASE_MS }, silentLogger())), { leaseMs: LOCK_LEASE_MS });

  test('account changes: announcements that are not ours (not JSON, unknown kind, too long) are ignored', async () => {
    const connection = await RedisConnection.open({ url: redis.url, keyPrefix: `popgate-test-${++tests}:` }, silentLogger());
    try {
      const events = new RedisAccountEvents(connection, silentLogger());
      const received: AccountChange[] = [];
      await events.subscribe((change) => received.push(change));
      const channel = `${connection.prefix}account-changes`;
      for (const message of ['not json', '{"kind":"everything","subject":"x"}', '{"kind":"user"}', '[]', JSON.stringify({ kind: 'user', subject: 'a'.repeat(2000) })]) {
        await connection.client.publish(channel, message);
      }
      await events.publish({ kind: 'user', subject: 'alice@example.test' });
      const deadline = Date.now() + 5000;
      while (received.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.deepEqual(received, [{ kind: 'user', subject: 'alice@example.test' }], 'only the well-formed one, after the others');
    } finally {
      await connection.close();
    }
  });
});
