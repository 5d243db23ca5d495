import { isLoopback } from '../net/ip.ts';

// Slows and then stops password guessing. One guard is shared by every protocol that checks
// passwords (POP3 and SMTP AUTH), so failures count together whichever port they hit.

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

/**
 * Whether a password may cross this connection without TLS (RFC 2595 §2, RFC 8314): the one
 * rule for POP3 and SMTP AUTH alike, set by auth.plaintext_without_tls.
 */
export function plaintextLoginAllowed(mode: 'loopback' | 'anywhere' | 'never', ip: string, secure: boolean): boolean {
  return secure || mode === 'anywhere' || (mode === 'loopback' && isLoopback(ip));
}
