import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, cpSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processTree } from '../idle-load.ts';
import type { Endpoint } from '../pop3-load.ts';
import { accepts, freePort } from '../popgate-server.ts';

// Reference peers for `npm run bench -- --peers`: Postfix (SMTP into Maildir), Dovecot (POP3
// from Maildir) and Haraka (SMTP), each run as a private instance on a loopback port, from
// configuration templates kept beside this file (see README.md here for every setting and why).
// Everything an instance writes (config, queue, state, pid files, logs) goes to the workDir the
// caller hands over, so instances never meet each other or a system-wide install.

/** maildir: absolute path of an existing Maildir folder (with cur/ new/ tmp/). */
export interface PeerMailbox {
  address: string;
  password: string;
  maildir: string;
}

export interface RunningPeer {
  name: 'Postfix' | 'Dovecot' | 'Haraka';
  /** e.g. 'Postfix 3.7.11', read from the installed software. */
  version: string;
  smtp?: Endpoint;
  pop3?: Endpoint;
  /** pids of all the server's processes right now (re-read from /proc each call: Postfix and Dovecot fork per connection), for RSS/PSS measurement */
  pids(): number[];
  /** Stops everything it started, waits until ports are closed; idempotent. */
  stop(): Promise<void>;
}

const TEMPLATES = import.meta.dirname;
/** Pinned so that every run measures the same Haraka; bump deliberately (see README.md). */
export const HARAKA_VERSION = '3.3.4';
/**
 * Outside the work tree, so neither git, tsc nor the test runner ever walks Haraka's node_modules;
 * and not under /root, which the mail user that Haraka drops to could not read from.
 */
const HARAKA_PREFIX = join('/var/cache/popgate-bench-peers', `haraka-${HARAKA_VERSION}`);
const HARAKA_PACKAGE = join(HARAKA_PREFIX, 'node_modules', 'Haraka');
/**
 * The peers' Debian packages, and the engines of the cluster rows (bench/scale.ts starts private
 * redis-server and PostgreSQL instances of its own), each with how to stop the system-wide
 * service should it have started on installation anyway.
 */
const APT_PACKAGES: Record<string, string> = {
  postfix: 'postfix status >/dev/null 2>&1 && postfix stop',
  'dovecot-pop3d': '[ -e /run/dovecot/master.pid ] && doveadm stop',
  'redis-server': '[ -x /etc/init.d/redis-server ] && /etc/init.d/redis-server stop >/dev/null',
  postgresql: '[ -x /etc/init.d/postgresql ] && /etc/init.d/postgresql stop >/dev/null',
};
/** The unprivileged user that owns the Maildirs and that Postfix's virtual(8), Dovecot's pop3 and Haraka run as. */
const MAIL_USER = 'mail';
/** Room for 10,000 concurrent sessions plus the benchmark's own connections and some slack. */
const SESSION_LIMIT = 10_500;
const LOOPBACK = '127.0.0.1';

// --- installation ---

/**
 * Installs what is missing: postfix, dovecot-pop3d, redis-server and postgresql from Debian
 * (needs root and the Debian archive), Haraka from npm into a cache directory outside the
 * repository. Quick when all is there.
 */
export async function installPeers(progress: (text: string) => void): Promise<void> {
  const missing = Object.keys(APT_PACKAGES).filter((name) => !debianPackageInstalled(name));
  if (missing.length > 0) {
    if (process.getuid?.() !== 0) {
      throw new Error(`the reference peers and the cluster rows need the Debian packages ${missing.join(' and ')}: run the benchmark as root (it installs them with apt-get), or install them first: apt-get install ${missing.join(' ')}`);
    }
    await aptInstall(missing, progress);
  }
  if (readJson(join(HARAKA_PACKAGE, 'package.json'))?.version !== HARAKA_VERSION) {
    progress(`installing Haraka ${HARAKA_VERSION} from npm into ${HARAKA_PREFIX}`);
    mkdirSync(HARAKA_PREFIX, { recursive: true });
    // Its own package.json, so npm does not go looking for (and install into) a project above it.
    if (!existsSync(join(HARAKA_PREFIX, 'package.json'))) writeFileSync(join(HARAKA_PREFIX, 'package.json'), '{ "private": true }\n');
    const npm = await run('npm', ['install', '--prefix', HARAKA_PREFIX, '--no-audit', '--no-fund', '--loglevel=error', `Haraka@${HARAKA_VERSION}`]);
    if (npm.code !== 0 || readJson(join(HARAKA_PACKAGE, 'package.json'))?.version !== HARAKA_VERSION) {
      throw new Error(`npm install Haraka@${HARAKA_VERSION} failed (exit ${npm.code}); the npm registry must be reachable:\n${tail(npm.output)}`);
    }
  }
}

