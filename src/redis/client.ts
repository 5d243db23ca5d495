import { createHash } from 'node:crypto';
import { createClient } from 'redis';
import type { Logger } from '../log/logger.ts';

// The connection every Redis backend shares: one client per process (node-redis pipelines the
// commands of concurrent callers over it), opened from a `redis://` URL.
//
// A store whose Redis goes away must answer promptly with an error, never hang and never take
// the process down, and must work again by itself when Redis is back:
// - `disableOfflineQueue`: while the client is reconnecting, a command is rejected at once
//   (ClientOfflineError) instead of being queued until Redis returns;
// - a per-command timeout that also covers a command already sent (`rejectInFlight`): a Redis
//   that accepts the connection but does not answer (stopped, overloaded, a half-open TCP
//   connection) fails the command after `commandTimeoutMs`;
// - a reconnect strategy that never gives up (a short backoff, capped), so the same client
//   object serves again as soon as Redis is back;
// - an 'error' listener: node-redis emits 'error' on every failed connection attempt, and an
//   EventEmitter without one would throw and end the process.
//
// Keys all start with a prefix ("popgate:" by default), so several popgate clusters (or the
// tests) can share one Redis, and `SCAN MATCH prefix*` finds only ours.

export type RedisClient = ReturnType<typeof createClient>;

export interface RedisSettings {
  /** `redis://[[user]:password@]host[:port][/db]` (or `rediss://` for TLS). */
  url: string;
  /** Put before every key; "popgate:" by default. */
  keyPrefix?: string;
  /** How long a command may wait for its reply before it is rejected (ms). */
  commandTimeoutMs?: number;
  /** How long opening the connection may take, at start and at each reconnection (ms). */
  connectTimeoutMs?: number;
}

export const DEFAULT_KEY_PREFIX = 'popgate:';
const DEFAULT_COMMAND_TIMEOUT_MS = 1000;
const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
/** Reconnection backoff: 50 ms doubling up to this, so a restarted Redis is found within a second. */
const MAX_RECONNECT_DELAY_MS = 1000;

/** The URL as it may be logged: without its password. */
function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/**
 * A Lua script run with EVALSHA, falling back to EVAL (which also loads it into Redis's script
 * cache) only when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH). The SHA1 is
 * computed once, here; the script text crosses the network only on that fallback.
 */
export class LuaScript {
  readonly source: string;
  readonly sha: string;

  constructor(source: string) {
    this.source = source;
    this.sha = createHash('sha1').update(source).digest('hex');
  }
}

/** One process's connection to Redis, with the key prefix and the helpers the stores share. */
export class RedisConnection {
  readonly client: RedisClient;
  readonly prefix: string;
  /** The URL without its password, for logs and errors. */
  readonly url: string;
  readonly #connectTimeoutMs: number;
  readonly #log: Logger;
  #lastError: Error | undefined;
  #subscribers: RedisClient[] = [];

