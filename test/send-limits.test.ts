import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../src/log/logger.ts';
import { SendLimits } from '../src/policy/send-limits.ts';
import { sendLimitReply } from '../src/smtp/replies.ts';
import { openCountersDatabase } from '../src/sqlite/open.ts';
import { SqliteSendLimitStore } from '../src/sqlite/send-counts.ts';
import { MAIN, NODE } from './helpers/process.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// Sending limits per user, whichever way the user was authorized: over a limit the message is
// refused with a clear reply (never queued), while other users keep sending.

const run = promisify(execFile);
const plain = (user: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${PASSWORD}`).toString('base64')}`;
const body = (n: number) => `Subject: limit ${n}\r\n\r\nHi.\r\n`;

describe('sending limits', () => {
  let server: TestServer;
  let submissionPort: number;
  before(async () => {
    server = await startTestServer({
      submission: { listen: ['127.0.0.1:0'] },
      limits: { messages_per_hour: 2, messages_per_day: 10, recipients_per_day: 4, exempt_users: ['bulk@example.test'] },
      smtp: { error_delay: '0ms' },
    });
    submissionPort = Number(server.app.addresses.submission[0].split(':').pop());
    for (const user of ['alice', 'bob', 'carol', 'dave', 'bulk']) await server.addUser(`${user}@example.test`);
  });
  after(() => server.close());

  async function loggedIn(user: string, localAddress = '127.0.0.1'): Promise<SmtpClient> {
    const client = await SmtpClient.connect(submissionPort, localAddress);
    await client.hello();
    assert.match(await client.command(plain(user)), /^235 /);
    return client;
  }

  test('a user over the hourly limit is refused with 450 4.7.1 while another user still sends', async () => {
    const alice = await loggedIn('alice@example.test');
    for (let n = 0; n < 2; n++) assert.match(await alice.send('alice@example.test', [`x${n}@remote.example`], body(n)), /^250 /);
    const queued = (await server.app.queue.list()).length;
    assert.match(await alice.command('MAIL FROM:<alice@example.test>'), /^450 4\.7\.1 Sending limit reached: 2 messages per hour/);
    assert.equal((await server.app.queue.list()).length, queued, 'nothing was queued');
    const bob = await loggedIn('bob@example.test');
    assert.match(await bob.send('bob@example.test', ['y@remote.example'], body(9)), /^250 /);
    alice.socket.destroy();
    bob.socket.destroy();
  });

  test('the daily recipient limit refuses the RCPT that would pass it (550 5.7.1)', async () => {
    const carol = await loggedIn('carol@example.test');
    assert.match(await carol.command('MAIL FROM:<carol@example.test>'), /^250 /);
    for (let n = 0; n < 4; n++) assert.match(await carol.command(`RCPT TO:<r${n}@remote.example>`), /^250 /);
    assert.match(await carol.command('RCPT TO:<r4@remote.example>'), /^550 5\.7\.1 Sending limit reached: 4 recipients per day/);
    assert.match(await carol.command('RCPT TO:<dave@example.test>'), /^250 /, 'local recipients are not limited');
    carol.socket.destroy();
  });

  test('a POP-before-SMTP user counts the same way', async () => {
    const pop = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.61' });
    await pop.line();
    await pop.login('dave@example.test', PASSWORD);
    await pop.command('QUIT');
    const dave = await SmtpClient.connect(submissionPort, '127.0.0.61');
    await dave.hello();
    for (let n = 0; n < 2; n++) assert.match(await dave.send('dave@example.test', [`z${n}@remote.example`], body(n)), /^250 /);
    assert.match(await dave.command('MAIL FROM:<dave@example.test>'), /^450 4\.7\.1 /);
    dave.socket.destroy();
  });

  test('an exempt user is not limited', async () => {
    const bulk = await loggedIn('bulk@example.test');
    for (let n = 0; n < 4; n++) assert.match(await bulk.send('bulk@example.test', [`b${n}@remote.example`], body(n)), /^250 /);
    bulk.socket.destroy();
  });

  test('popgate limits show lists the counts, and limits reset lets the user send again', async () => {
    const config = join(server.dir, 'popgate.toml');
    writeFileSync(config, `data_dir = "${server.dir}"\n[limits]\nmessages_per_hour = 2\nmessages_per_day = 10\nrecipients_per_day = 4\n`);
    const shown = await run(NODE, [MAIN, '--config', config, 'limits', 'show']);
    assert.match(shown.stdout, /alice@example\.test\t2 this hour\t2 today\t2 recipients today\tLIMITED/);
    assert.match(shown.stdout, /bob@example\.test\t1 this hour/);
    const reset = await run(NODE, [MAIN, '--config', config, 'limits', 'reset', 'alice@example.test']);
    assert.match(reset.stdout, /cleared 2 counted message\(s\) and 0 failed-login record\(s\) of alice@example\.test/);
    const alice = await loggedIn('alice@example.test');
    assert.match(await alice.send('alice@example.test', ['again@remote.example'], body(3)), /^250 /);
    alice.socket.destroy();
  });
});

describe('sending limit rules', () => {
  const HOUR = 3_600_000;
  const dir = mkdtempSync(join(tmpdir(), 'popgate-send-limits-'));
  const db = openCountersDatabase(dir);
  after(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const limits = new SendLimits(
    new SqliteSendLimitStore(db),
    { messagesPerHour: 2, messagesPerDay: 3, recipientsPerDay: 5, exemptUsers: ['Bulk@example.test'] },
    silentLogger(),
  );

  test('a limit reached is data: which one, its maximum, and whether waiting helps', async () => {
    const start = 10 * 24 * HOUR;
    assert.equal(await limits.checkMessage('erin@example.test', start), undefined);
    await limits.recordSent('erin@example.test', 2, start);
    await limits.recordSent('erin@example.test', 2, start + 1);
    assert.deepEqual(await limits.checkMessage('erin@example.test', start + 2), { limit: 'messages_per_hour', max: 2, temporary: true });
    assert.deepEqual(await limits.checkRecipient('erin@example.test', 1, start + 2), { limit: 'recipients_per_day', max: 5, temporary: false });
    assert.equal(await limits.checkRecipient('erin@example.test', 0, start + 2), undefined, 'the recipients of this message count too');
    assert.equal(await limits.checkMessage('erin@example.test', start + HOUR), undefined, 'the hour has passed');
    await limits.recordSent('erin@example.test', 0, start + HOUR);
    assert.deepEqual(await limits.checkMessage('erin@example.test', start + HOUR + 1), { limit: 'messages_per_day', max: 3, temporary: false }, 'the day limit is told first');
    assert.equal(await limits.checkMessage('bulk@example.test', start + HOUR + 1), undefined, 'exempt users, whatever their case');
  });

  test('the SMTP replies to each limit', () => {
    assert.deepEqual(sendLimitReply({ limit: 'messages_per_day', max: 3, temporary: false }), {
      code: 550,
      enhanced: '5.7.1',
      text: 'Sending limit reached: 3 messages per day. Contact your provider if you need more',
    });
    assert.deepEqual(sendLimitReply({ limit: 'messages_per_hour', max: 2, temporary: true }), {
      code: 450,
      enhanced: '4.7.1',
      text: 'Sending limit reached: 2 messages per hour. Please try again later',
    });
    assert.deepEqual(sendLimitReply({ limit: 'recipients_per_day', max: 5, temporary: false }), {
      code: 550,
      enhanced: '5.7.1',
      text: 'Sending limit reached: 5 recipients per day. Contact your provider if you need more',
    });
  });
});
