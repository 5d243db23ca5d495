import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { endpointOf, Pop3Connection, type Endpoint, type Endpoints } from './pop3-load.ts';
import { Samples } from './stats.ts';
import { PROSE_WORDS, prng } from './messages.ts';

// An SMTP load generator that works against any SMTP server on host:port (popgate or another):
// N connections, M messages in total, messages of S octets, with or without PIPELINING. With
// pipelining (RFC 2920) MAIL, RCPT and DATA go out in one write and the message with its
// terminating "." in one more right after the 354, so a message costs two round trips instead
// of four.
//
// Every message must get 250, or the run fails: speed for refused or lost mail is no speed at
// all. Each message carries a Message-ID that names the run and its number, and the message
// text is fixed by that number (MessageSet), so whoever can read the recipient's mailbox can
// check afterwards that each accepted message arrived once and intact (bench/run.ts does, for
// its Maildir). The messages contain lines that begin with "." so dot-stuffing is exercised.

export class SmtpLoadError extends Error {}

export interface SmtpReply {
  code: number;
  /** The text of every line, without the code and separator. */
  lines: string[];
  /** The reply as received, lines joined with "\n", for error messages. */
  raw: string;
}

const MAX_REPLY_LINE = 4096;
const MAX_REPLY_LINES = 100;

/** One SMTP client connection; replies are matched to commands in order, so commands may be pipelined. */
export class SmtpConnection {
  readonly socket: Socket;
  /** EHLO keywords (upper case) with their parameters, after hello(). */
  readonly extensions = new Map<string, string>();
  readonly #waiting: { resolve: (reply: SmtpReply) => void; reject: (error: Error) => void }[] = [];
  readonly #ready: SmtpReply[] = [];
  #text = '';
  #lines: string[] = [];
  #failed: Error | undefined;
  readonly #name: string;

  private constructor(socket: Socket, name: string) {
    this.socket = socket;
    this.#name = name;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.#feed(chunk));
    socket.on('error', (error) => this.#fail(error));
    socket.on('close', () => this.#fail(new SmtpLoadError(`${this.#name}: connection closed by the server`)));
  }

  /** Opens a TCP connection (the greeting is left for hello() or reply()). */
  static open(endpoint: Endpoint, options: { localAddress?: string; timeoutMs?: number } = {}): Promise<SmtpConnection> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const name = `SMTP ${endpoint.host}:${endpoint.port}${options.localAddress ? ` from ${options.localAddress}` : ''}`;
    const socket = netConnect({ host: endpoint.host, port: endpoint.port, localAddress: options.localAddress, noDelay: true });
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () => socket.destroy(new SmtpLoadError(`${name}: no answer for ${timeoutMs} ms`)));
    const connection = new SmtpConnection(socket, name);
    return new Promise((resolve, reject) => {
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(connection);
      });
      socket.once('error', reject);
    });
  }

  /** Greeting (220) and EHLO (250); records the advertised extensions. */
  async hello(name = 'bench.client.invalid'): Promise<void> {
    await this.expect(220, 'greeting');
    const reply = await this.command(`EHLO ${name}`, 250);
    this.extensions.clear();
    for (const line of reply.lines.slice(1)) {
      const space = line.indexOf(' ');
      this.extensions.set((space === -1 ? line : line.slice(0, space)).toUpperCase(), space === -1 ? '' : line.slice(space + 1));
    }
  }

  get closed(): boolean {
    return this.#failed !== undefined;
  }

  #feed(chunk: string): void {
    this.#text += chunk;
    let start = 0;
    for (;;) {
      const end = this.#text.indexOf('\r\n', start);
      if (end === -1) break;
      const line = this.#text.slice(start, end);
      start = end + 2;
      if (!/^\d{3}([ -]|$)/.test(line)) return this.#protocolError(`not an SMTP reply line: ${JSON.stringify(line.slice(0, 200))}`);
      if (this.#lines.length > 0 && line.slice(0, 3) !== this.#lines[0].slice(0, 3)) {
        return this.#protocolError(`the lines of one reply have different codes: ${JSON.stringify([...this.#lines, line].join('\n').slice(0, 300))}`);
      }
      this.#lines.push(line);
      if (line[3] === '-') {
        if (this.#lines.length > MAX_REPLY_LINES) return this.#protocolError('reply of too many lines');
        continue;
      }
      const lines = this.#lines;
      this.#lines = [];
      const reply: SmtpReply = { code: Number(line.slice(0, 3)), lines: lines.map((l) => l.slice(4)), raw: lines.join('\n') };
      const waiter = this.#waiting.shift();
      if (waiter) waiter.resolve(reply);
      else this.#ready.push(reply);
    }
    this.#text = start === this.#text.length ? '' : this.#text.slice(start);
    if (this.#text.length > MAX_REPLY_LINE) this.#protocolError('reply line too long');
  }

  #protocolError(message: string): void {
    this.socket.destroy(new SmtpLoadError(`${this.#name}: ${message}`));
  }

  #fail(error: Error): void {
    if (this.#failed) return;
    this.#failed = error;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(error);
  }

  /** The next reply, whatever its code. Replies that came in unasked (the greeting) are kept in order. */
  reply(): Promise<SmtpReply> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  /** The next reply, which must have `code`. */
  async expect(code: number, what: string): Promise<SmtpReply> {
    const reply = await this.reply();
    if (reply.code !== code) throw new SmtpLoadError(`${this.#name}: ${what}: expected ${code}, got ${JSON.stringify(reply.raw)}`);
    return reply;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async command(line: string, code: number): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.expect(code, line);
  }

  /** A command whose reply code is not known in advance. */
  ask(line: string): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  /** QUIT, then closes without waiting for the server's FIN. */
  async quit(): Promise<void> {
    if (!this.#failed) {
      this.write('QUIT\r\n');
      await this.reply().catch(() => undefined);
    }
    this.close();
  }

  close(): void {
    this.socket.destroy();
  }
}

