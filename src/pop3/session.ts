import { randomBytes } from 'node:crypto';
import type { LoginOutcome, LoginService } from '../auth/login.ts';
import { SASL_MECHANISMS, SaslExchange, type SaslStep } from '../auth/sasl.ts';
import type { MaildropLocks, Mailstore, StoredMessage } from '../mailstore/store.ts';
import type { LineConnection, LineSession } from '../net/line-connection.ts';
import { Replies } from './replies.ts';
import { MultilineEncoder } from './transfer.ts';
import { END_OF_HEADERS_OCTETS, replaceNuls, type ClientWorkaround, type EndOfHeadersCheck } from './workarounds.ts';

// One POP3 session (RFC 1939), read top to bottom: greeting, AUTHORIZATION (USER/PASS, APOP,
// AUTH per RFC 5034, STLS per RFC 2595), TRANSACTION, and UPDATE after QUIT. The connection
// (src/net/line-connection.ts) hands it one command at a time in arrival order, which makes
// pipelining (RFC 2449 §6.6) safe and gives backpressure.

type State = 'AUTHORIZATION' | 'TRANSACTION' | 'UPDATE';

/** A command's handler: the arguments split at spaces, and the text after the verb as sent (PASS may hold spaces). */
type Handler = (session: Pop3Session, args: string[], rest: string) => void | Promise<void>;

/** What a POP3 session may use: its settings, the login path and the mailboxes. Not its server. */
export interface Pop3Context {
  hostname: string;
  /** Offer APOP (RFC 1939 §7) with a banner in the greeting. */
  apop: boolean;
  /** The CAPA IMPLEMENTATION string. */
  implementation: string;
  login: LoginService;
  mailstore: Mailstore;
  locks: MaildropLocks;
  /** The client workarounds on (src/pop3/workarounds.ts). */
  workarounds: ReadonlySet<ClientWorkaround>;
  /** Finds the messages without an end-of-headers line (for "oe-ns-eoh"). */
  endOfHeaders: EndOfHeadersCheck;
}

/** What a login admits: the maildrop lock and the listing taken under it. */
interface Maildrop {
  release: () => Promise<void>;
  messages: readonly StoredMessage[];
  /** 1 for each message that gets an end-of-headers line added ("oe-ns-eoh"); else none. */
  addEndOfHeaders: Uint8Array | undefined;
  /** The mailbox's quota, told in the login reply (null or absent: none, or unknown). */
  limit?: number | null;
}

const LF = 0x0a;
const CR = 0x0d;
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
/** A message's size as sent: as listed, plus an end-of-headers line where one is added. */
function sizeOf(message: StoredMessage, addEndOfHeaders: Uint8Array | undefined, index: number): number {
  return addEndOfHeaders?.[index] === 1 ? message.size + END_OF_HEADERS_OCTETS : message.size;
}

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

export class Pop3Session implements LineSession {
  readonly #conn: LineConnection;
  readonly #context: Pop3Context;

  #state: State = 'AUTHORIZATION';
  #apopBanner: string | undefined;
  #pendingUser: string | undefined;
  #sasl: SaslExchange | undefined;

  #user: string | undefined;
  #releaseLock: (() => Promise<void>) | undefined;
  // The listing as the store returned it (it may share it between sessions, so it is never
  // changed here), and this session's deletion marks beside it.
  #messages: readonly StoredMessage[] = [];
  #deleted = new Uint8Array(0);
  #addEndOfHeaders: Uint8Array | undefined;
  // A reply of this session still points into a pooled buffer: the next RETR or TOP waits
  // for it, so a client pipelining thousands of them holds one buffer, not one per command.
  #bufferInUse = false;
  #onBufferFree: (() => void) | undefined;

  constructor(connection: LineConnection, context: Pop3Context) {
    this.#conn = connection;
    this.#context = context;
  }

  greet(): void {
    if (this.#context.apop) {
      // RFC 1939 §7: a unique timestamp banner per connection.
      this.#apopBanner = `<${process.pid}.${randomBytes(6).toString('hex')}.${Date.now()}@${this.#context.hostname}>`;
    }
    this.#conn.reply(Replies.greeting(this.#context.hostname, this.#apopBanner));
  }

  // --- commands ---

