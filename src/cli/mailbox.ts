import { open } from 'node:fs/promises';
import type { Command } from 'commander';
import { AccountError } from '../accounts/store.ts';
import { requireAddress, requireDomain } from '../accounts/checks.ts';
import type { Config } from '../config/schema.ts';
import { forwardingProblem } from '../forwarding/rules.ts';
import { formatSize, parseQuota } from '../quota/size.ts';
import type { Backends } from '../server/app.ts';
import { MAX_VACATION_BODY, parseVacationUntil, vacationProblem } from '../vacation/vacation.ts';
import { UsageError } from './password.ts';

// `popgate user quota|forward|vacation` and `popgate domain quota`: the mailbox services of
// one account (docs/mailbox-services.md). Each command without a value shows what is set.

type WithBackends = <T>(fn: (backends: Backends, config: Config) => Promise<T>) => Promise<T>;

export function registerMailboxCommands(user: Command, domain: Command, withBackends: WithBackends): void {
  user
    .command('quota <address> [size]')
    .description('show, or set the mailbox size limit: a size such as 500MB or 1GB, "none" (no limit), or "default" (the domain\'s or server\'s)')
    .option('--recount', 'count the mailbox folder again and correct the usage counter')
    .action((input: string, size: string | undefined, options: { recount?: boolean }) =>
      withBackends(async (backends) => {
        const address = await requireUser(backends, input);
        const quotas = requireQuotas(backends);
        if (options.recount) await quotas.recount(address);
        if (size !== undefined) {
          await quotas.setLimit(address, size.trim().toLowerCase() === 'default' ? undefined : requireQuota(size));
        }
        const { used, limit } = await quotas.status(address);
        const set = await backends.quotaStore.limits(address, address.slice(address.lastIndexOf('@') + 1));
        const source = set.user !== undefined ? 'set for this user' : set.domain !== undefined ? "the domain's quota" : 'the server default';
        console.log(`${address}: ${describeUsage(used, limit)} (${source})`);
        // Defined, not refused: the operator may shrink a mailbox on purpose; mail waits until it is emptied.
        if (limit !== null && used > limit) console.log(`  the mailbox holds more than its quota: new mail is refused until ${formatSize(used - limit)} are deleted`);
      }),
    );

  domain
    .command('quota <domain> [size]')
    .description('show, or set the quota of every mailbox of a domain without its own: a size, "none", or "default" (the server\'s [quota] default)')
    .action((input: string, size: string | undefined) =>
      withBackends(async (backends, config) => {
        const name = requireDomain(input);
        if (!(await backends.accounts.isLocalDomain(name))) throw new AccountError(`unknown domain ${input} (see popgate domain list)`);
        if (size !== undefined) await backends.quotaStore.setLimit(name, size.trim().toLowerCase() === 'default' ? undefined : requireQuota(size));
        const set = (await backends.quotaStore.limits('', name)).domain;
        const shown = set === undefined ? `${config.quota.default} (the server default)` : set === null ? 'none' : formatSize(set);
        console.log(`${name}: mailboxes without a quota of their own get ${shown}`);
      }),
    );

  user
    .command('forward <address> [targets...]')
    .description('show, or forward all mail of an account to up to 10 addresses (with SRS when remote)')
    .option('--keep', 'keep a copy in the mailbox too')
    .option('--off', 'stop forwarding')
    .action((input: string, targets: string[], options: { keep?: boolean; off?: boolean }) =>
      withBackends(async (backends) => {
        const address = await requireUser(backends, input);
        if (options.off) {
          if (targets.length > 0) throw new UsageError('--off takes no addresses');
          const removed = await backends.forwarding.remove(address);
          console.log(removed ? `${address}: forwarding stopped` : `${address} was not forwarding`);
          return;
        }
        if (targets.length > 0) {
          const checked = await forwardingProblem(address, targets, backends);
          if (!checked.ok) throw new UsageError(checked.reason);
          await backends.forwarding.set(address, { targets: checked.targets, keep: Boolean(options.keep) });
        }
        const rule = await backends.forwarding.get(address);
        console.log(rule ? `${address} forwards to ${rule.targets.join(', ')}${rule.keep ? ', keeping a copy' : ' (no copy kept)'}` : `${address} does not forward`);
      }),
    );

  user
    .command('vacation <address>')
    .description('show, or set the automatic reply while away (RFC 3834: once per sender per [vacation] interval)')
    .option('--subject <text>', 'subject of the reply')
    .option('--body-file <file>', `text of the reply (UTF-8, at most ${MAX_VACATION_BODY / 1024} KB)`)
    .option('--until <date>', 'last day of replies (YYYY-MM-DD, or a date and time with a zone)')
    .option('--off', 'stop replying')
    .action((input: string, options: { subject?: string; bodyFile?: string; until?: string; off?: boolean }) =>
      withBackends(async (backends) => {
        const address = await requireUser(backends, input);
        if (options.off) {
          console.log((await backends.vacations.remove(address)) ? `${address}: vacation reply off` : `${address} had no vacation reply`);
          return;
        }
        if (options.subject !== undefined || options.bodyFile !== undefined || options.until !== undefined) {
          if (options.subject === undefined || options.bodyFile === undefined) throw new UsageError('a vacation reply needs both --subject and --body-file');
          const body = await readLimited(options.bodyFile, MAX_VACATION_BODY);
          const problem = vacationProblem(options.subject, body);
          if (problem) throw new UsageError(problem);
          const now = Date.now();
          const until = options.until === undefined ? undefined : parseUntil(options.until);
          if (until !== undefined && until < now) throw new UsageError(`--until ${options.until} is in the past`);
          await backends.vacations.set(address, { subject: options.subject, body, since: now, until });
        }
        const vacation = await backends.vacations.get(address);
        if (!vacation) return console.log(`${address} has no vacation reply`);
        const ended = vacation.until !== undefined && vacation.until < Date.now();
        console.log(`${address} ${ended ? 'had' : 'has'} a vacation reply "${vacation.subject}"${vacation.until !== undefined ? ` until ${new Date(vacation.until).toISOString()}` : ''}${ended ? ' (ended)' : ''}`);
      }),
    );
}

