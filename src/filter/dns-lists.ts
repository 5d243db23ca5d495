import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { expandIpv6 } from '../relay-auth/key.ts';

// DNS blocklists and allowlists (DNSBL/DNSWL, RFC 5782) of the client address, as Postfix's
// postscreen and Haraka's dns-list ask them: every configured zone at once, within one
// deadline, each with a weight, the return codes that count and an action (refuse, score, or
// allow: lower the score and skip greylisting). What to do with the hits is the pipeline's.
//
// A list that answers wrongly must never refuse everybody. So:
// - Only answers in 127.0.0.0/8 are listings: lists put their codes there, where no real host
//   is. Anything else comes from a resolver that rewrites "no such name" into an address of
//   its own (a search page), and counts as no listing.
// - An answer of 127.0.0.1 is never a listing: it is localhost, which broken resolvers and
//   wildcards answer for any name (and the address RFC 5782 §5 keeps out of every list). A
//   list that uses it as a code (HostKarma's "known good" answer) cannot be used for it.
// - 127.255.255.0/24 is how lists say "query refused" (Spamhaus: .252 typing error in the
//   zone name, .254 queries through a public resolver, .255 too many queries): no listing.
// - Before a zone's listing is believed, the zone is asked about 127.0.0.1 (RFC 5782 §5: "IPv4-
//   based DNSxLs MUST NOT contain an entry for 127.0.0.1"), and again every minute while it
//   is used. A zone that lists it answers every query alike (a wildcard left by a list that
//   shut down, or a hostile one): its listings count as none until it answers that test
//   correctly again. Haraka checks the same test point. Until a zone has passed the test once,
//   a listing from it counts as unanswered.
// Each of these problems is logged once per zone per hour, not per query.
//
// A timeout, SERVFAIL or any other failure leaves the zone unanswered: never a refusal, and
// not cached. "No such name" (and "no address records") is not listed, cached for a minute.
// Listings are cached by their TTL (at most an hour), in a bounded cache; a question already
// on its way is not asked twice. An answer that arrives after the deadline is still cached.
//
// Which clients are worth asking about is the caller's decision: no public list lists private
// or loopback addresses, and asking about them only tells the list's operator about them.

export interface ListZone {
  /** e.g. "zen.spamhaus.org" */
  zone: string;
  /** "reject": a listing refuses at RCPT (with the zone named); "score": adds weight; "allow": a DNSWL (lowers the score, skips greylisting) */
  action: 'reject' | 'score' | 'allow';
  /** Added to (or, for allow, taken from) the spam score. */
  weight: number;
  /** Return codes that count (e.g. ["127.0.0.2", "127.0.0.4"]); empty: any 127.x.y.z listing. */
  codes: string[];
}

/** One zone that lists the address: its weight counts once, whatever number of codes matched. */
export interface ListHit {
  zone: string;
  /** The matching return code (the lowest one, when several matched). */
  code: string;
  action: ListZone['action'];
  weight: number;
}

export interface ListLookup {
  /** The zones that list the address, in the configured order. */
  hits: ListHit[];
  /** Zones that timed out or failed (or whose test has never been answered), in the configured order. */
  unanswered: string[];
}

/** What the lists need of a resolver: `FilterDns` (src/filter/dns.ts) is one. Errors carry `.code` (ENOTFOUND, ENODATA, ETIMEOUT …). */
export interface AddressResolver {
  addressesWithTtl(name: string): Promise<{ address: string; ttl: number }[]>;
}

export interface DnsListSettings {
  /** How long a lookup may take, all zones together: a zone that has not answered by then is unanswered. */
  deadlineMs: number;
  /** The clock of the cache (ms); Date.now when not given. */
  now?: () => number;
  /** Answers kept at most (the oldest go first); 50,000 when not given. */
  cacheEntries?: number;
}

