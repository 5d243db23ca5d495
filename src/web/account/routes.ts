import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { requirePassword } from '../../accounts/checks.ts';
import { AccountError, type AccountStore } from '../../accounts/store.ts';
import type { LoginConnection, LoginOutcome, LoginService } from '../../auth/login.ts';
import type { Config } from '../../config/schema.ts';
import { forwardingProblem } from '../../forwarding/rules.ts';
import type { ForwardingStore } from '../../forwarding/store.ts';
import type { Logger } from '../../log/logger.ts';
import type { MailboxQuotas } from '../../quota/quota.ts';
import { formatSize } from '../../quota/size.ts';
import type { VacationStore } from '../../vacation/store.ts';
import { MAX_VACATION_BODY, MAX_VACATION_SUBJECT, parseVacationUntil, vacationProblem } from '../../vacation/vacation.ts';
import { LANGS, UI } from '../i18n.ts';
import { CSRF_FIELD, type BrowserSessions } from '../security.ts';
import { languageOf, PageError } from '../site.ts';
import { clearSession, readSession, writeSession, type CustomerSession } from './session.ts';
import { ACCOUNT_TEXT } from './strings.ts';

// The customers' own pages (docs/web.md, docs/mailbox-services.md): a customer logs in with
// their mail address and password and sees their mailbox usage, changes their password, their
// forwarding and their vacation reply. Each feature but the overview can be turned off in
// [self_service]; a feature that is off has no page and no form, so its paths are 404s.
//
// - The login goes through the login path of POP3 and SMTP (src/auth/login.ts): the same
//   plaintext rule (over plain HTTP only from loopback, or where auth.plaintext_without_tls
//   allows it), the same guard, so failures here and in a mail program count together and a
//   lockout holds on every port; the same words for an unknown address and a wrong password.
// - The session lives in a signed cookie (session.ts), so every worker and node serves it.
// - Every POST carries the site's CSRF token (src/web/security.ts; OWASP CSRF Prevention
//   Cheat Sheet) and is checked before anything else; a missing or forged one is a 403.
// - Every change is logged (event self_service_change, never a password or a reply's text)
//   and handed to `recordChange` (the console's audit log).

/** What the pages read and change. */
export interface SelfServiceStores {
  login: LoginService;
  accounts: AccountStore;
  /** Absent when [quota] enabled = false. */
  quotas: MailboxQuotas | undefined;
  forwarding: ForwardingStore;
  vacations: VacationStore;
}

/** One change a customer made, as logged and as handed to recordChange. */
export interface SelfServiceChange {
  address: string;
  ip: string;
  /** "password", "forwarding_set", "forwarding_off", "vacation_set", "vacation_off". */
  action: string;
  /** What changed, without secrets or message text: e.g. the forwarding targets. */
  detail: string;
}

export interface SelfServiceOptions {
  config: Config;
  stores: SelfServiceStores;
  sessions: BrowserSessions;
  log: Logger;
  /** Called after each change is stored; a failure is logged, the change stands. */
  recordChange?: (entry: SelfServiceChange) => Promise<void>;
}

/** Bodies of the vacation form: a reply of MAX_VACATION_BODY octets, percent-encoded (3 octets each) with room to spare. */
const VACATION_FORM_LIMIT = 4 * MAX_VACATION_BODY;

type Form = Record<string, unknown>;
const field = (body: Form, name: string): string => (typeof body[name] === 'string' ? (body[name] as string) : '');