function debianPackageInstalled(name: string): boolean {
  // dpkg's status file is the authority; reading it is much quicker than running dpkg-query.
  let status: string;
  try {
    status = readFileSync('/var/lib/dpkg/status', 'latin1');
  } catch {
    return false;
  }
  const entry = status.split('\n\n').find((stanza) => stanza.startsWith(`Package: ${name}\n`));
  return entry !== undefined && /^Status: install ok installed$/m.test(entry);
}

async function aptInstall(packages: string[], progress: (text: string) => void): Promise<void> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // "No configuration": the system-wide Postfix gets no main.cf, so it cannot start by accident.
  await run('debconf-set-selections', [], { input: 'postfix postfix/main_mailer_type select No configuration\n', env });
  // policy-rc.d exiting 101 tells invoke-rc.d not to start the packages' services. Docker images
  // often have one already: that one is left alone, ours is removed afterwards.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) writeFileSync(policy, '#!/bin/sh\n# temporary, from popgate bench/peers: no services started during apt-get install\nexit 101\n', { mode: 0o755 });
  try {
    progress('apt-get update');
    const update = await run('apt-get', ['update'], { env });
    if (update.code !== 0) throw new Error(`apt-get update failed (exit ${update.code}); the Debian archive must be reachable:\n${tail(update.output)}`);
    progress(`apt-get install ${packages.join(' ')}`);
    const install = await run('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { env });
    if (install.code !== 0) throw new Error(`apt-get install ${packages.join(' ')} failed (exit ${install.code}):\n${tail(install.output)}`);
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
  // Should the system-wide services have started anyway (another policy-rc.d that allows them),
  // stop them: the benchmark runs its own instances and wants the machine otherwise quiet.
  await run('sh', ['-c', `${packages.map((name) => APT_PACKAGES[name]).join('; ')}; true`]);
}

// --- Postfix ---

/** Postfix 3.x as an MX for `domain`: smtpd on a loopback port, virtual(8) into the recipients' Maildirs. */
export async function startPostfix(options: { workDir: string; domain: string; recipients: PeerMailbox[]; port?: number }): Promise<RunningPeer> {
  const workDir = resolve(options.workDir);
  const port = options.port ?? (await freePort());
  const user = systemUser(MAIL_USER);
  const configDir = join(workDir, 'postfix-etc');
  const queueDir = join(workDir, 'postfix-queue');
  const dataDir = join(workDir, 'postfix-data');
  const logFile = join(workDir, 'postfix.log');
  // Postfix's daemons run as the postfix user and open files in data_directory by absolute path.
  chmodSync(workDir, 0o755);
  // postfix start creates what lies inside the queue directory (post-install create-missing), not the directory itself.
  for (const dir of [configDir, queueDir]) mkdirSync(dir, { recursive: true, mode: 0o755 });
  prepareMaildirs(options.recipients, user);

  const values = {
    WORK_DIR: workDir,
    QUEUE_DIRECTORY: queueDir,
    DATA_DIRECTORY: dataDir,
    MAILLOG_FILE: logFile,
    DOMAIN: options.domain,
    MAILBOX_MAP: join(configDir, 'vmailbox'),
    MAIL_UID: String(user.uid),
    MAIL_GID: String(user.gid),
    PROCESS_LIMIT: String(SESSION_LIMIT),
    LISTEN: `${LOOPBACK}:${port}`,
  };
  writeFileSync(join(configDir, 'main.cf'), fill('postfix/main.cf', values));
  writeFileSync(join(configDir, 'master.cf'), fill('postfix/master.cf', values));
  // virtual_mailbox_base is "/", so each value is the Maildir's absolute path without the
  // leading "/"; the trailing "/" makes virtual(8) deliver in Maildir format.
  const map = options.recipients.map((r) => `${r.address.toLowerCase()}\t${resolve(r.maildir).slice(1)}/\n`).join('');
  writeFileSync(values.MAILBOX_MAP, `# address\tmailbox (relative to virtual_mailbox_base)\n${map}`);

  const versionRun = await run('postconf', ['-c', configDir, '-h', 'mail_version']);
  const version = `Postfix ${versionRun.output.trim()}`;
  // Returns once the master daemon runs in the background (it waits for it: master -w).
  const started = await run('sh', ['-c', RAISE_FD_LIMIT + 'exec postfix -c "$0" start', configDir]);
  if (started.code !== 0) throw new Error(`postfix start failed (exit ${started.code}; postfix prints why only to a terminal: run postfix -c ${configDir} start):\n${tail(started.output)}\n${tailOfFile(logFile)}`);
  const masterPid = () => readPid(join(queueDir, 'pid', 'master.pid'));
  const smtp = { host: LOOPBACK, port };
  const peer = daemonPeer({
    name: 'Postfix',
    version,
    endpoints: { smtp },
    masterPid,
    stopCommand: () => run('postfix', ['-c', configDir, 'stop']),
  });
  await untilGreeting(smtp, '220 ', peer, logFile);
  return peer;
}

// --- Dovecot ---

/** Dovecot 2.3 serving POP3 from the mailboxes' Maildirs, logins checked against SHA512-CRYPT hashes. */
export async function startDovecot(options: { workDir: string; mailboxes: PeerMailbox[]; port?: number }): Promise<RunningPeer> {
  const workDir = resolve(options.workDir);
  const port = options.port ?? (await freePort());
  const user = systemUser(MAIL_USER);
  const baseDir = join(workDir, 'dovecot-run');
  const stateDir = join(workDir, 'dovecot-state');
  const configFile = join(workDir, 'dovecot.conf');
  const passwdFile = join(workDir, 'dovecot.passwd');
  const logFile = join(workDir, 'dovecot.log');
  mkdirSync(stateDir, { recursive: true });
  // Dovecot's unprivileged processes (pop3 as the mail user, login as dovenull) reach sockets in base_dir.
  chmodSync(workDir, 0o755);
  prepareMaildirs(options.mailboxes, user);

  writeFileSync(
    configFile,
    fill('dovecot/dovecot.conf', {
      INSTANCE_NAME: `popgate-bench-${randomBytes(4).toString('hex')}`,
      BASE_DIR: baseDir,
      STATE_DIR: stateDir,
      LOG_PATH: logFile,
      PASSWD_FILE: passwdFile,
      MAIL_UID: String(user.uid),
      LISTEN: LOOPBACK,
      PORT: String(port),
      SESSION_LIMIT: String(SESSION_LIMIT),
    }),
  );
  // user:{SCHEME}hash:uid:gid:(gecos):home:(shell):extra fields; userdb_mail gives each user its own Maildir.
  const lines: string[] = [];
  const hashes = new Map<string, string>();
  for (const mailbox of options.mailboxes) {
    if (/[:\n]/.test(mailbox.address + mailbox.password)) throw new Error(`a mailbox address or password contains ":" or a line break: ${mailbox.address}`);
    const maildir = resolve(mailbox.maildir);
    // One doveadm run per distinct password (benchmark mailboxes usually share one); each login
    // still verifies a SHA512-CRYPT hash, which is what costs.
    let hash = hashes.get(mailbox.password);
    if (!hash) {
      const pw = await run('doveadm', ['-c', configFile, 'pw', '-s', 'SHA512-CRYPT', '-p', mailbox.password]);
      if (pw.code !== 0) throw new Error(`doveadm pw failed (exit ${pw.code}):\n${tail(pw.output)}`);
      hash = pw.output.trim();
      hashes.set(mailbox.password, hash);
    }
    lines.push(`${mailbox.address}:${hash}:${user.uid}:${user.gid}::${maildir}::userdb_mail=maildir:${maildir}\n`);
  }
  // Read by the auth process, which runs as the dovecot user; nobody else.
  writeFileSync(passwdFile, lines.join(''), { mode: 0o640 });
  chownSync(passwdFile, 0, systemUser('dovecot').gid);

  const version = `Dovecot ${(await run('dovecot', ['--version'])).output.trim().split(/\s+/)[0]}`;
  const started = await run('sh', ['-c', RAISE_FD_LIMIT + 'exec dovecot -c "$0"', configFile]);
  if (started.code !== 0) throw new Error(`dovecot failed to start (exit ${started.code}):\n${tail(started.output)}\n${tailOfFile(logFile)}`);
  const pop3 = { host: LOOPBACK, port };
  const peer = daemonPeer({
    name: 'Dovecot',
    version,
    endpoints: { pop3 },
    masterPid: () => readPid(join(baseDir, 'master.pid')),
    stopCommand: () => run('doveadm', ['-c', configFile, 'stop']),
  });
  await untilGreeting(pop3, '+OK', peer, logFile);
  return peer;
}

// --- Haraka ---

/** Haraka as an MX for `domain`, with bench/peers/haraka/queue_maildir.js delivering into the Maildirs. */
export async function startHaraka(options: { workDir: string; domain: string; recipients: PeerMailbox[]; port?: number }): Promise<RunningPeer> {
  const workDir = resolve(options.workDir);
  const port = options.port ?? (await freePort());
  const user = systemUser(MAIL_USER);
  const harakaDir = join(workDir, 'haraka');
  const logFile = join(workDir, 'haraka.log');
  const packageJson = readJson(join(HARAKA_PACKAGE, 'package.json'));
  if (!packageJson) throw new Error(`Haraka is not installed in ${HARAKA_PREFIX}: call installPeers() first`);
  // Haraka's shipped config files are its defaults (it has no built-in ones for, e.g., the
  // connection.ini messages), as `haraka -i` would copy them; ours then replace a few.
  cpSync(join(HARAKA_PACKAGE, 'config'), join(harakaDir, 'config'), { recursive: true });
  mkdirSync(join(harakaDir, 'plugins'), { recursive: true });
  // Haraka drops to the mail user after binding; it still reads its config dir and writes its (outbound) queue dir.
  chmodSync(workDir, 0o755);
  prepareMaildirs(options.recipients, user);

  const config = (name: string, text: string) => writeFileSync(join(harakaDir, 'config', name), text);
  config('smtp.ini', fill('haraka/smtp.ini', { LISTEN: `${LOOPBACK}:${port}`, USER: MAIL_USER, GROUP: MAIL_USER }));
  config('plugins', fill('haraka/plugins', {}));
  config('me', 'haraka.bench.invalid\n');
  config('host_list', `${options.domain.toLowerCase()}\n`);
  const maildirs = Object.fromEntries(options.recipients.map((r) => [r.address.toLowerCase(), resolve(r.maildir)]));
  config('maildirs.json', `${JSON.stringify(maildirs, null, 2)}\n`);
  writeFileSync(join(harakaDir, 'plugins', 'queue_maildir.js'), readFileSync(join(TEMPLATES, 'haraka', 'queue_maildir.js')));
  const outboundQueue = join(harakaDir, 'queue');
  mkdirSync(outboundQueue, { recursive: true });
  chownSync(outboundQueue, user.uid, user.gid);

  // The same Node as the benchmark (24): Haraka 3 supports Node >= 20.
  const log = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn('sh', ['-c', RAISE_FD_LIMIT + 'exec "$@"', 'sh', process.execPath, join(HARAKA_PACKAGE, 'bin', 'haraka'), '-c', harakaDir], {
      stdio: ['ignore', log, log],
      cwd: harakaDir,
    });
  } finally {
    closeSync(log);
  }
  let exited = false;
  child.once('exit', () => (exited = true));
  const smtp = { host: LOOPBACK, port };
  const peer = daemonPeer({
    name: 'Haraka',
    version: `Haraka ${packageJson.version}`,
    endpoints: { smtp },
    masterPid: () => (exited ? undefined : child.pid),
    stopCommand: async () => {
      if (!exited) child.kill('SIGTERM');
      return { code: 0, output: '' };
    },
  });
  await untilGreeting(smtp, '220 ', peer, logFile);
  return peer;
}

