// Per-user forwarding rules (`popgate user forward`): where a user's mail goes, and whether a
// copy stays in the mailbox. Kept beside the accounts (SQLite, or PostgreSQL in a cluster).

export interface ForwardingRule {
  /** Addresses the mail goes to, local or remote, lower-case domains. */
  targets: string[];
  /** Keep a copy in the user's own mailbox too. */
  keep: boolean;
}

export interface ForwardingStore {
  get(address: string): Promise<ForwardingRule | undefined>;
  /** Sets (replaces) the rule of an address. */
  set(address: string, rule: ForwardingRule): Promise<void>;
  /** Removes the rule; false when there was none. */
  remove(address: string): Promise<boolean>;
  list(): Promise<({ address: string } & ForwardingRule)[]>;
}

/** Targets as stored: one text column, a JSON array (addresses cannot hold the quotes unescaped). */
export function encodeTargets(targets: readonly string[]): string {
  return JSON.stringify(targets);
}

export function decodeTargets(text: string): string[] {
  const parsed: unknown = JSON.parse(text);
  return Array.isArray(parsed) ? parsed.filter((t): t is string => typeof t === 'string') : [];
}
