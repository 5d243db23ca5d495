import { writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Pop3Connection, Pop3LoadError, type Endpoint } from './pop3-load.ts';
import { PROSE_WORDS, prng } from './messages.ts';

// The large mailbox: a customer who never deletes, with 100,000 messages in one Maildir. How
// long do the login and STAT take (the server lists the maildrop before "+OK" to PASS), and how
// long UIDL (one line per message)?
//
// fillMaildir writes the messages straight into <maildir>/cur/ as files (setup, not delivery:
// no server, no fsync), named as popgate names its own deliveries so popgate trusts the
// ",S=" size in the name instead of reading each file.

/** Body lines to draw from: plain text of 60-72 characters, a few empty or starting with ".". */
function bodyLines(random: () => number): string[] {
  const word = () => PROSE_WORDS[Math.floor(random() * PROSE_WORDS.length)];
  const lines: string[] = [];
  for (let i = 0; i < 509; i++) {
    const kind = random();
    if (kind < 0.01) lines.push('.');
    else if (kind < 0.03) lines.push(`.${word()} ${word()} ${word()}`);
    else if (kind < 0.08) lines.push('');
    else {
      let line = word();
      while (line.length < 60 + random() * 12) line += ` ${word()}`;
      lines.push(line);
    }
  }
  return lines;
}

export interface FillOptions {
  /** Average message size in octets (default 2,048; each message is within ±10%). */
  size?: number;
  /** The host part of the file names (popgate's `hostname`). */
  hostname: string;
  /** Fixes the text of the messages and the random part of the names (default 1). */
  seed?: number;
  /** The seconds of the first name (default: now minus one second per 1,000 messages, so all are in the past). */
  startSeconds?: number;
}

/**
 * Writes `count` RFC 5322 messages (CRLF line ends) into `<maildir>/cur/`, named
 * `${seconds}.M${micros}P${pid}Q${counter}R${12 hex}.${hostname},S=${size}:2,` with the
 * seconds and microseconds increasing, so delivery order (popgate sorts by them) is the order
 * written. Creates cur/, new/ and tmp/ when missing. Returns the octets written.
 */
export async function fillMaildir(maildir: string, count: number, options: FillOptions): Promise<{ bytes: number }> {
  const size = options.size ?? 2048;
  const seed = options.seed ?? 1;
  const random = prng(seed);
  const lines = bodyLines(random);
  // As popgate writes them: "/" and ":" in the host part as octal escapes.
  const host = options.hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
  const startSeconds = options.startSeconds ?? Math.floor(Date.now() / 1000) - Math.ceil(count / 1000) - 1;
  // The random part of the names: deterministic for a seed.
  const unique = Buffer.alloc(6 * count);
  for (let i = 0; i < count; i++) {
    unique.writeUInt32LE(Math.floor(random() * 2 ** 32), i * 6);
    unique.writeUInt16LE(Math.floor(random() * 2 ** 16), i * 6 + 4);
  }

  await Promise.all(['cur', 'new', 'tmp'].map((sub) => mkdir(join(maildir, sub), { recursive: true, mode: 0o700 })));
  const cur = join(maildir, 'cur');

  const message = (index: number): Buffer => {
    const r = prng(seed * 1_000_003 + index);
    const date = new Date(Date.UTC(2024, 0, 1) + index * 37_000).toUTCString().replace('GMT', '+0000');
    const sender = `sender${index % 211}@example.net`;
    const head =
      `Return-Path: <${sender}>\r\n` +
      `Received: from client.example.net (client.example.net [192.0.2.${index % 250}])\r\n` +
      `\tby mx.example.net with ESMTP id ${index.toString(36)}; ${date}\r\n` +
      `From: Sender ${index % 211} <${sender}>\r\n` +
      `To: <customer@${options.hostname}>\r\n` +
      `Subject: ${lines[index % lines.length].slice(0, 30) || 'hello'} #${index}\r\n` +
      `Date: ${date}\r\n` +
      `Message-ID: <large.${seed}.${index}@example.net>\r\n` +
      'MIME-Version: 1.0\r\n' +
      'Content-Type: text/plain; charset=us-ascii\r\n' +
      '\r\n';
    const target = Math.round(size * (0.9 + r() * 0.2));
    let text = head;
    let line = Math.floor(r() * lines.length);
    while (text.length < target) {
      text += `${lines[line]}\r\n`;
      line = (line + 1 + Math.floor(r() * 7)) % lines.length;
    }
    return Buffer.from(text, 'latin1');
  };

  // Plain synchronous writes: faster here than parallel async ones (no thread-pool round trips).
  let bytes = 0;
  for (let index = 0; index < count; index++) {
    const data = message(index);
    bytes += data.length;
    const seconds = startSeconds + Math.floor(index / 1000);
    const micros = (index % 1000) * 1000;
    const name = `${seconds}.M${micros}P${process.pid}Q${index + 1}R${unique.toString('hex', index * 6, index * 6 + 6)}.${host},S=${data.length}:2,`;
    writeFileSync(join(cur, name), data);
  }
  return { bytes };
}

