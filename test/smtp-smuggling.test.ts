import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DataReader, type BodySink } from '../src/smtp/data-reader.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// SMTP smuggling: only <CRLF>.<CRLF> ends DATA; any bare CR or LF refuses the message
// after the real end, with the session still in step (RFC 5321 §2.3.8, §4.1.1.4).

/** A sink that keeps what it is given, as the tests look at it. */
class CollectingSink implements BodySink {
  chunks: Buffer[] = [];
  append(piece: Buffer): void {
    this.chunks.push(piece);
  }
  discard(): void {
    this.chunks = [];
  }
}

function readAll(input: Buffer, cuts: number[]): { reader: DataReader; sink: CollectingSink; rest: Buffer | undefined } {
  const sink = new CollectingSink();
  const reader = new DataReader(1 << 20, sink);
  let start = 0;
  for (const cut of [...cuts, input.length]) {
    const rest = reader.push(input.subarray(start, cut));
    if (rest !== undefined) return { reader, sink, rest: Buffer.concat([rest, input.subarray(cut)]) };
    start = cut;
  }
  return { reader, sink, rest: undefined };
}

const VARIANTS = ['\n.\n', '\n.\r\n', '\r.\r', '\r\n.\n', '\r\r\n', '\r.\r\n', '\n.\r', '.\n', 'x\ry'];

describe('DataReader', () => {
  test('a clean message ends at CRLF.CRLF, dots unstuffed, for every split point', () => {
    const input = Buffer.from('Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n');
    for (let cut = 0; cut <= input.length; cut++) {
      const { reader, sink, rest } = readAll(input, [cut]);
      assert.equal(Buffer.concat(sink.chunks).toString(), 'Subject: x\r\n\r\n.leading dot\r\nbody\r\n');
      assert.equal(reader.bareLineEnding, undefined);
      assert.equal(rest?.toString(), 'QUIT\r\n');
    }
  });

  test('an empty message is just ".\\r\\n"', () => {
    const { reader, rest } = readAll(Buffer.from('.\r\n'), []);
    assert.equal(reader.size, 0);
    assert.equal(rest?.length, 0);
  });

  for (const variant of VARIANTS) {
    test(`${JSON.stringify(variant)} does not end the data and is flagged, for every split point`, () => {
      const input = Buffer.from(`Subject: x\r\n\r\nhello${variant}MAIL FROM:<evil@x.example>\r\n.\r\nNOOP\r\n`);
      for (let cut = 0; cut <= input.length; cut++) {
        const { reader, rest } = readAll(input, [cut]);
        assert.notEqual(reader.bareLineEnding, undefined, `cut ${cut}`);
        assert.equal(rest?.toString(), 'NOOP\r\n', `only the real end counts (cut ${cut})`);
      }
    });
  }

  test('past the size limit nothing more is kept, but the end is still found', () => {
    const sink = new CollectingSink();
    const reader = new DataReader(10, sink);
    assert.equal(reader.push(Buffer.from('0123456789abcdef\r\n')), undefined);
    assert.equal(reader.push(Buffer.from('more\r\n.\r\n'))?.length, 0);
    assert.ok(reader.tooBig);
    assert.deepEqual(sink.chunks, []);
  });
});

describe('smuggling over a real socket', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms' } });
    await server.addUser('victim@example.test');
    await server.addUser('target@example.test');
    await server.app.mailstore.create('victim@example.test');
    await server.app.mailstore.create('target@example.test');
  });
  after(() => server.close());

  const mailboxCount = (user: string) => readdirSync(join(server.app.mailstore.location(`${user}@example.test`), 'new')).length;

  for (const variant of VARIANTS) {
    for (const pipelined of [false, true]) {
      test(`${JSON.stringify(variant)}${pipelined ? ', all in one write' : ''}: 550 5.5.2, hidden commands never run, the session stays in step`, async () => {
        const before = mailboxCount('target') + mailboxCount('victim');
        const client = await SmtpClient.connect(server.smtpPort);
        const body =
          `Subject: outer\r\n\r\nhello${variant}` +
          'MAIL FROM:<evil@x.example>\r\nRCPT TO:<target@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n' +
          '\r\n.\r\n';
        if (pipelined) {
          await client.reply();
          client.write(`EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n${body}NOOP\r\nQUIT\r\n`);
          assert.match(await client.reply(), /^250-/);
          assert.match(await client.reply(), /^250 2\.1\.0/);
          assert.match(await client.reply(), /^250 2\.1\.5/);
          assert.match(await client.reply(), /^354 /);
        } else {
          await client.hello();
          await client.command('MAIL FROM:<a@remote.example>');
          await client.command('RCPT TO:<victim@example.test>');
          assert.match(await client.command('DATA'), /^354 /);
          client.write(`${body}NOOP\r\nQUIT\r\n`);
        }
        assert.match(await client.reply(), /^550 5\.5\.2 Message refused: it contains a bare CR or LF/);
        assert.match(await client.reply(), /^250 2\.0\.0 OK$/, 'NOOP right after the real end: in step');
        assert.match(await client.reply(), /^221 /);
        assert.equal(mailboxCount('target') + mailboxCount('victim'), before, 'nothing was delivered');
      });
    }
  }
});
