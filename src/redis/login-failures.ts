import { randomHex } from '../mail/random.ts';
import type { LockoutRow, LoginFailureStore } from '../policy/login-guard.ts';
import { compareText, LuaScript, type RedisConnection } from './client.ts';

// Failed logins and lockouts in Redis, so a guesser is counted the same on every node.
//
// `<prefix>login-failures:<key>`: a sorted set of failures, scored by their time (ms), each a
//   member of its own ("<time>:<random>", so two in one millisecond are two). Failures out of
//   the window are dropped when the next one is added; the key's TTL is the window, so Redis
//   drops the set once its newest failure has left it.
// `<prefix>login-lockout:<key>`: a string, the lockout's end (ms). Its TTL runs past that end
//   (see LOCKOUT_KEPT_MS), since an ended lockout must still be reported to the guard, which
//   then forgets the failures that caused it.
//
// Times come from the callers (`now`), and what counts is judged against them at lookup.

const FAILURES = 'login-failures';
const LOCKOUT = 'login-lockout';

/**
 * How long an ended lockout stays reported, beyond its end and beyond the failures that might
 * still count towards the next one: the guard sweeps (and the SQLite store forgets) ended
 * lockouts on the same scale.
 */
const LOCKOUT_KEPT_MS = 10 * 60_000;

// KEYS[1]: a key's failures. ARGV: now, window start (now - windowMs), windowMs, member.
// Resolves to the failures later than the window start, this one included.
const ADD_FAILURE = new LuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], '+inf')
`);

// KEYS[1]: a key's lockout, KEYS[2]: its failures. ARGV: until, now, how long an ended
// lockout is kept. A lockout live at now is kept as it is (returns 0); else it is replaced.
const LOCK_OUT = new LuaScript(`
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
local keep = math.max(tonumber(ARGV[1]) - tonumber(ARGV[2]), redis.call('PTTL', KEYS[2]), 0) + tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
return 1
`);

// KEYS[1]: a key's lockout. ARGV: before. Deletes it if it ended at or before then.
const SWEEP_LOCKOUT = new LuaScript(`
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return 0
`);

export class RedisLoginFailureStore implements LoginFailureStore {
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
  }

  async addFailure(key: string, now: number, windowMs: number): Promise<number> {
    const member = `${now}:${randomHex(6)}`;
    return Number(await this.#redis.run(ADD_FAILURE, [this.#redis.key(FAILURES, key)], [now, now - windowMs, windowMs, member]));
  }

  async lockOut(key: string, until: number, now: number): Promise<boolean> {
    const keys = [this.#redis.key(LOCKOUT, key), this.#redis.key(FAILURES, key)];
    return Number(await this.#redis.run(LOCK_OUT, keys, [until, now, LOCKOUT_KEPT_MS])) === 1;
  }

  async lockoutEnd(key: string): Promise<number | undefined> {
    const until = await this.#redis.client.get(this.#redis.key(LOCKOUT, key));
    return until === null ? undefined : Number(until);
  }

  /** By SCAN over every failure and lockout key: for `popgate limits show`, not for a hot path. */
  async list(now: number, windowMs: number): Promise<LockoutRow[]> {
    const rows = await Promise.all(
      [...(await this.#allKeys())].map(async (key): Promise<LockoutRow> => {
        const [failures, until] = await this.#redis.client
          .multi()
          .zCount(this.#redis.key(FAILURES, key), `(${now - windowMs}`, '+inf')
          .get(this.#redis.key(LOCKOUT, key))
          .exec();
        const lockedUntil = until === null ? undefined : Number(until);
        return { key, failures: Number(failures), lockedUntil: lockedUntil !== undefined && lockedUntil > now ? lockedUntil : undefined };
      }),
    );
    return rows.filter((row) => row.failures > 0 || row.lockedUntil !== undefined).sort((a, b) => compareText(a.key, b.key));
  }

  async reset(keys?: readonly string[]): Promise<{ failures: number; lockouts: number }> {
    const counts = await Promise.all(
      [...(keys ?? (await this.#allKeys()))].map(async (key) => {
        const failuresKey = this.#redis.key(FAILURES, key);
        const lockoutKey = this.#redis.key(LOCKOUT, key);
        const [failures, lockouts] = await this.#redis.client.multi().zCard(failuresKey).exists(lockoutKey).del([failuresKey, lockoutKey]).exec();
        return { failures: Number(failures), lockouts: Number(lockouts) };
      }),
    );
    return counts.reduce((sum, count) => ({ failures: sum.failures + count.failures, lockouts: sum.lockouts + count.lockouts }), { failures: 0, lockouts: 0 });
  }

  async sweep(before: number): Promise<void> {
    const pending: Promise<unknown>[] = [];
    for await (const key of this.#redis.scan(FAILURES)) pending.push(this.#redis.client.zRemRangeByScore(key, '-inf', before));
    for await (const key of this.#redis.scan(LOCKOUT)) pending.push(this.#redis.run(SWEEP_LOCKOUT, [key], [before]));
    await Promise.all(pending);
  }

  /** The keys (as the guard names them) that have failures or a lockout. */
  async #allKeys(): Promise<Set<string>> {
    const keys = new Set<string>();
    for (const family of [FAILURES, LOCKOUT]) {
      for await (const redisKey of this.#redis.scan(family)) keys.add(this.#redis.nameOf(family, redisKey));
    }
    return keys;
  }
}
