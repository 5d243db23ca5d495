import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MAIN, NODE } from './helpers/process.ts';

// The mailbox-service commands as an operator types them: popgate user forward, user vacation,
// user quota, domain quota, and user list with the usage. Bad input gets one clear line and
// exit code 1, and changes nothing.

describe('popgate user forward, vacation and quota', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-cli-mailbox-'));
  const config = join(dir, 'popgate.toml');
  before(async () => {
    writeFileSync(config, `data_dir = "${dir}/data"\nhostname = "mail.example.test"\n[pop3]\nlisten = ["127.0.0.1:0"]\n[smtp]\nlisten = []\n[quota]\ndefault = "1GB"\n`);
    assert.equal((await popgate(['domain', 'add', 'example.test'])).code, 0);
    for (const user of ['alice', 'bob', 'carol']) assert.equal((await popgate(['user', 'add', `${user}@example.test`, '--password', 'long enough'])).code, 0);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function popgate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  async function refused(args: string[], message: RegExp): Promise<void> {
    const result = await popgate(args);
    assert.equal(result.code, 1, `${args.join(' ')}: ${result.stdout}`);
    assert.match(result.stderr, message);
  }

  test('forward: set with and without a copy, shown, stopped', async () => {
    assert.equal((await popgate(['user', 'forward', 'alice@example.test'])).stdout, 'alice@example.test does not forward\n');
    const set = await popgate(['user', 'forward', 'alice@example.test', 'Friend@Remote.Example', 'bob@example.test', '--keep']);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stdout, 'alice@example.test forwards to friend@remote.example, bob@example.test, keeping a copy\n');
    assert.equal((await popgate(['user', 'forward', 'alice@example.test', 'friend@remote.example'])).stdout, 'alice@example.test forwards to friend@remote.example (no copy kept)\n');
    assert.equal((await popgate(['user', 'forward', 'alice@example.test', '--off'])).stdout, 'alice@example.test: forwarding stopped\n');
  });

  test('forward: to oneself, in a circle, too many, unknown or malformed addresses are refused', async () => {
    await refused(['user', 'forward', 'alice@example.test', 'ALICE@example.test'], /alice@example\.test cannot forward to itself/);
    assert.equal((await popgate(['user', 'forward', 'bob@example.test', 'carol@example.test'])).code, 0);
    assert.equal((await popgate(['alias', 'add', 'team@example.test', 'alice@example.test'])).code, 0);
    assert.equal((await popgate(['user', 'forward', 'carol@example.test', 'team@example.test'])).code, 0);
    await refused(['user', 'forward', 'alice@example.test', 'bob@example.test'], /forwarding in a circle: alice@example\.test → bob@example\.test → carol@example\.test → team@example\.test → alice@example\.test/);
    await refused(['user', 'forward', 'alice@example.test', ...Array.from({ length: 11 }, (_, i) => `x${i}@remote.example`)], /at most 10 addresses/);
    await refused(['user', 'forward', 'alice@example.test', 'ghost@example.test'], /ghost@example\.test is in a local domain but is no user or alias/);
    await refused(['user', 'forward', 'nobody@example.test', 'x@remote.example'], /no such user: nobody@example\.test/);
    assert.equal((await popgate(['user', 'forward', 'alice@example.test'])).stdout, 'alice@example.test does not forward\n', 'nothing was stored');
  });

  test('vacation: set from a file, shown, turned off; a huge body, a past date or a missing part refused', async () => {
    const body = join(dir, 'away.txt');
    writeFileSync(body, 'I am away until Monday.\n');
    const set = await popgate(['user', 'vacation', 'alice@example.test', '--subject', 'Away', '--body-file', body, '--until', '2099-08-31']);
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stdout, 'alice@example.test has a vacation reply "Away" until 2099-08-31T23:59:59.999Z\n');
    const huge = join(dir, 'huge.txt');
    writeFileSync(huge, 'x'.repeat(3 * 1024 * 1024));
    await refused(['user', 'vacation', 'bob@example.test', '--subject', 'Away', '--body-file', huge], /huge\.txt is 3 MB: a vacation reply is at most 16 KB/);
    await refused(['user', 'vacation', 'bob@example.test', '--subject', 'Away', '--body-file', body, '--until', '2001-01-01'], /--until 2001-01-01 is in the past/);
    await refused(['user', 'vacation', 'bob@example.test', '--subject', 'Away', '--body-file', body, '--until', 'next week'], /--until "next week" is not a date/);
    await refused(['user', 'vacation', 'bob@example.test', '--subject', 'Away', '--body-file', body, '--until', '2099-02-31'], /--until "2099-02-31" is not a date/);
    await refused(['user', 'vacation', 'bob@example.test', '--subject', 'Away'], /needs both --subject and --body-file/);
    await refused(['user', 'vacation', 'bob@example.test', '--subject', 'x'.repeat(300), '--body-file', body], /subject is longer than 200 characters/);
    assert.equal((await popgate(['user', 'vacation', 'bob@example.test'])).stdout, 'bob@example.test has no vacation reply\n');
    assert.equal((await popgate(['user', 'vacation', 'alice@example.test', '--off'])).stdout, 'alice@example.test: vacation reply off\n');
  });

  test('quota: the default, per user and per domain, below the usage, bad sizes; user list shows usage', async () => {
    assert.equal((await popgate(['user', 'quota', 'alice@example.test'])).stdout, 'alice@example.test: 0 B of 1 GB used (0%) (the server default)\n');
    assert.equal((await popgate(['domain', 'quota', 'example.test', '500MB'])).stdout, 'example.test: mailboxes without a quota of their own get 500 MB\n');
    assert.equal((await popgate(['user', 'quota', 'alice@example.test'])).stdout, "alice@example.test: 0 B of 500 MB used (0%) (the domain's quota)\n");
    assert.equal((await popgate(['user', 'quota', 'alice@example.test', 'none'])).stdout, 'alice@example.test: 0 B used, no limit (set for this user)\n');
    // Mail in the folder, then a quota below it: accepted, and what it means is said.
    const mailbox = join(dir, 'data', 'mail', 'example.test', 'bob', 'new');
    writeFileSync(join(mailbox, '1.M1P1.test,S=2048'), `Subject: big\r\n\r\n${'x'.repeat(2030)}\r\n`);
    const below = await popgate(['user', 'quota', 'bob@example.test', '1KB']);
    assert.equal(below.code, 0, below.stderr);
    assert.match(below.stdout, /^bob@example\.test: 2 KB of 1 KB used \(\d+%\) \(set for this user\)\n {2}the mailbox holds more than its quota: new mail is refused until 1 KB are deleted\n$/);
    await refused(['user', 'quota', 'bob@example.test', 'lots'], /"lots" is not a size/);
    await refused(['user', 'quota', 'bob@example.test', '0'], /zero/);
    assert.equal((await popgate(['user', 'quota', 'bob@example.test', 'default'])).stdout, "bob@example.test: 2 KB of 500 MB used (0%) (the domain's quota)\n");
    const list = (await popgate(['user', 'list'])).stdout;
    assert.match(list, /^alice@example\.test\tcreated \S+\t0 B used, no limit$/m);
    assert.match(list, /^bob@example\.test\tcreated \S+\t2 KB of 500 MB used \(0%\)$/m);
  });
});
