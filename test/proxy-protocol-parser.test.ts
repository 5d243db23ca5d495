import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PROXY_V1_MAX_LENGTH, PROXY_V2_MAX_ADDRESS_LENGTH, ProxyHeaderParser, type ProxyHeader, type ProxyParseResult } from '../src/net/proxy-protocol.ts';
import { ipv4Block, PROXY_V2_SIGNATURE as SIGNATURE, proxyV2Raw as v2 } from './helpers/proxy-header.ts';

// The PROXY protocol parser (HAProxy's doc/proxy-protocol.txt) fed every way a header can
// arrive: every case at every chunk size from one octet to all at once, so a header split
// anywhere (or glued to the client's first command) gives the same answer.

function ipv6Block(source: number[], destination: number[], sourcePort: number, destinationPort: number): Buffer {
  const words = (list: number[]) => {
    const out = Buffer.alloc(16);
    list.forEach((word, i) => out.writeUInt16BE(word, 2 * i));
    return out;
  };
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sourcePort, 0);
  ports.writeUInt16BE(destinationPort, 2);
  return Buffer.concat([words(source), words(destination), ports]);
}

function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

/** Feeds `input` in chunks of `size`; the first answer that is not "incomplete", or the last one. */
function feed(input: Buffer, size: number): ProxyParseResult {
  const parser = new ProxyHeaderParser();
  let result: ProxyParseResult = { status: 'incomplete' };
  for (let offset = 0; offset < input.length; offset += size) {
    result = parser.push(input.subarray(offset, offset + size));
    if (result.status !== 'incomplete') {
      // Whatever was not fed yet belongs after the header too.
      if (result.status === 'complete' && offset + size < input.length) {
        return { ...result, rest: Buffer.concat([result.rest, input.subarray(offset + size)]) };
      }
      return result;
    }
  }
  return result;
}

/** The same answer at every chunk size, from 1 octet to the whole input in one piece. */
function atEveryChunkSize(input: Buffer, check: (result: ProxyParseResult, size: number) => void): void {
  for (let size = 1; size <= input.length; size++) check(feed(input, size), size);
}

function expectHeader(input: Buffer, header: ProxyHeader, rest = Buffer.alloc(0)): void {
  atEveryChunkSize(Buffer.concat([input, rest]), (result, size) => {
    assert.equal(result.status, 'complete', `chunk size ${size}: ${JSON.stringify(result)}`);
    if (result.status !== 'complete') return;
    assert.deepEqual(result.header, header, `chunk size ${size}`);
    assert.deepEqual(result.rest, rest, `chunk size ${size}: the bytes after the header`);
  });
}

function expectInvalid(input: Buffer, reason: RegExp): void {
  atEveryChunkSize(input, (result, size) => {
    assert.equal(result.status, 'invalid', `chunk size ${size}: ${JSON.stringify(result)}`);
    if (result.status === 'invalid') assert.match(result.reason, reason, `chunk size ${size}`);
  });
}

function expectIncomplete(input: Buffer): void {
  atEveryChunkSize(input, (result, size) => assert.equal(result.status, 'incomplete', `chunk size ${size}: ${JSON.stringify(result)}`));
}

const text = (s: string) => Buffer.from(s, 'latin1');

