import type { Spool } from './spool.ts';
import type { QueuedMessage, QueuedRecipient } from './store.ts';

// A queued message as people read it, for \`popgate queue show\` and the console's queue page
// alike: the envelope, each recipient's last answer, the header of the spooled file.

/** The envelope, every recipient with its last answer, and the header, as lines of text. */
export async function showText(spool: Spool, m: QueuedMessage, now: number): Promise<string> {
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

export function sender(from: string): string {
  return from === '' ? '<>' : from;
}

export function nextAttempt(at: number, now: number): string {
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
export function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

