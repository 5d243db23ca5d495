import type { Srs } from '../srs/srs.ts';

// What a forwarded copy carries, and when forwarding must stop. Mail that one of our
// addresses forwards elsewhere (an alias with a remote target, a user's forwarding rule) leaves
// with an SRS envelope sender, so the receiver's SPF check is against us, who may send it, and
// with a Delivered-To: header naming the forwarding address (as Postfix's local delivery adds
// it). A message that already carries our Delivered-To: for that address has come round in a
// circle (forwarded to a remote address that forwards back here): it is not forwarded again.

/** More hops than this (Received: and Delivered-To: fields) is a loop whatever the addresses (Postfix's hopcount_limit). */
export const MAX_HOPS = 50;
/** How much of a message's header is searched for earlier hops; the rest is body or abuse. */
const HEADER_SCAN_LIMIT = 256 * 1024;

export type ForwardedCopy = { ok: true; sender: string; header: Buffer } | { ok: false; reason: 'loop' };

/**
 * The envelope sender and the header for a copy that `by` forwards. The null sender stays null
 * (a bounce being forwarded); a sender in one of our own domains needs no rewriting (our SPF
 * covers it), nor does anything when SRS is off.
 */
export function forwardedCopy(sender: string, by: string, content: readonly Buffer[], options: { srs?: Srs; isOwnDomain: (domain: string) => boolean }): ForwardedCopy {
  if (loops(content, by)) return { ok: false, reason: 'loop' };
  const domain = sender.slice(sender.lastIndexOf('@') + 1).toLowerCase();
  const rewritten = sender === '' || !options.srs || options.isOwnDomain(domain) ? sender : options.srs.forward(sender);
  return { ok: true, sender: rewritten, header: Buffer.from(`Delivered-To: ${by}\r\n`) };
}

/** Whether the message was forwarded by `by` before, or has passed too many hops. */
export function loops(content: readonly Buffer[], by: string): boolean {
  const header = headerText(content);
  let hops = 0;
  const wanted = by.toLowerCase();
  for (const match of header.matchAll(/^(received|delivered-to):[ \t]*([^\r\n]*)/gim)) {
    if (++hops > MAX_HOPS) return true;
    if (match[1].toLowerCase() === 'delivered-to' && match[2].trim().replace(/^<|>$/g, '').toLowerCase() === wanted) return true;
  }
  return false;
}

/** The header section (up to the empty line), at most HEADER_SCAN_LIMIT octets of it. */
function headerText(content: readonly Buffer[]): string {
  const parts: Buffer[] = [];
  let length = 0;
  for (const piece of content) {
    parts.push(piece);
    length += piece.length;
    if (length >= HEADER_SCAN_LIMIT) break;
  }
  const joined = parts.length === 1 ? parts[0] : Buffer.concat(parts);
  const end = joined.indexOf('\r\n\r\n');
  return joined.subarray(0, Math.min(end === -1 ? joined.length : end + 2, HEADER_SCAN_LIMIT)).toString('latin1');
}
