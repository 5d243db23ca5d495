import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { DEFAULT_UIDL_FORMAT, importDovecot, requireFolder, SourceError } from '../import/dovecot.ts';
import { MailLocationError } from '../import/mail-location.ts';
import { PasswdFileError } from '../import/passwd-file.ts';
import { parseServer, Pop3ClientError, type Pop3ClientOptions } from '../import/pop3-client.ts';
import { importPop3, parsePasswordsFile, PasswordsFileError, verifyPop3 } from '../import/pop3.ts';
import { importPostfixMaps, parsePostfixMap, PostfixMapError, type PostfixEntry } from '../import/postfix.ts';
import { ImportReport, ProgressBar } from '../import/report.ts';
import { ImportTarget, MailboxImportError, type MailboxOutcome } from '../import/target.ts';
import { UidlFormatError } from '../import/uidl-format.ts';
import { silentLogger } from '../log/logger.ts';
import { MaildirStore } from '../mailstore/maildir.ts';
import { MailboxQuotas, QuotaTrackingMailstore } from '../quota/quota.ts';
import { openBackends, type Backends } from '../server/app.ts';
import { UsageError } from './password.ts';

// `popgate import ...`: moving in from another mail server (docs/migration.md). Each command
// reads its source without changing it, can be run again (what was imported is not imported
// twice), prints a summary, and exits 1 when something was skipped.

const IMPORT_ERRORS = [SourceError, MailLocationError, PasswdFileError, Pop3ClientError, PasswordsFileError, PostfixMapError, MailboxImportError, UidlFormatError];

async function withImport(loadConfig: () => Config, run: (backends: Backends, config: Config) => Promise<void>): Promise<void> {
  const config = loadConfig();
  const backends = await openBackends(config, silentLogger());
  try {
    await run(backends, config);
  } catch (error) {
    if (IMPORT_ERRORS.some((kind) => error instanceof kind)) throw new UsageError((error as Error).message);
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && (error as NodeJS.ErrnoException).path) throw new UsageError(`${(error as NodeJS.ErrnoException).path}: no such file`);
    throw error;
  } finally {
    await backends.close();
  }
}

function targetOf(backends: Backends, config: Config, options: { copy?: boolean; dryRun?: boolean }): ImportTarget {
  return new RecountingTarget(maildirOf(backends, 'importing'), backends.quotas, { copy: options.copy, dryRun: options.dryRun, owner: mailOwner(config) });
}

/** The Maildir store, beneath the quota counting that wraps it when quotas are on. */
function maildirOf(backends: Backends, what: string): MaildirStore {
  const store = backends.mailstore instanceof QuotaTrackingMailstore ? backends.mailstore.inner : backends.mailstore;
  if (!(store instanceof MaildirStore)) throw new UsageError(`${what} needs the Maildir mail store`);
  return store;
}

/**
 * Imported files go into the Maildir directly (hard links), not through deliveries, so a
 * mailbox's usage counter is counted again from its folder once its mail is in.
 */
class RecountingTarget extends ImportTarget {
  readonly #quotas: MailboxQuotas | undefined;

  constructor(store: MaildirStore, quotas: MailboxQuotas | undefined, options: ConstructorParameters<typeof ImportTarget>[1]) {
    super(store, options);
    this.#quotas = quotas;
  }

  override async importMailbox(...args: Parameters<ImportTarget['importMailbox']>): Promise<MailboxOutcome> {
    const outcome = await super.importMailbox(...args);
    await this.#quotas?.recount(args[0]);
    return outcome;
  }
}

/**
 * Running as root, files are handed to the owner of data_dir/mail (the user popgate serves
 * mail as), so the server can read what was imported; links are made only to files that owner
 * already owns.
 */
function mailOwner(config: Config): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const { uid, gid } = statSync(join(config.data_dir, 'mail'));
    return uid === 0 ? undefined : { uid, gid };
  } catch {
    return undefined;
  }
}

function finish(report: ImportReport, progress: ProgressBar, dryRun: boolean, started: number): void {
  progress.finish();
  if (dryRun) console.log('dry run: nothing was written');
  for (const line of report.lines(dryRun, (performance.now() - started) / 1000)) console.log(line);
  if (report.skipped.length > 0) process.exitCode = 1;
}

function serverOptions(server: string, options: { tls?: boolean; starttls?: boolean; insecure?: boolean }): Pop3ClientOptions {
  if (options.tls && options.starttls) throw new UsageError('--tls and --starttls exclude each other');
  return { ...parseServer(server), security: options.tls ? 'tls' : options.starttls ? 'starttls' : 'none', insecure: options.insecure };
}

