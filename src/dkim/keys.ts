import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// DKIM keys (RFC 6376) as PEM files: keys_dir/<domain>/<selector>.pem, readable by the
// server only. One file per selector lets an operator publish a new key, switch
// dkim.selector, and retire the old one later (rotation without a gap).

export type DkimAlgorithm = 'rsa' | 'ed25519';

export interface DkimKey {
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  privateKey: string;
}

export class DkimKeyError extends Error {
  readonly exitCode = 1;
}

export function keyPath(keysDir: string, domain: string, selector: string): string {
  return join(keysDir, domain.toLowerCase(), `${selector}.pem`);
}

/** Creates a key; refuses to overwrite one (a published record would stop verifying). */
export function generateKey(keysDir: string, domain: string, selector: string, algorithm: DkimAlgorithm, bits = 2048): DkimKey {
  const path = keyPath(keysDir, domain, selector);
  mkdirSync(join(keysDir, domain.toLowerCase()), { recursive: true, mode: 0o700 });
  const pair =
    algorithm === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: bits, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
      : generateKeyPairSync('ed25519', { privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  try {
    writeFileSync(path, pair.privateKey, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new DkimKeyError(`a key for ${domain} with selector "${selector}" already exists (${path}): choose another selector with --selector, or run "popgate dkim show ${domain}"`);
    }
    throw error;
  }
  return { domain: domain.toLowerCase(), selector, algorithm, privateKey: pair.privateKey };
}

export function readKey(keysDir: string, domain: string, selector: string): DkimKey | undefined {
  let privateKey: string;
  try {
    privateKey = readFileSync(keyPath(keysDir, domain, selector), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const algorithm = createPublicKey(privateKey).asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa';
  return { domain: domain.toLowerCase(), selector, algorithm, privateKey };
}

/** The DNS name and TXT value to publish (RFC 6376 §3.6.1; RFC 8463 §4 for Ed25519). */
export function dnsRecord(key: DkimKey): { name: string; value: string } {
  const publicKey: KeyObject = createPublicKey(key.privateKey);
  const der = publicKey.export({ type: 'spki', format: 'der' });
  // Ed25519's p= is the bare 32-byte key, not the SubjectPublicKeyInfo around it.
  const p = (key.algorithm === 'ed25519' ? der.subarray(der.length - 32) : der).toString('base64');
  return { name: `${key.selector}._domainkey.${key.domain}`, value: `v=DKIM1; k=${key.algorithm}; p=${p}` };
}

/** A zone-file line; long values split into 255-octet strings (RFC 7208 §3.3 style). */
export function zoneFileLine(key: DkimKey): string {
  const { name, value } = dnsRecord(key);
  const strings: string[] = [];
  for (let i = 0; i < value.length; i += 255) strings.push(`"${value.slice(i, i + 255)}"`);
  return `${name}. IN TXT ( ${strings.join(' ')} )`;
}

/** Keys by domain, read on first use and re-read when a file changes. */
export class DkimKeyring {
  readonly #keysDir: string;
  readonly #selector: string;
  readonly #cache = new Map<string, { key: DkimKey | undefined; mtimeMs: number; checkedAt: number }>();

  constructor(keysDir: string, selector: string) {
    this.#keysDir = keysDir;
    this.#selector = selector;
  }

  get(domain: string, now = Date.now()): DkimKey | undefined {
    const cached = this.#cache.get(domain);
    if (cached && now - cached.checkedAt < 10_000) return cached.key;
    let mtimeMs = -1;
    try {
      mtimeMs = statSync(keyPath(this.#keysDir, domain, this.#selector)).mtimeMs;
    } catch {
      // no key for this domain
    }
    const key = cached && cached.mtimeMs === mtimeMs ? cached.key : mtimeMs === -1 ? undefined : readKey(this.#keysDir, domain, this.#selector);
    this.#cache.set(domain, { key, mtimeMs, checkedAt: now });
    return key;
  }
}
