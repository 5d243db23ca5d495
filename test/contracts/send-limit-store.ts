import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { SendLimitStore } from '../../src/policy/send-limits.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every SendLimitStore promises: relayed messages and recipients per user, counted in
// the hour and the day that end at `now` (judged when asked, no sweep needed), listed, reset,
// and swept without changing any answer.

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = 1_700_000_000_000;

const usage = (user: string, messagesLastHour: number, messagesLastDay: number, recipientsLastDay: number) => ({ user, messagesLastHour, messagesLastDay, recipientsLastDay });

export function sendLimitStoreContract(backend: string, open: OpenStore<SendLimitStore>): void {
  describe(`SendLimitStore contract: ${backend}`, () => {
    test('usage counts messages later than now - 1 hour and now - 1 day, and recipients within the day', () =>
      withStore(open, async ({ store }) => {
        assert.deepEqual(await store.usage('alice@example.test', T0), usage('alice@example.test', 0, 0, 0));
        await store.record('alice@example.test', 3, T0);
        await store.record('alice@example.test', 2, T0 + HOUR / 2);
        assert.deepEqual(await store.usage('alice@example.test', T0 + HOUR / 2), usage('alice@example.test', 2, 2, 5));
        assert.deepEqual(await store.usage('alice@example.test', T0 + HOUR), usage('alice@example.test', 1, 2, 5), 'the first left the hour exactly at its end');
        await store.record('alice@example.test', 1, T0 + 2 * HOUR);
        assert.deepEqual(await store.usage('alice@example.test', T0 + 2 * HOUR), usage('alice@example.test', 1, 3, 6));
        assert.deepEqual(await store.usage('alice@example.test', T0 + DAY), usage('alice@example.test', 0, 2, 3), 'the first left the day exactly at its end');
        assert.deepEqual(await store.usage('alice@example.test', T0 + 2 * HOUR + DAY), usage('alice@example.test', 0, 0, 0));
      }));

    test('users are counted apart; a message without relayed recipients still counts as a message', () =>
      withStore(open, async ({ store }) => {
        await store.record('alice@example.test', 2, T0);
        await store.record('bob@example.test', 0, T0);
        assert.deepEqual(await store.usage('alice@example.test', T0), usage('alice@example.test', 1, 1, 2));
        assert.deepEqual(await store.usage('bob@example.test', T0), usage('bob@example.test', 1, 1, 0));
      }));

    test('list: every user who relayed within the day, by user', () =>
      withStore(open, async ({ store }) => {
        await store.record('carol@example.test', 1, T0 - DAY);
        await store.record('bob@example.test', 4, T0 - 2 * HOUR);
        await store.record('alice@example.test', 1, T0);
        assert.deepEqual(await store.list(T0), [usage('alice@example.test', 1, 1, 1), usage('bob@example.test', 0, 1, 4)]);
        assert.deepEqual(await store.list(T0 + DAY), [], 'judged at lookup: nobody relayed in that day');
      }));

    test('reset forgets one user\'s counts, or everyone\'s, and tells how many messages went', () =>
      withStore(open, async ({ store }) => {
        await store.record('alice@example.test', 1, T0);
        await store.record('alice@example.test', 1, T0 + 1);
        await store.record('bob@example.test', 1, T0);
        assert.equal(await store.reset('alice@example.test'), 2);
        assert.deepEqual(await store.usage('alice@example.test', T0 + 1), usage('alice@example.test', 0, 0, 0));
        assert.deepEqual(await store.usage('bob@example.test', T0 + 1), usage('bob@example.test', 1, 1, 1), 'others keep theirs');
        assert.equal(await store.reset('nobody@example.test'), 0);
        await store.record('carol@example.test', 1, T0);
        assert.equal(await store.reset(), 2);
        assert.deepEqual(await store.list(T0 + 1), []);
      }));

    test('sweep forgets messages a day or more before now, and keeps the rest', () =>
      withStore(open, async ({ store }) => {
        await store.record('alice@example.test', 5, T0);
        await store.record('alice@example.test', 1, T0 + HOUR);
        await store.sweep(T0 + DAY);
        assert.deepEqual(await store.usage('alice@example.test', T0 + HOUR), usage('alice@example.test', 1, 1, 1), 'gone even to an earlier clock');
        assert.equal(await store.reset('alice@example.test'), 1);
      }));

    test('counts are seen by another instance (the CLI, a restart, another node)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await store.record('alice@example.test', 2, T0);
        const other = await reopen();
        assert.deepEqual(await other.usage('alice@example.test', T0), usage('alice@example.test', 1, 1, 2));
        assert.equal(await other.reset('alice@example.test'), 1);
        assert.deepEqual(await store.usage('alice@example.test', T0), usage('alice@example.test', 0, 0, 0), 'and the other way round');
      }));
  });
}
