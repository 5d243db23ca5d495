import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { importDovecot } from '../src/import/dovecot.ts';
import { importPop3, type Credentials } from '../src/import/pop3.ts';
import { ImportReport, ProgressBar } from '../src/import/report.ts';
import { ImportTarget, MailboxImportError } from '../src/import/target.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';

// Imports from sources that are damaged, hostile or run out of room: each stops or skips with a
// message naming the user and the file, leaves what popgate already had as it was, and a later
// run, once the cause is gone, goes on from where the first stopped without importing anything
// twice. Real files, a real SQLite and Maildir, a POP3 server on a loopback socket.

const root = mkdtempSync(join(tmpdir(), 'popgate-import-bad-'));
after(() => rmSync(root, { recursive: true, force: true }));
let folders = 0;

/** A quiet progress bar (not a terminal). */
const quiet = () => new ProgressBar({ isTTY: false } as NodeJS.WriteStream);

interface World {
  vmail: string;
  passwdFile: string;
  dataDir: string;
  accounts: SqliteAccountStore;
  store: MaildirStore;
  /** Runs `popgate import dovecot` in-process against this world. */
  run(options?: { copy?: boolean }): Promise<ImportReport>;
  /** Dovecot-style Maildir with a uidlist: messages get UIDs 1.., UIDL %08Xu%08Xv with V=1700000000. */
  mailbox(address: string, count: number, options?: { bytes?: number }): string[];
  listing(address: string): Promise<string[]>;
  close(): Promise<void>;
}

function world(dataDir = join(root, `data-${folders}`)): World {
  const base = join(root, `source-${folders++}`);
  const vmail = join(base, 'vmail');
  const passwdFile = join(base, 'passwd');
  mkdirSync(vmail, { recursive: true });
  writeFileSync(passwdFile, '');
  const accounts = new SqliteAccountStore(openDatabase(dataDir), true);
  const store = new MaildirStore(dataDir, 'mail.example.test');
  return {
    vmail,
    passwdFile,
    dataDir,
    accounts,
    store,
    async run(options = {}) {
      const report = new ImportReport();
      await importDovecot({ passwdFile, maildirs: vmail, uidlFormat: '%08Xu%08Xv', dryRun: false }, accounts, new ImportTarget(store, options), report, quiet());
      return report;
    },
    mailbox(address, count, options = {}) {
      const [local, domain] = address.split('@');
      const maildir = join(vmail, domain, local);
      for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(maildir, sub), { recursive: true });
      const names: string[] = [];
      const uidls: string[] = [];
      const records: string[] = [];
      for (let i = 1; i <= count; i++) {
        const body = `Subject: ${address} ${i}\r\n\r\n${'x'.repeat(Math.max(0, (options.bytes ?? 60) - 40))}\r\n`;
        const name = `${1_700_000_000 + i}.M${i}P1.old.example,S=${body.length}`;
        writeFileSync(join(maildir, 'cur', `${name}:2,S`), body);
        names.push(name);
        records.push(`${i} :${name}`);
        uidls.push(`${i.toString(16).padStart(8, '0')}6553f100`);
      }
      writeFileSync(join(maildir, 'dovecot-uidlist'), `3 V1700000000 N${count + 1} G00\n${records.join('\n')}\n`);
      writeFileSync(passwdFile, `${readFileSync(passwdFile, 'utf8')}${address}:{PLAIN}password of ${address}\n`);
      return uidls;
    },
    async listing(address) {
      return (await store.list(address)).map((message) => message.uidl);
    },
    close: () => accounts.close(),
  };
}

