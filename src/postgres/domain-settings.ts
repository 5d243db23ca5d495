import type pg from 'pg';
import { validSettings, type DomainSettingName, type DomainSettings, type DomainSettingsStore } from '../filter/domain-settings.ts';
import { statement } from './pool.ts';

const get = statement<{ name: string; value: string }>('domain_settings_get', 'SELECT name, value FROM popgate_domain_settings WHERE domain = $1');
const upsert = statement(
  'domain_settings_set',
  'INSERT INTO popgate_domain_settings (domain, name, value) VALUES ($1, $2, $3) ON CONFLICT (domain, name) DO UPDATE SET value = excluded.value',
);
const remove = statement('domain_settings_remove', 'DELETE FROM popgate_domain_settings WHERE domain = $1 AND name = $2');
const list = statement<{ domain: string; name: string; value: string }>('domain_settings_list', 'SELECT domain, name, value FROM popgate_domain_settings ORDER BY domain, name');

/** Per-domain filter overrides in the cluster's PostgreSQL, beside the accounts. */
export class PostgresDomainSettingsStore implements DomainSettingsStore {
  readonly #pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async get(domain: string): Promise<DomainSettings> {
    return validSettings((await get(this.#pool, [domain])).rows);
  }

  async set(domain: string, name: DomainSettingName, value: string | undefined): Promise<void> {
    if (value === undefined) await remove(this.#pool, [domain, name]);
    else await upsert(this.#pool, [domain, name, value]);
  }

  async list(): Promise<{ domain: string; name: DomainSettingName; value: string }[]> {
    return (await list(this.#pool)).rows.filter((row) => Object.keys(validSettings([row])).length > 0) as { domain: string; name: DomainSettingName; value: string }[];
  }
}
