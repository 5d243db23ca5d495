import { Command, CommanderError } from 'commander';
import { stringify } from 'smol-toml';
import { AccountError } from '../accounts/store.ts';
import { ConfigError } from '../config/load.ts';
import { formatDuration } from '../config/duration.ts';
import type { Config } from '../config/schema.ts';
import { resolveConfig } from './config.ts';
import { readPassword, UsageError } from './password.ts';
import { serve } from './serve.ts';
import { QueueError, registerQueueCommands } from './queue.ts';
import { registerDkimCommands } from './dkim.ts';
import { registerDbCommands } from './db.ts';
import { registerImportCommands } from './import.ts';
import { registerDoctorCommand } from './doctor.ts';
import { registerBackupCommands } from './backup.ts';
import { registerDnsCommands } from './dns.ts';
import { describeUsage, registerMailboxCommands } from './mailbox.ts';
import { DkimKeyError } from '../dkim/keys.ts';
import { openBackends, type Backends } from '../server/app.ts';
import { silentLogger } from '../log/logger.ts';
import { DOMAIN_SETTINGS, settingProblem, type DomainSettingName, type DomainSettings } from '../filter/domain-settings.ts';
import { normalizeDomain } from '../accounts/address.ts';
import { AdminOperations, OperationError } from '../admin/operations.ts';
import { AdminError } from '../admin/accounts.ts';
import { registerAdminCommands } from './admin.ts';

// popgate's command line. Administrative commands open the same backends as the server
// (openBackends; SQLite in WAL mode for the embedded ones), so they work while it runs.

const program = new Command('popgate')
  .description('popgate: ISP mail with POP before SMTP')
  .option('-c, --config <file>', 'config file (default ./popgate.toml, or $POPGATE_CONFIG)')
  .showHelpAfterError('(run popgate --help for the commands)')
  .exitOverride();

const configFlag = () => program.opts<{ config?: string }>().config;

/** The shared administrative operations (src/admin/operations.ts), recorded in the audit log as the CLI's. */
const cliOperations = (backends: Backends) => new AdminOperations(backends, { actor: 'cli', ip: '' });

async function withBackends<T>(fn: (backends: Backends, config: Config) => Promise<T>): Promise<T> {
  const { config } = resolveConfig(configFlag(), true);
  const backends = await openBackends(config, silentLogger());
  try {
    return await fn(backends, config);
  } finally {
    await backends.close();
  }
}

program
  .command('serve')
  .description('run the mail server')
  .option('--dev', 'development server: built-in defaults when there is no config file, demo account on first start')
  .action(async (options: { dev?: boolean }) => {
    const { config, source } = resolveConfig(configFlag(), Boolean(options.dev));
    await serve(config, { dev: Boolean(options.dev), source });
  });

const configCommand = program.command('config').description('configuration');
configCommand
  .command('check')
  .description('validate the config file and print the effective configuration')
  .action(() => {
    const { config, source } = resolveConfig(configFlag(), true);
    process.stdout.write(`# ${source}: valid\n${stringify(printable(config))}\n`);
  });

const domain = program.command('domain').description('local domains');
domain.command('add <domain>').description('add a local domain').action((name: string) =>
  withBackends(async (backends) => console.log(await cliOperations(backends).addDomain(name))),
);
domain.command('list').description('list local domains').action(() =>
  withBackends(async ({ accounts }) => {
    for (const name of await accounts.listDomains()) console.log(name);
  }),
);
domain.command('remove <domain>').description('remove a local domain (it must have no users or aliases)').action((name: string) =>
  withBackends(async (backends) => console.log(await cliOperations(backends).removeDomain(name))),
);
domain
  .command('set <domain> <settings...>')
  .description(`override the [filter] defaults for one domain: ${Object.entries(DOMAIN_SETTINGS).map(([name, values]) => `${name}=${values.join('|')}`).join(' ')} (empty value: back to the default)`)
  .action((name: string, settings: string[]) =>
    withBackends(async ({ accounts, domainSettings, events }, config) => {
      const target = normalizeDomain(name);
      if (!target || !(await accounts.isLocalDomain(target))) throw new AccountError(`unknown domain ${name}: add it first with popgate domain add ${name}`);
      const changes: [DomainSettingName, string][] = [];
      for (const setting of settings) {
        const eq = setting.indexOf('=');
        if (eq === -1) throw new UsageError(`"${setting}" is not name=value (for example dmarc=mark)`);
        const [key, value] = [setting.slice(0, eq).trim(), setting.slice(eq + 1).trim()];
        const problem = settingProblem(key, value);
        if (problem) throw new UsageError(problem);
        changes.push([key as DomainSettingName, value]);
      }
      for (const [key, value] of changes) await domainSettings.set(target, key, value === '' ? undefined : value);
      await events.publish({ kind: 'domain', subject: target });
      console.log(describeDomainSettings(target, await domainSettings.get(target), config));
    }),
  );
