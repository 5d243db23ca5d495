import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { after, before, describe, test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { dnsRecord, generateKey, type DkimAlgorithm } from '../src/dkim/keys.ts';
import { startDns, type TestDns } from './helpers/dns.ts';
import { until } from './helpers/outbound.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { startSink, type ReceivedMessage, type Sink } from './helpers/sink.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { sleep } from './helpers/wire.ts';

// The whole path a customer's message takes: log in over POP3, relay over SMTP from the same
// address to another provider, and the message reaches that provider's MX (found through
// DNS) with popgate's Received: trace naming the POP-before-SMTP user and a DKIM signature
// (RFC 6376) that the receiver verifies against the key published in DNS.

describe('POP3 login → SMTP relay → remote MX, traced and DKIM-signed', () => {
  let dns: TestDns;
  let sink: Sink;
  let server: TestServer;
  /** mailauth's DKIM lookups go over real DNS to the test zone, like a receiver's would. */
  let resolver: Resolver;

  before(async () => {
    dns = await startDns({
      'remote.example': { MX: [[10, 'mx.remote.example']] },
      'mx.remote.example': { A: ['127.0.0.2'] },
    });
    sink = await startSink({ host: '127.0.0.2' });
    server = await startTestServer({
      smtp: { listen: ['127.0.0.1:0'] },
      dns: { servers: [dns.address], timeout: '2s' },
      outbound: { enabled: true, port: sink.port, retry_schedule: ['300ms'], connect_timeout: '2s', command_timeout: '5s' },
    });
    resolver = new Resolver();
    resolver.setServers([dns.address]);
  });
  after(async () => {
    await server.close();
    await sink.close();
    await dns.close();
  });

  /** A key in dkim.keys_dir, published as TXT at <selector>._domainkey.<domain>. */
  function publishKey(domain: string, algorithm: DkimAlgorithm): string {
    const { keys_dir, selector } = server.app.config.dkim;
    const record = dnsRecord(generateKey(keys_dir, domain, selector, algorithm));
    assert.equal(record.name, `${selector}._domainkey.${domain}`);
    dns.zone[record.name] = { TXT: [record.value] };
    return selector;
  }

  /** POP3 login then QUIT, from `localAddress`: the grant POP before SMTP is about. */
  async function popLogin(user: string, localAddress = '127.0.0.1'): Promise<void> {
    const pop = await Pop3Client.connect(server.pop3Port, { localAddress });
    try {
      assert.match(await pop.line(), /^\+OK/);
      assert.match(await pop.login(user, PASSWORD), /^\+OK/);
      assert.match(await pop.command('QUIT'), /^\+OK/);
    } finally {
      pop.close();
    }
  }

  async function relay(from: string, to: string, message: string, localAddress = '127.0.0.1'): Promise<string> {
    const smtp = await SmtpClient.connect(server.smtpPort, localAddress);
    try {
      await smtp.hello('client.example');
      const reply = await smtp.send(from, [to], message);
      await smtp.command('QUIT');
      return reply;
    } finally {
      smtp.close();
    }
  }

  async function arrival(subject: string): Promise<ReceivedMessage> {
    return until(() => sink.messages.find((m) => m.data.toString('utf8').includes(`\r\nSubject: ${subject}\r\n`)), 10_000, `"${subject}" at the sink`);
  }

  async function verify(data: Buffer) {
    return dkimVerify(data, { resolver: (name, type) => resolver.resolve(name, type as 'TXT') as Promise<string[][]> });
  }

  test('alice logs in, relays to bob@remote.example, and the remote MX gets it traced and signed', { timeout: 30_000 }, async () => {
    await server.addUser('alice@example.test');
    const selector = publishKey('example.test', 'rsa');
    await popLogin('alice@example.test');

    const original =
      'From: Alice <alice@example.test>\r\n' +
      'To: Bob <bob@remote.example>\r\n' +
      'Subject: hello from popgate\r\n' +
      'Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n' +
      'Message-ID: <e2e.1@example.test>\r\n' +
      'MIME-Version: 1.0\r\n' +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      'Content-Transfer-Encoding: 8bit\r\n' +
      '\r\n' +
      'Hi Bob,\r\n' +
      '.a line that starts with a dot\r\n' +
      'Grüße aus dem Norden.\r\n' +
      '\r\n' +
      '-- \r\nAlice\r\n';
    assert.match(await relay('alice@example.test', 'bob@remote.example', original), /^250 2\.0\.0 OK: queued as \w+$/);

    const received = await arrival('hello from popgate');
    assert.equal(received.from, 'alice@example.test');
    assert.deepEqual(received.to, ['bob@remote.example']);
    assert.equal(received.clientHostname, 'mail.example.test', 'EHLO names popgate');

    const data = received.data.toString('utf8');
    // What the sink holds: the signature, popgate's trace, then the customer's bytes untouched.
    const signatureEnd = data.indexOf('\r\nReceived: ') + 2;
    const traceEnd = data.indexOf('From: Alice <alice@example.test>\r\n');
    const signature = data.slice(0, signatureEnd);
    const trace = data.slice(signatureEnd, traceEnd);
    assert.match(signature, /^DKIM-Signature: /, 'the signature is the first header');
    assert.match(signature.replace(/\r\n[ \t]+/g, ' '), new RegExp(`[; ]d=example\\.test;`), 'signed for the From: domain');
    assert.match(signature.replace(/\r\n[ \t]+/g, ' '), new RegExp(`[; ]s=${selector};`), 'with the configured selector');
    assert.match(signature.replace(/\r\n[ \t]+/g, ' '), /[; ]a=rsa-sha256;/);
    assert.match(
      trace,
      /^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mail\.example\.test \(popgate\) with ESMTP id \w+\r\n\t\(authorized by POP-before-SMTP login of alice@example\.test\)\r\n\tfor <bob@remote\.example>;\r\n\t.+\r\n$/,
    );
    assert.equal(data.slice(traceEnd), original, 'the message itself arrives byte for byte');

    // The receiver's check, on exactly the bytes the sink received.
    const result = await verify(received.data);
    const ours = result.results.find((r) => r.signingDomain === 'example.test');
    assert.ok(ours, 'mailauth finds the example.test signature');
    assert.equal(ours.selector, selector);
    assert.equal(ours.status.result, 'pass', `DKIM verifies: ${JSON.stringify(ours.status)}`);

    await until(async () => (await server.app.queue.list()).length === 0, 5000, 'the message leaves the queue');
  });

  test('without a POP3 login from its address, a client cannot relay: 554 and nothing reaches the remote MX', { timeout: 30_000 }, async () => {
    const before = sink.messages.length;
    const connections = sink.connections;
    // 127.0.0.3 never logged in (alice's grant above is for 127.0.0.1 only).
    const smtp = await SmtpClient.connect(server.smtpPort, '127.0.0.3');
    try {
      await smtp.hello('client.example');
      assert.match(await smtp.command('MAIL FROM:<alice@example.test>'), /^250 /);
      assert.match(await smtp.command('RCPT TO:<bob@remote.example>'), /^554 5\.7\.1 Relay access denied: log in with POP3 first/);
      assert.match(await smtp.command('DATA'), /^554 5\.5\.1 No valid recipients/);
      await smtp.command('QUIT');
    } finally {
      smtp.close();
    }
    assert.deepEqual(await server.app.queue.list(), [], 'nothing was queued');
    await sleep(700); // longer than the retry schedule: a queued message would have gone out
    assert.equal(sink.messages.length, before, 'nothing reached the sink');
    assert.equal(sink.connections, connections, 'popgate did not even connect');
  });

  test('an Ed25519 key (RFC 8463) for another domain signs its users\' mail, and the signature verifies', { timeout: 30_000 }, async () => {
    await server.addUser('carol@example.org');
    const selector = publishKey('example.org', 'ed25519');
    // Carol logs in and sends from an address of her own.
    await popLogin('carol@example.org', '127.0.0.4');
    const original = 'From: carol@example.org\r\nTo: dave@remote.example\r\nSubject: signed with ed25519\r\nMessage-ID: <e2e.2@example.org>\r\n\r\nShort and signed.\r\n';
    assert.match(await relay('carol@example.org', 'dave@remote.example', original, '127.0.0.4'), /^250 /);

    const received = await arrival('signed with ed25519');
    const data = received.data.toString('utf8');
    assert.match(data, /\(authorized by POP-before-SMTP login of carol@example\.org\)/);
    assert.ok(data.endsWith(`\r\n${original}`), 'the message itself arrives byte for byte after the headers popgate adds');
    const result = await verify(received.data);
    assert.equal(result.results.length, 1, 'one signature');
    const [ours] = result.results;
    assert.equal(ours.signingDomain, 'example.org');
    assert.equal(ours.selector, selector);
    assert.equal(ours.algo, 'ed25519-sha256');
    assert.equal(ours.status.result, 'pass', `DKIM verifies: ${JSON.stringify(ours.status)}`);
  });
});
