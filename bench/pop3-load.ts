import { connect as netConnect, type Socket } from 'node:net';
import { Samples } from './stats.ts';

// A POP3 load generator that works against any POP3 server on host:port (popgate or another),
// written so the client costs as little CPU as possible next to the server it measures:
// one incremental parser over the socket's Buffers per connection, message bodies scanned
// with Buffer.indexOf for their dots (the dot-stuffing and the terminator are dots at line
// starts) and never split into lines or copied, TCP_NODELAY on.
//
// Every RETR is checked: the octets received, with the dot-stuffing undone and the
// terminating ".\r\n" left out, must equal the size the server gave in LIST. A benchmark that
// reports speed for a broken transfer is worse than none, so any mismatch fails the run.

export interface Endpoint {
  host: string;
  port: number;
}

/** Where a workload connects: one server, or several (the nodes of a cluster) taken in turn by the clients. */
export type Endpoints = Endpoint | readonly Endpoint[];

/** The endpoint of client number `client` (0, 1, ...): the clients are spread evenly over several. */
export function endpointOf(endpoints: Endpoints, client: number): Endpoint {
  if (!Array.isArray(endpoints)) return endpoints as Endpoint;
  if (endpoints.length === 0) throw new Error('no endpoint to connect to');
  return endpoints[client % endpoints.length];
}

export interface Reply {
  /** The status line without CRLF ("+OK ..." or "-ERR ..."). */
  status: string;
  ok: boolean;
  /** Multi-line replies: octets of the body after undoing dot-stuffing, without ".\r\n". */
  octets: number;
  /** Multi-line replies: octets on the wire after the status line, stuffing and ".\r\n" included. */
  wireOctets: number;
  /** Multi-line replies sent with `collect`: the body as on the wire, without ".\r\n". */
  body?: Buffer;
  /** Milliseconds from writing the command (or from connecting, for the greeting) to the end of the reply. */
  latencyMs: number;
}

export class Pop3LoadError extends Error {}

type Callback = (error: Error | undefined, reply: Reply | undefined) => void;

interface Pending {
  command: string;
  multiline: boolean;
  collect: boolean;
  sentAt: number;
  callback: Callback;
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const MAX_STATUS_LINE = 64 * 1024;
/** Each connection's read buffer (reused for every read). */
const READ_BUFFER = 64 * 1024;

// Body scanner states: where the bytes seen so far leave us relative to line starts.
const MID = 0; // inside a line
const CR_SEEN = 1; // the last byte was CR
const LINE_START = 2; // the last bytes were CRLF (or the status line just ended)
const DOT_SEEN = 3; // a line began with "."
const DOT_CR_SEEN = 4; // a line began with ".\r": the terminator unless LF is missing

/** One POP3 connection; replies are matched to commands in order, so commands may be pipelined. */
export class Pop3Connection {
  readonly socket: Socket;
  readonly #queue: Pending[] = [];
  #failed: Error | undefined;

  // Status line being assembled across chunks (rare: status lines are short).
  #carry: Buffer | undefined;
  // Multi-line body state.
  #inBody = false;
  #scan = LINE_START;
  #wireBytes = 0;
  #stuffed = 0;
  #status = '';
  #pieces: Buffer[] | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('error', (error) => this.#fail(error));
    socket.on('close', () => this.#fail(new Pop3LoadError('connection closed by the server')));
  }

  /**
   * Connects and waits for the greeting; rejects unless it is "+OK". `localAddress` picks the
   * source address (e.g. 127.0.0.50 for a client that holds no POP-before-SMTP grant yet).
   */
  static connect(endpoint: Endpoint, timeoutMs = 30_000, localAddress?: string): Promise<{ connection: Pop3Connection; greeting: Reply }> {
    const startedAt = performance.now();
    // Reads land in one buffer per connection, reused (`onread`), instead of a new Buffer and a
    // 'data' event per read: the parser looks at each read once and keeps no reference to it
    // (what it keeps, it copies), which takes about a third off the generator's CPU per RETR.
    let connection: Pop3Connection | undefined;
    const socket = netConnect({
      host: endpoint.host,
      port: endpoint.port,
      noDelay: true,
      localAddress,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER),
        callback: (read: number, buffer: Uint8Array) => {
          connection!.#feed((buffer as Buffer).subarray(0, read));
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    socket.setTimeout(timeoutMs, () => socket.destroy(new Pop3LoadError(`no answer from ${endpoint.host}:${endpoint.port} for ${timeoutMs} ms`)));
    connection = new Pop3Connection(socket);
    return new Promise((resolve, reject) => {
      connection.#queue.push({
        command: '(greeting)',
        multiline: false,
        collect: false,
        sentAt: startedAt,
        callback: (error, reply) => {
          if (error) return reject(error);
          if (!reply!.ok) {
            connection.close();
            return reject(new Pop3LoadError(`greeting from ${endpoint.host}:${endpoint.port}: ${reply!.status}`));
          }
          resolve({ connection, greeting: reply! });
        },
      });
    });
  }

