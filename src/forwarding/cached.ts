import type { AccountEvents } from '../accounts/events.ts';
import { AddressMemo } from '../accounts/memo.ts';
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
  readonly #events: AccountEvents;
  readonly #log: Logger;
  readonly #memo = new AddressMemo<ForwardingRule>();
  #unsubscribe: () => void = () => {};

  /** `store` remembered, listening to `events` (rejects when they cannot be subscribed to). */
  static async open(store: ForwardingStore, events: AccountEvents, log: Logger): Promise<RememberingForwardingStore> {
    const remembering = new RememberingForwardingStore(store, events, log);
    remembering.#unsubscribe = await events.subscribe((change) => {
      if (change.kind === 'forwarding') remembering.#memo.forget(change.subject);
    });
    return remembering;
  }

  private constructor(store: ForwardingStore, events: AccountEvents, log: Logger) {
    this.#store = store;
    this.#events = events;
    this.#log = log;
  }

  async get(address: string): Promise<ForwardingRule | undefined> {
    const known = this.#memo.recall(address);
    if (known) return known.value;
    const askedAt = this.#memo.generation;
    const rule = await this.#store.get(address);
    this.#memo.remember(address, rule, askedAt);
    return rule;
  }

  async set(address: string, rule: ForwardingRule): Promise<void> {
    try {
      await this.#store.set(address, rule);
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

  list(): Promise<({ address: string } & ForwardingRule)[]> {
    return this.#store.list();
  }

  /** Stops listening to the announcements. */
  close(): void {
    this.#unsubscribe();
  }

  // Also after a failed write: it may have reached the store before the error did.
  async #changed(address: string): Promise<void> {
    this.#memo.forget(address);
    try {
      await this.#events.publish({ kind: 'forwarding', subject: address });
    } catch (error) {
      this.#log.warn({ event: 'account_change_unannounced', change: { kind: 'forwarding', subject: address }, err: error }, 'a forwarding rule is stored but could not be announced to the other nodes');
    }
  }
}
