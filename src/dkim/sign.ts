import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import type { DkimKeyring } from './keys.ts';

// DKIM signing (RFC 6376) with mailauth. The signing domain is the one in the From: header
// (or a parent of it), so DMARC (RFC 7489 §3.1.1, relaxed alignment) passes at the receiver.

export type SignResult =
  | { signed: true; domain: string; selector: string; message: Buffer }
  | { signed: false; reason: 'no key' }
  | { signed: false; reason: 'failed'; error: string };

export class DkimSigner {
  readonly #keys: DkimKeyring;

  constructor(keys: DkimKeyring) {
    this.#keys = keys;
  }

  async sign(message: Buffer): Promise<SignResult> {
    const fromDomain = headerFromDomain(message);
    if (!fromDomain) return { signed: false, reason: 'no key' };
    let key;
    try {
      key = candidateDomains(fromDomain)
        .map((domain) => this.#keys.get(domain))
        .find((k) => k !== undefined);
    } catch (error) {
      return { signed: false, reason: 'failed', error: `cannot read the DKIM key for ${fromDomain}: ${(error as Error).message}` };
    }
    if (!key) return { signed: false, reason: 'no key' };
    try {
      const result = await dkimSign(message, {
        canonicalization: 'relaxed/relaxed',
        signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey, canonicalization: 'relaxed/relaxed' }],
      } as Parameters<typeof dkimSign>[1]);
      // mailauth reports a key it cannot use in `errors` and returns no signature: never
      // treat an empty result as success.
      if (!result.signatures || !result.signatures.startsWith('DKIM-Signature:')) {
        const why = (result.errors ?? []).map((e) => (e as { message?: string }).message ?? String(e)).join('; ');
        return { signed: false, reason: 'failed', error: why || 'no signature produced' };
      }
      const signature = result.signatures.endsWith('\r\n') ? result.signatures : `${result.signatures}\r\n`;
      return { signed: true, domain: key.domain, selector: key.selector, message: Buffer.concat([Buffer.from(signature), message]) };
    } catch (error) {
      return { signed: false, reason: 'failed', error: (error as Error).message };
    }
  }
}

/** The domain of the first address in the From: header field, lower-cased. */
export function headerFromDomain(message: Buffer): string | undefined {
  const end = message.indexOf('\r\n\r\n');
  const header = message.subarray(0, end === -1 ? Math.min(message.length, 65536) : end).toString('latin1');
  const match = /(?:^|\r\n)from:((?:[^\r\n]|\r\n[ \t])*)/i.exec(header);
  if (!match) return undefined;
  const value = match[1].replace(/\r\n[ \t]/g, ' ').replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const address = /<([^<>]*)>/.exec(value)?.[1] ?? value.replace(/\([^()]*\)/g, '').trim().split(/[\s,]/)[0];
  const at = address.lastIndexOf('@');
  if (at === -1) return undefined;
  const domain = address.slice(at + 1).trim().toLowerCase();
  return /^[a-z0-9.-]+$/.test(domain) ? domain : undefined;
}

/** The domain and its parents, down to two labels: "a.b.example" → [a.b.example, b.example]. */
function candidateDomains(domain: string): string[] {
  const labels = domain.split('.');
  const out: string[] = [];
  for (let i = 0; i <= labels.length - 2; i++) out.push(labels.slice(i).join('.'));
  return out;
}
