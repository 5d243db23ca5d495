import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isImportableUidl, MaildirStore } from '../src/mailstore/maildir.ts';
import type { StoredMessage } from '../src/mailstore/store.ts';

// Messages carried over from another server (src/import/) keep their old UIDL and their place
// in the old order through the name MaildirStore.importedName() gives them. What the listing
// promises for them, like the Mailstore contract does for delivered mail.

const dir = mkdtempSync(join(tmpdir(), 'popgate-maildir-imported-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const HOST = 'mail.example.test';

async function bytesOf(store: MaildirStore, message: StoredMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of store.read(message)) chunks.push(chunk);
  return Buffer.concat(chunks).toString('latin1');
}

/** Places `text` as an import does: straight into cur/ under importedName(). */
async function place(store: MaildirStore, address: string, position: number, uidl: string, text: string, flags = ''): Promise<string> {
  const path = await store.ensure(address);
  const wireSize = text.replace(/\r?\n/g, '\r\n').length;
  const name = store.importedName({ position, uidl, size: text.length, wireSize, flags });
  writeFileSync(join(path, 'cur', name), text);
  return name;
}

describe('imported messages in a Maildir', () => {
  test('listed with their old UIDLs, in their old order, before mail delivered here, with POP3 sizes and their bytes', async () => {
    const store = new MaildirStore(dir, HOST);
    const address = 'order@example.test';
    await store.deliver(address, Buffer.from('Subject: delivered here\r\n\r\nnew\r\n'));
    // Placed out of order: the position decides, not the order of placing or of readdir.
    await place(store, address, 3072, 'third/with,odd:chars', 'Subject: 3\n\nthree\n');
    await place(store, address, 1024, '00000001564a2b3c', 'Subject: 1\r\n\r\none\r\n', 'S');
    // Longer than RFC 1939's 70: Dovecot's %f format serves whole Maildir names.
    await place(store, address, 2048, `${'x'.repeat(80)},S=19:%`, 'Subject: 2\r\n\r\ntwo\r\n');
    const listed = await store.list(address);
    assert.deepEqual(
      listed.map((m) => m.uidl),
      ['00000001564a2b3c', `${'x'.repeat(80)},S=19:%`, 'third/with,odd:chars', listed[3].uidl],
    );
    assert.match(listed[3].uidl, /^\d+\.M\d+P/, 'the delivered message keeps its own kind of UIDL, last');
    assert.deepEqual(
      listed.map((m) => m.size),
      [19, 19, 'Subject: 3\r\n\r\nthree\r\n'.length, 32],
      'the wire size (CRLF) from ,W=',
    );
    assert.equal(await bytesOf(store, listed[2]), 'Subject: 3\n\nthree\n', 'the bytes as placed');
  });

  test('the UIDLs survive a restart, flag changes by another reader, and a listing kept between logins', async () => {
    const address = 'large@example.test';
    const store = new MaildirStore(dir, HOST);
    const expected: string[] = [];
    // Above the size from which listings are kept (1,000 messages).
    for (let i = 0; i < 1100; i++) {
      const uidl = `UID:${i}/${String(i).padStart(4, '0')}`;
      expected.push(uidl);
      await place(store, address, (i + 1) * 1024, uidl, `Subject: ${i}\r\n\r\nbody\r\n`);
    }
    const cur = join(store.pathOf(address), 'cur');
    utimesSync(cur, new Date(Date.now() - 3600_000), new Date(Date.now() - 3600_000));
    assert.deepEqual((await store.list(address)).map((m) => m.uidl), expected);
    assert.deepEqual((await store.list(address)).map((m) => m.uidl), expected, 'from the kept listing');
    const first = readdirSync(cur).find((name) => (name.match(/^1\.M1024P/)));
    assert.ok(first, 'the first message is named with its position');
    renameSync(join(cur, first), join(cur, first.replace(/:2,.*$/, ':2,RS')));
    const restarted = new MaildirStore(dir, HOST);
    assert.deepEqual((await restarted.list(address)).map((m) => m.uidl), expected, 'after a restart and a flag change');
  });

  test('read/unread state is kept in the name; removal works as for any message', async () => {
    const store = new MaildirStore(dir, HOST);
    const address = 'flags@example.test';
    const seen = await place(store, address, 1, 'seen-one', 'Subject: a\r\n\r\na\r\n', 'xS,S');
    const unseen = await place(store, address, 2, 'unseen-one', 'Subject: b\r\n\r\nb\r\n');
    assert.match(seen, /:2,Sx$/, 'flags sorted, each once, letters only');
    assert.match(unseen, /:2,$/);
    const listed = await store.list(address);
    assert.deepEqual(await store.remove(address, [listed[0]]), { removed: 1, failed: [] });
    assert.deepEqual((await store.list(address)).map((m) => m.uidl), ['unseen-one']);
  });

  test('a damaged ,U= falls back to the unique name as UIDL, never to a UIDL outside printable ASCII', async () => {
    const store = new MaildirStore(dir, HOST);
    const address = 'damaged@example.test';
    const cur = join(await store.ensure(address), 'cur');
    for (const [i, u] of ['', '%ZZ', 'has%20space', '%', 'A'.repeat(161)].entries()) {
      writeFileSync(join(cur, `1.M${i}P1Q${i}Rabc.${HOST},U=${u},S=4,W=4:2,`), 'x\r\n\r');
    }
    const listed = await store.list(address);
    assert.equal(listed.length, 5);
    for (const message of listed) {
      assert.ok(isImportableUidl(message.uidl), message.uidl);
      assert.match(message.uidl, /^1\.M\dP1Q\dRabc\.mail\.example\.test$/);
    }
  });

  test('importedName refuses what it cannot keep: a UIDL outside printable ASCII or longer than 160, a position that is not a whole number below 2^50', () => {
    const store = new MaildirStore(dir, HOST);
    const message = { position: 1, uidl: 'ok', size: 1, wireSize: 1, flags: '' };
    assert.throws(() => store.importedName({ ...message, uidl: '' }), RangeError);
    assert.throws(() => store.importedName({ ...message, uidl: 'a b' }), RangeError);
    assert.throws(() => store.importedName({ ...message, uidl: 'x'.repeat(161) }), RangeError);
    assert.throws(() => store.importedName({ ...message, uidl: ','.repeat(100) }), RangeError, 'too long once escaped');
    assert.throws(() => store.importedName({ ...message, uidl: 'é' }), RangeError);
    assert.throws(() => store.importedName({ ...message, position: -1 }), RangeError);
    assert.throws(() => store.importedName({ ...message, position: 1.5 }), RangeError);
    assert.throws(() => store.importedName({ ...message, position: 2 ** 50 }), RangeError);
    assert.ok(store.importedName({ ...message, position: 2 ** 50 - 1 }).length < 255, 'a file name fits');
    assert.ok(store.importedName({ ...message, uidl: '~'.repeat(160), size: 2 ** 40, wireSize: 2 ** 41, flags: 'DFPRST' }).length <= 255);
  });
});
