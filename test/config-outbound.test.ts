import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { ConfigError, loadConfigFile, parseConfig } from '../src/config/load.ts';
import { MAIN, NODE, ROOT } from './helpers/process.ts';

// The [dns], [outbound] and [dkim] keys (docs/configuration.md): a mistake is refused before
// anything starts, with a message that names the key, and exit code 2 from the CLI. Defaults
// are the documented ones, durations come out in milliseconds, paths absolute.

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'popgate-config-outbound-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(raw: unknown): string {
  try {
    parseConfig(raw, 'popgate.toml', dir);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a ConfigError, not ${String(error)}`);
    assert.equal(error.exitCode, 2);
    return error.message;
  }
  assert.fail(`expected a config error for ${JSON.stringify(raw)}`);
}

const withRelayhost = (relayhost: string, extra: Record<string, unknown> = {}) => ({
  outbound: { relayhost, relayhost_user: 'relay-user', relayhost_password: 'relay secret', ...extra },
});

describe('[outbound] relayhost login', () => {
  test('relayhost_user and relayhost_password come together', () => {
    assert.match(errorOf({ outbound: { relayhost: '127.0.0.1:2626', relayhost_user: 'relay-user' } }), /^popgate\.toml: outbound\.relayhost_password: must be set together with outbound\.relayhost_user/);
    assert.match(errorOf({ outbound: { relayhost: '127.0.0.1:2626', relayhost_password: 'secret' } }), /^popgate\.toml: outbound\.relayhost_user: must be set together with outbound\.relayhost_password/);
    assert.match(errorOf({ outbound: { relayhost_user: 'relay-user', relayhost_password: 'secret' } }), /^popgate\.toml: outbound\.relayhost_user: a login needs outbound\.relayhost/);
    assert.match(errorOf({ outbound: { relayhost: 'smtp.upstream.example:587', relayhost_tls: 'starttls', relayhost_user: 'relay-user' } }), /outbound\.relayhost_password: must be set together/);
  });

  test('a login to a relayhost across the network needs "starttls" or "tls": the error names outbound.relayhost_tls', () => {
    for (const tls of [undefined, 'opportunistic', 'none']) {
      const raw = withRelayhost('smtp.upstream.example:587', tls ? { relayhost_tls: tls } : {});
      assert.match(errorOf(raw), /^popgate\.toml: outbound\.relayhost_tls: must be "starttls" or "tls" when outbound\.relayhost_user is set/, `relayhost_tls = ${tls}`);
    }
    assert.match(errorOf(withRelayhost('192.0.2.25:25')), /outbound\.relayhost_tls: /, 'an IP address off loopback too');
  });

  test('with "starttls" or "tls" the login is accepted anywhere', () => {
    for (const tls of ['starttls', 'tls']) {
      const config = parseConfig(withRelayhost('smtp.upstream.example:587', { relayhost_tls: tls }), 'test', dir);
      assert.equal(config.outbound.relayhost_tls, tls);
      assert.equal(config.outbound.relayhost_user, 'relay-user');
    }
  });

  test('on loopback the password never crosses the network: opportunistic (the default) is accepted', () => {
    for (const relayhost of ['127.0.0.1:10025', '127.0.0.1', '[::1]:10025', 'localhost:10025']) {
      const config = parseConfig(withRelayhost(relayhost), 'test', dir);
      assert.equal(config.outbound.relayhost, relayhost);
      assert.equal(config.outbound.relayhost_tls, 'opportunistic');
    }
  });
});

describe('[outbound] next hops', () => {
  test('a transport next hop that is not host[:port] is refused, naming the domain entry', () => {
    assert.match(errorOf({ outbound: { transport: { 'partner.example': 'a b:25' } } }), /^popgate\.toml: outbound\.transport\.partner\.example: "a b" is neither a host name nor an IP address/);
    assert.match(errorOf({ outbound: { transport: { 'partner.example': 'host:99999' } } }), /outbound\.transport\.partner\.example: port 99999 is out of range 1-65535/);
    assert.match(errorOf({ outbound: { transport: { 'partner.example': '' } } }), /outbound\.transport\.partner\.example: "" is not host:port/);
  });

  test('a transport key that is not a domain name is refused, naming the key', () => {
    assert.match(errorOf({ outbound: { transport: { 'bad domain!': '10.1.2.3:25' } } }), /^popgate\.toml: outbound\.transport\.bad domain!: /);
  });

  test(
    'the refusal of a transport key says why (the schema\'s "must be a domain name")',
    () => {
      assert.match(errorOf({ outbound: { transport: { 'bad domain!': '10.1.2.3:25' } } }), /outbound\.transport\.bad domain!: must be a domain name/);
    },
  );

  test('valid transport entries and relayhosts are kept as written', () => {
    const config = parseConfig(
      { outbound: { relayhost: 'smtp.upstream.example:587', transport: { 'partner.example': '10.1.2.3:25', 'school.example': 'mx.school.internal', 'v6.example': '[2001:db8::25]:2525' } } },
      'test',
      dir,
    );
    assert.deepEqual(config.outbound.transport, { 'partner.example': '10.1.2.3:25', 'school.example': 'mx.school.internal', 'v6.example': '[2001:db8::25]:2525' });
    assert.equal(config.outbound.relayhost, 'smtp.upstream.example:587');
  });

  test('a relayhost that is not host[:port] is refused', () => {
    assert.match(errorOf({ outbound: { relayhost: 'smtp upstream:587' } }), /outbound\.relayhost: "smtp upstream" is neither a host name nor an IP address/);
    assert.match(errorOf({ outbound: { relayhost: 'smtp.upstream.example:0' } }), /outbound\.relayhost: port 0 is out of range/);
  });

  test('the TLS policies are closed lists', () => {
    assert.match(errorOf({ outbound: { tls: 'maybe' } }), /outbound\.tls: .*"opportunistic"\|"required"\|"none"/);
    assert.match(errorOf({ outbound: { relayhost_tls: 'required' } }), /outbound\.relayhost_tls: .*"starttls"/);
    assert.match(errorOf({ outbound: { port: 0 } }), /outbound\.port: /);
    assert.match(errorOf({ outbound: { port: 65536 } }), /outbound\.port: /);
  });
});

describe('[dns] servers', () => {
  test('entries must be IP addresses with an optional port, not host names', () => {
    assert.match(errorOf({ dns: { servers: ['resolver.example'] } }), /^popgate\.toml: dns\.servers\[0\]: "resolver\.example" is not an IP address with an optional port/);
    assert.match(errorOf({ dns: { servers: ['127.0.0.1:5353', 'resolver.example:53'] } }), /dns\.servers\[1\]: "resolver\.example:53" is not an IP address/);
    assert.match(errorOf({ dns: { servers: ['10.0.0.53:99999'] } }), /dns\.servers\[0\]: "10\.0\.0\.53:99999" is not an IP address with an optional port/);
    assert.match(errorOf({ dns: { servers: ['10.0.0.0/8'] } }), /dns\.servers\[0\]: /);
  });

  test('IPv4 and IPv6 addresses, with or without a port, are accepted', () => {
    const servers = ['10.0.0.53', '127.0.0.1:5353', '2001:db8::53', '[2001:db8::53]:5353'];
    assert.deepEqual(parseConfig({ dns: { servers } }, 'test', dir).dns.servers, servers);
  });

  test('a bad timeout names dns.timeout', () => {
    assert.match(errorOf({ dns: { timeout: '5 seconds' } }), /dns\.timeout: "5 seconds" is not a duration/);
  });
});

describe('[outbound] durations', () => {
  test('retry_schedule needs at least one wait, each a duration', () => {
    assert.match(errorOf({ outbound: { retry_schedule: [] } }), /^popgate\.toml: outbound\.retry_schedule: /);
    assert.match(errorOf({ outbound: { retry_schedule: ['5m', '5 minutes'] } }), /outbound\.retry_schedule\[1\]: "5 minutes" is not a duration/);
    assert.match(errorOf({ outbound: { retry_schedule: '5m' } }), /outbound\.retry_schedule: /);
  });

  test('durations are read into milliseconds', () => {
    const { outbound } = parseConfig(
      { outbound: { retry_schedule: ['500ms', '30s', '10m', '2h'], connect_timeout: '1.5s', max_lifetime: '2d', command_timeout: '1m' } },
      'test',
      dir,
    );
    assert.deepEqual(outbound.retry_schedule, [500, 30_000, 600_000, 7_200_000]);
    assert.equal(outbound.connect_timeout, 1500);
    assert.equal(outbound.command_timeout, 60_000);
    assert.equal(outbound.max_lifetime, 172_800_000);
  });

  test('delay_warning = "0s" is accepted and turns warnings off (0)', () => {
    assert.equal(parseConfig({ outbound: { delay_warning: '0s' } }, 'test', dir).outbound.delay_warning, 0);
  });

  test('a bad duration names its key', () => {
    for (const key of ['connect_timeout', 'command_timeout', 'max_lifetime', 'delay_warning']) {
      assert.match(errorOf({ outbound: { [key]: 'soon' } }), new RegExp(`outbound\\.${key}: "soon" is not a duration`));
    }
  });
});

describe('defaults', () => {
  test('an empty file gives the documented [dns], [outbound] and [dkim] defaults', () => {
    const config = parseConfig({}, 'test', dir);
    assert.deepEqual(config.dns, { servers: [], timeout: 5000 });
    const { outbound } = config;
    assert.equal(outbound.enabled, true);
    assert.equal(outbound.port, 25);
    assert.equal(outbound.relayhost, '');
    assert.equal(outbound.relayhost_tls, 'opportunistic');
    assert.equal(outbound.tls, 'opportunistic');
    assert.deepEqual(outbound.transport, {});
    assert.equal(outbound.max_connections, 20);
    assert.equal(outbound.max_connections_per_domain, 4);
    assert.equal(outbound.max_messages_per_connection, 100);
    assert.equal(outbound.connect_timeout, 30_000);
    assert.equal(outbound.command_timeout, 300_000, 'RFC 5321 §4.5.3.2: 5 minutes');
    assert.deepEqual(outbound.retry_schedule, [5, 10, 20, 40, 80, 160, 240].map((minutes) => minutes * 60_000));
    assert.equal(outbound.max_lifetime, 5 * 86_400_000);
    assert.equal(outbound.delay_warning, 4 * 3_600_000);
    assert.equal(outbound.bounce_size_limit, 102_400);
    assert.equal(config.dkim.selector, 'popgate');
  });

  test('dkim.keys_dir defaults to data_dir/dkim, absolute', () => {
    assert.equal(parseConfig({}, 'test', dir).dkim.keys_dir, join(dir, 'data', 'dkim'));
    assert.equal(parseConfig({ data_dir: '/var/lib/popgate' }, 'test', dir).dkim.keys_dir, '/var/lib/popgate/dkim');
    assert.equal(parseConfig({ data_dir: 'spool' }, 'test', dir).dkim.keys_dir, join(dir, 'spool', 'dkim'));
  });

  test('a relative keys_dir is taken from the config file\'s folder, not from the working directory', () => {
    const folder = join(dir, 'etc-popgate');
    mkdirSync(folder, { recursive: true });
    const path = join(folder, 'popgate.toml');
    writeFileSync(path, '[dkim]\nkeys_dir = "keys"\nselector = "s2026"\n');
    const config = loadConfigFile(path);
    assert.equal(config.dkim.keys_dir, join(folder, 'keys'));
    assert.equal(config.dkim.selector, 's2026');
    assert.equal(parseConfig({ dkim: { keys_dir: '/etc/popgate/dkim' } }, 'test', dir).dkim.keys_dir, '/etc/popgate/dkim');
  });

  test('a selector must be a DNS label', () => {
    assert.match(errorOf({ dkim: { selector: 'my selector' } }), /dkim\.selector: must be a DNS label/);
    assert.match(errorOf({ dkim: { keys: 'x' } }), /dkim\.keys: unknown key/);
  });
});

describe('popgate config check (the real CLI)', { concurrency: true }, () => {
  async function check(name: string, toml: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const folder = join(dir, `cli-${name}`);
    mkdirSync(folder, { recursive: true });
    const path = join(folder, 'popgate.toml');
    writeFileSync(path, toml);
    return checkFile(path);
  }

  async function checkFile(path: string): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await run(NODE, [MAIN, '--config', path, 'config', 'check']);
      return { code: 0, stdout, stderr };
    } catch (error) {
      const failure = error as { code: number; stdout: string; stderr: string };
      return { code: failure.code, stdout: failure.stdout, stderr: failure.stderr };
    }
  }

  test('a relayhost login without its password: exit code 2, naming outbound.relayhost_password', async () => {
    const result = await check('user-only', '[outbound]\nrelayhost = "smtp.upstream.example:587"\nrelayhost_tls = "starttls"\nrelayhost_user = "relay-user"\n');
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /popgate: config error: .*popgate\.toml: outbound\.relayhost_password: must be set together with outbound\.relayhost_user/);
    assert.equal(result.stdout, '');
  });

  test('a login over opportunistic TLS across the network: exit code 2, naming outbound.relayhost_tls; on 127.0.0.1 it is valid', async () => {
    const login = 'relayhost_user = "relay-user"\nrelayhost_password = "relay secret"\n';
    const remote = await check('remote-login', `[outbound]\nrelayhost = "smtp.upstream.example:587"\nrelayhost_tls = "opportunistic"\n${login}`);
    assert.equal(remote.code, 2, remote.stderr);
    assert.match(remote.stderr, /outbound\.relayhost_tls: must be "starttls" or "tls"/);
    const local = await check('local-login', `[outbound]\nrelayhost = "127.0.0.1:10025"\nrelayhost_tls = "opportunistic"\n${login}`);
    assert.equal(local.code, 0, local.stderr);
    assert.match(local.stdout, /: valid\n/);
    assert.match(local.stdout, /relayhost = "127\.0\.0\.1:10025"/);
  });

  test('every schema mistake in [dns] and [outbound] is reported at once, each naming its key: exit code 2', async () => {
    const result = await check(
      'many',
      '[dns]\nservers = ["resolver.example"]\n\n[outbound]\nretry_schedule = ["5m", "later"]\n\n[outbound.transport]\n"partner.example" = "a b:25"\n"school.example" = "mx.school.internal:99999"\n',
    );
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /dns\.servers\[0\]: "resolver\.example" is not an IP address with an optional port/);
    assert.match(result.stderr, /outbound\.retry_schedule\[1\]: "later" is not a duration/);
    assert.match(result.stderr, /outbound\.transport\.partner\.example: "a b" is neither a host name nor an IP address/);
    assert.match(result.stderr, /outbound\.transport\.school\.example: port 99999 is out of range 1-65535/);
  });

  test('an empty retry_schedule: exit code 2, naming outbound.retry_schedule', async () => {
    const result = await check('empty-schedule', '[outbound]\nretry_schedule = []\n');
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /outbound\.retry_schedule: /);
  });

  test('a relative dkim.keys_dir is printed resolved from the config file\'s folder', async () => {
    const result = await check('keys-dir', 'data_dir = "state"\n[dkim]\nkeys_dir = "dkim-keys"\n[outbound]\ndelay_warning = "0s"\n');
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`keys_dir = "${join(dir, 'cli-keys-dir', 'dkim-keys').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`));
    assert.match(result.stdout, /data_dir = ".*cli-keys-dir\/state"/);
  });

  test('popgate.example.toml in the repository passes', async () => {
    const result = await checkFile(join(ROOT, 'popgate.example.toml'));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /popgate\.example\.toml: valid\n/);
    assert.match(result.stdout, /keys_dir = "\/var\/lib\/popgate\/dkim"/);
    assert.match(result.stdout, /selector = "popgate"/);
  });

  test(
    'the effective configuration it prints is itself a valid config file: [dns] and [outbound] durations are written back as durations',
    async () => {
      const first = await check('round-trip', 'hostname = "mail.example.net"\n');
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /connect_timeout = "30s"/);
      assert.match(first.stdout, /max_lifetime = "5d"/);
      assert.match(first.stdout, /retry_schedule = \[\s*"5m",\s*"10m"/);
      const printed = join(dir, 'cli-round-trip', 'printed.toml');
      writeFileSync(printed, first.stdout);
      const second = await checkFile(printed);
      assert.equal(second.code, 0, second.stderr);
    },
  );
});
