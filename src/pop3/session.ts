import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../log/logger.ts';
import { loginAddress } from '../accounts/address.ts';
import { plaintextLoginAllowed } from '../policy/login-guard.ts';
import type { StoredMessage } from '../mailstore/store.ts';
import type { Pop3Server } from './server.ts';
import { MultilineEncoder } from './transfer.ts';

// One POP3 connection (RFC 1939), read top to bottom: greeting, AUTHORIZATION (USER/PASS,
// APOP, AUTH per RFC 5034, STLS per RFC 2595), TRANSACTION, and UPDATE after QUIT.
// Commands are handled strictly one at a time in arrival order, which makes pipelining
// (RFC 2449 §6.6) safe and gives backpressure: a client that does not read its replies
// stops being read.

type State = 'AUTHORIZATION' | 'TRANSACTION' | 'UPDATE' | 'CLOSED';

type SaslStep =
  | { mechanism: 'PLAIN' }
  | { mechanism: 'LOGIN'; username?: string };

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);
const TERMINATOR = Buffer.from('.\r\n');

/**
 * Buffers that RETR and TOP read small messages into, reused from message to message instead
 * of a fresh allocation per message (whose pages the kernel may fault in while copying the
 * file: measured as system CPU per RETR after a large listing). A buffer is reused only after
 * the reply that used it has been handed to the kernel (see #send).
 *
 * Layout: the file is read at MESSAGE_AT, behind room for the status line and for the dots
 * that stuffing adds. A stuffed line is at least ".\r\n", so a message gains at most a third
 * of its length: with that much room the wire form of any CRLF-clean message that fits is
 * built in place, moving the text down as dots are inserted, and leaves in one write.
 */
const WHOLE_LIMIT = 128 * 1024;
const STATUS_ROOM = 64;
const STUFFING_ROOM = Math.ceil(WHOLE_LIMIT / 3) + 1;
const MESSAGE_AT = STATUS_ROOM + STUFFING_ROOM;
// One byte more than WHOLE_LIMIT: a read that fills it means the file is longer than expected.
const SCRATCH_SIZE = MESSAGE_AT + WHOLE_LIMIT + 1 + TERMINATOR.length;
const scratchPool: Buffer[] = [];
const SCRATCH_POOL_LIMIT = 64;
const CRLF_DOT = Buffer.from('\r\n.');
const DOT = 0x2e;

/**
 * Writes a CRLF-only message (a view of `buffer`, at `from`) down to `to` with the "." that
 * begins a line doubled (RFC 1939 §3), and returns where it ends. `from - to` must be at least
 * the number of lines that begin with ".": then writing never overtakes the text still to read.
 */
function stuffDown(buffer: Buffer, to: number, message: Buffer, from: number): number {
  let out = to;
  let start = 0;
  if (message[0] === DOT) buffer[out++] = DOT;
  for (let at = message.indexOf(CRLF_DOT); at !== -1; at = message.indexOf(CRLF_DOT, at + 2)) {
    buffer.copyWithin(out, from + start, from + at + 2);
    out += at + 2 - start;
    buffer[out++] = DOT;
    start = at + 2;
  }
  buffer.copyWithin(out, from + start, from + message.length);
  return out + message.length - start;
}

export class Pop3Session {
  onClosed?: () => void;

  readonly #server: Pop3Server;
  readonly #raw: Socket;
  #stream: Socket | TLSSocket;
  readonly ip: string;
  readonly id: string;
  #log: Logger;
  readonly #startedAt = Date.now();

  #state: State = 'AUTHORIZATION';
  #secure = false;
  #input: Buffer = EMPTY;
  #busy = false;
  #paused = false;
  #errors = 0;
  #shuttingDown = false;
  #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  #apopBanner: string | undefined;
  #pendingUser: string | undefined;
  #sasl: SaslStep | undefined;

