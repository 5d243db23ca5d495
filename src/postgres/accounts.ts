import type pg from 'pg';
import { parseAddress } from '../accounts/address.ts';
import { refusal, requireAddress, requireDomain, requirePassword, requireStoredHash } from '../accounts/checks.ts';
import { schemeOf } from '../accounts/legacy-hash.ts';
import type { AccountChange, AccountEvents } from '../accounts/events.ts';
import { FoundMemo } from '../accounts/memo.ts';
import { hashPassword, needsRehash, VerifiedPasswordCache } from '../accounts/password.ts';
import { stampOfHash, type AccountStore, type Alias, type AuthenticatedUser, type LocalAddress, type User } from '../accounts/store.ts';
import type { Logger } from '../log/logger.ts';
import { inTransaction, statement } from './pool.ts';

// The account directory of a cluster, in PostgreSQL (tables in migrate.ts). Every node holds
// one store on the shared database; what one node remembers (found domains and addresses, for a
// second) is forgotten when any node announces a change through AccountEvents.
//
// Adding a user or an alias locks its domain's row (FOR NO KEY UPDATE) for the transaction:
// two nodes cannot then make one address both a user and an alias, and a domain cannot be
// removed while something is being added to it (its removal locks the row FOR UPDATE).

interface UserRow {
  address: string;
  domain: string;
  local: string;
  created_at: string;
}

const sql = {
  addDomain: statement('popgate_accounts_add_domain', 'INSERT INTO popgate_domains (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING'),
  lockDomainForRemoval: statement('popgate_accounts_lock_domain_for_removal', 'SELECT 1 FROM popgate_domains WHERE name = $1 FOR UPDATE'),
  lockDomainForAdding: statement('popgate_accounts_lock_domain_for_adding', 'SELECT 1 FROM popgate_domains WHERE name = $1 FOR NO KEY UPDATE'),
  domainUse: statement<{ users: number; aliases: number }>(
    'popgate_accounts_domain_use',
    `SELECT (SELECT count(*) FROM popgate_users WHERE domain = $1)::integer AS users,
            (SELECT count(*) FROM popgate_aliases WHERE domain = $1)::integer AS aliases`,
  ),
  removeDomain: statement('popgate_accounts_remove_domain', 'DELETE FROM popgate_domains WHERE name = $1'),
  listDomains: statement<{ name: string }>('popgate_accounts_list_domains', 'SELECT name FROM popgate_domains ORDER BY name'),
  domainExists: statement('popgate_accounts_domain_exists', 'SELECT 1 FROM popgate_domains WHERE name = $1'),
  aliasExists: statement('popgate_accounts_alias_exists', 'SELECT 1 FROM popgate_aliases WHERE alias = $1 LIMIT 1'),
  addUser: statement(
    'popgate_accounts_add_user',
    `INSERT INTO popgate_users (address, domain, local, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (address) DO NOTHING`,
  ),
  setPassword: statement('popgate_accounts_set_password', 'UPDATE popgate_users SET password_hash = $2 WHERE address = $1'),
  // Replaces a carried-over hash only if it is still the one that was checked.
  rehash: statement('popgate_accounts_rehash', 'UPDATE popgate_users SET password_hash = $2 WHERE address = $1 AND password_hash = $3'),
  removeUser: statement('popgate_accounts_remove_user', 'DELETE FROM popgate_users WHERE address = $1'),
  usersOf: statement<UserRow>('popgate_accounts_users_of', 'SELECT address, domain, local, created_at FROM popgate_users WHERE domain = $1 ORDER BY address'),
  allUsers: statement<UserRow>('popgate_accounts_all_users', 'SELECT address, domain, local, created_at FROM popgate_users ORDER BY domain, address'),
  user: statement<UserRow>('popgate_accounts_user', 'SELECT address, domain, local, created_at FROM popgate_users WHERE address = $1'),
  passwordHash: statement<{ password_hash: string }>('popgate_accounts_password_hash', 'SELECT password_hash FROM popgate_users WHERE address = $1'),
  setApopSecret: statement('popgate_accounts_set_apop_secret', 'UPDATE popgate_users SET apop_secret = $2 WHERE address = $1'),
  apopSecret: statement<{ apop_secret: string | null }>('popgate_accounts_apop_secret', 'SELECT apop_secret FROM popgate_users WHERE address = $1'),
  // What an address is, in one round trip: a user, or an alias with its targets, or nothing.
  lookup: statement<{ is_user: boolean; targets: string[] }>(
    'popgate_accounts_lookup',
    `SELECT EXISTS (SELECT 1 FROM popgate_users WHERE address = $1) AS is_user,
            ARRAY(SELECT target FROM popgate_aliases WHERE alias = $1 ORDER BY target) AS targets`,
  ),
  aliasesReaching: statement<{ alias: string }>('popgate_accounts_aliases_reaching', 'SELECT DISTINCT alias FROM popgate_aliases WHERE target = $1 ORDER BY alias'),
  addAliasTargets: statement(
    'popgate_accounts_add_alias_targets',
    `INSERT INTO popgate_aliases (alias, domain, target) SELECT $1, $2, unnest($3::text[])
     ON CONFLICT (alias, target) DO NOTHING`,
  ),
  removeAliasTargets: statement('popgate_accounts_remove_alias_targets', 'DELETE FROM popgate_aliases WHERE alias = $1 AND target = ANY ($2::text[])'),
  removeAlias: statement('popgate_accounts_remove_alias', 'DELETE FROM popgate_aliases WHERE alias = $1'),
  aliasesOf: statement<{ alias: string; targets: string[] }>(
    'popgate_accounts_aliases_of',
    'SELECT alias, array_agg(target ORDER BY target) AS targets FROM popgate_aliases WHERE domain = $1 GROUP BY alias ORDER BY alias',
  ),
  allAliases: statement<{ alias: string; targets: string[] }>(
    'popgate_accounts_all_aliases',
    'SELECT alias, array_agg(target ORDER BY target) AS targets FROM popgate_aliases GROUP BY domain, alias ORDER BY domain, alias',
  ),
};

