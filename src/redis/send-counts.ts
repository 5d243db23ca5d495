import { randomHex } from '../mail/random.ts';
import type { SendLimitStore, SendUsage } from '../policy/send-limits.ts';
import { compareText, LuaScript, type RedisConnection } from './client.ts';

// Relayed messages per user in Redis, so the sending limits hold across every node.
//
// `<prefix>sent:<user>`: a sorted set of the user's relayed messages of the last day, scored by
// their time (ms), each member "<time>:<recipients>:<random>". Recording drops the messages
// older than a day and sets the key's TTL to a day, so Redis drops the set a day after the
// user's last message. The hour and day that end at the caller's `now` are counted at lookup.

const FAMILY = 'sent';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

// KEYS[1]: a user's messages. ARGV: hour start, day start (exclusive). Returns the messages
// later than each, and the recipients of those within the day: one round trip, a small reply.
const USAGE = new LuaScript(`
local hour_start, day_start = tonumber(ARGV[1]), ARGV[2]
local hour, day, recipients = 0, 0, 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. day_start, '+inf')) do
  local at, count = string.match(member, '^(%d+):(%d+):')
  day = day + 1
  recipients = recipients + tonumber(count)
  if tonumber(at) > hour_start then hour = hour + 1 end
end
return { hour, day, recipients }
`);

export class RedisSendLimitStore implements SendLimitStore {
  readonly #redis: RedisConnection;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
  }

  async record(user: string, recipients: number, now: number): Promise<void> {
    const key = this.#redis.key(FAMILY, user);
    // One MULTI: one round trip, applied as a whole.
    await this.#redis.client
      .multi()
      .zAdd(key, { score: now, value: `${now}:${recipients}:${randomHex(6)}` })
      .zRemRangeByScore(key, '-inf', now - DAY)
      .pExpire(key, DAY)
      .exec();
  }

  async usage(user: string, now: number): Promise<SendUsage> {
    const [hour, day, recipients] = (await this.#redis.run(USAGE, [this.#redis.key(FAMILY, user)], [now - HOUR, now - DAY])) as number[];
    return { user, messagesLastHour: hour, messagesLastDay: day, recipientsLastDay: recipients };
  }

  /** By SCAN over every user's key: for `popgate limits show`, not for a hot path. */
  async list(now: number): Promise<SendUsage[]> {
    const users: string[] = [];
    for await (const key of this.#redis.scan(FAMILY)) users.push(this.#redis.nameOf(FAMILY, key));
    const usages = await Promise.all(users.map((user) => this.usage(user, now)));
    return usages.filter((usage) => usage.messagesLastDay > 0).sort((a, b) => compareText(a.user, b.user));
  }

  async reset(user?: string): Promise<number> {
    const keys: string[] = [];
    if (user !== undefined) keys.push(this.#redis.key(FAMILY, user));
    else for await (const key of this.#redis.scan(FAMILY)) keys.push(key);
    const counts = await Promise.all(keys.map(async (key) => (await this.#redis.client.multi().zCard(key).del(key).exec())[0]));
    return counts.reduce((sum: number, count) => sum + Number(count), 0);
  }

  async sweep(now: number): Promise<void> {
    const pending: Promise<unknown>[] = [];
    for await (const key of this.#redis.scan(FAMILY)) pending.push(this.#redis.client.zRemRangeByScore(key, '-inf', now - DAY));
    await Promise.all(pending);
  }
}
