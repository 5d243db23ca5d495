import { createHmac, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Eta } from 'eta';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AccountError } from '../../accounts/store.ts';
import { AdminError, adminNameProblem } from '../../admin/accounts.ts';
import { BUCKET_MS, COUNTER_SERIES, GAUGE_SERIES, HISTORY_MS, seriesValues, type SeriesName } from '../../admin/history.ts';
import { AdminOperations, OperationError, QUEUE_ID } from '../../admin/operations.ts';
import type { AdminSession } from '../../admin/store.ts';
import type { AdminAccounts } from '../../admin/accounts.ts';
import type { HistoryStore } from '../../admin/history-store.ts';
import type { OperationBackends } from '../../admin/operations.ts';
import type { Config } from '../../config/schema.ts';
import type { Logger } from '../../log/logger.ts';
import { NetworkList } from '../../net/ip.ts';
import { formatAge, showText } from '../../queue/describe.ts';
import { CsrfError, CSRF_FIELD, type BrowserSessions } from '../security.ts';
import { barChart } from './charts.ts';

// The admin console at /admin (docs/web.md). What protects it, in the order a request meets it:
//
// 1. only clients in `[admin] networks` reach it (loopback by default): anyone else gets 403;
// 2. a server-side session: a 256-bit random id in a signed cookie (`popgate_admin`: HttpOnly,
//    SameSite=Strict, Secure over HTTPS, Path=/admin), looked up by its hash in the AdminStore
//    so every worker and node sees it, with an idle and an absolute timeout (OWASP Session
//    Management Cheat Sheet); a fresh id at every login (no session fixation);
// 3. every POST carries a CSRF token: an HMAC of the session id under the site secret (OWASP
//    CSRF Prevention Cheat Sheet, "signed double-submit"); the login form carries the site's
//    own pre-session token (BrowserSessions), against login CSRF;
// 4. logins go through the LoginGuard of the mail logins (same delays and lockouts; the
//    account key is "admin:NAME", so a console name never collides with a mailbox);
// 5. every change goes through AdminOperations, which records it in the audit log.
//
// Path parameters (the queue id) are checked against what they may be before any lookup.

export const ADMIN_COOKIE = 'popgate_admin';
const VIEWS = join(import.meta.dirname, 'views');
/** Limits of what a form field may hold: nothing longer reaches a store. */
const FIELD_MAX = { name: 64, password: 1024, address: 320, domain: 253, targets: 4000, key: 100, filter: 100 } as const;

/** What the console reads and changes: the operations' stores, the administrators, the history. */
export interface AdminConsoleStores extends OperationBackends {
  admins: AdminAccounts;
  history: HistoryStore;
}

export interface AdminConsoleOptions {
  config: Config;
  backends: AdminConsoleStores;
  /** The site secret (src/web/security.ts), under which the CSRF tokens are computed. */
  secret: string;
  /** The site's pre-session CSRF tokens, for the login form. */
  sessions: BrowserSessions;
  log: Logger;
}

/** A client error the console words itself. */
class ConsoleError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    adminSession?: { id: string; admin: AdminSession };
  }
}

export function registerAdminConsole(app: FastifyInstance, options: AdminConsoleOptions): void {
  void app.register(async (scope) => adminRoutes(scope, options), { prefix: '/admin' });
}

