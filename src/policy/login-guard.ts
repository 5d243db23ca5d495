import type { Logger } from '../log/logger.ts';
import { isLoopback, NetworkList } from '../net/ip.ts';

// Slows and then stops password guessing. One guard is shared by every protocol that checks
// passwords (POP3 and SMTP AUTH), so failures count together whichever port they hit. The
// rules live here; the counts live in a LoginFailureStore (SQLite now, Redis for a cluster).

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

/** A key's recent failures and live lockout, as `popgate limits show` prints them. */
export interface LockoutRow {
  /** "ip 192.0.2.7" or "user alice@example.net". */
  key: string;
  failures: number;
  lockedUntil?: number;
}

/**
 * Failed logins and lockouts per key (an address or an account; the store does not care
 * which). Times come from the caller, and whether something is still within its window or
 * live is judged when it is asked, never by a sweep.
 */
export interface LoginFailureStore {
  /** Counts a failed login of `key` at `now`; resolves to its failures later than `now - windowMs`. */
  addFailure(key: string, now: number, windowMs: number): Promise<number>;
  /** Locks `key` out until `until`, unless a lockout of it is live at `now`; resolves to whether it did. */
  lockOut(key: string, until: number, now: number): Promise<boolean>;
  /** When `key`'s lockout ends, or ended: an ended lockout is still reported until it is reset or swept. */
  lockoutEnd(key: string): Promise<number | undefined>;
  /** Keys with failures later than `now - windowMs` or a lockout live at `now`, ordered by key. */
  list(now: number, windowMs: number): Promise<LockoutRow[]>;
  /** Forgets the failures and lockouts of these keys (of every key when undefined); resolves to how many of each went. */
  reset(keys?: readonly string[]): Promise<{ failures: number; lockouts: number }>;
  /** Housekeeping: forgets failures at or before `before` and lockouts that ended by then. */
  sweep(before: number): Promise<void>;
}

export class LoginGuard {
  readonly #store: LoginFailureStore;
  readonly #settings: LoginGuardSettings;
  readonly #trusted: NetworkList;
  readonly #log: Logger;

  constructor(store: LoginFailureStore, settings: LoginGuardSettings, log: Logger) {
    this.#store = store;
    this.#settings = settings;
    this.#trusted = new NetworkList(settings.trustedNetworks);
    this.#log = log;
  }

  /** Asked before checking a password: a locked-out address or account gets no answer on its guess. */
  async check(ip: string, user?: string): Promise<GuardVerdict> {
    if (this.#trusted.has(ip)) return { locked: false };
    const now = Date.now();
    for (const [key, scope] of keysOf(ip, user)) {
      const until = await this.#store.lockoutEnd(key);
      if (until === undefined) continue;
      if (until > now) return { locked: true, retryAfterMs: until - now, scope };
      // A lockout that has run out takes the failures that caused it along: the next lockout
      // needs `threshold` new ones, not a single guess.
      await this.#store.reset([key]);
      this.#log.info({ event: 'lockout_released', [scope === 'address' ? 'ip' : 'user']: key.slice(key.indexOf(' ') + 1) }, 'login lockout released');
    }
    return { locked: false };
  }

  /** Records a failed login; returns how long to wait before replying. */
  async failure(ip: string, user: string | undefined): Promise<{ delayMs: number; locked: boolean }> {
    if (this.#trusted.has(ip)) return { delayMs: 0, locked: false };
    const now = Date.now();
    let highest = 0;
    let locked = false;
    for (const [key, scope] of keysOf(ip, user)) {
      const count = await this.#store.addFailure(key, now, this.#settings.windowMs);
      highest = Math.max(highest, count);
      const threshold = scope === 'address' ? this.#settings.threshold : this.#settings.accountThreshold;
      if (count >= threshold && (await this.#store.lockOut(key, now + this.#settings.lockoutMs, now))) {
        locked = true;
        this.#log.warn({ event: 'lockout', scope, ip, user, failures: count, lockoutMs: this.#settings.lockoutMs }, `${scope} locked out after failed logins`);
      }
    }
    return { delayMs: this.#settings.failureDelayMs * Math.min(highest, 5), locked };
  }

  // Failures are not forgiven by a success: otherwise whoever holds one valid account could
  // interleave good logins with guesses at other accounts' passwords and never be locked out.
  // They age out of the window instead.
  async success(_ip: string, _user: string): Promise<void> {}

  /** Addresses and accounts with recent failures or a lockout. */
  list(now = Date.now()): Promise<LockoutRow[]> {
    return this.#store.list(now, this.#settings.windowMs);
  }

  /** Forgets the failures and lockout of an address or account (all when undefined). */
  async reset(subject?: string): Promise<number> {
    // Without a subject, `popgate limits reset` has always counted the lockouts it lifted.
    if (subject === undefined) return (await this.#store.reset()).lockouts;
    const { failures, lockouts } = await this.#store.reset([`ip ${subject}`, `user ${subject.toLowerCase()}`]);
    return failures + lockouts;
  }

  /**
   * Drops failures that have left the window, and lockouts ended longer ago than that: by
   * then the failures behind a lockout are out of the window too, so no answer changes.
   */
  sweep(now = Date.now()): Promise<void> {
    return this.#store.sweep(now - this.#settings.windowMs);
  }
}

function keysOf(ip: string, user: string | undefined): [string, 'address' | 'account'][] {
  const keys: [string, 'address' | 'account'][] = [[`ip ${ip}`, 'address']];
  if (user) keys.push([`user ${user.toLowerCase()}`, 'account']);
  return keys;
}

/**
 * Whether a password may cross this connection without TLS (RFC 2595 §2, RFC 8314): the one
 * rule for POP3 and SMTP AUTH alike, set by auth.plaintext_without_tls.
 */
export function plaintextLoginAllowed(mode: 'loopback' | 'anywhere' | 'never', ip: string, secure: boolean): boolean {
  return secure || mode === 'anywhere' || (mode === 'loopback' && isLoopback(ip));
}
