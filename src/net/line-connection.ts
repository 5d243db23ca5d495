import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from '../log/logger.ts';
import { TLS_MIN_VERSION } from '../tls/context.ts';

// One connection of a line-oriented protocol (POP3, SMTP, and whatever line protocol comes
// next), everything that is not the protocol itself: reading lines under a length limit,
// handling pipelined commands strictly one at a time in arrival order, backpressure both ways,
// replies to a pipelined group sent together, the TLS upgrade that discards what was pipelined
// in the clear, the idle timeout and the deadlines of a command and of raw input, counting
// client errors with a growing delay, and ending gracefully or at once. A protocol session gets
// one of these and never sees its server.

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);

export interface LineConnectionSettings {
  /** "pop3", "smtp": for log messages. */
  protocol: string;
  /** Longest command line in octets, line end included; past it the connection is closed. */
  maxLineLength: number;
  /** The longest silence (no byte at all). */
  idleTimeoutMs: number;
  /**
   * The longest a command may take to arrive, from when the connection is ready for it until
   * its line is complete: a client trickling a byte at a time cannot hold a connection longer
   * (RFC 5321 §4.5.3.2.7 asks an SMTP server to wait at least 5 minutes for a command).
   */
  commandTimeoutMs: number;
  /** The longest raw input may take from `readRaw` to its end (an SMTP DATA block). */
  rawTimeoutMs: number;
  handshakeTimeoutMs: number;
  /** Client errors tolerated; the next one closes the connection. */
  maxErrors: number;
  /** The n-th error is answered after n times this (at most 5 s): dictionary attacks crawl. */
  errorDelayMs: number;
  /** The current certificate (it may be reloaded), or undefined when TLS is not configured. */
  tls: () => SecureContext | undefined;
}

/** The protocol's words for what the connection itself decides. */
export interface ConnectionTexts {
  lineTooLong(limit: number): string;
  tooManyErrors: string;
  idleTimeout: string;
  shuttingDown: string;
  internalError: string;
}

/** What a protocol session provides to its connection. */
export interface LineSession {
  /**
   * The first reply, once the connection is ready (after the handshake for implicit TLS). A
   * promise holds every command back until it settles (a greeting that waits on purpose).
   */
  greet(): void | Promise<void>;
  /** One command line, without its line end. A promise holds back the next line until it settles. */
  command(line: string): void | Promise<void>;
  /** Called once when the connection has closed, however it ended. */
  closed?(): void | Promise<void>;
}

/**
 * Raw input for a while (SMTP DATA): `push` takes bytes until it returns what followed the end
 * of its part (an empty buffer when nothing did); `end` then runs before the next command line.
 */
export interface RawReader {
  push(chunk: Buffer): Buffer | undefined;
  end(): void | Promise<void>;
}

export class LineConnection {
  readonly ip: string;
  readonly id: string;
  /** The session's logger; a session may replace it with a child (adding the user, say). */
  log: Logger;
  readonly startedAt = Date.now();
  /** Set by the listener that owns the connection, for its bookkeeping. */
  onClosed?: () => void;

  readonly #settings: LineConnectionSettings;
  readonly #texts: ConnectionTexts;
  readonly #raw: Socket;
  #stream: Socket | TLSSocket;
  #session: LineSession | undefined;
  #secure = false;
  #input: Buffer = EMPTY;
  #busy = false;
  #paused = false;
  /** The stream whose replies are held back while a pipelined group is answered. */
  #corked: Socket | TLSSocket | undefined;
  #reader: RawReader | undefined;
  /** The running deadline of the command or raw input being waited for. */
  #deadline: NodeJS.Timeout | undefined;
  #errors = 0;
  #shuttingDown = false;
  #closed = false;
  readonly #whenClosed: Promise<void>;
  #resolveClosed!: () => void;

