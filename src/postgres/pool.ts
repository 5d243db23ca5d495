import pg from 'pg';
import type { Logger } from '../log/logger.ts';

// The connections of one process to the shared PostgreSQL. Every backend of the process uses
// one pool (accounts, the queue index); the pool belongs to whoever made it, and the stores
// built on it never end it.
//
// While PostgreSQL is down or unreachable, a query fails within seconds rather than waiting:
// connecting is bounded (connectTimeoutMs), the server cancels a statement that runs too long
// (statement_timeout) and the client gives up on an answer that never comes (query_timeout, a
// little later, for a server that froze or a network that dropped). A connection that failed
// is thrown away and the next query opens a new one, so the pool recovers by itself when the
// server is back. Connections lost while idle are reported through the pool's 'error' event,
// logged here: without a listener that event would end the process.

export interface PoolOptions {
  /** Seen in pg_stat_activity, so an operator can tell which node holds which connection. */
  applicationName?: string;
  /** Connections at most, for this process. */
  maxConnections?: number;
  /** A statement running longer is cancelled (the client gives up a second later). */
  statementTimeoutMs?: number;
  /** Opening a connection, or waiting for a free one, longer fails the query. */
  connectTimeoutMs?: number;
}

const DEFAULTS = { applicationName: 'popgate', maxConnections: 10, statementTimeoutMs: 5000, connectTimeoutMs: 5000 };
/** A transaction left open this long (a node that froze halfway) is ended by the server, freeing its row locks. */
const IDLE_IN_TRANSACTION_MS = 60_000;
/** Idle connections are probed this soon, so a server that vanished without a word is noticed. */
const KEEPALIVE_DELAY_MS = 10_000;

export class DatabaseUrlError extends Error {}

/**
 * A pool for `url`: postgres://user:password@host:port/database, or a Unix socket folder as
 * `host` parameter (postgres://popgate@/popgate?host=/var/run/postgresql). Parameters in the URL
 * (application_name, options=-c search_path=..., sslmode) take precedence over `options`.
 */
export function createPool(url: string, log: Logger, options: PoolOptions = {}): pg.Pool {
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new DatabaseUrlError('the database URL must start with postgres:// (for example postgres://popgate@db.example.net/popgate)');
  }
  const settings = { ...DEFAULTS, ...options };
  const pool = new pg.Pool({
    connectionString: url,
    application_name: settings.applicationName,
    max: settings.maxConnections,
    connectionTimeoutMillis: settings.connectTimeoutMs,
    statement_timeout: settings.statementTimeoutMs,
    query_timeout: settings.statementTimeoutMs + 1000,
    idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
  });
  pool.on('error', (error) => {
    log.warn({ event: 'postgres_connection_lost', err: error }, 'an idle PostgreSQL connection failed; the next query opens a new one');
  });
  return pool;
}

/** A pool or one of its connections (inside a transaction). */
export type Queryable = pg.Pool | pg.PoolClient;

const statementNames = new Set<string>();

/**
 * A named prepared statement: each connection parses and plans it once and then only binds
 * values. Names are unique in the process (a second statement under a taken name would make the
 * pg client refuse the query), which is checked here when a module defines its statements.
 * Statements name their columns rather than using *, so a column added by a later migration
 * does not change the result of a plan a connection of an older node has cached.
 */
export function statement<Row extends pg.QueryResultRow>(name: string, text: string): (db: Queryable, values?: unknown[]) => Promise<pg.QueryResult<Row>> {
  if (statementNames.has(name)) throw new Error(`two PostgreSQL statements are named ${name}`);
  statementNames.add(name);
  return (db, values = []) => db.query<Row>({ name, text, values });
}

/**
 * Runs `work` in a transaction on one connection of the pool: COMMIT when it resolves,
 * ROLLBACK when it throws. A connection that failed on the way is discarded, not reused.
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // Between two queries no query is there to receive a connection error, and an 'error'
  // event without a listener would end the process.
  let broken: Error | undefined;
  const onError = (error: Error) => void (broken ??= error);
  client.on('error', onError);
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch((rollbackError: Error) => void (broken ??= rollbackError));
    throw error;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}