  /** RFC 1939 §4: the AUTHORIZATION state (and RFC 5034 AUTH, RFC 2595 STLS). */
  static readonly #authorization: Record<string, Handler> = {
    USER: (session, _, rest) => session.#userCommand(rest),
    PASS: (session, _, rest) => session.#passCommand(rest),
    APOP: (session, args) => session.#apopCommand(args),
    AUTH: (session, args) => session.#authCommand(args),
    STLS: (session) => session.#stls(),
  };

  /** RFC 1939 §5: the TRANSACTION state. */
  static readonly #transaction: Record<string, Handler> = {
    STAT: (session) => session.#stat(),
    LIST: (session, args) => session.#list(args),
    UIDL: (session, args) => session.#uidl(args),
    RETR: (session, args) => session.#retr(args),
    TOP: (session, args) => session.#top(args),
    DELE: (session, args) => session.#dele(args),
    RSET: (session) => session.#rset(),
    NOOP: (session) => session.#conn.reply(Replies.ok),
  };

  command(line: string): void | Promise<void> {
    if (this.#sasl) return this.#continueSasl(line);
    if (line.includes('\0')) return this.#conn.error(Replies.invalidCharacters);
    const space = line.indexOf(' ');
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const rest = space === -1 ? '' : line.slice(space + 1);
    this.#conn.log.debug({ event: 'command', verb }, 'command');
    // Valid in every state (RFC 2449 §5 for CAPA).
    if (verb === 'CAPA') return this.#capa();
    if (verb === 'QUIT') return this.#quit();
    const loggedIn = this.#state === 'TRANSACTION';
    const [here, elsewhere] = loggedIn ? [Pop3Session.#transaction, Pop3Session.#authorization] : [Pop3Session.#authorization, Pop3Session.#transaction];
    if (Object.hasOwn(here, verb)) return here[verb](this, rest === '' ? [] : rest.split(' ').filter((a) => a !== ''), rest);
    if (Object.hasOwn(elsewhere, verb)) return this.#conn.error(loggedIn ? Replies.alreadyLoggedIn : Replies.logInFirst);
    return this.#conn.error(Replies.unknownCommand(verb));
  }

  // --- AUTHORIZATION state ---

  #capa(): void {
    const lines = [Replies.capabilities, 'TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (this.#state === 'AUTHORIZATION') {
      if (this.#plaintextAllowed()) lines.push('USER', `SASL ${SASL_MECHANISMS.join(' ')}`);
      if (!this.#conn.secure && this.#conn.tlsAvailable) lines.push('STLS');
    }
    lines.push(`IMPLEMENTATION ${this.#context.implementation}`, '.');
    this.#conn.reply(lines.join('\r\n'));
  }

  #plaintextAllowed(): boolean {
    return this.#context.login.plaintextAllowed(this.#conn);
  }

  #userCommand(name: string): void | Promise<void> {
    if (!this.#plaintextAllowed()) return this.#conn.error(Replies.plaintextRefused);
    if (name.trim() === '') return this.#conn.error(Replies.userUsage);
    this.#pendingUser = name.trim();
    this.#conn.reply(Replies.sendPassword);
  }

  async #passCommand(password: string): Promise<void> {
    const user = this.#pendingUser;
    this.#pendingUser = undefined;
    if (!this.#plaintextAllowed()) return this.#conn.error(Replies.plaintextRefused);
    if (user === undefined) return this.#conn.error(Replies.userFirst);
    return this.#loggedIn(await this.#context.login.password(this.#attempt('USER'), user, password));
  }

  async #apopCommand(args: string[]): Promise<void> {
    if (!this.#apopBanner) return this.#conn.error(Replies.apopDisabled);
    if (args.length !== 2 || !/^[0-9a-f]{32}$/i.test(args[1])) return this.#conn.error(Replies.apopUsage);
    return this.#loggedIn(await this.#context.login.apop(this.#attempt('APOP'), args[0], this.#apopBanner, args[1]));
  }

  #authCommand(args: string[]): void | Promise<void> {
    if (args.length === 0) {
      // Mechanism listing as Outlook and other RFC 1734-era clients expect it.
      const mechanisms = this.#plaintextAllowed() ? SASL_MECHANISMS : [];
      return this.#conn.reply([Replies.mechanisms, ...mechanisms, '.'].join('\r\n'));
    }
    const exchange = SaslExchange.for(args[0]);
    if (!exchange) return this.#conn.error(Replies.unsupportedMechanism);
    if (!this.#plaintextAllowed()) return this.#conn.error(Replies.plaintextRefused);
    this.#sasl = exchange;
    return this.#saslStep(exchange.begin(args[1]));
  }

  #continueSasl(line: string): void | Promise<void> {
    return this.#saslStep(this.#sasl!.respond(line));
  }

  async #saslStep(step: SaslStep): Promise<void> {
    const exchange = this.#sasl!;
    if (step.kind === 'challenge') return this.#conn.reply(Replies.challenge(step.challenge));
    this.#sasl = undefined;
    if (step.kind === 'cancelled') return this.#conn.error(Replies.authCancelled);
    if (step.kind === 'malformed') return this.#conn.error(Replies.authMalformed);
    return this.#loggedIn(await this.#context.login.sasl(this.#attempt(`AUTH ${exchange.mechanism}`), step.credentials));
  }

  /**
   * Every mechanism takes the one login path (src/auth/login.ts); what POP3 adds is the
   * admission: the maildrop lock is taken and the mailbox listed before the login hooks
   * (POP-before-SMTP grant) run, and only then is "+OK" sent.
   */
  #attempt(mechanism: string) {
    return {
      protocol: 'pop3' as const,
      mechanism,
      connection: this.#conn,
      hooks: true,
      admit: (user: string) => this.#admit(user),
    };
  }

  async #admit(user: string) {
    const release = await this.#context.locks.acquire(user);
    if (!release) {
      this.#conn.log.info({ event: 'login_in_use', user }, 'maildrop in use');
      return { ok: false as const, refusal: Replies.inUse };
    }
    let messages: readonly StoredMessage[];
    let addEndOfHeaders: Uint8Array | undefined;
    try {
      messages = await this.#context.mailstore.list(user);
      // Sizes are announced from the login on, so they must already count what is sent.
      if (this.#context.workarounds.has('oe-ns-eoh')) addEndOfHeaders = await this.#context.endOfHeaders.missing(messages);
    } catch (error) {
      await release();
      this.#conn.log.error({ err: error, user }, 'cannot open maildrop');
      return { ok: false as const, refusal: Replies.mailboxUnavailable };
    }
    const admitted: Maildrop = { release, messages, addEndOfHeaders, limit: await this.#context.mailstore.limit?.(user).catch(() => null) };
    let octets = 0;
    for (let i = 0; i < messages.length; i++) octets += sizeOf(messages[i], addEndOfHeaders, i);
    return { ok: true as const, admitted, undo: release, details: { messages: messages.length, octets } };
  }

  #loggedIn(outcome: LoginOutcome<Maildrop>): void | Promise<void> {
    if (this.#conn.isClosed) {
      // An aborted login grants nothing: the client that left never sees "+OK".
      if (outcome.ok) return outcome.admitted.release();
      return;
    }
    if (outcome.ok) {
      this.#user = outcome.user;
      this.#conn.log = this.#conn.log.child({ user: outcome.user });
      this.#releaseLock = outcome.admitted.release;
      this.#messages = outcome.admitted.messages;
      this.#addEndOfHeaders = outcome.admitted.addEndOfHeaders;
      this.#deleted = new Uint8Array(outcome.admitted.messages.length);
      this.#state = 'TRANSACTION';
      const { count, size } = this.#maildrop();
      return this.#conn.reply(Replies.loggedIn(count, size, outcome.admitted.limit));
    }
    switch (outcome.reason) {
      case 'locked':
        return this.#conn.reply(Replies.locked(outcome.scope, Math.max(1, Math.ceil(outcome.retryAfterMs / 60_000))));
      case 'failed':
        return this.#conn.error(Replies.loginFailed);
      case 'plaintext':
        return this.#conn.error(Replies.plaintextRefused);
      case 'refused':
        return this.#conn.reply(outcome.refusal);
      case 'unavailable':
        return this.#conn.reply(Replies.loginUnavailable);
    }
  }

  #stls(): void | Promise<void> {
    if (this.#conn.secure) return this.#conn.error(Replies.tlsActive);
    if (!this.#conn.tlsAvailable) return this.#conn.error(Replies.tlsUnavailable);
    this.#conn.reply(Replies.beginTls);
    // RFC 2595 §4: the session starts over inside TLS; a USER given in the clear is forgotten.
    this.#pendingUser = undefined;
    this.#conn.upgradeToTls((protocol) => this.#conn.log.info({ event: 'stls', protocol }, 'TLS started'));
  }

  // --- TRANSACTION state ---

  /** The message a command names, or the reply refusing it. */
  #message(arg: string | undefined): { index: number } | { refusal: string } {
    if (arg === undefined || !/^\d{1,9}$/.test(arg)) return { refusal: Replies.messageNumber };
    const number = Number(arg);
    if (number < 1 || number > this.#messages.length) return { refusal: Replies.noSuchMessage(arg, this.#messages.length) };
    if (this.#deleted[number - 1]) return { refusal: Replies.alreadyDeleted(number) };
    return { index: number - 1 };
  }

  /** The messages not marked for deletion: how many, and their octets. */
  #maildrop(): { count: number; size: number } {
    let count = 0;
    let size = 0;
    for (let i = 0; i < this.#messages.length; i++) {
      if (!this.#deleted[i]) {
        count++;
        size += this.#sizeOf(i);
      }
    }
    return { count, size };
  }

  #stat(): void {
    const { count, size } = this.#maildrop();
    this.#conn.reply(Replies.stat(count, size));
  }

  /** A message's size as sent: what the store lists, and what a workaround adds. */
  #sizeOf(index: number): number {
    return sizeOf(this.#messages[index], this.#addEndOfHeaders, index);
  }

  #list(args: string[]): void | Promise<void> {
    return this.#scanListing(args, (_, i) => String(this.#sizeOf(i)));
  }

  #uidl(args: string[]): void | Promise<void> {
    return this.#scanListing(args, (m) => m.uidl);
  }

  async #scanListing(args: string[], value: (m: StoredMessage, index: number) => string): Promise<void> {
    if (args.length > 0) {
      const found = this.#message(args[0]);
      if ('refusal' in found) return this.#conn.error(found.refusal);
      return this.#conn.reply(Replies.scanLine(args[0].replace(/^0+(?=\d)/, ''), value(this.#messages[found.index], found.index)));
    }
    let out = `${Replies.scanListing}\r\n`;
    for (let i = 0; i < this.#messages.length; i++) {
      if (this.#deleted[i]) continue;
      out += `${i + 1} ${value(this.#messages[i], i)}\r\n`;
      if (out.length > 64 * 1024) {
        this.#conn.stream.write(out);
        out = '';
        await this.#conn.drained();
      }
    }
    this.#conn.stream.write(out + '.\r\n');
  }

  #retr(args: string[]): void | Promise<void> {
    const found = this.#message(args[0]);
    if ('refusal' in found) return this.#conn.error(found.refusal);
    return this.#send(found.index, `${Replies.retrieving(this.#sizeOf(found.index))}\r\n`, Infinity);
  }

  #top(args: string[]): void | Promise<void> {
    if (args.length !== 2 || !/^\d{1,9}$/.test(args[1])) return this.#conn.error(Replies.topUsage);
    const found = this.#message(args[0]);
    if ('refusal' in found) return this.#conn.error(found.refusal);
    return this.#send(found.index, `${Replies.top}\r\n`, Number(args[1]));
  }

  /**
   * A multi-line reply with a message (RETR) or its top (TOP). Most mail is small: it is read
   * into a pooled buffer, and a CRLF-clean message (the usual case) gets its status line,
   * stuffing and terminator there, leaving in one write: a syscall and usually one TCP segment
   * per message. The rest is encoded from that buffer, or streamed if large.
   */
  #send(index: number, status: string, bodyLines: number): void | Promise<void> {
    const message = this.#messages[index];
    const store = this.#context.mailstore;
    const fixes = {
      replaceNuls: this.#context.workarounds.has('outlook-no-nuls'),
      addEndOfHeaders: this.#addEndOfHeaders?.[index] === 1,
    };
    if (message.size > WHOLE_LIMIT || !store.readInto) return this.#sendStreamed(message, status, bodyLines, fixes);
    if (this.#bufferInUse) {
      // The previous reply may be held back with a pipelined group: let it go, then wait for it.
      this.#conn.flush();
      return new Promise<void>((resolve) => (this.#onBufferFree = resolve)).then(() => this.#send(index, status, bodyLines));
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
      return this.#sendStreamed(message, status, bodyLines, fixes);
    }
    // A copy in our buffer, never the stored file: the same length, so no offset moves.
    if (fixes.replaceNuls) replaceNuls(whole);
    const stream = this.#conn.stream;
    // A file exactly as long as its size on the wire, ending in CRLF, has CRLF line ends only
    // (a bare LF would make it longer, an unterminated last line too), so only stuffing is
    // left to do. The end is checked all the same: a file rewritten by another program at the
    // same length must not swallow the terminator.
    const length = whole.length;
    if (bodyLines === Infinity && !fixes.addEndOfHeaders && length === message.size && (length === 0 || (whole[length - 2] === CR && whole[length - 1] === LF))) {
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
    // Corked from the status line to the terminator: one writev for all the pieces. NULs are
    // replaced already.
    const encoder = new MultilineEncoder(bodyLines, { addEndOfHeaders: fixes.addEndOfHeaders });
    stream.cork();
    stream.write(status);
    for (const piece of encoder.push(whole)) stream.write(piece);
    for (const piece of encoder.end()) stream.write(piece);
    stream.write(TERMINATOR, release);
    stream.uncork();
  }

  /** A message too large for a pooled buffer, read and encoded piece by piece with backpressure. */
  async #sendStreamed(message: StoredMessage, status: string, bodyLines: number, fixes: { replaceNuls: boolean; addEndOfHeaders: boolean }): Promise<void> {
    const encoder = new MultilineEncoder(bodyLines, fixes);
    const stream = this.#conn.stream;
    let started = false;
    stream.cork();
    try {
      for await (const chunk of this.#context.mailstore.read(message)) {
        if (!started) {
          stream.write(status);
          started = true;
        }
        for (const piece of encoder.push(chunk)) stream.write(piece);
        if (encoder.done) break;
        if (stream.writableNeedDrain) {
          stream.uncork();
          await this.#conn.drained();
          if (this.#conn.isClosed) return;
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
    this.#conn.log.error({ err: error, uidl: message.uidl }, 'cannot read message');
    // Before any byte was sent we can still answer cleanly; after, only closing is honest.
    if (!started) return this.#conn.reply(code === 'ENOENT' ? Replies.messageRemoved : Replies.messageUnreadable);
    this.#conn.destroy();
  }

  #dele(args: string[]): void | Promise<void> {
    const found = this.#message(args[0]);
    if ('refusal' in found) return this.#conn.error(found.refusal);
    this.#deleted[found.index] = 1;
    this.#conn.reply(Replies.deleted(found.index + 1));
  }

  #rset(): void {
    this.#deleted.fill(0);
    const { count, size } = this.#maildrop();
    this.#conn.reply(Replies.reset(count, size));
  }

  // --- QUIT and the UPDATE state ---

  async #quit(): Promise<void> {
    if (this.#state !== 'TRANSACTION') {
      this.#conn.reply(Replies.goodbye);
      return this.#conn.end();
    }
    // RFC 1939 §6: deletions happen only here, and "+OK" only once they are durable.
    this.#state = 'UPDATE';
    const doomed = this.#messages.filter((_, i) => this.#deleted[i] === 1);
    let reply: string;
    try {
      const result = doomed.length > 0 ? await this.#context.mailstore.remove(this.#user!, doomed) : { removed: 0, failed: [] };
      this.#conn.log.info({ event: 'update', deleted: result.removed, failed: result.failed.length }, 'pop3 update');
      reply = result.failed.length === 0 ? Replies.updated(result.removed) : Replies.deletionsFailed(result.failed.length);
    } catch (error) {
      this.#conn.log.error({ err: error }, 'update failed');
      reply = Replies.updateFailed;
    }
    await this.#release();
    this.#conn.reply(reply);
    this.#conn.end();
  }

  /** However the connection ended, the maildrop is released; only QUIT deletes (RFC 1939 §6). */
  async closed(): Promise<void> {
    if (this.#state !== 'UPDATE') await this.#release();
  }

  async #release(): Promise<void> {
    const release = this.#releaseLock;
    this.#releaseLock = undefined;
    if (release) await release();
  }
}
