import type { MessageAcceptance } from '../acceptance/acceptance.ts';
import type { LoginService } from '../auth/login.ts';
import type { ListenAddress } from '../net/listen.ts';
import { ServiceListeners, type ServiceDependencies, type ServiceOptions, type ServiceTexts } from '../net/service.ts';
import type { MailPolicy } from '../policy/mail-policy.ts';
import type { SendLimits } from '../policy/send-limits.ts';
import type { InboundFilter } from '../filter/filter.ts';
import type { FreeSpace } from './free-space.ts';
import type { IncomingBodies } from './incoming-body.ts';
import { format, Replies } from './replies.ts';
import { SmtpSession, type SmtpContext, type SmtpRole } from './session.ts';

export type { SmtpRole };

/** The [smtp] settings: the service's limits and its own. */
export interface SmtpOptions extends ServiceOptions {
  hostname: string;
  maxMessageSize: number;
  maxRecipients: number;
  /** Offer AUTH on the port 25 role too (off: port 25 is for MX traffic and POP before SMTP). */
  authOnPort25: boolean;
  /** A POP-before-SMTP grant also lets a client relay on submission (devices that cannot AUTH). */
  popBeforeSmtpOnSubmission: boolean;
}

export interface SmtpDependencies extends ServiceDependencies {
  policy: MailPolicy;
  login: LoginService;
  acceptance: MessageAcceptance;
  /** Sending limits per user for relayed mail; absent: none. */
  sendLimits?: SendLimits;
  filter?: InboundFilter;
  bodies: IncomingBodies;
  freeSpace: FreeSpace;
}

const TEXTS: ServiceTexts = {
  lineTooLong: (limit) => format(Replies.lineTooLong(limit)),
  tooManyErrors: format(Replies.tooManyErrors),
  idleTimeout: format(Replies.timeout),
  shuttingDown: format(Replies.shuttingDown),
  internalError: format(Replies.internalError),
  tooManyConnections: (scope) => format(Replies.tooManyConnections(scope)),
};

/** The SMTP listeners of every role: inbound mail on 25, POP-before-SMTP relay, submission. */
export class SmtpServer {
  readonly #listeners: ServiceListeners<SmtpRole>;
  /** Message bodies being received, with the memory they hold (for monitoring and tests). */
  readonly incoming: IncomingBodies;

  constructor(options: SmtpOptions, deps: SmtpDependencies) {
    this.incoming = deps.bodies;
    const context = (role: SmtpRole): SmtpContext => ({
      ...options,
      role,
      policy: deps.policy,
      login: deps.login,
      acceptance: deps.acceptance,
      sendLimits: deps.sendLimits,
      filter: deps.filter,
      bodies: deps.bodies,
      freeSpace: deps.freeSpace,
    });
    const contexts = { smtp: context('smtp'), submission: context('submission'), submissions: context('submissions') };
    this.#listeners = new ServiceListeners('smtp', options, TEXTS, deps, (connection, role) => ({
      session: new SmtpSession(connection, contexts[role]),
      implicitTls: role === 'submissions',
    }));
  }

  listen(address: ListenAddress, role: SmtpRole = 'smtp'): Promise<ListenAddress> {
    return this.#listeners.listen(address, role, role);
  }

  /** Stops accepting; sessions finish the message they are receiving, then get 421. */
  close(graceMs = 5000): Promise<void> {
    return this.#listeners.close(graceMs);
  }
}
