import type { AccountChange, AccountEvents } from '../accounts/events.ts';
import type { Logger } from '../log/logger.ts';
import type { RedisClient, RedisConnection } from './client.ts';

// Account changes announced to every node over Redis publish/subscribe, so what each node
// remembers about accounts is forgotten everywhere when the CLI changes one.
//
// Channel `<prefix>account-changes` (publish/subscribe channels are not keys: nothing is
// stored, and they ignore the database number, so the prefix is what keeps two clusters on
// one Redis apart). A message is the change as JSON, `{"kind":"user","subject":"a@b"}`.
// Subscribing takes a second connection (a subscribed connection runs no other command);
// node-redis subscribes again by itself when that connection comes back after Redis was
// gone. Changes published while a node was cut off are not replayed to it: what it remembers
// is kept for a second only, so by then it has forgotten it anyway.

const CHANNEL = 'account-changes';
/** Longer messages are not ours: a subject is a domain or an address (RFC 5321 §4.5.3.1: 256 octets for a path). */
const MAX_MESSAGE_LENGTH = 1024;
const KINDS: ReadonlySet<string> = new Set<AccountChange['kind']>(['domain', 'user', 'alias', 'password', 'apop', 'forwarding', 'vacation']);

export class RedisAccountEvents implements AccountEvents {
  readonly #redis: RedisConnection;
  readonly #log: Logger;
  readonly #channel: string;
  readonly #listeners = new Set<(change: AccountChange) => void>();
  /** The subscribed connection, once the first listener asked for it. */
  #subscriber: Promise<RedisClient> | undefined;

  constructor(redis: RedisConnection, log: Logger) {
    this.#redis = redis;
    this.#log = log;
    this.#channel = `${redis.prefix}${CHANNEL}`;
  }

  async publish(change: AccountChange): Promise<void> {
    await this.#redis.client.publish(this.#channel, JSON.stringify({ kind: change.kind, subject: change.subject }));
  }

  /** Rejects when Redis cannot be reached for the first subscription (a later call tries again). */
  async subscribe(listener: (change: AccountChange) => void): Promise<() => void> {
    this.#subscriber ??= this.#subscribeChannel();
    try {
      await this.#subscriber;
    } catch (error) {
      this.#subscriber = undefined;
      throw error;
    }
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  async #subscribeChannel(): Promise<RedisClient> {
    const subscriber = await this.#redis.subscriber();
    await subscriber.subscribe(this.#channel, (message) => this.#deliver(message));
    return subscriber;
  }

  #deliver(message: string): void {
    const change = parseChange(message);
    if (!change) {
      this.#log.warn({ event: 'account_change_malformed', channel: this.#channel, length: message.length }, 'ignored a malformed account change announcement');
      return;
    }
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (error) {
        this.#log.error({ event: 'account_change_listener_failed', err: error, change }, 'an account change listener failed');
      }
    }
  }
}

/** An announcement as published by publish(), or undefined for anything else. */
export function parseChange(message: string): AccountChange | undefined {
  if (message.length > MAX_MESSAGE_LENGTH) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { kind, subject } = value as Record<string, unknown>;
  if (typeof kind !== 'string' || !KINDS.has(kind) || typeof subject !== 'string') return undefined;
  return { kind: kind as AccountChange['kind'], subject };
}