export interface PostgresAccountStoreOptions {
  /** Where changes are announced and heard (in memory in one process, Redis in a cluster). */
  events: AccountEvents;
  log: Logger;
  /** How long a successful password check is remembered (0: never; see VerifiedPasswordCache). */
  verifiedLoginCacheMs?: number;
}

export class PostgresAccountStore implements AccountStore {
  readonly #pool: pg.Pool;
  readonly #events: AccountEvents;
  readonly #log: Logger;
  readonly #memo: FoundMemo;
  readonly #verified: VerifiedPasswordCache;
  readonly #unsubscribe: () => void;

  /** A store on `pool` (whose schema `migrate` has brought up to date), listening to `events`. */
  static async open(pool: pg.Pool, options: PostgresAccountStoreOptions): Promise<PostgresAccountStore> {
    const memo = new FoundMemo();
    const unsubscribe = await options.events.subscribe(() => memo.forget());
    return new PostgresAccountStore(pool, options, memo, unsubscribe);
  }

  private constructor(pool: pg.Pool, options: PostgresAccountStoreOptions, memo: FoundMemo, unsubscribe: () => void) {
    this.#pool = pool;
    this.#events = options.events;
    this.#log = options.log;
    this.#memo = memo;
    this.#verified = new VerifiedPasswordCache(options.verifiedLoginCacheMs ?? 0);
    this.#unsubscribe = unsubscribe;
  }

  async addDomain(input: string): Promise<void> {
    const domain = requireDomain(input);
    const result = await sql.addDomain(this.#pool, [domain, Date.now()]);
    if (result.rowCount === 0) throw refusal.domainExists(domain);
    await this.#changed({ kind: 'domain', subject: domain });
  }

  async removeDomain(input: string): Promise<void> {
    const domain = requireDomain(input);
    await inTransaction(this.#pool, async (client) => {
      if ((await sql.lockDomainForRemoval(client, [domain])).rowCount === 0) throw refusal.unknownDomain(domain);
      const [use] = (await sql.domainUse(client, [domain])).rows;
      if (use.users > 0 || use.aliases > 0) throw refusal.domainInUse(domain, use.users, use.aliases);
      await sql.removeDomain(client, [domain]);
    });
    await this.#changed({ kind: 'domain', subject: domain });
  }

