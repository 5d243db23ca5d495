import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MaildirStore, uidlOf } from '../src/mailstore/maildir.ts';

const dir = mkdtempSync(join(tmpdir(), 'popgate-maildir-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function collect(iterable: Iterable<Buffer> | AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of iterable) chunks.push(chunk);
  return Buffer.concat(chunks);
}

test('delivery writes tmp/ -> new/ with a unique name carrying ,S=<size>', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  const body = Buffer.from('Subject: hi\r\n\r\nHello\r\n');
  const name = await store.deliver('a@example.test', body);
  const path = store.pathOf('a@example.test');
  assert.deepEqual(readdirSync(join(path, 'tmp')), []);
  assert.deepEqual(readdirSync(join(path, 'new')), [name]);
  assert.deepEqual(readdirSync(join(path, 'cur')), []);
  assert.match(name, new RegExp(`^\\d+\\.M\\d+P${process.pid}Q\\d+R[0-9a-f]+\\.mail\\.example\\.test,S=${body.length}$`));
  assert.deepEqual(readFileSync(join(path, 'new', name)), body);
});

test('UIDLs are the unique names and survive a restart, a move to cur/ and flag changes', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  await store.deliver('b@example.test', Buffer.from('Subject: 1\r\n\r\n1\r\n'));
  const [first] = readdirSync(join(store.pathOf('b@example.test'), 'new'));
  await store.deliver('b@example.test', Buffer.from('Subject: 2\r\n\r\n2\r\n'));
  const before = (await store.list('b@example.test')).map((m) => m.uidl);
  const path = store.pathOf('b@example.test');
  // Another reader (an IMAP server) sets a flag on the first message.
  renameSync(join(path, 'cur', `${first}:2,`), join(path, 'cur', `${first}:2,S`));
  const reopened = new MaildirStore(dir, 'mail.example.test');
  assert.deepEqual((await reopened.list('b@example.test')).map((m) => m.uidl), before);
  assert.equal(before[0], first.split(',')[0]);
});

test('listing claims new mail: new/ is moved to cur/ with an empty info, as Maildir readers do', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  const name = await store.deliver('claim@example.test', Buffer.from('Subject: new\r\n\r\nnew\r\n'));
  const path = store.pathOf('claim@example.test');
  const [listed] = await store.list('claim@example.test');
  assert.deepEqual(readdirSync(join(path, 'new')), []);
  assert.deepEqual(readdirSync(join(path, 'cur')), [`${name}:2,`]);
  assert.equal(listed.ref, join(path, 'cur', `${name}:2,`));
  assert.equal(listed.uidl, name.split(',')[0]);
});

test('a large mailbox listing is reused while cur/ is unchanged, and a change is always seen', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  const path = await store.ensure('large@example.test');
  const cur = join(path, 'cur');
  for (let i = 0; i < 1200; i++) writeFileSync(join(cur, `${1_600_000_000 + i}.M${i}P1Q${i}Rabcdef.mail.example.test,S=12:2,`), 'Subject: x\r\n');
  // Untouched for an hour: the listing may be kept (a folder changed just now is read every time).
  const hourAgo = new Date(Date.now() - 3600_000);
  utimesSync(cur, hourAgo, hourAgo);
  const first = await store.list('large@example.test');
  assert.equal(first.length, 1200);
  assert.equal(await store.list('large@example.test'), first, 'the same listing, not read again');
  // Mail arrives through another process (the folder's time changes): it is listed.
  await new MaildirStore(dir, 'mail.example.test').deliver('large@example.test', Buffer.from('Subject: late\r\n\r\n'));
  const after = await store.list('large@example.test');
  assert.equal(after.length, 1201);
  // A message removed by another program disappears from the next listing too.
  rmSync(after[0].ref);
  assert.equal((await store.list('large@example.test')).length, 1200);
});

test('messages are listed oldest first', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  for (let i = 0; i < 20; i++) await store.deliver('order@example.test', Buffer.from(`Subject: ${i}\r\n\r\n${i}\r\n`));
  const bodies = await Promise.all((await store.list('order@example.test')).map(async (m) => (await collect(store.read(m))).toString()));
  assert.deepEqual(bodies.map((b) => Number(/Subject: (\d+)/.exec(b)![1])), [...Array(20).keys()]);
});

test('foreign files with LF line ends get sizes counted as CRLF', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  const path = await store.ensure('c@example.test');
  writeFileSync(join(path, 'new', '1700000000.12345_1.otherhost'), 'Subject: lf\n\nline\n');
  writeFileSync(join(path, 'cur', '1700000001.12345_2.otherhost,S=16:2,S'), 'Subject: lf\n\nno end');
  writeFileSync(join(path, 'new', '1700000002.12345_3.otherhost,S=99,W=21'), 'Subject: lf\n\nline\n');
  const messages = await store.list('c@example.test');
  assert.deepEqual(messages.map((m) => m.size), [21, 23, 21]);
  assert.deepEqual(messages.map((m) => m.uidl), ['1700000000.12345_1.otherhost', '1700000001.12345_2.otherhost', '1700000002.12345_3.otherhost']);
});

test('unique names that do not fit RFC 1939 UIDL rules are hashed, deterministically', () => {
  const long = `1700000000.${'x'.repeat(100)}.host`;
  assert.equal(uidlOf(long), uidlOf(long));
  assert.ok(uidlOf(long).length <= 70);
  assert.match(uidlOf('1700000000.\u00e9t\u00e9.host'), /^H[A-Za-z0-9_-]+$/);
  assert.equal(uidlOf('123.abc,S=5:2,S'), '123.abc');
});

test('remove deletes the files and reports what it could not remove', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  await store.deliver('d@example.test', Buffer.from('Subject: x\r\n\r\nx\r\n'));
  await store.deliver('d@example.test', Buffer.from('Subject: y\r\n\r\ny\r\n'));
  const messages = await store.list('d@example.test');
  rmSync(messages[0].ref); // removed behind our back: counts as done
  const result = await store.remove('d@example.test', messages);
  assert.deepEqual(result, { removed: 2, failed: [] });
  assert.deepEqual(await store.list('d@example.test'), []);
});

test('local parts with "/" stay inside the domain folder', () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  assert.equal(store.pathOf('a/b@example.test'), join(dir, 'mail', 'example.test', 'a%2Fb'));
});

test('a foreign file named like ours but with a host part outside printable ASCII gets a valid UIDL', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  const path = await store.ensure('odd-host@example.test');
  writeFileSync(join(path, 'cur', '1700000000.M1P2Q3Rabc.h\u00f6st name,S=12:2,'), 'Subject: x\r\n');
  const [message] = await store.list('odd-host@example.test');
  assert.match(message.uidl, /^[\x21-\x7e]{1,70}$/);
});