  /**
   * Opens a client whose failures are handled as described above; resolves once it is ready.
   * Rejects (and lets the client go) when Redis cannot be reached within the connect timeout:
   * a server should not start on a wrong URL and log connection errors forever.
   */
  static async open(settings: RedisSettings, log: Logger): Promise<RedisConnection> {
    let parsed: URL;
    try {
      parsed = new URL(settings.url);
    } catch {
      throw new Error(`not a Redis URL: ${JSON.stringify(settings.url)}`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
      throw new Error(`expected a redis:// or rediss:// URL, got ${redactedUrl(settings.url)}`);
    }
    const connection = new RedisConnection(settings, log);
    await connection.#connect(connection.client);
    return connection;
  }

  private constructor(settings: RedisSettings, log: Logger) {
    this.#connectTimeoutMs = settings.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.client = createClient({
      url: settings.url,
      disableOfflineQueue: true,
      commandOptions: { timeout: settings.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, rejectInFlight: true },
      socket: {
        connectTimeout: this.#connectTimeoutMs,
        reconnectStrategy: (retries) => Math.min(50 * 2 ** Math.min(retries, 10), MAX_RECONNECT_DELAY_MS),
      },
    });
    this.prefix = settings.keyPrefix ?? DEFAULT_KEY_PREFIX;
    this.url = redactedUrl(settings.url);
    this.#log = log;
    this.#watch(this.client, 'commands');
  }

  /**
   * Logs the connection going down once (each retry after that only at debug level) and
   * coming back. Never throws: see the comment at the top.
   */
  #watch(client: RedisClient, role: 'commands' | 'subscriber'): void {
    let state: 'connecting' | 'up' | 'down' = 'connecting';
    client.on('error', (error: Error) => {
      this.#lastError = error;
      if (state === 'up') {
        state = 'down';
        this.#log.error({ event: 'redis_unavailable', redis: this.url, role, err: error }, 'Redis connection lost: shared state is unavailable until it is back');
      } else {
        this.#log.debug({ event: 'redis_retry', redis: this.url, role, err: error }, 'Redis unreachable');
      }
    });
    client.on('ready', () => {
      if (state === 'down') this.#log.info({ event: 'redis_available', redis: this.url, role }, 'Redis connection back');
      state = 'up';
    });
  }

  /**
   * Connects a client of this connection, resolving once Redis answers. node-redis's
   * connect() keeps retrying (the reconnect strategy) for as long as Redis is unreachable,
   * so the wait is bounded here; on timeout the client is let go and the error says why.
   */
  async #connect(client: RedisClient): Promise<void> {
    const connected = client.connect();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.#connectTimeoutMs + 500)));
    try {
      const outcome = await Promise.race([connected.then(() => 'ready' as const), timedOut]);
      if (outcome === 'timeout') {
        connected.catch(() => {}); // destroy() rejects it
        client.destroy();
        const cause = this.#lastError ? `: ${this.#lastError.message}` : '';
        throw new Error(`cannot reach Redis at ${this.url} within ${this.#connectTimeoutMs} ms${cause}`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** The full key of `name` in a family of keys, e.g. key('grant', '192.0.2.7') → "popgate:grant:192.0.2.7". */
  key(family: string, name: string): string {
    return `${this.prefix}${family}:${name}`;
  }

  /** The name part of a full key of `family` (what key() was given). */
  nameOf(family: string, key: string): string {
    return key.slice(this.prefix.length + family.length + 1);
  }

  /**
   * Every key of a family, by SCAN (never KEYS, which blocks Redis for as long as it runs).
   * For the CLI and housekeeping only: no hot path scans. SCAN may return a key twice; each
   * is yielded once.
   */
  async *scan(family: string): AsyncGenerator<string> {
    const seen = new Set<string>();
    const match = `${globEscape(this.prefix)}${globEscape(family)}:*`;
    for await (const keys of this.client.scanIterator({ MATCH: match, COUNT: 1000 })) {
      for (const key of keys) {
        if (seen.has(key)) continue;
        seen.add(key);
        yield key;
      }
    }
  }

  /** Runs a script (EVALSHA, EVAL on NOSCRIPT): one round trip unless Redis lost the script. */
  async run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown> {
    const options = { keys, arguments: args.map(String) };
    try {
      return await this.client.evalSha(script.sha, options);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return this.client.eval(script.source, options);
    }
  }

  /**
   * A second connection for SUBSCRIBE (a subscribed connection can run no other command),
   * with the same settings and the same handling of failures; closed with this one.
   */
  async subscriber(): Promise<RedisClient> {
    const client = this.client.duplicate();
    this.#watch(client, 'subscriber');
    this.#subscribers.push(client);
    try {
      await this.#connect(client);
    } catch (error) {
      this.#subscribers = this.#subscribers.filter((other) => other !== client);
      throw error;
    }
    return client;
  }

  /** Closes the connections: pending commands get their replies, or are rejected after a moment. */
  async close(): Promise<void> {
    await Promise.all([this.client, ...this.#subscribers].map((client) => closeClient(client)));
    this.#subscribers = [];
  }
}

/** close() waits for pending replies; a Redis that is gone would make it wait forever. */
async function closeClient(client: RedisClient): Promise<void> {
  if (!client.isOpen) return;
  let timer: NodeJS.Timeout | undefined;
  const closed = client.close();
  await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
  clearTimeout(timer);
  if (client.isOpen) client.destroy();
}

/** `text` matched literally by a SCAN MATCH glob. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** Text in the order SQLite's default (binary) collation gives it, as every backend lists. */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
