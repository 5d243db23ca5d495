import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, renameSync } from 'node:fs';
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { DirectorySyncer, writeDurably } from '../fs/durable.ts';
import type { Mailstore, RemoveResult, StoredMessage } from './store.ts';

// Maildir as specified at cr.yp.to/proto/maildir.html, with Courier/Dovecot's ",S=<size>"
// and ",W=<size with CRLF>" name extensions, so Dovecot, mutt and backup tools read it as is.
// Layout: <data_dir>/mail/<domain>/<local>/{tmp,new,cur}.

const SUBDIRS = ['tmp', 'new', 'cur'] as const;
const SMALL_MESSAGE = 128 * 1024;

// Synchronous like the writes in src/fs/durable.ts: reading a small file from the page cache
// takes microseconds, while fs/promises' readFile makes four trips through the thread pool
// (open, fstat, read, close), which cost more CPU than the read and bound POP3 RETR rates.
async function* readWhole(path: string): AsyncIterable<Buffer> {
  yield readFileSync(path);
}

export class MaildirStore implements Mailstore {
  readonly #root: string;
  readonly #host: string;
  readonly #known = new Set<string>();
  // Virtual sizes of foreign files that carry no ",W=", computed once per file name.
  readonly #virtualSizes = new Map<string, number>();
  // Shared by every session of the process, so concurrent deliveries to a folder share fsyncs.
  readonly #directories = new DirectorySyncer();
  #counter = 0;

  constructor(dataDir: string, hostname: string) {
    this.#root = join(dataDir, 'mail');
    // The spec asks for "/" and ":" in the host part to be written as octal escapes.
    this.#host = hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
  }

