import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseImportedPassword, LegacyHashError } from '../accounts/legacy-hash.ts';
import { parseAddress } from '../accounts/address.ts';
import { hashPassword } from '../accounts/password.ts';
import { AccountError, type AccountStore } from '../accounts/store.ts';
import { isImportableUidl, uidlOf } from '../mailstore/maildir.ts';
import { maildirUnder, MailLocation, MailLocationError, type UserMaildir } from './mail-location.ts';
import { parsePasswdFile, type PasswdEntry } from './passwd-file.ts';
import type { ImportReport, ProgressBar } from './report.ts';
import { ImportTarget, MailboxImportError, type ImportMessage } from './target.ts';
import { baseName, parseUidlist, UidlistError, type Uidlist } from './uidlist.ts';
import { UidlFormat } from './uidl-format.ts';

// `popgate import dovecot`: users and their passwords from a Dovecot passwd-file, and each
// user's INBOX from its Maildir, every message under the UIDL Dovecot's POP3 served it under
// and in the order it listed it, read/unread state kept. The source is only read.

/** Dovecot 2.3's default pop3_uidl_format. */
export const DEFAULT_UIDL_FORMAT = '%08Xu%08Xv';

export interface DovecotImportOptions {
  passwdFile: string;
  /** A folder of <domain>/<user>/ Maildirs ... */
  maildirs?: string;
  /** ... or Dovecot's mail_location. */
  mailLocation?: string;
  uidlFormat: string;
  /** The scheme of password fields without a {SCHEME} prefix (Dovecot's passdb scheme= argument). */
  defaultScheme?: string;
  dryRun: boolean;
}

/** A problem with one user's Maildir that stops that user's import. */
export class SourceError extends Error {}

export interface DovecotInbox {
  messages: ImportMessage[];
  /** Entries of cur/ and new/ that are no messages. */
  foreign: string[];
  /** Messages Dovecot had not given a UID yet, imported under new UIDLs. */
  unlisted: number;
  /** Messages whose UIDL cannot be kept, imported under new UIDLs. */
  renamed: string[];
}

/**
 * The INBOX of one user as Dovecot's POP3 serves it: the messages of cur/ and new/ in POP3
 * order (the uidlist's O field first, lowest first, then by UID), each with its UIDL (the P
 * field, else `format` expanded). A message Dovecot has not given a UID yet (not in the uidlist:
 * it arrived after Dovecot last looked) has never been listed to a client, so when the format
 * needs its UID it gets popgate's UIDL for a Maildir name instead, after the others.
 */
export function readDovecotInbox(maildir: UserMaildir, format: UidlFormat): DovecotInbox {
  const uidlistPath = join(maildir.control, 'dovecot-uidlist');
  let uidlist: Uidlist | undefined;
  try {
    uidlist = parseUidlist(readFileSync(uidlistPath, 'latin1'));
  } catch (error) {
    if (error instanceof UidlistError) throw new SourceError(`${uidlistPath} is damaged (${error.message}): let Dovecot rebuild it (doveadm force-resync) or restore it, then import again`);
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new SourceError(`${uidlistPath}: ${(error as Error).message}`);
  }
  const inbox: DovecotInbox = { messages: [], foreign: [], unlisted: 0, renamed: [] };
  const ranked: { message: ImportMessage; rank: [number, number, number, string] }[] = [];
  for (const sub of ['cur', 'new'] as const) {
    const dir = join(maildir.inbox, sub);
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw new SourceError(`${dir}: ${(error as Error).message}`);
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const file = join(dir, entry.name);
      if (!entry.isFile()) {
        inbox.foreign.push(`${file} (${entry.isDirectory() ? 'a folder' : entry.isSymbolicLink() ? 'a symbolic link' : 'not a regular file'})`);
        continue;
      }
      const base = baseName(entry.name);
      const flags = sub === 'cur' && entry.name.includes(':2,') ? entry.name.slice(entry.name.indexOf(':2,') + 3) : '';
      const record = uidlist?.records.get(base);
      let uidl: string;
      let rank: [number, number, number, string];
      if (record) {
        const kept = record.fields.get('P');
        uidl = kept === undefined ? format.expand({ uid: record.uid, uidValidity: uidlist!.uidValidity, filename: base, guid: record.fields.get('G') || base }) : kept === '' ? base : kept;
        const order = record.fields.get('O');
        rank = order !== undefined && /^\d{1,10}$/.test(order) ? [0, Number(order), record.uid, base] : [1, 0, record.uid, base];
      } else if (!format.needsUid) {
        uidl = format.expand({ uid: 0, uidValidity: 0, filename: base, guid: base });
        rank = [2, 0, 0, base];
      } else {
        uidl = uidlOf(entry.name);
        rank = [2, 0, 0, base];
        inbox.unlisted++;
      }
      if (!isImportableUidl(uidl)) {
        inbox.renamed.push(`${file}: UIDL ${JSON.stringify(uidl.slice(0, 200))}`);
        uidl = uidlOf(entry.name);
      }
      ranked.push({ message: { uidl, flags, source: { file } }, rank });
    }
  }
  ranked.sort((a, b) => a.rank[0] - b.rank[0] || a.rank[1] - b.rank[1] || a.rank[2] - b.rank[2] || (a.rank[3] < b.rank[3] ? -1 : a.rank[3] > b.rank[3] ? 1 : 0));
  inbox.messages = ranked.map((r) => r.message);
  return inbox;
}

