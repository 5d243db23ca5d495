import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { importPostfixMaps, parsePostfixMap } from '../src/import/postfix.ts';
import { ImportReport } from '../src/import/report.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';

// `popgate import postfix-virtual`: Postfix's virtual_mailbox_domains and virtual_alias_maps
// tables into popgate's account directory (a real SQLite store).

const dir = mkdtempSync(join(tmpdir(), 'popgate-import-postfix-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DOMAINS = '# virtual_mailbox_domains\nexample.test   OK\nother.test     OK\n';
const ALIASES = [
  '# virtual_alias_maps',
  'sales@example.test    alice@example.test,',
  '                      bob@example.test   carol@elsewhere.test',
  'info@example.test     alice@example.test, root',
  'alice@example.test    alice@example.test',
  '@other.test           catchall@example.test',
  'postmaster            root',
  '/^x-.*@example\\.test$/  alice@example.test',
  'news@unknown.test     alice@example.test',
  'only-local@example.test  root, |/usr/bin/procmail',
  '',
].join('\n');

test('domains and aliases are added; catch-alls, bare local parts, patterns and unusable targets are skipped with reasons; a second run adds nothing twice', async () => {
  const accounts = new SqliteAccountStore(openDatabase(dir), true);
  await accounts.addDomain('example.test');
  await accounts.addUser('alice@example.test', 'alice password');
  const entries = [...parsePostfixMap(DOMAINS, 'vdomains'), ...parsePostfixMap(ALIASES, 'virtual')];

  const dry = new ImportReport();
  assert.deepEqual(await importPostfixMaps(entries, accounts, dry, true), { domains: 1, aliases: 2 });
  assert.deepEqual(await accounts.listDomains(), ['example.test'], 'a dry run writes nothing');

  const report = new ImportReport();
  assert.deepEqual(await importPostfixMaps(entries, accounts, report, false), { domains: 1, aliases: 2 });
  assert.deepEqual(await accounts.listDomains(), ['example.test', 'other.test']);
  assert.deepEqual(await accounts.listAliases(), [
    { alias: 'info@example.test', targets: ['alice@example.test'] },
    { alias: 'sales@example.test', targets: ['alice@example.test', 'bob@example.test', 'carol@elsewhere.test'] },
  ]);
  const reasons = report.skipped.map((s) => `${s.subject} | ${s.what} | ${s.reason}`);
  const expect = (pattern: RegExp) => assert.ok(reasons.some((r) => pattern.test(r)), `${pattern} in\n${reasons.join('\n')}`);
  expect(/^info@example\.test \| target root \| virtual line 4: not an address/);
  expect(/^alice@example\.test \| alias \| virtual line 5: alice@example\.test is a user/);
  expect(/^@other\.test \| catch-all \| virtual line 6: popgate has no catch-all/);
  expect(/^postmaster \| entry \| virtual line 7: a bare local part/);
  expect(/^\/\^x-\.\*@example\\\.test\$\/ \| entry \| virtual line 8: a regular expression/);
  expect(/^news@unknown\.test \| alias \| virtual line 9: unknown\.test is not a popgate domain/);
  expect(/^only-local@example\.test \| alias \| virtual line 10: no target left/);

  const again = new ImportReport();
  assert.deepEqual(await importPostfixMaps(entries, accounts, again, false), { domains: 0, aliases: 2 }, 'aliases are extended (nothing new), domains not added twice');
  assert.deepEqual((await accounts.listAliases()).map((a) => a.targets.length), [1, 3]);
  await accounts.close();
});
