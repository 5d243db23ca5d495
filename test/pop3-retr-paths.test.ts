import assert from 'node:assert/strict';
import { appendFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// RETR and TOP read a message one of several ways: a small CRLF-clean file with no line to
// stuff goes out in one write, other small files are encoded from one buffer, large ones are
// streamed. Whatever the way, the wire carries the same bytes (RFC 1939 §3: CRLF line ends,
// leading dots doubled, ".\r\n" at the end), and a file another program removed or changed
// after the listing gets a clear answer without breaking the session.

let server: TestServer;
const USER = 'paths@example.test';

/** What RFC 1939 §3 puts on the wire for a file, without the terminator. */
function onTheWire(file: string): string {
  if (file === '') return '';
  const lines = (file.endsWith('\n') ? file.slice(0, -1) : file).split('\n').map((line) => line.replace(/\r$/, ''));
  return lines.map((line) => (line.startsWith('.') ? `.${line}` : line)).join('\r\n') + '\r\n';
}

/** RFC 1939 §7: the header, the blank line, then at most `lines` lines of the body. */
function topOnTheWire(file: string, lines: number): string {
  const wire = onTheWire(file).split('\r\n').slice(0, -1);
  const blank = wire.indexOf('');
  const keep = blank === -1 ? wire.length : Math.min(wire.length, blank + 1 + lines);
  return wire.slice(0, keep).map((line) => `${line}\r\n`).join('');
}

function bigMessage(size: number, lineEnd: string): string {
  let text = `Subject: big\r\n\r\n`;
  for (let i = 0; text.length < size; i++) text += `${i % 7 === 0 ? '.' : ''}line ${i} ${'y'.repeat(i % 90)}${lineEnd}`;
  return text;
}

/** `text` padded with a last line of "z"s to exactly `size` octets (CRLF at the end). */
function exactly(size: number, text: string): string {
  const padding = size - text.length - 2;
  if (padding < 0) throw new Error('text too long');
  return `${text}${'z'.repeat(padding)}\r\n`;
}

const cases: { name: string; file: string }[] = [
  { name: 'small, CRLF, nothing to stuff', file: 'Subject: plain\r\n\r\nHello.\r\n' },
  { name: 'small, CRLF, dots to stuff', file: '.Subject: dots\r\n\r\n.\r\n..x\r\n' },
  { name: 'small, LF only', file: 'Subject: lf\n\n.dot\nplain\n' },
  { name: 'small, mixed and unterminated', file: 'Subject: mixed\r\n\nline\r\n.last' },
  { name: 'empty', file: '' },
  { name: 'every line a dot, as long as a buffer holds', file: '.\r\n'.repeat(Math.floor((128 * 1024) / 3)) },
  { name: 'exactly as large as a buffer holds (128 KiB), dots to stuff', file: exactly(128 * 1024, bigMessage(120 * 1024, '\r\n')) },
  { name: 'one octet too large for a buffer', file: exactly(128 * 1024 + 1, bigMessage(120 * 1024, '\r\n')) },
  { name: 'large, CRLF', file: bigMessage(600 * 1024, '\r\n') },
  { name: 'large, LF only', file: bigMessage(600 * 1024, '\n') },
];

// Delivered through the store (names carry sizes), then foreign copies without sizes in the
// name, as another delivery agent would leave them.
before(async () => {
  // The encoding of the files as they are: the client workarounds, which add to messages that
  // are all header, have their own test (pop3-client-workarounds.test.ts).
  server = await startTestServer({ pop3: { client_workarounds: [] } });
  await server.addUser(USER);
  for (const { file } of cases) await server.deliver(USER, file);
  const cur = join(server.dir, 'mail', 'example.test', 'paths', 'cur');
  cases.forEach(({ file }, i) => writeFileSync(join(cur, `${1_900_000_000 + i}.M1P1Q${i}.elsewhere:2,`), file));
});
after(() => server.close());

/** A session logged in as `user`; the login reply must match `reply`. */
async function loggedIn(user = USER, reply = /^\+OK/): Promise<Pop3Client> {
  const client = await Pop3Client.connect(server.pop3Port);
  await client.line();
  assert.match(await client.login(user, PASSWORD), reply);
  return client;
}

test('RETR sends every kind of file as RFC 1939 puts it on the wire, with the size LIST gave', async () => {
  const client = await loggedIn();
  for (let n = 1; n <= cases.length * 2; n++) {
    const { name, file } = cases[(n - 1) % cases.length];
    const expected = onTheWire(file);
    const listed = await client.command(`LIST ${n}`);
    assert.equal(listed, `+OK ${n} ${Buffer.byteLength(expected.replace(/^\./gm, ''))}`, `${name}: LIST`);
    assert.match(await client.command(`RETR ${n}`), /^\+OK \d+ octets$/);
    assert.equal((await client.multilineRaw()).toString('latin1'), expected, `${name} (message ${n})`);
  }
  assert.match(await client.command('QUIT'), /^\+OK/);
});

test('TOP sends the header, the blank line and the body lines asked for, from any kind of file', async () => {
  const client = await loggedIn();
  for (let n = 1; n <= cases.length; n++) {
    const { name, file } = cases[n - 1];
    assert.match(await client.command(`TOP ${n} 3`), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString('latin1'), topOnTheWire(file, 3), name);
  }
  assert.match(await client.command('QUIT'), /^\+OK/);
});

test('a message removed by another program after the listing gets -ERR, and the session goes on', async () => {
  const user = 'vanishing@example.test';
  await server.addUser(user);
  const files = [
    await server.deliver(user, 'Subject: gone\r\n\r\nsoon gone\r\n'),
    await server.deliver(user, bigMessage(300 * 1024, '\r\n')),
    await server.deliver(user, 'Subject: stays\r\n\r\nhere\r\n'),
  ];
  const client = await loggedIn(user, /^\+OK Logged in, 3 messages/);
  // The login claimed them from new/ into cur/, with an empty info part.
  const cur = join(server.dir, 'mail', 'example.test', 'vanishing', 'cur');
  unlinkSync(join(cur, `${files[0]}:2,`));
  unlinkSync(join(cur, `${files[1]}:2,`));
  assert.equal(await client.command('RETR 1'), '-ERR [SYS/PERM] This message was removed by another program');
  assert.equal(await client.command('RETR 2'), '-ERR [SYS/PERM] This message was removed by another program');
  assert.match(await client.command('RETR 3'), /^\+OK/);
  assert.equal((await client.multilineRaw()).toString('latin1'), 'Subject: stays\r\n\r\nhere\r\n');
  assert.match(await client.command('QUIT'), /^\+OK/);
});

test('a message another program made longer after the listing is sent as it is now, well formed', async () => {
  const user = 'growing@example.test';
  await server.addUser(user);
  const files = [await server.deliver(user, 'Subject: grows\r\n\r\nfirst\r\n'), await server.deliver(user, 'Subject: grows a lot\r\n\r\nfirst\r\n')];
  const client = await loggedIn(user, /^\+OK Logged in, 2 messages/);
  const cur = join(server.dir, 'mail', 'example.test', 'growing', 'cur');
  appendFileSync(join(cur, `${files[0]}:2,`), '.added\r\n');
  const added = bigMessage(200 * 1024, '\n');
  appendFileSync(join(cur, `${files[1]}:2,`), added);
  assert.match(await client.command('RETR 1'), /^\+OK/);
  assert.equal((await client.multilineRaw()).toString('latin1'), 'Subject: grows\r\n\r\nfirst\r\n..added\r\n');
  assert.match(await client.command('RETR 2'), /^\+OK/);
  assert.equal((await client.multilineRaw()).toString('latin1'), onTheWire(`Subject: grows a lot\r\n\r\nfirst\r\n${added}`));
  assert.match(await client.command('QUIT'), /^\+OK/);
});

test('random CRLF messages with random dot lines come out stuffed exactly', async () => {
  const user = 'random@example.test';
  await server.addUser(user);
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const files: string[] = [];
  for (let i = 0; i < 150; i++) {
    let file = '';
    const lines = Math.floor(random() * 400);
    for (let l = 0; l < lines; l++) {
      const dots = random() < 0.3 ? '.'.repeat(1 + Math.floor(random() * 3)) : '';
      file += `${dots}${'abc. \t'.repeat(Math.floor(random() * 12))}\r\n`;
    }
    files.push(file);
    await server.deliver(user, file);
  }
  const client = await loggedIn(user);
  client.write(files.map((_, i) => `RETR ${i + 1}\r\n`).join(''));
  for (let i = 0; i < files.length; i++) {
    assert.match(await client.line(), /^\+OK \d+ octets$/);
    assert.equal((await client.multilineRaw()).toString('latin1'), onTheWire(files[i]), `message ${i + 1}`);
  }
  assert.match(await client.command('QUIT'), /^\+OK/);
});
