import { closeSync, fsync, mkdirSync, openSync, writevSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { RequestThread } from '../threads/request-thread.ts';

// The two halves of "on disk before we say so" (RFC 5321 §6.1): the file's bytes, and the
// directory entry that names it. A rename is durable only once its folder is fsync'd.

/**
 * Messages up to this size are written with synchronous calls: opening, writing into the page
 * cache and closing take microseconds, while each asynchronous call is a trip through libuv's
 * thread pool that costs several times more CPU than the work itself (measured: ~40% less CPU
 * per delivered message). Only the fsync, which waits for the disk, goes to the thread pool,
 * where concurrent fsyncs are committed together by the file system's journal.
 */
const SYNC_WRITE_LIMIT = 1024 * 1024;

const fsyncAsync = promisify(fsync);

/** The octets of a message given whole or in pieces. */
export function byteLength(data: Buffer | readonly Buffer[]): number {
  if (!Array.isArray(data)) return (data as Buffer).length;
  let size = 0;
  for (const piece of data) size += piece.length;
  return size;
}

/**
 * Creates `path` (it must not exist), writes the pieces without concatenating, and fsyncs.
 * `network`: the file system is remote (shared storage), where every call is a round trip to
 * the server: nothing then runs on the event loop, whatever the size.
 */
export async function writeDurably(path: string, data: Buffer | Buffer[], options: { network?: boolean } = {}): Promise<void> {
  const pieces = (Array.isArray(data) ? data : [data]).filter((piece) => piece.length > 0);
  const size = byteLength(pieces);
  if (size > SYNC_WRITE_LIMIT || options.network) return writeLargeDurably(path, pieces);
  const fd = openSync(path, 'wx', 0o600);
  try {
    let pending = pieces;
    while (pending.length > 0) pending = remainder(pending, writevSync(fd, pending));
    await fsyncAsync(fd);
  } finally {
    closeSync(fd);
  }
}

async function writeLargeDurably(path: string, pieces: Buffer[]): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    let pending = pieces;
    while (pending.length > 0) pending = remainder(pending, (await handle.writev(pending)).bytesWritten);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** What is left to write after a writev of `pending` wrote `written` octets. */
function remainder(pending: Buffer[], written: number): Buffer[] {
  let index = 0;
  while (index < pending.length && written >= pending[index].length) written -= pending[index++].length;
  const rest = pending.slice(index);
  if (rest.length > 0 && written > 0) rest[0] = rest[0].subarray(written);
  return rest;
}

async function syncDirectory(path: string): Promise<void> {
  const fd = openSync(path, 'r');
  try {
    await fsyncAsync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The same, every call off the event loop: for a network file system. */
async function syncRemoteDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

interface DirectoryState {
  /** The fsync under way: it may have started before a caller's rename, so it cannot vouch for it. */
  running?: Promise<void>;
  /** The fsync that starts when `running` ends; everyone who asks meanwhile shares it. */
  queued?: Promise<void>;
}

/**
 * Group commit for directory entries. One fsync of a folder makes every rename into it that
 * came before the fsync durable, so concurrent deliveries to a folder (ten SMTP sessions
 * writing to one busy mailbox, or the queue spool) share fsyncs instead of queueing one each.
 * A caller's promise resolves only after an fsync that *started* after the call, so the
 * guarantee of syncDirectory() is kept exactly: the rename the caller made is on disk.
 */
export class DirectorySyncer {
  readonly #directories = new Map<string, DirectoryState>();
  readonly #fsync: (path: string) => Promise<void>;

  /** `fsync`: how a folder is synced; `{ network: true }` for a network file system. */
  constructor(fsync: ((path: string) => Promise<void>) | { network: boolean } = syncDirectory) {
    this.#fsync = typeof fsync === 'function' ? fsync : fsync.network ? syncRemoteDirectory : syncDirectory;
  }

  sync(path: string): Promise<void> {
    let state = this.#directories.get(path);
    if (!state) {
      state = {};
      this.#directories.set(path, state);
    }
    if (state.queued) return state.queued;
    const directory = state;
    const start = (): Promise<void> => {
      directory.queued = undefined;
      const running = this.#fsync(path);
      directory.running = running;
      const settle = () => {
        if (directory.running !== running) return;
        directory.running = undefined;
        if (!directory.queued) this.#directories.delete(path);
      };
      running.then(settle, settle);
      return running;
    };
    if (!directory.running) return start();
    // A failed fsync fails its own callers; the next one is tried afresh for the new ones.
    directory.queued = directory.running.then(start, start);
    return directory.queued;
  }
}

/** More staging folders than this per folder would not add parallel disk writes worth their cost. */
const MAX_STAGING_SLOTS = 16;

/**
 * Where to write a new file before it is renamed into place: the given folder (a Maildir's
 * tmp/) for the first write in flight, and tmp/1, tmp/2, ... (made when first needed) for
 * writes overlapping it. On ext4 without a journal, fsync of a new file also writes its
 * folder's block, and a create in that folder waits for that write; concurrent deliveries to
 * one busy mailbox staged in one folder therefore queue behind each other's fsyncs (measured
 * with ten writers of 100 KB: some 40% fewer files per second, and the waits block the event
 * loop). Readers of Maildir never look into tmp/, so the subfolders are invisible to them.
 */
export class StagingFolders {
  readonly #inUse = new Map<string, Set<number>>();
  readonly #made = new Set<string>();
  #spread = 0;

  acquire(folder: string): { dir: string; release: () => void } {
    let used = this.#inUse.get(folder);
    if (!used) {
      used = new Set();
      this.#inUse.set(folder, used);
    }
    let slot = 0;
    while (used.has(slot) && slot < MAX_STAGING_SLOTS) slot++;
    if (slot === MAX_STAGING_SLOTS) slot = 1 + (this.#spread++ % (MAX_STAGING_SLOTS - 1)); // all busy: share
    const taken = !used.has(slot);
    used.add(slot);
    const dir = slot === 0 ? folder : join(folder, String(slot));
    if (slot > 0 && !this.#made.has(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      this.#made.add(dir);
    }
    const set = used;
    return {
      dir,
      release: () => {
        if (taken) set.delete(slot);
        if (set.size === 0) this.#inUse.delete(folder);
      },
    };
  }

  /** Forgets the subfolders made so far (after their parent was removed and made again). */
  forget(): void {
    this.#made.clear();
  }
}

/** One job for OffLoopWriter: files to create, then renames, then folders to fsync. */
export interface DurableJob {
  /** Each created (it must not exist), written whole, fsync'd and closed, in order. */
  writes: { path: string; data: Buffer | Buffer[] }[];
  /** After every write: [from, to], in order. */
  renames: [string, string][];
  /** After the renames: folders whose entries must be on disk before the job resolves. */
  sync: string[];
}

/** A job as posted to a thread (src/threads/request-thread.ts adds the id): the bytes of each write in a buffer of its own. */
export interface DurableJobMessage {
  id: number;
  writes: { path: string; data: ArrayBuffer }[];
  renames: [string, string][];
  sync: string[];
}

/** Jobs whose bytes are larger than this take the call-by-call path (their copy would be felt). */
export const OFF_LOOP_JOB_LIMIT = 1024 * 1024;
/** Threads at most: as many file calls at once as libuv's own pool allows by default. */
const OFF_LOOP_THREADS = 4;
/** Jobs a thread is given before the next one is used (see OffLoopWriter). */
const OFF_LOOP_DEPTH = 6;

/**
 * Writes, renames and folder fsyncs for storage where no file call may run on the event loop
 * (a network file system), as one hand-off per job instead of one per call. Every call through
 * libuv's thread pool (open, writev, fsync, close, rename, and the folder's open, fsync and
 * close) wakes a pool thread and then the event loop again, and those wake-ups and context
 * switches, with the promise and FileHandle of each call, cost a node about a third of its CPU
 * per delivered message (docs/cluster.md). Here a job goes to a thread of its own
 * (src/fs/durable-worker.ts) that makes the calls synchronously, and the jobs that reach a
 * busy thread are done as one batch with one fsync per folder.
 *
 * A job goes to the first thread with fewer than OFF_LOOP_DEPTH jobs in hand, so on fast
 * storage one thread takes most of them in batches, and on slow storage (where jobs pile up)
 * up to OFF_LOOP_THREADS threads work at once. Threads start when first needed and do not
 * keep the process alive when idle; one that dies fails its jobs and is started again.
 */
export class OffLoopWriter {
  readonly #threads = Array.from({ length: OFF_LOOP_THREADS }, () => new RequestThread<Omit<DurableJobMessage, 'id'>, undefined>(new URL('./durable-worker.ts', import.meta.url), { name: 'the file writer thread' }));

  async run(job: DurableJob): Promise<void> {
    // The first thread with room, else the least busy.
    let thread = this.#threads.find((candidate) => candidate.waiting < OFF_LOOP_DEPTH);
    thread ??= this.#threads.reduce((least, candidate) => (candidate.waiting < least.waiting ? candidate : least));
    const transfer: ArrayBuffer[] = [];
    const writes = job.writes.map(({ path, data }) => {
      const bytes = copyOf(Array.isArray(data) ? data : [data]);
      transfer.push(bytes.buffer as ArrayBuffer);
      return { path, data: bytes.buffer as ArrayBuffer };
    });
    await thread.request({ writes, renames: job.renames, sync: job.sync }, transfer);
  }

  /** Stops the threads (jobs under way are failed). */
  async close(): Promise<void> {
    await Promise.all(this.#threads.map((thread) => thread.close()));
  }
}

/** The pieces in one new buffer of their own, which can be handed to a thread. */
function copyOf(pieces: Buffer[]): Uint8Array {
  const bytes = new Uint8Array(byteLength(pieces));
  let at = 0;
  for (const piece of pieces) {
    bytes.set(piece, at);
    at += piece.length;
  }
  return bytes;
}

let sharedWriter: OffLoopWriter | undefined;

/** The process's OffLoopWriter, shared by every store (its threads are started when needed). */
export function offLoopWriter(): OffLoopWriter {
  return (sharedWriter ??= new OffLoopWriter());
}
