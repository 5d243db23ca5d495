import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { migrate, migrateDatabase, MIGRATIONS, SCHEMA_VERSION, SchemaTooNewError } from '../src/postgres/migrate.ts';
import { createPool, DatabaseUrlError } from '../src/postgres/pool.ts';
import { silentLogger } from '../src/log/logger.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { freshSchema, type FreshSchema } from './helpers/postgres.ts';
import { MAIN, NODE } from './helpers/process.ts';

// The PostgreSQL schema migrations: applied in order, each once, also when several nodes start
// together; a schema newer than the code is refused; a failed migration changes nothing. And
// `popgate db migrate`, which runs them from the command line.

let engine: RunningEngine & { socketDir: string };

async function appliedVersions(pool: pg.Pool): Promise<number[]> {
  return (await pool.query('SELECT version FROM popgate_schema_migrations ORDER BY version')).rows.map((row) => row.version);
}

async function tables(pool: pg.Pool, schema: string): Promise<string[]> {
  const result = await pool.query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [schema]);
  return result.rows.map((row) => row.table_name);
}

function popgate(config: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe('PostgreSQL schema migrations', { skip: missingEngine('postgres') }, () => {
  let schema: FreshSchema;
  before(async () => {
    engine = await startPostgres();
  });
  after(async () => {
    await engine?.destroy();
  });

  const unmigrated = async () => {
    schema = await freshSchema(engine, { migrated: false });
    return schema.pool();
  };

  test('a fresh database gets every migration in order, each recorded with its version', async () => {
    try {
      const pool = await unmigrated();
      const result = await migrate(pool);
      assert.deepEqual(result.applied.map((m) => m.version), MIGRATIONS.map((m) => m.version));
      assert.equal(result.version, SCHEMA_VERSION);
      assert.deepEqual(await appliedVersions(pool), MIGRATIONS.map((m) => m.version));
      assert.deepEqual(await tables(pool, schema.name), [
        'popgate_admin_sessions',
        'popgate_admins',
        'popgate_aliases',
        'popgate_audit_log',
        'popgate_counter_writers',
        'popgate_dashboard_history',
        'popgate_domain_settings',
        'popgate_domains',
        'popgate_forwarding',
        'popgate_mailbox_usage',
        'popgate_queue_messages',
        'popgate_queue_recipients',
        'popgate_quota_limits',
        'popgate_schema_migrations',
        'popgate_users',
        'popgate_vacation_replies',
        'popgate_vacations',
      ]);
      // Counters that are rebuilt from the folders need no WAL flush per delivery (migration 6),
      // nor the rows of their writers (migration 7).
      const unlogged = await pool.query("SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace WHERE nspname = $1 AND relkind = 'r' AND relpersistence = 'u' ORDER BY relname", [schema.name]);
      assert.deepEqual(unlogged.rows.map((row) => row.relname), ['popgate_counter_writers', 'popgate_dashboard_history', 'popgate_mailbox_usage']);
    } finally {
      await schema.drop();
    }
  });

  test('a second run applies nothing and changes nothing', async () => {
    try {
      const pool = await unmigrated();
      await migrate(pool);
      await pool.query("INSERT INTO popgate_domains (name, created_at) VALUES ('example.test', 1)");
      const again = await migrate(pool);
      assert.deepEqual(again, { applied: [], version: SCHEMA_VERSION });
      assert.deepEqual(await appliedVersions(pool), MIGRATIONS.map((m) => m.version));
      assert.equal((await pool.query('SELECT count(*)::integer AS n FROM popgate_domains')).rows[0].n, 1, 'the data is untouched');
    } finally {
      await schema.drop();
    }
  });

  test('nodes migrating at once: every migration is applied exactly once and all of them end up to date', async () => {
    try {
      await unmigrated();
      const pools = await Promise.all(Array.from({ length: 4 }, () => schema.pool()));
      const results = await Promise.all(pools.map((pool) => migrate(pool)));
      assert.deepEqual(results.map((r) => r.version), [SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]);
      const applied = results.flatMap((r) => r.applied.map((m) => m.version)).sort((a, b) => a - b);
      assert.deepEqual(applied, MIGRATIONS.map((m) => m.version), 'each version applied by one node only');
      assert.deepEqual(await appliedVersions(pools[0]), MIGRATIONS.map((m) => m.version));
    } finally {
      await schema.drop();
    }
  });

  test('a database whose schema is newer than the code is refused, saying so, and left alone', async () => {
    try {
      const pool = await unmigrated();
      await migrate(pool);
      const newer = SCHEMA_VERSION + 1;
      await pool.query("INSERT INTO popgate_schema_migrations (version, description) VALUES ($1, 'from a newer popgate')", [newer]);
      await assert.rejects(migrate(pool), (error: Error) => {
        assert.ok(error instanceof SchemaTooNewError);
        assert.equal(
          error.message,
          `the database schema is at version ${newer}, newer than this popgate knows (${SCHEMA_VERSION}): ` +
            'run the popgate version that migrated it (every node of a cluster must run the same version)',
        );
        return true;
      });
      assert.deepEqual(await appliedVersions(pool), [...MIGRATIONS.map((m) => m.version), newer]);
    } finally {
      await schema.drop();
    }
  });

  test('a migration that fails leaves the schema at the version before it, with nothing of it done', async () => {
    try {
      const pool = await unmigrated();
      const broken = { version: SCHEMA_VERSION + 1, description: 'half done', sql: 'CREATE TABLE popgate_half_done (x integer); SELECT no_such_function()' };
      await assert.rejects(migrate(pool, [...MIGRATIONS, broken]), /no_such_function/);
      assert.deepEqual(await appliedVersions(pool), MIGRATIONS.map((m) => m.version), 'the migrations before it stay applied');
      assert.ok(!(await tables(pool, schema.name)).includes('popgate_half_done'), 'its first statement was rolled back');
      assert.deepEqual(await migrate(pool), { applied: [], version: SCHEMA_VERSION });
    } finally {
      await schema.drop();
    }
  });

  test('migrateDatabase tells what it applied, then that the schema is up to date; a Unix socket folder works as host', async () => {
    try {
      await unmigrated();
      const options = new URL(schema.url).searchParams.get('options')!;
      const socketUrl = `postgres://postgres@/popgate?host=${engine.socketDir}&port=${engine.port}&options=${encodeURIComponent(options)}`;
      const probe = createPool(socketUrl, silentLogger());
      const [where] = (await probe.query('SELECT inet_server_addr() AS address')).rows;
      await probe.end();
      assert.equal(where.address, null, 'connected through the socket, not TCP');
      const lines: string[] = [];
      await migrateDatabase(socketUrl, (line) => lines.push(line));
      assert.deepEqual(lines, MIGRATIONS.map((m) => `applied version ${m.version}: ${m.description}`));
      lines.length = 0;
      await migrateDatabase(socketUrl, (line) => lines.push(line));
      assert.deepEqual(lines, [`schema up to date (version ${SCHEMA_VERSION})`]);
    } finally {
      await schema.drop();
    }
  });

  test('a URL that is not a PostgreSQL one is refused with an example', async () => {
    await assert.rejects(migrateDatabase('mysql://popgate@db.example.net/popgate', () => {}), (error: Error) => {
      assert.ok(error instanceof DatabaseUrlError);
      assert.match(error.message, /must start with postgres:\/\/ \(for example postgres:\/\/popgate@db\.example\.net\/popgate\)/);
      return true;
    });
  });

  describe('popgate db migrate', () => {
    const dir = mkdtempSync(join(tmpdir(), 'popgate-cli-db-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    test('without a database in the config it says so and exits with 1', async () => {
      const config = join(dir, 'no-database.toml');
      writeFileSync(config, `data_dir = "${join(dir, 'data')}"\nhostname = "mail.example.test"\n`);
      const result = await popgate(config, ['db', 'migrate']);
      assert.equal(result.code, 1);
      assert.equal(result.stdout, '');
      assert.match(result.stderr, /^popgate: no database configured: set url in the \[database\] section of the config file/);
    });

    test('migrates the configured database, then finds it up to date', async () => {
      try {
        await unmigrated();
        const config = join(dir, 'database.toml');
        writeFileSync(config, `data_dir = "${join(dir, 'data')}"\nhostname = "mail.example.test"\n[database]\nurl = "${schema.url}"\n`);
        const first = await popgate(config, ['db', 'migrate']);
        assert.equal(first.code, 0, first.stderr);
        assert.equal(first.stdout, MIGRATIONS.map((m) => `applied version ${m.version}: ${m.description}\n`).join(''));
        const second = await popgate(config, ['db', 'migrate']);
        assert.equal(second.code, 0, second.stderr);
        assert.equal(second.stdout, `schema up to date (version ${SCHEMA_VERSION})\n`);
      } finally {
        await schema.drop();
      }
    });
  });
});
