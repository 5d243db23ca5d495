// Mailboxes as seen by the protocols. The Maildir backend is the only one today; a shared
// storage backend for clusters can implement the same interface.

export interface StoredMessage {
  /** RFC 1939 §7 unique-id: stable across sessions, restarts and re-scans. */
  readonly uidl: string;
  /** Size in octets as sent over POP3 (CRLF line ends), excluding byte-stuffing. */
  readonly size: number;
  /** Backend reference (the file path for Maildir). */
  readonly ref: string;
}

export interface RemoveResult {
  removed: number;
  failed: StoredMessage[];
}

export interface Mailstore {
  /** Stores a message durably (RFC 5321 §6.1): resolves only once it would survive a crash. */
  deliver(address: string, message: Buffer | Buffer[]): Promise<string>;
  /** The messages in a mailbox, oldest first. */
  list(address: string): Promise<StoredMessage[]>;
  /** A message's raw bytes as stored (line ends may be LF or CRLF), in chunks. */
  read(message: StoredMessage): AsyncIterable<Buffer>;
  /**
   * The whole message read into `scratch` from `offset` up to `limit`, as a view of it, when
   * it fits (undefined when it does not: then read()). Lets a reader reuse one buffer for
   * message after message, and put its own bytes around the message in the same buffer.
   * `expected` is the size the caller expects (reads stop early only at the end of the file).
   */
  readInto?(message: StoredMessage, scratch: Buffer, offset?: number, limit?: number, expected?: number): Buffer | undefined;
  /** Removes messages durably; what could not be removed is reported, never hidden. */
  remove(address: string, messages: StoredMessage[]): Promise<RemoveResult>;
  /** Makes sure an address's mailbox exists (a new account's; mail already in it stays); resolves to its location. */
  create(address: string): Promise<string>;
  /** Where an address's mail is kept, told to the operator (for Maildir, its folder). */
  location(address: string): string;
  /** The octets a mailbox holds as POP3 counts them, without changing it (unlike list, which claims new mail). */
  usage?(address: string): Promise<number>;
  /** The mailbox's size limit in octets (null: none), where quotas are kept (src/quota/quota.ts). */
  limit?(address: string): Promise<number | null>;
}

/** Exclusive access to a maildrop for one POP3 session (RFC 1939 §8). */
export interface MaildropLocks {
  /** Resolves to a release function, or undefined when another session holds the lock. */
  acquire(address: string): Promise<(() => Promise<void>) | undefined>;
}

/** In-process locks: enough for the embedded single-process server. */
export class LocalMaildropLocks implements MaildropLocks {
  readonly #held = new Set<string>();

  async acquire(address: string): Promise<(() => Promise<void>) | undefined> {
    if (this.#held.has(address)) return undefined;
    this.#held.add(address);
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      this.#held.delete(address);
    };
  }

  get size(): number {
    return this.#held.size;
  }
}
