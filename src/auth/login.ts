import { createHash, timingSafeEqual } from 'node:crypto';
import { loginAddress, parseAddress } from '../accounts/address.ts';
import type { AccountStore } from '../accounts/store.ts';
import type { Logger } from '../log/logger.ts';
import { plaintextLoginAllowed, type LoginGuard } from '../policy/login-guard.ts';
import type { SaslCredentials } from './sasl.ts';
import type { MailMetrics } from '../metrics/metrics.ts';

// The one login path of every protocol: POP3 USER/PASS, POP3 AUTH, APOP, SMTP AUTH and the
// customer's web login all come here. In order: the plaintext-without-TLS rule, the login
// guard (a locked-out address or account gets no answer on its guess), the credential check,
// the guard's delay after a failure, what the protocol must do before it may say yes (POP3
// locks and lists the maildrop), the login hooks (POP-before-SMTP grants), and one log line
// either way. The protocols only word the outcome.

/** Emitted before a POP3 "+OK" to a successful login, so POP-before-SMTP sees it with zero lag. */
export interface LoginEvent {
  ip: string;
  user: string;
  at: number;
  mechanism: string;
  tls: boolean;
}

export type LoginHook = (event: LoginEvent) => Promise<void>;

export type LoginOutcome<Admitted = undefined> =
  | { ok: true; user: string; admitted: Admitted }
  /** Too many failures: refused without looking at the credentials. */
  | { ok: false; reason: 'locked'; retryAfterMs: number; scope: 'address' | 'account' }
  /** Wrong name or password (answered after the guard's delay). */
  | { ok: false; reason: 'failed' }
  /** A password would cross the network without TLS where the config forbids it. */
  | { ok: false; reason: 'plaintext' }
  /** The protocol could not admit the user (POP3: maildrop in use, unreadable); it logged why. */
  | { ok: false; reason: 'refused'; refusal: string }
  /** The accounts (or a login hook) cannot be reached right now: a temporary failure, not counted. */
  | { ok: false; reason: 'unavailable' };

/** The connection a login happens on: where from, whether encrypted, and whether still there. */
export interface LoginConnection {
  readonly ip: string;
  readonly secure: boolean;
  readonly isClosed: boolean;
  readonly log: Logger;
  sleep(ms: number): Promise<void>;
}

/**
 * What a protocol does between "the credentials are right" and "+OK": POP3 takes the maildrop
 * lock and lists it. A refusal ends the login without hooks; `undo` runs if a hook fails or the
 * client has gone, `details` are logged with the login.
 */
export type Admission<Admitted> = (user: string) => Promise<
  { ok: true; admitted: Admitted; undo(): Promise<void>; details?: Record<string, unknown> } | { ok: false; refusal: string }
>;

export interface LoginAttempt<Admitted> {
  /** 'web': the customer's self-service pages (src/web/account), guarded like the mail logins. */
  protocol: 'pop3' | 'smtp' | 'web';
  /** "USER", "APOP", "AUTH PLAIN" ... for logs and hooks. */
  mechanism: string;
  connection: LoginConnection;
  admit?: Admission<Admitted>;
  /** Run the login hooks (POP3 logins earn POP-before-SMTP grants; SMTP AUTH does not). */
  hooks: boolean;
}

export interface LoginSettings {
  plaintextWithoutTls: 'loopback' | 'anywhere' | 'never';
  /** A bare "alice" logs in as alice@<this> when set. */
  defaultDomain: string;
}

export class LoginService {
  readonly #accounts: AccountStore;
  readonly #guard: LoginGuard;
  readonly #settings: LoginSettings;
  /** Awaited in order before a POP3 "+OK"; a throwing hook fails the login. */
  readonly hooks: LoginHook[] = [];

  readonly #metrics: Pick<MailMetrics, 'login' | 'lockout'> | undefined;

  constructor(accounts: AccountStore, guard: LoginGuard, settings: LoginSettings, metrics?: Pick<MailMetrics, 'login' | 'lockout'>) {
    this.#accounts = accounts;
    this.#guard = guard;
    this.#settings = settings;
    this.#metrics = metrics;
  }

  /** RFC 2595 §2, RFC 8314: passwords in the clear only over TLS, unless the config allows it. */
  plaintextAllowed(connection: { ip: string; secure: boolean }): boolean {
    return plaintextLoginAllowed(this.#settings.plaintextWithoutTls, connection.ip, connection.secure);
  }

  /** USER/PASS, or the password of AUTH LOGIN. */
  password<A>(attempt: LoginAttempt<A>, name: string, password: string): Promise<LoginOutcome<A>> {
    return this.#counted(attempt, this.#password(attempt, name, password));
  }

  #password<A>(attempt: LoginAttempt<A>, name: string, password: string): Promise<LoginOutcome<A>> {
    if (!this.plaintextAllowed(attempt.connection)) return Promise.resolve({ ok: false, reason: 'plaintext' });
    return this.#login(attempt, name, async (address) => (password === '' ? undefined : (await this.#accounts.authenticate(address, password))?.address));
  }

