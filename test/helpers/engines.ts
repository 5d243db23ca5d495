import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The real engines popgate's cluster backends run on, started by the tests themselves on free
// loopback ports in temporary folders and stopped afterwards: Debian's redis-server and
// PostgreSQL (initdb in a temporary folder, run as the postgres user when the tests run as
// root), HAProxy, the rspamd popgate's inbound filter asks (see startRspamd), and Dovecot's POP3
// server (an old server to migrate from, see startDovecot); and the tools the operations tests
// run on popgate's contrib/ files (systemd-analyze, fail2ban-regex), and strace, which shows the
// order of a delivery's file calls (test/durable-off-loop.test.ts). `.ci/run` installs them.
// Without an engine a test is skipped with the reason, except under CI (the CI environment
// variable set), where a missing engine is a failure: a test that silently does not run proves
// nothing.

export type EngineName = 'redis-server' | 'postgres' | 'haproxy' | 'rspamd' | 'dovecot' | 'nmap' | 'systemd-analyze' | 'fail2ban-regex' | 'strace';

/** The Debian package of each engine, for the skip reason. */
const PACKAGES: Record<EngineName, string> = {
  'redis-server': 'redis-server',
  postgres: 'postgresql',
  haproxy: 'haproxy',
  rspamd: 'rspamd',
  dovecot: 'dovecot-pop3d',
  nmap: 'nmap',
  'systemd-analyze': 'systemd',
  'fail2ban-regex': 'fail2ban',
  strace: 'strace',
};


/** Where an engine's binary is, or undefined. */
export function findEngine(name: EngineName): string | undefined {
  if (name === 'postgres') {
    const root = '/usr/lib/postgresql';
    const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))) : [];
    versions.sort((a, b) => Number(b) - Number(a));
    return versions.length > 0 ? join(root, versions[0], 'bin') : undefined;
  }
  // Dovecot's POP3 server comes in its own package (dovecot-pop3d) beside the master binary.
  if (name === 'dovecot' && !existsSync('/usr/lib/dovecot/pop3')) return undefined;
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/usr/local/bin'])) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/**
 * For `describe(name, { skip: missingEngine('redis-server') }, …)`: the reason to skip, or
 * false. Under CI a missing engine throws instead, so the run fails.
 */
export function missingEngine(...names: EngineName[]): string | false {
  const missing = names.filter((name) => !findEngine(name));
  // A private Dovecot switches to the mail user itself, which only root may do.
  if (missing.length === 0 && names.includes('dovecot') && process.getuid?.() !== 0) {
    if (process.env.CI) throw new Error('CI: the Dovecot tests need root');
    return 'the Dovecot tests need root (Dovecot switches to the mail user itself)';
  }
  if (missing.length === 0) return false;
  const reason = `${missing.join(', ')} not installed (apt-get install ${missing.map((m) => PACKAGES[m]).join(' ')})`;
  if (process.env.CI) throw new Error(`CI: ${reason}: the tests that need it cannot be skipped`);
  return reason;
}

/** A free TCP port on 127.0.0.1 (closed again, so the engine can take it). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves once host:port accepts a connection, or rejects after `timeoutMs`. */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once nothing accepts connections on host:port any more (or after ~10 s). */
async function waitForPortClosed(port: number, host = '127.0.0.1'): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const busy = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (!busy) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * The uid/gid of the system account an engine runs as when the tests run as root (PostgreSQL
 * and rspamd refuse to run as root), given to spawn so that signals reach the engine itself
 * rather than a wrapper; undefined when the tests do not run as root.
 */
