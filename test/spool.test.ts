import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { Spool } from '../src/queue/spool.ts';

const dir = mkdtempSync(join(tmpdir(), 'popgate-spool-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the spool keeps message and envelope, and lists entries oldest first', async () => {
  const spool = new Spool(dir);
  const first = { id: Spool.newId(), from: 'a@example.test', to: ['x@remote.example'], receivedAt: 1, clientIp: '192.0.2.1', authorizedUser: 'a@example.test' };
  const second = { id: Spool.newId(), from: '', to: ['y@remote.example', 'z@remote.example'], receivedAt: 2, clientIp: '192.0.2.2' };
  await spool.enqueue(second, [Buffer.from('Subject: 2\r\n'), Buffer.from('\r\nbody\r\n')]);
  await spool.enqueue(first, Buffer.from('Subject: 1\r\n\r\nbody\r\n'));
  assert.deepEqual(await spool.list(), [first, second]);
  assert.equal((await spool.read(second.id)).toString(), 'Subject: 2\r\n\r\nbody\r\n');
  assert.deepEqual(readdirSync(join(dir, 'queue', 'tmp')), [], 'nothing is left half-written');
  assert.notEqual(first.id, second.id);
});

test('a message delivered in pieces is stored whole, with its sizes in the name', async () => {
  const store = new MaildirStore(dir, 'mail.example.test');
  const pieces = [Buffer.from('Return-Path: <a@b.example>\r\n'), Buffer.from('Subject: x\n\nLF body\n')];
  const name = await store.deliver('p@example.test', pieces);
  const total = pieces[0].length + pieces[1].length;
  assert.match(name, new RegExp(`,S=${total},W=${total + 3}$`));
  const [message] = await store.list('p@example.test');
  assert.equal(message.size, total + 3);
});
