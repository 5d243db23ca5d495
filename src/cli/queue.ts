import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import { silentLogger } from '../log/logger.ts';
import type { OutboundQueue } from '../queue/queue.ts';
import type { QueuedMessage } from '../queue/store.ts';
import { openBackends } from '../server/app.ts';
import { AdminOperations, QUEUE_ID } from '../admin/operations.ts';
import { clean, formatAge, nextAttempt, sender, showText } from '../queue/describe.ts';

// `popgate queue`: look at and act on the outbound queue. The index is the one the server
// uses (openBackends), so these commands work while it runs; a running server polls the index
// every couple of seconds, so a retry takes effect without a restart.

/** A queue command that cannot do what was asked: exit code 1 with a hint. */
export class QueueError extends Error {
  readonly exitCode = 1;
}

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
      withOperations(loadConfig(), async (operations) => console.log(await operations.retryQueue(id))),
    );

  queue
    .command('flush')
    .description('make every queued message due now (like postqueue -f)')
    .action(() => withOperations(loadConfig(), async (operations) => console.log(await operations.retryQueue())));

  queue
    .command('delete <id>')
    .description('remove a message from the queue without a bounce: the sender is not told')
    .action((id: string) =>
      withOperations(loadConfig(), async (operations) => console.log(await operations.deleteQueued(id))),
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

/** The changes go through the shared operations (src/admin/operations.ts), recorded as the CLI's. */
async function withOperations(config: Config, fn: (operations: AdminOperations) => Promise<void>): Promise<void> {
  const backends = await openBackends(config, silentLogger());
  try {
    await fn(new AdminOperations(backends, { actor: 'cli', ip: '' }));
  } finally {
    await backends.close();
  }
}

async function mustGet(queue: OutboundQueue, id: string): Promise<QueuedMessage> {
  const message = QUEUE_ID.test(id) ? await queue.get(id) : undefined;
  if (!message) throw new QueueError(`no queued message ${id}: see popgate queue list`);
  return message;
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

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}