// --- messages ---

const NUMBER_DIGITS = 9;

/**
 * Messages of exactly `size` octets (CRLF line ends), one per number: the same text for every
 * number except the Message-ID, `<bench.TAG.NNNNNNNNN@popgate-bench.invalid>`. Some lines
 * start with "." (one is a lone "."), so the wire form is dot-stuffed.
 */
/** The messages of an accept run, by number: what runAccept sends and verifyMaildirDelivery looks for. */
export interface AcceptMessages {
  /** Octets of each message as the mailbox should hold it (declared with SIZE=). */
  readonly size: number;
  /** Message number `n` as the mailbox should hold it (after any headers the server adds on top). */
  message(n: number): Buffer;
  /** Message number `n` as sent after the 354: dot-stuffed, with the ".\r\n" terminator. */
  wire(n: number): Buffer;
  /** The number of a stored message, or undefined if it is none of this set. */
  numberOf(stored: Buffer): number | undefined;
}

export class MessageSet implements AcceptMessages {
  readonly size: number;
  readonly tag: string;
  /** The message of number 0. */
  readonly #message: Buffer;
  /** Its wire form: dot-stuffed, followed by ".\r\n". */
  readonly #wire: Buffer;
  /** Where the number's digits sit in both (the headers come before any stuffed line). */
  readonly #numberAt: number;

