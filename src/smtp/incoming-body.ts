import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomHex } from '../mail/random.ts';

// Where a message goes while DATA comes in. A slow or unfinished upload must not hold memory:
// each message keeps at most `memoryPerMessage` octets in memory, all messages being received
// together at most `memoryTotal`, and the rest goes to a file in the spool's staging folder as
// it arrives (written synchronously: on the page cache a write takes microseconds, like the
// small-file writes of src/fs/durable.ts). A message whose connection closes is dropped at once,
// file and memory. After a crash the file is a staging leftover that the queue's recovery
// removes at the next start (src/queue/spool.ts sweep).

export interface BodyLimits {
  /** Octets one message may keep in memory before it spills to a file. */
  memoryPerMessage: number;
  /** Octets all messages being received may keep in memory together. */
  memoryTotal: number;
}

/** The incoming messages of one process: their shared memory budget and their staging folder. */
export class IncomingBodies {
  readonly #dir: string;
  readonly #limits: BodyLimits;
  #memoryInUse = 0;
  #spilled = 0;
  #counter = 0;
  #ready = false;

  constructor(dir: string, limits: BodyLimits) {
    this.#dir = dir;
    this.#limits = limits;
  }

  /** Octets of message bodies held in memory right now (all sessions). */
  get memoryInUse(): number {
    return this.#memoryInUse;
  }

  /** Messages being received that went to a file. */
  get spilled(): number {
    return this.#spilled;
  }

  /** A new, empty message body. */
  open(): IncomingBody {
    return new IncomingBody(this);
  }

  /** Takes `octets` of the shared budget if the message may hold them in memory. */
  reserve(held: number, octets: number): boolean {
    if (held + octets > this.#limits.memoryPerMessage || this.#memoryInUse + octets > this.#limits.memoryTotal) return false;
    this.#memoryInUse += octets;
    return true;
  }

  release(octets: number): void {
    this.#memoryInUse -= octets;
  }

  /** A new file for a spilled message (counted until `closeFile`). */
  createFile(): { fd: number; path: string } {
    if (!this.#ready) {
      mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
      this.#ready = true;
    }
    const path = join(this.#dir, `${hostname()}.${process.pid}.${++this.#counter}.${randomHex(4)}.part`);
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (error) {
      // The folder may have been swept away (recovery at start); make it again once.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
      fd = openSync(path, 'wx', 0o600);
    }
    this.#spilled++;
    return { fd, path };
  }

  /** Closes and removes a spilled message's file; one that cannot be removed is left to the next start's sweep. */
  closeFile(file: { fd: number; path: string }): void {
    this.#spilled--;
    try {
      closeSync(file.fd);
      unlinkSync(file.path);
    } catch {
      // Nothing better to do mid-session: recovery empties the staging folder at start.
    }
  }
}

/** One message being received: in memory while it is small, then in a file. */
export class IncomingBody {
  readonly #bodies: IncomingBodies;
  #pieces: Buffer[] = [];
  #held = 0;
  #file: { fd: number; path: string } | undefined;
  #error: Error | undefined;
  #discarded = false;

  constructor(bodies: IncomingBodies) {
    this.#bodies = bodies;
  }

  /** Why the message could not be kept (a full disk), if it could not. */
  get error(): Error | undefined {
    return this.#error;
  }

  append(piece: Buffer): void {
    if (this.#discarded || this.#error || piece.length === 0) return;
    if (!this.#file && this.#bodies.reserve(this.#held, piece.length)) {
      // A copy: the piece is a view of the socket's buffer, which it would keep alive.
      this.#pieces.push(Buffer.from(piece));
      this.#held += piece.length;
      return;
    }
    try {
      if (!this.#file) {
        this.#file = this.#bodies.createFile();
        for (const held of this.#pieces) writeAll(this.#file.fd, held);
        this.#freeMemory();
      }
      writeAll(this.#file.fd, piece);
    } catch (error) {
      this.#error = error as Error;
      this.discard();
    }
  }

  /** The whole message, read back from its file if it spilled. */
  content(): Buffer[] {
    if (this.#error) throw this.#error;
    return this.#file ? [readFileSync(this.#file.path)] : this.#pieces;
  }

  /** Frees everything (memory, file); the body keeps nothing more. Safe to call twice. */
  discard(): void {
    this.#discarded = true;
    this.#freeMemory();
    const file = this.#file;
    this.#file = undefined;
    if (file) this.#bodies.closeFile(file);
  }

  #freeMemory(): void {
    this.#bodies.release(this.#held);
    this.#held = 0;
    this.#pieces = [];
  }
}

function writeAll(fd: number, data: Buffer): void {
  for (let written = 0; written < data.length; ) written += writeSync(fd, data, written);
}
