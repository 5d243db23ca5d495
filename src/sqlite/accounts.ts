import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { statementCache, writeTransaction } from './open.ts';
import { parseAddress } from '../accounts/address.ts';
import { refusal, requireAddress, requireDomain, requirePassword, requireStoredHash } from '../accounts/checks.ts';
import { schemeOf } from '../accounts/legacy-hash.ts';
import { FoundMemo } from '../accounts/memo.ts';
import { hashPassword, needsRehash, VerifiedPasswordCache } from '../accounts/password.ts';
import { stampOfHash, type AccountStore, type Alias, type AuthenticatedUser, type LocalAddress, type User } from '../accounts/store.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS domains (
  name TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS users (
  address TEXT PRIMARY KEY,
  domain TEXT NOT NULL REFERENCES domains(name),
  local TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  apop_secret TEXT,
  created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS aliases (
  alias TEXT NOT NULL,
  domain TEXT NOT NULL REFERENCES domains(name),
  target TEXT NOT NULL,
  PRIMARY KEY (alias, target)
) STRICT;
`;

interface UserRow {
  address: string;
  domain: string;
  local: string;
  created_at: number;
}

/** The embedded account directory, in the same SQLite file as the rest of popgate's state. */
export class SqliteAccountStore implements AccountStore {
  readonly #db: DatabaseSync;
  readonly #ownsDb: boolean;
  readonly #sql: (sql: string) => StatementSync;
  readonly #memo = new FoundMemo();

  readonly #verified: VerifiedPasswordCache;

  /** `verifiedLoginCacheMs`: how long a successful password check is remembered (0: never; see VerifiedPasswordCache). */
  constructor(db: DatabaseSync, ownsDb = false, verifiedLoginCacheMs = 0) {
    this.#db = db;
    this.#ownsDb = ownsDb;
    this.#sql = statementCache(db);
    this.#verified = new VerifiedPasswordCache(verifiedLoginCacheMs);
    db.exec(SCHEMA);
  }

  async addDomain(input: string): Promise<void> {
    const domain = requireDomain(input);
    const result = this.#sql('INSERT OR IGNORE INTO domains (name, created_at) VALUES (?, ?)').run(domain, Date.now());
    if (result.changes === 0) throw refusal.domainExists(domain);
  }

  async removeDomain(input: string): Promise<void> {
    const domain = requireDomain(input);
    await this.#requireDomainExists(domain);
    const users = this.#sql('SELECT count(*) AS n FROM users WHERE domain = ?').get(domain) as { n: number };
    const aliases = this.#sql('SELECT count(*) AS n FROM aliases WHERE domain = ?').get(domain) as { n: number };
    if (users.n > 0 || aliases.n > 0) {
      throw refusal.domainInUse(domain, users.n, aliases.n);
    }
    this.#sql('DELETE FROM domains WHERE name = ?').run(domain);
    // After the delete: the existence check above has just remembered the domain as found.
    this.#memo.forget();
  }

  async listDomains(): Promise<string[]> {
    return (this.#sql('SELECT name FROM domains ORDER BY name').all() as { name: string }[]).map((r) => r.name);
  }

  async isLocalDomain(domain: string): Promise<boolean> {
    if (this.#memo.domain(domain)) return true;
    const found = this.#sql('SELECT 1 FROM domains WHERE name = ?').get(domain) !== undefined;
    if (found) this.#memo.foundDomain(domain);
    return found;
  }

  async addUser(input: string, password: string): Promise<User> {
    const address = requireAddress(input);
    await this.#requireDomainExists(address.domain);
    requirePassword(password);
    this.#requireFree(address.address);
    return this.#insertUser(address, await hashPassword(password));
  }

  async addUserWithHash(input: string, hash: string): Promise<User> {
    const address = requireAddress(input);
    await this.#requireDomainExists(address.domain);
    requireStoredHash(address.address, hash);
    this.#requireFree(address.address);
    return this.#insertUser(address, hash);
  }

  /** Refused before the (slow) hash, so a refusal comes at once; the insert checks again. */
  #requireFree(address: string): void {
    if (this.#sql('SELECT 1 FROM users WHERE address = ?').get(address)) throw refusal.userExists(address);
    if (this.#sql('SELECT 1 FROM aliases WHERE alias = ?').get(address)) throw refusal.addressIsAlias(address);
  }

  #insertUser(address: { address: string; domain: string; local: string }, hash: string): User {
    const createdAt = Date.now();
    const result = this.#sql('INSERT OR IGNORE INTO users (address, domain, local, password_hash, created_at) VALUES (?, ?, ?, ?, ?)').run(
      address.address,
      address.domain,
      address.local,
      hash,
      createdAt,
    );
    if (result.changes === 0) throw refusal.userExists(address.address);
    return { address: address.address, domain: address.domain, local: address.local, createdAt };
  }

  async setPassword(input: string, password: string): Promise<void> {
    const address = await this.#requireUser(input);
    requirePassword(password);
    const hash = await hashPassword(password);
    this.#sql('UPDATE users SET password_hash = ? WHERE address = ?').run(hash, address);
  }

  async removeUser(input: string): Promise<void> {
    this.#memo.forget();
    const address = await this.#requireUser(input);
    this.#sql('DELETE FROM users WHERE address = ?').run(address);
  }

  async listUsers(domainInput?: string): Promise<User[]> {
    let rows: UserRow[];
    if (domainInput !== undefined) {
      const domain = requireDomain(domainInput);
      await this.#requireDomainExists(domain);
      rows = this.#sql('SELECT address, domain, local, created_at FROM users WHERE domain = ? ORDER BY address').all(domain) as unknown as UserRow[];
    } else {
      rows = this.#sql('SELECT address, domain, local, created_at FROM users ORDER BY domain, address').all() as unknown as UserRow[];
    }
    return rows.map(toUser);
  }

  async getUser(input: string): Promise<User | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const row = this.#sql('SELECT address, domain, local, created_at FROM users WHERE address = ?').get(address.address) as UserRow | undefined;
    return row && toUser(row);
  }

  async authenticate(input: string, password: string): Promise<AuthenticatedUser | undefined> {
    const address = parseAddress(input);
    const row = address
      ? (this.#sql('SELECT password_hash FROM users WHERE address = ?').get(address.address) as { password_hash: string } | undefined)
      : undefined;
    const ok = await this.#verified.verify(row?.password_hash, password);
    if (!ok || !address || !row) return undefined;
    if (needsRehash(row.password_hash)) {
      // A carried-over hash is replaced on the first login that proves the password. Only if it
      // is still the one checked: a password set meanwhile (popgate user passwd) wins.
      const hash = await hashPassword(password);
      this.#sql('UPDATE users SET password_hash = ? WHERE address = ? AND password_hash = ?').run(hash, address.address, row.password_hash);
    }
    return { address: address.address };
  }

  async passwordScheme(input: string): Promise<string | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const row = this.#sql('SELECT password_hash FROM users WHERE address = ?').get(address.address) as { password_hash: string } | undefined;
    return row && schemeOf(row.password_hash);
  }

  async passwordStamp(input: string): Promise<string | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const row = this.#sql('SELECT password_hash FROM users WHERE address = ?').get(address.address) as { password_hash: string } | undefined;
    return row && stampOfHash(row.password_hash);
  }

  async setApopSecret(input: string, secret: string | undefined): Promise<void> {
    const address = await this.#requireUser(input);
    if (secret !== undefined) requirePassword(secret);
    this.#sql('UPDATE users SET apop_secret = ? WHERE address = ?').run(secret ?? null, address);
  }

  async getApopSecret(input: string): Promise<string | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const row = this.#sql('SELECT apop_secret FROM users WHERE address = ?').get(address.address) as { apop_secret: string | null } | undefined;
    return row?.apop_secret ?? undefined;
  }

  async lookup(address: string): Promise<LocalAddress | undefined> {
    const known = this.#memo.address(address);
    if (known) return known;
    let found: LocalAddress | undefined;
    if (this.#sql('SELECT 1 FROM users WHERE address = ?').get(address)) found = { kind: 'user' };
    else {
      const rows = this.#sql('SELECT target FROM aliases WHERE alias = ?').all(address) as { target: string }[];
      if (rows.length > 0) found = { kind: 'alias', targets: rows.map((r) => r.target) };
    }
    if (found) this.#memo.foundAddress(address, found);
    return found;
  }

  async sendableAddresses(user: string): Promise<string[]> {
    const rows = this.#sql('SELECT DISTINCT alias FROM aliases WHERE target = ?').all(user) as { alias: string }[];
    return [user, ...rows.map((r) => r.alias)];
  }

  async addAlias(input: string, targetInputs: string[]): Promise<void> {
    this.#memo.forget();
    const alias = requireAddress(input);
    await this.#requireDomainExists(alias.domain);
    if (targetInputs.length === 0) throw refusal.aliasWithoutTarget();
    if (await this.getUser(alias.address)) throw refusal.aliasIsUser(alias.address);
    const targets = targetInputs.map((t) => requireAddress(t).address);
    if (targets.includes(alias.address)) throw refusal.aliasToItself(alias.address);
    const insert = this.#sql('INSERT OR IGNORE INTO aliases (alias, domain, target) VALUES (?, ?, ?)');
    writeTransaction(this.#db, () => {
      for (const target of targets) insert.run(alias.address, alias.domain, target);
    });
  }

  async removeAlias(input: string, targetInputs?: string[]): Promise<void> {
    this.#memo.forget();
    const alias = requireAddress(input).address;
    let changes: number | bigint;
    if (targetInputs && targetInputs.length > 0) {
      changes = 0;
      for (const target of targetInputs) {
        changes = Number(changes) + Number(this.#sql('DELETE FROM aliases WHERE alias = ? AND target = ?').run(alias, requireAddress(target).address).changes);
      }
    } else {
      changes = this.#sql('DELETE FROM aliases WHERE alias = ?').run(alias).changes;
    }
    if (Number(changes) === 0) throw refusal.noSuchAlias(alias, targetInputs);
  }

  async listAliases(domainInput?: string): Promise<Alias[]> {
    const rows = (
      domainInput !== undefined
        ? this.#sql('SELECT alias, target FROM aliases WHERE domain = ? ORDER BY alias, target').all(requireDomain(domainInput))
        : this.#sql('SELECT alias, target FROM aliases ORDER BY domain, alias, target').all()
    ) as { alias: string; target: string }[];
    const byAlias = new Map<string, string[]>();
    for (const row of rows) {
      const list = byAlias.get(row.alias) ?? [];
      list.push(row.target);
      byAlias.set(row.alias, list);
    }
    return [...byAlias].map(([alias, targets]) => ({ alias, targets }));
  }

  async close(): Promise<void> {
    if (this.#ownsDb) this.#db.close();
  }

  async #requireDomainExists(domain: string): Promise<void> {
    if (!(await this.isLocalDomain(domain))) throw refusal.unknownDomain(domain);
  }

  async #requireUser(input: string): Promise<string> {
    const address = requireAddress(input).address;
    if (!(await this.getUser(address))) throw refusal.noSuchUser(address);
    return address;
  }
}

function toUser(row: UserRow): User {
  return { address: row.address, domain: row.domain, local: row.local, createdAt: row.created_at };
}
