import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { QuotaStore } from '../../src/quota/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every QuotaStore promises: limits per address and per domain (a number, null for "no
// limit", or nothing), usage counters that exist only once counted, move exactly under
// concurrent deliveries and never go below zero, one warning per pass of the mark, and all of
// it seen by another instance (counter moves once written: flush()).

export function quotaStoreContract(backend: string, open: OpenStore<QuotaStore>): void {
  describe(`QuotaStore contract: ${backend}`, () => {
    test('limits per user and per domain: set, "no limit", removed, listed', () =>
      withStore(open, async ({ store }) => {
        assert.deepEqual(await store.limits('a@example.test', 'example.test'), {});
        await store.setLimit('example.test', 1000);
        await store.setLimit('a@example.test', null);
        await store.setLimit('b@example.test', 5_000_000_000);
        assert.deepEqual(await store.limits('a@example.test', 'example.test'), { user: null, domain: 1000 });
        assert.deepEqual(await store.limits('b@example.test', 'example.test'), { user: 5_000_000_000, domain: 1000 }, 'more than 32 bits');
        assert.deepEqual(await store.limits('c@other.test', 'other.test'), {});
        await store.setLimit('a@example.test', 2000);
        await store.setLimit('example.test', undefined);
        assert.deepEqual(await store.limits('a@example.test', 'example.test'), { user: 2000 });
        assert.deepEqual(await store.listLimits(), [
          { subject: 'a@example.test', limit: 2000 },
          { subject: 'b@example.test', limit: 5_000_000_000 },
        ]);
      }));

    test('a counter exists only once counted; moves are refused without one', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.usage('a@example.test'), undefined);
        assert.equal(await store.add('a@example.test', 100), undefined);
        assert.equal(await store.usage('a@example.test'), undefined, 'add made no counter');
        assert.equal(await store.setUsage('a@example.test', 500, true), 500);
        assert.equal(await store.setUsage('a@example.test', 999, true), 500, 'an existing counter is left alone');
        assert.equal(await store.add('a@example.test', 250), 750);
        assert.equal(await store.add('a@example.test', -1000), 0, 'never below zero');
        assert.equal(await store.setUsage('a@example.test', 42, false), 42, 'a recount overwrites');
        assert.deepEqual(await store.usage('a@example.test'), { used: 42, warned: false });
        assert.deepEqual(await store.listUsage(), [{ address: 'a@example.test', used: 42, warned: false }]);
      }));

    test('concurrent moves add up exactly', () =>
      withStore(open, async ({ store }) => {
        await store.setUsage('a@example.test', 0, true);
        await Promise.all(Array.from({ length: 40 }, (_, i) => store.add('a@example.test', i % 2 === 0 ? 1000 : -10)));
        assert.equal((await store.usage('a@example.test'))?.used, 20 * 1000 - 20 * 10);
      }));

    test('a run of moves: this instance sees each at once, another once written', () =>
      withStore(open, async ({ store, reopen }) => {
        await store.setUsage('a@example.test', 100, true);
        for (let move = 1; move <= 5; move++) assert.equal(await store.add('a@example.test', 10), 100 + move * 10);
        assert.equal((await store.usage('a@example.test'))?.used, 150);
        assert.equal(await store.add('a@example.test', -20), 130, 'a deletion counts every move before it');
        assert.deepEqual(await store.listUsage(), [{ address: 'a@example.test', used: 130, warned: false }]);
        if (!reopen) return;
        const other = await reopen();
        await store.add('a@example.test', 10);
        await store.flush?.();
        assert.equal((await other.usage('a@example.test'))?.used, 140, 'written by flush');
        await store.add('a@example.test', 10);
        // Without flush: within a moment, whatever the store holds back.
        const deadline = Date.now() + 5000;
        while ((await other.usage('a@example.test'))?.used !== 150 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
        assert.equal((await other.usage('a@example.test'))?.used, 150, 'written within a moment');
        assert.equal(await other.add('a@example.test', 5), 155, "the other's move counts the first's");
        await other.flush?.();
        assert.equal((await store.usage('a@example.test'))?.used, 155);
      }));

    test('the warning is claimed once until cleared, even by concurrent claimers', () =>
      withStore(open, async ({ store }) => {
        await store.setUsage('a@example.test', 10, true);
        const claims = await Promise.all(Array.from({ length: 10 }, () => store.claimWarning('a@example.test')));
        assert.equal(claims.filter(Boolean).length, 1);
        assert.equal((await store.usage('a@example.test'))?.warned, true);
        assert.equal(await store.claimWarning('a@example.test'), false);
        await store.clearWarning('a@example.test');
        assert.equal(await store.claimWarning('a@example.test'), true);
        assert.equal(await store.claimWarning('nobody@example.test'), false, 'no counter, no warning');
      }));

    test('forget removes the counter and the user\'s own limit, not the domain\'s', () =>
      withStore(open, async ({ store }) => {
        await store.setLimit('a@example.test', 10);
        await store.setLimit('example.test', 20);
        await store.setUsage('a@example.test', 5, true);
        await store.forget('a@example.test');
        assert.equal(await store.usage('a@example.test'), undefined);
        assert.deepEqual(await store.limits('a@example.test', 'example.test'), { domain: 20 });
      }));

    test('another instance sees limits and counters at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        const other = await reopen();
        await store.setLimit('a@example.test', 10);
        await store.setUsage('a@example.test', 5, true);
        assert.deepEqual(await other.limits('a@example.test', 'example.test'), { user: 10 });
        assert.equal(await other.add('a@example.test', 1), 6);
        assert.equal((await store.usage('a@example.test'))?.used, 6);
      }));
  });
}
