import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { prng } from '../bench/messages.ts';
import { runRetr, type Endpoint } from '../bench/pop3-load.ts';

// The POP3 load generator's RETR check (bench/pop3-load.ts): against a small fake server that
// sends each reply in pieces cut at random places and around the dots at line starts (so
// CR, LF and "." land on either side of a read), every message must come out at its LIST size,
// and a server that breaks the transfer (an unstuffed dot, a message shorter or longer than
// LIST says, a terminator too early) must fail the run.

/**
 * Messages whose line starts hold every dot case (".", "..", ".x", "...", a dot on the first
 * line), and dots after a bare LF or CR, which do not start a line (only CRLF ends one).
 */
function messages(): Buffer[] {
  const random = prng(7);
  const lines = ['.', '..', '.hidden file', '...and so on', 'a line. with. dots.', '', 'plain text of a line'];
  const list: Buffer[] = [Buffer.from('.starts with a dot\r\n'), Buffer.from('.\r\n'), Buffer.from('x\r\n'), Buffer.from('bare\n.lf and\r.cr\r\n')];
  for (let m = 0; m < 20; m++) {
    const body: string[] = [];
    const count = 1 + Math.floor(random() * 40);
    for (let l = 0; l < count; l++) body.push(lines[Math.floor(random() * lines.length)]);
    list.push(Buffer.from(`Subject: ${m}\r\n\r\n${body.join('\r\n')}\r\n`, 'latin1'));
  }
  return list;
}

/** RFC 1939 §3: a line that starts with "." gets one more. */
const stuff = (message: Buffer) => Buffer.from(message.toString('latin1').replace(/(^|\r\n)\./g, '$1..'), 'latin1');

interface Behaviour {
  /** The body as sent for message `index` (0-based): stuffed, unless a test breaks it. */
  wire?: (message: Buffer, index: number) => Buffer;
  /** The size LIST gives for message `index`. */
  listed?: (message: Buffer, index: number) => number;
}

