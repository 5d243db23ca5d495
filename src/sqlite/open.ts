import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';

/**
 * Opens popgate's embedded database under data_dir. WAL lets the CLI write while the
 * server reads; busy_timeout makes a writer wait for the other process instead of failing.
 */
export function openDatabase(dataDir: string): DatabaseSync {
  mkdirSync(dataDir, { recursive: true });
  const db = openSqlite(join(dataDir, 'popgate.sqlite'), 'FULL');
  db.exec('PRAGMA foreign_keys = ON');
  return db;
}

/**
 * A second connection to the same file for counters (failed logins, sending limits): its
 * commits do not wait for the disk, so a flood of failed logins or relayed mail adds no
 * fsync each. A power cut can forget the last counts, which only forgives a little.
 */
export function openCountersDatabase(dataDir: string): DatabaseSync {
  mkdirSync(dataDir, { recursive: true });
  return openSqlite(join(dataDir, 'popgate.sqlite'), 'NORMAL');
}

/** Any popgate SQLite file: WAL, a busy timeout, and the durability the caller needs. */
export function openSqlite(path: string, synchronous: 'FULL' | 'NORMAL'): DatabaseSync {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA busy_timeout = 5000');
  db.exec('PRAGMA journal_mode = WAL');
  db.exec(`PRAGMA synchronous = ${synchronous}`);
  return db;
}

/**
 * Statements prepared once per SQL text: preparing is most of the cost of a small statement,
 * and MAIL, RCPT and the queue run the same few on every message.
 */
export function statementCache(db: DatabaseSync): (sql: string) => StatementSync {
  const statements = new Map<string, StatementSync>();
  return (sql) => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  };
}

/**
 * Runs `work` in one write transaction, taken at once (BEGIN IMMEDIATE: another process's write
 * waits for it rather than failing halfway), committed, or rolled back when `work` throws.
 */
export function writeTransaction(db: DatabaseSync, work: () => void): void {
  db.exec('BEGIN IMMEDIATE');
  try {
    work();
    db.exec('COMMIT');
  } catch (error) {
    // SQLite rolls some errors back itself (SQLITE_FULL, SQLITE_IOERR: "automatically rolled
    // back", sqlite.org/lang_transaction.html); a ROLLBACK then fails with "no transaction
    // is active" and would hide the real error.
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}
