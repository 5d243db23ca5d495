import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// RETR reads small messages into buffers it reuses from one message to the next. A client
// that pipelines RETRs and reads slowly keeps replies waiting in the socket: no message may
// then reach it with bytes of another one.

let server: TestServer;
const USER = 'slow-reader@example.test';
const COUNT = 400;
const bodies: string[] = [];

before(async () => {
  server = await startTestServer();
  await server.addUser(USER);
  for (let i = 0; i < COUNT; i++) {
    // About 10 KB each (under the socket's high-water mark: no drain to wait for), every line
    // naming its message, so any mix-up shows; together several MB, more than loopback buffers.
    const line = `message ${String(i).padStart(3, '0')} ${'x'.repeat(60)}\r\n`;
    const body = line.repeat(150);
    bodies.push(body);
    await server.deliver(USER, `Subject: ${i}\r\n\r\n${body}`);
  }
});
after(() => server.close());

test('pipelined RETRs read slowly arrive whole, each with its own bytes', async () => {
  const socket = connect(server.pop3Port, '127.0.0.1');
  socket.pause(); // nothing is read until every command is sent and the server has filled the socket
  await new Promise((resolve) => socket.once('connect', resolve));
  const commands = [`USER ${USER}`, `PASS ${PASSWORD}`, ...Array.from({ length: COUNT }, (_, i) => `RETR ${i + 1}`), 'QUIT'];
  socket.write(commands.map((c) => `${c}\r\n`).join(''));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  // Read in small sips, so the server keeps meeting a full socket.
  while (!socket.readableEnded) {
    socket.resume();
    await new Promise((resolve) => setTimeout(resolve, 2));
    socket.pause();
    await new Promise((resolve) => setTimeout(resolve, 2));
    if (socket.destroyed) break;
    if (Buffer.concat(chunks).includes('+OK Goodbye')) break;
  }
  socket.resume();
  await new Promise((resolve) => (socket.readableEnded ? resolve(undefined) : socket.once('end', resolve)));
  const text = Buffer.concat(chunks).toString('latin1');
  const replies = text.split(/(?<=\r\n)\+OK \d+ octets\r\n/).slice(1);
  assert.equal(replies.length, COUNT);
  replies.forEach((reply, i) => {
    const body = reply.slice(reply.indexOf('\r\n\r\n') + 4, reply.indexOf('\r\n.\r\n') + 2);
    assert.equal(body, bodies[i], `message ${i + 1} arrived as sent`);
  });
});

test('leading dots are doubled wherever they are, in CRLF-clean messages read whole', async () => {
  const user = 'dots@example.test';
  await server.addUser(user);
  const messages = [
    '.first line is a dot line\r\n\r\nbody\r\n',
    'Subject: dots\r\n\r\n.\r\n..\r\n...x\r\nmid . dot\r\n.end\r\n',
    'Subject: none\r\n\r\nplain body\r\n',
    'Subject: last\r\n\r\nline\r\n.',
  ];
  for (const m of messages) await server.deliver(user, m);
  const socket = connect(server.pop3Port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write([`USER ${user}`, `PASS ${PASSWORD}`, ...messages.map((_, i) => `RETR ${i + 1}`), 'QUIT'].map((c) => `${c}\r\n`).join(''));
  await new Promise((resolve) => socket.once('end', resolve));
  const replies = Buffer.concat(chunks).toString('latin1').split(/(?<=\r\n)\+OK \d+ octets\r\n/).slice(1);
  const stuffed = (m: string) => {
    const lines = (m.endsWith('\r\n') ? m : `${m}\r\n`).split('\r\n').slice(0, -1);
    return lines.map((line) => (line.startsWith('.') ? `.${line}` : line)).join('\r\n') + '\r\n.\r\n';
  };
  replies.forEach((reply, i) => assert.equal(reply.slice(0, stuffed(messages[i]).length), stuffed(messages[i]), `message ${i + 1}`));
});

test('a client pipelining thousands of RETRs holds at most one message buffer, read or not', async () => {
  const user = 'pipeliner@example.test';
  await server.addUser(user);
  await server.deliver(user, 'Subject: tiny\r\n\r\nx\r\n');
  const socket = connect(server.pop3Port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  const before = process.memoryUsage().arrayBuffers;
  let peak = before;
  const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 1);
  // One write of 6,000 commands: the server reads them in a few chunks and answers each at once.
  socket.write([`USER ${user}`, `PASS ${PASSWORD}`, ...Array.from({ length: 6000 }, () => 'RETR 1'), 'QUIT'].map((c) => `${c}\r\n`).join(''));
  await new Promise((resolve) => socket.once('end', resolve));
  clearInterval(sample);
  peak = Math.max(peak, process.memoryUsage().arrayBuffers);
  assert.ok(received > 6000 * 20, `all replies arrived (${received} octets)`);
  // A buffer per reply would be about a GB; one per session is well under a MB.
  assert.ok(peak - before < 64 * 1024 * 1024, `buffers grew by ${((peak - before) / 1e6).toFixed(0)} MB`);
});
