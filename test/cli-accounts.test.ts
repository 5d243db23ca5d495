import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { MAIN, NODE, spawnServer, exited } from './helpers/process.ts';

const execFileAsync = promisify(execFile);

describe('popgate domain, user and alias commands', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-cli-'));
  const config = join(dir, 'popgate.toml');
  before(() => writeFileSync(config, `data_dir = "${dir}/data"\nhostname = "mail.example.test"\n[pop3]\nlisten = ["127.0.0.1:0"]\n[smtp]\nlisten = []\n`));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function popgate(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.stdin.end(input ?? '');
      child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  test('domain add, list, and duplicate or invalid names', async () => {
    assert.equal((await popgate(['domain', 'add', 'Example.TEST'])).code, 0);
    assert.equal((await popgate(['domain', 'add', 'other.test'])).code, 0);
    assert.equal((await popgate(['domain', 'list'])).stdout, 'example.test\nother.test\n');
    const duplicate = await popgate(['domain', 'add', 'example.test']);
    assert.equal(duplicate.code, 1);
    assert.match(duplicate.stderr, /domain example\.test already exists/);
    const invalid = await popgate(['domain', 'add', 'not_a domain']);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /is not a valid domain name/);
  });

  test('user add reads the password from stdin and stores only a scrypt hash', async () => {
    const added = await popgate(['user', 'add', 'Alice@Example.test', '--password-stdin'], 'a long secret\n');
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /added alice@example\.test \(mailbox .*example\.test\/alice\)/);
    assert.ok(existsSync(join(dir, 'data', 'mail', 'example.test', 'alice', 'new')));
    const db = readFileSync(join(dir, 'data', 'popgate.sqlite'));
    assert.ok(!db.includes('a long secret'), 'the password is not stored in the clear');
    assert.ok(db.includes('$scrypt$ln=14,r=8,p=1$'));
    assert.match((await popgate(['user', 'list'])).stdout, /^alice@example\.test\tcreated /);
  });

  test('user errors: unknown domain, duplicate, bad address, short password, no password source', async () => {
    const unknownDomain = await popgate(['user', 'add', 'bob@nowhere.test', '--password', 'longenough']);
    assert.equal(unknownDomain.code, 1);
    assert.match(unknownDomain.stderr, /unknown domain nowhere\.test: add it first with popgate domain add nowhere\.test/);
    const duplicate = await popgate(['user', 'add', 'alice@example.test', '--password', 'longenough']);
    assert.equal(duplicate.code, 1);
    assert.match(duplicate.stderr, /user alice@example\.test already exists/);
    const bad = await popgate(['user', 'add', 'not an address', '--password', 'longenough']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /is not a valid address/);
    const short = await popgate(['user', 'add', 'carol@example.test', '--password', 'short']);
    assert.equal(short.code, 1);
    assert.match(short.stderr, /at least 8 characters/);
    const noSource = await popgate(['user', 'add', 'carol@example.test']);
    assert.equal(noSource.code, 1);
    assert.match(noSource.stderr, /--password-stdin/);
  });

  test('alias add, list, remove, and its errors', async () => {
    assert.equal((await popgate(['alias', 'add', 'info@example.test', 'alice@example.test', 'someone@elsewhere.test'])).code, 0);
    assert.equal((await popgate(['alias', 'list'])).stdout, 'info@example.test\t-> alice@example.test, someone@elsewhere.test\n');
    const clash = await popgate(['alias', 'add', 'alice@example.test', 'x@example.test']);
    assert.equal(clash.code, 1);
    assert.match(clash.stderr, /is a user/);
    assert.equal((await popgate(['alias', 'remove', 'info@example.test', 'someone@elsewhere.test'])).code, 0);
    assert.equal((await popgate(['alias', 'list'])).stdout, 'info@example.test\t-> alice@example.test\n');
    const missing = await popgate(['alias', 'remove', 'nope@example.test']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such alias/);
  });

  test('a domain with users cannot be removed; an empty one can', async () => {
    const busy = await popgate(['domain', 'remove', 'example.test']);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /still has 1 user\(s\)/);
    assert.equal((await popgate(['domain', 'remove', 'other.test'])).code, 0);
    const unknown = await popgate(['domain', 'remove', 'other.test']);
    assert.equal(unknown.code, 1);
  });

  test('the CLI works while the server runs: a new user can log in at once, passwd takes effect, remove ends logins', async () => {
    const server = await spawnServer(config);
    try {
      assert.equal((await popgate(['user', 'add', 'live@example.test', '--password-stdin'], 'first password')).code, 0);
      const client = await Pop3Client.connect(server.pop3Port);
      await client.line();
      assert.match(await client.login('live@example.test', 'first password'), /^\+OK Logged in/);
      await client.command('QUIT');
      assert.equal((await popgate(['user', 'passwd', 'live@example.test', '--password-stdin'], 'second password')).code, 0);
      const again = await Pop3Client.connect(server.pop3Port);
      await again.line();
      assert.match(await again.login('live@example.test', 'first password'), /^-ERR \[AUTH\]/);
      assert.match(await again.login('live@example.test', 'second password'), /^\+OK Logged in/);
      await again.command('QUIT');
      const removed = await popgate(['user', 'remove', 'live@example.test']);
      assert.equal(removed.code, 0);
      assert.match(removed.stdout, /its mail is still in/);
      const gone = await Pop3Client.connect(server.pop3Port);
      await gone.line();
      assert.match(await gone.login('live@example.test', 'second password'), /^-ERR \[AUTH\]/);
      gone.close();
    } finally {
      server.child.kill('SIGTERM');
      await exited(server.child);
    }
  });

  test('help and unknown commands', async () => {
    const { stdout } = await execFileAsync(NODE, [MAIN, '--help']);
    assert.match(stdout, /serve/);
    assert.match(stdout, /user/);
    const unknown = await popgate(['frobnicate']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown command/);
  });
});