  constructor(options: { size: number; from: string; to: string; tag: string }) {
    if (!/^[A-Za-z0-9-]{1,40}$/.test(options.tag)) throw new SmtpLoadError(`message tag must be letters, digits and "-": ${options.tag}`);
    this.size = options.size;
    this.tag = options.tag;
    const random = prng(options.size);
    const word = () => PROSE_WORDS[Math.floor(random() * PROSE_WORDS.length)];
    const idPrefix = `Message-ID: <bench.${options.tag}.`;
    const header = [
      `From: Benchmark <${options.from}>`,
      `To: <${options.to}>`,
      `Subject: popgate benchmark, ${options.size} octets`,
      'Date: Wed, 01 Jan 2025 00:00:00 +0000',
      `${idPrefix}${'0'.repeat(NUMBER_DIGITS)}@popgate-bench.invalid>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      '',
    ].join('\r\n');
    const numberAt = header.indexOf(idPrefix) + idPrefix.length;
    if (header.length + 3 > options.size) throw new SmtpLoadError(`message size ${options.size} is smaller than the headers`);
    const lines: string[] = [];
    let length = header.length;
    for (let n = 1; ; n++) {
      let line: string;
      if (n === 3) line = '.'; // a lone dot: ".." on the wire, "." in the mailbox
      else if (n % 23 === 5) line = `.${word()} ${word()}`; // leading dot, e.g. ".htaccess"
      else if (n % 11 === 0) line = '';
      else {
        line = word();
        while (line.length < 60 + random() * 12) line += ` ${word()}`;
      }
      // Stop while a last line of at least one octet still fits.
      if (length + line.length + 2 > options.size - 3) break;
      lines.push(line);
      length += line.length + 2;
    }
    // The last line fills up to exactly `size` octets (at most ~75 characters, no leading dot).
    let last = '';
    while (last.length < options.size - length - 2) last += `${word()} `;
    lines.push(last.slice(0, options.size - length - 2));
    const text = header + lines.map((l) => `${l}\r\n`).join('');
    this.#message = Buffer.from(text, 'latin1');
    const stuffed = text.replace(/(^|\r\n)\./g, '$1..');
    this.#wire = Buffer.from(`${stuffed}.\r\n`, 'latin1');
    this.#numberAt = numberAt;
    if (this.#message.length !== options.size) throw new SmtpLoadError(`built a message of ${this.#message.length} octets, not ${options.size}`);
  }

  #patch(buffer: Buffer, number: number): Buffer {
    const copy = Buffer.from(buffer);
    copy.write(String(number).padStart(NUMBER_DIGITS, '0'), this.#numberAt, 'latin1');
    return copy;
  }

  /** Message number `n` as the mailbox should hold it (after any headers the server adds on top). */
  message(n: number): Buffer {
    return this.#patch(this.#message, n);
  }

  /** Message number `n` as sent after the 354: dot-stuffed, with the ".\r\n" terminator. */
  wire(n: number): Buffer {
    return this.#patch(this.#wire, n);
  }

  /** The number in a stored message's Message-ID, or undefined if it has none of this set. */
  numberOf(stored: Buffer): number | undefined {
    const head = stored.toString('latin1', 0, Math.min(stored.length, 64 * 1024));
    const match = new RegExp(`^Message-ID: <bench\\.${this.tag}\\.(\\d{${NUMBER_DIGITS}})@popgate-bench\\.invalid>\\r$`, 'mi').exec(head);
    return match ? Number(match[1]) : undefined;
  }
}

/**
 * After an accept run into a Maildir: its new/ folder must have gained exactly one file per 250,
 * and each must be a message of `messages` numbered below `accepted`, once, ending with exactly
 * the octets sent (the server adds its trace headers on top; the dot-stuffing must have been
 * undone). `checked` holds the files of new/ seen before (earlier runs) and gains this run's.
 * Throws on the first discrepancy; returns the number of files checked.
 */
export function verifyMaildirDelivery(
  maildir: string,
  messages: AcceptMessages,
  accepted: number,
  checked: Set<string>,
  /** Called with what the server put on top of each message (its trace and filter headers); throws to fail the check. */
  checkAdded?: (added: Buffer, file: string) => void,
): number {
  const dir = join(maildir, 'new');
  const fresh = (existsSync(dir) ? readdirSync(dir) : []).filter((name) => !checked.has(name) && !name.startsWith('.'));
  if (fresh.length !== accepted) throw new SmtpLoadError(`${accepted} messages got 250, but ${fresh.length} new files appeared in ${dir}`);
  const seen = new Uint8Array(accepted);
  for (const name of fresh) {
    const stored = readFileSync(join(dir, name));
    const number = messages.numberOf(stored);
    if (number === undefined || number >= accepted) throw new SmtpLoadError(`${join(dir, name)} is not one of the ${accepted} messages of this run`);
    if (seen[number]) throw new SmtpLoadError(`message ${number} of this run is in ${dir} twice`);
    seen[number] = 1;
    const sent = messages.message(number);
    if (stored.length < sent.length || !stored.subarray(stored.length - sent.length).equals(sent)) {
      throw new SmtpLoadError(`${join(dir, name)} does not end with the ${sent.length} octets of message ${number} as sent`);
    }
    checkAdded?.(stored.subarray(0, stored.length - sent.length), join(dir, name));
    checked.add(name);
  }
  return fresh.length;
}

// --- accept workload ---

export interface AcceptOptions {
  /** Several: connection i goes to the i-th, round robin (the nodes of a cluster). */
  endpoint: Endpoints;
  /** Concurrent connections. */
  clients: number;
  /** Messages in total, taken from a shared counter by whichever connection is free. */
  total: number;
  messages: AcceptMessages;
  from: string;
  to: string;
  /** MAIL, RCPT and DATA in one write, then the message right after the 354 (RFC 2920). */
  pipelining: boolean;
  /** Source address for the connections (e.g. one that holds no POP-before-SMTP grant). */
  localAddress?: string;
  /** Send SIZE= with MAIL FROM when the server offers SIZE (RFC 1870); default true. */
  declareSize?: boolean;
  timeoutMs?: number;
}

export interface AcceptResult {
  clients: number;
  pipelining: boolean;
  accepted: number;
  /** Message octets accepted (not counting the stuffing and terminators on the wire). */
  octets: number;
  /** From all connections greeted and past EHLO to the last 250. */
  elapsedMs: number;
  messagesPerSecond: number;
  /** 10^6 message octets per second. */
  megabytesPerSecond: number;
  /** Per message: from writing MAIL FROM to the 250 after the data. */
  latency: Samples;
  /** The 250 replies to the data, in the order received (they usually name a queue id). */
  replies: string[];
}

/** Sends `total` messages over `clients` connections; throws on the first reply that is not the expected one. */
export async function runAccept(options: AcceptOptions): Promise<AcceptResult> {
  const connections: SmtpConnection[] = [];
  try {
    const opened = await Promise.allSettled(
      Array.from({ length: options.clients }, async (_, client) => {
        const connection = await SmtpConnection.open(endpointOf(options.endpoint, client), { localAddress: options.localAddress, timeoutMs: options.timeoutMs });
        connections.push(connection);
        await connection.hello();
        if (options.pipelining && !connection.extensions.has('PIPELINING')) throw new SmtpLoadError('the server does not offer PIPELINING (RFC 2920)');
        return connection;
      }),
    );
    const failure = opened.find((result) => result.status === 'rejected');
    if (failure) throw (failure as PromiseRejectedResult).reason;

    const { messages, from, to } = options;
    const sizeParameter = options.declareSize !== false && connections[0].extensions.has('SIZE') ? ` SIZE=${messages.size}` : '';
    const mail = `MAIL FROM:<${from}>${sizeParameter}`;
    const rcpt = `RCPT TO:<${to}>`;
    const envelope = `${mail}\r\n${rcpt}\r\nDATA\r\n`;
    const latency = new Samples(options.total);
    const replies: string[] = [];
    let next = 0;
    let failed = false;
    const startedAt = performance.now();
    await Promise.all(
      connections.map(async (connection) => {
        try {
          while (!failed && next < options.total) {
            const number = next++;
            const wire = messages.wire(number);
            const t0 = performance.now();
            if (options.pipelining) {
              connection.write(envelope);
              // All three replies are read even when one fails, so the error names the first.
              const [m, r, d] = await Promise.all([connection.reply(), connection.reply(), connection.reply()]);
              if (m.code !== 250) throw new SmtpLoadError(`message ${number}: ${mail}: ${m.raw}`);
              if (r.code !== 250) throw new SmtpLoadError(`message ${number}: ${rcpt}: ${r.raw}`);
              if (d.code !== 354) throw new SmtpLoadError(`message ${number}: DATA: ${d.raw}`);
            } else {
              await connection.command(mail, 250);
              await connection.command(rcpt, 250);
              await connection.command('DATA', 354);
            }
            connection.write(wire);
            const done = await connection.expect(250, `message ${number}: end of data`);
            latency.push(performance.now() - t0);
            replies.push(done.lines[done.lines.length - 1]);
          }
        } catch (error) {
          failed = true;
          throw error;
        }
      }),
    );
    const elapsedMs = performance.now() - startedAt;
    await Promise.all(connections.map((c) => c.quit()));
    const accepted = latency.length;
    const octets = accepted * messages.size;
    return {
      clients: connections.length,
      pipelining: options.pipelining,
      accepted,
      octets,
      elapsedMs,
      messagesPerSecond: (accepted * 1000) / elapsedMs,
      megabytesPerSecond: octets / 1e6 / (elapsedMs / 1000),
      latency,
      replies,
    };
  } finally {
    for (const connection of connections) connection.close();
  }
}

// --- POP3 login to relay permission ---

export interface RelayLagOptions {
  pop3: Endpoint;
  smtp: Endpoint;
  user: string;
  password: string;
  /** The sender for the relay attempt; default the user (servers that enforce the sender want that). */
  sender?: string;
  /** An address in a domain the server does not handle; only RCPT is sent, never DATA. */
  remoteRecipient: string;
  /** The source address of both connections: one that holds no relay grant yet. */
  source: string;
  /** Give up after this long without a 250 to RCPT; default 10 s. */
  giveUpMs?: number;
}

export interface RelayLagResult {
  /** From the POP3 "+OK" to PASS arriving to the 250 to RCPT TO a remote address. */
  lagMs: number;
  /** RCPT attempts after the "+OK", the successful one included (1: the grant was there at once). */
  tries: number;
  /** SMTP connections reopened because the server closed one (e.g. after too many errors). */
  reconnects: number;
}

/**
 * The time from a POP3 login to relay permission over SMTP from the same address. Before the
 * login, a relay attempt from `source` must be refused (otherwise the address already has a
 * grant, or the server is an open relay, and there would be nothing to measure). Then POP3
 * USER/PASS from `source`; as soon as "+OK" arrives MAIL and RCPT go out in one write on the
 * waiting SMTP connection, and again every millisecond (after RSET) until RCPT gets 250.
 * MAIL is sent after the login because a server may decide who the client relays as at MAIL.
 */
export async function relayLag(options: RelayLagOptions): Promise<RelayLagResult> {
  const sender = options.sender ?? options.user;
  const giveUpMs = options.giveUpMs ?? 10_000;
  const attempt = `MAIL FROM:<${sender}>\r\nRCPT TO:<${options.remoteRecipient}>\r\n`;
  const connect = async () => {
    const connection = await SmtpConnection.open(options.smtp, { localAddress: options.source });
    await connection.hello('lag.client.invalid');
    return connection;
  };
  let smtp = await connect();
  let pop: Pop3Connection | undefined;
  try {
    // Before the login: relay must be refused, or the measurement would mean nothing.
    smtp.write(attempt);
    const [mail, rcpt] = await Promise.all([smtp.reply(), smtp.reply()]);
    if (mail.code !== 250) throw new SmtpLoadError(`before the POP3 login: MAIL FROM:<${sender}>: ${mail.raw}`);
    if (rcpt.code === 250) {
      throw new SmtpLoadError(
        `before the POP3 login from ${options.source}: RCPT TO:<${options.remoteRecipient}> was already accepted ` +
          '(the address holds a grant from an earlier login, or the server relays for everyone): nothing to measure',
      );
    }
    await smtp.command('RSET', 250);

    ({ connection: pop } = await Pop3Connection.connect(options.pop3, 30_000, options.source));
    await pop.expectOk(`USER ${options.user}`);
    // The attempt goes out from the reply callback, i.e. in the same tick the "+OK" is parsed.
    const loggedInAt = await new Promise<number>((resolve, reject) =>
      pop!.send(`PASS ${options.password}`, false, (error, reply) => {
        if (error) return reject(error);
        if (!reply!.ok) return reject(new SmtpLoadError(`POP3 PASS for ${options.user}: ${reply!.status}`));
        const at = performance.now();
        smtp.write(attempt);
        resolve(at);
      }),
    );
    let tries = 1;
    let reconnects = 0;
    for (;;) {
      let reconnect = false;
      try {
        const [m, r] = await Promise.all([smtp.reply(), smtp.reply()]);
        if (m.code === 421 || r.code === 421) reconnect = true;
        else {
          if (m.code !== 250) throw new SmtpLoadError(`after the POP3 login: MAIL FROM:<${sender}>: ${m.raw}`);
          if (r.code === 250) break;
          const reset = await smtp.ask('RSET');
          if (reset.code === 421) reconnect = true;
          else if (reset.code !== 250) throw new SmtpLoadError(`after the POP3 login: RSET: ${reset.raw}`);
        }
      } catch (error) {
        if (!smtp.closed) throw error;
        reconnect = true;
      }
      if (reconnect) {
        // The server ended the session (too many refused RCPTs, say): continue on a new one.
        smtp.close();
        smtp = await connect();
        reconnects++;
      }
      if (performance.now() - loggedInAt > giveUpMs) {
        throw new SmtpLoadError(`relay from ${options.source} still refused ${giveUpMs} ms after the POP3 login (${tries} tries)`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
      tries++;
      smtp.write(attempt);
    }
    const lagMs = performance.now() - loggedInAt;
    await smtp.command('RSET', 250);
    return { lagMs, tries, reconnects };
  } finally {
    await smtp.quit().catch(() => undefined);
    if (pop) await pop.quit().catch(() => undefined);
  }
}