domain.command('show <domain>').description('the [filter] settings that apply to a domain, with its overrides').action((name: string) =>
  withBackends(async ({ accounts, domainSettings }, config) => {
    const target = normalizeDomain(name);
    if (!target || !(await accounts.isLocalDomain(target))) throw new AccountError(`unknown domain ${name} (see popgate domain list)`);
    console.log(describeDomainSettings(target, await domainSettings.get(target), config));
  }),
);

/** Each filter setting of a domain: its override, or the server's default from the config. */
function describeDomainSettings(domainName: string, overrides: DomainSettings, config: Config): string {
  const defaults: Record<DomainSettingName, string> = {
    dmarc: config.filter.dmarc,
    spf_fail: config.filter.spf_fail,
    temporary_errors: config.filter.temporary_errors,
    greylisting: String(config.filter.greylisting),
    from_check: 'enforce',
  };
  const lines = (Object.keys(DOMAIN_SETTINGS) as DomainSettingName[]).map((key) =>
    overrides[key] === undefined ? `  ${key} = ${defaults[key]}\t(server default)` : `  ${key} = ${overrides[key]}\t(set for ${domainName})`,
  );
  return [`${domainName}:`, ...lines].join('\n');
}

const passwordOptions = (command: Command) =>
  command
    .option('--password-stdin', 'read the password from standard input')
    .option('--password <password>', 'the password itself (unsafe: visible in the process list and shell history; for scripts only)');

async function passwordFrom(options: { passwordStdin?: boolean; password?: string }, address: string): Promise<string> {
  if (options.password !== undefined) return options.password;
  return readPassword({ stdin: options.passwordStdin, prompt: `Password for ${address}: `, confirm: true });
}

const user = program.command('user').description('mail accounts');
passwordOptions(user.command('add <address>').description('add a mail account')).action(
  (address: string, options: { passwordStdin?: boolean; password?: string }) =>
    withBackends(async (backends) => {
      const password = await passwordFrom(options, address);
      console.log(await cliOperations(backends).addUser(address, password));
    }),
);
user.command('list [domain]').description('list mail accounts with their mailbox usage and quota').action((name?: string) =>
  withBackends(async ({ accounts, quotas }) => {
    for (const u of await accounts.listUsers(name)) {
      const status = quotas && (await quotas.status(u.address));
      const usage = status ? `\t${describeUsage(status.used, status.limit)}` : '';
      console.log(`${u.address}\tcreated ${new Date(u.createdAt).toISOString()}${usage}`);
    }
  }),
);
passwordOptions(user.command('passwd <address>').description('set a new password')).action(
  (address: string, options: { passwordStdin?: boolean; password?: string }) =>
    withBackends(async (backends) => {
      if (!(await backends.accounts.getUser(address))) throw new AccountError(`no such user: ${address} (see popgate user list)`);
      console.log(await cliOperations(backends).setPassword(address, await passwordFrom(options, address)));
    }),
);
user.command('remove <address>').description('remove a mail account (its Maildir is kept on disk)').action((address: string) =>
  withBackends(async (backends) => console.log(await cliOperations(backends).removeUser(address))),
);
passwordOptions(
  user
    .command('apop-secret <address>')
    .description('set the separate APOP secret (only used when pop3.apop = true)')
    .option('--clear', 'remove the APOP secret'),
).action((address: string, options: { passwordStdin?: boolean; password?: string; clear?: boolean }) =>
  withBackends(async ({ accounts }) => {
    if (options.clear) {
      await accounts.setApopSecret(address, undefined);
      console.log(`APOP secret removed for ${address}`);
      return;
    }
    await accounts.setApopSecret(address, await passwordFrom(options, address));
    console.log(`APOP secret set for ${address}`);
  }),
);

