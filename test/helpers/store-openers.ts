import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import type pg from 'pg';
import { SqliteQuotaStore } from '../../src/sqlite/quotas.ts';
import { openCountersDatabase, openDatabase } from '../../src/sqlite/open.ts';
import type { OpenStore } from '../contracts/backend.ts';
import type { RunningEngine } from './engines.ts';
import { freshSchema } from './postgres.ts';

// How the store contracts open a fresh store of each backend, shared by the test files that
// run them.

/**
 * SQLite as openBackends opens it: the synced database, the counters one and usage.sqlite in
 * a fresh data folder; reopen() opens the same files again, as another process would.
 */
export function onSqlite<Store>(make: (db: DatabaseSync, counters: DatabaseSync, usage: DatabaseSync) => Store): OpenStore<Store> {
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

/** A fresh schema of the PostgreSQL `engine()` per test; reopen() is another node on a second pool. */
export function onPostgres<Store>(engine: () => RunningEngine, make: (pool: pg.Pool) => Store): OpenStore<Store> {
  return async () => {
    const schema = await freshSchema(engine());
    return { store: make(await schema.pool()), reopen: async () => make(await schema.pool()), close: () => schema.drop() };
  };
}
