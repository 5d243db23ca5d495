import type { AddressProblem } from '../mail/address.ts';
import type { LimitExceeded } from '../policy/send-limits.ts';
import type { Refusal } from '../policy/mail-policy.ts';
import type { FilterRefusal } from '../filter/filter.ts';

// Every reply the SMTP server sends, named once: the basic code (RFC 5321 §4.2), the enhanced
// status code (RFC 3463, announced with ENHANCEDSTATUSCODES per RFC 2034) and words that tell
// a customer of an old mail program what to do. The help pages quote these texts too.

export interface Reply {
  code: number;
  /** RFC 3463 enhanced status code, "" only where none belongs (220 greeting, 334, 354). */
  enhanced: string;
  text: string;
}

const reply = (code: number, enhanced: string, text: string): Reply => ({ code, enhanced, text });

/** The reply as one line on the wire (without its line end). */
export function format(r: Reply): string {
  return `${r.code} ${r.enhanced ? `${r.enhanced} ` : ''}${r.text}`;
}

/** A multi-line reply (RFC 5321 §4.2.1): "250-" on every line but the last. */
export function formatLines(code: number, lines: readonly string[]): string {
  return lines.map((text, i) => `${code}${i === lines.length - 1 ? ' ' : '-'}${text}\r\n`).join('');
}

