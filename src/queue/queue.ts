import type { Logger } from '../log/logger.ts';
import { Spool, type Envelope } from './spool.ts';
import type { MessageQueue, NextAttempt, QueuedMessage, QueueStore, RecipientUpdate } from './store.ts';

/**
 * The outbound queue: spool files (the message, written durably before 250) plus an index
 * of per-recipient state. A message leaves only when every recipient has a final answer.
 * Callers (the delivery scheduler, the CLI) go through this class, never to the index itself,
 * so spool and index cannot drift apart by a caller's mistake.
 */
export class OutboundQueue implements MessageQueue {
  readonly spool: Spool;
  readonly #store: QueueStore;
  readonly #log: Logger;
  readonly #listeners: (() => void)[] = [];

  constructor(spool: Spool, store: QueueStore, log: Logger) {
    this.spool = spool;
    this.#store = store;
    this.#log = log;
  }

  /**
   * Durable once it resolves; the delivery scheduler is woken at once. When it rejects nothing
   * is kept: spool files written before the index failed (a full disk, say) are taken back,
   * since the client is about to be told the message failed.
   */
  async enqueue(envelope: Envelope, message: Buffer | Buffer[]): Promise<void> {
    await this.spool.enqueue(envelope, message);
    const size = Array.isArray(message) ? message.reduce((sum, piece) => sum + piece.length, 0) : message.length;
    try {
      await this.#store.add(envelope, size);
    } catch (error) {
      await this.spool.discard(envelope.id).catch((cleanup: unknown) => {
        // The next start's recovery would index and deliver it: say so, loudly and by id.
        this.#log.error({ event: 'queue_orphan', queueId: envelope.id, err: cleanup }, 'cannot remove the spool files of a message the index refused');
      });
      throw error;
    }
    for (const listener of this.#listeners) listener();
  }

  /** Takes back an entry enqueued for a message that was then refused: index row and files. */
  async discard(id: string): Promise<void> {
    await this.#store.remove(id);
    await this.spool.discard(id);
  }

  onEnqueue(listener: () => void): void {
    this.#listeners.push(listener);
  }

  read(id: string): Promise<Buffer> {
    return this.spool.read(id);
  }

  /** The domain the message may be DKIM-signed for (see `Envelope.signingDomain`). */
  async signingDomain(id: string): Promise<string | undefined> {
    return (await this.spool.envelope(id))?.signingDomain;
  }

  /** Done with a message: the spool files go first, so a crash in between repeats nothing. */
  async remove(id: string): Promise<void> {
    await this.spool.remove(id);
    await this.#store.remove(id);
  }

  /** Up to `limit` due messages, oldest first, leased to `owner` for `leaseMs` so nobody else takes them. */
  claim(now: number, limit: number, leaseMs: number, owner: string): Promise<QueuedMessage[]> {
    return this.#store.claim(now, limit, leaseMs, owner);
  }

  /** Ends `owner`'s leases (only its own): what it was delivering is due again. */
  releaseLeases(now: number, owner: string): Promise<number> {
    return this.#store.releaseLeases(now, owner);
  }

  /** When the next message falls due (undefined for an empty queue). */
  nextDueAt(): Promise<number | undefined> {
    return this.#store.nextDueAt();
  }

  /** After an attempt that leaves recipients pending: their answers and the next attempt, at once. */
  recordAttempt(id: string, updates: RecipientUpdate[], next: NextAttempt, now: number): Promise<void> {
    return this.#store.recordAttempt(id, updates, next, now);
  }

  /** Makes one message (by id) or all due now, except those being delivered; resolves to how many changed. */
  retryNow(id: string | undefined, now: number): Promise<number> {
    return this.#store.retryNow(id, now);
  }

  get(id: string): Promise<QueuedMessage | undefined> {
    return this.#store.get(id);
  }

  /** Every queued message, oldest first. */
  list(): Promise<QueuedMessage[]> {
    return this.#store.list();
  }

  close(): Promise<void> {
    return this.#store.close();
  }

  /** Brings the index in line with the spool after a restart or a crash. */
  async recover(): Promise<{ indexed: number; forgotten: number; dropped: number }> {
    // The index first, the files second: an entry another node adds in between is then found
    // in the files and indexed (adding is idempotent), never forgotten as one without files.
    const known = await this.#store.ids();
    const { complete, dropped } = await this.spool.sweep();
    let indexed = 0;
    for (const id of complete) {
      if (known.has(id)) continue;
      const envelope = await this.spool.envelope(id);
      if (!envelope) continue;
      await this.#store.add(envelope, await this.spool.size(id));
      indexed++;
    }
    let forgotten = 0;
    for (const id of known) {
      if (complete.has(id)) continue;
      await this.#store.remove(id);
      forgotten++;
    }
    if (indexed + forgotten + dropped.length > 0) {
      this.#log.info({ event: 'queue_recovered', indexed, forgotten, dropped: dropped.length }, 'queue index brought in line with the spool');
    }
    return { indexed, forgotten, dropped: dropped.length };
  }
}
