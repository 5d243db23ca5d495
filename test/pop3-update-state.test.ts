import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { exited, spawnServer, writeConfig } from './helpers/process.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// RFC 1939 §6: messages marked with DELE are removed only in the UPDATE state, entered by
// QUIT from TRANSACTION, and the "+OK" comes after they are gone. Nothing else deletes mail.

async function fill(server: TestServer, address: string, count: number): Promise<void> {
  for (let i = 1; i <= count; i++) await server.deliver(address, message(`message ${i}`));
}

function files(server: TestServer, address: string): string[] {
  const path = server.app.mailstore.location(address);
  return [...readdirSync(join(path, 'new')), ...readdirSync(join(path, 'cur'))];
}

async function loggedIn(server: TestServer, address: string): Promise<Pop3Client> {
  const client = await Pop3Client.connect(server.pop3Port);
  await client.line();
  assert.match(await client.login(address, PASSWORD), /^\+OK Logged in/);
  return client;
}

describe('POP3 UPDATE state and maildrop lock', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.close());

  test('QUIT removes the messages marked with DELE, and only those, before answering', async () => {
    await server.addUser('quit@example.test');
    await fill(server, 'quit@example.test', 3);
    const client = await loggedIn(server, 'quit@example.test');
    await client.command('DELE 1');
    await client.command('DELE 3');
    assert.equal(files(server, 'quit@example.test').length, 3, 'nothing is removed before QUIT');
    assert.equal(await client.command('QUIT'), '+OK Goodbye, 2 messages deleted');
    // The reply came after the removal, so the files are already gone.
    assert.equal(files(server, 'quit@example.test').length, 1);
    await client.waitClosed();
    const again = await loggedIn(server, 'quit@example.test');
    const { lines } = await again.multiline('RETR 1');
    assert.ok(lines.includes('Subject: message 2'));
    await again.command('QUIT');
  });

  test('a dropped connection deletes nothing', async () => {
    await server.addUser('drop@example.test');
    await fill(server, 'drop@example.test', 2);
    const client = await loggedIn(server, 'drop@example.test');
    assert.match(await client.command('DELE 1'), /^\+OK/);
    assert.match(await client.command('DELE 2'), /^\+OK/);
    client.close();
    // The lock is released once the server has seen the close; then a new session sees both.
    let status = '';
    for (let attempt = 0; attempt < 50; attempt++) {
      const next = await Pop3Client.connect(server.pop3Port);
      await next.line();
      status = await next.login('drop@example.test', PASSWORD);
      if (status.startsWith('+OK')) {
        assert.match(await next.command('STAT'), /^\+OK 2 /);
        await next.command('QUIT');
        break;
      }
      next.close();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(status, /^\+OK Logged in, 2 messages/);
    assert.equal(files(server, 'drop@example.test').length, 2);
  });

  test('RSET before QUIT keeps everything', async () => {
    await server.addUser('rset@example.test');
    await fill(server, 'rset@example.test', 2);
    const client = await loggedIn(server, 'rset@example.test');
    await client.command('DELE 1');
    await client.command('RSET');
    assert.equal(await client.command('QUIT'), '+OK Goodbye, 0 messages deleted');
    assert.equal(files(server, 'rset@example.test').length, 2);
  });

  test('a second session on the same maildrop gets -ERR [IN-USE] until the first ends', async () => {
    await server.addUser('lock@example.test');
    await fill(server, 'lock@example.test', 1);
    const first = await loggedIn(server, 'lock@example.test');
    const second = await Pop3Client.connect(server.pop3Port);
    await second.line();
    assert.match(await second.login('lock@example.test', PASSWORD), /^-ERR \[IN-USE\] Your mailbox is in use/);
    assert.match(await second.command('STAT'), /^-ERR Log in first/, 'the refused session stays in AUTHORIZATION');
    await first.command('QUIT');
    await first.waitClosed();
    assert.match(await second.login('lock@example.test', PASSWORD), /^\+OK Logged in/);
    await second.command('QUIT');
  });

  test('mail arriving during a session waits for the next session; message numbers stay put', async () => {
    await server.addUser('snap@example.test');
    await fill(server, 'snap@example.test', 2);
    const client = await loggedIn(server, 'snap@example.test');
    await server.deliver('snap@example.test', message('late'));
    assert.match(await client.command('STAT'), /^\+OK 2 /);
    assert.match(await client.command('RETR 3'), /^-ERR No message 3/);
    await client.command('QUIT');
    const next = await loggedIn(server, 'snap@example.test');
    assert.match(await next.command('STAT'), /^\+OK 3 /);
    await next.command('QUIT');
  });

  test('UIDLs stay the same across sessions', async () => {
    await server.addUser('uidl@example.test');
    await fill(server, 'uidl@example.test', 5);
    const one = await loggedIn(server, 'uidl@example.test');
    const first = (await one.multiline('UIDL')).lines;
    await one.command('QUIT');
    const two = await loggedIn(server, 'uidl@example.test');
    assert.deepEqual((await two.multiline('UIDL')).lines, first);
    await two.command('QUIT');
  });
});

describe('kill -9 of the server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-kill-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('after DELE but before QUIT loses nothing, and UIDLs survive the restart', async () => {
    const config = writeConfig(
      dir,
      `hostname = "mail.example.test"\ndata_dir = "${dir}/data"\n[pop3]\nlisten = ["127.0.0.1:0"]\n[smtp]\nlisten = []\n[auth]\nfailure_delay = "10ms"\n`,
    );
    const db = openDatabase(join(dir, 'data'));
    const accounts = new SqliteAccountStore(db, true);
    await accounts.addDomain('example.test');
    await accounts.addUser('k@example.test', PASSWORD);
    await accounts.close();
    const store = new MaildirStore(join(dir, 'data'), 'mail.example.test');
    for (let i = 0; i < 5; i++) await store.deliver('k@example.test', Buffer.from(message(`kill ${i}`)));

    const first = await spawnServer(config);
    const client = await Pop3Client.connect(first.pop3Port);
    await client.line();
    await client.login('k@example.test', PASSWORD);
    const uidls = (await client.multiline('UIDL')).lines;
    for (let i = 1; i <= 5; i++) assert.match(await client.command(`DELE ${i}`), /^\+OK/);
    first.child.kill('SIGKILL');
    await exited(first.child);
    client.close();

    const second = await spawnServer(config);
    try {
      const again = await Pop3Client.connect(second.pop3Port);
      await again.line();
      assert.match(await again.login('k@example.test', PASSWORD), /^\+OK Logged in, 5 messages/);
      assert.deepEqual((await again.multiline('UIDL')).lines, uidls);
      await again.command('QUIT');
    } finally {
      second.child.kill('SIGTERM');
      assert.equal(await exited(second.child), 0, 'SIGTERM stops the server cleanly');
    }
  });
});
