import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDirectory, writeDurably } from '../fs/durable.ts';

// The outbound spool: messages accepted for remote recipients, written durably before the
// SMTP server answers 250 (RFC 5321 §6.1). Each message is two files in data_dir/queue/:
// <id>.eml (the message) and <id>.json (the envelope); the envelope is renamed into place
// last, so a crash leaves either a complete entry or a stray .eml that is never delivered
// twice. The delivery scheduler (outbound queue) reads from here.

export interface Envelope {
  id: string;
  from: string;
  to: string[];
  receivedAt: number;
  clientIp: string;
  /** The POP-before-SMTP (or, later, SMTP AUTH) user the relay was granted to. */
  authorizedUser?: string;
}

export class Spool {
  readonly dir: string;
  #ready: Promise<void> | undefined;

  constructor(dataDir: string) {
    this.dir = join(dataDir, 'queue');
  }

  static newId(): string {
    return `${Date.now().toString(36).toUpperCase()}${randomBytes(5).toString('hex').toUpperCase()}`;
  }

  async enqueue(envelope: Envelope, message: Buffer | Buffer[]): Promise<void> {
    await (this.#ready ??= mkdir(join(this.dir, 'tmp'), { recursive: true, mode: 0o700 }).then(() => undefined));
    const tmp = join(this.dir, 'tmp');
    await writeDurably(join(tmp, `${envelope.id}.eml`), message);
    await writeDurably(join(tmp, `${envelope.id}.json`), Buffer.from(JSON.stringify(envelope)));
    await rename(join(tmp, `${envelope.id}.eml`), join(this.dir, `${envelope.id}.eml`));
    await rename(join(tmp, `${envelope.id}.json`), join(this.dir, `${envelope.id}.json`));
    await syncDirectory(this.dir);
  }

  async list(): Promise<Envelope[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const envelopes: Envelope[] = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) envelopes.push(JSON.parse(await readFile(join(this.dir, name), 'utf8')) as Envelope);
    return envelopes.sort((a, b) => a.receivedAt - b.receivedAt);
  }

  read(id: string): Promise<Buffer> {
    return readFile(join(this.dir, `${id}.eml`));
  }
}
