import { isIPv6, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

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

/**
 * A TLS client over `raw` that a balancer would make: `header` first, then the handshake; its
 * ClientHello in the same segment as the header when `together`, else after a pause. Resolves
 * once the handshake is done; rejects when the server closes first.
 */
export async function tlsAfterProxyHeader(raw: Socket, header: Buffer, together: boolean, servername?: string): Promise<TLSSocket> {
  let transport: Socket | Duplex = raw;
  if (together) {
    let prefix: Buffer | undefined = header;
    transport = new Duplex({
      write(chunk: Buffer, _encoding, callback) {
        raw.write(prefix ? Buffer.concat([prefix, chunk]) : chunk, callback);
        prefix = undefined;
      },
      read() {},
      final(callback) {
        raw.end();
        callback();
      },
    });
    raw.on('data', (chunk) => (transport as Duplex).push(chunk));
    raw.on('end', () => (transport as Duplex).push(null));
    raw.on('close', () => (transport as Duplex).destroy());
  } else {
    raw.write(header);
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  const secure = tlsConnect({ socket: transport as Socket, rejectUnauthorized: false, servername });
  let failure: Error | undefined;
  secure.on('error', (error) => (failure ??= error));
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    // However the end shows first (an error, or only the close), it says the same.
    secure.once('close', () => reject(new Error(`the server closed the connection before the handshake was done${failure ? ` (${failure.message})` : ''}`)));
  });
  return secure;
}
