// POP-before-SMTP authorizations: who logged in to POP3 from where, until when. The SQLite
// backend serves the embedded server; a Redis backend for clusters implements the same
// interface. Expiry is always judged against the clock at lookup time; deleting dead rows
// is housekeeping only.

export interface RelayGrant {
  /** The client address or network the grant covers (see grantKey). */
  key: string;
  user: string;
  grantedAt: number;
  expiresAt: number;
}

export interface RelayAuthStore {
  /** Records or renews a grant. `renew` false keeps an unexpired grant's expiry (fixed window). */
  grant(key: string, user: string, now: number, windowMs: number, renew: boolean): Promise<RelayGrant>;
  /** Live grants for a key, newest first. */
  check(key: string, now: number): Promise<RelayGrant[]>;
  /** Removes every grant for a key (or one user's); returns how many were removed. */
  revoke(key: string, user?: string): Promise<number>;
  /** All live grants. */
  list(now: number): Promise<RelayGrant[]>;
  /** Deletes expired rows; returns how many. */
  sweep(now: number): Promise<number>;
}
