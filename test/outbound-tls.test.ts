import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { generate } from 'selfsigned';
import { SMTPServer } from 'smtp-server';
import { startDns, type TestDns, type ZoneEntry } from './helpers/dns.ts';
import { capturingLogger, until } from './helpers/outbound.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { Spool } from '../src/queue/spool.ts';

// TLS towards MX hosts ([outbound] tls in docs/configuration.md). Opportunistic TLS (RFC 7435)
// must never stop the mail: when the STARTTLS handshake fails, the same attempt goes on in
// plaintext over a new connection. "required" sends nothing without TLS and the mail waits
// with 4.7.0; "none" never asks for TLS. Every delivery line says whether TLS was used and
// whether the certificate was valid.
//
// The broken receivers are small scripted SMTP servers on raw sockets, so what they get and
// what they answer is exact; the working one is smtp-server with a self-signed certificate.

const body = (subject: string, to: string) => `From: alice@example.test\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\nHi.\r\n`;

interface Connection {
  /** SMTP commands received in plaintext, in order, as written (without CRLF). */
  commands: string[];
}

interface ScriptedSmtp {
  host: string;
  port: number;
  connections: Connection[];
  messages: { from: string; to: string[]; data: string }[];
  close(): Promise<void>;
}

/**
 * An SMTP receiver that offers STARTTLS and then cannot keep its promise.
 * - "garbage": answers "220 Ready to start TLS", then sends bytes that are no TLS record (a
 *   broken TLS stack, or a middlebox meddling with the session): the handshake fails.
 * - "refuse": answers STARTTLS with "454 4.7.0 TLS not available".
 * Everything else (EHLO, MAIL, RCPT, DATA, RSET, QUIT) it handles as an ordinary server.
 */
async function startScriptedSmtp(host: string, port: number, starttls: 'garbage' | 'refuse'): Promise<ScriptedSmtp> {
  const sockets = new Set<Socket>();
  const state: ScriptedSmtp = {
    host,
    port: 0,
    connections: [],
    messages: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const connection: Connection = { commands: [] };
    state.connections.push(connection);
    let buffer = '';
    let inData = false;
    let handshaking = false;
    let dataLines: string[] = [];
    let envelope: { from: string; to: string[] } = { from: '', to: [] };
    const reply = (text: string) => socket.write(`${text}\r\n`);
    socket.setEncoding('latin1');
    reply(`220 ${host} ESMTP scripted`);
    socket.on('data', (chunk: string) => {
      // After "220 Ready to start TLS" the client speaks TLS: nothing more to read as SMTP.
      if (handshaking) return;
      buffer += chunk;
      for (let at = buffer.indexOf('\r\n'); at >= 0 && !handshaking; at = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            state.messages.push({ ...envelope, data: dataLines.join('\r\n') + '\r\n' });
            reply('250 2.0.0 Ok: queued');
          } else {
            dataLines.push(line.startsWith('.') ? line.slice(1) : line);
          }
          continue;
        }
        connection.commands.push(line);
        const verb = line.split(' ')[0].toUpperCase();
        if (verb === 'EHLO') reply(`250-${host}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS`);
        else if (verb === 'HELO') reply(`250 ${host}`);
        else if (verb === 'STARTTLS' && starttls === 'refuse') reply('454 4.7.0 TLS not available due to local problem');
        else if (verb === 'STARTTLS') {
          handshaking = true;
          reply('220 2.0.0 Ready to start TLS');
          // Where the ServerHello should be: plain text, which no TLS client can accept.
          socket.write('this is not a TLS record, just plain text\r\n'.repeat(8));
        } else if (verb === 'MAIL') {
          envelope = { from: /<([^>]*)>/.exec(line)?.[1] ?? '', to: [] };
          reply('250 2.1.0 Ok');
        } else if (verb === 'RCPT') {
          envelope.to.push(/<([^>]*)>/.exec(line)?.[1] ?? '');
          reply('250 2.1.5 Ok');
        } else if (verb === 'DATA') {
          inData = true;
          dataLines = [];
          reply('354 End data with <CR><LF>.<CR><LF>');
        } else if (verb === 'RSET' || verb === 'NOOP') reply('250 2.0.0 Ok');
        else if (verb === 'QUIT') {
          reply('221 2.0.0 Bye');
          socket.end();
        } else reply('502 5.5.2 Command not recognized');
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  state.port = (server.address() as { port: number }).port;
  return state;
}

interface SelfSignedSink {
  host: string;
  port: number;
  messages: { to: string[]; secure: boolean }[];
  close(): Promise<void>;
}

/** smtp-server offering STARTTLS with a certificate for its own name, signed by nobody trusted. */
async function startSelfSignedSink(host: string, name: string, port: number): Promise<SelfSignedSink> {
  const pems = await generate([{ name: 'commonName', value: name }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: name }] }],
  } as Parameters<typeof generate>[1]);
  const sink: SelfSignedSink = { host, port: 0, messages: [], close: () => new Promise((resolve) => server.close(() => resolve())) };
  const server = new SMTPServer({
    logger: false,
    secure: false,
    key: pems.private,
    cert: pems.cert,
    authOptional: true,
    disabledCommands: ['AUTH'],
    onData(stream, session, callback) {
      stream.resume();
      stream.on('end', () => {
        sink.messages.push({ to: session.envelope.rcptTo.map((r) => r.address), secure: session.secure });
        callback();
      });
    },
  });
  server.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  sink.port = (server.server.address() as { port: number }).port;
  return sink;
}

