import type { Logger } from '../log/logger.ts';
import { LeasedMaildropLocks, type LeaseSettings, type LeaseStore } from '../mailstore/leased-locks.ts';
import { LuaScript, type RedisConnection } from './client.ts';

// Maildrop locks in Redis (RFC 1939 §8: one session per maildrop, across every node).
//
// `<prefix>maildrop-lock:<address>`: a string, the holder's token, with the lease as its TTL.
// Taking it is one `SET … NX PX lease`; renewing and releasing are scripts that act only
// while the key still holds our token (compare-and-expire, compare-and-delete), each atomic
// in Redis. A lock left by a process that died expires by itself with its TTL. Leases run on
// Redis's clock, the one clock every node shares.

const FAMILY = 'maildrop-lock';

// KEYS[1]: the lock. ARGV: token, lease (ms).
const RENEW = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`);

// KEYS[1]: the lock. ARGV: token.
const RELEASE = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`);

class RedisLeases implements LeaseStore {
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
  }

  async take(address: string, token: string, leaseMs: number): Promise<boolean> {
    return (await this.#redis.client.set(this.#redis.key(FAMILY, address), token, { condition: 'NX', expiration: { type: 'PX', value: leaseMs } })) === 'OK';
  }

  async renew(address: string, token: string, leaseMs: number): Promise<boolean> {
    return Number(await this.#redis.run(RENEW, [this.#redis.key(FAMILY, address)], [token, leaseMs])) === 1;
  }

  async release(address: string, token: string): Promise<void> {
    await this.#redis.run(RELEASE, [this.#redis.key(FAMILY, address)], [token]);
  }
}

export class RedisMaildropLocks extends LeasedMaildropLocks {
  constructor(redis: RedisConnection, settings: LeaseSettings, log: Logger) {
    super(new RedisLeases(redis), settings, log);
  }
}