// --- processes ---

/** `ulimit -n` up to the hard limit: every server here needs one descriptor per connection. */
const RAISE_FD_LIMIT = 'ulimit -n "$(ulimit -H -n)" 2>/dev/null; ';

interface DaemonSpec {
  name: RunningPeer['name'];
  version: string;
  endpoints: { smtp?: Endpoint; pop3?: Endpoint };
  /** The top process, or undefined once it is gone. */
  masterPid: () => number | undefined;
  stopCommand: () => Promise<{ code: number; output: string }>;
}

function daemonPeer(spec: DaemonSpec): RunningPeer {
  let stopping: Promise<void> | undefined;
  const pids = () => {
    const master = spec.masterPid();
    return master !== undefined && processExists(master) ? processTree(master) : [];
  };
  return {
    name: spec.name,
    version: spec.version,
    ...spec.endpoints,
    pids,
    stop() {
      stopping ??= (async () => {
        // Remembered first: once the master is gone its children are reparented and can no longer be found from it.
        const before = pids();
        if (before.length > 0) await spec.stopCommand();
        const deadline = Date.now() + 15_000;
        while (before.some(processExists) && Date.now() < deadline) await sleep(50);
        for (const pid of before.filter(processExists)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        for (const endpoint of Object.values(spec.endpoints)) await untilClosed(endpoint);
      })();
      return stopping;
    },
  };
}

function processExists(pid: number): boolean {
  // A zombie still has a /proc entry but is no longer running anything.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'latin1').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function run(command: string, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; output: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(command, args, { env: options.env, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.on('error', (error) => resolvePromise({ code: 127, output: `${output}${error.message}\n` }));
    child.on('close', (code) => resolvePromise({ code: code ?? 1, output }));
    // A daemon it started may have inherited stdout/stderr and keep them open ('close' would
    // wait for the daemon): give the output a moment after the exit, then stop reading.
    child.on('exit', (code) => {
      setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        resolvePromise({ code: code ?? 1, output });
      }, 500).unref();
    });
    if (child.stdin) {
      child.stdin.on('error', () => {}); // exited without reading: the exit code tells
      child.stdin.end(options.input);
    }
  });
}