/** "No such name" is kept for a minute (RFC 2308 would allow the SOA minimum; lists delist quickly). */
const NOT_LISTED_TTL_MS = 60_000;
/** A listing is kept for its TTL, but no longer than this, so a delisting shows within the hour. */
const MAX_LISTING_TTL_MS = 3_600_000;
/** How often a zone in use is asked about its test point again. */
const TEST_INTERVAL_MS = 60_000;
/** A problem of a zone is logged at most once in this time. */
const REPORT_INTERVAL_MS = 3_600_000;
const DEFAULT_CACHE_ENTRIES = 50_000;
/** The query name of the address no list may contain (RFC 5782 §5). */
const NEVER_LISTED = '1.0.0.127';
/** The longest zone name for which an IPv6 query (32 nibbles, 64 characters) stays within 253. */
const MAX_ZONE_LENGTH = 253 - 64;

const REFUSAL_MEANINGS: Record<string, string> = {
  '127.255.255.252': 'typing error in the zone name',
  '127.255.255.254': 'queries through a public or unattributable resolver are refused',
  '127.255.255.255': 'too many queries',
};

type Answer = { addresses: string[]; ttlMs: number } | { failure: string };
type ZoneOutcome = { listed: false } | { listed: true; code: string } | { unanswered: true };
type AnswerKind = 'listing' | 'refusal' | 'not a list answer';

interface ZoneTest {
  listsEverything: boolean;
  testedAt: number;
}

export class DnsLists {
  readonly #zones: readonly ListZone[];
  readonly #dns: AddressResolver;
  readonly #deadlineMs: number;
  readonly #now: () => number;
  readonly #cacheEntries: number;
  readonly #log: Logger;
  readonly #cache = new Map<string, { addresses: string[]; expires: number }>();
  readonly #inFlight = new Map<string, Promise<Answer>>();
  readonly #tests = new Map<string, ZoneTest>();
  readonly #testing = new Map<string, Promise<void>>();
  readonly #reported = new Map<string, number>();

