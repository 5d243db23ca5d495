import { spawn } from 'node:child_process';
import { MAIN, NODE } from './process.ts';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `popgate --config FILE ARGS…` as its own process, as an operator would. */
export function runPopgate(config: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
