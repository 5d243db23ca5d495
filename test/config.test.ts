import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { ConfigError, loadConfigFile, parseConfig } from '../src/config/load.ts';
import { MAIN, NODE } from './helpers/process.ts';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'popgate-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(raw: unknown): string {
  try {
    parseConfig(raw, 'popgate.toml', dir);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.message;
  }
  assert.fail('expected a config error');
}

describe('configuration', () => {
  test('an empty file gives the documented defaults', () => {
    const config = parseConfig({}, 'test', dir);
    assert.deepEqual(config.pop3.listen, ['127.0.0.1:2110']);
    assert.deepEqual(config.pop3s.listen, []);
    assert.deepEqual(config.smtp.listen, ['127.0.0.1:2525']);
    assert.equal(config.pop3.idle_timeout, 600_000, 'RFC 1939 §3: at least 10 minutes');
    assert.equal(config.pop_before_smtp.window, 600_000);
    assert.equal(config.auth.plaintext_without_tls, 'loopback');
    assert.equal(config.pop3.apop, false);
    assert.equal(config.data_dir, join(dir, 'data'), 'relative paths are taken from the config file folder');
  });

  test('errors name the key and the reason', () => {
    assert.match(errorOf({ pop3: { listen: ['127.0.0.1'] } }), /pop3\.listen\[0\]: "127\.0\.0\.1" is not host:port/);
    assert.match(errorOf({ pop3: { listen: ['[::1]:99999'] } }), /pop3\.listen\[0\]: port 99999 is out of range/);
    assert.match(errorOf({ pop3: { idle_timeout: '10 minutes' } }), /pop3\.idle_timeout: "10 minutes" is not a duration/);
    assert.match(errorOf({ pop3: { listn: [] } }), /pop3\.listn: unknown key/);
    assert.match(errorOf({ colour: 'blue' }), /colour: unknown key/);
    assert.match(errorOf({ auth: { plaintext_without_tls: 'yes' } }), /auth\.plaintext_without_tls: /);
    assert.match(errorOf({ auth: { trusted_networks: ['10.0.0.0/33'] } }), /auth\.trusted_networks\[0\]: "10\.0\.0\.0\/33" has a prefix outside 0-32/);
    assert.match(errorOf({ pop3s: { listen: ['127.0.0.1:995'] } }), /pop3s\.listen: implicit TLS needs a certificate: set tls\.cert and tls\.key/);
    assert.match(errorOf({ tls: { cert: 'a.pem' } }), /tls\.key: must be set together with tls\.cert/);
    assert.match(errorOf({ hostname: 'not a host' }), /hostname: must be a host name/);
  });

  test('IPv6 listen addresses are written [v6]:port', () => {
    assert.deepEqual(parseConfig({ pop3: { listen: ['[::1]:110', '0.0.0.0:110'] } }, 'test', dir).pop3.listen, ['[::1]:110', '0.0.0.0:110']);
  });

  test('a TOML syntax error says where', () => {
    const path = join(dir, 'broken.toml');
    writeFileSync(path, 'hostname = "a"\n[pop3\nlisten = []\n');
    assert.throws(() => loadConfigFile(path), (error: Error) => error instanceof ConfigError && /broken\.toml \(line 2, column \d+\): not valid TOML/.test(error.message));
  });

  test('popgate serve with an invalid config exits with code 2 and starts nothing', async () => {
    const path = join(dir, 'invalid.toml');
    writeFileSync(path, '[pop3]\nlisten = ["nowhere"]\n');
    const result = await run(NODE, [MAIN, 'serve', '--config', path]).catch((error) => error);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /popgate: config error: .*pop3\.listen\[0\]: "nowhere" is not host:port/);
  });

  test('popgate serve without a config file explains what to do', async () => {
    const result = await run(NODE, [MAIN, 'serve'], { cwd: dir }).catch((error) => error);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /no config file at \.\/popgate\.toml.*npm start/);
  });

  test('popgate config check prints the effective configuration', async () => {
    const path = join(dir, 'good.toml');
    writeFileSync(path, 'hostname = "mail.example.net"\n[pop3]\nidle_timeout = "15m"\n');
    const { stdout } = await run(NODE, [MAIN, '--config', path, 'config', 'check']);
    assert.match(stdout, /good\.toml: valid/);
    assert.match(stdout, /hostname = "mail\.example\.net"/);
    assert.match(stdout, /idle_timeout = "15m"/);
    assert.match(stdout, /failure_delay = "2s"/);
  });

  test('POPGATE_CONFIG names the file when --config is absent', async () => {
    const path = join(dir, 'env.toml');
    writeFileSync(path, 'hostname = "env.example.net"\n');
    const { stdout } = await run(NODE, [MAIN, 'config', 'check'], { env: { ...process.env, POPGATE_CONFIG: path } });
    assert.match(stdout, /hostname = "env\.example\.net"/);
  });
});
