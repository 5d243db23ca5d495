import { isIP } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { normalizeIp } from '../net/ip.ts';
import { grantKey } from '../relay-auth/key.ts';

// Greylisting (the postgrey rules): the first attempt of a (client network, sender,
// recipient) triplet is deferred with a 4xx; a real MTA retries later (RFC 5321 §4.5.4.1),
// and a retry after the delay, within the retry window, passes. A triplet that passed is
// remembered, so its later mail is not delayed again; so is its client network, whose mail to
// other recipients and from other senders then passes too (postgrey's auto-whitelist, after
// one pass rather than five: a network that retried once has shown it runs a real MTA).
// Every pass renews the memory, so a regular correspondent is never delayed again; a network
// or triplet silent for `rememberMs` is forgotten.
//
// Clients are taken by network, /24 for IPv4 and /64 for IPv6: a provider retries from
// whichever address of its pool is free, and one IPv6 host uses many addresses of its /64.
//
// The rules live here; what is remembered lives in a GreylistStore (SQLite for one machine,
// Redis for a cluster), so every node of a cluster judges a retry the same way. A store that
// fails makes check() reject: the caller decides (letting the mail through is the usual
// choice, as greylisting is only ever a delay).

export interface GreylistSettings {
  /** How long a first attempt must wait before a retry passes (5 minutes is usual). */
  delayMs: number;
  /** How long a first attempt waits for its retry (e.g. 2 days): a retry later than this is a first attempt again. */
  retryWindowMs: number;
  /** How long a triplet (and a client network) that passed is remembered after it was last seen (e.g. 36 days). */
  rememberMs: number;
}

export type GreylistVerdict =
  | { pass: true; reason: 'known triplet' | 'retried after the delay' | 'known client' }
  | { pass: false; retryAfterMs: number; first: boolean };

/** What is kept of a triplet: waiting for its retry since `firstSeen`, or passed; either until `expiresAt`. */
export interface TripletRecord {
  firstSeen: number;
  passed: boolean;
  expiresAt: number;
}

/**
 * Triplets and client networks with an expiry. Keys are opaque strings to the store. Times
 * come from the caller, and a record counts while `expiresAt > now` of the call that asks: no
 * answer depends on a sweep.
 */
export interface GreylistStore {
  /** The triplet's record and until when the network is remembered, each if live at `now`. */
  lookup(triplet: string, network: string, now: number): Promise<{ triplet?: TripletRecord; networkUntil?: number }>;
  /**
   * Records a first attempt of the triplet at `now`, waiting until `expiresAt`, unless a record
   * of it is live at `now`. Resolves to the record live afterwards (an earlier attempt's, when
   * there was one: two first attempts at once keep one `firstSeen`).
   */
  recordAttempt(triplet: string, now: number, expiresAt: number): Promise<TripletRecord>;
  /**
   * Marks the triplet passed until `until` (keeping `firstSeen` of a record live at `now`, or
   * starting one at `now`) and remembers its network until `until`.
   */
  recordPass(triplet: string, network: string, now: number, until: number): Promise<void>;
  /** Remembers the network until `until`. */
  rememberNetwork(network: string, now: number, until: number): Promise<void>;
  /** Housekeeping: forgets records expired by `now`. */
  sweep(now: number): Promise<void>;
}

const IPV4_NETWORK = 24;
const IPV6_NETWORK = 64;
/** A memory is renewed at most this often (a write per day, not per message), or half of rememberMs if shorter. */
const RENEWAL_INTERVAL_MS = 24 * 3_600_000;

export class Greylisting {
  readonly #store: GreylistStore;
  readonly #settings: GreylistSettings;
  readonly #renewalIntervalMs: number;
  readonly #log: Logger;

  constructor(store: GreylistStore, settings: GreylistSettings, log: Logger) {
    const { delayMs, retryWindowMs, rememberMs } = settings;
    if (!(delayMs > 0)) throw new Error(`the greylisting delay must be a positive number of ms, got ${delayMs}`);
    if (!(retryWindowMs > delayMs)) throw new Error(`the greylisting retry window (${retryWindowMs} ms) must be longer than its delay (${delayMs} ms)`);
    if (!(rememberMs > 0)) throw new Error(`how long greylisting remembers must be a positive number of ms, got ${rememberMs}`);
    this.#store = store;
    this.#settings = settings;
    this.#renewalIntervalMs = Math.min(RENEWAL_INTERVAL_MS, rememberMs / 2);
    this.#log = log;
  }

  /** The verdict on one recipient of a transaction; `sender` is "" for the null sender. */
  async check(ip: string, sender: string, recipient: string, now = Date.now()): Promise<GreylistVerdict> {
    const network = clientNetwork(ip);
    const triplet = tripletKey(network, sender, recipient);
    const known = await this.#store.lookup(triplet, network, now);
    if (known.triplet?.passed) {
      if (this.#renewalDue(known.triplet.expiresAt, now)) await this.#store.recordPass(triplet, network, now, now + this.#settings.rememberMs);
      return { pass: true, reason: 'known triplet' };
    }
    if (known.networkUntil !== undefined) {
      if (this.#renewalDue(known.networkUntil, now)) await this.#store.rememberNetwork(network, now, now + this.#settings.rememberMs);
      return { pass: true, reason: 'known client' };
    }
    const record = known.triplet ?? (await this.#store.recordAttempt(triplet, now, now + this.#settings.retryWindowMs));
    // Another attempt of the triplet (another node's) may have passed since the lookup.
    if (record.passed) return { pass: true, reason: 'known triplet' };
    const waitedMs = now - record.firstSeen;
    if (waitedMs >= this.#settings.delayMs) {
      await this.#store.recordPass(triplet, network, now, now + this.#settings.rememberMs);
      this.#log.info({ event: 'greylist_passed', triplet, waitedMs }, 'greylisting: retried after the delay, passed and remembered');
      return { pass: true, reason: 'retried after the delay' };
    }
    const first = known.triplet === undefined && record.firstSeen === now;
    this.#log.debug({ event: 'greylisted', triplet, first, retryAfterMs: this.#settings.delayMs - waitedMs }, 'greylisting: deferred');
    return { pass: false, retryAfterMs: this.#settings.delayMs - waitedMs, first };
  }

  /** Forgets what expired by `now` (housekeeping: no verdict changes). */
  sweep(now = Date.now()): Promise<void> {
    return this.#store.sweep(now);
  }

  /** Whether a memory ending at `until` was last renewed more than the renewal interval ago. */
  #renewalDue(until: number, now: number): boolean {
    return until - now < this.#settings.rememberMs - this.#renewalIntervalMs;
  }
}

/** The client network a triplet is kept for: "192.0.2.0/24", "2001:db8:1:2::/64". */
export function clientNetwork(ip: string): string {
  const address = normalizeIp(ip);
  if (isIP(address) === 0) throw new Error(`greylisting needs the client's IP address, got ${JSON.stringify(String(ip).slice(0, 100))}`);
  return grantKey(address, { ipv4: IPV4_NETWORK, ipv6: IPV6_NETWORK });
}

/**
 * `192.0.2.0/24 "sender" "recipient"`, addresses lower-cased, the null sender `""`: each part
 * in JSON string form, so no address (a quoted local part may hold spaces and quotes) can make
 * two triplets one.
 */
export function tripletKey(network: string, sender: string, recipient: string): string {
  return `${network} ${JSON.stringify(sender.toLowerCase())} ${JSON.stringify(recipient.toLowerCase())}`;
}
