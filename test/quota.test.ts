import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// Mailbox quotas over real SMTP and POP3: a full mailbox refuses at RCPT when the client said
// how big the message is (SIZE, RFC 1870), and at the end of DATA per recipient otherwise, so
// the other recipients get the message once and the sender a report; soft quotas answer 452;
// the owner is warned once past 90 %; POP3 shows the usage and its deletions free the space.

const FULL = 'full@example.test';
const ROOMY = 'roomy@example.test';
const SENDER = 'sender@example.test';

/** A message of about `size` octets. */
function messageOf(size: number, subject = 'filler'): string {
  const header = `From: <someone@remote.test>\r\nTo: <${FULL}>\r\nSubject: ${subject}\r\n\r\n`;
  const line = `${'x'.repeat(76)}\r\n`;
  return header + line.repeat(Math.max(1, Math.ceil((size - header.length) / line.length)));
}

async function smtp(server: TestServer): Promise<SmtpClient> {
  const client = await SmtpClient.connect(server.smtpPort);
  assert.match(await client.hello(), /^250/);
  return client;
}

describe('quotas over SMTP and POP3', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] }, filter: { enabled: false }, quota: { default: '1MB' } });
    for (const user of [FULL, ROOMY, SENDER]) await server.addUser(user);
  });
  after(() => server.close());

  /** Empties a mailbox (through the tracking mailstore, as POP3 does) and sets its quota. */
  async function reset(address: string, limit: number | null | undefined): Promise<void> {
    const { mailstore, backends } = server.app;
    await mailstore.remove(address, await mailstore.list(address));
    await backends.quotas!.setLimit(address, limit);
  }

  async function used(address: string): Promise<number> {
    return (await server.app.backends.quotas!.status(address)).used;
  }

  async function subjects(address: string): Promise<string[]> {
    const out: string[] = [];
    for (const stored of await server.app.mailstore.list(address)) {
      const chunks: Buffer[] = [];
      for await (const chunk of server.app.mailstore.read(stored)) chunks.push(chunk);
      out.push(/^Subject: (.*)$/m.exec(Buffer.concat(chunks).toString())?.[1]?.trim() ?? '');
    }
    return out;
  }

  test('with SIZE, the full mailbox is refused at RCPT with 552 5.2.2 and the other recipient gets the message', async () => {
    await reset(FULL, 4096);
    await reset(ROOMY, undefined);
    const client = await smtp(server);
    try {
      assert.match(await client.command(`MAIL FROM:<${SENDER}> SIZE=5000`), /^250/);
      assert.match(await client.command(`RCPT TO:<${FULL}>`), /^552 5\.2\.2 Mailbox full: <full@example\.test>/);
      assert.match(await client.command(`RCPT TO:<${ROOMY}>`), /^250/);
      assert.match(await client.command('DATA'), /^354/);
      client.write(`${messageOf(5000, 'sized')}.\r\n`);
      assert.match(await client.reply(), /^250/);
      // A message that fits is taken for the same mailbox.
      assert.match(await client.send(SENDER, [FULL], messageOf(1000, 'small')), /^250/);
    } finally {
      client.close();
    }
    assert.deepEqual(await subjects(ROOMY), ['sized']);
    assert.deepEqual(await subjects(FULL), ['small']);
  });

  test('without SIZE, the end of DATA refuses per recipient: the others get it once, the sender gets a report', async () => {
    await reset(FULL, 3000);
    await reset(ROOMY, undefined);
    const queued = new Set((await server.app.queue.list()).map((m) => m.id));
    const client = await smtp(server);
    try {
      assert.match(await client.send(SENDER, [FULL, ROOMY], messageOf(4000, 'too big for one')), /^250/);
    } finally {
      client.close();
    }
    assert.deepEqual(await subjects(ROOMY), ['too big for one']);
    assert.deepEqual(await subjects(FULL), [], 'nothing went to the full mailbox');
    // The report waits in the queue (outbound is off here) for the sender, naming 5.2.2.
    const reports = (await server.app.queue.list()).filter((m) => !queued.has(m.id));
    assert.equal(reports.length, 1);
    assert.equal(reports[0].from, '');
    assert.deepEqual(reports[0].recipients.map((r) => r.address), [SENDER]);
    const report = (await server.app.queue.read(reports[0].id)).toString();
    assert.match(report, /Final-Recipient: rfc822; full@example\.test\r\nAction: failed\r\nStatus: 5\.2\.2/);
  });

  test('an alias reaching a full and a roomy mailbox takes the message; only the full one is left out', async () => {
    await reset(FULL, 1000);
    await reset(ROOMY, undefined);
    await server.app.accounts.addAlias('team@example.test', [FULL, ROOMY]);
    const client = await smtp(server);
    try {
      assert.match(await client.command(`MAIL FROM:<${SENDER}> SIZE=3000`), /^250/);
      assert.match(await client.command('RCPT TO:<team@example.test>'), /^250/);
      assert.match(await client.command('DATA'), /^354/);
      client.write(`${messageOf(3000, 'for the team')}.\r\n`);
      assert.match(await client.reply(), /^250/);
    } finally {
      client.close();
      await server.app.accounts.removeAlias('team@example.test');
    }
    assert.deepEqual(await subjects(ROOMY), ['for the team']);
    assert.deepEqual(await subjects(FULL), []);
  });

  test('when every recipient is full the message is refused after DATA with 552 5.2.2 and nothing is stored', async () => {
    await reset(FULL, 3000);
    const client = await smtp(server);
    try {
      assert.match(await client.send(SENDER, [FULL], messageOf(4000)), /^552 5\.2\.2 /);
      // The session goes on: the next transaction is fine.
      assert.match(await client.send(SENDER, [FULL], messageOf(500, 'fits')), /^250/);
    } finally {
      client.close();
    }
    assert.deepEqual(await subjects(FULL), ['fits']);
  });

  test('the owner is warned once when the mailbox passes 90 %, and again after it went below', async () => {
    await reset(FULL, 10_000);
    const client = await smtp(server);
    try {
      assert.match(await client.send(SENDER, [FULL], messageOf(5000, 'half')), /^250/);
      assert.deepEqual(await subjects(FULL), ['half'], 'no warning at half');
      assert.match(await client.send(SENDER, [FULL], messageOf(4300, 'ninety')), /^250/);
      const afterPass = await subjects(FULL);
      assert.equal(afterPass.length, 3);
      assert.match(afterPass.find((s) => s.startsWith('Your mailbox'))!, /^Your mailbox is 9\d% full$/);
      // Still over the mark: no second warning.
      await server.app.backends.quotas!.setLimit(FULL, 20_000);
      await server.app.backends.quotas!.setLimit(FULL, 10_000);
      assert.match(await client.send(SENDER, [FULL], messageOf(100, 'more')), /^250|^552/);
      assert.equal((await subjects(FULL)).filter((s) => s.startsWith('Your mailbox')).length, 1, 'one warning only');
    } finally {
      client.close();
    }
    // Emptied over POP3: below the mark again, so the next pass warns again.
    const pop = await Pop3Client.connect(server.pop3Port);
    try {
      await pop.line();
      const login = await pop.login(FULL, PASSWORD);
      assert.match(login, /^\+OK Logged in, 3 messages \(\d+ octets\), 1\d\d% of your 9\.8 KB quota used$/, 'over: the warning itself took the last room');
      const count = Number(/(\d+) messages/.exec(login)![1]);
      for (let i = 1; i <= count; i++) assert.match(await pop.command(`DELE ${i}`), /^\+OK/);
      assert.match(await pop.command('QUIT'), /^\+OK/);
    } finally {
      pop.close();
    }
    assert.equal(await used(FULL), 0, 'POP3 deletions freed the space');
    const again = await smtp(server);
    try {
      assert.match(await again.send(SENDER, [FULL], messageOf(9500, 'past again')), /^250/);
    } finally {
      again.close();
    }
    assert.equal((await subjects(FULL)).filter((s) => s.startsWith('Your mailbox')).length, 1, 'warned again');
  });

  test('the counter matches the folder, and a lost counter is counted again from the folder', async () => {
    await reset(ROOMY, null);
    await server.deliver(ROOMY, messageOf(1234));
    await server.deliver(ROOMY, 'Subject: bare LF\n\nline\n');
    const counted = await used(ROOMY);
    let folder = 0;
    for (const stored of await server.app.mailstore.list(ROOMY)) folder += stored.size;
    assert.equal(counted, folder, 'LF-only mail is counted at its POP3 (CRLF) size');
    await server.app.backends.quotas!.forget(ROOMY);
    assert.equal(await server.app.backends.quotaStore.usage(ROOMY), undefined);
    assert.equal(await used(ROOMY), folder, 'recounted from the folder');
  });

  test('a quota set below the current usage refuses new mail until the mailbox is emptied', async () => {
    await reset(FULL, null);
    await server.deliver(FULL, messageOf(3000));
    await server.app.backends.quotas!.setLimit(FULL, 1000);
    const client = await smtp(server);
    try {
      assert.match(await client.command(`MAIL FROM:<${SENDER}>`), /^250/);
      assert.match(await client.command(`RCPT TO:<${FULL}>`), /^552 5\.2\.2 /, 'refused at RCPT even without SIZE');
    } finally {
      client.close();
    }
  });
});