interface TestWorld {
  server: TestServer;
  dns: TestDns;
  /** 127.0.0.12: STARTTLS handshake fails. */
  broken: ScriptedSmtp;
  /** 127.0.0.13: STARTTLS answered 454. */
  refusing: ScriptedSmtp;
  /** 127.0.0.14: STARTTLS with a self-signed certificate. */
  selfSigned: SelfSignedSink;
  lines: Record<string, unknown>[];
  queue(to: string, subject: string): Promise<string>;
  /** The delivery log lines of one message. */
  deliveries(id: string): Record<string, unknown>[];
  close(): Promise<void>;
}

const zone: Record<string, ZoneEntry> = {
  'broken-tls.example': { MX: [[10, 'mx.broken-tls.example']] },
  'mx.broken-tls.example': { A: ['127.0.0.12'] },
  'refuses-tls.example': { MX: [[10, 'mx.refuses-tls.example']] },
  'mx.refuses-tls.example': { A: ['127.0.0.13'] },
  'selfsigned.example': { MX: [[10, 'mx.selfsigned.example']] },
  'mx.selfsigned.example': { A: ['127.0.0.14'] },
};

/** popgate with outbound.tls set as given, and the three receivers on one port (outbound.port). */
async function startWorld(tls: 'opportunistic' | 'required' | 'none'): Promise<TestWorld> {
  const dns = await startDns(structuredClone(zone));
  let remotes: [ScriptedSmtp, ScriptedSmtp, SelfSignedSink] | undefined;
  for (let tries = 0; !remotes; tries++) {
    const started: { close(): Promise<void> }[] = [];
    try {
      const broken = await startScriptedSmtp('127.0.0.12', 0, 'garbage');
      started.push(broken);
      const refusing = await startScriptedSmtp('127.0.0.13', broken.port, 'refuse');
      started.push(refusing);
      const selfSigned = await startSelfSignedSink('127.0.0.14', 'mx.selfsigned.example', broken.port);
      remotes = [broken, refusing, selfSigned];
    } catch (error) {
      await Promise.all(started.map((s) => s.close()));
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || tries > 20) throw error;
    }
  }
  const [broken, refusing, selfSigned] = remotes;
  const captured = capturingLogger();
  const server = await startTestServer(
    {
      dns: { servers: [dns.address], timeout: '2s' },
      outbound: { enabled: true, port: broken.port, tls, retry_schedule: ['300ms'], connect_timeout: '3s', command_timeout: '5s' },
    },
    { log: captured.log },
  );
  return {
    server,
    dns,
    broken,
    refusing,
    selfSigned,
    lines: captured.lines,
    async queue(to, subject) {
      const id = Spool.newId();
      await server.app.queue.enqueue({ id, from: 'alice@example.test', to: [to], receivedAt: Date.now(), clientIp: '192.0.2.10' }, Buffer.from(body(subject, to)));
      return id;
    },
    deliveries(id) {
      return captured.lines.filter((line) => line.event === 'delivery' && line.queueId === id);
    },
    async close() {
      await server.close();
      await Promise.all([dns.close(), broken.close(), refusing.close(), selfSigned.close()]);
    },
  };
}

