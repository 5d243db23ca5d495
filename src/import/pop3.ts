import { readFileSync } from 'node:fs';
import { parseAddress } from '../accounts/address.ts';
import { LegacyHashError, parseImportedPassword } from '../accounts/legacy-hash.ts';
import { hashPassword } from '../accounts/password.ts';
import { AccountError, type AccountStore } from '../accounts/store.ts';
import type { MaildirStore } from '../mailstore/maildir.ts';
import { isImportableUidl } from '../mailstore/maildir.ts';
import { isDiskFull } from './dovecot.ts';
import { parsePasswdFile } from './passwd-file.ts';
import { Pop3Client, Pop3ClientError, type Pop3ClientOptions } from './pop3-client.ts';
import type { ImportReport, ProgressBar } from './report.ts';
import { ImportTarget, MailboxImportError } from './target.ts';

// `popgate import pop3`: the mailboxes of any POP3 server, read as a client would: log in as
// each user, UIDL, RETR each message not imported yet, QUIT. Never DELE. Messages keep the
// server's UIDLs and order; the read/unread state is not visible over POP3.
// `popgate import verify`: the UIDL listing of each user on the old server against popgate's.

/**
 * The --passwords file: one user a line, "address password", the password being everything
 * after the first run of spaces or tabs (so it may hold spaces) up to the line end. Empty lines
 * and lines starting with "#" are skipped.
 */
export interface Credentials {
  address: string;
  /** As written in the file: the login name on the old server. */
  login: string;
  password: string;
  line: number;
}

export const PASSWORDS_LIMITS = { bytes: 64 * 1024 * 1024, lineLength: 4096 };

export class PasswordsFileError extends Error {}

export function parsePasswordsFile(text: string, file: string): Credentials[] {
  if (text.length > PASSWORDS_LIMITS.bytes) throw new PasswordsFileError(`${file} is larger than ${PASSWORDS_LIMITS.bytes} bytes`);
  const credentials: Credentials[] = [];
  const seen = new Map<string, number>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) continue;
    if (line.length > PASSWORDS_LIMITS.lineLength) throw new PasswordsFileError(`${file} line ${i + 1}: longer than ${PASSWORDS_LIMITS.lineLength} characters`);
    const match = /^(\S+)[ \t]+(.+)$/.exec(line);
    if (!match) throw new PasswordsFileError(`${file} line ${i + 1}: expected "user@domain password"`);
    const address = parseAddress(match[1]);
    if (!address) throw new PasswordsFileError(`${file} line ${i + 1}: ${JSON.stringify(match[1])} is not an address of the form user@domain`);
    const before = seen.get(address.address);
    if (before !== undefined) throw new PasswordsFileError(`${file}: ${address.address} is claimed twice, by lines ${before} and ${i + 1}: keep one`);
    seen.set(address.address, i + 1);
    credentials.push({ address: address.address, login: match[1], password: match[2], line: i + 1 });
  }
  return credentials;
}

export interface Pop3ImportOptions {
  server: Omit<Pop3ClientOptions, 'timeoutMs'> & { timeoutMs?: number };
  credentials: Credentials[];
  /** A Dovecot passwd-file whose hashes are stored for the users it names. */
  passwdFile?: string;
  dryRun: boolean;
}

