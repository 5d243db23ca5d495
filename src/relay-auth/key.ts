import { isIPv4, isIPv6 } from 'node:net';

// A POP-before-SMTP grant is keyed by the client's address, or by its network when a prefix
// is configured (e.g. /64 for IPv6 privacy addresses, which change between the POP3 login
// and the SMTP connection).

export interface KeyPrefixes {
  ipv4: number;
  ipv6: number;
}

/** "192.0.2.7", "192.0.2.0/24", "2001:db8:1:2::/64" or "2001:db8::7". */
export function grantKey(ip: string, prefixes: KeyPrefixes): string {
  if (isIPv4(ip)) {
    if (prefixes.ipv4 >= 32) return ip;
    const value = ip.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
    const mask = prefixes.ipv4 === 0 ? 0 : (0xffffffff << (32 - prefixes.ipv4)) >>> 0;
    const network = (value & mask) >>> 0;
    return `${[24, 16, 8, 0].map((shift) => (network >>> shift) & 255).join('.')}/${prefixes.ipv4}`;
  }
  if (isIPv6(ip)) {
    const words = expandIpv6(ip);
    if (prefixes.ipv6 >= 128) return compressIpv6(words);
    for (let i = 0; i < 8; i++) {
      const keep = Math.max(0, Math.min(16, prefixes.ipv6 - i * 16));
      words[i] = keep === 0 ? 0 : words[i] & ((0xffff << (16 - keep)) & 0xffff);
    }
    return `${compressIpv6(words)}/${prefixes.ipv6}`;
  }
  return ip;
}

/** The eight 16-bit words of an IPv6 address (embedded IPv4 and "::" expanded); `ip` must be valid. */
export function expandIpv6(ip: string): number[] {
  let text = ip.toLowerCase().split('%')[0];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const parts = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + `${((parts[0] << 8) | parts[1]).toString(16)}:${((parts[2] << 8) | parts[3]).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const zeros = tail === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array(zeros).fill('0'), ...right].map((word) => parseInt(word, 16));
}

/** RFC 5952 canonical text: lower case, longest run of zero words (two or more) as "::". */
function compressIpv6(words: number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
