import { after, before, describe } from 'node:test';
import type { AdminStore } from '../src/admin/store.ts';
import type { HistoryStore } from '../src/admin/history-store.ts';
import type { AuditLog } from '../src/audit/store.ts';
import { PostgresAdminStore } from '../src/postgres/admins.ts';
import { PostgresAuditLog } from '../src/postgres/audit-log.ts';
import { PostgresHistoryStore } from '../src/postgres/history.ts';
import { SqliteAdminStore } from '../src/sqlite/admins.ts';
import { SqliteAuditLog } from '../src/sqlite/audit-log.ts';
import { SqliteHistoryStore } from '../src/sqlite/history.ts';
import { adminStoreContract } from './contracts/admin-store.ts';
import { auditLogContract } from './contracts/audit-log.ts';
import { historyStoreContract } from './contracts/history-store.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { onPostgres, onSqlite } from './helpers/store-openers.ts';

// The admin console's stores' contracts on SQLite (as openBackends opens them: administrators
// and the audit log on the synced connection, sessions and history on the counters one) and
// on a real PostgreSQL (a fresh schema per test; reopen() is another node on a second pool).

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

  adminStoreContract('PostgreSQL', onPostgres<AdminStore>(() => engine, (pool) => new PostgresAdminStore(pool)));
  auditLogContract('PostgreSQL', onPostgres<AuditLog>(() => engine, (pool) => new PostgresAuditLog(pool)));
  historyStoreContract('PostgreSQL', onPostgres<HistoryStore>(() => engine, (pool) => new PostgresHistoryStore(pool)));
});
