import { rfc5322Date } from '../mail/date.ts';
import type { Mailstore } from '../mailstore/store.ts';
import { Spool } from '../queue/spool.ts';
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

  constructor(hostname: string, mailstore: Mailstore, queue: MessageQueue) {
    this.#hostname = hostname;
    this.#mailstore = mailstore;
    this.#queue = queue;
  }

  /** Every copy durable (file and folder fsync'd) before it resolves to the message's queue id. */
  async accept(message: IncomingMessage): Promise<string> {
    const id = Spool.newId();
    const received = message.trace ? [Buffer.from(this.#receivedHeader(id, message.trace))] : [];
    const traced = [...received, ...message.content];
    const work: Promise<unknown>[] = [];
    const returnPath = Buffer.from(`Return-Path: <${message.sender}>\r\n`);
    const localCopy = message.local ? [returnPath, message.local.headers, ...received, ...message.local.content] : [returnPath, ...traced];
    for (const mailbox of message.mailboxes) work.push(this.#mailstore.deliver(mailbox, localCopy));
    const remote = [...message.remote];
    if (remote.length > 0) {
      work.push(
        this.#queue.enqueue(
          { id, from: message.sender, to: remote, receivedAt: Date.now(), clientIp: message.clientIp, authorizedUser: message.authorizedUser, signingDomain: message.signingDomain },
          traced,
        ),
      );
    }
    await Promise.all(work);
    return id;
  }

  /** RFC 5321 §4.4 trace, naming the relaying user so abuse reports reach an account. */
  #receivedHeader(id: string, trace: Trace): string {
    const auth = !trace.user
      ? ''
      : trace.user.by === 'login'
        ? `\r\n\t(authenticated as ${trace.user.address})`
        : `\r\n\t(authorized by POP-before-SMTP login of ${trace.user.address})`;
    const recipient = trace.recipients.length === 1 ? `\r\n\tfor <${trace.recipients[0]}>` : '';
    const helo = (trace.helo ?? 'unknown').replace(/[^\x21-\x7e]/g, '?');
    return `Received: from ${helo} ([${trace.ip}])\r\n\tby ${this.#hostname} (popgate) with ${trace.protocol} id ${id}${auth}${recipient};\r\n\t${rfc5322Date(new Date())}\r\n`;
  }
}
