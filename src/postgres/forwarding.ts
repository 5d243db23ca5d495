import type pg from 'pg';
import { decodeTargets, encodeTargets, type ForwardingRule, type ForwardingStore } from '../forwarding/store.ts';
import { statement } from './pool.ts';

const get = statement<{ targets: string; keep: boolean }>('forwarding_get', 'SELECT targets, keep FROM popgate_forwarding WHERE address = $1');
const upsert = statement('forwarding_set', 'INSERT INTO popgate_forwarding (address, targets, keep) VALUES ($1, $2, $3) ON CONFLICT (address) DO UPDATE SET targets = excluded.targets, keep = excluded.keep');
const remove = statement('forwarding_remove', 'DELETE FROM popgate_forwarding WHERE address = $1');
const list = statement<{ address: string; targets: string; keep: boolean }>('forwarding_list', 'SELECT address, targets, keep FROM popgate_forwarding ORDER BY address');

/** Forwarding rules in the cluster's PostgreSQL, beside the accounts. */
export class PostgresForwardingStore implements ForwardingStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async get(address: string): Promise<ForwardingRule | undefined> {
    const row = (await get(this.#pool, [address])).rows[0];
    return row && { targets: decodeTargets(row.targets), keep: row.keep };
  }

  async set(address: string, rule: ForwardingRule): Promise<void> {
    await upsert(this.#pool, [address, encodeTargets(rule.targets), rule.keep]);
  }

  async remove(address: string): Promise<boolean> {
    return ((await remove(this.#pool, [address])).rowCount ?? 0) > 0;
  }

  async list(): Promise<({ address: string } & ForwardingRule)[]> {
    return (await list(this.#pool)).rows.map((row) => ({ address: row.address, targets: decodeTargets(row.targets), keep: row.keep }));
  }
}
