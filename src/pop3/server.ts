import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { AccountStore } from '../accounts/store.ts';
import type { Logger } from '../log/logger.ts';
import type { ListenAddress } from '../net/listen.ts';
import { normalizeIp } from '../net/ip.ts';
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
  readonly #servers: Server[] = [];
  readonly #sessions = new Set<Pop3Session>();
  readonly #perIp = new Map<string, number>();
  #nextId = 0;
  #closing = false;

  constructor(options: Pop3Options, deps: Pop3Dependencies) {
    this.options = { handshakeTimeoutMs: 30_000, maxErrors: 20, ...options };
    this.deps = deps;
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Starts listening; resolves to the bound addresses (port 0 yields a free port). */
  async listen(address: ListenAddress, implicitTls: boolean): Promise<ListenAddress> {
    if (implicitTls && !this.deps.tls()) throw new Error('pop3s needs a TLS certificate');
    const server = createServer({ noDelay: true, pauseOnConnect: false }, (socket) => this.#accept(socket, implicitTls));
    server.on('error', (error) => this.deps.log.error({ err: error }, 'pop3 listener error'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address.host, port: address.port, backlog: 1024 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#servers.push(server);
    const bound = server.address();
    const result = typeof bound === 'object' && bound ? { host: bound.address, port: bound.port } : address;
    this.deps.log.info({ event: 'listening', listener: implicitTls ? 'pop3s' : 'pop3', address: result }, 'pop3 listening');
    return result;
  }

  #accept(socket: Socket, implicitTls: boolean): void {
    const ip = normalizeIp(socket.remoteAddress);
    socket.on('error', () => {}); // a reset by the peer is routine; the session logs its own end
    if (this.#closing) {
      socket.end('-ERR [SYS/TEMP] Server is shutting down, try again in a minute\r\n');
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const perIp = this.#perIp.get(ip) ?? 0;
    if (this.#sessions.size >= this.options.maxConnections || perIp >= this.options.maxConnectionsPerIp) {
      const scope = perIp >= this.options.maxConnectionsPerIp ? 'from your address' : 'on this server';
      this.deps.log.warn({ event: 'connection_refused', ip, reason: `too many connections ${scope}` }, 'pop3 connection refused');
      socket.end(`-ERR [SYS/TEMP] Too many connections ${scope}, try again later\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.#perIp.set(ip, perIp + 1);
    const id = `p${(++this.#nextId).toString(36)}${process.pid.toString(36)}`;
    const session = new Pop3Session(this, socket, ip, id);
    this.#sessions.add(session);
    session.onClosed = () => {
      this.#sessions.delete(session);
      const left = (this.#perIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.#perIp.delete(ip);
      else this.#perIp.set(ip, left);
    };
    if (implicitTls) session.startImplicitTls();
    else session.start();
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
  async close(graceMs = 5000): Promise<void> {
    this.#closing = true;
    // server.close() stops accepting at once but completes only when every connection is gone,
    // so the sessions must be told to end before that is awaited.
    const listenersClosed = Promise.all(this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    for (const session of this.#sessions) session.shutdownWhenIdle();
    const deadline = Date.now() + graceMs;
    while (this.#sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all([...this.#sessions].map((session) => session.abort('-ERR [SYS/TEMP] Server is shutting down, try again in a minute')));
    await listenersClosed;
  }
}
