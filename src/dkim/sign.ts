import type { dkimSign as DkimSign } from 'mailauth/lib/dkim/sign.js';
import { domainOf, headerSection, parseHeaderFrom } from './header-from.ts';
import type { DkimKeyring } from './keys.ts';

// DKIM signing (RFC 6376) with mailauth. The signing domain is the one in the From: header
// (or a parent of it), so DMARC (RFC 7489 §3.1.1, relaxed alignment) passes at the receiver.
// A signature vouches for the From: address, so a message is signed only for the domain its
// sender was checked for when it was accepted (recorded with the queued message): a customer
// writing another hosted domain into From:, or mail from outside forwarded by an alias, leaves
// unsigned rather than with that domain's signature. mailauth's signer is loaded at the first
// message with a key: a process that signs nothing (most workers, with the queue on one) never
// loads it.

let loadSigner: Promise<typeof DkimSign> | undefined;
const signer = () => (loadSigner ??= import('mailauth/lib/dkim/sign.js').then((module) => module.dkimSign));

export type SignResult =
  | { signed: true; domain: string; selector: string; message: Buffer }
  | { signed: false; reason: 'no key' }
  /** The From: domain is not the one the sender was checked for (or none was). */
  | { signed: false; reason: 'not checked' }
  | { signed: false; reason: 'failed'; error: string };

export class DkimSigner {
  readonly #keys: DkimKeyring;

  constructor(keys: DkimKeyring) {
    this.#keys = keys;
  }

  /** Signs for the From: domain if it is `checkedDomain`, the one the sender may send as. */
  async sign(message: Buffer, checkedDomain: string | undefined): Promise<SignResult> {
    const fromDomain = headerFromDomain(message);
    if (!fromDomain || fromDomain !== checkedDomain) return { signed: false, reason: 'not checked' };
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
      const dkimSign = await signer();
      const result = await dkimSign(message, {
        canonicalization: 'relaxed/relaxed',
        signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey, canonicalization: 'relaxed/relaxed' }],
      } as Parameters<typeof DkimSign>[1]);
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

/** The domain of the first From: address, lower-cased; undefined for a missing or ambiguous From:. */
export function headerFromDomain(message: Buffer): string | undefined {
  const from = parseHeaderFrom(headerSection([message]));
  return from.ok && from.addresses.length > 0 ? domainOf(from.addresses[0]) : undefined;
}

/** The domain and its parents, down to two labels: "a.b.example" → [a.b.example, b.example]. */
function candidateDomains(domain: string): string[] {
  const labels = domain.split('.');
  const out: string[] = [];
  for (let i = 0; i <= labels.length - 2; i++) out.push(labels.slice(i).join('.'));
  return out;
}
