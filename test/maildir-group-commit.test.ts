import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DirectorySyncer, StagingFolders } from '../src/fs/durable.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';

// Group commit: concurrent deliveries to one folder share the fsync of its directory entry,
// and no caller is told "durable" by an fsync that began before its own rename.

/** A fake fsync that records when each call starts and finishes only when released. */
function controlledFsync() {
  const started: { path: string; release: () => void }[] = [];
  const fsync = (path: string) => new Promise<void>((resolve) => started.push({ path, release: resolve }));
  return { started, fsync };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('the first caller starts an fsync at once', async () => {
  const { started, fsync } = controlledFsync();
  const syncer = new DirectorySyncer(fsync);
  const done = syncer.sync('/m/new');
  assert.equal(started.length, 1);
  started[0].release();
  await done;
});

test('callers during a running fsync share one later fsync, not the running one', async () => {
  const { started, fsync } = controlledFsync();
  const syncer = new DirectorySyncer(fsync);
  const first = syncer.sync('/m/new');
  const resolved: number[] = [];
  const later = Array.from({ length: 9 }, (_, i) => syncer.sync('/m/new').then(() => resolved.push(i)));
  assert.equal(started.length, 1, 'the nine wait for the running fsync to end');
  started[0].release();
  await first;
  await tick();
  assert.deepEqual(resolved, [], 'the running fsync began before their renames: it cannot vouch for them');
  assert.equal(started.length, 2, 'one fsync serves all nine');
  started[1].release();
  await Promise.all(later);
  assert.equal(resolved.length, 9);
});

test('different folders are synced independently', async () => {
  const { started, fsync } = controlledFsync();
  const syncer = new DirectorySyncer(fsync);
  const a = syncer.sync('/a/new');
  const b = syncer.sync('/b/new');
  assert.deepEqual(started.map((s) => s.path), ['/a/new', '/b/new']);
  for (const s of started) s.release();
  await Promise.all([a, b]);
});

test('a failed fsync fails its callers, and the next callers get a fresh fsync', async () => {
  let calls = 0;
  const syncer = new DirectorySyncer(async () => {
    calls++;
    if (calls === 1) throw new Error('EIO');
  });
  await assert.rejects(syncer.sync('/m/new'), /EIO/);
  await syncer.sync('/m/new');
  assert.equal(calls, 2);
});

test('concurrent deliveries to one Maildir all land, once each, byte for byte', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-group-commit-'));
  try {
    const store = new MaildirStore(dir, 'mx.example.test');
    const messages = Array.from({ length: 50 }, (_, i) => Buffer.from(`Subject: ${i}\r\n\r\nbody ${i}\r\n`));
    const names = await Promise.all(messages.map((m) => store.deliver('user@example.test', m)));
    const newDir = join(store.pathOf('user@example.test'), 'new');
    assert.deepEqual(readdirSync(newDir).sort(), [...names].sort());
    names.forEach((name, i) => assert.deepEqual(readFileSync(join(newDir, name)), messages[i]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('overlapping writes to one folder are staged in separate folders, which end up empty', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-staging-'));
  try {
    const staging = new StagingFolders();
    const a = staging.acquire(join(dir, 'tmp'));
    const b = staging.acquire(join(dir, 'tmp'));
    assert.equal(a.dir, join(dir, 'tmp'));
    assert.equal(b.dir, join(dir, 'tmp', '1'));
    b.release();
    assert.equal(staging.acquire(join(dir, 'tmp')).dir, join(dir, 'tmp', '1'), 'a freed slot is reused');
    a.release();

    const store = new MaildirStore(dir, 'mx.example.test');
    await Promise.all(Array.from({ length: 30 }, (_, i) => store.deliver('busy@example.test', Buffer.from(`Subject: ${i}\r\n\r\n`))));
    const tmp = join(store.pathOf('busy@example.test'), 'tmp');
    const staged = readdirSync(tmp, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
    assert.deepEqual(staged, [], 'every staged file was renamed into new/');
    assert.equal(readdirSync(join(store.pathOf('busy@example.test'), 'new')).length, 30);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
