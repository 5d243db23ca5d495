/** RFC 5322 §3.3 date-time in UTC, e.g. "Sat, 28 Nov 2026 13:36:28 +0000". */
export function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}
