import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Srs } from '../src/srs/srs.ts';
import { startOutboundWorld, until, type OutboundWorld } from './helpers/outbound.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// The Sender Rewriting Scheme: addresses exactly as postsrsd writes them (the vectors below
// were made by postsrsd 1.10 with the same secret and time), and over real SMTP: mail that a
// user's forwarding rule or an alias sends to another provider leaves with an SRS sender; that
// provider's bounce to the SRS address comes back to the original sender; a forged or expired
// SRS address is refused at RCPT; a message that comes back round is not forwarded again.

const DAY = 86_400_000;

describe('SRS addresses', () => {
  const srs = new Srs({ secret: 'popgate-test-secret-0123456789', domain: 'srs.example.net', maxAgeDays: 21 });
  const now = 1_796_416_979_000;

  test('SRS0 and SRS1 are written as postsrsd writes them', () => {
    assert.equal(srs.forward('bob@origin.example', now), 'SRS0=lhkw=JX=origin.example=bob@srs.example.net');
    assert.equal(srs.forward('SRS0=abcd=AB=origin.example=bob@fwd1.example', now), 'SRS1=XfvV=fwd1.example==abcd=AB=origin.example=bob@srs.example.net');
    // Forwarded a third time: the first forwarder and its SRS0 part are kept, signed by us.
    assert.equal(srs.forward('SRS1=wxyz=fwd1.example==abcd=AB=origin.example=bob@fwd2.example', now), 'SRS1=XfvV=fwd1.example==abcd=AB=origin.example=bob@srs.example.net');
    assert.equal(srs.forward('carol@srs.example.net', now), 'carol@srs.example.net', 'our own domain is not rewritten');
  });

  test('reversed: SRS0 to the original sender, SRS1 to the first forwarder; case does not matter', () => {
    assert.deepEqual(srs.reverse('SRS0=lhkw=JX=origin.example=bob', now), { ok: true, address: 'bob@origin.example' });
    assert.deepEqual(srs.reverse('srs0=LHKW=jx=origin.example=bob', now), { ok: true, address: 'bob@origin.example' });
    assert.deepEqual(srs.reverse('SRS1=XfvV=fwd1.example==abcd=AB=origin.example=bob', now), { ok: true, address: 'SRS0=abcd=AB=origin.example=bob@fwd1.example' });
    const local = srs.forward('odd=local+part@origin.example', now).split('@')[0];
    assert.deepEqual(srs.reverse(local, now), { ok: true, address: 'odd=local+part@origin.example' });
  });

  test('a wrong hash, a changed field, a malformed or overlong address is refused', () => {
    assert.deepEqual(srs.reverse('SRS0=abcd=JX=origin.example=bob', now), { ok: false, problem: 'hash' });
    assert.deepEqual(srs.reverse('SRS0=lhkw=JX=origin.example=mallory', now), { ok: false, problem: 'hash' });
    assert.deepEqual(srs.reverse('SRS1=XXXX=fwd1.example==abcd=AB=origin.example=bob', now), { ok: false, problem: 'hash' });
    assert.deepEqual(srs.reverse('SRS0=lhkw', now), { ok: false, problem: 'syntax' });
    assert.deepEqual(srs.reverse(`SRS0=lhkw=JX=origin.example=${'b'.repeat(300)}`, now), { ok: false, problem: 'syntax' });
    const other = new Srs({ secret: 'another-secret-of-another-server', domain: 'srs.example.net', maxAgeDays: 21 });
    assert.deepEqual(other.reverse('SRS0=lhkw=JX=origin.example=bob', now), { ok: false, problem: 'hash' });
  });

  test('time stamps: valid for max_age days, refused after, across the 1024-day wrap', () => {
    const local = srs.forward('bob@origin.example', now).split('@')[0];
    assert.equal(srs.reverse(local, now + 21 * DAY).ok, true);
    assert.deepEqual(srs.reverse(local, now + 22 * DAY), { ok: false, problem: 'expired' });
    // Written on day 1023 of a cycle, read on day 3 of the next.
    const lastDay = (Math.floor(now / DAY / 1024) * 1024 + 1023) * DAY;
    const wrapped = srs.forward('bob@origin.example', lastDay).split('@')[0];
    assert.equal(srs.reverse(wrapped, lastDay + 4 * DAY).ok, true);
  });

  test('a short secret is refused', () => {
    assert.throws(() => new Srs({ secret: 'short', domain: 'srs.example.net', maxAgeDays: 21 }), /at least 16 characters/);
  });
});

