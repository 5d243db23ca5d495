import { connect as netConnect, type Socket } from 'node:net';
import type { Endpoint } from './pop3-load.ts';

// An SMTP load generator for any SMTP server on host:port: N connections, M messages, size S,
// with or without PIPELINING (RFC 2920: MAIL, RCPT and DATA in one write, the message right
// after the 354). Every message must get 250, or the run fails: speed for refused mail is
// no speed at all.

export class SmtpLoadError extends Error {}

interface SmtpReply {
  code: number;
  text: string;
}

/** One SMTP connection; replies are matched to commands in order. */
export class SmtpConnection {
  readonly socket: Socket;
  #buffer = '';
  readonly #waiting: ((reply: SmtpReply | Error) => void)[] = [];
  readonly #ready: SmtpReply[] = [];
  #closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('close', () => {
      this.#closed = true;
      for (const waiter of this.#waiting.splice(0)) waiter(new SmtpLoadError('connection closed'));
    });
    socket.on('error', () => {});
  }

  static async open(endpoint: Endpoint, localAddress?: string): Promise<SmtpConnection> {
    const socket = netConnect({ host: endpoint.host, port: endpoint.port, localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return new SmtpConnection(socket);
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    for (;;) {
      const match = /^(?:\d{3}-[^\r\n]*\r\n)*(\d{3})(?: ([^\r\n]*))?\r\n/.exec(this.#buffer);
      if (!match) return;
      this.#buffer = this.#buffer.slice(match[0].length);
      const reply = { code: Number(match[1]), text: match[2] ?? '' };
      const waiter = this.#waiting.shift();
      if (waiter) waiter(reply);
      else this.#ready.push(reply);
    }
  }

  reply(): Promise<SmtpReply> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#closed) return Promise.reject(new SmtpLoadError('connection closed'));
    return new Promise((resolve, reject) => this.#waiting.push((r) => (r instanceof Error ? reject(r) : resolve(r))));
  }

  async expect(code: number, what: string): Promise<SmtpReply> {
    const reply = await this.reply();
    if (reply.code !== code) throw new SmtpLoadError(`${what}: expected ${code}, got ${reply.code} ${reply.text}`);
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
  async ask(line: string): Promise<SmtpReply> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  async quit(): Promise<void> {
    this.write('QUIT\r\n');
    await this.reply().catch(() => undefined);
    this.socket.destroy();
  }
}

/** A CRLF message of about `size` octets with no line starting with "." (no stuffing needed). */
export function makeSmtpMessage(size: number, from: string, to: string): Buffer {
  const header = `From: <${from}>\r\nTo: <${to}>\r\nSubject: benchmark\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@bench>\r\n\r\n`;
  const line = 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n';
  let body = '';
  while (header.length + body.length < size) body += line;
  return Buffer.from(header + body);
}

export interface AcceptOptions {
  endpoint: Endpoint;
  clients: number;
  total: number;
  message: Buffer;
  from: string;
  to: string;
  pipelining: boolean;
}

export interface AcceptResult {
  accepted: number;
  elapsedMs: number;
  perSecond: number;
  /** Milliseconds per message, from MAIL FROM to the 250 after the data. */
  latency: number[];
}

export async function runAccept(options: AcceptOptions): Promise<AcceptResult> {
  const connections = await Promise.all(Array.from({ length: options.clients }, () => SmtpConnection.open(options.endpoint)));
  for (const connection of connections) {
    await connection.expect(220, 'greeting');
    await connection.command('EHLO bench.client', 250);
  }
  const latency: number[] = [];
  let next = 0;
  let accepted = 0;
  const data = Buffer.concat([options.message, Buffer.from('.\r\n')]);
  const started = performance.now();
  await Promise.all(
    connections.map(async (connection) => {
      while (next++ < options.total) {
        const begin = performance.now();
        if (options.pipelining) {
          connection.write(`MAIL FROM:<${options.from}>\r\nRCPT TO:<${options.to}>\r\nDATA\r\n`);
          await connection.expect(250, 'MAIL');
          await connection.expect(250, 'RCPT');
          await connection.expect(354, 'DATA');
          connection.write(data);
        } else {
          await connection.command(`MAIL FROM:<${options.from}>`, 250);
          await connection.command(`RCPT TO:<${options.to}>`, 250);
          await connection.command('DATA', 354);
          connection.write(data);
        }
        await connection.expect(250, 'end of data');
        latency.push(performance.now() - begin);
        accepted++;
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  await Promise.all(connections.map((c) => c.quit()));
  return { accepted, elapsedMs, perSecond: (accepted * 1000) / elapsedMs, latency };
}

export interface RelayLagOptions {
  pop3: Endpoint;
  smtp: Endpoint;
  user: string;
  password: string;
  /** A loopback source address without a grant yet. */
  source: string;
}

/**
 * From the POP3 "+OK" to a login, the time until SMTP from the same address accepts RCPT to a
 * remote domain, retrying every millisecond. The SMTP session is opened (and the sender
 * given) before the login, so only the relay decision is timed.
 */
export async function relayLag(options: RelayLagOptions): Promise<{ lagMs: number; tries: number }> {
  const smtp = await SmtpConnection.open(options.smtp, options.source);
  await smtp.expect(220, 'greeting');
  await smtp.command('EHLO lag.client', 250);
  const pop = await MiniPop3.open(options.pop3, options.source);
  await pop.line();
  await pop.send(`USER ${options.user}`);
  await pop.send(`PASS ${options.password}`, true);
  const loggedInAt = performance.now();
  let tries = 0;
  for (;;) {
    tries++;
    await smtp.command(`MAIL FROM:<${options.user}>`, 250);
    const reply = await smtp.ask('RCPT TO:<someone@remote.example>');
    if (reply.code === 250) break;
    await smtp.command('RSET', 250);
    if (tries > 10_000) throw new SmtpLoadError('relay never became possible');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const lagMs = performance.now() - loggedInAt;
  await smtp.quit();
  await pop.send('QUIT');
  pop.close();
  return { lagMs, tries };
}

/** Just enough POP3 for the relay-lag measurement. */
class MiniPop3 {
  readonly #socket: Socket;
  #buffer = '';
  #waiter: (() => void) | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#waiter?.();
    });
    socket.on('error', () => {});
  }

  static async open(endpoint: Endpoint, localAddress: string): Promise<MiniPop3> {
    const socket = netConnect({ host: endpoint.host, port: endpoint.port, localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return new MiniPop3(socket);
  }

  async line(): Promise<string> {
    for (;;) {
      const end = this.#buffer.indexOf('\r\n');
      if (end !== -1) {
        const line = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        return line;
      }
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  async send(line: string, mustSucceed = false): Promise<string> {
    this.#socket.write(`${line}\r\n`);
    const reply = await this.line();
    if (mustSucceed && !reply.startsWith('+OK')) throw new SmtpLoadError(`POP3 ${line.split(' ')[0]}: ${reply}`);
    return reply;
  }

  close(): void {
    this.#socket.destroy();
  }
}
