import { createHash, timingSafeEqual } from 'node:crypto';
import { RequestThread } from '../threads/request-thread.ts';

// Password hashes carried over from another server (Dovecot, Courier, vpopmail ...), kept until
// the user's first successful login, which replaces them with popgate's scrypt (see
// password.ts). They are stored as Dovecot writes them, "{SCHEME}<hash>" (Dovecot's
// doc/wiki/Authentication.PasswordSchemes), so the stored text tells its scheme and never looks
// like popgate's own "$scrypt$...". Every accepted form is checked here at import, with limits
// on its cost parameters: a hash that would take seconds to verify, or that no library here can
// verify, is refused then, with the user named, and never reaches a login.

/** The schemes popgate verifies. */
export type LegacyScheme = 'SHA512-CRYPT' | 'SHA256-CRYPT' | 'BLF-CRYPT' | 'ARGON2ID' | 'ARGON2I' | 'SSHA512' | 'SSHA256' | 'SHA512' | 'SHA256';

const SCHEMES = new Set<string>(['SHA512-CRYPT', 'SHA256-CRYPT', 'BLF-CRYPT', 'ARGON2ID', 'ARGON2I', 'SSHA512', 'SSHA256', 'SHA512', 'SHA256']);

/** Schemes refused on purpose, with the reason an operator is told. */
const REFUSED: Record<string, string> = {
  'CRAM-MD5': 'it stores an HMAC-MD5 context for the CRAM-MD5 challenge, not a password hash a login can be checked against safely',
  'HMAC-MD5': 'it stores an HMAC-MD5 context for the CRAM-MD5 challenge, not a password hash a login can be checked against safely',
  'DIGEST-MD5': 'it is an unsalted MD5 of user, realm and password (a retired SASL mechanism)',
  'SCRAM-SHA-1': 'SCRAM verifiers are not carried over',
  'SCRAM-SHA-256': 'SCRAM verifiers are not carried over',
  'MD5-CRYPT': 'MD5-crypt ($1$) is broken by commodity hardware and no maintained pure JavaScript verifier exists',
  MD5: 'unsalted MD5 is not carried over',
  'PLAIN-MD5': 'unsalted MD5 is not carried over',
  'LDAP-MD5': 'unsalted MD5 is not carried over',
  SMD5: 'salted MD5 is not carried over',
  SHA: 'SHA-1 hashes are not carried over',
  SHA1: 'SHA-1 hashes are not carried over',
  SSHA: 'SHA-1 hashes are not carried over',
  CRYPT: 'traditional DES crypt keeps only 8 characters of the password',
  'DES-CRYPT': 'traditional DES crypt keeps only 8 characters of the password',
  NTLM: 'NTLM hashes are unsalted MD4',
  LANMAN: 'LANMAN hashes are not carried over',
  RPA: 'RPA hashes are not carried over',
  OTP: 'one-time password state is not carried over',
  SKEY: 'one-time password state is not carried over',
  PBKDF2: 'Dovecot PBKDF2 hashes are not carried over',
};

/** Plain-text passwords in a passwd-file (Dovecot's PLAIN and its aliases). */
const PLAIN = new Set(['PLAIN', 'CLEAR', 'CLEARTEXT']);

/** Cost limits: beyond them one verification would hold a core for seconds. */
export const LIMITS = {
  /** SHA-crypt rounds (glibc's own ceiling is 999,999,999; Dovecot's default 5,000). */
  shaCryptRounds: 1_000_000,
  /** bcrypt cost (2^cost rounds; Dovecot's default 5). */
  bcryptCost: 14,
  /** Argon2 memory in KiB (Dovecot's default 65,536 for ARGON2ID). */
  argon2MemoryKiB: 262_144,
  argon2Iterations: 16,
  argon2Parallelism: 16,
  /** A stored hash longer than this is not one of the accepted forms. */
  length: 512,
};

export class LegacyHashError extends Error {}

/** What a password field of another server becomes: a hash kept as it is, or a plain password to hash now. */
export type ImportedPassword = { kind: 'hash'; stored: string; scheme: LegacyScheme } | { kind: 'plain'; password: string };

/**
 * Reads a password field as Dovecot's passwd-file writes it: "{SCHEME}hash", or a bare crypt(3)
 * string ("$6$...", "$2y$...", "$argon2id$..."), or a bare value of `defaultScheme` (the
 * passdb's scheme= argument). Throws LegacyHashError saying what is wrong.
 */
