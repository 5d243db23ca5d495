import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startOutboundWorld, until, type OutboundWorld } from './helpers/outbound.ts';

// The outbound queue delivers relayed mail to other providers' MX hosts, found through DNS,
// and keeps it until every recipient has a final answer (RFC 5321 §5.1, §6.1).

const body = (subject: string) => `From: Alice <alice@example.test>\r\nTo: bob@remote.example\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.test>\r\n\r\nHello from popgate.\r\n`;

async function queueEmpty(world: OutboundWorld): Promise<boolean> {
  return (await world.server.app.queue.list()).length === 0;
}

describe('delivery through MX records', () => {
  let world: OutboundWorld;
  before(async () => {
    world = await startOutboundWorld({
      zone: {
        'remote.example': { MX: [[10, 'mx1.remote.example'], [20, 'mx2.remote.example']] },
        'mx1.remote.example': { A: ['127.0.0.2'] },
        'mx2.remote.example': { A: ['127.0.0.3'] },
        // mx1 of this domain has nobody listening: connection refused.
        'fallback.example': { MX: [[10, 'dead.fallback.example'], [20, 'mx2.remote.example']] },
        'dead.fallback.example': { A: ['127.0.0.4'] },
        'plain.example': { A: ['127.0.0.3'] },
      },
      sinks: [{ host: '127.0.0.2' }, { host: '127.0.0.3', starttls: false }],
    });
  });
  after(() => world.close());

  test('a relayed message reaches the preferred MX over STARTTLS and leaves the queue', async () => {
    await world.queue('alice@example.test', ['bob@remote.example'], body('first'));
    const [received] = await world.sinks[0].waitFor(1);
    assert.equal(received.from, 'alice@example.test');
    assert.deepEqual(received.to, ['bob@remote.example']);
    assert.equal(received.secure, true, 'opportunistic STARTTLS to a self-signed certificate');
    assert.equal(received.clientHostname, 'mail.example.test', 'EHLO names popgate');
    assert.match(received.data.toString(), /Subject: first\r\n/);
    await until(() => queueEmpty(world), 5000, 'empty queue');
  });

  test('the second MX takes the mail when the first refuses connections', async () => {
    await world.queue('alice@example.test', ['carol@fallback.example'], body('fallback'));
    const messages = await world.sinks[1].waitFor(1);
    assert.deepEqual(messages.at(-1)!.to, ['carol@fallback.example']);
    assert.equal(messages.at(-1)!.secure, false, 'plaintext where STARTTLS is not offered');
    await until(() => queueEmpty(world), 5000, 'empty queue');
  });

  test('a domain without MX records gets its mail at its own address (implicit MX)', async () => {
    const before = world.sinks[1].messages.length;
    await world.queue('alice@example.test', ['dave@plain.example'], body('implicit'));
    await world.sinks[1].waitFor(before + 1);
    assert.deepEqual(world.sinks[1].messages.at(-1)!.to, ['dave@plain.example']);
  });

  test('recipients at one domain share one transaction; several messages share one connection', async () => {
    const connections = world.sinks[0].connections;
    const count = world.sinks[0].messages.length;
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await world.queue('alice@example.test', ['x@remote.example', 'y@remote.example'], body(`batch ${i}`)));
    await world.sinks[0].waitFor(count + 4);
    for (const message of world.sinks[0].messages.slice(count)) assert.deepEqual(message.to, ['x@remote.example', 'y@remote.example']);
    assert.ok(world.sinks[0].connections - connections <= 4, `at most one connection per message (${world.sinks[0].connections - connections})`);
    await until(() => queueEmpty(world), 5000, 'empty queue');
  });

  test('a bare LF in a queued message goes out as CRLF: popgate never sends a bare LF', async () => {
    const count = world.sinks[0].messages.length;
    await world.queue('alice@example.test', ['bob@remote.example'], 'From: alice@example.test\nSubject: lf\n\nline one\nline two\r\n');
    const [message] = (await world.sinks[0].waitFor(count + 1)).slice(count);
    const text = message.data.toString('latin1');
    assert.doesNotMatch(text, /[^\r]\n/);
    assert.match(text, /line one\r\nline two\r\n/);
  });

  test('every attempt is recorded per recipient and visible in the index until the message leaves', async () => {
    world.sinks[0].behaviour.rcpt = (address) => (address === 'slow@remote.example' ? '451 4.2.0 Try again later' : undefined);
    try {
      const id = await world.queue('alice@example.test', ['slow@remote.example', 'fast@remote.example'], body('partial'));
      const queued = await until(async () => {
        const entry = await world.server.app.queue.get(id);
        return entry && entry.attempts >= 1 ? entry : undefined;
      });
      const states = Object.fromEntries(queued.recipients.map((r) => [r.address, r.state]));
      assert.deepEqual(states, { 'slow@remote.example': 'pending', 'fast@remote.example': 'delivered' });
      const slow = queued.recipients.find((r) => r.address === 'slow@remote.example')!;
      assert.equal(slow.status, '4.2.0');
      assert.match(slow.diagnostic!, /451 4\.2\.0 Try again later/);
      assert.equal(slow.remoteMta, 'mx1.remote.example');
      assert.match(queued.lastError!, /451/);
    } finally {
      world.sinks[0].behaviour.rcpt = undefined;
    }
    await until(() => queueEmpty(world), 5000, 'the retry delivers the rest');
  });
});

