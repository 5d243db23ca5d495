import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../src/config/load.ts';
import { freePort, missingEngine, startHaproxy, type RunningHaproxy } from './helpers/engines.ts';
import { capturingLogger } from './helpers/outbound.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { proxyV1, proxyV2, proxyV2Local, tlsAfterProxyHeader } from './helpers/proxy-header.ts';
import { MAIN, NODE } from './helpers/process.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { closedInSilence, connectFrom, sleep, waitFor } from './helpers/wire.ts';

// The web listeners behind a load balancer in TCP mode: with [http]/[https]
// proxy_protocol_from, a connection from a listed balancer starts with a PROXY header
// (HAProxy's doc/proxy-protocol.txt; written by hand here, sent by a real HAProxy at the end),
// and the client in it is the visitor for every page: the "Can I send now?" answer, the
// [admin] networks check, X-Forwarded-For's trust. Anyone else is refused.

const BALANCER = '127.0.0.1';
const OUTSIDER = '127.0.0.5';

const portOf = (address: string) => Number(address.split(':').pop());

const rawConnect = (port: number, localAddress = BALANCER): Promise<Socket> => connectFrom(port, localAddress);

interface RawResponse {
  status: number;
  /** The response's header lines, as sent. */
  head: string;
  body: string;
}