describe('forwarding with SRS over SMTP', () => {
  let world: OutboundWorld;
  let friend: OutboundWorld['sinks'][number];
  let origin: OutboundWorld['sinks'][number];

  before(async () => {
    world = await startOutboundWorld({
      zone: {
        'remote.example': { MX: [[10, 'mx.remote.example']] },
        'mx.remote.example': { A: ['127.0.0.2'] },
        'origin.example': { MX: [[10, 'mx.origin.example']] },
        'mx.origin.example': { A: ['127.0.0.3'] },
      },
      sinks: [{ host: '127.0.0.2' }, { host: '127.0.0.3' }],
      config: { smtp: { listen: ['127.0.0.1:0'] }, filter: { enabled: false } },
    });
    [friend, origin] = world.sinks;
    const { server } = world;
    await server.addUser('alice@example.test');
    await server.addUser('keeper@example.test');
    await server.app.backends.forwarding.set('alice@example.test', { targets: ['friend@remote.example'], keep: false });
    await server.app.backends.forwarding.set('keeper@example.test', { targets: ['friend@remote.example'], keep: true });
    await server.app.accounts.addAlias('info@example.test', ['friend@remote.example']);
  });
  after(() => world.close());

  const letter = (to: string, extra = '') => `From: <bob@origin.example>\r\nTo: <${to}>\r\nSubject: hello\r\nMessage-ID: <m1@origin.example>\r\n${extra}\r\nHi.\r\n`;

  async function send(from: string, to: string[], message: string): Promise<string> {
    const client = await SmtpClient.connect(world.server.smtpPort);
    try {
      await client.hello('mx.origin.example');
      return await client.send(from, to, message);
    } finally {
      client.close();
    }
  }

  test('a forwarding rule sends the mail on with an SRS sender, and the bounce returns to the original sender', async () => {
    assert.match(await send('bob@origin.example', ['alice@example.test'], letter('alice@example.test')), /^250/);
    const [forwarded] = await friend.waitFor(1);
    assert.match(forwarded.from, /^SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=origin\.example=bob@mail\.example\.test$/);
    assert.deepEqual(forwarded.to, ['friend@remote.example']);
    assert.match(forwarded.data.toString(), /^Delivered-To: alice@example\.test\r\n/m);
    assert.equal((await world.server.app.mailstore.list('alice@example.test')).length, 0, 'no copy kept');

    // remote.example cannot deliver it after all: its bounce goes to the SRS address, here.
    const bounce = 'From: MAILER-DAEMON@mx.remote.example\r\nTo: <' + forwarded.from + '>\r\nSubject: Undelivered Mail\r\nAuto-Submitted: auto-replied\r\n\r\nfriend is gone.\r\n';
    assert.match(await send('', [forwarded.from], bounce), /^250/);
    const [returned] = await origin.waitFor(1);
    assert.equal(returned.from, '', 'a bounce keeps the null sender');
    assert.deepEqual(returned.to, ['bob@origin.example']);
    assert.match(returned.data.toString(), /friend is gone/);
  });

  test('an alias to a remote address is rewritten the same way; a kept copy stays in the mailbox', async () => {
    const before = friend.messages.length;
    assert.match(await send('bob@origin.example', ['info@example.test', 'keeper@example.test'], letter('info@example.test')), /^250/);
    const messages = await friend.waitFor(before + 2);
    for (const message of messages.slice(before)) assert.match(message.from, /^SRS0=.*=origin\.example=bob@mail\.example\.test$/);
    const byForwarder = messages.slice(before).map((m) => /^Delivered-To: (.*)\r$/m.exec(m.data.toString())?.[1]).sort();
    assert.deepEqual(byForwarder, ['info@example.test', 'keeper@example.test']);
    assert.equal((await world.server.app.mailstore.list('keeper@example.test')).length, 1);
  });

  test('a forged or expired SRS address is refused at RCPT, and nothing is sent', async () => {
    const secret = readFileSync(join(world.server.dir, 'srs.secret'), 'utf8').trim();
    const ours = new Srs({ secret, domain: 'mail.example.test', maxAgeDays: 21 });
    const forger = new Srs({ secret: 'the-forger-does-not-know-the-key', domain: 'mail.example.test', maxAgeDays: 21 });
    const client = await SmtpClient.connect(world.server.smtpPort);
    try {
      await client.hello();
      assert.match(await client.command('MAIL FROM:<>'), /^250/);
      assert.match(await client.command(`RCPT TO:<${forger.forward('victim@origin.example')}>`), /^550 5\.7\.1 .*not a bounce address of ours \(bad signature\)/);
      assert.match(await client.command(`RCPT TO:<${ours.forward('victim@origin.example', Date.now() - 30 * DAY)}>`), /^550 5\.7\.1 .*expired bounce address/);
      assert.match(await client.command('RCPT TO:<SRS0=nonsense@mail.example.test>'), /^550 5\.7\.1 /);
      assert.match(await client.command(`RCPT TO:<${ours.forward('victim@origin.example')}>`), /^250/, 'a fresh one of ours is taken');
    } finally {
      client.close();
    }
  });

  test('a forwarded message that comes back round is not forwarded again', async () => {
    const before = friend.messages.length;
    // Forwarded before by alice (remote.example forwarded it back): refused as a loop.
    assert.match(await send('bob@origin.example', ['alice@example.test'], letter('alice@example.test', 'Delivered-To: alice@example.test\r\n')), /^554 5\.4\.6 Mail forwarding loop for <alice@example\.test>/);
    // keeper keeps a copy: that is delivered, the loop is reported to the sender.
    assert.match(await send('bob@origin.example', ['keeper@example.test'], letter('keeper@example.test', 'Delivered-To: keeper@example.test\r\n')), /^250/);
    const report = await until(() => origin.messages.find((m) => /5\.4\.6/.test(m.data.toString())), 10_000, 'the loop report');
    assert.deepEqual(report.to, ['bob@origin.example']);
    assert.equal(friend.messages.length, before, 'nothing forwarded');
    assert.equal((await world.server.app.mailstore.list('keeper@example.test')).length, 2);
  });
});
