// Test mail for the benchmarks: deterministic, realistic-looking messages (trace headers,
// prose, some lines beginning with "." so dot-stuffing is exercised).

/** A small deterministic PRNG (mulberry32), so every run delivers the same mail. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The words of the SMTP and large-mailbox generators' text (bench/smtp-load.ts, bench/mailbox-load.ts). */
export const PROSE_WORDS = (
  'the of and to in is that for it as was with be by on not this are or from at which but have an they you were ' +
  'mailbox server message delivery account invoice meeting report quarter budget schedule customer network ' +
  'please regards thanks attached following update review tomorrow morning office project deadline'
).split(' ');

const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her ' +
  'she there been one all we their has would when if so no will can more out up about into them some could time only new ' +
  'mailbox server message delivery account password invoice meeting report quarter budget schedule customer network ' +
  'please regards thanks attached following update review tomorrow morning afternoon office project deadline'
).split(' ');

/** One RFC 5322 message of about `size` octets: CRLF line ends, and some lines beginning with ".". */
export function makeMessage(random: () => number, index: number, to: string, size: number): Buffer {
  const word = () => WORDS[Math.floor(random() * WORDS.length)];
  const date = new Date(Date.UTC(2025, 0, 1) + index * 61_000).toUTCString().replace('GMT', '+0000');
  const lines = [
    `Return-Path: <sender${index % 97}@example.net>`,
    `Received: from client.example.net (client.example.net [192.0.2.${index % 250}])`,
    `\tby mx.example.net with ESMTPS id ${index.toString(36)}x${Math.floor(random() * 1e9).toString(36)}`,
    `\tfor <${to}>; ${date}`,
    `From: Sender ${index % 97} <sender${index % 97}@example.net>`,
    `To: <${to}>`,
    `Subject: ${word()} ${word()} ${word()} #${index}`,
    `Date: ${date}`,
    `Message-ID: <${index}.${Math.floor(random() * 1e12).toString(36)}@example.net>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
  ];
  let length = lines.reduce((sum, line) => sum + line.length + 2, 0);
  const target = size * (0.9 + random() * 0.2);
  while (length < target) {
    let line: string;
    const kind = random();
    if (kind < 0.005) line = '.'; // a line of one dot: stuffed to ".." on the wire
    else if (kind < 0.02) line = `.${word()} ${word()} ${word()}`; // leading dot, e.g. ".htaccess" or "...and so on"
    else if (kind < 0.07) line = '';
    else {
      line = word();
      while (line.length < 60 + random() * 12) line += ` ${word()}`;
    }
    lines.push(line);
    length += line.length + 2;
  }
  return Buffer.from(lines.join('\r\n') + '\r\n');
}

/**
 * The POP3 rows' mailboxes: `perMailbox` messages of about `size` octets (makeMessage) for each
 * of `users`, handed to `deliver` (popgate's own Maildir delivery, which names and syncs each
 * file as the server does) `parallel` at a time, so the disk stays busy. Mailbox-major order:
 * message numbers follow delivery order within each mailbox. Returns the octets delivered.
 */
export async function fillMailboxes(
  deliver: (user: string, message: Buffer) => Promise<unknown>,
  users: readonly string[],
  perMailbox: number,
  size: number,
  parallel = 32,
): Promise<number> {
  const total = users.length * perMailbox;
  let next = 0;
  let octets = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let n = next++; n < total; n = next++) {
        const mailbox = n % users.length;
        const index = Math.floor(n / users.length);
        const message = makeMessage(prng(index * 1000 + mailbox + 1), index, users[mailbox], size);
        octets += message.length;
        await deliver(users[mailbox], message);
      }
    }),
  );
  return octets;
}