function unprivilegedAccount(account: string, engine: string): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = spawnSync('id', ['-u', account], { encoding: 'utf8' }).stdout.trim();
  const gid = spawnSync('id', ['-g', account], { encoding: 'utf8' }).stdout.trim();
  if (!uid) throw new Error(`running as root, but there is no ${account} user to run ${engine} as`);
  return { uid: Number(uid), gid: Number(gid) };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export interface RunningEngine {
  readonly url: string;
  readonly port: number;
  /** The engine's main process (redis-server, the postmaster) while it runs, e.g. for its CPU time in /proc. */
  readonly pid: number | undefined;
  /** Stops the engine (its data stays until `destroy`). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data. */
  start(): Promise<void>;
  /** Stops it and removes its folder. */
  destroy(): Promise<void>;
}

/** A private redis-server on a free port: no persistence, loopback only. */
export async function startRedis(): Promise<RunningEngine> {
  const binary = findEngine('redis-server');
  if (!binary) throw new Error('redis-server is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'popgate-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const output: string[] = [];
  const start = async () => {
    child = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (chunk) => output.push(String(chunk)));
    child.stderr!.on('data', (chunk) => output.push(String(chunk)));
    await waitForPort(port).catch((error) => {
      throw new Error(`${error.message}: ${output.join('')}`);
    });
  };
  const stop = async () => {
    if (!child) return;
    child.kill('SIGKILL');
    await exited(child);
    child = undefined;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return child?.pid;
    },
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A private PostgreSQL cluster: initdb in a temporary folder (as the postgres user when the
 * tests run as root, since PostgreSQL refuses to run as root), trust authentication on
 * 127.0.0.1 and a socket in the same folder, and a database named `popgate`.
 */
export async function startPostgres(): Promise<RunningEngine & { socketDir: string }> {
  const bin = findEngine('postgres');
  if (!bin) throw new Error('PostgreSQL is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'popgate-pg-'));
  // As root, everything runs as the postgres user (uid/gid given to spawn, so signals reach
  // PostgreSQL itself rather than a wrapper).
  const user = unprivilegedAccount('postgres', 'PostgreSQL');
  if (user) chownSync(dir, user.uid, user.gid);
  const run = (command: string, args: string[]) => spawnSync(join(bin, command), args, { encoding: 'utf8', ...user });
  const data = join(dir, 'data');
  const init = run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  let child: ChildProcess | undefined;
  const output: string[] = [];
  const start = async () => {
    const args = ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=200'];
    child = spawn(join(bin, 'postgres'), args, { stdio: ['ignore', 'pipe', 'pipe'], ...user });
    child.stdout!.on('data', (chunk) => output.push(String(chunk)));
    child.stderr!.on('data', (chunk) => output.push(String(chunk)));
    await waitForPort(port).catch((error) => {
      throw new Error(`${error.message}: ${output.join('')}`);
    });
    // Accepting connections is not the same as being ready for queries.
    for (let i = 0; ; i++) {
      const ready = run('pg_isready', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres']);
      if (ready.status === 0) break;
      if (i > 200) throw new Error(`PostgreSQL did not become ready: ${output.join('')}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const stop = async () => {
    if (!child) return;
    // SIGQUIT: immediate shutdown, like a crash, with no checkpoint to wait for.
    child.kill('SIGQUIT');
    await exited(child);
    child = undefined;
    // Its backends may outlive the postmaster by a moment: wait until the port is free.
    await waitForPortClosed(port);
  };
  await start();
  const created = run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', 'CREATE DATABASE popgate']);
  if (created.status !== 0) throw new Error(`cannot create the database: ${created.stderr}`);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/popgate`,
    port,
    socketDir: dir,
    get pid() {
      return child?.pid;
    },
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RunningHaproxy {
  /** The ports of the config's `bind` lines, in order. */
  readonly ports: number[];
  /** What HAProxy printed (warnings, alerts), for a failing test's message. */
  output(): string;
  /** Stops HAProxy and removes its folder. */
  destroy(): Promise<void>;
}

/**
 * A private HAProxy in the foreground (-db) with `config`, which binds only loopback
 * addresses (`bind 127.0.0.1:PORT`, ports from freePort()). The config is checked first (-c)
 * so a mistake in it reads as HAProxy's own message; resolves once every bind port accepts.
 */
export async function startHaproxy(config: string): Promise<RunningHaproxy> {
  const binary = findEngine('haproxy');
  if (!binary) throw new Error('haproxy is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'popgate-haproxy-'));
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const check = spawnSync(binary, ['-c', '-q', '-f', file], { encoding: 'utf8' });
  if (check.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`haproxy rejects the config: ${check.stderr || check.stdout}`);
  }
  const binds = [...config.matchAll(/^\s*bind\s+(127(?:\.\d+){3}):(\d+)/gm)].map((match) => ({ host: match[1], port: Number(match[2]) }));
  const output: string[] = [];
  const child = spawn(binary, ['-db', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (chunk) => output.push(String(chunk)));
  child.stderr!.on('data', (chunk) => output.push(String(chunk)));
  const destroy = async () => {
    child.kill('SIGKILL');
    await exited(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const bind of binds) await waitForPort(bind.port, bind.host);
  } catch (error) {
    await destroy();
    throw new Error(`${(error as Error).message}: ${output.join('')}`);
  }
  return { ports: binds.map((bind) => bind.port), output: () => output.join(''), destroy };
}

export interface RunningRspamd extends RunningEngine {
  /** The normal worker, http://127.0.0.1:PORT: what popgate's `[filter.rspamd] url` names. */
  readonly url: string;
  /** The controller worker (web UI, /history, /stat; it answers /checkv2 too, with its password). */
  readonly controllerUrl: string;
  readonly controllerPassword: string;
  /** What rspamd logged (console logging at level info: one line per scan, with qid, ip, user, rcpts). */
  output(): string;
}

/**
 * The test configuration of startRspamd, in local.d/ of its folder. Every module that would
 * ask the network is disabled (DNS lists, SPF, DKIM, DMARC, ARC, ASN, hfilter's DNS checks,
 * fuzzy hashes at rspamd.com, the maps downloaded from maps.rspamd.com), and rspamd's resolver
 * points at a closed loopback port, so nothing leaves the machine and a scan takes
 * milliseconds. (Traced: the one query left is the PTR lookup rspamd makes itself for a
 * request without a Hostname header, and it goes to that port.) The content rules (regexp, GTUBE, MIME and header checks, chartable) and the
 * package's scores and actions (reject 15, add header 6, greylist 4) stay as Debian ships them.
 */
const RSPAMD_DISABLED_MODULES = [
  'rbl', // DNS block lists, SURBL and the emails rules (rspamd 3.4 folds both into rbl)
  'fuzzy_check', // UDP to fuzzy1/fuzzy2.rspamd.com, resolved with the system resolver at start
  'spf',
  'dkim',
  'dmarc',
  'arc',
  'asn', // asn.rspamd.com
  'hfilter', // resolves the HELO name and the sender's domain
  'phishing', // openphish/phishtank feeds and maps.rspamd.com
  'multimap', // freemail and disposable lists from maps.rspamd.com
  'whitelist', // maps.rspamd.com
  'mime_types', // maps.rspamd.com
  'mid', // maps.rspamd.com
];

/**
 * rspamd.local.lua of the test configuration: one prefilter for tests that need to see what
 * rspamd parsed or need an action other than reject/no action from the real rspamd. A message
 * with an `X-Popgate-Test` header gets the envelope rspamd parsed (IP, HELO, hostname, user,
 * queue id, MAIL FROM, RCPT TO) as its `messages.smtp_message`, as JSON; a value other than
 * "echo" is an action rspamd is made to answer (`task:set_pre_result`), e.g. "rewrite subject".
 */
const RSPAMD_TEST_RULES = `
local ucl = require "ucl"

local function addresses(list)
  local found = {}
  for _, address in ipairs(list or {}) do table.insert(found, address.addr) end
  return found
end

rspamd_config:register_symbol({
  name = 'POPGATE_TEST',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local wanted = task:get_header('X-Popgate-Test')
    if not wanted then return end
    local ip = task:get_from_ip()
    local envelope = ucl.to_format({
      ip = ip and ip:is_valid() and tostring(ip) or nil,
      helo = task:get_helo(),
      hostname = task:get_hostname(),
      user = task:get_user(),
      queue_id = task:get_queue_id(),
      from = addresses(task:get_from('smtp'))[1],
      rcpt = addresses(task:get_recipients('smtp')),
    }, 'json-compact')
    if wanted == 'echo' then
      task:append_message(envelope, 'smtp_message')
    else
      task:set_pre_result(wanted, envelope, 'popgate-test')
    end
  end,
})
`;

/** A settings id of startRspamd's configuration: reject at 500 instead of 15. */
export const RSPAMD_TEST_SETTINGS_ID = 'popgate_test_lenient';

/**
 * A private rspamd (Debian's package) on two free loopback ports: the normal worker (the
 * /checkv2 popgate calls) and the controller. Its rules, scores and actions are the package's
 * own (`$CONFDIR/common.conf`, i.e. /etc/rspamd); the top-level file, the workers and local.d/
 * are in a temporary folder that is also its LOCAL_CONFDIR, DBDIR and RUNDIR, so nothing of
 * /etc/rspamd or /var/lib/rspamd is written or read besides the package's rules. It runs in the
 * foreground (-f) as the tests' user, or as _rspamd when the tests run as root, in a process
 * group of its own so that stop() ends the main process and its workers together. Two things
 * keep a start to a few seconds (loading its language models takes most of them): the URL
 * suffix list is five suffixes (com, net, org, example,
 * test) rather than the public suffix list, whose 9628 entries take 20-30 s to compile at every
 * start with a fresh cache folder; and Hyperscan is off, so no helper process compiles the
 * regular expressions in the background while the tests run (they run on PCRE instead). No
 * Redis: the modules that need one (Bayes, neural, greylisting, ratelimit, reputation,
 * replies) turn themselves off.
 * Resolves once the normal worker answers /ping.
 */
export async function startRspamd(): Promise<RunningRspamd> {
  const binary = findEngine('rspamd');
  if (!binary) throw new Error('rspamd is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'popgate-rspamd-'));
  const [port, controllerPort, deadDnsPort] = [await freePort(), await freePort(), await freePort()];
  const controllerPassword = 'popgate-test-controller';
  const localD = join(dir, 'local.d');
  mkdirSync(localD);
  mkdirSync(join(dir, 'db'));
  writeFileSync(
    join(dir, 'rspamd.conf'),
    `# popgate's test rspamd (test/helpers/engines.ts): the package's rules, our workers.
.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
  type = "console";
  level = "info";
}
worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  count = 1;
  .include "$CONFDIR/worker-normal.inc"
}
worker "controller" {
  bind_socket = "127.0.0.1:${controllerPort}";
  count = 1;
  password = "${controllerPassword}";
}
`,
  );
  writeFileSync(
    join(localD, 'options.inc'),
    `dns {
  nameserver = ["127.0.0.1:${deadDnsPort}"];
  timeout = 0.2s;
  retransmits = 1;
}
disable_hyperscan = true;
url_tld = "$LOCAL_CONFDIR/url-suffixes.dat";
`,
  );
  writeFileSync(join(dir, 'url-suffixes.dat'), ['com', 'net', 'org', 'example', 'test'].join('\n') + '\n');
  for (const module of RSPAMD_DISABLED_MODULES) writeFileSync(join(localD, `${module}.conf`), 'enabled = false;\n');
  // A settings id for tests of the Settings-ID header: its reject threshold shows in the answer.
  writeFileSync(join(localD, 'settings.conf'), `${RSPAMD_TEST_SETTINGS_ID} {\n  id = "${RSPAMD_TEST_SETTINGS_ID}";\n  apply { actions { reject = 500; "add header" = 400; greylist = 300; } }\n}\n`);
  // X-Spamd-Result, X-Rspamd-Server, X-Rspamd-Queue-Id: headers to add in every answer.
  writeFileSync(join(localD, 'milter_headers.conf'), 'extended_spam_headers = true;\n');
  writeFileSync(join(dir, 'rspamd.local.lua'), RSPAMD_TEST_RULES);
  const user = unprivilegedAccount('_rspamd', 'rspamd');
  if (user) for (const path of ['', 'local.d', 'db']) chownSync(join(dir, path), user.uid, user.gid);
  const vars = { LOCAL_CONFDIR: dir, DBDIR: join(dir, 'db'), RUNDIR: dir, LOGDIR: dir };
  const args = ['-f', '-c', join(dir, 'rspamd.conf'), ...Object.entries(vars).flatMap(([name, value]) => ['--var', `${name}=${value}`])];
  let child: ChildProcess | undefined;
  // Bounded: a long test scans thousands of messages, each logged.
  let output = '';
  const record = (chunk: Buffer) => {
    output = (output + String(chunk)).slice(-1_000_000);
  };
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (!child) return;
    // The whole group, like a crash: the workers go with the main process.
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error; // all gone already
    }
    await exited(child);
    child = undefined;
    await waitForPortClosed(port);
    await waitForPortClosed(controllerPort);
  };
  const start = async () => {
    child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...user });
    child.stdout!.on('data', record);
    child.stderr!.on('data', record);
    const deadline = Date.now() + 30_000;
    for (;;) {
      // The port accepts before a worker serves it: a request may wait, but not past the deadline.
      const pong = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())) }).then(
        (response) => response.text(),
        () => '',
      );
      if (pong.trim() === 'pong') return;
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`rspamd did not answer /ping: ${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  try {
    await start();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url,
    port,
    controllerUrl: `http://127.0.0.1:${controllerPort}`,
    controllerPassword,
    output: () => output,
    get pid() {
      return child?.pid;
    },
    stop,
    start,
    async destroy() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface DovecotUser {
  address: string;
  password: string;
  /** A doveadm pw scheme: SHA512-CRYPT, BLF-CRYPT ... */
  scheme: string;
}

export interface RunningDovecot {
  readonly port: number;
  /** The passwd-file, user@domain:{SCHEME}hash:uid:gid::home:: */
  readonly passwdFile: string;
  /** The folder of <domain>/<user>/ Maildirs (mail_location maildir:<vmail>/%d/%n). */
  readonly vmail: string;
  /** Its pop3_uidl_format. */
  readonly uidlFormat: string;
  /** The Maildir of an address. */
  maildir(address: string): string;
  /** Puts a message into the address's new/, as a delivery agent would (owned by the mail user). */
  deliver(address: string, text: string): string;
  /** What Dovecot printed to its log, for a failing test's message. */
  log(): string;
  /** Stops Dovecot and removes its folder. */
  destroy(): Promise<void>;
}

/**
 * A private Dovecot 2.3 serving POP3 on a free loopback port (as bench/peers/ runs it for the
 * benchmarks): users in a passwd-file with hashes made by `doveadm pw`, each user's Maildir at
 * <vmail>/<domain>/<local> owned by Debian's mail user, plaintext USER/PASS without TLS.
 * Dovecot drops privileges itself, so this needs root (CI runs as root).
 */
export async function startDovecot(users: DovecotUser[], options: { uidlFormat?: string } = {}): Promise<RunningDovecot> {
  const binary = findEngine('dovecot');
  if (!binary) throw new Error('dovecot is not installed');
  if (process.getuid?.() !== 0) throw new Error('a private Dovecot needs root (it switches to the mail user itself)');
  const id = (flag: string, name: string) => Number(spawnSync('id', [flag, name], { encoding: 'utf8' }).stdout.trim());
  const mail = { uid: id('-u', 'mail'), gid: id('-g', 'mail') };
  const dir = mkdtempSync(join(tmpdir(), 'popgate-dovecot-'));
  // Dovecot's unprivileged processes (pop3 as the mail user, login as dovenull) must reach it.
  chmodSync(dir, 0o755);
  const vmail = join(dir, 'vmail');
  mkdirSync(vmail, { mode: 0o755 });
  chownSync(vmail, mail.uid, mail.gid);
  const uidlFormat = options.uidlFormat ?? '%08Xu%08Xv';
  const port = await freePort();
  const passwdFile = join(dir, 'passwd');
  const logFile = join(dir, 'dovecot.log');
  const configFile = join(dir, 'dovecot.conf');
  writeFileSync(
    configFile,
    [
      `instance_name = popgate-test-${process.pid}-${port}`,
      `base_dir = ${join(dir, 'run')}`,
      `state_dir = ${join(dir, 'state')}`,
      `log_path = ${logFile}`,
      'protocols = pop3',
      'listen = 127.0.0.1',
      'ssl = no',
      'disable_plaintext_auth = no',
      'auth_mechanisms = plain',
      `passdb {\n  driver = passwd-file\n  args = username_format=%u ${passwdFile}\n}`,
      `userdb {\n  driver = passwd-file\n  args = username_format=%u ${passwdFile}\n}`,
      `mail_location = maildir:${vmail}/%d/%n`,
      `first_valid_uid = ${mail.uid}`,
      `pop3_uidl_format = ${uidlFormat}`,
      `service pop3-login {\n  inet_listener pop3 {\n    address = 127.0.0.1\n    port = ${port}\n  }\n  inet_listener pop3s {\n    port = 0\n  }\n}`,
      '',
    ].join('\n'),
  );
  mkdirSync(join(dir, 'state'));
  const maildir = (address: string) => join(vmail, address.slice(address.indexOf('@') + 1), address.slice(0, address.indexOf('@')));
  const lines: string[] = [];
  for (const user of users) {
    const pw = spawnSync('doveadm', ['-c', configFile, 'pw', '-s', user.scheme, '-p', user.password], { encoding: 'utf8' });
    if (pw.status !== 0) throw new Error(`doveadm pw -s ${user.scheme} failed: ${pw.stderr}`);
    lines.push(`${user.address}:${pw.stdout.trim()}:${mail.uid}:${mail.gid}::${maildir(user.address)}::\n`);
    for (const path of [join(vmail, user.address.slice(user.address.indexOf('@') + 1)), maildir(user.address)]) {
      mkdirSync(path, { recursive: true, mode: 0o700 });
      chownSync(path, mail.uid, mail.gid);
    }
    for (const sub of ['cur', 'new', 'tmp']) {
      mkdirSync(join(maildir(user.address), sub), { mode: 0o700 });
      chownSync(join(maildir(user.address), sub), mail.uid, mail.gid);
    }
  }
  writeFileSync(passwdFile, lines.join(''), { mode: 0o644 });
  const output: string[] = [];
  // -F: in the foreground, so the test owns the process and stops it by its pid.
  const child = spawn(binary, ['-F', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (chunk) => output.push(String(chunk)));
  child.stderr!.on('data', (chunk) => output.push(String(chunk)));
  const log = () => `${output.join('')}${existsSync(logFile) ? spawnSync('tail', ['-n', '40', logFile], { encoding: 'utf8' }).stdout : ''}`;
  const destroy = async () => {
    child.kill('SIGTERM');
    await exited(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(port);
  } catch (error) {
    await destroy();
    throw new Error(`${(error as Error).message}: ${log()}`);
  }
  let delivered = 0;
  return {
    port,
    passwdFile,
    vmail,
    uidlFormat,
    maildir,
    deliver(address: string, text: string) {
      const name = `${1_700_000_000 + delivered}.M${delivered}P${process.pid}.test.invalid,S=${Buffer.byteLength(text)}`;
      delivered++;
      const path = join(maildir(address), 'new', name);
      writeFileSync(path, text, { mode: 0o600 });
      chownSync(path, mail.uid, mail.gid);
      return name;
    },
    log,
    destroy,
  };
}
