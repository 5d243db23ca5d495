import type { LoginService } from '../auth/login.ts';
import type { MaildropLocks, Mailstore } from '../mailstore/store.ts';
import type { ListenAddress } from '../net/listen.ts';
import { ServiceListeners, type ServiceDependencies, type ServiceOptions, type ServiceTexts } from '../net/service.ts';
import { Replies } from './replies.ts';
import { Pop3Session, type Pop3Context } from './session.ts';
import { EndOfHeadersCheck, type ClientWorkaround } from './workarounds.ts';

/** The [pop3] settings: the service's limits (RFC 1939 §3: autologout after 10 minutes or more) and its own. */
export interface Pop3Options extends ServiceOptions {
  hostname: string;
  apop: boolean;
  implementation: string;
  /** pop3.client_workarounds (src/pop3/workarounds.ts); none when left out. */
  clientWorkarounds?: readonly ClientWorkaround[];
}

export interface Pop3Dependencies extends ServiceDependencies {
  login: LoginService;
  mailstore: Mailstore;
  locks: MaildropLocks;
}

const TEXTS: ServiceTexts = {
  lineTooLong: Replies.lineTooLong,
  tooManyErrors: Replies.tooManyErrors,
  idleTimeout: Replies.autologout,
  shuttingDown: Replies.shuttingDown,
  internalError: Replies.internalError,
  tooManyConnections: Replies.tooManyConnections,
};

/** Listeners and live sessions of the POP3 service (plain with STLS, and implicit TLS). */
export class Pop3Server {
  readonly #deps: Pop3Dependencies;
  readonly #listeners: ServiceListeners<boolean>;

  constructor(options: Pop3Options, deps: Pop3Dependencies) {
    this.#deps = deps;
    const context: Pop3Context = {
      ...options,
      login: deps.login,
      mailstore: deps.mailstore,
      locks: deps.locks,
      workarounds: new Set(options.clientWorkarounds ?? []),
      endOfHeaders: new EndOfHeadersCheck(deps.mailstore),
    };
    this.#listeners = new ServiceListeners('pop3', options, TEXTS, deps, (connection, implicitTls) => ({
      session: new Pop3Session(connection, context),
      implicitTls,
    }));
  }

  get sessionCount(): number {
    return this.#listeners.size;
  }

  /** Starts listening; resolves to the bound address (port 0 yields a free port). */
  async listen(address: ListenAddress, implicitTls: boolean): Promise<ListenAddress> {
    if (implicitTls && !this.#deps.tls()) throw new Error('pop3s needs a TLS certificate');
    return this.#listeners.listen(address, implicitTls ? 'pop3s' : 'pop3', implicitTls);
  }

  /**
   * Stops accepting, lets running sessions finish for `graceMs`, then ends the rest. Sessions
   * ended this way delete nothing (no UPDATE state) and release their maildrop locks.
   */
  close(graceMs = 5000): Promise<void> {
    return this.#listeners.close(graceMs);
  }
}
