// What a node that keeps accounts and the queue index in PostgreSQL builds, in one module:
// src/server/app.ts loads it only when `[database] url` is set, so a process without it never
// loads the PostgreSQL client.
export { createPool } from './pool.ts';
export { migrate, migrateDatabase, SCHEMA_VERSION } from './migrate.ts';
export { PostgresAccountStore } from './accounts.ts';
export { PostgresAdminStore } from './admins.ts';
export { PostgresAuditLog } from './audit-log.ts';
export { PostgresDomainSettingsStore } from './domain-settings.ts';
export { PostgresForwardingStore } from './forwarding.ts';
export { PostgresHistoryStore } from './history.ts';
export { PostgresQueueStore } from './queue-index.ts';
export { PostgresQuotaStore } from './quotas.ts';
export { PostgresVacationStore } from './vacation.ts';
