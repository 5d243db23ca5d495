import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

describe('POP3 over TLS', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.addUser('tls@example.test');
    await server.deliver('tls@example.test', message('secret'));
  });
  after(() => server.close());

  test('implicit TLS (pop3s): greeting inside TLS, no STLS offered, login and RETR work', async () => {
    const client = await Pop3Client.connect(server.pop3sPort, { tls: true });
    assert.match(await client.line(), /^\+OK /);
    const capa = await client.multiline('CAPA');
    assert.ok(!capa.lines.includes('STLS'));
    assert.ok(capa.lines.includes('USER'));
    assert.match(await client.login('tls@example.test', PASSWORD), /^\+OK Logged in, 1 message/);
    assert.equal((await client.multiline('RETR 1')).lines.at(-1), 'Hello.');
    await client.command('QUIT');
  });

  test('STLS upgrades the connection (RFC 2595), after which STLS is no longer offered', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.equal(await client.startTls(), '+OK Begin TLS negotiation');
    assert.ok('encrypted' in client.socket && client.socket.encrypted);
    const capa = await client.multiline('CAPA');
    assert.ok(!capa.lines.includes('STLS'));
    assert.equal(await client.command('STLS'), '-ERR TLS is already active');
    assert.match(await client.login('tls@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
  });

  test('TLS older than 1.2 is refused', async () => {
    const socket = tlsConnect({ port: server.pop3sPort, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
    const outcome = await new Promise<string>((resolve) => {
      socket.once('secureConnect', () => resolve('connected'));
      socket.once('error', () => resolve('refused'));
    });
    socket.destroy();
    assert.equal(outcome, 'refused');
  });

  test('a client that never finishes the handshake does not disturb others', async () => {
    const { connect } = await import('node:net');
    const stalled = connect({ port: server.pop3sPort, host: '127.0.0.1' });
    stalled.write(Buffer.from([0x16, 0x03, 0x01])); // the start of a ClientHello, then nothing
    const client = await Pop3Client.connect(server.pop3sPort, { tls: true });
    assert.match(await client.line(), /^\+OK /);
    client.close();
    stalled.destroy();
  });
});

describe('plaintext passwords without TLS', () => {
  test('"never": USER, PASS and AUTH are refused in the clear with a hint, and work after STLS', async () => {
    const server = await startTestServer({ auth: { plaintext_without_tls: 'never' } });
    try {
      await server.addUser('plain@example.test');
      const client = await Pop3Client.connect(server.pop3Port);
      await client.line();
      const capa = await client.multiline('CAPA');
      assert.ok(!capa.lines.includes('USER'));
      assert.ok(!capa.lines.some((l) => l.startsWith('SASL')));
      assert.ok(capa.lines.includes('STLS'));
      assert.match(await client.command('USER plain@example.test'), /^-ERR \[AUTH\] Plaintext passwords are not accepted without encryption/);
      assert.match(await client.command('AUTH PLAIN AHBsYWluQGV4YW1wbGUudGVzdABjb3JyZWN0IGhvcnNlIGJhdHRlcnk='), /^-ERR \[AUTH\] Plaintext/);
      await client.startTls();
      assert.ok((await client.multiline('CAPA')).lines.includes('USER'));
      assert.match(await client.login('plain@example.test', PASSWORD), /^\+OK Logged in/);
      await client.command('QUIT');
    } finally {
      await server.close();
    }
  });

  test('"loopback" (the default) allows the clear only from loopback addresses', async () => {
    const server = await startTestServer();
    try {
      await server.addUser('loop@example.test');
      const client = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.2' });
      await client.line();
      assert.match(await client.login('loop@example.test', PASSWORD), /^\+OK Logged in/);
      await client.command('QUIT');
    } finally {
      await server.close();
    }
  });
});

describe('SASL (RFC 5034)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.addUser('sasl@example.test');
  });
  after(() => server.close());
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  test('bare AUTH lists the mechanisms', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.deepEqual((await client.multiline('AUTH')).lines, ['PLAIN', 'LOGIN']);
    client.close();
  });

  test('AUTH PLAIN with an initial response', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.command(`AUTH PLAIN ${b64(`\0sasl@example.test\0${PASSWORD}`)}`), /^\+OK Logged in/);
    await client.command('QUIT');
  });

  test('AUTH PLAIN with a continuation, and an authzid equal to the user', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.equal(await client.command('AUTH PLAIN'), '+ ');
    assert.match(await client.command(b64(`sasl@example.test\0sasl@example.test\0${PASSWORD}`)), /^\+OK Logged in/);
    await client.command('QUIT');
  });

  test('AUTH PLAIN acting as another user is refused', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.command(`AUTH PLAIN ${b64(`other@example.test\0sasl@example.test\0${PASSWORD}`)}`), /^-ERR \[AUTH\]/);
    client.close();
  });

  test('AUTH LOGIN asks for user name and password', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.equal(await client.command('AUTH LOGIN'), '+ VXNlcm5hbWU6');
    assert.equal(await client.command(b64('sasl@example.test')), '+ UGFzc3dvcmQ6');
    assert.match(await client.command(b64(PASSWORD)), /^\+OK Logged in/);
    await client.command('QUIT');
  });

  test('a wrong password over SASL fails like USER/PASS', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.command(`AUTH PLAIN ${b64('\0sasl@example.test\0nope')}`), /^-ERR \[AUTH\] Login failed/);
    client.close();
  });
});

describe('APOP (opt-in)', () => {
  test('off by default: no banner, APOP refused', async () => {
    const server = await startTestServer();
    try {
      const client = await Pop3Client.connect(server.pop3Port);
      assert.doesNotMatch(await client.line(), /</);
      assert.match(await client.command('APOP a@example.test 0123456789abcdef0123456789abcdef'), /^-ERR APOP is not enabled/);
      client.close();
    } finally {
      await server.close();
    }
  });

  test('on: the digest of banner + APOP secret logs in', async () => {
    const { createHash } = await import('node:crypto');
    const server = await startTestServer({ pop3: { apop: true } });
    try {
      await server.addUser('apop@example.test');
      await server.app.accounts.setApopSecret('apop@example.test', 'tanstaaf-secret');
      const client = await Pop3Client.connect(server.pop3Port);
      const banner = /<[^>]+>/.exec(await client.line())![0];
      const wrong = createHash('md5').update(banner + 'wrong-secret').digest('hex');
      assert.match(await client.command(`APOP apop@example.test ${wrong}`), /^-ERR \[AUTH\]/);
      const digest = createHash('md5').update(banner + 'tanstaaf-secret').digest('hex');
      assert.match(await client.command(`APOP apop@example.test ${digest}`), /^\+OK Logged in/);
      await client.command('QUIT');
    } finally {
      await server.close();
    }
  });
});