export const Replies = {
  greeting: (hostname: string) => reply(220, '', `${hostname} ESMTP popgate ready`),
  closing: (hostname: string) => reply(221, '2.0.0', `${hostname} closing connection`),
  ok: reply(250, '2.0.0', 'OK'),
  reset: reply(250, '2.0.0', 'Reset'),
  hello: (hostname: string, helo: string, ip: string) => reply(250, '', `${hostname} Hello ${helo} [${ip}]`),
  // RFC 5321 §3.5.3: 252 neither confirms nor denies (address harvesting gets nothing).
  cannotVerify: reply(252, '2.5.0', 'Cannot verify the user, but will accept mail and attempt delivery'),
  help: reply(214, '2.0.0', 'Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS'),
  senderOk: reply(250, '2.1.0', 'Sender OK'),
  recipientOk: reply(250, '2.1.5', 'Recipient OK'),
  startData: reply(354, '', 'Send the message, end with <CRLF>.<CRLF>'),
  queued: (id: string) => reply(250, '2.0.0', `OK: queued as ${id}`),
  readyForTls: reply(220, '2.0.0', 'Ready to start TLS'),
  challenge: (text: string) => reply(334, '', text),
  authenticated: reply(235, '2.7.0', 'Authentication successful'),

  // The connection
  timeout: reply(421, '4.4.2', 'Timeout: no command for too long, closing connection'),
  shuttingDown: reply(421, '4.3.2', 'Server is shutting down, try again later'),
  tooManyErrors: reply(421, '4.7.0', 'Too many errors, closing connection'),
  tooManyConnections: (scope: string) => reply(421, '4.7.0', `Too many connections ${scope}, try again later`),
  internalError: reply(451, '4.3.0', 'Internal error, please try again later'),
  lineTooLong: (limit: number) => reply(500, '5.5.2', `Line too long (the limit is ${limit} octets), closing connection`),
  notWeb: reply(554, '5.7.0', 'This is an SMTP server, not a web server'),

  // Command syntax and sequence
  invalidCharacters: reply(500, '5.5.2', 'Invalid characters in command'),
  unknownCommand: reply(500, '5.5.2', 'Command not recognized'),
  notImplemented: (verb: string) => reply(502, '5.5.1', `${verb} is not implemented here`),
  helloSyntax: (verb: 'EHLO' | 'HELO') => reply(501, '5.5.4', `Syntax: ${verb} your-host-name`),
  helloFirst: reply(503, '5.5.1', 'Say EHLO first'),
  mailSyntax: reply(501, '5.5.4', 'Syntax: MAIL FROM:<address>'),
  rcptSyntax: reply(501, '5.5.4', 'Syntax: RCPT TO:<address>'),
  transactionOpen: reply(503, '5.5.1', 'A transaction is already open: send RSET first'),
  mailFirst: reply(503, '5.5.1', 'Send MAIL FROM first'),
  noArgument: (verb: string) => reply(501, '5.5.4', `${verb} takes no argument`),
  noValidRecipients: reply(554, '5.5.1', 'No valid recipients'),
  malformedParameter: (name: string) => reply(555, '5.5.4', `Malformed parameter ${name}`),
  unsupportedParameter: (name: string) => reply(555, '5.5.4', `Parameter ${name} is not supported`),
  rcptParameters: reply(555, '5.5.4', 'RCPT parameters are not supported'),
  sizeNumber: reply(501, '5.5.4', 'SIZE needs a number'),
  bodyValue: reply(501, '5.5.4', 'BODY must be 7BIT or 8BITMIME'),
  smtputf8Value: reply(501, '5.5.4', 'SMTPUTF8 takes no value'),
  // RFC 1870 §6: refused at MAIL what would be refused after the upload.
  tooBig: (limit: number) => reply(552, '5.3.4', `Message too big: the limit is ${limit} octets`),
  // RFC 5321 §4.5.3.1.10: 452 tells the client to send the rest in another transaction.
  tooManyRecipients: (max: number) => reply(452, '4.5.3', `Too many recipients: at most ${max} per message`),
  bareLineEnding: reply(550, '5.5.2', 'Message refused: it contains a bare CR or LF (line ends must be CRLF; possible SMTP smuggling)'),
  notAccepted: reply(451, '4.3.0', 'Message not accepted: local error, please try again later'),
  /** RFC 3463 X.3.1: mail system full; RFC 5321 §4.2.2's 452 asks the client to retry. */
  insufficientStorage: reply(452, '4.3.1', 'Insufficient system storage: please try again later'),

  // TLS and AUTH (RFC 3207, RFC 4954)
  tlsActive: reply(503, '5.5.1', 'TLS is already active'),
  tlsUnavailable: reply(502, '5.5.1', 'STARTTLS is not available here'),
  authNotOffered: reply(502, '5.5.1', 'AUTH is not available on this port: use the submission port (587 or 465)'),
  alreadyAuthenticated: reply(503, '5.5.1', 'Already authenticated'),
  authInTransaction: reply(503, '5.5.1', 'AUTH is not allowed during a mail transaction'),
  encryptionRequired: reply(538, '5.7.11', 'Encryption required: turn on STARTTLS (or SSL/TLS on port 465) in your mail program, then log in'),
  unknownMechanism: reply(504, '5.5.4', 'Unknown mechanism: use PLAIN or LOGIN'),
  authCancelled: reply(501, '5.0.0', 'Authentication cancelled'),
  authMalformed: reply(501, '5.5.2', 'Cannot decode the authentication response'),
  authFailed: reply(535, '5.7.8', 'Authentication failed: check your user name (your full e-mail address) and password'),
  authLocked: (scope: 'address' | 'account', minutes: number) =>
    reply(454, '4.7.0', `Too many failed logins ${scope === 'address' ? 'from your address' : 'for this account'}: try again in ${minutes} minute${minutes === 1 ? '' : 's'}`),
  authUnavailable: reply(454, '4.7.0', 'Login cannot be completed right now, please try again later'),
  // RFC 6409 §4.3: submission is for authorized clients only.
  authRequired: reply(530, '5.7.0', 'Authentication required: log in with your e-mail address and password (SMTP AUTH)'),
} as const;

