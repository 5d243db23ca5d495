import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { silentLogger } from '../log/logger.ts';
import type { OutboundQueue } from '../queue/queue.ts';
import type { Spool } from '../queue/spool.ts';
import type { QueuedMessage, QueuedRecipient } from '../queue/store.ts';
import { openBackends } from '../server/app.ts';

// `popgate queue`: look at and act on the outbound queue. The index is the one the server
// uses (openBackends), so these commands work while it runs; a running server polls the index
// every couple of seconds, so a retry takes effect without a restart.

/** A queue command that cannot do what was asked: exit code 1 with a hint. */
export class QueueError extends Error {
  readonly exitCode = 1;
}

const PICKUP = 'a running server picks up due mail within a few seconds (if none runs, it goes out when popgate serve starts)';

export function registerQueueCommands(program: Command, loadConfig: () => Config): void {
  const queue = program.command('queue').description('the outbound queue: mail waiting for remote servers');

  queue
    .command('list')
    .description('one line per queued message: id, age, sender, recipients still pending, next attempt, last error')
    .option('--json', 'print a JSON array instead (timestamps in milliseconds since 1970)')
    .action((options: { json?: boolean }) =>
      withQueue(loadConfig(), async (q) => {
        const messages = await q.list();
        if (options.json) {
          console.log(JSON.stringify(messages, null, 2));
          return;
        }
        if (messages.length === 0) {
          console.log('queue is empty');
          return;
        }
        const now = Date.now();
        for (const m of messages) console.log(listLine(m, now));
      }),
    );

  queue
    .command('show <id>')
    .description('one message: envelope, every recipient with its last answer, and the message header')
    .action((id: string) =>
      withQueue(loadConfig(), async (q) => {
        const message = await mustGet(q, id);
        process.stdout.write(await showText(q.spool, message, Date.now()));
      }),
    );

  queue
    .command('retry [id]')
    .description('make one message (or every message) due now instead of at its next scheduled attempt')
    .action((id: string | undefined) =>
      withQueue(loadConfig(), async (q) => {
        if (id !== undefined) {
          await mustGet(q, id);
          await q.retryNow(id, Date.now());
          console.log(`1 message due now (${id}); ${PICKUP}`);
          return;
        }
        console.log(await retryAll(q));
      }),
    );

  queue
    .command('flush')
    .description('make every queued message due now (like postqueue -f)')
    .action(() => withQueue(loadConfig(), async (q) => console.log(await retryAll(q))));

  queue
    .command('delete <id>')
    .description('remove a message from the queue without a bounce: the sender is not told')
    .action((id: string) =>
      withQueue(loadConfig(), async (q) => {
        const message = await mustGet(q, id);
        await q.remove(id);
        const open = message.recipients.filter((r) => r.state === 'pending' || r.state === 'failed').map((r) => r.address);
        const done = message.recipients.length - open.length;
        const to = open.length > 0 ? open.join(', ') : 'no recipient still waiting';
        console.log(
          `deleted ${id} from ${sender(message.from)} to ${to}${done > 0 ? ` (${done} already delivered or bounced)` : ''}; ` +
            'no bounce was sent, so tell the sender yourself if they should know',
        );
      }),
    );
}

async function withQueue(config: Config, fn: (queue: OutboundQueue) => Promise<void>): Promise<void> {
  const backends = await openBackends(config, silentLogger());
  try {
    await fn(backends.queue);
  } finally {
    await backends.close();
  }
}

async function mustGet(queue: OutboundQueue, id: string): Promise<QueuedMessage> {
  // Spool ids are letters and digits only: anything else cannot name a message (nor a path).
  const message = /^[A-Za-z0-9]+$/.test(id) ? await queue.get(id) : undefined;
  if (!message) throw new QueueError(`no queued message ${id}: see popgate queue list`);
  return message;
}

async function retryAll(queue: OutboundQueue): Promise<string> {
  const total = (await queue.list()).length;
  if (total === 0) return 'queue is empty';
  const changed = await queue.retryNow(undefined, Date.now());
  return `${total} message(s) due now (${changed} were waiting for a later attempt); ${PICKUP}`;
}

function listLine(m: QueuedMessage, now: number): string {
  const pending = m.recipients.filter((r) => r.state === 'pending').map((r) => r.address);
  const counts = (['delivered', 'failed', 'bounced'] as const)
    .map((state) => [state, m.recipients.filter((r) => r.state === state).length] as const)
    .filter(([, n]) => n > 0)
    .map(([state, n]) => `${n} ${state}`);
  const to = `${pending.length > 0 ? pending.join(', ') : 'none pending'}${counts.length > 0 ? ` (${counts.join(', ')})` : ''}`;
  return [m.id, formatAge(now - m.receivedAt), sender(m.from), to, `next ${nextAttempt(m.nextAttemptAt, now)}`, truncate(clean(m.lastError ?? '-'), 80)].join('\t');
}

async function showText(spool: Spool, m: QueuedMessage, now: number): Promise<string> {
  const lines = [
    `id:            ${m.id}`,
    `from:          ${sender(m.from)}`,
    `received:      ${new Date(m.receivedAt).toISOString()} (${formatAge(now - m.receivedAt)} ago) from ${m.clientIp}` +
      (m.authorizedUser ? `, relay granted to ${m.authorizedUser}` : ''),
    `size:          ${m.size} bytes`,
    `attempts:      ${m.attempts}`,
    `next attempt:  ${new Date(m.nextAttemptAt).toISOString()} (${nextAttempt(m.nextAttemptAt, now)})`,
    `last error:    ${clean(m.lastError ?? '-')}`,
    `delay warning: ${m.warned ? 'sent to the sender' : 'not sent'}`,
    '',
    'recipients:',
    ...m.recipients.flatMap((r) => recipientLines(r, now)),
    '',
    'header:',
    ...(await headerLines(spool, m.id)),
  ];
  return `${lines.join('\n')}\n`;
}

function recipientLines(r: QueuedRecipient, now: number): string[] {
  const facts = [
    r.state,
    r.status ? `status ${r.status}` : undefined,
    r.remoteMta ? `remote MTA ${clean(r.remoteMta)}` : undefined,
    r.updatedAt ? `updated ${formatAge(now - r.updatedAt)} ago` : undefined,
  ].filter((f) => f !== undefined);
  const lines = [`  ${r.address}: ${facts.join(', ')}`];
  if (r.diagnostic) lines.push(`    ${clean(r.diagnostic)}`);
  return lines;
}

/** The header section of the spooled message: its lines up to the first blank one. */
async function headerLines(spool: Spool, id: string): Promise<string[]> {
  let bytes: Buffer;
  try {
    bytes = await spool.read(id);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return [`  (the message file ${spool.dir}/${id}.eml is missing; the server drops this entry when it next starts)`];
    }
    throw error;
  }
  const lines: string[] = [];
  for (const line of bytes.toString('utf8').split(/\r?\n/)) {
    if (line === '') break;
    if (lines.length === 200) {
      lines.push('  ... (header longer than 200 lines)');
      break;
    }
    lines.push(`  ${clean(line)}`);
  }
  return lines;
}

function sender(from: string): string {
  return from === '' ? '<>' : from;
}

function nextAttempt(at: number, now: number): string {
  return at <= now ? 'now' : `in ${formatAge(at - now)}`;
}

/** "45s", "3m", "2h", "4d": the largest whole unit. */
export function formatAge(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 48 * 3600) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

/** Remote answers and headers are untrusted text: no control characters reach the terminal. */
function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}
