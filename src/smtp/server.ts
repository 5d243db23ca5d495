import { createServer, type Server, type Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from '../log/logger.ts';
import type { Mailstore } from '../mailstore/store.ts';
import { normalizeIp } from '../net/ip.ts';
import type { ListenAddress } from '../net/listen.ts';
import type { MailPolicy } from '../policy/mail-policy.ts';
import type { Spool } from '../queue/spool.ts';
import { TLS_MIN_VERSION } from '../tls/context.ts';
import { SmtpSession } from './session.ts';

export interface SmtpOptions {
  hostname: string;
  maxMessageSize: number;
  maxRecipients: number;
  maxLineLength: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  idleTimeoutMs: number;
  maxErrors: number;
  errorDelayMs: number;
  handshakeTimeoutMs?: number;
}

export interface SmtpDependencies {
  policy: MailPolicy;
  mailstore: Mailstore;
  spool: Spool;
  log: Logger;
  tls: () => SecureContext | undefined;
}

/** The port 25 role: inbound mail for local domains, relay for POP-before-SMTP clients. */
export class SmtpServer {
  readonly options: Required<SmtpOptions>;
  readonly deps: SmtpDependencies;
  readonly #servers: Server[] = [];
  readonly #sessions = new Set<SmtpSession>();
  readonly #perIp = new Map<string, number>();
  #nextId = 0;
  #closing = false;

  constructor(options: SmtpOptions, deps: SmtpDependencies) {
    this.options = { handshakeTimeoutMs: 30_000, ...options };
    this.deps = deps;
  }

  async listen(address: ListenAddress): Promise<ListenAddress> {
    const server = createServer({ noDelay: true }, (socket) => this.#accept(socket));
    server.on('error', (error) => this.deps.log.error({ err: error }, 'smtp listener error'));
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
    this.deps.log.info({ event: 'listening', listener: 'smtp', address: result }, 'smtp listening');
    return result;
  }

  #accept(socket: Socket): void {
    const ip = normalizeIp(socket.remoteAddress);
    socket.on('error', () => {});
    if (this.#closing) {
      socket.end('421 4.3.2 Server is shutting down, try again later\r\n');
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const perIp = this.#perIp.get(ip) ?? 0;
    if (this.#sessions.size >= this.options.maxConnections || perIp >= this.options.maxConnectionsPerIp) {
      const scope = perIp >= this.options.maxConnectionsPerIp ? 'from your address' : 'on this server';
      this.deps.log.warn({ event: 'connection_refused', ip, reason: `too many connections ${scope}` }, 'smtp connection refused');
      socket.end(`421 4.7.0 Too many connections ${scope}, try again later\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.#perIp.set(ip, perIp + 1);
    const id = `s${(++this.#nextId).toString(36)}${process.pid.toString(36)}`;
    const session = new SmtpSession(this, socket, ip, id);
    this.#sessions.add(session);
    session.onClosed = () => {
      this.#sessions.delete(session);
      const left = (this.#perIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.#perIp.delete(ip);
      else this.#perIp.set(ip, left);
    };
    session.start();
  }

  wrapTls(socket: Socket): TLSSocket {
    return new TLSSocket(socket, { isServer: true, secureContext: this.deps.tls(), minVersion: TLS_MIN_VERSION });
  }

  /** Stops accepting; sessions finish the message they are receiving, then get 421. */
  async close(graceMs = 5000): Promise<void> {
    this.#closing = true;
    const listenersClosed = Promise.all(this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    for (const session of this.#sessions) session.shutdownWhenIdle();
    const deadline = Date.now() + graceMs;
    while (this.#sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all([...this.#sessions].map((session) => session.abort('421 4.3.2 Server is shutting down, try again later')));
    await listenersClosed;
  }
}