  constructor(socket: Socket, ip: string, id: string, settings: LineConnectionSettings, texts: ConnectionTexts, log: Logger) {
    this.#raw = socket;
    this.#stream = socket;
    this.ip = ip;
    this.id = id;
    this.#settings = settings;
    this.#texts = texts;
    this.log = log.child({ sid: id, ip });
    this.#whenClosed = new Promise((resolve) => (this.#resolveClosed = resolve));
    socket.setTimeout(settings.idleTimeoutMs, () => {
      this.log.info({ event: 'idle_timeout' }, `${settings.protocol} idle timeout`);
      void this.abort(this.#texts.idleTimeout);
    });
    socket.once('close', () => void this.#onClose());
  }

  /** Starts serving `session`: at once, or after a TLS handshake (POP3S, submissions). */
  start(session: LineSession, implicitTls: boolean): void {
    this.#session = session;
    this.#awaitCommand();
    if (!implicitTls) {
      this.log.info({ event: 'connect', tls: false }, `${this.#settings.protocol} session started`);
      this.#attach(this.#raw);
      this.#greet(session);
      return;
    }
    const tls = this.#beginTls();
    tls.once('secure', () => {
      this.log.info({ event: 'connect', tls: true, protocol: tls.getProtocol() }, `${this.#settings.protocol} session started over TLS`);
      this.#greet(session);
    });
  }

  /** Input that came while the greeting was awaited is read only once it is out. */
  #greet(session: LineSession): void {
    const greeting = this.#run(() => session.greet());
    if (!greeting) return;
    this.#busy = true;
    void greeting.then(() => {
      this.#busy = false;
      if (this.#paused && !this.#closed) {
        this.#paused = false;
        this.#stream.resume();
      }
      if (this.#input.length > 0 && !this.#closed) void this.#process();
    });
  }

  /** Whether the client has sent anything not read yet (the pregreet test asks before the greeting). */
  get hasUnreadInput(): boolean {
    return this.#input.length > 0;
  }

  get secure(): boolean {
    return this.#secure;
  }

  /** Whether a certificate is configured, so STARTTLS/STLS can be offered. */
  get tlsAvailable(): boolean {
    return this.#settings.tls() !== undefined;
  }

  /** The connection has ended (after a last reply, an abort, or the client leaving). */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Resolves once the socket has closed. */
  get whenClosed(): Promise<void> {
    return this.#whenClosed;
  }

  /** Where replies go now (the TLS socket after an upgrade), for multi-part writes. */
  get stream(): Socket | TLSSocket {
    return this.#stream;
  }

  // --- input ---

  #attach(stream: Socket | TLSSocket): void {
    stream.on('data', (chunk: Buffer) => {
      // Bytes from before a TLS upgrade never reach the new session; after the end nothing
      // more is read into memory.
      if (stream !== this.#stream || this.#closed) return;
      this.#input = this.#input.length === 0 ? chunk : Buffer.concat([this.#input, chunk]);
      if (this.#busy) {
        // A client far ahead of its replies is not read further until it catches up.
        if (this.#input.length > this.#settings.maxLineLength * 16 && !this.#paused) {
          this.#paused = true;
          stream.pause();
        }
        return;
      }
      void this.#process();
    });
    // A socket whose PROXY header was read arrives paused, with what followed the header put
    // back to be read first; any other stream is already flowing, and this changes nothing.
    stream.resume();
  }

  async #process(): Promise<void> {
    const session = this.#session!;
    this.#busy = true;
    try {
      while (!this.#closed && this.#input.length > 0) {
        const reader = this.#reader;
        if (reader) {
          const input = this.#input;
          this.#input = EMPTY;
          const rest = reader.push(input);
          if (rest === undefined) break; // more to come
          this.#input = rest;
          this.#reader = undefined;
          this.#clearDeadline();
          const ended = this.#run(() => reader.end());
          if (ended) await ended;
          await this.drained();
          continue;
        }
        const lf = this.#input.indexOf(LF);
        const lineLength = lf === -1 ? this.#input.length : lf + 1;
        if (lineLength > this.#settings.maxLineLength) {
          this.log.info({ event: 'line_too_long', length: lineLength }, 'command line too long');
          await this.abort(this.#texts.lineTooLong(this.#settings.maxLineLength));
          return;
        }
        if (lf === -1) break;
        let end = lf;
        if (end > 0 && this.#input[end - 1] === CR) end--;
        const line = this.#input.toString('utf8', 0, end);
        this.#input = lf + 1 === this.#input.length ? EMPTY : this.#input.subarray(lf + 1);
        this.#clearDeadline(); // the command arrived in time; the next one's clock starts after it
        // RFC 2920 §3.1, RFC 2449 §6.6: the replies to a pipelined group go out together once
        // the group is answered, in one segment instead of one write (and one wake-up) each.
        if (!this.#corked && this.#input.indexOf(LF) !== -1) {
          this.#corked = this.#stream;
          this.#corked.cork();
        }
        // Most commands answer at once; only those that wait (for storage, say) return a promise.
        const pending = this.#run(() => session.command(line));
        if (pending) await pending;
        // Flushed when the group is done, before raw input (the client waits for the go-ahead),
        // and when the held replies fill the socket's buffer.
        if (this.#corked && (this.#reader || this.#corked.writableNeedDrain || this.#input.indexOf(LF) === -1)) this.flush();
        if (this.#stream.writableNeedDrain) await this.drained();
        if (this.#shuttingDown && !this.#reader && this.#input.length === 0 && !this.#closed) await this.abort(this.#texts.shuttingDown);
      }
    } finally {
      this.flush();
      this.#busy = false;
      this.#awaitCommand();
      if (this.#paused && !this.#closed) {
        this.#paused = false;
        this.#stream.resume();
      }
    }
  }

  /** Runs a step of the session; a fault on our side is logged and answered, never fatal. */
  #run(step: () => void | Promise<void>): void | Promise<void> {
    const fail = (error: unknown) => {
      this.log.error({ err: error }, `${this.#settings.protocol} command failed`);
      this.reply(this.#texts.internalError);
    };
    try {
      const pending = step();
      if (pending) return pending.catch(fail);
    } catch (error) {
      fail(error);
    }
  }

  /** The next input goes to `reader` instead of being read as command lines. */
  readRaw(reader: RawReader): void {
    this.#reader = reader;
    this.#clearDeadline();
    this.#armDeadline(this.#settings.rawTimeoutMs, 'data_timeout');
  }

  // --- deadlines ---

  /**
   * Waiting for input: the deadline of the next command (or of the raw input under way) runs
   * from now, unless it already runs. Bytes that arrive do not restart it, unlike the idle timeout.
   */
  #awaitCommand(): void {
    if (this.#closed || this.#deadline) return;
    if (this.#reader) this.#armDeadline(this.#settings.rawTimeoutMs, 'data_timeout');
    else this.#armDeadline(this.#settings.commandTimeoutMs, 'command_timeout');
  }

  #armDeadline(ms: number, event: 'command_timeout' | 'data_timeout'): void {
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined;
      this.log.info({ event, limitMs: ms }, `${this.#settings.protocol} ${event === 'command_timeout' ? 'command' : 'data'} took too long`);
      void this.abort(this.#texts.idleTimeout);
    }, ms);
    this.#deadline.unref();
  }

  #clearDeadline(): void {
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }

  // --- output ---

  /** One reply line (the line end is added). */
  reply(text: string): void {
    if (this.#stream.writable) this.#stream.write(`${text}\r\n`);
  }

  /** Sends replies held back for a pipelined group now. */
  flush(): void {
    const corked = this.#corked;
    this.#corked = undefined;
    corked?.uncork();
  }

  /** Waits while the client is behind on reading (held replies are sent first); resolves at once otherwise. */
  drained(): Promise<void> {
    this.flush();
    const stream = this.#stream;
    if (!stream.writableNeedDrain || this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        stream.off('drain', done);
        stream.off('close', done);
        resolve();
      };
      stream.once('drain', done);
      stream.once('close', done);
    });
  }

  /**
   * A client mistake: counted, answered after a growing delay, and past the limit the
   * connection is closed instead.
   */
  async error(text: string): Promise<void> {
    this.#errors++;
    if (this.#errors > this.#settings.maxErrors) {
      this.log.info({ event: 'too_many_errors', errors: this.#errors }, 'closing after too many errors');
      await this.abort(this.#texts.tooManyErrors);
      return;
    }
    const delay = Math.min(this.#settings.errorDelayMs * this.#errors, 5000);
    if (delay > 0) await this.sleep(delay);
    this.reply(text);
  }

  /** Waits `ms`, or less if the connection closes meanwhile. */
  sleep(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))), this.#whenClosed]).finally(() => clearTimeout(timer));
  }

  // --- TLS ---

  /**
   * STARTTLS/STLS, after the session sent its go-ahead: RFC 3207 §4.2, RFC 2595 §4 and the
   * command injection class (CVE-2011-0411): whatever the client pipelined after the command
   * came in the clear and is discarded, never run inside the TLS session. The session forgets
   * its own state; `onSecure` runs once the handshake is done.
   */
  upgradeToTls(onSecure?: (protocol: string | null) => void): void {
    this.flush(); // the go-ahead leaves on the plain socket before TLS takes it over
    this.#input = EMPTY;
    this.#raw.removeAllListeners('data');
    const tls = this.#beginTls();
    tls.once('secure', () => onSecure?.(tls.getProtocol()));
  }

  #beginTls(): TLSSocket {
    const tls = new TLSSocket(this.#raw, { isServer: true, secureContext: this.#settings.tls(), minVersion: TLS_MIN_VERSION });
    this.#stream = tls;
    const timer = setTimeout(() => {
      this.log.info({ event: 'tls_timeout' }, 'TLS handshake timed out');
      this.#raw.destroy();
    }, this.#settings.handshakeTimeoutMs);
    timer.unref();
    tls.once('secure', () => {
      clearTimeout(timer);
      this.#secure = true;
    });
    tls.on('error', (error) => {
      clearTimeout(timer);
      this.log.info({ event: 'tls_error', reason: error.message }, 'TLS error');
      this.#raw.destroy();
    });
    this.#attach(tls);
    return tls;
  }

  // --- ending ---

  /** Ends the connection after the replies written so far (QUIT). */
  end(): void {
    this.#closed = true;
    this.flush();
    this.#stream.end();
    // A client that never closes its side must not hold the socket forever.
    setTimeout(() => this.#raw.destroy(), 2000).unref();
  }

  /** Ends the connection now with a last reply. */
  async abort(text: string): Promise<void> {
    if (!this.#closed) {
      this.reply(text);
      this.end();
    }
    await Promise.race([this.#whenClosed, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    this.#raw.destroy();
  }

  /** Drops the connection without a word: when a reply was cut short, closing is the only honest end. */
  destroy(): void {
    this.#raw.destroy();
  }

  /** Server shutdown: an idle session ends now; a busy one after its current command or message. */
  shutdownWhenIdle(): void {
    this.#shuttingDown = true;
    if (!this.#busy && !this.#reader) void this.abort(this.#texts.shuttingDown);
  }

  async #onClose(): Promise<void> {
    this.#closed = true;
    this.#clearDeadline();
    try {
      await this.#session?.closed?.();
    } catch (error) {
      this.log.error({ err: error }, `${this.#settings.protocol} session cleanup failed`);
    }
    this.log.info(
      { event: 'close', durationMs: Date.now() - this.startedAt, in: this.#raw.bytesRead, out: this.#raw.bytesWritten },
      `${this.#settings.protocol} session closed`,
    );
    this.#resolveClosed();
    this.onClosed?.();
  }
}
