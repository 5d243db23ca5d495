import { createInterface } from 'node:readline';

/** Reads a password: from standard input (--password-stdin) or a prompt that does not echo. */
export async function readPassword(options: { stdin?: boolean; prompt: string; confirm?: boolean }): Promise<string> {
  if (options.stdin) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  if (!process.stdin.isTTY) {
    throw new UsageError('no password given: pipe it with --password-stdin, or run the command in a terminal to be asked for it');
  }
  const first = await prompt(options.prompt);
  if (options.confirm) {
    const second = await prompt('Repeat the password: ');
    if (first !== second) throw new UsageError('the two passwords differ; nothing was changed');
  }
  return first;
}

function prompt(question: string): Promise<string> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    const output = rl as unknown as { _writeToOutput: (s: string) => void };
    process.stderr.write(question);
    output._writeToOutput = () => {}; // no echo
    rl.question('', (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
  });
}

/** A mistake in how a command was called: exit code 1 with a hint. */
export class UsageError extends Error {
  readonly exitCode = 1;
}
