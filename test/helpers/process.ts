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
    const timer = setTimeout(() => reject(new Error(`server did not start: ${output.join('')}`)), 15000);
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
