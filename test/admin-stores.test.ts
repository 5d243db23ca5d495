import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import type { DatabaseSync } from 'node:sqlite';
import type pg from 'pg';
import type { AdminStore } from '../src/admin/store.ts';
import type { HistoryStore } from '../src/admin/history-store.ts';
import type { AuditLog } from '../src/audit/store.ts';
import { PostgresAdminStore } from '../src/postgres/admins.ts';
import { PostgresAuditLog } from '../src/postgres/audit-log.ts';
import { PostgresHistoryStore } from '../src/postgres/history.ts';
import { SqliteAdminStore } from '../src/sqlite/admins.ts';
import { SqliteAuditLog } from '../src/sqlite/audit-log.ts';
import { SqliteHistoryStore } from '../src/sqlite/history.ts';
import { openCountersDatabase, openDatabase } from '../src/sqlite/open.ts';
import type { OpenedStore } from './contracts/backend.ts';
import { adminStoreContract } from './contracts/admin-store.ts';
import { auditLogContract } from './contracts/audit-log.ts';
import { historyStoreContract } from './contracts/history-store.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { freshSchema } from './helpers/postgres.ts';

// The admin console's stores' contracts on SQLite (as openBackends opens them: administrators
// and the audit log on the synced connection, sessions and history on the counters one) and
// on a real PostgreSQL (a fresh schema per test; reopen() is another node on a second pool).

function onSqlite<Store>(make: (db: DatabaseSync, counters: DatabaseSync) => Store): () => Promise<OpenedStore<Store>> {
  return async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'popgate-contract-'));
    const open: DatabaseSync[] = [];
    const instance = () => {
      const db = openDatabase(dataDir);
      const counters = openCountersDatabase(dataDir);
      open.push(db, counters);
      return make(db, counters);
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

adminStoreContract('SQLite', onSqlite((db, counters) => new SqliteAdminStore(db, counters)));
auditLogContract('SQLite', onSqlite((db) => new SqliteAuditLog(db)));
historyStoreContract('SQLite', onSqlite((_db, counters) => new SqliteHistoryStore(counters)));

describe('admin console stores on PostgreSQL', { skip: missingEngine('postgres') }, () => {
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

  adminStoreContract('PostgreSQL', onPostgres<AdminStore>((pool) => new PostgresAdminStore(pool)));
  auditLogContract('PostgreSQL', onPostgres<AuditLog>((pool) => new PostgresAuditLog(pool)));
  historyStoreContract('PostgreSQL', onPostgres<HistoryStore>((pool) => new PostgresHistoryStore(pool)));
});
