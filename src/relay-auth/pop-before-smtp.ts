import type { Logger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';
import { grantKey, type KeyPrefixes } from './key.ts';
import type { RelayAuthStore, RelayGrant } from './store.ts';

// The POP-before-SMTP policy: which POP3 logins earn a relay grant, for how long, and what
// SMTP may ask of it. Storage is the RelayAuthStore; protocol code calls only this class.

export interface PopBeforeSmtpSettings {
  windowMs: number;
  /** "sliding": each login renews the window; "fixed": the window runs from the first login. */
  mode: 'sliding' | 'fixed';
  prefixes: KeyPrefixes;
  /** Networks whose logins never earn a grant (e.g. carrier-grade NAT, 100.64.0.0/10). */
  neverGrant: readonly string[];
  /** Distinct users that may hold a grant for one key at once; 0 means no cap. */
  maxUsersPerKey: number;
}

export interface RelayAuthorization {
  key: string;
  /** Users holding a live grant for this client, newest first. */
  users: string[];
  expiresAt: number;
}

export class PopBeforeSmtp {
  readonly settings: PopBeforeSmtpSettings;
  readonly #store: RelayAuthStore;
  readonly #neverGrant: NetworkList;
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(store: RelayAuthStore, settings: PopBeforeSmtpSettings, log: Logger, now: () => number = Date.now) {
    this.#store = store;
    this.settings = settings;
    this.#neverGrant = new NetworkList(settings.neverGrant);
    this.#log = log;
    this.#now = now;
  }

  keyOf(ip: string): string {
    return grantKey(ip, this.settings.prefixes);
  }

  /**
   * Called by POP3 before "+OK" to a successful login. Returns the grant, if one was given. A
   * grant that cannot be written (its store is down) costs the customer the relay, not the
   * mail: the login goes on, and relay is refused until a later login writes one.
   */
  async onLogin(event: { ip: string; user: string }): Promise<RelayGrant | undefined> {
    const { ip, user } = event;
    const key = this.keyOf(ip);
    if (this.#neverGrant.has(ip)) {
      this.#log.info({ event: 'relay_grant_refused', ip, key, user, reason: 'network in pop_before_smtp.never_grant' }, 'no POP-before-SMTP grant');
      return undefined;
    }
    const now = this.#now();
    try {
      if (this.settings.maxUsersPerKey > 0) {
        const current = await this.#store.check(key, now);
        if (!current.some((g) => g.user === user) && current.length >= this.settings.maxUsersPerKey) {
          this.#log.warn({ event: 'relay_grant_refused', ip, key, user, reason: `${current.length} users already hold a grant for this address` }, 'no POP-before-SMTP grant');
          return undefined;
        }
      }
      const grant = await this.#store.grant(key, user, now, this.settings.windowMs, this.settings.mode === 'sliding');
      this.#log.info({ event: 'relay_grant', ip, key, user, expiresAt: new Date(grant.expiresAt).toISOString() }, 'POP-before-SMTP grant');
      return grant;
    } catch (error) {
      this.#log.error({ event: 'relay_grant_failed', ip, key, user, err: error }, 'cannot record the POP-before-SMTP grant: the login goes on without one');
      return undefined;
    }
  }

  /** The live authorization for a client address, or undefined (expired grants never count). */
  async authorization(ip: string): Promise<RelayAuthorization | undefined> {
    const key = this.keyOf(ip);
    const grants = await this.#store.check(key, this.#now());
    if (grants.length === 0) return undefined;
    return { key, users: grants.map((g) => g.user), expiresAt: Math.max(...grants.map((g) => g.expiresAt)) };
  }

  list(): Promise<RelayGrant[]> {
    return this.#store.list(this.#now());
  }

  /** Revokes by address (turned into its key) or by key as listed. */
  async revoke(ipOrKey: string, user?: string): Promise<number> {
    let removed = await this.#store.revoke(ipOrKey, user);
    if (removed === 0 && !ipOrKey.includes('/')) removed = await this.#store.revoke(this.keyOf(ipOrKey), user);
    this.#log.info({ event: 'relay_revoke', key: ipOrKey, user, removed }, 'POP-before-SMTP grant revoked');
    return removed;
  }

  sweep(): Promise<number> {
    return this.#store.sweep(this.#now());
  }
}
