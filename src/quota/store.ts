// Where mailbox quotas and usage are kept: SQLite in one process or on one machine,
// PostgreSQL in a cluster, so every node and the CLI see the same numbers.
//
// Usage is a counter per mailbox, moved by each delivery and each deletion, so a delivery never
// lists the folder. A mailbox without a counter (new, or its counter was lost) is counted from
// its folder once and the counter set from that (src/quota/quota.ts).

/**
 * A limit as set: octets, `null` for "no limit" set explicitly (a user exempt from the domain's
 * default), or absent to inherit the next level (user → domain → server default).
 */
export type QuotaLimit = number | null;

export interface MailboxUsage {
  /** Octets in the mailbox, as POP3 counts them. */
  used: number;
  /** The 90 % warning has been delivered since the mailbox last went below that. */
  warned: boolean;
}

export interface QuotaStore {
  /** Sets (a number or null) or removes (undefined) the limit of a user address or a domain. */
  setLimit(subject: string, limit: QuotaLimit | undefined): Promise<void>;
  /** The limits set for an address and for its domain, each absent when not set. */
  limits(address: string, domain: string): Promise<{ user?: QuotaLimit; domain?: QuotaLimit }>;
  /** Every limit set, by subject (addresses and domains). */
  listLimits(): Promise<{ subject: string; limit: QuotaLimit }[]>;

  /** The mailbox's counter, undefined when it has none yet. */
  usage(address: string): Promise<MailboxUsage | undefined>;
  /** Every counter, by address. */
  listUsage(): Promise<({ address: string } & MailboxUsage)[]>;
  /**
   * Moves the counter by `delta` octets (never below 0) and resolves to the new value; undefined
   * (and nothing changed) when the mailbox has no counter yet.
   */
  add(address: string, delta: number): Promise<number | undefined>;
  /**
   * Sets the counter from a count of the folder. With `onlyIfMissing`, a counter that exists
   * already (another process counted first, or deliveries moved it since) is left alone.
   * Resolves to the counter's value afterwards.
   */
  setUsage(address: string, used: number, onlyIfMissing: boolean): Promise<number>;
  /**
   * Marks the warning as sent; true only for the caller that changed it, so of several
   * deliveries passing the mark at once exactly one sends the warning.
   */
  claimWarning(address: string): Promise<boolean>;
  /** The mailbox went below the mark again: the next pass warns again. */
  clearWarning(address: string): Promise<void>;
  /** Forgets a mailbox's counter and its own limit (the account was removed). */
  forget(address: string): Promise<void>;
  /**
   * Writes the counter moves this instance holds back. The SQLite and PostgreSQL stores hold a
   * delivery's move for a moment, to write it with the others of that moment
   * (src/sqlite/quotas.ts, src/postgres/quotas.ts): their own reads never miss one, other
   * instances see it within that moment or after this. Absent where every move is written at
   * once.
   */
  flush?(): Promise<void>;
}
