import { RecipientsRefused, type MessageAcceptance } from '../acceptance/acceptance.ts';
import type { LoginOutcome, LoginService } from '../auth/login.ts';
import { SASL_MECHANISMS, SaslExchange, type SaslStep } from '../auth/sasl.ts';
import type { FilterClient, InboundFilter, MessageContext } from '../filter/filter.ts';
import type { LineConnection, LineSession } from '../net/line-connection.ts';
import type { MailPolicy, Refusal } from '../policy/mail-policy.ts';
import type { SendLimits } from '../policy/send-limits.ts';
import { headerSection, parseHeaderFrom } from '../dkim/header-from.ts';
import { DataReader } from './data-reader.ts';
import type { FreeSpace } from './free-space.ts';
import type { IncomingBodies, IncomingBody } from './incoming-body.ts';
import { filterReply, format, formatLines, refusalReply, Replies, sendLimitReply, type Reply } from './replies.ts';

// One SMTP session (RFC 5321), top to bottom: greeting, EHLO/HELO, an optional STARTTLS
// (RFC 3207) and AUTH (RFC 4954), then transactions of MAIL, RCPT and DATA. The connection
// (src/net/line-connection.ts) hands it one command at a time in arrival order, which makes
// PIPELINING (RFC 2920) safe; every reply carries an RFC 3463 enhanced status code (RFC 2034).
// Policy decides (MailPolicy, SendLimits); the message-acceptance service stores.

/** Which port role a listener serves: 25, 587 (STARTTLS, RFC 6409) or 465 (implicit TLS, RFC 8314). */
export type SmtpRole = 'smtp' | 'submission' | 'submissions';

/** What an SMTP session may use: its settings, policy, the login path and acceptance. Not its server. */
export interface SmtpContext {
  hostname: string;
  role: SmtpRole;
  maxMessageSize: number;
  maxRecipients: number;
  /** Offer AUTH on the port 25 role too (off: port 25 is for MX traffic and POP before SMTP). */
  authOnPort25: boolean;
  /** A POP-before-SMTP grant also lets a client relay on submission (devices that cannot AUTH). */
  popBeforeSmtpOnSubmission: boolean;
  policy: MailPolicy;
  login: LoginService;
  acceptance: MessageAcceptance;
  /** Sending limits per user for relayed mail; absent: none. */
  sendLimits?: SendLimits;
  /**
   * Filtering: of mail for local mailboxes on the port 25 role (blocklists, greylisting, sender
   * authentication, spam), and of relayed mail on every role when configured (rspamd).
   */
  filter?: InboundFilter;
  /** Where message bodies go while DATA comes in (memory up to a budget, then files). */
  bodies: IncomingBodies;
  /** Whether data_dir is too full to take mail (452 4.3.1 at MAIL, RCPT and DATA). */
  freeSpace: FreeSpace;
}

interface Transaction {
  sender: string;
  relayUser?: string;
  /** The relay network (smtp.relay_networks) the client relays by, without a user. */
  relayNetwork?: string;
  /** The relay right comes from SMTP AUTH (not a POP-before-SMTP grant). */
  authenticated: boolean;
  relayRefusal?: Refusal;
  /** Local mailboxes, deduplicated across recipients. */
  mailboxes: Set<string>;
  /** Remote addresses relayed for the client, deduplicated. */
  remote: Set<string>;
  /** Remote addresses our recipients forward to, by recipient (each copy gets an SRS sender). */
  forwarded: { by: string; to: string[] }[];
  /** MAIL FROM SIZE= (RFC 1870), checked against quotas at RCPT. */
  declaredSize?: number;
  /** The RCPT addresses as given, for Received "for" and logs. */
  recipients: string[];
  relayedRecipients: string[];
}

/** Known verbs answered 502 (RFC 5321 §4.2.4) rather than "not recognized". */
const NOT_IMPLEMENTED = new Set(['BDAT', 'EXPN', 'ETRN', 'TURN']);

export class SmtpSession implements LineSession {
  readonly #conn: LineConnection;
  readonly #context: SmtpContext;

  #helo: string | undefined;
  #esmtp = false;
  /** The account logged in with AUTH (RFC 4954), if any. */
  #authUser: string | undefined;
  /** Set while an AUTH exchange waits for the client's next line (RFC 4954 §4). */
  #sasl: SaslExchange | undefined;
  #transaction: Transaction | undefined;
  /** What the inbound filter knows of this client (its DNS list answers), on port 25. */
  #client: FilterClient | undefined;
  /** The message being received, if DATA is under way: freed however the session ends. */
  #body: IncomingBody | undefined;