/** "used of limit (n%)" for lists and the quota command. */
export function describeUsage(used: number, limit: number | null): string {
  if (limit === null) return `${formatSize(used)} used, no limit`;
  return `${formatSize(used)} of ${formatSize(limit)} used (${Math.floor((used * 100) / limit)}%)`;
}

async function requireUser(backends: Backends, input: string): Promise<string> {
  const address = requireAddress(input).address;
  if (!(await backends.accounts.getUser(address))) throw new AccountError(`no such user: ${input} (see popgate user list)`);
  return address;
}

function requireQuotas(backends: Backends) {
  if (!backends.quotas) throw new UsageError('quotas are off ([quota] enabled = false)');
  return backends.quotas;
}

function requireQuota(text: string): number | null {
  const parsed = parseQuota(text);
  if (!parsed.ok) throw new UsageError(parsed.reason);
  return parsed.limit;
}

/** --until as parseVacationUntil reads it; anything else is a usage error. */
function parseUntil(text: string): number {
  const at = parseVacationUntil(text);
  if (at === undefined) throw new UsageError(`--until "${text}" is not a date (YYYY-MM-DD, or for example 2026-08-31T18:00+09:00)`);
  return at;
}

/** A text file of at most `limit` octets, refused before reading when it is larger. */
async function readLimited(path: string, limit: number): Promise<string> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    const { size } = await file.stat();
    if (size > limit) throw new UsageError(`${path} is ${formatSize(size)}: a vacation reply is at most ${formatSize(limit)}, keep it to a short note`);
    const text = (await file.readFile()).toString('utf8');
    if (text.includes('\uFFFD')) throw new UsageError(`${path} is not UTF-8 text`);
    return text;
  } finally {
    await file.close();
  }
}
