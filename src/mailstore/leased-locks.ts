import { hostname } from 'node:os';
import type { Logger } from '../log/logger.ts';
import { randomHex } from '../mail/random.ts';
import type { MaildropLocks } from './store.ts';

// Maildrop locks shared between processes (the workers of one machine through SQLite, the
// nodes of a cluster through Redis). A lock is held for a lease and renewed every third of it
// while its session lives, so the lock of a process that dies (kill -9, a crashed machine)
// frees itself once the lease has run out, and a session can never be locked out for good.
// Every lock carries a token of its own: renewing and releasing only act on a lock that still
// carries ours, so a process that lost its lock (it paused for longer than the lease) never
// frees the lock of the session that took it next.

export interface LeaseSettings {
  /** How long a lock outlives a process that stops renewing it (ms); 30 s by default. */
  leaseMs?: number;
  /** This process's name in shared state, kept in the lock for the operator to see. */
  holder?: string;
}

export const DEFAULT_LEASE_MS = 30_000;

/** What a backend does with one lock; the renewal and the rules are LeasedMaildropLocks's. */
export interface LeaseStore {
  /** Takes the lock of `address` with `token` for `leaseMs` if it is free or its lease has run out. */
  take(address: string, token: string, leaseMs: number): Promise<boolean>;
  /** Extends the lease to `leaseMs` from now if the lock still carries `token`; resolves to whether it did. */
  renew(address: string, token: string, leaseMs: number): Promise<boolean>;
  /** Frees the lock if it still carries `token`. */
  release(address: string, token: string): Promise<void>;
}

export class LeasedMaildropLocks implements MaildropLocks {
  readonly #store: LeaseStore;
  readonly #leaseMs: number;
  readonly #holder: string;
  readonly #log: Logger;
  /** The renewal timer of every lock this instance holds. */
  readonly #renewals = new Set<NodeJS.Timeout>();

  constructor(store: LeaseStore, settings: LeaseSettings, log: Logger) {
    this.#store = store;
    this.#leaseMs = settings.leaseMs ?? DEFAULT_LEASE_MS;
    if (!Number.isInteger(this.#leaseMs) || this.#leaseMs < 3) throw new Error(`maildrop lock lease must be a whole number of milliseconds of at least 3, got ${this.#leaseMs}`);
    this.#holder = settings.holder ?? `${hostname()}/${process.pid}`;
    this.#log = log;
  }

  /**
   * The release function never rejects: when the backend cannot be reached the failure is
   * logged, and the lock frees itself when its lease runs out (the session is over either way).
   */
  async acquire(address: string): Promise<(() => Promise<void>) | undefined> {
    const token = `${this.#holder} ${randomHex(8)}`;
    if (!(await this.#store.take(address, token, this.#leaseMs))) return undefined;
    let released = false;
    const renewal = setInterval(() => {
      this.#store.renew(address, token, this.#leaseMs).then(
        (renewed) => {
          if (renewed || released) return;
          // Another session holds it now: this process stopped renewing for longer than the lease.
          stop();
          this.#log.error({ event: 'maildrop_lock_lost', user: address }, 'maildrop lock lost: another session may now hold it');
        },
        (error) => this.#log.warn({ event: 'maildrop_lock_renewal_failed', user: address, err: error }, 'cannot renew a maildrop lock (retried)'),
      );
    }, Math.floor(this.#leaseMs / 3));
    renewal.unref(); // a lock never keeps the process alive
    this.#renewals.add(renewal);
    const stop = () => {
      clearInterval(renewal);
      this.#renewals.delete(renewal);
    };
    return async () => {
      if (released) return;
      released = true;
      stop();
      try {
        await this.#store.release(address, token);
      } catch (error) {
        this.#log.warn({ event: 'maildrop_lock_release_failed', user: address, err: error }, `cannot release a maildrop lock: it frees itself within ${this.#leaseMs} ms`);
      }
    };
  }

  /** Stops renewing every lock held here, without releasing them (they run out with their lease). */
  async close(): Promise<void> {
    for (const renewal of this.#renewals) clearInterval(renewal);
    this.#renewals.clear();
  }
}
