import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateKey, keyPath } from '../src/dkim/keys.ts';
import { Spool } from '../src/queue/spool.ts';
import { runPopgate } from './helpers/cli.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { sleep, waitFor } from './helpers/wire.ts';

// `popgate backup` while a server receives mail over SMTP and a POP3 client keeps claiming new
// mail (moving it from new/ to cur/), then `popgate restore` into a fresh data_dir and a server
// started on it: every message that had its 250 before the backup began is there, whole and
// once; whatever arrived during the backup is there whole or not at all. The queue, the
// accounts, the DKIM key and the generated certificate come back too.

const USERS = ['alice@example.test', 'bob@example.test'];

/** A tmpfs on Linux: a backup there cannot hard-link the files of data_dir. */
const SHM = '/dev/shm';

function otherFileSystem(path: string): boolean {
  return existsSync(SHM) && statSync(SHM).dev !== statSync(path).dev;
}

/** A message body long enough to take several writes, ending in a line that names it. */
function body(id: string): string {
  return `${Array.from({ length: 200 }, (_, i) => `line ${i} of message ${id}: the quick brown fox jumps over the lazy dog`).join('\r\n')}\r\nend of ${id}\r\n`;
}

function messageText(id: string, to: string): string {
  return `From: sender@example.net\r\nTo: ${to}\r\nSubject: backup ${id}\r\n\r\n${body(id)}`;
}

