import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { UsageError } from './password.ts';

// `popgate db`: the shared PostgreSQL database of a cluster. `migrate` brings its schema up to
// date; nodes may run it at the same time (src/postgres/migrate.ts takes a lock), so it can be
// part of every node's start or of a deployment step.

export function registerDbCommands(program: Command, loadConfig: () => Config): void {
  const db = program.command('db').description('the PostgreSQL database shared by the nodes of a cluster');
  db.command('migrate')
    .description('bring the database schema up to date (safe while nodes run, and from several nodes at once)')
    .action(async () => {
      const url = loadConfig().database.url;
      if (url === '') throw new UsageError('no database configured: set url in the [database] section of the config file (for example url = "postgres://popgate@db.example.net/popgate")');
      try {
        const { migrateDatabase } = await import('../postgres/backends.ts');
        await migrateDatabase(url, (line) => console.log(line));
      } catch (error) {
        // The URL is not repeated: it may hold a password.
        throw new UsageError(`cannot migrate the database: ${(error as Error).message}`);
      }
    });
}
