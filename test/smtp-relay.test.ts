import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// The mission: everyone may send to local users; only a client whose address logged in to
// POP3 within the window may send anywhere else.

async function popLogin(server: TestServer, user: string, localAddress: string): Promise<void> {
  const client = await Pop3Client.connect(server.pop3Port, { localAddress });
  await client.line();
  assert.match(await client.login(user, PASSWORD), /^\+OK Logged in/);
  await client.command('QUIT');
}

describe('SMTP: inbound mail and POP-before-SMTP relay', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms' }, pop_before_smtp: { window: '10m' } });
    await server.addUser('alice@example.test');
    await server.addUser('bob@example.test');
    await server.app.accounts.addAlias('team@example.test', ['alice@example.test', 'bob@example.test']);
    await server.app.accounts.addAlias('sales@example.test', ['alice@example.test']);
  });
  after(() => server.close());

  test('EHLO lists the ESMTP extensions', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    assert.match(await client.reply(), /^220 mail\.example\.test ESMTP/);
    const ehlo = await client.command('EHLO client.example');
    for (const ext of ['PIPELINING', 'SIZE 26214400', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'STARTTLS']) assert.match(ehlo, new RegExp(`^250[- ]${ext}$`, 'm'));
    assert.match(await client.command('QUIT'), /^221 2\.0\.0/);
  });

  test('anyone may send to a local user; the message lands in the Maildir with trace headers', async () => {
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.9');
    await client.hello();
    assert.match(await client.send('someone@remote.example', ['alice@example.test'], message('inbound')), /^250 2\.0\.0 OK: queued as \w+/);
    await client.command('QUIT');
    const pop = await Pop3Client.connect(server.pop3Port);
    await pop.line();
    await pop.login('alice@example.test', PASSWORD);
    const { lines } = await pop.multiline(`RETR ${Number((await pop.command('STAT')).split(' ')[1])}`);
    await pop.command('QUIT');
    assert.equal(lines[0], 'Return-Path: <someone@remote.example>');
    assert.ok(lines.some((line) => /^Authentication-Results: mail\.example\.test;/.test(line)), 'the filter\'s verdict');
    assert.ok(lines.some((line) => /^Received: from client\.example \(\[127\.0\.0\.9\]\)$/.test(line)), 'the trace');
    assert.ok(lines.join('\n').includes(message('inbound').replace(/\r\n/g, '\n').trimEnd()));
  });

  test('an unknown local user gets 550 5.1.1', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    assert.match(await client.command('MAIL FROM:<a@remote.example>'), /^250 2\.1\.0/);
    assert.match(await client.command('RCPT TO:<nobody@example.test>'), /^550 5\.1\.1 /);
    client.close();
  });

  test('relay without a POP3 login is refused with a hint', async () => {
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.10');
    await client.hello();
    assert.match(await client.command('MAIL FROM:<alice@example.test>'), /^250/);
    assert.equal(await client.command('RCPT TO:<friend@remote.example>'), '554 5.7.1 Relay access denied: log in with POP3 first, then send within 10 minutes');
    client.close();
  });

  test('right after a POP3 login (no sleep) relay is accepted and spooled, with the user in Received', async () => {
    await popLogin(server, 'alice@example.test', '127.0.0.11');
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.11');
    await client.hello();
    const reply = await client.send('alice@example.test', ['friend@remote.example', 'bob@example.test'], message('relayed').replace('From: sender@example.net', 'From: alice@example.test'));
    assert.match(reply, /^250 2\.0\.0 OK: queued as (\w+)/);
    const id = /queued as (\w+)/.exec(reply)![1];
    const spooled = readFileSync(join(server.dir, 'queue', `${id}.eml`), 'utf8');
    assert.match(spooled, /authorized by POP-before-SMTP login of alice@example\.test/);
    const envelope = JSON.parse(readFileSync(join(server.dir, 'queue', `${id}.json`), 'utf8'));
    assert.deepEqual(envelope.to, ['friend@remote.example']);
    assert.equal(envelope.authorizedUser, 'alice@example.test');
    await client.command('QUIT');
  });

  test('another loopback address is still refused while 127.0.0.1x is authorized', async () => {
    await popLogin(server, 'alice@example.test', '127.0.0.12');
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.13');
    await client.hello();
    await client.command('MAIL FROM:<alice@example.test>');
    assert.match(await client.command('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 Relay access denied/);
    client.close();
  });

  test('sender enforcement: relay on a grant only with a sender that belongs to the holder', async () => {
    await popLogin(server, 'alice@example.test', '127.0.0.14');
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.14');
    await client.hello();
    assert.match(await client.command('MAIL FROM:<bob@example.test>'), /^250 2\.1\.0/);
    assert.match(await client.command('RCPT TO:<friend@remote.example>'), /^553 5\.7\.1 Sender address <bob@example\.test> is not yours/);
    assert.match(await client.command('RCPT TO:<alice@example.test>'), /^250 2\.1\.5/, 'mail to local users still flows');
    assert.match(await client.command('RSET'), /^250/);
    assert.match(await client.command('MAIL FROM:<sales@example.test>'), /^250 2\.1\.0/, 'an alias that reaches alice is hers');
    assert.match(await client.command('RCPT TO:<friend@remote.example>'), /^250 2\.1\.5/);
    client.close();
  });

  test('aliases expand to every target mailbox; postmaster is always accepted', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    await client.hello();
    assert.match(await client.send('x@remote.example', ['team@example.test', 'Postmaster@EXAMPLE.test', 'postmaster'], message('to the team')), /^250 /);
    await client.command('QUIT');
    for (const user of ['alice', 'bob']) {
      const path = join(server.dir, 'mail', 'example.test', user, 'new');
      assert.ok(readdirSync(path).some((name) => readFileSync(join(path, name), 'utf8').includes('Subject: to the team')), user);
    }
    const postmaster = join(server.dir, 'mail', 'example.test', 'postmaster', 'new');
    assert.equal(readdirSync(postmaster).length, 1, 'one copy although postmaster was named twice');
  });

  test('SIZE is enforced at MAIL FROM and while receiving', async () => {
    const small = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], max_message_size: 1000, error_delay: '0ms' } });
    try {
      await small.addUser('s@example.test');
      const client = await SmtpClient.connect(small.smtpPort);
      await client.hello();
      assert.match(await client.command('MAIL FROM:<a@remote.example> SIZE=5000'), /^552 5\.3\.4/);
      assert.match(await client.send('a@remote.example', ['s@example.test'], message('big', 'x'.repeat(2000) + '\r\n')), /^552 5\.3\.4 Message too big/);
      assert.match(await client.send('a@remote.example', ['s@example.test'], message('small')), /^250 /, 'the session stays usable');
      client.close();
    } finally {
      await small.close();
    }
  });

  test('a short window expires: relay is accepted inside it and refused after', async () => {
    const short = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms' }, pop_before_smtp: { window: '400ms' } });
    try {
      await short.addUser('w@example.test');
      await popLogin(short, 'w@example.test', '127.0.0.15');
      const client = await SmtpClient.connect(short.smtpPort, '127.0.0.15');
      await client.hello();
      await client.command('MAIL FROM:<w@example.test>');
      assert.match(await client.command('RCPT TO:<friend@remote.example>'), /^250 2\.1\.5/);
      await client.command('RSET');
      await new Promise((resolve) => setTimeout(resolve, 450));
      await client.command('MAIL FROM:<w@example.test>');
      assert.match(await client.command('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 Relay access denied: log in with POP3 first, then send within 1 second$/);
      client.close();
    } finally {
      await short.close();
    }
  });

  test('too many recipients get 452 4.5.3', async () => {
    const few = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], max_recipients: 2 } });
    try {
      await few.addUser('r@example.test');
      const client = await SmtpClient.connect(few.smtpPort);
      await client.hello();
      await client.command('MAIL FROM:<a@remote.example>');
      assert.match(await client.command('RCPT TO:<r@example.test>'), /^250/);
      assert.match(await client.command('RCPT TO:<r@example.test>'), /^250/);
      assert.match(await client.command('RCPT TO:<r@example.test>'), /^452 4\.5\.3/);
      client.close();
    } finally {
      await few.close();
    }
  });

  test('bad sequences and syntax get 5xx with enhanced codes; too many errors end the session', async () => {
    const client = await SmtpClient.connect(server.smtpPort);
    await client.reply();
    assert.match(await client.command('MAIL FROM:<a@remote.example>'), /^503 5\.5\.1 Say EHLO first/);
    await client.command('EHLO x');
    assert.match(await client.command('RCPT TO:<alice@example.test>'), /^503 5\.5\.1/);
    assert.match(await client.command('DATA'), /^503 5\.5\.1/);
    assert.match(await client.command('MAIL FROM:alice'), /^501 5\.5\.4/);
    assert.match(await client.command('VRFY alice'), /^252 /);
    assert.match(await client.command('NOOP'), /^250 2\.0\.0/);
    assert.match(await client.command('HELP'), /^214 /);
    let reply = '';
    for (let i = 0; i < 25 && !reply.startsWith('421'); i++) reply = await client.command('BOGUS');
    assert.match(reply, /^421 4\.7\.0 Too many errors/);
    await client.reply().catch(() => {});
  });
});

describe('dual-stack listeners', () => {
  test('a client seen as ::ffff:127.0.0.1 is the IPv4 client 127.0.0.1 for grants', async () => {
    const server = await startTestServer({ pop3: { listen: ['[::]:0'] }, smtp: { listen: ['[::]:0'], error_delay: '0ms' } });
    try {
      await server.addUser('dual@example.test');
      await popLogin(server, 'dual@example.test', '127.0.0.16');
      assert.deepEqual((await server.app.popBeforeSmtp.list()).map((g) => g.key), ['127.0.0.16']);
      const client = await SmtpClient.connect(server.smtpPort, '127.0.0.16');
      await client.hello();
      await client.command('MAIL FROM:<dual@example.test>');
      assert.match(await client.command('RCPT TO:<friend@remote.example>'), /^250 2\.1\.5/);
      client.close();
    } finally {
      await server.close();
    }
  });
});
