import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type { MailauthResolver } from './dns.ts';

// DKIM and ARC public keys (RFC 6376 §3.6.1, RFC 8617 §4.1), parsed once for every message
// that names the same key record. mailauth's own key cache lives for one message: for each it
// fetches the TXT record, parses the tag list, builds a key object from the base64 (an RSA
// 2048 key: ASN.1 and a modulus check), exports it to PEM, and crypto.verify() parses that
// PEM again — measured, a third of the CPU of checking a 1 KB signed message (docs/filtering.md,
// performance). A busy MX sees the same few selectors message after message.
//
// The parsed key is keyed by the record's text, not by its name: the record is still looked
// up for every message through the resolver (src/filter/dns.ts, which keeps answers for their
// cache time), so a key rotated or revoked in the DNS (a new TXT, or "p=") is used as soon as
// the cached DNS answer expires, and a record is never parsed for a question it did not answer.
// The parsing itself stays mailauth's getPublicKey(), rules and errors included.

const mailauthTools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  getPublicKey(type: string, name: string, minBitLength: number | undefined, resolver: MailauthResolver, options: KeyLookupOptions): Promise<ParsedKey>;
  toALabel(name: string): string;
};

/** What mailauth's verifiers pass with a key lookup. */
export interface KeyLookupOptions {
  strict?: boolean;
  /** The signature's hash ("sha256"), which the record's h= may not allow. */
  hashAlgo?: string;
}

/** getPublicKey()'s answer, the key as a KeyObject (crypto.verify takes it without parsing). */
export interface ParsedKey {
  publicKey: KeyObject | string;
  rr: string;
  modulusLength?: number;
  keyType: string;
  flags: string[];
  testing: boolean;
  warnings: string[];
}

/** The shape of mailauth's per-message key cache (lib/tools.js createKeyCache), which its DKIM and ARC verifiers call. */
export interface MessageKeyLookup {
  /** ARC validation reuses the cache only when it was made for the resolver it is given. */
  resolver: MailauthResolver;
  get(type: string, name: string, minBitLength: number | undefined, options?: KeyLookupOptions): Promise<ParsedKey>;
}

type Outcome = { key: ParsedKey } | { error: Error };

/** How many parsed records are kept; a record longer than RECORD_LIMIT is parsed every time. */
const ENTRY_LIMIT = 1000;
/** An RSA 4096 key record is about 750 characters; nothing legitimate comes near this. */
const RECORD_LIMIT = 4096;

export class DkimKeyCache {
  readonly #outcomes = new Map<string, Outcome>();
  readonly #limit: number;

  constructor(limit = ENTRY_LIMIT) {
    this.#limit = limit;
  }

  /** How many parsed records are kept now. */
  get size(): number {
    return this.#outcomes.size;
  }

  /**
   * A key cache for one message, as mailauth's verifiers take it: the signatures and seals of
   * the message that name the same record share one lookup (as in mailauth), and the parsing
   * is shared with every other message.
   */
  forMessage(resolver: MailauthResolver): MessageKeyLookup {
    const lookups = new Map<string, Promise<ParsedKey>>();
    return {
      resolver,
      get: (type, name, minBitLength, options = {}) => {
        const question = `${options.strict === true}:${minBitLength ?? ''}:${options.hashAlgo ?? ''}:${name}`;
        let lookup = lookups.get(question);
        if (!lookup) {
          lookup = this.#lookup(type, name, minBitLength, resolver, options);
          lookup.catch(() => {}); // looked up ahead; every caller awaiting it still gets the error
          lookups.set(question, lookup);
        }
        return lookup;
      },
    };
  }

  async #lookup(type: string, name: string, minBitLength: number | undefined, resolver: MailauthResolver, options: KeyLookupOptions): Promise<ParsedKey> {
    // The same question getPublicKey() asks (an A-label, RFC 8616 §3); DNS errors pass as they are.
    const answer = await resolver(mailauthTools.toALabel(name), 'TXT');
    // The record text as getPublicKey() reads it: the strings of the first TXT record, joined.
    const first = Array.isArray(answer) ? answer[0] : undefined;
    const record = (Array.isArray(first) ? first : first === undefined ? [] : [first]).join('').replace(/\s+/g, '');
    const id = `${type}\0${options.strict === true}\0${minBitLength ?? ''}\0${options.hashAlgo ?? ''}\0${record}`;
    let outcome = this.#outcomes.get(id);
    if (outcome) {
      // Most recently used last, so the oldest is the one let go when the cache is full.
      this.#outcomes.delete(id);
      this.#outcomes.set(id, outcome);
    } else {
      outcome = await parse(type, name, minBitLength, answer, options);
      if (record.length <= RECORD_LIMIT) this.#remember(id, outcome);
    }
    if ('error' in outcome) throw copyOf(outcome.error);
    return outcome.key;
  }

  #remember(id: string, outcome: Outcome): void {
    if (this.#outcomes.size >= this.#limit) this.#outcomes.delete(this.#outcomes.keys().next().value!);
    this.#outcomes.set(id, outcome);
  }
}

/** mailauth's getPublicKey() on an answer already fetched, the PEM it exports turned into a KeyObject once. */
async function parse(type: string, name: string, minBitLength: number | undefined, answer: unknown[], options: KeyLookupOptions): Promise<Outcome> {
  try {
    const parsed = await mailauthTools.getPublicKey(type, name, minBitLength, async () => answer, options);
    const key: ParsedKey = { ...parsed, publicKey: createPublicKey(parsed.publicKey), flags: Object.freeze([...parsed.flags]) as string[], warnings: Object.freeze([...parsed.warnings]) as string[] };
    // Shared by every message: the verifiers only read it, and a frozen object keeps it so.
    return { key: Object.freeze(key) };
  } catch (error) {
    return { error: error as Error };
  }
}

/** A fresh copy of a key error for each message: ARC validation writes the name it asked onto the error (queryDomain). */
function copyOf(error: Error): Error {
  const copy = Object.assign(new Error(error.message, { cause: error.cause }), error);
  copy.name = error.name;
  return copy;
}
