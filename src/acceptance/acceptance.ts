import { rfc5322Date } from '../mail/date.ts';
import type { Mailstore } from '../mailstore/store.ts';
import type { Logger } from '../log/logger.ts';
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

export class MessageAcceptance {
  readonly #hostname: string;
  readonly #mailstore: Mailstore;
  readonly #queue: MessageQueue;
  readonly #log: Logger;

  constructor(hostname: string, mailstore: Mailstore, queue: MessageQueue, log: Logger) {
    this.#hostname = hostname;
    this.#mailstore = mailstore;
    this.#queue = queue;
    this.#log = log;
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
   */
  async accept(message: IncomingMessage): Promise<string> {
    const id = Spool.newId();
    const received = message.trace ? [Buffer.from(this.#receivedHeader(id, message.trace))] : [];
    const traced = [...received, ...message.content];
    // Each mailbox's copy is Return-Path (RFC 5321 §4.4) plus this; a copy queued for later gets it then.
    const localContent = message.local ? [message.local.headers, ...received, ...message.local.content] : traced;
    const localCopy = [Buffer.from(`Return-Path: <${message.sender}>\r\n`), ...localContent];
    const mailboxes = [...new Set(message.mailboxes)];
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
    const [stored, remoteFailure] = await Promise.all([
      Promise.allSettled(mailboxes.map((mailbox) => this.#mailstore.deliver(mailbox, localCopy))),
      remote.length > 0 ? this.#queue.enqueue(envelope(id, remote), traced).then(() => undefined, (error: unknown) => ({ error })) : undefined,
    ]);
    const queued = remote.length > 0 && remoteFailure === undefined;
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
    if (remoteFailure === undefined && failed.length === 0) return id;
    if (remoteFailure === undefined && failed.length > 0) {
      const retryId = Spool.newId();
      try {
        await this.#queue.enqueue(envelope(retryId, failed), localContent);
        this.#log.warn(
          { event: 'local_delivery_queued', queueId: id, retryId, mailboxes: failed, err: firstError },
          'a mailbox could not take its copy now: queued for a later local delivery',
        );
        return id;
      } catch (error) {
        this.#log.error({ event: 'local_delivery_unqueued', queueId: id, mailboxes: failed, err: error }, 'cannot queue the copy a mailbox refused');
      }
    }
    await this.#takeBack(id, delivered, queued);
    throw firstError;
  }

  /** Removes the copies of a message that is being refused after all (best effort, logged). */
  async #takeBack(id: string, delivered: Map<string, string>, queued: boolean): Promise<void> {
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
    if (queued) work.push(this.#queue.discard(id));
    const results = await Promise.allSettled(work);
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
    if (errors.length > 0) {
      // A retry by the client will duplicate these copies: the operator should know which.
      this.#log.error({ event: 'take_back_failed', queueId: id, errors }, 'cannot take back every copy of a refused message');
    } else {
      this.#log.warn({ event: 'taken_back', queueId: id, mailboxes: [...delivered.keys()], queued }, 'copies of a refused message taken back');
    }
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