/** The message has left the queue (every recipient has its final answer). */
function left(world: TestWorld, id: string): Promise<boolean> {
  return until(async () => (await world.server.app.queue.get(id)) === undefined, 5000, `${id} to leave the queue`);
}

/** Waits until the message has been tried at least `attempts` times; returns its queue entry. */
function attempted(world: TestWorld, id: string, attempts: number) {
  return until(
    async () => {
      const entry = await world.server.app.queue.get(id);
      return entry && entry.attempts >= attempts ? entry : undefined;
    },
    20_000,
    `${attempts} attempts of ${id}`,
  );
}

const sentMail = (connection: Connection) => connection.commands.some((c) => /^MAIL FROM:/i.test(c));

describe('outbound.tls = "opportunistic"', () => {
  let world: TestWorld;
  before(async () => {
    world = await startWorld('opportunistic');
  });
  after(() => world.close());

  test(
    'a STARTTLS handshake that fails is followed at once by a plaintext delivery on the same attempt, logged as tls false',
    async () => {
      const id = await world.queue('bob@broken-tls.example', 'fallback');
      await until(() => world.broken.messages.length >= 1, 15_000, 'the plaintext delivery');
      assert.deepEqual(world.broken.messages[0].to, ['bob@broken-tls.example']);
      assert.match(world.broken.messages[0].data, /Subject: fallback\r\n/);
      const [tried, plain] = world.broken.connections;
      assert.deepEqual(tried.commands.slice(0, 2), ['EHLO mail.example.test', 'STARTTLS'], 'TLS was tried first');
      assert.ok(!sentMail(tried), 'nothing of the message crossed the failed connection');
      assert.ok(!plain.commands.includes('STARTTLS'), 'the fallback connection does not try TLS again');
      assert.ok(sentMail(plain));
      // The sink has the message before popgate reads its 250, so the log line may come just after.
      await until(() => world.deliveries(id).length > 0, 5000, 'the delivery log line');
      const lines = world.deliveries(id);
      assert.equal(lines.length, 1, 'one attempt, one line: the fallback is part of the same attempt');
      assert.equal(lines[0].outcome, 'delivered');
      assert.equal(lines[0].attempt, 1);
      assert.equal(lines[0].tls, false);
      assert.equal(lines[0].host, 'mx.broken-tls.example');
      await left(world, id);
    },
  );

  test('a STARTTLS refused with 454 is followed by plaintext over the same connection, logged as tls false', async () => {
    const id = await world.queue('carol@refuses-tls.example', 'refused');
    await until(() => world.refusing.messages.length >= 1, 15_000, 'the plaintext delivery');
    assert.deepEqual(world.refusing.messages[0].to, ['carol@refuses-tls.example']);
    const [connection] = world.refusing.connections;
    assert.deepEqual(connection.commands.slice(0, 2), ['EHLO mail.example.test', 'STARTTLS']);
    assert.ok(sentMail(connection), 'the message followed on the connection that refused TLS');
    const [line] = await until(() => (world.deliveries(id).length > 0 ? world.deliveries(id) : undefined), 5000, 'the delivery line');
    assert.equal(line.outcome, 'delivered');
    assert.equal(line.attempt, 1);
    assert.equal(line.tls, false);
    assert.equal(line.tlsVerified, undefined, 'no certificate to judge without TLS');
    await left(world, id);
  });

  test('a self-signed certificate is good enough for opportunistic TLS and logged as tls true, tlsVerified false', async () => {
    const id = await world.queue('dave@selfsigned.example', 'self-signed');
    await until(() => world.selfSigned.messages.length >= 1, 15_000, 'the delivery');
    assert.deepEqual(world.selfSigned.messages[0].to, ['dave@selfsigned.example']);
    assert.equal(world.selfSigned.messages[0].secure, true, 'the receiver saw the session upgraded');
    const [line] = await until(() => (world.deliveries(id).length > 0 ? world.deliveries(id) : undefined), 5000, 'the delivery line');
    assert.equal(line.outcome, 'delivered');
    assert.equal(line.host, 'mx.selfsigned.example');
    assert.equal(line.tls, true);
    assert.equal(line.tlsVerified, false, 'the certificate names the host but nobody trusted signed it');
    await left(world, id);
  });
});