  #user: string | undefined;
  #releaseLock: (() => Promise<void>) | undefined;
  // The listing as the store returned it (it may share it between sessions, so it is never
  // changed here), and this session's deletion marks beside it.
  #messages: readonly StoredMessage[] = [];
  #deleted = new Uint8Array(0);
  // A reply of this session still points into a pooled buffer: the next RETR or TOP waits
  // for it, so a client pipelining thousands of them holds one buffer, not one per command.
  #bufferInUse = false;
  #onBufferFree: (() => void) | undefined;

  constructor(server: Pop3Server, socket: Socket, ip: string, id: string) {
    this.#server = server;
    this.#raw = socket;
    this.#stream = socket;
    this.ip = ip;
    this.id = id;
    this.#log = server.deps.log.child({ sid: id, ip });
    this.#closedPromise = new Promise((resolve) => (this.#resolveClosed = resolve));
    socket.setTimeout(server.options.idleTimeoutMs, () => this.#idleTimeout());
    socket.once('close', () => void this.#closed());
  }

  get #options() {
    return this.#server.options;
  }

  // --- connection start ---

  start(): void {
    this.#log.info({ event: 'connect', tls: false }, 'pop3 session started');
    this.#attach(this.#raw);
    this.#greet();
  }

  startImplicitTls(): void {
    const tls = this.#beginTls();
    tls.once('secure', () => {
      this.#log.info({ event: 'connect', tls: true, protocol: tls.getProtocol() }, 'pop3s session started');
      this.#greet();
    });
  }

  #greet(): void {
    if (this.#options.apop) {
      // RFC 1939 §7: a unique timestamp banner per connection.
      this.#apopBanner = `<${process.pid}.${randomBytes(6).toString('hex')}.${Date.now()}@${this.#options.hostname}>`;
    }
    this.#reply(`+OK ${this.#options.hostname} POP3 server ready${this.#apopBanner ? ` ${this.#apopBanner}` : ''}`);
  }

  #beginTls(): TLSSocket {
    const tls = this.#server.wrapTls(this.#raw);
    this.#stream = tls;
    const timer = setTimeout(() => {
      this.#log.info({ event: 'tls_timeout' }, 'TLS handshake timed out');
      this.#raw.destroy();
    }, this.#options.handshakeTimeoutMs);
    timer.unref();
    tls.once('secure', () => {
      clearTimeout(timer);
      this.#secure = true;
    });
    tls.on('error', (error) => {
      clearTimeout(timer);
      this.#log.info({ event: 'tls_error', reason: error.message }, 'TLS error');
      this.#raw.destroy();
    });
    this.#attach(tls);
    return tls;
  }

