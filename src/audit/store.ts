// The audit log: who changed what, from where, and when. Append-only (nothing updates or
// deletes an entry), written by every administrative change whoever makes it: the console
// ("admin NAME"), the CLI ("cli"), customers' own pages ("customer ADDRESS"). Details never
// hold a password or a session id.

export interface AuditEntry {
  at: number;
  /** "admin alice", "cli", "customer bob@example.com". */
  actor: string;
  /** The client address of a web request; "" for the CLI. */
  ip: string;
  /** A dotted verb such as "user.add", "grant.revoke", "queue.delete", "admin.login_failed". */
  action: string;
  /** What the change was about: an address, a domain, a queue id, a grant key. */
  subject: string;
  /** A short human sentence about the result. */
  detail: string;
}

export interface AuditFilter {
  actor?: string;
  action?: string;
  subject?: string;
}

export interface AuditLog {
  record(entry: AuditEntry): Promise<void>;
  /** The newest entries first, at most `limit`, matching every field the filter names exactly. */
  recent(limit: number, filter?: AuditFilter): Promise<(AuditEntry & { id: number })[]>;
}
