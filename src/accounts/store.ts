import { createHash } from 'node:crypto';

// The account directory: domains, users and aliases. Protocol code sees only this
// interface, so a PostgreSQL backend for clusters can sit beside the SQLite one.

export interface User {
  address: string;
  domain: string;
  local: string;
  createdAt: number;
}

export interface Alias {
  alias: string;
  targets: string[];
}

/** What a successful credential check yields. */
export interface AuthenticatedUser {
  address: string;
}

/** What a local address is: a user's mailbox or an alias with its targets. */
export type LocalAddress = { kind: 'user' } | { kind: 'alias'; targets: string[] };

export class AccountError extends Error {
  readonly exitCode = 1;
}

export interface AccountStore {
  addDomain(domain: string): Promise<void>;
  removeDomain(domain: string): Promise<void>;
  listDomains(): Promise<string[]>;
  isLocalDomain(domain: string): Promise<boolean>;

  addUser(address: string, password: string): Promise<User>;
  /**
   * Adds a user whose password is already hashed: popgate's "$scrypt$..." or a hash carried over
   * from another server ("{SHA512-CRYPT}$6$...", see src/accounts/legacy-hash.ts), which the
   * first successful authenticate() replaces with scrypt. Same refusals as addUser.
   */
  addUserWithHash(address: string, hash: string): Promise<User>;
  setPassword(address: string, password: string): Promise<void>;
  removeUser(address: string): Promise<void>;
  listUsers(domain?: string): Promise<User[]>;
  getUser(address: string): Promise<User | undefined>;
  /**
   * Constant-time check; undefined for a wrong password or an unknown user alike. A success
   * against a carried-over hash stores the password's scrypt hash in its place.
   */
  authenticate(address: string, password: string): Promise<AuthenticatedUser | undefined>;
  /** "scrypt", or the scheme of a carried-over hash not yet replaced ("SHA512-CRYPT" ...); undefined for an unknown user. */
  passwordScheme(address: string): Promise<string | undefined>;
  /**
   * A short digest of the stored password hash (never the hash): it changes whenever the
   * password does, so a customer's web session that carries it ends with a password change
   * (src/web/account/session.ts). Undefined for an unknown user.
   */
  passwordStamp(address: string): Promise<string | undefined>;
  /** APOP (RFC 1939 §7) needs a secret the server can read back; kept apart from the password. */
  setApopSecret(address: string, secret: string | undefined): Promise<void>;
  getApopSecret(address: string): Promise<string | undefined>;

  /** What a local address is: a user's mailbox, an alias with its targets, or nothing. */
  lookup(address: string): Promise<LocalAddress | undefined>;
  /** Addresses a user may send as: their own and every alias that reaches them. */
  sendableAddresses(user: string): Promise<string[]>;

  addAlias(alias: string, targets: string[]): Promise<void>;
  removeAlias(alias: string, targets?: string[]): Promise<void>;
  listAliases(domain?: string): Promise<Alias[]>;

  close(): Promise<void>;
}

/** passwordStamp's digest of a stored hash: 16 octets of SHA-256, enough to tell hashes apart. */
export function stampOfHash(hash: string): string {
  return createHash('sha256').update(hash).digest('base64url').slice(0, 22);
}
