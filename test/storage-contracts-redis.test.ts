import { after, before, describe } from 'node:test';
import { silentLogger } from '../src/log/logger.ts';
import { RedisConnection } from '../src/redis/client.ts';
import { RedisConnectionRegistry } from '../src/redis/connection-registry.ts';
import { RedisLoginFailureStore } from '../src/redis/login-failures.ts';
import { RedisMaildropLocks } from '../src/redis/maildrop-locks.ts';
import { RedisRelayAuthStore } from '../src/redis/relay-grants.ts';
import { RedisSendLimitStore } from '../src/redis/send-counts.ts';
import type { OpenedStore } from './contracts/backend.ts';
import { connectionRegistryContract } from './contracts/connection-registry.ts';
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
  connectionRegistryContract('Redis', onRedis((connection) => new RedisConnectionRegistry(connection)));
  const LOCK_LEASE_MS = 300;
  maildropLocksContract('Redis', onRedis((connection) => new RedisMaildropLocks(connection, { leaseMs: LOCK_LEASE_MS }, silentLogger())), { leaseMs: LOCK_LEASE_MS });
});
