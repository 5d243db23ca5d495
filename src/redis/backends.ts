// What a node that shares its state in Redis builds, in one module: src/server/app.ts loads it
// only when `[cluster] redis` is set. The Redis client and its modules hold some 30 MB of memory
// in every process that loads them, and an embedded node (or each of its workers) needs none.
export { RedisConnection } from './client.ts';
export { RedisAccountEvents } from './account-events.ts';
export { RedisConnectionRegistry } from './connection-registry.ts';
export { RedisGreylistStore } from './greylist.ts';
export { RedisLoginFailureStore } from './login-failures.ts';
export { RedisMaildropLocks } from './maildrop-locks.ts';
export { RedisRelayAuthStore } from './relay-grants.ts';
export { RedisSendLimitStore } from './send-counts.ts';
