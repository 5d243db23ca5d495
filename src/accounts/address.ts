import { domainToASCII } from 'node:url';

// RFC 5322 §3.2.3 dot-atom for local parts we create. Quoted local parts are not offered
// for new accounts: old clients and devices handle them badly, and they invite relay tricks.
const ATEXT = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+$/;

export function normalizeDomain(input: string): string | undefined {
  const trimmed = input.trim().replace(/\.$/, '');
  if (trimmed === '' || trimmed.length > 253) return undefined;
  const ascii = domainToASCII(trimmed.toLowerCase());
  if (!ascii) return undefined;
  const labels = ascii.split('.');
  if (labels.length < 2) return undefined;
  for (const label of labels) {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label)) return undefined;
  }
  return ascii;
}

export interface Address {
  local: string;
  domain: string;
  address: string;
}

/** Parses `local@domain`; local parts are compared case-insensitively, as customers expect. */
export function parseAddress(input: string): Address | undefined {
  const at = input.lastIndexOf('@');
  if (at <= 0) return undefined;
  const local = input.slice(0, at).toLowerCase();
  const domain = normalizeDomain(input.slice(at + 1));
  if (!domain || local.length > 64) return undefined;
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return undefined;
  if (!local.split('.').every((atom) => ATEXT.test(atom))) return undefined;
  return { local, domain, address: `${local}@${domain}` };
}

/** A login name as typed: a bare "alice" gets auth.default_domain when one is set. */
export function loginAddress(name: string, defaultDomain: string): string {
  const trimmed = name.trim();
  return !trimmed.includes('@') && defaultDomain !== '' ? `${trimmed}@${defaultDomain}` : trimmed;
}
