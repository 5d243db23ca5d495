import { isIP } from 'node:net';

export interface NextHop {
  host: string;
  port: number;
}

const HOST_NAME = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/i;

/**
 * Parses a next hop as written in the config: "host", "host:port", "[host]:port" (brackets
 * as in Postfix, accepted for familiarity: a next hop is never looked up as MX) or
 * "[2001:db8::1]:25". Returns a reason when the text is not one.
 */
export function parseNextHop(text: string, defaultPort: number): NextHop | string {
  const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:\[\]]+)(?::(\d+))?$/.exec(text) ?? (isIP(text) === 6 ? [text, text, undefined] : null);
  if (!match) return `"${text}" is not host:port (for example "smtp.example.net:587" or "[2001:db8::1]:25")`;
  const host = match[1];
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  if (isIP(host) === 0 && !HOST_NAME.test(host)) return `"${host}" is neither a host name nor an IP address`;
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port ${match[2]} is out of range 1-65535`;
  return { host, port };
}