describe('imports from damaged, hostile or full sources', () => {
  test('a truncated or corrupt dovecot-uidlist skips its user, naming the file; the others are imported; once repaired, a second run imports it', async () => {
    const w = world();
    const alice = w.mailbox('alice@example.test', 3);
    const bob = w.mailbox('bob@example.test', 3);
    const carol = w.mailbox('carol@example.test', 3);
    const bobList = join(w.vmail, 'example.test', 'bob', 'dovecot-uidlist');
    const carolList = join(w.vmail, 'example.test', 'carol', 'dovecot-uidlist');
    const bobText = readFileSync(bobList, 'utf8');
    const carolText = readFileSync(carolList, 'utf8');
    writeFileSync(bobList, bobText.slice(0, -5));
    writeFileSync(carolList, carolText.replace(/^2 /m, '9 '));
    const first = await w.run();
    assert.deepEqual(first.skipped.map((s) => s.subject), ['bob@example.test', 'carol@example.test']);
    assert.match(first.skipped[0].reason, new RegExp(`${bobList} is damaged \\(truncated`));
    assert.match(first.skipped[1].reason, new RegExp(`${carolList} is damaged \\(line 4: UID 3 is not above the UID before it \\(9\\)`));
    assert.deepEqual(await w.listing('alice@example.test'), alice);
    assert.deepEqual(await w.listing('bob@example.test'), [], 'nothing of a skipped user');
    assert.equal(await w.accounts.getUser('bob@example.test'), undefined, 'not created either');
    writeFileSync(bobList, bobText);
    writeFileSync(carolList, carolText);
    const second = await w.run();
    assert.deepEqual(second.skipped, []);
    assert.equal(second.messagesImported, 6);
    assert.equal(second.messagesAlready, 3);
    assert.deepEqual(await w.listing('bob@example.test'), bob);
    assert.deepEqual(await w.listing('carol@example.test'), carol);
    await w.close();
  });

  test('foreign entries in cur/ and new/ (a folder, a link) are reported and left alone; the messages are imported', async () => {
    const w = world();
    const alice = w.mailbox('alice@example.test', 2);
    const cur = join(w.vmail, 'example.test', 'alice', 'cur');
    mkdirSync(join(cur, 'lost+found'));
    symlinkSync('/etc/passwd', join(w.vmail, 'example.test', 'alice', 'new', 'evil'));
    const report = await w.run();
    assert.deepEqual(
      report.skipped.map((s) => `${s.subject} ${s.what}`),
      ['alice@example.test entry', 'alice@example.test entry'],
    );
    assert.ok(report.skipped.some((s) => s.reason.includes(`${join(cur, 'lost+found')} (a folder): not a message`)));
    assert.ok(report.skipped.some((s) => s.reason.includes('evil (a symbolic link)')));
    assert.deepEqual(await w.listing('alice@example.test'), alice);
    await w.close();
  });

  test('an unsupported password scheme skips its user, naming the line; an address claimed twice or a Maildir shared by two users skips both', async () => {
    const w = world();
    w.mailbox('alice@example.test', 1);
    w.mailbox('bob@example.test', 1);
    w.mailbox('dave@example.test', 1);
    writeFileSync(
      w.passwdFile,
      [
        'alice@example.test:{PLAIN}alice password',
        'bob@example.test:{CRAM-MD5}6fb80338fbebe8da9f9b7a8d117e26c01f113de588fe039b0b3cda66db67b3c9',
        'carol@example.test:{PLAIN}carol password::::::userdb_mail=maildir:' + join(w.vmail, 'example.test', 'dave'),
        'dave@example.test:{PLAIN}dave password',
        'erin@example.test:{PLAIN}one',
        'Erin@Example.test:{PLAIN}two',
        'nodomain:{PLAIN}x',
        '',
      ].join('\n'),
    );
    const report = await w.run();
    const reasons = Object.fromEntries(report.skipped.map((s) => [s.subject, s.reason]));
    assert.match(reasons['bob@example.test'], new RegExp(`${w.passwdFile} line 2: the password scheme \\{CRAM-MD5\\} is not supported`));
    assert.match(reasons['erin@example.test'], /claimed twice, by lines 5 and 6/);
    assert.match(reasons['carol@example.test'], /is also that of dave@example\.test/);
    assert.match(reasons['dave@example.test'], /is also that of carol@example\.test/);
    assert.match(reasons['nodomain'], /line 7: not an address/);
    assert.deepEqual((await w.accounts.listUsers()).map((u) => u.address), ['alice@example.test']);
    await w.close();
  });

  test("popgate's existing data stays as it was: a user already there keeps the password and the mail popgate delivered", async () => {
    const w = world();
    const alice = w.mailbox('alice@example.test', 2);
    await w.accounts.addDomain('example.test');
    await w.accounts.addUser('alice@example.test', 'set in popgate');
    await w.store.deliver('alice@example.test', Buffer.from('Subject: delivered by popgate\r\n\r\nhi\r\n'));
    const [delivered] = await w.listing('alice@example.test');
    const report = await w.run();
    assert.equal(report.usersExisting, 1);
    assert.equal(report.usersCreated, 0);
    assert.deepEqual(await w.listing('alice@example.test'), [...alice, delivered], 'old mail first, in its order');
    assert.ok(await w.accounts.authenticate('alice@example.test', 'set in popgate'), 'the password popgate had');
    await w.close();
  });

  test('a message the customer deleted in popgate after the import is not imported again by a later run', async () => {
    const w = world();
    const alice = w.mailbox('alice@example.test', 3);
    await w.run();
    const listed = await w.store.list('alice@example.test');
    assert.deepEqual(await w.store.remove('alice@example.test', [listed[1]]), { removed: 1, failed: [] });
    const again = await w.run();
    assert.equal(again.messagesImported, 0);
    assert.equal(again.messagesAlready, 3);
    assert.deepEqual(await w.listing('alice@example.test'), [alice[0], alice[2]]);
    await w.close();
  });

  describe('a POP3 server that drops the connection in the middle of a RETR', () => {
    const MESSAGES = [1, 2, 3, 4].map((i) => `Subject: message ${i}\r\n\r\n${'line of text\r\n'.repeat(200)}`);
    const UIDLS = ['u-1', 'u/2', 'u,3', 'u:4'];
    let dropAt = 3;
    let deletes = 0;
    let server: Server;
    const start = async () => {
      server = createServer((socket: Socket) => {
        socket.write('+OK scripted POP3\r\n');
        let pending = '';
        socket.on('data', (chunk) => {
          pending += chunk.toString('latin1');
          for (let end = pending.indexOf('\r\n'); end !== -1; end = pending.indexOf('\r\n')) {
            const [verb, arg] = pending.slice(0, end).split(' ');
            pending = pending.slice(end + 2);
            if (verb === 'USER' || verb === 'PASS') socket.write('+OK\r\n');
            else if (verb === 'UIDL') socket.write(`+OK\r\n${UIDLS.map((u, i) => `${i + 1} ${u}\r\n`).join('')}.\r\n`);
            else if (verb === 'RETR' && Number(arg) === dropAt) {
              socket.write(`+OK\r\n${MESSAGES[dropAt - 1].slice(0, 700)}`);
              socket.destroy();
              return;
            } else if (verb === 'RETR') socket.write(`+OK\r\n${MESSAGES[Number(arg) - 1]}.\r\n`);
            else if (verb === 'DELE') {
              deletes++;
              socket.write('+OK\r\n');
            } else if (verb === 'QUIT') socket.end('+OK\r\n');
            else socket.write('-ERR\r\n');
          }
        });
        socket.on('error', () => {});
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    };
    after(() => server?.close());

    test('the user is skipped naming the UIDL; what came before stays; the next run takes the rest, in order, never sending DELE', async () => {
      await start();
      const port = (server.address() as { port: number }).port;
      const w = world();
      const credentials: Credentials[] = [{ address: 'alice@example.test', login: 'alice', password: 'pw on the old server', line: 1 }];
      const run = async () => {
        const report = new ImportReport();
        await importPop3({ server: { host: '127.0.0.1', port, security: 'none', timeoutMs: 5000 }, credentials, dryRun: false }, w.accounts, new ImportTarget(w.store), report, quiet());
        return report;
      };
      const first = await run();
      assert.equal(first.skipped.length, 1);
      assert.match(first.skipped[0].reason, /UIDL u,3: 127\.0\.0\.1:\d+: the server closed the connection \(during RETR 3\)/);
      assert.deepEqual(await w.listing('alice@example.test'), ['u-1', 'u/2']);
      assert.deepEqual(readdirSync(join(w.store.pathOf('alice@example.test'), 'tmp')), [], 'no half-written file left');
      dropAt = 0;
      const second = await run();
      assert.deepEqual(second.skipped, []);
      assert.equal(second.messagesImported, 2);
      assert.equal(second.messagesAlready, 2);
      const listed = await w.store.list('alice@example.test');
      assert.deepEqual(listed.map((m) => m.uidl), UIDLS);
      assert.equal(readFileSync(listed[2].ref, 'latin1'), MESSAGES[2]);
      assert.ok(await w.accounts.authenticate('alice@example.test', 'pw on the old server'), 'the password given, hashed with scrypt');
      assert.equal(deletes, 0);
      await w.close();
    });
  });

  describe('a disk that fills during an import', () => {
    const mountPoint = join(root, 'small-disk');
    mkdirSync(mountPoint);
    // A real full file system: a 1 MiB tmpfs (needs root, as CI has).
    const mounted = process.getuid?.() === 0 && spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint]).status === 0;
    after(() => {
      if (mounted) spawnSync('umount', [mountPoint]);
    });

    test('the import stops at once, naming the user; the data already there is intact; with room again the same command finishes it', { skip: mounted ? false : 'mounting a small tmpfs needs root' }, async () => {
      const dataDir = join(mountPoint, 'data');
      const w = world(dataDir);
      await w.accounts.addDomain('example.test');
      await w.accounts.addUser('zoe@example.test', 'zoe password 1');
      await w.store.deliver('zoe@example.test', Buffer.from('Subject: kept\r\n\r\nkept\r\n'));
      const zoe = await w.listing('zoe@example.test');
      // 2 x 60 messages of 12 KiB: more than the megabyte; copied, since the source is on another file system.
      const alice = w.mailbox('alice@example.test', 60, { bytes: 12 * 1024 });
      const bob = w.mailbox('bob@example.test', 60, { bytes: 12 * 1024 });
      await assert.rejects(w.run(), (error: Error) => error instanceof MailboxImportError && /the disk is full while importing (alice|bob)@example\.test/.test(error.message) && /ENOSPC/.test(error.message));
      assert.deepEqual(await w.listing('zoe@example.test'), zoe, "an existing user's mail is untouched");
      assert.ok(await w.accounts.authenticate('zoe@example.test', 'zoe password 1'));
      const aliceBefore = await w.listing('alice@example.test');
      assert.deepEqual(aliceBefore, alice.slice(0, aliceBefore.length), 'what was imported is a prefix in the right order');
      assert.equal(spawnSync('mount', ['-o', 'remount,size=8m', mountPoint]).status, 0);
      const second = await w.run();
      assert.deepEqual(second.skipped, []);
      assert.deepEqual(await w.listing('alice@example.test'), alice);
      assert.deepEqual(await w.listing('bob@example.test'), bob);
      assert.equal(second.messagesImported + second.messagesAlready, 120);
      await w.close();
    });
  });
});
