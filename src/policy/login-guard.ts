import type { Logger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';

// Slows and then stops password guessing. One guard is shared by every protocol that checks
// passwords (POP3 now, SMTP AUTH later), so failures count together whichever port they hit.

export interface LoginGuardSettings {
  /** Delay before answering a failed login; grows with each failure, up to 5x. */
  failureDelayMs: number;
  /** Failures within the window that lock the address out. */
  threshold: number;
  /**
   * Failures against one account, from any addresses, that lock the account out: a guessing
   * attack spread over many addresses (a botnet) is stopped too. Higher than the per-address
   * threshold, so one customer's broken mail program does not lock their account first.
   */
  accountThreshold: number;
  windowMs: number;
  lockoutMs: number;
  /** Networks never slowed or locked out (e.g. an office NAT the provider trusts). */
  trustedNetworks: readonly string[];
}

export type GuardVerdict = { locked: false } | { locked: true; retryAfterMs: number; scope: 'address' | 'account' };

export interface LoginGuard {
  /** Asked before checking a password: a locked-out address or account gets no answer on its guess. */
  check(ip: string, user?: string): Promise<GuardVerdict>;
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

  async check(ip: string, user?: string): Promise<GuardVerdict> {
    if (this.#trusted.has(ip)) return { locked: false };
    const byAddress = this.#verdict(`ip ${ip}`, { ip });
    if (byAddress.locked || !user) return byAddress;
    return this.#verdict(`user ${user.toLowerCase()}`, { user });
  }

  #verdict(key: string, subject: Record<string, string>): GuardVerdict {
    const entry = this.#entries.get(key);
    if (!entry) return { locked: false };
    const now = this.#now();
    if (entry.lockedUntil > now) return { locked: true, retryAfterMs: entry.lockedUntil - now, scope: key.startsWith('user ') ? 'account' : 'address' };
    if (entry.lockedUntil !== 0) {
      entry.lockedUntil = 0;
      entry.failures = [];
      this.#log.info({ event: 'lockout_released', ...subject }, 'login lockout released');
    }
    return { locked: false };
  }

  /** Counted per address and per account (POP3 and SMTP AUTH share this guard). */
  async failure(ip: string, user: string | undefined): Promise<{ delayMs: number; locked: boolean }> {
    if (this.#trusted.has(ip)) return { delayMs: 0, locked: false };
    const now = this.#now();
    const byAddress = this.#count(`ip ${ip}`, now, this.#settings.threshold, { ip, user });
    const byAccount = user ? this.#count(`user ${user.toLowerCase()}`, now, this.#settings.accountThreshold, { ip, user }) : { count: 0, locked: false };
    // The delay grows with whichever count is higher, so spreading guesses over addresses
    // does not avoid it.
    const count = Math.max(byAddress.count, byAccount.count);
    return { delayMs: this.#settings.failureDelayMs * Math.min(count, 5), locked: byAddress.locked || byAccount.locked };
  }

  #count(key: string, now: number, threshold: number, subject: { ip: string; user?: string }): { count: number; locked: boolean } {
    let entry = this.#entries.get(key);
    if (!entry) {
      if (this.#entries.size >= MAX_TRACKED) this.#evict(now);
      entry = { failures: [], lockedUntil: 0 };
      this.#entries.set(key, entry);
    }
    const since = now - this.#settings.windowMs;
    entry.failures = entry.failures.filter((t) => t > since);
    entry.failures.push(now);
    const count = entry.failures.length;
    let locked = false;
    if (count >= threshold && entry.lockedUntil <= now) {
      entry.lockedUntil = now + this.#settings.lockoutMs;
      locked = true;
      const what = key.startsWith('user ') ? 'account' : 'address';
      this.#log.warn({ event: 'lockout', scope: what, ...subject, failures: count, lockoutMs: this.#settings.lockoutMs }, `${what} locked out after failed logins`);
    }
    return { count, locked };
  }

  // Failures are not forgiven by a success: otherwise whoever holds one valid account could
  // interleave good logins with guesses at other accounts' passwords and never be locked out.
  // They age out of the window instead.
  async success(): Promise<void> {}

  #evict(now: number): void {
    for (const [key, entry] of this.#entries) {
      if (entry.lockedUntil <= now && entry.failures.every((t) => t <= now - this.#settings.windowMs)) this.#entries.delete(key);
    }
    // Under a flood of distinct addresses, forget the oldest rather than grow without bound.
    while (this.#entries.size >= MAX_TRACKED) this.#entries.delete(this.#entries.keys().next().value as string);
  }
}
