import { isIP } from 'node:net';

/** A parsed config value, or why the text is not one. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface NextHop {
  host: string;
  port: number;
}

const HOST_NAME = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/i;

/**
 * Parses a next hop as written in the config: "host", "host:port", "[host]:port" (brackets
 * as in Postfix, accepted for familiarity: a next hop is never looked up as MX) or
 * "[2001:db8::1]:25".
 */
export function parseNextHop(text: string, defaultPort: number): Parsed<NextHop> {
  const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:\[\]]+)(?::(\d+))?$/.exec(text) ?? (isIP(text) === 6 ? [text, text, undefined] : null);
  if (!match) return { ok: false, reason: `"${text}" is not host:port (for example "smtp.example.net:587" or "[2001:db8::1]:25")` };
  const host = match[1];
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  if (isIP(host) === 0 && !HOST_NAME.test(host)) return { ok: false, reason: `"${host}" is neither a host name nor an IP address` };
  if (!Number.isInteger(port) || port < 1 || port > 65535) return { ok: false, reason: `port ${match[2]} is out of range 1-65535` };
  return { ok: true, value: { host, port } };
}