  /**
   * SASL PLAIN or LOGIN credentials. RFC 4616 §2: an authorization identity other than the
   * login name asks to act as someone else, which is not offered: the login fails (and counts
   * as a failure, so it cannot be used to probe passwords for free).
   */
  sasl<A>(attempt: LoginAttempt<A>, credentials: SaslCredentials): Promise<LoginOutcome<A>> {
    if (!this.plaintextAllowed(attempt.connection)) return this.#counted(attempt, Promise.resolve({ ok: false, reason: 'plaintext' }));
    const { username, password, authzid } = credentials;
    if (authzid !== undefined && this.#address(authzid).toLowerCase() !== this.#address(username).toLowerCase()) {
      return this.#counted(attempt, this.#login(attempt, username, () => Promise.resolve(undefined)));
    }
    return this.password(attempt, username, password);
  }

  /**
   * APOP (RFC 1939 §7): MD5 of the greeting's banner and a secret the server can read back,
   * kept apart from the login password. Not a plaintext password, so allowed without TLS.
   */
  apop<A>(attempt: LoginAttempt<A>, name: string, banner: string, digestHex: string): Promise<LoginOutcome<A>> {
    return this.#counted(attempt, this.#login(attempt, name, async (address) => {
      const secret = await this.#accounts.getApopSecret(address);
      if (secret === undefined) return undefined;
      const expected = createHash('md5').update(banner + secret).digest();
      return timingSafeEqual(expected, Buffer.from(digestHex, 'hex')) ? parseAddress(address)?.address : undefined;
    }));
  }

  /** Every outcome of every mechanism is counted here, once, with the time it took to answer. */
  async #counted<A>(attempt: LoginAttempt<A>, outcome: Promise<LoginOutcome<A>>): Promise<LoginOutcome<A>> {
    const start = performance.now();
    const result = await outcome;
    this.#metrics?.login(attempt.protocol, result.ok ? 'success' : result.reason, (performance.now() - start) / 1000);
    return result;
  }

  #address(name: string): string {
    return loginAddress(name, this.#settings.defaultDomain);
  }

  /** `verify` answers the account's canonical address when the credentials are right. */
  async #login<A>(attempt: LoginAttempt<A>, name: string, verify: (address: string) => Promise<string | undefined>): Promise<LoginOutcome<A>> {
    const { connection, mechanism, protocol } = attempt;
    const log = connection.log;
    const address = this.#address(name);
    // Up to the admission nothing is held, so a failure of a store there is only "try again".
    try {
      return await this.#attempt(attempt, address, verify);
    } catch (error) {
      // The account store (or the guard's) is unreachable: nobody is told the password was
      // wrong, nothing is counted, and the client retries.
      log.error({ event: 'login_unavailable', protocol, mechanism, user: address, err: error }, `${protocol} login cannot be checked right now`);
      return { ok: false, reason: 'unavailable' };
    }
  }

  async #attempt<A>(attempt: LoginAttempt<A>, address: string, verify: (address: string) => Promise<string | undefined>): Promise<LoginOutcome<A>> {
    const { connection, mechanism, protocol } = attempt;
    const log = connection.log;
    const verdict = await this.#guard.check(connection.ip, address || undefined);
    if (verdict.locked) {
      log.warn({ event: 'login_refused_locked', protocol, mechanism, user: address, scope: verdict.scope }, 'login refused: locked out');
      return { ok: false, reason: 'locked', retryAfterMs: verdict.retryAfterMs, scope: verdict.scope };
    }
    const user = address === '' ? undefined : await verify(address);
    if (user === undefined) {
      const { delayMs, locked } = await this.#guard.failure(connection.ip, address || undefined);
      if (locked) this.#metrics?.lockout();
      log.info({ event: 'login_failed', protocol, mechanism, user: address, locked }, `${protocol} login failed`);
      // RFC 1939 §13, RFC 4954 §4: a pause after a failed login slows password guessing.
      if (delayMs > 0) await connection.sleep(delayMs);
      return { ok: false, reason: 'failed' };
    }
    // A client that left during the check learns nothing and is granted nothing.
    if (connection.isClosed) return { ok: false, reason: 'failed' };
    let admission: Awaited<ReturnType<Admission<A>>> = { ok: true, admitted: undefined as A, undo: async () => {} };
    if (attempt.admit) {
      admission = await attempt.admit(user);
      if (!admission.ok) return { ok: false, reason: 'refused', refusal: admission.refusal };
    }
    if (connection.isClosed) {
      await admission.undo();
      return { ok: false, reason: 'failed' };
    }
    if (attempt.hooks) {
      const event: LoginEvent = { ip: connection.ip, user, at: Date.now(), mechanism, tls: connection.secure };
      try {
        for (const hook of this.hooks) await hook(event);
      } catch (error) {
        await admission.undo();
        log.error({ err: error, user }, 'login hook failed');
        return { ok: false, reason: 'unavailable' };
      }
    }
    // The login stands; a guard that cannot note it only logs (the admission is held now).
    await this.#guard.success(connection.ip, user).catch((error) => log.error({ err: error, user }, 'cannot record the successful login'));
    log.info({ event: 'login', protocol, mechanism, tls: connection.secure, user, ...admission.details }, `${protocol} login`);
    return { ok: true, user, admitted: admission.admitted };
  }
}
