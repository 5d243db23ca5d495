import { chownSync, closeSync, constants, copyFileSync, createReadStream, fsyncSync, linkSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DirectorySyncer, writeDurably } from '../fs/durable.ts';
import { randomHex } from '../mail/random.ts';
import { MaildirStore, virtualSize } from '../mailstore/maildir.ts';

// Writing imported messages into popgate's Maildirs, resumably. Each message goes straight into
// cur/ under MaildirStore.importedName(), which keeps its old UIDL and its place in the old
// order. A journal in the Maildir, `popgate-import`, remembers what was imported:
//
//   intent <position> <uidl>   written (and fsync'd) before the messages of a batch are placed
//   done <uidl>                written once the batch's files and cur/ are fsync'd
//
// A run that stops anywhere (a crash, a full disk, a lost connection) is taken up by the next:
// a message with "done" is never imported again (not even after the customer deleted it here),
// one with only its "intent" is looked for in cur/ (found: it was placed; else it is placed
// now, at the position its intent gave), and the rest gets new positions around those.

export const JOURNAL_NAME = 'popgate-import';

/** Positions are this far apart, so messages a later run finds between two imported ones fit in between. */
const POSITION_GAP = 1024;
/** Messages placed between two journal writes. */
const BATCH = 500;
/** Above this a source file is read in pieces rather than whole. */
const WHOLE_READ_LIMIT = 8 * 1024 * 1024;
const JOURNAL_LIMIT = 256 * 1024 * 1024;

export interface ImportMessage {
  /** The UIDL the old server served it under. */
  uidl: string;
  /** Maildir flag letters (read/unread and the rest). */
  flags: string;
  /** A file to link or copy, or how to fetch the bytes. */
  source: { file: string } | { fetch: () => Promise<Buffer> };
}

export interface MailboxOutcome {
  imported: number;
  bytes: number;
  /** Already imported by an earlier run. */
  already: number;
  /** Hard links made (the rest were copied or fetched). */
  linked: number;
}

/** A problem that stops one mailbox's import; the message names the file or the UIDL. */
export class MailboxImportError extends Error {}

export interface ImportTargetOptions {
  /** Copy files even where a hard link could be made. */
  copy?: boolean;
  /** Count what would be done, write nothing. */
  dryRun?: boolean;
  /**
   * When running as root: the owner of popgate's mail folder. Only files this user owns are
   * linked (a link keeps the file's owner and mode, and the server must read it); others are
   * copied and handed to this owner.
   */
  owner?: { uid: number; gid: number };
}

export class ImportTarget {
  readonly #store: MaildirStore;
  readonly #options: ImportTargetOptions;
  readonly #directories = new DirectorySyncer({ network: false });

  constructor(store: MaildirStore, options: ImportTargetOptions = {}) {
    this.#store = store;
    this.#options = options;
  }

  /**
   * Imports `messages` (in the old server's order) into `address`'s mailbox. `onMessage` is told
   * of each message done (imported or found already there) with its size in octets.
   */
  async importMailbox(address: string, messages: ImportMessage[], onMessage: (bytes: number) => void = () => {}): Promise<MailboxOutcome> {
    const seen = new Set<string>();
    for (const message of messages) {
      if (seen.has(message.uidl)) throw new MailboxImportError(`the old server lists UIDL ${message.uidl} twice (RFC 1939 section 7 asks for unique ones): not imported, so no client loses track`);
      seen.add(message.uidl);
    }
    const outcome: MailboxOutcome = { imported: 0, bytes: 0, already: 0, linked: 0 };
    const path = this.#options.dryRun ? this.#store.pathOf(address) : await this.#store.ensure(address);
    const journalPath = join(path, JOURNAL_NAME);
    const journal = readJournal(journalPath);
    const present = this.#options.dryRun ? new Set<string>() : new Set((await this.#store.list(address)).map((message) => message.uidl));

    const pending: { message: ImportMessage; position: number }[] = [];
    const recovered: string[] = [];
    const positions = assignPositions(messages.map((m) => m.uidl), journal.intents, journal.done);
    for (const message of messages) {
      if (journal.done.has(message.uidl)) {
        outcome.already++;
        onMessage(0);
      } else if (journal.intents.has(message.uidl) && present.has(message.uidl)) {
        recovered.push(message.uidl);
        outcome.already++;
        onMessage(0);
      } else {
        const position = positions.get(message.uidl);
        if (position === undefined) throw new MailboxImportError(`no room left in the order for UIDL ${message.uidl} between the messages imported before: remove ${journalPath} and the imported messages, and import again`);
        pending.push({ message, position });
      }
    }
    if (this.#options.dryRun) {
      outcome.imported = pending.length;
      for (let i = 0; i < pending.length; i++) onMessage(0);
      return outcome;
    }
    const fresh = pending.filter(({ message }) => !journal.intents.has(message.uidl));
    appendJournal(journalPath, [...fresh.map(({ message, position }) => `intent ${position} ${message.uidl}\n`), ...recovered.map((uidl) => `done ${uidl}\n`)]);

    const cur = join(path, 'cur');
    for (let start = 0; start < pending.length; start += BATCH) {
      const batch = pending.slice(start, start + BATCH);
      for (const { message, position } of batch) {
        const placed = await this.#place(path, cur, message, position);
        outcome.imported++;
        outcome.bytes += placed.size;
        if (placed.linked) outcome.linked++;
        onMessage(placed.size);
      }
      await this.#directories.sync(cur);
      appendJournal(journalPath, batch.map(({ message }) => `done ${message.uidl}\n`));
    }
    return outcome;
  }