/** Imports every user of `options.credentials`; one user's failure skips that user, a full disk stops the import. */
export async function importPop3(options: Pop3ImportOptions, accounts: AccountStore, target: ImportTarget, report: ImportReport, progress: ProgressBar): Promise<void> {
  const hashes = new Map<string, { password: string; line: number }>();
  if (options.passwdFile) {
    for (const entry of parsePasswdFile(readFileSync(options.passwdFile, 'utf8'))) {
      const address = parseAddress(entry.user);
      if (address) hashes.set(address.address, { password: entry.password, line: entry.line });
    }
  }
  progress.start(0);
  for (const user of options.credentials) {
    progress.label(user.address);
    let client: Pop3Client | undefined;
    try {
      // The hash to keep: from the passwd-file when it names the user, else the password itself, hashed with scrypt.
      let hash: string | undefined;
      if (!(await accounts.getUser(user.address))) {
        const given = hashes.get(user.address);
        if (given) {
          try {
            const parsed = parseImportedPassword(given.password);
            hash = parsed.kind === 'hash' ? parsed.stored : await hashPassword(parsed.password);
          } catch (error) {
            if (error instanceof LegacyHashError) throw new AccountError(`${options.passwdFile} line ${given.line}: ${error.message}`);
            throw error;
          }
        } else hash = await hashPassword(user.password);
      } else report.usersExisting++;

      client = await Pop3Client.connect(options.server);
      await client.login(user.login, user.password);
      const listed = await client.uidl();
      progress.grow(listed.length);
      for (const { uidl } of listed) {
        if (!isImportableUidl(uidl)) throw new MailboxImportError(`the server lists UIDL ${JSON.stringify(uidl.slice(0, 200))}, which popgate cannot keep (1-160 printable characters)`);
      }
      if (hash !== undefined) {
        if (!options.dryRun) {
          const domain = user.address.slice(user.address.indexOf('@') + 1);
          if (!(await accounts.isLocalDomain(domain))) await accounts.addDomain(domain);
          await accounts.addUserWithHash(user.address, hash);
        }
        report.usersCreated++;
      }
      const connected = client;
      const outcome = await target.importMailbox(
        user.address,
        listed.map(({ number, uidl }) => ({ uidl, flags: '', source: { fetch: () => connected.retrieve(number) } })),
        (bytes) => progress.step(bytes),
      );
      report.messagesImported += outcome.imported;
      report.messagesAlready += outcome.already;
      report.bytes += outcome.bytes;
      await client.quit();
    } catch (error) {
      client?.close();
      if (isDiskFull(error)) throw new MailboxImportError(`the disk is full while importing ${user.address} (${(error as Error).message}): nothing else is imported; make room and run the same command again (it goes on where it stopped)`, { cause: error });
      if (error instanceof Pop3ClientError || error instanceof MailboxImportError || error instanceof AccountError) {
        report.skip(user.address, 'user', `${error.message}; what was imported stays, and the same command goes on from there`);
      } else throw error;
    }
  }
}

export interface VerifyOutcome {
  address: string;
  /** Empty when the listings are equal. */
  differences: string[];
}

/**
 * For each user, the old server's UIDL listing (and sizes) against popgate's, read from its own
 * store: what is missing here, what is extra here, what is in another order, what changed
 * (the same UIDL with another size).
 */
export async function verifyPop3(server: Pop3ClientOptions, credentials: Credentials[], accounts: AccountStore, store: MaildirStore): Promise<VerifyOutcome[]> {
  const outcomes: VerifyOutcome[] = [];
  for (const user of credentials) {
    const differences: string[] = [];
    let client: Pop3Client | undefined;
    if (!(await accounts.getUser(user.address))) {
      outcomes.push({ address: user.address, differences: ['no such user here (not imported yet?)'] });
      continue;
    }
    try {
      client = await Pop3Client.connect(server);
      await client.login(user.login, user.password);
      const old = await client.uidl();
      const sizes = await client.list();
      await client.quit();
      const here = await store.list(user.address);
      const hereByUidl = new Map(here.map((message) => [message.uidl, message]));
      const oldUidls = new Set(old.map((entry) => entry.uidl));
      const missing = old.filter((entry) => !hereByUidl.has(entry.uidl));
      const extra = here.filter((message) => !oldUidls.has(message.uidl));
      if (missing.length > 0) differences.push(`missing here: ${missing.length} (${sample(missing.map((m) => `${m.number} ${m.uidl}`))})`);
      if (extra.length > 0) differences.push(`extra here: ${extra.length} (${sample(extra.map((m) => m.uidl))})`);
      const oldOrder = old.filter((entry) => hereByUidl.has(entry.uidl)).map((entry) => entry.uidl);
      const hereOrder = here.filter((message) => oldUidls.has(message.uidl)).map((message) => message.uidl);
      const firstOut = oldOrder.findIndex((uidl, index) => hereOrder[index] !== uidl);
      if (firstOut !== -1) differences.push(`reordered: from the ${firstOut + 1}. common message on (${oldOrder[firstOut]} there, ${hereOrder[firstOut]} here)`);
      // A message whose last line has no line end is sent with one; servers differ in whether
      // LIST counts it (Dovecot does not, popgate does), so up to 2 octets more here is no change.
      const changed = old.filter((entry) => {
        const mine = hereByUidl.get(entry.uidl);
        const theirs = sizes.get(entry.number);
        return mine !== undefined && theirs !== undefined && (mine.size < theirs || mine.size > theirs + 2);
      });
      if (changed.length > 0) differences.push(`changed size: ${changed.length} (${sample(changed.map((m) => `${m.uidl} ${sizes.get(m.number)} there, ${hereByUidl.get(m.uidl)!.size} here`))})`);
    } catch (error) {
      client?.close();
      if (!(error instanceof Pop3ClientError)) throw error;
      differences.push(`cannot read the old server's listing: ${error.message}`);
    }
    outcomes.push({ address: user.address, differences });
  }
  return outcomes;
}

function sample(items: string[]): string {
  return items.length <= 5 ? items.join(', ') : `${items.slice(0, 5).join(', ')}, ...`;
}
