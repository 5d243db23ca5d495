import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { DatabaseSync } from 'node:sqlite';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { startApp } from '../src/server/app.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// A message is acknowledged and stored exactly once for every recipient, or refused with
// nothing kept: a client told 451 sends it all again, so a copy kept from the refused attempt
// is a duplicate (issue 17, item 2).

/** A logger whose lines the test can read. */
function capturedLog() {
  let text = '';
  const sink = new Writable({ write: (chunk, _encoding, done) => ((text += chunk), done()) });
  return { log: pino({ level: 'info' }, sink), lines: () => text };
}

async function mailCount(server: TestServer, address: string): Promise<number> {
  return (await server.app.mailstore.list(address)).length;
}

/** A mailbox whose tmp/ is a file: every delivery into it fails (as on the campaign's machine). */
function breakMailbox(server: TestServer, address: string): string {
  const tmp = join(server.app.mailstore.location(address), 'tmp');
  rmSync(tmp, { recursive: true, force: true });
  writeFileSync(tmp, 'not a folder');
  return tmp;
}

/** Makes the queue index refuse to commit, as SQLite does on a full disk (the transaction rolled back by SQLite itself). */
function breakQueueIndex(server: TestServer): () => void {
  const index = new DatabaseSync(join(server.dir, 'queue', 'index.sqlite'));
  index.exec(`CREATE TRIGGER disk_full BEFORE INSERT ON queue_messages BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END`);
  return () => {
    index.exec('DROP TRIGGER disk_full');
    index.close();
  };
}

describe('exactly once, or not at all', () => {
  test('one mailbox failing after another took its copy: 250 once, the failed copy queued and delivered later', async () => {
    const { log, lines } = capturedLog();
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] }, outbound: { enabled: true, retry_schedule: ['200ms'] } }, { log });
    try {
      await server.addUser('alice@example.test');
      await server.addUser('bob@example.test');
      await server.app.mailstore.create('bob@example.test');
      const tmp = breakMailbox(server, 'bob@example.test');
      const client = await SmtpClient.connect(server.smtpPort);
      await client.hello();
      const reply = await client.send('x@remote.example', ['alice@example.test', 'bob@example.test'], message('once'));
      client.close();
      assert.match(reply, /^250 /, 'accepted: alice has her copy, bob\'s is queued');
      assert.equal(await mailCount(server, 'alice@example.test'), 1);
      assert.equal(await mailCount(server, 'bob@example.test'), 0);
      assert.match(lines(), /"event":"local_delivery_queued"/);
      rmSync(tmp);
      mkdirSync(tmp);
      const deadline = Date.now() + 20_000;
      while ((await mailCount(server, 'bob@example.test')) === 0 && Date.now() < deadline) {
        await server.app.queue.retryNow(undefined, Date.now());
        server.app.delivery.wake();
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(await mailCount(server, 'bob@example.test'), 1, 'bob gets his copy from the queue');
      assert.equal(await mailCount(server, 'alice@example.test'), 1, 'and alice still has exactly one');
      const pop = await Pop3Client.connect(server.pop3Port);
      await pop.line();
      await pop.login('bob@example.test', PASSWORD);
      assert.match(await pop.command('RETR 1'), /^\+OK/);
      const copy = (await pop.multilineRaw()).toString();
      await pop.command('QUIT');
      assert.match(copy, /^Return-Path: <x@remote\.example>\r\n/, 'one Return-Path, at the top');
      assert.equal(copy.match(/^Return-Path:/gm)?.length, 1);
      assert.match(copy, /Subject: once/);
    } finally {
      await server.close();
    }
  });

  test('the queue failing too: 451, and the copy already stored is taken back', async () => {
    const { log, lines } = capturedLog();
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } }, { log });
    try {
      await server.addUser('alice@example.test');
      await server.addUser('bob@example.test');
      await server.app.mailstore.create('bob@example.test');
      breakMailbox(server, 'bob@example.test');
      const repair = breakQueueIndex(server);
      const client = await SmtpClient.connect(server.smtpPort);
      await client.hello();
      assert.match(await client.send('x@remote.example', ['alice@example.test', 'bob@example.test'], message('all or nothing')), /^451 4\.3\.0/);
      client.close();
      assert.equal(await mailCount(server, 'alice@example.test'), 0, 'no copy kept for a retry to duplicate');
      assert.match(lines(), /"event":"taken_back"/);
      repair();
    } finally {
      await server.close();
    }
  });

  test('the queue index failing to commit: 451, no spool files left, nothing recovered after a restart, the real error logged', async () => {
    const { log, lines } = capturedLog();
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } }, { log });
    try {
      await server.addUser('alice@example.test');
      await server.addUser('bob@example.test');
      const pop = await Pop3Client.connect(server.pop3Port);
      await pop.line();
      await pop.login('alice@example.test', PASSWORD);
      await pop.command('QUIT');
      const repair = breakQueueIndex(server);
      const client = await SmtpClient.connect(server.smtpPort);
      await client.hello();
      const relayed = message('refused').replace('From: sender@example.net', 'From: alice@example.test');
      assert.match(await client.send('alice@example.test', ['friend@remote.example', 'bob@example.test'], relayed), /^451 4\.3\.0/);
      client.close();
      repair();
      assert.deepEqual(readdirSync(join(server.dir, 'queue')).filter((name) => /\.(eml|json)$/.test(name)), [], 'no spool files');
      assert.equal(await mailCount(server, 'bob@example.test'), 0, 'the local copy taken back too');
      assert.match(lines(), /database or disk is full/);
      assert.doesNotMatch(lines(), /cannot rollback/);
      await server.app.close();
      const restarted = await startApp(server.app.config, pino({ level: 'silent' }));
      try {
        assert.deepEqual(await restarted.queue.list(), [], 'recovery finds nothing to deliver');
      } finally {
        await restarted.close();
      }
    } finally {
      rmSync(server.dir, { recursive: true, force: true });
    }
  });
});
