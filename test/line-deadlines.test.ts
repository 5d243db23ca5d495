import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers/server.ts';

// A command line and a DATA block each have a total deadline, not only an idle gap: a client
// sending a byte every half second never lets the idle timeout run out, and used to keep its
// session (and a connection slot) for as long as it liked (issue 17, item 4).

/** Connects, reads the greeting, and collects everything the server says until it closes. */
async function open(port: number): Promise<{ socket: Socket; said: () => string; closed: Promise<number> }> {
  const socket = connect({ host: '127.0.0.1', port });
  let text = '';
  socket.on('data', (chunk) => (text += chunk));
  socket.on('error', () => {});
  const started = Date.now();
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - started)));
  while (!text.includes('\r\n')) await new Promise((resolve) => setTimeout(resolve, 20));
  return { socket, said: () => text, closed };
}

/** Writes `text` one byte every `everyMs` until the socket closes; resolves to how many bytes went. */
async function trickle(socket: Socket, text: string, everyMs: number): Promise<number> {
  let sent = 0;
  while (!socket.destroyed && !socket.writableEnded && sent < text.length) {
    socket.write(text[sent++]);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return sent;
}

const SLOW = 'x'.repeat(200); // 200 bytes at 2 per second: 100 s, never finished in time

async function withServer(overrides: Record<string, unknown>, run: (server: TestServer) => Promise<void>): Promise<void> {
  const server = await startTestServer(overrides);
  try {
    await run(server);
  } finally {
    await server.close();
  }
}

describe('total deadlines over trickling clients', () => {
  test('SMTP: a command trickled in is cut off at smtp.command_timeout, though bytes keep coming', async () => {
    await withServer({ smtp: { listen: ['127.0.0.1:0'], idle_timeout: '5s', command_timeout: '2s' } }, async (server) => {
      const client = await open(server.smtpPort);
      void trickle(client.socket, `EHLO ${SLOW}`, 500);
      const after = await client.closed;
      assert.match(client.said(), /\r\n421 4\.4\.2 /);
      assert.ok(after >= 1500 && after < 15_000, `closed after ${after} ms`);
    });
  });

  test('SMTP: a DATA block trickled in is cut off at smtp.data_timeout, and nothing is delivered', async () => {
    await withServer({ smtp: { listen: ['127.0.0.1:0'], idle_timeout: '5s', command_timeout: '5s', data_timeout: '2s' } }, async (server) => {
      await server.addUser('alice@example.test');
      const client = await open(server.smtpPort);
      client.socket.write('EHLO client.example\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
      while (!client.said().includes('354 ')) await new Promise((resolve) => setTimeout(resolve, 20));
      void trickle(client.socket, `Subject: slow\r\n\r\n${SLOW}`, 500);
      const after = await client.closed;
      assert.match(client.said(), /\r\n421 4\.4\.2 /);
      assert.ok(after < 15_000, `closed after ${after} ms`);
      assert.equal((await server.app.mailstore.list('alice@example.test')).length, 0);
    });
  });

  test('SMTP: a client that keeps each command in time is not cut off by the deadline of the session', async () => {
    await withServer({ smtp: { listen: ['127.0.0.1:0'], command_timeout: '1500ms' } }, async (server) => {
      const client = await open(server.smtpPort);
      for (let i = 0; i < 5; i++) {
        client.socket.write('NOOP\r\n');
        await new Promise((resolve) => setTimeout(resolve, 800));
      }
      assert.equal(client.said().match(/^250 /gm)?.length, 5, 'five NOOPs over 4 s, each in time');
      client.socket.destroy();
    });
  });

  test('POP3: a command trickled in is cut off at pop3.command_timeout', async () => {
    await withServer({ pop3: { idle_timeout: '5s', command_timeout: '2s' } }, async (server) => {
      const client = await open(server.pop3Port);
      void trickle(client.socket, `USER ${SLOW}`, 500);
      const after = await client.closed;
      assert.match(client.said(), /\r\n-ERR /);
      assert.ok(after >= 1500 && after < 15_000, `closed after ${after} ms`);
    });
  });
});
