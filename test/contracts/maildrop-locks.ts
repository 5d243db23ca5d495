import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MaildropLocks } from '../../src/mailstore/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every MaildropLocks promises (RFC 1939 §8: one session per maildrop): one holder per
// address at a time, released once, whatever the release is called how often.

export function maildropLocksContract(backend: string, open: OpenStore<MaildropLocks>): void {
  describe(`MaildropLocks contract: ${backend}`, () => {
    test('exclusive: a second acquire of a held address gets nothing until the holder releases', () =>
      withStore(open, async ({ store }) => {
        const release = await store.acquire('alice@example.test');
        assert.ok(release);
        assert.equal(await store.acquire('alice@example.test'), undefined);
        await release();
        const again = await store.acquire('alice@example.test');
        assert.ok(again, 'free again after the release');
        await again();
      }));

    test('addresses are independent', () =>
      withStore(open, async ({ store }) => {
        const alice = await store.acquire('alice@example.test');
        const bob = await store.acquire('bob@example.test');
        assert.ok(alice && bob);
        await alice();
        assert.equal(await store.acquire('bob@example.test'), undefined, "releasing alice does not release bob");
        await bob();
      }));

    test('release is idempotent: a second call does not free the lock a later holder took', () =>
      withStore(open, async ({ store }) => {
        const first = await store.acquire('alice@example.test');
        assert.ok(first);
        await first();
        const second = await store.acquire('alice@example.test');
        assert.ok(second);
        await first();
        assert.equal(await store.acquire('alice@example.test'), undefined, 'still held by the second holder');
        await second();
      }));

    test('acquires at the same moment: exactly one wins', () =>
      withStore(open, async ({ store }) => {
        const results = await Promise.all(Array.from({ length: 5 }, () => store.acquire('alice@example.test')));
        const winners = results.filter((release) => release !== undefined);
        assert.equal(winners.length, 1);
        await winners[0]();
      }));

    test('another instance (another process or node) sees the lock', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('in-process locks: one instance only');
        const other = await reopen();
        const release = await store.acquire('alice@example.test');
        assert.ok(release);
        assert.equal(await other.acquire('alice@example.test'), undefined);
        await release();
        const taken = await other.acquire('alice@example.test');
        assert.ok(taken);
        assert.equal(await store.acquire('alice@example.test'), undefined);
        await taken();
      }));
  });
}
