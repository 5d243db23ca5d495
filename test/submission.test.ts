import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { Pop3Client } from './helpers/pop3-client.ts';

// Submission (RFC 6409, port 587 role with STARTTLS) and submissions (RFC 8314, port 465 role,
// implicit TLS) with SMTP AUTH PLAIN/LOGIN (RFC 4954) against the same accounts as POP3, for
// customers whose own provider blocks outbound port 25.

const portOf = (server: TestServer, role: string) => Number(server.app.addresses[role][0].split(':').pop());
const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString('base64');
const b64 = (text: string) => Buffer.from(text).toString('base64');
const message = (from: string, subject: string) => `From: ${from}\r\nTo: friend@remote.example\r\nSubject: ${subject}\r\n\r\nHello.\r\n`;

async function spooled(server: TestServer, subject: string): Promise<string | undefined> {
  const list = await server.app.queue.list();
  for (const entry of list) {
    const text = (await server.app.queue.read(entry.id)).toString();
    if (text.includes(`Subject: ${subject}\r\n`)) return text;
  }
  return undefined;
}

describe('submission with SMTP AUTH, passwords only over TLS', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      submission: { listen: ['127.0.0.1:0'] },
      submissions: { listen: ['127.0.0.1:0'] },
      // Loopback counts as "the network" here, so the TLS rule can be seen.
      auth: { plaintext_without_tls: 'never' },
    });
    await server.addUser('alice@example.test');
    await server.addUser('bob@example.test');
    await server.app.accounts.addAlias('sales@example.test', ['alice@example.test']);
  });
  after(() => server.close());

  test('before STARTTLS, AUTH is neither offered nor accepted, and MAIL asks for a login', async () => {
    const client = await SmtpClient.connect(portOf(server, 'submission'));
    const ehlo = await client.hello();
    assert.match(ehlo, /STARTTLS/);
    assert.doesNotMatch(ehlo, /AUTH/);
    assert.match(await client.command(`AUTH PLAIN ${plain('alice@example.test', PASSWORD)}`), /^538 5\.7\.11 Encryption required/);
    assert.match(await client.command('MAIL FROM:<alice@example.test>'), /^530 5\.7\.0 Authentication required/);
    client.close();
  });

  test('after STARTTLS, a real client (nodemailer) logs in and relays; Received says ESMTPSA and names the user', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: portOf(server, 'submission'),
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice@example.test', pass: PASSWORD },
    });
    const info = await transport.sendMail({ from: 'alice@example.test', to: 'friend@remote.example', subject: 'via 587', text: 'Hello.' });
    assert.deepEqual(info.accepted, ['friend@remote.example']);
    const stored = await spooled(server, 'via 587');
    assert.ok(stored);
    assert.match(stored, /with ESMTPSA id /);
    assert.match(stored, /\(authenticated as alice@example\.test\)/);
    transport.close();
  });

  test('implicit TLS on submissions (port 465 role): AUTH LOGIN works, an alias is a valid sender', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: portOf(server, 'submissions'),
      secure: true,
      tls: { rejectUnauthorized: false },
      authMethod: 'LOGIN',
      auth: { user: 'alice@example.test', pass: PASSWORD },
    });
    const info = await transport.sendMail({ from: 'sales@example.test', to: 'friend@remote.example', subject: 'via 465', text: 'Hi.' });
    assert.deepEqual(info.accepted, ['friend@remote.example']);
    assert.ok(await spooled(server, 'via 465'));
    transport.close();
  });

  test('an authenticated user cannot send as someone else: 553 5.7.1', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: portOf(server, 'submissions'),
      secure: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'alice@example.test', pass: PASSWORD },
    });
    await assert.rejects(
      transport.sendMail({ from: 'bob@example.test', to: 'friend@remote.example', subject: 'forged', text: 'x' }),
      (error: Error & { response?: string }) => /^553 5\.7\.1 Sender address <bob@example\.test> is not yours/.test(error.response ?? ''),
    );
    transport.close();
  });

  test('a wrong password gets 535 5.7.8 and no relay', async () => {
    const socket = await tlsSmtp(portOf(server, 'submissions'));
    await socket.hello();
    assert.match(await socket.command(`AUTH PLAIN ${plain('alice@example.test', 'wrong password')}`), /^535 5\.7\.8 Authentication failed/);
    assert.match(await socket.command('MAIL FROM:<alice@example.test>'), /^530 /);
    socket.close();
  });

  test('AUTH LOGIN step by step, cancelling with "*", and a second AUTH after success', async () => {
    const socket = await tlsSmtp(portOf(server, 'submissions'));
    const ehlo = await socket.hello();
    assert.match(ehlo, /AUTH PLAIN LOGIN/);
    assert.equal(await socket.command('AUTH LOGIN'), `334 ${b64('Username:')}`);
    assert.match(await socket.command('*'), /^501 5\.0\.0 Authentication cancelled/);
    assert.equal(await socket.command('AUTH LOGIN'), `334 ${b64('Username:')}`);
    assert.equal(await socket.command(b64('alice@example.test')), `334 ${b64('Password:')}`);
    assert.match(await socket.command(b64(PASSWORD)), /^235 2\.7\.0/);
    assert.match(await socket.command(`AUTH PLAIN ${plain('alice@example.test', PASSWORD)}`), /^503 5\.5\.1 Already authenticated/);
    assert.match(await socket.command('AUTH CRAM-MD5'), /^503 /);
    socket.close();
  });

  test('STARTTLS injection: commands pipelined with STARTTLS in the clear are never run', async () => {
    const client = await SmtpClient.connect(portOf(server, 'submission'));
    await client.hello();
    client.write(`STARTTLS\r\nAUTH PLAIN ${plain('alice@example.test', PASSWORD)}\r\nMAIL FROM:<alice@example.test>\r\n`);
    assert.match(await client.reply(), /^220 /);
    const socket = tlsConnect({ socket: client.socket, rejectUnauthorized: false });
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    const replies: string[] = [];
    socket.on('data', (chunk: Buffer) => replies.push(chunk.toString()));
    socket.write('EHLO client.example\r\n');
    await until(() => replies.join('').includes('250 HELP'));
    assert.ok(!/^235|^250 2\.1\.0/m.test(replies.join('')), `nothing pipelined ran: ${replies.join('')}`);
    socket.write('MAIL FROM:<alice@example.test>\r\n');
    await until(() => /530 5\.7\.0/.test(replies.join('')));
    socket.destroy();
  });

  test('port 25 offers no AUTH by default', async () => {
    const smtp = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } });
    try {
      const client = await SmtpClient.connect(smtp.smtpPort);
      assert.doesNotMatch(await client.hello(), /AUTH/);
      assert.match(await client.command('AUTH PLAIN AAAA'), /^502 5\.5\.1 AUTH is not available on this port/);
      client.close();
    } finally {
      await smtp.close();
    }
  });
});

