import { after, before, describe } from 'node:test';
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
// per test; reopen() is another node on a second pool).

quotaStoreContract('SQLite', onSqlite((db, _counters, usage) => new SqliteQuotaStore(db, usage)));
forwardingStoreContract('SQLite', onSqlite((db) => new SqliteForwardingStore(db)));
vacationStoreContract('SQLite', onSqlite((db, counters) => new SqliteVacationStore(db, counters)));

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
});
