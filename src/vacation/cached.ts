import type { AccountEvents } from '../accounts/events.ts';
import { AddressMemo } from '../accounts/memo.ts';
import type { Logger } from '../log/logger.ts';
import type { Vacation, VacationStore } from './store.ts';

// After every delivery to a user, the vacation responder asks whether the user is away
// (src/vacation/vacation.ts), and almost always the answer is no: one query per message (a round
// trip to PostgreSQL in a cluster). The answer, a vacation or none, is remembered for a second
// per address. A vacation set or turned off through any store of this kind (the CLI, the
// console, /account) is announced as an AccountChange of kind 'vacation', and every process
// that hears it forgets that address at once. Where announcements do not reach (the embedded
// backend's CLI is another process) a change takes up to a second. The replies already sent
// (claimReply) are never remembered here: one reply per interval across nodes needs the store.

export class RememberingVacationStore implements VacationStore {
  readonly #store: VacationStore;
  readonly #events: AccountEvents;
  readonly #log: Logger;
  readonly #memo = new AddressMemo<Vacation>();
  #unsubscribe: () => void = () => {};

  /** `store` remembered, listening to `events` (rejects when they cannot be subscribed to). */
  static async open(store: VacationStore, events: AccountEvents, log: Logger): Promise<RememberingVacationStore> {
    const remembering = new RememberingVacationStore(store, events, log);
    remembering.#unsubscribe = await events.subscribe((change) => {
      if (change.kind === 'vacation') remembering.#memo.forget(change.subject);
    });
    return remembering;
  }

  private constructor(store: VacationStore, events: AccountEvents, log: Logger) {
    this.#store = store;
    this.#events = events;
    this.#log = log;
  }

  async get(address: string): Promise<Vacation | undefined> {
    const known = this.#memo.recall(address);
    if (known) return known.value;
    const askedAt = this.#memo.generation;
    const vacation = await this.#store.get(address);
    this.#memo.remember(address, vacation, askedAt);
    return vacation;
  }

  async set(address: string, vacation: Vacation): Promise<void> {
    try {
      await this.#store.set(address, vacation);
    } finally {
      await this.#changed(address);
    }
  }

  async remove(address: string): Promise<boolean> {
    try {
      return await this.#store.remove(address);
    } finally {
      await this.#changed(address);
    }
  }

  list(): Promise<({ address: string } & Vacation)[]> {
    return this.#store.list();
  }

  claimReply(address: string, sender: string, now: number, intervalMs: number): Promise<boolean> {
    return this.#store.claimReply(address, sender, now, intervalMs);
  }

  sweep(before: number): Promise<number> {
    return this.#store.sweep(before);
  }

  /** Stops listening to the announcements. */
  close(): void {
    this.#unsubscribe();
  }

  // Also after a failed write: it may have reached the store before the error did.
  async #changed(address: string): Promise<void> {
    this.#memo.forget(address);
    try {
      await this.#events.publish({ kind: 'vacation', subject: address });
    } catch (error) {
      this.#log.warn({ event: 'account_change_unannounced', change: { kind: 'vacation', subject: address }, err: error }, 'a vacation reply is stored but could not be announced to the other nodes');
    }
  }
}
