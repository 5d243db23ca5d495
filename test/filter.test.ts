import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { startDns, type TestDns } from './helpers/dns.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { sleep } from './helpers/wire.ts';

// Inbound filtering over real sockets: a local DNS server holds the senders' SPF, DKIM and
// DMARC records; messages are signed with mailauth by a test key, sent from loopback
// addresses the SPF records allow or not, forged, replayed and modified; each policy outcome
// is checked at the SMTP reply and, for what is delivered, in the headers POP3 returns.

const ALLOWED = '127.0.0.20';
const STRANGER = '127.0.0.21';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PUBLIC_KEY = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const PRIVATE_KEY = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

function dkimRecord(): string {
  return `v=DKIM1; k=rsa; p=${PUBLIC_KEY}`;
}

const ZONE = {
  // Signs, sends from ALLOWED only, and asks receivers to refuse what fails.
  'strict.example': { TXT: [`v=spf1 ip4:${ALLOWED} -all`] },
  'sel._domainkey.strict.example': { TXT: [dkimRecord()] },
  '_dmarc.strict.example': { TXT: ['v=DMARC1; p=reject'] },
  // Asks receivers to quarantine what fails.
  'careful.example': { TXT: [`v=spf1 ip4:${ALLOWED} -all`] },
  '_dmarc.careful.example': { TXT: ['v=DMARC1; p=quarantine'] },
  // A hard SPF fail, no DMARC.
  'spfonly.example': { TXT: [`v=spf1 ip4:${ALLOWED} -all`] },
  // Its name server is broken: every check is a temporary error.
  'broken.example': { servfail: true },
  '_dmarc.broken.example': { servfail: true },
  // Junk where records should be.
  'junk.example': { TXT: ['v=spf1 ip4:999.1.1.1 -all'] },
  '_dmarc.junk.example': { TXT: ['v=DMARC1; p=banana; sp=@@@'] },
  'bad._domainkey.junk.example': { TXT: ['v=DKIM1; k=rsa; p=AAAAnotakey'] },
  // An SPF record that needs more than ten DNS lookups (RFC 7208 §4.6.4).
  'loops.example': { TXT: [`v=spf1 ${Array.from({ length: 12 }, (_, i) => `include:l${i}.loops.example`).join(' ')} -all`] },
  ...Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`l${i}.loops.example`, { TXT: ['v=spf1 -all'] }])),
};

function message(from: string, subject: string, extra = ''): string {
  return `From: Sender <${from}>\r\nTo: alice@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@${from.split('@')[1]}>\r\n${extra}\r\nHello.\r\n`;
}

async function signed(text: string, domain: string, selector = 'sel'): Promise<string> {
  const result = await dkimSign(text, { canonicalization: 'relaxed/relaxed', signatureData: [{ signingDomain: domain, selector, privateKey: PRIVATE_KEY }] } as Parameters<typeof dkimSign>[1]);
  assert.ok(result.signatures, 'the test message was signed');
  return result.signatures + text;
}

