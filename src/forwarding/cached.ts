import type { AccountEvents } from '../accounts/events.ts';
import { AnnouncedSettings } from '../accounts/memo.ts';
import type { Logger } from '../log/logger.ts';
import type { ForwardingRule, ForwardingStore } from './store.ts';

// Every message to a user asks for the user's forwarding rule (src/policy/mail-policy.ts), and
// almost always there is none: one query per message (a round trip to PostgreSQL in a
// cluster). The answer, rule or none, is remembered for a second per address. A rule set or
// removed through any store of this kind (the CLI, the console, /account) is announced as an
// AccountChange of kind 'forwarding', and every process that hears it forgets that address at
// once, so a new rule is obeyed by the next message on every node. Where announcements do not
// reach (the embedded backend's CLI is another process) a change takes up to a second.

export class RememberingForwardingStore implements ForwardingStore {
  readonly #store: ForwardingStore;
  readonly #settings: AnnouncedSettings<ForwardingRule>;

  /** `store` remembered, listening to `events` (rejects when they cannot be subscribed to). */
  static async open(store: ForwardingStore, events: AccountEvents, log: Logger): Promise<RememberingForwardingStore> {
    return new RememberingForwardingStore(store, await AnnouncedSettings.open<ForwardingRule>('forwarding', events, log));
  }

  private constructor(store: ForwardingStore, settings: AnnouncedSettings<ForwardingRule>) {
    this.#store = store;
    this.#settings = settings;
  }

  get(address: string): Promise<ForwardingRule | undefined> {
    return this.#settings.get(address, (a) => this.#store.get(a));
  }

  set(address: string, value: ForwardingRule): Promise<void> {
    return this.#settings.change(address, () => this.#store.set(address, value));
  }

  remove(address: string): Promise<boolean> {
    return this.#settings.change(address, () => this.#store.remove(address));
  }

  list(): Promise<({ address: string } & ForwardingRule)[]> {
    return this.#store.list();
  }

  /** Stops listening to the announcements. */
  close(): void {
    this.#settings.close();
  }
}
