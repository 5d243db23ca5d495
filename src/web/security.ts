import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';

// The web side's sessions and CSRF tokens, for every form that changes something (the
// customer self-service pages, their login and the admin console's login). The public help
// pages change nothing and make neither: their language switch is a link (src/web/site.ts
// says why).
//
// - a browser session is a random id in a signed cookie (@fastify/cookie signs with the site
//   secret): HttpOnly, SameSite=Strict, Secure over HTTPS;
// - a CSRF token is an HMAC of that id under the same secret (the "signed double-submit
//   cookie" of OWASP's CSRF cheat sheet), so no server state is needed and every worker
//   process checks what another issued. A form carries it in a hidden field `csrf`.
//
// The secret is in data_dir/web/secret (created once, mode 0600), shared by the workers and
// the nodes of a cluster that share data_dir, and kept across restarts so sessions survive.

export const SESSION_COOKIE = 'popgate_session';
export const CSRF_FIELD = 'csrf';

/** The site secret; created on first use. Two processes creating it at once agree on one. */
export function loadSiteSecret(dataDir: string): string {
  const dir = join(dataDir, 'web');
  const path = join(dir, 'secret');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    writeFileSync(path, randomBytes(32).toString('base64url'), { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const secret = readFileSync(path, 'utf8').trim();
  if (secret.length < 32) throw new Error(`${path} holds no usable secret: remove it and restart`);
  return secret;
}

export class CsrfError extends Error {}

export class BrowserSessions {
  readonly #secret: string;

  constructor(secret: string) {
    this.#secret = secret;
  }

  /** The request's session id, from a cookie whose signature checks out; undefined if none. */
  sessionId(request: FastifyRequest): string | undefined {
    const raw = request.cookies[SESSION_COOKIE];
    if (!raw) return undefined;
    const unsigned = request.unsignCookie(raw);
    return unsigned.valid && unsigned.value && /^[A-Za-z0-9_-]{22,64}$/.test(unsigned.value) ? unsigned.value : undefined;
  }

  /** The session id, starting a session (and setting its cookie) when there is none. */
  ensureSession(request: FastifyRequest, reply: FastifyReply): string {
    const existing = this.sessionId(request);
    if (existing) return existing;
    const id = randomBytes(18).toString('base64url');
    reply.setCookie(SESSION_COOKIE, id, { signed: true, httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', path: '/' });
    return id;
  }

  /** The token a form of this session must send back. */
  csrfToken(request: FastifyRequest, reply: FastifyReply): string {
    return this.#tokenFor(this.ensureSession(request, reply));
  }

  /** Throws CsrfError unless the request carries the token of its own session. */
  verifyCsrf(request: FastifyRequest): void {
    const session = this.sessionId(request);
    const body = request.body as Record<string, unknown> | undefined;
    const sent = typeof body?.[CSRF_FIELD] === 'string' ? (body[CSRF_FIELD] as string) : request.headers['x-csrf-token'];
    if (!session) throw new CsrfError('no valid session cookie (are cookies enabled?)');
    if (typeof sent !== 'string' || sent.length === 0) throw new CsrfError('the form carries no CSRF token');
    const expected = Buffer.from(this.#tokenFor(session));
    const given = Buffer.from(sent);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new CsrfError('the CSRF token does not belong to this session');
  }

  #tokenFor(session: string): string {
    return createHmac('sha256', this.#secret).update(`csrf:${session}`).digest('base64url');
  }
}