describe('inbound filtering', () => {
  let dns: TestDns;
  let server: TestServer;
  const smtpPort = () => server.smtpPort;

  before(async () => {
    dns = await startDns(ZONE);
    server = await startTestServer({
      smtp: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 0, error_delay: '0s' },
      dns: { servers: [dns.address], timeout: '1s' },
      filter: { subject_tag: '[SPAM]', deadline: '5s' },
    });
    await server.addUser('alice@example.test');
  });
  after(async () => {
    await server?.close();
    await dns?.close();
  });

  /** Sends one message; resolves with the reply to the end of DATA (or the first refusal). */
  async function send(from: string, text: string, options: { ip?: string; to?: string } = {}): Promise<string> {
    const client = await SmtpClient.connect(smtpPort(), options.ip ?? STRANGER);
    try {
      await client.hello('mta.sender.test');
      return await client.send(from, [options.to ?? 'alice@example.test'], text);
    } finally {
      client.close();
    }
  }

  /** The header section of alice's newest message, over POP3. */
  async function newestHeader(): Promise<string> {
    const pop = await Pop3Client.connect(server.pop3Port);
    await pop.line();
    await pop.login('alice@example.test', PASSWORD);
    const count = Number((await pop.command('STAT')).split(' ')[1]);
    const { lines } = await pop.multiline(`RETR ${count}`);
    await pop.command('QUIT');
    return lines.slice(0, lines.indexOf('')).join('\n');
  }

  test('a message signed by its domain from an allowed address passes, and arrives with our Authentication-Results', async () => {
    assert.match(await send('news@strict.example', await signed(message('news@strict.example', 'all good'), 'strict.example'), { ip: ALLOWED }), /^250 2\.0\.0/);
    const header = await newestHeader();
    assert.match(header, /^Authentication-Results: mail\.example\.test;/m);
    assert.match(header, /spf=pass/);
    assert.match(header, /dkim=pass/);
    assert.match(header, /dmarc=pass/);
    assert.match(header, /^Received-SPF: pass/m);
    assert.match(header, /^X-Spam-Flag: NO$/m);
    assert.match(header, /^Subject: all good$/m);
  });

  test('DMARC p=reject failing is refused at the end of DATA (550 5.7.1), and nothing is delivered', async () => {
    const before = await newestHeader();
    assert.match(await send('ceo@strict.example', message('ceo@strict.example', 'forged CEO')), /^550 5\.7\.1 Rejected by DMARC/);
    assert.equal(await newestHeader(), before);
  });

  test('a replayed message (a valid signature sent from another address) passes DKIM and so DMARC', async () => {
    const text = await signed(message('news@strict.example', 'replayed'), 'strict.example');
    assert.match(await send('news@strict.example', text, { ip: STRANGER }), /^250 2\.0\.0/);
    const header = await newestHeader();
    assert.match(header, /spf=fail/);
    assert.match(header, /dkim=pass/);
    assert.match(header, /dmarc=pass/);
  });

  test('a modified message fails DKIM; without SPF to align, DMARC refuses it', async () => {
    const text = (await signed(message('news@strict.example', 'modified'), 'strict.example')).replace('Hello.', 'Hello, send money.');
    assert.match(await send('news@strict.example', text, { ip: STRANGER }), /^550 5\.7\.1 Rejected by DMARC/);
    // From the allowed address, SPF aligns and DMARC passes; the broken signature shows.
    assert.match(await send('news@strict.example', text, { ip: ALLOWED }), /^250/);
    const header = await newestHeader();
    assert.match(header, /dkim=fail/);
    assert.match(header, /dmarc=pass/);
  });

  test('DMARC p=quarantine failing is delivered marked as spam, with the subject tag', async () => {
    assert.match(await send('shop@careful.example', message('shop@careful.example', 'cheap watches')), /^250/);
    const header = await newestHeader();
    assert.match(header, /dmarc=fail/);
    assert.match(header, /^X-Spam-Flag: YES$/m);
    assert.match(header, /^X-Spam-Status: Yes, score=\d+\.\d required=5\.0 tests=.*DMARC_QUARANTINE/m);
    assert.match(header, /^Subject: \[SPAM\] cheap watches$/m);
  });

  test("spam marks the sender put in the message are removed: only popgate's verdict is left for mail programs' rules", async () => {
    const forged = message('shop@careful.example', 'trust me', 'X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\nX-Spam: no\r\n');
    assert.match(await send('shop@careful.example', forged), /^250/);
    const header = await newestHeader();
    assert.deepEqual(header.match(/^X-Spam[-\w]*:.*$/gm), ['X-Spam-Flag: YES', header.match(/^X-Spam-Status: Yes.*$/m)![0]]);
  });

  test('a domain set to dmarc=mark gets the p=reject failure delivered and marked instead', async () => {
    await server.app.backends.domainSettings.set('example.test', 'dmarc', 'mark');
    try {
      await sleep(5100); // the filter remembers domain settings for five seconds
      assert.match(await send('ceo@strict.example', message('ceo@strict.example', 'forged but marked')), /^250/);
      const header = await newestHeader();
      assert.match(header, /^X-Spam-Flag: YES$/m);
      assert.match(header, /tests=.*DMARC_REJECT/m);
    } finally {
      await server.app.backends.domainSettings.set('example.test', 'dmarc', undefined);
    }
  });

  test('Authentication-Results claiming our authserv-id are removed; another receiver\'s are kept', async () => {
    const forged = 'Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=ceo@strict.example;\r\n dkim=pass; dmarc=pass\r\n';
    const theirs = 'Authentication-Results: mx.elsewhere.example; spf=pass\r\n';
    assert.match(await send('news@strict.example', forged + theirs + (await signed(message('news@strict.example', 'with forged results'), 'strict.example')), { ip: ALLOWED }), /^250/);
    const header = await newestHeader();
    assert.equal(header.match(/^Authentication-Results: mail\.example\.test;/gm)?.length, 1, 'only ours');
    assert.doesNotMatch(header, /smtp\.mailfrom=ceo@strict\.example/);
    assert.match(header, /^Authentication-Results: mx\.elsewhere\.example; spf=pass$/m);
  });

  test('a DNS failure is never a permanent refusal: the message is accepted with temperror', async () => {
    assert.match(await send('someone@broken.example', message('someone@broken.example', 'from a broken zone')), /^250/);
    const header = await newestHeader();
    assert.match(header, /spf=temperror/);
    assert.match(header, /tests=.*AUTH_TEMPERROR/m);
  });

  test('junk records, an unusable key and an SPF record over the lookup limit get defined verdicts, not a crash', async () => {
    assert.match(await send('a@junk.example', await signed(message('a@junk.example', 'junk records'), 'junk.example', 'bad')), /^250/);
    const junk = await newestHeader();
    assert.match(junk, /spf=(permerror|none|neutral)/);
    assert.match(junk, /dkim=(neutral|fail|policy|permerror)/);
    assert.match(await send('a@loops.example', message('a@loops.example', 'too many lookups')), /^250/);
    assert.match(await newestHeader(), /spf=permerror/);
  });

  test('a header section of several megabytes is checked within the deadline', async () => {
    const big = `X-Padding: ${'x'.repeat(900)}\r\n`.repeat(3000);
    const started = Date.now();
    assert.match(await send('news@strict.example', await signed(message('news@strict.example', 'huge header', big), 'strict.example'), { ip: ALLOWED }), /^250/);
    assert.ok(Date.now() - started < 15_000);
  });

  test('a POP-before-SMTP client is never refused by the filter; its mail still gets Authentication-Results', async () => {
    const pop = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.22' });
    await pop.line();
    assert.match(await pop.login('alice@example.test', PASSWORD), /^\+OK/);
    await pop.command('QUIT');
    assert.match(await send('alice@example.test', message('ceo@strict.example', 'from a customer'), { ip: '127.0.0.22' }), /^250/);
    assert.match(await newestHeader(), /dmarc=fail/);
  });
});

