import type pg from 'pg';
import { silentLogger } from '../log/logger.ts';
import { createPool, inTransaction } from './pool.ts';

// popgate's PostgreSQL schema, as an ordered list of migrations kept in the code. The
// database records the versions applied in popgate_schema_migrations. Each migration runs in a
// transaction of its own together with its record, so a failure leaves the schema at the
// previous version. Several nodes starting at once may all call migrate: each step first takes
// a transaction-level advisory lock, so one node applies a migration and the others find it
// applied. A database migrated by a newer popgate is refused: this code would not know its
// tables.
//
// Time is stored as bigint milliseconds since 1970, as the store interfaces count it. Names
// and addresses are compared bytewise (COLLATE "C"), as SQLite does: they are ASCII after
// normalization (IDN A-labels, lower case), and sorting does not depend on the server's locale.

export interface Migration {
  version: number;
  description: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'accounts: domains, users, aliases',
    sql: `
      CREATE TABLE popgate_domains (
        name text COLLATE "C" PRIMARY KEY,
        created_at bigint NOT NULL
      );
      CREATE TABLE popgate_users (
        address text COLLATE "C" PRIMARY KEY,
        domain text COLLATE "C" NOT NULL REFERENCES popgate_domains (name),
        local text COLLATE "C" NOT NULL,
        password_hash text NOT NULL,
        apop_secret text,
        created_at bigint NOT NULL
      );
      CREATE INDEX popgate_users_domain ON popgate_users (domain);
      CREATE TABLE popgate_aliases (
        alias text COLLATE "C" NOT NULL,
        domain text COLLATE "C" NOT NULL REFERENCES popgate_domains (name),
        target text COLLATE "C" NOT NULL,
        PRIMARY KEY (alias, target)
      );
      CREATE INDEX popgate_aliases_domain ON popgate_aliases (domain);
      CREATE INDEX popgate_aliases_target ON popgate_aliases (target);
    `,
  },
  {
    version: 2,
    description: 'outbound queue index: messages with their leases, recipients',
    sql: `
      CREATE TABLE popgate_queue_messages (
        id text COLLATE "C" PRIMARY KEY,
        sender text NOT NULL,
        received_at bigint NOT NULL,
        client_ip text NOT NULL,
        authorized_user text,
        size bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at bigint NOT NULL,
        last_error text,
        warned boolean NOT NULL DEFAULT false,
        lease_owner text
      );
      CREATE INDEX popgate_queue_messages_due ON popgate_queue_messages (next_attempt_at, received_at);
      CREATE INDEX popgate_queue_messages_lease_owner ON popgate_queue_messages (lease_owner) WHERE lease_owner IS NOT NULL;
      CREATE TABLE popgate_queue_recipients (
        message_id text COLLATE "C" NOT NULL REFERENCES popgate_queue_messages (id) ON DELETE CASCADE,
        position integer NOT NULL,
        address text NOT NULL,
        state text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'bounced')),
        status text,
        diagnostic text,
        remote_mta text,
        updated_at bigint,
        PRIMARY KEY (message_id, address)
      );
    `,
  },
  {
    version: 3,
    description: 'per-domain overrides of the inbound filter settings',
    sql: `
      CREATE TABLE popgate_domain_settings (
        domain text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (domain, name)
      );
    `,
  },
  {
    version: 4,
    description: 'mailbox services: quotas and usage, forwarding, vacation replies',
    sql: `
      CREATE TABLE popgate_quota_limits (
        subject text COLLATE "C" PRIMARY KEY,
        limit_bytes bigint
      );
      CREATE TABLE popgate_mailbox_usage (
        address text COLLATE "C" PRIMARY KEY,
        used bigint NOT NULL,
        warned boolean NOT NULL DEFAULT false
      );
      CREATE TABLE popgate_forwarding (
        address text COLLATE "C" PRIMARY KEY,
        targets text NOT NULL,
        keep boolean NOT NULL
      );
      CREATE TABLE popgate_vacations (
        address text COLLATE "C" PRIMARY KEY,
        subject text NOT NULL,
        body text NOT NULL,
        since bigint NOT NULL,
        until bigint
      );
      CREATE TABLE popgate_vacation_replies (
        address text COLLATE "C" NOT NULL,
        sender text COLLATE "C" NOT NULL,
        sent_at bigint NOT NULL,
        PRIMARY KEY (address, sender)
      );
    `,
  },
  {
    version: 5,
    description: 'admin console: administrators, their sessions, the audit log, the dashboard history',
    sql: `
      CREATE TABLE popgate_admins (
        name text COLLATE "C" PRIMARY KEY,
        password_hash text NOT NULL,
        created_at bigint NOT NULL
      );
      CREATE TABLE popgate_admin_sessions (
        id_hash text COLLATE "C" PRIMARY KEY,
        admin text COLLATE "C" NOT NULL,
        created_at bigint NOT NULL,
        last_seen_at bigint NOT NULL
      );
      CREATE INDEX popgate_admin_sessions_admin ON popgate_admin_sessions (admin);
      CREATE TABLE popgate_audit_log (
        id bigserial PRIMARY KEY,
        at bigint NOT NULL,
        actor text COLLATE "C" NOT NULL,
        ip text NOT NULL,
        action text COLLATE "C" NOT NULL,
        subject text COLLATE "C" NOT NULL,
        detail text NOT NULL
      );
      CREATE TABLE popgate_dashboard_history (
        metric text COLLATE "C" NOT NULL,
        bucket bigint NOT NULL,
        value double precision NOT NULL,
        PRIMARY KEY (metric, bucket)
      );
    `,
  },
  {
    version: 6,
    description: 'mailbox usage counters and the dashboard history unlogged',
    // Every delivery and POP3 deletion moves a usage counter: as a logged table each move
    // waited for a WAL flush (a disk flush per message on top of the Maildir's). Both tables
    // can be rebuilt: a counter that is missing is counted again from the folder
    // (src/quota/quota.ts), and the dashboard history is only a picture of the last day. An
    // unlogged table is emptied after a crash of PostgreSQL and is not copied to standbys,
    // which costs a recount per mailbox at its next use, never a wrong quota decision.
    sql: `
      ALTER TABLE popgate_mailbox_usage SET UNLOGGED;
      ALTER TABLE popgate_dashboard_history SET UNLOGGED;
    `,
  },
  {
    version: 7,
    description: 'writers of held-back counter moves',
    // A node holds deliveries' counter moves back for a moment and writes them together
    // (src/postgres/quotas.ts); while it holds some it has a row here, so that a node killed
    // holding moves is noticed when its row's lease runs out and the counters it left short are
    // counted again. Unlogged like the counters: after a crash of PostgreSQL both start empty.
    sql: `
      CREATE UNLOGGED TABLE popgate_counter_writers (
        instance text COLLATE "C" NOT NULL,
        batch bigint NOT NULL,
        node text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (instance, batch)
      );
    `,
  },
];

