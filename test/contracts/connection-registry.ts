import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnectionRegistry } from '../../src/net/connection-registry.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every ConnectionRegistry promises: live connections counted per service and client
// address, up to a maximum, across every process that shares the registry; connections of a
// holder (a process) whose heartbeat has lapsed no longer count; a token bucket per service
// and address for the connection rate. Time comes only through `now` arguments. Backends
// of one process (no `reopen`) have no other holders: for them a holder never lapses.

const T0 = 1_700_000_000_000;
const LEASE = 10_000;
const A = '192.0.2.7';
const B = '192.0.2.8';

export function connectionRegistryContract(backend: string, open: OpenStore<ConnectionRegistry>): void {
  describe(`ConnectionRegistry contract: ${backend}`, () => {
    test('admits up to max per service and address; other addresses and services are counted apart', () =>
      withStore(open, async ({ store }) => {
        await store.heartbeat('node-1', T0, LEASE);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c1', 2, T0), true);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c2', 2, T0), true);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c3', 2, T0), false, 'the third from A is over the maximum');
        assert.equal(await store.admit('pop3', B, 'node-1', 'c4', 2, T0), true, 'another address');
        assert.equal(await store.admit('smtp', A, 'node-1', 'c5', 2, T0), true, 'another service');
        assert.equal(await store.admit('pop3', A, 'node-1', 'c6', 3, T0), true, 'the maximum is the caller\'s');
      }));

    test('release frees a place; releasing a connection that is not registered frees nothing', () =>
      withStore(open, async ({ store }) => {
        await store.heartbeat('node-1', T0, LEASE);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c1', 1, T0), true);
        await store.release('pop3', A, 'node-1', 'never-admitted');
        await store.release('pop3', B, 'node-1', 'c1');
        await store.release('smtp', A, 'node-1', 'c1');
        assert.equal(await store.admit('pop3', A, 'node-1', 'c2', 1, T0), false, 'c1 still holds the place');
        await store.release('pop3', A, 'node-1', 'c1');
        assert.equal(await store.admit('pop3', A, 'node-1', 'c2', 1, T0), true, 'free once c1 is released');
        await store.release('pop3', A, 'node-1', 'c1');
        assert.equal(await store.admit('pop3', A, 'node-1', 'c3', 1, T0), false, 'a second release of c1 frees nothing');
      }));

    test('admits at the same moment never go past the maximum', () =>
      withStore(open, async ({ store, reopen }) => {
        const other = reopen ? await reopen() : store;
        await store.heartbeat('node-1', T0, LEASE);
        await other.heartbeat('node-2', T0, LEASE);
        const results = await Promise.all(
          Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? store.admit('pop3', A, 'node-1', `c${i}`, 5, T0) : other.admit('pop3', A, 'node-2', `c${i}`, 5, T0))),
        );
        assert.equal(results.filter(Boolean).length, 5);
      }));

    test('connections are counted together by every instance (the workers, the nodes)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('one process only');
        const other = await reopen();
        await store.heartbeat('node-1', T0, LEASE);
        await other.heartbeat('node-2', T0, LEASE);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c1', 2, T0), true);
        assert.equal(await other.admit('pop3', A, 'node-2', 'c1', 2, T0), true, 'the same id under another holder is another connection');
        assert.equal(await other.admit('pop3', A, 'node-2', 'c2', 2, T0), false);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c2', 2, T0), false);
        await store.release('pop3', A, 'node-1', 'c1');
        assert.equal(await other.admit('pop3', A, 'node-2', 'c2', 2, T0), true, "node-1's release frees a place for node-2");
      }));

    test('the connections of a holder whose heartbeat has lapsed at now no longer count; renewed heartbeats keep them', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('one process only: its holder never lapses');
        const other = await reopen();
        await store.heartbeat('node-1', T0, LEASE);
        await store.heartbeat('node-2', T0, LEASE);
        assert.equal(await store.admit('pop3', A, 'node-1', 'c1', 2, T0), true);
        assert.equal(await store.admit('pop3', A, 'node-2', 'c2', 2, T0), true);
        // node-1 keeps renewing; node-2 dies (kill -9) and stops.
        await store.heartbeat('node-1', T0 + LEASE / 2, LEASE);
        await other.heartbeat('node-3', T0 + LEASE - 1, LEASE);
        assert.equal(await other.admit('pop3', A, 'node-3', 'c3', 2, T0 + LEASE - 1), false, 'node-2 is alive until just before T0 + LEASE');
        await other.heartbeat('node-3', T0 + LEASE, LEASE);
        assert.equal(await other.admit('pop3', A, 'node-3', 'c3', 2, T0 + LEASE), true, "node-2's lease has run out: its connection no longer counts");
        assert.equal(await other.admit('pop3', A, 'node-3', 'c4', 2, T0 + LEASE), false, "node-1's renewed heartbeat keeps its connection counted");
        assert.equal(await other.admit('pop3', A, 'node-3', 'c4', 2, T0 + LEASE / 2 + LEASE), true, 'until node-1 stops renewing too');
      }));

    test('tokens: up to perMinute at once, then refilled in proportion to the time passed, never past perMinute', () =>
      withStore(open, async ({ store }) => {
        // 4 a minute: one token every 15 s.
        for (let i = 0; i < 4; i++) assert.equal(await store.takeToken('pop3', A, 4, T0), true, `token ${i + 1} of 4`);
        assert.equal(await store.takeToken('pop3', A, 4, T0), false, 'the bucket is empty');
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 7_500), false, 'half a token is no token');
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 15_000), true, 'one token after 15 s');
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 15_000), false);
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 45_000), true, 'two tokens 30 s later');
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 45_000), true);
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 45_000), false);
        for (let i = 0; i < 4; i++) assert.equal(await store.takeToken('pop3', A, 4, T0 + 3_600_000), true, `after an hour, token ${i + 1} of 4`);
        assert.equal(await store.takeToken('pop3', A, 4, T0 + 3_600_000), false, 'an hour of refill is still at most perMinute');
      }));

    test('tokens: each service and address has its bucket', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.takeToken('pop3', A, 1, T0), true);
        assert.equal(await store.takeToken('pop3', A, 1, T0), false);
        assert.equal(await store.takeToken('pop3', B, 1, T0), true, 'another address');
        assert.equal(await store.takeToken('smtp', A, 1, T0), true, 'another service');
      }));

    test('tokens are shared by every instance', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('one process only');
        const other = await reopen();
        assert.equal(await store.takeToken('pop3', A, 2, T0), true);
        assert.equal(await other.takeToken('pop3', A, 2, T0), true);
        assert.equal(await store.takeToken('pop3', A, 2, T0), false);
        assert.equal(await other.takeToken('pop3', A, 2, T0), false);
        const taken = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? store : other).takeToken('smtp', A, 3, T0)));
        assert.equal(taken.filter(Boolean).length, 3, 'at the same moment: no more than the bucket holds');
      }));
  });
}
