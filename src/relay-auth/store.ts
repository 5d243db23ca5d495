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
  /** Grants for a key live at `now` (expiresAt > now), newest first. */
  check(key: string, now: number): Promise<RelayGrant[]>;
  /** Removes every grant for a key (or one user's); returns how many were removed. */
  revoke(key: string, user?: string): Promise<number>;
  /** Every grant live at `now`, by key and user. */
  list(now: number): Promise<RelayGrant[]>;
  /** Housekeeping: deletes grants expired by `now`; returns how many. */
  sweep(now: number): Promise<number>;
}
