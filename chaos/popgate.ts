import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

// popgate as the chaos suite runs it: a real `popgate serve` process on a config file in a
// folder of its own, on fixed loopback ports (so a restart after kill -9 comes back where the
// clients expect it), one process (no workers), accounts made with the `popgate` command.

const ROOT = join(import.meta.dirname, '..');
const MAIN = join(ROOT, 'src', 'cli', 'main.ts');
export const PASSWORD = 'chaos horse battery';
export const DOMAIN = 'chaos.test';

export interface Ports {
  pop3: number;
  pop3s: number;
  smtp: number;
  submission: number;
  submissions: number;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Whether something accepts connections on the port (the probe is closed at once). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect({ port, host: '127.0.0.1' });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

export class Popgate {
  readonly dir: string;
  readonly dataDir: string;
  readonly config: string;
  readonly ports: Ports;
  child: ChildProcess | undefined;
  /** Exits nobody asked for (a crash), over the life of this instance. */
  unexpectedExits = 0;
  /** Set once the first start succeeded: from then on the ports stay as they are. */
  started = false;

  private constructor(dir: string, dataDir: string, ports: Ports, extraToml: string) {
    this.dir = dir;
    this.dataDir = dataDir;
    this.ports = ports;
    this.config = join(dir, 'popgate.toml');
    const listen = (port: number) => `listen = ["127.0.0.1:${port}"]`;
    writeFileSync(
      this.config,
      `hostname = "mail.${DOMAIN}"
data_dir = "${dataDir}"
shutdown_grace = "1s"
[server]
workers = 1
[log]
level = "warn"
[tls]
self_signed = true
[outbound]
enabled = false
[filter]
enabled = false
[limits]
exempt_users = ["alice@${DOMAIN}"]
[pop3]
${listen(ports.pop3)}
max_connection_rate_per_ip = 0
[pop3s]
${listen(ports.pop3s)}
[smtp]
${listen(ports.smtp)}
max_connection_rate_per_ip = 0
[submission]
${listen(ports.submission)}
[submissions]
${listen(ports.submissions)}
${extraToml}
`,
    );
  }

  /** A new instance in `dir` (data in `dataDir`, default dir/data) with alice and bob. */
  static async create(dir: string, options: { dataDir?: string; toml?: string } = {}): Promise<Popgate> {
    mkdirSync(dir, { recursive: true });
    const ports: Ports = { pop3: await freePort(), pop3s: await freePort(), smtp: await freePort(), submission: await freePort(), submissions: await freePort() };
    const instance = new Popgate(dir, options.dataDir ?? join(dir, 'data'), ports, options.toml ?? '');
    instance.cli('domain', 'add', DOMAIN);
    for (const user of ['alice', 'bob']) instance.cli('user', 'add', `${user}@${DOMAIN}`, '--password', PASSWORD);
    return instance;
  }

  cli(...args: string[]): string {
    return execFileSync(process.execPath, [MAIN, '--config', this.config, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /**
   * Starts `popgate serve`; resolves once every listener accepts connections. On the first
   * start a port taken meanwhile by another program (they were free when picked) is picked
   * again; later starts keep the ports, as clients expect them back after a kill -9.
   */
  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#start();
      } catch (error) {
        if (this.started || attempt >= 3 || !/address is in use/.test((error as Error).message)) throw error;
        let text = readFileSync(this.config, 'utf8');
        for (const key of Object.keys(this.ports) as (keyof Ports)[]) {
          const port = await freePort();
          text = text.replace(`127.0.0.1:${this.ports[key]}"`, `127.0.0.1:${port}"`);
          this.ports[key] = port;
        }
        writeFileSync(this.config, text);
      }
    }
  }

  // Set by kill9() and stop(), so their exits are not counted as crashes.
  #exitAsked = false;

  async #start(): Promise<void> {
    this.#exitAsked = false;
    const child = spawn(process.execPath, ['--max-semi-space-size=1', MAIN, 'serve', '--config', this.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    const stderr: string[] = [];
    child.stderr!.on('data', (chunk) => stderr.push(String(chunk)));
    let exited: string | undefined;
    child.once('exit', (code, signal) => {
      exited = `popgate exited (${code ?? signal}): ${stderr.join('').slice(0, 300)}`;
      if (this.child === child && this.started && !this.#exitAsked) this.unexpectedExits++;
    });
    const deadline = Date.now() + 60_000;
    for (const port of Object.values(this.ports)) {
      while (!(await accepts(port))) {
        if (exited) throw new Error(exited);
        if (Date.now() > deadline) throw new Error(`popgate did not start in time: ${stderr.join('')}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    if (exited) throw new Error(exited);
    this.started = true;
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resident memory of the server process in KiB (Linux /proc). */
  rssKb(): number {
    if (!this.child?.pid || !this.alive) return 0;
    const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  }

  async kill9(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    this.#exitAsked = true;
    child.kill('SIGKILL');
    await gone;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    this.#exitAsked = true;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }
}
