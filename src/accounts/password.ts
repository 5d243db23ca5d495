import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { isLegacyHash, LegacyHashVerifier } from './legacy-hash.ts';

// Passwords are stored as PHC-style strings: $scrypt$ln=14,r=8,p=1$<salt>$<hash> (base64, no padding),
// or, for a user carried over from another server until their first login, as that server's
// "{SCHEME}hash" (legacy-hash.ts), which the account stores then replace with scrypt.
// scrypt runs on libuv's thread pool, so a login never blocks the event loop.
// N=2^14, r=8 (16 MiB, tens of ms): the interactive-login cost from the scrypt paper, a balance
// between guessing cost and the login rate of POP3 clients that poll every few minutes.
const DEFAULT = { ln: 14, r: 8, p: 1 };
const KEY_LENGTH = 32;

function derive(password: string, salt: Buffer, ln: number, r: number, p: number): Promise<Buffer> {
  const N = 2 ** ln;
  return new Promise((resolve, reject) =>
    scrypt(password.normalize('NFC'), salt, KEY_LENGTH, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) =>
      error ? reject(error) : resolve(key),
    ),
  );
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, DEFAULT.ln, DEFAULT.r, DEFAULT.p);
  return `$scrypt$ln=${DEFAULT.ln},r=${DEFAULT.r},p=${DEFAULT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

// Verifying against this when the user does not exist keeps the timing the same, so
// response times do not reveal which addresses exist.
let dummyHash: Promise<string> | undefined;

const legacyHashes = new LegacyHashVerifier();

/** True when a successful login should store a new scrypt hash in place of `stored`. */
export function needsRehash(stored: string): boolean {
  return isLegacyHash(stored);
}

export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  if (stored !== undefined && isLegacyHash(stored)) {
    // Never quicker than the check of an unknown user (one scrypt), so response times do not
    // tell which addresses exist, even for users whose carried-over scheme is quick.
    const [ok] = await Promise.all([legacyHashes.verify(password, stored), verifyPassword(password, undefined)]);
    return ok;
  }
  const phc = stored ?? (await (dummyHash ??= hashPassword(randomBytes(12).toString('hex'))));
  const match = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(phc);
  if (!match) return false;
  const expected = Buffer.from(match[5], 'base64url');
  const key = await derive(password, Buffer.from(match[4], 'base64url'), Number(match[1]), Number(match[2]), Number(match[3]));
  return key.length === expected.length && timingSafeEqual(key, expected) && stored !== undefined;
}

/**
 * Remembers successful password checks for a while. POP3 clients poll every few minutes with
 * the same password and POP-before-SMTP devices log in before each send, so without it every
 * login pays a full scrypt (tens of ms of CPU, 16 MiB). After a successful check it keeps
 * HMAC-SHA256(key, password) under the stored hash, with a key drawn at random per process and
 * never written anywhere; a later login with the same password against the same stored hash
 * matches in microseconds. Failed checks are never remembered, so every wrong guess still pays
 * scrypt (and the login guard's delays); a password change changes the stored hash, which
 * misses. The trade-off: someone who can read this process's memory could test guesses for
 * the remembered accounts at HMAC speed. `auth.verified_login_cache = "0s"` turns it off.
 */
export class VerifiedPasswordCache {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #key = randomBytes(32);
  readonly #entries = new Map<string, { mac: Buffer; expires: number }>();

  constructor(ttlMs: number, maxEntries = 100_000) {
    this.#ttlMs = ttlMs;
    this.#maxEntries = maxEntries;
  }

  #mac(password: string): Buffer {
    return createHmac('sha256', this.#key).update(password.normalize('NFC')).digest();
  }

  /** True when this password was verified against this stored hash within the time to live. */
  matches(stored: string, password: string, now = Date.now()): boolean {
    if (this.#ttlMs <= 0) return false;
    const entry = this.#entries.get(stored);
    if (!entry) return false;
    if (entry.expires <= now) {
      this.#entries.delete(stored);
      return false;
    }
    return timingSafeEqual(entry.mac, this.#mac(password));
  }

  /**
   * verifyPassword through the cache: a remembered success matches at once, a new one is
   * remembered. `stored` undefined (an unknown user) still pays a full check, so the time taken
   * does not tell unknown users from wrong passwords.
   */
  async verify(stored: string | undefined, password: string): Promise<boolean> {
    if (stored !== undefined && this.matches(stored, password)) return true;
    const ok = await verifyPassword(password, stored);
    if (ok && stored !== undefined) this.remember(stored, password);
    return ok;
  }

  remember(stored: string, password: string, now = Date.now()): void {
    if (this.#ttlMs <= 0) return;
    this.#entries.delete(stored);
    this.#entries.set(stored, { mac: this.#mac(password), expires: now + this.#ttlMs });
    // The oldest go first (a Map keeps insertion order).
    for (const oldest of this.#entries.keys()) {
      if (this.#entries.size <= this.#maxEntries) break;
      this.#entries.delete(oldest);
    }
  }
}
