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
