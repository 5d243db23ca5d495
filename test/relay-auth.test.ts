import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { openDatabase } from '../src/sqlite/open.ts';
import { silentLogger } from '../src/log/logger.ts';
import { normalizeIp } from '../src/net/ip.ts';
import { grantKey } from '../src/relay-auth/key.ts';
import { PopBeforeSmtp, type PopBeforeSmtpSettings } from '../src/relay-auth/pop-before-smtp.ts';
import { SqliteRelayAuthStore } from '../src/sqlite/relay-grants.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { MAIN, NODE } from './helpers/process.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

const run = promisify(execFile);
const MINUTE = 60_000;

describe('grant keys', () => {
  test('IPv4-mapped IPv6 is the IPv4 client', () => {
    assert.equal(normalizeIp('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(normalizeIp('::FFFF:192.0.2.7'), '192.0.2.7');
  });
  test('exact addresses by default, networks with a prefix', () => {
    const exact = { ipv4: 32, ipv6: 128 };
    assert.equal(grantKey('192.0.2.7', exact), '192.0.2.7');
    assert.equal(grantKey('192.0.2.7', { ipv4: 24, ipv6: 128 }), '192.0.2.0/24');
    assert.equal(grantKey('2001:DB8:0:0:1:0:0:7', exact), '2001:db8::1:0:0:7');
    assert.equal(grantKey('2001:db8:1:2:a:b:c:d', { ipv4: 32, ipv6: 64 }), '2001:db8:1:2::/64');
    assert.equal(grantKey('2001:db8:1:2:ffff:1:2:3', { ipv4: 32, ipv6: 64 }), '2001:db8:1:2::/64', 'privacy addresses share a /64');
    assert.equal(grantKey('::1', exact), '::1');
    assert.equal(grantKey('2001:db8:1:2:a:b:c:d', { ipv4: 32, ipv6: 56 }), '2001:db8:1::/56');
  });
});

describe('POP-before-SMTP grants', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-relay-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let clock = 1_000_000;
  const settings = (extra: Partial<PopBeforeSmtpSettings> = {}): PopBeforeSmtpSettings => ({
    windowMs: 10 * MINUTE,
    mode: 'sliding',
    prefixes: { ipv4: 32, ipv6: 128 },
    neverGrant: ['100.64.0.0/10'],
    maxUsersPerKey: 0,
    ...extra,
  });
  const policy = (name: string, extra?: Partial<PopBeforeSmtpSettings>) =>
    new PopBeforeSmtp(new SqliteRelayAuthStore(openDatabase(join(dir, name))), settings(extra), silentLogger(), () => clock);

  test('a grant covers its address for the window, judged at lookup time', async () => {
    const pbs = policy('window');
    await pbs.onLogin({ ip: '192.0.2.7', user: 'alice@example.test' });
    assert.deepEqual((await pbs.authorization('192.0.2.7'))?.users, ['alice@example.test']);
    assert.equal(await pbs.authorization('192.0.2.8'), undefined, 'a neighbour address has nothing');
    clock += 10 * MINUTE - 1;
    assert.ok(await pbs.authorization('192.0.2.7'));
    clock += 1;
    assert.equal(await pbs.authorization('192.0.2.7'), undefined, 'expired exactly at the end of the window, no sweep needed');
  });

  test('sliding mode renews on each login; fixed mode keeps the first expiry', async () => {
    const sliding = policy('sliding');
    const fixed = policy('fixed', { mode: 'fixed' });
    const start = clock;
    await sliding.onLogin({ ip: '192.0.2.1', user: 'a@example.test' });
    await fixed.onLogin({ ip: '192.0.2.1', user: 'a@example.test' });
    clock += 5 * MINUTE;
    await sliding.onLogin({ ip: '192.0.2.1', user: 'a@example.test' });
    await fixed.onLogin({ ip: '192.0.2.1', user: 'a@example.test' });
    assert.equal((await sliding.authorization('192.0.2.1'))!.expiresAt, clock + 10 * MINUTE);
    assert.equal((await fixed.authorization('192.0.2.1'))!.expiresAt, start + 10 * MINUTE);
    clock += 6 * MINUTE;
    assert.equal(await fixed.authorization('192.0.2.1'), undefined);
    await fixed.onLogin({ ip: '192.0.2.1', user: 'a@example.test' });
    assert.equal((await fixed.authorization('192.0.2.1'))!.expiresAt, clock + 10 * MINUTE, 'a login after expiry starts a new window');
  });

  test('grants survive a restart (a new store on the same file)', async () => {
    await policy('restart').onLogin({ ip: '2001:db8::5', user: 'b@example.test' });
    const reopened = policy('restart');
    assert.deepEqual((await reopened.authorization('2001:db8::5'))?.users, ['b@example.test']);
  });

  test('never_grant networks get no grant; the cap on users per address holds', async () => {
    const pbs = policy('limits', { maxUsersPerKey: 2 });
    assert.equal(await pbs.onLogin({ ip: '100.64.1.2', user: 'cgnat@example.test' }), undefined);
    assert.equal(await pbs.authorization('100.64.1.2'), undefined);
    assert.ok(await pbs.onLogin({ ip: '192.0.2.9', user: 'one@example.test' }));
    assert.ok(await pbs.onLogin({ ip: '192.0.2.9', user: 'two@example.test' }));
    assert.equal(await pbs.onLogin({ ip: '192.0.2.9', user: 'three@example.test' }), undefined);
    assert.ok(await pbs.onLogin({ ip: '192.0.2.9', user: 'one@example.test' }), 'a holder may renew');
    assert.deepEqual(new Set((await pbs.authorization('192.0.2.9'))!.users), new Set(['one@example.test', 'two@example.test']));
  });

  test('IPv6 prefix grouping: a /64 grant covers the next privacy address', async () => {
    const pbs = policy('v6', { prefixes: { ipv4: 32, ipv6: 64 } });
    await pbs.onLogin({ ip: '2001:db8:1:2:aaaa::1', user: 'v6@example.test' });
    assert.ok(await pbs.authorization('2001:db8:1:2:bbbb::2'));
    assert.equal(await pbs.authorization('2001:db8:1:3::1'), undefined);
  });

  test('revoke by address or by key, and sweep only removes dead rows', async () => {
    const pbs = policy('revoke');
    await pbs.onLogin({ ip: '192.0.2.20', user: 'r@example.test' });
    await pbs.onLogin({ ip: '192.0.2.21', user: 'r@example.test' });
    assert.equal(await pbs.revoke('192.0.2.20'), 1);
    assert.equal(await pbs.authorization('192.0.2.20'), undefined);
    assert.equal(await pbs.sweep(), 0);
    clock += 11 * MINUTE;
    assert.ok((await pbs.sweep()) >= 1);
    assert.equal((await pbs.list()).length, 0);
  });
});

describe('POP3 logins grant relay before "+OK"', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ pop_before_smtp: { window: '10m' } });
    await server.addUser('pbs@example.test');
  });
  after(() => server.close());

  test('the grant exists the moment "+OK" arrives, for that address only', async () => {
    const client = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.1' });
    await client.line();
    assert.equal(await server.app.popBeforeSmtp.authorization('127.0.0.1'), undefined);
    assert.match(await client.login('pbs@example.test', PASSWORD), /^\+OK Logged in/);
    // No sleep: the grant was written before the reply was sent.
    assert.deepEqual((await server.app.popBeforeSmtp.authorization('127.0.0.1'))?.users, ['pbs@example.test']);
    assert.equal(await server.app.popBeforeSmtp.authorization('127.0.0.2'), undefined);
    await client.command('QUIT');
  });

  test('a failed login grants nothing', async () => {
    const client = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.3' });
    await client.line();
    assert.match(await client.login('pbs@example.test', 'wrong'), /^-ERR/);
    assert.match(await client.login('nobody@example.test', PASSWORD), /^-ERR/);
    assert.equal(await server.app.popBeforeSmtp.authorization('127.0.0.3'), undefined);
    client.close();
  });

  test('a login refused with [IN-USE] grants nothing', async () => {
    const first = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.4' });
    await first.line();
    await first.login('pbs@example.test', PASSWORD);
    const second = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.5' });
    await second.line();
    assert.match(await second.login('pbs@example.test', PASSWORD), /^-ERR \[IN-USE\]/);
    assert.equal(await server.app.popBeforeSmtp.authorization('127.0.0.5'), undefined);
    await first.command('QUIT');
    second.close();
  });

  test('popgate relay list and revoke, while the server runs', async () => {
    const config = join(server.dir, 'popgate.toml');
    writeFileSync(config, `data_dir = "${server.dir}"\n`);
    const client = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.6' });
    await client.line();
    await client.login('pbs@example.test', PASSWORD);
    await client.command('QUIT');
    const listed = await run(NODE, [MAIN, '--config', config, 'relay', 'list']);
    assert.match(listed.stdout, /^127\.0\.0\.6\tpbs@example\.test\t(9m5\d|10m00)s left$/m);
    const revoked = await run(NODE, [MAIN, '--config', config, 'relay', 'revoke', '127.0.0.6']);
    assert.match(revoked.stdout, /revoked 1 grant\(s\) for 127\.0\.0\.6; it must log in to POP3 again/);
    assert.equal(await server.app.popBeforeSmtp.authorization('127.0.0.6'), undefined);
    const missing = await run(NODE, [MAIN, '--config', config, 'relay', 'revoke', '127.0.0.6']).catch((error) => error);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no grant for 127\.0\.0\.6/);
  });
});
