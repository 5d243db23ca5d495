import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from '../log/logger.ts';
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
  idleTimeoutMs: number;
  maxErrors: number;
  errorDelayMs: number;
  handshakeTimeoutMs?: number;
}

export interface SmtpDependencies {
  policy: MailPolicy;
  mailstore: Mailstore;
  queue: MessageQueue;
  log: Logger;
  tls: () => SecureContext | undefined;
}

/** The port 25 role: inbound mail for local domains, relay for POP-before-SMTP clients. */
export class SmtpServer {
  readonly options: Required<SmtpOptions>;
  readonly deps: SmtpDependencies;
  readonly #listeners: ServiceListeners<SmtpSession, undefined>;

  constructor(options: SmtpOptions, deps: SmtpDependencies) {
    this.options = { handshakeTimeoutMs: 30_000, ...options };
    this.deps = deps;
    this.#listeners = new ServiceListeners(
      {
        name: 'smtp',
        maxConnections: options.maxConnections,
        maxConnectionsPerIp: options.maxConnectionsPerIp,
        shuttingDownReply: '421 4.3.2 Server is shutting down, try again later',
        tooManyReply: (scope) => `421 4.7.0 Too many connections ${scope}, try again later`,
      },
      deps.log,
      (socket, ip, id) => {
        const session = new SmtpSession(this, socket, ip, id);
        session.start();
        return session;
      },
    );
  }

  listen(address: ListenAddress): Promise<ListenAddress> {
    return this.#listeners.listen(address, 'smtp', undefined);
  }

  wrapTls(socket: Socket): TLSSocket {
    return new TLSSocket(socket, { isServer: true, secureContext: this.deps.tls(), minVersion: TLS_MIN_VERSION });
  }

  /** Stops accepting; sessions finish the message they are receiving, then get 421. */
  close(graceMs = 5000): Promise<void> {
    return this.#listeners.close(graceMs);
  }
}
