import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ForwardingStore } from '../../src/forwarding/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every ForwardingStore promises: one rule per address, replaced whole, removed, listed,
// seen by another instance, at once even by one that read the address before (whatever it
// remembers, see src/forwarding/cached.ts).

export function forwardingStoreContract(backend: string, open: OpenStore<ForwardingStore>): void {
  describe(`ForwardingStore contract: ${backend}`, () => {
    test('set, replace, remove and list rules', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.get('a@example.test'), undefined);
        await store.set('a@example.test', { targets: ['x@remote.test', 'y@remote.test'], keep: false });
        await store.set('b@example.test', { targets: ['"odd,one"@remote.test'], keep: true });
        assert.deepEqual(await store.get('a@example.test'), { targets: ['x@remote.test', 'y@remote.test'], keep: false });
        await store.set('a@example.test', { targets: ['z@remote.test'], keep: true });
        assert.deepEqual(await store.get('a@example.test'), { targets: ['z@remote.test'], keep: true });
        assert.deepEqual(await store.list(), [
          { address: 'a@example.test', targets: ['z@remote.test'], keep: true },
          { address: 'b@example.test', targets: ['"odd,one"@remote.test'], keep: true },
        ]);
        assert.equal(await store.remove('a@example.test'), true);
        assert.equal(await store.remove('a@example.test'), false);
        assert.equal(await store.get('a@example.test'), undefined);
      }));

    test('another instance sees a rule at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        await store.set('a@example.test', { targets: ['x@remote.test'], keep: false });
        assert.deepEqual(await (await reopen()).get('a@example.test'), { targets: ['x@remote.test'], keep: false });
      }));

    test('an instance that found no rule, or an old one, sees another instance\'s change at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        const other = await reopen();
        assert.equal(await other.get('a@example.test'), undefined);
        await store.set('a@example.test', { targets: ['x@remote.test'], keep: false });
        assert.deepEqual(await other.get('a@example.test'), { targets: ['x@remote.test'], keep: false }, 'a new rule');
        await store.set('a@example.test', { targets: ['y@remote.test'], keep: true });
        assert.deepEqual(await other.get('a@example.test'), { targets: ['y@remote.test'], keep: true }, 'a replaced rule');
        assert.equal(await store.remove('a@example.test'), true);
        assert.equal(await other.get('a@example.test'), undefined, 'a removed rule');
      }));
  });
}