  async listDomains(): Promise<string[]> {
    return (await sql.listDomains(this.#pool)).rows.map((row) => row.name);
  }

  async isLocalDomain(domain: string): Promise<boolean> {
    if (this.#memo.domain(domain)) return true;
    const found = (await sql.domainExists(this.#pool, [domain])).rowCount !== 0;
    if (found) this.#memo.foundDomain(domain);
    return found;
  }

  async addUser(input: string, password: string): Promise<User> {
    const address = requireAddress(input);
    await this.#requireDomainExists(address.domain);
    requirePassword(password);
    // Checked before the (slow) hash so a refusal comes at once, and again under the lock.
    await this.#requireFree(address.address);
    return this.#insertUser(address, await hashPassword(password));
  }

  async addUserWithHash(input: string, hash: string): Promise<User> {
    const address = requireAddress(input);
    await this.#requireDomainExists(address.domain);
    requireStoredHash(address.address, hash);
    await this.#requireFree(address.address);
    return this.#insertUser(address, hash);
  }

  async #requireFree(address: string): Promise<void> {
    if (await this.getUser(address)) throw refusal.userExists(address);
    if ((await sql.aliasExists(this.#pool, [address])).rowCount !== 0) throw refusal.addressIsAlias(address);
  }

  async #insertUser(address: { address: string; domain: string; local: string }, hash: string): Promise<User> {
    const createdAt = Date.now();
    await inTransaction(this.#pool, async (client) => {
      if ((await sql.lockDomainForAdding(client, [address.domain])).rowCount === 0) throw refusal.unknownDomain(address.domain);
      if ((await sql.aliasExists(client, [address.address])).rowCount !== 0) throw refusal.addressIsAlias(address.address);
      const inserted = await sql.addUser(client, [address.address, address.domain, address.local, hash, createdAt]);
      if (inserted.rowCount === 0) throw refusal.userExists(address.address);
    });
    await this.#changed({ kind: 'user', subject: address.address });
    return { address: address.address, domain: address.domain, local: address.local, createdAt };
  }

  async setPassword(input: string, password: string): Promise<void> {
    const address = await this.#requireUser(input);
    requirePassword(password);
    const hash = await hashPassword(password);
    if ((await sql.setPassword(this.#pool, [address, hash])).rowCount === 0) throw refusal.noSuchUser(address);
    await this.#changed({ kind: 'password', subject: address });
  }

  async removeUser(input: string): Promise<void> {
    const address = requireAddress(input).address;
    if ((await sql.removeUser(this.#pool, [address])).rowCount === 0) throw refusal.noSuchUser(address);
    await this.#changed({ kind: 'user', subject: address });
  }

  async listUsers(domainInput?: string): Promise<User[]> {
    if (domainInput === undefined) return (await sql.allUsers(this.#pool)).rows.map(toUser);
    const domain = requireDomain(domainInput);
    await this.#requireDomainExists(domain);
    return (await sql.usersOf(this.#pool, [domain])).rows.map(toUser);
  }

  async getUser(input: string): Promise<User | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const [row] = (await sql.user(this.#pool, [address.address])).rows;
    return row && toUser(row);
  }

  async authenticate(input: string, password: string): Promise<AuthenticatedUser | undefined> {
    const address = parseAddress(input);
    const [row] = address ? (await sql.passwordHash(this.#pool, [address.address])).rows : [];
    // An unknown user or a bad address pays the same password check as a wrong password.
    const ok = await this.#verified.verify(row?.password_hash, password);
    if (!ok || !address || !row) return undefined;
    if (needsRehash(row.password_hash)) {
      // A carried-over hash is replaced on the first login that proves the password; a password
      // set meanwhile on another node wins (the update matches only the hash that was checked).
      const hash = await hashPassword(password);
      if ((await sql.rehash(this.#pool, [address.address, hash, row.password_hash])).rowCount !== 0) {
        await this.#changed({ kind: 'password', subject: address.address });
      }
    }
    return { address: address.address };
  }

  async passwordScheme(input: string): Promise<string | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const [row] = (await sql.passwordHash(this.#pool, [address.address])).rows;
    return row && schemeOf(row.password_hash);
  }

  async passwordStamp(input: string): Promise<string | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const [row] = (await sql.passwordHash(this.#pool, [address.address])).rows;
    return row && stampOfHash(row.password_hash);
  }

  async setApopSecret(input: string, secret: string | undefined): Promise<void> {
    const address = await this.#requireUser(input);
    if (secret !== undefined) requirePassword(secret);
    if ((await sql.setApopSecret(this.#pool, [address, secret ?? null])).rowCount === 0) throw refusal.noSuchUser(address);
    await this.#changed({ kind: 'apop', subject: address });
  }

  async getApopSecret(input: string): Promise<string | undefined> {
    const address = parseAddress(input);
    if (!address) return undefined;
    const [row] = (await sql.apopSecret(this.#pool, [address.address])).rows;
    return row?.apop_secret ?? undefined;
  }

  async lookup(address: string): Promise<LocalAddress | undefined> {
    const known = this.#memo.address(address);
    if (known) return known;
    const [row] = (await sql.lookup(this.#pool, [address])).rows;
    const found: LocalAddress | undefined = row.is_user ? { kind: 'user' } : row.targets.length > 0 ? { kind: 'alias', targets: row.targets } : undefined;
    if (found) this.#memo.foundAddress(address, found);
    return found;
  }

  async sendableAddresses(user: string): Promise<string[]> {
    return [user, ...(await sql.aliasesReaching(this.#pool, [user])).rows.map((row) => row.alias)];
  }

  async addAlias(input: string, targetInputs: string[]): Promise<void> {
    const alias = requireAddress(input);
    await this.#requireDomainExists(alias.domain);
    if (targetInputs.length === 0) throw refusal.aliasWithoutTarget();
    if (await this.getUser(alias.address)) throw refusal.aliasIsUser(alias.address);
    const targets = targetInputs.map((t) => requireAddress(t).address);
    if (targets.includes(alias.address)) throw refusal.aliasToItself(alias.address);
    await inTransaction(this.#pool, async (client) => {
      if ((await sql.lockDomainForAdding(client, [alias.domain])).rowCount === 0) throw refusal.unknownDomain(alias.domain);
      if ((await sql.user(client, [alias.address])).rowCount !== 0) throw refusal.aliasIsUser(alias.address);
      await sql.addAliasTargets(client, [alias.address, alias.domain, targets]);
    });
    await this.#changed({ kind: 'alias', subject: alias.address });
  }

  async removeAlias(input: string, targetInputs?: string[]): Promise<void> {
    const alias = requireAddress(input).address;
    const result =
      targetInputs && targetInputs.length > 0
        ? await sql.removeAliasTargets(this.#pool, [alias, targetInputs.map((target) => requireAddress(target).address)])
        : await sql.removeAlias(this.#pool, [alias]);
    if (result.rowCount === 0) throw refusal.noSuchAlias(alias, targetInputs);
    await this.#changed({ kind: 'alias', subject: alias });
  }

  async listAliases(domainInput?: string): Promise<Alias[]> {
    const result = domainInput !== undefined ? await sql.aliasesOf(this.#pool, [requireDomain(domainInput)]) : await sql.allAliases(this.#pool);
    return result.rows.map((row) => ({ alias: row.alias, targets: row.targets }));
  }

  /** Stops listening to announcements; the pool stays open (it is shared, and ended by its maker). */
  async close(): Promise<void> {
    this.#unsubscribe();
  }

  /**
   * After a change is committed: forget what this store remembers and tell every node. A lost
   * announcement (Redis down) costs at most the memo's second elsewhere, so it is logged, and the
   * change, already stored, is not reported as failed.
   */
  async #changed(change: AccountChange): Promise<void> {
    this.#memo.forget();
    try {
      await this.#events.publish(change);
    } catch (error) {
      this.#log.warn({ event: 'account_change_unannounced', change, err: error }, 'an account change is stored but could not be announced to the other nodes');
    }
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
  return { address: row.address, domain: row.domain, local: row.local, createdAt: Number(row.created_at) };
}
