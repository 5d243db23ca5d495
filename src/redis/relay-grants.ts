import type { RelayAuthStore, RelayGrant } from '../relay-auth/store.ts';
import { compareText, LuaScript, type RedisConnection } from './client.ts';

// POP-before-SMTP grants in Redis, shared by every node: a POP3 login on one node writes the
// grant (one EVALSHA) before "+OK", and an SMTP RCPT on any node reads it (one HGETALL).
//
// Key `<prefix>grant:<key>` (key: an address or network, see relay-auth/key.ts) is a hash
// from user to "grantedAt:expiresAt" (ms). Whether a grant is live is judged at lookup against
// the caller's `now`; the key's TTL only lets Redis drop it once its last grant has expired
// (set from the caller's `now`, like every time here, so the clocks are the callers').

const FAMILY = 'grant';

// KEYS[1]: the grants of one key. ARGV: user, now, windowMs, renew ("1" sliding, "0" fixed).
// One script, so a fixed window's read-then-write cannot interleave with another login's.
// Also drops the key's other expired grants and sets the key's TTL to its last expiry.
const GRANT = new LuaScript(`
local now = tonumber(ARGV[2])
local granted, expires = now, now + tonumber(ARGV[3])
if ARGV[4] == '0' then
  local current = redis.call('HGET', KEYS[1], ARGV[1])
  if current then
    local was_granted, was_expires = string.match(current, '^(%d+):(%d+)$')
    if tonumber(was_expires) > now then
      granted, expires = tonumber(was_granted), tonumber(was_expires)
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', granted, expires))
local latest = expires
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local until_ = tonumber(string.match(all[i + 1], ':(%d+)$'))
  if until_ <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif until_ > latest then
    latest = until_
  end
end
redis.call('PEXPIRE', KEYS[1], latest - now)
return { granted, expires }
`);

// KEYS[1]: the grants of one key. ARGV: now. Deletes those expired by now; returns how many.
const SWEEP = new LuaScript(`
local now = tonumber(ARGV[1])
local removed = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(string.match(all[i + 1], ':(%d+)$')) <= now then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
return removed
`);

export class RedisRelayAuthStore implements RelayAuthStore {
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
  }

  async grant(key: string, user: string, now: number, windowMs: number, renew: boolean): Promise<RelayGrant> {
    const [grantedAt, expiresAt] = (await this.#redis.run(GRANT, [this.#redis.key(FAMILY, key)], [user, now, windowMs, renew ? '1' : '0'])) as [number, number];
    return { key, user, grantedAt, expiresAt };
  }

  async check(key: string, now: number): Promise<RelayGrant[]> {
    const grants = await this.#grantsOf(key);
    return grants.filter((grant) => grant.expiresAt > now).sort((a, b) => b.grantedAt - a.grantedAt || compareText(a.user, b.user));
  }

  async revoke(key: string, user?: string): Promise<number> {
    const redisKey = this.#redis.key(FAMILY, key);
    if (user !== undefined) return this.#redis.client.hDel(redisKey, user);
    const [count] = await this.#redis.client.multi().hLen(redisKey).del(redisKey).exec();
    return Number(count);
  }

  /** By SCAN over every grant key: for `popgate relay list`, not for a hot path. */
  async list(now: number): Promise<RelayGrant[]> {
    const keys: string[] = [];
    for await (const redisKey of this.#redis.scan(FAMILY)) keys.push(this.#redis.nameOf(FAMILY, redisKey));
    const grants = (await Promise.all(keys.map((key) => this.#grantsOf(key)))).flat();
    return grants.filter((grant) => grant.expiresAt > now).sort((a, b) => compareText(a.key, b.key) || compareText(a.user, b.user));
  }

  async sweep(now: number): Promise<number> {
    const removed: Promise<unknown>[] = [];
    for await (const redisKey of this.#redis.scan(FAMILY)) removed.push(this.#redis.run(SWEEP, [redisKey], [now]));
    return (await Promise.all(removed)).reduce((sum: number, count) => sum + Number(count), 0);
  }

  async #grantsOf(key: string): Promise<RelayGrant[]> {
    const fields = await this.#redis.client.hGetAll(this.#redis.key(FAMILY, key));
    return Object.entries(fields).map(([user, times]) => {
      const colon = times.indexOf(':');
      return { key, user, grantedAt: Number(times.slice(0, colon)), expiresAt: Number(times.slice(colon + 1)) };
    });
  }
}
