import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

describe('big mailboxes, big messages, foreign files', () => {
  let server: TestServer;
  let big: Buffer;
  before(async () => {
    server = await startTestServer();
    await server.addUser('many@example.test');
    // The first and the last one alone, so their order is certain; the rest in parallel.
    await server.deliver('many@example.test', message('number 1', 'Body 1\r\n'));
    const deliveries: Promise<string>[] = [];
    for (let i = 2; i < 1000; i++) deliveries.push(server.deliver('many@example.test', message(`number ${i}`, `Body ${i}\r\n`)));
    await Promise.all(deliveries);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await server.deliver('many@example.test', message('number 1000', 'Body 1000\r\n'));

    // 10 MB of base64-like lines, some starting with ".", CRLF line ends.
    await server.addUser('big@example.test');
    const lines: string[] = ['Subject: big', ''];
    let size = 0;
    while (size < 10 * 1024 * 1024) {
      const line = (lines.length % 7 === 0 ? '.' : '') + randomBytes(57).toString('base64');
      lines.push(line);
      size += line.length + 2;
    }
    big = Buffer.from(lines.join('\r\n') + '\r\n');
    await server.deliver('big@example.test', big);
  });
  after(() => server.close());

  test('a 1,000-message mailbox: STAT, LIST, UIDL, and RETR of the first and last', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.login('many@example.test', PASSWORD), /^\+OK Logged in, 1000 messages/);
    assert.match(await client.command('STAT'), /^\+OK 1000 \d+$/);
    assert.equal((await client.multiline('LIST')).lines.length, 1000);
    const uidls = (await client.multiline('UIDL')).lines.map((l) => l.split(' ')[1]);
    assert.equal(new Set(uidls).size, 1000);
    assert.ok((await client.multiline('RETR 1')).lines.includes('Subject: number 1'), 'oldest first');
    assert.ok((await client.multiline('RETR 1000')).lines.includes('Subject: number 1000'));
    await client.command('QUIT');
  });

  test('a 10 MB message arrives byte-exact, with byte-stuffing undone', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    await client.login('big@example.test', PASSWORD);
    assert.equal(await client.command('LIST 1'), `+OK 1 ${big.length}`);
    assert.equal(await client.command('RETR 1'), `+OK ${big.length} octets`);
    const raw = await client.multilineRaw(60_000);
    const unstuffed = Buffer.from(raw.toString('latin1').replace(/^\./gm, ''), 'latin1');
    assert.equal(unstuffed.length, big.length);
    assert.ok(unstuffed.equals(big));
    await client.command('QUIT');
  });

  test('stored files with LF, CRLF or no final line end all go out as CRLF lines', async () => {
    await server.addUser('mixed@example.test');
    const path = await server.app.mailstore.create('mixed@example.test');
    writeFileSync(join(path, 'new', '1700000001.1_1.otherhost'), 'Subject: lf\n\n.dot\nlf body\n');
    writeFileSync(join(path, 'new', '1700000002.1_2.otherhost'), 'Subject: crlf\r\n\r\n.dot\r\ncrlf body\r\n');
    writeFileSync(join(path, 'new', '1700000003.1_3.otherhost'), 'Subject: open\n\nno final newline');
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    await client.login('mixed@example.test', PASSWORD);
    const expected = [
      'Subject: lf\r\n\r\n..dot\r\nlf body\r\n',
      'Subject: crlf\r\n\r\n..dot\r\ncrlf body\r\n',
      'Subject: open\r\n\r\nno final newline\r\n',
    ];
    for (let i = 0; i < 3; i++) {
      const size = Number((await client.command(`LIST ${i + 1}`)).split(' ')[2]);
      assert.equal(await client.command(`RETR ${i + 1}`), `+OK ${size} octets`);
      const raw = (await client.multilineRaw()).toString();
      assert.equal(raw, expected[i]);
      const stuffed = (raw.match(/^\./gm) ?? []).length;
      assert.equal(size, raw.length - stuffed, 'LIST counts CRLF line ends and no stuffing');
    }
    await client.command('QUIT');
  });
});
