import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AdminStore } from '../../src/admin/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every AdminStore promises: one administrator per name, hashes replaced and removed,
// sessions live within their idle and absolute limits and gone after, removal ending sessions,
// and another instance (a worker, a node) seeing all of it at once.

export function adminStoreContract(backend: string, open: OpenStore<AdminStore>): void {
  describe(`AdminStore contract: ${backend}`, () => {
    test('add, refuse a taken name, replace the hash, list, remove', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.add('root', '$scrypt$one', 1000), true);
        assert.equal(await store.add('root', '$scrypt$other', 2000), false);
        assert.equal(await store.passwordHash('root'), '$scrypt$one');
        assert.equal(await store.add('alice', '$scrypt$two', 3000), true);
        assert.deepEqual(await store.list(), [
          { name: 'alice', createdAt: 3000 },
          { name: 'root', createdAt: 1000 },
        ]);
        assert.equal(await store.setPasswordHash('root', '$scrypt$new'), true);
        assert.equal(await store.setPasswordHash('nobody', '$scrypt$new'), false);
        assert.equal(await store.passwordHash('root'), '$scrypt$new');
        assert.equal(await store.remove('root'), true);
        assert.equal(await store.remove('root'), false);
        assert.equal(await store.passwordHash('root'), undefined);
      }));

    test('a session lives within its idle and absolute limits, is gone after, and can be ended', () =>
      withStore(open, async ({ store }) => {
        await store.add('root', '$scrypt$one', 0);
        await store.createSession('h1', 'root', 10_000);
        assert.deepEqual(await store.useSession('h1', 10_500, 1000, 5000), { admin: 'root', createdAt: 10_000, lastSeenAt: 10_500 });
        // Used at 10 500: still live at 11 400 (idle 900 < 1000), and that use slides the idle limit.
        assert.equal((await store.useSession('h1', 11_400, 1000, 5000))?.admin, 'root');
        assert.equal((await store.useSession('h1', 12_300, 1000, 5000))?.admin, 'root');
        // Idle too long: gone, and stays gone.
        assert.equal(await store.useSession('h1', 13_400, 1000, 5000), undefined);
        assert.equal(await store.useSession('h1', 13_500, 100_000, 100_000), undefined);
        // The absolute limit holds however often it is used.
        await store.createSession('h2', 'root', 20_000);
        for (const at of [20_900, 21_800, 22_700, 23_600, 24_500]) assert.equal((await store.useSession('h2', at, 1000, 5000))?.admin, 'root');
        assert.equal(await store.useSession('h2', 25_000, 1000, 5000), undefined);
        await store.createSession('h3', 'root', 30_000);
        await store.endSession('h3');
        assert.equal(await store.useSession('h3', 30_001, 1000, 5000), undefined);
        assert.equal(await store.useSession('unknown', 30_001, 1000, 5000), undefined);
      }));

    test('ending an administrator\'s sessions, or removing them, ends every session of theirs only', () =>
      withStore(open, async ({ store }) => {
        await store.add('root', '$scrypt$one', 0);
        await store.add('alice', '$scrypt$two', 0);
        await store.createSession('r1', 'root', 1000);
        await store.createSession('r2', 'root', 1000);
        await store.createSession('a1', 'alice', 1000);
        assert.equal(await store.endSessionsOf('root'), 2);
        assert.equal(await store.useSession('r1', 1001, 1000, 5000), undefined);
        assert.equal((await store.useSession('a1', 1001, 1000, 5000))?.admin, 'alice');
        await store.remove('alice');
        assert.equal(await store.useSession('a1', 1002, 1000, 5000), undefined);
      }));

    test('another instance sees administrators and sessions at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        await store.add('root', '$scrypt$one', 0);
        await store.createSession('h1', 'root', 1000);
        const other = await reopen();
        assert.equal(await other.passwordHash('root'), '$scrypt$one');
        assert.equal((await other.useSession('h1', 1001, 1000, 5000))?.admin, 'root');
        await other.endSession('h1');
        assert.equal(await store.useSession('h1', 1002, 1000, 5000), undefined);
      }));
  });
}