  constructor(connection: LineConnection, context: SmtpContext) {
    this.#conn = connection;
    this.#context = context;
  }

  /** The filter of inbound mail: port 25 only (submission is for customers). */
  get #inbound(): InboundFilter | undefined {
    return this.#context.role === 'smtp' ? this.#context.filter : undefined;
  }

  greet(): void | Promise<void> {
    const filter = this.#inbound;
    if (filter) this.#client = filter.client(this.#conn.ip);
    if (!filter || filter.pregreetDelayMs <= 0) return this.#reply(Replies.greeting(this.#context.hostname));
    return this.#pregreet(filter);
  }

  /**
   * postscreen's pregreet test: a real mail server waits for the greeting before it speaks;
   * spam software often does not. Port 25 only, and only when configured.
   */
  async #pregreet(filter: InboundFilter): Promise<void> {
    await this.#conn.sleep(filter.pregreetDelayMs);
    if (this.#conn.isClosed) return;
    if (this.#conn.hasUnreadInput) {
      const decision = filter.earlyTalker(this.#client!);
      if (!decision.ok) return this.#conn.abort(format(filterReply(decision.refusal)));
    }
    this.#reply(Replies.greeting(this.#context.hostname));
  }

  /** The filter's view of a transaction: who sends, to which local mailboxes, and whether it is exempt. */
  #filterContext(transaction: Transaction, filter: InboundFilter): MessageContext {
    return {
      client: this.#client ?? { ip: this.#conn.ip },
      helo: this.#helo ?? '',
      sender: transaction.sender,
      recipients: [...transaction.mailboxes],
      // Grant holders, SMTP AUTH users and trusted networks are never filtered.
      exempt: transaction.relayUser !== undefined || filter.isTrusted(this.#conn.ip),
      user: transaction.relayUser,
    };
  }

  #reply(reply: Reply): void {
    this.#conn.reply(format(reply));
  }

  /** A client mistake: counted, slowed down, and after too many the connection is closed. */
  #error(reply: Reply): Promise<void> {
    return this.#conn.error(format(reply));
  }

  /** Each verb's handler, given the argument text after the verb; one table for every session. */
  static readonly #commands: Record<string, (session: SmtpSession, argument: string) => void | Promise<void>> = {
    EHLO: (session, argument) => session.#hello(argument, true),
    HELO: (session, argument) => session.#hello(argument, false),
    STARTTLS: (session, argument) => session.#startTls(argument),
    AUTH: (session, argument) => session.#auth(argument),
    MAIL: (session, argument) => session.#mail(argument),
    RCPT: (session, argument) => session.#rcpt(argument),
    DATA: (session, argument) => session.#dataCommand(argument),
    RSET: (session) => {
      session.#transaction = undefined;
      session.#reply(Replies.reset);
    },
    NOOP: (session) => session.#reply(Replies.ok),
    VRFY: (session) => session.#reply(Replies.cannotVerify),
    HELP: (session) => session.#reply(Replies.help),
    QUIT: (session) => {
      session.#reply(Replies.closing(session.#context.hostname));
      session.#conn.end();
    },
  };

  command(line: string): void | Promise<void> {
    if (this.#sasl) return this.#saslStep(this.#sasl.respond(line));
    if (line.includes('\0')) return this.#error(Replies.invalidCharacters);
    const space = line.indexOf(' ');
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const handler = Object.hasOwn(SmtpSession.#commands, verb) ? SmtpSession.#commands[verb] : undefined;
    if (handler) return handler(this, space === -1 ? '' : line.slice(space + 1).trim());
    if (NOT_IMPLEMENTED.has(verb)) return this.#error(Replies.notImplemented(verb));
    // An HTTP request or similar garbage is not an SMTP client.
    if (/^(GET|POST|HEAD|PUT|CONNECT|OPTIONS)$/.test(verb)) {
      this.#conn.log.info({ event: 'http_on_smtp' }, 'HTTP request on the SMTP port');
      return this.#conn.abort(format(Replies.notWeb));
    }
    return this.#error(Replies.unknownCommand);
  }

  // --- greeting and TLS ---

  #hello(argument: string, extended: boolean): void | Promise<void> {
    if (argument === '' || /[\s<>]/.test(argument) || argument.length > 255) return this.#error(Replies.helloSyntax(extended ? 'EHLO' : 'HELO'));
    this.#helo = argument;
    this.#esmtp = extended;
    this.#transaction = undefined; // RFC 5321 §4.1.4: EHLO resets the transaction
    const hello = Replies.hello(this.#context.hostname, argument, this.#conn.ip);
    if (!extended) return this.#reply(hello);
    const lines = [hello.text, 'PIPELINING', `SIZE ${this.#context.maxMessageSize}`, '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES'];
    if (!this.#conn.secure && this.#conn.tlsAvailable) lines.push('STARTTLS');
    if (this.#authOffered() && this.#context.login.plaintextAllowed(this.#conn) && !this.#authUser) lines.push(`AUTH ${SASL_MECHANISMS.join(' ')}`);
    lines.push('HELP');
    this.#conn.stream.write(formatLines(hello.code, lines));
  }

  #startTls(argument: string): void | Promise<void> {
    if (argument !== '') return this.#error(Replies.noArgument('STARTTLS'));
    if (this.#conn.secure) return this.#error(Replies.tlsActive);
    if (!this.#conn.tlsAvailable) return this.#error(Replies.tlsUnavailable);
    this.#reply(Replies.readyForTls);
    // RFC 3207 §4.2: the session starts over after the handshake, EHLO first.
    this.#helo = undefined;
    this.#esmtp = false;
    this.#transaction = undefined;
    this.#sasl = undefined;
    this.#conn.upgradeToTls((protocol) => this.#conn.log.info({ event: 'starttls', protocol }, 'TLS started'));
  }

  // --- SMTP AUTH (RFC 4954) ---

  #authOffered(): boolean {
    return this.#context.role !== 'smtp' || this.#context.authOnPort25;
  }

  #auth(argument: string): void | Promise<void> {
    if (!this.#authOffered()) return this.#error(Replies.authNotOffered);
    if (!this.#helo || !this.#esmtp) return this.#error(Replies.helloFirst);
    if (this.#authUser) return this.#error(Replies.alreadyAuthenticated);
    if (this.#transaction) return this.#error(Replies.authInTransaction);
    if (!this.#context.login.plaintextAllowed(this.#conn)) return this.#error(Replies.encryptionRequired);
    const [mechanism = '', initial] = argument.split(' ');
    const exchange = SaslExchange.for(mechanism);
    if (!exchange) return this.#error(Replies.unknownMechanism);
    this.#sasl = exchange;
    return this.#saslStep(exchange.begin(initial));
  }

  async #saslStep(step: SaslStep): Promise<void> {
    const exchange = this.#sasl!;
    if (step.kind === 'challenge') return this.#reply(Replies.challenge(step.challenge));
    this.#sasl = undefined;
    if (step.kind === 'cancelled') return this.#error(Replies.authCancelled);
    if (step.kind === 'malformed') return this.#error(Replies.authMalformed);
    const attempt = { protocol: 'smtp' as const, mechanism: `AUTH ${exchange.mechanism}`, connection: this.#conn, hooks: false };
    return this.#authenticated(await this.#context.login.sasl(attempt, step.credentials));
  }

  #authenticated(outcome: LoginOutcome): void | Promise<void> {
    if (this.#conn.isClosed) return;
    if (outcome.ok) {
      this.#authUser = outcome.user;
      this.#conn.log = this.#conn.log.child({ user: outcome.user });
      return this.#reply(Replies.authenticated);
    }
    switch (outcome.reason) {
      case 'locked':
        return this.#reply(Replies.authLocked(outcome.scope, Math.max(1, Math.ceil(outcome.retryAfterMs / 60_000))));
      case 'failed':
        return this.#error(Replies.authFailed);
      case 'plaintext':
        return this.#error(Replies.encryptionRequired);
      case 'refused':
      case 'unavailable':
        return this.#reply(Replies.authUnavailable);
    }
  }

  // --- the mail transaction ---

  async #mail(argument: string): Promise<void> {
    if (!this.#helo) return this.#error(Replies.helloFirst);
    if (this.#transaction) return this.#error(Replies.transactionOpen);
    const match = /^FROM:\s*<([^>]*)>\s*(.*)$/i.exec(argument);
    if (!match) return this.#error(Replies.mailSyntax);
    const refused = this.#mailParameters(match[2]);
    if (refused) return this.#error(refused);
    if (await this.#context.freeSpace.low()) return this.#reply(Replies.insufficientStorage);
    const policy = this.#context.policy;
    const verdict = this.#authUser ? await policy.authenticatedSender(this.#authUser, match[1]) : await policy.sender(this.#conn.ip, match[1]);
    if (!verdict.ok) {
      this.#conn.log.info({ event: 'mail_refused', from: match[1], reason: verdict.refusal.reason }, 'sender refused');
      return this.#error(refusalReply(verdict.refusal, 'MAIL'));
    }
    if (this.#context.role !== 'smtp' && !this.#authUser && !(verdict.relayUser && this.#context.popBeforeSmtpOnSubmission)) {
      // RFC 6409 §4.3: submission is for authorized clients only.
      this.#conn.log.info({ event: 'mail_refused', from: match[1], reason: 'submission without authentication' }, 'sender refused');
      return this.#error(Replies.authRequired);
    }
    const limits = this.#context.sendLimits;
    const overLimit = verdict.relayUser && limits ? await limits.checkMessage(verdict.relayUser) : undefined;
    if (overLimit) {
      // Refused, never queued: a compromised account must not fill the queue with spam.
      this.#conn.log.info({ event: 'mail_refused', from: match[1], reason: 'sending limit' }, 'sender refused');
      return this.#error(sendLimitReply(overLimit));
    }
    this.#transaction = {
      sender: verdict.sender,
      relayUser: verdict.relayUser,
      relayNetwork: verdict.relayNetwork,
      authenticated: this.#authUser !== undefined,
      relayRefusal: verdict.relayRefusal,
      mailboxes: new Set(),
      remote: new Set(),
      forwarded: [],
      declaredSize: declaredSize(match[2]),
      recipients: [],
      relayedRecipients: [],
    };
    this.#reply(Replies.senderOk);
  }

  /** MAIL parameters (RFC 5321 §4.1.2): the refusal, or undefined when they are acceptable. */
  #mailParameters(text: string): Reply | undefined {
    const parameters = new Map<string, string | undefined>();
    for (const part of text.split(' ')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      const name = (eq === -1 ? part : part.slice(0, eq)).toUpperCase();
      if (!/^[A-Z0-9][A-Z0-9-]*$/.test(name)) return Replies.malformedParameter(name.slice(0, 20));
      parameters.set(name, eq === -1 ? undefined : part.slice(eq + 1));
    }
    for (const [name, value] of parameters) {
      if (name === 'SIZE') {
        if (!/^\d{1,12}$/.test(value ?? '')) return Replies.sizeNumber;
        // RFC 1870 §6: refuse at once what would be refused after the upload.
        if (Number(value) > this.#context.maxMessageSize) return Replies.tooBig(this.#context.maxMessageSize);
      } else if (name === 'BODY') {
        if (!/^(7BIT|8BITMIME)$/i.test(value ?? '')) return Replies.bodyValue;
      } else if (name === 'SMTPUTF8') {
        if (value !== undefined) return Replies.smtputf8Value;
      } else {
        return Replies.unsupportedParameter(name);
      }
    }
    return undefined;
  }

  async #rcpt(argument: string): Promise<void> {
    const transaction = this.#transaction;
    if (!transaction) return this.#error(Replies.mailFirst);
    const match = /^TO:\s*<([^>]*)>\s*(.*)$/i.exec(argument);
    if (!match) return this.#error(Replies.rcptSyntax);
    if (match[2].trim() !== '') return this.#error(Replies.rcptParameters);
    if (await this.#context.freeSpace.low()) return this.#reply(Replies.insufficientStorage);
    if (transaction.recipients.length >= this.#context.maxRecipients) return this.#reply(Replies.tooManyRecipients(this.#context.maxRecipients));
    const verdict = await this.#context.policy.recipient(match[1], transaction.relayUser, transaction.relayRefusal, transaction.relayNetwork, transaction.declaredSize);
    if (!verdict.ok) {
      this.#conn.log.info({ event: 'rcpt_refused', from: transaction.sender, to: match[1], reason: verdict.refusal.reason }, 'recipient refused');
      // A full mailbox is no mistake of the client's: not counted towards closing the connection.
      if (verdict.refusal.reason === 'mailbox-full' || verdict.refusal.reason === 'mailbox-unavailable') return this.#reply(refusalReply(verdict.refusal, 'RCPT'));
      return this.#error(refusalReply(verdict.refusal, 'RCPT'));
    }
    const limits = this.#context.sendLimits;
    if (verdict.kind === 'remote' && transaction.relayUser && limits) {
      const overLimit = await limits.checkRecipient(transaction.relayUser, transaction.relayedRecipients.length);
      if (overLimit) return this.#reply(sendLimitReply(overLimit));
    }
    const filter = this.#inbound;
    if (verdict.kind === 'local' && filter) {
      const decision = await filter.recipient(this.#filterContext(transaction, filter), verdict.address);
      if (!decision.ok) {
        // A deferral (greylisting) is routine for a well-behaved server: not counted as an error.
        const reply = filterReply(decision.refusal);
        return decision.permanent ? this.#error(reply) : this.#reply(reply);
      }
    }
    transaction.recipients.push(verdict.address);
    if (verdict.kind === 'local') {
      verdict.mailboxes.forEach((m) => transaction.mailboxes.add(m));
      if (verdict.remote.length > 0) transaction.forwarded.push({ by: verdict.address, to: verdict.remote });
    } else {
      transaction.remote.add(verdict.address);
      transaction.relayedRecipients.push(verdict.address);
      this.#conn.log.info(
        { event: 'relay_use', user: transaction.relayUser, network: transaction.relayUser ? undefined : transaction.relayNetwork, to: verdict.address },
        transaction.authenticated
          ? 'relay allowed by SMTP AUTH'
          : transaction.relayUser
            ? 'relay allowed by POP-before-SMTP grant'
            : `relay allowed for network ${transaction.relayNetwork}`,
      );
    }
    this.#reply(Replies.recipientOk);
  }

  async #dataCommand(argument: string): Promise<void> {
    if (argument !== '') return this.#error(Replies.noArgument('DATA'));
    const transaction = this.#transaction;
    if (!transaction) return this.#error(Replies.mailFirst);
    if (transaction.recipients.length === 0) return this.#error(Replies.noValidRecipients);
    if (await this.#context.freeSpace.low()) return this.#reply(Replies.insufficientStorage);
    const body = this.#context.bodies.open();
    this.#body = body;
    const reader = new DataReader(this.#context.maxMessageSize, body);
    this.#conn.readRaw({ push: (chunk) => reader.push(chunk), end: () => this.#endOfData(transaction, reader, body) });
    this.#reply(Replies.startData);
  }

  /** The connection closed: a message cut off mid-DATA is dropped, memory and file. */
  closed(): void {
    this.#body?.discard();
    this.#body = undefined;
  }

  async #endOfData(transaction: Transaction, data: DataReader, body: IncomingBody): Promise<void> {
    try {
      await this.#message(transaction, data, body);
    } finally {
      body.discard();
      this.#body = undefined;
    }
  }

  async #message(transaction: Transaction, data: DataReader, body: IncomingBody): Promise<void> {
    this.#transaction = undefined;
    const logged = {
      event: 'message',
      user: transaction.relayUser,
      from: transaction.sender,
      to: transaction.recipients,
      size: data.size,
      relayed: transaction.relayedRecipients,
    };
    if (data.bareLineEnding !== undefined) {
      this.#conn.log.warn({ ...logged, outcome: 'refused', reason: `bare CR or LF at octet ${data.bareLineEnding}` }, 'message refused');
      return this.#error(Replies.bareLineEnding);
    }
    if (data.tooBig) {
      this.#conn.log.info({ ...logged, outcome: 'refused', reason: 'too big' }, 'message refused');
      return this.#reply(Replies.tooBig(this.#context.maxMessageSize));
    }
    if (body.error) {
      this.#conn.log.error({ ...logged, outcome: 'deferred', err: body.error }, 'cannot keep the message while receiving it');
      return this.#reply(Replies.insufficientStorage);
    }
    const content = body.content();
    let signingDomain: string | undefined;
    if (transaction.relayUser && transaction.remote.size > 0) {
      // A customer's message leaving for other domains: its From: must be theirs, and only
      // then is it DKIM-signed. (Mail a customer sends only to local mailboxes is never signed,
      // and the inbound filter marks what its From: domain does not authorize.)
      const verdict = await this.#context.policy.headerFrom(transaction.relayUser, parseHeaderFrom(headerSection(content)));
      if (!verdict.ok) {
        this.#conn.log.warn({ ...logged, outcome: 'refused', reason: verdict.refusal.reason }, 'message refused: From: not the sender\'s');
        return this.#error(refusalReply(verdict.refusal, 'DATA'));
      }
      signingDomain = verdict.signingDomain;
    }
    let local: { headers: Buffer; content: Buffer[] } | undefined;
    const filter = this.#context.filter;
    if (filter) {
      const context = this.#filterContext(transaction, filter);
      if (transaction.mailboxes.size > 0 && this.#inbound) {
        const decision = await filter.message(context, content);
        if (!decision.ok) {
          this.#conn.log.info({ ...logged, outcome: decision.permanent ? 'refused' : 'deferred', reason: `filter: ${decision.refusal.reason}` }, 'message refused');
          const reply = filterReply(decision.refusal);
          return decision.permanent ? this.#error(reply) : this.#reply(reply);
        }
        local = { headers: decision.headers, content: [decision.content] };
      }
      if (transaction.relayedRecipients.length > 0) {
        const decision = await filter.relayed({ ...context, recipients: transaction.relayedRecipients }, content);
        if (!decision.ok) {
          this.#conn.log.warn({ ...logged, outcome: 'refused', reason: `filter: ${decision.refusal.reason}` }, 'relayed message refused');
          return this.#error(filterReply(decision.refusal));
        }
      }
    }
    let id: string;
    try {
      // Durable before 250 (RFC 5321 §6.1): every local copy fsync'd, the rest in the spool.
      id = await this.#context.acceptance.accept({
        local,
        sender: transaction.sender,
        mailboxes: transaction.mailboxes,
        remote: transaction.remote,
        forwarded: transaction.forwarded,
        content,
        clientIp: this.#conn.ip,
        authorizedUser: transaction.relayUser,
        signingDomain,
        trace: {
          helo: this.#helo,
          ip: this.#conn.ip,
          // RFC 3848: ESMTPS, ESMTPA, ESMTPSA for TLS and authenticated sessions.
          protocol: `${this.#esmtp ? 'ESMTP' : 'SMTP'}${this.#conn.secure ? 'S' : ''}${transaction.authenticated ? 'A' : ''}`,
          user: transaction.relayUser ? { address: transaction.relayUser, by: transaction.authenticated ? 'login' : 'pop-before-smtp' } : undefined,
          network: transaction.relayUser ? undefined : transaction.relayNetwork,
          recipients: transaction.recipients,
        },
      });
    } catch (error) {
      if (error instanceof RecipientsRefused) {
        this.#conn.log.info({ ...logged, outcome: 'refused', reason: error.refusal.reason }, 'message refused');
        return this.#reply(refusalReply(error.refusal, 'RCPT'));
      }
      this.#conn.log.error({ ...logged, err: error, outcome: 'failed' }, 'delivery failed');
      return this.#reply(isStorageFull(error) ? Replies.insufficientStorage : Replies.notAccepted);
    }
    if (transaction.relayUser && transaction.relayedRecipients.length > 0) {
      await this.#context.sendLimits?.recordSent(transaction.relayUser, transaction.relayedRecipients.length).catch((error) => {
        this.#conn.log.error({ err: error }, 'cannot record the message for the sending limits');
      });
    }
    this.#conn.log.info(
      { ...logged, queueId: id, outcome: 'accepted', mailboxes: [...transaction.mailboxes], queued: [...transaction.remote, ...transaction.forwarded.flatMap((f) => f.to)] },
      'message accepted',
    );
    this.#reply(Replies.queued(id));
  }
}

/** A write refused for want of space: the file system's ENOSPC or EDQUOT, or SQLite's SQLITE_FULL. */
function isStorageFull(error: unknown): boolean {
  const { code, errcode } = (error ?? {}) as { code?: string; errcode?: number };
  return code === 'ENOSPC' || code === 'EDQUOT' || errcode === 13;
}

/** The SIZE= parameter of MAIL FROM (RFC 1870; already checked by #mailParameters), if given. */
function declaredSize(parameters: string): number | undefined {
  const size = /(?:^|\s)SIZE=(\d{1,12})(?=\s|$)/i.exec(parameters);
  return size ? Number(size[1]) : undefined;
}
