import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { makeMessage, prng } from './messages.ts';

// Moving in: `popgate import dovecot` of Dovecot-style Maildirs (one dovecot-uidlist per
// mailbox, Dovecot's default UIDL format) into an empty popgate, as a child process exactly as
// an operator runs it. Timed from the command's start to its exit; the source and the data
// folder are on the same file system, so messages are hard-linked (the summary says how many).

export interface ImportRunOptions {
  users: number;
  messagesPerUser: number;
  size: number;
}

export interface ImportRunResult {
  messages: number;
  seconds: number;
  messagesPerSecond: number;
  linked: number;
}

const MAIN = resolve(import.meta.dirname, '..', 'src', 'cli', 'main.ts');

export async function runImport(options: ImportRunOptions, progress: (text: string) => void): Promise<ImportRunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-bench-import-'));
  try {
    const vmail = join(dir, 'vmail');
    const passwd: string[] = [];
    for (let u = 0; u < options.users; u++) {
      const address = `user${u}@import.example`;
      const maildir = join(vmail, 'import.example', `user${u}`);
      for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(maildir, sub), { recursive: true });
      const records: string[] = [];
      for (let i = 1; i <= options.messagesPerUser; i++) {
        const message = makeMessage(prng(u * 1_000_003 + i), i, address, options.size);
        const name = `${1_600_000_000 + i}.M${i}P${u}.old.example,S=${message.length}`;
        // Most read and left on the server, as POP3 customers do.
        writeFileSync(join(maildir, 'cur', `${name}:2,${i % 10 === 0 ? '' : 'S'}`), message);
        records.push(`${i} :${name}`);
      }
      writeFileSync(join(maildir, 'dovecot-uidlist'), `3 V1600000000 N${options.messagesPerUser + 1} G0123\n${records.join('\n')}\n`);
      // Plain passwords: the figure is about mail, and these are hashed once per user either way.
      passwd.push(`${address}:{PLAIN}import password ${u}`);
    }
    writeFileSync(join(dir, 'passwd'), `${passwd.join('\n')}\n`);
    const config = join(dir, 'popgate.toml');
    writeFileSync(config, `data_dir = "${join(dir, 'data')}"\nhostname = "bench.example.test"\n`);
    progress(`  import: ${options.users} users x ${options.messagesPerUser} messages of ${options.size / 1024} KB written; importing`);
    const started = performance.now();
    const output = await new Promise<string>((done, fail) => {
      const child = spawn(process.execPath, ['--max-semi-space-size=1', MAIN, '--config', config, 'import', 'dovecot', '--passwd-file', join(dir, 'passwd'), '--maildirs', vmail], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      child.stdout!.on('data', (chunk) => (text += chunk));
      child.stderr!.on('data', (chunk) => (text += chunk));
      child.on('exit', (code) => (code === 0 ? done(text) : fail(new Error(`popgate import dovecot exited with ${code}:\n${text}`))));
    });
    const seconds = (performance.now() - started) / 1000;
    const imported = /messages: (\d+) imported \([^)]*?(?:, (\d+) as hard links)?\)/.exec(output);
    const messages = options.users * options.messagesPerUser;
    if (!imported || Number(imported[1]) !== messages) throw new Error(`the import did not import ${messages} messages:\n${output}`);
    return { messages, seconds, messagesPerSecond: messages / seconds, linked: Number(imported[2] ?? 0) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