describe('soft quotas', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] }, filter: { enabled: false }, quota: { default: '2KB', soft: true } });
    for (const user of [FULL, ROOMY, SENDER]) await server.addUser(user);
    await server.app.backends.quotas!.setLimit(ROOMY, null);
  });
  after(() => server.close());

  test('a full mailbox answers 452 4.2.2, at RCPT and after DATA; beside accepted recipients it takes the message', async () => {
    const client = await smtp(server);
    try {
      assert.match(await client.command(`MAIL FROM:<${SENDER}> SIZE=3000`), /^250/);
      assert.match(await client.command(`RCPT TO:<${FULL}>`), /^452 4\.2\.2 /);
      assert.match(await client.command('RSET'), /^250/);
      assert.match(await client.send(SENDER, [FULL], messageOf(3000)), /^452 4\.2\.2 /, 'alone: try later');
      assert.equal((await server.app.mailstore.list(FULL)).length, 0);
      // With another recipient the message is accepted, so a retry cannot duplicate it: the
      // soft quota lets the full mailbox go over by this one message.
      assert.match(await client.send(SENDER, [FULL, ROOMY], messageOf(3000)), /^250/);
    } finally {
      client.close();
    }
    assert.equal((await server.app.mailstore.list(FULL)).length, 2, 'the message, and the warning that it passed 90 %');
    assert.equal((await server.app.mailstore.list(ROOMY)).length, 1);
  });
});