  async #place(path: string, cur: string, message: ImportMessage, position: number): Promise<{ size: number; linked: boolean }> {
    const tmp = join(path, 'tmp', `import.${process.pid}.${randomHex(8)}`);
    try {
      if ('fetch' in message.source) {
        const bytes = await message.source.fetch();
        const name = this.#store.importedName({ position, uidl: message.uidl, size: bytes.length, wireSize: virtualSize(bytes, -1, true), flags: message.flags });
        await writeDurably(tmp, bytes);
        this.#handOver(tmp);
        renameSync(tmp, join(cur, name));
        return { size: bytes.length, linked: false };
      }
      const file = message.source.file;
      const { size, wireSize } = await measure(file);
      const name = this.#store.importedName({ position, uidl: message.uidl, size, wireSize, flags: message.flags });
      if (!this.#options.copy && this.#mayLink(file)) {
        try {
          // The file's data is already on disk (the old server wrote it): only cur/ needs its fsync.
          linkSync(file, join(cur, name));
          return { size, linked: true };
        } catch (error) {
          // Another file system (EXDEV), or links not allowed to this user (EPERM, protected_hardlinks): copy.
          const code = (error as NodeJS.ErrnoException).code;
          if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK' && code !== 'ENOTSUP') throw error;
        }
      }
      copyFileSync(file, tmp, constants.COPYFILE_EXCL);
      const fd = openSync(tmp, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      this.#handOver(tmp);
      renameSync(tmp, join(cur, name));
      return { size, linked: false };
    } catch (error) {
      try {
        unlinkSync(tmp);
      } catch {
        // Never created, or already renamed.
      }
      const what = 'file' in message.source ? message.source.file : `UIDL ${message.uidl}`;
      throw new MailboxImportError(`${what}: ${(error as Error).message}`, { cause: error });
    }
  }

  #mayLink(file: string): boolean {
    if (!this.#options.owner) return true;
    return statSync(file).uid === this.#options.owner.uid;
  }

  #handOver(file: string): void {
    const owner = this.#options.owner;
    if (owner) chownSync(file, owner.uid, owner.gid);
  }
}

/** The file's size and its size with CRLF line ends (what POP3 sends), read once. */
async function measure(file: string): Promise<{ size: number; wireSize: number }> {
  const { size } = statSync(file);
  if (size <= WHOLE_READ_LIMIT) {
    const bytes = readFileSync(file);
    return { size: bytes.length, wireSize: virtualSize(bytes, -1, true) };
  }
  let total = 0;
  let wire = 0;
  let previous = -1;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    total += chunk.length;
    wire += virtualSize(chunk, previous, false);
    previous = chunk[chunk.length - 1];
  }
  // An unterminated last line gets its line end on the wire (as MaildirStore counts it).
  wire += previous === -1 || previous === 0x0a ? 0 : previous === 0x0d ? 1 : 2;
  return { size: total, wireSize: wire };
}

interface Journal {
  intents: Map<string, number>;
  done: Set<string>;
}

function readJournal(path: string): Journal {
  const journal: Journal = { intents: new Map(), done: new Set() };
  let text: string;
  try {
    if (statSync(path).size > JOURNAL_LIMIT) throw new MailboxImportError(`${path} is larger than ${JOURNAL_LIMIT} bytes`);
    text = readFileSync(path, 'latin1');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return journal;
    throw error;
  }
  const lines = text.split('\n');
  // A last line without its line end was being written when a run stopped: its batch is redone.
  lines.pop();
  for (const [index, line] of lines.entries()) {
    const intent = /^intent (\d{1,16}) ([\x21-\x7e]+)$/.exec(line);
    const done = /^done ([\x21-\x7e]+)$/.exec(line);
    if (intent) journal.intents.set(intent[2], Number(intent[1]));
    else if (done) journal.done.add(done[1]);
    else throw new MailboxImportError(`${path} line ${index + 1} is damaged (${JSON.stringify(line.slice(0, 80))}): move the file away to import this mailbox again from the start`);
  }
  return journal;
}

function appendJournal(path: string, lines: string[]): void {
  if (lines.length === 0) return;
  const fd = openSync(path, 'a', 0o600);
  try {
    writeSync(fd, lines.join(''));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A position for each UIDL of `order` (the old server's order) that has none yet: those that
 * had one (`known`) keep it, and new ones go after the last known one before them, spread over
 * the room up to the next known one, POSITION_GAP apart when there is no next. A UIDL with no
 * room left gets none. `done` ones are left out (their messages are not placed again).
 */
export function assignPositions(order: string[], known: Map<string, number>, done: Set<string>): Map<string, number> {
  const positions = new Map<string, number>();
  // The highest position ever given in this mailbox, so new ones never reuse a number.
  let highest = 0;
  for (const position of known.values()) highest = Math.max(highest, position);
  let previous = 0;
  let i = 0;
  while (i < order.length) {
    const uidl = order[i];
    const position = known.get(uidl);
    if (position !== undefined) {
      if (!done.has(uidl)) positions.set(uidl, position);
      previous = Math.max(previous, position);
      i++;
      continue;
    }
    // A run of new UIDLs up to the next known one.
    let end = i;
    while (end < order.length && !known.has(order[end])) end++;
    const next = end < order.length ? known.get(order[end])! : Infinity;
    const count = end - i;
    if (next === Infinity) {
      const base = Math.max(previous, highest);
      for (let k = 0; k < count; k++) positions.set(order[i + k], base + (k + 1) * POSITION_GAP);
    } else {
      const step = Math.floor((next - previous) / (count + 1));
      if (step >= 1) for (let k = 0; k < count; k++) positions.set(order[i + k], previous + (k + 1) * step);
    }
    i = end;
  }
  return positions;
}