export interface LargeMailboxOptions {
  endpoint: Endpoint;
  user: string;
  password: string;
  runs: number;
  /** Also time UIDL (default true). */
  uidl?: boolean;
  /** STAT must report this many messages (default: whatever the first run saw, every run the same). */
  expectedMessages?: number;
  /** Inactivity timeout per reply (default 120,000 ms: listing a huge maildrop may take a while). */
  timeoutMs?: number;
}

export interface LargeMailboxResult {
  /** Per run: connect to the "+OK" to STAT, after the greeting, USER and PASS. */
  loginStatMs: number[];
  /** Per run: UIDL written to its last line read (empty without `uidl`). */
  uidlMs: number[];
  /** Per run: QUIT written to the server closing the connection (the maildrop lock is free then). */
  quitMs: number[];
  messages: number;
  octets: number;
}

/**
 * Per run, on a fresh connection: greeting, USER, PASS, STAT (timed together), then UIDL (all
 * lines read and counted), then QUIT; waits for the server to close the connection before the
 * next run, as it may hold the maildrop lock until UPDATE is over.
 */
export async function runLargeMailbox(options: LargeMailboxOptions): Promise<LargeMailboxResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const loginStatMs: number[] = [];
  const uidlMs: number[] = [];
  const quitMs: number[] = [];
  let messages = options.expectedMessages;
  let octets = 0;
  for (let run = 0; run < options.runs; run++) {
    const t0 = performance.now();
    const { connection } = await Pop3Connection.connect(options.endpoint, timeoutMs);
    try {
      await connection.login(options.user, options.password);
      const stat = await connection.expectOk('STAT');
      loginStatMs.push(performance.now() - t0);
      const match = /^\+OK (\d+) (\d+)/.exec(stat.status);
      if (!match) throw new Pop3LoadError(`STAT: unexpected reply ${stat.status}`);
      const count = Number(match[1]);
      if (messages !== undefined && count !== messages) throw new Pop3LoadError(`STAT: ${count} messages, expected ${messages}`);
      messages = count;
      octets = Number(match[2]);

      if (options.uidl ?? true) {
        const t1 = performance.now();
        const reply = await connection.expectOk('UIDL', true, true);
        uidlMs.push(performance.now() - t1);
        const lineCount = countLines(reply.body!);
        if (lineCount !== count) throw new Pop3LoadError(`UIDL: ${lineCount} lines, STAT said ${count} messages`);
        if (count > 0) {
          const body = reply.body!;
          const lastStart = body.lastIndexOf('\r\n', body.length - 3) + 2;
          const last = body.toString('latin1', lastStart, Math.min(body.length, lastStart + 80));
          if (!last.startsWith(`${count} `)) throw new Pop3LoadError(`UIDL: the last line is ${JSON.stringify(last.trim())}, not message ${count}`);
        }
      }

      const t2 = performance.now();
      const closed = closedBy(connection, timeoutMs);
      await connection.expectOk('QUIT');
      await closed;
      quitMs.push(performance.now() - t2);
    } finally {
      connection.close();
    }
  }
  return { loginStatMs, uidlMs, quitMs, messages: messages ?? 0, octets };
}

/** Lines (CRLF-terminated) in a multi-line reply body. */
function countLines(body: Buffer): number {
  let lines = 0;
  let at = body.indexOf('\r\n');
  while (at !== -1) {
    lines++;
    at = body.indexOf('\r\n', at + 2);
  }
  return lines;
}

/** Resolves once the server has closed the connection (its FIN, or a reset). */
function closedBy(connection: Pop3Connection, timeoutMs: number): Promise<void> {
  const socket = connection.socket;
  return new Promise((resolve, reject) => {
    if (socket.readableEnded || socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Pop3LoadError(`the server did not close the connection within ${timeoutMs / 1000} s of QUIT`)), timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    socket.once('end', done);
    socket.once('close', done);
  });
}
