import { BlockList, isIPv4 } from 'node:net';

/** IPv4-mapped IPv6 (::ffff:1.2.3.4) is the same client as 1.2.3.4. */
export function normalizeIp(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1] : address.toLowerCase();
}

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

export function isLoopback(ip: string): boolean {
  return loopback.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6');
}

/** A set of CIDR networks ("10.0.0.0/8", "2001:db8::/32", or single addresses). */
export class NetworkList {
  readonly #list = new BlockList();
  readonly entries: readonly string[];
  constructor(cidrs: readonly string[]) {
    this.entries = cidrs;
    for (const cidr of cidrs) {
      const error = addNetwork(this.#list, cidr);
      if (error) throw new Error(error);
    }
  }
  has(ip: string): boolean {
    if (this.entries.length === 0) return false;
    return this.#list.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6');
  }
}

export function validateNetwork(cidr: string): string | undefined {
  return addNetwork(new BlockList(), cidr);
}

function addNetwork(list: BlockList, cidr: string): string | undefined {
  const [address, prefixText] = cidr.split('/');
  const family = isIPv4(address) ? 'ipv4' : /^[0-9a-f:.]+$/i.test(address) && address.includes(':') ? 'ipv6' : undefined;
  if (!family) return `"${cidr}" is not an IP network (for example "10.0.0.0/8" or "2001:db8::/32")`;
  const max = family === 'ipv4' ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return `"${cidr}" has a prefix outside 0-${max}`;
  try {
    list.addSubnet(address, prefix, family);
  } catch {
    return `"${cidr}" is not an IP network`;
  }
  return undefined;
}
