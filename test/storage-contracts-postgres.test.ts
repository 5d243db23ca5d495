import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { LocalAccountEvents } from '../src/accounts/events.ts';
import type { AccountStore } from '../src/accounts/store.ts';
import { silentLogger } from '../src/log/logger.ts';
import { PostgresAccountStore } from '../src/postgres/accounts.ts';
import { PostgresQueueStore } from '../src/postgres/queue-index.ts';
import type { QueueStore } from '../src/queue/store.ts';
import { accountStoreContract } from './contracts/account-store.ts';
import type { OpenedStore } from './contracts/backend.ts';
import { queueStoreContract } from './contracts/queue-store.ts';
import { domainSettingsStoreContract } from './contracts/domain-settings-store.ts';
import { PostgresDomainSettingsStore } from '../src/postgres/domain-settings.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { until } from './helpers/outbound.ts';
import { freshSchema } from './helpers/postgres.ts';

// The account and queue contracts against a real PostgreSQL (one per file), a fresh schema per
// test. reopen() is another node: a second store on a second pool, sharing the account
// announcements as the nodes of a cluster do over Redis.

let engine: RunningEngine;

/** Stores made by `make`, each on its own pool of a fresh schema, closed and dropped together. */
function onFreshSchema<Store extends { close(): Promise<void> }>(
  make: (pool: pg.Pool, events: LocalAccountEvents) => Promise<Store>,
): () => Promise<OpenedStore<Store>> {
  return async () => {
    const schema = await freshSchema(engine);
    const events = new LocalAccountEvents();
    const stores: Store[] = [];
    const instance = async () => {
      const store = await make(await schema.pool(), events);
      stores.push(store);
      return store;
    };
    return {
      store: await instance(),
      reopen: instance,
      close: async () => {
        for (const store of stores) await store.close();
        await schema.drop();
      },
    };
  };
}

describe('storage contracts on PostgreSQL', { skip: missingEngine('postgres') }, () => {
  before(async () => {
    engine = await startPostgres();
  });
  after(async () => {
    await engine?.destroy();
  });

  accountStoreContract(
    'PostgreSQL',
    // No verified-login cache: the timing check compares full password checks.
    onFreshSchema<AccountStore>((pool, events) => PostgresAccountStore.open(pool, { events, log: silentLogger(), verifiedLoginCacheMs: 0 })),
  );

  queueStoreContract(
    'PostgreSQL',
    onFreshSchema<QueueStore>(async (pool) => new PostgresQueueStore(pool)),
  );

  domainSettingsStoreContract(
    'PostgreSQL',
    onFreshSchema(async (pool) => Object.assign(new PostgresDomainSettingsStore(pool), { close: async () => {} })),
  );

  describe('PostgreSQL accounts on several nodes', () => {
    test("a user removed through one node is refused by another node's lookup at once, though that node had just found it", async () => {
      const opened = await onFreshSchema<AccountStore>((pool, events) => PostgresAccountStore.open(pool, { events, log: silentLogger() }))();
      try {
        const one = opened.store;
        const other = await opened.reopen!();
        await one.addDomain('example.test');
        await one.addUser('alice@example.test', 'correct horse battery');
        await one.addAlias('info@example.test', ['alice@example.test']);
        assert.deepEqual(await other.lookup('alice@example.test'), { kind: 'user' }, 'found (and remembered for a second)');
        assert.equal(await other.isLocalDomain('example.test'), true);
        assert.deepEqual(await other.lookup('info@example.test'), { kind: 'alias', targets: ['alice@example.test'] });

        await one.removeUser('alice@example.test');
        assert.equal(await other.lookup('alice@example.test'), undefined, 'refused at once');
        await one.removeAlias('info@example.test');
        assert.equal(await other.lookup('info@example.test'), undefined, 'refused at once');
        await one.removeDomain('example.test');
        assert.equal(await other.isLocalDomain('example.test'), false, 'no longer local at once');
      } finally {
        await opened.close();
      }
    });

    test('without the announcement, another node would have answered from memory: what the test above relies on', async () => {
      // The same steps with a node that hears nothing: it keeps its memory for up to a second.
      const schema = await freshSchema(engine);
      try {
        const one = await PostgresAccountStore.open(await schema.pool(), { events: new LocalAccountEvents(), log: silentLogger() });
        const deaf = await PostgresAccountStore.open(await schema.pool(), { events: new LocalAccountEvents(), log: silentLogger() });
        await one.addDomain('example.test');
        await one.addUser('alice@example.test', 'correct horse battery');
        assert.deepEqual(await deaf.lookup('alice@example.test'), { kind: 'user' });
        await one.removeUser('alice@example.test');
        assert.deepEqual(await deaf.lookup('alice@example.test'), { kind: 'user' }, 'remembered: the memo really is in the way');
        await one.close();
        await deaf.close();
      } finally {
        await schema.drop();
      }
    });

    test('an announcement that cannot be sent does not fail the change, which is stored', async () => {
      const schema = await freshSchema(engine);
      try {
        const broken = {
          publish: async () => {
            throw new Error('Redis is down');
          },
          subscribe: async () => () => {},
        };
        const store = await PostgresAccountStore.open(await schema.pool(), { events: broken, log: silentLogger() });
        await store.addDomain('example.test');
        assert.deepEqual(await store.listDomains(), ['example.test']);
        await store.close();
      } finally {
        await schema.drop();
      }
    });

    test('an address made a user on one node while another makes it an alias ends up one of the two, never both', async () => {
      const schema = await freshSchema(engine);
      const blocker = new pg.Client({ connectionString: schema.url });
      await blocker.connect();
      try {
        const events = new LocalAccountEvents();
        const one = await PostgresAccountStore.open(await schema.pool(), { events, log: silentLogger() });
        const other = await PostgresAccountStore.open(await schema.pool(), { events, log: silentLogger() });
        await one.addDomain('example.test');
        await one.addUser('bob@example.test', 'correct horse battery');
        // Sessions of this database waiting for a lock (the tests of a file run one at a time).
        const waiting = async () =>
          Number((await blocker.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0].n);
        // Hold the user insert of the first node halfway, after its checks: the moment where,
        // without the domain lock, the other node's alias would slip in.
        await blocker.query('BEGIN');
        await blocker.query('LOCK TABLE popgate_users IN SHARE MODE');
        const user = one.addUser('race@example.test', 'correct horse battery').then(() => 'added', (error: Error) => error.message);
        await until(async () => (await waiting()) === 1, 10_000, 'the user insert waits');
        let aliasDone = false;
        const alias = other.addAlias('race@example.test', ['bob@example.test']).then(
          () => 'added',
          (error: Error) => error.message,
        ).finally(() => (aliasDone = true));
        await until(async () => aliasDone || (await waiting()) === 2, 10_000, 'the alias is added, or waits for the domain');
        await blocker.query('COMMIT');
        assert.deepEqual([await user, await alias], ['added', 'race@example.test is a user; an alias cannot have the same address']);
        assert.ok(await one.getUser('race@example.test'));
        assert.equal(await one.lookup('race@example.test').then((found) => found?.kind), 'user');
        assert.deepEqual((await one.listAliases()).map((a) => a.alias), [], 'no alias with that address');
        await one.close();
        await other.close();
      } finally {
        await blocker.end();
        await schema.drop();
      }
    });
  });
});