function configFile(dir: string, dataDir: string, listeners: { pop3?: string; pop3s?: string; smtp?: string } = {}): string {
  const path = join(dir, `popgate-${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(
    path,
    [
      'hostname = "mail.example.test"',
      `data_dir = "${dataDir}"`,
      `[pop3]\nlisten = [${listeners.pop3 ? `"${listeners.pop3}"` : ''}]`,
      `[pop3s]\nlisten = [${listeners.pop3s ? `"${listeners.pop3s}"` : ''}]`,
      `[smtp]\nlisten = [${listeners.smtp ? `"${listeners.smtp}"` : ''}]`,
      '[tls]\nself_signed = true',
      '',
    ].join('\n'),
  );
  return path;
}

/**
 * The message files of each mailbox under a data_dir's mail/<domain>/, keyed by
 * "<local part>/<unique name>" (the part of a Maildir name before ":", which a move from new/
 * to cur/ keeps).
 */
function maildirFiles(dataDir: string, domain: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const root = join(dataDir, 'mail', domain);
  for (const mailbox of readdirSync(root)) {
    for (const sub of ['new', 'cur']) {
      for (const name of readdirSync(join(root, mailbox, sub))) files.set(`${mailbox}/${name.split(':')[0]}`, readFileSync(join(root, mailbox, sub, name)));
    }
  }
  return files;
}

/** Every message of a mailbox over POP3, without deleting any. */
async function fetchAll(port: number, user: string): Promise<string[]> {
  const client = await Pop3Client.connect(port);
  try {
    await client.line();
    assert.match(await client.login(user, PASSWORD), /^\+OK/);
    const list = await client.multiline('LIST');
    const texts: string[] = [];
    for (const entry of list.lines) {
      const { lines } = await client.multiline(`RETR ${entry.split(' ')[0]}`);
      texts.push(lines.join('\r\n') + '\r\n');
    }
    await client.command('QUIT');
    return texts;
  } finally {
    client.close();
  }
}

describe('popgate backup while serving, and popgate restore', () => {
  const work = mkdtempSync(join(tmpdir(), 'popgate-backup-test-'));
  let server: TestServer;
  let runningConfig: string;
  const backupDir = join(work, 'backup');
  const restoredDir = join(work, 'restored');
  const acked = new Map<string, { to: string; at: number }>();
  let backupBegan = 0;
  let queuedId = '';
  let keyPem = '';
  let certificatePem = '';

  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } });
    for (const user of USERS) await server.addUser(user);
    // Mailboxes named like a Maildir's own folders: the domain's folder then holds new/ and cur/.
    for (const user of ['new@example.test', 'cur@example.test']) {
      await server.addUser(user);
      await server.deliver(user, messageText(`for-${user.split('@')[0]}`, user));
    }
    const config = server.app.config;
    keyPem = generateKey(config.dkim.keys_dir, 'example.test', config.dkim.selector, 'ed25519').privateKey;
    certificatePem = readFileSync(join(config.data_dir, 'tls', 'self-signed-cert.pem'), 'utf8');
    queuedId = Spool.newId();
    await server.app.queue.enqueue({ id: queuedId, from: 'alice@example.test', to: ['someone@elsewhere.example'], receivedAt: Date.now(), clientIp: '192.0.2.1', authorizedUser: 'alice@example.test' }, Buffer.from(messageText('queued', 'someone@elsewhere.example')));
    runningConfig = configFile(work, config.data_dir, { pop3: server.app.addresses.pop3[0], pop3s: server.app.addresses.pop3s[0], smtp: server.app.addresses.smtp[0] });
  });

  after(async () => {
    await server.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('a backup taken during SMTP delivery restores every message acknowledged before it began, each whole and once', async () => {
    let sending = true;
    const senders = Array.from({ length: 4 }, async (_, sender) => {
      for (let n = 0; sending; n++) {
        const id = `s${sender}n${n}`;
        const to = USERS[n % USERS.length];
        const client = await SmtpClient.connect(server.smtpPort);
        try {
          await client.hello();
          const reply = await client.send('sender@example.net', [to], messageText(id, to));
          assert.match(reply, /^250/, `message ${id}`);
          acked.set(id, { to, at: Date.now() });
          await client.command('QUIT');
        } finally {
          client.close();
        }
      }
    });
    // A mail program logging in now and then claims new mail: files move from new/ to cur/
    // while the backup reads the folders.
    const reader = (async () => {
      while (sending) {
        await fetchAll(server.pop3Port, 'alice@example.test').then(() => undefined, () => undefined);
        await sleep(20);
      }
    })();
    await waitFor(() => acked.size >= 40, '40 messages acknowledged', 30_000);
    backupBegan = Date.now();
    const result = await runPopgate(runningConfig, ['backup', backupDir]);
    const ackedDuringBackup = [...acked.values()].filter((entry) => entry.at > backupBegan).length;
    sending = false;
    await Promise.all([...senders, reader]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(ackedDuringBackup > 0, 'mail kept arriving while the backup ran');

    const manifest = JSON.parse(readFileSync(join(backupDir, 'manifest.json'), 'utf8'));
    assert.equal(manifest.format, 'popgate-backup');
    assert.equal(manifest.method, 'hard links', 'the backup is on the file system of data_dir');
    assert.deepEqual(manifest.databases.map((db: { file: string }) => db.file), ['popgate.sqlite', join('queue', 'index.sqlite')]);
    assert.equal(manifest.queue.messages, 1);
    assert.equal(manifest.dkimKeys, 1);
    assert.equal(statSync(backupDir).mode & 0o777, 0o700, 'a backup holds password hashes and keys: its owner only');
    assert.match(result.stdout, /^backup of .* \(hard links\)/m);
    assert.ok(!existsSync(join(backupDir, 'data', 'popgate.sqlite-wal')), 'each database is one file');

    const restoreConfig = configFile(work, restoredDir);
    const restored = await runPopgate(restoreConfig, ['restore', backupDir]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stdout, /^restored the backup of mail\.example\.test/m);

    // Each restored message file is byte for byte the file the server holds (nothing was
    // deleted since: the POP3 reader never deletes).
    const served = maildirFiles(server.app.config.data_dir, 'example.test');
    const restoredFiles = maildirFiles(restoredDir, 'example.test');
    assert.ok(restoredFiles.size >= 40);
    for (const [key, bytes] of restoredFiles) assert.ok(served.get(key)?.equals(bytes), `${key} is byte-identical to the served file`);

    // Over POP3 too: what the restored server sends for a message is what the running one sends.
    const original = new Map<string, string>();
    for (const user of USERS) {
      for (const text of await fetchAll(server.pop3Port, user)) original.set(/^Subject: backup (\S+)$/m.exec(text)![1], text);
    }
    const revived = await startTestServer({ data_dir: restoredDir });
    try {
      const seen = new Map<string, number>();
      for (const user of USERS) {
        for (const text of await fetchAll(revived.pop3Port, user)) {
          const id = /^Subject: backup (\S+)$/m.exec(text)?.[1];
          assert.ok(id, `a restored message has its subject:\n${text.slice(0, 300)}`);
          assert.ok(text.endsWith(body(id)), `message ${id} is whole`);
          assert.ok(text.includes(`To: ${user}\r\n`), `message ${id} is in the mailbox it was sent to`);
          assert.equal(text, original.get(id), `message ${id} is retrieved byte-identical`);
          seen.set(id, (seen.get(id) ?? 0) + 1);
        }
      }
      const before = [...acked].filter(([, entry]) => entry.at < backupBegan).map(([id]) => id);
      assert.ok(before.length >= 40);
      assert.deepEqual(before.filter((id) => !seen.has(id)), [], 'every message acknowledged before the backup began is restored');
      assert.deepEqual([...seen].filter(([, count]) => count > 1), [], 'no message twice (one moved from new/ to cur/ during the backup included)');
      for (const user of ['new@example.test', 'cur@example.test']) {
        const [text, ...more] = await fetchAll(revived.pop3Port, user);
        assert.equal(more.length, 0);
        assert.ok(text.endsWith(body(`for-${user.split('@')[0]}`)), `the mailbox of ${user}`);
      }
      assert.equal(revived.app.config.data_dir, restoredDir);
      assert.deepEqual((await revived.app.queue.list()).map((message) => message.id), [queuedId], 'the queued message is back, and indexed');
      assert.equal(readFileSync(keyPath(join(restoredDir, 'dkim'), 'example.test', 'popgate'), 'utf8'), keyPem);
      assert.equal(readFileSync(join(restoredDir, 'tls', 'self-signed-cert.pem'), 'utf8'), certificatePem);
    } finally {
      await revived.close();
    }
  });

  test('a backup on another file system is made of copies, and restores the same files', { skip: otherFileSystem(work) ? false : `${SHM} is not another file system here` }, async () => {
    const target = mkdtempSync(join(SHM, 'popgate-backup-copies-'));
    const restoredCopy = join(work, 'restored-from-copies');
    try {
      rmSync(target, { recursive: true }); // a folder of its own that does not exist yet
      const result = await runPopgate(runningConfig, ['backup', target]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(JSON.parse(readFileSync(join(target, 'manifest.json'), 'utf8')).method, 'copies');
      assert.doesNotMatch(result.stdout, /hard links/);
      const restored = await runPopgate(configFile(work, restoredCopy), ['restore', target]);
      assert.equal(restored.code, 0, restored.stderr);
      const served = maildirFiles(server.app.config.data_dir, 'example.test');
      const copied = maildirFiles(restoredCopy, 'example.test');
      assert.deepEqual([...copied.keys()].sort(), [...served.keys()].sort(), 'every message, once (no mail arrives now)');
      for (const [key, bytes] of copied) assert.ok(served.get(key)!.equals(bytes), `${key} is byte-identical`);
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  test('a mailbox claimed by a POP3 login while the backup reads it is taken whole, each message once', async () => {
    // 10,000 messages wait in new/; the moment the backup starts on this Maildir, a POP3 login
    // moves them all to cur/, under the backup's feet.
    const user = 'carol@example.test';
    await server.addUser(user);
    const warm = await Pop3Client.connect(server.pop3Port); // the next login is then quick (verified-login cache)
    await warm.line();
    assert.match(await warm.login(user, PASSWORD), /^\+OK/);
    await warm.command('QUIT');
    warm.close();
    // Written straight into new/ as a Maildir writer would (popgate's own delivery fsyncs
    // each one, which would make this slow): enough files that claiming and taking them
    // both take a while.
    const count = 10_000;
    const newDir = join(server.app.mailstore.location(user), 'new');
    for (let i = 0; i < count; i++) {
      const text = `Subject: claimed ${i}\r\n\r\nmessage ${i}\r\n`;
      writeFileSync(join(newDir, `1700000000.M${i}P1Q${i}R0.other.example,S=${text.length}`), text);
    }
    const target = join(work, 'backup-claimed');
    const mailbox = join(target, 'data', 'mail', 'example.test', 'carol');
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.command(`USER ${user}`), /^\+OK/);
    const backup = runPopgate(runningConfig, ['backup', target]);
    let done = false;
    void backup.finally(() => (done = true));
    while (!done && !existsSync(join(mailbox, 'new'))) await new Promise((resolve) => setImmediate(resolve));
    assert.ok(!done, 'the backup reached the mailbox');
    assert.match(await client.command(`PASS ${PASSWORD}`), /^\+OK Logged in, 10000 messages/, 'the login claims every message');
    await client.command('QUIT');
    client.close();
    const result = await backup;
    assert.equal(result.code, 0, result.stderr);
    const taken = [...readdirSync(join(mailbox, 'new')), ...readdirSync(join(mailbox, 'cur'))];
    assert.equal(new Set(taken.map((name) => name.split(':')[0])).size, count, 'every message is taken');
    assert.equal(taken.length, count, 'and none twice');
    assert.ok(readdirSync(join(mailbox, 'cur')).length > 0, 'the login moved messages while the backup read the folder');
  });

  test('restore refuses while the server runs: a listener of the config answers, or a process has the database open', async () => {
    assert.ok(existsSync(join(backupDir, 'manifest.json')), 'runs after the backup test');
    const withListeners = await runPopgate(runningConfig, ['restore', '--force', backupDir]);
    assert.equal(withListeners.code, 1);
    assert.match(withListeners.stderr, /^popgate: popgate is running \(its pop3 listener 127\.0\.0\.1:\d+ accepts connections\): stop it first/m);
    // A config without listeners (or with other addresses): the open database still tells.
    const withoutListeners = await runPopgate(configFile(work, server.app.config.data_dir), ['restore', '--force', backupDir]);
    assert.equal(withoutListeners.code, 1);
    assert.match(withoutListeners.stderr, new RegExp(`popgate is running \\(process ${process.pid} \\(\\S+\\) has \\S+popgate\\.sqlite open\\)`));
    assert.ok(!readdirSync(server.app.config.data_dir).some((name) => name.startsWith('.before-restore-')), 'nothing was moved');
  });

  test('restore into a data_dir that is not empty needs --force, which moves the old contents aside', async () => {
    const target = join(work, 'occupied');
    mkdirSync(join(target, 'mail'), { recursive: true });
    writeFileSync(join(target, 'popgate.sqlite'), 'an older database');
    const config = configFile(work, target);
    const refused = await runPopgate(config, ['restore', backupDir]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /is not empty \(mail, popgate\.sqlite\): restore into an empty folder, or add --force/);
    const forced = await runPopgate(config, ['restore', '--force', backupDir]);
    assert.equal(forced.code, 0, forced.stderr);
    const aside = readdirSync(target).filter((name) => name.startsWith('.before-restore-'));
    assert.equal(aside.length, 1);
    assert.equal(readFileSync(join(target, aside[0], 'popgate.sqlite'), 'utf8'), 'an older database');
    assert.match(forced.stdout, /what was there before is in \S+\.before-restore-/);
    assert.notEqual(readFileSync(join(target, 'popgate.sqlite'), 'latin1').slice(0, 15), 'an older databa');
  });

  test('backup refuses a folder that is not empty; restore refuses a folder that is not a finished backup', async () => {
    const used = join(work, 'used');
    mkdirSync(used);
    writeFileSync(join(used, 'something'), 'x');
    const backup = await runPopgate(runningConfig, ['backup', used]);
    assert.equal(backup.code, 1);
    assert.match(backup.stderr, /used is not empty: give a new folder for each backup/);
    const unfinished = join(work, 'unfinished');
    mkdirSync(join(unfinished, 'data'), { recursive: true });
    const restore = await runPopgate(configFile(work, join(work, 'never')), ['restore', unfinished]);
    assert.equal(restore.code, 1);
    assert.match(restore.stderr, /unfinished is not a popgate backup: it has no manifest\.json \(the backup did not finish\)/);
    assert.ok(!existsSync(join(work, 'never')), 'nothing was created');
  });
});
