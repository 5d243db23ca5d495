import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// A full disk must not keep a customer from logging in and deleting mail to free space: the
// claim of new/ into cur/ can fail there (on ext4 a rename that makes cur/ grow by a block gets
// ENOSPC). A small loop-mounted ext4 file system holds the mailboxes; making one needs root
// (mkfs.ext4, mount -o loop). tmpfs would not do: its folders take no blocks, so a rename
// never fails for want of space. Without root the test is skipped, and fails under CI=1.

const USER = 'full@example.test';
const MESSAGES = 300; // with ~80-octet names, cur/ needs several blocks

function loopExt4Missing(): string | false {
  const reason =
    process.getuid?.() !== 0 ? 'needs root to mount a loop file system' : !existsSync('/usr/sbin/mkfs.ext4') && !existsSync('/sbin/mkfs.ext4') ? 'mkfs.ext4 not installed (apt-get install e2fsprogs)' : false;
  if (reason && process.env.CI) throw new Error(`CI: ${reason}: the disk-full test cannot be skipped`);
  return reason;
}

/** Writes zeros until the file system is full (root may use the reserved blocks too: none made). */
function fillUp(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (let size = chunk.length; size >= 1; ) {
      try {
        writeSync(fd, chunk, 0, size);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        size = Math.floor(size / 2);
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe('POP3 on a full disk (loop ext4)', { skip: loopExt4Missing() }, () => {
  let server: TestServer;
  let image: string;
  let mountPoint: string;
  before(async () => {
    server = await startTestServer();
    image = join(mkdtempSync(join(tmpdir(), 'popgate-ext4-')), 'mail.img');
    execFileSync('truncate', ['-s', '8M', image]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
    mountPoint = join(server.dir, 'mail');
    mkdirSync(mountPoint, { recursive: true });
    execFileSync('mount', ['-o', 'loop', image, mountPoint]);
    await server.addUser(USER);
    for (let i = 0; i < MESSAGES; i++) await server.deliver(USER, message(`message ${i}`));
    fillUp(join(mountPoint, 'filler'));
  });
  after(async () => {
    // Lazily unmounted first (the server may still hold files there), so removing the data
    // folder does not stop at a busy mount point.
    if (mountPoint) execFileSync('umount', ['-l', mountPoint]);
    await server.close();
    if (image) rmSync(join(image, '..'), { recursive: true, force: true });
  });

  test('the customer logs in, reads and deletes mail; what could not be claimed is served from new/ and claimed later', async () => {
    const folder = server.app.mailstore.location(USER);
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.login(USER, PASSWORD), new RegExp(`^\\+OK Logged in, ${MESSAGES} messages`));
    assert.ok(readdirSync(join(folder, 'new')).length > 0, 'the disk really was too full to claim every message');
    const uidls = (await client.multiline('UIDL')).lines;
    assert.equal(new Set(uidls.map((line) => line.split(' ')[1])).size, MESSAGES);
    assert.match(await client.command(`RETR ${MESSAGES}`), /^\+OK/);
    assert.match((await client.multilineRaw()).toString(), new RegExp(`Subject: message ${MESSAGES - 1}\r\n`), 'delivery order kept across new/ and cur/');
    for (let i = 1; i <= MESSAGES; i += 2) assert.match(await client.command(`DELE ${i}`), /^\+OK/);
    assert.match(await client.command('QUIT'), new RegExp(`^\\+OK Goodbye, ${MESSAGES / 2} messages deleted`));

    // Space was freed: the next login claims the rest, and the mailbox is whole.
    rmSync(join(mountPoint, 'filler'));
    const again = await Pop3Client.connect(server.pop3Port);
    await again.line();
    assert.match(await again.login(USER, PASSWORD), new RegExp(`^\\+OK Logged in, ${MESSAGES / 2} messages`));
    assert.deepEqual(readdirSync(join(folder, 'new')), []);
    assert.deepEqual((await again.multiline('UIDL')).lines, uidls.filter((_, i) => i % 2 === 1).map((line, i) => `${i + 1} ${line.split(' ')[1]}`));
    await again.command('QUIT');
  });
});

describe('leftovers in a mailbox tmp/', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.addUser('crashed@example.test');
  });
  after(() => server.close());

  test('files untouched for 36 hours (the Maildir spec) go when the mailbox is listed; younger ones and mail stay', async () => {
    const folder = server.app.mailstore.location('crashed@example.test');
    await server.deliver('crashed@example.test', message('kept'));
    const old = (Date.now() - 37 * 3600_000) / 1000;
    const leftovers = [join(folder, 'tmp', 'killed-delivery'), join(folder, 'tmp', '3', 'killed-staged-delivery')];
    mkdirSync(join(folder, 'tmp', '3'), { recursive: true });
    for (const file of leftovers) {
      writeFileSync(file, 'half a message');
      utimesSync(file, old, old);
    }
    const young = join(folder, 'tmp', 'delivery-in-progress');
    writeFileSync(young, 'being written');
    const almost = join(folder, 'tmp', 'thirty-five-hours');
    writeFileSync(almost, 'not yet');
    utimesSync(almost, (Date.now() - 35 * 3600_000) / 1000, (Date.now() - 35 * 3600_000) / 1000);

    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.login('crashed@example.test', PASSWORD), /^\+OK Logged in, 1 message/);
    await client.command('QUIT');
    for (const file of leftovers) assert.equal(existsSync(file), false, file);
    assert.equal(existsSync(young), true);
    assert.equal(existsSync(almost), true);
    assert.equal(existsSync(join(folder, 'tmp', '3')), true, 'the staging folder itself stays');
  });
});
