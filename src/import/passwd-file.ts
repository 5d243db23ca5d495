// Dovecot's passwd-file (doc: AuthDatabase/PasswdFile): one user a line,
//   user:password:uid:gid:(gecos):home:(shell):extra_fields
// with "#" comments and empty lines. Only users named user@domain are imported; the password
// field is read by parseImportedPassword (src/accounts/legacy-hash.ts), the home and the
// userdb_mail/mail extra field tell where the user's mail is when the location uses them.

export class PasswdFileError extends Error {}

export interface PasswdEntry {
  /** As written (the address is normalised by the account store). */
  user: string;
  password: string;
  home: string;
  /** The mail location given for this user in the extra fields (userdb_mail= or mail=), if any. */
  mailLocation?: string;
  /** 1-based line number, for messages. */
  line: number;
}

export const PASSWD_LIMITS = { bytes: 64 * 1024 * 1024, lineLength: 8192 };

export function parsePasswdFile(text: string): PasswdEntry[] {
  if (text.length > PASSWD_LIMITS.bytes) throw new PasswdFileError(`larger than ${PASSWD_LIMITS.bytes} bytes`);
  const entries: PasswdEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    if (line.length > PASSWD_LIMITS.lineLength) throw new PasswdFileError(`line ${i + 1}: longer than ${PASSWD_LIMITS.lineLength} characters`);
    const fields = line.split(':');
    if (fields.length < 2 || fields[0] === '') throw new PasswdFileError(`line ${i + 1}: expected user:password[:uid:gid:gecos:home:shell:extra fields]`);
    const extra = fields.slice(7).join(':');
    const mail = /(?:^|\s)(?:userdb_)?mail=(\S+)/.exec(extra);
    entries.push({ user: fields[0], password: fields[1], home: fields[5] ?? '', mailLocation: mail?.[1], line: i + 1 });
  }
  return entries;
}
