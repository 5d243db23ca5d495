import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import Pop3Command from 'node-pop3';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// Independent clients: curl's POP3 implementation and the node-pop3 library.

const run = promisify(execFile);

describe('interoperability', () => {
  let server: TestServer;
  const body = 'First line\r\n.starts with a dot\r\nLast line\r\n';
  before(async () => {
    server = await startTestServer();
    await server.addUser('curl@example.test');
    await server.deliver('curl@example.test', message('for curl', body));
    await server.addUser('lib@example.test');
    for (let i = 1; i <= 3; i++) await server.deliver('lib@example.test', message(`lib ${i}`, body));
  });
  after(() => server.close());

  test('curl pop3:// lists and retrieves a message byte-exact', async () => {
    const base = `pop3://127.0.0.1:${server.pop3Port}`;
    const list = await run('curl', ['-sS', `${base}/`, '--user', `curl@example.test:${PASSWORD}`]);
    assert.match(list.stdout, /^1 \d+\r\n$/);
    const retr = await run('curl', ['-sS', `${base}/1`, '--user', `curl@example.test:${PASSWORD}`], { encoding: 'buffer' });
    assert.equal(retr.stdout.toString(), message('for curl', body));
  });

  test('curl pop3s:// with implicit TLS and pop3:// with --ssl-reqd (STLS)', async () => {
    const implicit = await run('curl', ['-sS', '--insecure', `pop3s://127.0.0.1:${server.pop3sPort}/1`, '--user', `curl@example.test:${PASSWORD}`]);
    assert.equal(implicit.stdout, message('for curl', body));
    const stls = await run('curl', ['-sS', '--insecure', '--ssl-reqd', `pop3://127.0.0.1:${server.pop3Port}/1`, '--user', `curl@example.test:${PASSWORD}`]);
    assert.equal(stls.stdout, message('for curl', body));
  });

  test('curl reports a wrong password as a login failure', async () => {
    await assert.rejects(run('curl', ['-sS', `pop3://127.0.0.1:${server.pop3Port}/`, '--user', 'curl@example.test:wrong']), /67|Login denied|denied/i);
  });

  test('node-pop3: STAT, UIDL, RETR, TOP, DELE and QUIT', async () => {
    const pop3 = new Pop3Command({ user: 'lib@example.test', password: PASSWORD, host: '127.0.0.1', port: server.pop3Port });
    const stat = await pop3.STAT();
    assert.match(stat, /^3 \d+$/);
    const uidl = (await pop3.UIDL()) as string[][];
    assert.equal(uidl.length, 3);
    const text = await pop3.RETR(2);
    assert.match(text, /Subject: lib 2/);
    // node-pop3 hands back the lines as sent, byte-stuffing included.
    assert.match(text, /First line\r\n\.\.starts with a dot\r\nLast line/);
    const top = await pop3.TOP(1, 1);
    assert.match(top, /First line/);
    assert.doesNotMatch(top, /Last line/);
    await pop3.command('DELE', 1);
    await pop3.QUIT();
    const again = new Pop3Command({ user: 'lib@example.test', password: PASSWORD, host: '127.0.0.1', port: server.pop3Port });
    assert.match(await again.STAT(), /^2 /);
    await again.QUIT();
  });

  test('node-pop3 over implicit TLS', async () => {
    const pop3 = new Pop3Command({
      user: 'lib@example.test',
      password: PASSWORD,
      host: '127.0.0.1',
      port: server.pop3sPort,
      tls: true,
      tlsOptions: { rejectUnauthorized: false },
    });
    assert.match(await pop3.STAT(), /^\d+ \d+$/);
    await pop3.QUIT();
  });
});