/** A fake POP3 server for one mailbox: USER, PASS, STAT, LIST, UIDL, RETR, QUIT. */
async function fakeServer(mailbox: Buffer[], behaviour: Behaviour = {}): Promise<{ endpoint: Endpoint; server: Server }> {
  const random = prng(11);
  const wire = behaviour.wire ?? ((message) => stuff(message));
  const listed = behaviour.listed ?? ((message) => message.length);
  const server = createServer((socket: Socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => {});
    let input = '';
    // Replies go out one after another (commands may be pipelined), each in pieces.
    let queue = Promise.resolve();
    const reply = (parts: Buffer[]) => {
      queue = queue.then(async () => {
        for (const part of parts) {
          if (socket.destroyed) return;
          socket.write(part);
          await sleep(1);
        }
      });
    };
    const split = (data: Buffer): Buffer[] => {
      // Cuts just before and after each line-start dot and its CRLF, and at random places.
      const cuts = new Set<number>();
      for (let i = data.indexOf('\r\n.'); i !== -1; i = data.indexOf('\r\n.', i + 1)) for (const d of [1, 2, 3, 4]) if (random() < 0.3) cuts.add(i + d);
      for (let n = 0; n < 3; n++) cuts.add(Math.floor(random() * data.length));
      const at = [...cuts].filter((c) => c > 0 && c < data.length).sort((a, b) => a - b);
      const parts: Buffer[] = [];
      let from = 0;
      for (const c of at) {
        parts.push(data.subarray(from, c));
        from = c;
      }
      parts.push(data.subarray(from));
      return parts;
    };
    socket.write('+OK fake POP3 ready\r\n');
    socket.on('data', (chunk) => {
      input += chunk.toString('latin1');
      for (let end = input.indexOf('\r\n'); end !== -1; end = input.indexOf('\r\n')) {
        const [verb, argument] = input.slice(0, end).split(' ');
        input = input.slice(end + 2);
        switch (verb) {
          case 'USER':
          case 'PASS':
            reply([Buffer.from('+OK\r\n')]);
            break;
          case 'STAT':
            reply([Buffer.from(`+OK ${mailbox.length} ${mailbox.reduce((sum, m, i) => sum + listed(m, i), 0)}\r\n`)]);
            break;
          case 'LIST':
            reply([Buffer.from(`+OK\r\n${mailbox.map((m, i) => `${i + 1} ${listed(m, i)}\r\n`).join('')}.\r\n`)]);
            break;
          case 'UIDL':
            reply([Buffer.from(`+OK\r\n${mailbox.map((_, i) => `${i + 1} uid${i + 1}\r\n`).join('')}.\r\n`)]);
            break;
          case 'RETR': {
            const index = Number(argument) - 1;
            const message = mailbox[index];
            if (!message) {
              reply([Buffer.from('-ERR no such message\r\n')]);
              break;
            }
            reply(split(Buffer.concat([Buffer.from(`+OK ${listed(message, index)} octets\r\n`), wire(message, index), Buffer.from('.\r\n')])));
            break;
          }
          case 'QUIT':
            reply([Buffer.from('+OK bye\r\n')]);
            queue = queue.then(() => void socket.end());
            break;
          default:
            reply([Buffer.from('-ERR unknown command\r\n')]);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert(address && typeof address === 'object');
  return { endpoint: { host: '127.0.0.1', port: address.port }, server };
}

describe('bench/pop3-load.ts RETR', () => {
  const mailbox = messages();
  const total = mailbox.reduce((sum, m) => sum + m.length, 0);
  const servers: Server[] = [];
  const start = async (behaviour?: Behaviour) => {
    const { endpoint, server } = await fakeServer(mailbox, behaviour);
    servers.push(server);
    return endpoint;
  };
  before(() => assert(mailbox.some((m) => stuff(m).length > m.length), 'some messages need dot-stuffing'));
  after(() => {
    for (const server of servers) server.close();
  });

  for (const pipeline of [1, 4]) {
    test(`every message at its LIST size, replies cut anywhere (pipeline ${pipeline})`, async () => {
      const endpoint = await start();
      const result = await runRetr({ endpoint, users: ['a@example.test', 'b@example.test'], password: 'secret', pipeline });
      assert.equal(result.messages, 2 * mailbox.length);
      assert.equal(result.octets, 2 * total);
      const wire = mailbox.reduce((sum, m) => sum + stuff(m).length + 3, 0);
      assert.equal(result.wireOctets, 2 * wire);
      assert.equal(result.latency.length, result.messages);
    });
  }

  test('an unstuffed dot at a line start fails the run', async () => {
    const endpoint = await start({ wire: (m, i) => (i === 4 ? Buffer.from(`x\r\n.hidden\r\n${stuff(m).toString('latin1')}`, 'latin1') : stuff(m)), listed: (m, i) => m.length + (i === 4 ? 11 : 0) });
    await assert.rejects(runRetr({ endpoint, users: ['a@example.test'], password: 'secret' }), /RETR 5: .*unstuffed/);
  });

  test('a message shorter than LIST says fails the run', async () => {
    const endpoint = await start({ listed: (m, i) => m.length + (i === 6 ? 1 : 0) });
    await assert.rejects(runRetr({ endpoint, users: ['a@example.test'], password: 'secret' }), /RETR 7: received \d+ octets, LIST said \d+/);
  });

  test('a message longer than LIST says fails the run', async () => {
    const endpoint = await start({ listed: (m, i) => m.length - (i === 9 ? 2 : 0) });
    await assert.rejects(runRetr({ endpoint, users: ['a@example.test'], password: 'secret' }), /RETR 10: received \d+ octets, LIST said \d+/);
  });

  test('a line of one dot left unstuffed (an early terminator) fails the run', async () => {
    const endpoint = await start({ wire: (m, i) => (i === 3 ? Buffer.from(`x\r\n.\r\n${stuff(m).toString('latin1')}`, 'latin1') : stuff(m)), listed: (m, i) => m.length + (i === 3 ? 6 : 0) });
    await assert.rejects(runRetr({ endpoint, users: ['a@example.test'], password: 'secret' }), /RETR 4: /);
  });
});
