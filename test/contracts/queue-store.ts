import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Envelope, QueueStore } from '../../src/queue/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every QueueStore promises: an idempotent index of spooled messages, claimed oldest
// first under an exclusive lease (no second claim, also from another instance, until the lease
// ends), with answers and the next attempt recorded in one step. A lease has an owner (a
// process of a node): only the owner releases it early, and once it has run out anyone claims.

const T0 = 1_700_000_000_000;
const LEASE = 15 * 60_000;
/** Two processes (nodes of a cluster) sharing the queue. */
const NODE_A = 'mx1.example.test/4242/a1b2c3d4';
const NODE_B = 'mx2.example.test/4242/e5f6a7b8';

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
        assert.deepEqual(await store.claim(T0 - 1, 10, LEASE, NODE_A), [], 'nothing is due yet');
        assert.deepEqual(ids(await store.claim(T0 + 1000, 10, LEASE, NODE_A)), ['A', 'B'], 'C is not due before T0 + 2000');
        assert.deepEqual(ids(await store.claim(T0 + 5000, 10, LEASE, NODE_A)), ['C']);
      }));

    test('claim honours the limit, taking the earliest due', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        assert.deepEqual(ids(await store.claim(T0 + 5000, 2, LEASE, NODE_A)), ['A', 'B']);
        assert.deepEqual(ids(await store.claim(T0 + 5000, 2, LEASE, NODE_A)), ['C']);
      }));

    test('a lease is exclusive: no second claim until it ends, then the message is due again', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        const now = T0 + 5000;
        assert.equal((await store.claim(now, 10, LEASE, NODE_A)).length, 3);
        assert.deepEqual(await store.claim(now, 10, LEASE, NODE_A), [], 'claimed at the same moment: nothing');
        assert.deepEqual(await store.claim(now + LEASE - 1, 10, LEASE, NODE_A), [], 'nothing while the lease runs');
        assert.equal(await store.nextDueAt(), now + LEASE, 'they fall due when the lease ends');
        assert.deepEqual(ids(await store.claim(now + LEASE, 10, LEASE, NODE_A)), ['A', 'B', 'C'], 'due again once the lease ended (a delivery that died)');
      }));

    test('claims at the same moment never share a message', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        const claims = await Promise.all(Array.from({ length: 4 }, () => store.claim(T0 + 5000, 10, LEASE, NODE_A)));
        assert.deepEqual(claims.flatMap(ids).sort(), ['A', 'B', 'C']);
      }));

    test('many claims at once, from two instances, take every message exactly once', () =>
      withStore(open, async ({ store, reopen }) => {
        const stores = reopen ? [store, await reopen()] : [store];
        for (let i = 0; i < 100; i++) await store.add(envelope(`M${String(i).padStart(3, '0')}`, T0 + i), 10);
        // Each instance answers a few calls at once first (opening its connections, if it has
        // any), so the claims below run side by side rather than one after another.
        await Promise.all(stores.flatMap((s) => Array.from({ length: 8 }, () => s.nextDueAt())));
        const claimed: string[] = [];
        const claimer = async (s: QueueStore, owner: string) => {
          for (;;) {
            const batch = await s.claim(T0 + 1000, 3, LEASE, owner);
            if (batch.length === 0) return;
            claimed.push(...ids(batch));
          }
        };
        await Promise.all(stores.flatMap((s, n) => Array.from({ length: 8 }, () => claimer(s, n === 0 ? NODE_A : NODE_B))));
        assert.equal(new Set(claimed).size, 100, 'every message was claimed');
        assert.equal(claimed.length, 100, 'none twice');
      }));

    test('a lease holds against another instance too (another node of a cluster)', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await three(store);
        const other = await reopen();
        assert.deepEqual(ids(await store.claim(T0 + 1000, 10, LEASE, NODE_A)), ['A', 'B']);
        assert.deepEqual(ids(await other.claim(T0 + 5000, 10, LEASE, NODE_B)), ['C']);
        assert.deepEqual(await store.claim(T0 + 5000, 10, LEASE, NODE_A), []);
      }));

    test("releaseLeases makes every message leased by its owner due now and leaves the others alone", () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0 + 1000, 10, LEASE, NODE_A);
        assert.equal(await store.releaseLeases(T0 + 1500, NODE_A), 2);
        assert.deepEqual(ids(await store.claim(T0 + 1500, 10, LEASE, NODE_A)), ['A', 'B']);
        assert.equal((await store.get('C'))?.nextAttemptAt, T0 + 2000, 'C was not leased and keeps its time');
        assert.equal(await store.releaseLeases(T0 + 1600, NODE_A), 2);
        assert.equal(await store.releaseLeases(T0 + 1600, NODE_A), 0, 'nothing left leased');
      }));

    test("a lease carries its owner's name until recordAttempt or the owner's releaseLeases ends it", () =>
      withStore(open, async ({ store }) => {
        await three(store);
        assert.equal((await store.get('A'))?.leaseOwner, undefined, 'not leased yet');
        const [claimed] = await store.claim(T0, 10, LEASE, NODE_A);
        assert.equal(claimed.leaseOwner, NODE_A, 'the claim answers with its owner');
        assert.equal((await store.get('A'))?.leaseOwner, NODE_A);
        await store.recordAttempt('A', [], { attempts: 1, nextAttemptAt: T0 + 1000, warned: false }, T0);
        assert.equal((await store.get('A'))?.leaseOwner, undefined, 'recordAttempt ended it');
        await store.claim(T0 + 1000, 10, LEASE, NODE_B);
        assert.deepEqual((await store.list()).map((m) => m.leaseOwner), [NODE_B, NODE_B, undefined]);
        await store.releaseLeases(T0 + 1000, NODE_B);
        assert.deepEqual((await store.list()).map((m) => m.leaseOwner), [undefined, undefined, undefined]);
      }));

    test("releaseLeases of one owner leaves another owner's leases alone (a node starting beside a live one)", () =>
      withStore(open, async ({ store }) => {
        await three(store);
        assert.deepEqual(ids(await store.claim(T0 + 1000, 10, LEASE, NODE_A)), ['A', 'B']);
        assert.deepEqual(ids(await store.claim(T0 + 2000, 10, LEASE, NODE_B)), ['C']);
        assert.equal(await store.releaseLeases(T0 + 3000, NODE_B), 1, "only B's own lease");
        assert.equal(await store.releaseLeases(T0 + 3000, 'mx3.example.test/1/00000000'), 0, 'an owner without leases releases nothing');
        assert.deepEqual(ids(await store.claim(T0 + 3000, 10, LEASE, NODE_B)), ['C'], "A's messages are still leased");
        assert.equal((await store.get('A'))?.nextAttemptAt, T0 + 1000 + LEASE, "A's lease keeps its end");
        assert.equal(await store.retryNow(undefined, T0 + 3000), 0, 'retryNow leaves leased messages alone, whoever holds them');
      }));

    test('a lease that has run out is anyone\'s to claim, and then belongs to the new owner', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0 + 5000, 10, LEASE, NODE_A);
        assert.deepEqual(await store.claim(T0 + 5000 + LEASE - 1, 10, LEASE, NODE_B), [], 'not before it runs out');
        const taken = await store.claim(T0 + 5000 + LEASE, 10, LEASE, NODE_B);
        assert.deepEqual(ids(taken), ['A', 'B', 'C'], "the dead owner's messages");
        assert.deepEqual(taken.map((m) => m.leaseOwner), [NODE_B, NODE_B, NODE_B]);
        assert.equal(await store.releaseLeases(T0 + 5000 + LEASE, NODE_A), 0, 'the old owner can no longer release them');
        assert.deepEqual(await store.claim(T0 + 5000 + LEASE, 10, LEASE, NODE_A), [], 'nor claim them');
      }));

    test("another instance's releaseLeases of its own owner leaves this instance's leases alone", (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await three(store);
        const other = await reopen();
        assert.equal((await store.claim(T0 + 5000, 10, LEASE, NODE_A)).length, 3);
        assert.equal(await other.releaseLeases(T0 + 5000, NODE_B), 0);
        assert.deepEqual(await other.claim(T0 + 5000, 10, LEASE, NODE_B), []);
        assert.equal(await other.releaseLeases(T0 + 5000, NODE_A), 3, 'the same owner through another instance (a restart under the same name)');
        assert.deepEqual(ids(await other.claim(T0 + 5000, 10, LEASE, NODE_B)), ['A', 'B', 'C']);
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
        const [claimed] = await store.claim(T0, 10, LEASE, NODE_A);
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
        assert.deepEqual(await store.claim(T0 + 60_000 - 1, 10, LEASE, NODE_A), [], 'not due before the next attempt, though the lease was longer');
        assert.equal(await store.retryNow('A', T0 + 20), 1, 'no longer leased');
        assert.deepEqual(ids(await store.claim(T0 + 20, 10, LEASE, NODE_A)), ['A']);
      }));

    test('retryNow of one message: due now unless it is being delivered; unknown ids change nothing', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0, 10, LEASE, NODE_A);
        await store.recordAttempt('A', [], { attempts: 1, nextAttemptAt: T0 + 3_600_000, warned: false }, T0);
        assert.equal(await store.retryNow('A', T0 + 10), 1);
        assert.equal((await store.get('A'))?.nextAttemptAt, T0 + 10);
        assert.equal((await store.get('A'))?.attempts, 1, 'the attempt count is kept');
        await store.claim(T0 + 1000, 10, LEASE, NODE_A);
        const leased = (await store.get('B'))?.nextAttemptAt;
        assert.equal(await store.retryNow('B', T0 + 1000), 0, 'B is being delivered');
        assert.equal((await store.get('B'))?.nextAttemptAt, leased);
        assert.equal(await store.retryNow('nosuch', T0 + 1000), 0);
      }));

    test('retryNow of all: every waiting message not being delivered is due now; the count is of those that waited', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.add(envelope('D', T0 + 500), 10);
        assert.deepEqual(ids(await store.claim(T0, 10, LEASE, NODE_A)), ['A'], 'A is being delivered');
        assert.equal(await store.retryNow(undefined, T0 + 600), 2, 'B and C waited; D is due already');
        assert.deepEqual(ids(await store.claim(T0 + 600, 10, LEASE, NODE_A)), ['D', 'B', 'C'], 'the leased message was left alone');
      }));

    test('remove: gone from get, list, ids and claims', () =>
      withStore(open, async ({ store }) => {
        await three(store);
        await store.claim(T0 + 1000, 1, LEASE, NODE_A);
        await store.remove('A');
        await store.remove('C');
        await store.remove('nosuch');
        assert.equal(await store.get('A'), undefined);
        assert.deepEqual(ids(await store.list()), ['B']);
        assert.deepEqual(await store.ids(), new Set(['B']));
        assert.deepEqual(ids(await store.claim(T0 + 5000, 10, LEASE, NODE_A)), ['B']);
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