async function adminRoutes(app: FastifyInstance, options: AdminConsoleOptions): Promise<void> {
  const { config, backends, log } = options;
  const { admins, audit, guard } = backends;
  const allowed = new NetworkList(config.admin.networks);
  const eta = new Eta({ views: VIEWS, autoEscape: true, cache: true });

  const mac = (text: string) => createHmac('sha256', options.secret).update(text).digest('base64url');
  const csrfFor = (sessionId: string) => mac(`admin-csrf:${sessionId}`);
  const sameMac = (given: string, expected: string) => given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
  app.decorateRequest('adminSession', undefined);

  const page = (reply: FastifyReply, request: FastifyRequest, view: string, data: Record<string, unknown>) => {
    const session = request.adminSession;
    return reply.type('text/html; charset=utf-8').send(
      eta.render(view, { ...data, admin: session?.admin.admin, csrf: session ? csrfFor(session.id) : '', csrfField: CSRF_FIELD, formatAge, now: Date.now() }),
    );
  };

  const loginPage = (request: FastifyRequest, reply: FastifyReply, status: number, message?: string) =>
    page(reply.code(status), request, 'login', { title: 'Log in', message, loginCsrf: options.sessions.csrfToken(request, reply) });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('Cache-Control', 'no-store');
    if (!allowed.has(request.ip)) {
      log.warn({ event: 'admin_refused_network', ip: request.ip }, 'admin console request from outside [admin] networks');
      return reply.code(403).type('text/plain; charset=utf-8').send('The admin console is not open to your address. An administrator can add its network to [admin] networks in the config.\n');
    }
    const raw = request.cookies[ADMIN_COOKIE];
    if (raw) {
      const unsigned = request.unsignCookie(raw);
      const id = unsigned.valid && unsigned.value && /^[A-Za-z0-9_-]{43}$/.test(unsigned.value) ? unsigned.value : undefined;
      const session = id && (await admins.session(id));
      if (id && session) request.adminSession = { id, admin: session };
    }
  });

  // Everything but the login form needs a live session; then a POST needs the session's CSRF token.
  const requireAdmin = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.adminSession) return loginPage(request, reply, 401, 'Please log in (your session has ended, or there was none).');
    if (request.method === 'POST') {
      const sent = (request.body as Record<string, unknown> | undefined)?.[CSRF_FIELD];
      if (typeof sent !== 'string' || sent === '') throw new CsrfError('the form carries no CSRF token: reload the page and try again');
      if (!sameMac(sent, csrfFor(request.adminSession.id))) throw new CsrfError('the form carries no CSRF token of this session: reload the page and try again');
    }
  };

  const operations = (request: FastifyRequest) => new AdminOperations(backends, { actor: `admin ${request.adminSession!.admin.admin}`, ip: request.ip });

  // After a change: back to the page (POST/redirect/GET), with the sentence the operation
  // answered in the query, signed for this session so a crafted link cannot put words on a
  // console page (OWASP: content spoofing).
  const doneMac = (request: FastifyRequest, message: string) => mac(`admin-done:${request.adminSession!.id}:${message}`);
  const done = (request: FastifyRequest, reply: FastifyReply, to: string, message: string) => {
    const text = message.slice(0, 500);
    return reply.redirect(`${to}?done=${encodeURIComponent(text)}&sig=${doneMac(request, text)}`, 303);
  };
  const doneMessage = (request: FastifyRequest) => {
    const { done: text, sig } = request.query as Record<string, unknown>;
    return typeof text === 'string' && typeof sig === 'string' && text.length <= 500 && sameMac(sig, doneMac(request, text)) ? text : undefined;
  };

  app.get('/', async (request, reply) => reply.redirect(request.adminSession ? '/admin/dashboard' : '/admin/login', 303));

  app.get('/login', async (request, reply) => (request.adminSession ? reply.redirect('/admin/dashboard', 303) : loginPage(request, reply, 200)));

  app.post('/login', async (request, reply) => {
    options.sessions.verifyCsrf(request);
    const name = field(request, 'name', FIELD_MAX.name).trim().toLowerCase();
    const password = field(request, 'password', FIELD_MAX.password, false);
    const ip = request.ip;
    const account = `admin:${name}`;
    // A name that cannot be one is logged as such, never as typed (it may be a password typed in the wrong box).
    const subject = adminNameProblem(name) ? '(not a valid name)' : name;
    const verdict = await guard.check(ip, account);
    if (verdict.locked) {
      await audit.record({ at: Date.now(), actor: 'anonymous', ip, action: 'admin.login_locked', subject, detail: `login refused: locked out for ${Math.ceil(verdict.retryAfterMs / 1000)} s` });
      const minutes = Math.max(1, Math.ceil(verdict.retryAfterMs / 60_000));
      reply.header('Retry-After', String(Math.ceil(verdict.retryAfterMs / 1000)));
      return loginPage(request, reply, 429, `Too many failed logins: logging in from your address is locked for about ${minutes} minute(s). Try again then, or ask another administrator to reset it (Lockouts page, or popgate limits reset ${ip}).`);
    }
    if (!(await admins.verify(name, password))) {
      const { delayMs, locked } = await guard.failure(ip, account);
      await sleep(delayMs);
      await audit.record({ at: Date.now(), actor: 'anonymous', ip, action: 'admin.login_failed', subject, detail: locked ? 'wrong name or password; now locked out' : 'wrong name or password' });
      return loginPage(request, reply, 401, 'Wrong name or password.');
    }
    const id = await admins.startSession(name);
    reply.setCookie(ADMIN_COOKIE, id, { signed: true, httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', path: '/admin' });
    await audit.record({ at: Date.now(), actor: `admin ${name}`, ip, action: 'admin.login', subject: name, detail: 'logged in' });
    return reply.redirect('/admin/dashboard', 303);
  });

  app.post('/logout', { preHandler: requireAdmin }, async (request, reply) => {
    const session = request.adminSession!;
    await admins.endSession(session.id);
    await audit.record({ at: Date.now(), actor: `admin ${session.admin.admin}`, ip: request.ip, action: 'admin.logout', subject: session.admin.admin, detail: 'logged out' });
    reply.clearCookie(ADMIN_COOKIE, { path: '/admin' });
    return reply.redirect('/admin/login', 303);
  });

  app.get('/dashboard', { preHandler: requireAdmin }, async (request, reply) => {
    const now = Date.now();
    const [grants, queue, lockouts, points] = await Promise.all([backends.popBeforeSmtp.list(), backends.queue.list(), guard.list(now), backends.history.since(now - HISTORY_MS)]);
    const oldest = queue.reduce((min, m) => Math.min(min, m.receivedAt), now);
    const charts = (Object.entries({ ...COUNTER_SERIES, ...GAUGE_SERIES }) as [SeriesName, { title: string }][]).map(([name, { title }]) => {
      const values = seriesValues(points, name, now);
      const gauge = name in GAUGE_SERIES;
      const total = gauge ? `now ${values[values.length - 1]}` : `${values.reduce((a, b) => a + b, 0)} in 24 hours`;
      const lastHour = values.slice(-3600_000 / BUCKET_MS).reduce((a, b) => a + b, 0);
      return { name, title, svg: barChart(title, values, total), total, lastHour: gauge ? undefined : lastHour };
    });
    return page(reply, request, 'dashboard', {
      title: 'Dashboard',
      live: {
        grants: grants.length,
        queue: queue.length,
        oldest: queue.length > 0 ? formatAge(now - oldest) : '-',
        lockouts: lockouts.filter((row) => row.lockedUntil !== undefined && row.lockedUntil > now).length,
      },
      charts,
    });
  });

  app.get('/grants', { preHandler: requireAdmin }, async (request, reply) =>
    page(reply, request, 'grants', { title: 'Relay grants', grants: await backends.popBeforeSmtp.list(), done: doneMessage(request) }),
  );
  app.post('/grants/revoke', { preHandler: requireAdmin }, async (request, reply) => {
    const key = field(request, 'key', FIELD_MAX.key);
    const user = optionalField(request, 'user', FIELD_MAX.address);
    return done(request, reply, '/admin/grants', await operations(request).revokeGrant(key, user));
  });

  app.get('/queue', { preHandler: requireAdmin }, async (request, reply) =>
    page(reply, request, 'queue', { title: 'Outbound queue', messages: await backends.queue.list(), done: doneMessage(request) }),
  );
  app.get('/queue/:id', { preHandler: requireAdmin }, async (request, reply) => {
    const message = await operations(request).queuedMessage(queueId(request));
    return page(reply, request, 'queue-message', { title: `Queued message ${message.id}`, message, text: await showText(backends.queue.spool, message, Date.now()) });
  });
  app.post('/queue/:id/retry', { preHandler: requireAdmin }, async (request, reply) => done(request, reply, '/admin/queue', await operations(request).retryQueue(queueId(request))));
  app.post('/queue/:id/delete', { preHandler: requireAdmin }, async (request, reply) => done(request, reply, '/admin/queue', await operations(request).deleteQueued(queueId(request))));

  app.get('/lockouts', { preHandler: requireAdmin }, async (request, reply) =>
    page(reply, request, 'lockouts', { title: 'Failed logins and lockouts', rows: await guard.list(Date.now()), done: doneMessage(request) }),
  );
  app.post('/lockouts/reset', { preHandler: requireAdmin }, async (request, reply) => {
    const key = field(request, 'key', FIELD_MAX.key + FIELD_MAX.address);
    // The row's key names an address ("ip …") or an account ("user …"); a pair resets with its address.
    const match = /^(ip|user) (\S+)/.exec(key);
    if (!match) throw new ConsoleError(400, 'key must be a row of the lockout list ("ip ADDRESS" or "user NAME")');
    return done(request, reply, '/admin/lockouts', await operations(request).resetLimits(match[2]));
  });

  app.get('/accounts', { preHandler: requireAdmin }, async (request, reply) => {
    const [domains, users, aliases] = await Promise.all([backends.accounts.listDomains(), backends.accounts.listUsers(), backends.accounts.listAliases()]);
    return page(reply, request, 'accounts', { title: 'Domains, users and aliases', domains, users, aliases, done: doneMessage(request) });
  });
  const accountChange = (path: string, change: (request: FastifyRequest, ops: AdminOperations) => Promise<string>) =>
    app.post(path, { preHandler: requireAdmin }, async (request, reply) => done(request, reply, '/admin/accounts', await change(request, operations(request))));
  accountChange('/domains/add', (request, ops) => ops.addDomain(field(request, 'domain', FIELD_MAX.domain)));
  accountChange('/domains/remove', (request, ops) => ops.removeDomain(field(request, 'domain', FIELD_MAX.domain)));
  accountChange('/users/add', (request, ops) => ops.addUser(field(request, 'address', FIELD_MAX.address), field(request, 'password', FIELD_MAX.password, false)));
  accountChange('/users/password', (request, ops) => ops.setPassword(field(request, 'address', FIELD_MAX.address), field(request, 'password', FIELD_MAX.password, false)));
  accountChange('/users/remove', (request, ops) => ops.removeUser(field(request, 'address', FIELD_MAX.address)));
  accountChange('/aliases/add', (request, ops) => ops.addAlias(field(request, 'alias', FIELD_MAX.address), targetsOf(field(request, 'targets', FIELD_MAX.targets))));
  accountChange('/aliases/remove', (request, ops) => ops.removeAlias(field(request, 'alias', FIELD_MAX.address)));

  app.get('/limits', { preHandler: requireAdmin }, async (request, reply) =>
    page(reply, request, 'limits', { title: 'Sending limits', limits: config.limits, rows: await backends.sendLimits.list(Date.now()), done: doneMessage(request) }),
  );
  app.post('/limits/reset', { preHandler: requireAdmin }, async (request, reply) => {
    const user = field(request, 'user', FIELD_MAX.address);
    if (!user.includes('@')) throw new ConsoleError(400, 'user must be an address');
    return done(request, reply, '/admin/limits', await operations(request).resetLimits(user));
  });

  app.get('/audit', { preHandler: requireAdmin }, async (request, reply) => {
    const query = request.query as Record<string, unknown>;
    const filter: Record<string, string> = {};
    for (const key of ['actor', 'action', 'subject'] as const) {
      const value = query[key];
      if (typeof value === 'string' && value !== '') {
        if (value.length > FIELD_MAX.filter) throw new ConsoleError(400, `${key} may have at most ${FIELD_MAX.filter} characters`);
        filter[key] = value;
      }
    }
    return page(reply, request, 'audit', { title: 'Audit log', entries: await audit.recent(200, filter), filter });
  });

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    const status =
      error instanceof CsrfError ? 403
      : error instanceof OperationError ? error.status
      : error instanceof AccountError || error instanceof AdminError ? 400
      : error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode
      : 503;
    if (status >= 500) log.error({ event: 'admin_error', url: request.url, err: error }, 'admin console request failed');
    const message = error instanceof CsrfError ? `Refused: ${error.message}` : status < 500 ? error.message : 'The console cannot do this right now; the server log says why.';
    return page(reply.code(status), request, 'error', { title: `Not done (${status})`, message });
  });
}

