import { connect as netConnect, type Socket } from 'node:net';

/** A scripted SMTP client for tests: raw lines in, replies (possibly multi-line) out. */
export class SmtpClient {
  socket: Socket;
  #buffer = '';
  #waiters: (() => void)[] = [];
  closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  static async connect(port: number, localAddress?: string, host = '127.0.0.1'): Promise<SmtpClient> {
    const socket = netConnect({ host, port, localAddress });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    return new SmtpClient(socket);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** The next complete reply, all lines joined with "\n". */
  async reply(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(this.#buffer);
      if (match) {
        this.#buffer = this.#buffer.slice(match[0].length);
        return match[0].trimEnd().replace(/\r\n/g, '\n');
      }
      if (this.closed) throw new Error(`connection closed; buffered: ${JSON.stringify(this.#buffer)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout; buffered: ${JSON.stringify(this.#buffer)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async command(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.reply();
  }

  /** Greeting + EHLO. */
  async hello(name = 'client.example'): Promise<string> {
    await this.reply();
    return this.command(`EHLO ${name}`);
  }

  /** MAIL, RCPTs, DATA with a CRLF message; returns the final reply. */
  async send(from: string, to: string[], message: string): Promise<string> {
    const mail = await this.command(`MAIL FROM:<${from}>`);
    if (!mail.startsWith('250')) return mail;
    for (const rcpt of to) {
      const reply = await this.command(`RCPT TO:<${rcpt}>`);
      if (!reply.startsWith('250')) return reply;
    }
    const data = await this.command('DATA');
    if (!data.startsWith('354')) return data;
    const stuffed = message.replace(/^\./gm, '..');
    this.write(`${stuffed}${stuffed.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
    return this.reply();
  }

  close(): void {
    this.socket.destroy();
  }
}
