import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync, unlinkSync } from 'node:fs';
import { generateKey } from '../src/dkim/keys.ts';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startOutboundWorld, until, type OutboundWorld } from './helpers/outbound.ts';

// When the queue tries again, when it warns, when it gives up, and how it shares connections.

const body = (subject: string) => `From: alice@example.test\r\nTo: bob@remote.example\r\nSubject: ${subject}\r\n\r\nHi.\r\n`;
const zone = { 'remote.example': { MX: [[10, 'mx.remote.example']] as [number, string][] }, 'mx.remote.example': { A: ['127.0.0.2'] } };

async function inbox(world: OutboundWorld, address: string): Promise<string[]> {
  const list = await world.server.app.mailstore.list(address);
  return list.map((m) => readFileSync(m.ref, 'utf8'));
}

describe('delay warnings and giving up', () => {
  let world: OutboundWorld;
  before(async () => {
    world = await startOutboundWorld({
      zone,
      sinks: [{ host: '127.0.0.2', rcpt: () => '451 4.3.2 System not accepting network messages' }],
      outbound: { retry_schedule: ['100ms', '200ms'], delay_warning: '300ms', max_lifetime: '3s' },
    });
    await world.server.addUser('alice@example.test');
  });
  after(() => world.close());

  test('the sender is warned once while the queue keeps trying, then told it gave up', async () => {
    const id = await world.queue('alice@example.test', ['bob@remote.example'], body('stubborn'));
    const warning = (await until(async () => (await inbox(world, 'alice@example.test')).find((m) => m.includes('Action: delayed')), 5000, 'delay warning'))!;
    assert.match(warning, /Subject: Delayed Mail \(still being retried\)/);
    assert.match(warning, /Status: 4\.3\.2/);
    assert.match(warning, /Will-Retry-Until: /);
    assert.match(warning, /Content-Type: message\/rfc822/);
    const failure = await until(async () => (await inbox(world, 'alice@example.test')).find((m) => m.includes('Action: failed')), 10000, 'final bounce');
    assert.match(failure, /Subject: Undelivered Mail Returned to Sender/);
    assert.match(failure, /Status: 4\.3\.2/, 'the last temporary status, now final');
    assert.match(failure, /gave up after [\d.]+ days: 451 4\.3\.2 System not accepting network messages/);
    const all = await inbox(world, 'alice@example.test');
    assert.equal(all.filter((m) => m.includes('Action: delayed')).length, 1, 'one warning only');
    assert.equal(await world.server.app.queue.get(id), undefined);
    assert.ok(world.sinks[0].rcptAttempts.get('bob@remote.example')! >= 3, 'several attempts were made');
  });
});

describe('connections and concurrency', () => {
  let world: OutboundWorld;
  let release: (() => void) | undefined;
  before(async () => {
    world = await startOutboundWorld({ zone, sinks: [{ host: '127.0.0.2' }], outbound: { max_connections_per_domain: 1, max_messages_per_connection: 3 } });
  });
  after(() => world.close());

  test('messages for one destination follow each other over one connection, up to the per-connection limit', async () => {
    let first = true;
    world.sinks[0].behaviour.hold = () => (first ? ((first = false), new Promise<void>((resolve) => (release = resolve))) : Promise.resolve());
    for (let i = 0; i < 6; i++) await world.queue('alice@example.test', [`r${i}@remote.example`], body(`reuse ${i}`));
    // The first DATA answer waits until all six are queued, so none can miss the connection.
    await until(() => release !== undefined);
    release!();
    await world.sinks[0].waitFor(6);
    assert.equal(world.sinks[0].connections, 2, '6 messages at 3 per connection, one connection at a time');
  });
});

describe('DKIM key that cannot sign', () => {
  let world: OutboundWorld;
  before(async () => {
    world = await startOutboundWorld({ zone, sinks: [{ host: '127.0.0.2' }] });
  });
  after(() => world.close());

  test('keeps the message queued rather than sending it unsigned, and sends it once the key is fixed', async () => {
    const keysDir = world.server.app.config.dkim.keys_dir;
    mkdirSync(join(keysDir, 'example.test'), { recursive: true });
    const path = join(keysDir, 'example.test', `${world.server.app.config.dkim.selector}.pem`);
    writeFileSync(path, '-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n');
    const id = await world.queue('alice@example.test', ['bob@remote.example'], body('signed or nothing'), 'alice@example.test', 'example.test');
    const entry = await until(async () => {
      const queued = await world.server.app.queue.get(id);
      return queued && queued.attempts >= 1 ? queued : undefined;
    });
    assert.equal(entry.recipients[0].state, 'pending');
    assert.match(entry.recipients[0].diagnostic!, /DKIM signing failed/);
    assert.equal(world.sinks[0].messages.length, 0);

    unlinkSync(path);
    generateKey(keysDir, 'example.test', world.server.app.config.dkim.selector, 'ed25519');
    await world.server.app.queue.retryNow(id, Date.now());
    world.server.app.delivery.wake();
    const [message] = await world.sinks[0].waitFor(1, 15_000);
    assert.match(message.data.toString(), /^DKIM-Signature: [^]*d=example\.test/);
  });
});

describe('stopping', () => {
  let world: OutboundWorld;
  let release: (() => void) | undefined;
  before(async () => {
    world = await startOutboundWorld({ zone, sinks: [{ host: '127.0.0.2' }] });
  });
  after(async () => {
    release?.();
    await world.close();
  });

  test('a stop releases the leases of what was being delivered: due at once, for another node or the next start', async () => {
    world.sinks[0].behaviour.hold = () => new Promise<void>((resolve) => (release = resolve));
    const id = await world.queue('alice@example.test', ['bob@remote.example'], body('interrupted'));
    await until(() => release !== undefined, 10_000, 'DATA held by the next hop');
    const leased = await world.server.app.queue.get(id);
    assert.ok(leased?.leaseOwner, 'leased while its DATA answer is awaited');
    assert.ok(leased.nextAttemptAt > Date.now() + 60_000, 'not due while leased');
    await world.server.app.delivery.stop(100);
    const stopped = await world.server.app.queue.get(id);
    assert.ok(stopped, 'still queued: its DATA was never answered');
    assert.equal(stopped.leaseOwner, undefined, 'no longer leased');
    assert.ok(stopped.nextAttemptAt <= Date.now(), 'due now');
  });
});