const alias = program.command('alias').description('aliases: addresses that forward to accounts');
alias.command('add <alias> <targets...>').description('add an alias pointing to one or more addresses').action((name: string, targets: string[]) =>
  withBackends(async (backends) => console.log(await cliOperations(backends).addAlias(name, targets))),
);
alias.command('list [domain]').description('list aliases').action((name?: string) =>
  withBackends(async ({ accounts }) => {
    for (const a of await accounts.listAliases(name)) console.log(`${a.alias}\t-> ${a.targets.join(', ')}`);
  }),
);
alias.command('remove <alias> [targets...]').description('remove an alias, or only some of its targets').action((name: string, targets: string[]) =>
  withBackends(async (backends) => console.log(await cliOperations(backends).removeAlias(name, targets))),
);

const relay = program.command('relay').description('POP-before-SMTP relay grants');
relay.command('list').description('list live grants: address or network, user, time left').action(() =>
  withBackends(async ({ popBeforeSmtp }) => {
    const grants = await popBeforeSmtp.list();
    if (grants.length === 0) {
      console.log('no live grants (a grant appears when a customer logs in to POP3)');
      return;
    }
    const now = Date.now();
    for (const g of grants) console.log(`${g.key}\t${g.user}\t${formatLeft(g.expiresAt - now)} left`);
  }),
);
relay
  .command('revoke <address>')
  .description('end the grants of an address or network (as shown by relay list)')
  .option('--user <address>', 'only this user\'s grant')
  .action((address: string, options: { user?: string }) =>
    withBackends(async (backends) => console.log(await cliOperations(backends).revokeGrant(address, options.user))),
  );

const limits = program.command('limits').description('sending limits per user and failed-login lockouts per address and account');
limits
  .command('show [subject]')
  .description('a user\'s (or every user\'s) relayed mail against the sending limits, and failed logins and lockouts (of an address or account)')
  .action((subject?: string) =>
    withBackends(async ({ sendLimits, guard }, config) => {
      const now = Date.now();
      const l = config.limits;
      const isAddress = subject !== undefined && !subject.includes('@');
      console.log(`sending limits: ${l.messages_per_hour} messages/hour, ${l.messages_per_day} messages/day, ${l.recipients_per_day} recipients/day`);
      const rows = isAddress ? [] : subject ? [await sendLimits.usage(subject, now)] : await sendLimits.list(now);
      if (!isAddress && rows.every((r) => r.messagesLastDay === 0)) console.log('  no relayed mail in the last day');
      for (const r of rows.filter((row) => row.messagesLastDay > 0)) {
        const over = r.messagesLastHour >= l.messages_per_hour || r.messagesLastDay >= l.messages_per_day || r.recipientsLastDay >= l.recipients_per_day;
        console.log(`${r.user}\t${r.messagesLastHour} this hour\t${r.messagesLastDay} today\t${r.recipientsLastDay} recipients today${over ? '\tLIMITED' : ''}`);
      }
      const a = config.auth;
      console.log(`login limits: ${a.lockout_threshold} failures per address (or per address at one account) within ${formatDuration(a.lockout_window)} lock out for ${formatDuration(a.lockout_duration)}; from ${a.account_lockout_threshold} per account, one per address`);
      const wanted = subject === undefined ? undefined : new Set([`ip ${subject}`, `user ${subject.toLowerCase()}`]);
      // "ip <address> user <account>" rows count one account's failures from one address.
      const concerns = (key: string) => wanted!.has(key) || key.startsWith(`ip ${subject} user `) || key.endsWith(` user ${subject!.toLowerCase()}`);
      const lockouts = (await guard.list(now)).filter((row) => !wanted || concerns(row.key));
      if (lockouts.length === 0) console.log('  no recent failed logins');
      for (const row of lockouts) {
        const [kind, name] = [row.key.slice(0, row.key.indexOf(' ')), row.key.slice(row.key.indexOf(' ') + 1)];
        const state = row.lockedUntil ? `LOCKED for ${formatLeft(row.lockedUntil - now)}` : 'not locked';
        console.log(`${kind === 'ip' ? 'address' : 'account'} ${name}\t${row.failures} failed login(s)\t${state}`);
      }
    }),
  );
