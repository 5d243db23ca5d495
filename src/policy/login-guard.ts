import type { Logger } from '../log/logger.ts';
import { isLoopback, NetworkList } from '../net/ip.ts';

// Slows and then stops password guessing. One guard is shared by every protocol that checks
// passwords (POP3 and SMTP AUTH), so failures count together whichever port they hit. The
// rules live here; the counts live in a LoginFailureStore (SQLite now, Redis for a cluster).
//
// Three counts, each within the window:
// - per address: `threshold` failures lock the address out (every account, every protocol);
// - per address and account: `threshold` failures lock that account for that address only,
//   and once the account is under attack (below) a single failure does;
// - per account, from any addresses: never a lockout, since anyone who knows a customer's
//   login name could then lock the customer out of their own mail (which is what a lockout
//   per account did). From `accountThreshold` failures the account is under attack: each
//   guessing address gets one guess per lockout, and every failed login at it waits the
//   longest delay. The right password from an address that has not failed is let in at once.
export interface LoginGuardSettings {
  /** Delay before answering a failed login; grows with each failure, up to 5x. */
  failureDelayMs: number;
  /** Failures within the window that lock the address out. */
  threshold: number;
  /**
   * Failures against one account, from any addresses, from which the account counts as under
   * attack: a guessing attack spread over many addresses (a botnet) is slowed to one guess per
   * address and lockout, while the customer's own logins still succeed.
   */
  accountThreshold: number;
  windowMs: number;
  lockoutMs: number;
  /** Networks never slowed or locked out (e.g. an office NAT the provider trusts). */
  trustedNetworks: readonly string[];
}

/** `address`: the client's address is locked out; `account`: this account, for this address. */
export type GuardVerdict = { locked: false } | { locked: true; retryAfterMs: number; scope: 'address' | 'account' };

/** The longest delay after a failed login, in failure delays (`failureDelayMs`) ... */
const MAX_DELAY_FACTOR = 5;
/** ... and after a failed login at an account under attack: 30 s with the default 2 s. */
const UNDER_ATTACK_DELAY_FACTOR = 15;

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
    for (const [key, scope] of lockoutKeysOf(ip, user)) {
      const until = await this.#store.lockoutEnd(key);
      if (until === undefined) continue;
      if (until > now) return { locked: true, retryAfterMs: until - now, scope };
      // A lockout that has run out takes the failures that caused it along: the next lockout
      // needs `threshold` new ones, not a single guess.
      await this.#store.reset([key]);
      this.#log.info({ event: 'lockout_released', scope, ip, user: scope === 'account' ? user : undefined }, 'login lockout released');
    }
    return { locked: false };
  }

  /** Records a failed login; returns how long to wait before replying. */
  async failure(ip: string, user: string | undefined): Promise<{ delayMs: number; locked: boolean }> {
    if (this.#trusted.has(ip)) return { delayMs: 0, locked: false };
    const now = Date.now();
    const { threshold, accountThreshold, windowMs, lockoutMs, failureDelayMs } = this.#settings;
    const addressFailures = await this.#store.addFailure(addressKey(ip), now, windowMs);
    let locked = await this.#lockOut(addressKey(ip), addressFailures >= threshold, now, { scope: 'address', ip, failures: addressFailures });
    let factor = Math.min(addressFailures, MAX_DELAY_FACTOR);
    if (user) {
      const account = user.toLowerCase();
      const accountFailures = await this.#store.addFailure(accountKey(account), now, windowMs);
      const pairFailures = await this.#store.addFailure(pairKey(ip, account), now, windowMs);
      const underAttack = accountFailures >= accountThreshold;
      if (accountFailures === accountThreshold) {
        this.#log.warn({ event: 'account_under_attack', user: account, failures: accountFailures }, 'failed logins at one account from many addresses: each address now gets one guess');
      }
      const pairLocked = await this.#lockOut(pairKey(ip, account), underAttack || pairFailures >= threshold, now, { scope: 'account', ip, user: account, failures: pairFailures });
      locked ||= pairLocked;
      factor = underAttack ? UNDER_ATTACK_DELAY_FACTOR : Math.max(factor, Math.min(accountFailures, MAX_DELAY_FACTOR));
    }
    return { delayMs: failureDelayMs * factor, locked };
  }

  async #lockOut(key: string, due: boolean, now: number, details: { scope: 'address' | 'account'; ip: string; user?: string; failures: number }): Promise<boolean> {
    if (!due || !(await this.#store.lockOut(key, now + this.#settings.lockoutMs, now))) return false;
    const what = details.scope === 'address' ? 'address locked out' : 'account locked out for one address';
    this.#log.warn({ event: 'lockout', ...details, lockoutMs: this.#settings.lockoutMs }, `${what} after failed logins`);
    return true;
  }

  // Failures are not forgiven by a success: otherwise whoever holds one valid account could
  // interleave good logins with guesses at other accounts' passwords and never be locked out.
  // They age out of the window instead.
  async success(_ip: string, _user: string): Promise<void> {}

  /** Addresses and accounts with recent failures or a lockout. */
  list(now = Date.now()): Promise<LockoutRow[]> {
    return this.#store.list(now, this.#settings.windowMs);
  }

  /** Forgets the failures and lockouts of an address or account (all when undefined). */
  async reset(subject?: string, now = Date.now()): Promise<number> {
    // Without a subject, `popgate limits reset` has always counted the lockouts it lifted.
    if (subject === undefined) return (await this.#store.reset()).lockouts;
    const name = subject.toLowerCase();
    // The address-and-account keys of the subject are found by listing: for the CLI, not a hot path.
    const pairs = (await this.list(now)).map((row) => row.key).filter((key) => key.startsWith(`ip ${subject} user `) || (key.startsWith('ip ') && key.endsWith(` user ${name}`)));
    const { failures, lockouts } = await this.#store.reset([addressKey(subject), accountKey(name), ...pairs]);
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

// Keys as the store and `popgate limits show` see them: "ip <address>", "user <account>", and
// "ip <address> user <account>" for the failures of one account from one address.
const addressKey = (ip: string) => `ip ${ip}`;
const accountKey = (account: string) => `user ${account}`;
const pairKey = (ip: string, account: string) => `ip ${ip} user ${account}`;

/** The lockouts that refuse a login, widest first. */
function lockoutKeysOf(ip: string, user: string | undefined): [string, 'address' | 'account'][] {
  const keys: [string, 'address' | 'account'][] = [[addressKey(ip), 'address']];
  if (user) keys.push([pairKey(ip, user.toLowerCase()), 'account']);
  return keys;
}

/**
 * Whether a password may cross this connection without TLS (RFC 2595 §2, RFC 8314): the one
 * rule for POP3 and SMTP AUTH alike, set by auth.plaintext_without_tls.
 */
export function plaintextLoginAllowed(mode: 'loopback' | 'anywhere' | 'never', ip: string, secure: boolean): boolean {
  return secure || mode === 'anywhere' || (mode === 'loopback' && isLoopback(ip));
}