describe('a POP-before-SMTP device on the submission port', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ submission: { listen: ['127.0.0.1:0'] } });
    await server.addUser('scanner@example.test');
  });
  after(() => server.close());

  test('after a POP3 login it sends without AUTH (submission.pop_before_smtp = true, the default)', async () => {
    const pop = await Pop3Client.connect(server.pop3Port);
    await pop.line();
    await pop.login('scanner@example.test', PASSWORD);
    await pop.command('QUIT');
    const client = await SmtpClient.connect(portOf(server, 'submission'));
    await client.hello();
    assert.match(await client.send('scanner@example.test', ['friend@remote.example'], message('scanner@example.test', 'scan')), /^250 /);
    const stored = await spooled(server, 'scan');
    assert.match(stored!, /authorized by POP-before-SMTP login of scanner@example\.test/);
    client.close();
  });

  test('without a grant, the device is asked to log in', async () => {
    const client = await SmtpClient.connect(portOf(server, 'submission'), '127.0.0.9');
    await client.hello();
    assert.match(await client.command('MAIL FROM:<scanner@example.test>'), /^530 5\.7\.0 Authentication required/);
    client.close();
  });
});

async function tlsSmtp(port: number): Promise<SmtpClient & { hello(): Promise<string> }> {
  const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  return new (SmtpClient as unknown as new (s: typeof socket) => SmtpClient)(socket);
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}


describe('switches', () => {
  test('smtp.auth = true offers AUTH on the port 25 role too', async () => {
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], auth: true } });
    try {
      await server.addUser('eve@example.test');
      const client = await SmtpClient.connect(server.smtpPort);
      assert.match(await client.hello(), /AUTH PLAIN LOGIN/, 'on loopback without TLS, as auth.plaintext_without_tls = "loopback" allows');
      assert.match(await client.command(`AUTH PLAIN ${plain('eve@example.test', PASSWORD)}`), /^235 /);
      assert.match(await client.send('eve@example.test', ['friend@remote.example'], message('eve@example.test', 'port 25 auth')), /^250 /);
      client.socket.destroy();
    } finally {
      await server.close();
    }
  });

  test('submission.pop_before_smtp = false: a POP3 login is not enough on submission', async () => {
    const server = await startTestServer({ submission: { listen: ['127.0.0.1:0'], pop_before_smtp: false } });
    try {
      await server.addUser('frank@example.test');
      const pop = await Pop3Client.connect(server.pop3Port);
      await pop.line();
      await pop.login('frank@example.test', PASSWORD);
      await pop.command('QUIT');
      const client = await SmtpClient.connect(portOf(server, 'submission'));
      await client.hello();
      assert.match(await client.command('MAIL FROM:<frank@example.test>'), /^530 5\.7\.0 Authentication required/);
      client.socket.destroy();
    } finally {
      await server.close();
    }
  });
});
