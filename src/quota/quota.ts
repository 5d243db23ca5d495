import type { Logger } from '../log/logger.ts';
import { rfc5322Date } from '../mail/date.ts';
import { randomHex } from '../mail/random.ts';
import type { Mailstore, RemoveResult, StoredMessage } from '../mailstore/store.ts';
import { formatSize } from './size.ts';
import type { QuotaLimit, QuotaStore } from './store.ts';

// Mailbox quotas: the limit that applies to a mailbox (the user's own, else its domain's,
// else [quota] default), the decision for a message of a given size, and the usage counter
// kept by every delivery and deletion (QuotaTrackingMailstore below wraps the mailstore, so
// SMTP, the queue, POP3 and the CLI all move it without knowing). A mailbox without a counter
// is counted from its folder once. A warning is delivered once when usage passes the warning
// mark, and again only after it went below.

export interface QuotaSettings {
  /** The server's default limit in octets; null: none. */
  defaultLimit: QuotaLimit;
  /** A full mailbox is a temporary refusal (452 4.2.2) rather than a permanent one (552 5.2.2). */
  soft: boolean;
  /** Percent of the limit at which the warning goes out; 0: never. */
  warningPercent: number;
  /** Names the warning's sender (postmaster@hostname). */
  hostname: string;
}

export type QuotaDecision = { ok: true } | { ok: false; permanent: boolean; used: number; limit: number };

export interface QuotaStatus {
  used: number;
  /** null: no limit. */
  limit: QuotaLimit;
}

/**
 * How long a mailbox's limit and usage, once read or moved here, answer checks without asking
 * the store. A message is checked at RCPT and again after DATA, and a busy mailbox takes several
 * a second: measured on SQLite, the four reads were about half of what quotas cost per message. Another
 * process's change (a limit set with the CLI, a delivery by another worker or node) is seen
 * within this time; the counters themselves are always moved in the store.
 */
const RECENT_MS = 1000;
/** Mailboxes remembered at most (then all are forgotten at once: a cache, not a copy). */
const RECENT_MAX = 10_000;

/** Values read a moment ago, per mailbox. */
class Recent<Value> {
  readonly #entries = new Map<string, { value: Value; at: number }>();

  get(key: string, now: number): Value | undefined {
    const entry = this.#entries.get(key);
    return entry && now - entry.at < RECENT_MS ? entry.value : undefined;
  }

  set(key: string, value: Value, now: number): void {
    if (this.#entries.size >= RECENT_MAX) this.#entries.clear();
    this.#entries.set(key, { value, at: now });
  }

  forget(key?: string): void {
    if (key === undefined) this.#entries.clear();
    else this.#entries.delete(key);
  }
}

export class MailboxQuotas {
  readonly #store: QuotaStore;
  /** The mailstore underneath the tracking one: counting a folder, delivering the warning. */
  readonly #mailstore: Mailstore;
  readonly #settings: QuotaSettings;
  readonly #log: Logger;
  /** Mailboxes whose counter missed a move (the store was away): counted again before use. */
  readonly #stale = new Set<string>();
  readonly #limits = new Recent<QuotaLimit>();
  readonly #usage = new Recent<number>();

  constructor(store: QuotaStore, mailstore: Mailstore, settings: QuotaSettings, log: Logger) {
    this.#store = store;
    this.#mailstore = mailstore;
    this.#settings = settings;
    this.#log = log;
  }

  /** The limit that applies to a mailbox: its own, its domain's, or the server's; null: none. */
  async limit(address: string): Promise<QuotaLimit> {
    const now = Date.now();
    const recent = this.#limits.get(address, now);
    if (recent !== undefined) return recent;
    const set = await this.#store.limits(address, address.slice(address.lastIndexOf('@') + 1));
    const limit = set.user !== undefined ? set.user : set.domain !== undefined ? set.domain : this.#settings.defaultLimit;
    this.#limits.set(address, limit, now);
    return limit;
  }

  /** Sets (or with undefined removes) the limit of an address or a domain; this process sees it at once. */
  async setLimit(subject: string, limit: QuotaLimit | undefined): Promise<void> {
    await this.#store.setLimit(subject, limit);
    this.#limits.forget();
  }

  /** Forgets a mailbox's counter and own limit (its account was removed). */
  async forget(address: string): Promise<void> {
    await this.#store.forget(address);
    this.#usage.forget(address);
    this.#limits.forget(address);
  }

