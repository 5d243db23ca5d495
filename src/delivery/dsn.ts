import { randomBytes } from 'node:crypto';
import { rfc5322Date } from '../mail/date.ts';

// Delivery status notifications (RFC 3464) in a multipart/report (RFC 6522): a text part a
// person can act on, the machine-readable status, and the returned message (whole when
// small, headers only when large, as RFC 3462 §3 allows).

export interface DsnRecipient {
  address: string;
  action: 'failed' | 'delayed';
  /** RFC 3463 status, e.g. "5.1.1". */
  status: string;
  /** An SMTP reply ("550 5.1.1 No such user") or popgate's own reason. */
  diagnostic?: string;
  remoteMta?: string;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  /** The envelope sender the report goes to. */
  to: string;
  arrivalDate: number;
  recipients: DsnRecipient[];
  original: Buffer;
  /** Return the whole message up to this size; above it, only its header. */
  returnLimit: number;
  /** For a delay warning: when popgate gives up. */
  retryUntil?: number;
  now?: number;
}

export function buildDsn(input: DsnInput): Buffer {
  const now = new Date(input.now ?? Date.now());
  const delayed = input.recipients.every((r) => r.action === 'delayed');
  const boundary = `${input.queueId}.${randomBytes(6).toString('hex')}/${input.reportingMta}`;
  const subject = delayed ? 'Delayed Mail (still being retried)' : 'Undelivered Mail Returned to Sender';
  const header = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    `To: <${input.to}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${input.queueId}.${randomBytes(4).toString('hex')}.dsn@${input.reportingMta}>`,
    // RFC 3834 §5: an automatic reply, so auto-responders do not answer it.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="${boundary}"`,
    'Content-Transfer-Encoding: 7bit',
  ].join('\r\n');

  const human = humanText(input, delayed);
  const status = [
    `Reporting-MTA: dns; ${input.reportingMta}`,
    `X-Popgate-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${rfc5322Date(new Date(input.arrivalDate))}`,
    '',
    ...input.recipients.flatMap((r) => [
      `Final-Recipient: rfc822; ${r.address}`,
      `Action: ${r.action}`,
      `Status: ${r.status}`,
      ...(r.remoteMta ? [`Remote-MTA: dns; ${r.remoteMta}`] : []),
      ...(r.diagnostic ? [`Diagnostic-Code: ${diagnosticCode(r.diagnostic)}`] : []),
      `Last-Attempt-Date: ${rfc5322Date(now)}`,
      ...(r.action === 'delayed' && input.retryUntil ? [`Will-Retry-Until: ${rfc5322Date(new Date(input.retryUntil))}`] : []),
      '',
    ]),
  ].join('\r\n');

  const whole = input.original.length <= input.returnLimit;
  const returned = whole ? input.original : headerOf(input.original);
  const parts = [
    Buffer.from(
      `${header}\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n` +
        `--${boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${human}\r\n` +
        `--${boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n${status}\r\n` +
        `--${boundary}\r\nContent-Description: ${whole ? 'Undelivered Message' : 'Undelivered Message Headers'}\r\nContent-Type: ${whole ? 'message/rfc822' : 'text/rfc822-headers'}\r\n\r\n`,
    ),
    returned,
    Buffer.from(`${endsWithCrlf(returned) ? '' : '\r\n'}\r\n--${boundary}--\r\n`),
  ];
  return Buffer.concat(parts);
}

function humanText(input: DsnInput, delayed: boolean): string {
  const lines = delayed
    ? [
        `This is the mail system at ${input.reportingMta}.`,
        '',
        'Your message could not be delivered yet to the recipients below. The mail system will',
        `keep trying${input.retryUntil ? ` until ${rfc5322Date(new Date(input.retryUntil))}` : ''}; you do not need to send it again.`,
      ]
    : [
        `This is the mail system at ${input.reportingMta}.`,
        '',
        'Your message could not be delivered to the recipients below. This is a permanent',
        'error: the mail system will not try again. Check the address, or ask the recipient',
        'by other means; the original message is attached.',
      ];
  lines.push('');
  for (const r of input.recipients) {
    lines.push(`<${r.address}>: ${r.diagnostic ?? r.status}${r.remoteMta ? ` (from ${r.remoteMta})` : ''}`);
  }
  return lines.join('\r\n');
}

/** RFC 3464 §2.3.6: "smtp; <reply>" for an SMTP reply, our own type otherwise. */
function diagnosticCode(text: string): string {
  const clean = text.replace(/[\r\n]+/g, ' ');
  return /^\d{3}[ -]/.test(clean) ? `smtp; ${clean}` : `X-Popgate; ${clean}`;
}

function headerOf(message: Buffer): Buffer {
  const end = message.indexOf('\r\n\r\n');
  return end === -1 ? message : message.subarray(0, end + 2);
}

function endsWithCrlf(buffer: Buffer): boolean {
  return buffer.length >= 2 && buffer[buffer.length - 2] === 0x0d && buffer[buffer.length - 1] === 0x0a;
}