/** A form field: a string of at most `max` characters (trimmed unless it is a secret); 400 otherwise. */
function field(request: FastifyRequest, name: string, max: number, trim = true): string {
  const value = (request.body as Record<string, unknown> | undefined)?.[name];
  if (typeof value !== 'string' || value.length === 0) throw new ConsoleError(400, `the form has no ${name}`);
  if (value.length > max) throw new ConsoleError(400, `${name} may have at most ${max} characters`);
  return trim ? value.trim() : value;
}

function optionalField(request: FastifyRequest, name: string, max: number): string | undefined {
  const value = (request.body as Record<string, unknown> | undefined)?.[name];
  return value === undefined || value === '' ? undefined : field(request, name, max);
}

/** Alias targets as typed: separated by commas, spaces or lines. */
function targetsOf(text: string): string[] {
  const targets = text.split(/[\s,]+/).filter((t) => t !== '');
  if (targets.length === 0 || targets.length > 50) throw new ConsoleError(400, 'give 1 to 50 target addresses');
  return targets;
}

/** The :id of a queue path; anything that is not a spool id (a traversal, a dot) is a 404 before any lookup. */
function queueId(request: FastifyRequest): string {
  const { id } = request.params as { id: string };
  if (!QUEUE_ID.test(id)) throw new ConsoleError(404, 'no such queued message');
  return id;
}
