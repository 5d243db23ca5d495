import { createHash, randomBytes } from 'node:crypto';
import { hashPassword, verifyPassword } from '../accounts/password.ts';
import type { AdminAccount, AdminSession, AdminStore } from './store.ts';

// The rules over the AdminStore: what a name may be, how passwords are hashed (scrypt, the
// same PHC strings as mail accounts: src/accounts/password.ts), and the session lifetimes
// OWASP's Session Management Cheat Sheet asks for (an idle and an absolute timeout; ids of
// 128 bits or more from a CSPRNG, stored only as hashes).

/** A mistake an administrator can fix: a taken or unknown name, a weak password. */
export class AdminError extends Error {}

/** Lower-case letters, digits, dot, dash, underscore: safe in a URL, a log line and a cookie. */
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** NIST SP 800-63B §5.1.1.2: at least 8 characters; at most 1,024 so scrypt gets no huge input. */
const MIN_PASSWORD = 8;
const MAX_PASSWORD = 1024;

export interface SessionLimits {
  idleMs: number;
  absoluteMs: number;
}

export function adminNameProblem(name: string): string | undefined {
  return NAME.test(name) ? undefined : `"${name}" is not an administrator name: use 1-64 lower-case letters, digits, ".", "-" or "_", starting with a letter or digit`;
}

function passwordProblem(password: string): string | undefined {
  if (password.length < MIN_PASSWORD) return `the password must have at least ${MIN_PASSWORD} characters`;
  if (password.length > MAX_PASSWORD) return `the password must have at most ${MAX_PASSWORD} characters`;
  return undefined;
}

/** A session id as the store keeps it: its SHA-256, so the stored value cannot be replayed. */
function sessionKey(id: string): string {
  return createHash('sha256').update(id).digest('base64url');
}

export class AdminAccounts {
  readonly #store: AdminStore;
  readonly #limits: SessionLimits;

  constructor(store: AdminStore, limits: SessionLimits) {
    this.#store = store;
    this.#limits = limits;
  }

  async add(name: string, password: string, now = Date.now()): Promise<void> {
    const problem = adminNameProblem(name) ?? passwordProblem(password);
    if (problem) throw new AdminError(problem);
    if (!(await this.#store.add(name, await hashPassword(password), now))) throw new AdminError(`administrator ${name} already exists (change the password with popgate admin passwd ${name})`);
  }

  /** Sets a new password and ends the administrator's sessions (so a stolen session dies with the old password). */
  async setPassword(name: string, password: string): Promise<void> {
    const problem = passwordProblem(password);
    if (problem) throw new AdminError(problem);
    if (!(await this.#store.setPasswordHash(name, await hashPassword(password)))) throw new AdminError(`no administrator ${name} (see popgate admin list)`);
    await this.#store.endSessionsOf(name);
  }

  async remove(name: string): Promise<void> {
    if (!(await this.#store.remove(name))) throw new AdminError(`no administrator ${name} (see popgate admin list)`);
  }

  list(): Promise<AdminAccount[]> {
    return this.#store.list();
  }

  /** Whether the password is this administrator's; an unknown name costs the same scrypt. */
  async verify(name: string, password: string): Promise<boolean> {
    if (adminNameProblem(name) || password.length > MAX_PASSWORD) return verifyPassword(password, undefined);
    return verifyPassword(password, await this.#store.passwordHash(name));
  }

  /** Starts a session; the id returned goes into the cookie and nowhere else. */
  async startSession(name: string, now = Date.now()): Promise<string> {
    const id = randomBytes(32).toString('base64url');
    await this.#store.createSession(sessionKey(id), name, now);
    return id;
  }

  session(id: string, now = Date.now()): Promise<AdminSession | undefined> {
    return this.#store.useSession(sessionKey(id), now, this.#limits.idleMs, this.#limits.absoluteMs);
  }

  endSession(id: string): Promise<void> {
    return this.#store.endSession(sessionKey(id));
  }
}
