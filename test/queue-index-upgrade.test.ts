import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { test } from 'node:test';
import { SqliteQueueStore } from '../src/sqlite/queue-index.ts';

// An index file written before leases had owners (a `leased` flag) is brought up to date when
// it is opened: the messages it had leased keep their time and get no owner, so they fall due
// when that lease would have ended, like the leases of any process that is gone.

const T0 = 1_700_000_000_000;
const LEASE = 15 * 60_000;

test('an index with the old leased flag gets lease owners when opened, once, keeping every message and its time', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'popgate-index-upgrade-'));
  try {
    mkdirSync(join(dataDir, 'queue'));
    const old = new DatabaseSync(join(dataDir, 'queue', 'index.sqlite'));
    old.exec(`CREATE TABLE queue_messages (
      id TEXT PRIMARY KEY, sender TEXT NOT NULL, received_at INTEGER NOT NULL, client_ip TEXT NOT NULL, authorized_user TEXT,
      size INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_error TEXT,
      warned INTEGER NOT NULL DEFAULT 0, leased INTEGER NOT NULL DEFAULT 0
    ) STRICT`);
    old.exec(`CREATE TABLE queue_recipients (
      message_id TEXT NOT NULL REFERENCES queue_messages (id) ON DELETE CASCADE, address TEXT NOT NULL, state TEXT NOT NULL,
      status TEXT, diagnostic TEXT, remote_mta TEXT, updated_at INTEGER, PRIMARY KEY (message_id, address)
    ) STRICT`);
    const insert = old.prepare('INSERT INTO queue_messages (id, sender, received_at, client_ip, size, next_attempt_at, leased) VALUES (?, ?, ?, ?, ?, ?, ?)');
    insert.run('LEASED', 'alice@example.test', T0, '192.0.2.7', 100, T0 + LEASE, 1);
    insert.run('WAITING', 'alice@example.test', T0 + 1, '192.0.2.7', 100, T0 + 2 * LEASE, 0);
    old.prepare("INSERT INTO queue_recipients (message_id, address, state) VALUES ('LEASED', 'bob@remote.test', 'pending')").run();
    old.close();

    const store = SqliteQueueStore.open(dataDir);
    const again = SqliteQueueStore.open(dataDir);
    try {
      const reader = new DatabaseSync(join(dataDir, 'queue', 'index.sqlite'), { readOnly: true });
      const columns = (reader.prepare("SELECT name FROM pragma_table_info('queue_messages')").all() as { name: string }[]).map((c) => c.name);
      reader.close();
      assert.ok(columns.includes('lease_owner') && !columns.includes('leased'), `columns now: ${columns.join(', ')}`);
      const leased = await again.get('LEASED');
      assert.equal(leased?.leaseOwner, undefined, 'nobody owns the old lease');
      assert.equal(leased?.nextAttemptAt, T0 + LEASE, 'it keeps its time: due when that lease would have ended');
      assert.deepEqual(leased?.recipients.map((r) => r.address), ['bob@remote.test']);
      assert.deepEqual(await store.claim(T0 + LEASE - 1, 10, LEASE, 'mx1/1/a'), [], 'not before');
      assert.deepEqual((await store.claim(T0 + LEASE, 10, LEASE, 'mx1/1/a')).map((m) => [m.id, m.leaseOwner]), [['LEASED', 'mx1/1/a']]);
      assert.equal((await store.get('WAITING'))?.nextAttemptAt, T0 + 2 * LEASE, 'a message that was not leased is unchanged');
    } finally {
      await store.close();
      await again.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
