import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../log/logger.ts';
import type { Reply } from '../policy/mail-policy.ts';
import { rfc5322Date } from '../mail/date.ts';
import { loginAddress } from '../accounts/address.ts';
import { plaintextLoginAllowed } from '../policy/login-guard.ts';
import type { LimitExceeded } from '../policy/send-limits.ts';
import { Spool } from '../queue/spool.ts';
import type { SmtpRole } from './server.ts';
import { DataReader } from './data-reader.ts';
import type { SmtpServer } from './server.ts';

// One SMTP connection (RFC 5321), top to bottom: greeting, EHLO/HELO, an optional STARTTLS
// (RFC 3207), then transactions of MAIL, RCPT and DATA. Commands are handled one at a time in
// arrival order, which makes PIPELINING (RFC 2920) safe; every reply carries an RFC 3463
// enhanced status code (RFC 2034). Policy decisions come from MailPolicy; storage from the
// Mailstore and the Spool.

const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

interface Transaction {
  sender: string;
  relayUser?: string;
  /** The relay right comes from SMTP AUTH (not a POP-before-SMTP grant). */
  authenticated: boolean;
  senderRefusal?: Reply;
  /** Local mailboxes, deduplicated across recipients. */
  mailboxes: Set<string>;
  /** Remote addresses (relay or alias forwarding), deduplicated. */
  remote: Set<string>;
  /** The RCPT addresses as given, for Received "for" and logs. */
  recipients: string[];
  relayedRecipients: string[];
}

export class SmtpSession {
  onClosed?: () => void;

  readonly #server: SmtpServer;
  readonly #raw: Socket;
  #stream: Socket | TLSSocket;
  readonly ip: string;
  readonly id: string;
  #log: Logger;

  #closed = false;
  #secure = false;
  #input: Buffer = EMPTY;
  #busy = false;
  #paused = false;
  /** The stream whose replies are held back while a pipelined group is answered. */
  #corked: Socket | TLSSocket | undefined;
  #errors = 0;
  #shuttingDown = false;
  #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  #helo: string | undefined;
  #esmtp = false;
  readonly #role: SmtpRole;
  /** The account logged in with AUTH (RFC 4954), if any. */
  #authUser: string | undefined;
  /** Set while an AUTH exchange waits for the client's next line (RFC 4954 §4). */
  #authContinuation: ((line: string) => Promise<void>) | undefined;
  #transaction: Transaction | undefined;
  /** Set while DATA is being received. */
  #data: DataReader | undefined;

  constructor(server: SmtpServer, socket: Socket, ip: string, id: string, role: SmtpRole = 'smtp') {
    this.#server = server;
    this.#role = role;
    this.#raw = socket;
    this.#stream = socket;
    this.ip = ip;
    this.id = id;
    this.#log = server.deps.log.child({ sid: id, ip });
    this.#closedPromise = new Promise((resolve) => (this.#resolveClosed = resolve));
    socket.setTimeout(server.options.idleTimeoutMs, () => {
      this.#log.info({ event: 'idle_timeout' }, 'smtp timeout');
      void this.abort('421 4.4.2 Timeout: no command for too long, closing connection');
    });
    socket.once('close', () => this.#onClose());
  }

  get #options() {
    return this.#server.options;
  }

  start(): void {
    this.#log.info({ event: 'connect' }, 'smtp session started');
    this.#attach(this.#raw);
    this.#reply(220, '', `${this.#options.hostname} ESMTP popgate ready`);
  }

  /** Port 465 (RFC 8314): TLS first, then the greeting. */
  startImplicitTls(): void {
    const tls = this.#beginTls();
    tls.once('secure', () => {
      this.#log.info({ event: 'connect', tls: true, protocol: tls.getProtocol() }, 'smtps session started');
      this.#reply(220, '', `${this.#options.hostname} ESMTP popgate ready`);
    });
  }