  #attach(stream: Socket | TLSSocket): void {
    stream.on('data', (chunk: Buffer) => {
      if (stream !== this.#stream) return; // bytes from before STLS never reach the new session
      if (this.#isClosed()) return; // after QUIT or an abort nothing more is read into memory
      this.#input = this.#input.length === 0 ? chunk : Buffer.concat([this.#input, chunk]);
      if (this.#busy) {
        // A client far ahead of its replies is not read further until it catches up.
        if (this.#input.length > this.#options.maxLineLength * 16 && !this.#paused) {
          this.#paused = true;
          stream.pause();
        }
        return;
      }
      void this.#processInput();
    });
  }

  // --- command loop ---

  async #processInput(): Promise<void> {
    this.#busy = true;
    try {
      while (!this.#isClosed()) {
        const lf = this.#input.indexOf(LF);
        const lineLength = lf === -1 ? this.#input.length : lf + 1;
        if (lineLength > this.#options.maxLineLength) {
          this.#log.info({ event: 'line_too_long', length: lineLength }, 'command line too long');
          await this.abort(`-ERR Line too long (the limit is ${this.#options.maxLineLength} octets), closing connection`);
          return;
        }
        if (lf === -1) break;
        let end = lf;
        if (end > 0 && this.#input[end - 1] === 0x0d) end--;
        const line = this.#input.toString('utf8', 0, end);
        this.#input = lf + 1 === this.#input.length ? EMPTY : this.#input.subarray(lf + 1);
        try {
          // Most commands answer at once; only those that wait for storage return a promise.
          const pending = this.#handleLine(line);
          if (pending) await pending;
        } catch (error) {
          this.#log.error({ err: error }, 'pop3 command failed');
          this.#reply('-ERR [SYS/TEMP] Internal error, please try again later');
        }
        // Single-line replies are written without waiting; a client pipelining commands
        // without reading the answers must not make them pile up in memory.
        if (this.#stream.writableNeedDrain) await this.#drained();
        if (this.#shuttingDown && this.#input.length === 0 && !this.#isClosed()) {
          await this.abort('-ERR [SYS/TEMP] Server is shutting down, try again in a minute');
        }
      }
    } finally {
      this.#busy = false;
      if (this.#paused && !this.#isClosed()) {
        this.#paused = false;
        this.#stream.resume();
      }
    }
  }

  #handleLine(line: string): void | Promise<void> {
    if (this.#sasl) return this.#continueSasl(line);
    if (line.includes('\0')) return this.#error('-ERR Invalid characters in command');
    const space = line.indexOf(' ');
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const rest = space === -1 ? '' : line.slice(space + 1);
    const args = rest === '' ? [] : rest.split(' ').filter((a) => a !== '');
    this.#log.debug({ event: 'command', verb }, 'command');

    // Valid in every state.
    switch (verb) {
      case 'CAPA':
        return this.#capa();
      case 'NOOP':
        if (this.#state === 'TRANSACTION') return this.#reply('+OK');
        break;
      case 'QUIT':
        return this.#quit();
    }

    if (this.#state === 'AUTHORIZATION') {
      switch (verb) {
        case 'USER':
          return this.#userCommand(rest);
        case 'PASS':
          return this.#passCommand(rest);
        case 'APOP':
          return this.#apopCommand(args);
        case 'AUTH':
          return this.#authCommand(args);
        case 'STLS':
          return this.#stls();
        case 'STAT': case 'LIST': case 'RETR': case 'DELE': case 'RSET': case 'TOP': case 'UIDL': case 'NOOP':
          return this.#error('-ERR Log in first (USER and PASS)');
      }
    } else if (this.#state === 'TRANSACTION') {
      switch (verb) {
        case 'STAT':
          return this.#stat();
        case 'LIST':
          return this.#list(args);
        case 'UIDL':
          return this.#uidl(args);
        case 'RETR':
          return this.#retr(args);
        case 'TOP':
          return this.#top(args);
        case 'DELE':
          return this.#dele(args);
        case 'RSET':
          return this.#rset();
        case 'USER': case 'PASS': case 'APOP': case 'AUTH': case 'STLS':
          return this.#error('-ERR Already logged in');
      }
    }
    return this.#error(`-ERR Unknown command${verb.length <= 16 && /^[A-Z]+$/.test(verb) ? ` ${verb}` : ''}`);
  }

  /** A protocol error by the client; too many of them and the connection is closed. */
  async #error(text: string): Promise<void> {
    this.#errors++;
    if (this.#errors > this.#options.maxErrors) {
      this.#log.info({ event: 'too_many_errors', errors: this.#errors }, 'closing after too many errors');
      await this.abort('-ERR Too many invalid commands, closing connection');
      return;
    }
    this.#reply(text);
  }

  // --- AUTHORIZATION state ---

  #capa(): void {
    const lines = ['+OK Capability list follows', 'TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (this.#state === 'AUTHORIZATION') {
      if (this.#plaintextAllowed()) lines.push('USER', 'SASL PLAIN LOGIN');
      if (!this.#secure && this.#server.deps.tls()) lines.push('STLS');
    }
    lines.push(`IMPLEMENTATION ${this.#options.implementation}`, '.');
    this.#reply(lines.join('\r\n'));
  }

  /** RFC 2595 §2 and RFC 8314: passwords in the clear only over TLS, unless the config allows it. */
  #plaintextAllowed(): boolean {
    return plaintextLoginAllowed(this.#options.plaintextWithoutTls, this.ip, this.#secure);
  }

  #plaintextRefusal(): string {
    return '-ERR [AUTH] Plaintext passwords are not accepted without encryption: turn on SSL/TLS (STLS on port 110, or POP3S on port 995) in your mail program';
  }

  #userCommand(name: string): void {
    if (!this.#plaintextAllowed()) return void this.#error(this.#plaintextRefusal());
    if (name.trim() === '') return void this.#error('-ERR Usage: USER your-address');
    this.#pendingUser = name.trim();
    this.#reply('+OK Send your password with PASS');
  }

  async #passCommand(password: string): Promise<void> {
    const user = this.#pendingUser;
    this.#pendingUser = undefined;
    if (!this.#plaintextAllowed()) return this.#error(this.#plaintextRefusal());
    if (user === undefined) return this.#error('-ERR Send USER first');
    await this.#login(user, (address) => this.#server.deps.accounts.authenticate(address, password), 'USER');
  }

  async #apopCommand(args: string[]): Promise<void> {
    if (!this.#apopBanner) return this.#error('-ERR APOP is not enabled here: log in with USER and PASS over TLS');
    if (args.length !== 2 || !/^[0-9a-f]{32}$/i.test(args[1])) return this.#error('-ERR Usage: APOP name digest');
    const banner = this.#apopBanner;
    await this.#login(args[0], async (address) => {
      const secret = await this.#server.deps.accounts.getApopSecret(address);
      if (secret === undefined) return undefined;
      const expected = createHash('md5').update(banner + secret).digest();
      const given = Buffer.from(args[1], 'hex');
      return timingSafeEqual(expected, given) ? { address } : undefined;
    }, 'APOP');
  }

