import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MaildropLocks } from '../../src/mailstore/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every MaildropLocks promises (RFC 1939 §8: one session per maildrop): one holder per
// address at a time, released once, whatever the release is called how often. Backends whose
// locks are shared between processes (`reopen` given) hold them for a lease they renew while
// the lock is held: a process that dies without releasing loses its locks once the lease has
// run out, and only then. Their open function sets a short lease and says how long it is.

/** A lock store whose instances can be stopped as a dying process stops: no more renewals, no release. */
export type StoppableLocks = MaildropLocks & { close?: () => Promise<void> };

/** Tries `attempt` until it gives something, for at most `withinMs`. */
async function eventually<T>(attempt: () => Promise<T | undefined>, withinMs: number): Promise<T | undefined> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const result = await attempt();
    if (result !== undefined || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function maildropLocksContract(backend: string, open: OpenStore<StoppableLocks>, lease?: { leaseMs: number }): void {
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

    test('a held lock outlives its lease: the holder renews it', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen || !lease) return t.skip('in-process locks: no lease');
        const other = await reopen();
        const release = await store.acquire('alice@example.test');
        assert.ok(release);
        await new Promise((resolve) => setTimeout(resolve, 3 * lease.leaseMs));
        assert.equal(await other.acquire('alice@example.test'), undefined, 'still held three leases later');
        await release();
        const taken = await other.acquire('alice@example.test');
        assert.ok(taken, 'free once released');
        await taken();
      }));

    test('an instance that dies without releasing loses its lock once the lease has run out, not before', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen || !lease || !store.close) return t.skip('in-process locks: no lease');
        const other = await reopen();
        const deadRelease = await store.acquire('alice@example.test');
        assert.ok(deadRelease);
        const bob = await store.acquire('bob@example.test');
        assert.ok(bob);
        await store.close(); // the process dies: its renewals stop, nothing is released
        const diedAt = Date.now();
        assert.equal(await other.acquire('alice@example.test'), undefined, 'not free at once: the lease is still running');
        const taken = await eventually(() => other.acquire('alice@example.test'), 10 * lease.leaseMs + 5000);
        assert.ok(taken, 'free once the lease has run out');
        assert.ok(Date.now() - diedAt >= lease.leaseMs / 2, 'and not long before that');
        // A late release by the dead holder (it woke up) must not free the new holder's lock.
        await deadRelease();
        const third = await reopen();
        assert.equal(await third.acquire('alice@example.test'), undefined, 'still held by the new holder');
        await taken();
        assert.ok(await eventually(() => third.acquire('bob@example.test'), 10 * lease.leaseMs + 5000), "the dead holder's other lock runs out too");
      }));
  });
}
