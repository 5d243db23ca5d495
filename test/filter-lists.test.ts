import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDns, type TestDns } from './helpers/dns.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { sleep } from './helpers/wire.ts';

// DNS blocklists, allowlists and greylisting over real SMTP sockets, with the lists served by
// a local DNS server. Each client comes from a /24 of its own (greylisting remembers client
// networks of that size), all on loopback.

const LISTED = '127.0.7.7'; // in bl.test: refused at RCPT
const SCORED = '127.0.8.8'; // in score.test: weighted, delivered
const ALLOWED = '127.0.6.6'; // in wl.test: skips greylisting
const NEW_SERVER = '127.0.5.5'; // in no list: greylisted
const GREYLIST_DELAY_MS = 1500;

const reversed = (ip: string) => ip.split('.').reverse().join('.');

const ZONE = {
  [`${reversed(LISTED)}.bl.test`]: { A: ['127.0.0.2'], TXT: ['listed for testing'] },
  [`${reversed(SCORED)}.score.test`]: { A: ['127.0.0.3'] },
  [`${reversed(ALLOWED)}.wl.test`]: { A: ['127.0.10.1'] },
};

const message = (subject: string) => `From: someone@sender.example\r\nTo: alice@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.example>\r\n\r\nHello.\r\n`;

describe('DNS lists and greylisting', () => {
  let dns: TestDns;
  let server: TestServer;

  before(async () => {
    dns = await startDns(ZONE);
    server = await startTestServer({
      smtp: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 0, error_delay: '0s' },
      dns: { servers: [dns.address], timeout: '1s' },
      filter: {
        dnsbl: ['bl.test', { zone: 'score.test', action: 'score', weight: 3, codes: ['127.0.0.3'] }],
        dnswl: ['wl.test'],
        greylisting: true,
        greylist_delay: `${GREYLIST_DELAY_MS}ms`,
        greylist_retry_window: '1m',
      },
    });
    await server.addUser('alice@example.test');
  });
  after(async () => {
    await server?.close();
    await dns?.close();
  });

  async function session(ip: string): Promise<SmtpClient> {
    const client = await SmtpClient.connect(server.smtpPort, ip);
    assert.match(await client.hello('mta.sender.test'), /^250/);
    return client;
  }

  async function messageCount(): Promise<number> {
    const pop = await Pop3Client.connect(server.pop3Port);
    await pop.line();
    await pop.login('alice@example.test', PASSWORD);
    const count = Number((await pop.command('STAT')).split(' ')[1]);
    await pop.command('QUIT');
    return count;
  }

  async function newestHeader(): Promise<string> {
    const pop = await Pop3Client.connect(server.pop3Port);
    await pop.line();
    await pop.login('alice@example.test', PASSWORD);
    const count = Number((await pop.command('STAT')).split(' ')[1]);
    const { lines } = await pop.multiline(`RETR ${count}`);
    await pop.command('QUIT');
    return lines.slice(0, lines.indexOf('')).join('\n');
  }

  test('a client listed in a blocklist is refused at RCPT with 550 5.7.1 naming the zone, and nothing is delivered', async () => {
    const before = await messageCount();
    const client = await session(LISTED);
    assert.match(await client.command('MAIL FROM:<someone@sender.example>'), /^250/);
    const reply = await client.command('RCPT TO:<alice@example.test>');
    assert.match(reply, /^550 5\.7\.1 /);
    assert.ok(reply.includes(`${LISTED} is listed by bl.test`), reply);
    assert.match(await client.command('DATA'), /^554 /, 'no valid recipient, no DATA');
    client.close();
    assert.equal(await messageCount(), before);
    // Counted for the metrics endpoint.
    assert.deepEqual(server.app.filter!.counts.entries().filter((entry) => entry.check === 'dnsbl'), [{ check: 'dnsbl', result: 'refused', count: 1 }]);
  });

  test('an allowlisted client skips greylisting: its first message is accepted at once', async () => {
    const client = await session(ALLOWED);
    assert.match(await client.send('someone@sender.example', ['alice@example.test'], message('allowlisted')), /^250 2\.0\.0/);
    client.close();
    const header = await newestHeader();
    assert.match(header, /X-Spam-Status: No, score=0\.0 required=5\.0 tests=DNSWL_wl\.test/);
  });

  test('greylisting: a first attempt gets 451 4.7.1, a retry too soon too, a retry after the delay passes', async () => {
    const first = await session(NEW_SERVER);
    assert.match(await first.command('MAIL FROM:<news@sender.example>'), /^250/);
    assert.match(await first.command('RCPT TO:<alice@example.test>'), /^451 4\.7\.1 Greylisted: .*try again in 1 minute/);
    first.close();

    const tooSoon = await session(NEW_SERVER);
    assert.match(await tooSoon.send('news@sender.example', ['alice@example.test'], message('too soon')), /^451 4\.7\.1 /);
    tooSoon.close();

    await sleep(GREYLIST_DELAY_MS + 300);
    const retry = await session(NEW_SERVER);
    assert.match(await retry.send('news@sender.example', ['alice@example.test'], message('retried')), /^250 2\.0\.0/);
    retry.close();
    const counted = (check: string, result: string) => server.app.filter!.counts.entries().find((e) => e.check === check && e.result === result)?.count;
    assert.equal(counted('greylist', 'deferred'), 2);
    assert.ok(counted('message', 'accepted')! >= 2, 'the allowlisted and the retried message');

    // The client's network passed: another sender from it is not delayed.
    const known = await session(NEW_SERVER);
    assert.match(await known.send('other@sender.example', ['alice@example.test'], message('known network')), /^250 2\.0\.0/);
    known.close();
  });

  test("a listing in a scoring zone adds the zone's weight to the spam score and the message is delivered", async () => {
    // Greylisted at first like any new server; the list only scores.
    const first = await session(SCORED);
    assert.match(await first.send('promo@sender.example', ['alice@example.test'], message('scored first')), /^451 4\.7\.1 /);
    first.close();
    await sleep(GREYLIST_DELAY_MS + 300);
    const retry = await session(SCORED);
    assert.match(await retry.send('promo@sender.example', ['alice@example.test'], message('scored')), /^250 2\.0\.0/);
    retry.close();
    assert.match(await newestHeader(), /X-Spam-Status: No, score=3\.0 required=5\.0 tests=DNSBL_score\.test/);
  });

  test('a domain that turns greylisting off gets mail from a new server at once', async () => {
    const { domainSettings, events } = server.app.backends;
    await domainSettings.set('example.test', 'greylisting', 'false');
    await events.publish({ kind: 'domain', subject: 'example.test' }); // as popgate domain set does
    try {
      const client = await session('127.0.9.9');
      assert.match(await client.send('first@sender.example', ['alice@example.test'], message('no greylisting')), /^250 2\.0\.0/);
      client.close();
    } finally {
      await domainSettings.set('example.test', 'greylisting', undefined);
      await events.publish({ kind: 'domain', subject: 'example.test' });
    }
  });
});
