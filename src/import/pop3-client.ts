import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';

// A POP3 client (RFC 1939) for reading another server's mailboxes: USER/PASS, STLS (RFC 2595),
// UIDL, LIST, RETR, QUIT. It never sends DELE. Every reply is read under limits (a status line,
// a listing, a message) and a silent server times out, so a broken or hostile server ends one
// user's import with a clear error instead of hanging it or filling memory.

export class Pop3ClientError extends Error {}

export interface Pop3ClientOptions {
  host: string;
  port: number;
  /** "tls": TLS from the start (995); "starttls": STLS after the greeting; "none": plain text. */
  security: 'tls' | 'starttls' | 'none';
  /** Accept any certificate (an old server with a self-signed one); off by default. */
  insecure?: boolean;
  /** How long one reply may take to arrive, in ms. */
  timeoutMs?: number;
  /** The largest message read, in octets. */
  maxMessageBytes?: number;
}

export const POP3_CLIENT_LIMITS = { lineLength: 8192, listingLines: 2_000_000, messageBytes: 256 * 1024 * 1024 };

export interface ListedUidl {
  number: number;
  uidl: string;
}

export class Pop3Client {
  #socket: Socket | TLSSocket;
  #buffer: Buffer = Buffer.alloc(0);
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  readonly #timeoutMs: number;
  readonly #maxMessageBytes: number;
  readonly #where: string;

  private constructor(socket: Socket | TLSSocket, options: Pop3ClientOptions) {
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#maxMessageBytes = options.maxMessageBytes ?? POP3_CLIENT_LIMITS.messageBytes;
    this.#where = `${options.host}:${options.port}`;
    this.#socket = socket;
    this.#attach(socket);
  }

