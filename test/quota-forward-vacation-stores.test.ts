import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import type { DatabaseSync } from 'node:sqlite';
import type pg from 'pg';
import type { ForwardingStore } from '../src/forwarding/store.ts';
import { PostgresForwardingStore } from '../src/postgres/forwarding.ts';
import { PostgresQuotaStore } from '../src/postgres/quotas.ts';
import { PostgresVacationStore } from '../src/postgres/vacation.ts';
import type { QuotaStore } from '../src/quota/store.ts';
import { SqliteForwardingStore } from '../src/sqlite/forwarding.ts';
import { openCountersDatabase, openDatabase } from '../src/sqlite/open.ts';
import { SqliteQuotaStore } from '../src/sqlite/quotas.ts';
import { SqliteVacationStore } from '../src/sqlite/vacation.ts';
import type { VacationStore } from '../src/vacation/store.ts';
import type { OpenedStore } from './contracts/backend.ts';
import { forwardingStoreContract } from './contracts/forwarding-store.ts';
import { quotaStoreContract } from './contracts/quota-store.ts';
import { vacationStoreContract } from './contracts/vacation-store.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { freshSchema } from './helpers/postgres.ts';

// The mailbox-service stores' contracts on SQLite (the files as openBackends opens them:
// settings on the synced connection, counters on the other or in usage.sqlite) and on a real PostgreSQL (a fresh schema
// per test; reopen() is another node on a second pool).

function onSqlite<Store>(make: (db: DatabaseSync, counters: DatabaseSync, usage: DatabaseSync) => Store): () => Promise<OpenedStore<Store>> {
  return async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'popgate-contract-'));
    const open: DatabaseSync[] = [];
    const instance = () => {
      const db = openDatabase(dataDir);
      const counters = openCountersDatabase(dataDir);
      const usage = SqliteQuotaStore.openUsageDatabase(dataDir);
      open.push(db, counters, usage);
      return make(db, counters, usage);
    };
    return {
      store: instance(),
      reopen: async () => instance(),
      close: async () => {
        for (const db of open) db.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  };
}

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

  function onPostgres<Store>(make: (pool: pg.Pool) => Store): () => Promise<OpenedStore<Store>> {
    return async () => {
      const schema = await freshSchema(engine);
      return { store: make(await schema.pool()), reopen: async () => make(await schema.pool()), close: () => schema.drop() };
    };
  }

  quotaStoreContract('PostgreSQL', onPostgres<QuotaStore>((pool) => new PostgresQuotaStore(pool)));
  forwardingStoreContract('PostgreSQL', onPostgres<ForwardingStore>((pool) => new PostgresForwardingStore(pool)));
  vacationStoreContract('PostgreSQL', onPostgres<VacationStore>((pool) => new PostgresVacationStore(pool)));
});
