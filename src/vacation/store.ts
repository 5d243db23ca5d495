// Vacation replies (`popgate user vacation`) and the replies already sent, so a sender gets
// at most one reply per interval (RFC 3834 §2) however many messages arrive, on any node.

export interface Vacation {
  subject: string;
  body: string;
  /** When it was set (ms); replies recorded before it do not count. */
  since: number;
  /** No replies after this moment (ms); absent: until turned off. */
  until?: number;
}

export interface VacationStore {
  get(address: string): Promise<Vacation | undefined>;
  /** Sets (replaces) the vacation of an address; the replies already sent are forgotten. */
  set(address: string, vacation: Vacation): Promise<void>;
  /** Turns it off; false when it was not on. */
  remove(address: string): Promise<boolean>;
  list(): Promise<({ address: string } & Vacation)[]>;
  /**
   * Records a reply from `address` to `sender` at `now` unless one was recorded later than
   * `now - intervalMs`: true only for the caller that may send it, so of a flood of messages
   * from one sender arriving at once exactly one is answered.
   */
  claimReply(address: string, sender: string, now: number, intervalMs: number): Promise<boolean>;
  /** Forgets replies recorded before `before`; resolves to how many. */
  sweep(before: number): Promise<number>;
}
