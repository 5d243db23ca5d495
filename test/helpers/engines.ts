import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The real engines popgate's cluster backends run on, started by the tests themselves on free
// loopback ports in temporary folders and stopped afterwards: Debian's redis-server and
// PostgreSQL (initdb in a temporary folder, run as the postgres user when the tests run as
// root), and HAProxy. `.ci/run` installs them. Without an engine a test is skipped with the
// reason, except under CI (the CI environment variable set), where a missing engine is a
// failure: a test that silently does not run proves nothing.

export type EngineName = 'redis-server' | 'postgres' | 'haproxy';

/** Where an engine's binary is, or undefined. */
export function findEngine(name: EngineName): string | undefined {
  if (name === 'postgres') {
    const root = '/usr/lib/postgresql';
    const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))) : [];
    versions.sort((a, b) => Number(b) - Number(a));
    return versions.length > 0 ? join(root, versions[0], 'bin') : undefined;
  }
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
  if (missing.length === 0) return false;
  const reason = `${missing.join(', ')} not installed (apt-get install ${missing.map((m) => (m === 'postgres' ? 'postgresql' : m)).join(' ')})`;
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

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export interface RunningEngine {
  readonly url: string;
  readonly port: number;
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
  let user: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim();
    const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim();
    if (!uid) throw new Error('running as root, but there is no postgres user to run PostgreSQL as');
    user = { uid: Number(uid), gid: Number(gid) };
    chownSync(dir, user.uid, user.gid);
  }
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
    for (let i = 0; i < 200; i++) {
      const busy = await new Promise<boolean>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port });
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      if (!busy) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  await start();
  const created = run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', 'CREATE DATABASE popgate']);
  if (created.status !== 0) throw new Error(`cannot create the database: ${created.stderr}`);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/popgate`,
    port,
    socketDir: dir,
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
