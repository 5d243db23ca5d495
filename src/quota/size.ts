// Mailbox sizes as operators write them: "500MB", "1GB", "2.5G", "1048576". Units are binary
// (1 KB = 1024 octets), as mail programs and most providers' customer pages count them.

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, KB: 1024, M: 1024 ** 2, MB: 1024 ** 2, G: 1024 ** 3, GB: 1024 ** 3, T: 1024 ** 4, TB: 1024 ** 4 };

/** Larger than any disk a mailbox lives on, and well inside a double's exact integers. */
export const MAX_QUOTA = 1024 ** 5;

/** Octets from "1GB"-style text, or a message saying what is wrong with it. */
export function parseSize(text: string): { ok: true; bytes: number } | { ok: false; reason: string } {
  const match = /^\s*(\d{1,15}(?:\.\d{1,6})?)\s*([a-z]{0,2})\s*$/i.exec(text);
  const unit = match ? UNITS[match[2].toUpperCase()] : undefined;
  if (!match || unit === undefined) return { ok: false, reason: `"${text.slice(0, 40)}" is not a size (for example "500MB", "1GB" or a number of octets)` };
  const bytes = Math.round(Number(match[1]) * unit);
  if (bytes < 1) return { ok: false, reason: `"${text}" is zero: a mailbox must hold something (use "none" for no limit)` };
  if (bytes > MAX_QUOTA) return { ok: false, reason: `"${text}" is larger than ${formatSize(MAX_QUOTA)}` };
  return { ok: true, bytes };
}

/** "1.5 GB", "300 KB", "12 B": short, for lists and login replies. */
export function formatSize(bytes: number): string {
  const steps: [number, string][] = [[1024 ** 4, 'TB'], [1024 ** 3, 'GB'], [1024 ** 2, 'MB'], [1024, 'KB']];
  for (const [size, unit] of steps) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))} ${unit}`;
  }
  return `${bytes} B`;
}

/** A quota as written in the config or on the command line: a size, or "none" (null: no limit). */
export function parseQuota(text: string): { ok: true; limit: number | null } | { ok: false; reason: string } {
  if (text.trim().toLowerCase() === 'none') return { ok: true, limit: null };
  const parsed = parseSize(text);
  return parsed.ok ? { ok: true, limit: parsed.bytes } : parsed;
}
