import type { GreylistStore, TripletRecord } from '../filter/greylist.ts';
import { LuaScript, type RedisConnection } from './client.ts';

// Greylisted triplets and remembered client networks in Redis, so a retry is recognised
// whichever node of the cluster it reaches.
//
// `<prefix>greylist:<triplet>`: a string "firstSeen:passed:expiresAt" (ms; passed 0 or 1).
// `<prefix>greylist-network:<network>`: a string, the end of the network's memory (ms).
// Each key's TTL runs to its expiry, counted from the caller's `now` like every time here, so
// Redis drops it when lookups stop counting it; the expiry in the value is what lookups judge.
// A lookup is one MGET; the writes that must read first are one script each.

const TRIPLET = 'greylist';
const NETWORK = 'greylist-network';

// KEYS[1]: a triplet. ARGV: now, expiresAt, TTL (ms). A record live at now is kept; else a
// waiting record is written. Returns the record live afterwards.
const RECORD_ATTEMPT = new LuaScript(`
local current = redis.call('GET', KEYS[1])
if current then
  local expires = tonumber(string.match(current, ':(%d+)$'))
  if expires and expires > tonumber(ARGV[1]) then return current end
end
local record = ARGV[1] .. ':0:' .. ARGV[2]
redis.call('SET', KEYS[1], record, 'PX', ARGV[3])
return record
`);

// KEYS[1]: a triplet, KEYS[2]: its network. ARGV: now, until, TTL (ms). Marks the triplet
// passed (keeping the first-seen time of a record live at now) and remembers the network.
const RECORD_PASS = new LuaScript(`
local first = ARGV[1]
local current = redis.call('GET', KEYS[1])
if current then
  local seen, expires = string.match(current, '^(%d+):%d:(%d+)$')
  if seen and tonumber(expires) > tonumber(ARGV[1]) then first = seen end
end
redis.call('SET', KEYS[1], first .. ':1:' .. ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 0
`);

/** The record a triplet's value holds, if it is live at `now`. */
function parseTriplet(value: string | null, now: number): TripletRecord | undefined {
  const match = value === null ? null : /^(\d+):([01]):(\d+)$/.exec(value);
  if (!match) return undefined;
  const record = { firstSeen: Number(match[1]), passed: match[2] === '1', expiresAt: Number(match[3]) };
  return record.expiresAt > now ? record : undefined;
}

/** A TTL for PX: Redis refuses 0, and a record already expired by `now` is never counted anyway. */
const ttl = (until: number, now: number) => Math.max(1, until - now);

export class RedisGreylistStore implements GreylistStore {
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
  }

  async lookup(triplet: string, network: string, now: number): Promise<{ triplet?: TripletRecord; networkUntil?: number }> {
    const [tripletValue, networkValue] = await this.#redis.client.mGet([this.#redis.key(TRIPLET, triplet), this.#redis.key(NETWORK, network)]);
    const networkUntil = networkValue === null ? undefined : Number(networkValue);
    return { triplet: parseTriplet(tripletValue, now), networkUntil: networkUntil !== undefined && networkUntil > now ? networkUntil : undefined };
  }

  async recordAttempt(triplet: string, now: number, expiresAt: number): Promise<TripletRecord> {
    const value = (await this.#redis.run(RECORD_ATTEMPT, [this.#redis.key(TRIPLET, triplet)], [now, expiresAt, ttl(expiresAt, now)])) as string;
    const record = parseTriplet(value, now);
    if (!record) throw new Error(`unexpected greylist record in Redis for ${triplet}: ${JSON.stringify(value)}`);
    return record;
  }

  async recordPass(triplet: string, network: string, now: number, until: number): Promise<void> {
    await this.#redis.run(RECORD_PASS, [this.#redis.key(TRIPLET, triplet), this.#redis.key(NETWORK, network)], [now, until, ttl(until, now)]);
  }

  async rememberNetwork(network: string, now: number, until: number): Promise<void> {
    await this.#redis.client.set(this.#redis.key(NETWORK, network), String(until), { expiration: { type: 'PX', value: ttl(until, now) } });
  }

  /** Nothing to do: Redis drops each key when its TTL runs out, when lookups stop counting it anyway. */
  async sweep(_now: number): Promise<void> {}
}
