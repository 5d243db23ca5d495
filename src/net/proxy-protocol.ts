import { isIPv6, SocketAddress, type Socket } from 'node:net';

// The PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2): a load balancer in
// front of popgate puts one header before the client's bytes that says where the client
// really connected from. The parser is fed whatever chunks arrive (one octet at a time, or the
// header and the client's first command in one segment), holds at most one header's worth of
// bytes, and answers with data: a header, "incomplete", or a reason it is not a valid header.
// It never throws. Who may send a header is the listener's business (src/net/service.ts).

/** Version 1: the longest valid line, CRLF included (spec §2.1: the worst "UNKNOWN" form). */
export const PROXY_V1_MAX_LENGTH = 107;
/**
 * Version 2: the longest address block (the 16-bit length field) accepted. The addresses take
 * at most 216 octets (two UNIX paths); the rest is TLVs (ALPN, authority, unique id ≤ 128, SSL
 * details, cloud endpoint ids), a few hundred octets from any real balancer. 4 KiB leaves room
 * for custom TLVs while bounding what a connection may make us hold before its session starts.
 */
export const PROXY_V2_MAX_ADDRESS_LENGTH = 4096;
/** How long a trusted peer has to send its complete header; the spec asks for at least 3 s. */
export const PROXY_HEADER_TIMEOUT_MS = 5000;

/** Spec §2.2: the 12-octet signature that starts every version 2 header. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_LENGTH = 16;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const CR = 0x0d;
const LF = 0x0a;

export interface ProxyEndpoint {
  /** An IP address as Node writes a peer's (IPv6 compressed, lower case). */
  address: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /**
   * The client and the address it connected to, or undefined when the header carries none:
   * v1 "UNKNOWN", v2 LOCAL (the balancer's own health check), the UNSPEC family or protocol,
   * and UNIX sockets. The connection's own peer is then the one to use (spec §2.1, §2.2).
   */
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
  /** Why there are no addresses, for the log: "UNKNOWN", "LOCAL", "UNSPEC", "UNIX". */
  withoutAddresses?: string;
}

export type ProxyParseResult =
  | { status: 'incomplete' }
  /** `rest`: what followed the header in the input (a client's first bytes), possibly empty. */
  | { status: 'complete'; header: ProxyHeader; rest: Buffer }
  | { status: 'invalid'; reason: string };

const INCOMPLETE: ProxyParseResult = { status: 'incomplete' };

/** One connection's header, fed chunk by chunk until it is complete or invalid. */
export class ProxyHeaderParser {
  /** The header so far; grown once, to the length a v2 header declares. */
  #buffer = Buffer.alloc(PROXY_V1_MAX_LENGTH);
  #length = 0;
  /** Where the search for the v1 line end resumes. */
  #scanned = 0;
  #finished: ProxyParseResult | undefined;

  /** Octets received so far (for a log line about a header that never completed). */
  get received(): number {
    return this.#length;
  }