describe('temporary and permanent failures', () => {
  let world: OutboundWorld;
  before(async () => {
    world = await startOutboundWorld({
      zone: {
        'remote.example': { MX: [[10, 'mx1.remote.example']] },
        'mx1.remote.example': { A: ['127.0.0.2'] },
        'nullmx.example': { MX: [[0, '']] },
        'loop.example': { MX: [[10, 'mail.example.test']] },
        'broken.example': { servfail: true },
      },
      sinks: [{ host: '127.0.0.2' }],
    });
    await world.server.addUser('alice@example.test');
  });
  after(() => world.close());

  const inbox = async (address: string) => {
    const list = await world.server.app.mailstore.list(address);
    return Promise.all(list.map((m) => readFileSync(m.ref, 'utf8')));
  };

  test('4xx is retried on schedule and delivered when the remote side recovers', async () => {
    world.sinks[0].behaviour.rcpt = (address, attempt) => (address === 'later@remote.example' && attempt === 1 ? '450 4.2.1 Mailbox busy, try later' : undefined);
    const before = world.sinks[0].messages.length;
    await world.queue('alice@example.test', ['later@remote.example'], body('retry'));
    const messages = await world.sinks[0].waitFor(before + 1);
    assert.deepEqual(messages.at(-1)!.to, ['later@remote.example']);
    assert.equal(world.sinks[0].rcptAttempts.get('later@remote.example'), 2);
    assert.equal((await inbox('alice@example.test')).length, 0, 'no bounce for a temporary failure');
    world.sinks[0].behaviour.rcpt = undefined;
  });

  test('5xx bounces that recipient: an RFC 3464 report lands in the local sender\'s Maildir', async () => {
    world.sinks[0].behaviour.rcpt = (address) => (address === 'nobody@remote.example' ? '550 5.1.1 No such user here' : undefined);
    const before = world.sinks[0].messages.length;
    const id = await world.queue('alice@example.test', ['nobody@remote.example', 'bob@remote.example'], body('bounce me'));
    const [dsn] = await until(async () => {
      const mails = await inbox('alice@example.test');
      return mails.length > 0 ? mails : undefined;
    });
    assert.equal(world.sinks[0].messages.length, before + 1, 'the good recipient still got it');
    assert.match(dsn, /^Return-Path: <>\r\n/);
    assert.match(dsn, /From: Mail Delivery System <MAILER-DAEMON@mail\.example\.test>/);
    assert.match(dsn, /To: <alice@example\.test>/);
    assert.match(dsn, /Auto-Submitted: auto-replied/);
    assert.match(dsn, /Content-Type: multipart\/report; report-type=delivery-status;/);
    assert.match(dsn, /Content-Type: message\/delivery-status\r\n\r\nReporting-MTA: dns; mail\.example\.test\r\n/);
    assert.match(dsn, new RegExp(`X-Popgate-Queue-ID: ${id}`));
    assert.match(dsn, /Final-Recipient: rfc822; nobody@remote\.example\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; mx1\.remote\.example\r\nDiagnostic-Code: smtp; 550 5\.1\.1 No such user here/);
    assert.doesNotMatch(dsn, /Final-Recipient: rfc822; bob@remote\.example/, 'only the failed recipient is reported');
    assert.match(dsn, /Content-Type: message\/rfc822\r\n\r\nFrom: Alice <alice@example\.test>/, 'the original comes back');
    assert.match(dsn, /<nobody@remote\.example>: 550 5\.1\.1 No such user here/, 'a person can read why');
    await until(async () => (await world.server.app.queue.list()).length === 0, 5000, 'empty queue');
    world.sinks[0].behaviour.rcpt = undefined;
  });

  test('a null MX (RFC 7505) bounces at once with 5.1.10, without connecting anywhere', async () => {
    const before = (await inbox('alice@example.test')).length;
    const connections = world.sinks[0].connections;
    await world.queue('alice@example.test', ['someone@nullmx.example'], body('null mx'));
    const mails = await until(async () => {
      const all = await inbox('alice@example.test');
      return all.length > before ? all : undefined;
    });
    const dsn = mails.find((m) => m.includes('someone@nullmx.example'))!;
    assert.match(dsn, /Status: 5\.1\.10/);
    assert.match(dsn, /Diagnostic-Code: X-Popgate; Domain nullmx\.example accepts no mail \(null MX, RFC 7505\)/);
    assert.equal(world.sinks[0].connections, connections);
  });

  test('an MX that points back at this server bounces as a loop (5.4.6) instead of looping', async () => {
    const before = (await inbox('alice@example.test')).length;
    await world.queue('alice@example.test', ['x@loop.example'], body('loop'));
    const mails = await until(async () => {
      const all = await inbox('alice@example.test');
      return all.length > before ? all : undefined;
    });
    assert.match(mails.find((m) => m.includes('x@loop.example'))!, /Status: 5\.4\.6[\s\S]*loops back to myself/);
  });

  test('a domain that does not exist bounces with 5.1.2; a DNS failure is only a delay', async () => {
    const before = (await inbox('alice@example.test')).length;
    const broken = await world.queue('alice@example.test', ['y@broken.example'], body('servfail'));
    await world.queue('alice@example.test', ['y@no-such-domain.example'], body('nxdomain'));
    const mails = await until(async () => {
      const all = await inbox('alice@example.test');
      return all.length > before ? all : undefined;
    });
    assert.match(mails.find((m) => m.includes('y@no-such-domain.example'))!, /Status: 5\.1\.2/);
    const waiting = await until(async () => {
      const entry = await world.server.app.queue.get(broken);
      return entry && entry.attempts >= 1 ? entry : undefined;
    });
    assert.equal(waiting.recipients[0].state, 'pending');
    assert.equal(waiting.recipients[0].status, '4.4.3');
    assert.equal(mails.filter((m) => m.includes('y@broken.example')).length, 0);
    await world.server.app.queue.remove(broken);
  });

  test('mail with a null sender that cannot be delivered is dropped, never bounced (RFC 5321 §4.5.5)', async () => {
    world.sinks[0].behaviour.rcpt = () => '550 5.1.1 No such user';
    const before = (await inbox('alice@example.test')).length;
    const id = await world.queue('', ['gone@remote.example'], body('double bounce'));
    await until(async () => !(await world.server.app.queue.get(id)), 5000, 'the message leaves the queue');
    assert.equal((await inbox('alice@example.test')).length, before);
    world.sinks[0].behaviour.rcpt = undefined;
  });
});