limits
  .command('reset [subject]')
  .description('forget the sending counts of a user, and the failed logins and lockout of a user or address (everything without one)')
  .action((subject?: string) =>
    withBackends(async (backends) => console.log(await cliOperations(backends).resetLimits(subject))),
  );

registerMailboxCommands(user, domain, withBackends);
registerAdminCommands(program, withBackends, passwordOptions);
registerQueueCommands(program, () => resolveConfig(configFlag(), true).config);
registerDkimCommands(program, () => resolveConfig(configFlag(), true).config);
registerDbCommands(program, () => resolveConfig(configFlag(), true).config);
registerImportCommands(program, () => resolveConfig(configFlag(), true).config);
registerDoctorCommand(program, () => resolveConfig(configFlag(), true).config);
registerBackupCommands(program, () => resolveConfig(configFlag(), true).config);
registerDnsCommands(program, () => resolveConfig(configFlag(), true).config, () => withBackends(({ accounts }) => accounts.listDomains()));

function formatLeft(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  return seconds >= 60 ? `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s` : `${seconds}s`;
}

/** The effective config as TOML, with durations written back as "10m" and not milliseconds. */
function printable(config: Config): Record<string, unknown> {
  // Keys whose values are durations (numbers of ms inside), printed back as "5m" so the
  // output is itself a valid config; secrets are never printed.
  const durations = new Set([
    'idle_timeout', 'failure_delay', 'lockout_window', 'lockout_duration', 'window', 'shutdown_grace', 'error_delay',
    'timeout', 'connect_timeout', 'command_timeout', 'data_timeout', 'lease', 'retry_schedule', 'greylist_delay', 'greylist_retry_window', 'greylist_remember', 'pregreet_delay', 'deadline', 'max_lifetime', 'delay_warning', 'reload_check', 'verified_login_cache', 'max_age', 'interval', 'session_idle', 'session_max',
  ]);
  const secrets = new Set(['relayhost_password', 'secret']);
  const asDuration = (v: unknown): unknown => (typeof v === 'number' ? formatDuration(v) : Array.isArray(v) ? v.map(asDuration) : v);
  const walk = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === 'object') {
      return Object.fromEntries(
        Object.entries(value).map(([k, v]) => [k, secrets.has(k) && v !== '' ? '(set, not shown)' : durations.has(k) ? asDuration(v) : walk(v)]),
      );
    }
    return value;
  };
  return walk(config) as Record<string, unknown>;
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? 0 : 1);
  if (error instanceof ConfigError) {
    console.error(`popgate: config error: ${error.message}`);
    process.exit(2);
  }
  if (error instanceof AccountError || error instanceof UsageError || error instanceof QueueError || error instanceof DkimKeyError || error instanceof OperationError || error instanceof AdminError) {
    console.error(`popgate: ${error.message}`);
    process.exit(1);
  }
  // One line naming the cause; the stack only when asked for (it helps a developer, not an operator).
  console.error(`popgate: ${error instanceof Error ? error.message : String(error)}`);
  if (process.env.POPGATE_DEBUG) console.error((error as Error).stack);
  process.exit(1);
}