describe('inbound filtering: stricter and gentler settings', () => {
  let dns: TestDns;
  let server: TestServer;
  before(async () => {
    dns = await startDns(ZONE);
    server = await startTestServer({
      smtp: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 0, error_delay: '0s' },
      dns: { servers: [dns.address], timeout: '1s' },
      filter: { spf_fail: 'reject', temporary_errors: 'defer', pregreet_delay: '300ms' },
    });
    await server.addUser('alice@example.test');
  });
  after(async () => {
    await server?.close();
    await dns?.close();
  });

  async function greeted(ip: string): Promise<SmtpClient> {
    const client = await SmtpClient.connect(server.smtpPort, ip);
    assert.match(await client.reply(), /^220 /);
    await client.command('EHLO mta.sender.test');
    return client;
  }

  test('SPF -all failing without aligned DKIM is refused with 550 5.7.23 when spf_fail = "reject"', async () => {
    const client = await greeted(STRANGER);
    assert.match(await client.send('bulk@spfonly.example', ['alice@example.test'], message('bulk@spfonly.example', 'spf fail')), /^550 5\.7\.23 /);
    client.close();
  });

  test('a DNS failure is deferred with 451 when temporary_errors = "defer"', async () => {
    const client = await greeted(STRANGER);
    assert.match(await client.send('someone@broken.example', ['alice@example.test'], message('someone@broken.example', 'deferred')), /^451 4\.7\.0 /);
    client.close();
  });

  test('pregreet: a client that talks before the greeting is refused; one that waits is greeted', async () => {
    const rude = await SmtpClient.connect(server.smtpPort, '127.0.0.23');
    rude.socket.write('EHLO spambot.example\r\n');
    assert.match(await rude.reply(), /^554 5\.7\.1 Your mail server talked before our greeting/);
    rude.close();
    const patient = await greeted('127.0.0.24');
    assert.match(await patient.command('NOOP'), /^250/);
    patient.close();
  });
});
