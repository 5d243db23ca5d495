import type { Envelope } from './spool.ts';

// The outbound queue's index: which recipients of which spooled message still wait, and
// when to try again. The message bytes live in the spool (files); this interface is async
// so a shared backend for clusters can sit beside the embedded SQLite one.

export type { Envelope };

/**
 * pending: still to be tried; delivered: the next hop answered 250; failed: a permanent
 * failure whose bounce is not written yet; bounced: the bounce is queued (or, for a null
 * sender, deliberately not sent).
 */
export type RecipientState = 'pending' | 'delivered' | 'failed' | 'bounced';

export interface QueuedRecipient {
  address: string;
  state: RecipientState;
  /** RFC 3463 status of the last answer, e.g. "4.2.0". */
  status?: string;
  /** The last answer as text, e.g. "mx1.example.net said: 452 4.2.2 Mailbox full". */
  diagnostic?: string;
  /** The host that gave the last answer. */
  remoteMta?: string;
  updatedAt?: number;
}

export interface QueuedMessage {
  id: string;
  from: string;
  receivedAt: number;
  clientIp: string;
  authorizedUser?: string;
  size: number;
  /** Delivery attempts made so far. */
  attempts: number;
  nextAttemptAt: number;
  lastError?: string;
  /** A delay warning was sent to the sender. */
  warned: boolean;
  /** Who holds the lease from its last claim (a process's name), until the lease is ended; one that ran out keeps it until the next claim. */
  leaseOwner?: string;
  recipients: QueuedRecipient[];
}

export interface RecipientUpdate {
  address: string;
  state: RecipientState;
  status?: string;
  diagnostic?: string;
  remoteMta?: string;
}

/** What an attempt that leaves recipients pending sets on the message; it also ends the lease. */
export interface NextAttempt {
  attempts: number;
  nextAttemptAt: number;
  lastError?: string;
  /** A delay warning has been sent to the sender (it is sent once). */
  warned: boolean;
}

export interface QueueStore {
  /** Indexes a spooled message with every recipient pending, due at once. Idempotent. */
  add(envelope: Envelope, size: number): Promise<void>;
  ids(): Promise<Set<string>>;
  /**
   * Takes up to `limit` messages due by `now`, oldest first, and leases them to `owner`: they are
   * not due again until `leaseMs` has passed or the lease ends (recordAttempt, remove, the
   * owner's releaseLeases). A lease keeps a message from being picked twice, also by another
   * node of a cluster; once it has run out, anyone may claim the message.
   */
  claim(now: number, limit: number, leaseMs: number, owner: string): Promise<QueuedMessage[]>;
  /**
   * Ends the leases `owner` holds: those messages are due at `now`. Never another owner's: a
   * starting node must not take what a live one is delivering; a dead owner's leases run out.
   */
  releaseLeases(now: number, owner: string): Promise<number>;
  /** When the next message falls due (undefined for an empty queue). */
  nextDueAt(): Promise<number | undefined>;
  get(id: string): Promise<QueuedMessage | undefined>;
  list(): Promise<QueuedMessage[]>;
  /** After an attempt that leaves recipients pending: their answers and the next attempt, at once. */
  recordAttempt(id: string, updates: RecipientUpdate[], next: NextAttempt, now: number): Promise<void>;
  /** Makes messages due now: one (by id) or all, except those being delivered. Returns how many. */
  retryNow(id: string | undefined, now: number): Promise<number>;
  remove(id: string): Promise<void>;
  close(): Promise<void>;
}

/** What the SMTP server needs from the queue: a durable enqueue (RFC 5321 §6.1). */
export interface MessageQueue {
  enqueue(envelope: Envelope, message: Buffer | Buffer[]): Promise<void>;
  /** Takes back an entry just enqueued whose message was then refused (acceptance failed elsewhere). */
  discard(id: string): Promise<void>;
}
