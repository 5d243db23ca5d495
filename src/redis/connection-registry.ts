import type { ConnectionRegistry } from '../net/connection-registry.ts';
import { LuaScript, type RedisConnection } from './client.ts';

// Connections per client address, and their rate, counted across every node in Redis.
//
// `<prefix>connections:<service>:<ip>`: a hash of the address's live connections on a
//   service, field "<holder> <id>", value the holder. Its TTL (CONNECTIONS_KEY_IDLE_MS) is
//   renewed at each admission: it only lets Redis forget an address nobody has connected
//   from for a long time.
// `<prefix>connection-holders`: a hash from holder (a process) to the end of its heartbeat's
//   lease (ms). A holder missing from it, or whose lease has ended at `now`, is dead. Each
//   heartbeat drops the holders that have lapsed by its `now`; no TTL.
// `<prefix>connection-rate:<service>:<ip>`: a hash (tokens, at) holding a token bucket. Its
//   TTL is the time it takes to fill up again: a missing bucket is a full one.
//
// Each operation is one round trip: admission and token taking are Lua scripts (atomic in
// Redis: no other command runs between their reads and writes), release is one HDEL. Times
// are the callers' `now`: holders' leases must be longer than the clocks of the nodes differ.

const CONNECTIONS = 'connections';
const HOLDERS = 'connection-holders';
const RATE = 'connection-rate';

/** How long the connections of an address are kept after its last admission. */
const CONNECTIONS_KEY_IDLE_MS = 24 * 3_600_000;

// KEYS[1]: the connections of a service and address, KEYS[2]: the holders.
// ARGV: holder, id, max, now, key idle TTL.
// Removes the entries of dead holders, counts the rest, and registers this one below max.
const ADMIT = new LuaScript(`
local now = tonumber(ARGV[4])
local alive = {}
local live = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local holder = entries[i + 1]
  if alive[holder] == nil then
    local until_ = redis.call('HGET', KEYS[2], holder)
    alive[holder] = until_ ~= false and tonumber(until_) > now
  end
  if alive[holder] then
    live = live + 1
  else
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
if live >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`);

// KEYS[1]: the holders. ARGV: holder, now, end of its lease.
const HEARTBEAT = new LuaScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local now = tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[1], all[i]) end
end
return 0
`);

// KEYS[1]: a bucket. ARGV: capacity (tokens a minute), now.
// Refills in proportion to the time since the bucket was last seen (never backwards: a node
// whose clock is behind refills nothing), then takes a token if there is a whole one.
const TAKE_TOKEN = new LuaScript(`
local capacity, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = capacity, now
if state[1] then
  tokens, at = tonumber(state[1]), tonumber(state[2])
  if now > at then
    tokens = math.min(capacity, tokens + (now - at) * capacity / 60000)
    at = now
  end
end
if tokens < 1 then return 0 end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%d', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) * 60000 / capacity))
return 1
`);

export class RedisConnectionRegistry implements ConnectionRegistry {
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
  }

  /** Counts only the connections of holders alive at `now`: a holder heartbeats before it admits. */
  async admit(service: string, ip: string, holder: string, id: string, max: number, now: number): Promise<boolean> {
    const keys = [this.#redis.key(CONNECTIONS, `${service}:${ip}`), this.#holders()];
    return Number(await this.#redis.run(ADMIT, keys, [holder, id, max, now, CONNECTIONS_KEY_IDLE_MS])) === 1;
  }

  async release(service: string, ip: string, holder: string, id: string): Promise<void> {
    await this.#redis.client.hDel(this.#redis.key(CONNECTIONS, `${service}:${ip}`), `${holder} ${id}`);
  }

  async heartbeat(holder: string, now: number, leaseMs: number): Promise<void> {
    await this.#redis.run(HEARTBEAT, [this.#holders()], [holder, now, now + leaseMs]);
  }

  async takeToken(service: string, ip: string, perMinute: number, now: number): Promise<boolean> {
    return Number(await this.#redis.run(TAKE_TOKEN, [this.#redis.key(RATE, `${service}:${ip}`)], [perMinute, now])) === 1;
  }

  /** The connection belongs to whoever opened it (RedisConnection.close). */
  async close(): Promise<void> {}

  #holders(): string {
    return `${this.#redis.prefix}${HOLDERS}`;
  }
}
