import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MAIN, NODE } from './helpers/process.ts';

function popgate(config: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** The record printed by generate and show: name, value, and the zone-file line. */
function printedRecord(stdout: string): { name: string; value: string; p: string; zone: string } {
  const name = /^ {2}name: {2}(\S+)$/m.exec(stdout)?.[1];
  const value = /^ {2}value: (v=DKIM1; k=\w+; p=(\S+))$/m.exec(stdout);
  const zone = /^as a zone-file line:\n(.+)$/m.exec(stdout)?.[1];
  assert.ok(name && value && zone, `a record in:\n${stdout}`);
  return { name, value: value[1], p: value[2], zone };
}

/** The strings of a zone-file TXT line, joined: what a resolver hands to a verifier. */
function zoneValue(zone: string): string {
  return [...zone.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
}

describe('popgate dkim commands', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-cli-dkim-'));
  const keysDir = join(dir, 'data', 'dkim');
  const config = join(dir, 'popgate.toml');
  before(() => writeFileSync(config, `data_dir = "${dir}/data"\nhostname = "mail.example.test"\n`));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('dkim generate creates a 2048-bit RSA key under data_dir/dkim with the configured selector, mode 0600, and prints its record', async () => {
    const { code, stdout, stderr } = await popgate(config, ['dkim', 'generate', 'Example.TEST']);
    assert.equal(code, 0, stderr);
    const path = join(keysDir, 'example.test', 'popgate.pem');
    assert.match(stdout, new RegExp(`^created a 2048-bit RSA DKIM key for example\\.test: ${path.replace(/[.]/g, '\\.')} \\(mode 0600\\)$`, 'm'));
    assert.equal(statSync(path).mode & 0o777, 0o600, 'only the server user may read the private key');
    const pem = readFileSync(path, 'utf8');
    assert.equal(createPrivateKey(pem).asymmetricKeyDetails?.modulusLength, 2048);

    const record = printedRecord(stdout);
    assert.equal(record.name, 'popgate._domainkey.example.test');
    assert.match(record.value, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$/);
    assert.equal(record.p, createPublicKey(pem).export({ type: 'spki', format: 'der' }).toString('base64'), 'p= is the public half of the written key');
    assert.match(record.zone, /^popgate\._domainkey\.example\.test\. IN TXT \( "[^"]{255}" "[^"]+" \)$/, 'the zone-file line splits the value into 255-octet strings');
    assert.equal(zoneValue(record.zone), record.value);
    assert.match(stdout, /a running server signs mail from example\.test with this key within seconds: publish the record now/);
  });

  test('dkim generate refuses to overwrite an existing key, which would break the published record', async () => {
    const path = join(keysDir, 'example.test', 'popgate.pem');
    const before = readFileSync(path, 'utf8');
    const again = await popgate(config, ['dkim', 'generate', 'example.test']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^popgate: a key for example\.test with selector "popgate" already exists .*: choose another selector with --selector, or run "popgate dkim show example\.test"\n$/);
    assert.equal(again.stdout, '');
    assert.equal(readFileSync(path, 'utf8'), before, 'the key is unchanged');
  });

  test('dkim generate --algorithm ed25519 --selector S prints the bare 32-byte key (RFC 8463) and says to set dkim.selector to S once published', async () => {
    const { code, stdout, stderr } = await popgate(config, ['dkim', 'generate', 'example.test', '--algorithm', 'ed25519', '--selector', 'ed2026']);
    assert.equal(code, 0, stderr);
    const path = join(keysDir, 'example.test', 'ed2026.pem');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.match(stdout, /^created an Ed25519 DKIM key for example\.test: /);
    const record = printedRecord(stdout);
    assert.equal(record.name, 'ed2026._domainkey.example.test');
    assert.match(record.value, /^v=DKIM1; k=ed25519; p=/);
    const raw = Buffer.from(record.p, 'base64');
    assert.equal(raw.length, 32);
    const x = createPublicKey(readFileSync(path, 'utf8')).export({ format: 'jwk' }).x;
    assert.equal(raw.toString('base64url'), x, 'p= is the public half of the written key');
    assert.equal(zoneValue(record.zone), record.value);
    assert.match(stdout, /popgate signs with the selector of dkim\.selector \("popgate"\), not "ed2026": once this record is published, set dkim\.selector = "ed2026" in the config file and restart popgate/);
  });

  test('dkim generate --bits sets the RSA key size; sizes below 1024 or above 4096, and --bits with ed25519, are refused', async () => {
    const ok = await popgate(config, ['dkim', 'generate', 'small.test', '--bits', '1024']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^created a 1024-bit RSA DKIM key/);
    assert.equal(createPrivateKey(readFileSync(join(keysDir, 'small.test', 'popgate.pem'))).asymmetricKeyDetails?.modulusLength, 1024);
    const tiny = await popgate(config, ['dkim', 'generate', 'tiny.test', '--bits', '512']);
    assert.equal(tiny.code, 1);
    assert.match(tiny.stderr, /--bits 512: give a size from 1024 to 4096/);
    const ed = await popgate(config, ['dkim', 'generate', 'tiny.test', '--algorithm', 'ed25519', '--bits', '2048']);
    assert.equal(ed.code, 1);
    assert.match(ed.stderr, /--bits applies to RSA keys only/);
    const algorithm = await popgate(config, ['dkim', 'generate', 'tiny.test', '--algorithm', 'dsa']);
    assert.equal(algorithm.code, 1);
    assert.match(algorithm.stderr, /Allowed choices are rsa, ed25519/);
    assert.ok(!existsSync(join(keysDir, 'tiny.test')), 'nothing was written for a refused command');
  });

  test('dkim generate refuses an invalid domain name or selector and writes nothing', async () => {
    for (const bad of ['not_a domain', 'localhost', 'bad-.test', 'a..b.test', '../etc']) {
      const result = await popgate(config, ['dkim', 'generate', bad]);
      assert.equal(result.code, 1, bad);
      assert.equal(result.stderr, `popgate: "${bad}" is not a valid domain name: give the domain of the senders' From: addresses, such as example.com\n`);
    }
    const selector = await popgate(config, ['dkim', 'generate', 'fine.test', '--selector', '../x']);
    assert.equal(selector.code, 1);
    assert.match(selector.stderr, /"\.\.\/x" is not a valid selector/);
    assert.ok(!existsSync(join(keysDir, 'fine.test')));
    assert.ok(!existsSync(join(dir, 'data', 'x.pem')));
  });

  test('dkim show prints the same record as generate for an existing key, and whether signing uses it', async () => {
    const shown = await popgate(config, ['dkim', 'show', 'example.test']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^RSA DKIM key for example\.test: .*popgate\.pem \(in use: dkim\.selector is "popgate"\)$/m);
    const pem = readFileSync(join(keysDir, 'example.test', 'popgate.pem'), 'utf8');
    const record = printedRecord(shown.stdout);
    assert.equal(record.name, 'popgate._domainkey.example.test');
    assert.equal(record.p, createPublicKey(pem).export({ type: 'spki', format: 'der' }).toString('base64'));
    assert.equal(zoneValue(record.zone), record.value);

    const ed = await popgate(config, ['dkim', 'show', 'EXAMPLE.test', '--selector', 'ed2026']);
    assert.equal(ed.code, 0, ed.stderr);
    assert.match(ed.stdout, /^Ed25519 DKIM key for example\.test: .*ed2026\.pem \(not in use: dkim\.selector is "popgate", not "ed2026"\)$/m);
    assert.match(printedRecord(ed.stdout).value, /^v=DKIM1; k=ed25519; p=/);
  });

  test('dkim show of a missing key exits 1 and says how to create one', async () => {
    const missing = await popgate(config, ['dkim', 'show', 'other.test']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'popgate: no DKIM key for other.test (selector popgate): create one with popgate dkim generate other.test\n');
    const otherSelector = await popgate(config, ['dkim', 'show', 'example.test', '--selector', 'old']);
    assert.equal(otherSelector.code, 1);
    assert.equal(otherSelector.stderr, 'popgate: no DKIM key for example.test (selector old): create one with popgate dkim generate example.test --selector old\n');
  });

  test('dkim.keys_dir and dkim.selector of the config are where generate writes and what show reads by default', async () => {
    const other = join(dir, 'custom');
    mkdirSync(other);
    const customConfig = join(other, 'popgate.toml');
    writeFileSync(customConfig, `data_dir = "data"\n[dkim]\nkeys_dir = "keys"\nselector = "mail2026"\n`);
    const generated = await popgate(customConfig, ['dkim', 'generate', 'example.test', '--algorithm', 'ed25519']);
    assert.equal(generated.code, 0, generated.stderr);
    const path = join(other, 'keys', 'example.test', 'mail2026.pem');
    assert.ok(existsSync(path), 'a relative keys_dir is relative to the config file');
    assert.equal(printedRecord(generated.stdout).name, 'mail2026._domainkey.example.test');
    assert.doesNotMatch(generated.stdout, /set dkim\.selector/);
    const shown = await popgate(customConfig, ['dkim', 'show', 'example.test']);
    assert.equal(shown.code, 0);
    assert.equal(printedRecord(shown.stdout).value, printedRecord(generated.stdout).value);
  });
});
