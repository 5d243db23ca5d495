import type { Logger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';

// Slows and then stops password guessing. One guard is shared by every protocol that checks
// passwords (POP3 now, SMTP AUTH later), so failures count together whichever port they hit.

export interface LoginGuardSettings {
  /** Delay before answering a failed login; grows with each failure, up to 5x. */
  failureDelayMs: number;
  /** Failures within the window that lock the address out. */
  threshold: number;
  windowMs: number;
  lockoutMs: number;
  /** Networks never slowed or locked out (e.g. an office NAT the provider trusts). */
  trustedNetworks: readonly string[];
}

export type GuardVerdict = { locked: false } | { locked: true; retryAfterMs: number };

export interface LoginGuard {
  /** Asked before checking a password: a locked-out address gets no answer on its guess. */
  check(ip: string): Promise<GuardVerdict>;
  /** Records a failed login; returns how long to wait before replying. */
  failure(ip: string, user: string | undefined): Promise<{ delayMs: number; locked: boolean }>;
  /** A successful login is never slowed. */
  success(ip: string, user: string): Promise<void>;
}

interface Entry {
  failures: number[];
  lockedUntil: number;
}

const MAX_TRACKED = 100_000;

/** In-memory guard for the embedded server; a Redis guard can share counts across machines. */
export class MemoryLoginGuard implements LoginGuard {
  readonly #entries = new Map<string, Entry>();
  readonly #settings: LoginGuardSettings;
  readonly #trusted: NetworkList;
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(settings: LoginGuardSettings, log: Logger, now: () => number = Date.now) {
    this.#settings = settings;
    this.#trusted = new NetworkList(settings.trustedNetworks);
    this.#log = log;
    this.#now = now;
  }

  async check(ip: string): Promise<GuardVerdict> {
    const entry = this.#entries.get(ip);
    if (!entry) return { locked: false };
    const now = this.#now();
    if (entry.lockedUntil > now) return { locked: true, retryAfterMs: entry.lockedUntil - now };
    if (entry.lockedUntil !== 0) {
      entry.lockedUntil = 0;
      entry.failures = [];
      this.#log.info({ event: 'lockout_released', ip }, 'login lockout released');
    }
    return { locked: false };
  }

  async failure(ip: string, user: string | undefined): Promise<{ delayMs: number; locked: boolean }> {
    if (this.#trusted.has(ip)) return { delayMs: 0, locked: false };
    const now = this.#now();
    let entry = this.#entries.get(ip);
    if (!entry) {
      if (this.#entries.size >= MAX_TRACKED) this.#evict(now);
      entry = { failures: [], lockedUntil: 0 };
      this.#entries.set(ip, entry);
    }
    const since = now - this.#settings.windowMs;
    entry.failures = entry.failures.filter((t) => t > since);
    entry.failures.push(now);
    const count = entry.failures.length;
    let locked = false;
    if (count >= this.#settings.threshold && entry.lockedUntil <= now) {
      entry.lockedUntil = now + this.#settings.lockoutMs;
      locked = true;
      this.#log.warn({ event: 'lockout', ip, user, failures: count, lockoutMs: this.#settings.lockoutMs }, 'address locked out after failed logins');
    }
    return { delayMs: this.#settings.failureDelayMs * Math.min(count, 5), locked };
  }

  // Failures are not forgiven by a success: otherwise whoever holds one valid account could
  // interleave good logins with guesses at other accounts' passwords and never be locked out.
  // They age out of the window instead.
  async success(): Promise<void> {}

  #evict(now: number): void {
    for (const [ip, entry] of this.#entries) {
      if (entry.lockedUntil <= now && entry.failures.every((t) => t <= now - this.#settings.windowMs)) this.#entries.delete(ip);
    }
    // Under a flood of distinct addresses, forget the oldest rather than grow without bound.
    while (this.#entries.size >= MAX_TRACKED) this.#entries.delete(this.#entries.keys().next().value as string);
  }
}
