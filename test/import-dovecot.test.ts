import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { missingEngine, startDovecot, type RunningDovecot } from './helpers/engines.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { exited, MAIN, NODE, spawnServer, type ServerProcess } from './helpers/process.ts';

// Moving in from a real Dovecot 2.3: mail delivered into its Maildirs, some of it read and left
// on the server over its POP3 (so Dovecot writes its dovecot-uidlist), one mailbox whose
// uidlist carries kept UIDLs and a POP3 order (the P and O fields Dovecot's own migrations
// write). After `popgate import dovecot` (and, into another data folder, `popgate import pop3`
// from the same server), popgate's POP3 lists every user's mail with Dovecot's UIDLs, byte for
// byte and in Dovecot's order, serves each message byte-identical, and the users log in with
// their Dovecot passwords, after which popgate keeps scrypt hashes.

const USERS = [
  { address: 'alice@example.test', password: 'alice password 1', scheme: 'SHA512-CRYPT' },
  { address: 'bob@example.test', password: 'bob password 22', scheme: 'BLF-CRYPT' },
  { address: 'dave@other.test', password: 'dave password 333', scheme: 'SHA512-CRYPT' },
  { address: 'erin@other.test', password: 'erin password 4444', scheme: 'ARGON2ID' },
];

const ALICE_MAIL = [
  'From: a@example.net\r\nSubject: one\r\n\r\nFirst.\r\n',
  'From: a@example.net\nSubject: two, LF only\n\nSecond.\n.leading dot\n',
  'From: a@example.net\r\nSubject: three\r\n\r\n..two dots\r\n.\r\nThird.\r\n',
  'From: a@example.net\r\nSubject: four, 8bit\r\n\r\nGr\u00fc\u00dfe\r\n',
  'From: a@example.net\r\nSubject: five, no line end at the end\r\n\r\nlast line',
];

interface Listing {
  uidl: string[];
  sizes: string[];
  messages: Buffer[];
}

/** UIDL, LIST and every RETR (or TOP, to `peek`) of a mailbox over POP3 (no DELE), as a client sees them. */
async function listingOf(port: number, user: string, password: string, options: { retrieve?: number[]; peek?: boolean } = {}): Promise<Listing> {
  const client = await Pop3Client.connect(port);
  try {
    assert.match(await client.line(), /^\+OK/);
    const login = await client.login(user, password);
    assert.match(login, /^\+OK/, `${user} logs in: ${login}`);
    const uidl = (await client.multiline('UIDL')).lines.map((line) => line.slice(line.indexOf(' ') + 1));
    const sizes = (await client.multiline('LIST')).lines.map((line) => line.slice(line.indexOf(' ') + 1));
    const messages: Buffer[] = [];
    for (const number of options.retrieve ?? uidl.map((_, index) => index + 1)) {
      // TOP with more lines than any message has is the whole message, without marking it read.
      assert.match(await client.command(options.peek ? `TOP ${number} 1000000` : `RETR ${number}`), /^\+OK/);
      messages.push(await client.multilineRaw());
    }
    assert.match(await client.command('QUIT'), /^\+OK/);
    return { uidl, sizes, messages };
  } finally {
    client.close();
  }
}

async function popgate(config: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const code = await exited(child);
  return { code: code ?? -1, stdout, stderr };
}

/** Every file of a tree with its size, time and content hash: to show the source was not changed. */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        const stat = statSync(path);
        out.push(`${path} ${stat.size} ${stat.mtimeMs} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`);
      }
    }
  };
  walk(root);
  return out.sort();
}

