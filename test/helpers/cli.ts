import { spawn } from 'node:child_process';
import { MAIN, NODE } from './process.ts';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `popgate --config FILE ARGS…` as its own process, as an operator would; `input`, if given, is its standard input. */
export function runPopgate(config: string, args: string[], env: NodeJS.ProcessEnv = {}, input?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk) => (stdout += chunk));
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    child.stdin?.end(input);
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
