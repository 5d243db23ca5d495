import { formatSize } from '../quota/size.ts';
// Every status line the POP3 server sends, named once: "+OK" or "-ERR" (RFC 1939 §3), the
// response codes of RFC 2449 §8 and RFC 3206 ([IN-USE], [AUTH], [SYS/TEMP], [SYS/PERM]) that
// let a mail program tell a wrong password from a busy mailbox, and words that tell a customer
// what to do. The help pages quote these texts too.

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export const Replies = {
  greeting: (hostname: string, apopBanner: string | undefined) => `+OK ${hostname} POP3 server ready${apopBanner ? ` ${apopBanner}` : ''}`,
  ok: '+OK',
  goodbye: '+OK Goodbye',
  capabilities: '+OK Capability list follows',
  mechanisms: '+OK Supported mechanisms follow',
  challenge: (text: string) => `+ ${text}`,
  sendPassword: '+OK Send your password with PASS',
  loggedIn: (count: number, octets: number, quota?: number | null) =>
    `+OK Logged in, ${plural(count, 'message')} (${octets} octets)${quota ? `, ${Math.floor((octets * 100) / quota)}% of your ${formatSize(quota)} quota used` : ''}`,
  beginTls: '+OK Begin TLS negotiation',
  stat: (count: number, octets: number) => `+OK ${count} ${octets}`,
  scanListing: '+OK',
  scanLine: (number: string, value: string) => `+OK ${number} ${value}`,
  retrieving: (octets: number) => `+OK ${octets} octets`,
  top: '+OK Top of message follows',
  deleted: (number: number) => `+OK Message ${number} marked for deletion`,
  reset: (count: number, octets: number) => `+OK ${count} messages (${octets} octets)`,
  updated: (removed: number) => `+OK Goodbye, ${plural(removed, 'message')} deleted`,

  // The connection
  internalError: '-ERR [SYS/TEMP] Internal error, please try again later',
  lineTooLong: (limit: number) => `-ERR Line too long (the limit is ${limit} octets), closing connection`,
  shuttingDown: '-ERR [SYS/TEMP] Server is shutting down, try again in a minute',
  tooManyConnections: (scope: string) => `-ERR [SYS/TEMP] Too many connections ${scope}, try again later`,
  tooManyErrors: '-ERR Too many invalid commands, closing connection',
  // RFC 1939 §3: the autologout timer ends the session without entering UPDATE.
  autologout: '-ERR Autologout: no command for too long',

  // Commands
  invalidCharacters: '-ERR Invalid characters in command',
  unknownCommand: (verb: string) => `-ERR Unknown command${verb.length <= 16 && /^[A-Z]+$/.test(verb) ? ` ${verb}` : ''}`,
  logInFirst: '-ERR Log in first (USER and PASS)',
  alreadyLoggedIn: '-ERR Already logged in',
  userUsage: '-ERR Usage: USER your-address',
  userFirst: '-ERR Send USER first',
  apopDisabled: '-ERR APOP is not enabled here: log in with USER and PASS over TLS',
  apopUsage: '-ERR Usage: APOP name digest',
  topUsage: '-ERR Usage: TOP message-number line-count',
  messageNumber: '-ERR Give a message number',
  noSuchMessage: (given: string, count: number) => `-ERR No message ${given} (there are ${count})`,
  alreadyDeleted: (number: number) => `-ERR Message ${number} is already deleted`,
  messageRemoved: '-ERR [SYS/PERM] This message was removed by another program',
  messageUnreadable: '-ERR [SYS/TEMP] Cannot read this message right now',
  deletionsFailed: (failed: number) => `-ERR [SYS/TEMP] ${failed} message(s) could not be deleted and will be offered again next time`,
  updateFailed: '-ERR [SYS/TEMP] Deleting messages failed; they will be offered again next time',

  // TLS and logins
  tlsActive: '-ERR TLS is already active',
  tlsUnavailable: '-ERR STLS is not available on this server',
  // RFC 2595 §2 and RFC 8314: passwords in the clear only over TLS.
  plaintextRefused: '-ERR [AUTH] Plaintext passwords are not accepted without encryption: turn on SSL/TLS (STLS on port 110, or POP3S on port 995) in your mail program',
  unsupportedMechanism: '-ERR [AUTH] Unsupported mechanism; use PLAIN or LOGIN',
  authCancelled: '-ERR [AUTH] Authentication cancelled',
  authMalformed: '-ERR [AUTH] Invalid base64 in authentication exchange',
  loginFailed: '-ERR [AUTH] Login failed: check your user name (your full e-mail address) and password',
  locked: (scope: 'address' | 'account', minutes: number) =>
    `-ERR [AUTH] Too many failed logins ${scope === 'address' ? 'from your address' : 'for this account'}: try again in ${plural(minutes, 'minute')}`,
  inUse: '-ERR [IN-USE] Your mailbox is in use by another session: close your other mail program or try again in a minute',
  mailboxUnavailable: '-ERR [SYS/TEMP] Your mailbox cannot be opened right now, please try again later',
  loginUnavailable: '-ERR [SYS/TEMP] Login cannot be completed right now, please try again later',
} as const;
