import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { statementCache } from './open.ts';
import { normalizeDomain, parseAddress } from '../accounts/address.ts';
import { hashPassword, VerifiedPasswordCache, verifyPassword } from '../accounts/password.ts';
import { AccountError, type AccountStore, type Alias, type AuthenticatedUser, type User } from '../accounts/store.ts';

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

/** How long a found domain or address is remembered, and for how many at most. */
const MEMO_MS = 1000;
const MEMO_LIMIT = 10_000;

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
  readonly #memo = new Map<string, { value: unknown; until: number }>();

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
    if (result.changes === 0) throw new AccountError(`domain ${domain} already exists`);
  }

  async removeDomain(input: string): Promise<void> {
    const domain = requireDomain(input);
    await this.#requireDomainExists(domain);
    const users = this.#sql('SELECT count(*) AS n FROM users WHERE domain = ?').get(domain) as { n: number };
    const aliases = this.#sql('SELECT count(*) AS n FROM aliases WHERE domain = ?').get(domain) as { n: number };
    if (users.n > 0 || aliases.n > 0) {
      throw new AccountError(
        `domain ${domain} still has ${users.n} user(s) and ${aliases.n} alias target(s): remove them first (popgate user list ${domain})`,
      );
    }
    this.#sql('DELETE FROM domains WHERE name = ?').run(domain);
    // After the delete: the existence check above has just remembered the domain as found.
    this.#memo.clear();
  }

  async listDomains(): Promise<string[]> {
    return (this.#sql('SELECT name FROM domains ORDER BY name').all() as { name: string }[]).map((r) => r.name);
  }

  async isLocalDomain(domain: string): Promise<boolean> {
    const key = `d:${domain}`;
    if (this.#recentlyFound(key)) return true;
    const found = this.#sql('SELECT 1 FROM domains WHERE name = ?').get(domain) !== undefined;
    if (found) this.#found(key, true);
    return found;
  }

  async addUser(input: string, password: string): Promise<User> {
    const address = requireAddress(input);
    await this.#requireDomainExists(address.domain);
    requirePassword(password);
    if (await this.getUser(address.address)) throw new AccountError(`user ${address.address} already exists`);
    if (this.#sql('SELECT 1 FROM aliases WHERE alias = ?').get(address.address)) {
      throw new AccountError(`${address.address} is an alias: remove the alias first (popgate alias remove ${address.address})`);
    }
    const hash = await hashPassword(password);
    const createdAt = Date.now();
    const result = this.#db
      .prepare('INSERT OR IGNORE INTO users (address, domain, local, password_hash, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(address.address, address.domain, address.local, hash, createdAt);
    if (result.changes === 0) throw new AccountError(`user ${address.address} already exists`);
    return { address: address.address, domain: address.domain, local: address.local, createdAt };
  }

  async setPassword(input: string, password: string): Promise<void> {
    const address = await this.#requireUser(input);
    requirePassword(password);
    const hash = await hashPassword(password);
    this.#sql('UPDATE users SET password_hash = ? WHERE address = ?').run(hash, address);
  }

  async removeUser(input: string): Promise<void> {
    this.#memo.clear();
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
    const stored = row?.password_hash;
    if (address && stored !== undefined && this.#verified.matches(stored, password)) return { address: address.address };
    const ok = await verifyPassword(password, stored);
    if (ok && stored !== undefined) this.#verified.remember(stored, password);
    return ok && address ? { address: address.address } : undefined;
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

  async lookup(address: string): Promise<{ kind: 'user' } | { kind: 'alias'; targets: string[] } | undefined> {
    const key = `a:${address}`;
    const known = this.#recentlyFound(key);
    if (known) return known as { kind: 'user' } | { kind: 'alias'; targets: string[] };
    let found: { kind: 'user' } | { kind: 'alias'; targets: string[] } | undefined;
    if (this.#sql('SELECT 1 FROM users WHERE address = ?').get(address)) found = { kind: 'user' };
    else {
      const rows = this.#sql('SELECT target FROM aliases WHERE alias = ?').all(address) as { target: string }[];
      if (rows.length > 0) found = { kind: 'alias', targets: rows.map((r) => r.target) };
    }
    if (found) this.#found(key, found);
    return found;
  }

  // Every MAIL and RCPT asks whether a domain is ours and what an address is; each answer is
  // a query on the WAL database (several microseconds of locking, tens under load). What was
  // found is remembered for a second. Only positive answers: an address or domain added (in
  // this process or by the CLI) is accepted at once; one removed by the CLI may still be
  // accepted for up to a second, one removed in this process at once (the memo is cleared).
  #recentlyFound(key: string): unknown {
    const entry = this.#memo.get(key);
    if (!entry) return undefined;
    if (entry.until > Date.now()) return entry.value;
    this.#memo.delete(key);
    return undefined;
  }

  #found(key: string, value: unknown): void {
    if (this.#memo.size >= MEMO_LIMIT) this.#memo.clear();
    this.#memo.set(key, { value, until: Date.now() + MEMO_MS });
  }

  async sendableAddresses(user: string): Promise<string[]> {
    const rows = this.#sql('SELECT DISTINCT alias FROM aliases WHERE target = ?').all(user) as { alias: string }[];
    return [user, ...rows.map((r) => r.alias)];
  }

  async addAlias(input: string, targetInputs: string[]): Promise<void> {
    this.#memo.clear();
    const alias = requireAddress(input);
    await this.#requireDomainExists(alias.domain);
    if (targetInputs.length === 0) throw new AccountError('an alias needs at least one target address');
    if (await this.getUser(alias.address)) throw new AccountError(`${alias.address} is a user; an alias cannot have the same address`);
    const targets = targetInputs.map((t) => requireAddress(t).address);
    if (targets.includes(alias.address)) throw new AccountError(`alias ${alias.address} cannot point to itself`);
    const insert = this.#sql('INSERT OR IGNORE INTO aliases (alias, domain, target) VALUES (?, ?, ?)');
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      for (const target of targets) insert.run(alias.address, alias.domain, target);
      this.#db.exec('COMMIT');
    } catch (error) {
      this.#db.exec('ROLLBACK');
      throw error;
    }
  }

  async removeAlias(input: string, targetInputs?: string[]): Promise<void> {
    this.#memo.clear();
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
    if (Number(changes) === 0) throw new AccountError(`no such alias: ${alias}${targetInputs?.length ? ` -> ${targetInputs.join(', ')}` : ''} (see popgate alias list)`);
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
    if (!(await this.isLocalDomain(domain))) throw new AccountError(`unknown domain ${domain}: add it first with popgate domain add ${domain}`);
  }

  async #requireUser(input: string): Promise<string> {
    const address = requireAddress(input).address;
    if (!(await this.getUser(address))) throw new AccountError(`no such user: ${address} (see popgate user list)`);
    return address;
  }
}

function toUser(row: UserRow): User {
  return { address: row.address, domain: row.domain, local: row.local, createdAt: row.created_at };
}

function requireDomain(input: string): string {
  const domain = normalizeDomain(input);
  if (!domain) throw new AccountError(`"${input}" is not a valid domain name (for example example.net)`);
  return domain;
}

function requireAddress(input: string) {
  const address = parseAddress(input);
  if (!address) throw new AccountError(`"${input}" is not a valid address (for example alice@example.net)`);
  return address;
}

function requirePassword(password: string): void {
  if (password.length < 8) throw new AccountError('the password must be at least 8 characters long');
  if (password.length > 1024) throw new AccountError('the password must be at most 1024 characters long');
  if (/[\r\n\0]/.test(password)) throw new AccountError('the password must not contain line breaks or NUL characters');
}
