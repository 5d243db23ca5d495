// What an import did, told to the operator: a progress bar while it runs (only on a terminal),
// then a summary of users, messages and bytes, and every skipped thing with its reason.

export interface Skipped {
  /** The user (or alias, or file) it concerns. */
  subject: string;
  /** What was skipped: "user", "message <file>", "alias", ... */
  what: string;
  reason: string;
}

export class ImportReport {
  usersCreated = 0;
  usersExisting = 0;
  messagesImported = 0;
  messagesAlready = 0;
  messagesLinked = 0;
  bytes = 0;
  readonly skipped: Skipped[] = [];
  /** Things done differently from the plain case, worth knowing but not failures. */
  readonly notes: string[] = [];

  skip(subject: string, what: string, reason: string): void {
    this.skipped.push({ subject, what, reason });
  }

  /** The summary, one line each; `dryRun` words it as what would happen. */
  lines(dryRun: boolean, seconds: number): string[] {
    const would = dryRun ? 'would be ' : '';
    const rate = seconds > 0 ? `, ${Math.round(this.messagesImported / seconds)} messages/s` : '';
    const lines = [
      `users: ${this.usersCreated} ${would}created, ${this.usersExisting} already there`,
      `messages: ${this.messagesImported} ${would}imported (${formatBytes(this.bytes)}${this.messagesLinked > 0 ? `, ${this.messagesLinked} as hard links` : ''}), ${this.messagesAlready} imported before${dryRun ? '' : ` in ${seconds.toFixed(1)} s${rate}`}`,
    ];
    for (const note of this.notes) lines.push(`note: ${note}`);
    if (this.skipped.length > 0) lines.push(`skipped: ${this.skipped.length}`);
    for (const skipped of this.skipped) lines.push(`  ${skipped.subject}: ${skipped.what}: ${skipped.reason}`);
    return lines;
  }
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/** A one-line progress bar redrawn at most ten times a second; nothing unless `stream` is a terminal. */
export class ProgressBar {
  readonly #stream: NodeJS.WriteStream;
  readonly #enabled: boolean;
  #total = 0;
  #done = 0;
  #bytes = 0;
  #label = '';
  #drawnAt = 0;

  constructor(stream: NodeJS.WriteStream = process.stdout) {
    this.#stream = stream;
    this.#enabled = stream.isTTY === true;
  }

  start(total: number): void {
    this.#total = total;
    this.#draw(true);
  }

  /** Adds to the total (sources whose size is known only as they are reached). */
  grow(more: number): void {
    this.#total += more;
  }

  label(text: string): void {
    this.#label = text;
  }

  step(bytes: number): void {
    this.#done++;
    this.#bytes += bytes;
    this.#draw(false);
  }

  /** Clears the bar so the summary starts on a clean line. */
  finish(): void {
    if (this.#enabled && this.#drawnAt > 0) this.#stream.write('\r\x1b[K');
  }

  #draw(force: boolean): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (!force && now - this.#drawnAt < 100 && this.#done < this.#total) return;
    this.#drawnAt = now;
    const share = this.#total > 0 ? Math.min(1, this.#done / this.#total) : 0;
    const width = 30;
    const filled = Math.round(share * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.floor(share * 100)).padStart(3)}% ${this.#done}/${this.#total} messages ${formatBytes(this.#bytes)}`;
    const columns = this.#stream.columns ?? 80;
    this.#stream.write(`\r\x1b[K${`${bar} ${this.#label}`.slice(0, columns - 1)}`);
  }
}
