// SASL as POP3 AUTH (RFC 5034) and SMTP AUTH (RFC 4954) both use it: the PLAIN (RFC 4616) and
// LOGIN mechanisms, base64 on the wire, "*" to cancel (RFC 4954 §4, RFC 5034 §4), and "=" for
// an empty initial response. The protocols differ only in how they frame a challenge ("+ " or
// "334 ") and word the outcome; the exchange itself is here, once.

export const SASL_MECHANISMS = ['PLAIN', 'LOGIN'] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

export interface SaslCredentials {
  /** The authentication identity (the login name as typed). */
  username: string;
  password: string;
  /** PLAIN's authorization identity when the client gave one (RFC 4616 §2). */
  authzid?: string;
}

/** One step of an exchange: more is needed, or it ended one way or another. */
export type SaslStep =
  | { kind: 'challenge'; challenge: string }
  | { kind: 'credentials'; credentials: SaslCredentials }
  | { kind: 'cancelled' }
  /** The response is not base64. */
  | { kind: 'malformed' };

/** "Username:" and "Password:", the LOGIN mechanism's customary prompts. */
const USERNAME_PROMPT = Buffer.from('Username:').toString('base64');
const PASSWORD_PROMPT = Buffer.from('Password:').toString('base64');

export class SaslExchange {
  readonly mechanism: SaslMechanism;
  #username: string | undefined;

  private constructor(mechanism: SaslMechanism) {
    this.mechanism = mechanism;
  }

  /** undefined when the mechanism is not offered. */
  static for(mechanism: string): SaslExchange | undefined {
    const name = mechanism.toUpperCase();
    return (SASL_MECHANISMS as readonly string[]).includes(name) ? new SaslExchange(name as SaslMechanism) : undefined;
  }

  /** The first step: the initial response if the client sent one with the command, else the first challenge. */
  begin(initialResponse: string | undefined): SaslStep {
    if (initialResponse !== undefined) return this.respond(initialResponse);
    return { kind: 'challenge', challenge: this.mechanism === 'PLAIN' ? '' : USERNAME_PROMPT };
  }

  /** The client's answer to the last challenge. */
  respond(line: string): SaslStep {
    const text = line.trim();
    if (text === '*') return { kind: 'cancelled' };
    const decoded = decodeBase64(text);
    if (decoded === undefined) return { kind: 'malformed' };
    if (this.mechanism === 'LOGIN') {
      if (this.#username === undefined) {
        this.#username = decoded.toString('utf8');
        return { kind: 'challenge', challenge: PASSWORD_PROMPT };
      }
      return { kind: 'credentials', credentials: { username: this.#username, password: decoded.toString('utf8') } };
    }
    // RFC 4616 §2: [authzid] NUL authcid NUL passwd. Anything else is a login that fails like
    // a wrong password (and counts as one): no password is taken from a message of another shape.
    const parts = decoded.toString('utf8').split('\0');
    if (parts.length !== 3) return { kind: 'credentials', credentials: { username: parts[1] ?? '', password: '' } };
    const [authzid, username, password] = parts;
    return { kind: 'credentials', credentials: authzid === '' ? { username, password } : { username, password, authzid } };
  }
}

/** Strict base64: undefined when it is not (RFC 4648 §4 alphabet, padded); "=" is empty. */
export function decodeBase64(text: string): Buffer | undefined {
  if (text === '=') return Buffer.alloc(0);
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}
