import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { AccountStore } from '../accounts/store.ts';
import type { Logger } from '../log/logger.ts';
import type { ListenAddress } from '../net/listen.ts';
import { ServiceListeners } from '../net/service.ts';
import type { LoginGuard } from '../policy/login-guard.ts';
import type { MaildropLocks, Mailstore } from '../mailstore/store.ts';
import { TLS_MIN_VERSION } from '../tls/context.ts';
import { Pop3Session } from './session.ts';

/** Emitted before "+OK" to a successful login, so POP-before-SMTP sees it with zero lag. */
export interface LoginEvent {
  ip: string;
  user: string;
  at: number;
  mechanism: string;
  tls: boolean;
}

export interface Pop3Options {
  hostname: string;
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxConnectionRatePerIp?: number;
  trustedNetworks?: readonly string[];
  idleTimeoutMs: number;
  maxLineLength: number;
  apop: boolean;
  implementation: string;
  plaintextWithoutTls: 'loopback' | 'anywhere' | 'never';
  defaultDomain: string;
  /** Seconds a TLS handshake may take (implicit TLS and STLS). */
  handshakeTimeoutMs?: number;
  /** Unknown or malformed commands tolerated before the connection is closed. */
  maxErrors?: number;
}

export interface Pop3Dependencies {
  accounts: AccountStore;
  mailstore: Mailstore;
  locks: MaildropLocks;
  guard: LoginGuard;
  log: Logger;
  /** The current TLS context (it may be reloaded), or undefined when TLS is not configured. */
  tls: () => SecureContext | undefined;
  /** Awaited in order before "+OK"; a throwing hook fails the login with [SYS/TEMP]. */
  onLogin: ((event: LoginEvent) => Promise<void>)[];
}

/** Listeners and live sessions of the POP3 service (plain with STLS, and implicit TLS). */
export class Pop3Server {
  readonly options: Required<Pop3Options>;
  readonly deps: Pop3Dependencies;
  readonly #listeners: ServiceListeners<Pop3Session, { implicitTls: boolean }>;

  constructor(options: Pop3Options, deps: Pop3Dependencies) {
    this.options = { handshakeTimeoutMs: 30_000, maxErrors: 20, maxConnectionRatePerIp: 0, trustedNetworks: [], ...options };
    this.deps = deps;
    this.#listeners = new ServiceListeners(
      {
        name: 'pop3',
        maxConnections: this.options.maxConnections,
        maxConnectionsPerIp: this.options.maxConnectionsPerIp,
        maxConnectionRatePerIp: this.options.maxConnectionRatePerIp,
        trustedNetworks: this.options.trustedNetworks,
        shuttingDownReply: '-ERR [SYS/TEMP] Server is shutting down, try again in a minute',
        tooManyReply: (scope) => `-ERR [SYS/TEMP] Too many connections ${scope}, try again later`,
      },
      deps.log,
      (socket, ip, id, { implicitTls }) => {
        const session = new Pop3Session(this, socket, ip, id);
        if (implicitTls) session.startImplicitTls();
        else session.start();
        return session;
      },
    );
  }

  get sessionCount(): number {
    return this.#listeners.size;
  }

  /** Starts listening; resolves to the bound address (port 0 yields a free port). */
  async listen(address: ListenAddress, implicitTls: boolean): Promise<ListenAddress> {
    if (implicitTls && !this.deps.tls()) throw new Error('pop3s needs a TLS certificate');
    return this.#listeners.listen(address, implicitTls ? 'pop3s' : 'pop3', { implicitTls });
  }

  /** Wraps a socket in server-side TLS with the current certificate. */
  wrapTls(socket: Socket): TLSSocket {
    const secureContext = this.deps.tls();
    return new TLSSocket(socket, { isServer: true, secureContext, minVersion: TLS_MIN_VERSION });
  }

  /**
   * Stops accepting, lets running sessions finish for `graceMs`, then ends the rest. Sessions
   * ended this way delete nothing (no UPDATE state) and release their maildrop locks.
   */
  close(graceMs = 5000): Promise<void> {
    return this.#listeners.close(graceMs);
  }
}