/** The schema version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

/** The key of the advisory lock migrations take ("popgate" in ASCII); any constant shared by every node works. */
const MIGRATION_LOCK = '31647725953053797';
/** A migration may build an index on a large table: far longer than the pool's statement timeout. */
const MIGRATION_TIMEOUT_MS = 10 * 60_000;

/** The database holds a schema this popgate does not know. */
export class SchemaTooNewError extends Error {}

export interface MigrationResult {
  /** The migrations this call applied, in order (none when another node was first or nothing was due). */
  applied: Migration[];
  /** The schema version afterwards. */
  version: number;
}

/** Brings the schema up to date, one migration per transaction; safe to call from several nodes at once. */
export async function migrate(pool: pg.Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<MigrationResult> {
  const latest = migrations.length === 0 ? 0 : migrations[migrations.length - 1].version;
  const applied: Migration[] = [];
  for (;;) {
    const step = await inTransaction(pool, async (client) => {
      const query = (text: string, values: unknown[] = []) =>
        // The pool's client-side timeout would give up on a long migration (or on waiting
        // for another node's): this step's own, a little beyond the server's.
        client.query({ text, values, query_timeout: MIGRATION_TIMEOUT_MS + 1000 } as pg.QueryConfig);
      await query(`SET LOCAL statement_timeout = ${MIGRATION_TIMEOUT_MS}`);
      await query('SELECT pg_advisory_xact_lock($1::bigint)', [MIGRATION_LOCK]);
      await query(`CREATE TABLE IF NOT EXISTS popgate_schema_migrations (
        version integer PRIMARY KEY,
        description text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const { rows } = await query('SELECT coalesce(max(version), 0) AS version FROM popgate_schema_migrations');
      const current = rows[0].version as number;
      if (current > latest) {
        throw new SchemaTooNewError(
          `the database schema is at version ${current}, newer than this popgate knows (${latest}): ` +
            'run the popgate version that migrated it (every node of a cluster must run the same version)',
        );
      }
      const next = migrations.find((migration) => migration.version > current);
      if (!next) return { version: current };
      await query(next.sql);
      await query('INSERT INTO popgate_schema_migrations (version, description) VALUES ($1, $2)', [next.version, next.description]);
      return { version: next.version, migration: next };
    });
    if (!step.migration) return { applied, version: step.version };
    applied.push(step.migration);
  }
}

/**
 * `popgate db migrate`: migrates the database at `url` and tells `print` what it did, one
 * line per applied version or "schema up to date (version N)".
 */
export async function migrateDatabase(url: string, print: (line: string) => void): Promise<MigrationResult> {
  // Lost idle connections need no log line here: the query that meets the failure reports it.
  const pool = createPool(url, silentLogger(), { applicationName: 'popgate db migrate' });
  try {
    const result = await migrate(pool);
    for (const migration of result.applied) print(`applied version ${migration.version}: ${migration.description}`);
    if (result.applied.length === 0) print(`schema up to date (version ${result.version})`);
    return result;
  } finally {
    await pool.end();
  }
}
