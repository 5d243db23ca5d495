import { mkdir, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { byteLength, DirectorySyncer, OFF_LOOP_JOB_LIMIT, offLoopWriter, StagingFolders, writeDurably } from '../fs/durable.ts';
import { randomHex } from '../mail/random.ts';

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
  /**
   * The From: domain the sender was checked for at acceptance (the user may send as it, or
   * popgate wrote the message itself): the only domain the DKIM signer may sign for.
   * Absent (forwarded mail, entries queued by older versions): the message leaves unsigned.
   */
  signingDomain?: string;
}

/** On a spool shared by several nodes, a half-written entry older than this was abandoned. */
const SHARED_STRAY_AGE_MS = 60 * 60_000;

export class Spool {
  readonly dir: string;
  /** Where this process stages new entries: tmp/, or tmp/<node>/ on a shared spool. */
  readonly #tmp: string;
  /** Several nodes write this spool (a cluster's shared storage). */
  readonly #shared: boolean;
  #ready: Promise<void> | undefined;
  // Concurrent sessions relaying at once share the fsync of the spool folder (group commit).
  readonly #directory: DirectorySyncer;
  // Relayed messages written at once are staged in separate folders (see StagingFolders).
  readonly #staging = new StagingFolders();

  /**
   * `sharedBy`: this node's name when several nodes share the spool (a cluster on shared
   * storage): it stages in a folder of its own, and recovery leaves other nodes' work alone.
   */
  constructor(dataDir: string, sharedBy?: string) {
    this.dir = join(dataDir, 'queue');
    this.#shared = sharedBy !== undefined;
    this.#directory = new DirectorySyncer({ network: this.#shared });
    this.#tmp = sharedBy === undefined ? join(this.dir, 'tmp') : join(this.dir, 'tmp', sharedBy);
  }

  /** Where messages being received are kept once too large for memory (emptied at start like the rest of the staging folder). */
  get incomingDir(): string {
    return join(this.#tmp, 'incoming');
  }

  static newId(): string {
    return `${Date.now().toString(36).toUpperCase()}${randomHex(5).toUpperCase()}`;
  }

  async enqueue(envelope: Envelope, message: Buffer | Buffer[]): Promise<void> {
    await (this.#ready ??= mkdir(this.#tmp, { recursive: true, mode: 0o700 }).then(() => undefined));
    const staging = this.#staging.acquire(this.#tmp);
    const tmp = staging.dir;
    const files = { eml: join(tmp, `${envelope.id}.eml`), json: join(tmp, `${envelope.id}.json`) };
    const named = { eml: join(this.dir, `${envelope.id}.eml`), json: join(this.dir, `${envelope.id}.json`) };
    const envelopeBytes = Buffer.from(JSON.stringify(envelope));
    if (this.#shared && byteLength(message) + envelopeBytes.length <= OFF_LOOP_JOB_LIMIT) {
      // Shared storage: both writes, both renames (the envelope last) and the spool folder's
      // fsync in one hand-off to a thread (src/fs/durable.ts).
      try {
        await offLoopWriter().run({
          writes: [
            { path: files.eml, data: message },
            { path: files.json, data: envelopeBytes },
          ],
          renames: [
            [files.eml, named.eml],
            [files.json, named.json],
          ],
          sync: [this.dir],
        });
      } finally {
        staging.release();
      }
      return;
    }
    try {
      // Both files are on disk before either is named in the spool, so their writes may overlap.
      await Promise.all([writeDurably(files.eml, message, { network: this.#shared }), writeDurably(files.json, envelopeBytes, { network: this.#shared })]);
    } finally {
      staging.release();
    }
    await rename(files.eml, named.eml);
    await rename(files.json, named.json);
    await this.#directory.sync(this.dir);
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

  async envelope(id: string): Promise<Envelope | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir, `${id}.json`), 'utf8')) as Envelope;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async size(id: string): Promise<number> {
    return (await stat(join(this.dir, `${id}.eml`))).size;
  }

  /**
   * Removes an entry envelope first: a crash in between leaves a stray .eml, which
   * `sweep` deletes, never an envelope without its message.
   */
  async remove(id: string): Promise<void> {
    await unlinkIfThere(join(this.dir, `${id}.json`));
    await unlinkIfThere(join(this.dir, `${id}.eml`));
  }

  /**
   * Takes back an entry whose acceptance failed (the client is answered 4xx): removed, and
   * the removal made durable, so a crash cannot bring it back for the next start's recovery
   * to deliver a message the client was told had failed.
   */
  async discard(id: string): Promise<void> {
    await this.remove(id);
    await this.#directory.sync(this.dir);
  }

  /**
   * After a crash: drops what was never acknowledged (tmp/ leftovers, a message whose
   * envelope was never renamed into place) and returns the ids of complete entries. On a
   * shared spool another node may be between its two renames (or removing an entry) right
   * now, so only this node's staging folder is emptied and a half entry is dropped only once
   * it is an hour old.
   */
  async sweep(now = Date.now()): Promise<{ complete: Set<string>; dropped: string[] }> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return { complete: new Set(), dropped: [] };
    }
    const envelopes = new Set(names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
    const messages = new Set(names.filter((n) => n.endsWith('.eml')).map((n) => n.slice(0, -4)));
    const abandoned = async (name: string) => !this.#shared || (await stat(join(this.dir, name)).then((info) => info.mtimeMs < now - SHARED_STRAY_AGE_MS, () => false));
    const dropped: string[] = [];
    for (const id of messages) {
      if (!envelopes.has(id) && (await abandoned(`${id}.eml`))) {
        await rm(join(this.dir, `${id}.eml`), { force: true });
        dropped.push(id);
      }
    }
    for (const id of envelopes) {
      if (messages.has(id)) continue;
      // Cannot happen with the write and remove orders above (but in the moment another node
      // removes the entry); an operator may have deleted the file. Nothing to deliver, so the
      // envelope goes too.
      envelopes.delete(id);
      if (await abandoned(`${id}.json`)) {
        await rm(join(this.dir, `${id}.json`), { force: true });
        dropped.push(id);
      }
    }
    await rm(this.#tmp, { recursive: true, force: true });
    this.#staging.forget();
    this.#ready = undefined;
    return { complete: envelopes, dropped };
  }
}

async function unlinkIfThere(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
