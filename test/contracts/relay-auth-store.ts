import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RelayAuthStore } from '../../src/relay-auth/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every RelayAuthStore promises: POP-before-SMTP grants whose expiry is judged against
// the `now` of each lookup (a grant is live before expiresAt, gone at it, with no sweep); the
// sweep only drops what no lookup would return anyway.

const WINDOW = 600_000;
const T0 = 1_700_000_000_000;

export function relayAuthStoreContract(backend: string, open: OpenStore<RelayAuthStore>): void {
  describe(`RelayAuthStore contract: ${backend}`, () => {
    test('a grant is live until just before expiresAt and gone at expiresAt, judged at lookup', () =>
      withStore(open, async ({ store }) => {
        const grant = await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, true);
        assert.deepEqual(grant, { key: '192.0.2.7', user: 'alice@example.test', grantedAt: T0, expiresAt: T0 + WINDOW });
        assert.deepEqual(await store.check('192.0.2.7', T0), [grant]);
        assert.deepEqual(await store.check('192.0.2.7', T0 + WINDOW - 1), [grant]);
        assert.deepEqual(await store.check('192.0.2.7', T0 + WINDOW), []);
        assert.deepEqual(await store.check('192.0.2.8', T0), [], 'another key has nothing');
        assert.deepEqual(await store.check('192.0.2.0/24', T0), [], 'keys are compared as they are');
      }));

    test('renew (sliding window): a new login moves both times', () =>
      withStore(open, async ({ store }) => {
        await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, true);
        const renewed = await store.grant('192.0.2.7', 'alice@example.test', T0 + 5000, WINDOW, true);
        assert.deepEqual(renewed, { key: '192.0.2.7', user: 'alice@example.test', grantedAt: T0 + 5000, expiresAt: T0 + 5000 + WINDOW });
        assert.deepEqual(await store.check('192.0.2.7', T0 + WINDOW), [renewed]);
      }));

    test('no renew (fixed window): a live grant keeps its times; once expired, a login starts a new window', () =>
      withStore(open, async ({ store }) => {
        const first = await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, false);
        assert.deepEqual(await store.grant('192.0.2.7', 'alice@example.test', T0 + 5000, WINDOW, false), first);
        assert.deepEqual(await store.check('192.0.2.7', T0 + WINDOW), [], 'not moved by the second login');
        const fresh = await store.grant('192.0.2.7', 'alice@example.test', T0 + WINDOW, WINDOW, false);
        assert.deepEqual(fresh, { key: '192.0.2.7', user: 'alice@example.test', grantedAt: T0 + WINDOW, expiresAt: T0 + 2 * WINDOW });
      }));

    test('several users per key, newest grant first; one user per key holds one grant', () =>
      withStore(open, async ({ store }) => {
        await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, true);
        await store.grant('192.0.2.7', 'bob@example.test', T0 + 1000, WINDOW, true);
        await store.grant('192.0.2.7', 'carol@example.test', T0 + 500, WINDOW, true);
        assert.deepEqual((await store.check('192.0.2.7', T0 + 2000)).map((g) => g.user), ['bob@example.test', 'carol@example.test', 'alice@example.test']);
        await store.grant('192.0.2.7', 'alice@example.test', T0 + 3000, WINDOW, true);
        assert.deepEqual((await store.check('192.0.2.7', T0 + 3000)).map((g) => g.user), ['alice@example.test', 'bob@example.test', 'carol@example.test']);
        assert.deepEqual((await store.check('192.0.2.7', T0 + WINDOW + 600)).map((g) => g.user), ['alice@example.test', 'bob@example.test'], 'each expires on its own');
      }));

    test('revoke: every grant of a key, or one user\'s; the count removed is told', () =>
      withStore(open, async ({ store }) => {
        await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, true);
        await store.grant('192.0.2.7', 'bob@example.test', T0, WINDOW, true);
        await store.grant('192.0.2.8', 'carol@example.test', T0, WINDOW, true);
        assert.equal(await store.revoke('192.0.2.7', 'bob@example.test'), 1);
        assert.deepEqual((await store.check('192.0.2.7', T0)).map((g) => g.user), ['alice@example.test']);
        assert.equal(await store.revoke('192.0.2.7', 'nobody@example.test'), 0);
        await store.grant('192.0.2.7', 'bob@example.test', T0, WINDOW, true);
        assert.equal(await store.revoke('192.0.2.7'), 2);
        assert.deepEqual(await store.check('192.0.2.7', T0), []);
        assert.equal(await store.revoke('192.0.2.7'), 0);
        assert.equal((await store.check('192.0.2.8', T0)).length, 1, 'other keys keep theirs');
      }));

    test('list: only live grants, by key and user', () =>
      withStore(open, async ({ store }) => {
        await store.grant('192.0.2.9', 'bob@example.test', T0, WINDOW, true);
        await store.grant('192.0.2.7', 'carol@example.test', T0, WINDOW, true);
        await store.grant('192.0.2.7', 'alice@example.test', T0 + 1000, WINDOW, true);
        await store.grant('192.0.2.8', 'dave@example.test', T0 - WINDOW, WINDOW, true);
        assert.deepEqual(
          (await store.list(T0 + 1)).map((g) => [g.key, g.user]),
          [
            ['192.0.2.7', 'alice@example.test'],
            ['192.0.2.7', 'carol@example.test'],
            ['192.0.2.9', 'bob@example.test'],
          ],
        );
        assert.deepEqual((await store.list(T0 + WINDOW)).map((g) => g.user), ['alice@example.test']);
      }));

    test('sweep removes only expired grants and says how many', () =>
      withStore(open, async ({ store }) => {
        await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, true);
        await store.grant('192.0.2.7', 'bob@example.test', T0 + 1000, WINDOW, true);
        await store.grant('192.0.2.8', 'carol@example.test', T0 + 2000, WINDOW, true);
        assert.equal(await store.sweep(T0 + WINDOW + 1000), 2, 'alice and bob expired');
        assert.deepEqual((await store.check('192.0.2.8', T0 + WINDOW + 1000)).map((g) => g.user), ['carol@example.test']);
        assert.deepEqual(await store.check('192.0.2.7', T0), [], 'swept grants are gone even to an earlier clock');
        assert.equal(await store.sweep(T0 + WINDOW + 1000), 0);
      }));

    test('grants are seen by another instance (the CLI, another node)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        const grant = await store.grant('192.0.2.7', 'alice@example.test', T0, WINDOW, true);
        const other = await reopen();
        assert.deepEqual(await other.check('192.0.2.7', T0 + 1), [grant]);
        assert.equal(await other.revoke('192.0.2.7'), 1);
        assert.deepEqual(await store.check('192.0.2.7', T0 + 1), [], 'and the other way round');
      }));
  });
}
