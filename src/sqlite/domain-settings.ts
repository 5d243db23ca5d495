import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { validSettings, type DomainSettingName, type DomainSettings, type DomainSettingsStore } from '../filter/domain-settings.ts';

/** Per-domain filter overrides in the embedded database, beside the accounts. */
export class SqliteDomainSettingsStore implements DomainSettingsStore {
  readonly #get: StatementSync;
  readonly #upsert: StatementSync;
  readonly #remove: StatementSync;
  readonly #list: StatementSync;

  constructor(db: DatabaseSync) {
    db.exec(`CREATE TABLE IF NOT EXISTS domain_settings (
      domain TEXT NOT NULL,
      name TEXT NOT NULL,
      value TEXT NOT NULL,
      PRIMARY KEY (domain, name)
    ) STRICT`);
    this.#get = db.prepare('SELECT name, value FROM domain_settings WHERE domain = ?');
    this.#upsert = db.prepare('INSERT INTO domain_settings (domain, name, value) VALUES (?1, ?2, ?3) ON CONFLICT (domain, name) DO UPDATE SET value = ?3');
    this.#remove = db.prepare('DELETE FROM domain_settings WHERE domain = ? AND name = ?');
    this.#list = db.prepare('SELECT domain, name, value FROM domain_settings ORDER BY domain, name');
  }

  async get(domain: string): Promise<DomainSettings> {
    return validSettings(this.#get.all(domain) as { name: string; value: string }[]);
  }

  async set(domain: string, name: DomainSettingName, value: string | undefined): Promise<void> {
    if (value === undefined) this.#remove.run(domain, name);
    else this.#upsert.run(domain, name, value);
  }

  async list(): Promise<{ domain: string; name: DomainSettingName; value: string }[]> {
    return (this.#list.all() as { domain: string; name: string; value: string }[])
      .filter((row) => Object.keys(validSettings([row])).length > 0)
      .map(({ domain, name, value }) => ({ domain, name, value })) as {
      domain: string;
      name: DomainSettingName;
      value: string;
    }[];
  }
}