/** A policy refusal in SMTP's words (the policy decides; the protocol says it). */
export function refusalReply(refusal: Refusal, command: 'MAIL' | 'RCPT' | 'DATA'): Reply {
  switch (refusal.reason) {
    case 'bad-address':
      return addressReply(refusal.problem, command === 'MAIL' ? 'MAIL' : 'RCPT');
    case 'unknown-user':
      return reply(550, '5.1.1', `No such user here: <${refusal.address}>`);
    case 'relay-denied':
      return reply(554, '5.7.1', `Relay access denied: log in with POP3 first, then send within ${describeWindow(refusal.windowMs)}`);
    case 'relay-unavailable':
      return reply(451, '4.3.0', 'Relay authorization cannot be checked right now: please try again in a few minutes');
    case 'sender-not-owned':
      return reply(
        553,
        '5.7.1',
        refusal.user === undefined
          ? `Sender address <${refusal.sender}> is not yours: send from the address you log in to POP3 with`
          : `Sender address <${refusal.sender}> is not yours: send from ${refusal.user} or one of its aliases`,
      );
    case 'from-not-owned':
      return reply(550, '5.7.1', `From: address <${refusal.from}> is not yours: write ${refusal.user} or one of its aliases in From:`);
    case 'from-malformed':
      return reply(550, '5.7.1', `Message refused: ${refusal.problem}`);
    // RFC 3463 §3.3: X.2.2 mailbox full.
    case 'mailbox-full':
      return refusal.permanent
        ? reply(552, '5.2.2', `Mailbox full: <${refusal.address}> is over its quota`)
        : reply(452, '4.2.2', `Mailbox full: <${refusal.address}> is over its quota, please try again later`);
    case 'mailbox-unavailable':
      return reply(451, '4.3.0', `The mailbox <${refusal.address}> cannot be checked right now: please try again in a few minutes`);
    // RFC 3463 §3.5: X.4.6 routing loop detected.
    case 'forwarding-loop':
      return reply(554, '5.4.6', `Mail forwarding loop for <${refusal.address}>`);
    case 'srs-invalid':
      return reply(
        550,
        '5.7.1',
        refusal.problem === 'expired'
          ? `<${refusal.address}> is an expired bounce address: forwarded mail is not returned after so long`
          : `<${refusal.address}> is not a bounce address of ours (${refusal.problem === 'hash' ? 'bad signature' : 'malformed'})`,
      );
  }
}

/**
 * A refused address form: syntax errors are 501 5.1.3; relay tricks 550 5.7.1 at RCPT and
 * 553 5.1.7 (bad sender mailbox) at MAIL.
 */
export function addressReply(problem: AddressProblem, command: 'MAIL' | 'RCPT'): Reply {
  if (problem.kind === 'syntax') return reply(501, '5.1.3', problem.reason);
  return command === 'MAIL' ? reply(553, '5.1.7', problem.reason) : reply(550, '5.7.1', problem.reason);
}

/** Over a sending limit: the hourly one is worth retrying later, the daily ones are not. */
export function sendLimitReply(limit: LimitExceeded): Reply {
  switch (limit.limit) {
    case 'messages_per_hour':
      return reply(450, '4.7.1', `Sending limit reached: ${limit.max} messages per hour. Please try again later`);
    case 'messages_per_day':
      return reply(550, '5.7.1', `Sending limit reached: ${limit.max} messages per day. Contact your provider if you need more`);
    case 'recipients_per_day':
      return reply(550, '5.7.1', `Sending limit reached: ${limit.max} recipients per day. Contact your provider if you need more`);
  }
}

function describeWindow(ms: number): string {
  if (ms >= 120_000) return `${Math.round(ms / 60_000)} minutes`;
  if (ms >= 60_000) return '1 minute';
  const seconds = Math.max(1, Math.round(ms / 1000));
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

/** An inbound-filter refusal in SMTP's words (RFC 7372 codes where one fits). */
export function filterReply(refusal: FilterRefusal): Reply {
  switch (refusal.reason) {
    case 'early-talker':
      return reply(554, '5.7.1', 'Your mail server talked before our greeting, as spam software does: wait for the 220 greeting');
    case 'listed':
      return reply(550, '5.7.1', `Your address ${refusal.ip} is listed by ${refusal.zone}: see that list's web site to be delisted, or ask your provider`);
    case 'greylisted': {
      const minutes = Math.max(1, Math.ceil(refusal.retryAfterMs / 60_000));
      return reply(451, '4.7.1', `Greylisted: a first message from a new server is delayed; please try again in ${minutes} minute${minutes === 1 ? '' : 's'}`);
    }
    case 'dmarc':
      return reply(550, '5.7.1', `Rejected by DMARC: the message failed sender authentication, and ${refusal.domain || 'its author domain'} asks receivers to refuse such mail`);
    case 'spf':
      return reply(550, '5.7.23', `SPF check failed: this server may not send mail for ${refusal.domain || 'the sender domain'}`);
    case 'spam':
      return reply(550, '5.7.1', refusal.text && /^[\x20-\x7e]{1,200}$/.test(refusal.text) ? refusal.text : 'Message rejected as spam');
    case 'temporary':
      return reply(451, '4.7.0', `The ${refusal.what} could not be made right now: please try again later`);
  }
}