  async #authCommand(args: string[]): Promise<void> {
    if (args.length === 0) {
      // Mechanism listing as Outlook and other RFC 1734-era clients expect it.
      const mechanisms = this.#plaintextAllowed() ? ['PLAIN', 'LOGIN'] : [];
      return this.#reply(['+OK Supported mechanisms follow', ...mechanisms, '.'].join('\r\n'));
    }
    const mechanism = args[0].toUpperCase();
    if (mechanism !== 'PLAIN' && mechanism !== 'LOGIN') return this.#error(`-ERR [AUTH] Unsupported mechanism; use PLAIN or LOGIN`);
    if (!this.#plaintextAllowed()) return this.#error(this.#plaintextRefusal());
    if (mechanism === 'PLAIN') {
      this.#sasl = { mechanism: 'PLAIN' };
      // RFC 5034 §4: "=" is an empty initial response.
      if (args.length > 1) return this.#continueSasl(args[1] === '=' ? '' : args[1]);
      return this.#reply('+ ');
    }
    this.#sasl = { mechanism: 'LOGIN' };
    if (args.length > 1) return this.#continueSasl(args[1]);
    this.#reply('+ VXNlcm5hbWU6'); // "Username:"
  }

  async #continueSasl(line: string): Promise<void> {
    const step = this.#sasl!;
    if (line.trim() === '*') {
      this.#sasl = undefined;
      return this.#error('-ERR [AUTH] Authentication cancelled');
    }
    const decoded = decodeBase64(line.trim());
    if (decoded === undefined) {
      this.#sasl = undefined;
      return this.#error('-ERR [AUTH] Invalid base64 in authentication exchange');
    }
    if (step.mechanism === 'LOGIN' && step.username === undefined) {
      step.username = decoded.toString('utf8');
      return this.#reply('+ UGFzc3dvcmQ6'); // "Password:"
    }
    this.#sasl = undefined;
    let username: string;
    let password: string;
    if (step.mechanism === 'PLAIN') {
      // RFC 4616: [authzid] NUL authcid NUL passwd; acting as another user is not offered.
      const parts = decoded.toString('utf8').split('\0');
      if (parts.length !== 3 || (parts[0] !== '' && parts[0] !== parts[1])) {
        return this.#login(parts[1] ?? '', async () => undefined, 'AUTH PLAIN');
      }
      [, username, password] = parts;
    } else {
      username = step.username!;
      password = decoded.toString('utf8');
    }
    await this.#login(username, (address) => this.#server.deps.accounts.authenticate(address, password), `AUTH ${step.mechanism}`);
  }

  /**
   * The one path every mechanism takes: lockout check, credential check, maildrop lock,
   * listing, login hooks (POP-before-SMTP grant), and only then "+OK".
   */
  async #login(
    name: string,
    verify: (address: string) => Promise<{ address: string } | undefined>,
    mechanism: string,
  ): Promise<void> {
    const deps = this.#server.deps;
    const address = this.#loginAddress(name);
    const verdict = await deps.guard.check(this.ip, address);
    if (verdict.locked) {
      const minutes = Math.max(1, Math.ceil(verdict.retryAfterMs / 60_000));
      this.#log.warn({ event: 'login_refused_locked', mechanism, user: address }, 'login refused: locked out');
      return this.#reply(`-ERR [AUTH] Too many failed logins ${verdict.scope === 'address' ? 'from your address' : 'for this account'}: try again in ${minutes} minute${minutes === 1 ? '' : 's'}`);
    }
    const user = await verify(address);
    if (!user) return this.#failLogin(address, mechanism);
    if (this.#isClosed()) return;

    const release = await deps.locks.acquire(user.address);
    if (!release) {
      this.#log.info({ event: 'login_in_use', user: user.address }, 'maildrop in use');
      return this.#reply('-ERR [IN-USE] Your mailbox is in use by another session: close your other mail program or try again in a minute');
    }
    this.#releaseLock = release;
    let messages: StoredMessage[];
    try {
      messages = await deps.mailstore.list(user.address);
    } catch (error) {
      await this.#release();
      this.#log.error({ err: error, user: user.address }, 'cannot open maildrop');
      return this.#reply('-ERR [SYS/TEMP] Your mailbox cannot be opened right now, please try again later');
    }
    // An aborted login grants nothing: the client that left never sees "+OK".
    if (this.#isClosed()) return this.#release();
    const event = { ip: this.ip, user: user.address, at: Date.now(), mechanism, tls: this.#secure };
    try {
      for (const hook of deps.onLogin) await hook(event);
    } catch (error) {
      await this.#release();
      this.#log.error({ err: error, user: user.address }, 'login hook failed');
      return this.#reply('-ERR [SYS/TEMP] Login cannot be completed right now, please try again later');
    }
    await deps.guard.success(this.ip, user.address);
    this.#user = user.address;
    this.#log = this.#log.child({ user: user.address });
    this.#messages = messages;
    this.#deleted = new Uint8Array(messages.length);
    this.#state = 'TRANSACTION';
    const { count, size } = this.#maildrop();
    this.#log.info({ event: 'login', mechanism, tls: this.#secure, messages: count, octets: size }, 'pop3 login');
    this.#reply(`+OK Logged in, ${count} message${count === 1 ? '' : 's'} (${size} octets)`);
  }

  async #failLogin(name: string | undefined, mechanism: string): Promise<void> {
    const { delayMs, locked } = await this.#server.deps.guard.failure(this.ip, name);
    this.#log.info({ event: 'login_failed', user: name, mechanism, locked }, 'pop3 login failed');
    // RFC 1939 §13: a pause after a failed login slows password guessing.
    if (delayMs > 0) await Promise.race([sleep(delayMs), this.#closedPromise]);
    if (this.#isClosed()) return;
    this.#errors++;
    this.#reply('-ERR [AUTH] Login failed: check your user name (your full e-mail address) and password');
  }

  #loginAddress(name: string): string {
    return loginAddress(name, this.#options.defaultDomain);
  }

  #stls(): void {
    if (this.#secure) return void this.#error('-ERR TLS is already active');
    if (!this.#server.deps.tls()) return void this.#error('-ERR STLS is not available on this server');
    this.#reply('+OK Begin TLS negotiation');
    // RFC 2595 §4 / CVE-2011-0411 class: anything the client pipelined after STLS was sent
    // in the clear and must not be executed inside the TLS session.
    this.#input = EMPTY;
    this.#pendingUser = undefined;
    this.#raw.removeAllListeners('data');
    const tls = this.#beginTls();
    tls.once('secure', () => this.#log.info({ event: 'stls', protocol: tls.getProtocol() }, 'TLS started'));
  }

  // --- TRANSACTION state ---

  /** The index of the message a command names, or the error reply. */
  #message(arg: string | undefined): number | string {
    if (arg === undefined || !/^\d{1,9}$/.test(arg)) return '-ERR Give a message number';
    const number = Number(arg);
    if (number < 1 || number > this.#messages.length) return `-ERR No message ${arg} (there are ${this.#messages.length})`;
    if (this.#deleted[number - 1]) return `-ERR Message ${number} is already deleted`;
    return number - 1;
  }

  /** The messages not marked for deletion: how many, and their octets. */
  #maildrop(): { count: number; size: number } {
    let count = 0;
    let size = 0;
    for (let i = 0; i < this.#messages.length; i++) {
      if (!this.#deleted[i]) {
        count++;
        size += this.#messages[i].size;
      }
    }
    return { count, size };
  }

  #stat(): void {
    const { count, size } = this.#maildrop();
    this.#reply(`+OK ${count} ${size}`);
  }

  #list(args: string[]): void | Promise<void> {
    return this.#scanListing(args, (m) => String(m.size));
  }

  #uidl(args: string[]): void | Promise<void> {
    return this.#scanListing(args, (m) => m.uidl);
  }

  async #scanListing(args: string[], value: (m: StoredMessage) => string): Promise<void> {
    if (args.length > 0) {
      const index = this.#message(args[0]);
      if (typeof index === 'string') return this.#error(index);
      return this.#reply(`+OK ${args[0].replace(/^0+(?=\d)/, '')} ${value(this.#messages[index])}`);
    }
    let out = '+OK\r\n';
    for (let i = 0; i < this.#messages.length; i++) {
      if (this.#deleted[i]) continue;
      out += `${i + 1} ${value(this.#messages[i])}\r\n`;
      if (out.length > 64 * 1024) {
        this.#stream.write(out);
        out = '';
        await this.#drained();
      }
    }
    this.#stream.write(out + '.\r\n');
  }

  #retr(args: string[]): void | Promise<void> {
    const index = this.#message(args[0]);
    if (typeof index === 'string') return this.#error(index);
    const message = this.#messages[index];
    return this.#send(message, `+OK ${message.size} octets\r\n`, Infinity);
  }

  #top(args: string[]): void | Promise<void> {
    if (args.length !== 2 || !/^\d{1,9}$/.test(args[1])) return this.#error('-ERR Usage: TOP message-number line-count');
    const index = this.#message(args[0]);
    if (typeof index === 'string') return this.#error(index);
    return this.#send(this.#messages[index], '+OK Top of message follows\r\n', Number(args[1]));
  }

  /**
   * A multi-line reply with a message (RETR) or its top (TOP). Most mail is small: it is read
   * into a pooled buffer, and a CRLF-clean message (the usual case) gets its status line,
   * stuffing and terminator there, leaving in one write: a syscall and usually one TCP segment
   * per message. The rest is encoded from that buffer, or streamed if large.
   */
  #send(message: StoredMessage, status: string, bodyLines: number): void | Promise<void> {
    const store = this.#server.deps.mailstore;
    if (message.size > WHOLE_LIMIT || !store.readInto) return this.#sendStreamed(message, status, bodyLines);
    if (this.#bufferInUse) {
      return new Promise<void>((resolve) => (this.#onBufferFree = resolve)).then(() => this.#send(message, status, bodyLines));
    }
    this.#bufferInUse = true;
    const scratch = scratchPool.pop() ?? Buffer.allocUnsafeSlow(SCRATCH_SIZE);
    // Writes complete in order, so once the terminator has been handed to the kernel (or the
    // connection is gone) no earlier piece still points into the buffer and it may be reused.
    // A 'drain' would not do: it comes only after the buffer went over the high-water mark.
    const release = () => {
      if (scratchPool.length < SCRATCH_POOL_LIMIT) scratchPool.push(scratch);
      this.#bufferInUse = false;
      const waiting = this.#onBufferFree;
      this.#onBufferFree = undefined;
      waiting?.();
    };
    let whole: Buffer | undefined;
    try {
      whole = store.readInto(message, scratch, MESSAGE_AT, MESSAGE_AT + WHOLE_LIMIT + 1, message.size);
    } catch (error) {
      release();
      return this.#readFailed(error, message, false);
    }
    if (whole === undefined || whole.byteOffset !== scratch.byteOffset + MESSAGE_AT) {
      release(); // longer than listed: a file changed by another program, sent as it is now
      return this.#sendStreamed(message, status, bodyLines);
    }
    const stream = this.#stream;
    // A file exactly as long as its size on the wire, ending in CRLF, has CRLF line ends only
    // (a bare LF would make it longer, an unterminated last line too), so only stuffing is
    // left to do. The end is checked all the same: a file rewritten by another program at the
    // same length must not swallow the terminator.
    const length = whole.length;
    if (bodyLines === Infinity && length === message.size && (length === 0 || (whole[length - 2] === CR && whole[length - 1] === LF))) {
      let start = MESSAGE_AT;
      let end = MESSAGE_AT + whole.length;
      if (whole[0] === DOT || whole.indexOf(CRLF_DOT) !== -1) {
        start = STATUS_ROOM;
        end = stuffDown(scratch, start, whole, MESSAGE_AT);
      }
      start -= scratch.write(status, start - status.length, 'latin1');
      TERMINATOR.copy(scratch, end);
      stream.write(scratch.subarray(start, end + TERMINATOR.length), release);
      return;
    }
    // Corked from the status line to the terminator: one writev for all the pieces.
    const encoder = new MultilineEncoder(bodyLines);
    stream.cork();
    stream.write(status);
    for (const piece of encoder.push(whole)) stream.write(piece);
    for (const piece of encoder.end()) stream.write(piece);
    stream.write(TERMINATOR, release);
    stream.uncork();
  }

  /** A message too large for a pooled buffer, read and encoded piece by piece with backpressure. */
  async #sendStreamed(message: StoredMessage, status: string, bodyLines: number): Promise<void> {
    const encoder = new MultilineEncoder(bodyLines);
    const stream = this.#stream;
    let started = false;
    stream.cork();
    try {
      for await (const chunk of this.#server.deps.mailstore.read(message)) {
        if (!started) {
          stream.write(status);
          started = true;
        }
        for (const piece of encoder.push(chunk)) stream.write(piece);
        if (encoder.done) break;
        if (stream.writableNeedDrain) {
          stream.uncork();
          await this.#drained();
          if (this.#isClosed()) return;
          stream.cork();
        }
      }
    } catch (error) {
      stream.uncork();
      return this.#readFailed(error, message, started);
    }
    if (!started) stream.write(status);
    for (const piece of encoder.end()) stream.write(piece);
    stream.write(TERMINATOR);
    stream.uncork();
  }

  #readFailed(error: unknown, message: StoredMessage, started: boolean): void {
    const code = (error as NodeJS.ErrnoException).code;
    this.#log.error({ err: error, uidl: message.uidl }, 'cannot read message');
    // Before any byte was sent we can still answer cleanly; after, only closing is honest.
    if (!started) return this.#reply(code === 'ENOENT' ? '-ERR [SYS/PERM] This message was removed by another program' : '-ERR [SYS/TEMP] Cannot read this message right now');
    this.#raw.destroy();
  }

  #dele(args: string[]): void | Promise<void> {
    const index = this.#message(args[0]);
    if (typeof index === 'string') return this.#error(index);
    this.#deleted[index] = 1;
    this.#reply(`+OK Message ${Number(args[0])} marked for deletion`);
  }

  #rset(): void {
    this.#deleted.fill(0);
    const { count, size } = this.#maildrop();
    this.#reply(`+OK ${count} messages (${size} octets)`);
  }

  // --- QUIT and the UPDATE state ---

  async #quit(): Promise<void> {
    if (this.#state !== 'TRANSACTION') {
      this.#reply('+OK Goodbye');
      return this.#end();
    }
    // RFC 1939 §6: deletions happen only here, and "+OK" only once they are durable.
    this.#state = 'UPDATE';
    const doomed = this.#messages.filter((_, i) => this.#deleted[i] === 1);
    let reply: string;
    try {
      const result = doomed.length > 0 ? await this.#server.deps.mailstore.remove(this.#user!, doomed) : { removed: 0, failed: [] };
      this.#log.info({ event: 'update', deleted: result.removed, failed: result.failed.length }, 'pop3 update');
      reply = result.failed.length === 0
        ? `+OK Goodbye, ${result.removed} message${result.removed === 1 ? '' : 's'} deleted`
        : `-ERR [SYS/TEMP] ${result.failed.length} message(s) could not be deleted and will be offered again next time`;
    } catch (error) {
      this.#log.error({ err: error }, 'update failed');
      reply = '-ERR [SYS/TEMP] Deleting messages failed; they will be offered again next time';
    }
    await this.#release();
    this.#reply(reply);
    this.#end();
  }

  // --- ending ---

  #end(): void {
    this.#state = 'CLOSED';
    this.#stream.end();
    // A client that never closes its side must not hold the socket forever.
    setTimeout(() => this.#raw.destroy(), 2000).unref();
  }

  /** Ends the session now, without UPDATE: nothing is deleted, the lock is released. */
  async abort(text: string): Promise<void> {
    if (!this.#isClosed()) {
      this.#reply(text);
      this.#end();
    }
    await this.#release();
    await Promise.race([this.#closedPromise, sleep(2000)]);
    this.#raw.destroy();
  }

  /** Server shutdown: idle sessions end now; a busy one ends after its current command. */
  shutdownWhenIdle(): void {
    this.#shuttingDown = true;
    if (!this.#busy) void this.abort('-ERR [SYS/TEMP] Server is shutting down, try again in a minute');
  }

  #idleTimeout(): void {
    this.#log.info({ event: 'idle_timeout' }, 'autologout');
    // RFC 1939 §3: the autologout timer ends the session without entering UPDATE.
    void this.abort('-ERR Autologout: no command for too long');
  }

  async #closed(): Promise<void> {
    const wasUpdating = this.#state === 'UPDATE';
    this.#state = 'CLOSED';
    if (!wasUpdating) await this.#release();
    this.#log.info({ event: 'close', durationMs: Date.now() - this.#startedAt, in: this.#raw.bytesRead, out: this.#raw.bytesWritten }, 'pop3 session closed');
    this.#resolveClosed();
    this.onClosed?.();
  }

  async #release(): Promise<void> {
    const release = this.#releaseLock;
    this.#releaseLock = undefined;
    if (release) await release();
  }

  #isClosed(): boolean {
    return this.#state === 'CLOSED';
  }

  // --- output ---

  #reply(text: string): void {
    if (this.#stream.writable) this.#stream.write(`${text}\r\n`);
  }

  /** Waits while the client is behind on reading; resolves at once otherwise. */
  #drained(): Promise<void> {
    const stream = this.#stream;
    if (!stream.writableNeedDrain || this.#isClosed()) return Promise.resolve();
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
}

function decodeBase64(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return undefined;
  return Buffer.from(text, 'base64');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
