import type { AccountEvents } from '../accounts/events.ts';
import { AnnouncedSettings } from '../accounts/memo.ts';
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
  readonly #settings: AnnouncedSettings<Vacation>;

  /** `store` remembered, listening to `events` (rejects when they cannot be subscribed to). */
  static async open(store: VacationStore, events: AccountEvents, log: Logger): Promise<RememberingVacationStore> {
    return new RememberingVacationStore(store, await AnnouncedSettings.open<Vacation>('vacation', events, log));
  }

  private constructor(store: VacationStore, settings: AnnouncedSettings<Vacation>) {
    this.#store = store;
    this.#settings = settings;
  }

  get(address: string): Promise<Vacation | undefined> {
    return this.#settings.get(address, (a) => this.#store.get(a));
  }

  set(address: string, value: Vacation): Promise<void> {
    return this.#settings.change(address, () => this.#store.set(address, value));
  }

  remove(address: string): Promise<boolean> {
    return this.#settings.change(address, () => this.#store.remove(address));
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
    this.#settings.close();
  }
}
