import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// pop3.client_workarounds (Dovecot's outlook-no-nuls and oe-ns-eoh), on by default: what goes
// out over a real socket, byte for byte, against what LIST, STAT and RETR announce, and the
// stored files left as they were.

const USER = 'old-clients@example.test';
const LARGE_HEADER = `X-Filler: ${'h'.repeat(900)}\r\n`.repeat(160); // 144 KiB: streamed, and longer than one head read
const MESSAGES: [string, Buffer][] = [
  ['headers only', Buffer.from('From: a@example.net\r\nSubject: no body\r\n')],
  ['headers only, last line unterminated', Buffer.from('From: a@example.net\r\nSubject: cut')],
  ['a NUL in the body', Buffer.from('From: a@example.net\r\nSubject: nul\r\n\r\nbefore\0after\r\n.dot line\r\n')],
  ['a plain message', Buffer.from('From: a@example.net\r\nSubject: plain\r\n\r\nHello.\r\n')],
  ['headers only, LF line ends', Buffer.from('From: a@example.net\nSubject: lf\n')],
  ['a large message with NULs', Buffer.from(`From: a@example.net\r\nSubject: large\r\n\r\n${'line with a \0 in it\r\n'.repeat(8000)}`)],
  ['a large header and nothing else', Buffer.from(`From: a@example.net\r\n${LARGE_HEADER}`)],
  ['empty', Buffer.alloc(0)],
];

/** The message as the client gets it: the multi-line body with dot-stuffing undone. */
function unstuff(wire: Buffer): Buffer {
  return Buffer.from(wire.toString('latin1').replace(/(^|\r\n)\.\./g, '$1.'), 'latin1');
}

async function login(server: TestServer): Promise<Pop3Client> {
  const client = await Pop3Client.connect(server.pop3Port);
  await client.line();
  assert.match(await client.login(USER, PASSWORD), /^\+OK Logged in/);
  return client;
}

describe('POP3 client workarounds, on by default', () => {
  let server: TestServer;
  const files: string[] = [];
  before(async () => {
    server = await startTestServer();
    await server.addUser(USER);
    for (const [, bytes] of MESSAGES) files.push(await server.deliver(USER, bytes));
  });
  after(() => server.close());

  test('every RETR sends exactly the octets LIST and its status line announce, and STAT adds them up', async () => {
    const client = await login(server);
    const listing = await client.multiline('LIST');
    const sizes = listing.lines.map((line) => Number(line.split(' ')[1]));
    assert.equal(sizes.length, MESSAGES.length);
    assert.equal(await client.command('STAT'), `+OK ${MESSAGES.length} ${sizes.reduce((a, b) => a + b, 0)}`);
    for (let i = 0; i < MESSAGES.length; i++) {
      const [name] = MESSAGES[i];
      assert.equal(await client.command(`LIST ${i + 1}`), `+OK ${i + 1} ${sizes[i]}`, name);
      assert.equal(await client.command(`RETR ${i + 1}`), `+OK ${sizes[i]} octets`, name);
      const sent = unstuff(await client.multilineRaw());
      assert.equal(sent.length, sizes[i], `${name}: the octets sent`);
      assert.equal(sent.indexOf(0), -1, `${name}: no NUL goes out`);
      assert.ok(sent.length === 0 || /\r\n\r\n/.test(sent.toString('latin1')) || sent.toString('latin1') === '\r\n', `${name}: an end-of-headers line`);
    }
    await client.command('QUIT');
  });

  test('NULs go out as 0x80 (as Dovecot), nothing else changes', async () => {
    const client = await login(server);
    await client.command('RETR 3');
    assert.equal(unstuff(await client.multilineRaw()).toString('latin1'), 'From: a@example.net\r\nSubject: nul\r\n\r\nbefore\x80after\r\n.dot line\r\n');
    await client.command('RETR 4');
    assert.equal(unstuff(await client.multilineRaw()).toString('latin1'), MESSAGES[3][1].toString('latin1'), 'a message that needs no fix is sent as stored');
    await client.command('QUIT');
  });

  test('a headers-only message gets its end-of-headers line in RETR and TOP (TOP 1 0 ends with a blank line)', async () => {
    const client = await login(server);
    assert.match(await client.command('TOP 1 0'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString('latin1'), 'From: a@example.net\r\nSubject: no body\r\n\r\n');
    assert.match(await client.command('TOP 2 0'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString('latin1'), 'From: a@example.net\r\nSubject: cut\r\n\r\n');
    assert.match(await client.command('TOP 5 3'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString('latin1'), 'From: a@example.net\r\nSubject: lf\r\n\r\n');
    assert.match(await client.command('TOP 7 0'), /^\+OK/);
    assert.ok((await client.multilineRaw()).toString('latin1').endsWith(`${'h'.repeat(900)}\r\n\r\n`), 'after a header too large to read whole');
    assert.match(await client.command('TOP 4 0'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString('latin1'), 'From: a@example.net\r\nSubject: plain\r\n\r\n', 'a message with its own gets no second one');
    await client.command('QUIT');
  });

  test('the stored mail is untouched', () => {
    for (let i = 0; i < MESSAGES.length; i++) {
      const path = `${server.app.mailstore.location(USER)}/cur/${files[i]}:2,`;
      assert.deepEqual(readFileSync(path), MESSAGES[i][1], MESSAGES[i][0]);
    }
  });
});

describe('POP3 client workarounds switched off', () => {
  test('client_workarounds = []: the message goes out as stored (NUL and all), sizes as stored', async () => {
    const server = await startTestServer({ pop3: { client_workarounds: [] } });
    try {
      await server.addUser(USER);
      await server.deliver(USER, MESSAGES[0][1]);
      await server.deliver(USER, MESSAGES[2][1]);
      const client = await login(server);
      assert.equal(await client.command('LIST 1'), `+OK 1 ${MESSAGES[0][1].length}`);
      await client.command('TOP 1 0');
      assert.equal((await client.multilineRaw()).toString('latin1'), 'From: a@example.net\r\nSubject: no body\r\n');
      await client.command('RETR 2');
      assert.notEqual(unstuff(await client.multilineRaw()).indexOf(0), -1);
      await client.command('QUIT');
    } finally {
      await server.close();
    }
  });

  test('an unknown workaround is a config error naming the key', async () => {
    await assert.rejects(startTestServer({ pop3: { client_workarounds: ['outlook-idle'] } }), /pop3\.client_workarounds/);
  });
});
