import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { capturingLogger, startOutboundWorld, until, type OutboundWorld } from './helpers/outbound.ts';
import { startSink, type Sink } from './helpers/sink.ts';

// Next hops a provider configures: a transport map entry per domain (used before any MX
// lookup), a relayhost for everything else (with a login over TLS), and the TLS policy.

const body = (subject: string) => `From: alice@example.test\r\nTo: someone@elsewhere.example\r\nSubject: ${subject}\r\n\r\nHi.\r\n`;

describe('transport map and relayhost', () => {
  let world: OutboundWorld;
  let partner: Sink;
  const captured = capturingLogger();
  before(async () => {
    partner = await startSink({ host: '127.0.0.5' });
    world = await startOutboundWorld({
      // Were the zone used, both domains would go to 127.0.0.9, where nobody listens.
      zone: {
        'partner.example': { MX: [[10, 'mx.partner.example']] },
        'mx.partner.example': { A: ['127.0.0.9'] },
        'elsewhere.example': { MX: [[10, 'mx.elsewhere.example']] },
        'mx.elsewhere.example': { A: ['127.0.0.9'] },
      },
      sinks: [{ host: '127.0.0.2', auth: { user: 'relay-user', pass: 'relay secret' } }],
      outbound: (sinks) => ({
        transport: { 'partner.example': `127.0.0.5:${partner.port}` },
        relayhost: `127.0.0.2:${sinks[0].port}`,
        relayhost_user: 'relay-user',
        relayhost_password: 'relay secret',
      }),
      log: captured.log,
    });
  });
  after(async () => {
    await world.close();
    await partner.close();
  });

  test('a domain in the transport map goes to its configured host, without an MX lookup', async () => {
    await world.queue('alice@example.test', ['p@partner.example'], body('transport'));
    const [message] = await partner.waitFor(1);
    assert.deepEqual(message.to, ['p@partner.example']);
    assert.ok(!world.dns.queries.includes('MX partner.example'), 'no MX lookup for a transport-mapped domain');
  });

  test('everything else goes through the relayhost, logged in over STARTTLS', async () => {
    await world.queue('alice@example.test', ['someone@elsewhere.example', 'other@third.example'], body('relayhost'));
    const messages = await world.sinks[0].waitFor(2);
    assert.deepEqual(messages.map((m) => m.to).flat().sort(), ['other@third.example', 'someone@elsewhere.example']);
    for (const message of messages) {
      assert.equal(message.user, 'relay-user');
      assert.equal(message.secure, true);
    }
    assert.ok(!world.dns.queries.some((q) => q.startsWith('MX ')), 'no MX lookups with a relayhost');
  });

  test('one log line per attempt names the queue id, recipient, host, IP, TLS, reply and outcome', async () => {
    const id = await world.queue('alice@example.test', ['logged@partner.example'], body('log line'));
    const line = await until(() => captured.lines.find((l) => l.event === 'delivery' && l.queueId === id));
    assert.equal(line.recipient, 'logged@partner.example');
    assert.equal(line.host, '127.0.0.5');
    assert.equal(line.ip, '127.0.0.5');
    assert.equal(line.tls, true);
    assert.equal(line.outcome, 'delivered');
    assert.match(String(line.reply), /^250 /);
    assert.equal(line.attempt, 1);
  });
});

describe('relayhost login that fails, and required TLS without STARTTLS', () => {
  let world: OutboundWorld;
  before(async () => {
    world = await startOutboundWorld({
      zone: { 'plain.example': { MX: [[10, 'mx.plain.example']] }, 'mx.plain.example': { A: ['127.0.0.3'] } },
      sinks: [{ host: '127.0.0.3', starttls: false }],
      outbound: { tls: 'required' },
    });
  });
  after(() => world.close());

  test('with outbound.tls = "required", a host without STARTTLS gets nothing and the mail waits', async () => {
    const id = await world.queue('alice@example.test', ['x@plain.example'], body('must be encrypted'));
    const entry = await until(async () => {
      const queued = await world.server.app.queue.get(id);
      return queued && queued.attempts >= 1 ? queued : undefined;
    });
    assert.equal(entry.recipients[0].state, 'pending');
    assert.match(entry.recipients[0].diagnostic!, /STARTTLS/i);
    assert.equal(world.sinks[0].messages.length, 0);
  });
});

describe('a relayhost that refuses the login', () => {
  let world: OutboundWorld;
  before(async () => {
    world = await startOutboundWorld({
      zone: {},
      sinks: [{ host: '127.0.0.2', auth: { user: 'relay-user', pass: 'right' } }],
      outbound: (sinks) => ({ relayhost: `127.0.0.2:${sinks[0].port}`, relayhost_user: 'relay-user', relayhost_password: 'wrong' }),
    });
  });
  after(() => world.close());

  test('keeps the mail queued (a wrong password is the operator\'s to fix, not the sender\'s fault)', async () => {
    const id = await world.queue('alice@example.test', ['x@anywhere.example'], body('auth fails'));
    const entry = await until(async () => {
      const queued = await world.server.app.queue.get(id);
      return queued && queued.attempts >= 1 ? queued : undefined;
    });
    assert.equal(entry.recipients[0].state, 'pending');
    assert.match(entry.recipients[0].diagnostic!, /535|auth/i);
  });
});