function request(path: string, headers: Record<string, string> = {}, method = 'GET', body = ''): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: mail.example.test', 'Connection: close', ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)];
  if (body) lines.push('Content-Type: application/x-www-form-urlencoded', `Content-Length: ${Buffer.byteLength(body)}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1');
}

/** Everything the server sends until it closes, read as one HTTP/1.1 response (Connection: close). */
function readResponse(socket: Socket | Duplex, timeoutMs = 5000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error('no complete response: the server kept the connection open')), timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1];
      if (!status) return reject(new Error(`not an HTTP response: ${JSON.stringify(text.slice(0, 200))}`));
      const end = text.indexOf('\r\n\r\n');
      resolve({ status: Number(status), head: text.slice(0, end), body: text.slice(end + 4) });
    });
  });
}

/** Sends `chunks` one at a time, each its own write (and TCP segment, with the pauses between). */
async function sendThroughBalancer(port: number, chunks: Buffer[], localAddress = BALANCER): Promise<RawResponse> {
  const socket = await rawConnect(port, localAddress);
  const response = readResponse(socket);
  for (const [i, chunk] of chunks.entries()) {
    if (i > 0) await sleep(20);
    socket.write(chunk);
  }
  return response;
}

/** The address the "Can I send now?" page names, and its answer. */
function canISend(response: RawResponse): { ip: string | undefined; answer: string | undefined } {
  return { ip: /<strong id="client-ip">([^<]*)<\/strong>/.exec(response.body)?.[1], answer: /class="answer answer-(\w+)"/.exec(response.body)?.[1] };
}

/** Over TLS: the header in the clear, then the handshake (its ClientHello in the same segment as the header when `together`). */
async function httpsThroughBalancer(port: number, header: Buffer, path: string, together: boolean, localAddress = BALANCER): Promise<RawResponse> {
  const secure = await tlsAfterProxyHeader(await rawConnect(port, localAddress), header, together, 'mail.example.test');
  const response = readResponse(secure);
  secure.write(request(path));
  return response;
}

describe('[http] behind a load balancer (proxy_protocol_from)', () => {
  let server: TestServer;
  let captured: ReturnType<typeof capturingLogger>;
  let http = 0;
  const events = (event: string) => captured.lines.filter((line) => line.event === event);

  before(async () => {
    captured = capturingLogger();
    const proxy_protocol_from = [`${BALANCER}/32`];
    server = await startTestServer(
      {
        pop3: { proxy_protocol_from },
        // Plain HTTP alone serves the whole site (no HTTPS listener to redirect to).
        http: { listen: ['127.0.0.1:0'], proxy_protocol_from },
        // A reverse proxy behind the balancer, whose X-Forwarded-For may be believed.
        web: { trusted_proxies: ['203.0.113.50'] },
        // The header's addresses are not loopback: passwords in the clear must be allowed.
        auth: { plaintext_without_tls: 'anywhere', lockout_threshold: 3, account_lockout_threshold: 100 },
      },
      { log: captured.log },
    );
    http = portOf(server.app.addresses.http[0]);
    await server.addUser('alice@example.test');
  });
  after(() => server?.close());

  test('v1 and v2 headers, then the request: /can-i-send names the header\'s client, not the balancer', async () => {
    for (const [header, client] of [[proxyV1('203.0.113.21'), '203.0.113.21'], [proxyV2('203.0.113.22'), '203.0.113.22']] as const) {
      const page = await sendThroughBalancer(http, [header, request('/can-i-send')]);
      assert.equal(page.status, 200);
      assert.deepEqual(canISend(page), { ip: client, answer: 'no' });
    }
  });

  test('a header split over several segments; a header with the request in one segment', async () => {
    const v2 = proxyV2('203.0.113.25');
    const split = await sendThroughBalancer(http, [v2.subarray(0, 5), v2.subarray(5, 14), v2.subarray(14), request('/can-i-send')]);
    assert.deepEqual(canISend(split), { ip: '203.0.113.25', answer: 'no' });
    const v1 = proxyV1('203.0.113.26');
    const tail = await sendThroughBalancer(http, [v1.subarray(0, 10), Buffer.concat([v1.subarray(10), request('/can-i-send')])]);
    assert.equal(canISend(tail).ip, '203.0.113.26');
    const oneSegment = await sendThroughBalancer(http, [Buffer.concat([proxyV2('203.0.113.27'), request('/can-i-send')])]);
    assert.equal(canISend(oneSegment).ip, '203.0.113.27');
  });

  test('X-Forwarded-For counts only when the header\'s client is one of [web] trusted_proxies', async () => {
    const trusted = await sendThroughBalancer(http, [Buffer.concat([proxyV2('203.0.113.50'), request('/can-i-send', { 'X-Forwarded-For': '198.51.100.7' })])]);
    assert.equal(canISend(trusted).ip, '198.51.100.7');
    const untrusted = await sendThroughBalancer(http, [Buffer.concat([proxyV2('203.0.113.51'), request('/can-i-send', { 'X-Forwarded-For': '198.51.100.7' })])]);
    assert.equal(canISend(untrusted).ip, '203.0.113.51', 'a client cannot claim another address');
  });

  test('v2 LOCAL and v1 UNKNOWN (the balancer\'s own health checks): the balancer is the peer', async () => {
    for (const header of [proxyV2Local(), Buffer.from('PROXY UNKNOWN\r\n')]) {
      const page = await sendThroughBalancer(http, [header, request('/can-i-send')]);
      assert.equal(canISend(page).ip, BALANCER);
    }
  });

  test('a POP3 login "from" 203.0.113.30 (its PROXY header) is the grant /can-i-send reports for a visitor from 203.0.113.30, and for no one else', async () => {
    const pop3 = await Pop3Client.connect(server.pop3Port);
    pop3.write(proxyV1('203.0.113.30'));
    assert.match(await pop3.line(), /^\+OK /);
    assert.match(await pop3.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    await pop3.command('QUIT');
    const granted = await sendThroughBalancer(http, [proxyV2('203.0.113.30'), request('/can-i-send')]);
    assert.deepEqual(canISend(granted), { ip: '203.0.113.30', answer: 'yes' });
    assert.match(granted.body, /about 10 more minutes/);
    const other = await sendThroughBalancer(http, [proxyV2('203.0.113.31'), request('/can-i-send')]);
    assert.deepEqual(canISend(other), { ip: '203.0.113.31', answer: 'no' });
  });

  test('[admin] networks (loopback by default) judge the header\'s client: 203.0.113.40 gets 403, 127.0.0.40 the login page', async () => {
    const outside = await sendThroughBalancer(http, [proxyV2('203.0.113.40'), request('/admin/login')]);
    assert.equal(outside.status, 403);
    assert.match(outside.body, /not open to your address/);
    assert.ok(events('admin_refused_network').some((line) => line.ip === '203.0.113.40'));
    const inside = await sendThroughBalancer(http, [proxyV2('127.0.0.40'), request('/admin/login')]);
    assert.equal(inside.status, 200);
  });

  test('the login guard counts per header client: 3 wrong POP3 passwords "from" 203.0.113.90 lock /account logins from 203.0.113.90 only', async () => {
    for (let i = 0; i < 3; i++) {
      const pop3 = await Pop3Client.connect(server.pop3Port);
      pop3.write(proxyV2('203.0.113.90'));
      assert.match(await pop3.line(), /^\+OK /);
      assert.match(await pop3.login('alice@example.test', `wrong ${i}`), /^-ERR/);
      pop3.close();
    }
    const webLogin = async (client: string): Promise<RawResponse> => {
      const form = await sendThroughBalancer(http, [proxyV2(client), request('/account/login')]);
      const cookies = [...form.head.matchAll(/^set-cookie: ([^;]+)/gim)].map((match) => match[1]).join('; ');
      const csrf = /name="csrf" value="([^"]+)"/.exec(form.body)?.[1];
      assert.ok(csrf, 'the login form carries a CSRF token');
      const body = new URLSearchParams({ address: 'alice@example.test', password: PASSWORD, csrf }).toString();
      return sendThroughBalancer(http, [proxyV2(client), request('/account/login', { Cookie: cookies }, 'POST', body)]);
    };
    assert.equal((await webLogin('203.0.113.90')).status, 429, 'locked out: the address the balancer named');
    assert.equal((await webLogin('203.0.113.91')).status, 303, 'another client behind the same balancer logs in');
  });

  test('a peer that is not a balancer is refused before a byte is read or served, and logged proxy_refused', async () => {
    const socket = await rawConnect(http, OUTSIDER);
    socket.write(Buffer.concat([proxyV1('203.0.113.60'), request('/can-i-send')]));
    assert.ok(await closedInSilence(socket));
    await waitFor(() => events('proxy_refused').some((line) => line.ip === OUTSIDER && line.service === 'web' && line.listener === 'http'), 'the refusal logged');
  });

  test('a balancer that sends a request without a header, a malformed header or half of one is closed unanswered and logged proxy_error', async () => {
    const cases: [Buffer, RegExp][] = [
      [request('/can-i-send'), /not a PROXY protocol header \(it starts with "GET/],
      [Buffer.from('PROXY TCP4 203.0.113.70 192.0.2.1 080 80\r\n'), /source port "080"/],
      [Buffer.from(`PROXY UNKNOWN ${'x'.repeat(120)}`), /no CRLF within 107 octets/],
    ];
    for (const [input, reason] of cases) {
      const socket = await rawConnect(http);
      socket.write(input);
      assert.ok(await closedInSilence(socket), String(reason));
      await waitFor(() => events('proxy_error').some((line) => line.service === 'web' && line.listener === 'http' && reason.test(String(line.reason))), `proxy_error ${reason}`);
    }
    const cut = await rawConnect(http);
    cut.end(proxyV2('203.0.113.71').subarray(0, 20));
    await waitFor(() => events('proxy_error').some((line) => /closed after 20 octet\(s\), in the middle of the header/.test(String(line.reason))), 'the cut header logged');
  });
});

describe('[https] behind a load balancer (proxy_protocol_from)', () => {
  let server: TestServer;
  let captured: ReturnType<typeof capturingLogger>;
  let https = 0;
  const events = (event: string) => captured.lines.filter((line) => line.event === event);

  before(async () => {
    captured = capturingLogger();
    server = await startTestServer({ https: { listen: ['127.0.0.1:0'], proxy_protocol_from: [BALANCER] } }, { log: captured.log });
    https = portOf(server.app.addresses.https[0]);
  });
  after(() => server?.close());

  test('the header in the clear before the TLS handshake, apart from the ClientHello or in one segment with it', async () => {
    const apart = await httpsThroughBalancer(https, proxyV2('203.0.113.23'), '/can-i-send', false);
    assert.equal(apart.status, 200);
    assert.deepEqual(canISend(apart), { ip: '203.0.113.23', answer: 'no' });
    const together = await httpsThroughBalancer(https, proxyV1('203.0.113.24'), '/can-i-send', true);
    assert.deepEqual(canISend(together), { ip: '203.0.113.24', answer: 'no' });
  });

  test('a peer that is not a balancer is refused before its ClientHello; a ClientHello without a header is a proxy_error', async () => {
    const outsider = await rawConnect(https, OUTSIDER);
    assert.ok(await closedInSilence(outsider));
    await waitFor(() => events('proxy_refused').some((line) => line.ip === OUTSIDER && line.listener === 'https'), 'the refusal logged');
    await assert.rejects(httpsThroughBalancer(https, Buffer.alloc(0), '/can-i-send', true), /closed the connection before the handshake/);
    await waitFor(() => events('proxy_error').some((line) => line.listener === 'https' && /not a PROXY protocol header/.test(String(line.reason))), 'the missing header logged');
  });
});

describe('web listeners with proxy_protocol_from: stopping', () => {
  test('close() ends a balancer connection still owing its header, at once', async () => {
    const server = await startTestServer({ http: { listen: ['127.0.0.1:0'], proxy_protocol_from: [BALANCER] } });
    const http = portOf(server.app.addresses.http[0]);
    const silent = await rawConnect(http);
    // Served while the silent one waits for its header (at most 5 s).
    assert.equal((await sendThroughBalancer(http, [Buffer.concat([proxyV1('203.0.113.80'), request('/healthz/live')])])).status, 200);
    const closed = closedInSilence(silent, 10_000);
    const started = Date.now();
    await server.close();
    assert.ok(await closed);
    assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms`);
  });
});

