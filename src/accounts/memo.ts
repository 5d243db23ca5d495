import type { Logger } from '../log/logger.ts';
import type { AccountEvents } from './events.ts';
import type { LocalAddress } from './store.ts';

// Every MAIL and RCPT asks whether a domain is ours and what an address is; each answer is a
// query (several microseconds of locking on SQLite's WAL, a network round trip to PostgreSQL).
// What was found is remembered for a second. Only positive answers: an address or domain added
// anywhere is accepted at once. A store forgets everything when an account changes through it
// and when an AccountChange is announced (src/accounts/events.ts), so a removal is seen at once
// wherever the announcement reaches; without one (another process, no shared announcements) a
// removed address may still be accepted for up to a second.

/** How long a found domain or address is remembered, and for how many at most. */
const MEMO_MS = 1000;
const MEMO_LIMIT = 10_000;

export class FoundMemo {
  readonly #entries = new Map<string, { value: true | LocalAddress; until: number }>();

  /** True when the domain was found less than a second ago. */
  domain(domain: string): boolean {
    return this.#recent(`d:${domain}`) === true;
  }

  /** What the address was found to be less than a second ago, or undefined. */
  address(address: string): LocalAddress | undefined {
    const value = this.#recent(`a:${address}`);
    return value === true ? undefined : value;
  }

  foundDomain(domain: string): void {
    this.#found(`d:${domain}`, true);
  }

  foundAddress(address: string, what: LocalAddress): void {
    this.#found(`a:${address}`, what);
  }

  forget(): void {
    this.#entries.clear();
  }

  #recent(key: string): true | LocalAddress | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.until > Date.now()) return entry.value;
    this.#entries.delete(key);
    return undefined;
  }

  #found(key: string, value: true | LocalAddress): void {
    // Past the limit everything goes at once: cheaper than tracking the oldest, and refilled within a second.
    if (this.#entries.size >= MEMO_LIMIT) this.#entries.clear();
    this.#entries.set(key, { value, until: Date.now() + MEMO_MS });
  }
}

/**
 * Per-address settings read at every delivery (forwarding rules, vacation replies), remembered
 * for a second, absent ones too: most users have none, and "none" would otherwise be asked of
 * the store for every message. Unlike FoundMemo it forgets one address at a time, when its
 * setting changes (here or as announced from elsewhere).
 */
export class AddressMemo<T> {
  readonly #entries = new Map<string, { value: T | undefined; until: number }>();
  /** Moves on at every forget, so an answer read before a change is not remembered after it. */
  #generation = 0;

  /** The remembered answer ({ value }, possibly undefined), or undefined when it must be asked. */
  recall(address: string): { value: T | undefined } | undefined {
    const entry = this.#entries.get(address);
    if (!entry) return undefined;
    if (entry.until > Date.now()) return { value: entry.value };
    this.#entries.delete(address);
    return undefined;
  }

  /** The generation to hand back to remember() with the answer about to be asked. */
  get generation(): number {
    return this.#generation;
  }

  /** Remembers `value` unless something was forgotten since `askedAt` (the answer may predate a change). */
  remember(address: string, value: T | undefined, askedAt: number): void {
    if (askedAt !== this.#generation) return;
    // Past the limit everything goes at once, as in FoundMemo.
    if (this.#entries.size >= MEMO_LIMIT) this.#entries.clear();
    this.#entries.set(address, { value, until: Date.now() + MEMO_MS });
  }

  forget(address: string): void {
    this.#generation++;
    this.#entries.delete(address);
  }
}

/**
 * A per-address setting read at every delivery (forwarding rules, vacation replies) through an
 * AddressMemo, and every change of it announced as an AccountChange of `kind`, so every process
 * that hears it forgets that address at once. The stores that wrap theirs in one
 * (src/forwarding/cached.ts, src/vacation/cached.ts) say what goes through it.
 */
export class AnnouncedSettings<T> {
  readonly #kind: 'forwarding' | 'vacation';
  readonly #events: AccountEvents;
  readonly #log: Logger;
  readonly #memo = new AddressMemo<T>();
  #unsubscribe: () => void = () => {};

  /** Listening to `events` (rejects when they cannot be subscribed to). */
  static async open<T>(kind: 'forwarding' | 'vacation', events: AccountEvents, log: Logger): Promise<AnnouncedSettings<T>> {
    const settings = new AnnouncedSettings<T>(kind, events, log);
    settings.#unsubscribe = await events.subscribe((change) => {
      if (change.kind === kind) settings.#memo.forget(change.subject);
    });
    return settings;
  }

  private constructor(kind: 'forwarding' | 'vacation', events: AccountEvents, log: Logger) {
    this.#kind = kind;
    this.#events = events;
    this.#log = log;
  }

  /** The setting of `address`, remembered or asked of `read`. */
  async get(address: string, read: (address: string) => Promise<T | undefined>): Promise<T | undefined> {
    const known = this.#memo.recall(address);
    if (known) return known.value;
    const askedAt = this.#memo.generation;
    const value = await read(address);
    this.#memo.remember(address, value, askedAt);
    return value;
  }

  /** Runs `write`, then forgets and announces the address: also after a failed write, which may have reached the store before its error did. */
  async change<Result>(address: string, write: () => Promise<Result>): Promise<Result> {
    try {
      return await write();
    } finally {
      this.#memo.forget(address);
      const change = { kind: this.#kind, subject: address };
      try {
        await this.#events.publish(change);
      } catch (error) {
        this.#log.warn({ event: 'account_change_unannounced', change, err: error }, `a ${this.#kind} setting is stored but could not be announced to the other nodes`);
      }
    }
  }

  /** Stops listening to the announcements. */
  close(): void {
    this.#unsubscribe();
  }
}