export function registerSelfService(app: FastifyInstance, options: SelfServiceOptions): void {
  const { config, stores, sessions, log } = options;
  const switches = config.self_service;
  if (!switches.enabled) return;
  const features = { password: switches.password, forwarding: switches.forwarding, vacation: switches.vacation };
  const provider = { name: config.web.provider_name || config.hostname, contact: config.web.provider_contact };

  const render = (request: FastifyRequest, reply: FastifyReply, view: string, data: { title: string; address?: string; [key: string]: unknown }) => {
    const lang = languageOf(request);
    reply.header('Cache-Control', 'no-store').header('Content-Language', lang).header('Vary', 'Accept-Language, Cookie');
    return reply.view(`account/${view}`, {
      lang,
      t: UI[lang],
      a: ACCOUNT_TEXT[lang],
      langs: LANGS.map((code) => ({ code, name: UI[code].langName })),
      path: request.url.split('?')[0],
      csrf: sessions.csrfToken(request, reply),
      csrfField: CSRF_FIELD,
      provider,
      features,
      notice: undefined,
      error: undefined,
      ...data,
    });
  };

  /** The logged-in customer, with the session renewed; undefined when there is none (any more). */
  const customer = async (request: FastifyRequest, reply: FastifyReply): Promise<CustomerSession | undefined> => {
    const now = Date.now();
    const session = readSession(request, now);
    if (!session) return undefined;
    // A changed password (anywhere) or a removed account ends the session here.
    if ((await stores.accounts.passwordStamp(session.address)) !== session.stamp) {
      clearSession(request, reply);
      return undefined;
    }
    const renewed = { ...session, seenAt: now };
    writeSession(request, reply, renewed);
    return renewed;
  };

  /** Runs `page` for a logged-in customer; anyone else is sent to the login page. */
  const loggedIn =
    (page: (request: FastifyRequest, reply: FastifyReply, session: CustomerSession) => unknown, post = false) =>
    async (request: FastifyRequest, reply: FastifyReply) => {
      if (post) sessions.verifyCsrf(request);
      const session = await customer(request, reply);
      if (!session) return reply.redirect('/account/login', 303);
      return page(request, reply, session);
    };

  const connection = (request: FastifyRequest): LoginConnection => ({
    ip: request.ip,
    secure: request.protocol === 'https',
    get isClosed() {
      return request.raw.socket.destroyed;
    },
    log,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  });

  /** A password checked on the mail login path: a web login, or the current password of a change. */
  const checkPassword = (request: FastifyRequest, mechanism: string, address: string, password: string): Promise<LoginOutcome> =>
    stores.login.password({ protocol: 'web', mechanism, connection: connection(request), hooks: false }, address, password);

  /** The page's words for a refused password check, with its status code. */
  const refusal = (request: FastifyRequest, reply: FastifyReply, outcome: Exclude<LoginOutcome, { ok: true }>, wrong: string): string => {
    const a = ACCOUNT_TEXT[languageOf(request)];
    switch (outcome.reason) {
      case 'locked': {
        const seconds = Math.ceil(outcome.retryAfterMs / 1000);
        // RFC 6585 §4: 429 with Retry-After for a client that must wait.
        reply.code(429).header('Retry-After', String(seconds));
        return a.loginLocked(Math.max(1, Math.ceil(seconds / 60)));
      }
      case 'plaintext':
        reply.code(403);
        return a.loginPlaintext;
      case 'unavailable':
      case 'refused':
        reply.code(503);
        return a.unavailable;
      case 'failed':
        reply.code(401);
        return wrong;
    }
  };

  const record = async (request: FastifyRequest, address: string, action: string, detail: string) => {
    const entry: SelfServiceChange = { address, ip: request.ip, action, detail };
    log.info({ event: 'self_service_change', user: address, action, detail, ip: request.ip }, `self-service: ${action}`);
    try {
      await options.recordChange?.(entry);
    } catch (error) {
      log.error({ event: 'self_service_record_failed', user: address, action, err: error }, 'cannot record a self-service change');
    }
  };

  // --- login and logout ---

  app.get('/account/login', async (request, reply) => {
    if (await customer(request, reply)) return reply.redirect('/account', 303);
    const a = ACCOUNT_TEXT[languageOf(request)];
    return render(request, reply, 'login', { title: a.loginTitle, typed: '' });
  });

  app.post('/account/login', async (request, reply) => {
    sessions.verifyCsrf(request);
    const body = request.body as Form;
    const a = ACCOUNT_TEXT[languageOf(request)];
    const typed = field(body, 'address').trim();
    const password = field(body, 'password');
    // An over-long name is no address; it still counts as a failure (the guard sees every guess).
    const outcome = await checkPassword(request, 'web login', typed.slice(0, 320), password);
    if (outcome.ok) {
      const stamp = await stores.accounts.passwordStamp(outcome.user);
      if (stamp !== undefined) {
        const now = Date.now();
        writeSession(request, reply, { address: outcome.user, loggedInAt: now, seenAt: now, stamp });
        return reply.redirect('/account', 303);
      }
    }
    const error = outcome.ok ? a.loginFailed : refusal(request, reply, outcome, a.loginFailed);
    return render(request, reply, 'login', { title: a.loginTitle, typed: typed.slice(0, 320), error });
  });

  app.post('/account/logout', async (request, reply) => {
    sessions.verifyCsrf(request);
    clearSession(request, reply);
    return reply.redirect('/account/login', 303);
  });

  // --- the overview ---

  const overview = async (request: FastifyRequest, reply: FastifyReply, session: CustomerSession, notice?: string) => {
    const a = ACCOUNT_TEXT[languageOf(request)];
    const { address } = session;
    const [status, rule, vacation] = await Promise.all([
      stores.quotas?.status(address),
      features.forwarding ? stores.forwarding.get(address) : undefined,
      features.vacation ? stores.vacations.get(address) : undefined,
    ]);
    let quota: { text: string; percent: number | undefined; over: boolean; used: number; limit: number | null } | undefined;
    if (status) {
      const percent = status.limit === null ? undefined : Math.floor((status.used * 100) / status.limit);
      quota = {
        text: status.limit === null ? a.quotaUnlimited(formatSize(status.used)) : a.quotaUsed(formatSize(status.used), formatSize(status.limit), percent!),
        percent,
        over: status.limit !== null && status.used >= status.limit,
        used: status.used,
        limit: status.limit,
      };
    }
    return render(request, reply, 'overview', {
      title: a.account,
      address,
      notice,
      quota,
      forwardingText: rule ? a.forwardingOn(rule.targets.join(', '), rule.keep) : a.forwardingOff,
      vacationText: describeVacation(a, vacation),
    });
  };

  app.get('/account', loggedIn((request, reply, session) => overview(request, reply, session)));

  // --- password ---

  if (features.password) {
    const passwordPage = (request: FastifyRequest, reply: FastifyReply, session: CustomerSession, error?: string) =>
      render(request, reply, 'password', { title: ACCOUNT_TEXT[languageOf(request)].changePassword, address: session.address, error });

    app.get('/account/password', loggedIn((request, reply, session) => passwordPage(request, reply, session)));

    app.post(
      '/account/password',
      loggedIn(async (request, reply, session) => {
        const a = ACCOUNT_TEXT[languageOf(request)];
        const body = request.body as Form;
        const next = field(body, 'new');
        if (next !== field(body, 'repeat')) return passwordPage(request, reply.code(400), session, a.passwordsDiffer);
        try {
          requirePassword(next);
        } catch (error) {
          if (error instanceof AccountError) return passwordPage(request, reply.code(400), session, `${a.passwordRefused} ${error.message}`);
          throw error;
        }
        // The current password is checked like a login: a stolen session cannot guess it
        // without the guard counting, and a lockout stops it.
        const check = await checkPassword(request, 'web password change', session.address, field(body, 'current'));
        if (!check.ok) return passwordPage(request, reply, session, refusal(request, reply, check, a.currentWrong));
        await stores.accounts.setPassword(session.address, next);
        const stamp = await stores.accounts.passwordStamp(session.address);
        // This browser stays logged in with the new stamp; every other session of the account ends.
        const renewed = { ...session, stamp: stamp ?? '' };
        writeSession(request, reply, renewed);
        await record(request, session.address, 'password', 'password changed');
        return overview(request, reply, renewed, a.passwordChanged);
      }, true),
    );
  }

  // --- forwarding ---

  if (features.forwarding) {
    const forwardingPage = async (request: FastifyRequest, reply: FastifyReply, session: CustomerSession, state: { error?: string; targets?: string; keep?: boolean } = {}) => {
      const a = ACCOUNT_TEXT[languageOf(request)];
      const rule = await stores.forwarding.get(session.address);
      return render(request, reply, 'forwarding', {
        title: a.forwarding,
        address: session.address,
        current: rule ? a.forwardingOn(rule.targets.join(', '), rule.keep) : a.forwardingOff,
        on: rule !== undefined,
        targets: state.targets ?? rule?.targets.join('\n') ?? '',
        keep: state.keep ?? rule?.keep ?? false,
        error: state.error,
      });
    };

    app.get('/account/forwarding', loggedIn((request, reply, session) => forwardingPage(request, reply, session)));

    app.post(
      '/account/forwarding',
      loggedIn(async (request, reply, session) => {
        const a = ACCOUNT_TEXT[languageOf(request)];
        const body = request.body as Form;
        const { address } = session;
        if (field(body, 'action') === 'off') {
          if (await stores.forwarding.remove(address)) await record(request, address, 'forwarding_off', 'forwarding stopped');
          return overview(request, reply, session, a.forwardingStopped);
        }
        if (field(body, 'action') !== 'save') throw new PageError(400, 'action must be "save" or "off"');
        const typed = field(body, 'targets');
        const keep = field(body, 'keep') === 'on';
        const inputs = typed.split(/[\s,]+/).filter((input) => input !== '');
        // The same checks as `popgate user forward`: real addresses, at most ten, not oneself,
        // no unknown local address, no circle.
        const checked = await forwardingProblem(address, inputs, stores);
        if (!checked.ok) return forwardingPage(request, reply.code(400), session, { error: `${a.forwardingRefused} ${checked.reason}`, targets: typed, keep });
        await stores.forwarding.set(address, { targets: checked.targets, keep });
        await record(request, address, 'forwarding_set', `to ${checked.targets.join(', ')}${keep ? ', keeping a copy' : ''}`);
        return overview(request, reply, session, a.forwardingSaved);
      }, true),
    );
  }

  // --- vacation ---

  if (features.vacation) {
    const vacationPage = async (request: FastifyRequest, reply: FastifyReply, session: CustomerSession, state: { error?: string; subject?: string; body?: string; until?: string } = {}) => {
      const a = ACCOUNT_TEXT[languageOf(request)];
      const vacation = await stores.vacations.get(session.address);
      return render(request, reply, 'vacation', {
        title: a.vacation,
        address: session.address,
        current: describeVacation(a, vacation),
        on: vacation !== undefined,
        intro: a.vacationIntro(Math.max(1, Math.round(config.vacation.interval / 86_400_000))),
        subject: state.subject ?? vacation?.subject ?? '',
        body: state.body ?? vacation?.body ?? '',
        until: state.until ?? (vacation?.until !== undefined ? new Date(vacation.until).toISOString().slice(0, 10) : ''),
        error: state.error,
        maxSubject: MAX_VACATION_SUBJECT,
      });
    };

    app.get('/account/vacation', loggedIn((request, reply, session) => vacationPage(request, reply, session)));

    app.post(
      '/account/vacation',
      { bodyLimit: VACATION_FORM_LIMIT },
      loggedIn(async (request, reply, session) => {
        const a = ACCOUNT_TEXT[languageOf(request)];
        const form = request.body as Form;
        const { address } = session;
        if (field(form, 'action') === 'off') {
          if (await stores.vacations.remove(address)) await record(request, address, 'vacation_off', 'vacation reply off');
          return overview(request, reply, session, a.vacationStopped);
        }
        if (field(form, 'action') !== 'save') throw new PageError(400, 'action must be "save" or "off"');
        const subject = field(form, 'subject').trim();
        // Browsers send a textarea's line ends as CRLF (HTML: "normalize newlines"); the reply
        // is built with its own line ends.
        const body = field(form, 'body').replace(/\r\n/g, '\n');
        const untilText = field(form, 'until').trim();
        const again = (error: string) => vacationPage(request, reply.code(400), session, { error, subject, body, until: untilText });
        const problem = vacationProblem(subject, body);
        if (problem) return again(`${a.vacationRefused} ${problem}`);
        // The date field sends YYYY-MM-DD; like `popgate user vacation --until`, the end of that day.
        let until: number | undefined;
        if (untilText !== '') {
          if (!/^\d{4}-\d{2}-\d{2}$/.test(untilText)) return again(a.untilInvalid);
          until = parseVacationUntil(untilText);
          if (until === undefined) return again(a.untilInvalid);
          if (until < Date.now()) return again(a.untilPast);
        }
        await stores.vacations.set(address, { subject, body, since: Date.now(), until });
        await record(request, address, 'vacation_set', until === undefined ? 'vacation reply on' : `vacation reply on until ${untilText}`);
        return overview(request, reply, session, a.vacationSaved);
      }, true),
    );
  }
}

function describeVacation(a: (typeof ACCOUNT_TEXT)[keyof typeof ACCOUNT_TEXT], vacation: { subject: string; until?: number } | undefined): string {
  if (!vacation) return a.vacationOff;
  if (vacation.until !== undefined && vacation.until < Date.now()) return a.vacationEnded(vacation.subject);
  return a.vacationOn(vacation.subject, vacation.until === undefined ? undefined : new Date(vacation.until).toISOString().slice(0, 10));
}