  /** Octets in the mailbox, from its counter (counted from the folder when it has none). */
  async used(address: string): Promise<number> {
    if (this.#stale.has(address)) return this.recount(address);
    const now = Date.now();
    const recent = this.#usage.get(address, now);
    if (recent !== undefined) return recent;
    const usage = await this.#store.usage(address);
    if (!usage) return this.#count(address, true);
    this.#usage.set(address, usage.used, now);
    return usage.used;
  }

  async status(address: string): Promise<QuotaStatus> {
    const [used, limit] = await Promise.all([this.used(address), this.limit(address)]);
    return { used, limit };
  }

  /** Whether `size` more octets fit. A mailbox without a limit is not even counted here. */
  async check(address: string, size: number): Promise<QuotaDecision> {
    const limit = await this.limit(address);
    if (limit === null) return { ok: true };
    const used = await this.used(address);
    // A mailbox exactly full takes nothing more, not even a message of unknown size (0).
    if (used + Math.max(size, 1) <= limit) return { ok: true };
    return { ok: false, permanent: !this.#settings.soft, used, limit };
  }

  /** Counts the folder and sets the counter from it, whatever it said before. */
  async recount(address: string): Promise<number> {
    const used = await this.#count(address, false);
    this.#stale.delete(address);
    return used;
  }

  async #count(address: string, onlyIfMissing: boolean): Promise<number> {
    let used = 0;
    if (this.#mailstore.usage) used = await this.#mailstore.usage(address);
    else for (const message of await this.#mailstore.list(address)) used += message.size;
    return this.#remember(address, await this.#store.setUsage(address, used, onlyIfMissing));
  }

  #remember(address: string, used: number): number {
    this.#usage.set(address, used, Date.now());
    return used;
  }

  /** A message of `size` octets is in the mailbox: count it, and warn when it passed the mark. */
  async added(address: string, size: number): Promise<void> {
    try {
      const moved = this.#stale.has(address) ? undefined : await this.#store.add(address, size);
      const used = moved === undefined ? await this.recount(address) : this.#remember(address, moved);
      const limit = this.#settings.warningPercent > 0 ? await this.limit(address) : null;
      if (limit !== null && used * 100 >= limit * this.#settings.warningPercent && (await this.#store.claimWarning(address))) {
        await this.#warn(address, used, limit);
      }
    } catch (error) {
      this.#missed(address, error);
    }
  }

  /** Octets left the mailbox (POP3 deletions): count them, and allow a new warning below the mark. */
  async removed(address: string, size: number): Promise<void> {
    try {
      const moved = this.#stale.has(address) ? undefined : await this.#store.add(address, -size);
      const used = moved === undefined ? await this.recount(address) : this.#remember(address, moved);
      const limit = this.#settings.warningPercent > 0 ? await this.limit(address) : null;
      if (limit === null || used * 100 < limit * this.#settings.warningPercent) await this.#store.clearWarning(address);
    } catch (error) {
      this.#missed(address, error);
    }
  }

  /** The message is stored whatever the counter says; the counter is redone once the store answers. */
  #missed(address: string, error: unknown): void {
    this.#stale.add(address);
    this.#usage.forget(address);
    this.#log.warn({ event: 'quota_count_failed', address, err: error }, 'mailbox usage not counted: it is counted again from the folder at its next use');
  }

  async #warn(address: string, used: number, limit: number): Promise<void> {
    const percent = Math.floor((used * 100) / limit);
    const text = [
      `Return-Path: <>`,
      `From: Mail System <postmaster@${this.#settings.hostname}>`,
      `To: <${address}>`,
      `Subject: Your mailbox is ${percent}% full`,
      `Date: ${rfc5322Date(new Date())}`,
      `Message-ID: <quota.${randomHex(8)}@${this.#settings.hostname}>`,
      // RFC 3834 §5: made by a program, so no auto-responder answers it.
      'Auto-Submitted: auto-generated',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      '',
      `Your mailbox ${address} holds ${formatSize(used)} of the ${formatSize(limit)} it may hold (${percent}%).`,
      '',
      'When it is full, new mail to you is refused and returned to its senders.',
      'Download your mail and have your mail program delete it from the server',
      '(turn off "leave a copy on the server"), or delete messages you no longer need.',
      '',
    ].join('\r\n');
    const message = Buffer.from(text);
    await this.#mailstore.deliver(address, message);
    const withWarning = await this.#store.add(address, message.length);
    if (withWarning !== undefined) this.#remember(address, withWarning);
    this.#log.info({ event: 'quota_warning', address, used, limit }, 'mailbox passed the warning mark: its owner was told');
  }
}

/**
 * The mailstore with usage counting: every delivery and deletion, whoever makes it, moves the
 * mailbox's counter after it succeeded. A counter that cannot be moved never fails the
 * delivery or the deletion (the mail is already stored or gone).
 */
export class QuotaTrackingMailstore implements Mailstore {
  readonly #inner: Mailstore;
  readonly #quotas: MailboxQuotas;
  readonly readInto: Mailstore['readInto'];

  constructor(inner: Mailstore, quotas: MailboxQuotas) {
    this.#inner = inner;
    this.#quotas = quotas;
    this.readInto = inner.readInto?.bind(inner);
  }

  /** The store beneath, for what writes mail files itself (popgate import), which then recounts. */
  get inner(): Mailstore {
    return this.#inner;
  }

  async deliver(address: string, message: Buffer | Buffer[]): Promise<string> {
    const id = await this.#inner.deliver(address, message);
    await this.#quotas.added(address, crlfSize(Array.isArray(message) ? message : [message]));
    return id;
  }

  list(address: string): Promise<StoredMessage[]> {
    return this.#inner.list(address);
  }

  read(message: StoredMessage): AsyncIterable<Buffer> {
    return this.#inner.read(message);
  }

  async remove(address: string, messages: StoredMessage[]): Promise<RemoveResult> {
    const result = await this.#inner.remove(address, messages);
    let size = 0;
    for (const message of messages) size += message.size;
    for (const message of result.failed) size -= message.size;
    if (size > 0) await this.#quotas.removed(address, size);
    return result;
  }

  create(address: string): Promise<string> {
    return this.#inner.create(address);
  }

  location(address: string): string {
    return this.#inner.location(address);
  }

  limit(address: string): Promise<number | null> {
    return this.#quotas.limit(address);
  }
}

/** The size POP3 will report (every line end CRLF), as the folder count has it. */
export function crlfSize(pieces: readonly Buffer[]): number {
  let size = 0;
  let previous = 0;
  for (const piece of pieces) {
    size += piece.length;
    for (let at = piece.indexOf(0x0a); at !== -1; at = piece.indexOf(0x0a, at + 1)) {
      const before = at > 0 ? piece[at - 1] : previous;
      if (before !== 0x0d) size++;
    }
    if (piece.length > 0) previous = piece[piece.length - 1];
  }
  return size;
}
