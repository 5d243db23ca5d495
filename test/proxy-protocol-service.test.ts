import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../src/config/load.ts';
import { capturingLogger } from './helpers/outbound.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { proxyV1, proxyV2, proxyV2Local, proxyV2Raw, tlsAfterProxyHeader } from './helpers/proxy-header.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { closedInSilence, connectFrom, LineReader, sleep, waitFor } from './helpers/wire.ts';

// Listeners behind a load balancer: a connection from a balancer listed in
// proxy_protocol_from starts with a PROXY header (written here by hand; the HAProxy test
// has the real thing), and the client address in it is the connection's address for
// everything. Anyone else is refused; listeners without the list are unchanged.

const BALANCER = '127.0.0.1';
const OUTSIDER = '127.0.0.5';

function portOf(address: string): number {
  return Number(address.split(':').pop());
}

const rawConnect = (port: number, localAddress = BALANCER): Promise<Socket> => connectFrom(port, localAddress);

/** A TLS client whose first write (the ClientHello) leaves in one segment with `header` before it. */
async function tlsAfterHeader(port: number, header: Buffer, together: boolean): Promise<LineReader> {
  return new LineReader(await tlsAfterProxyHeader(await rawConnect(port), header, together));
}

describe('PROXY protocol: listeners behind a load balancer', () => {
  let server: TestServer;
  let captured: ReturnType<typeof capturingLogger>;
  const ports = { pop3: 0, pop3s: 0, smtp: 0, submission: 0, submissions: 0 };
  const events = (event: string) => captured.lines.filter((line) => line.event === event);

  before(async () => {
    captured = capturingLogger();
    const proxy_protocol_from = [`${BALANCER}/32`, '2001:db8::/32'];
    server = await startTestServer(
      {
        pop3: { proxy_protocol_from, max_connections_per_ip: 2 },
        pop3s: { proxy_protocol_from },
        smtp: { listen: ['127.0.0.1:0'], proxy_protocol_from, error_delay: '0ms' },
        submission: { listen: ['127.0.0.1:0'], proxy_protocol_from },
        submissions: { listen: ['127.0.0.1:0'], proxy_protocol_from },
        // The header's addresses are not loopback: passwords in the clear must be allowed.
        auth: { plaintext_without_tls: 'anywhere' },
      },
      { log: captured.log },
    );
    for (const name of Object.keys(ports) as (keyof typeof ports)[]) ports[name] = portOf(server.app.addresses[name][0]);
    await server.addUser('alice@example.test');
  });
  after(() => server.close());

  async function popLoginThrough(header: Buffer): Promise<string> {
    const client = await Pop3Client.connect(ports.pop3);
    client.write(header);
    assert.match(await client.line(), /^\+OK /);
    const reply = await client.login('alice@example.test', PASSWORD);
    await client.command('QUIT');
    return reply;
  }

  test('POP before SMTP follows the header: a login "from" 203.0.113.7 (v1) lets SMTP "from" 203.0.113.7 (v2) relay, not 203.0.113.8', async () => {
    assert.match(await popLoginThrough(proxyV1('203.0.113.7')), /^\+OK Logged in/);
    assert.deepEqual((await server.app.popBeforeSmtp.list()).map((grant) => grant.key), ['203.0.113.7']);

    const granted = await SmtpClient.connect(ports.smtp);
    granted.write(proxyV2('203.0.113.7', 50000, '192.0.2.1', 25));
    assert.match(await granted.hello(), /^250-mail\.example\.test Hello client\.example \[203\.0\.113\.7\]/);
    const reply = await granted.send('alice@example.test', ['friend@remote.example'], message('through the balancer').replace('From: sender@example.net', 'From: alice@example.test'));
    const id = /^250 2\.0\.0 OK: queued as (\w+)/.exec(reply)?.[1];
    assert.ok(id, reply);
    assert.match((await server.app.queue.read(id)).toString('latin1'), /^Received: from client\.example \(\[203\.0\.113\.7\]\)/);
    granted.close();

    const other = await SmtpClient.connect(ports.smtp);
    other.write(proxyV1('203.0.113.8', 50001, '192.0.2.1', 25));
    await other.hello();
    assert.match(await other.command('MAIL FROM:<alice@example.test>'), /^250/);
    assert.match(await other.command('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 Relay access denied/);
    other.close();

    const sessions = captured.lines.filter((line) => line.event === 'connect' && line.via === BALANCER).map((line) => line.ip);
    assert.deepEqual(sessions, ['203.0.113.7', '203.0.113.7', '203.0.113.8'], 'the session logs name the client, and the balancer as "via"');
  });

  test('connections per address are counted for the header\'s address, not the balancer\'s', async () => {
    const open = [];
    for (let i = 0; i < 2; i++) {
      const client = await Pop3Client.connect(ports.pop3);
      client.write(proxyV2('203.0.113.20', 41000 + i));
      assert.match(await client.line(), /^\+OK /);
      open.push(client);
    }
    const third = await Pop3Client.connect(ports.pop3);
    third.write(proxyV2('203.0.113.20', 41002));
    assert.match(await third.line(), /^-ERR \[SYS\/TEMP\] Too many connections from your address/);
    const neighbour = await Pop3Client.connect(ports.pop3);
    neighbour.write(proxyV2('203.0.113.21'));
    assert.match(await neighbour.line(), /^\+OK /, 'another client behind the same balancer is not affected');
    for (const client of [...open, neighbour]) client.close();
  });

  test('a header split across segments, octet by octet, then the session starts', async () => {
    for (const header of [proxyV1('203.0.113.30'), proxyV2('203.0.113.31')]) {
      const client = await Pop3Client.connect(ports.pop3);
      (client.socket as Socket).setNoDelay(true);
      for (const octet of header) {
        client.write(Buffer.from([octet]));
        await sleep(2);
      }
      assert.match(await client.line(), /^\+OK /);
      assert.match(await client.command('NOOP'), /^-ERR/, 'a real session (NOOP needs a login)');
      client.close();
    }
    await waitFor(() => events('connect').some((line) => line.ip === '203.0.113.31'), 'the v2 session in the log');
  });

  test('the client\'s first commands in the same segment as the header are read after the greeting', async () => {
    const client = await Pop3Client.connect(ports.pop3);
    client.write(Buffer.concat([proxyV1('203.0.113.40'), Buffer.from('CAPA\r\nUSER alice@example.test\r\n')]));
    assert.match(await client.line(), /^\+OK mail\.example\.test POP3 server ready/);
    assert.match(await client.line(), /^\+OK Capability list follows/);
    for (let line = await client.line(); line !== '.'; line = await client.line());
    assert.match(await client.line(), /^\+OK/, 'USER answered');
    assert.match(await client.command(`PASS ${PASSWORD}`), /^\+OK Logged in/);
    client.close();
    await waitFor(() => captured.lines.some((line) => line.event === 'login' && line.ip === '203.0.113.40'), 'the login logged with the header address');
  });

  test('POP3S: the header in the clear, then the TLS handshake; also glued to the ClientHello in one segment', async () => {
    for (const together of [false, true]) {
      const source = together ? '203.0.113.51' : '203.0.113.50';
      const reader = await tlsAfterHeader(ports.pop3s, proxyV2(source, 40000, '192.0.2.1', 995), together);
      assert.match(await reader.line(), /^\+OK /);
      assert.match(await reader.command('USER alice@example.test'), /^\+OK/);
      assert.match(await reader.command(`PASS ${PASSWORD}`), /^\+OK Logged in/);
      assert.match(await reader.command('QUIT'), /^\+OK/);
      assert.ok((await server.app.popBeforeSmtp.list()).some((grant) => grant.key === source), `grant for ${source}`);
    }
  });

  test('an IPv6 client is written as Node writes a peer address; an IPv4-mapped one as IPv4', async () => {
    const mapped = Buffer.alloc(36);
    mapped.writeUInt16BE(0xffff, 10);
    Buffer.from([203, 0, 113, 45]).copy(mapped, 12);
    mapped[31] = 1; // destination ::1
    mapped.writeUInt16BE(40000, 32);
    mapped.writeUInt16BE(110, 34);
    const headers = [proxyV1('2001:DB8:0:0::45'), proxyV2Raw(0x21, 0x21, mapped)];
    for (const header of headers) {
      const client = await Pop3Client.connect(ports.pop3);
      client.write(header);
      assert.match(await client.line(), /^\+OK /);
      client.close();
    }
    await waitFor(() => events('connect').some((line) => line.ip === '203.0.113.45'), 'the mapped client as IPv4');
    assert.ok(events('connect').some((line) => line.ip === '2001:db8::45'));
  });

  test('a LOCAL header (the balancer\'s health check) leaves the balancer\'s own address', async () => {
    const client = await Pop3Client.connect(ports.pop3);
    client.write(proxyV2Local());
    assert.match(await client.line(), /^\+OK /);
    client.close();
    await waitFor(() => events('proxy_without_address').length > 0, 'the header without an address logged');
    assert.equal(events('proxy_without_address')[0].kind, 'LOCAL');
  });

  test('every listener section refuses a peer that is not a balancer, header or not, and grants it nothing', async () => {
    for (const [name, port] of Object.entries(ports)) {
      const socket = await rawConnect(port, OUTSIDER);
      socket.write(Buffer.concat([proxyV1('203.0.113.9'), Buffer.from('USER alice@example.test\r\n')]));
      assert.ok(await closedInSilence(socket), `${name}: closed without a greeting`);
    }
    const refused = events('proxy_refused');
    assert.deepEqual(refused.map((line) => line.listener).sort(), Object.keys(ports).sort());
    assert.ok(refused.every((line) => line.ip === OUTSIDER));
    const keys = (await server.app.popBeforeSmtp.list()).map((grant) => grant.key);
    assert.ok(!keys.includes('203.0.113.9') && !keys.includes(OUTSIDER), keys.join(' '));
    assert.ok(!captured.lines.some((line) => line.ip === '203.0.113.9'), 'the claimed address appears nowhere');
  });

  test('every listener section takes a header from a balancer (submissions: before TLS)', async () => {
    for (const name of ['smtp', 'submission'] as const) {
      const client = await SmtpClient.connect(ports[name]);
      client.write(proxyV1('203.0.113.60', 40000, '192.0.2.1', 587));
      assert.match(await client.hello(), /\[203\.0\.113\.60\]/, name);
      client.close();
    }
    const reader = await tlsAfterHeader(ports.submissions, proxyV2('203.0.113.61', 40000, '192.0.2.1', 465), true);
    assert.match(await reader.line(), /^220 /);
    assert.match(await reader.command('EHLO client.example'), /\[203\.0\.113\.61\]/);
    reader.stream.destroy();
  });

  test('a balancer that sends no header, or a malformed one, is dropped without a greeting and logged', async () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.from('USER alice@example.test\r\n'), /not a PROXY protocol header \(it starts with "USER/],
      [Buffer.from('PROXY TCP4 203.0.113.70 192.0.2.1 080 110\r\n'), /source port "080"/],
      [Buffer.from(`PROXY UNKNOWN ${'x'.repeat(120)}`), /no CRLF within 107 octets/],
    ];
    for (const [input, reason] of cases) {
      const socket = await rawConnect(ports.pop3);
      socket.write(input);
      assert.ok(await closedInSilence(socket));
      await waitFor(() => events('proxy_error').some((line) => reason.test(String(line.reason))), `proxy_error ${reason}`);
    }
  });

  test('a header cut short by the balancer closing is an error, a connection closed before any byte (a TCP health check) is not; one that never comes is dropped after 5 s', async () => {
    const check = await rawConnect(ports.pop3);
    check.end();
    await waitFor(() => events('proxy_no_header').length === 1, 'the empty connection logged (debug)');
    const cut = await rawConnect(ports.pop3);
    cut.end(proxyV2('203.0.113.80').subarray(0, 20));
    await waitFor(() => events('proxy_error').some((line) => /closed after 20 octet\(s\), in the middle of the header/.test(String(line.reason))), 'the cut header logged');

    const silent = await rawConnect(ports.pop3);
    const started = Date.now();
    assert.ok(await closedInSilence(silent, 15_000), 'no greeting before the header');
    const waited = Date.now() - started;
    assert.ok(waited >= 4000 && waited < 14_000, `dropped after ${waited} ms`);
    assert.ok(events('proxy_error').some((line) => /no complete header within 5000 ms \(0 octet\(s\) received\)/.test(String(line.reason))));
    assert.ok(!events('proxy_error').some((line) => /before sending anything/.test(String(line.reason))));
  });
});

describe('listeners without proxy_protocol_from', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.addUser('bob@example.test');
  });
  after(() => server.close());

  test('a PROXY line is an unknown command, and its address is never believed', async () => {
    const client = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.6' });
    assert.match(await client.line(), /^\+OK /);
    assert.match(await client.command('PROXY TCP4 203.0.113.90 192.0.2.1 40000 110'), /^-ERR/);
    assert.match(await client.login('bob@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
    assert.deepEqual((await server.app.popBeforeSmtp.list()).map((grant) => grant.key), ['127.0.0.6']);
  });
});

