import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { after, describe, test } from 'node:test';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { exited, spawnServer, writeConfig } from './helpers/process.ts';
import { PASSWORD, startTestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

describe('SMTP end to end', () => {
  test('a message sent by SMTP comes out of POP3 byte-identical apart from the trace headers', async () => {
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } });
    try {
      await server.addUser('e2e@example.test');
      const original =
        'From: sender@remote.example\r\nTo: e2e@example.test\r\nSubject: round trip\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n' +
        '.a line with a leading dot\r\n..two dots\r\n.\r\nÜmlaut and 8-bit text\r\n' + 'x'.repeat(998) + '\r\n';
      const client = await SmtpClient.connect(server.smtpPort);
      await client.hello();
      assert.match(await client.send('sender@remote.example', ['e2e@example.test'], original), /^250 /);
      await client.command('QUIT');
      const pop = await Pop3Client.connect(server.pop3Port);
      await pop.line();
      await pop.login('e2e@example.test', PASSWORD);
      assert.match(await pop.command('RETR 1'), /^\+OK/);
      const raw = (await pop.multilineRaw()).toString('utf8').replace(/^\./gm, '');
      await pop.command('QUIT');
      const traceEnd = raw.indexOf('From: sender@remote.example');
      // Return-Path, the inbound filter's verdict (Authentication-Results above the other trace
      // fields, RFC 8601 §5; Received-SPF, RFC 7208 §9.1; the spam marks),
      // then popgate's Received: trace.
      assert.match(
        raw.slice(0, traceEnd),
        /^Return-Path: <sender@remote\.example>\r\nAuthentication-Results: mail\.example\.test;[^]*?\r\nReceived-SPF: none [^]*?\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No, score=0\.0 required=5\.0 tests=none\r\nReceived: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mail\.example\.test \(popgate\) with ESMTP id \w+\r\n\tfor <e2e@example\.test>;\r\n\t.+\r\n$/,
      );
      assert.equal(raw.slice(traceEnd), original);
    } finally {
      await server.close();
    }
  });

  test('STARTTLS: the pipelined command after it is discarded, EHLO starts over inside TLS', async () => {
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms' } });
    try {
      const { connect } = await import('node:net');
      const plain = connect({ host: '127.0.0.1', port: server.smtpPort });
      let clear = '';
      plain.on('data', (chunk) => (clear += chunk));
      await new Promise((r) => setTimeout(r, 100));
      plain.write('EHLO client.example\r\n');
      await new Promise((r) => setTimeout(r, 100));
      plain.write('STARTTLS\r\nMAIL FROM:<injected@remote.example>\r\n');
      await new Promise((r) => setTimeout(r, 100));
      assert.match(clear, /\r\n220 2\.0\.0 Ready to start TLS\r\n$/, 'nothing answered in the clear after STARTTLS');
      plain.removeAllListeners('data');
      const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
      await new Promise<void>((resolve, reject) => {
        secure.once('secureConnect', () => resolve());
        secure.once('error', reject);
      });
      let received = '';
      secure.on('data', (chunk) => (received += chunk));
      secure.write('RCPT TO:<x@example.test>\r\n');
      await new Promise((r) => setTimeout(r, 200));
      assert.match(received, /^503 5\.5\.1 Send MAIL FROM first\r\n$/, 'the injected MAIL FROM never ran');
      received = '';
      secure.write('EHLO again.example\r\n');
      await new Promise((r) => setTimeout(r, 200));
      assert.doesNotMatch(received, /STARTTLS/);
      secure.destroy();
    } finally {
      await server.close();
    }
  });
});

describe('kill -9 right after 250', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-smtp-kill-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('loses nothing: the local copy and the spooled relay copy are both there after restart', async () => {
    const data = join(dir, 'data');
    const config = writeConfig(dir, `hostname = "mail.example.test"\ndata_dir = "${data}"\n[pop3]\nlisten = ["127.0.0.1:0"]\n[smtp]\nlisten = ["127.0.0.1:0"]\n[outbound]\nenabled = false\n`);
    const accounts = new SqliteAccountStore(openDatabase(data), true);
    await accounts.addDomain('example.test');
    await accounts.addUser('k9@example.test', PASSWORD);
    await accounts.close();
    const first = await spawnServer(config);
    const smtpPort = await waitForSmtpPort(first.output);
    // A grant for 127.0.0.1, so the same message is also relayed (spooled).
    const pop = await Pop3Client.connect(first.pop3Port);
    await pop.line();
    await pop.login('k9@example.test', PASSWORD);
    await pop.command('QUIT');
    const client = await SmtpClient.connect(smtpPort);
    await client.hello();
    const replies: string[] = [];
    for (let i = 0; i < 5; i++) {
      replies.push(await client.send('k9@example.test', ['k9@example.test', `friend${i}@remote.example`], `Subject: kill ${i}\r\n\r\nbody ${i}\r\n`));
    }
    first.child.kill('SIGKILL');
    await exited(first.child);
    client.close();
    for (const reply of replies) assert.match(reply, /^250 /);

    const second = await spawnServer(config);
    try {
      const again = await Pop3Client.connect(second.pop3Port);
      await again.line();
      assert.match(await again.login('k9@example.test', PASSWORD), /^\+OK Logged in, 5 messages/);
      await again.command('QUIT');
      const { Spool } = await import('../src/queue/spool.ts');
      const queued = await new Spool(data).list();
      assert.deepEqual(queued.map((e) => e.to[0]).sort(), [0, 1, 2, 3, 4].map((i) => `friend${i}@remote.example`));
    } finally {
      second.child.kill('SIGTERM');
      await exited(second.child);
    }
  });
});

async function waitForSmtpPort(output: string[]): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const line = output.find((l) => l.includes('"listener":"smtp"'));
    if (line) return JSON.parse(line).address.port;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('smtp did not listen');
}