  /** Wraps the connection in TLS (implicit or after STARTTLS), with a handshake time limit. */
  #beginTls(): TLSSocket {
    const tls = this.#server.wrapTls(this.#raw);
    this.#stream = tls;
    const timer = setTimeout(() => this.#raw.destroy(), this.#options.handshakeTimeoutMs);
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
      if (stream !== this.#stream || this.#closed) return;
      this.#input = this.#input.length === 0 ? chunk : Buffer.concat([this.#input, chunk]);
      if (this.#busy) {
        if (this.#input.length > this.#options.maxLineLength * 16 && !this.#paused) {
          this.#paused = true;
          stream.pause();
        }
        return;
      }
      void this.#processInput();
    });
  }

  // --- input loop: commands, or message data after DATA ---

  async #processInput(): Promise<void> {
    this.#busy = true;
    try {
      while (!this.#closed && this.#input.length > 0) {
        if (this.#data) {
          const input = this.#input;
          this.#input = EMPTY;
          const rest = this.#data.push(input);
          if (rest === undefined) break; // more data to come
          this.#input = rest;
          await this.#endOfData();
          await this.#drained();
          continue;
        }
        const lf = this.#input.indexOf(LF);
        const lineLength = lf === -1 ? this.#input.length : lf + 1;
        if (lineLength > this.#options.maxLineLength) {
          this.#log.info({ event: 'line_too_long', length: lineLength }, 'command line too long');
          await this.abort(`500 5.5.2 Line too long (the limit is ${this.#options.maxLineLength} octets), closing connection`);
          return;
        }
        if (lf === -1) break;
        let end = lf;
        if (end > 0 && this.#input[end - 1] === 0x0d) end--;
        const line = this.#input.toString('utf8', 0, end);
        this.#input = lf + 1 === this.#input.length ? EMPTY : this.#input.subarray(lf + 1);
        // RFC 2920 §3.1: the replies to a pipelined group go out together once the group is
        // answered, in one segment instead of one write (and one loopback wake-up) each.
        if (!this.#corked && this.#input.indexOf(LF) !== -1) {
          this.#corked = this.#stream;
          this.#corked.cork();
        }
        try {
          await this.#command(line);
        } catch (error) {
          this.#log.error({ err: error }, 'smtp command failed');
          this.#reply(451, '4.3.0', 'Internal error, please try again later');
        }
        // Flushed when the group is done, before message data (the client waits for 354),
        // and when the held replies fill the socket's buffer (a long group must not wait for a
        // drain that a corked stream never signals). STARTTLS flushes its own 220.
        if (this.#corked && (this.#data || this.#corked.writableNeedDrain || this.#input.indexOf(LF) === -1)) this.#uncork();
        await this.#drained();
        if (this.#shuttingDown && !this.#data && this.#input.length === 0) {
          await this.abort('421 4.3.2 Server is shutting down, try again later');
        }
      }
    } finally {
      this.#uncork();
      this.#busy = false;
      if (this.#paused && !this.#closed) {
        this.#paused = false;
        this.#stream.resume();
      }
    }
  }

  #uncork(): void {
    const corked = this.#corked;
    this.#corked = undefined;
    corked?.uncork();
  }

  async #command(line: string): Promise<void> {
    const continuation = this.#authContinuation;
    if (continuation) {
      this.#authContinuation = undefined;
      return continuation(line);
    }
    if (line.includes('\0')) return this.#error(500, '5.5.2', 'Invalid characters in command');
    const space = line.indexOf(' ');
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const argument = space === -1 ? '' : line.slice(space + 1).trim();
    switch (verb) {
      case 'EHLO':
        return this.#hello(argument, true);
      case 'HELO':
        return this.#hello(argument, false);
      case 'STARTTLS':
        return this.#startTls(argument);
      case 'MAIL':
        return this.#mail(argument);
      case 'RCPT':
        return this.#rcpt(argument);
      case 'DATA':
        return this.#dataCommand(argument);
      case 'RSET':
        this.#transaction = undefined;
        return this.#reply(250, '2.0.0', 'Reset');
      case 'NOOP':
        return this.#reply(250, '2.0.0', 'OK');
      case 'VRFY':
        // RFC 5321 §3.5.3: 252 neither confirms nor denies (address harvesting gets nothing).
        return this.#reply(252, '2.5.0', 'Cannot verify the user, but will accept mail and attempt delivery');
      case 'HELP':
        return this.#reply(214, '2.0.0', 'Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS');
      case 'QUIT':
        this.#reply(221, '2.0.0', `${this.#options.hostname} closing connection`);
        return this.#end();
      case 'AUTH':
        return this.#auth(argument);
      case 'BDAT':
      case 'EXPN':
      case 'ETRN':
      case 'TURN':
        return this.#error(502, '5.5.1', `${verb} is not implemented here`);
    }
    // An HTTP request or similar garbage is not an SMTP client.
    if (/^(GET|POST|HEAD|PUT|CONNECT|OPTIONS)$/.test(verb)) {
      this.#log.info({ event: 'http_on_smtp' }, 'HTTP request on the SMTP port');
      await this.abort('554 5.7.0 This is an SMTP server, not a web server');
      return;
    }
    return this.#error(500, '5.5.2', 'Command not recognized');
  }

  /** A client mistake: counted, slowed down, and after too many the connection is closed. */
  async #error(code: number, enhanced: string, text: string): Promise<void> {
    this.#errors++;
    if (this.#errors > this.#options.maxErrors) {
      this.#log.info({ event: 'too_many_errors', errors: this.#errors }, 'closing after too many errors');
      await this.abort('421 4.7.0 Too many errors, closing connection');
      return;
    }
    // A growing pause after each error makes dictionary attacks on RCPT slow.
    const delay = Math.min(this.#options.errorDelayMs * this.#errors, 5000);
    if (delay > 0) await Promise.race([sleep(delay), this.#closedPromise]);
    this.#reply(code, enhanced, text);
  }

  // --- greeting and TLS ---

  #hello(argument: string, extended: boolean): void {
    if (argument === '' || /[\s<>]/.test(argument) || argument.length > 255) {
      return void this.#error(501, '5.5.4', `Syntax: ${extended ? 'EHLO' : 'HELO'} your-host-name`);
    }
    this.#helo = argument;
    this.#esmtp = extended;
    this.#transaction = undefined; // RFC 5321 §4.1.4: EHLO resets the transaction
    if (!extended) return this.#reply(250, '', `${this.#options.hostname} Hello ${argument} [${this.ip}]`);
    const lines = [
      `${this.#options.hostname} Hello ${argument} [${this.ip}]`,
      'PIPELINING',
      `SIZE ${this.#options.maxMessageSize}`,
      '8BITMIME',
      'SMTPUTF8',
      'ENHANCEDSTATUSCODES',
    ];
    if (!this.#secure && this.#server.deps.tls()) lines.push('STARTTLS');
    if (this.#authOffered() && this.#authAllowedNow() && !this.#authUser) lines.push('AUTH PLAIN LOGIN');
    lines.push('HELP');
    this.#stream.write(lines.map((text, i) => `250${i === lines.length - 1 ? ' ' : '-'}${text}\r\n`).join(''));
  }

  #startTls(argument: string): void {
    if (argument !== '') return void this.#error(501, '5.5.4', 'STARTTLS takes no argument');
    if (this.#secure) return void this.#error(503, '5.5.1', 'TLS is already active');
    if (!this.#server.deps.tls()) return void this.#error(502, '5.5.1', 'STARTTLS is not available here');
    this.#reply(220, '2.0.0', 'Ready to start TLS');
    this.#uncork(); // the 220 leaves on the plain socket before TLS takes it over
    // RFC 3207 §4.2 and the STARTTLS command injection class: whatever was pipelined after
    // STARTTLS came in the clear and is discarded; the session starts over after the handshake.
    this.#input = EMPTY;
    this.#helo = undefined;
    this.#esmtp = false;
    this.#transaction = undefined;
    this.#authContinuation = undefined;
    this.#raw.removeAllListeners('data');
    const tls = this.#beginTls();
    tls.once('secure', () => this.#log.info({ event: 'starttls', protocol: tls.getProtocol() }, 'TLS started'));
  }

  // --- SMTP AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN ---

  #authOffered(): boolean {
    return this.#role !== 'smtp' || this.#options.authOnPort25;
  }

  /** Passwords only over TLS, except where auth.plaintext_without_tls allows (as for POP3). */
  #authAllowedNow(): boolean {
    return plaintextLoginAllowed(this.#options.plaintextWithoutTls, this.ip, this.#secure);
  }

  async #auth(argument: string): Promise<void> {
    if (!this.#authOffered()) return this.#error(502, '5.5.1', 'AUTH is not available on this port: use the submission port (587 or 465)');
    if (!this.#helo || !this.#esmtp) return this.#error(503, '5.5.1', 'Say EHLO first');
    if (this.#authUser) return this.#error(503, '5.5.1', 'Already authenticated');
    if (this.#transaction) return this.#error(503, '5.5.1', 'AUTH is not allowed during a mail transaction');
    if (!this.#authAllowedNow()) return this.#error(538, '5.7.11', 'Encryption required: turn on STARTTLS (or SSL/TLS on port 465) in your mail program, then log in');
    const [mechanism = '', initial] = argument.split(' ');
    switch (mechanism.toUpperCase()) {
      case 'PLAIN':
        if (initial !== undefined) return this.#authPlain(initial);
        this.#authContinuation = (line) => this.#authPlain(line);
        return this.#reply(334, '', '');
      case 'LOGIN':
        if (initial !== undefined) return this.#authLoginPassword(initial);
        this.#authContinuation = (line) => this.#authLoginPassword(line);
        return this.#reply(334, '', Buffer.from('Username:').toString('base64'));
      default:
        return this.#error(504, '5.5.4', 'Unknown mechanism: use PLAIN or LOGIN');
    }
  }

  async #authPlain(response: string): Promise<void> {
    if (response === '*') return this.#error(501, '5.0.0', 'Authentication cancelled');
    const decoded = decodeBase64(response);
    const parts = decoded?.split('\0');
    if (!parts || parts.length !== 3) return this.#error(501, '5.5.2', 'Cannot decode the AUTH PLAIN response');
    return this.#authenticate(parts[1], parts[2], 'PLAIN');
  }

  async #authLoginPassword(userResponse: string): Promise<void> {
    if (userResponse === '*') return this.#error(501, '5.0.0', 'Authentication cancelled');
    const user = decodeBase64(userResponse);
    if (user === undefined) return this.#error(501, '5.5.2', 'Cannot decode the user name');
    this.#authContinuation = async (line) => {
      if (line === '*') return this.#error(501, '5.0.0', 'Authentication cancelled');
      const password = decodeBase64(line);
      if (password === undefined) return this.#error(501, '5.5.2', 'Cannot decode the password');
      return this.#authenticate(user, password, 'LOGIN');
    };
    this.#reply(334, '', Buffer.from('Password:').toString('base64'));
  }

  /** The same guard as POP3: a locked-out address gets no answer on its guess. */
  async #authenticate(name: string, password: string, mechanism: string): Promise<void> {
    const deps = this.#server.deps;
    const address = loginAddress(name, this.#options.defaultDomain);
    const verdict = await deps.guard.check(this.ip, address);
    if (verdict.locked) {
      const minutes = Math.max(1, Math.ceil(verdict.retryAfterMs / 60_000));
      this.#log.warn({ event: 'login_refused_locked', mechanism, user: address }, 'AUTH refused: locked out');
      return this.#reply(454, '4.7.0', `Too many failed logins ${verdict.scope === 'address' ? 'from your address' : 'for this account'}: try again in ${minutes} minute${minutes === 1 ? '' : 's'}`);
    }
    const user = address === '' || password === '' ? undefined : await deps.accounts.authenticate(address, password);
    if (!user) {
      const { delayMs, locked } = await deps.guard.failure(this.ip, address || undefined);
      this.#log.info({ event: 'login_failed', user: address, mechanism, locked }, 'smtp auth failed');
      if (delayMs > 0) await Promise.race([sleep(delayMs), this.#closedPromise]);
      return this.#error(535, '5.7.8', 'Authentication failed: check your user name (your full e-mail address) and password');
    }
    await deps.guard.success(this.ip, user.address);
    this.#authUser = user.address;
    this.#log = this.#log.child({ user: user.address });
    this.#log.info({ event: 'login', mechanism, tls: this.#secure, role: this.#role }, 'smtp auth');
    this.#reply(235, '2.7.0', 'Authentication successful');
  }

  // --- the mail transaction ---

  async #mail(argument: string): Promise<void> {
    if (!this.#helo) return this.#error(503, '5.5.1', 'Say EHLO first');
    if (this.#transaction) return this.#error(503, '5.5.1', 'A transaction is already open: send RSET first');
    const match = /^FROM:\s*<([^>]*)>\s*(.*)$/i.exec(argument);
    if (!match) return this.#error(501, '5.5.4', 'Syntax: MAIL FROM:<address>');
    const parameters = this.#parameters(match[2]);
    if (typeof parameters === 'string') return this.#error(555, '5.5.4', parameters);
    for (const [name, value] of parameters) {
      if (name === 'SIZE') {
        if (!/^\d{1,12}$/.test(value ?? '')) return this.#error(501, '5.5.4', 'SIZE needs a number');
        // RFC 1870 §6: refuse at once what would be refused after the upload.
        if (Number(value) > this.#options.maxMessageSize) {
          return this.#error(552, '5.3.4', `Message too big: the limit is ${this.#options.maxMessageSize} octets`);
        }
      } else if (name === 'BODY') {
        if (!/^(7BIT|8BITMIME)$/i.test(value ?? '')) return this.#error(501, '5.5.4', 'BODY must be 7BIT or 8BITMIME');
      } else if (name === 'SMTPUTF8') {
        if (value !== undefined) return this.#error(501, '5.5.4', 'SMTPUTF8 takes no value');
      } else {
        return this.#error(555, '5.5.4', `Parameter ${name} is not supported`);
      }
    }
    const policy = this.#server.deps.policy;
    const verdict = this.#authUser ? await policy.authenticatedSender(this.#authUser, match[1]) : await policy.sender(this.ip, match[1]);
    if (!verdict.ok) {
      this.#log.info({ event: 'mail_refused', from: match[1], reason: verdict.reason }, 'sender refused');
      return this.#error(verdict.reply.code, verdict.reply.enhanced, verdict.reply.text);
    }
    if (this.#role !== 'smtp' && !this.#authUser && !(verdict.relayUser && this.#options.popBeforeSmtpOnSubmission)) {
      // RFC 6409 §4.3: submission is for authorized clients only.
      this.#log.info({ event: 'mail_refused', from: match[1], reason: 'submission without authentication' }, 'sender refused');
      return this.#error(530, '5.7.0', 'Authentication required: log in with your e-mail address and password (SMTP AUTH)');
    }
    const limits = this.#server.deps.sendLimits;
    const exceeded = verdict.relayUser && limits ? await limits.checkMessage(verdict.relayUser) : undefined;
    const overLimit = exceeded && sendLimitReply(exceeded);
    if (overLimit) {
      // Refused, never queued: a compromised account must not fill the queue with spam.
      this.#log.info({ event: 'mail_refused', from: match[1], reason: 'sending limit' }, 'sender refused');
      return this.#error(overLimit.code, overLimit.enhanced, overLimit.text);
    }
    this.#transaction = {
      sender: verdict.sender,
      relayUser: verdict.relayUser,
      authenticated: this.#authUser !== undefined,
      senderRefusal: verdict.senderRefusal,
      mailboxes: new Set(),
      remote: new Set(),
      recipients: [],
      relayedRecipients: [],
    };
    this.#reply(250, '2.1.0', 'Sender OK');
  }

  async #rcpt(argument: string): Promise<void> {
    const transaction = this.#transaction;
    if (!transaction) return this.#error(503, '5.5.1', 'Send MAIL FROM first');
    const match = /^TO:\s*<([^>]*)>\s*(.*)$/i.exec(argument);
    if (!match) return this.#error(501, '5.5.4', 'Syntax: RCPT TO:<address>');
    if (match[2].trim() !== '') return this.#error(555, '5.5.4', 'RCPT parameters are not supported');
    if (transaction.recipients.length >= this.#options.maxRecipients) {
      // RFC 5321 §4.5.3.1.10: 452 tells the client to send the rest in another transaction.
      return this.#reply(452, '4.5.3', `Too many recipients: at most ${this.#options.maxRecipients} per message`);
    }
    const verdict = await this.#server.deps.policy.recipient(match[1], transaction.relayUser, transaction.senderRefusal);
    if (!verdict.ok) {
      this.#log.info({ event: 'rcpt_refused', from: transaction.sender, to: match[1], reason: verdict.reason }, 'recipient refused');
      return this.#error(verdict.reply.code, verdict.reply.enhanced, verdict.reply.text);
    }
    const limits = this.#server.deps.sendLimits;
    if (verdict.kind === 'remote' && transaction.relayUser && limits) {
      const exceeded = await limits.checkRecipient(transaction.relayUser, transaction.relayedRecipients.length);
      const overLimit = exceeded && sendLimitReply(exceeded);
      if (overLimit) return this.#reply(overLimit.code, overLimit.enhanced, overLimit.text);
    }
    transaction.recipients.push(verdict.address);
    if (verdict.kind === 'local') {
      verdict.mailboxes.forEach((m) => transaction.mailboxes.add(m));
      verdict.remote.forEach((r) => transaction.remote.add(r));
    } else {
      transaction.remote.add(verdict.address);
      transaction.relayedRecipients.push(verdict.address);
      this.#log.info(
        { event: 'relay_use', user: transaction.relayUser, to: verdict.address },
        transaction.authenticated ? 'relay allowed by SMTP AUTH' : 'relay allowed by POP-before-SMTP grant',
      );
    }
    this.#reply(250, '2.1.5', 'Recipient OK');
  }

  #dataCommand(argument: string): void | Promise<void> {
    if (argument !== '') return this.#error(501, '5.5.4', 'DATA takes no argument');
    if (!this.#transaction) return this.#error(503, '5.5.1', 'Send MAIL FROM first');
    if (this.#transaction.recipients.length === 0) return this.#error(554, '5.5.1', 'No valid recipients');
    this.#data = new DataReader(this.#options.maxMessageSize);
    this.#reply(354, '', 'Send the message, end with <CRLF>.<CRLF>');
  }

  async #endOfData(): Promise<void> {
    const data = this.#data!;
    const transaction = this.#transaction!;
    this.#data = undefined;
    this.#transaction = undefined;
    const id = Spool.newId();
    const logged = {
      event: 'message',
      queueId: id,
      user: transaction.relayUser,
      from: transaction.sender,
      to: transaction.recipients,
      size: data.size,
      relayed: transaction.relayedRecipients,
    };
    if (data.bareLineEnding !== undefined) {
      this.#log.warn({ ...logged, outcome: 'refused', reason: `bare CR or LF at octet ${data.bareLineEnding}` }, 'message refused');
      return this.#error(550, '5.5.2', 'Message refused: it contains a bare CR or LF (line ends must be CRLF; possible SMTP smuggling)');
    }
    if (data.tooBig) {
      this.#log.info({ ...logged, outcome: 'refused', reason: 'too big' }, 'message refused');
      return this.#reply(552, '5.3.4', `Message too big: the limit is ${this.#options.maxMessageSize} octets`);
    }
    const trace = this.#traceHeader(id, transaction);
    try {
      await this.#deliver(id, transaction, trace, data.chunks);
    } catch (error) {
      this.#log.error({ ...logged, err: error, outcome: 'failed' }, 'delivery failed');
      return this.#reply(451, '4.3.0', 'Message not accepted: local error, please try again later');
    }
    if (transaction.relayUser && transaction.relayedRecipients.length > 0) {
      await this.#server.deps.sendLimits?.recordSent(transaction.relayUser, transaction.relayedRecipients.length).catch((error) => {
        this.#log.error({ err: error }, 'cannot record the message for the sending limits');
      });
    }
    this.#log.info({ ...logged, outcome: 'accepted', mailboxes: [...transaction.mailboxes], queued: [...transaction.remote] }, 'message accepted');
    this.#reply(250, '2.0.0', `OK: queued as ${id}`);
  }

  /** Durable before 250 (RFC 5321 §6.1): every local copy fsync'd, the rest in the spool. */
  async #deliver(id: string, transaction: Transaction, trace: string, chunks: Buffer[]): Promise<void> {
    const deps = this.#server.deps;
    const traced = [Buffer.from(trace), ...chunks];
    const localCopy = [Buffer.from(`Return-Path: <${transaction.sender}>\r\n`), ...traced];
    const work: Promise<unknown>[] = [...transaction.mailboxes].map((mailbox) => deps.mailstore.deliver(mailbox, localCopy));
    if (transaction.remote.size > 0) {
      work.push(
        deps.queue.enqueue(
          { id, from: transaction.sender, to: [...transaction.remote], receivedAt: Date.now(), clientIp: this.ip, authorizedUser: transaction.relayUser },
          traced,
        ),
      );
    }
    await Promise.all(work);
  }

  /** RFC 5321 §4.4 trace, naming the POP-before-SMTP user so abuse reports reach an account. */
  #traceHeader(id: string, transaction: Transaction): string {
    // RFC 3848: ESMTPA / ESMTPSA for an authenticated session.
    const protocol = `${this.#esmtp ? 'ESMTP' : 'SMTP'}${this.#secure ? 'S' : ''}${transaction.authenticated ? 'A' : ''}`;
    const auth = !transaction.relayUser
      ? ''
      : transaction.authenticated
        ? `\r\n\t(authenticated as ${transaction.relayUser})`
        : `\r\n\t(authorized by POP-before-SMTP login of ${transaction.relayUser})`;
    const recipient = transaction.recipients.length === 1 ? `\r\n\tfor <${transaction.recipients[0]}>` : '';
    const helo = (this.#helo ?? 'unknown').replace(/[^\x21-\x7e]/g, '?');
    return `Received: from ${helo} ([${this.ip}])\r\n\tby ${this.#options.hostname} (popgate) with ${protocol} id ${id}${auth}${recipient};\r\n\t${rfc5322Date(new Date())}\r\n`;
  }

  #parameters(text: string): Map<string, string | undefined> | string {
    const parameters = new Map<string, string | undefined>();
    for (const part of text.split(' ').filter((p) => p !== '')) {
      const eq = part.indexOf('=');
      const name = (eq === -1 ? part : part.slice(0, eq)).toUpperCase();
      if (!/^[A-Z0-9][A-Z0-9-]*$/.test(name)) return `Malformed parameter ${name.slice(0, 20)}`;
      parameters.set(name, eq === -1 ? undefined : part.slice(eq + 1));
    }
    return parameters;
  }

  // --- ending ---

  #end(): void {
    this.#closed = true;
    this.#stream.end();
    setTimeout(() => this.#raw.destroy(), 2000).unref();
  }

  async abort(text: string): Promise<void> {
    if (!this.#closed) {
      if (this.#stream.writable) this.#stream.write(`${text}\r\n`);
      this.#end();
    }
    await Promise.race([this.#closedPromise, sleep(2000)]);
    this.#raw.destroy();
  }

  shutdownWhenIdle(): void {
    this.#shuttingDown = true;
    if (!this.#busy && !this.#data) void this.abort('421 4.3.2 Server is shutting down, try again later');
  }

  #onClose(): void {
    this.#closed = true;
    this.#log.info({ event: 'close', in: this.#raw.bytesRead, out: this.#raw.bytesWritten }, 'smtp session closed');
    this.#resolveClosed();
    this.onClosed?.();
  }

  #reply(code: number, enhanced: string, text: string): void {
    if (this.#stream.writable) this.#stream.write(`${code} ${enhanced ? `${enhanced} ` : ''}${text}\r\n`);
  }

  #drained(): Promise<void> {
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
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Strict base64 (RFC 4954 §4): undefined when it is not. */
function decodeBase64(text: string): string | undefined {
  const trimmed = text.trim();
  if (trimmed === '=') return '';
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) return undefined;
  return Buffer.from(trimmed, 'base64').toString('utf8');
}

/** A reached sending limit as an SMTP reply: the hourly one is worth retrying later (4xx), the daily ones need the provider (5xx). */
export function sendLimitReply(limit: LimitExceeded): Reply {
  const what = { messages_per_hour: 'messages per hour', messages_per_day: 'messages per day', recipients_per_day: 'recipients per day' }[limit.limit];
  return limit.temporary
    ? { code: 450, enhanced: '4.7.1', text: `Sending limit reached: ${limit.max} ${what}. Please try again later` }
    : { code: 550, enhanced: '5.7.1', text: `Sending limit reached: ${limit.max} ${what}. Contact your provider if you need more` };
}
