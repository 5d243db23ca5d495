import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { decodeTargets, encodeTargets, type ForwardingRule, type ForwardingStore } from '../forwarding/store.ts';
import { statementCache } from './open.ts';

/** Forwarding rules in the embedded database, beside the accounts. */
export class SqliteForwardingStore implements ForwardingStore {
  readonly #sql: (sql: string) => StatementSync;

  constructor(db: DatabaseSync) {
    db.exec('CREATE TABLE IF NOT EXISTS forwarding (address TEXT PRIMARY KEY, targets TEXT NOT NULL, keep INTEGER NOT NULL) STRICT');
    this.#sql = statementCache(db);
  }

  async get(address: string): Promise<ForwardingRule | undefined> {
    const row = this.#sql('SELECT targets, keep FROM forwarding WHERE address = ?').get(address) as { targets: string; keep: number } | undefined;
    return row && { targets: decodeTargets(row.targets), keep: row.keep === 1 };
  }

  async set(address: string, rule: ForwardingRule): Promise<void> {
    this.#sql('INSERT INTO forwarding (address, targets, keep) VALUES (?1, ?2, ?3) ON CONFLICT (address) DO UPDATE SET targets = ?2, keep = ?3').run(
      address,
      encodeTargets(rule.targets),
      rule.keep ? 1 : 0,
    );
  }

  async remove(address: string): Promise<boolean> {
    return this.#sql('DELETE FROM forwarding WHERE address = ?').run(address).changes > 0;
  }

  async list(): Promise<({ address: string } & ForwardingRule)[]> {
    return (this.#sql('SELECT address, targets, keep FROM forwarding ORDER BY address').all() as { address: string; targets: string; keep: number }[]).map((row) => ({
      address: row.address,
      targets: decodeTargets(row.targets),
      keep: row.keep === 1,
    }));
  }
}
