import { isIP } from 'node:net';
import type { Parsed } from './next-hop.ts';

export interface ListenAddress {
  host: string;
  port: number;
  /**
   * For a listener: the networks of the load balancers in front of it (CIDR). A connection from
   * one of them must start with a PROXY protocol header, whose client address is then used;
   * one from anywhere else is refused. Absent or empty: no PROXY protocol, every peer is a client.
   */
  proxyProtocolFrom?: readonly string[];
}

/** Parses `host:port` or `[v6]:port`; port 0 asks the system for a free port (tests). */
export function parseListenAddress(text: string): Parsed<ListenAddress> {
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  const v4 = /^([^:\[\]]+):(\d+)$/.exec(text);
  const match = v6 ?? v4;
  if (!match) return { ok: false, reason: `"${text}" is not host:port (for example "127.0.0.1:110" or "[::1]:110")` };
  const host = match[1];
  const port = Number(match[2]);
  if (v6 && isIP(host) !== 6) return { ok: false, reason: `"${host}" is not an IPv6 address` };
  if (!Number.isInteger(port) || port < 0 || port > 65535) return { ok: false, reason: `port ${match[2]} is out of range 0-65535` };
  return { ok: true, value: { host, port } };
}

export function formatListenAddress(address: ListenAddress): string {
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
