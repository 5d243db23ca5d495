import { rfc5322Date } from '../mail/date.ts';
import type { Mailstore } from '../mailstore/store.ts';
import type { Logger } from '../log/logger.ts';
import type { Refusal } from '../policy/mail-policy.ts';
import { Spool, type Envelope } from '../queue/spool.ts';
import type { MessageQueue } from '../queue/store.ts';

// Taking responsibility for a message (RFC 5321 §6.1), the same way whoever hands it in: the
// SMTP server after DATA, and the delivery scheduler for mail it makes or delivers itself
// (bounces, a bounce to a local sender, an alias that forwards). A message gets a queue id
// and a trace header; every local mailbox gets its own copy with Return-Path (RFC 5321 §4.4),
// and the remote recipients one copy in the outbound queue. `accept` resolves only when all
// of it would survive a crash.

export interface Trace {
  /** The client's EHLO/HELO name as given (sanitized here). */
  helo: string | undefined;
  ip: string;
  /** RFC 3848 "with" keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA. */
  protocol: string;
  /** The user the client relays as, and how it was authorized. */
  user?: { address: string; by: 'login' | 'pop-before-smtp' };
  /** The relay network (smtp.relay_networks) the client relayed by, without a user. */
  network?: string;
  /** The recipients as given; named in the trace when there is one (RFC 5321 §4.4 "for"). */
  recipients: readonly string[];
}

export interface IncomingMessage {
  /** The envelope sender, "" for the null reverse-path. */
  sender: string;
  mailboxes: Iterable<string>;
  remote: Iterable<string>;
  /** Remote copies one of our addresses forwards (an alias, a forwarding rule): `by` is that address. */
  forwarded?: readonly { by: string; to: readonly string[] }[];
  /** The message as received (CRLF lines, unstuffed), in pieces. */
  content: readonly Buffer[];
  /** A Received: header is prepended when given. */
  trace?: Trace;
  /**
   * What local mailboxes get instead of `content` (the inbound filter's verdict): header
   * fields for the top of each local copy, and the message as filtered.
   */
  local?: { headers: Buffer; content: readonly Buffer[] };
  clientIp: string;
  /** Recorded with queued copies, so their delivery logs and sending limits name the user. */
  authorizedUser?: string;
  /** The From: domain the sender was checked for: the only one the queue may DKIM-sign for. */
  signingDomain?: string;
}

/**
 * Mailbox services (src/mailbox-services/): asked per local mailbox and per forwarding address
 * before anything is written, and told once every copy is durable.
 */
export interface MailboxServices {
  /** A refusal for this mailbox (over its quota), or undefined to deliver. */
  mailbox(mailbox: string, size: number): Promise<Refusal | undefined>;
  /** How a copy that `by` forwards leaves (SRS sender, Delivered-To:), or its refusal (a loop). */
  forward(sender: string, by: string, content: readonly Buffer[]): Promise<{ ok: true; sender: string; header: Buffer } | { ok: false; refusal: Refusal }>;
  /** After the copies are durable: reports of refused recipients to the sender, automatic replies. Never throws. */
  delivered(message: IncomingMessage, outcome: { id: string; mailboxes: readonly string[]; refused: readonly RefusedRecipient[] }, acceptance: MessageAcceptance): Promise<void>;
}

export interface RefusedRecipient {
  address: string;
  refusal: Refusal;
}

/** Every local destination of a message refused it (each full, say): nothing was written. */
export class RecipientsRefused extends Error {
  readonly refusal: Refusal;

  constructor(refused: readonly RefusedRecipient[]) {
    super(`refused: ${refused.map((r) => `${r.address} (${r.refusal.reason})`).join(', ')}`);
    // A temporary refusal among them is the answer: the client retries, and nothing was stored.
    this.refusal = (refused.find((r) => r.refusal.reason === 'mailbox-full' && !r.refusal.permanent) ?? refused[0]).refusal;
  }
}

export class MessageAcceptance {
  readonly #hostname: string;
  readonly #mailstore: Mailstore;
  readonly #queue: MessageQueue;
  readonly #log: Logger;
  readonly #services: MailboxServices | undefined;

  constructor(hostname: string, mailstore: Mailstore, queue: MessageQueue, log: Logger, services?: MailboxServices) {
    this.#hostname = hostname;
    this.#mailstore = mailstore;
    this.#queue = queue;
    this.#log = log;
    this.#services = services;
  }

