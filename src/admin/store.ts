// The console's administrators and their sessions. Only hashes are stored: the password's
// scrypt string (src/accounts/password.ts) and a SHA-256 of each session id, so a copy of the
// database lets nobody log in or take over a session. The rules (names, expiry, verification)
// are in src/admin/accounts.ts; a backend stores and compares only.

export interface AdminAccount {
  name: string;
  createdAt: number;
}

export interface AdminSession {
  admin: string;
  createdAt: number;
  lastSeenAt: number;
}

export interface AdminStore {
  /** Adds an administrator; false when the name is taken (nothing changes then). */
  add(name: string, passwordHash: string, now: number): Promise<boolean>;
  /** Replaces the hash; false when there is no such administrator. */
  setPasswordHash(name: string, passwordHash: string): Promise<boolean>;
  /** Removes the administrator and every session of theirs; false when there was none. */
  remove(name: string): Promise<boolean>;
  list(): Promise<AdminAccount[]>;
  passwordHash(name: string): Promise<string | undefined>;
  /** Records a session under the hash of its id. */
  createSession(idHash: string, admin: string, now: number): Promise<void>;
  /**
   * The session if it is live at `now` (created after `now - absoluteMs`, seen after
   * `now - idleMs`), marking it seen; an expired one is deleted and undefined is returned.
   */
  useSession(idHash: string, now: number, idleMs: number, absoluteMs: number): Promise<AdminSession | undefined>;
  endSession(idHash: string): Promise<void>;
  /** Ends every session of one administrator (a password change logs the others out). */
  endSessionsOf(admin: string): Promise<number>;
}
