import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseConfig } from '../src/config/load.ts';
import { findEngine, missingEngine } from './helpers/engines.ts';
import { ROOT } from './helpers/process.ts';

// contrib/popgate.service: systemd's own checker accepts it, the hardening it promises is
// there, and its ExecStart line starts popgate. The unit names popgate's installed place,
// /opt/popgate; the checks run on a copy where that one prefix is this checkout, so the
// program systemd-analyze looks for exists.

const UNIT = join(ROOT, 'contrib', 'popgate.service');
const INSTALLED = '/opt/popgate';

/** The unit's [Service] settings: each key with every value it is given, in order. */
function settings(text: string): Map<string, string[]> {
  const result = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      section = header[1];
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    result.set(key, [...(result.get(key) ?? []), line.slice(eq + 1)]);
  }
  return result;
}

describe('the systemd unit', { skip: missingEngine('systemd-analyze') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-unit-'));
  const analyze = findEngine('systemd-analyze')!;
  const text = readFileSync(UNIT, 'utf8');
  const unit = settings(text);
  const local = join(dir, 'popgate.service');
  writeFileSync(local, text.replaceAll(INSTALLED, ROOT));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('systemd-analyze verify accepts it without a warning (and does warn about a mistake)', () => {
    assert.deepEqual(unit.get('Service.ExecStart'), [`${INSTALLED}/bin/popgate.js serve`]);
    accessSync(join(ROOT, 'bin', 'popgate.js'), constants.X_OK);
    const verify = spawnSync(analyze, ['verify', local], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '', 'no warning either');

    const misspelt = join(dir, 'misspelt.service');
    writeFileSync(misspelt, readFileSync(local, 'utf8').replace('ProtectSystem=strict', 'ProtectSytem=strict'));
    const warned = spawnSync(analyze, ['verify', misspelt], { encoding: 'utf8' });
    assert.match(warned.stderr, /Unknown key 'ProtectSytem'/);
  });

  test('a dedicated user, a read-only system but data_dir, the one capability for low ports, restarts, reload, descriptors', () => {
    assert.deepEqual(unit.get('Service.User'), ['popgate']);
    assert.deepEqual(unit.get('Service.ProtectSystem'), ['strict']);
    assert.deepEqual(unit.get('Service.ReadWritePaths'), ['/var/lib/popgate']);
    assert.deepEqual(unit.get('Service.NoNewPrivileges'), ['yes']);
    assert.deepEqual(unit.get('Service.AmbientCapabilities'), ['CAP_NET_BIND_SERVICE']);
    assert.deepEqual(unit.get('Service.CapabilityBoundingSet'), ['CAP_NET_BIND_SERVICE']);
    assert.deepEqual(unit.get('Service.Restart'), ['on-failure']);
    assert.deepEqual(unit.get('Service.ExecReload'), ['/bin/kill -HUP $MAINPID']);
    assert.ok(Number(unit.get('Service.LimitNOFILE')?.[0]) >= 65536);
    assert.deepEqual(unit.get('Service.KillMode'), ['mixed'], 'SIGTERM to the primary, which passes it on and waits');
    // systemd must wait longer than popgate: the sessions' grace, then the primary's 10 s more.
    const graceMs = parseConfig({}, 'defaults').shutdown_grace;
    assert.ok(Number(/^(\d+)s$/.exec(unit.get('Service.TimeoutStopSec')![0])![1]) * 1000 > graceMs + 10_000);
    assert.deepEqual(unit.get('Service.Environment'), [
      'POPGATE_CONFIG=/etc/popgate/popgate.toml',
      `PATH=${INSTALLED}/node_modules/.bin:/usr/local/bin:/usr/bin:/bin`,
      'NODE_COMPILE_CACHE=/var/cache/popgate/node-compile-cache',
    ]);
    // The compile cache outlives the private /tmp, in the one cache folder systemd makes writable.
    assert.deepEqual(unit.get('Service.CacheDirectory'), ['popgate']);
    assert.deepEqual(unit.get('Service.PrivateTmp'), ['yes']);
  });

  test("systemd's own exposure score rates the sandbox OK (at most 2.5 of 10)", () => {
    const security = spawnSync(analyze, ['security', '--offline=true', local], { encoding: 'utf8' });
    assert.equal(security.status, 0, security.stderr);
    const score = Number(/Overall exposure level for popgate\.service: ([\d.]+)/.exec(security.stdout)?.[1]);
    assert.ok(score <= 2.5, `exposure ${score}:\n${security.stdout}`);
  });

  test('the ExecStart line, with the unit\'s environment, runs popgate', () => {
    const config = join(dir, 'popgate.toml');
    writeFileSync(config, `hostname = "mail.example.test"\ndata_dir = "${join(dir, 'data')}"\n`);
    const environment = Object.fromEntries(unit.get('Service.Environment')!.map((entry) => entry.replaceAll(INSTALLED, ROOT).replaceAll('/var/cache/popgate', join(dir, 'cache')).split(/=(.*)/s).slice(0, 2)));
    const [program] = unit.get('Service.ExecStart')![0].replaceAll(INSTALLED, ROOT).split(' ');
    const run = spawnSync(program, ['config', 'check'], { encoding: 'utf8', env: { ...environment, POPGATE_CONFIG: config } });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^# ${config.replace(/[.]/g, '\\.')}: valid$`, 'm'));
    assert.ok(readdirSync(join(dir, 'cache', 'node-compile-cache')).length > 0, 'the compile cache was written where the unit says');
  });
});
