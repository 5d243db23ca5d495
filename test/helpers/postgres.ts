import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '../../src/log/logger.ts';
import { migrate } from '../../src/postgres/migrate.ts';
import { createPool } from '../../src/postgres/pool.ts';
import type { RunningEngine } from './engines.ts';

// Tests share one PostgreSQL per file (startPostgres) and get a schema of their own each: the
// URL sets search_path to it (options=-c search_path=...), so every table popgate creates lands
// there and tests running side by side never see each other's rows.

export interface FreshSchema {
  name: string;
  /** The engine's URL with search_path set to this schema. */
  url: string;
  /** Pools on the schema, migrated, each ended by `drop` (a pool per node of a pretend cluster). */
  pool(): Promise<pg.Pool>;
  /** Ends the pools and drops the schema with everything in it. */
  drop(): Promise<void>;
}

export async function freshSchema(engine: RunningEngine, options: { migrated?: boolean } = {}): Promise<FreshSchema> {
  const name = `test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: engine.url });
  await admin.connect();
  try {
    await admin.query(`CREATE SCHEMA ${name}`);
  } finally {
    await admin.end();
  }
  const url = `${engine.url}?options=${encodeURIComponent(`-c search_path=${name}`)}`;
  const pools: pg.Pool[] = [];
  return {
    name,
    url,
    async pool() {
      const pool = createPool(url, silentLogger());
      pools.push(pool);
      if (options.migrated !== false) await migrate(pool);
      return pool;
    },
    async drop() {
      await Promise.all(pools.map((pool) => pool.end()));
      const admin = new pg.Client({ connectionString: engine.url });
      await admin.connect();
      try {
        await admin.query(`DROP SCHEMA ${name} CASCADE`);
      } finally {
        await admin.end();
      }
    },
  };
}