export function parseImportedPassword(field: string, defaultScheme?: string): ImportedPassword {
  if (field.length > LIMITS.length) throw new LegacyHashError(`the password hash is longer than ${LIMITS.length} characters`);
  let scheme: string | undefined;
  let value = field;
  const prefixed = /^\{([A-Za-z0-9.-]{1,32})\}/.exec(field);
  if (prefixed) {
    scheme = prefixed[1].toUpperCase();
    value = field.slice(prefixed[0].length);
  } else if (field.startsWith('$')) {
    scheme = cryptScheme(field);
  } else {
    scheme = defaultScheme?.toUpperCase();
    if (!scheme) throw new LegacyHashError('the password has no {SCHEME} prefix and no default scheme was given');
  }
  // Dovecot's CRYPT is the system's crypt(3): what it means depends on the "$id$" of the value.
  if (scheme === 'CRYPT' && value.startsWith('$')) scheme = cryptScheme(value);
  if (PLAIN.has(scheme)) {
    if (value === '') throw new LegacyHashError('the plain-text password is empty');
    return { kind: 'plain', password: value };
  }
  if (scheme.includes('.')) throw new LegacyHashError(`the password scheme {${scheme}} has an encoding suffix; only the default encoding of each scheme is read`);
  const refused = REFUSED[scheme];
  if (refused) throw new LegacyHashError(`the password scheme {${scheme}} is not supported: ${refused}`);
  if (!SCHEMES.has(scheme)) throw new LegacyHashError(`unknown password scheme {${scheme}}`);
  checkForm(scheme as LegacyScheme, value);
  return { kind: 'hash', stored: `{${scheme}}${value}`, scheme: scheme as LegacyScheme };
}

/** The scheme of a bare crypt(3) string, by its "$id$". */
function cryptScheme(value: string): string {
  if (value.startsWith('$6$')) return 'SHA512-CRYPT';
  if (value.startsWith('$5$')) return 'SHA256-CRYPT';
  if (/^\$2[aby]\$/.test(value)) return 'BLF-CRYPT';
  if (value.startsWith('$argon2id$')) return 'ARGON2ID';
  if (value.startsWith('$argon2i$')) return 'ARGON2I';
  if (value.startsWith('$1$')) return 'MD5-CRYPT';
  throw new LegacyHashError(`unknown crypt(3) hash type ${value.slice(0, value.indexOf('$', 1) + 1) || value.slice(0, 4)}`);
}

const SHA_CRYPT = /^\$([56])\$(?:rounds=(\d{1,10})\$)?([^$]{0,16})\$([./0-9A-Za-z]+)$/;
const BCRYPT = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/;
const ARGON2 = /^\$(argon2id|argon2i)\$v=(\d+)\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,10})\$([A-Za-z0-9+/]{11,})\$([A-Za-z0-9+/]{22,})$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Digest lengths of the SHA-2 schemes, and whether a salt follows the digest. */
const SHA2 = { SSHA512: [64, true], SSHA256: [32, true], SHA512: [64, false], SHA256: [32, false] } as const;

function checkForm(scheme: LegacyScheme, value: string): void {
  const fail = (why: string): never => {
    throw new LegacyHashError(`the {${scheme}} hash is malformed: ${why}`);
  };
  switch (scheme) {
    case 'SHA512-CRYPT':
    case 'SHA256-CRYPT': {
      const match = SHA_CRYPT.exec(value);
      if (!match || (match[1] === '6') !== (scheme === 'SHA512-CRYPT')) fail('expected $6$ (SHA512-CRYPT) or $5$ (SHA256-CRYPT), an optional rounds=N$, a salt and the hash');
      if (match![4].length !== (match![1] === '6' ? 86 : 43)) fail('the hash part has the wrong length');
      if (match![2] !== undefined && Number(match![2]) > LIMITS.shaCryptRounds) fail(`rounds=${match![2]} is above the limit of ${LIMITS.shaCryptRounds}`);
      return;
    }
    case 'BLF-CRYPT': {
      const match = BCRYPT.exec(value);
      if (!match) fail('expected $2a$, $2b$ or $2y$, a two-digit cost and 53 characters of salt and hash');
      const cost = Number(match![1]);
      if (cost < 4 || cost > LIMITS.bcryptCost) fail(`cost ${cost} is outside 4-${LIMITS.bcryptCost}`);
      return;
    }
    case 'ARGON2ID':
    case 'ARGON2I': {
      const match = ARGON2.exec(value);
      if (!match || match[1].toUpperCase() !== scheme) fail(`expected $${scheme.toLowerCase()}$v=19$m=M,t=T,p=P$salt$hash`);
      const [, , version, memory, iterations, parallelism] = match!;
      if (version !== '19') fail(`version ${version} is not supported (only 19, Argon2 1.3)`);
      if (Number(memory) > LIMITS.argon2MemoryKiB || Number(memory) < 8 * Number(parallelism)) fail(`m=${memory} KiB is outside 8*p-${LIMITS.argon2MemoryKiB}`);
      if (Number(iterations) < 1 || Number(iterations) > LIMITS.argon2Iterations) fail(`t=${iterations} is outside 1-${LIMITS.argon2Iterations}`);
      if (Number(parallelism) < 1 || Number(parallelism) > LIMITS.argon2Parallelism) fail(`p=${parallelism} is outside 1-${LIMITS.argon2Parallelism}`);
      if (Buffer.from(match![7], 'base64').length > 64) fail('the hash is longer than 64 octets');
      return;
    }
    default: {
      const [length, salted] = SHA2[scheme];
      if (!BASE64.test(value)) fail('expected base64');
      const decoded = Buffer.from(value, 'base64').length;
      if (salted ? decoded <= length || decoded > length + 64 : decoded !== length) fail(`expected ${length} octets of digest${salted ? ' followed by 1-64 octets of salt' : ''}`);
    }
  }
}