  /**
   * Every copy durable (file and folder fsync'd) before it resolves to the message's queue id.
   *
   * A message is acknowledged once and stored once for every recipient, or refused with
   * nothing kept: RFC 5321 has one reply to DATA, and a client told 451 sends the whole message
   * again, so copies kept from a refused attempt would be duplicates. Hence, when one mailbox
   * fails after others succeeded, its copy is queued for a later local delivery (the queue
   * retries, and bounces in the end like any other delivery) and the message is accepted; only
   * if that cannot be queued either, or the remote copy could not be queued, is every copy
   * taken back and the error passed on (the client gets 451).
   *
   * A destination the mailbox services refuse (a full mailbox, a forwarding loop) gets no copy:
   * when every destination refuses, nothing is written and RecipientsRefused is thrown (the
   * client is told); otherwise the others get the message and the sender is told afterwards
   * which recipients did not (a temporary refusal among accepted ones is delivered anyway, so
   * a retry never duplicates the message for the others).
   */
  async accept(message: IncomingMessage): Promise<string> {
    const id = Spool.newId();
    const received = message.trace ? [Buffer.from(this.#receivedHeader(id, message.trace))] : [];
    const traced = [...received, ...message.content];
    // Each mailbox's copy is Return-Path (RFC 5321 §4.4) plus this; a copy queued for later gets it then.
    const localContent = message.local ? [message.local.headers, ...received, ...message.local.content] : traced;
    const localCopy = [Buffer.from(`Return-Path: <${message.sender}>\r\n`), ...localContent];
    const plan = await this.#plan(message, traced);
    const mailboxes = [...new Set(plan.mailboxes)];
    const remote = [...message.remote];
    const envelope = (queueId: string, to: string[]): Envelope => ({
      id: queueId,
      from: message.sender,
      to,
      receivedAt: Date.now(),
      clientIp: message.clientIp,
      authorizedUser: message.authorizedUser,
      signingDomain: message.signingDomain,
    });
    // Remote copies: the relayed recipients under the message's id, and each forwarding
    // address's copy as an entry of its own (its sender and header differ).
    const outbound: { id: string; envelope: Envelope; content: Buffer[] }[] = [];
    if (remote.length > 0) outbound.push({ id, envelope: envelope(id, remote), content: traced });
    for (const forward of plan.forwards) {
      const forwardId = outbound.length === 0 ? id : Spool.newId();
      outbound.push({ id: forwardId, envelope: { ...envelope(forwardId, [...forward.to]), from: forward.sender }, content: [forward.header, ...traced] });
    }
    const [stored, queuing] = await Promise.all([
      Promise.allSettled(mailboxes.map((mailbox) => this.#mailstore.deliver(mailbox, localCopy))),
      Promise.allSettled(outbound.map((entry) => this.#queue.enqueue(entry.envelope, entry.content))),
    ]);
    const queued = outbound.filter((_, i) => queuing[i].status === 'fulfilled').map((entry) => entry.id);
    const queueFailure = queuing.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    const remoteFailure = queueFailure && { error: queueFailure.reason as unknown };
    const delivered = new Map<string, string>();
    const failed: string[] = [];
    let firstError: unknown = remoteFailure?.error;
    stored.forEach((result, i) => {
      if (result.status === 'fulfilled') delivered.set(mailboxes[i], result.value);
      else {
        failed.push(mailboxes[i]);
        firstError ??= result.reason;
      }
    });
    const done = async () => {
      await this.#services?.delivered({ ...message, content: traced }, { id, mailboxes: [...delivered.keys()], refused: plan.refused }, this);
      return id;
    };
    if (remoteFailure === undefined && failed.length === 0) return done();
    if (remoteFailure === undefined && failed.length > 0) {
      const retryId = Spool.newId();
      try {
        await this.#queue.enqueue(envelope(retryId, failed), localContent);
        this.#log.warn(
          { event: 'local_delivery_queued', queueId: id, retryId, mailboxes: failed, err: firstError },
          'a mailbox could not take its copy now: queued for a later local delivery',
        );
        return done();
      } catch (error) {
        this.#log.error({ event: 'local_delivery_unqueued', queueId: id, mailboxes: failed, err: error }, 'cannot queue the copy a mailbox refused');
      }
    }
    await this.#takeBack(id, delivered, queued);
    throw firstError;
  }

  /** Removes the copies of a message that is being refused after all (best effort, logged). */
  async #takeBack(id: string, delivered: Map<string, string>, queued: readonly string[]): Promise<void> {
    const work: Promise<unknown>[] = [];
    for (const [mailbox, name] of delivered) {
      work.push(
        (async () => {
          // The unique name is the message's UIDL (src/mailstore/maildir.ts); found by listing,
          // since a POP3 login may have moved it from new/ to cur/ meanwhile.
          const uidl = name.split(',')[0];
          const copy = (await this.#mailstore.list(mailbox)).filter((m) => m.uidl === uidl);
          const { failed } = await this.#mailstore.remove(mailbox, copy);
          if (failed.length > 0) throw new Error(`cannot remove ${failed.map((m) => m.ref).join(', ')}`);
        })(),
      );
    }
    for (const queuedId of queued) work.push(this.#queue.discard(queuedId));
    const results = await Promise.allSettled(work);
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
    if (errors.length > 0) {
      // A retry by the client will duplicate these copies: the operator should know which.
      this.#log.error({ event: 'take_back_failed', queueId: id, errors }, 'cannot take back every copy of a refused message');
    } else {
      this.#log.warn({ event: 'taken_back', queueId: id, mailboxes: [...delivered.keys()], queued }, 'copies of a refused message taken back');
    }
  }

  /** What the mailbox services allow: the mailboxes and forwards to write, and who refused. */
  async #plan(message: IncomingMessage, content: readonly Buffer[]) {
    const mailboxes = [...message.mailboxes];
    const forwards: { sender: string; header: Buffer; to: readonly string[] }[] = [];
    const services = this.#services;
    if (!services) {
      for (const forward of message.forwarded ?? []) forwards.push({ sender: message.sender, header: Buffer.alloc(0), to: forward.to });
      return { mailboxes, forwards, refused: [] as RefusedRecipient[] };
    }
    let size = 0;
    for (const piece of content) size += piece.length;
    const refused: RefusedRecipient[] = [];
    const allowed: string[] = [];
    const temporarilyRefused: string[] = [];
    for (const mailbox of mailboxes) {
      const refusal = await services.mailbox(mailbox, size);
      if (!refusal) allowed.push(mailbox);
      else {
        refused.push({ address: mailbox, refusal });
        if (refusal.reason === 'mailbox-full' && !refusal.permanent) temporarilyRefused.push(mailbox);
      }
    }
    for (const forward of message.forwarded ?? []) {
      const decision = await services.forward(message.sender, forward.by, content);
      if (decision.ok) forwards.push({ sender: decision.sender, header: decision.header, to: forward.to });
      else refused.push({ address: forward.by, refusal: decision.refusal });
    }
    const accepted = allowed.length + forwards.length + [...message.remote].length;
    if (refused.length > 0 && accepted === 0) throw new RecipientsRefused(refused);
    // Others took it: a retry would duplicate it for them, so a soft quota lets it in.
    const stillRefused = refused.filter((r) => !temporarilyRefused.includes(r.address));
    return { mailboxes: [...allowed, ...temporarilyRefused], forwards, refused: stillRefused };
  }

  /** RFC 5321 §4.4 trace, naming the relaying user so abuse reports reach an account. */
  #receivedHeader(id: string, trace: Trace): string {
    const auth = trace.user
      ? trace.user.by === 'login'
        ? `\r\n\t(authenticated as ${trace.user.address})`
        : `\r\n\t(authorized by POP-before-SMTP login of ${trace.user.address})`
      : trace.network
        ? `\r\n\t(relay allowed for network ${trace.network})`
        : '';
    const recipient = trace.recipients.length === 1 ? `\r\n\tfor <${trace.recipients[0]}>` : '';
    const helo = (trace.helo ?? 'unknown').replace(/[^\x21-\x7e]/g, '?');
    return `Received: from ${helo} ([${trace.ip}])\r\n\tby ${this.#hostname} (popgate) with ${trace.protocol} id ${id}${auth}${recipient};\r\n\t${rfc5322Date(new Date())}\r\n`;
  }
}
