import { randomBytes } from 'node:crypto';
import type { Logger } from '../log/logger.ts';
import { rfc5322Date } from '../mail/date.ts';
import type { VacationStore } from './store.ts';

// Vacation replies by the rules of RFC 3834 ("Recommendations for Automatic Responses to
// Electronic Mail"): at most one reply per sender per interval (§2, 7 days by default), never
// to the null sender, to the user's own addresses, to mailing lists (List-*: RFC 2369/2919),
// to bulk or junk (Precedence), to anything automatic (Auto-Submitted other than "no", §5), or to
// addresses that are programs (MAILER-DAEMON, owner-*, *-request: §2). The reply carries
// "Auto-Submitted: auto-replied" (§5.1) and In-Reply-To/References (§3.1.5), and goes to the
// envelope sender (§4) with the null envelope sender (§3.3), through the queue (DKIM-signed
// there like all outgoing mail).

/** Longest reply text: a short note, not a newsletter (a file of megabytes is refused). */
export const MAX_VACATION_BODY = 16 * 1024;
export const MAX_VACATION_SUBJECT = 200;
/** How much of a message's header is read for the rules (list and automatic-mail fields). */
const HEADER_LIMIT = 64 * 1024;

/** Why a subject or body cannot be a vacation reply, or undefined when it can. */
export function vacationProblem(subject: string, body: string): string | undefined {
  if (subject.trim() === '') return 'the subject is empty';
  if (subject.length > MAX_VACATION_SUBJECT) return `the subject is longer than ${MAX_VACATION_SUBJECT} characters`;
  if (/[\r\n\0]/.test(subject)) return 'the subject must be one line';
  if (body.trim() === '') return 'the body is empty';
  if (Buffer.byteLength(body) > MAX_VACATION_BODY) return `the body is larger than ${MAX_VACATION_BODY / 1024} KB (${Math.ceil(Buffer.byteLength(body) / 1024)} KB given): keep it to a short note`;
  if (body.includes('\0')) return 'the body contains NUL characters (is it a text file?)';
  return undefined;
}

/**
 * The last moment of replies from what an operator (`--until`) or a customer (the web's last
 * day) typed: a date alone means the end of that day (UTC); a date and time needs its zone.
 * Undefined when it is not such a date.
 */
export function parseVacationUntil(text: string): number | undefined {
  const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  const at = day ? Date.UTC(Number(day[1]), Number(day[2]) - 1, Number(day[3]), 23, 59, 59, 999) : Date.parse(text);
  if (!Number.isFinite(at) || (!day && !/[zZ]|[+-]\d{2}:?\d{2}$/.test(text))) return undefined;
  // Date.UTC rolls 2026-02-31 over into March: only a day of the calendar is a date.
  if (day && new Date(at).toISOString().slice(0, 10) !== text) return undefined;
  return at;
}

/** Why a message gets no reply (logged), or 'reply'. */
export type VacationDecision = 'reply' | 'no-vacation' | 'null-sender' | 'own-address' | 'program' | 'list' | 'bulk' | 'automatic' | 'already-replied';

export interface VacationSettings {
  intervalMs: number;
  hostname: string;
}

export interface IncomingForReply {
  /** The envelope sender. */
  sender: string;
  /** The message as received, header first. */
  content: readonly Buffer[];
}

export class VacationResponder {
  readonly #store: VacationStore;
  readonly #settings: VacationSettings;
  readonly #log: Logger;

  constructor(store: VacationStore, settings: VacationSettings, log: Logger) {
    this.#store = store;
    this.#settings = settings;
    this.#log = log;
  }

