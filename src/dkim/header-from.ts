import { parseReversePath } from '../mail/address.ts';

// The From: header field (RFC 5322 §3.6.2), read once for two uses that must agree: the
// check that a customer sends only as an address of their own, and the choice of the DKIM
// signing domain. A receiver's DMARC check (RFC 7489 §3.1.1) looks at this field, so a
// message whose From: is ambiguous (two fields, an address that does not parse) is never
// signed, and a customer's is refused.

/** The header section is looked at up to this many octets (larger ones are refused as malformed). */
export const MAX_HEADER_SECTION = 1024 * 1024;
/** One From: field, unfolded; a longer one is malformed (RFC 5322 §2.1.1 asks for lines of 998). */
const MAX_FROM_FIELD = 16 * 1024;
/** Addresses in one From: field (RFC 5322 allows a list; real mail has one). */
const MAX_FROM_ADDRESSES = 20;

export type HeaderFrom =
  /** `addresses` normalized as MAIL FROM is (lower case, IDN as A-labels); empty: no From: field. */
  | { ok: true; addresses: string[] }
  | { ok: false; problem: string };

/** The header section of a message given in pieces: up to the empty line, or all of it if there is none. */
export function headerSection(content: readonly Buffer[]): Buffer | undefined {
  const pieces: Buffer[] = [];
  let length = 0;
  // One copy of at most the limit (plus the CRLF CRLF), searched once.
  for (const piece of content) {
    if (length > MAX_HEADER_SECTION + 4) break;
    pieces.push(piece);
    length += piece.length;
  }
  const start = Buffer.concat(pieces, Math.min(length, MAX_HEADER_SECTION + 4));
  const end = start.indexOf('\r\n\r\n');
  if (end !== -1) return start.subarray(0, end + 2);
  return length > MAX_HEADER_SECTION ? undefined : start;
}

/** The From: addresses of a header section (as `headerSection` gives it). */
export function parseHeaderFrom(header: Buffer | undefined): HeaderFrom {
  if (header === undefined) return { ok: false, problem: `header section longer than ${MAX_HEADER_SECTION} octets` };
  const text = header.toString('latin1');
  const fields: string[] = [];
  // A field starts at the beginning of a line; folded lines start with a space or a tab.
  const fromField = /(?:^|\r\n)from[ \t]*:/gi;
  for (let match = fromField.exec(text); match; match = fromField.exec(text)) {
    const start = match.index + match[0].length;
    let end = start;
    for (;;) {
      const lineEnd = text.indexOf('\r\n', end);
      if (lineEnd === -1) {
        end = text.length;
        break;
      }
      end = lineEnd;
      const next = text.charCodeAt(lineEnd + 2);
      if (next !== 0x20 && next !== 0x09) break;
      end = lineEnd + 2;
    }
    if (end - start > MAX_FROM_FIELD) return { ok: false, problem: `From: field longer than ${MAX_FROM_FIELD} octets` };
    fields.push(text.slice(start, end).replace(/\r\n(?=[ \t])/g, ''));
  }
  if (fields.length === 0) return { ok: true, addresses: [] };
  // RFC 5322 §3.6: exactly one From: field. With two, the signer and the reader may pick
  // different ones (a known DKIM/DMARC bypass).
  if (fields.length > 1) return { ok: false, problem: 'more than one From: field' };
  return fromAddresses(fields[0]);
}

/** The mailbox-list of a From: field: display names, quoted strings and comments dropped. */
function fromAddresses(value: string): HeaderFrom {
  const plain = withoutQuotesAndComments(value);
  if (plain === undefined) return { ok: false, problem: 'From: field with an unterminated quoted string or comment' };
  const addresses: string[] = [];
  for (const part of plain.split(',')) {
    const item = part.trim();
    if (item === '') continue; // RFC 5322 §4.4 obsolete syntax allows empty list elements
    if (item.includes(':') || item.includes(';')) return { ok: false, problem: 'From: field with a group or a route' };
    const open = item.indexOf('<');
    let address: string;
    if (open === -1) {
      if (/[\s<>]/.test(item)) return { ok: false, problem: `From: "${item.slice(0, 100)}" is not an address` };
      address = item;
    } else {
      const close = item.indexOf('>', open);
      if (close === -1 || item.indexOf('<', open + 1) !== -1 || item.slice(close + 1).trim() !== '') {
        return { ok: false, problem: 'From: field with a malformed <address>' };
      }
      address = item.slice(open + 1, close).trim();
    }
    const parsed = parseReversePath(address);
    if (!parsed.ok || 'nullSender' in parsed) return { ok: false, problem: `From: <${address.slice(0, 100)}> is not an address` };
    addresses.push(parsed.address);
    if (addresses.length > MAX_FROM_ADDRESSES) return { ok: false, problem: `more than ${MAX_FROM_ADDRESSES} addresses in From:` };
  }
  if (addresses.length === 0) return { ok: false, problem: 'From: field without an address' };
  return { ok: true, addresses };
}

/**
 * The field with each quoted string replaced by "" and each comment (nested, RFC 5322 §3.2.2)
 * by a space; undefined when one is not closed. Commas and angle brackets inside them are
 * display text, not structure.
 */
function withoutQuotesAndComments(value: string): string | undefined {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && (quoted || depth > 0)) {
      i++; // a quoted-pair: the next character is literal
      continue;
    }
    if (quoted) {
      if (c === '"') {
        quoted = false;
        out += '""';
      }
    } else if (depth > 0) {
      if (c === '(') depth++;
      else if (c === ')' && --depth === 0) out += ' ';
    } else if (c === '"') quoted = true;
    else if (c === '(') depth = 1;
    else out += c;
  }
  return quoted || depth > 0 ? undefined : out;
}

/** The domain of an address (after the last @). */
export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}
