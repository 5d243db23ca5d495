import { isIP } from 'node:net';
import { DnsError, type DnsResolver } from '../dns/resolver.ts';
import type { NextHop } from '../net/next-hop.ts';
import { Status } from './status.ts';

// Where mail for a domain goes next (RFC 5321 §5.1): a configured transport, the relayhost,
// or the domain's MX hosts in preference order, with the domain's own address when it has
// no MX at all. Routing decides; the SMTP client only connects where it is told.

export interface Target {
  /** The host name (for logs, TLS SNI and the DSN's Remote-MTA), or the IP itself. */
  host: string;
  ip: string;
  port: number;
}

export type Route =
  | { ok: true; via: 'transport' | 'relayhost' | 'mx' | 'address'; targets: Target[] }
  | { ok: false; permanent: boolean; status: string; reason: string };

export interface RouterSettings {
  /** Our own host name: an MX naming it would send mail back to us (RFC 5321 §5.1). */
  hostname: string;
  port: number;
  relayhost?: NextHop;
  transport: ReadonlyMap<string, NextHop>;
  /** Most MX hosts tried in one attempt (as Postfix's smtp_mx_address_limit). */
  maxHosts: number;
  /** True for an address and port that reach this server itself. */
  isOwnEndpoint(ip: string, port: number): boolean;
}

export class Router {
  readonly #dns: DnsResolver;
  readonly #settings: RouterSettings;

  constructor(dns: DnsResolver, settings: RouterSettings) {
    this.#dns = dns;
    this.#settings = settings;
  }

  /** The key connections are shared under: one per next hop rather than per domain. */
  destinationKey(domain: string): string {
    const hop = this.#settings.transport.get(domain) ?? this.#settings.relayhost;
    return hop ? `[${hop.host}]:${hop.port}` : domain;
  }

  async route(domain: string): Promise<Route> {
    try {
      const hop = this.#settings.transport.get(domain);
      if (hop) return await this.#fixed(hop, 'transport');
      if (this.#settings.relayhost) return await this.#fixed(this.#settings.relayhost, 'relayhost');
      return await this.#mx(domain);
    } catch (error) {
      if (!(error instanceof DnsError)) throw error;
      return { ok: false, permanent: false, status: Status.routingTemporary, reason: `DNS: ${error.message}` };
    }
  }

  async #fixed(hop: NextHop, via: 'transport' | 'relayhost'): Promise<Route> {
    const ips = isIP(hop.host) ? [hop.host] : await this.#dns.addresses(hop.host);
    if (ips.length === 0) return { ok: false, permanent: false, status: Status.routingTemporary, reason: `${via} ${hop.host} has no address records` };
    return { ok: true, via, targets: ips.map((ip) => ({ host: hop.host, ip, port: hop.port })) };
  }

  async #mx(domain: string): Promise<Route> {
    let records;
    try {
      records = await this.#dns.mx(domain);
    } catch (error) {
      if (error instanceof DnsError && error.permanent) return { ok: false, permanent: true, status: Status.badDestination, reason: `Domain ${domain} does not exist` };
      throw error;
    }
    // RFC 7505 §3: a null MX says the domain accepts no mail; do not try its address.
    if (records.some((r) => r.exchange === '')) {
      return { ok: false, permanent: true, status: Status.nullMx, reason: `Domain ${domain} accepts no mail (null MX, RFC 7505)` };
    }
    const implicit = records.length === 0;
    // RFC 5321 §5.1: no MX means the domain itself is the host, at preference 0.
    let hosts = implicit ? [{ exchange: domain.toLowerCase(), priority: 0 }] : shuffleEqualPreferences(records);
    const own = hosts.find((r) => r.exchange === this.#settings.hostname.toLowerCase());
    if (own) {
      // RFC 5321 §5.1: discard our own MX and every one no better than it.
      hosts = hosts.filter((r) => r.priority < own.priority);
      if (hosts.length === 0) return loops(domain);
    }
    hosts = hosts.slice(0, this.#settings.maxHosts);
    const lookups = await Promise.allSettled(hosts.map((h) => this.#dns.addresses(h.exchange)));
    const targets: Target[] = [];
    let sawOwn = false;
    let temporary: DnsError | undefined;
    lookups.forEach((lookup, i) => {
      if (lookup.status === 'rejected') {
        if (lookup.reason instanceof DnsError && !lookup.reason.permanent) temporary ??= lookup.reason;
        else if (!(lookup.reason instanceof DnsError)) throw lookup.reason;
        return;
      }
      for (const ip of lookup.value) {
        if (this.#settings.isOwnEndpoint(ip, this.#settings.port)) sawOwn = true;
        else targets.push({ host: hosts[i].exchange, ip, port: this.#settings.port });
      }
    });
    if (targets.length > 0) return { ok: true, via: implicit ? 'address' : 'mx', targets };
    if (temporary) throw temporary;
    if (sawOwn) return loops(domain);
    if (implicit) return { ok: false, permanent: true, status: Status.badDestination, reason: `Domain ${domain} has no MX or address records` };
    return { ok: false, permanent: false, status: Status.routingTemporary, reason: `No address for the MX hosts of ${domain} (${hosts.map((h) => h.exchange).join(', ')})` };
  }
}

function loops(domain: string): Route {
  return { ok: false, permanent: true, status: Status.routingLoop, reason: `Mail for ${domain} loops back to myself (its MX points at this server)` };
}

/** Preference order, with equal preferences in random order to spread load (RFC 5321 §5.1). */
function shuffleEqualPreferences<T extends { priority: number }>(records: T[]): T[] {
  return records
    .map((record) => ({ record, tie: Math.random() }))
    .sort((a, b) => a.record.priority - b.record.priority || a.tie - b.tie)
    .map((entry) => entry.record);
}