describe('outbound.tls = "required"', () => {
  let world: TestWorld;
  before(async () => {
    world = await startWorld('required');
  });
  after(() => world.close());

  test('a host whose STARTTLS handshake fails gets nothing: the message waits and is never bounced', async () => {
    const id = await world.queue('bob@broken-tls.example', 'must be encrypted');
    const entry = await attempted(world, id, 2);
    assert.equal(entry.recipients[0].state, 'pending');
    assert.match(entry.recipients[0].status!, /^4\./);
    assert.ok(entry.recipients[0].diagnostic, 'the reason is recorded');
    assert.equal(world.broken.messages.length, 0);
    assert.ok(world.broken.connections.length >= 2, 'each attempt tried the host');
    for (const connection of world.broken.connections) {
      assert.deepEqual(connection.commands, ['EHLO mail.example.test', 'STARTTLS'], 'no plaintext fallback: nothing after STARTTLS');
    }
    await world.server.app.queue.remove(id);
  });

  test(
    'a failed STARTTLS handshake under required TLS waits with status 4.7.0',
    async () => {
      const id = await world.queue('bob@broken-tls.example', 'must be encrypted 2');
      const entry = await attempted(world, id, 1);
      assert.equal(entry.recipients[0].state, 'pending');
      assert.equal(entry.recipients[0].status, '4.7.0');
      assert.match(entry.recipients[0].diagnostic!, /TLS failed/);
      await world.server.app.queue.remove(id);
    },
  );

  test('a host that refuses STARTTLS (454) gets nothing: the message waits with status 4.7.0', async () => {
    const id = await world.queue('carol@refuses-tls.example', 'must be encrypted too');
    const entry = await attempted(world, id, 2);
    assert.equal(entry.recipients[0].state, 'pending');
    assert.equal(entry.recipients[0].status, '4.7.0');
    assert.match(entry.recipients[0].diagnostic!, /TLS failed with this host.*454/);
    assert.equal(world.refusing.messages.length, 0);
    for (const connection of world.refusing.connections) assert.ok(!sentMail(connection), 'no MAIL FROM without TLS');
    const lines = world.deliveries(id);
    assert.ok(lines.length >= 2);
    for (const line of lines) {
      assert.equal(line.outcome, 'deferred');
      assert.equal(line.tls, false);
    }
    await world.server.app.queue.remove(id);
  });
});

describe('outbound.tls = "none"', () => {
  let world: TestWorld;
  before(async () => {
    world = await startWorld('none');
  });
  after(() => world.close());

  test('STARTTLS is never sent, even to hosts that offer it; delivery in plaintext, logged as tls false', async () => {
    const broken = await world.queue('bob@broken-tls.example', 'plain one');
    const selfSigned = await world.queue('dave@selfsigned.example', 'plain two');
    await until(() => world.broken.messages.length >= 1 && world.selfSigned.messages.length >= 1, 15_000, 'both deliveries');
    assert.deepEqual(world.broken.messages[0].to, ['bob@broken-tls.example']);
    assert.equal(world.selfSigned.messages[0].secure, false, 'smtp-server saw no STARTTLS');
    assert.ok(world.broken.connections.length >= 1);
    for (const connection of world.broken.connections) {
      assert.ok(!connection.commands.some((c) => /^STARTTLS/i.test(c)), `no STARTTLS: ${connection.commands.join(' | ')}`);
    }
    for (const id of [broken, selfSigned]) {
      const [line] = await until(() => (world.deliveries(id).length > 0 ? world.deliveries(id) : undefined), 5000, 'the delivery line');
      assert.equal(line.outcome, 'delivered');
      assert.equal(line.attempt, 1);
      assert.equal(line.tls, false);
      await left(world, id);
    }
  });
});
