import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

// Small tools for tests that work below Pop3Client: reading lines from any stream (a raw
// socket, or a TLS socket the test set up itself), waiting for server-side state, and
// reproducible pseudo-random bytes.

/** CRLF lines from a plain or TLS stream; bytes not yet read as lines stay visible in `pending`. */
export class LineReader {
  readonly stream: Duplex;
  #buffer: Buffer = Buffer.alloc(0);
  #waiters: (() => void)[] = [];
  #onData = (chunk: Buffer) => {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    this.#wake();
  };
  #onClose = () => {
    this.closed = true;
    this.#wake();
  };
  closed = false;

  constructor(stream: Duplex) {
    this.stream = stream;
    stream.on('data', this.#onData);
    stream.on('close', this.#onClose);
    stream.on('error', () => {});
  }

  /** Stops reading, e.g. before handing the socket to tls.connect(). */
  detach(): void {
    this.stream.off('data', this.#onData);
    this.stream.off('close', this.#onClose);
  }

  /** Received bytes not consumed by line() yet. */
  get pending(): Buffer {
    return this.#buffer;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #wait(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for the server; buffered: ${JSON.stringify(this.#buffer.toString('latin1').slice(0, 200))}`)), timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  write(data: string | Buffer): void {
    this.stream.write(data);
  }

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

  async command(line: string): Promise<string> {
    this.write(`${line}\r\n`);
    return this.line();
  }

  /** The lines of a multi-line response after its status line, up to the "." terminator. */
  async multilineBody(): Promise<string[]> {
    const lines: string[] = [];
    for (let line = await this.line(); line !== '.'; line = await this.line()) lines.push(line);
    return lines;
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    while (!this.closed) await this.#wait(timeoutMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until `condition` holds; fails with `what` after `timeoutMs`. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** xorshift32 (Marsaglia): the same seed always gives the same bytes, so a failure can be replayed. */
export class Xorshift32 {
  #x: number;

  constructor(seed: number) {
    this.#x = seed | 0 || 1;
  }

  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x;
    return x >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return this.next() % n;
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = this.next() & 0xff;
    return out;
  }
}

/** Whether the server closed the socket without sending a single byte. */
export async function closedInSilence(socket: Socket, timeoutMs = 3000): Promise<boolean> {
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  if (!socket.destroyed && socket.readyState !== 'closed') {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server kept the connection open')), timeoutMs);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return received === 0;
}

/** A plain TCP connection to 127.0.0.1:`port` from `localAddress` (another 127.x address plays another client or a balancer). */
export async function connectFrom(port: number, localAddress: string): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}
