import type { FastifyReply, FastifyRequest } from 'fastify';

// A customer's login on the self-service pages, kept in the browser and nowhere else: popgate
// has no session table in its stores, and every worker and node must accept what another
// issued. The cookie holds the address, when the login happened, when the customer was last
// seen and the account's password stamp (AccountStore.passwordStamp), signed by
// @fastify/cookie with the site secret (src/web/security.ts). So:
//
// - nobody can forge or alter one without the secret (a bad signature is no session);
// - it ends after IDLE_MS without a request and ABSOLUTE_MS after the login whatever happens
//   (OWASP Session Management Cheat Sheet, "Session Expiration");
// - a password change (here, with the CLI, anywhere) ends every session that carries the old
//   stamp, because each request compares it with the stored one; a removed account has none;
// - logging out clears the cookie (a copy kept elsewhere lasts until its idle end).
//
// The cookie is HttpOnly, SameSite=Strict, Secure over HTTPS, and only sent to /account.

export const ACCOUNT_COOKIE = 'popgate_account';
export const ACCOUNT_PATH = '/account';
/** No request for this long ends the session. */
export const IDLE_MS = 30 * 60_000;
/** No session lasts longer than this after its login. */
export const ABSOLUTE_MS = 12 * 3600_000;

export interface CustomerSession {
  address: string;
  /** When the customer logged in (ms). */
  loggedInAt: number;
  /** When the customer was last seen (ms). */
  seenAt: number;
  /** The account's password stamp at login. */
  stamp: string;
}

/** Writes the session into the signed cookie (a new one, or the same with a new seenAt). */
export function writeSession(request: FastifyRequest, reply: FastifyReply, session: CustomerSession): void {
  const value = Buffer.from(JSON.stringify([session.address, session.loggedInAt, session.seenAt, session.stamp])).toString('base64url');
  reply.setCookie(ACCOUNT_COOKIE, value, { signed: true, httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', path: ACCOUNT_PATH });
}

export function clearSession(request: FastifyRequest, reply: FastifyReply): void {
  reply.clearCookie(ACCOUNT_COOKIE, { httpOnly: true, sameSite: 'strict', secure: request.protocol === 'https', path: ACCOUNT_PATH });
}

/**
 * The session the request's cookie carries, if its signature checks out and it has not run
 * out by time; whether its stamp is still the account's is for the caller to ask the store.
 */
export function readSession(request: FastifyRequest, now: number): CustomerSession | undefined {
  const raw = request.cookies[ACCOUNT_COOKIE];
  if (!raw) return undefined;
  const unsigned = request.unsignCookie(raw);
  if (!unsigned.valid || !unsigned.value) return undefined;
  let fields: unknown;
  try {
    fields = JSON.parse(Buffer.from(unsigned.value, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(fields) || fields.length !== 4) return undefined;
  const [address, loggedInAt, seenAt, stamp] = fields as unknown[];
  if (typeof address !== 'string' || typeof loggedInAt !== 'number' || typeof seenAt !== 'number' || typeof stamp !== 'string') return undefined;
  if (now - seenAt > IDLE_MS || now - loggedInAt > ABSOLUTE_MS || seenAt > now + 60_000) return undefined;
  return { address, loggedInAt, seenAt, stamp };
}
