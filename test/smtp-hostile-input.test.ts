import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { SmtpClient } from './helpers/smtp-client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The SMTP server never crashes and never hangs on input; one broken session never
// affects another. After every test a fresh session must still deliver mail.

let seed = 7;
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
}

function randomBytes(length: number, lineBreaks: boolean): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    out[i] = lineBreaks && random() < 0.05 ? (random() < 0.5 ? 0x0a : 0x0d) : Math.floor(random() * 256);
  }
  return out;
}

async function blast(port: number, data: Buffer): Promise<void> {
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  socket.on('data', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  for (let offset = 0; offset < data.length; offset += 4096) socket.write(data.subarray(offset, offset + 4096));
  await new Promise((resolve) => setTimeout(resolve, 50));
  socket.destroy();
}

const sinkFiles = (server: TestServer) => readdirSync(join(server.app.mailstore.location('sink@example.test'), 'new'));

describe('SMTP under hostile input', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms', max_line_length: 1024, max_connections_per_ip: 200 } });
    await server.addUser('sink@example.test');
    await server.app.mailstore.create('sink@example.test');
  });
  after(() => server.close());
  afterEach(async () => {
    const before = sinkFiles(server).length;
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    assert.match(await client.send('a@remote.example', ['sink@example.test'], 'Subject: still alive\r\n\r\nok\r\n'), /^250 /);
    await client.command('QUIT');
    assert.equal(sinkFiles(server).length, before + 1);
  });

  test('random bytes, with and without line breaks, on many connections', async () => {
    for (let i = 0; i < 40; i++) await blast(server.smtpPort, randomBytes(8192, i % 2 === 0));
  });

  test('NUL in a command, invalid UTF-8 and an HTTP request get clear errors', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    assert.match(await client.command('NOOP\0x'), /^500 5\.5\.2 Invalid characters/);
    client.write(Buffer.from([0xff, 0xfe, 0x41, 0x0d, 0x0a]));
    assert.match(await client.reply(), /^500 5\.5\.2 Command not recognized/);
    client.close();
    const web = await SmtpClient.connect(server.smtpPort);
    await web.reply();
    assert.match(await web.command('GET / HTTP/1.1'), /^554 5\.7\.0 This is an SMTP server/);
  });

  test('a 1 MB line without CRLF is cut off at the line limit', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    await client.reply();
    client.write(Buffer.alloc(1024 * 1024, 0x41));
    assert.match(await client.reply(), /^500 5\.5\.2 Line too long/);
  });

  test('5,000 pipelined NOOPs are answered in order', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    client.write('NOOP\r\n'.repeat(5000));
    for (let i = 0; i < 5000; i++) assert.equal(await client.reply(), '250 2.0.0 OK');
    await client.command('QUIT');
  });

  test('a client that vanishes in the middle of DATA delivers nothing and leaves no temporary file', async () => {
    const before = sinkFiles(server).length;
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    await client.command('MAIL FROM:<a@remote.example>');
    await client.command('RCPT TO:<sink@example.test>');
    await client.command('DATA');
    client.write('Subject: cut off\r\n\r\nhalf a message');
    client.close();
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(sinkFiles(server).length, before);
    assert.deepEqual(readdirSync(join(server.app.mailstore.location('sink@example.test'), 'tmp')), []);
  });

  test('a 10 MB message is stored byte-exact after the trace headers', async () => {
    const lines: string[] = ['Subject: big', ''];
    for (let i = 0; lines.length < 140_000; i++) lines.push((i % 9 === 0 ? '.' : '') + `line ${i} ` + 'y'.repeat(60));
    const body = lines.join('\r\n') + '\r\n';
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    const before = new Set(sinkFiles(server));
    assert.match(await client.send('a@remote.example', ['sink@example.test'], body), /^250 /);
    await client.command('QUIT');
    const [name] = sinkFiles(server).filter((n) => !before.has(n));
    const stored = readFileSync(join(server.app.mailstore.location('sink@example.test'), 'new', name), 'latin1');
    assert.equal(stored.slice(stored.indexOf('Subject: big')), body);
  });

  test('per-address connection limit: 421 4.7.0, another address is still served', async () => {
    const limited = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], max_connections_per_ip: 2 } });
    try {
      const a = await SmtpClient.connect(limited.smtpPort, '127.0.0.30');
      const b = await SmtpClient.connect(limited.smtpPort, '127.0.0.30');
      await a.reply();
      await b.reply();
      const c = await SmtpClient.connect(limited.smtpPort, '127.0.0.30');
      assert.match(await c.reply(), /^421 4\.7\.0 Too many connections from your address/);
      const other = await SmtpClient.connect(limited.smtpPort, '127.0.0.31');
      assert.match(await other.reply(), /^220 /);
      for (const client of [a, b, other]) client.close();
    } finally {
      await limited.close();
    }
  });

  test('idle timeout: 421 4.4.2, also in the middle of DATA, and nothing is delivered', async () => {
    const slow = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], idle_timeout: '300ms' } });
    try {
      await slow.addUser('t@example.test');
      await slow.app.mailstore.create('t@example.test');
      const client = await SmtpClient.connect(slow.smtpPort);
      await client.hello();
      await client.command('MAIL FROM:<a@remote.example>');
      await client.command('RCPT TO:<t@example.test>');
      await client.command('DATA');
      client.write('Subject: never finished\r\n\r\n');
      assert.match(await client.reply(), /^421 4\.4\.2 Timeout/);
      assert.deepEqual(readdirSync(join(slow.app.mailstore.location('t@example.test'), 'new')), []);
    } finally {
      await slow.close();
    }
  });

  test('shutdown with an idle client connected: it gets 421 4.3.2 and the close completes', async () => {
    const closing = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } });
    const client = await SmtpClient.connect(closing.smtpPort);
    await client.hello();
    await closing.close();
    assert.match(await client.reply(), /^421 4\.3\.2 Server is shutting down/);
  });
});
