import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LockoutRow, LoginFailureStore } from '../../src/policy/login-guard.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every LoginFailureStore promises: failures counted per key within the window that ends
// at `now`, lockouts judged live against `now` when asked (no sweep needed), reset and a
// sweep that only drops what no answer needs.

const WINDOW = 60_000;
const T0 = 1_700_000_000_000;
const IP = 'ip 192.0.2.7';
const USER = 'user alice@example.test';

/** Rows with lockedUntil always present, so a backend may leave it out when there is none. */
const rows = (list: LockoutRow[]) => list.map((row) => ({ key: row.key, failures: row.failures, lockedUntil: row.lockedUntil }));

export function loginFailureStoreContract(backend: string, open: OpenStore<LoginFailureStore>): void {
  describe(`LoginFailureStore contract: ${backend}`, () => {
    test('addFailure counts the failures of a key later than now - window', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.addFailure(IP, T0, WINDOW), 1);
        assert.equal(await store.addFailure(IP, T0 + 1000, WINDOW), 2);
        assert.equal(await store.addFailure(IP, T0 + 1000, WINDOW), 3, 'two failures in the same millisecond are two');
        assert.equal(await store.addFailure(IP, T0 + WINDOW, WINDOW), 3, 'the first one left the window exactly at its end');
        assert.equal(await store.addFailure(IP, T0 + 3 * WINDOW, WINDOW), 1, 'the old ones have all aged out');
        assert.equal(await store.addFailure(USER, T0 + 3 * WINDOW, WINDOW), 1, 'keys are counted apart');
      }));

    test('lockOut locks a key until a time; a live lockout is kept, an ended one replaced, judged by now', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.lockoutEnd(IP), undefined);
        assert.equal(await store.lockOut(IP, T0 + WINDOW, T0), true);
        assert.equal(await store.lockoutEnd(IP), T0 + WINDOW);
        assert.equal(await store.lockOut(IP, T0 + 2 * WINDOW, T0 + WINDOW - 1), false, 'still live: not extended');
        assert.equal(await store.lockoutEnd(IP), T0 + WINDOW);
        assert.equal(await store.lockoutEnd(USER), undefined, 'keys are locked apart');
        assert.equal(await store.lockOut(IP, T0 + 3 * WINDOW, T0 + WINDOW), true, 'ended at its end: a new one is taken');
        assert.equal(await store.lockoutEnd(IP), T0 + 3 * WINDOW);
      }));

    test('an ended lockout is still told by lockoutEnd (the guard decides what its end means) until reset', () =>
      withStore(open, async ({ store }) => {
        await store.lockOut(IP, T0 + WINDOW, T0);
        await store.addFailure(IP, T0, WINDOW);
        assert.equal(await store.lockoutEnd(IP), T0 + WINDOW);
        assert.deepEqual(await store.reset([IP]), { failures: 1, lockouts: 1 });
        assert.equal(await store.lockoutEnd(IP), undefined);
      }));

    test('list: keys with failures in the window or a live lockout, by key, with their count and live lockout end', () =>
      withStore(open, async ({ store }) => {
        await store.addFailure(USER, T0, WINDOW);
        await store.addFailure(IP, T0 + 1000, WINDOW);
        await store.addFailure(IP, T0 + 2000, WINDOW);
        await store.lockOut(IP, T0 + 2000 + WINDOW, T0 + 2000);
        await store.lockOut('ip 192.0.2.99', T0 + 10 * WINDOW, T0);
        assert.deepEqual(rows(await store.list(T0 + 2000, WINDOW)), [
          { key: IP, failures: 2, lockedUntil: T0 + 2000 + WINDOW },
          { key: 'ip 192.0.2.99', failures: 0, lockedUntil: T0 + 10 * WINDOW },
          { key: USER, failures: 1, lockedUntil: undefined },
        ]);
        assert.deepEqual(rows(await store.list(T0 + 2000 + WINDOW - 1, WINDOW)), [
          { key: IP, failures: 1, lockedUntil: T0 + 2000 + WINDOW },
          { key: 'ip 192.0.2.99', failures: 0, lockedUntil: T0 + 10 * WINDOW },
        ]);
        assert.deepEqual(rows(await store.list(T0 + 2000 + WINDOW, WINDOW)), [{ key: 'ip 192.0.2.99', failures: 0, lockedUntil: T0 + 10 * WINDOW }], 'the lockout ended at its end, no sweep needed');
      }));

    test('reset forgets the failures and lockouts of some keys, or of all, and tells how many of each went', () =>
      withStore(open, async ({ store }) => {
        await store.addFailure(IP, T0, WINDOW);
        await store.addFailure(IP, T0 + 1, WINDOW);
        await store.lockOut(IP, T0 + WINDOW, T0);
        await store.addFailure(USER, T0, WINDOW);
        await store.addFailure('ip 192.0.2.8', T0, WINDOW);
        await store.lockOut('ip 192.0.2.8', T0 + WINDOW, T0);
        assert.deepEqual(await store.reset([IP, 'user nobody@example.test']), { failures: 2, lockouts: 1 });
        assert.equal(await store.lockoutEnd(IP), undefined);
        assert.equal(await store.addFailure(IP, T0 + 2, WINDOW), 1, 'counting starts over');
        assert.deepEqual((await store.list(T0 + 2, WINDOW)).map((row) => row.key), [IP, 'ip 192.0.2.8', USER], 'other keys keep theirs');
        assert.deepEqual(await store.reset(), { failures: 3, lockouts: 1 });
        assert.deepEqual(rows(await store.list(T0 + 2, WINDOW)), []);
      }));

    test('sweep forgets failures and lockouts that ended at or before a time, and nothing later', () =>
      withStore(open, async ({ store }) => {
        await store.addFailure(IP, T0, WINDOW);
        await store.addFailure(IP, T0 + 1000, WINDOW);
        await store.lockOut(IP, T0 + 1000, T0);
        await store.lockOut(USER, T0 + 1001, T0);
        await store.sweep(T0 + 1000);
        assert.equal(await store.lockoutEnd(IP), undefined, 'ended by then');
        assert.equal(await store.lockoutEnd(USER), T0 + 1001, 'not yet ended then');
        assert.deepEqual(rows(await store.list(T0 + 1000, 10 * WINDOW)), [
          { key: USER, failures: 0, lockedUntil: T0 + 1001 },
        ], 'both failures of IP were at or before the time, even seen through a long window');
        await store.addFailure(IP, T0 + 2000, WINDOW);
        await store.sweep(T0 + 1999);
        assert.equal(await store.addFailure(IP, T0 + 2001, 10 * WINDOW), 2, 'a later failure is kept');
      }));

    test('failures and lockouts are seen by another instance (the CLI, a restart, another node)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await store.addFailure(IP, T0, WINDOW);
        await store.lockOut(IP, T0 + WINDOW, T0);
        const other = await reopen();
        assert.equal(await other.lockoutEnd(IP), T0 + WINDOW);
        assert.equal(await other.addFailure(IP, T0 + 1, WINDOW), 2);
        assert.deepEqual(await other.reset([IP]), { failures: 2, lockouts: 1 });
        assert.equal(await store.lockoutEnd(IP), undefined, 'and the other way round');
      }));
  });
}
