import type { MailauthResolver } from './dns.ts';

// Sender authentication of a message for local mailboxes, with mailauth: SPF (RFC 7208),
// DKIM verification (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617), through our resolver and
// within a deadline. mailauth keeps the RFCs' lookup limits (SPF: 10 DNS-querying terms, 2
// void lookups) and answers malformed signatures, keys and records with neutral, permerror or
// temperror as the RFCs say. What comes back is data: the results, the Authentication-Results
// and Received-SPF header fields to add, and the facts the policy needs. mailauth's
// authenticate() is run as src/filter/mailauth-checks.ts puts it together, with DKIM keys
// parsed once for all messages (src/filter/dkim-keys.ts), and SPF and DMARC results used again
// while the DNS answers they came from stand (src/filter/answer-memo.ts). This module holds what
// the sessions need of it (the results' shape, the header fields' handling); the checks
// themselves are in src/filter/authenticator.ts, loaded only where they run (the checks' thread,
// and this one only if that thread stops), so a process does not load mailauth to accept mail.

/** A result keyword of RFC 8601 (and "temperror" for a lookup that timed out or failed). */
export type AuthResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror' | 'policy';

export interface SenderAuthentication {
  spf: AuthResult;
  /** The best DKIM result over the signatures (pass if any passed). */
  dkim: AuthResult;
  dmarc: AuthResult;
  arc: AuthResult;
  /** The author domain's DMARC policy as published ("none", "quarantine", "reject"), when it has one. */
  dmarcPolicy?: 'none' | 'quarantine' | 'reject';
  /** The author (From:) domain DMARC judged. */
  fromDomain?: string;
  /** A passing DKIM signature aligned with the From: domain (RFC 7489 §3.1.1). */
  alignedDkim: boolean;
  /** Received-SPF and Authentication-Results, CRLF-terminated, to put on top of the message. */
  headers: string;
  /** The checks did not finish within the deadline. */
  timedOut: boolean;
}

export interface AuthenticationInput {
  message: Buffer;
  ip: string;
  helo: string;
  /** MAIL FROM, "" for the null sender (SPF then checks the HELO name, RFC 7208 §2.4). */
  sender: string;
}

/** Who checks a message's sender authentication: an Authenticator here, or on a thread (src/filter/check-thread.ts). */
export interface SenderChecks {
  /** Never throws: a failure or the deadline is a temperror for every check. */
  check(input: AuthenticationInput): Promise<SenderAuthentication>;
}

export interface AuthenticationSettings {
  /** popgate's hostname: the authserv-id of Authentication-Results (RFC 8601 §2.5). */
  hostname: string;
  resolver: MailauthResolver;
  deadlineMs: number;
}

/** Checks that could not be made are temperror (RFC 8601 §2.7), never a refusal. */
export function uncheckedResult(hostname: string, input: AuthenticationInput, timedOut: boolean): SenderAuthentication {
  const why = timedOut ? 'checks did not finish in time' : 'checks failed';
  const smtpMailfrom = input.sender === '' ? `smtp.helo=${input.helo}` : `smtp.mailfrom=${input.sender}`;
  return {
    spf: 'temperror',
    dkim: 'temperror',
    dmarc: 'temperror',
    arc: 'none',
    alignedDkim: false,
    headers: `Authentication-Results: ${hostname};\r\n spf=temperror (${why}) ${smtpMailfrom};\r\n dkim=temperror (${why});\r\n dmarc=temperror (${why})\r\n`,
    timedOut,
  };
}

/**
 * The message without Authentication-Results fields that claim to be ours (RFC 8601 §5: a
 * receiver removes them before adding its own, so a sender cannot forge our verdicts), as a
 * new buffer, or the same buffer when there were none. Only the header section is looked at.
 */
export function withoutForgedResults(message: Buffer, authservId: string): Buffer {
  const end = headerEnd(message);
  const header = message.subarray(0, end).toString('latin1');
  if (!/^authentication-results:/im.test(header)) return message;
  const fields = splitFields(header);
  const id = authservId.toLowerCase();
  const kept = fields.filter((field) => {
    const match = /^authentication-results:[ \t\r\n]*([^ \t\r\n;]+)/i.exec(field);
    return !match || match[1].toLowerCase() !== id;
  });
  if (kept.length === fields.length) return message;
  return Buffer.concat([Buffer.from(kept.join(''), 'latin1'), message.subarray(end)]);
}

/**
 * The message without the header fields `names` (lower case), as a new buffer, or the same
 * buffer when it had none of them. Only the header section is looked at.
 */
export function withoutFields(message: Buffer, names: ReadonlySet<string>): Buffer {
  const end = headerEnd(message);
  const header = message.subarray(0, end).toString('latin1');
  // Most messages carry none of them: no splitting into fields for those.
  const lower = header.toLowerCase();
  if (![...names].some((name) => lower.startsWith(name) || lower.includes(`\n${name}`))) return message;
  const fields = splitFields(header);
  const kept = fields.filter((field) => !names.has(field.slice(0, field.indexOf(':')).trim().toLowerCase()));
  if (kept.length === fields.length) return message;
  return Buffer.concat([Buffer.from(kept.join(''), 'latin1'), message.subarray(end)]);
}

/** Where the header section ends: after the CRLF of its last field (before the empty line). */
export function headerEnd(message: Buffer): number {
  if (message[0] === 0x0d && message[1] === 0x0a) return 0; // no header fields at all
  const blank = message.indexOf('\r\n\r\n');
  return blank === -1 ? message.length : blank + 2;
}

/** Header fields with their folded continuation lines, each ending in CRLF. */
function splitFields(header: string): string[] {
  const fields: string[] = [];
  for (const line of header.split(/(?<=\r\n)/)) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length > 0) fields[fields.length - 1] += line;
    else if (line !== '') fields.push(line);
  }
  return fields;
}
