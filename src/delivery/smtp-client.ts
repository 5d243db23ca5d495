import type { TLSSocket } from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { Target } from './route.ts';
import { Status } from './status.ts';

// One SMTP client session to a next hop, on nodemailer's SMTP connection (well kept, and its
// data stream turns every bare CR or LF into CRLF and dot-stuffs, so popgate never sends a
// bare LF). This file only maps its callbacks and errors onto per-recipient answers.

export interface ClientSettings {
  /** Our name in EHLO. */
  hostname: string;
  /**
   * opportunistic: STARTTLS when offered, certificate not checked (RFC 7435), plaintext if the
   * handshake fails; required: STARTTLS or no delivery; tls: implicit TLS (port 465 relayhosts);
   * none: never.
   */
  tls: 'opportunistic' | 'required' | 'starttls' | 'tls' | 'none';
  auth?: { user: string; pass: string };
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  localAddress?: string;
}

export interface Answer {
  /** 250, 451, 550...; 0 when the server never answered (connection failure). */
  code: number;
  /** RFC 3463 status: the server's own, or one derived from the code. */
  status: string;
  /** The reply text as the server sent it, or what went wrong. */
  text: string;
}

export interface RecipientAnswer extends Answer {
  recipient: string;
}

/** The session could not be opened or broke: every recipient in it gets this answer. */
export class SessionError extends Error {
  readonly answer: Answer;
  /** The next host may do better (refused, timed out, greeting 4xx/5xx, TLS failed). */
  readonly tryNextHost: boolean;
  /** STARTTLS or the TLS handshake failed. */
  readonly tlsFailed: boolean;
  constructor(answer: Answer, tryNextHost: boolean, tlsFailed = false) {
    super(answer.text);
    this.answer = answer;
    this.tryNextHost = tryNextHost;
    this.tlsFailed = tlsFailed;
  }
}

interface NodemailerError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  recipient?: string;
  rejectedErrors?: NodemailerError[];
}

export class ClientSession {
  readonly target: Target;
  readonly #connection: SMTPConnection;
  #broken = false;
  #sent = 0;

  private constructor(target: Target, connection: SMTPConnection) {
    this.target = target;
    this.#connection = connection;
    connection.on('error', () => {
      this.#broken = true;
    });
    connection.on('end', () => {
      this.#broken = true;
    });
  }

  /** Connects, says EHLO, upgrades with STARTTLS as the settings ask, and logs in if told to. */
  static async open(target: Target, settings: ClientSettings): Promise<ClientSession> {
    try {
      return await ClientSession.#open(target, settings, settings.tls);
    } catch (error) {
      // RFC 7435: opportunistic TLS that fails falls back to plaintext on a new connection,
      // as Postfix's "may" level does; a broken TLS stack must not stop the mail.
      if (settings.tls === 'opportunistic' && error instanceof SessionError && error.tlsFailed) {
        return await ClientSession.#open(target, settings, 'none');
      }
      throw error;
    }
  }

