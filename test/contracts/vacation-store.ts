import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { VacationStore } from '../../src/vacation/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every VacationStore promises: one vacation per address; a reply per user and sender
// claimed once per interval, by exactly one of concurrent claimers; a new vacation forgets the
// replies of the old one; old replies swept; all of it seen by another instance, at once even
// by one that read the address before (whatever it remembers, see src/vacation/cached.ts).

const DAY = 86_400_000;
const WEEK = 7 * DAY;

export function vacationStoreContract(backend: string, open: OpenStore<VacationStore>): void {
  describe(`VacationStore contract: ${backend}`, () => {
    test('set, replace, list and remove vacations', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.get('a@example.test'), undefined);
        await store.set('a@example.test', { subject: 'Away', body: 'Back soon.\n日本語も', since: 1000 });
        await store.set('b@example.test', { subject: 'Off', body: 'Gone.', since: 2000, until: 9_000_000_000_000 });
        assert.deepEqual(await store.get('a@example.test'), { subject: 'Away', body: 'Back soon.\n日本語も', since: 1000 });
        assert.deepEqual(await store.get('b@example.test'), { subject: 'Off', body: 'Gone.', since: 2000, until: 9_000_000_000_000 });
        await store.set('a@example.test', { subject: 'Still away', body: 'x', since: 3000, until: 4000 });
        assert.deepEqual((await store.list()).map((v) => [v.address, v.subject, v.until]), [
          ['a@example.test', 'Still away', 4000],
          ['b@example.test', 'Off', 9_000_000_000_000],
        ]);
        assert.equal(await store.remove('a@example.test'), true);
        assert.equal(await store.remove('a@example.test'), false);
        assert.equal(await store.get('a@example.test'), undefined);
      }));

    test('one reply per user and sender per interval', () =>
      withStore(open, async ({ store }) => {
        const now = 100 * DAY;
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now, WEEK), true);
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now + DAY, WEEK), false);
        assert.equal(await store.claimReply('a@example.test', 'y@remote.test', now + DAY, WEEK), true, 'another sender');
        assert.equal(await store.claimReply('b@example.test', 'x@remote.test', now + DAY, WEEK), true, 'another user');
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now + WEEK, WEEK), true, 'a week later');
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now + WEEK + 1, WEEK), false);
      }));

    test('of concurrent claims exactly one wins', () =>
      withStore(open, async ({ store }) => {
        const claims = await Promise.all(Array.from({ length: 20 }, () => store.claimReply('a@example.test', 'x@remote.test', 50 * DAY, WEEK)));
        assert.equal(claims.filter(Boolean).length, 1);
      }));

    test('a new vacation, or none, forgets the replies sent; sweep forgets old ones', () =>
      withStore(open, async ({ store }) => {
        const now = 100 * DAY;
        await store.set('a@example.test', { subject: 'Away', body: 'x', since: now });
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now, WEEK), true);
        await store.set('a@example.test', { subject: 'Away again', body: 'y', since: now + 1 });
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now + 2, WEEK), true);
        await store.remove('a@example.test');
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now + 3, WEEK), true);
        assert.equal(await store.claimReply('b@example.test', 'old@remote.test', now - WEEK, WEEK), true);
        assert.equal(await store.sweep(now - DAY), 1);
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', now + 4, WEEK), false, 'recent ones are kept');
      }));

    test('another instance sees vacations and replies at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        const other = await reopen();
        await store.set('a@example.test', { subject: 'Away', body: 'x', since: 1 });
        assert.equal((await other.get('a@example.test'))?.subject, 'Away');
        assert.equal(await store.claimReply('a@example.test', 'x@remote.test', DAY, WEEK), true);
        assert.equal(await other.claimReply('a@example.test', 'x@remote.test', DAY + 1, WEEK), false);
      }));

    test('an instance that found no vacation, or an old one, sees another instance\'s change at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        const other = await reopen();
        assert.equal(await other.get('a@example.test'), undefined);
        await store.set('a@example.test', { subject: 'Away', body: 'x', since: 1 });
        assert.equal((await other.get('a@example.test'))?.subject, 'Away', 'a new vacation');
        await store.set('a@example.test', { subject: 'Still away', body: 'x', since: 2 });
        assert.equal((await other.get('a@example.test'))?.subject, 'Still away', 'a replaced vacation');
        assert.equal(await store.remove('a@example.test'), true);
        assert.equal(await other.get('a@example.test'), undefined, 'a vacation turned off');
      }));
  });
}
