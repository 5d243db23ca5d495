import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../src/config/load.ts';
import { silentLogger } from '../src/log/logger.ts';
import { openBackends } from '../src/server/app.ts';
import { runPopgate } from './helpers/cli.ts';

// `popgate admin add/passwd/remove/list` as an operator runs them, and the audit entries the
// CLI's changes leave (actor "cli", never a password).

describe('popgate admin commands', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-cli-admin-'));
  const config = join(dir, 'popgate.toml');
  const toml = `data_dir = "${dir}/data"\nhostname = "mail.example.test"\n[pop3]\nlisten = []\n[smtp]\nlisten = []\n[http]\nlisten = ["0.0.0.0:8080"]\n`;
  before(() => writeFileSync(config, toml));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const popgate = (args: string[], input = '') => runPopgate(config, args, {}, input);


  const withBackends = async <T>(fn: (backends: Awaited<ReturnType<typeof openBackends>>) => Promise<T>): Promise<T> => {
    const backends = await openBackends(parseConfig({ data_dir: join(dir, 'data'), hostname: 'mail.example.test' }, 'test'), silentLogger());
    try {
      return await fn(backends);
    } finally {
      await backends.close();
    }
  };

  test('add reads the password, says where to log in, and stores only a scrypt hash', async () => {
    assert.match((await popgate(['admin', 'list'])).stdout, /no administrators yet: popgate admin add NAME/);
    const added = await popgate(['admin', 'add', 'root', '--password-stdin'], 'console secret 1\n');
    assert.equal(added.code, 0, added.stderr);
    assert.equal(added.stdout, 'added administrator root; log in at http://mail.example.test:8080/admin (from a network in [admin] networks)\n');
    const db = readFileSync(join(dir, 'data', 'popgate.sqlite'));
    assert.ok(!db.includes('console secret 1'));
    assert.match((await popgate(['admin', 'list'])).stdout, /^root\tadded \d{4}-\d\d-\d\dT/);
    assert.equal(await withBackends(({ admins }) => admins.verify('root', 'console secret 1')), true);
  });

  test('bad names, short passwords and taken names are refused with exit 1 and change nothing', async () => {
    for (const [args, input, message] of [
      [['admin', 'add', '../root', '--password-stdin'], 'console secret 1\n', /is not an administrator name/],
      [['admin', 'add', 'Root Admin', '--password-stdin'], 'console secret 1\n', /is not an administrator name/],
      [['admin', 'add', 'bob', '--password-stdin'], 'short\n', /at least 8 characters/],
      [['admin', 'add', 'root', '--password-stdin'], 'another secret\n', /administrator root already exists/],
      [['admin', 'passwd', 'nobody', '--password-stdin'], 'another secret\n', /no administrator nobody/],
      [['admin', 'remove', 'nobody'], '', /no administrator nobody/],
    ] as const) {
      const result = await popgate([...args], input);
      assert.equal(result.code, 1, args.join(' '));
      assert.match(result.stderr, message);
    }
    assert.equal((await popgate(['admin', 'list'])).stdout.split('\n').filter(Boolean).length, 1);
    assert.equal(await withBackends(({ admins }) => admins.verify('root', 'console secret 1')), true);
  });

  test('passwd ends the open sessions; remove ends the administrator; the audit log names the CLI', async () => {
    const session = await withBackends(({ admins }) => admins.startSession('root'));
    const changed = await popgate(['admin', 'passwd', 'root', '--password-stdin'], 'console secret 2\n');
    assert.equal(changed.code, 0, changed.stderr);
    await withBackends(async ({ admins }) => {
      assert.equal(await admins.session(session), undefined);
      assert.equal(await admins.verify('root', 'console secret 2'), true);
      assert.equal(await admins.verify('root', 'console secret 1'), false);
    });
    assert.equal((await popgate(['domain', 'add', 'example.test'])).code, 0);
    assert.equal((await popgate(['admin', 'remove', 'root'])).stdout, 'removed administrator root\n');
    const entries = await withBackends(({ audit }) => audit.recent(10));
    assert.deepEqual(
      entries.map((e) => [e.actor, e.action, e.subject]),
      [
        ['cli', 'admin.remove', 'root'],
        ['cli', 'domain.add', 'example.test'],
        ['cli', 'admin.passwd', 'root'],
        ['cli', 'admin.add', 'root'],
      ],
    );
    assert.ok(entries.every((e) => !/console secret/.test(e.detail)));
  });
});