  /** The Maildir folder of an address; the local part is escaped so it stays one path element. */
  pathOf(address: string): string {
    const at = address.lastIndexOf('@');
    const local = address.slice(0, at).replace(/%/g, '%25').replace(/\//g, '%2F');
    return join(this.#root, address.slice(at + 1), local);
  }

  async ensure(address: string): Promise<string> {
    const path = this.pathOf(address);
    if (!this.#known.has(path)) {
      await Promise.all(SUBDIRS.map((sub) => mkdir(join(path, sub), { recursive: true, mode: 0o700 })));
      this.#known.add(path);
    }
    return path;
  }

  #uniqueName(): string {
    const now = Date.now();
    const micros = (now % 1000) * 1000 + Math.floor((performance.now() % 1) * 1000);
    this.#counter = (this.#counter + 1) % 1_000_000_000;
    return `${Math.floor(now / 1000)}.M${micros}P${process.pid}Q${this.#counter}R${randomBytes(6).toString('hex')}.${this.#host}`;
  }

  async deliver(address: string, message: Buffer | Buffer[]): Promise<string> {
    const pieces = Array.isArray(message) ? message : [message];
    const path = await this.ensure(address);
    const unique = this.#uniqueName();
    const tmpPath = join(path, 'tmp', unique);
    try {
      await writeDurably(tmpPath, pieces);
    } catch (error) {
      await unlink(tmpPath).catch(() => {});
      throw error;
    }
    let size = 0;
    let virtual = 0;
    let previous = -1;
    for (const piece of pieces) {
      size += piece.length;
      virtual += virtualSize(piece, previous, false);
      if (piece.length > 0) previous = piece[piece.length - 1];
    }
    virtual += terminatorSize(previous);
    const name = `${unique},S=${size}${virtual === size ? '' : `,W=${virtual}`}`;
    // Synchronous for the same reason as the write (src/fs/durable.ts): a rename within one
    // folder tree is a metadata update in memory; the directory fsync below makes it durable.
    renameSync(tmpPath, join(path, 'new', name));
    await this.#directories.sync(join(path, 'new'));
    return name;
  }

  async list(address: string): Promise<StoredMessage[]> {
    const path = await this.ensure(address);
    const entries: { name: string; ref: string; seconds: number; micros: number }[] = [];
    for (const sub of ['new', 'cur'] as const) {
      const dir = join(path, sub);
      for (const name of await readdir(dir)) {
        if (name.startsWith('.')) continue;
        // Delivery order: the seconds and microseconds at the start of the unique name.
        const key = /^(\d+)\.(?:M(\d+))?/.exec(name);
        entries.push({ name, ref: `${dir}/${name}`, seconds: key ? Number(key[1]) : Infinity, micros: key?.[2] ? Number(key[2]) : 0 });
      }
    }
    entries.sort((a, b) => a.seconds - b.seconds || a.micros - b.micros || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const messages: StoredMessage[] = [];
    for (const { name, ref } of entries) {
      const size = sizeFromName(name) ?? (await this.#computeVirtualSize(name, ref));
      if (size === undefined) continue; // vanished between readdir and open
      messages.push({ uidl: uidlOf(name), size, ref });
    }
    return messages;
  }

  read(message: StoredMessage): AsyncIterable<Buffer> {
    // Most mail is small: one read beats a stream's setup; large messages stream in 256 KiB.
    if (message.size <= SMALL_MESSAGE) return readWhole(message.ref);
    return createReadStream(message.ref, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;
  }

  async remove(address: string, messages: StoredMessage[]): Promise<RemoveResult> {
    const path = this.pathOf(address);
    const failed: StoredMessage[] = [];
    let removed = 0;
    for (const message of messages) {
      try {
        await unlink(message.ref);
        removed++;
      } catch (error) {
        // Already gone (another tool removed it): the customer's intent is fulfilled.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') removed++;
        else failed.push(message);
      }
    }
    if (messages.length > 0) await Promise.all([this.#directories.sync(join(path, 'new')), this.#directories.sync(join(path, 'cur'))]);
    return { removed, failed };
  }

  async #computeVirtualSize(name: string, ref: string): Promise<number | undefined> {
    const cached = this.#virtualSizes.get(name);
    if (cached !== undefined) return cached;
    let size = 0;
    let previous = -1;
    try {
      for await (const chunk of createReadStream(ref, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
        size += virtualSize(chunk, previous, false);
        previous = chunk[chunk.length - 1];
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    size += terminatorSize(previous);
    this.#virtualSizes.set(name, size);
    return size;
  }
}

/** Octets once every bare LF becomes CRLF. `previous` is the byte before this chunk (-1 at start). */
export function virtualSize(chunk: Buffer, previous: number, whole: boolean): number {
  let size = chunk.length;
  let index = chunk.indexOf(0x0a);
  while (index !== -1) {
    const before = index === 0 ? previous : chunk[index - 1];
    if (before !== 0x0d) size++;
    index = chunk.indexOf(0x0a, index + 1);
  }
  if (whole) size += terminatorSize(chunk.length > 0 ? chunk[chunk.length - 1] : -1);
  return size;
}

/** An unterminated last line gets its line end on the wire: LF after a bare CR, else CRLF. */
function terminatorSize(lastByte: number): number {
  return lastByte === -1 || lastByte === 0x0a ? 0 : lastByte === 0x0d ? 1 : 2;
}

/** ",W=" is the CRLF size; ",S=" is the file size, exact only for our own CRLF files (no W means S = W). */
function sizeFromName(name: string): number | undefined {
  const base = name.split(':')[0];
  const w = /,W=(\d+)/.exec(base);
  if (w) return Number(w[1]);
  // Our own deliveries always write CRLF and add W when it differs, so S is exact for them;
  // for foreign files (no popgate "Q" counter) S may count LF-only lines, so it is not trusted.
  const s = /,S=(\d+)/.exec(base);
  if (s && /^\d+\.M\d+P\d+Q\d+R[0-9a-f]+\./.test(base)) return Number(s[1]);
  return undefined;
}

/**
 * The UIDL is the Maildir unique name (before any ",key=value" or ":2,flags" part), so it
 * survives flag changes, moves between new/ and cur/, and restarts. RFC 1939 §7 allows
 * 1-70 characters in 0x21-0x7E; names outside that are hashed, deterministically.
 */
export function uidlOf(name: string): string {
  const unique = name.split(':')[0].split(',')[0];
  if (unique.length >= 1 && unique.length <= 70 && /^[\x21-\x7e]+$/.test(unique)) return unique;
  return 'H' + createHash('sha256').update(unique).digest('base64url').slice(0, 43);
}
