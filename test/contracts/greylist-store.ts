import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { GreylistStore } from '../../src/filter/greylist.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every GreylistStore promises: triplet records and network memories that count while
// their expiry is later than the `now` of the call asking (no sweep needed), a first attempt
// that never replaces a live record (so concurrent attempts keep one first-seen time), a pass
// that keeps when the triplet was first seen, and a sweep that only drops what no answer needs.

const T0 = 1_700_000_000_000;
const MINUTE = 60_000;
const TRIPLET = '192.0.2.0/24 "alice@example.test" "bob@example.net"';
const NETWORK = '192.0.2.0/24';

export function greylistStoreContract(backend: string, open: OpenStore<GreylistStore>): void {
  describe(`GreylistStore contract: ${backend}`, () => {
    test('nothing is known of a new triplet or network', () =>
      withStore(open, async ({ store }) => {
        assert.deepEqual(await store.lookup(TRIPLET, NETWORK, T0), { triplet: undefined, networkUntil: undefined });
      }));

    test('recordAttempt records a waiting triplet, seen until its expiry and no longer', () =>
      withStore(open, async ({ store }) => {
        const record = { firstSeen: T0, passed: false, expiresAt: T0 + 10 * MINUTE };
        assert.deepEqual(await store.recordAttempt(TRIPLET, T0, T0 + 10 * MINUTE), record);
        assert.deepEqual((await store.lookup(TRIPLET, NETWORK, T0 + 10 * MINUTE - 1)).triplet, record);
        assert.equal((await store.lookup(TRIPLET, NETWORK, T0 + 10 * MINUTE)).triplet, undefined, 'expired at its expiry, no sweep needed');
        assert.equal((await store.lookup(TRIPLET, NETWORK, T0)).networkUntil, undefined, 'an attempt remembers no network');
      }));

    test('recordAttempt keeps a live record (waiting or passed) and resolves to it; an expired one is replaced', () =>
      withStore(open, async ({ store }) => {
        await store.recordAttempt(TRIPLET, T0, T0 + 10 * MINUTE);
        assert.deepEqual(await store.recordAttempt(TRIPLET, T0 + MINUTE, T0 + 11 * MINUTE), { firstSeen: T0, passed: false, expiresAt: T0 + 10 * MINUTE });
        assert.deepEqual(await store.recordAttempt(TRIPLET, T0 + 10 * MINUTE, T0 + 20 * MINUTE), { firstSeen: T0 + 10 * MINUTE, passed: false, expiresAt: T0 + 20 * MINUTE });
        await store.recordPass(TRIPLET, NETWORK, T0 + 15 * MINUTE, T0 + 100 * MINUTE);
        assert.deepEqual(await store.recordAttempt(TRIPLET, T0 + 16 * MINUTE, T0 + 26 * MINUTE), { firstSeen: T0 + 10 * MINUTE, passed: true, expiresAt: T0 + 100 * MINUTE });
      }));

    test('recordPass marks the triplet passed, keeping its first-seen time, and remembers its network', () =>
      withStore(open, async ({ store }) => {
        await store.recordAttempt(TRIPLET, T0, T0 + 10 * MINUTE);
        await store.recordPass(TRIPLET, NETWORK, T0 + 5 * MINUTE, T0 + 100 * MINUTE);
        assert.deepEqual(await store.lookup(TRIPLET, NETWORK, T0 + 99 * MINUTE), { triplet: { firstSeen: T0, passed: true, expiresAt: T0 + 100 * MINUTE }, networkUntil: T0 + 100 * MINUTE });
        assert.deepEqual(await store.lookup(TRIPLET, NETWORK, T0 + 100 * MINUTE), { triplet: undefined, networkUntil: undefined });
        await store.recordPass(TRIPLET, NETWORK, T0 + 50 * MINUTE, T0 + 150 * MINUTE);
        assert.deepEqual((await store.lookup(TRIPLET, NETWORK, T0 + 149 * MINUTE)).triplet, { firstSeen: T0, passed: true, expiresAt: T0 + 150 * MINUTE }, 'renewed');
      }));

    test('recordPass without a live record starts one at now', () =>
      withStore(open, async ({ store }) => {
        await store.recordAttempt(TRIPLET, T0, T0 + MINUTE);
        await store.recordPass(TRIPLET, NETWORK, T0 + 2 * MINUTE, T0 + 100 * MINUTE);
        assert.deepEqual((await store.lookup(TRIPLET, NETWORK, T0 + 2 * MINUTE)).triplet, { firstSeen: T0 + 2 * MINUTE, passed: true, expiresAt: T0 + 100 * MINUTE });
      }));

    test('rememberNetwork remembers a network until a time, judged at lookup; networks and triplets are kept apart', () =>
      withStore(open, async ({ store }) => {
        await store.rememberNetwork(NETWORK, T0, T0 + 10 * MINUTE);
        assert.deepEqual(await store.lookup(TRIPLET, NETWORK, T0 + 10 * MINUTE - 1), { triplet: undefined, networkUntil: T0 + 10 * MINUTE });
        assert.equal((await store.lookup(TRIPLET, '198.51.100.0/24', T0)).networkUntil, undefined, 'another network');
        await store.rememberNetwork(NETWORK, T0 + MINUTE, T0 + 20 * MINUTE);
        assert.equal((await store.lookup(TRIPLET, NETWORK, T0 + 15 * MINUTE)).networkUntil, T0 + 20 * MINUTE, 'renewed');
        assert.equal((await store.lookup(TRIPLET, NETWORK, T0 + 20 * MINUTE)).networkUntil, undefined);
      }));

    test('triplets differing in any part are different triplets', () =>
      withStore(open, async ({ store }) => {
        const others = [
          '192.0.2.0/24 "" "bob@example.net"',
          '192.0.2.0/24 "alice@example.test" "carol@example.net"',
          '198.51.100.0/24 "alice@example.test" "bob@example.net"',
          '2001:db8::/64 "alice@example.test" "bob@example.net"',
        ];
        await store.recordPass(TRIPLET, NETWORK, T0, T0 + 100 * MINUTE);
        for (const [i, other] of others.entries()) {
          assert.equal((await store.lookup(other, NETWORK, T0)).triplet, undefined, other);
          assert.equal((await store.recordAttempt(other, T0 + i, T0 + 10 * MINUTE)).firstSeen, T0 + i, other);
        }
        assert.equal((await store.lookup(TRIPLET, NETWORK, T0)).triplet?.passed, true);
      }));

    test('first attempts at once from two instances keep one record', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        const other = await reopen();
        const records = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? store : other).recordAttempt(TRIPLET, T0 + i, T0 + i + 10 * MINUTE)));
        const firstSeen = new Set(records.map((record) => record.firstSeen));
        assert.equal(firstSeen.size, 1, `one first-seen time, not ${[...firstSeen].join(', ')}`);
      }));

    test('records are seen by another instance (the CLI, a restart, another node)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await store.recordAttempt(TRIPLET, T0, T0 + 10 * MINUTE);
        const other = await reopen();
        assert.deepEqual((await other.lookup(TRIPLET, NETWORK, T0 + MINUTE)).triplet, { firstSeen: T0, passed: false, expiresAt: T0 + 10 * MINUTE });
        await other.recordPass(TRIPLET, NETWORK, T0 + 6 * MINUTE, T0 + 100 * MINUTE);
        assert.deepEqual(await store.lookup(TRIPLET, NETWORK, T0 + 7 * MINUTE), { triplet: { firstSeen: T0, passed: true, expiresAt: T0 + 100 * MINUTE }, networkUntil: T0 + 100 * MINUTE });
      }));

    test('sweep keeps everything live after the time it is given', () =>
      withStore(open, async ({ store }) => {
        await store.recordAttempt(TRIPLET, T0, T0 + 10 * MINUTE);
        await store.recordAttempt('192.0.2.0/24 "" "bob@example.net"', T0, T0 + 10 * MINUTE + 1);
        await store.rememberNetwork(NETWORK, T0, T0 + 10 * MINUTE);
        await store.rememberNetwork('198.51.100.0/24', T0, T0 + 10 * MINUTE + 1);
        await store.sweep(T0 + 10 * MINUTE);
        assert.deepEqual(await store.lookup('192.0.2.0/24 "" "bob@example.net"', '198.51.100.0/24', T0 + 10 * MINUTE), { triplet: { firstSeen: T0, passed: false, expiresAt: T0 + 10 * MINUTE + 1 }, networkUntil: T0 + 10 * MINUTE + 1 });
      }));
  });
}
