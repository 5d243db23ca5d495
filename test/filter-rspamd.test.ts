import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { missingEngine, startRspamd, type RunningRspamd } from './helpers/engines.ts';
import { startDns, type TestDns } from './helpers/dns.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// rspamd behind popgate's inbound filter, end to end: Debian's rspamd started on free ports
// with the test configuration (test/helpers/engines.ts), popgate pointed at it, mail sent
// over real SMTP and read back over POP3.

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
const message = (subject: string, body = 'Hello, this is a normal message.') =>
  `From: someone@sender.example\r\nTo: alice@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.example>\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\n\r\n${body}\r\n`;

describe('rspamd in the inbound filter', { skip: missingEngine('rspamd'), timeout: 180_000 }, () => {
  let rspamd: RunningRspamd;
  let dns: TestDns;
  let accepting: TestServer; // on_failure = "accept", outbound checks on
  let deferring: TestServer; // on_failure = "defer"

  before(async () => {
    rspamd = await startRspamd();
    dns = await startDns({});
    const common = { smtp: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 0, error_delay: '0s' }, dns: { servers: [dns.address], timeout: '1s' } };
    accepting = await startTestServer({ ...common, filter: { rspamd: { url: rspamd.url, timeout: '5s', on_failure: 'accept', outbound: true } } });
    deferring = await startTestServer({ ...common, filter: { rspamd: { url: rspamd.url, timeout: '5s', on_failure: 'defer' } } });
    for (const server of [accepting, deferring]) await server.addUser('alice@example.test');
  });
  after(async () => {
    await accepting?.close();
    await deferring?.close();
    await dns?.close();
    await rspamd?.destroy();
  });

  async function send(server: TestServer, text: string, ip = '127.0.0.50', from = 'someone@sender.example', to = 'alice@example.test'): Promise<string> {
    const client = await SmtpClient.connect(server.smtpPort, ip);
    try {
      await client.hello('mta.sender.test');
      return await client.send(from, [to], text);
    } finally {
      client.close();
    }
  }

  async function mailbox(server: TestServer): Promise<string[]> {
    const pop = await Pop3Client.connect(server.pop3Port);
    await pop.line();
    await pop.login('alice@example.test', PASSWORD);
    const count = Number((await pop.command('STAT')).split(' ')[1]);
    const messages: string[] = [];
    for (let i = 1; i <= count; i++) messages.push((await pop.multiline(`RETR ${i}`)).lines.join('\n'));
    await pop.command('QUIT');
    return messages;
  }

  test("GTUBE is refused at the end of DATA with rspamd's reply text, and nothing is delivered", async () => {
    const reply = await send(accepting, message('gtube', `Test.\r\n\r\n${GTUBE}`));
    assert.match(reply, /^550 5\.7\.1 Gtube pattern/);
    assert.equal((await mailbox(accepting)).filter((m) => m.includes('Subject: gtube')).length, 0);
  });

  test("a clean message is delivered with rspamd's score, threshold and symbols in X-Spam-Status", async () => {
    assert.match(await send(accepting, message('clean')), /^250 2\.0\.0/);
    const delivered = (await mailbox(accepting)).find((m) => m.includes('Subject: clean'));
    assert.ok(delivered, 'delivered');
    const header = delivered.slice(0, delivered.indexOf('\n\n'));
    assert.match(header, /^X-Spam-Flag: NO$/m);
    // rspamd's reject threshold (Debian's 15) replaces popgate's spam_score; its symbols are named.
    assert.match(header, /^X-Spam-Status: No, score=0\.0 required=15\.0 tests=(RSPAMD_\w+,)*RSPAMD_TO_MATCH_ENVRCPT_ALL/m);
    // (rspamd's own X-Rspamd-* headers: milter_headers skips clients on loopback, as these are.)
    assert.match(header, /^Authentication-Results: mail\.example\.test;/m);
  });

  test('mail a customer relays is checked too (outbound = true): GTUBE from a POP-before-SMTP client is refused', async () => {
    const pop = await Pop3Client.connect(accepting.pop3Port, { localAddress: '127.0.0.51' });
    await pop.line();
    await pop.login('alice@example.test', PASSWORD);
    await pop.command('QUIT');
    const reply = await send(accepting, message('relayed gtube', GTUBE), '127.0.0.51', 'alice@example.test', 'friend@remote.example');
    assert.match(reply, /^550 5\.7\.1 /);
    assert.equal((await accepting.app.queue.list()).length, 0, 'nothing queued');
  });

  test('rspamd stopped: "accept" delivers with popgate\'s own verdict, "defer" answers 451 4.7.0; rspamd back: checked again', async () => {
    await rspamd.stop();
    try {
      assert.match(await send(accepting, message('while down')), /^250 2\.0\.0/);
      const delivered = (await mailbox(accepting)).find((m) => m.includes('Subject: while down'));
      assert.match(delivered ?? '', /^X-Spam-Status: No, score=0\.0 required=5\.0 tests=RSPAMD_UNAVAILABLE/m);
      assert.match(await send(deferring, message('deferred while down')), /^451 4\.7\.0 /);
    } finally {
      await rspamd.start();
    }
    assert.match(await send(deferring, message('gtube after', GTUBE)), /^550 5\.7\.1 Gtube pattern/);
    assert.match(await send(deferring, message('clean after')), /^250 2\.0\.0/);
  });
});
