import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AccountChange, AccountEvents } from '../../src/accounts/events.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every AccountEvents promises: a published change reaches every subscriber, in every
// instance that shares the announcements (another process, another node), in the order it was
// published, until the subscriber unsubscribes. Delivery may be asynchronous: the suite waits
// for it, for a bounded time.

/** Waits until `done()` holds, for at most a few seconds. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`not delivered within 5 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export function accountEventsContract(backend: string, open: OpenStore<AccountEvents>): void {
  describe(`AccountEvents contract: ${backend}`, () => {
    test('a change reaches every subscriber, in the order published', () =>
      withStore(open, async ({ store }) => {
        const first: AccountChange[] = [];
        const second: AccountChange[] = [];
        await store.subscribe((change) => first.push(change));
        await store.subscribe((change) => second.push(change));
        await store.publish({ kind: 'user', subject: 'alice@example.test' });
        await store.publish({ kind: 'domain', subject: 'example.test' });
        await store.publish({ kind: 'password', subject: 'bob@example.test' });
        const expected = [
          { kind: 'user', subject: 'alice@example.test' },
          { kind: 'domain', subject: 'example.test' },
          { kind: 'password', subject: 'bob@example.test' },
        ];
        await until(() => first.length === 3 && second.length === 3, 'three changes to two subscribers');
        assert.deepEqual(first, expected);
        assert.deepEqual(second, expected);
      }));

    test('an unsubscribed listener hears nothing more; the others still do', () =>
      withStore(open, async ({ store }) => {
        const gone: AccountChange[] = [];
        const staying: AccountChange[] = [];
        const unsubscribe = await store.subscribe((change) => gone.push(change));
        await store.subscribe((change) => staying.push(change));
        unsubscribe();
        await store.publish({ kind: 'alias', subject: 'sales@example.test' });
        await until(() => staying.length === 1, 'the change to the staying subscriber');
        assert.deepEqual(gone, []);
      }));

    test('a change published by one instance reaches the subscribers of another, and its own', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('announcements within one process only');
        const other = await reopen();
        const there: AccountChange[] = [];
        const here: AccountChange[] = [];
        await other.subscribe((change) => there.push(change));
        await store.subscribe((change) => here.push(change));
        await store.publish({ kind: 'apop', subject: 'alice@example.test' });
        await until(() => there.length === 1 && here.length === 1, 'the change to both instances');
        assert.deepEqual(there, [{ kind: 'apop', subject: 'alice@example.test' }]);
        assert.deepEqual(here, there);
      }));
  });
}
