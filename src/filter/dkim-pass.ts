import { createHash, verify, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type { DKIMVerifyResult } from 'mailauth';
import type { MessageKeyLookup } from './dkim-keys.ts';

// DKIM verification of the common message without mailauth's verifier: one or two
// DKIM-Signature fields that pass, rsa-sha256 or ed25519-sha256, relaxed or simple
// canonicalization, no l= and no x=, no ARC set, CRLF line endings throughout, up to 64 KiB.
// Anything else, and every signature that does not pass (a body or header changed, a key
// missing, revoked or failing to load, a bad signature), is answered `undefined`, and the
// message goes through mailauth's verifier from the start (src/filter/mailauth-checks.ts):
// this path only ever says "pass", so a verdict can never differ from mailauth's by taking it.
//
// Why: mailauth's verifier is a Writable stream per message that parses every header field,
// builds the ARC chain, a MIME structure finder and a result object with copies of the signed
// header fields and the canonicalized header in base64; measured in the server, that work and
// its garbage cost more than the RSA verification itself (docs/filtering.md, performance).
//
// What decides the verdict and the Authentication-Results line is still mailauth's own code,
// called directly: the header parser (tools.parseHeaders), the tag-list parser and the strict
// validity rules of a signature (parseDkimHeaders, the verifier's prepareSignature), the body
// canonicalization and hash (dkimBody), the header canonicalization (getSigningHeaderLines,
// generateCanonicalizedHeader), the ARC chain reader (getARChain), the From: and envelope
// parsing (nodemailer's addressparser, as the verifier calls it), the alignment
// (getAlignment), the ptype values (getStatusHeader) and the result's formatting
// (formatAuthHeaderRow). The crypto.verify() call is the verifier's, on the KeyObject of the
// shared key cache (src/filter/dkim-keys.ts). test/filter-mailauth-checks.test.ts compares the
// outcome with mailauth's authenticate() on the same messages, passing and not.

const requireFromHere = createRequire(import.meta.url);
const requireFromMailauth = createRequire(requireFromHere.resolve('mailauth'));

interface ParsedHeader {
  key: string | null;
  casedKey?: string;
  line: Buffer;
}
interface SignatureHeader {
  type: 'DKIM';
  original: Buffer | string;
  parsed?: Record<string, { value: unknown } | undefined>;
  skip?: string;
  invalid?: string;
  warnings?: string[];
  algorithm: string;
  signAlgo: string;
  hashAlgo: string;
  canonicalization: string;
  headerCanon: string;
  bodyCanon: string;
  signingDomain: string;
  selector: string;
  maxBodyLength: number | '';
  expiration: Date | null;
}
interface BodyHash {
  update(chunk: Buffer): void;
  digest(encoding: 'base64'): string;
}

const tools = requireFromHere('mailauth/lib/tools.js') as {
  parseHeaders(buf: Buffer): { parsed: ParsedHeader[]; original: Buffer };
  getSigningHeaderLines(parsed: ParsedHeader[], fieldNames: unknown, verify: boolean): { keys: string; headers: ParsedHeader[] };
  getAlignment(fromDomain: string, domainList: string[]): { domain?: string } | false;
  formatAuthHeaderRow(method: string, status: object, options: { strict: boolean }): string;
};
const parseDkimHeaders = requireFromHere('mailauth/lib/parse-dkim-headers.js') as (line: Buffer, options: { strict: boolean }) => SignatureHeader;
const { dkimBody } = requireFromHere('mailauth/lib/dkim/body/index.js') as { dkimBody: (canonicalization: string, hashAlgo: string, maxBodyLength: number | '') => BodyHash };
const { generateCanonicalizedHeader } = requireFromHere('mailauth/lib/dkim/header/index.js') as {
  generateCanonicalizedHeader(type: string, lines: { keys: string; headers: ParsedHeader[] }, options: object): { canonicalizedHeader: Buffer };
};
const { getARChain } = requireFromHere('mailauth/lib/arc/index.js') as { getARChain: (headers: object, options: { strict: boolean; warnings: string[] }) => unknown };
const { DkimVerifier } = requireFromHere('mailauth/lib/dkim/dkim-verifier.js') as {
  DkimVerifier: { prototype: { prepareSignature(this: object, signature: SignatureHeader): void; getStatusHeader(this: object, signature: SignatureHeader): Record<string, unknown> } };
};
// The verifier's own addressparser (nodemailer's, as mailauth resolves it).
const addressparser = requireFromMailauth('nodemailer/lib/addressparser') as (text: string) => { address?: string; group?: { address?: string }[] }[];

/** The verifier's settings prepareSignature and getStatusHeader read: popgate's strict mode. */
const STRICT = Object.freeze({ strict: true, rejectRsaSha1: true });

/** Larger messages go through mailauth's verifier, which hands them over in pieces. */
const SIZE_LIMIT = 64 * 1024;
const ALGORITHMS = new Set(['rsa-sha256', 'ed25519-sha256']);

export interface DkimOutcome {
  result: DKIMVerifyResult;
  fromFields: number;
  arcData: object;
}

/**
 * The verifier's outcome for a message whose every signature passes (or that has none), else
 * undefined. `lookups` is the message's key lookup, which mailauth's verifier then uses too: a key whose
 * lookup failed here is not asked of the DNS a second time (a timeout would be waited for twice).
 */
export async function passingDkim(message: Buffer, sender: string, lookups: MessageKeyLookup): Promise<DkimOutcome | undefined> {
  if (message.length > SIZE_LIMIT || message.length < 4 || (message[0] === 0x0d && message[1] === 0x0a)) return undefined;
  const blank = message.indexOf('\r\n\r\n');
  if (blank === -1 || !crlfOnly(message)) return undefined;
  const headers = tools.parseHeaders(message.subarray(0, blank + 4));
  const body = message.subarray(blank + 4);

  // No ARC set: the verifier would check its newest message signature too.
  const arcData = { chain: false as unknown, warnings: [] as string[] };
  try {
    arcData.chain = getARChain(headers, { strict: true, warnings: arcData.warnings });
  } catch {
    return undefined; // a broken chain: the verifier keeps the error for arc() to report
  }
  if (arcData.chain !== false || arcData.warnings.length > 0) return undefined;

  const signatures: SignatureHeader[] = [];
  for (const field of headers.parsed) {
    if (field.key !== 'dkim-signature') continue;
    if (signatures.length === 2) return undefined;
    const signature = parseDkimHeaders(field.line, { strict: true });
    signature.type = 'DKIM';
    DkimVerifier.prototype.prepareSignature.call(STRICT, signature);
    if (signature.skip || signature.invalid || (signature.warnings?.length ?? 0) > 0) return undefined;
    if (!ALGORITHMS.has(signature.algorithm) || signature.maxBodyLength !== '' || signature.expiration !== null) return undefined;
    signatures.push(signature);
  }

  // The author and envelope addresses, as the verifier reads them.
  const headerFrom: string[] = [];
  let fromFields = 0;
  for (const field of headers.parsed) {
    if (field.key !== 'from') continue;
    fromFields++;
    headerFrom.push(...authors(fieldValue(field)));
  }
  let envelopeFrom: string | false = false;
  if (sender) {
    envelopeFrom = firstAddress(sender);
  } else {
    // The null sender: the verifier reads the last Return-Path field instead.
    const field = headers.parsed.filter((h) => h.key === 'return-path').pop();
    if (field) envelopeFrom = firstAddress(fieldValue(field));
  }

  const results: DKIMVerifyResult['results'] = [];
  if (signatures.length === 0) {
    const status = { result: 'none', comment: 'message not signed' };
    results.push({ status, info: tools.formatAuthHeaderRow('dkim', status, STRICT) } as unknown as DKIMVerifyResult['results'][number]);
  } else {
    const bodyHashes = new Map<string, string>();
    for (const signature of signatures) {
      let bodyHash = bodyHashes.get(signature.bodyCanon);
      if (bodyHash === undefined) {
        const hasher = dkimBody(signature.bodyCanon, signature.hashAlgo, '');
        if (body.length > 0) hasher.update(body);
        bodyHash = hasher.digest('base64');
        bodyHashes.set(signature.bodyCanon, bodyHash);
      }
      if (signature.parsed?.bh?.value !== bodyHash) return undefined;
    }
    for (const signature of signatures) {
      const lines = tools.getSigningHeaderLines(headers.parsed, signature.parsed?.h?.value, true);
      const { canonicalizedHeader } = generateCanonicalizedHeader('DKIM', lines, { signatureHeaderLine: signature.original, canonicalization: signature.canonicalization, instance: false, strict: true });
      let key;
      try {
        key = await lookups.get('DKIM', `${signature.selector}._domainkey.${signature.signingDomain}`, undefined, { strict: true, hashAlgo: signature.hashAlgo });
      } catch {
        return undefined;
      }
      if (key.testing || key.warnings.length > 0 || key.keyType !== signature.signAlgo || key.flags.includes('s')) return undefined;
      const rsa = signature.signAlgo === 'rsa';
      const signed = Buffer.from(String(signature.parsed?.b?.value ?? ''), 'base64');
      let passed: boolean;
      try {
        passed = verify(rsa ? signature.algorithm : null, rsa ? canonicalizedHeader : createHash('sha256').update(canonicalizedHeader).digest(), key.publicKey as KeyObject, signed);
      } catch {
        return undefined;
      }
      if (!passed) return undefined;
      const status: Record<string, unknown> = { result: 'pass', header: DkimVerifier.prototype.getStatusHeader.call(STRICT, signature) };
      if (headerFrom.length) status.aligned = (tools.getAlignment(headerFrom[0].split('@').pop()!, [signature.signingDomain]) || undefined)?.domain || false;
      const b = String(signature.parsed?.b?.value);
      results.push({
        id: createHash('sha256').update(Buffer.from(b, 'base64')).digest('hex'),
        signingDomain: signature.signingDomain,
        selector: signature.selector,
        signature: b,
        algo: signature.parsed?.a?.value,
        format: signature.parsed?.c?.value,
        bodyHash: bodyHashes.get(signature.bodyCanon),
        bodyHashExpecting: signature.parsed?.bh?.value,
        status,
        info: tools.formatAuthHeaderRow('dkim', status, STRICT),
      } as unknown as DKIMVerifyResult['results'][number]);
    }
  }
  const result = { headerFrom, fromFields, envelopeFrom, results } as unknown as DKIMVerifyResult;
  return { result, fromFields, arcData };
}

/**
 * addressparser's answers, kept: the same From: field and sender come message after message,
 * and parsing them was a tenth of this path's garbage. A pure function of the text, so the
 * answer is the same; texts over 998 characters (a line's limit) are parsed every time.
 */
const parsedAddresses = new Map<string, { authors: readonly string[]; first: string | false }>();
const ADDRESS_TEXT_LIMIT = 998;
const ADDRESS_ENTRY_LIMIT = 1000;

function parsedAddress(text: string): { authors: readonly string[]; first: string | false } {
  let parsed = parsedAddresses.get(text);
  if (parsed) return parsed;
  const addresses = addressparser(text);
  const authors: string[] = [];
  // RFC 6854: the mailboxes of a group in From are authors too (the verifier's loop).
  for (const address of addresses) {
    for (const mailbox of ([] as unknown[]).concat(address?.group || address || []) as { address?: string }[]) {
      if (mailbox && mailbox.address) authors.push(mailbox.address);
    }
  }
  parsed = { authors: Object.freeze(authors), first: addresses.length && addresses[0].address ? addresses[0].address : false };
  if (text.length <= ADDRESS_TEXT_LIMIT) {
    if (parsedAddresses.size >= ADDRESS_ENTRY_LIMIT) parsedAddresses.delete(parsedAddresses.keys().next().value!);
    parsedAddresses.set(text, parsed);
  }
  return parsed;
}
/** The addresses of a From: field's mailboxes, as the verifier collects them. */
const authors = (text: string) => parsedAddress(text).authors;
/** The first address of a sender or Return-Path, as the verifier takes it. */
const firstAddress = (text: string) => parsedAddress(text).first;

/** A field's value as the verifier reads it: after the first colon, trimmed. */
function fieldValue(field: ParsedHeader): string {
  const text = field.line.toString();
  const colon = text.indexOf(':');
  return (colon >= 0 ? text.substring(colon + 1) : text).trim();
}

/** Every CR is followed by LF and every LF preceded by CR (mailauth's verifier rewrites bare LFs). */
function crlfOnly(message: Buffer): boolean {
  for (let at = message.indexOf(0x0a); at !== -1; at = message.indexOf(0x0a, at + 1)) if (at === 0 || message[at - 1] !== 0x0d) return false;
  for (let at = message.indexOf(0x0d); at !== -1; at = message.indexOf(0x0d, at + 1)) if (message[at + 1] !== 0x0a) return false;
  return true;
}
