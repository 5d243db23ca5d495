import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

// The chaos suite's own client: a socket read as CRLF lines, nothing of popgate imported, so
// it measures what any client sees.

export class Wire {
  readonly socket: Socket | TLSSocket;
  #buffer: Buffer = Buffer.alloc(0);
  #waiter: (() => void) | undefined;
  closed = false;

  constructor(socket: Socket | TLSSocket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  /** A connection from `localAddress` (127.x.y.z stands for many clients), in TLS from the first byte with `tls`. */
  static async connect(port: number, options: { tls?: boolean; localAddress?: string; timeoutMs?: number } = {}): Promise<Wire> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const plain = netConnect({ port, host: '127.0.0.1', localAddress: options.localAddress });
    await ready(plain, 'connect', timeoutMs);
    if (!options.tls) return new Wire(plain);
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
    await ready(secure, 'secureConnect', timeoutMs);
    return new Wire(secure);
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.();
  }

  async #more(timeoutMs: number): Promise<void> {
    if (this.closed) throw new Error(`connection closed; pending: ${JSON.stringify(this.#buffer.toString('latin1').slice(0, 200))}`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply in time')), timeoutMs);
      this.#waiter = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** One line without its CRLF. */
  async line(timeoutMs = 30_000): Promise<string> {
    for (;;) {
      const at = this.#buffer.indexOf('\r\n');
      if (at !== -1) {
        const line = this.#buffer.toString('latin1', 0, at);
        this.#buffer = this.#buffer.subarray(at + 2);
        return line;
      }
      await this.#more(timeoutMs);
    }
  }

  /** An SMTP reply (RFC 5321 §4.2: "250-" lines, then "250 "), its lines joined by newlines. */
  async smtpReply(timeoutMs?: number): Promise<string> {
    const lines = [await this.line(timeoutMs)];
    while (lines.at(-1)![3] === '-') lines.push(await this.line(timeoutMs));
    return lines.join('\n');
  }

  /** A POP3 multi-line body, up to and without ".\r\n" (dot-stuffing left as sent). */
  async multiline(timeoutMs = 30_000): Promise<Buffer> {
    for (;;) {
      const at = this.#buffer.subarray(0, 3).equals(Buffer.from('.\r\n')) ? 0 : this.#buffer.indexOf('\r\n.\r\n');
      if (at !== -1) {
        const end = at === 0 ? 0 : at + 2;
        const body = Buffer.from(this.#buffer.subarray(0, end));
        this.#buffer = this.#buffer.subarray(end + 3);
        return body;
      }
      await this.#more(timeoutMs);
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async smtp(command: string, timeoutMs?: number): Promise<string> {
    this.write(`${command}\r\n`);
    return this.smtpReply(timeoutMs);
  }

  async pop3(command: string, timeoutMs?: number): Promise<string> {
    this.write(`${command}\r\n`);
    return this.line(timeoutMs);
  }

  /** Resolves once the server has closed the connection (or after `timeoutMs`, to false). */
  waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onClose = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.socket.off('close', onClose);
        resolve(false);
      }, timeoutMs);
      this.socket.once('close', onClose);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export const plainAuth = (user: string, password: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`;

function ready(socket: Socket, event: 'connect' | 'secureConnect', timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no ${event} in time`));
    }, timeoutMs);
    socket.once(event, () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}
