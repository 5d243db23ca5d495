import { normalizeDomain } from '../accounts/address.ts';

// Parses the path inside <...> of MAIL FROM and RCPT TO (RFC 5321 §4.1.2). Every form that
// has ever been used to trick a server into relaying is refused instead of interpreted:
// source routes, the percent hack, bang paths, quoted local parts, address literals, and
// trailing dots. Callers compare the normalized domain with local domains by exact equality,
// so a local domain inside a remote one (example.test.evil.net) never matches.

export type ParsedRecipient =
  | { ok: true; local: string; domain: string; address: string }
  | { ok: false; code: number; enhanced: string; reason: string };

const LOCAL_ATOM = /^[\p{L}\p{N}!#$&'*+/=?^_`{|}~-]+$/u;

function refuse(reason: string): ParsedRecipient {
  return { ok: false, code: 550, enhanced: '5.7.1', reason: `${reason} not accepted: send to a plain address (user@domain)` };
}

function syntax(reason: string): ParsedRecipient {
  return { ok: false, code: 501, enhanced: '5.1.3', reason };
}

export function parseRecipient(text: string): ParsedRecipient {
  if (text.length > 320) return syntax('Address too long');
  if (/[\x00-\x20\x7f]/.test(text)) return syntax('Address contains spaces or control characters');
  if (text.startsWith('@')) return refuse('Source routes are');
  if (text.startsWith('"') || text.includes('"')) return refuse('Quoted local parts are');
  if (text.includes('!')) return refuse('Bang paths are');
  if (text.includes('%')) return refuse('Percent-hack addresses are');
  if (text.toLowerCase() === 'postmaster') return { ok: true, local: 'postmaster', domain: '', address: 'postmaster' };
  const at = text.indexOf('@');
  if (at === -1) return syntax('Address needs a domain: user@domain');
  if (text.indexOf('@', at + 1) !== -1) return refuse('Addresses with more than one @ are');
  const local = text.slice(0, at);
  const domainText = text.slice(at + 1);
  if (local === '') return syntax('Address has an empty local part');
  if (domainText === '') return syntax('Address has an empty domain');
  if (domainText.startsWith('[')) return refuse('Address literals are');
  if (domainText.endsWith('.')) return refuse('Domains with a trailing dot are');
  if (Buffer.byteLength(local) > 64) return syntax('Local part longer than 64 octets (RFC 5321 §4.5.3.1.1)');
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..') || !local.split('.').every((atom) => LOCAL_ATOM.test(atom))) {
    return syntax('Invalid characters in the local part');
  }
  const domain = normalizeDomain(domainText);
  if (!domain || domain.length > 255) return syntax('Invalid domain');
  const lower = local.toLowerCase();
  return { ok: true, local: lower, domain, address: `${lower}@${domain}` };
}

/** MAIL FROM: the same rules, and "" is the null reverse-path of bounces. */
export function parseSender(text: string): ParsedRecipient | { ok: true; nullSender: true } {
  if (text === '') return { ok: true, nullSender: true };
  const parsed = parseRecipient(text);
  if (parsed.ok && parsed.domain === '') return syntax('Sender needs a domain: user@domain');
  if (!parsed.ok && parsed.code === 550) return { ...parsed, code: 553, enhanced: '5.1.7' };
  return parsed;
}