  push(chunk: Buffer): ProxyParseResult {
    if (this.#finished) return { status: 'invalid', reason: 'input after the header was already parsed' };
    let offset = 0;
    while (offset < chunk.length) {
      const taken = Math.min(this.#buffer.length - this.#length, chunk.length - offset);
      chunk.copy(this.#buffer, this.#length, offset, offset + taken);
      this.#length += taken;
      offset += taken;
      const step = this.#examine();
      if (step === 'more') {
        // A full buffer that is still incomplete is a v2 header that just declared its length
        // (the buffer has grown); a v1 line that long was answered as too long by #examine.
        continue;
      }
      if ('reason' in step) return (this.#finished = { status: 'invalid', reason: step.reason });
      const afterHeader = this.#buffer.subarray(step.consumed, this.#length);
      const rest = offset === chunk.length ? Buffer.from(afterHeader) : Buffer.concat([afterHeader, chunk.subarray(offset)]);
      return (this.#finished = { status: 'complete', header: step.header, rest });
    }
    return INCOMPLETE;
  }

  #examine(): 'more' | { reason: string } | { header: ProxyHeader; consumed: number } {
    const data = this.#buffer.subarray(0, this.#length);
    if (data[0] === V1_PREFIX[0]) {
      if (!startsLike(data, V1_PREFIX)) return { reason: notAHeader(data) };
      return this.#examineV1(data);
    }
    if (!startsLike(data, V2_SIGNATURE)) return { reason: notAHeader(data) };
    return this.#examineV2(data);
  }

  #examineV1(data: Buffer): 'more' | { reason: string } | { header: ProxyHeader; consumed: number } {
    const lf = data.indexOf(LF, this.#scanned);
    if (lf === -1) {
      this.#scanned = data.length;
      // A CR anywhere but last cannot be the CRLF that ends the line: say so now, not at 107.
      const cr = data.indexOf(CR);
      if (cr !== -1 && cr < data.length - 1) return { reason: 'v1: a CR not followed by LF in the header line' };
      if (data.length >= PROXY_V1_MAX_LENGTH) return { reason: `v1: no CRLF within ${PROXY_V1_MAX_LENGTH} octets` };
      return 'more';
    }
    // Spec §2.1: "The receiver must not tolerate a single CR or LF character to end the line."
    const cr = data.indexOf(CR);
    if (cr !== -1 && cr < lf - 1) return { reason: 'v1: a CR not followed by LF in the header line' };
    if (data[lf - 1] !== CR) return { reason: 'v1: the header line ends with a bare LF instead of CRLF' };
    const line = data.toString('latin1', 0, lf - 1);
    const parsed = parseV1Line(line);
    return 'reason' in parsed ? parsed : { header: parsed, consumed: lf + 1 };
  }

  #examineV2(data: Buffer): 'more' | { reason: string } | { header: ProxyHeader; consumed: number } {
    if (data.length < V2_FIXED_LENGTH) return 'more';
    const version = data[12] >> 4;
    const command = data[12] & 0x0f;
    if (version !== 2) return { reason: `v2: version ${version} in the version/command octet (only 2 is defined)` };
    if (command > 1) return { reason: `v2: unknown command ${command} (0 LOCAL and 1 PROXY are defined)` };
    const declared = data.readUInt16BE(14);
    if (declared > PROXY_V2_MAX_ADDRESS_LENGTH) return { reason: `v2: declared length ${declared} exceeds the limit of ${PROXY_V2_MAX_ADDRESS_LENGTH} octets` };
    const total = V2_FIXED_LENGTH + declared;
    if (this.#buffer.length < total) {
      const grown = Buffer.alloc(total);
      this.#buffer.copy(grown, 0, 0, this.#length);
      this.#buffer = grown;
    }
    if (data.length < total) return 'more';
    const parsed = parseV2Block(command, data[13], data.subarray(V2_FIXED_LENGTH, total));
    return 'reason' in parsed ? parsed : { header: parsed, consumed: total };
  }
}

/** Whether `data` (however short) agrees with the start of `prefix`. */
function startsLike(data: Buffer, prefix: Buffer): boolean {
  const length = Math.min(data.length, prefix.length);
  return data.compare(prefix, 0, length, 0, length) === 0;
}

function notAHeader(data: Buffer): string {
  return `not a PROXY protocol header (it starts with ${JSON.stringify(data.toString('latin1', 0, Math.min(data.length, 16)))})`;
}

// --- version 1 ---

const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const PORT = /^(?:0|[1-9]\d{0,4})$/;

/** "PROXY TCP4 src dst sport dport" (spec §2.1), without its CRLF. */
function parseV1Line(line: string): ProxyHeader | { reason: string } {
  const fields = line.split(' ');
  const protocol = fields[1];
  // "For UNKNOWN, the rest of the line before the CRLF may be omitted by the sender, and the
  // receiver must ignore anything presented before the CRLF is found."
  if (protocol === 'UNKNOWN') return { version: 1, withoutAddresses: 'UNKNOWN' };
  if (protocol !== 'TCP4' && protocol !== 'TCP6') return { reason: `v1: unknown protocol ${JSON.stringify(protocol ?? '')} (TCP4, TCP6 or UNKNOWN)` };
  if (fields.length !== 6) return { reason: `v1: ${protocol} needs exactly four fields separated by single spaces: ${JSON.stringify(line)}` };
  const [, , sourceText, destinationText, sourcePort, destinationPort] = fields;
  const source = v1Address(protocol, 'source', sourceText);
  if (typeof source !== 'string') return source;
  const destination = v1Address(protocol, 'destination', destinationText);
  if (typeof destination !== 'string') return destination;
  for (const [name, text] of [['source', sourcePort], ['destination', destinationPort]]) {
    if (!PORT.test(text) || Number(text) > 65535) return { reason: `v1: ${name} port ${JSON.stringify(text)} is not a number 0-65535 without leading zeros` };
  }
  return {
    version: 1,
    source: { address: source, port: Number(sourcePort) },
    destination: { address: destination, port: Number(destinationPort) },
  };
}

function v1Address(protocol: 'TCP4' | 'TCP6', which: string, text: string): string | { reason: string } {
  if (protocol === 'TCP4') {
    // Leading zeros are refused (spec §2.1): "010" would be octal to some readers.
    return IPV4.test(text) ? text : { reason: `v1: ${which} address ${JSON.stringify(text)} is not an IPv4 address in dotted decimal` };
  }
  // Hex groups and colons (a dotted IPv4 tail too, as inet_ntop writes a mapped address); no
  // zone index, which names an interface of the sender's machine, not an address.
  const valid = /^[0-9a-fA-F:.]+$/.test(text) && isIPv6(text);
  return valid ? canonicalIpv6(text) : { reason: `v1: ${which} address ${JSON.stringify(text)} is not an IPv6 address` };
}

// --- version 2 ---

const FAMILY_UNSPEC = 0;
const FAMILY_INET = 1;
const FAMILY_INET6 = 2;
const FAMILY_UNIX = 3;
const TRANSPORT_UNSPEC = 0;
const TRANSPORT_STREAM = 1;
const TRANSPORT_DGRAM = 2;

/** The block after the 16 fixed octets: addresses, then TLVs (spec §2.2). */
function parseV2Block(command: number, familyOctet: number, block: Buffer): ProxyHeader | { reason: string } {
  const tlvs = (start: number) => checkTlvs(block, start);
  // LOCAL: "the receiver must accept this connection as valid and must use the real
  // connection endpoints and discard the protocol block including the family".
  if (command === 0) return { version: 2, withoutAddresses: 'LOCAL' };
  const family = familyOctet >> 4;
  const transport = familyOctet & 0x0f;
  if (family > FAMILY_UNIX) return { reason: `v2: unknown address family ${family}` };
  if (transport > TRANSPORT_DGRAM) return { reason: `v2: unknown transport protocol ${transport}` };
  if (transport === TRANSPORT_DGRAM) return { reason: 'v2: a datagram (UDP) connection cannot be carried by a TCP connection' };
  // UNSPEC: "the receiver is free to accept the connection anyway and use the real endpoint
  // addresses"; an address block may be there and is skipped.
  if (family === FAMILY_UNSPEC || transport === TRANSPORT_UNSPEC) return { version: 2, withoutAddresses: 'UNSPEC' };
  if (family === FAMILY_UNIX) {
    if (block.length < 216) return { reason: `v2: declared length ${block.length} is shorter than two UNIX addresses (216)` };
    return tlvs(216) ?? { version: 2, withoutAddresses: 'UNIX' };
  }
  const size = family === FAMILY_INET ? 4 : 16;
  const needed = 2 * size + 4;
  if (block.length < needed) return { reason: `v2: declared length ${block.length} is shorter than the ${family === FAMILY_INET ? 'IPv4' : 'IPv6'} addresses and ports (${needed})` };
  const address = (offset: number) =>
    family === FAMILY_INET
      ? `${block[offset]}.${block[offset + 1]}.${block[offset + 2]}.${block[offset + 3]}`
      : canonicalIpv6(Array.from({ length: 8 }, (_, i) => block.readUInt16BE(offset + 2 * i).toString(16)).join(':'));
  return (
    tlvs(needed) ?? {
      version: 2,
      source: { address: address(0), port: block.readUInt16BE(2 * size) },
      destination: { address: address(size), port: block.readUInt16BE(2 * size + 2) },
    }
  );
}

/**
 * The TLVs (type, 16-bit length, value) after the addresses must tile the rest of the block
 * exactly: one that runs past it means the header is corrupt. Their contents are not used
 * (spec §2.2: a receiver may skip them); a CRC32C TLV is not verified.
 */
function checkTlvs(block: Buffer, start: number): { reason: string } | undefined {
  let offset = start;
  while (offset < block.length) {
    if (block.length - offset < 3) return { reason: `v2: ${block.length - offset} stray octet(s) after the TLVs at offset ${offset}` };
    const end = offset + 3 + block.readUInt16BE(offset + 1);
    if (end > block.length) return { reason: `v2: TLV of type 0x${block[offset].toString(16)} at offset ${offset} runs past the declared length` };
    offset = end;
  }
  return undefined;
}

/** The text Node gives a peer's address (IPv6 compressed, lower case), so both compare equal. */
function canonicalIpv6(text: string): string {
  try {
    return new SocketAddress({ address: text, family: 'ipv6' }).address;
  } catch {
    return text; // already checked by isIPv6, or built from 16 octets: not expected
  }
}

// --- reading from a socket ---

/** `nothingSent`: the peer closed without sending a byte (a balancer's plain TCP health check). */
export type ProxyReadResult = { ok: true; header: ProxyHeader } | { ok: false; reason: string; nothingSent: boolean };

/**
 * Reads one header from `socket` before anything else reads it. On success whatever followed
 * the header is put back into the socket (unshift), which is left paused for its next reader:
 * plain command lines, or a TLS handshake for implicit TLS (the balancer sends the header in the
 * clear, before the client's ClientHello). A header not complete within `timeoutMs`, invalid,
 * or cut short by the peer closing is an error; the caller drops the connection.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number): Promise<ProxyReadResult> {
  return new Promise((resolve) => {
    const parser = new ProxyHeaderParser();
    const finish = (result: ProxyReadResult) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      const result = parser.push(chunk);
      if (result.status === 'incomplete') return;
      socket.pause();
      if (result.status === 'invalid') return finish({ ok: false, reason: result.reason, nothingSent: false });
      if (result.rest.length > 0) socket.unshift(result.rest);
      finish({ ok: true, header: result.header });
    };
    const onEnd = () =>
      finish({
        ok: false,
        reason: parser.received === 0 ? 'the connection closed before sending anything' : `the connection closed after ${parser.received} octet(s), in the middle of the header`,
        nothingSent: parser.received === 0,
      });
    const timer = setTimeout(
      () => finish({ ok: false, reason: `no complete header within ${timeoutMs} ms (${parser.received} octet(s) received)`, nothingSent: false }),
      timeoutMs,
    );
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
  });
}
