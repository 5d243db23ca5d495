import { Resolver } from 'node:dns/promises';

// The DNS lookups of inbound filtering (SPF, DKIM keys, DMARC and ARC records for mailauth;
// blocklist zones), through the configured resolvers ([dns] servers) with their timeout, and
// a small cache: a busy MX checks the same few domains' records message after message.
//
// mailauth asks `resolver(name, rrtype)` and expects what `dns.promises.resolve()` answers,
// including its errors: ENOTFOUND and ENODATA mean "none" (SPF none, no DKIM key), anything
// else (ETIMEOUT, ESERVFAIL, ECONNREFUSED) a temporary error — temperror, never a
// permanent refusal (RFC 7208 §2.6.6, RFC 6376 §6.1.2).

/** How long answers are kept: long enough to spare the resolver, short enough for changes to show. */
const POSITIVE_TTL_MS = 60_000;
/** "No such name" or "no records" is kept for less (RFC 2308 would allow the SOA minimum). */
const NEGATIVE_TTL_MS = 15_000;
const CACHE_LIMIT = 10_000;

type Answer = { records: unknown[]; expires: number } | { error: NodeJS.ErrnoException; expires: number };

export type MailauthResolver = ((name: string, rrtype: string) => Promise<unknown[]>) & {
  /** The answer a lookup would get now from the cache (the same records array or error object each time), if the resolver has one (src/filter/answer-memo.ts). */
  cached?: (name: string, rrtype: string) => object | undefined;
};

export class FilterDns {
  readonly #resolver: Resolver;
  readonly #cache = new Map<string, Answer>();
  readonly #inFlight = new Map<string, Promise<unknown[]>>();
  readonly #now: () => number;

  /** `servers` empty: the system's resolvers. */
  constructor(servers: readonly string[], timeoutMs: number, now: () => number = Date.now) {
    this.#resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
    if (servers.length > 0) this.#resolver.setServers([...servers]);
    this.#now = now;
  }

  /** The resolver function mailauth takes. */
  get resolve(): MailauthResolver {
    const resolve: MailauthResolver = (name, rrtype) => this.lookup(name, rrtype);
    resolve.cached = (name, rrtype) => this.cached(name, rrtype);
    return resolve;
  }

  /** The records array (or the error) `lookup(name, rrtype)` would answer with now without asking the DNS, or undefined. */
  cached(name: string, rrtype: string): object | undefined {
    const cached = this.#cache.get(`${rrtype} ${name.toLowerCase()}`);
    if (!cached || cached.expires <= this.#now()) return undefined;
    return 'error' in cached ? cached.error : cached.records;
  }

  /** A lookup as `dns.promises.resolve(name, rrtype)` answers it, cached. */
  lookup(name: string, rrtype: string): Promise<unknown[]> {
    const key = `${rrtype} ${name.toLowerCase()}`;
    const cached = this.#cache.get(key);
    const now = this.#now();
    if (cached && cached.expires > now) return 'error' in cached ? Promise.reject(cached.error) : Promise.resolve(cached.records);
    // Concurrent messages from one sender ask the same question once.
    const running = this.#inFlight.get(key);
    if (running) return running;
    const lookup = (this.#resolver.resolve(name, rrtype) as Promise<unknown[]>).then(
      (records) => {
        this.#remember(key, { records, expires: this.#now() + (records.length > 0 ? POSITIVE_TTL_MS : NEGATIVE_TTL_MS) });
        return records;
      },
      (error: NodeJS.ErrnoException) => {
        // Only definite answers are kept; a timeout is asked again next time.
        if (error.code === 'ENOTFOUND' || error.code === 'ENODATA') this.#remember(key, { error, expires: this.#now() + NEGATIVE_TTL_MS });
        throw error;
      },
    );
    this.#inFlight.set(key, lookup);
    return lookup.finally(() => this.#inFlight.delete(key));
  }

  /** IPv4 addresses with their TTL, for blocklist zones (their answers are cached by TTL). */
  async addressesWithTtl(name: string): Promise<{ address: string; ttl: number }[]> {
    return this.#resolver.resolve4(name, { ttl: true });
  }

  #remember(key: string, answer: Answer): void {
    if (this.#cache.size >= CACHE_LIMIT) {
      const now = this.#now();
      for (const [other, entry] of this.#cache) if (entry.expires <= now) this.#cache.delete(other);
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    }
    this.#cache.set(key, answer);
  }
}