describe('proxy_protocol_from in the config', () => {
  test('each listener section takes a list of networks, empty by default', () => {
    const config = parseConfig({ pop3: { proxy_protocol_from: ['10.0.0.0/28', '2001:db8::1'] }, submissions: { proxy_protocol_from: ['192.0.2.7'] } }, 'test');
    assert.deepEqual(config.pop3.proxy_protocol_from, ['10.0.0.0/28', '2001:db8::1']);
    assert.deepEqual(config.submissions.proxy_protocol_from, ['192.0.2.7']);
    for (const section of ['pop3s', 'smtp', 'submission'] as const) assert.deepEqual(config[section].proxy_protocol_from, []);
  });

  test('a bad network is a config error naming the key', () => {
    for (const section of ['pop3', 'pop3s', 'smtp', 'submission', 'submissions']) {
      assert.throws(
        () => parseConfig({ [section]: { proxy_protocol_from: ['10.0.0.0/8', '10.0.0.0/33'] } }, 'test'),
        (error: unknown) => error instanceof ConfigError && error.message.includes(`${section}.proxy_protocol_from[1]: "10.0.0.0/33" has a prefix outside 0-32`),
      );
    }
    assert.throws(() => parseConfig({ smtp: { proxy_protocol_from: ['balancer.example'] } }, 'test'), /smtp\.proxy_protocol_from\[0\]: "balancer\.example" is not an IP network/);
  });
});