  static async #open(target: Target, settings: ClientSettings, tls: ClientSettings['tls']): Promise<ClientSession> {
    const connection = new SMTPConnection({
      host: target.ip,
      port: target.port,
      name: settings.hostname,
      secure: tls === 'tls',
      ignoreTLS: tls === 'none',
      requireTLS: tls === 'required' || tls === 'starttls',
      opportunisticTLS: tls === 'opportunistic',
      localAddress: settings.localAddress || undefined,
      connectionTimeout: settings.connectTimeoutMs,
      greetingTimeout: settings.connectTimeoutMs,
      socketTimeout: settings.commandTimeoutMs,
      socketCloseTimeout: 1000,
      logger: false,
      allowInternalNetworkInterfaces: true,
      tls: {
        // Opportunistic TLS protects against passive reading; checking names needs DANE or
        // MTA-STS, which is later work. A relayhost with required TLS is checked.
        rejectUnauthorized: tls === 'starttls' || tls === 'tls',
        servername: target.host !== target.ip ? target.host : undefined,
      },
    });
    const session = new ClientSession(target, connection);
    try {
      await settle(connection, (done) => connection.connect(done));
      if (settings.auth) {
        const { user, pass } = settings.auth;
        await settle(connection, (done) => connection.login({ user, pass }, (error) => done(error ?? undefined)));
      }
    } catch (error) {
      connection.close();
      const failure = error as NodemailerError;
      let answer = toAnswer(failure);
      // nodemailer reports a handshake that fails after "220 Ready to start TLS" as a socket
      // error (ESOCKET/CONN), only its `upgrading` flag tells it apart.
      const upgrading = (connection as unknown as { upgrading?: boolean }).upgrading === true;
      const tlsFailed = failure.code === 'ETLS' || failure.command === 'STARTTLS' || upgrading;
      if (tlsFailed) {
        // TLS that we require but cannot have is our policy, not the recipient's address:
        // the mail waits (as Postfix's "encrypt" level does) instead of bouncing.
        answer = { code: 0, status: Status.securityTemporary, text: `TLS failed with this host (STARTTLS: ${answer.text})` };
      }
      // A refused or broken greeting, EHLO or TLS is the host's problem, not the mail's: the
      // next MX may take it. A refused login is ours to fix, and every host would refuse it.
      throw new SessionError(answer, !/^AUTH/i.test(failure.command ?? ''), tlsFailed);
    }
    return session;
  }

  get tls(): boolean {
    return this.#connection.secure;
  }

  /** Whether the peer's certificate was valid for its name (only meaningful with TLS). */
  get verified(): boolean {
    const socket = (this.#connection as unknown as { _socket?: TLSSocket })._socket;
    return Boolean(socket && 'authorized' in socket && socket.authorized);
  }

  get usable(): boolean {
    return !this.#broken;
  }

  get sent(): number {
    return this.#sent;
  }

  /**
   * One transaction: MAIL, RCPT per recipient, DATA. Every recipient gets an answer; the
   * promise rejects only with SessionError when the connection itself failed.
   */
  async send(from: string, recipients: string[], message: Buffer): Promise<RecipientAnswer[]> {
    if (this.#sent > 0) await this.#reset();
    this.#sent++;
    return new Promise((resolve, reject) => {
      this.#connection.send({ from: from === '' ? false : from, to: recipients, size: message.length }, message, (error, info) => {
        if (!error) {
          const answers: RecipientAnswer[] = [];
          const rejected = new Map((info.rejectedErrors ?? []).map((e) => [(e as NodemailerError).recipient, toAnswer(e as NodemailerError)]));
          const accepted = toAnswer({ name: '', message: '', responseCode: 250, response: info.response });
          for (const recipient of recipients) answers.push({ recipient, ...(rejected.get(recipient) ?? accepted) });
          resolve(answers);
          return;
        }
        const failure = error as NodemailerError;
        if (failure.responseCode === undefined || failure.code === 'ECONNECTION' || failure.code === 'ETIMEDOUT' || failure.code === 'ESOCKET') {
          this.#broken = true;
          reject(new SessionError(toAnswer(failure), false));
          return;
        }
        // MAIL refused, every RCPT refused, or DATA refused: answers per recipient.
        const perRecipient = new Map((failure.rejectedErrors ?? []).map((e) => [e.recipient, toAnswer(e)]));
        const whole = toAnswer(failure);
        resolve(recipients.map((recipient) => ({ recipient, ...(perRecipient.get(recipient) ?? whole) })));
      });
    });
  }

  async #reset(): Promise<void> {
    try {
      await settle(this.#connection, (done) => this.#connection.reset((error) => done(error ?? undefined)));
    } catch (error) {
      this.#broken = true;
      throw new SessionError(toAnswer(error as NodemailerError), false);
    }
  }

  close(): void {
    if (!this.#broken) this.#connection.quit();
    this.#connection.close();
    this.#broken = true;
  }
}

/**
 * Runs one step of the connection. nodemailer reports a failed connect, TLS upgrade or a
 * dropped connection as an "error" event rather than through the step's callback, so both
 * are listened to; whichever comes first settles the step.
 */
function settle(connection: SMTPConnection, step: (done: (error?: Error) => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => finish(error);
    const onEnd = () => finish(Object.assign(new Error('Connection closed by the remote host'), { code: 'ECONNECTION' }));
    let finished = false;
    function finish(error?: Error) {
      if (finished) return;
      finished = true;
      connection.off('error', onError);
      connection.off('end', onEnd);
      if (error) reject(error);
      else resolve();
    }
    connection.on('error', onError);
    connection.on('end', onEnd);
    step(finish);
  });
}

const MAX_REPLY_TEXT = 512;

/** A reply such as "550 5.1.1 <x@y>: no such user" becomes {550, "5.1.1", text}. */
function toAnswer(error: NodemailerError): Answer {
  const code = error.responseCode ?? 0;
  // A remote reply is bounded (it lands in the index, the log and a bounce's 998-octet lines).
  const text = (error.response ?? error.message ?? '').replace(/\s+/g, ' ').trim().slice(0, MAX_REPLY_TEXT);
  if (code === 0) return { code: 0, status: Status.noAnswer, text: describeConnectionError(error) };
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1];
  const cls = String(code)[0];
  const status = enhanced && enhanced[0] === cls ? enhanced : cls === '2' ? Status.delivered : cls === '4' ? Status.otherTemporary : Status.otherPermanent;
  return { code, status, text };
}

function describeConnectionError(error: NodemailerError): string {
  const code = error.code ? `${error.code}: ` : '';
  return `${code}${error.message}`.replace(/\s+/g, ' ').slice(0, 300);
}
