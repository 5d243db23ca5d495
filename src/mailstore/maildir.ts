import { createHash } from 'node:crypto';
import { closeSync, createReadStream, openSync, readSync, renameSync } from 'node:fs';
import { mkdir, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { DirectorySyncer, OFF_LOOP_JOB_LIMIT, offLoopWriter, StagingFolders, writeDurably } from '../fs/durable.ts';
import { randomHex } from '../mail/random.ts';
import type { Mailstore, RemoveResult, StoredMessage } from './store.ts';

// Maildir as specified at cr.yp.to/proto/maildir.html, with Courier/Dovecot's ",S=<size>"
// and ",W=<size with CRLF>" name extensions, so Dovecot, mutt and backup tools read it as is.
// Layout: <data_dir>/mail/<domain>/<local>/{tmp,new,cur}.

const SUBDIRS = ['tmp', 'new', 'cur'] as const;

export class MaildirStore implements Mailstore {
  readonly #root: string;
  readonly #host: string;
  readonly #known = new Set<string>();
  // Virtual sizes of foreign files that carry no ",W=", computed once per file name.
  readonly #virtualSizes = new Map<string, number>();
  // Shared by every session of the process, so concurrent deliveries to a folder share fsyncs.
  readonly #directories: DirectorySyncer;
  // Concurrent deliveries to one mailbox are staged in separate folders (see StagingFolders).
  readonly #staging = new StagingFolders();
  // Listings of large cur/ folders, least recently used first (see list()).
  readonly #listings = new Map<string, CachedListing>();
  #cachedEntries = 0;
  #counter = 0;
  #lastTime = 0;
  // When each mailbox's tmp/ was last cleaned of leftovers by this process.
  readonly #tmpCleaned = new Map<string, number>();

  /** Other machines use these folders too (a cluster on shared storage). */
  readonly #shared: boolean;
  readonly readInto?: Mailstore['readInto'];

  /**
   * `shared`: other machines deliver into and remove from these folders too (a cluster on
   * shared storage, a network file system). Large listings are then read afresh at every
   * login (a folder's time seen through a network file system's attribute cache cannot prove
   * that nothing changed), and no file call runs on the event loop (each is a round trip to
   * the file server, which would stall every session of the process).
   */
  constructor(dataDir: string, hostname: string, options: { shared?: boolean } = {}) {
    this.#shared = options.shared ?? false;
    this.#directories = new DirectorySyncer({ network: this.#shared });
    // A synchronous read is offered only where it costs microseconds: on shared storage the
    // reader streams instead (read(), off the event loop).
    if (!this.#shared) this.readInto = (message, scratch, offset, limit, expected) => this.#readInto(message, scratch, offset, limit, expected);
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

  create(address: string): Promise<string> {
    return this.ensure(address);
  }

  location(address: string): string {
    return this.pathOf(address);
  }

  #uniqueName(): string {
    // Seconds and microseconds give the delivery order (list() sorts on them), so they only
    // ever go forward here, even for deliveries within the same microsecond of the clock.
    let time = Date.now() * 1000 + Math.floor((performance.now() % 1) * 1000);
    if (time <= this.#lastTime) time = this.#lastTime + 1;
    this.#lastTime = time;
    this.#counter = (this.#counter + 1) % 1_000_000_000;
    return `${Math.floor(time / 1e6)}.M${time % 1e6}P${process.pid}Q${this.#counter}R${randomHex(6)}.${this.#host}`;
  }

  /**
   * The file name under which a message carried over from another server keeps its old UIDL and
   * its place in the old server's order (docs/ARCHITECTURE.md, Maildir): one of our own unique
   * names whose time is `position` microseconds after the epoch's first second, so imported mail
   * sorts in its old order and before anything delivered here, then `,U=<UIDL>` with "%", "/",
   * "," and ":" written as %XX (a name cannot hold "/", and "," and ":" end its parts), the
   * sizes, and `:2,<flags>`. `position`: a whole number below 2^50, unique within the mailbox.
   */
  importedName(message: { position: number; uidl: string; size: number; wireSize: number; flags: string }): string {
    if (!Number.isSafeInteger(message.position) || message.position < 0 || message.position >= 2 ** 50) throw new RangeError(`import position ${message.position} is not a whole number below 2^50`);
    if (!isImportableUidl(message.uidl)) throw new RangeError(`"${message.uidl}" cannot be kept as a UIDL (1-${MAX_IMPORTED_UIDL} characters from 0x21 to 0x7E)`);
    this.#counter = (this.#counter + 1) % 1_000_000_000;
    const seconds = 1 + Math.floor(message.position / 1e6);
    const micros = message.position % 1e6;
    const unique = `${seconds}.M${micros}P${process.pid}Q${this.#counter}R${randomHex(6)}.${this.#host}`;
    const flags = [...new Set(message.flags.replace(/[^A-Za-z]/g, ''))].sort().join('');
    const uidl = message.uidl.replace(/[%/,:]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
    const name = `${unique},U=${uidl},S=${message.size},W=${message.wireSize}:2,${flags}`;
    if (Buffer.byteLength(name) > 255) throw new RangeError(`the UIDL "${message.uidl}" is too long to keep in a file name`);
    return name;
  }

  async deliver(address: string, message: Buffer | Buffer[]): Promise<string> {
    const pieces = Array.isArray(message) ? message : [message];
    const path = await this.ensure(address);
    const unique = this.#uniqueName();
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
    const staging = this.#staging.acquire(join(path, 'tmp'));
    const tmpPath = join(staging.dir, unique);
    const newDir = join(path, 'new');
    if (this.#shared && size <= OFF_LOOP_JOB_LIMIT) {
      // Shared storage: the write, the rename and the folder's fsync in one hand-off to a
      // thread (src/fs/durable.ts), which removes the staged file if the write fails.
      try {
        await offLoopWriter().run({ writes: [{ path: tmpPath, data: pieces }], renames: [[tmpPath, join(newDir, name)]], sync: [newDir] });
      } finally {
        staging.release();
      }
      return name;
    }
    try {
      await writeDurably(tmpPath, pieces, { network: this.#shared });
    } catch (error) {
      await unlink(tmpPath).catch(() => {});
      throw error;
    } finally {
      staging.release();
    }
    // Synchronous for the same reason as the write (src/fs/durable.ts): a rename within one
    // folder tree is a metadata update in memory; the directory fsync below makes it durable.
    if (this.#shared) await rename(tmpPath, join(newDir, name));
    else renameSync(tmpPath, join(newDir, name));
    await this.#directories.sync(newDir);
    return name;
  }

  /**
   * The maildrop, oldest first. As a Maildir reader should, listing claims new mail: new/ is
   * moved to cur/ (with an empty ":2," info), so cur/ holds the mailbox and changes only when
   * mail arrives or is deleted. Its listing is kept between logins and trusted while the
   * folder's modification time is unchanged, so a login to a 100,000-message mailbox reads
   * the folder only when something changed.
   */
  async list(address: string): Promise<StoredMessage[]> {
    const path = await this.ensure(address);
    const cur = join(path, 'cur');
    const newDir = join(path, 'new');
    await this.#removeTmpLeftovers(path);
    const unclaimed = await this.#claimNew(newDir, cur);
    let entries = await this.#listFolder(cur);
    if (unclaimed.length > 0) entries = [...entries, ...unclaimed.map((name) => parseName(name, newDir))].sort(byDeliveryOrder);
    let missing = 0;
    for (const entry of entries) {
      if (entry.size >= 0) continue;
      const size = await this.#computeVirtualSize(entry.ref.slice(entry.ref.lastIndexOf('/') + 1), entry.ref);
      if (size === undefined) missing++; // vanished between readdir and open
      else entry.size = size;
    }
    return missing === 0 ? entries : entries.filter((entry) => entry.size >= 0);
  }

  /**
   * The octets a mailbox holds as POP3 counts them, in cur/ and new/ alike, without claiming new
   * mail as a listing does (for quota counts, src/quota/quota.ts). cur/ is read first: a message
   * a listing moves in between is missed rather than counted twice.
   */
  async usage(address: string): Promise<number> {
    const path = await this.ensure(address);
    let total = 0;
    for (const folder of ['cur', 'new']) {
      for (const entry of await this.#listFolder(join(path, folder))) {
        total += entry.size >= 0 ? entry.size : ((await this.#computeVirtualSize(entry.ref.slice(entry.ref.lastIndexOf('/') + 1), entry.ref)) ?? 0);
      }
    }
    return total;
  }

  /**
   * new/ to cur/ without fsyncs: a crash that loses a rename leaves the message in new/, where
   * the next listing finds it again under the same UIDL; either folder is a durable home.
   * Resolves to the names left in new/: a rename can fail for want of space (cur/ growing by a
   * block on a full ext4 disk: ENOSPC, or EDQUOT), and a customer must still be able to log in
   * and delete mail to free some, so the rest is served from new/ and claimed at a later login.
   */
  async #claimNew(newDir: string, cur: string): Promise<string[]> {
    const unclaimed: string[] = [];
    for (const name of await readdir(newDir)) {
      if (name.charCodeAt(0) === DOT) continue;
      if (unclaimed.length > 0) {
        unclaimed.push(name); // the first failure stands for the rest: no rename per message on a full disk
        continue;
      }
      try {
        const claimed = join(cur, name.includes(':') ? name : `${name}:2,`);
        if (this.#shared) await rename(join(newDir, name), claimed);
        else renameSync(join(newDir, name), claimed);
      } catch (error) {
        // ENOENT: another reader of this Maildir claimed it first, it is in cur/ now.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') unclaimed.push(name);
      }
    }
    return unclaimed;
  }

  /**
   * The Maildir spec (cr.yp.to/proto/maildir.html): a file in tmp/ untouched for 36 hours is
   * left over from a delivery that died (a kill -9, a power cut) and may go. Looked at when
   * a mailbox is listed, at most once an hour per mailbox, staging subfolders included (see
   * StagingFolders): usually one readdir of an empty folder. A failure here never fails the
   * listing: it only delays the cleanup.
   */
  async #removeTmpLeftovers(path: string): Promise<void> {
    const now = Date.now();
    const last = this.#tmpCleaned.get(path);
    if (last !== undefined && now - last < TMP_CLEANUP_INTERVAL_MS) return;
    if (this.#tmpCleaned.size >= TMP_CLEANED_LIMIT) this.#tmpCleaned.clear();
    this.#tmpCleaned.set(path, now);
    const removeOld = async (dir: string, depth: number): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const file = join(dir, entry.name);
        if (entry.isDirectory()) {
          if (depth === 0) await removeOld(file, 1);
        } else if ((await stat(file)).mtimeMs < now - TMP_LEFTOVER_MS) {
          await unlink(file);
        }
      }
    };
    await removeOld(join(path, 'tmp'), 0).catch(() => {});
  }

  async #listFolder(dir: string): Promise<ListedMessage[]> {
    // The time is read before the folder: a change during the read leaves a newer time.
    const modified = (await stat(dir, { bigint: true })).mtimeNs;
    const cached = this.#shared ? undefined : this.#listings.get(dir);
    if (cached && cached.modified === modified && cached.trusted) {
      this.#listings.delete(dir); // most recently used last
      this.#listings.set(dir, cached);
      return cached.entries;
    }
    const readAt = Date.now();
    // A login lists the whole maildrop, so each name is parsed once, by hand (no regular
    // expressions, no splitting, no garbage beyond the entry itself), and sorted on a number.
    const entries: ListedMessage[] = [];
    for (const name of await readdir(dir)) {
      if (name.charCodeAt(0) !== DOT) entries.push(parseName(name, dir));
    }
    entries.sort(byDeliveryOrder);
    this.#remember(dir, {
      modified,
      // File times come from a coarse clock (and from another machine's clock on shared
      // storage): a change in the same tick as the read could leave the time as it was. So a
      // listing is trusted only when the folder had not changed for a while before the read.
      trusted: Number(modified / 1_000_000n) < readAt - RACY_MS,
      entries,
    });
    return entries;
  }

  #remember(dir: string, listing: CachedListing): void {
    const previous = this.#listings.get(dir);
    if (previous) {
      this.#cachedEntries -= previous.entries.length;
      this.#listings.delete(dir);
    }
    // Small mailboxes are read again cheaply; memory goes to the large ones.
    if (this.#shared || listing.entries.length < CACHE_MIN_ENTRIES) return;
    this.#listings.set(dir, listing);
    this.#cachedEntries += listing.entries.length;
    for (const [oldest, old] of this.#listings) {
      if (this.#cachedEntries <= CACHE_MAX_ENTRIES) break;
      this.#listings.delete(oldest);
      this.#cachedEntries -= old.entries.length;
    }
  }

  #readInto(message: StoredMessage, scratch: Buffer, offset = 0, limit = scratch.length, expected = 0): Buffer | undefined {
    const fd = openSync(message.ref, 'r');
    try {
      const room = limit - offset;
      let length = readSync(fd, scratch, offset, room, 0);
      // A short read (possible on network file systems) is not the end of the file: read on
      // until the expected size, or the end. A local file reads whole at once.
      while (length < expected && length < room) {
        const more = readSync(fd, scratch, offset + length, room - length, length);
        if (more === 0) break;
        length += more;
      }
      // A full buffer may mean a longer file: the caller streams it instead.
      return length < room ? scratch.subarray(offset, offset + length) : undefined;
    } finally {
      closeSync(fd);
    }
  }

  read(message: StoredMessage): AsyncIterable<Buffer> {
    // Small messages are read whole with readInto(); this serves large ones (and files that
    // grew since the listing), in 256 KiB pieces so none is ever read whole on the event loop.
    // On shared storage it serves every message: a piece no larger than the message (plus one
    // octet, so one read reaches the end) spares a 256 KiB buffer per RETR, which as external
    // memory drove V8 into full collections (1.3 ms of CPU per 10 KB RETR instead of 0.1).
    return createReadStream(message.ref, { highWaterMark: Math.min(256 * 1024, message.size + 1) }) as AsyncIterable<Buffer>;
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

const DOT = 0x2e;
const COMMA = 0x2c;
const COLON = 0x3a;

/** Maildir spec: a file in tmp/ untouched this long is a leftover of a delivery that died. */
const TMP_LEFTOVER_MS = 36 * 60 * 60_000;
/** A mailbox's tmp/ is looked at no more often than this by one process ... */
const TMP_CLEANUP_INTERVAL_MS = 60 * 60_000;
/** ... which remembers this many mailboxes at most (then forgets them all and starts over). */
const TMP_CLEANED_LIMIT = 100_000;

/** Oldest delivery first; names that tell no time after, in name order. */
function byDeliveryOrder(a: ListedMessage, b: ListedMessage): number {
  return a.order - b.order || (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0);
}

/** A listing is trusted only if its folder had not changed for this long before it was read. */
const RACY_MS = 2000;
/** Folders with fewer messages are not kept: reading them again costs little. */
const CACHE_MIN_ENTRIES = 1000;
/** About 150 bytes each: some 150 MB at most for the listings of the largest mailboxes. */
const CACHE_MAX_ENTRIES = 1_000_000;

interface CachedListing {
  modified: bigint;
  trusted: boolean;
  entries: ListedMessage[];
}

/** A listed message, with what sorting needs; returned as the StoredMessage itself. */
interface ListedMessage {
  uidl: string;
  /** The size on the wire; -1 until computed when the name does not tell it reliably. */
  size: number;
  ref: string;
  /** Delivery order: seconds and microseconds at the start of the unique name (Infinity if absent). */
  order: number;
}

/** Where the digits read by digitsAt() ended (a variable, not a returned object: no garbage per name). */
let digitsEnd = 0;

/** The number written in digits at `from`; digitsEnd tells where they end (=== from when none). */
function digitsAt(name: string, from: number): number {
  let value = 0;
  let end = from;
  for (let c = name.charCodeAt(end); c >= 0x30 && c <= 0x39; c = name.charCodeAt(++end)) value = value * 10 + (c - 0x30);
  digitsEnd = end;
  return value;
}

/**
 * One pass over a Maildir name: `<seconds>.M<micros>P<pid>Q<counter>R<hex>.<host>` is our own
 * (see #uniqueName), then `,S=<size>`, `,W=<size with CRLF>` and `:2,<flags>`. ",W=" is the CRLF
 * size; ",S=" is the file size, exact only for our own CRLF files (no W means S = W), since a
 * foreign file's S may count LF-only lines.
 */
function parseName(name: string, dir: string): ListedMessage {
  const seconds = digitsAt(name, 0);
  let order = Infinity;
  let ours = false;
  let hostStart = 0;
  if (digitsEnd > 0 && name.charCodeAt(digitsEnd) === DOT) {
    let micros = 0;
    let at = digitsEnd + 1;
    if (name.charCodeAt(at) === 0x4d /* M */) {
      micros = digitsAt(name, at + 1);
      ours = digitsEnd > at + 1 && name.charCodeAt(digitsEnd) === 0x50; /* P: pid */
      at = digitsEnd;
      if (ours) {
        digitsAt(name, at + 1);
        ours = digitsEnd > at + 1 && name.charCodeAt(digitsEnd) === 0x51; /* Q: counter */
        at = digitsEnd;
      }
      if (ours) {
        digitsAt(name, at + 1);
        ours = digitsEnd > at + 1 && name.charCodeAt(digitsEnd) === 0x52; /* R: random hex */
        at = digitsEnd;
      }
      if (ours) {
        let hex = at + 1;
        for (let c = name.charCodeAt(hex); (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66); c = name.charCodeAt(++hex));
        ours = hex > at + 1 && name.charCodeAt(hex) === DOT;
        hostStart = hex + 1;
      }
    }
    order = seconds * 1e6 + micros;
  }
  // The unique part ends at the first "," or ":"; the info after ":" holds no size keys.
  let uniqueEnd = -1;
  let baseEnd = name.length;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c === COMMA && uniqueEnd === -1) uniqueEnd = i;
    else if (c === COLON) {
      if (uniqueEnd === -1) uniqueEnd = i;
      baseEnd = i;
      break;
    }
  }
  if (uniqueEnd === -1) uniqueEnd = name.length;
  let size = -1;
  const w = name.lastIndexOf(',W=', baseEnd);
  if (w >= uniqueEnd) {
    const value = digitsAt(name, w + 3);
    if (digitsEnd > w + 3) size = value;
  }
  if (size === -1 && ours) {
    const s = name.lastIndexOf(',S=', baseEnd);
    if (s >= uniqueEnd) {
      const value = digitsAt(name, s + 3);
      if (digitsEnd > s + 3) size = value;
    }
  }
  // Our unique names are printable ASCII well under 70 characters: the UIDL as is (RFC 1939 §7).
  // Only the host part can hold anything else (in a file another program named like ours).
  if (ours) {
    for (let i = hostStart; i < uniqueEnd; i++) {
      const c = name.charCodeAt(i);
      if (c < 0x21 || c > 0x7e) ours = false;
    }
  }
  // A message carried over from another server keeps the UIDL it had there (importedName).
  if (ours && name.charCodeAt(uniqueEnd + 1) === 0x55 /* U */ && name.charCodeAt(uniqueEnd + 2) === 0x3d /* = */) {
    const imported = importedUidl(name, uniqueEnd + 3);
    if (imported !== undefined) return { uidl: imported, size, ref: `${dir}/${name}`, order };
  }
  const uidl = ours && uniqueEnd <= 70 ? name.slice(0, uniqueEnd) : uidlOf(name);
  return { uidl, size, ref: `${dir}/${name}`, order };
}

/** The UIDL written at `from` up to the next "," or ":" (importedName), or undefined when it is none. */
function importedUidl(name: string, from: number): string | undefined {
  let end = from;
  let escaped = false;
  for (let c = name.charCodeAt(end); end < name.length && c !== COMMA && c !== COLON; c = name.charCodeAt(++end)) if (c === 0x25) escaped = true;
  const written = name.slice(from, end);
  let uidl = written;
  if (escaped) {
    try {
      uidl = decodeURIComponent(written);
    } catch {
      return undefined;
    }
  }
  return isImportableUidl(uidl) ? uidl : undefined;
}

/**
 * The longest UIDL an imported message keeps. RFC 1939 §7 allows 70 characters, but servers
 * have served longer ones (Dovecot's pop3_uidl_format = %f gives whole Maildir names, often
 * 80 or more): a client compares them as they were, so they are kept as they were.
 */
export const MAX_IMPORTED_UIDL = 160;

/** 1 to MAX_IMPORTED_UIDL characters in the range 0x21 to 0x7E (RFC 1939 §7, but for the length). */
export function isImportableUidl(uidl: string): boolean {
  if (uidl.length < 1 || uidl.length > MAX_IMPORTED_UIDL) return false;
  for (let i = 0; i < uidl.length; i++) {
    const c = uidl.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
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
