// What `popgate doctor` reports: one finding per check and subject, each with what was seen
// and, when something is wrong, what to do about it.

export type FindingStatus = 'ok' | 'warn' | 'fail' | 'skip';

/** Every check, in the order they run and print; `--only` takes these names. */
export const CHECKS = [
  'redis',
  'postgres',
  'sqlite',
  'storage',
  'queue',
  'listeners',
  'certificate',
  'address',
  'ptr',
  'mx',
  'spf',
  'dkim',
  'dmarc',
  'mta-sts',
  'tls-rpt',
  'clock',
] as const;

export type CheckName = (typeof CHECKS)[number];

export interface Finding {
  check: CheckName;
  status: FindingStatus;
  /** What was checked: a domain, an address, a listener, a file. */
  subject: string;
  /** What was found, in words. */
  message: string;
  /** What to do, for a warning or a failure. */
  fix?: string;
}

export const ok = (check: CheckName, subject: string, message: string): Finding => ({ check, status: 'ok', subject, message });
export const warn = (check: CheckName, subject: string, message: string, fix: string): Finding => ({ check, status: 'warn', subject, message, fix });
export const fail = (check: CheckName, subject: string, message: string, fix: string): Finding => ({ check, status: 'fail', subject, message, fix });
/** A check that could not or need not run here; it counts as passed. */
export const skip = (check: CheckName, subject: string, message: string): Finding => ({ check, status: 'skip', subject, message });

/**
 * For monitoring: 0 when every check passed (or was skipped), 1 when something deserves a
 * look (warnings), 2 when mail is, or soon will be, affected (failures).
 */
export function exitCodeOf(findings: readonly Finding[]): 0 | 1 | 2 {
  if (findings.some((f) => f.status === 'fail')) return 2;
  if (findings.some((f) => f.status === 'warn')) return 1;
  return 0;
}

const LABELS: Record<FindingStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' };

/** `ok    mx example.net: 10 mail.example.net (this server)`, `FAIL  spf example.net: …  (fix: …)`. */
export function formatFinding(finding: Finding): string {
  const fix = finding.fix ? `  (fix: ${finding.fix})` : '';
  return `${LABELS[finding.status].padEnd(4)}  ${finding.check} ${finding.subject}: ${finding.message}${fix}`;
}
