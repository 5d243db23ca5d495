import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

/**
 * A scripted POP3 client for tests: raw lines in, raw lines out, no interpretation, so tests
 * can say exactly what goes over the wire.
 */
export class Pop3Client {
  socket: Socket | TLSSocket;
  #buffer = Buffer.alloc(0);
  #waiters: (() => void)[] = [];
  closed = false;

  private constructor(socket: Socket | TLSSocket) {
    this.socket = socket;
    this.#listen(socket);
  }

  static async connect(port: number, options: { tls?: boolean; host?: string; localAddress?: string } = {}): Promise<Pop3Client> {
    const host = options.host ?? '127.0.0.1';
    const socket = options.tls
      ? tlsConnect({ socket: netConnect({ host, port, localAddress: options.localAddress }), rejectUnauthorized: false })
      : netConnect({ host, port, localAddress: options.localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once(options.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    return new Pop3Client(socket);
  }

  #listen(socket: Socket | TLSSocket): void {
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      this.#wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #wait(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for server; buffered: ${JSON.stringify(this.#buffer.toString('latin1').slice(0, 200))}`)), timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** One line without its CRLF; rejects if the server closes first. */
  async line(timeoutMs = 5000): Promise<string> {
    for (;;) {
      const index = this.#buffer.indexOf('\r\n');
      if (index !== -1) {
        const line = this.#buffer.toString('utf8', 0, index);
        this.#buffer = this.#buffer.subarray(index + 2);
        return line;
      }
      if (this.closed) throw new Error(`connection closed; buffered: ${JSON.stringify(this.#buffer.toString('latin1'))}`);
      await this.#wait(timeoutMs);
    }
  }

  /** Raw bytes of a multi-line response body up to and excluding the terminating ".\r\n". */
  async multilineRaw(timeoutMs = 10000): Promise<Buffer> {
    for (;;) {
      const terminator = this.#buffer[0] === 0x2e && this.#buffer[1] === 0x0d && this.#buffer[2] === 0x0a ? 0 : this.#find();
      if (terminator !== -1) {
        const body = this.#buffer.subarray(0, terminator);
        this.#buffer = this.#buffer.subarray(terminator + 3);
        return Buffer.from(body);
      }
      if (this.closed) throw new Error('connection closed in a multi-line response');
      await this.#wait(timeoutMs);
    }
  }

  #find(): number {
    const index = this.#buffer.indexOf('\r\n.\r\n');
    return index === -1 ? -1 : index + 2;
  }

  /** Sends a command, returns the status line. */
  async command(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.line();
  }

  /** Sends a command expecting a multi-line answer; returns status and unstuffed lines. */
  async multiline(line: string): Promise<{ status: string; lines: string[] }> {
    const status = await this.command(line);
    if (!status.startsWith('+OK')) return { status, lines: [] };
    const raw = (await this.multilineRaw()).toString('utf8');
    const lines = raw === '' ? [] : raw.slice(0, -2).split('\r\n').map((l) => (l.startsWith('.') ? l.slice(1) : l));
    return { status, lines };
  }

  async login(user: string, password: string): Promise<string> {
    const ok = await this.command(`USER ${user}`);
    if (!ok.startsWith('+OK')) return ok;
    return this.command(`PASS ${password}`);
  }

  /** STLS then a TLS handshake on the same connection. */
  async startTls(): Promise<string> {
    const status = await this.command('STLS');
    if (!status.startsWith('+OK')) return status;
    const plain = this.socket as Socket;
    plain.removeAllListeners('data');
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.#buffer = Buffer.alloc(0);
    this.#listen(secure);
    return status;
  }

  /** Resolves when the server has closed the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    while (!this.closed) await this.#wait(timeoutMs);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** One POP3 login over a real socket, as a mail program makes it (then QUIT): the server's answer to PASS. */
export async function pop3LoginAnswer(port: number, user: string, password: string, localAddress?: string): Promise<string> {
  const client = await Pop3Client.connect(port, { localAddress });
  try {
    await client.line();
    const answer = await client.login(user, password);
    await client.command('QUIT').catch(() => {});
    return answer;
  } finally {
    client.close();
  }
}