/** True when `stored` is a carried-over hash rather than popgate's own. */
export function isLegacyHash(stored: string): boolean {
  return stored.startsWith('{');
}

/** The scheme of a stored hash: "scrypt" for popgate's own, else the carried-over scheme. */
export function schemeOf(stored: string): string {
  if (!isLegacyHash(stored)) return stored.startsWith('$scrypt$') ? 'scrypt' : 'unknown';
  return stored.slice(1, stored.indexOf('}'));
}

/**
 * Verifies `password` against a carried-over hash, here, on the calling thread: SHA-crypt and
 * Argon2 take from milliseconds to a second of one core, so the login path runs this in a worker
 * (LegacyHashVerifier below). The password's octets are used as they are (UTF-8, no
 * normalisation), as the old server hashed them. Comparisons are constant-time. The libraries are
 * loaded here, on first use, not with this module: every server process and command imports it
 * (through password.ts), and only the worker verifies.
 */
export async function verifyLegacyHashHere(password: string, stored: string): Promise<boolean> {
  let parsed: ImportedPassword;
  try {
    parsed = parseImportedPassword(stored);
  } catch {
    return false;
  }
  if (parsed.kind !== 'hash') return false;
  const value = stored.slice(stored.indexOf('}') + 1);
  switch (parsed.scheme) {
    case 'SHA512-CRYPT':
    case 'SHA256-CRYPT': {
      // unixcrypt recomputes with the stored salt and rounds, and compares with timingSafeEqual.
      const { verify } = await import('unixcrypt');
      return verify(password, value);
    }
    case 'BLF-CRYPT': {
      // $2y$ (PHP's name after its 2011 fix) is the same algorithm as $2b$, which bcryptjs reads.
      const { default: bcrypt } = await import('bcryptjs');
      const hash = await bcrypt.hash(password, value.slice(0, 29).replace(/^\$2y\$/, '$2b$'));
      return equal(Buffer.from(hash.slice(29)), Buffer.from(value.slice(29)));
    }
    case 'ARGON2ID':
    case 'ARGON2I': {
      const match = ARGON2.exec(value)!;
      const expected = Buffer.from(match[7], 'base64');
      const options = {
        password,
        salt: Buffer.from(match[6], 'base64'),
        memorySize: Number(match[3]),
        iterations: Number(match[4]),
        parallelism: Number(match[5]),
        hashLength: expected.length,
        outputType: 'binary' as const,
      };
      const { argon2i, argon2id } = await import('hash-wasm');
      const key = await (parsed.scheme === 'ARGON2ID' ? argon2id(options) : argon2i(options));
      return equal(Buffer.from(key), expected);
    }
    default: {
      const [length, salted] = SHA2[parsed.scheme];
      const decoded = Buffer.from(value, 'base64');
      const digest = createHash(length === 64 ? 'sha512' : 'sha256').update(password).update(salted ? decoded.subarray(length) : Buffer.alloc(0)).digest();
      return equal(digest, decoded.subarray(0, length));
    }
  }
}

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Verifications waiting for the worker at most; past that a login fails at once (an error, not a wrong password). */
const MAX_WAITING = 256;

/**
 * Runs verifyLegacyHashHere in one worker thread, so a second of Argon2 never stalls the event
 * loop that serves every session. The worker starts on the first carried-over hash and does
 * not keep the process alive; should it die, what it was doing is rejected and the next
 * verification starts a new one. Verifications wait in line: carried-over hashes are checked
 * only until each user's first login, so one core is enough, and the login guard's delays keep
 * a guesser from filling the line.
 */
export class LegacyHashVerifier {
  readonly #thread = new RequestThread<{ password: string; stored: string }, boolean>(new URL('./legacy-hash-worker.ts', import.meta.url), { name: 'the password check worker' });

  verify(password: string, stored: string): Promise<boolean> {
    if (this.#thread.waiting >= MAX_WAITING) return Promise.reject(new Error(`${MAX_WAITING} carried-over password checks are already waiting`));
    return this.#thread.request({ password, stored });
  }

  /** Stops the worker (verifications under way are rejected). */
  close(): Promise<void> {
    return this.#thread.close();
  }
}
