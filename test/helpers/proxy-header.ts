import { isIPv6 } from 'node:net';

// PROXY protocol headers (HAProxy's doc/proxy-protocol.txt) as a load balancer sends them,
// built by hand for tests: well-formed ones for the service tests, and the raw v2 layout for
// the parser tests to break in every way.

export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** Version 1: "PROXY TCP4|TCP6 source destination sport dport\r\n". */
export function proxyV1(source: string, sourcePort = 40000, destination = source.includes(':') ? '2001:db8::1' : '192.0.2.1', destinationPort = 110): Buffer {
  return Buffer.from(`PROXY ${isIPv6(source) ? 'TCP6' : 'TCP4'} ${source} ${destination} ${sourcePort} ${destinationPort}\r\n`, 'latin1');
}

/** Version 2, any octets: version/command, family/transport, then the block after the length. */
export function proxyV2Raw(versionCommand: number, familyTransport: number, block: Buffer, declaredLength = block.length): Buffer {
  const fixed = Buffer.alloc(4);
  fixed[0] = versionCommand;
  fixed[1] = familyTransport;
  fixed.writeUInt16BE(declaredLength, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, fixed, block]);
}

/** The address block of TCP over IPv4 (12 octets). */
export function ipv4Block(source: string, destination: string, sourcePort: number, destinationPort: number): Buffer {
  const block = Buffer.alloc(12);
  source.split('.').forEach((part, i) => (block[i] = Number(part)));
  destination.split('.').forEach((part, i) => (block[4 + i] = Number(part)));
  block.writeUInt16BE(sourcePort, 8);
  block.writeUInt16BE(destinationPort, 10);
  return block;
}

/** Version 2, PROXY command, TCP over IPv4. */
export function proxyV2(source: string, sourcePort = 40000, destination = '192.0.2.1', destinationPort = 110): Buffer {
  return proxyV2Raw(0x21, 0x11, ipv4Block(source, destination, sourcePort, destinationPort));
}

/** Version 2, LOCAL command: the balancer's own connection (a health check). */
export function proxyV2Local(): Buffer {
  return proxyV2Raw(0x20, 0x00, Buffer.alloc(0));
}
