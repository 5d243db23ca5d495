import { Resolver } from 'node:dns/promises';

// Lookups for mail routing. An interface, so tests and providers can point popgate at their
// own resolvers ([dns] servers) and a caching resolver can slot in later.

export interface MxRecord {
  exchange: string;
  priority: number;
}

/** A lookup that failed: permanent for a name that does not exist, temporary otherwise. */
export class DnsError extends Error {
  readonly permanent: boolean;
  readonly code: string;
  constructor(message: string, code: string, permanent: boolean) {
    super(message);
    this.code = code;
    this.permanent = permanent;
  }
}

export interface DnsResolver {
  /** MX records; [] when the domain exists but has none. Throws DnsError. */
  mx(domain: string): Promise<MxRecord[]>;
  /** IPv4 then IPv6 addresses of a host; [] when it has none. Throws DnsError. */
  addresses(host: string): Promise<string[]>;
  /** TXT records, each joined from its strings; [] when none. Throws DnsError. */
  txt(name: string): Promise<string[]>;
}

// c-ares codes: a name that does not exist, or exists without records of the type asked.
const NO_SUCH_NAME = new Set(['ENOTFOUND']);
const NO_DATA = new Set(['ENODATA']);

export class SystemDnsResolver implements DnsResolver {
  readonly #resolver: Resolver;

  /** `servers` empty: the system's resolvers (/etc/resolv.conf). */
  constructor(servers: readonly string[], timeoutMs: number) {
    this.#resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
    if (servers.length > 0) this.#resolver.setServers([...servers]);
  }

  async mx(domain: string): Promise<MxRecord[]> {
    const records = await this.#ask(() => this.#resolver.resolveMx(domain), domain, 'MX');
    // RFC 7505 null MX is "0 ."; c-ares reports the root as "".
    return records.map((r) => ({ exchange: r.exchange === '.' ? '' : r.exchange.replace(/\.$/, '').toLowerCase(), priority: r.priority }));
  }

  async addresses(host: string): Promise<string[]> {
    const [v4, v6] = await Promise.allSettled([
      this.#ask(() => this.#resolver.resolve4(host), host, 'A'),
      this.#ask(() => this.#resolver.resolve6(host), host, 'AAAA'),
    ]);
    if (v4.status === 'rejected' && v6.status === 'rejected') throw v4.reason;
    return [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
  }

  async txt(name: string): Promise<string[]> {
    return (await this.#ask(() => this.#resolver.resolveTxt(name), name, 'TXT')).map((parts) => parts.join(''));
  }

  async #ask<T>(lookup: () => Promise<T[]>, name: string, type: string): Promise<T[]> {
    try {
      return await lookup();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
      if (NO_DATA.has(code)) return [];
      if (NO_SUCH_NAME.has(code)) throw new DnsError(`${name} does not exist (NXDOMAIN)`, code, true);
      throw new DnsError(`${type} lookup for ${name} failed (${code})`, code, false);
    }
  }
}
