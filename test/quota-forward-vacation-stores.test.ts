import { after, before, describe } from 'node:test';
import { LocalAccountEvents, type AccountEvents } from '../src/accounts/events.ts';
import { RememberingForwardingStore } from '../src/forwarding/cached.ts';
import { silentLogger } from '../src/log/logger.ts';
import { RememberingVacationStore } from '../src/vacation/cached.ts';
import type { OpenStore } from './contracts/backend.ts';
import type { ForwardingStore } from '../src/forwarding/store.ts';
import { PostgresForwardingStore } from '../src/postgres/forwarding.ts';
import { PostgresQuotaStore } from '../src/postgres/quotas.ts';
import { PostgresVacationStore } from '../src/postgres/vacation.ts';
import type { QuotaStore } from '../src/quota/store.ts';
import { SqliteForwardingStore } from '../src/sqlite/forwarding.ts';
import { SqliteQuotaStore } from '../src/sqlite/quotas.ts';
import { SqliteVacationStore } from '../src/sqlite/vacation.ts';
import type { VacationStore } from '../src/vacation/store.ts';
import { forwardingStoreContract } from './contracts/forwarding-store.ts';
import { quotaStoreContract } from './contracts/quota-store.ts';
import { vacationStoreContract } from './contracts/vacation-store.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { onPostgres, onSqlite } from './helpers/store-openers.ts';

// The mailbox-service stores' contracts on SQLite (the files as openBackends opens them:
// settings on the synced connection, counters on the other or in usage.sqlite) and on a real PostgreSQL (a fresh schema
// per test; reopen() is another node on a second pool). The remembering stores openBackends
// puts in front of them keep the same promises, instances sharing their announcements as the
// processes of one machine do (the cluster's Redis carries them in test/cluster.test.ts).

/** `open`'s stores behind the remembering wrapper `wrap`, every instance on one set of announcements. */
function remembering<Store>(open: OpenStore<Store>, wrap: (store: Store, events: AccountEvents) => Promise<Store>): OpenStore<Store> {
  return async () => {
    const opened = await open();
    const events = new LocalAccountEvents();
    const reopen = opened.reopen;
    return { store: await wrap(opened.store, events), reopen: reopen && (async () => wrap(await reopen(), events)), close: opened.close };
  };
}
const rememberForwarding = (store: ForwardingStore, events: AccountEvents) => RememberingForwardingStore.open(store, events, silentLogger());
const rememberVacations = (store: VacationStore, events: AccountEvents) => RememberingVacationStore.open(store, events, silentLogger());

quotaStoreContract('SQLite', onSqlite((db, _counters, usage) => new SqliteQuotaStore(db, usage)));
forwardingStoreContract('SQLite', onSqlite((db) => new SqliteForwardingStore(db)));
vacationStoreContract('SQLite', onSqlite((db, counters) => new SqliteVacationStore(db, counters)));
forwardingStoreContract('SQLite, remembered', remembering(onSqlite<ForwardingStore>((db) => new SqliteForwardingStore(db)), rememberForwarding));
vacationStoreContract('SQLite, remembered', remembering(onSqlite<VacationStore>((db, counters) => new SqliteVacationStore(db, counters)), rememberVacations));

describe('mailbox-service stores on PostgreSQL', { skip: missingEngine('postgres') }, () => {
  let engine: RunningEngine;
  before(async () => {
    engine = await startPostgres();
  });
  after(async () => {
    await engine?.destroy();
  });

  quotaStoreContract('PostgreSQL', onPostgres<QuotaStore>(() => engine, (pool) => new PostgresQuotaStore(pool)));
  forwardingStoreContract('PostgreSQL', onPostgres<ForwardingStore>(() => engine, (pool) => new PostgresForwardingStore(pool)));
  vacationStoreContract('PostgreSQL', onPostgres<VacationStore>(() => engine, (pool) => new PostgresVacationStore(pool)));
  forwardingStoreContract('PostgreSQL, remembered', remembering(onPostgres<ForwardingStore>(() => engine, (pool) => new PostgresForwardingStore(pool)), rememberForwarding));
  vacationStoreContract('PostgreSQL, remembered', remembering(onPostgres<VacationStore>(() => engine, (pool) => new PostgresVacationStore(pool)), rememberVacations));
});
