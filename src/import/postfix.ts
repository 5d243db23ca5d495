import { parseAddress } from '../accounts/address.ts';
import { normalizeDomain } from '../accounts/address.ts';
import { refusal } from '../accounts/checks.ts';
import { AccountError, type AccountStore } from '../accounts/store.ts';
import type { ImportReport } from './report.ts';

// `popgate import postfix-virtual`: domains and aliases from Postfix's text lookup tables
// (postconf(5) virtual_alias_maps, virtual_mailbox_domains, virtual_alias_domains; the table
// format of postmap(1)): "pattern result" per logical line; a line starting with white space
// continues the one before; empty lines and lines whose first non-space character is "#" are
// skipped. A pattern user@domain is an alias to the result's addresses (separated by commas
// and/or spaces); a pattern that is a domain name declares a domain (its result is ignored, as
// Postfix does for virtual_*_domains). @domain catch-alls and bare local parts have no place in
// popgate's directory: they are reported as skipped, with the reason.

export const POSTFIX_LIMITS = { bytes: 64 * 1024 * 1024, lineLength: 65536, targets: 1000 };

export class PostfixMapError extends Error {}

export interface PostfixEntry {
  pattern: string;
  result: string;
  file: string;
  line: number;
}

export function parsePostfixMap(text: string, file: string): PostfixEntry[] {
  if (text.length > POSTFIX_LIMITS.bytes) throw new PostfixMapError(`${file} is larger than ${POSTFIX_LIMITS.bytes} bytes`);
  const entries: PostfixEntry[] = [];
  let current: { text: string; line: number } | undefined;
  const finish = () => {
    if (!current) return;
    const match = /^(\S+)(?:\s+([\s\S]*))?$/.exec(current.text.trim());
    if (match) entries.push({ pattern: match[1], result: (match[2] ?? '').trim(), file, line: current.line });
    current = undefined;
  };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    if (/^\s/.test(line) && current) {
      current.text += ` ${line.trim()}`;
    } else {
      finish();
      current = { text: line, line: i + 1 };
    }
    if (current && current.text.length > POSTFIX_LIMITS.lineLength) throw new PostfixMapError(`${file} line ${current.line}: a logical line longer than ${POSTFIX_LIMITS.lineLength} characters`);
  }
  finish();
  return entries;
}

/** Adds the domains, then the aliases, of the maps' entries; what cannot be taken over is reported as skipped. */
export async function importPostfixMaps(entries: PostfixEntry[], accounts: AccountStore, report: ImportReport, dryRun: boolean): Promise<{ domains: number; aliases: number }> {
  const counts = { domains: 0, aliases: 0 };
  const where = (entry: PostfixEntry) => `${entry.file} line ${entry.line}`;
  const declared = new Set<string>();
  const aliases: { entry: PostfixEntry; alias: string; targets: string[] }[] = [];
  for (const entry of entries) {
    const { pattern } = entry;
    if (pattern.startsWith('/')) {
      report.skip(pattern, 'entry', `${where(entry)}: a regular expression (regexp: and pcre: tables are not read): add what it means by hand`);
    } else if (pattern.startsWith('@')) {
      report.skip(pattern, 'catch-all', `${where(entry)}: popgate has no catch-all addresses (mail to unknown users is refused at RCPT time); create the addresses that should receive mail as aliases`);
    } else if (!pattern.includes('@')) {
      const domain = normalizeDomain(pattern);
      if (domain) declared.add(domain);
      else report.skip(pattern, 'entry', `${where(entry)}: a bare local part (it applies to $myorigin, which popgate does not have): write it as ${pattern}@<domain>`);
    } else {
      const address = parseAddress(pattern);
      if (!address) {
        report.skip(pattern, 'alias', `${where(entry)}: not a valid address`);
        continue;
      }
      const targets: string[] = [];
      for (const target of entry.result.split(/[\s,]+/).filter(Boolean)) {
        const parsed = parseAddress(target);
        if (parsed) targets.push(parsed.address);
        else report.skip(pattern, `target ${target}`, `${where(entry)}: not an address of the form user@domain (local delivery targets and commands are not taken over)`);
      }
      if (targets.length > POSTFIX_LIMITS.targets) report.skip(address.address, 'alias', `${where(entry)}: more than ${POSTFIX_LIMITS.targets} targets`);
      else if (targets.length === 0) report.skip(address.address, 'alias', `${where(entry)}: no target left to forward to`);
      else aliases.push({ entry, alias: address.address, targets: [...new Set(targets)] });
    }
  }
  for (const domain of declared) {
    if (await accounts.isLocalDomain(domain)) continue;
    if (!dryRun) await accounts.addDomain(domain);
    counts.domains++;
  }
  for (const { entry, alias, targets } of aliases) {
    const domain = alias.slice(alias.indexOf('@') + 1);
    if (!declared.has(domain) && !(await accounts.isLocalDomain(domain))) {
      report.skip(alias, 'alias', `${where(entry)}: ${domain} is not a popgate domain (list it in a virtual_mailbox_domains file given here, or popgate domain add ${domain})`);
      continue;
    }
    // The store's own refusals, checked first so a dry run reports them too.
    const refused = (await accounts.getUser(alias)) ? refusal.aliasIsUser(alias) : targets.includes(alias) ? refusal.aliasToItself(alias) : undefined;
    if (refused) {
      report.skip(alias, 'alias', `${where(entry)}: ${refused.message}`);
      continue;
    }
    try {
      if (!dryRun) await accounts.addAlias(alias, targets);
      counts.aliases++;
    } catch (error) {
      if (!(error instanceof AccountError)) throw error;
      report.skip(alias, 'alias', `${where(entry)}: ${error.message}`);
    }
  }
  return counts;
}
