import { normalizeDomain, parseAddress, type Address } from './address.ts';
import { LegacyHashError, parseImportedPassword } from './legacy-hash.ts';
import { AccountError } from './store.ts';

// What every account store checks before it stores anything, and the words of its refusals:
// each backend (SQLite, PostgreSQL) refuses the same input with the same message, which the
// CLI prints as it is.

export function requireDomain(input: string): string {
  const domain = normalizeDomain(input);
  if (!domain) throw new AccountError(`"${input}" is not a valid domain name (for example example.net)`);
  return domain;
}

export function requireAddress(input: string): Address {
  const address = parseAddress(input);
  if (!address) throw new AccountError(`"${input}" is not a valid address (for example alice@example.net)`);
  return address;
}

export function requirePassword(password: string): void {
  if (password.length < 8) throw new AccountError('the password must be at least 8 characters long');
  if (password.length > 1024) throw new AccountError('the password must be at most 1024 characters long');
  if (/[\r\n\0]/.test(password)) throw new AccountError('the password must not contain line breaks or NUL characters');
}

/**
 * A hash given to addUserWithHash: popgate's own scrypt string, or a carried-over hash in one of
 * the accepted schemes (legacy-hash.ts), which the first successful login replaces.
 */
export function requireStoredHash(address: string, hash: string): void {
  if (/^\$scrypt\$ln=\d+,r=\d+,p=\d+\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/.test(hash)) return;
  try {
    if (parseImportedPassword(hash).kind === 'hash' && hash.startsWith('{')) return;
  } catch (error) {
    if (error instanceof LegacyHashError) throw new AccountError(`${address}: ${error.message}`);
    throw error;
  }
  throw new AccountError(`${address}: a stored hash must be "$scrypt$..." or "{SCHEME}..." in a supported scheme (a plain password goes through popgate user add)`);
}

/** The refusals of an account store that depend on what is stored. */
export const refusal = {
  domainExists: (domain: string) => new AccountError(`domain ${domain} already exists`),
  unknownDomain: (domain: string) => new AccountError(`unknown domain ${domain}: add it first with popgate domain add ${domain}`),
  domainInUse: (domain: string, users: number, aliasTargets: number) =>
    new AccountError(`domain ${domain} still has ${users} user(s) and ${aliasTargets} alias target(s): remove them first (popgate user list ${domain})`),
  userExists: (address: string) => new AccountError(`user ${address} already exists`),
  noSuchUser: (address: string) => new AccountError(`no such user: ${address} (see popgate user list)`),
  addressIsAlias: (address: string) => new AccountError(`${address} is an alias: remove the alias first (popgate alias remove ${address})`),
  aliasWithoutTarget: () => new AccountError('an alias needs at least one target address'),
  aliasIsUser: (alias: string) => new AccountError(`${alias} is a user; an alias cannot have the same address`),
  aliasToItself: (alias: string) => new AccountError(`alias ${alias} cannot point to itself`),
  noSuchAlias: (alias: string, targets?: string[]) =>
    new AccountError(`no such alias: ${alias}${targets?.length ? ` -> ${targets.join(', ')}` : ''} (see popgate alias list)`),
};
