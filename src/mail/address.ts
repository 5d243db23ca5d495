import { normalizeDomain } from '../accounts/address.ts';

// Parses the path inside <...> of MAIL FROM and RCPT TO (RFC 5321 §4.1.2). Every form that
// has ever been used to trick a server into relaying is refused instead of interpreted:
// source routes, the percent hack, bang paths, quoted local parts, address literals (and IP
// addresses written without brackets), and trailing dots. Nothing is silently stripped or
// truncated: what is accepted is exactly the address that was sent, lower-cased, with the
// domain as A-labels.
//
// Callers compare the normalized domain with local domains by exact equality, never by
// suffix or substring: example.test.evil.net and evil-example.test are remote domains, and
// parseForwardPath returns them intact so that an exact comparison rejects them.
//
// A refusal says which kind it is (a syntax error, or a relay-trick form) and why, in a
// sentence fit for a reply text; the protocol picks its reply code (src/smtp/replies.ts).
//
// Unicode (SMTPUTF8, RFC 6531) local parts are accepted when every character is a letter or
// digit (\p{L}, \p{N}) or ASCII atext other than % and !, and lower-casing does not turn a
// non-ASCII character into an ASCII one (the Kelvin sign U+212A lower-cases to "k", U+0130 to
// "i" plus a combining dot): such addresses would collide with ASCII mailboxes, so they are
// refused. Combining marks are refused, so only precomposed (NFC) letters pass. Local
// mailboxes are ASCII only (parseAddress), so Unicode local parts can only ever be relayed.
// The SMTPUTF8 MAIL parameter is the session's business, not this parser's.
//
// <Postmaster> without a domain (RFC 5321 §4.1.1.3) parses to domain "" and address
// "postmaster"; the caller maps it to its primary domain (or postmaster target).

export interface AddressProblem {
  /** "syntax": not an address; "trick": a form used to trick servers into relaying. */
  kind: 'syntax' | 'trick';
  reason: string;
}

export type ParsedPath =
  | { ok: true; local: string; domain: string; address: string }
  | { ok: false; problem: AddressProblem };

/** Longest path we look at: 64-octet local part, "@", 255-octet domain (RFC 5321 §4.5.3.1). */
const MAX_PATH = 64 + 1 + 255;
const LOCAL_ATOM = /^[\p{L}\p{N}!#$&'*+/=?^_`{|}~-]+$/u;
/** Spaces of any kind, controls (CR, LF, NUL, C1), invisible format characters, lone surrogates. */
const INVISIBLE = /[\p{Z}\p{Cc}\p{Cf}\p{Cs}]/u;
/** What a domain may be written with before IDNA: LDH, dots, and non-ASCII letters, marks, digits. */
const DOMAIN_TEXT = /^(?:[A-Za-z0-9.-]|(?![\x00-\x7f])[\p{L}\p{M}\p{N}])+$/u;
const ASCII = /[\x00-\x7f]/g;

function refuse(reason: string): ParsedPath {
  return { ok: false, problem: { kind: 'trick', reason: `${reason} not accepted: send to a plain address (user@domain)` } };
}

function syntax(reason: string): ParsedPath {
  return { ok: false, problem: { kind: 'syntax', reason } };
}

function asciiCount(text: string): number {
  return text.match(ASCII)?.length ?? 0;
}

/** RCPT TO's path: a plain user@domain, or <Postmaster>. */
export function parseForwardPath(text: string): ParsedPath {
  if (text.length > MAX_PATH) return syntax('Address too long');
  if (text === '') return syntax('Address is empty: user@domain');
  if (INVISIBLE.test(text)) return syntax('Address contains spaces, control or invisible characters');
  if (text.startsWith('@') && /[:,]/.test(text)) return refuse('Source routes are');
  if (text.includes('"')) return refuse('Quoted local parts are');
  if (text.includes('!')) return refuse('Bang paths are');
  if (text.includes('%')) return refuse('Percent-hack addresses are');
  if (text.toLowerCase() === 'postmaster') return { ok: true, local: 'postmaster', domain: '', address: 'postmaster' };
  const at = text.indexOf('@');
  if (at === -1) return syntax('Address needs a domain: user@domain');
  if (at === 0) return syntax('Address has an empty local part');
  if (text.indexOf('@', at + 1) !== -1) return refuse('Addresses with more than one @ are');
  const local = text.slice(0, at);
  const domainText = text.slice(at + 1);
  if (domainText === '') return syntax('Address has an empty domain');
  if (domainText.startsWith('[') || domainText.endsWith(']')) return refuse('Address literals are');
  if (domainText.endsWith('.')) return refuse('Domains with a trailing dot are');

  const lower = local.toLowerCase();
  if (Buffer.byteLength(local) > 64 || Buffer.byteLength(lower) > 64) return syntax('Local part longer than 64 octets (RFC 5321 §4.5.3.1.1)');
  if (lower.startsWith('.') || lower.endsWith('.') || lower.includes('..') || !lower.split('.').every((atom) => LOCAL_ATOM.test(atom))) {
    return syntax('Invalid characters in the local part');
  }
  if (asciiCount(lower) !== asciiCount(local)) return syntax('Local part has Unicode characters that lower-case to ASCII');

  // domainToASCII is a URL host parser: it would cut "example.test/x" to example.test and turn
  // 0x7f.1 into 127.0.0.1. Only plain domain text reaches it.
  if (!DOMAIN_TEXT.test(domainText)) return syntax('Invalid characters in the domain');
  const domain = normalizeDomain(domainText);
  if (!domain || domain.length > 255) return syntax('Invalid domain');
  // An all-numeric last label is an IP address in disguise (RFC 1123 §2.1): 192.0.2.1, 127.1, 2130706433.
  if (/^[0-9]+$/.test(domain.slice(domain.lastIndexOf('.') + 1))) return refuse('IP addresses as domains are');
  return { ok: true, local: lower, domain, address: `${lower}@${domain}` };
}

/** MAIL FROM's path: the same rules, and "" is the null reverse-path of bounces. */
export function parseReversePath(text: string): ParsedPath | { ok: true; nullSender: true } {
  if (text === '') return { ok: true, nullSender: true };
  const parsed = parseForwardPath(text);
  if (parsed.ok && parsed.domain === '') return syntax('Sender needs a domain: user@domain');
  return parsed;
}