describe('PROXY protocol v1 (text)', () => {
  test('TCP4: source and destination with ports', () => {
    expectHeader(text('PROXY TCP4 203.0.113.7 192.0.2.1 56324 110\r\n'), {
      version: 1,
      source: { address: '203.0.113.7', port: 56324 },
      destination: { address: '192.0.2.1', port: 110 },
    });
  });

  test('TCP6: addresses in any valid spelling come out as Node writes a peer address', () => {
    expectHeader(text('PROXY TCP6 2001:DB8:0:0:0:0:0:7 2001:db8::1 65535 0\r\n'), {
      version: 1,
      source: { address: '2001:db8::7', port: 65535 },
      destination: { address: '2001:db8::1', port: 0 },
    });
    expectHeader(text('PROXY TCP6 ::ffff:203.0.113.7 ::1 1 25\r\n'), {
      version: 1,
      source: { address: '::ffff:203.0.113.7', port: 1 },
      destination: { address: '::1', port: 25 },
    });
  });

  test('UNKNOWN, short and with the optional rest (the 107-octet worst case), carries no address', () => {
    expectHeader(text('PROXY UNKNOWN\r\n'), { version: 1, withoutAddresses: 'UNKNOWN' });
    const worst = text(`PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`);
    assert.equal(worst.length, PROXY_V1_MAX_LENGTH);
    expectHeader(worst, { version: 1, withoutAddresses: 'UNKNOWN' });
  });

  test('the client command that follows in the same segment is handed back, byte for byte', () => {
    expectHeader(text('PROXY TCP4 203.0.113.7 192.0.2.1 1 110\r\n'), { version: 1, source: { address: '203.0.113.7', port: 1 }, destination: { address: '192.0.2.1', port: 110 } }, text('CAPA\r\nUSER a\r\n'));
    // A rest larger than the header buffer (a client's whole pipelined burst).
    const parser = new ProxyHeaderParser();
    const big = Buffer.alloc(70_000, 0x61);
    const result = parser.push(Buffer.concat([text('PROXY UNKNOWN\r\n'), big]));
    assert.equal(result.status, 'complete');
    if (result.status === 'complete') assert.ok(result.rest.equals(big));
  });

  test('every malformed line is refused, saying what was wrong', () => {
    const cases: [string, RegExp][] = [
      ['USER alice\r\n', /not a PROXY protocol header \(it starts with "U/],
      ['PROXY\r\n', /not a PROXY protocol header/],
      ['proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n', /not a PROXY protocol header/],
      ['PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n', /unknown protocol "UDP4"/],
      ['PROXY \r\n', /unknown protocol ""/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', /exactly four fields/],
      ['PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n', /exactly four fields/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', /exactly four fields/],
      ['PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n', /source address "1\.2\.3\.04" is not an IPv4 address/],
      ['PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n', /destination address "5\.6\.7\.256" is not an IPv4/],
      ['PROXY TCP4 ::1 5.6.7.8 1 2\r\n', /source address "::1" is not an IPv4/],
      ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', /source address "1\.2\.3\.4" is not an IPv6/],
      ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', /source address "fe80::1%eth0" is not an IPv6/],
      ['PROXY TCP6 ::1 2001:db8:::1 1 2\r\n', /destination address .* is not an IPv6/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n', /source port "080" is not a number/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n', /destination port "65536"/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n', /destination port "-2"/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', /bare LF instead of CRLF/],
      ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n', /a CR not followed by LF/],
      ['PROXY UNKNOWN a\rb\r\n', /a CR not followed by LF/],
      [`PROXY UNKNOWN ${'x'.repeat(200)}\r\n`, /no CRLF within 107 octets/],
    ];
    for (const [line, reason] of cases) expectInvalid(text(line), reason);
  });

  test('a line one octet over the limit is refused although it ends in CRLF', () => {
    const line = text(`PROXY UNKNOWN ${'f'.repeat(PROXY_V1_MAX_LENGTH - 16 + 1)}\r\n`);
    assert.equal(line.length, PROXY_V1_MAX_LENGTH + 1);
    expectInvalid(line, /no CRLF within 107 octets/);
  });

  test('a truncated line is incomplete, never a header', () => {
    expectIncomplete(text('PROXY TCP4 203.0.113.7 192.0.2.1 56324 110\r'));
    expectIncomplete(text('PROX'));
  });
});

describe('PROXY protocol v2 (binary)', () => {
  const inet = ipv4Block('203.0.113.7', '192.0.2.1', 56324, 995);
  const inet6 = ipv6Block([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 40000, 25);
  const expectedInet: ProxyHeader = { version: 2, source: { address: '203.0.113.7', port: 56324 }, destination: { address: '192.0.2.1', port: 995 } };

  test('PROXY over TCP/IPv4', () => {
    expectHeader(v2(0x21, 0x11, inet), expectedInet);
  });

  test('PROXY over TCP/IPv6, and an IPv4-mapped source', () => {
    expectHeader(v2(0x21, 0x21, inet6), { version: 2, source: { address: '2001:db8::7', port: 40000 }, destination: { address: '2001:db8::1', port: 25 } });
    const mapped = ipv6Block([0, 0, 0, 0, 0, 0xffff, 0xcb00, 0x7107], [0, 0, 0, 0, 0, 0, 0, 1], 1, 2);
    expectHeader(v2(0x21, 0x21, mapped), { version: 2, source: { address: '::ffff:203.0.113.7', port: 1 }, destination: { address: '::1', port: 2 } });
  });

  test('TLVs after the addresses are skipped, and the first command after them is handed back', () => {
    const tlvs = Buffer.concat([tlv(0x02, text('mail.example.net')), tlv(0x04, Buffer.alloc(5)), tlv(0x20, Buffer.from([1, 0, 0, 0, 0])), tlv(0x05, Buffer.alloc(0))]);
    expectHeader(v2(0x21, 0x11, Buffer.concat([inet, tlvs])), expectedInet, text('EHLO client\r\n'));
  });

  test('a header at the largest accepted length (padded with a NOOP TLV) is read', () => {
    const padding = tlv(0x04, Buffer.alloc(PROXY_V2_MAX_ADDRESS_LENGTH - inet.length - 3));
    const header = v2(0x21, 0x11, Buffer.concat([inet, padding]));
    // Every chunk size of a 4 KiB header is a lot of work; these cover the interesting splits.
    for (const size of [1, 2, 3, 13, 15, 16, 17, 107, 108, 1000, header.length]) {
      const result = feed(Buffer.concat([header, text('X')]), size);
      assert.equal(result.status, 'complete', `chunk size ${size}`);
      if (result.status === 'complete') {
        assert.deepEqual(result.header, expectedInet);
        assert.deepEqual(result.rest, text('X'));
      }
    }
  });

  test('LOCAL (a health check): no client address, whatever the family and block say', () => {
    expectHeader(v2(0x20, 0x00, Buffer.alloc(0)), { version: 2, withoutAddresses: 'LOCAL' });
    expectHeader(v2(0x20, 0x11, inet), { version: 2, withoutAddresses: 'LOCAL' }, text('QUIT\r\n'));
    expectHeader(v2(0x20, 0xff, Buffer.alloc(7)), { version: 2, withoutAddresses: 'LOCAL' });
  });

  test('UNSPEC family or protocol, and UNIX sockets: no client address', () => {
    expectHeader(v2(0x21, 0x00, Buffer.alloc(0)), { version: 2, withoutAddresses: 'UNSPEC' });
    expectHeader(v2(0x21, 0x10, inet), { version: 2, withoutAddresses: 'UNSPEC' });
    const unixPath = (path: string) => Buffer.concat([text(path), Buffer.alloc(108 - path.length)]);
    expectHeader(v2(0x21, 0x31, Buffer.concat([unixPath('/run/client.sock'), unixPath('/run/popgate.sock')])), { version: 2, withoutAddresses: 'UNIX' });
  });

  test('every malformed header is refused, saying what was wrong', () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.concat([SIGNATURE.subarray(0, 11), text('X'), Buffer.alloc(8)]), /not a PROXY protocol header/],
      [Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x01]), /not a PROXY protocol header/],
      [v2(0x11, 0x11, inet), /version 1 in the version\/command octet/],
      [v2(0x31, 0x11, inet), /version 3/],
      [v2(0x22, 0x11, inet), /unknown command 2/],
      [v2(0x2f, 0x11, inet), /unknown command 15/],
      [v2(0x21, 0x41, inet), /unknown address family 4/],
      [v2(0x21, 0x13, inet), /unknown transport protocol 3/],
      [v2(0x21, 0x12, inet), /datagram \(UDP\)/],
      [v2(0x21, 0x22, inet6), /datagram \(UDP\)/],
      [v2(0x21, 0x11, inet.subarray(0, 8)), /declared length 8 is shorter than the IPv4 addresses and ports \(12\)/],
      [v2(0x21, 0x21, inet6.subarray(0, 35)), /declared length 35 is shorter than the IPv6 addresses and ports \(36\)/],
      [v2(0x21, 0x31, Buffer.alloc(215)), /shorter than two UNIX addresses/],
      [v2(0x21, 0x11, Buffer.concat([inet, tlv(0x02, text('abc')).subarray(0, 5)])), /TLV of type 0x2 at offset 12 runs past the declared length/],
      [v2(0x21, 0x11, Buffer.concat([inet, Buffer.from([0x04, 0x00])])), /2 stray octet\(s\) after the TLVs at offset 12/],
      [v2(0x21, 0x11, Buffer.alloc(0), PROXY_V2_MAX_ADDRESS_LENGTH + 1), /declared length 4097 exceeds the limit of 4096 octets/],
      [v2(0x21, 0x11, Buffer.alloc(0), 0xffff), /declared length 65535 exceeds the limit/],
    ];
    for (const [input, reason] of cases) expectInvalid(input, reason);
  });

  test('a truncated header is incomplete, never a header', () => {
    const whole = v2(0x21, 0x11, Buffer.concat([inet, tlv(0x02, text('mail.example.net'))]));
    expectIncomplete(whole.subarray(0, whole.length - 1));
    expectIncomplete(whole.subarray(0, 15));
    expectIncomplete(SIGNATURE.subarray(0, 7));
  });
});

describe('the parser after its answer', () => {
  test('more input after a complete header, or after an error, is refused rather than parsed again', () => {
    const parser = new ProxyHeaderParser();
    assert.equal(parser.push(text('PROXY UNKNOWN\r\n')).status, 'complete');
    assert.deepEqual(parser.push(text('PROXY UNKNOWN\r\n')), { status: 'invalid', reason: 'input after the header was already parsed' });
    const broken = new ProxyHeaderParser();
    assert.equal(broken.push(text('HELO')).status, 'invalid');
    assert.equal(broken.push(text('PROXY UNKNOWN\r\n')).status, 'invalid');
  });

  test('it holds no more than the header: received octets stop at the limit', () => {
    const parser = new ProxyHeaderParser();
    const result = parser.push(text(`PROXY UNKNOWN ${'x'.repeat(100_000)}`));
    assert.equal(result.status, 'invalid');
    assert.equal(parser.received, PROXY_V1_MAX_LENGTH);
  });
});