  /** Sends one command; the callback gets its reply. Several may be outstanding (pipelining). */
  send(command: string, multiline: boolean, callback: Callback, collect = false): void {
    if (this.#failed) return callback(this.#failed, undefined);
    this.#queue.push({ command, multiline, collect, sentAt: performance.now(), callback });
    this.socket.write(`${command}\r\n`);
  }

  /** A command with a one-line reply. */
  command(command: string): Promise<Reply> {
    return new Promise((resolve, reject) => this.send(command, false, (error, reply) => (error ? reject(error) : resolve(reply!))));
  }

  /** A command with a multi-line reply when "+OK" (LIST, UIDL, RETR, TOP, CAPA). */
  multiline(command: string, collect = false): Promise<Reply> {
    return new Promise((resolve, reject) => this.send(command, true, (error, reply) => (error ? reject(error) : resolve(reply!)), collect));
  }

  /** A command that must succeed. */
  async expectOk(command: string, multiline = false, collect = false): Promise<Reply> {
    const reply = multiline ? await this.multiline(command, collect) : await this.command(command);
    if (!reply.ok) throw new Pop3LoadError(`${redact(command)}: ${reply.status}`);
    return reply;
  }

  /** USER and PASS; throws unless both succeed. */
  async login(user: string, password: string): Promise<void> {
    await this.expectOk(`USER ${user}`);
    await this.expectOk(`PASS ${password}`);
  }

  /** QUIT, then closes the socket without waiting for the server's FIN. */
  async quit(): Promise<Reply> {
    try {
      return await this.expectOk('QUIT');
    } finally {
      this.close();
    }
  }

  close(): void {
    this.#failed ??= new Pop3LoadError('connection closed by the client');
    this.socket.destroy();
  }

  #fail(error: Error): void {
    if (this.#failed && this.#queue.length === 0) return;
    this.#failed ??= error;
    const waiting = this.#queue.splice(0);
    for (const pending of waiting) pending.callback(this.#failed, undefined);
    this.socket.destroy();
  }

  #protocolError(message: string): void {
    this.#fail(new Pop3LoadError(message));
  }

  #feed(chunk: Buffer): void {
    let offset = 0;
    const length = chunk.length;
    while (offset < length) {
      const pending = this.#queue[0];
      if (!pending) return this.#protocolError(`unexpected data from the server: ${JSON.stringify(chunk.toString('latin1', offset, offset + 80))}`);
      if (this.#inBody) {
        const end = this.#scanBody(chunk, offset);
        if (end === -2) return; // protocol error already reported
        if (end === -1) {
          if (pending.collect) this.#pieces!.push(Buffer.from(chunk.subarray(offset)));
          return;
        }
        if (pending.collect) this.#pieces!.push(Buffer.from(chunk.subarray(offset, end)));
        offset = end;
        this.#finish(pending);
        continue;
      }
      // Status line.
      const lf = chunk.indexOf(LF, offset);
      if (lf === -1) {
        this.#carry = this.#carry ? Buffer.concat([this.#carry, chunk.subarray(offset)]) : Buffer.from(chunk.subarray(offset));
        if (this.#carry.length > MAX_STATUS_LINE) return this.#protocolError('status line too long');
        return;
      }
      let status: string;
      if (this.#carry) {
        const line = Buffer.concat([this.#carry, chunk.subarray(offset, lf + 1)]);
        this.#carry = undefined;
        status = statusLine(line, 0, line.length - 1);
      } else {
        status = statusLine(chunk, offset, lf); // read in place: no Buffer made for the line
      }
      offset = lf + 1;
      const ok = status.startsWith('+OK');
      if (!ok && !status.startsWith('-ERR')) return this.#protocolError(`${redact(pending.command)}: not a POP3 status line: ${JSON.stringify(status.slice(0, 200))}`);
      this.#status = status;
      if (ok && pending.multiline) {
        this.#inBody = true;
        this.#scan = LINE_START;
        this.#wireBytes = 0;
        this.#stuffed = 0;
        this.#pieces = pending.collect ? [] : undefined;
        continue;
      }
      this.#queue.shift();
      pending.callback(undefined, { status, ok, octets: 0, wireOctets: 0, latencyMs: performance.now() - pending.sentAt });
    }
  }

  #finish(pending: Pending): void {
    this.#queue.shift();
    this.#inBody = false;
    // The wire bytes include the stuffed dots and the ".\r\n" terminator.
    const octets = this.#wireBytes - 3 - this.#stuffed;
    let body: Buffer | undefined;
    if (this.#pieces) {
      const all = this.#pieces.length === 1 ? this.#pieces[0] : Buffer.concat(this.#pieces);
      body = all.subarray(0, all.length - 3);
      this.#pieces = undefined;
    }
    pending.callback(undefined, { status: this.#status, ok: true, octets, wireOctets: this.#wireBytes, body, latencyMs: performance.now() - pending.sentAt });
  }

  /**
   * Scans body bytes from `start`: returns the index just past the terminating ".\r\n", -1 when
   * the chunk ends first, -2 on a protocol error. Only dots are looked at: each one found with
   * indexOf (a memchr) and kept when CRLF comes before it, i.e. when it starts a line. Text has
   * far fewer dots than line ends (a 10 KB message of the benchmark: about 20 against 170), and
   * searching "\r\n." stops at every CR, so this takes about half the time of that search.
   */
  #scanBody(chunk: Buffer, start: number): number {
    const length = chunk.length;
    let i = start;
    let state = this.#scan;
    while (i < length) {
      switch (state) {
        case LINE_START:
          if (chunk[i] === DOT) {
            state = DOT_SEEN;
            i++;
          } else {
            state = MID;
          }
          break;
        case DOT_SEEN: {
          const byte = chunk[i];
          if (byte === DOT) {
            this.#stuffed++; // ".." at a line start is one "." of the message
            state = MID;
            i++;
          } else if (byte === CR) {
            state = DOT_CR_SEEN;
            i++;
          } else {
            this.#protocolError(`a line of the reply starts with an unstuffed "." (RFC 1939 §3): ${JSON.stringify(chunk.toString('latin1', i - 1, i + 40))}`);
            return -2;
          }
          break;
        }
        case DOT_CR_SEEN:
          if (chunk[i] !== LF) {
            this.#protocolError('a line of the reply is "." followed by CR without LF');
            return -2;
          }
          i++;
          this.#wireBytes += i - start;
          this.#scan = LINE_START;
          return i;
        case CR_SEEN:
          if (chunk[i] === LF) {
            state = LINE_START;
            i++;
          } else {
            state = MID;
          }
          break;
        default: {
          // MID: the byte at i does not start a line. A dot further on that does has its CRLF
          // in this chunk: a CR or CRLF at the end of the previous chunk would have left the
          // state at CR_SEEN or LINE_START, not MID (and chunk[-1], chunk[-2] are undefined).
          let dot = chunk.indexOf(DOT, i);
          while (dot !== -1 && !(chunk[dot - 1] === LF && chunk[dot - 2] === CR)) dot = chunk.indexOf(DOT, dot + 1);
          if (dot !== -1) {
            state = DOT_SEEN;
            i = dot + 1;
            break;
          }
          // No line start with a dot in the rest of the chunk; remember a CR or CRLF at its end.
          if (chunk[length - 1] === CR) state = CR_SEEN;
          else if (length - 2 >= i && chunk[length - 2] === CR && chunk[length - 1] === LF) state = LINE_START;
          else state = MID;
          i = length;
        }
      }
    }
    this.#scan = state;
    this.#wireBytes += length - start;
    return -1;
  }
}

/** The status line from `start` to the LF at `lf`, without its CRLF (or bare LF). */
function statusLine(buffer: Buffer, start: number, lf: number): string {
  return buffer.toString('latin1', start, lf > start && buffer[lf - 1] === CR ? lf - 1 : lf);
}

/** Hides the password in error messages. */
function redact(command: string): string {
  return /^PASS /i.test(command) ? 'PASS ********' : command;
}

// --- workloads ---

export interface LoginOptions {
  endpoint: Endpoints;
  /** One account per client (client i uses users[i % users.length]). */
  users: string[];
  password: string;
  clients: number;
  /** Logins in total, spread evenly over the clients. */
  total: number;
}

export interface SessionResult {
  clients: number;
  /** Sessions completed (logins, for runLogins). */
  sessions: number;
  elapsedMs: number;
  perSecond: number;
  /** Per session: from connecting to the answer to QUIT. */
  latency: Samples;
}

/** Connect, greeting, USER/PASS, QUIT, over and over: each client in a loop, clients in parallel. */
export async function runLogins(options: LoginOptions): Promise<SessionResult> {
  const latency = new Samples(options.total);
  const startedAt = performance.now();
  await Promise.all(
    Array.from({ length: options.clients }, async (_, client) => {
      const user = options.users[client % options.users.length];
      const count = Math.floor(options.total / options.clients) + (client < options.total % options.clients ? 1 : 0);
      for (let n = 0; n < count; n++) {
        const t0 = performance.now();
        const { connection } = await Pop3Connection.connect(endpointOf(options.endpoint, client));
        try {
          await connection.login(user, options.password);
          await connection.quit();
        } finally {
          connection.close();
        }
        latency.push(performance.now() - t0);
      }
    }),
  );
  const elapsedMs = performance.now() - startedAt;
  return { clients: options.clients, sessions: latency.length, elapsedMs, perSecond: (latency.length * 1000) / elapsedMs, latency };
}

/** Connect, greeting and QUIT without logging in: the cost of a session without the password hash. */
export async function runConnects(options: { endpoint: Endpoint; clients: number; total: number }): Promise<SessionResult> {
  const latency = new Samples(options.total);
  const startedAt = performance.now();
  await Promise.all(
    Array.from({ length: options.clients }, async (_, client) => {
      const count = Math.floor(options.total / options.clients) + (client < options.total % options.clients ? 1 : 0);
      for (let n = 0; n < count; n++) {
        const t0 = performance.now();
        const { connection } = await Pop3Connection.connect(options.endpoint);
        await connection.quit();
        latency.push(performance.now() - t0);
      }
    }),
  );
  const elapsedMs = performance.now() - startedAt;
  return { clients: options.clients, sessions: latency.length, elapsedMs, perSecond: (latency.length * 1000) / elapsedMs, latency };
}

export interface RetrOptions {
  /** Several: client i (mailbox users[i]) connects to the i-th, round robin. */
  endpoint: Endpoints;
  /** One mailbox per client: POP3 allows one session per maildrop (RFC 1939 §8). */
  users: string[];
  password: string;
  /** RETR commands sent ahead of the replies; 1 = no pipelining. */
  pipeline?: number;
  /** Retrieve at most this many messages per mailbox (default: all). */
  maxMessages?: number;
  /**
   * Called just before the first RETR goes out and as soon as the last reply is in: the timed
   * part, without the logins and listings before it (e.g. to read the server's CPU time).
   */
  timed?: { start(): void; end(): void };
}

export interface RetrResult {
  clients: number;
  pipeline: number;
  messages: number;
  /** Message octets received (dot-stuffing undone, terminators left out): the sum of the LIST sizes. */
  octets: number;
  /** Octets on the wire for the RETR replies, status lines not counted. */
  wireOctets: number;
  /** From the moment every client is logged in and has its listing to the last RETR answered. */
  elapsedMs: number;
  messagesPerSecond: number;
  /** 10^6 octets of message per second. */
  megabytesPerSecond: number;
  /** Per RETR: command written to last byte of the reply (with pipelining, includes the wait in line). */
  latency: Samples;
}

interface Prepared {
  connection: Pop3Connection;
  user: string;
  sizes: number[];
}

/**
 * Each client: login, STAT, LIST, UIDL, then (once all clients are ready) RETR of every
 * message, checking each one's octets against LIST, then QUIT. Nothing is deleted, so the
 * run can be repeated.
 */
export async function runRetr(options: RetrOptions): Promise<RetrResult> {
  const depth = Math.max(1, Math.floor(options.pipeline ?? 1));
  const prepared: Prepared[] = [];
  try {
    // Sessions are set up in parallel; a failure closes the ones already open.
    const settled = await Promise.allSettled(options.users.map((user, client) => prepare(endpointOf(options.endpoint, client), user, options.password, options.maxMessages)));
    for (const result of settled) if (result.status === 'fulfilled') prepared.push(result.value);
    const failure = settled.find((result) => result.status === 'rejected');
    if (failure) throw (failure as PromiseRejectedResult).reason;

    const totalMessages = prepared.reduce((sum, p) => sum + p.sizes.length, 0);
    const latency = new Samples(totalMessages);
    let octets = 0;
    let wireOctets = 0;
    options.timed?.start();
    const startedAt = performance.now();
    await Promise.all(
      prepared.map(
        ({ connection, user, sizes }) =>
          new Promise<void>((resolve, reject) => {
            const count = sizes.length;
            if (count === 0) return resolve();
            let sent = 0;
            let answered = 0;
            let failed = false;
            // One callback for all of this client's replies, rather than a closure per RETR:
            // replies come in the order of the commands, so the n-th reply is RETR n's.
            const onReply: Callback = (error, reply) => {
              if (failed) return;
              const number = ++answered;
              if (error || !reply!.ok || reply!.octets !== sizes[number - 1]) {
                failed = true;
                const reason = error ? error.message : !reply!.ok ? reply!.status : `received ${reply!.octets} octets, LIST said ${sizes[number - 1]}`;
                return reject(new Pop3LoadError(`${user}: RETR ${number}: ${reason}`));
              }
              latency.push(reply!.latencyMs);
              octets += reply!.octets;
              wireOctets += reply!.wireOctets;
              if (sent < count) sendNext();
              if (answered === count) resolve();
            };
            const sendNext = () => connection.send(`RETR ${++sent}`, true, onReply);
            const initial = Math.min(depth, count);
            if (initial > 1) connection.socket.cork();
            for (let n = 0; n < initial; n++) sendNext();
            if (initial > 1) connection.socket.uncork();
          }),
      ),
    );
    const elapsedMs = performance.now() - startedAt;
    options.timed?.end();
    await Promise.all(prepared.map((p) => p.connection.quit()));
    return {
      clients: prepared.length,
      pipeline: depth,
      messages: latency.length,
      octets,
      wireOctets,
      elapsedMs,
      messagesPerSecond: (latency.length * 1000) / elapsedMs,
      megabytesPerSecond: octets / 1e6 / (elapsedMs / 1000),
      latency,
    };
  } finally {
    for (const p of prepared) p.connection.close();
  }
}

async function prepare(endpoint: Endpoint, user: string, password: string, maxMessages: number | undefined): Promise<Prepared> {
  const { connection } = await Pop3Connection.connect(endpoint);
  try {
    await connection.login(user, password);
    const stat = await connection.expectOk('STAT');
    const statMatch = /^\+OK (\d+) (\d+)/.exec(stat.status);
    if (!statMatch) throw new Pop3LoadError(`${user}: STAT: unexpected reply ${stat.status}`);
    const list = await connection.expectOk('LIST', true, true);
    const sizes: number[] = [];
    for (const line of list.body!.toString('latin1').split('\r\n')) {
      if (line === '') continue;
      const match = /^(\d+) (\d+)/.exec(line);
      if (!match) throw new Pop3LoadError(`${user}: LIST: unexpected line ${JSON.stringify(line)}`);
      // The benchmark sends RETR 1..n, so the listing must be the consecutive numbers 1..n.
      if (Number(match[1]) !== sizes.length + 1) throw new Pop3LoadError(`${user}: LIST: message numbers are not 1..n (deleted messages?)`);
      sizes.push(Number(match[2]));
    }
    if (sizes.length !== Number(statMatch[1])) throw new Pop3LoadError(`${user}: STAT says ${statMatch[1]} messages, LIST lists ${sizes.length}`);
    const uidl = await connection.expectOk('UIDL', true, true);
    const uidls = uidl.body!.toString('latin1').split('\r\n').filter((line) => line !== '').length;
    if (uidls !== sizes.length) throw new Pop3LoadError(`${user}: UIDL lists ${uidls} messages, LIST ${sizes.length}`);
    if (maxMessages !== undefined) sizes.length = Math.min(sizes.length, maxMessages);
    return { connection, user, sizes };
  } catch (error) {
    connection.close();
    throw error;
  }
}