  /** Connects, reads the greeting and, for "starttls", upgrades the connection. */
  static async connect(options: Pop3ClientOptions): Promise<Pop3Client> {
    const socket = await new Promise<Socket | TLSSocket>((resolve, reject) => {
      const tlsOptions = { host: options.host, port: options.port, servername: isIp(options.host) ? undefined : options.host, rejectUnauthorized: !options.insecure };
      const s = options.security === 'tls' ? connectTls(tlsOptions) : connectTcp({ host: options.host, port: options.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Pop3ClientError(`${options.host}:${options.port}: no connection within ${(options.timeoutMs ?? 60_000) / 1000} s`));
      }, options.timeoutMs ?? 60_000);
      s.once(options.security === 'tls' ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (error) => {
        clearTimeout(timer);
        reject(new Pop3ClientError(`${options.host}:${options.port}: ${error.message}`));
      });
    });
    const client = new Pop3Client(socket, options);
    try {
      await client.#status('greeting');
      if (options.security === 'starttls') await client.#startTls(options);
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  async login(user: string, password: string): Promise<void> {
    if (/[\r\n]/.test(user + password)) throw new Pop3ClientError('a user name or password holds a line break');
    await this.#command(`USER ${user}`, 'USER');
    await this.#command(`PASS ${password}`, 'PASS', true);
  }

  /** UIDL: every message's number and unique-id, in the server's order. */
  async uidl(): Promise<ListedUidl[]> {
    await this.#command('UIDL', 'UIDL');
    const listed: ListedUidl[] = [];
    for (const line of await this.#listing('UIDL')) {
      const match = /^(\d{1,9}) (\S+)$/.exec(line);
      if (!match) throw new Pop3ClientError(`${this.#where}: a UIDL line of the wrong form: ${JSON.stringify(line.slice(0, 100))}`);
      listed.push({ number: Number(match[1]), uidl: match[2] });
    }
    return listed;
  }

  /** LIST: every message's size by number. */
  async list(): Promise<Map<number, number>> {
    await this.#command('LIST', 'LIST');
    const sizes = new Map<number, number>();
    for (const line of await this.#listing('LIST')) {
      const match = /^(\d{1,9}) (\d{1,15})/.exec(line);
      if (!match) throw new Pop3ClientError(`${this.#where}: a LIST line of the wrong form: ${JSON.stringify(line.slice(0, 100))}`);
      sizes.set(Number(match[1]), Number(match[2]));
    }
    return sizes;
  }

  /** RETR: the message as stored (dot-unstuffed, CRLF line ends as sent). */
  async retrieve(number: number): Promise<Buffer> {
    await this.#command(`RETR ${number}`, 'RETR');
    const pieces: Buffer[] = [];
    let size = 0;
    for (;;) {
      const line = await this.#rawLine(`RETR ${number}`, true);
      if (line.length === 3 && line[0] === 0x2e && line[1] === 0x0d && line[2] === 0x0a) break;
      if (line.length === 2 && line[0] === 0x2e && line[1] === 0x0a) break;
      // Byte-stuffing (RFC 1939 section 3): a line that starts with "." was sent with one more.
      const content = line[0] === 0x2e ? line.subarray(1) : line;
      size += content.length;
      if (size > this.#maxMessageBytes) throw new Pop3ClientError(`${this.#where}: message ${number} is larger than ${this.#maxMessageBytes} octets`);
      pieces.push(content);
    }
    return Buffer.concat(pieces, size);
  }

  /** QUIT, then close. Never DELE: nothing is removed on the server. */
  async quit(): Promise<void> {
    try {
      await this.#command('QUIT', 'QUIT');
    } finally {
      this.close();
    }
  }

  close(): void {
    this.#socket.destroy();
  }

  async #startTls(options: Pop3ClientOptions): Promise<void> {
    await this.#command('STLS', 'STLS');
    // Anything the server sent after its +OK and before the handshake is an injection attempt (RFC 2595 section 4).
    if (this.#buffer.length > 0) throw new Pop3ClientError(`${this.#where}: the server sent data after its STLS reply`);
    const plain = this.#socket;
    plain.removeAllListeners('data');
    const secured = await new Promise<TLSSocket>((resolve, reject) => {
      const s = connectTls({ socket: plain, servername: isIp(options.host) ? undefined : options.host, rejectUnauthorized: !options.insecure });
      s.once('secureConnect', () => resolve(s));
      s.once('error', (error) => reject(new Pop3ClientError(`${this.#where}: TLS: ${error.message}`)));
    });
    this.#socket = secured;
    this.#attach(secured);
  }

  #attach(socket: Socket | TLSSocket): void {
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#notify();
    });
    socket.on('error', (error) => {
      this.#error ??= new Pop3ClientError(`${this.#where}: ${error.message}`);
      this.#notify();
    });
    socket.on('close', () => {
      this.#error ??= new Pop3ClientError(`${this.#where}: the server closed the connection`);
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #command(line: string, name: string, secret = false): Promise<string> {
    if (this.#error) throw this.#error;
    this.#socket.write(`${line}\r\n`);
    return this.#status(secret ? name : line);
  }

  async #status(what: string): Promise<string> {
    const line = (await this.#rawLine(what, false)).toString('latin1').replace(/\r?\n$/, '');
    if (line.startsWith('+OK')) return line;
    throw new Pop3ClientError(`${this.#where}: ${what}: ${line.startsWith('-ERR') ? line : `not a POP3 reply: ${JSON.stringify(line.slice(0, 100))}`}`);
  }

  async #listing(what: string): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = (await this.#rawLine(what, false)).toString('latin1').replace(/\r?\n$/, '');
      if (line === '.') return lines;
      if (lines.length >= POP3_CLIENT_LIMITS.listingLines) throw new Pop3ClientError(`${this.#where}: ${what}: more than ${POP3_CLIENT_LIMITS.listingLines} lines`);
      lines.push(line.startsWith('.') ? line.slice(1) : line);
    }
  }

  /** The next line with its line end; `long` lets a message line grow to the message limit. */
  async #rawLine(what: string, long: boolean): Promise<Buffer> {
    const limit = long ? this.#maxMessageBytes + 2 : POP3_CLIENT_LIMITS.lineLength;
    for (;;) {
      const end = this.#buffer.indexOf(0x0a);
      if (end !== -1) {
        const line = this.#buffer.subarray(0, end + 1);
        this.#buffer = this.#buffer.subarray(end + 1);
        return line;
      }
      if (this.#buffer.length > limit) throw new Pop3ClientError(`${this.#where}: ${what}: a line longer than ${limit} octets`);
      if (this.#error) throw new Pop3ClientError(`${this.#error.message} (during ${what})`);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#wake = undefined;
          this.#error ??= new Pop3ClientError(`${this.#where}: no reply to ${what} within ${this.#timeoutMs / 1000} s`);
          this.#socket.destroy();
          reject(this.#error);
        }, this.#timeoutMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** "host:port" or "[v6]:port". */
export function parseServer(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : 0;
  if (!match || port < 1 || port > 65535) throw new Pop3ClientError(`"${text}" is not host:port (for example pop.example.net:110)`);
  return { host: match[1] ?? match[2], port };
}
