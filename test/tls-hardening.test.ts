import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers/server.ts';

// What testssl checks on every implicit-TLS and STARTTLS port: no client-initiated
// renegotiation (each costs the server a full handshake), no CBC suite, the server's cipher
// order. Over real sockets with Node's own TLS client.

/** Reads until a line matching `pattern` has arrived. */
function waitFor(socket: Socket, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      if (pattern.test(seen)) {
        socket.off('data', onData);
        resolve(seen);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

function implicitTls(port: number, options: { ciphers?: string; maxVersion?: 'TLSv1.2' | 'TLSv1.3' } = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...options }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Plain POP3, STLS, then a TLS 1.2 handshake over the same socket. */
async function stls(port: number): Promise<TLSSocket> {
  const plain = netConnect({ port, host: '127.0.0.1' });
  await waitFor(plain, /^\+OK .*\r\n/);
  plain.write('STLS\r\n');
  await waitFor(plain, /\+OK Begin TLS negotiation\r\n/);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ socket: plain, rejectUnauthorized: false, maxVersion: 'TLSv1.2' }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** What became of a renegotiation the client asked for: refused (error or disconnected), or done. */
function renegotiate(socket: TLSSocket): Promise<'refused' | 'renegotiated'> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome: 'refused' | 'renegotiated') => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    socket.on('error', () => settle('refused'));
    socket.once('close', () => settle('refused'));
    const asked = socket.renegotiate({ rejectUnauthorized: false }, (error) => settle(error ? 'refused' : 'renegotiated'));
    if (!asked) settle('refused');
  });
}

describe('TLS hardening on every server TLS socket', () => {
  let server: TestServer;
  let submissionsPort: number;
  before(async () => {
    server = await startTestServer({ submissions: { listen: ['127.0.0.1:0'] } });
    submissionsPort = Number(server.app.addresses.submissions[0].split(':').pop());
  });
  after(() => server.close());

  for (const [name, open, greeting] of [
    ['POP3S (implicit TLS)', () => implicitTls(server.pop3sPort, { maxVersion: 'TLSv1.2' }), /^\+OK /],
    ['POP3 after STLS', () => stls(server.pop3Port), undefined],
    ['submissions (implicit TLS)', () => implicitTls(submissionsPort, { maxVersion: 'TLSv1.2' }), /^220 /],
  ] as const) {
    test(`${name}: a TLS 1.2 client asking to renegotiate is refused`, async () => {
      const socket = await open();
      if (greeting) await waitFor(socket, greeting);
      assert.equal(socket.getProtocol(), 'TLSv1.2');
      assert.equal(await renegotiate(socket), 'refused');
      socket.destroy();
    });
  }

  test('a client offering only CBC suites cannot connect (POP3S and submissions)', async () => {
    for (const port of [server.pop3sPort, submissionsPort]) {
      await assert.rejects(implicitTls(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-SHA256:AES256-SHA' }), /handshake failure|no shared cipher|alert/i);
    }
  });

  test('the server picks from its own order: a client preferring CHACHA20 over AES-GCM gets AES-GCM', async () => {
    const socket = await implicitTls(server.pop3sPort, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256' });
    assert.equal(socket.getCipher().name, 'ECDHE-RSA-AES128-GCM-SHA256');
    socket.destroy();
  });

  test('TLS 1.3 still works, with an AEAD suite', async () => {
    const socket = await implicitTls(server.pop3sPort);
    assert.equal(socket.getProtocol(), 'TLSv1.3');
    assert.match(socket.getCipher().name, /^TLS_(AES_(128|256)_GCM|CHACHA20_POLY1305)_SHA(256|384)$/);
    socket.destroy();
  });
});
