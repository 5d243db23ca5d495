// Account changes announced to every process that serves the same accounts, so what one of
// them remembers (found domains and addresses, forwarding rules and vacation replies, for a
// second) is forgotten everywhere at once:
// a user removed with the CLI on one node is refused on all of them. In one process the
// announcement stays in memory; a cluster carries it over Redis publish/subscribe.

export interface AccountChange {
  /** 'forwarding' and 'vacation': a user's forwarding rule or vacation reply was set or removed. */
  kind: 'domain' | 'user' | 'alias' | 'password' | 'apop' | 'forwarding' | 'vacation';
  /** The domain or address that changed. */
  subject: string;
}

export interface AccountEvents {
  /** Tells every subscriber, in every process, about a change (after it is stored). */
  publish(change: AccountChange): Promise<void>;
  /** Calls `listener` for every change published anywhere; resolves to an unsubscribe function. */
  subscribe(listener: (change: AccountChange) => void): Promise<() => void>;
}

/** Announcements within one process. */
export class LocalAccountEvents implements AccountEvents {
  readonly #listeners = new Set<(change: AccountChange) => void>();

  async publish(change: AccountChange): Promise<void> {
    for (const listener of this.#listeners) listener(change);
  }

  async subscribe(listener: (change: AccountChange) => void): Promise<() => void> {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
