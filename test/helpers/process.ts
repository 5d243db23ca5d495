import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = join(import.meta.dirname, '..', '..');
export const NODE = process.execPath;
export const MAIN = join(ROOT, 'src', 'cli', 'main.ts');

export interface ServerProcess {
  child: ChildProcess;
  pop3Port: number;
  output: string[];
}

/** Starts `popgate serve` as a real process on a config file; resolves once POP3 listens. */
export async function spawnServer(configPath: string): Promise<ServerProcess> {
  const child = spawn(NODE, [MAIN, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  child.stderr!.on('data', (chunk) => output.push(String(chunk)));
  const lines = createInterface({ input: child.stdout! });
  const pop3Port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Not left running (and holding the test process open) when it is slow to start.
      child.kill('SIGKILL');
      reject(new Error(`server did not start: ${output.join('')}`));
    }, 30000);
    lines.on('line', (line) => {
      output.push(line);
      if (line.includes('"listening"') && line.includes('"pop3"')) {
        clearTimeout(timer);
        resolve(JSON.parse(line).address.port);
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${output.join('\n')}`)));
  });
  return { child, pop3Port, output };
}

export function writeConfig(dir: string, toml: string): string {
  const path = join(dir, 'popgate.toml');
  writeFileSync(path, toml);
  return path;
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** A `popgate serve` process and what it logged, parsed. */
export interface NodeProcess {
  child: ChildProcess;
  /** The bound port of each listener by name ("pop3", "smtp", "submission" ...), as logged. */
  ports: Record<string, number>;
  /** Every JSON log line so far. */
  log: Record<string, unknown>[];
  /** Every line of standard output so far, as written. */
  lines: string[];
  /** Resolves with the first log line (already seen or still to come) that `matches`. */
  waitForLog(matches: (entry: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM, then SIGKILL if it has not exited in time; resolves with the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
}

/**
 * Starts `popgate serve --config FILE` and resolves once it is ready: with several workers
 * when the primary logs "workers_ready", with one once every listener of the config logs.
 */
export async function spawnNode(configPath: string, options: { listeners: string[]; timeoutMs?: number; env?: NodeJS.ProcessEnv } = { listeners: ['pop3'] }): Promise<NodeProcess> {
  const child = spawn(NODE, [MAIN, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  const log: Record<string, unknown>[] = [];
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters: { matches: (entry: Record<string, unknown>) => boolean; resolve: (entry: Record<string, unknown>) => void }[] = [];
  child.stderr!.on('data', (chunk) => stderr.push(String(chunk)));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    log.push(entry);
    for (const waiter of [...waiters]) {
      if (!waiter.matches(entry)) continue;
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(entry);
    }
  });
  const waitForLog = (matches: (entry: Record<string, unknown>) => boolean, timeoutMs = 15_000) => {
    const seen = log.find(matches);
    if (seen) return Promise.resolve(seen);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no such log line within ${timeoutMs} ms; stderr: ${stderr.join('')}`)), timeoutMs);
      waiters.push({ matches, resolve: (entry) => (clearTimeout(timer), resolve(entry)) });
    });
  };
  const ports: Record<string, number> = {};
  const exit = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${stderr.join('')}`))));
  exit.catch(() => {});
  const ready = (async () => {
    for (const listener of options.listeners) {
      const entry = await waitForLog((e) => e.event === 'listening' && e.listener === listener, options.timeoutMs ?? 20_000);
      ports[listener] = (entry.address as { port: number }).port;
    }
    const first = await waitForLog((e) => e.event === 'start', options.timeoutMs ?? 20_000);
    if (Number(first.workers) > 1) await waitForLog((e) => e.event === 'workers_ready', options.timeoutMs ?? 20_000);
  })();
  await Promise.race([ready, exit]);
  return {
    child,
    ports,
    log,
    lines,
    waitForLog,
    async stop(timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited(child);
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * Runs `script` (an ES module's text) in another Node process and lets it end as `ending` says:
 * killed with SIGKILL as soon as it writes "delivered" (the script then keeps its event loop
 * busy, so nothing it scheduled runs before the kill), or by itself with exit code 0.
 */
export async function runScriptUntil(script: string, ending: 'killed' | 'clean', who: string): Promise<void> {
  const child = spawn(NODE, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    if (ending === 'killed' && output.includes('delivered')) child.kill('SIGKILL');
  });
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((done) => child.on('exit', (c, s) => done([c, s])));
  if (ending === 'killed' && signal !== 'SIGKILL') throw new Error(`${who} was to be killed, but ended with ${code ?? signal}:\n${output}`);
  if (ending === 'clean' && code !== 0) throw new Error(`${who} was to end cleanly, but ended with ${code ?? signal}:\n${output}`);
}