export function registerImportCommands(program: Command, loadConfig: () => Config): void {
  const command = program.command('import').description('move mailboxes, passwords and aliases in from another mail server, keeping every UIDL (docs/migration.md)');

  command
    .command('dovecot')
    .description("users and passwords from a Dovecot passwd-file, and their INBOXes with Dovecot's POP3 UIDLs and order")
    .requiredOption('--passwd-file <file>', 'Dovecot passwd-file of user@domain users')
    .option('--maildirs <dir>', 'folder of <domain>/<user>/ Maildirs')
    .option('--mail-location <location>', "Dovecot's mail_location, e.g. maildir:/var/vmail/%d/%n")
    .option('--uidl-format <format>', "Dovecot's pop3_uidl_format", DEFAULT_UIDL_FORMAT)
    .option('--default-scheme <scheme>', 'scheme of password fields without a {SCHEME} prefix (the passdb scheme= argument)')
    .option('--copy', 'copy the messages even where hard links could be made')
    .option('--dry-run', 'read everything and tell what would be imported; write nothing')
    .action((options: { passwdFile: string; maildirs?: string; mailLocation?: string; uidlFormat: string; defaultScheme?: string; copy?: boolean; dryRun?: boolean }) =>
      withImport(loadConfig, async (backends, config) => {
        if ((options.maildirs === undefined) === (options.mailLocation === undefined)) throw new UsageError('give either --maildirs DIR or --mail-location LOCATION');
        if (options.maildirs) requireFolder(options.maildirs, '--maildirs');
        const report = new ImportReport();
        const progress = new ProgressBar();
        const started = performance.now();
        try {
          await importDovecot({ ...options, dryRun: Boolean(options.dryRun) }, backends.accounts, targetOf(backends, config, options), report, progress);
        } finally {
          finish(report, progress, Boolean(options.dryRun), started);
        }
      }),
    );

  command
    .command('pop3')
    .description('mailboxes from any POP3 server, read with UIDL and RETR (never DELE), keeping its UIDLs and order')
    .requiredOption('--server <host:port>', 'the old POP3 server')
    .requiredOption('--passwords <file>', 'one "user@domain password" a line')
    .option('--tls', 'TLS from the start (port 995)')
    .option('--starttls', 'STLS after the greeting')
    .option('--insecure', "accept the server's certificate without checking it")
    .option('--passwd-file <file>', 'Dovecot passwd-file whose hashes are kept for the users it names (others get their password hashed with scrypt)')
    .option('--dry-run', 'log in, list and tell what would be imported; write nothing')
    .action((options: { server: string; passwords: string; tls?: boolean; starttls?: boolean; insecure?: boolean; passwdFile?: string; dryRun?: boolean }) =>
      withImport(loadConfig, async (backends, config) => {
        const server = serverOptions(options.server, options);
        const credentials = parsePasswordsFile(readFileSync(options.passwords, 'utf8'), options.passwords);
        const report = new ImportReport();
        const progress = new ProgressBar();
        const started = performance.now();
        try {
          await importPop3({ server, credentials, passwdFile: options.passwdFile, dryRun: Boolean(options.dryRun) }, backends.accounts, targetOf(backends, config, options), report, progress);
        } finally {
          finish(report, progress, Boolean(options.dryRun), started);
        }
      }),
    );

  command
    .command('postfix-virtual <files...>')
    .description('domains and aliases from Postfix virtual_alias_maps and virtual_mailbox_domains text tables')
    .option('--dry-run', 'tell what would be added; write nothing')
    .action((files: string[], options: { dryRun?: boolean }) =>
      withImport(loadConfig, async ({ accounts }) => {
        const entries: PostfixEntry[] = files.flatMap((file) => parsePostfixMap(readFileSync(file, 'utf8'), file));
        const report = new ImportReport();
        const counts = await importPostfixMaps(entries, accounts, report, Boolean(options.dryRun));
        const would = options.dryRun ? 'would be ' : '';
        console.log(`domains: ${counts.domains} ${would}added; aliases: ${counts.aliases} ${would}added or extended`);
        if (report.skipped.length > 0) console.log(`skipped: ${report.skipped.length}`);
        for (const skipped of report.skipped) console.log(`  ${skipped.subject}: ${skipped.what}: ${skipped.reason}`);
        if (report.skipped.length > 0) process.exitCode = 1;
      }),
    );

  command
    .command('verify')
    .description("compare each user's UIDL listing on the old POP3 server with popgate's; exit 0 only when all are equal")
    .requiredOption('--pop3 <host:port>', 'the old POP3 server')
    .requiredOption('--passwords <file>', 'one "user@domain password" a line')
    .option('--tls', 'TLS from the start (port 995)')
    .option('--starttls', 'STLS after the greeting')
    .option('--insecure', "accept the server's certificate without checking it")
    .action((options: { pop3: string; passwords: string; tls?: boolean; starttls?: boolean; insecure?: boolean }) =>
      withImport(loadConfig, async (backends) => {
        const store = maildirOf(backends, 'verifying');
        const credentials = parsePasswordsFile(readFileSync(options.passwords, 'utf8'), options.passwords);
        const outcomes = await verifyPop3(serverOptions(options.pop3, options), credentials, backends.accounts, store);
        let differing = 0;
        for (const outcome of outcomes) {
          if (outcome.differences.length === 0) console.log(`${outcome.address}: equal`);
          else {
            differing++;
            console.log(`${outcome.address}: DIFFERENT`);
            for (const difference of outcome.differences) console.log(`  ${difference}`);
          }
        }
        console.log(differing === 0 ? `all ${outcomes.length} user(s) equal` : `${differing} of ${outcomes.length} user(s) differ`);
        if (differing > 0) process.exitCode = 1;
      }),
    );
}