describe('moving in from a real Dovecot', { skip: missingEngine('dovecot') }, () => {
  let dovecot: RunningDovecot;
  const dir = mkdtempSync(join(tmpdir(), 'popgate-import-dovecot-'));
  const configFor = (name: string) => {
    const path = join(dir, `${name}.toml`);
    // One process: quicker to start on a busy machine, and nothing to fork.
    writeFileSync(path, `data_dir = "${join(dir, name)}"\nhostname = "mail.example.test"\n[server]\nworkers = 1\n[pop3]\nlisten = ["127.0.0.1:0"]\n[smtp]\nlisten = []\n`);
    return path;
  };
  const before_: Record<string, Listing> = {};
  let passwords: string;

  before(async () => {
    dovecot = await startDovecot(USERS);
    for (const text of ALICE_MAIL) dovecot.deliver('alice@example.test', text);
    for (let i = 1; i <= 3; i++) dovecot.deliver('bob@example.test', `Subject: bob ${i}\r\n\r\nHello bob ${i}.\r\n`);
    // Alice reads two messages and leaves them (RETR, no DELE): Dovecot moves her mail to cur/,
    // marks those two seen, and writes its dovecot-uidlist. Bob only lists his.
    await listingOf(dovecot.port, 'alice@example.test', 'alice password 1', { retrieve: [1, 2] });
    await listingOf(dovecot.port, 'bob@example.test', 'bob password 22', { retrieve: [] });
    // Dave's mail came from an older server: his uidlist keeps its UIDLs (P, one of them empty:
    // the base file name) and its POP3 order (O), which Dovecot serves as they are.
    const dave = dovecot.maildir('dave@other.test');
    const names = [1, 2, 3, 4].map((i) => dovecot.deliver('dave@other.test', `Subject: dave ${i}\r\n\r\nHello dave ${i}.\r\n`));
    const uidlist = [
      '3 V1700000000 N5 G0123456789abcdef0123456789abcdef',
      `1 Pold/uidl,1:x O3 :${names[0]}`,
      `2 PX-0002 O1 :${names[1]}`,
      `3 P O2 :${names[2]}`,
      `4 :${names[3]}`,
      '',
    ].join('\n');
    writeFileSync(join(dave, 'dovecot-uidlist'), uidlist);
    chownSync(join(dave, 'dovecot-uidlist'), statSync(dave).uid, statSync(dave).gid);
    for (const user of USERS) before_[user.address] = await listingOf(dovecot.port, user.address, user.password, { peek: true });
    passwords = join(dir, 'passwords');
    writeFileSync(passwords, `# address password\n${USERS.map((u) => `${u.address} ${u.password}`).join('\n')}\n`);
  });

  after(async () => {
    await dovecot?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test("Dovecot serves what the test set up (its default UIDL format, dave's kept UIDLs and order)", () => {
    assert.equal(before_['alice@example.test'].uidl.length, ALICE_MAIL.length);
    assert.match(before_['alice@example.test'].uidl[0], /^[0-9a-f]{16}$/, 'pop3_uidl_format %08Xu%08Xv');
    assert.deepEqual(before_['dave@other.test'].uidl.slice(0, 3), ['X-0002', before_['dave@other.test'].uidl[1], 'old/uidl,1:x']);
    assert.match(before_['dave@other.test'].uidl[1], /^\d+\.M\d+P\d+\.test\.invalid,S=\d+$/, 'an empty P: the base file name');
    assert.equal(before_['erin@other.test'].uidl.length, 0);
  });

  describe('popgate import dovecot', () => {
    const config = configFor('from-maildir');
    let server: ServerProcess | undefined;
    after(() => server?.child.kill('SIGKILL'));

    test('imports users and mail without changing the source; a second run imports nothing twice', async () => {
      const source = snapshot(dovecot.vmail);
      const args = ['import', 'dovecot', '--passwd-file', dovecot.passwdFile, '--mail-location', `maildir:${dovecot.vmail}/%d/%n`];
      const dry = await popgate(config, [...args, '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr + dry.stdout);
      assert.match(dry.stdout, /users: 4 would be created/);
      assert.match(dry.stdout, /messages: 12 would be imported/);
      const first = await popgate(config, args);
      assert.equal(first.code, 0, first.stderr + first.stdout);
      assert.match(first.stdout, /users: 4 created, 0 already there/);
      assert.match(first.stdout, /messages: 12 imported \(\d+ B, 12 as hard links\), 0 imported before/);
      assert.doesNotMatch(first.stdout, /skipped/);
      const again = await popgate(config, args);
      assert.equal(again.code, 0, again.stderr + again.stdout);
      assert.match(again.stdout, /users: 0 created, 4 already there/);
      assert.match(again.stdout, /messages: 0 imported \(0 B\), 12 imported before/);
      assert.deepEqual(snapshot(dovecot.vmail), source, 'the source Maildirs are as they were');
    });

    test("popgate's POP3 lists Dovecot's UIDLs in Dovecot's order and serves every message byte for byte", async () => {
      server = await spawnServer(config);
      for (const user of USERS) {
        const mine = await listingOf(server.pop3Port, user.address, user.password);
        const theirs = before_[user.address];
        assert.deepEqual(mine.uidl, theirs.uidl, `${user.address}: UIDL`);
        assert.deepEqual(mine.messages, theirs.messages, `${user.address}: RETR`);
      }
    });

    test('the users logged in with their Dovecot passwords, and now have scrypt hashes; read/unread state came along', async () => {
      const store = new SqliteAccountStore(openDatabase(join(dir, 'from-maildir')), true);
      try {
        for (const user of USERS) assert.equal(await store.passwordScheme(user.address), 'scrypt', user.address);
      } finally {
        await store.close();
      }
      const cur = join(dir, 'from-maildir', 'mail', 'example.test', 'alice', 'cur');
      const seen = readdirSync(cur).filter((name) => /:2,[A-Z]*S/.test(name));
      assert.equal(seen.length, 2, 'the two messages alice had read');
    });
  });

  describe('popgate import pop3 and popgate import verify', () => {
    const config = configFor('from-pop3');

    test('imports over POP3 with the same UIDLs, order and bytes; Dovecot keeps every message', async () => {
      const args = ['import', 'pop3', '--server', `127.0.0.1:${dovecot.port}`, '--passwords', passwords, '--passwd-file', dovecot.passwdFile];
      const first = await popgate(config, args);
      assert.equal(first.code, 0, first.stderr + first.stdout);
      assert.match(first.stdout, /users: 4 created/);
      assert.match(first.stdout, /messages: 12 imported/);
      const again = await popgate(config, args);
      assert.match(again.stdout, /messages: 0 imported \(0 B\), 12 imported before/);
      const server = await spawnServer(config);
      try {
        for (const user of USERS) {
          const mine = await listingOf(server.pop3Port, user.address, user.password);
          const theirs = await listingOf(dovecot.port, user.address, user.password, { peek: true });
          assert.deepEqual(theirs.uidl, before_[user.address].uidl, `${user.address}: nothing removed from Dovecot`);
          assert.deepEqual(mine.uidl, theirs.uidl, `${user.address}: UIDL`);
          assert.deepEqual(mine.messages, theirs.messages, `${user.address}: RETR`);
        }
      } finally {
        server.child.kill('SIGKILL');
      }
    });

    test('verify reports equality, then each difference once something changes', async () => {
      const verify = () => popgate(config, ['import', 'verify', '--pop3', `127.0.0.1:${dovecot.port}`, '--passwords', passwords]);
      const equal = await verify();
      assert.equal(equal.code, 0, equal.stderr + equal.stdout);
      assert.match(equal.stdout, /all 4 user\(s\) equal/);
      // A message removed here, and one more arriving there.
      const bobCur = join(dir, 'from-pop3', 'mail', 'example.test', 'bob', 'cur');
      unlinkSync(join(bobCur, readdirSync(bobCur).sort()[0]));
      dovecot.deliver('erin@other.test', 'Subject: late\r\n\r\nArrived after the import.\r\n');
      const different = await verify();
      assert.equal(different.code, 1, different.stderr + different.stdout);
      assert.match(different.stdout, /bob@example\.test: DIFFERENT\n {2}missing here: 1 \(1 /);
      assert.match(different.stdout, /erin@other\.test: DIFFERENT\n {2}missing here: 1/);
      assert.match(different.stdout, /alice@example\.test: equal/);
      assert.match(different.stdout, /2 of 4 user\(s\) differ/);
      // Against a popgate nobody was imported into: each user is named, not compared with nothing.
      const empty = await popgate(configFor('empty'), ['import', 'verify', '--pop3', `127.0.0.1:${dovecot.port}`, '--passwords', passwords]);
      assert.equal(empty.code, 1, empty.stderr + empty.stdout);
      assert.match(empty.stdout, /alice@example\.test: DIFFERENT\n {2}no such user here \(not imported yet\?\)/);
      assert.match(empty.stdout, /4 of 4 user\(s\) differ/);
    });
  });
});
