import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

// Passwords are stored as PHC-style strings: $scrypt$ln=14,r=8,p=1$<salt>$<hash> (base64, no padding).
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

export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const phc = stored ?? (await (dummyHash ??= hashPassword(randomBytes(12).toString('hex'))));
  const match = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(phc);
  if (!match) return false;
  const expected = Buffer.from(match[5], 'base64url');
  const key = await derive(password, Buffer.from(match[4], 'base64url'), Number(match[1]), Number(match[2]), Number(match[3]));
  return key.length === expected.length && timingSafeEqual(key, expected) && stored !== undefined;
}