  /**
   * The reply `user` sends to `message`, or why none: the one claim in the store makes a flood
   * of messages from one sender, on any number of nodes, answered once per interval.
   */
  async reply(user: string, ownAddresses: () => Promise<readonly string[]>, message: IncomingForReply, now = Date.now()): Promise<{ decision: 'reply'; reply: Buffer } | { decision: Exclude<VacationDecision, 'reply'> }> {
    const vacation = await this.#store.get(user);
    if (!vacation || (vacation.until !== undefined && vacation.until < now)) return { decision: 'no-vacation' };
    const sender = message.sender.toLowerCase();
    if (sender === '') return { decision: 'null-sender' };
    const local = sender.slice(0, sender.lastIndexOf('@'));
    if (/^(mailer-daemon|postmaster|listserv|majordomo|owner-.*|.*-request|.*-owner|bounce.*|no-?reply)$/.test(local)) return { decision: 'program' };
    const header = readHeader(message.content);
    const why = automatic(header);
    if (why) return { decision: why };
    if ((await ownAddresses()).includes(sender)) return { decision: 'own-address' };
    if (!(await this.#store.claimReply(user, sender, now, this.#settings.intervalMs))) return { decision: 'already-replied' };
    return { decision: 'reply', reply: this.#compose(user, sender, vacation.subject, vacation.body, header, now) };
  }

  #compose(user: string, to: string, subject: string, body: string, original: Map<string, string[]>, now: number): Buffer {
    const messageId = original.get('message-id')?.[0]?.trim();
    const references = original.get('references')?.[0]?.trim();
    const lines = [
      `From: <${user}>`,
      `To: <${to}>`,
      `Subject: ${encodeWord(subject)}`,
      `Date: ${rfc5322Date(new Date(now))}`,
      `Message-ID: <vacation.${randomBytes(8).toString('hex')}@${this.#settings.hostname}>`,
      ...(messageId && /^<[^<>\s]{1,500}>$/.test(messageId) ? [`In-Reply-To: ${messageId}`, `References: ${references && references.length < 900 ? `${references} ` : ''}${messageId}`] : []),
      'Auto-Submitted: auto-replied',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      ...body.replace(/\r\n?/g, '\n').replace(/\n$/, '').split('\n'),
      '',
    ];
    this.#log.debug({ event: 'vacation_reply', user, to }, 'vacation reply composed');
    return Buffer.from(lines.join('\r\n'));
  }
}

/** Why a message is from a list, bulk or a program (RFC 3834 §2), or undefined. */
function automatic(header: Map<string, string[]>): 'list' | 'bulk' | 'automatic' | undefined {
  const auto = header.get('auto-submitted')?.[0]?.trim().toLowerCase();
  if (auto && auto !== 'no' && !auto.startsWith('no;') && !auto.startsWith('no ')) return 'automatic';
  if (header.has('x-auto-response-suppress') && /\b(all|oof|autoreply)\b/i.test(header.get('x-auto-response-suppress')![0])) return 'automatic';
  for (const name of header.keys()) if (name.startsWith('list-')) return 'list';
  const precedence = header.get('precedence')?.[0]?.trim().toLowerCase();
  if (precedence === 'bulk' || precedence === 'list' || precedence === 'junk') return 'bulk';
  return undefined;
}

/** The header fields (lower-case names, unfolded values), from at most HEADER_LIMIT octets. */
function readHeader(content: readonly Buffer[]): Map<string, string[]> {
  const pieces: Buffer[] = [];
  let length = 0;
  for (const piece of content) {
    pieces.push(piece);
    length += piece.length;
    if (length >= HEADER_LIMIT) break;
  }
  const joined = Buffer.concat(pieces).subarray(0, HEADER_LIMIT);
  const end = joined.indexOf('\r\n\r\n');
  const text = joined.subarray(0, end === -1 ? joined.length : end).toString('utf8');
  const fields = new Map<string, string[]>();
  for (const field of text.split(/\r\n(?![ \t])/)) {
    const colon = field.indexOf(':');
    if (colon <= 0) continue;
    const name = field.slice(0, colon).trim().toLowerCase();
    const value = field.slice(colon + 1).replace(/\r\n[ \t]/g, ' ');
    fields.set(name, [...(fields.get(name) ?? []), value]);
  }
  return fields;
}

/**
 * A subject as RFC 2047 encoded-words when it is not plain ASCII: each word at most 75
 * characters (§2), so the text is cut into pieces of whole characters and folded.
 */
function encodeWord(text: string): string {
  if (/^[\x20-\x7e]*$/.test(text)) return text;
  const words: string[] = [];
  let piece = '';
  for (const character of text) {
    if (Buffer.byteLength(piece + character) > 45) {
      words.push(piece);
      piece = '';
    }
    piece += character;
  }
  words.push(piece);
  return words.map((word) => `=?UTF-8?B?${Buffer.from(word).toString('base64')}?=`).join('\r\n ');
}
