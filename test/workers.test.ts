import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { spawnNode, writeConfig, type NodeProcess } from './helpers/process.ts';
import { PASSWORD } from './helpers/server.ts';
import { startSink, type Sink } from './helpers/sink.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { sleep, waitFor } from './helpers/wire.ts';

// `[server] workers = 2`: two worker processes serve every listener of one machine, and
// nothing that must be consistent lives in one of them: a maildrop held on one is in use on
// the other, a POP3 login on one lets SMTP relay on the other, connections per address count
// across both, and mail queued by either is delivered once. The primary restarts a worker that
// dies and passes signals on. Real processes, real sockets; the APOP banner of the greeting
// names the worker's pid, which tells the tests which worker answered.

const POP3_LIMIT_PER_IP = 4;

describe('workers = 2 on one machine', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-workers-'));
  const data = join(dir, 'data');
  let node: NodeProcess;
  let sink: Sink;
  let workerPids: number[];

  before(async () => {
    sink = await startSink({ host: '127.0.0.2' });
    const accounts = new SqliteAccountStore(openDatabase(data), true);
    await accounts.addDomain('example.test');
    for (const user of ['alice', 'bob', 'carol', 'dave']) await accounts.addUser(`${user}@example.test`, PASSWORD);
    await accounts.close();
    const config = writeConfig(
      dir,
      [
        'hostname = "mail.example.test"',
        `data_dir = "${data}"`,
        'shutdown_grace = "1s"',
        '[server]',
        'workers = 2',
        '[tls]',
        'self_signed = true',
        '[pop3]',
        'listen = ["127.0.0.1:0"]',
        'apop = true',
        `max_connections_per_ip = ${POP3_LIMIT_PER_IP}`,
        'max_connection_rate_per_ip = 0',
        '[smtp]',
        'listen = ["127.0.0.1:0"]',
        'max_connection_rate_per_ip = 0',
        '[outbound]',
        `transport = { "remote.example" = "127.0.0.2:${sink.port}" }`,
        'tls = "none"',
      ].join('\n'),
    );
    node = await spawnNode(config, { listeners: ['pop3', 'smtp'] });
    workerPids = (node.log.find((e) => e.event === 'workers_ready')!.pids as number[]).slice().sort();
  });
  after(async () => {
    await node?.stop();
    await sink?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A greeted POP3 connection and the pid of the worker that answered (from the APOP banner). */
  async function pop3(localAddress = '127.0.0.1'): Promise<{ client: Pop3Client; pid: number }> {
    const client = await Pop3Client.connect(node.ports.pop3, { localAddress });
    const greeting = await client.line();
    const pid = Number(/<(\d+)\./.exec(greeting)?.[1]);
    assert.ok(pid > 0, `the APOP banner names the worker: ${greeting}`);
    return { client, pid };
  }

  /** Connections until one is answered by a worker other than `not` (the kernel spreads them). */
  async function pop3Elsewhere(not: number, localAddress?: string): Promise<{ client: Pop3Client; pid: number }> {
    for (let attempt = 0; attempt < 200; attempt++) {
      const connection = await pop3(localAddress);
      if (connection.pid !== not) return connection;
      connection.client.close();
    }
    throw new Error(`200 connections, all answered by worker ${not}`);
  }

  test('both workers listen on every port and take connections', async () => {
    assert.equal(workerPids.length, 2);
    const seen = new Set<number>();
    for (let i = 0; i < 100 && seen.size < 2; i++) {
      const { client, pid } = await pop3();
      seen.add(pid);
      client.close();
    }
    assert.deepEqual([...seen].sort(), workerPids, 'connections reached both workers');
  });

  test('a maildrop held by a session on one worker is in use on the other', async () => {
    const first = await pop3();
    assert.match(await first.client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    const second = await pop3Elsewhere(first.pid);
    assert.match(await second.client.login('alice@example.test', PASSWORD), /^-ERR \[IN-USE\]/);
    assert.match(await first.client.command('QUIT'), /^\+OK/);
    second.client.close();
    const third = await pop3Elsewhere(first.pid);
    assert.match(await third.client.login('alice@example.test', PASSWORD), /^\+OK Logged in/, 'free again after QUIT');
    await third.client.command('QUIT');
  });

  test('a POP3 login on one worker lets SMTP relay on any worker at once; another address may not', async () => {
    const { client } = await pop3('127.0.0.7');
    assert.match(await client.login('bob@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
    // Several SMTP connections: the kernel spreads them over both workers.
    for (let i = 0; i < 6; i++) {
      const smtp = await SmtpClient.connect(node.ports.smtp, '127.0.0.7');
      await smtp.reply();
      await smtp.command('EHLO client.example');
      assert.match(await smtp.command('MAIL FROM:<bob@example.test>'), /^250/);
      assert.match(await smtp.command('RCPT TO:<friend@remote.example>'), /^250/, `relay allowed (connection ${i + 1})`);
      smtp.close();
    }
    const stranger = await SmtpClient.connect(node.ports.smtp, '127.0.0.8');
    await stranger.reply();
    await stranger.command('EHLO client.example');
    await stranger.command('MAIL FROM:<bob@example.test>');
    assert.match(await stranger.command('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 Relay access denied/);
    stranger.close();
  });

  test('connections per address are counted across both workers', async () => {
    const held: { client: Pop3Client; pid: number }[] = [];
    for (let i = 0; i < POP3_LIMIT_PER_IP; i++) held.push(await pop3('127.0.0.9'));
    const refused = await Pop3Client.connect(node.ports.pop3, { localAddress: '127.0.0.9' });
    assert.match(await refused.line(), /^-ERR \[SYS\/TEMP\] Too many connections from your address/);
    refused.close();
    for (const { client } of held) client.close();
    await sleep(300);
    const again = await pop3('127.0.0.9');
    again.client.close();
  });

  test('mail relayed through either worker is delivered once, by the delivering worker', async () => {
    const { client } = await pop3('127.0.0.10');
    assert.match(await client.login('carol@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
    const before = sink.messages.length;
    for (let i = 0; i < 6; i++) {
      const smtp = await SmtpClient.connect(node.ports.smtp, '127.0.0.10');
      await smtp.reply();
      await smtp.command('EHLO client.example');
      await smtp.command('MAIL FROM:<carol@example.test>');
      await smtp.command('RCPT TO:<friend@remote.example>');
      await smtp.command('DATA');
      assert.match(await smtp.command(`From: carol@example.test\r\nSubject: worker relay ${i}\r\n\r\nHello.\r\n.`), /^250 2\.0\.0/);
      smtp.close();
    }
    await sink.waitFor(before + 6, 15_000);
    const subjects = sink.messages.slice(before).map((m) => /Subject: (.*)\r\n/.exec(m.data.toString())?.[1]).sort();
    assert.deepEqual(subjects, [0, 1, 2, 3, 4, 5].map((i) => `worker relay ${i}`), 'each message once');
    const deliverers = new Set(node.log.filter((e) => e.event === 'delivery' && e.outcome === 'delivered').map((e) => e.pid));
    assert.equal(deliverers.size, 1, 'one worker delivers the queue');
  });

  test('a worker killed with kill -9 is restarted, and the maildrop it held is free at once', async () => {
    const { client, pid } = await pop3();
    assert.match(await client.login('dave@example.test', PASSWORD), /^\+OK Logged in/);
    process.kill(pid, 'SIGKILL');
    await client.waitClosed();
    const restarted = await node.waitForLog((e) => e.event === 'worker_restart');
    const replacement = Number(restarted.workerPid);
    assert.ok(replacement > 0 && replacement !== pid);
    await node.waitForLog((e) => e.event === 'listening' && e.pid === replacement && e.listener === 'smtp');
    const next = await pop3();
    assert.match(await next.client.login('dave@example.test', PASSWORD), /^\+OK Logged in/, 'the dead worker\'s lock was released');
    await next.client.command('QUIT');
    workerPids = workerPids.map((p) => (p === pid ? replacement : p)).sort();
  });

  test('SIGHUP reaches every worker (each reloads its certificate)', async () => {
    const before = node.log.filter((e) => e.event === 'tls_reloaded').length;
    node.child.kill('SIGHUP');
    await waitFor(() => node.log.filter((e) => e.event === 'tls_reloaded').length >= before + 2, 'both workers reloaded', 10_000);
  });

  test('SIGTERM stops every worker; the primary exits 0', async () => {
    assert.equal(await node.stop(), 0);
    for (const pid of workerPids) {
      assert.throws(() => process.kill(pid, 0), `worker ${pid} is gone`);
    }
  });
});
