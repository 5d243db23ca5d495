import { Wire, plainAuth } from './wire.ts';

// Fuzzing from a grammar of valid sessions: each session is what a real client would send
// (SMTP: EHLO, AUTH, MAIL, RCPT, DATA with a body, RSET, QUIT; POP3: USER/PASS or AUTH, STAT,
// LIST, UIDL, RETR, TOP, DELE, QUIT), and each line is then mutated with some probability:
// bytes flipped, NUL/CR/LF/8-bit bytes put in, cut short, doubled, far too long, a random
// verb, absurd numbers. Sessions are written pipelined with backpressure; replies are read and
// counted, not checked (the point is that the server stays up, answers and stays bounded).
// A seeded generator makes a run reproducible.

export type Protocol = 'smtp' | 'submission' | 'pop3';

/** xorshift32: small, fast, seeded. */
export class Random {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state / 0x1_0000_0000;
  }
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

const USERS = ['alice@chaos.test', 'bob@chaos.test', 'nobody@chaos.test', 'alice', ''];
const VERBS = ['EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'NOOP', 'VRFY', 'EXPN', 'HELP', 'AUTH', 'QUIT', 'USER', 'PASS', 'APOP', 'STAT', 'LIST', 'UIDL', 'RETR', 'TOP', 'DELE', 'CAPA', 'BDAT', 'XCLIENT', 'PROXY', 'STARTTLS', 'STLS'];
const ODD_BYTES = [0x00, 0x0d, 0x0a, 0x2e, 0x80, 0xff, 0x1b, 0x7f, 0x20, 0x3a, 0x3c, 0x3e, 0x40, 0x25, 0x21];

function smtpSession(random: Random, protocol: Protocol, password: string): string[] {
  const lines = [random.int(4) === 0 ? 'HELO fuzz.example' : 'EHLO fuzz.example'];
  if (protocol === 'submission' || random.int(8) === 0) lines.push(plainAuth(random.pick(USERS), random.int(3) === 0 ? 'wrong' : password));
  const transactions = 1 + random.int(3);
  for (let t = 0; t < transactions; t++) {
    lines.push(`MAIL FROM:<${random.pick(['sender@remote.example', 'alice@chaos.test', '', 'a@[127.0.0.1]'])}>${random.int(4) === 0 ? ` SIZE=${random.int(100000)}` : ''}`);
    const recipients = 1 + random.int(3);
    for (let r = 0; r < recipients; r++) lines.push(`RCPT TO:<${random.pick(['alice@chaos.test', 'bob@chaos.test', 'postmaster', 'x@remote.example', 'a%b@chaos.test', '@relay.example:c@d.example'])}>`);
    lines.push('DATA');
    lines.push('From: Fuzz <sender@remote.example>', 'To: alice@chaos.test', `Subject: fuzz ${random.int(1e9)}`, '');
    const body = random.int(12);
    for (let b = 0; b < body; b++) lines.push(random.pick(['Hello.', '.leading dot', '', 'a'.repeat(random.int(200)), '..', '=?utf-8?b?w6k=?=']));
    lines.push('.');
    if (random.int(3) === 0) lines.push(random.pick(['RSET', 'NOOP', 'VRFY alice', 'HELP']));
  }
  lines.push('QUIT');
  return lines;
}

function pop3Session(random: Random, password: string): string[] {
  const lines = random.int(5) === 0 ? ['CAPA'] : [];
  const user = random.pick(USERS);
  if (random.int(3) === 0) lines.push(`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`);
  else lines.push(`USER ${user}`, `PASS ${random.int(4) === 0 ? 'wrong' : password}`);
  const commands = random.int(12);
  for (let c = 0; c < commands; c++) {
    const n = 1 + random.int(5);
    lines.push(random.pick(['STAT', 'LIST', `LIST ${n}`, 'UIDL', `UIDL ${n}`, `RETR ${n}`, `TOP ${n} ${random.int(5)}`, `DELE ${n}`, 'RSET', 'NOOP']));
  }
  // Mostly RSET before QUIT: deleting everything would leave nothing to read.
  if (random.int(4) !== 0) lines.push('RSET');
  lines.push('QUIT');
  return lines;
}

/** A line changed in one of the ways a broken or hostile client changes it (or left alone). */
export function mutate(random: Random, line: string): Buffer {
  const bytes = Buffer.from(line, 'latin1');
  switch (random.int(14)) {
    case 0: {
      if (bytes.length === 0) return bytes;
      const copy = Buffer.from(bytes);
      copy[random.int(copy.length)] = random.int(256);
      return copy;
    }
    case 1: {
      const at = random.int(bytes.length + 1);
      return Buffer.concat([bytes.subarray(0, at), Buffer.from([random.pick(ODD_BYTES)]), bytes.subarray(at)]);
    }
    case 2:
      return bytes.subarray(0, random.int(bytes.length + 1));
    case 3:
      return Buffer.concat([bytes, bytes]);
    case 4:
      return Buffer.alloc(random.pick([600, 1100, 5000, 70_000]), random.pick([0x41, 0x20, 0x2e]));
    case 5:
      return Buffer.from(`${random.pick(VERBS)} ${line.slice(line.indexOf(' ') + 1)}`, 'latin1');
    case 6:
      return Buffer.from(line.replace(/\d+/g, () => random.pick(['0', '-1', '4294967296', '99999999999999999999', '1e9', '0x10'])), 'latin1');
    case 7:
      return Buffer.from(random.int(2) === 0 ? line.toLowerCase() : ` ${line}`, 'latin1');
    default:
      return bytes;
  }
}

/** How a line ends: mostly CRLF, sometimes a bare LF or a bare CR (smuggling attempts). */
function ending(random: Random): string {
  const r = random.int(40);
  return r === 0 ? '\n' : r === 1 ? '\r' : r === 2 ? '\r\r\n' : '\r\n';
}

export interface FuzzResult {
  lines: number;
  sessions: number;
  connections: number;
  replyOctets: number;
  /** Connections that could not be opened (refused, reset, timed out). */
  connectFailures: number;
}

/**
 * Sends at least `lines` fuzzed lines over `parallel` connections at a time, from the given
 * local addresses in turn, reconnecting whenever the server closes one.
 */
export async function fuzz(options: { protocol: Protocol; port: number; tls?: boolean; lines: number; parallel: number; seed: number; password: string; sources: string[] }): Promise<FuzzResult> {
  const result: FuzzResult = { lines: 0, sessions: 0, connections: 0, replyOctets: 0, connectFailures: 0 };
  let source = 0;
  const worker = async (index: number) => {
    const random = new Random(options.seed * 7919 + index);
    while (result.lines < options.lines) {
      let wire: Wire;
      try {
        wire = await Wire.connect(options.port, { tls: options.tls, localAddress: options.sources[source++ % options.sources.length] });
      } catch {
        result.connectFailures++;
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      result.connections++;
      wire.socket.on('data', (chunk: Buffer) => (result.replyOctets += chunk.length));
      // A few sessions per connection: the server may well close it after the first.
      for (let s = 0; s < 8 && !wire.closed && result.lines < options.lines; s++) {
        const session = options.protocol === 'pop3' ? pop3Session(random, options.password) : smtpSession(random, options.protocol, options.password);
        result.sessions++;
        for (const line of session) {
          if (wire.closed) break;
          const mutated = random.int(10) < 3 ? mutate(random, line) : Buffer.from(line, 'latin1');
          const more = wire.socket.write(Buffer.concat([mutated, Buffer.from(ending(random), 'latin1')]));
          result.lines++;
          if (!more) await new Promise<void>((resolve) => {
            const done = () => {
              wire.socket.off('drain', done);
              wire.socket.off('close', done);
              resolve();
            };
            wire.socket.once('drain', done);
            wire.socket.once('close', done);
          });
        }
      }
      // End cleanly where the session allows (a DATA left open is closed first), let the last
      // replies come, but never wait long on a server that holds the connection.
      if (!wire.closed) wire.socket.write(options.protocol === 'pop3' ? 'QUIT\r\n' : '\r\n.\r\nQUIT\r\n');
      await wire.waitClosed(1000);
      wire.close();
    }
  };
  await Promise.all(Array.from({ length: options.parallel }, (_, i) => worker(i)));
  return result;
}
