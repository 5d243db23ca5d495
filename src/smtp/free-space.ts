import { statfs } from 'node:fs/promises';
import type { Logger } from '../log/logger.ts';

// Whether the file system under data_dir has room for mail. A server that knows it is full
// says so before the client uploads a message (RFC 5321 §4.2.2 452 and RFC 3463 X.3.1
// "mail system full", at MAIL, RCPT and DATA), rather than reading 25 MB and then answering
// that it could not keep them. statfs(2) is cheap but not free, so its answer is reused for a
// second; sessions asking meanwhile share one call.

const CHECK_INTERVAL_MS = 1000;

export class FreeSpace {
  readonly #dir: string;
  readonly #minimum: number;
  readonly #log: Logger;
  #checkedAt = -Infinity;
  #low = false;
  #pending: Promise<boolean> | undefined;
  #failing = false;

  /** `minimum`: octets that must stay free for new mail to be taken (0: never checked). */
  constructor(dir: string, minimum: number, log: Logger) {
    this.#dir = dir;
    this.#minimum = minimum;
    this.#log = log;
  }

  /** Whether free space is below the minimum (as of at most a second ago). */
  low(now = Date.now()): Promise<boolean> {
    if (this.#minimum <= 0) return Promise.resolve(false);
    if (now - this.#checkedAt < CHECK_INTERVAL_MS) return Promise.resolve(this.#low);
    return (this.#pending ??= this.#check(now).finally(() => (this.#pending = undefined)));
  }

  async #check(now: number): Promise<boolean> {
    try {
      const stats = await statfs(this.#dir);
      // bavail: the blocks an unprivileged process may still use (root's reserve excluded).
      const free = Number(stats.bavail) * Number(stats.bsize);
      const low = free < this.#minimum;
      if (low !== this.#low) {
        if (low) this.#log.error({ event: 'disk_low', dir: this.#dir, free, minimum: this.#minimum }, 'free space below smtp.min_free_space: new mail is deferred with 452 4.3.1');
        else this.#log.info({ event: 'disk_ok', dir: this.#dir, free }, 'free space back above smtp.min_free_space');
      }
      this.#low = low;
      this.#failing = false;
    } catch (error) {
      // Cannot tell: mail is taken (a full disk still fails at the write, with 452 or 451).
      if (!this.#failing) this.#log.error({ event: 'statfs_failed', dir: this.#dir, err: error }, 'cannot check the free space of data_dir');
      this.#failing = true;
      this.#low = false;
    }
    this.#checkedAt = now;
    return this.#low;
  }
}
