import { createHmac } from 'node:crypto';

// The Sender Rewriting Scheme as libsrs2 and postsrsd write it, so addresses either of them
// made can be reversed here and the other way round (Shevek's "SRS" paper, libsrs2 srs2.c).
//
// A message forwarded to another provider leaves with an envelope sender in our domain, so the
// receiver's SPF check is against our servers, which are allowed to send it:
//
//   user@origin.example  →  SRS0=HHHH=TT=origin.example=user@srs.domain
//   SRS0=…@forwarder     →  SRS1=HHHH=forwarder==…@srs.domain     (already rewritten once)
//
// HHHH is the first four characters of the base64 HMAC-SHA1 (secret key) over the lower-cased
// fields that follow it; TT is the day (mod 1024) in two base32 characters. A bounce to such an
// address is decoded and sent back to the original sender (SRS0) or to the first forwarder
// (SRS1); an address with a wrong hash (forged: someone using us as a bounce relay) or older
// than the maximum age is refused.

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const DAY_MS = 24 * 60 * 60 * 1000;
/** Two base32 characters: 10 bits of days. */
const TIME_SLOTS = 1024;
const HASH_LENGTH = 4;
/** RFC 5321 §4.5.3.1.3: a path is at most 256 octets. */
const MAX_ADDRESS_LENGTH = 256;

export type SrsProblem = 'syntax' | 'hash' | 'expired';

export type SrsReversed = { ok: true; address: string } | { ok: false; problem: SrsProblem };

export interface SrsOptions {
  /** The HMAC key. */
  secret: string;
  /** The domain of the rewritten addresses: one whose MX is popgate. */
  domain: string;
  /** Addresses older than this many days are refused (postsrsd's default: 21). */
  maxAgeDays: number;
}

export class Srs {
  readonly #secret: Buffer;
  readonly domain: string;
  readonly #maxAgeDays: number;

  constructor(options: SrsOptions) {
    if (options.secret.length < 16) throw new Error('the SRS secret must be at least 16 characters');
    this.#secret = Buffer.from(options.secret);
    this.domain = options.domain.toLowerCase();
    this.#maxAgeDays = options.maxAgeDays;
  }

  /** Whether a local part is an SRS address (SRS0 or SRS1 with any of libsrs2's separators). */
  static isSrs(local: string): boolean {
    return /^srs[01][=+-]/i.test(local);
  }

  /** The rewritten envelope sender for `sender` (local@domain), as forwarded mail carries it. */
  forward(sender: string, now = Date.now()): string {
    const at = sender.lastIndexOf('@');
    const local = sender.slice(0, at);
    const host = sender.slice(at + 1);
    if (host.toLowerCase() === this.domain) return sender;
    if (/^srs1[=+-]/i.test(local)) {
      // Already rewritten twice: keep the first forwarder and the SRS0 part, re-sign them.
      const fields = /^srs1[=+-][^=]*=([^=]*)=(.*)$/is.exec(local);
      if (fields) return `SRS1=${this.#hash(fields[1], fields[2])}=${fields[1]}=${fields[2]}@${this.domain}`;
    } else if (/^srs0[=+-]/i.test(local)) {
      const opaque = local.slice(4); // the separator and what follows
      return `SRS1=${this.#hash(host, opaque)}=${host}=${opaque}@${this.domain}`;
    }
    const stamp = timestamp(now);
    return `SRS0=${this.#hash(stamp, host, local)}=${stamp}=${host}=${local}@${this.domain}`;
  }

  /** Where a bounce to the SRS local part `local` (of our SRS domain) goes, or why it does not. */
  reverse(local: string, now = Date.now()): SrsReversed {
    if (local.length > MAX_ADDRESS_LENGTH) return { ok: false, problem: 'syntax' };
    if (/^srs1[=+-]/i.test(local)) {
      const fields = /^srs1[=+-]([^=]+)=([^=]+)=(.+)$/is.exec(local);
      if (!fields) return { ok: false, problem: 'syntax' };
      const [, hash, host, opaque] = fields;
      if (!this.#hashMatches(hash, host, opaque)) return { ok: false, problem: 'hash' };
      return { ok: true, address: `SRS0${opaque}@${host}` };
    }
    const fields = /^srs0[=+-]([^=]+)=([^=]{2})=([^=]+)=(.+)$/is.exec(local);
    if (!fields) return { ok: false, problem: 'syntax' };
    const [, hash, stamp, host, user] = fields;
    // libsrs2 checks the time stamp first; either way the answer is a refusal.
    if (!this.#hashMatches(hash, stamp, host, user)) return { ok: false, problem: 'hash' };
    if (!this.#fresh(stamp, now)) return { ok: false, problem: 'expired' };
    return { ok: true, address: `${user}@${host}` };
  }

  #hash(...fields: string[]): string {
    const hmac = createHmac('sha1', this.#secret);
    for (const field of fields) hmac.update(field.toLowerCase());
    return hmac.digest('base64').slice(0, HASH_LENGTH);
  }

  /** libsrs2 compares exactly, then without case (some relays lower-case local parts). */
  #hashMatches(hash: string, ...fields: string[]): boolean {
    return hash.length === HASH_LENGTH && this.#hash(...fields).toLowerCase() === hash.toLowerCase();
  }

  #fresh(stamp: string, now: number): boolean {
    const high = BASE32.indexOf(stamp[0].toUpperCase());
    const low = BASE32.indexOf(stamp[1].toUpperCase());
    if (high === -1 || low === -1) return false;
    const then = (high << 5) | low;
    let today = Math.floor(now / DAY_MS) % TIME_SLOTS;
    // The day counter wraps every 1024 days; a stamp "ahead" of today is from the last cycle.
    if (today < then) today += TIME_SLOTS;
    return today - then <= this.#maxAgeDays;
  }
}

/** Days since 1970, modulo 1024, in two base32 characters. */
function timestamp(now: number): string {
  const day = Math.floor(now / DAY_MS) % TIME_SLOTS;
  return BASE32[(day >> 5) & 31] + BASE32[day & 31];
}
