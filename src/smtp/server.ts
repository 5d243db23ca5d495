import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { AccountStore } from '../accounts/store.ts';
import type { Logger } from '../log/logger.ts';
import type { LoginGuard } from '../policy/login-guard.ts';
import type { SendLimits } from '../policy/send-limits.ts';
import type { Mailstore } from '../mailstore/store.ts';
import { ServiceListeners } from '../net/service.ts';
import type { ListenAddress } from '../net/listen.ts';
import type { MailPolicy } from '../policy/mail-policy.ts';
import type { MessageQueue } from '../queue/store.ts';
import { TLS_MIN_VERSION } from '../tls/context.ts';
import { SmtpSession } from './session.ts';

export interface SmtpOptions {
  hostname: string;
  maxMessageSize: number;
  maxRecipients: number;
  maxLineLength: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxConnectionRatePerIp?: number;
  trustedNetworks?: readonly string[];
  idleTimeoutMs: number;
  maxErrors: number;
  errorDelayMs: number;
  handshakeTimeoutMs?: number;
  /** Same rule as POP3: where AUTH may be used without TLS. */
  plaintextWithoutTls?: 'loopback' | 'anywhere' | 'never';
  defaultDomain?: string;
  /** Offer AUTH on the port 25 role too (off: port 25 is for MX traffic and POP before SMTP). */
  authOnPort25?: boolean;
  /** A POP-before-SMTP grant also lets a client relay on submission (devices that cannot AUTH). */
  popBeforeSmtpOnSubmission?: boolean;
}

/** Which port role a listener serves: 25, 587 (STARTTLS, RFC 6409) or 465 (implicit TLS, RFC 8314). */
export type SmtpRole = 'smtp' | 'submission' | 'submissions';

export interface SmtpDependencies {
  policy: MailPolicy;
  mailstore: Mailstore;
  queue: MessageQueue;
  log: Logger;
  tls: () => SecureContext | undefined;
  accounts: AccountStore;
  guard: LoginGuard;
  /** Sending limits per user for relayed mail; absent: none. */
  sendLimits?: SendLimits;
}

/** The port 25 role: inbound mail for local domains, relay for POP-before-SMTP clients. */
export class SmtpServer {
  readonly options: Required<SmtpOptions>;
  readonly deps: SmtpDependencies;
  readonly #listeners: ServiceListeners<SmtpSession, SmtpRole>;

  constructor(options: SmtpOptions, deps: SmtpDependencies) {
    this.options = { handshakeTimeoutMs: 30_000, maxConnectionRatePerIp: 0, trustedNetworks: [], plaintextWithoutTls: 'loopback', defaultDomain: '', authOnPort25: false, popBeforeSmtpOnSubmission: true, ...options };
    this.deps = deps;
    this.#listeners = new ServiceListeners(
      {
        name: 'smtp',
        maxConnections: options.maxConnections,
        maxConnectionsPerIp: options.maxConnectionsPerIp,
        maxConnectionRatePerIp: options.maxConnectionRatePerIp,
        trustedNetworks: options.trustedNetworks,
        shuttingDownReply: '421 4.3.2 Server is shutting down, try again later',
        tooManyReply: (scope) => `421 4.7.0 Too many connections ${scope}, try again later`,
      },
      deps.log,
      (socket, ip, id, role) => {
        const session = new SmtpSession(this, socket, ip, id, role);
        if (role === 'submissions') session.startImplicitTls();
        else session.start();
        return session;
      },
    );
  }

  listen(address: ListenAddress, role: SmtpRole = 'smtp'): Promise<ListenAddress> {
    return this.#listeners.listen(address, role, role);
  }

  wrapTls(socket: Socket): TLSSocket {
    return new TLSSocket(socket, { isServer: true, secureContext: this.deps.tls(), minVersion: TLS_MIN_VERSION });
  }

  /** Stops accepting; sessions finish the message they are receiving, then get 421. */
  close(graceMs = 5000): Promise<void> {
    return this.#listeners.close(graceMs);
  }
}