  constructor(zones: readonly ListZone[], dns: AddressResolver, settings: DnsListSettings, log: Logger) {
    const seen = new Set<string>();
    this.#zones = zones.map((zone) => {
      const checked = checkedZone(zone);
      if (seen.has(checked.zone)) throw new Error(`DNS list zone "${checked.zone}" is configured twice`);
      seen.add(checked.zone);
      return checked;
    });
    if (!(settings.deadlineMs > 0)) throw new Error(`the DNS list deadline must be a positive number of ms, got ${settings.deadlineMs}`);
    this.#dns = dns;
    this.#deadlineMs = settings.deadlineMs;
    this.#now = settings.now ?? Date.now;
    this.#cacheEntries = settings.cacheEntries ?? DEFAULT_CACHE_ENTRIES;
    this.#log = log;
  }

  /** Every zone for `ip`, in parallel, within the deadline; answers cached by their TTL (bounded). */
  async lookup(ip: string): Promise<ListLookup> {
    const reversed = reversedAddress(ip);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<ZoneOutcome>((resolve) => (timer = setTimeout(() => resolve({ unanswered: true }), this.#deadlineMs)));
    try {
      const outcomes = await Promise.all(this.#zones.map((zone) => Promise.race([this.#askZone(zone, reversed), deadline])));
      const result: ListLookup = { hits: [], unanswered: [] };
      for (const [i, outcome] of outcomes.entries()) {
        const zone = this.#zones[i];
        if ('unanswered' in outcome) result.unanswered.push(zone.zone);
        else if (outcome.listed) result.hits.push({ zone: zone.zone, code: outcome.code, action: zone.action, weight: zone.weight });
      }
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  /** One zone's verdict on an address. Never rejects. */
  async #askZone(zone: ListZone, reversed: string): Promise<ZoneOutcome> {
    const test = this.#tests.get(zone.zone);
    const testing = test === undefined || this.#now() - test.testedAt >= TEST_INTERVAL_MS ? this.#testZone(zone.zone) : undefined;
    const answer = await this.#answer(`${reversed}.${zone.zone}`);
    if ('failure' in answer) {
      this.#report(zone.zone, 'unanswered', '', { error: answer.failure }, `DNS list ${zone.zone} did not answer (${answer.failure}): its zone counts as unanswered`);
      return { unanswered: true };
    }
    const listings = answer.addresses.filter((address) => this.#isListing(zone.zone, address));
    if (listings.length === 0) return { listed: false };
    // Only a listing needs the zone's test ("not listed" is believable from any zone), and the
    // freshest one: a test asked for just now has been on its way while the zone answered.
    await testing;
    const tested = this.#tests.get(zone.zone);
    if (tested === undefined) return { unanswered: true };
    if (tested.listsEverything) return { listed: false };
    const counted = listings.filter((code) => zone.codes.length === 0 || zone.codes.includes(code)).sort((a, b) => ipv4Value(a) - ipv4Value(b));
    return counted.length > 0 ? { listed: true, code: counted[0] } : { listed: false };
  }

  /** Whether an address a zone answered is a listing; what is not is reported. */
  #isListing(zone: string, address: string): boolean {
    const kind = answerKind(address);
    if (kind === 'refusal') {
      const meaning = REFUSAL_MEANINGS[address];
      this.#report(zone, 'query_refused', address, { code: address, meaning }, `DNS list ${zone} refused the query (${address}${meaning ? `: ${meaning}` : ''}): its answers count as no listing`);
    } else if (kind === 'not a list answer') {
      this.#report(zone, 'not_a_list_answer', '', { answer: address }, `DNS list ${zone} answered ${address}, which is not a listing (expected 127.0.0.2-127.255.255.251, not 127.0.0.1): it counts as no listing`);
    }
    return kind === 'listing';
  }

  /** Asks a zone about the address it must not list, unless that is being asked already. Never rejects. */
  #testZone(zone: string): Promise<void> {
    let testing = this.#testing.get(zone);
    if (testing) return testing;
    testing = this.#ask(`${NEVER_LISTED}.${zone}`)
      .then((answer) => {
        // An unanswered test leaves what was known; a zone never tested stays untrusted.
        if ('failure' in answer) return;
        const listsEverything = answer.addresses.some((address) => answerKind(address) === 'listing');
        const before = this.#tests.get(zone);
        this.#tests.set(zone, { listsEverything, testedAt: this.#now() });
        if (listsEverything && !before?.listsEverything) {
          this.#log.warn(
            { event: 'dns_list_lists_everything', zone, answer: answer.addresses },
            `DNS list ${zone} lists 127.0.0.1, which no list may (RFC 5782 §5): it answers every query alike, and its listings count as none until it stops`,
          );
        } else if (!listsEverything && before?.listsEverything) {
          this.#log.info({ event: 'dns_list_trusted_again', zone }, `DNS list ${zone} no longer lists 127.0.0.1: its listings count again`);
        }
      })
      .finally(() => this.#testing.delete(zone));
    this.#testing.set(zone, testing);
    return testing;
  }

  /** A name's addresses, from the cache or asked once however many lookups want it. Never rejects. */
  #answer(name: string): Promise<Answer> {
    const cached = this.#cache.get(name);
    if (cached) {
      if (cached.expires > this.#now()) return Promise.resolve({ addresses: cached.addresses, ttlMs: cached.expires - this.#now() });
      this.#cache.delete(name);
    }
    let running = this.#inFlight.get(name);
    if (!running) {
      running = this.#ask(name)
        .then((answer) => {
          if (!('failure' in answer) && answer.ttlMs > 0) this.#remember(name, answer.addresses, answer.ttlMs);
          return answer;
        })
        .finally(() => this.#inFlight.delete(name));
      this.#inFlight.set(name, running);
    }
    return running;
  }

  /** One question to the resolver. Never rejects: a failure is an answer of its own. */
  async #ask(name: string): Promise<Answer> {
    try {
      const records = await this.#dns.addressesWithTtl(name);
      if (records.length === 0) return { addresses: [], ttlMs: NOT_LISTED_TTL_MS };
      const ttlMs = Math.min(MAX_LISTING_TTL_MS, ...records.map((record) => Math.max(0, record.ttl) * 1000));
      return { addresses: records.map((record) => record.address), ttlMs };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') return { addresses: [], ttlMs: NOT_LISTED_TTL_MS };
      return { failure: code ?? String(error) };
    }
  }

  #remember(name: string, addresses: string[], ttlMs: number): void {
    // Oldest first: answers are kept for a minute to an hour, so the oldest is about the first to expire.
    while (this.#cache.size >= this.#cacheEntries) {
      const oldest = this.#cache.keys().next();
      if (oldest.done) break;
      this.#cache.delete(oldest.value);
    }
    this.#cache.set(name, { addresses, expires: this.#now() + ttlMs });
  }

  /** Logs a zone's problem (told apart by `variant` too, if given) once per REPORT_INTERVAL_MS. */
  #report(zone: string, problem: 'unanswered' | 'query_refused' | 'not_a_list_answer', variant: string, fields: Record<string, unknown>, message: string): void {
    const key = `${zone} ${problem} ${variant}`;
    const now = this.#now();
    const last = this.#reported.get(key);
    if (last !== undefined && now - last < REPORT_INTERVAL_MS) return;
    this.#reported.set(key, now);
    this.#log.warn({ event: 'dns_list_problem', zone, problem, ...fields }, message);
  }
}

function answerKind(address: string): AnswerKind {
  if (!isIPv4(address) || !address.startsWith('127.') || address === '127.0.0.1') return 'not a list answer';
  return address.startsWith('127.255.255.') ? 'refusal' : 'listing';
}

function ipv4Value(address: string): number {
  return address.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

/**
 * The address as a list is asked about it (RFC 5782 §2.1, §2.4): IPv4 octets reversed
 * ("192.0.2.7" → "7.2.0.192"); IPv6 as 32 reversed nibbles; IPv4-mapped IPv6 as the IPv4
 * address it is.
 */
export function reversedAddress(ip: string): string {
  if (isIPv4(ip)) return ip.split('.').reverse().join('.');
  if (!isIPv6(ip)) throw new Error(`not an IP address: ${JSON.stringify(ip.slice(0, 100))}`);
  const words = expandIpv6(ip);
  if (words.slice(0, 5).every((word) => word === 0) && words[5] === 0xffff) {
    return [words[7] & 255, words[7] >> 8, words[6] & 255, words[6] >> 8].join('.');
  }
  return [...words.map((word) => word.toString(16).padStart(4, '0')).join('')].reverse().join('.');
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** The zone as it is used (lower case, no final dot), or an error that names it and what is wrong. */
function checkedZone(zone: ListZone): ListZone {
  const name = String(zone.zone ?? '').toLowerCase().replace(/\.$/, '');
  const fail = (reason: string): never => {
    throw new Error(`DNS list zone ${JSON.stringify(String(zone.zone ?? '').slice(0, 300))}: ${reason}`);
  };
  if (name.length === 0 || name.length > MAX_ZONE_LENGTH || !name.split('.').every((label) => LABEL.test(label))) {
    fail(`not a DNS zone name of at most ${MAX_ZONE_LENGTH} characters (for example "zen.spamhaus.org")`);
  }
  if (!['reject', 'score', 'allow'].includes(zone.action)) fail(`action must be "reject", "score" or "allow", got ${JSON.stringify(zone.action)}`);
  if (!Number.isFinite(zone.weight) || zone.weight < 0) fail(`weight must be a number of 0 or more, got ${zone.weight}`);
  for (const code of zone.codes) {
    if (answerKind(code) !== 'listing') fail(`return code ${JSON.stringify(code)} can never count: a listing is an address in 127.0.0.0/8 other than 127.0.0.1 and 127.255.255.x`);
  }
  return { zone: name, action: zone.action, weight: zone.weight, codes: [...new Set(zone.codes)] };
}
