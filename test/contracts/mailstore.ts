import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Mailstore, StoredMessage } from '../../src/mailstore/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every Mailstore promises: what a resolved deliver() stored survives (another instance
// sees it), listings are oldest first with POP3 sizes and stable unique ids, reads give back
// the bytes, and removal reports what it could not do.

const CRLF = Buffer.from('From: a@example.test\r\nSubject: crlf\r\n\r\nBody.\r\n');
const LF = Buffer.from('From: a@example.test\nSubject: lf\n\nBody.\nMore.\n');
const UNTERMINATED = Buffer.from('Subject: no line end\r\n\r\nlast line');

async function bytesOf(store: Mailstore, message: StoredMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of store.read(message)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export function mailstoreContract(backend: string, open: OpenStore<Mailstore>): void {
  describe(`Mailstore contract: ${backend}`, () => {
    test('an unknown mailbox lists empty; create() makes it exist and says where it is, as location() does', () =>
      withStore(open, async ({ store }) => {
        assert.deepEqual(await store.list('nobody@example.test'), []);
        const where = await store.create('alice@example.test');
        assert.ok(where.length > 0);
        assert.equal(store.location('alice@example.test'), where);
        assert.notEqual(store.location('bob@example.test'), where, 'each address has its own place');
        assert.equal(await store.create('alice@example.test'), where, 'creating again changes nothing');
        assert.deepEqual(await store.list('alice@example.test'), []);
      }));

    test('deliver then list: oldest first, sizes as sent over POP3 (CRLF line ends), unique ids of 1 to 70 printable characters', () =>
      withStore(open, async ({ store }) => {
        await store.deliver('alice@example.test', CRLF);
        await store.deliver('alice@example.test', LF);
        await store.deliver('alice@example.test', UNTERMINATED);
        const listed = await store.list('alice@example.test');
        assert.equal(listed.length, 3);
        const wire = (bytes: Buffer) => bytes.toString('latin1').replace(/\r?\n/g, '\r\n').length;
        assert.deepEqual(
          listed.map((m) => m.size),
          [CRLF.length, wire(LF), UNTERMINATED.length + 2],
          'LF becomes CRLF, and an unterminated last line gets its CRLF',
        );
        assert.deepEqual(await Promise.all(listed.map((m) => bytesOf(store, m))), [CRLF, LF, UNTERMINATED], 'in the order delivered');
        assert.equal(new Set(listed.map((m) => m.uidl)).size, 3);
        for (const m of listed) assert.match(m.uidl, /^[\x21-\x7e]{1,70}$/, 'RFC 1939 §7');
      }));

    test('a message delivered in pieces is the same message', () =>
      withStore(open, async ({ store }) => {
        await store.deliver('alice@example.test', [CRLF.subarray(0, 21), CRLF.subarray(21, 22), Buffer.alloc(0), CRLF.subarray(22)]);
        const [message] = await store.list('alice@example.test');
        assert.equal(message.size, CRLF.length);
        assert.deepEqual(await bytesOf(store, message), CRLF);
      }));

    test('mailboxes are apart: each lists only its own mail', () =>
      withStore(open, async ({ store }) => {
        await store.deliver('alice@example.test', CRLF);
        await store.deliver('bob@example.test', LF);
        await store.deliver('alice@other.test', UNTERMINATED);
        assert.deepEqual(await Promise.all((await store.list('alice@example.test')).map((m) => bytesOf(store, m))), [CRLF]);
        assert.deepEqual(await Promise.all((await store.list('bob@example.test')).map((m) => bytesOf(store, m))), [LF]);
        assert.deepEqual(await Promise.all((await store.list('alice@other.test')).map((m) => bytesOf(store, m))), [UNTERMINATED]);
      }));

    test('unique ids are stable: the same at every listing and new mail gets new ones', () =>
      withStore(open, async ({ store }) => {
        await store.deliver('alice@example.test', CRLF);
        const first = (await store.list('alice@example.test')).map((m) => m.uidl);
        await store.deliver('alice@example.test', LF);
        const second = (await store.list('alice@example.test')).map((m) => m.uidl);
        assert.deepEqual(second.slice(0, 1), first);
        assert.ok(!first.includes(second[1]));
      }));

    test('readInto, where offered, reads the whole message into the caller\'s buffer at the offset, or says it does not fit', (t) =>
      withStore(open, async ({ store }) => {
        if (!store.readInto) return t.skip('this backend streams only');
        await store.deliver('alice@example.test', LF);
        const [message] = await store.list('alice@example.test');
        const scratch = Buffer.alloc(1024, 0xaa);
        const view = store.readInto(message, scratch, 100, 1024, LF.length);
        assert.ok(view, 'it fits');
        assert.deepEqual(view, LF);
        assert.equal(view.buffer, scratch.buffer, 'a view of the caller\'s buffer');
        assert.equal(view.byteOffset, scratch.byteOffset + 100);
        assert.equal(scratch[99], 0xaa, 'nothing before the offset is touched');
        assert.equal(store.readInto(message, scratch, 100, 100 + LF.length - 1, LF.length), undefined, 'one octet too small');
      }));

    test('remove: the messages go, the count is reported, nothing failed; what is already gone is no failure', () =>
      withStore(open, async ({ store }) => {
        await store.deliver('alice@example.test', CRLF);
        await store.deliver('alice@example.test', LF);
        await store.deliver('alice@example.test', UNTERMINATED);
        const [first, second, third] = await store.list('alice@example.test');
        assert.deepEqual(await store.remove('alice@example.test', [first, third]), { removed: 2, failed: [] });
        const left = await store.list('alice@example.test');
        assert.deepEqual(left.map((m) => m.uidl), [second.uidl]);
        assert.deepEqual(await store.remove('alice@example.test', [first]), { removed: 1, failed: [] });
        assert.deepEqual(await store.remove('alice@example.test', []), { removed: 0, failed: [] });
      }));

    test('durable on resolve: another instance lists what deliver() resolved, with the same ids, sizes and bytes', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await store.deliver('alice@example.test', CRLF);
        await store.deliver('alice@example.test', LF);
        const listed = await store.list('alice@example.test');
        const other = await reopen();
        const again = await other.list('alice@example.test');
        assert.deepEqual(again.map((m) => [m.uidl, m.size]), listed.map((m) => [m.uidl, m.size]));
        assert.deepEqual(await Promise.all(again.map((m) => bytesOf(other, m))), [CRLF, LF]);
        await other.deliver('alice@example.test', UNTERMINATED);
        assert.equal((await store.list('alice@example.test')).length, 3, 'and the other way round');
        assert.equal(other.location('alice@example.test'), store.location('alice@example.test'));
      }));
  });
}
