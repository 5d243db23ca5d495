import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import type { AuthenticationInput } from '../src/filter/authentication.ts';
import { checksInThisThread } from '../src/filter/authenticator.ts';
import { CheckThread, type CheckThreadSettings } from '../src/filter/check-thread.ts';
import { startDns, type TestDns } from './helpers/dns.ts';

// Sender authentication runs on a thread of its own (src/filter/check-thread.ts): it must answer
// exactly what the same checks answer in this thread, keep the deadline, and never leave a
// message unanswered when the thread stops.

const HOSTNAME = 'mx.popgate.test';
const ALLOWED = '127.0.0.40';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const KEY_RECORD = `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`;

function text(from: string, subject: string): string {
  return `From: Sender <${from}>\r\nTo: alice@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\nHello.\r\n`;
}

async function signed(message: string, selector = 'a'): Promise<string> {
  const result = await dkimSign(message, {
    canonicalization: 'relaxed/relaxed',
    signTime: new Date('2026-01-01T00:00:00Z'),
    signatureData: [{ signingDomain: 'one.example', selector, privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }],
  } as Parameters<typeof dkimSign>[1]);
  return result.signatures + message;
}

function input(message: string, ip = ALLOWED, sender = 'news@one.example'): AuthenticationInput {
  return { message: Buffer.from(message, 'latin1'), ip, helo: 'client.one.example', sender };
}

describe('sender authentication on a thread of its own', () => {
  let dns: TestDns;
  let settings: CheckThreadSettings;

  before(async () => {
    dns = await startDns({
      'one.example': { TXT: [`v=spf1 ip4:${ALLOWED} -all`] },
      'a._domainkey.one.example': { TXT: [KEY_RECORD] },
      'slow._domainkey.one.example': { TXT: [KEY_RECORD], delayMs: 600 },
      'never._domainkey.one.example': { TXT: [KEY_RECORD], delayMs: 60_000 },
      '_dmarc.one.example': { TXT: ['v=DMARC1; p=reject'] },
      'two.example': { TXT: ['v=spf1 -all'] },
      '_dmarc.two.example': { TXT: ['v=DMARC1; p=quarantine'] },
    });
    settings = { hostname: HOSTNAME, dnsServers: [dns.address], dnsTimeoutMs: 2000, deadlineMs: 5000 };
  });
  after(() => dns?.close());

  test('answers what the same checks answer in this thread: passes, failures, forgeries, each header octet', async () => {
    const messages = [
      input(await signed(text('news@one.example', 'pass'))),
      input((await signed(text('news@one.example', 'changed'))).replace('Hello.', 'Changed.'), '127.0.0.41'),
      input(text('news@one.example', 'unsigned'), '127.0.0.41'),
      input(text('news@two.example', 'quarantined'), '127.0.0.41', 'news@two.example'),
      input(await signed(text('news@one.example', 'null sender')), ALLOWED, ''),
    ];
    const thread = new CheckThread(settings);
    const here = checksInThisThread(settings);
    try {
      for (const message of messages) {
        const [onThread, inThisThread] = [await thread.check(message), await here.check(message)];
        assert.deepEqual(onThread, inThisThread);
        assert.equal(onThread.timedOut, false);
      }
      const verdicts = await Promise.all(messages.map((message) => thread.check(message)));
      assert.deepEqual(
        verdicts.map((v) => [v.spf, v.dkim, v.dmarc]),
        [
          ['pass', 'pass', 'pass'],
          ['fail', 'fail', 'fail'],
          ['fail', 'none', 'fail'],
          ['fail', 'none', 'fail'],
          ['none', 'pass', 'pass'],
        ],
      );
      assert.match(verdicts[0].headers, /^Authentication-Results: mx\.popgate\.test;\r\n dkim=pass [^\r]*;\r\n spf=pass /);
      assert.deepEqual(thread.counts, { thread: 2 * messages.length, local: 0 }, 'every check answered by the thread');
    } finally {
      await thread.close();
    }
  });

  test('a thread that stops: the checks under way are made in this thread, and the next ones start a new thread', { timeout: 20_000 }, async () => {
    const thread = new CheckThread(settings);
    try {
      // Under way on the thread: the key's DNS answer takes 600 ms.
      const underWay = thread.check(input(await signed(text('news@one.example', 'slow'), 'slow')));
      await new Promise((resolve) => setTimeout(resolve, 150));
      await thread.close();
      const result = await underWay;
      assert.deepEqual([result.spf, result.dkim, result.dmarc, result.timedOut], ['pass', 'pass', 'pass', false]);
      assert.equal(thread.counts.local, 1, 'made in this thread');
      const next = await thread.check(input(await signed(text('news@one.example', 'after'))));
      assert.equal(next.dkim, 'pass');
      assert.equal(thread.counts.thread, 1, 'answered by a new thread');
    } finally {
      await thread.close();
    }
  });

  test('the deadline holds on the thread: a key that never comes is a temperror, not a wait', async () => {
    const thread = new CheckThread({ ...settings, dnsTimeoutMs: 60_000, deadlineMs: 300 });
    try {
      const started = Date.now();
      const result = await thread.check(input(await signed(text('news@one.example', 'never'), 'never')));
      assert.ok(Date.now() - started < 1300, `answered after ${Date.now() - started} ms`);
      assert.equal(result.timedOut, true);
      assert.deepEqual([result.spf, result.dkim, result.dmarc], ['temperror', 'temperror', 'temperror']);
      assert.match(result.headers, /dkim=temperror \(checks did not finish in time\)/);
    } finally {
      await thread.close();
    }
  });

  test('an idle thread does not keep the process alive', { timeout: 30_000 }, async () => {
    const script = `
      import { CheckThread } from ${JSON.stringify(new URL('../src/filter/check-thread.ts', import.meta.url).href)};
      const thread = new CheckThread({ hostname: 'mx.popgate.test', dnsServers: [${JSON.stringify(dns.address)}], dnsTimeoutMs: 2000, deadlineMs: 5000 });
      const result = await thread.check({ message: Buffer.from('From: a@one.example\\r\\n\\r\\nHi.\\r\\n'), ip: '127.0.0.41', helo: 'h', sender: 'a@one.example' });
      console.log(result.spf);
    `;
    // A script file: with --eval the process ends when the script does, whatever still runs.
    const dir = mkdtempSync(join(tmpdir(), 'popgate-check-thread-'));
    const file = join(dir, 'idle.mjs');
    writeFileSync(file, script);
    // Asynchronously: this process serves the child's DNS questions meanwhile.
    const child = await new Promise<{ error: (Error & { killed?: boolean }) | null; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [file], { encoding: 'utf8', timeout: 20_000 }, (error, stdout, stderr) => resolve({ error, stdout, stderr })),
    );
    rmSync(dir, { recursive: true, force: true });
    assert.equal(child.error?.killed ?? false, false, 'the process ended by itself, not by the timeout');
    assert.equal(child.error, null, child.stderr);
    assert.equal(child.stdout.trim(), 'fail');
  });
});