// --- files ---

/** A template beside this file with every {{NAME}} replaced; an unknown name is an error, not an empty string. */
function fill(template: string, values: Record<string, string>): string {
  return readFileSync(join(TEMPLATES, template), 'utf8').replace(/\{\{([A-Z_]+)\}\}/g, (_, name: string) => {
    if (!(name in values)) throw new Error(`${template}: no value for {{${name}}}`);
    return values[name];
  });
}

function systemUser(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no system user "${name}" for the Maildirs (Debian has one, uid 8)`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * The servers deliver and read as the unprivileged mail user (none of them runs a mailbox as
 * root): it must own the Maildirs and be able to reach them. Parent folders under the temporary
 * directory get search permission (o+x, not read); anywhere else that is the caller's business.
 */
function prepareMaildirs(mailboxes: PeerMailbox[], user: { uid: number; gid: number }): void {
  const temporary = resolve(tmpdir()) + sep;
  for (const mailbox of mailboxes) {
    const maildir = resolve(mailbox.maildir);
    for (const sub of ['cur', 'new', 'tmp']) {
      if (!existsSync(join(maildir, sub))) throw new Error(`${maildir} is not a Maildir (no ${sub}/)`);
    }
    chownTree(maildir, user.uid, user.gid);
    for (let dir = dirname(maildir); dir !== dirname(dir); dir = dirname(dir)) {
      const mode = statSync(dir).mode;
      if (mode & 0o001) continue;
      if (!(dir + sep).startsWith(temporary)) {
        throw new Error(`the mail user (uid ${user.uid}) cannot reach ${maildir}: ${dir} has no search permission for others (chmod o+x it, or put the Maildirs under ${tmpdir()})`);
      }
      chmodSync(dir, (mode & 0o7777) | 0o001);
    }
  }
}

function chownTree(path: string, uid: number, gid: number): void {
  chownSync(path, uid, gid);
  if (!lstatSync(path).isDirectory()) return;
  for (const entry of readdirSync(path)) chownTree(join(path, entry), uid, gid);
}

function readJson(file: string): { version?: string } | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

function tail(text: string, lines = 20): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function tailOfFile(file: string): string {
  try {
    return `${file}:\n${tail(readFileSync(file, 'utf8'))}`;
  } catch {
    return `(no ${file})`;
  }
}

// --- network ---

/** One connection's first line, or an error (refused, closed, timed out). */
function firstLine(endpoint: Endpoint, timeoutMs: number): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const socket = netConnect(endpoint);
    let text = '';
    socket.setEncoding('latin1');
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no greeting within ${timeoutMs} ms`)));
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\r\n');
      if (end === -1) return;
      socket.end('QUIT\r\n');
      socket.destroySoon();
      resolvePromise(text.slice(0, end));
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error('connection closed before a greeting')));
  });
}

/** Returns once the server greets with `prefix`; on failure stops it and throws with its log. */
async function untilGreeting(endpoint: Endpoint, prefix: string, peer: RunningPeer, logFile: string): Promise<void> {
  const startedAt = Date.now();
  const deadline = startedAt + 30_000;
  let last = '';
  while (Date.now() < deadline) {
    // Daemons have written their pid file before this is called: no process means it died.
    if (peer.pids().length === 0 && Date.now() - startedAt > 1_000) {
      last = 'the server is not running';
      break;
    }
    try {
      const line = await firstLine(endpoint, 5_000);
      if (line.startsWith(prefix)) return;
      last = `greeting ${JSON.stringify(line)}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(100);
  }
  await peer.stop();
  throw new Error(`${peer.version} on ${endpoint.host}:${endpoint.port} did not greet with "${prefix}" (${last})\n${tailOfFile(logFile)}`);
}

/** Until connecting is refused. */
async function untilClosed(endpoint: Endpoint): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (!(await accepts(endpoint))) return;
    await sleep(50);
  }
  throw new Error(`${endpoint.host}:${endpoint.port} still accepts connections after stopping`);
}

