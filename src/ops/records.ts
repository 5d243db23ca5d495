// The DNS TXT records that make mail from a domain trusted, parsed as far as `popgate doctor`
// needs to judge them: DKIM key records (RFC 6376 §3.6.1), DMARC policies (RFC 7489 §6.3),
// TLS-RPT (RFC 8460 §3) and the `all` of an SPF record (RFC 7208 §5.1). Every parser takes
// untrusted text from the network: lengths and counts are bounded, and a bad record is a
// reason in words, never an exception.

/** Longer than any sensible record (a 4096-bit RSA key is some 750 characters). */
const MAX_RECORD_LENGTH = 8192;
const MAX_TAGS = 64;

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * A tag-value list (RFC 6376 §3.2, which DMARC and TLS-RPT follow): `tag=value` separated by
 * ";", whitespace around both ignored, a trailing ";" allowed, each tag at most once.
 */
export function parseTagList(text: string): Parsed<Map<string, string>> {
  if (text.length > MAX_RECORD_LENGTH) return { ok: false, reason: `the record is ${text.length} characters long (more than ${MAX_RECORD_LENGTH})` };
  const tags = new Map<string, string>();
  const parts = text.split(';');
  if (parts.length > MAX_TAGS + 1) return { ok: false, reason: `more than ${MAX_TAGS} tags` };
  for (const [index, part] of parts.entries()) {
    if (part.trim() === '') {
      if (index === parts.length - 1) continue;
      return { ok: false, reason: 'an empty tag between two ";"' };
    }
    const eq = part.indexOf('=');
    if (eq === -1) return { ok: false, reason: `"${clip(part.trim())}" is not tag=value` };
    const name = part.slice(0, eq).trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) return { ok: false, reason: `"${clip(name)}" is not a tag name` };
    if (tags.has(name)) return { ok: false, reason: `the tag ${name} appears twice` };
    tags.set(name, part.slice(eq + 1).trim());
  }
  return { ok: true, value: tags };
}

export interface DkimKeyRecord {
  /** k=, "rsa" unless given. */
  keyType: string;
  /** p= without whitespace; empty for a revoked key (RFC 6376 §3.6.1). */
  publicKey: string;
}

/** A DKIM key record (RFC 6376 §3.6.1): v=DKIM1 first if present, p= required. */
export function parseDkimRecord(text: string): Parsed<DkimKeyRecord> {
  const parsed = parseTagList(text);
  if (!parsed.ok) return parsed;
  const tags = parsed.value;
  if (tags.has('v') && ([...tags.keys()][0] !== 'v' || tags.get('v') !== 'DKIM1')) return { ok: false, reason: 'v= must come first and be DKIM1' };
  const p = tags.get('p');
  if (p === undefined) return { ok: false, reason: 'there is no p= (public key) tag' };
  // The key may be split over several strings or lines with spaces in between (§3.6.1: FWS is allowed in p=).
  const publicKey = p.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(publicKey)) return { ok: false, reason: 'p= is not base64' };
  return { ok: true, value: { keyType: (tags.get('k') ?? 'rsa').toLowerCase(), publicKey } };
}

export interface DmarcRecord {
  policy: 'none' | 'quarantine' | 'reject';
  subdomainPolicy?: 'none' | 'quarantine' | 'reject';
  /** pct=, 100 unless given. */
  percent: number;
  /** rua= URIs: where aggregate reports go. */
  aggregateReports: string[];
}

const POLICIES = new Set(['none', 'quarantine', 'reject']);

/** A DMARC record (RFC 7489 §6.3, §6.4): v=DMARC1 first and a valid p=; unknown tags are ignored as §6.3 asks. */
export function parseDmarcRecord(text: string): Parsed<DmarcRecord> {
  const parsed = parseTagList(text);
  if (!parsed.ok) return parsed;
  const tags = parsed.value;
  if ([...tags.keys()][0] !== 'v' || tags.get('v') !== 'DMARC1') return { ok: false, reason: 'it must start with v=DMARC1' };
  const policy = tags.get('p');
  if (policy === undefined) return { ok: false, reason: 'there is no p= (policy) tag' };
  if (!POLICIES.has(policy.toLowerCase())) return { ok: false, reason: `p=${clip(policy)} is not none, quarantine or reject` };
  const sp = tags.get('sp');
  if (sp !== undefined && !POLICIES.has(sp.toLowerCase())) return { ok: false, reason: `sp=${clip(sp)} is not none, quarantine or reject` };
  for (const name of ['adkim', 'aspf']) {
    const value = tags.get(name);
    if (value !== undefined && !/^[rs]$/i.test(value)) return { ok: false, reason: `${name}=${clip(value)} is not r or s` };
  }
  const pct = tags.get('pct') ?? '100';
  if (!/^\d{1,3}$/.test(pct) || Number(pct) > 100) return { ok: false, reason: `pct=${clip(pct)} is not a number from 0 to 100` };
  const rua = tags.get('rua');
  const aggregateReports = rua === undefined || rua === '' ? [] : rua.split(',').map((uri) => uri.trim());
  const badUri = aggregateReports.find((uri) => !/^[a-z][a-z0-9+.-]*:\S+$/i.test(uri));
  if (badUri !== undefined) return { ok: false, reason: `rua= holds "${clip(badUri)}", which is not a URI (for example mailto:dmarc@example.net)` };
  return {
    ok: true,
    value: {
      policy: policy.toLowerCase() as DmarcRecord['policy'],
      subdomainPolicy: sp?.toLowerCase() as DmarcRecord['subdomainPolicy'],
      percent: Number(pct),
      aggregateReports,
    },
  };
}

/** A TLS-RPT record (RFC 8460 §3): v=TLSRPTv1 first, rua= with mailto: or https: URIs. */
export function parseTlsRptRecord(text: string): Parsed<{ reportTo: string[] }> {
  const parsed = parseTagList(text);
  if (!parsed.ok) return parsed;
  const tags = parsed.value;
  if ([...tags.keys()][0] !== 'v' || tags.get('v') !== 'TLSRPTv1') return { ok: false, reason: 'it must start with v=TLSRPTv1' };
  const rua = tags.get('rua');
  if (!rua) return { ok: false, reason: 'there is no rua= (where reports go) tag' };
  const reportTo = rua.split(',').map((uri) => uri.trim());
  const bad = reportTo.find((uri) => !/^(mailto|https):\S+$/i.test(uri));
  if (bad !== undefined) return { ok: false, reason: `rua= holds "${clip(bad)}": reports go to mailto: or https: URIs only` };
  return { ok: true, value: { reportTo } };
}

/** The TXT records of a name that are SPF records (RFC 7208 §4.5: "v=spf1" then a space or the end). */
export function spfRecords(texts: readonly string[]): string[] {
  return texts.filter((text) => /^v=spf1( |$)/i.test(text));
}

/**
 * The qualifier of the record's `all` mechanism ("+", "-", "~", "?"), or undefined when it has
 * none. A bare `all` means `+all` (RFC 7208 §4.6.2): anyone may send as the domain.
 */
export function spfAllQualifier(record: string): '+' | '-' | '~' | '?' | undefined {
  for (const term of record.split(/ +/).slice(1, MAX_TAGS + 1)) {
    const match = /^([+\-~?]?)all$/i.exec(term);
    if (match) return (match[1] || '+') as '+' | '-' | '~' | '?';
  }
  return undefined;
}

/** Untrusted text quoted in a message: short, printable. */
function clip(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}