describe('[http] and [https] proxy_protocol_from in the config', () => {
  test('a list of networks, empty by default', () => {
    const config = parseConfig({ http: { proxy_protocol_from: ['10.0.0.0/28', '2001:db8::1'] } }, 'test');
    assert.deepEqual(config.http.proxy_protocol_from, ['10.0.0.0/28', '2001:db8::1']);
    assert.deepEqual(config.https.proxy_protocol_from, []);
  });

  test('a bad network is a config error naming the key; [metrics] has no such key', () => {
    for (const section of ['http', 'https']) {
      assert.throws(
        () => parseConfig({ [section]: { proxy_protocol_from: ['10.0.0.0/8', '10.0.0.0/33'] } }, 'test'),
        (error: unknown) => error instanceof ConfigError && error.exitCode === 2 && error.message.includes(`${section}.proxy_protocol_from[1]: "10.0.0.0/33" has a prefix outside 0-32`),
      );
    }
    assert.throws(() => parseConfig({ https: { proxy_protocol_from: ['balancer.example'] } }, 'test'), /https\.proxy_protocol_from\[0\]: "balancer\.example" is not an IP network/);
    assert.throws(() => parseConfig({ metrics: { proxy_protocol_from: ['10.0.0.1'] } }, 'test'), ConfigError);
  });

  test('popgate serve with a bad network there exits with code 2 naming the key, and starts nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'popgate-web-proxy-config-'));
    try {
      const path = join(dir, 'popgate.toml');
      writeFileSync(path, `data_dir = "${dir}"\n[https]\nlisten = ["127.0.0.1:0"]\nproxy_protocol_from = ["10.0.0.0/33"]\n`);
      const result = await promisify(execFile)(NODE, [MAIN, 'serve', '--config', path]).catch((error) => error);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /popgate: config error: .*https\.proxy_protocol_from\[0\]: "10\.0\.0\.0\/33" has a prefix outside 0-32/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the web side behind HAProxy (send-proxy-v2, TCP mode)', { skip: missingEngine('haproxy') }, () => {
  let server: TestServer;
  let haproxy: RunningHaproxy;
  let captured: ReturnType<typeof capturingLogger>;
  let front = 0;

  before(async () => {
    captured = capturingLogger();
    // Plain HTTP only (the development server's site): the page itself is served there.
    server = await startTestServer({ http: { listen: ['127.0.0.1:0'], proxy_protocol_from: [BALANCER] } }, { log: captured.log });
    await server.addUser('alice@example.test');
    front = await freePort();
    haproxy = await startHaproxy(`
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:${front}
    default_backend web
backend web
    server popgate 127.0.0.1:${portOf(server.app.addresses.http[0])} send-proxy-v2 check inter 500ms check-send-proxy
`);
  });
  after(async () => {
    await haproxy?.destroy();
    await server?.close();
  });

  test('a POP3 login from 127.0.0.7 shows as a grant on /can-i-send through HAProxy from 127.0.0.7, not from 127.0.0.8', async () => {
    const pop3 = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.7' });
    assert.match(await pop3.line(), /^\+OK /);
    assert.match(await pop3.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    await pop3.command('QUIT');
    const granted = await sendThroughBalancer(front, [request('/can-i-send')], '127.0.0.7');
    assert.equal(granted.status, 200, haproxy.output());
    assert.deepEqual(canISend(granted), { ip: '127.0.0.7', answer: 'yes' });
    const other = await sendThroughBalancer(front, [request('/can-i-send')], '127.0.0.8');
    assert.deepEqual(canISend(other), { ip: '127.0.0.8', answer: 'no' });
  });

  test('HAProxy\'s health checks (check-send-proxy) pass without an error; a client going around HAProxy is refused', async () => {
    await sleep(1200); // at least two rounds of checks
    assert.deepEqual(captured.lines.filter((line) => line.event === 'proxy_error'), []);
    const direct = await rawConnect(portOf(server.app.addresses.http[0]), '127.0.0.9');
    direct.write(request('/can-i-send'));
    assert.ok(await closedInSilence(direct));
    assert.ok(captured.lines.some((line) => line.event === 'proxy_refused' && line.ip === '127.0.0.9'));
  });
});
