import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join, resolve } from 'node:path';
import type { Endpoint } from './pop3-load.ts';

// popgate as the benchmarks run it: a child process (so the load generators do not share its
// event loop or its CPU accounting), started from the working tree with `popgate serve`.

const ROOT = resolve(import.meta.dirname, '..');

/**
 * The idle-connection workload holds 20,000 sockets in the server; the default limit of open
 * files is often 1,024 (here 20,000). The shell raises the soft limit as far as the hard limit
 * allows (root may raise both) before it becomes popgate, as an init system's LimitNOFILE would.
 */
const RAISE_FD_LIMIT = 'ulimit -n 1048576 2>/dev/null || ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null; exec "$0" "$@"';

const START_DEADLINE_MS = 90_000;

export class PopgateChild {
  readonly child: ChildProcess;
  #output = '';

  private constructor(child: ChildProcess) {
    this.child = child;
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString('utf8')).slice(-8000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
  }

  /** Starts popgate with `configPath` and resolves once `endpoint` accepts connections. */
  static async start(options: { configPath: string; endpoint: Endpoint; cpuProfDir?: string; nodeFlags?: string[] }): Promise<PopgateChild> {
    // As bin/popgate.js and the npm scripts run it (the young-generation size is explained there).
    const nodeFlags = ['--max-semi-space-size=1', ...(options.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${resolve(options.cpuProfDir)}`] : []), ...(options.nodeFlags ?? [])];
    const child = spawn('/bin/sh', ['-c', RAISE_FD_LIMIT, process.execPath, ...nodeFlags, join(ROOT, 'bin/popgate.js'), 'serve', '--config', options.configPath], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const server = new PopgateChild(child);
    // Generous: with workers each process strips the types of the whole source tree as it
    // starts, which on a busy shared machine took longer than 30 s.
    const deadline = Date.now() + START_DEADLINE_MS;
    for (;;) {
      if (server.exited) throw new Error(`popgate exited during start (${child.exitCode ?? child.signalCode}):\n${server.output}`);
      if (await accepts(options.endpoint)) return server;
      if (Date.now() > deadline) {
        server.killSync();
        throw new Error(`popgate did not accept connections on ${options.endpoint.host}:${options.endpoint.port} within ${START_DEADLINE_MS / 1000} s:\n${server.output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** popgate's warnings and errors (the last 8,000 characters). */
  get output(): string {
    return this.#output;
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** CPU seconds used so far (user and system, from /proc/<pid>/stat); undefined off Linux. */
  cpuSeconds(): { user: number; system: number } | undefined {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime and stime, in clock ticks (USER_HZ = 100 on Linux)
      return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
    } catch {
      return undefined;
    }
  }

  /** SIGTERM (popgate's graceful shutdown), SIGKILL after 10 s; resolves to the exit code or signal. */
  async stop(): Promise<number | string | null> {
    const child = this.child;
    if (!this.exited) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    return child.exitCode ?? child.signalCode;
  }

  killSync(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

/** A free TCP port on `host` (a loopback address), closed again so a server can take it. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export function accepts(endpoint: Endpoint): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: endpoint.host, port: endpoint.port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