interface PlannedUser {
  address: string;
  entry: PasswdEntry;
  /** The hash to store, or undefined when only the mail is imported (the user exists). */
  hash: string | undefined;
  maildir: UserMaildir;
  inbox: DovecotInbox;
}

/**
 * Reads every user and Maildir first (so the progress bar knows the total and a bad passwd-file
 * line is reported before anything is written), then creates the users and imports their mail
 * user by user. A problem with one user skips that user; a full disk stops the import.
 */
export async function importDovecot(options: DovecotImportOptions, accounts: AccountStore, target: ImportTarget, report: ImportReport, progress: ProgressBar): Promise<void> {
  const format = new UidlFormat(options.uidlFormat);
  const location = options.mailLocation ? new MailLocation(options.mailLocation) : undefined;
  const entries = parsePasswdFile(readFileSync(options.passwdFile, 'utf8'));
  const planned: PlannedUser[] = [];
  const byAddress = new Map<string, PasswdEntry[]>();
  for (const entry of entries) {
    const address = parseAddress(entry.user);
    if (!address) {
      report.skip(entry.user, 'user', `${options.passwdFile} line ${entry.line}: not an address of the form user@domain`);
      continue;
    }
    byAddress.set(address.address, [...(byAddress.get(address.address) ?? []), entry]);
  }
  for (const [address, claims] of byAddress) {
    if (claims.length > 1) {
      report.skip(address, 'user', `claimed twice, by lines ${claims.map((c) => c.line).join(' and ')} of ${options.passwdFile}: neither is imported; keep one and import again`);
      continue;
    }
    const [entry] = claims;
    try {
      const existing = await accounts.getUser(address);
      let hash: string | undefined;
      if (!existing) {
        const password = parseImportedPassword(entry.password, options.defaultScheme);
        hash = password.kind === 'hash' ? password.stored : await hashPassword(password.password);
      }
      const maildir = entry.mailLocation ? new MailLocation(entry.mailLocation).resolve(entry.user, entry.home) : location ? location.resolve(entry.user, entry.home) : maildirUnder(options.maildirs!, entry.user);
      planned.push({ address, entry, hash, maildir, inbox: readDovecotInbox(maildir, format) });
    } catch (error) {
      if (error instanceof LegacyHashError) report.skip(address, 'user', `${options.passwdFile} line ${entry.line}: ${error.message}; reset this password in Dovecot (doveadm pw) or add the user by hand`);
      else if (error instanceof SourceError || error instanceof MailLocationError) report.skip(address, 'user', error.message);
      else throw error;
    }
  }
  // Two users whose locations lead to one Maildir: neither may take the other's mail.
  const byMaildir = new Map<string, PlannedUser[]>();
  for (const user of planned) byMaildir.set(user.maildir.inbox, [...(byMaildir.get(user.maildir.inbox) ?? []), user]);
  for (const [inbox, users] of byMaildir) {
    if (users.length === 1) continue;
    for (const user of users) {
      report.skip(user.address, 'user', `its Maildir ${inbox} is also that of ${users.filter((u) => u !== user).map((u) => u.address).join(', ')}: two users cannot take the same mail`);
      planned.splice(planned.indexOf(user), 1);
    }
  }
  for (const user of planned) if (user.hash === undefined) report.usersExisting++;
  progress.start(planned.reduce((sum, user) => sum + user.inbox.messages.length, 0));
  for (const user of planned) {
    const { inbox } = user;
    for (const foreign of inbox.foreign) report.skip(user.address, 'entry', `${foreign}: not a message, left alone`);
    if (inbox.unlisted > 0) report.notes.push(`${user.address}: ${inbox.unlisted} message(s) Dovecot had not listed yet (no client has seen them) get new UIDLs`);
    for (const renamed of inbox.renamed) report.notes.push(`${user.address}: ${renamed} is no UIDL popgate can keep (1-160 printable characters): the message gets a new one and clients download it again`);
    try {
      if (user.hash !== undefined) {
        if (!options.dryRun) {
          if (!(await accounts.isLocalDomain(user.address.slice(user.address.indexOf('@') + 1)))) await accounts.addDomain(user.address.slice(user.address.indexOf('@') + 1));
          await accounts.addUserWithHash(user.address, user.hash);
        }
        report.usersCreated++;
      }
      progress.label(user.address);
      const outcome = await target.importMailbox(user.address, inbox.messages, (bytes) => progress.step(bytes));
      report.messagesImported += outcome.imported;
      report.messagesAlready += outcome.already;
      report.messagesLinked += outcome.linked;
      report.bytes += outcome.bytes;
    } catch (error) {
      if (isDiskFull(error)) throw new MailboxImportError(`the disk is full while importing ${user.address} (${(error as Error).message}): nothing else is imported; make room and run the same command again (it goes on where it stopped)`, { cause: error });
      if (error instanceof MailboxImportError || error instanceof AccountError) report.skip(user.address, 'user', error.message);
      else throw error;
    }
  }
}

export function isDiskFull(error: unknown): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') return true;
  }
  return false;
}

/** For --maildirs: a quick check that the folder exists, so a typo is one clear line. */
export function requireFolder(path: string, what: string): void {
  let ok = false;
  try {
    ok = statSync(path).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new SourceError(`${what} ${path} is not a folder`);
}
