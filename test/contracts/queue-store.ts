import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Envelope, QueueStore } from '../../src/queue/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every QueueStore promises: an idempotent index of spooled messages, claimed oldest
// first under an exclusive lease (no second claim, also from another instance, until the lease
// ends), with answers and the next attempt recorded in one step.

const T0 = 1_700_000_000_000;
const LEASE = 15 * 60_000;

function envelope(id: string, receivedAt: number, to = ['bob@remote.test'], extra: Partial<Envelope> = {}): Envelope {
  return { id, from: 'alice@example.test', to, receivedAt, clientIp: '192.0.2.7', ...extra };
}

/** Three messages received at T0, T0 + 1000 and T0 + 2000, due when received. */
async function three(store: QueueStore): Promise<void> {
  await store.add(envelope('B', T0 + 1000), 200);
  await store.add(envelope('A', T0), 100);
  await store.add(envelope('C', T0 + 2000), 300);
}

const ids = (messages: { id: string }[]) => messages.map((m) => m.id);

export function queueStoreContract(backend: string, open: OpenStore<QueueStore>): void {
  describe(`QueueStore contract: ${backend}`, () => {
    test('add indexes a message with every recipient pending, due when received; get, list and ids show it', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.get('A'), undefined);
        await store.add(envelope('A', T0, ['bob@remote.test', 'carol@far.test'], { authorizedUser: 'alice@example.test' }), 1234);
        await store.add(envelope('B', T0 + 1, ['dave@remote.test'], { from: '' }), 99);
        const a = await store.get('A');
        assert.ok(a);
        assert.deepEqual(
          {
            id: a.id,
            from: a.from,
            receivedAt: a.receivedAt,
            clientIp: a.clientIp,
            authorizedUser: a.authorizedUser,
            size: a.size,
            attempts: a.attempts,
            nextAttemptAt: a.nextAttemptAt,
            lastError: a.lastError,
            warned: a.warned,
            recipients: a.recipients.map((r) => ({ address: r.address, state: r.state, status: r.status })),
          },
          {
            id: 'A',
            from: 'alice@example.test',
            receivedAt: T0,
            clientIp: '192.0.2.7',
            authorizedUser: 'alice@example.test',
            size: 1234,
            attempts: 0,
            nextAttemptAt: T0,
            lastError: undefined,
            warned: false,
            recipients: [
              { address: 'bob@remote.test', state: 'pending', status: undefined },
              { address: 'carol@far.test', state: 'pending', status: undefined },
            ],
          },
        );
        const b = await store.get('B');
        assert.equal(b?.from, '', 'the null sender');
        assert.equal(b?.authorizedUser, undefined);
        assert.deepEqual(ids(await store.list()), ['A', 'B']);
        assert.deepEqual(await store.ids(), new Set(['A', 'B']));
      }));

    test('add is idempotent: adding again changes nothing, not even what attempts recorded', () =>
      withStore(open, async ({ store }) => {
        await store.add(envelope('A', T0, ['bob@remote.test', 'carol@far.test']), 100);
        await store.recordAttempt('A', [{ address: 'bob@remote.test', state: 'delivered', status: '2.0.0' }], { attempts: 1, nextAttemptAt: T0 + 60_000, warned: false }, T0);
        const before = await store.get('A');
        await store.add(envelope('A', T0, ['bob@remote.test', 'carol@far.test']), 100);
        assert.deepEqual(await store.get('A'), before);
        assert.equal((await store.list()).length, 1);
      }));

    test('list is oldest first', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        assert.deepEqual(ids(await store.list()), ['A', 'B', 'C']);
      }));

    test('claim takes due messages only, oldest first, at most the limit', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        assert.deepEqual(await store.claim(T0 - 1, 10, LEASE), [], 'nothing is due yet');
        assert.deepEqual(ids(await store.claim(T0 + 1000, 10, LEASE)), ['A', 'B'], 'C is not due before T0 + 2000');
        assert.deepEqual(ids(await store.claim(T0 + 5000, 10, LEASE)), ['C']);
      }));

    test('claim honours the limit, taking the earliest due', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        assert.deepEqual(ids(await store.claim(T0 + 5000, 2, LEASE)), ['A', 'B']);
        assert.deepEqual(ids(await store.claim(T0 + 5000, 2, LEASE)), ['C']);
      }));

    test('a lease is exclusive: no second claim until it ends, then the message is due again', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        const now = T0 + 5000;
        assert.equal((await store.claim(now, 10, LEASE)).length, 3);
        assert.deepEqual(await store.claim(now, 10, LEASE), [], 'claimed at the same moment: nothing');
        assert.deepEqual(await store.claim(now + LEASE - 1, 10, LEASE), [], 'nothing while the lease runs');
        assert.equal(await store.nextDueAt(), now + LEASE, 'they fall due when the lease ends');
        assert.deepEqual(ids(await store.claim(now + LEASE, 10, LEASE)), ['A', 'B', 'C'], 'due again once the lease ended (a delivery that died)');
      }));

    test('claims at the same moment never share a message', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        const claims = await Promise.all(Array.from({ length: 4 }, () => store.claim(T0 + 5000, 10, LEASE)));
        assert.deepEqual(claims.flatMap(ids).sort(), ['A', 'B', 'C']);
      }));

    test('a lease holds against another instance too (another node of a cluster)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await three(store);
        const other = await reopen();
        assert.deepEqual(ids(await store.claim(T0 + 1000, 10, LEASE)), ['A', 'B']);
        assert.deepEqual(ids(await other.claim(T0 + 5000, 10, LEASE)), ['C']);
        assert.deepEqual(await store.claim(T0 + 5000, 10, LEASE), []);
      }));

    test('releaseLeases makes every leased message due now and leaves the others alone', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0 + 1000, 10, LEASE);
        assert.equal(await store.releaseLeases(T0 + 1500), 2);
        assert.deepEqual(ids(await store.claim(T0 + 1500, 10, LEASE)), ['A', 'B']);
        assert.equal((await store.get('C'))?.nextAttemptAt, T0 + 2000, 'C was not leased and keeps its time');
        assert.equal(await store.releaseLeases(T0 + 1600), 2);
        assert.equal(await store.releaseLeases(T0 + 1600), 0, 'nothing left leased');
      }));

    test('nextDueAt: undefined for an empty queue, else the earliest next attempt', () =>
      withStore(open, async ({ store }) => {
        assert.equal(await store.nextDueAt(), undefined);
        await three(store);
        assert.equal(await store.nextDueAt(), T0);
        await store.recordAttempt('A', [], { attempts: 1, nextAttemptAt: T0 + 90_000, warned: false }, T0);
        assert.equal(await store.nextDueAt(), T0 + 1000);
        for (const id of ['A', 'B', 'C']) await store.remove(id);
        assert.equal(await store.nextDueAt(), undefined);
      }));

    test('recordAttempt writes the answers and the next attempt together and ends the lease', () =>
      withStore(open, async ({ store }) => {
        await store.add(envelope('A', T0, ['bob@remote.test', 'carol@far.test', 'dave@remote.test']), 100);
        const [claimed] = await store.claim(T0, 10, LEASE);
        assert.equal(claimed.id, 'A');
        await store.recordAttempt(
          'A',
          [
            { address: 'bob@remote.test', state: 'delivered', status: '2.0.0', diagnostic: 'mx said: 250 ok', remoteMta: 'mx.remote.test' },
            { address: 'carol@far.test', state: 'pending', status: '4.2.2', diagnostic: 'mx said: 452 full', remoteMta: 'mx.far.test' },
          ],
          { attempts: 1, nextAttemptAt: T0 + 60_000, lastError: 'mx said: 452 full', warned: true },
          T0 + 10,
        );
        const after = await store.get('A');
        assert.equal(after?.attempts, 1);
        assert.equal(after?.nextAttemptAt, T0 + 60_000);
        assert.equal(after?.lastError, 'mx said: 452 full');
        assert.equal(after?.warned, true);
        assert.deepEqual(
          after?.recipients.map((r) => ({ address: r.address, state: r.state, status: r.status, diagnostic: r.diagnostic, remoteMta: r.remoteMta, updatedAt: r.updatedAt })),
          [
            { address: 'bob@remote.test', state: 'delivered', status: '2.0.0', diagnostic: 'mx said: 250 ok', remoteMta: 'mx.remote.test', updatedAt: T0 + 10 },
            { address: 'carol@far.test', state: 'pending', status: '4.2.2', diagnostic: 'mx said: 452 full', remoteMta: 'mx.far.test', updatedAt: T0 + 10 },
            { address: 'dave@remote.test', state: 'pending', status: undefined, diagnostic: undefined, remoteMta: undefined, updatedAt: undefined },
          ],
          'recipients in the order added; one without an answer is untouched',
        );
        assert.deepEqual(await store.claim(T0 + 60_000 - 1, 10, LEASE), [], 'not due before the next attempt, though the lease was longer');
        assert.equal(await store.retryNow('A', T0 + 20), 1, 'no longer leased');
        assert.deepEqual(ids(await store.claim(T0 + 20, 10, LEASE)), ['A']);
      }));

    test('retryNow of one message: due now unless it is being delivered; unknown ids change nothing', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0, 10, LEASE);
        await store.recordAttempt('A', [], { attempts: 1, nextAttemptAt: T0 + 3_600_000, warned: false }, T0);
        assert.equal(await store.retryNow('A', T0 + 10), 1);
        assert.equal((await store.get('A'))?.nextAttemptAt, T0 + 10);
        assert.equal((await store.get('A'))?.attempts, 1, 'the attempt count is kept');
        await store.claim(T0 + 1000, 10, LEASE);
        const leased = (await store.get('B'))?.nextAttemptAt;
        assert.equal(await store.retryNow('B', T0 + 1000), 0, 'B is being delivered');
        assert.equal((await store.get('B'))?.nextAttemptAt, leased);
        assert.equal(await store.retryNow('nosuch', T0 + 1000), 0);
      }));

    test('retryNow of all: every waiting message not being delivered is due now; the count is of those that waited', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.add(envelope('D', T0 + 500), 10);
        assert.deepEqual(ids(await store.claim(T0, 10, LEASE)), ['A'], 'A is being delivered');
        assert.equal(await store.retryNow(undefined, T0 + 600), 2, 'B and C waited; D is due already');
        assert.deepEqual(ids(await store.claim(T0 + 600, 10, LEASE)), ['D', 'B', 'C'], 'the leased message was left alone');
      }));

    test('remove: gone from get, list, ids and claims', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0 + 1000, 1, LEASE);
        await store.remove('A');
        await store.remove('C');
        await store.remove('nosuch');
        assert.equal(await store.get('A'), undefined);
        assert.deepEqual(ids(await store.list()), ['B']);
        assert.deepEqual(await store.ids(), new Set(['B']));
        assert.deepEqual(ids(await store.claim(T0 + 5000, 10, LEASE)), ['B']);
      }));

    test('what add and recordAttempt resolved is seen by another instance', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await three(store);
        await store.recordAttempt('B', [{ address: 'bob@remote.test', state: 'failed', status: '5.1.1' }], { attempts: 1, nextAttemptAt: T0 + 9000, warned: false }, T0 + 1000);
        const other = await reopen();
        assert.deepEqual(await other.list(), await store.list());
        assert.equal((await other.get('B'))?.recipients[0].state, 'failed');
      }));
  });
}
