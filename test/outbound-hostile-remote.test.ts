import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startDns, type TestDns } from './helpers/dns.ts';
import { capturingLogger, until } from './helpers/outbound.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { startSink, type Sink } from './helpers/sink.ts';
import { Xorshift32 } from './helpers/wire.ts';
import { Spool } from '../src/queue/spool.ts';
import type { QueuedMessage } from '../src/queue/store.ts';

// Other providers' servers misbehave: they hang up, say nothing, talk nonsense, or drop the
// connection with the message half sent. None of that may crash popgate, hang its queue or
// lose mail (RFC 5321 §6.1: the message stays ours until a final answer). Each bad server
// is a raw socket server on a loopback address of its own, the MX of one domain; the good
// sink (smtp-server) stands for every provider that works. Once the bad MX is replaced (the
// domain's MX switched to the good sink in the live DNS zone), the waiting mail goes out.

const from = 'alice@example.test';
const body = (subject: string, to: string) => `From: Alice <${from}>\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.test>\r\n\r\nHello.\r\n`;

interface Hostile {
  host: string;
  port: number;
  /** Connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

type Behaviour = (socket: Socket) => void;

/** A raw TCP server that treats every connection as `behave` says. */
async function startHostile(host: string, port: number, behave: Behaviour): Promise<Hostile> {
  const sockets = new Set<Socket>();
  const hostile: Hostile = {
    host,
    port: 0,
    connections: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((socket) => {
    hostile.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    behave(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  hostile.port = (server.address() as { port: number }).port;
  return hostile;
}

/** Calls `onLine` for every CRLF line the client sends. */
function lines(socket: Socket, onLine: (line: string) => void): void {
  let buffer = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let at = buffer.indexOf('\r\n'); at >= 0 && !socket.destroyed; at = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      onLine(line);
    }
  });
}

const random = new Xorshift32(20260521);

interface Case {
  /** a, b1, ...: the domain is bad-<key>.example, its MX mx.bad-<key>.example. */
  key: string;
  title: string;
  ip: string;
  behave: Behaviour;
  /** What the recorded diagnostic says. */
  diagnostic: RegExp;
  status?: string;
}

const cases: Case[] = [
  {
    key: 'a',
    title: 'accepts the connection and closes it at once, without a greeting',
    ip: '127.0.0.20',
    behave: (socket) => socket.end(),
    diagnostic: /closed/i,
    status: '4.4.1',
  },
  {
    key: 'b1',
    title: 'greets with random binary bytes and never a line end',
    ip: '127.0.0.21',
    behave: (socket) => socket.write(Buffer.from([...random.bytes(8192)].filter((byte) => byte !== 0x0a && byte !== 0x0d))),
    diagnostic: /greeting/i,
    status: '4.4.1',
  },
  {
    key: 'b2',
    title: 'greets with one 200 KB line',
    ip: '127.0.0.22',
    behave: (socket) => socket.write(`${'x'.repeat(200 * 1024)}\r\n`),
    diagnostic: /greeting/i,
    status: '4.4.1',
  },
  {
    key: 'c',
    title: 'accepts the connection and never says anything (connect_timeout ends it)',
    ip: '127.0.0.23',
    behave: () => {},
    diagnostic: /greeting|timeout/i,
    status: '4.4.1',
  },
  {
    key: 'd',
    title: 'takes MAIL, RCPT and DATA, then drops the connection before answering the final dot',
    ip: '127.0.0.24',
    behave: (socket) => {
      let inData = false;
      socket.write('220 mx.bad-d.example ESMTP\r\n');
      lines(socket, (line) => {
        if (inData) {
          if (line === '.') socket.destroy();
          return;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') socket.write('250 mx.bad-d.example\r\n');
        else if (verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET' || verb === 'NOOP') socket.write('250 2.0.0 Ok\r\n');
        else if (verb === 'DATA') {
          inData = true;
          socket.write('354 Go ahead\r\n');
        } else if (verb === 'QUIT') socket.end('221 Bye\r\n');
        else socket.write('502 5.5.2 What?\r\n');
      });
    },
    diagnostic: /closed|connection/i,
    status: '4.4.1',
  },
  {
    key: 'e',
    title: 'greets properly, then answers every command with a malformed reply ("hello")',
    ip: '127.0.0.25',
    behave: (socket) => {
      socket.write('220 mx.bad-e.example ESMTP\r\n');
      lines(socket, () => socket.write('hello\r\n'));
    },
    diagnostic: /hello/,
    status: '4.4.1',
  },
  {
    key: 'f',
    title: 'answers 421 at the greeting',
    ip: '127.0.0.26',
    behave: (socket) => socket.end('421 4.3.2 mx.bad-f.example Service shutting down, try later\r\n'),
    diagnostic: /421 4\.3\.2/,
    status: '4.3.2',
  },
];

describe('hostile remote SMTP servers', () => {
  let server: TestServer;
  let dns: TestDns;
  let sink: Sink;
  const hostiles = new Map<string, Hostile>();
  const captured = capturingLogger();

  before(async () => {
    dns = await startDns({
      'good.example': { MX: [[10, 'mx.good.example']] },
      'mx.good.example': { A: ['127.0.0.2'] },
      ...Object.fromEntries(
        cases.flatMap((c) => [
          [`bad-${c.key}.example`, { MX: [[10, `mx.bad-${c.key}.example`]] }],
          [`mx.bad-${c.key}.example`, { A: [c.ip] }],
        ]),
      ),
      // A bad first MX, a good second one.
      'closes-first.example': { MX: [[10, 'mx.bad-a.example'], [20, 'mx.good.example']] },
      'silent-first.example': { MX: [[10, 'mx.bad-c.example'], [20, 'mx.good.example']] },
    });
    // Every MX listens on the same port (outbound.port), each on its own address.
    for (let tries = 0; ; tries++) {
      let good: Sink | undefined;
      try {
        good = await startSink({ host: '127.0.0.2' });
        for (const c of cases) hostiles.set(c.key, await startHostile(c.ip, good.port, c.behave));
        sink = good;
        break;
      } catch (error) {
        await Promise.all([good?.close(), ...[...hostiles.values()].map((h) => h.close())]);
        hostiles.clear();
        if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || tries > 20) throw error;
      }
    }
    server = await startTestServer(
      {
        dns: { servers: [dns.address], timeout: '2s' },
        outbound: { enabled: true, port: sink.port, retry_schedule: ['300ms'], connect_timeout: '1s', command_timeout: '2s' },
      },
      { log: captured.log },
    );
  });

  after(async () => {
    await server.close();
    await Promise.all([dns.close(), sink.close(), ...[...hostiles.values()].map((h) => h.close())]);
  });

  async function queue(to: string, subject: string): Promise<string> {
    const id = Spool.newId();
    await server.app.queue.enqueue({ id, from, to: [to], receivedAt: Date.now(), clientIp: '192.0.2.10' }, Buffer.from(body(subject, to)));
    return id;
  }

  /** Waits until the message has been tried at least `attempts` times; returns its entry. */
  function attempted(id: string, attempts: number): Promise<QueuedMessage> {
    return until(
      async () => {
        const entry = await server.app.queue.get(id);
        return entry && entry.attempts >= attempts ? entry : undefined;
      },
      20_000,
      `attempt ${attempts} of ${id}`,
    );
  }

  function left(id: string): Promise<boolean> {
    return until(async () => (await server.app.queue.get(id)) === undefined, 20_000, `${id} to leave the queue`);
  }

  function receivedBy(to: string): boolean {
    return sink.messages.some((m) => m.to.includes(to));
  }

  for (const c of cases) {
    test(`an MX that ${c.title}: the mail waits, the queue goes on, and the mail leaves once the MX works`, async () => {
      const domain = `bad-${c.key}.example`;
      const recipient = `user@${domain}`;
      const hostile = hostiles.get(c.key)!;
      const id = await queue(recipient, `hostile ${c.key}`);

      // Tried, answered as a temporary failure, tried again: the queue does not hang on it.
      const entry = await attempted(id, 2);
      const [waiting] = entry.recipients;
      assert.equal(waiting.state, 'pending');
      if (c.status) assert.equal(waiting.status, c.status);
      assert.match(waiting.status!, /^4\./, 'a temporary status: nothing is bounced');
      assert.match(waiting.diagnostic!, c.diagnostic);
      assert.ok(waiting.diagnostic!.length <= 1000, `a readable diagnostic (${waiting.diagnostic!.length} characters)`);
      assert.equal(waiting.remoteMta, `mx.${domain}`);
      assert.ok(hostile.connections >= 2, `each attempt reached the bad server (${hostile.connections})`);
      const deferred = captured.lines.filter((l) => l.event === 'delivery' && l.queueId === id);
      assert.ok(deferred.length >= 2 && deferred.every((l) => l.outcome === 'deferred' && l.host === `mx.${domain}`));

      // Meanwhile popgate goes on serving everyone else.
      const other = await queue(`someone-${c.key}@good.example`, `meanwhile ${c.key}`);
      await left(other);
      assert.ok(receivedBy(`someone-${c.key}@good.example`));
      assert.ok(!receivedBy(recipient));
      await attempted(id, entry.attempts + 1);

      // The domain's MX now points at a server that works: the waiting message goes out.
      dns.zone[domain].MX = [[10, 'mx.good.example']];
      await left(id);
      const delivered = sink.messages.filter((m) => m.to.includes(recipient));
      assert.equal(delivered.length, 1);
      assert.match(delivered[0].data.toString(), new RegExp(`Subject: hostile ${c.key}\\r\\n`));
      const last = captured.lines.filter((l) => l.event === 'delivery' && l.queueId === id).at(-1)!;
      assert.equal(last.outcome, 'delivered');
      assert.equal(last.host, 'mx.good.example');
    });
  }

  test('a first MX that closes the connection at once is skipped: the second MX gets the mail on the first attempt', async () => {
    const bad = hostiles.get('a')!;
    const before = bad.connections;
    const id = await queue('user@closes-first.example', 'closes first');
    await left(id);
    assert.ok(receivedBy('user@closes-first.example'));
    assert.ok(bad.connections > before, 'the preferred MX was tried first');
    const deliveries = captured.lines.filter((l) => l.event === 'delivery' && l.queueId === id);
    assert.equal(deliveries.length, 1, 'one attempt');
    assert.equal(deliveries[0].attempt, 1);
    assert.equal(deliveries[0].outcome, 'delivered');
    assert.equal(deliveries[0].host, 'mx.good.example');
    assert.ok(captured.lines.some((l) => l.event === 'connect_failed' && l.host === 'mx.bad-a.example'));
  });

  test('a first MX that never says anything is given up after connect_timeout: the second MX gets the mail on the first attempt', async () => {
    const bad = hostiles.get('c')!;
    const before = bad.connections;
    const id = await queue('user@silent-first.example', 'silent first');
    await left(id);
    assert.ok(receivedBy('user@silent-first.example'));
    assert.ok(bad.connections > before, 'the preferred MX was tried first');
    const deliveries = captured.lines.filter((l) => l.event === 'delivery' && l.queueId === id);
    assert.equal(deliveries.length, 1, 'one attempt');
    assert.equal(deliveries[0].attempt, 1);
    assert.equal(deliveries[0].outcome, 'delivered');
    assert.equal(deliveries[0].host, 'mx.good.example');
  });

  test(
    'a 200 KB reply that starts with a reply code is kept to a readable size: in the index, the log, and the bounce (lines of at most 998 characters, RFC 5322 §2.1.1)',
    async () => {
      await server.addUser(from);
      const refusing = await startHostile('127.0.0.27', sink.port, (socket) => socket.end(`554 5.7.1 ${'y'.repeat(200 * 1024)}\r\n`));
      const deferring = await startHostile('127.0.0.28', sink.port, (socket) => socket.end(`421 4.3.2 ${'z'.repeat(200 * 1024)}\r\n`));
      dns.zone['huge-refusal.example'] = { MX: [[10, 'mx.huge-refusal.example']] };
      dns.zone['mx.huge-refusal.example'] = { A: ['127.0.0.27'] };
      dns.zone['huge-delay.example'] = { MX: [[10, 'mx.huge-delay.example']] };
      dns.zone['mx.huge-delay.example'] = { A: ['127.0.0.28'] };
      const refused = await queue('user@huge-refusal.example', 'huge refusal');
      const delayed = await queue('user@huge-delay.example', 'huge delay');
      try {
        const entry = await attempted(delayed, 1);
        const diagnostic = entry.recipients[0].diagnostic!;
        assert.ok(diagnostic.startsWith('421 4.3.2 zzz'), 'the reply is recorded');
        assert.ok(diagnostic.length <= 1000, `diagnostic of ${diagnostic.length} characters`);
        for (const line of captured.lines.filter((l) => l.queueId === delayed)) {
          const size = JSON.stringify(line).length;
          assert.ok(size <= 4000, `log line of ${size} characters`);
        }
        await left(refused);
        const [bounce] = await until(async () => {
          const list = await server.app.mailstore.list(from);
          return list.length > 0 ? list : undefined;
        });
        const text = readFileSync(bounce.ref, 'latin1');
        assert.match(text, /Status: 5\.7\.1/);
        const longest = Math.max(...text.split('\r\n').map((line) => line.length));
        assert.ok(longest <= 998, `the bounce has a line of ${longest} characters`);
      } finally {
        // Whatever happened, nothing is left waiting for the next tests.
        dns.zone['huge-delay.example'].MX = [[10, 'mx.good.example']];
        await left(delayed).catch(() => {});
        await left(refused).catch(() => {});
        await Promise.all([refusing.close(), deferring.close()]);
      }
    },
  );

  test('after all of it popgate still answers POP3 and its queue is empty', async () => {
    const greeting = await new Promise<string>((resolve, reject) => {
      const socket = connect(server.pop3Port, '127.0.0.1');
      socket.setEncoding('latin1');
      socket.once('data', (text: string) => {
        socket.end('QUIT\r\n');
        resolve(text);
      });
      socket.once('error', reject);
    });
    assert.match(greeting, /^\+OK/);
    await until(async () => (await server.app.queue.list()).length === 0, 20_000, 'an empty queue');
    assert.equal(server.app.delivery.inFlight, 0);
  });
});
