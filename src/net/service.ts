import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { NetworkList, normalizeIp } from './ip.ts';
import type { ListenAddress } from './listen.ts';

import type { SecureContext } from 'node:tls';
import { LineConnection, type ConnectionTexts, type LineConnectionSettings, type LineSession } from './line-connection.ts';

// What every line-protocol service shares: listeners, the limits on connections in total and
// per client address, a LineConnection per client, session bookkeeping, and a graceful stop.
// The protocols differ only in their sessions and in how they word things.

/** Limits and timing of a service, as its config section sets them. */
export interface ServiceOptions {
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** New connections per client address per minute (0: no limit); trusted networks exempt. */
  maxConnectionRatePerIp?: number;
  trustedNetworks?: readonly string[];
  maxLineLength: number;
  idleTimeoutMs: number;
  /** How long a TLS handshake may take (implicit TLS and STARTTLS); 30 s by default. */
  handshakeTimeoutMs?: number;
  /** Client errors tolerated before the connection is closed; 20 by default. */
  maxErrors?: number;
  /** Pause before answering the n-th client error: n times this (0 by default). */
  errorDelayMs?: number;
}

/** The protocol's words for what the service itself decides. */
export interface ServiceTexts extends ConnectionTexts {
  tooManyConnections: (scope: 'from your address' | 'on this server' | 'from your address in a short time') => string;
}

export interface ServiceDependencies {
  log: Logger;
  /** The current certificate (it may be reloaded), or undefined when TLS is not configured. */
  tls: () => SecureContext | undefined;
}

/** What a listener's context makes of a new connection: the session, and whether TLS comes first. */
export type SessionOpener<Context> = (connection: LineConnection, context: Context) => { session: LineSession; implicitTls: boolean };

export class ServiceListeners<Context> {
  readonly #name: string;
  readonly #options: ServiceOptions;
  readonly #texts: ServiceTexts;
  readonly #connection: LineConnectionSettings;
  readonly #log: Logger;
  readonly #open: SessionOpener<Context>;
  readonly #servers: Server[] = [];
  readonly #sessions = new Set<LineConnection>();
  readonly #perIp = new Map<string, number>();
  /** Token buckets for the connection rate: capacity = rate, refilled over a minute. */
  readonly #rate = new Map<string, { tokens: number; at: number }>();
  readonly #trusted: NetworkList;
  #nextId = 0;
  #closing = false;

  /** `name` ("pop3", "smtp") appears in logs and session ids. */
  constructor(name: string, options: ServiceOptions, texts: ServiceTexts, deps: ServiceDependencies, open: SessionOpener<Context>) {
    this.#name = name;
    this.#options = options;
    this.#texts = texts;
    this.#connection = {
      protocol: name,
      maxLineLength: options.maxLineLength,
      idleTimeoutMs: options.idleTimeoutMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
      maxErrors: options.maxErrors ?? 20,
      errorDelayMs: options.errorDelayMs ?? 0,
      tls: deps.tls,
    };
    this.#log = deps.log;
    this.#open = open;
    this.#trusted = new NetworkList(options.trustedNetworks ?? []);
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Starts listening; resolves to the bound address (port 0 yields a free port). */
  async listen(address: ListenAddress, label: string, context: Context): Promise<ListenAddress> {
    const server = createServer({ noDelay: true }, (socket) => this.#accept(socket, context));
    server.on('error', (error) => this.#log.error({ err: error, listener: label }, 'listener error'));
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
    this.#log.info({ event: 'listening', listener: label, address: result }, `${label} listening`);
    return result;
  }

  #accept(socket: Socket, context: Context): void {
    const ip = normalizeIp(socket.remoteAddress);
    socket.on('error', () => {}); // a reset by the peer is routine; the session logs its own end
    if (this.#closing) return this.#refuse(socket, this.#texts.shuttingDown);
    const perIp = this.#perIp.get(ip) ?? 0;
    if (this.#sessions.size >= this.#options.maxConnections || perIp >= this.#options.maxConnectionsPerIp) {
      const scope = perIp >= this.#options.maxConnectionsPerIp ? 'from your address' : 'on this server';
      this.#log.warn({ event: 'connection_refused', service: this.#name, ip, reason: `too many connections ${scope}` }, 'connection refused');
      return this.#refuse(socket, this.#texts.tooManyConnections(scope));
    }
    if (!this.#withinRate(ip)) {
      this.#log.warn({ event: 'connection_refused', service: this.#name, ip, reason: 'connection rate' }, 'connection refused');
      return this.#refuse(socket, this.#texts.tooManyConnections('from your address in a short time'));
    }
    this.#perIp.set(ip, perIp + 1);
    const id = `${this.#name[0]}${(++this.#nextId).toString(36)}${process.pid.toString(36)}`;
    const connection = new LineConnection(socket, ip, id, this.#connection, this.#texts, this.#log);
    this.#sessions.add(connection);
    connection.onClosed = () => {
      this.#sessions.delete(connection);
      const left = (this.#perIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.#perIp.delete(ip);
      else this.#perIp.set(ip, left);
    };
    const { session, implicitTls } = this.#open(connection, context);
    connection.start(session, implicitTls);
  }

  #withinRate(ip: string): boolean {
    const rate = this.#options.maxConnectionRatePerIp ?? 0;
    if (rate <= 0 || this.#trusted.has(ip)) return true;
    const now = Date.now();
    let bucket = this.#rate.get(ip);
    if (!bucket) {
      if (this.#rate.size >= 100_000) {
        // Under a flood of addresses, forget the full buckets (nothing is lost by that).
        for (const [key, b] of this.#rate) if (b.tokens + ((now - b.at) * rate) / 60_000 >= rate) this.#rate.delete(key);
        if (this.#rate.size >= 100_000) this.#rate.clear();
      }
      bucket = { tokens: rate, at: now };
      this.#rate.set(ip, bucket);
    }
    bucket.tokens = Math.min(rate, bucket.tokens + ((now - bucket.at) * rate) / 60_000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  #refuse(socket: Socket, reply: string): void {
    socket.end(`${reply}\r\n`);
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  /** Stops accepting, lets sessions finish for `graceMs`, then ends the rest. */
  async close(graceMs: number): Promise<void> {
    this.#closing = true;
    // server.close() completes only once every connection is gone, so the sessions are told
    // to end before that is awaited.
    const listenersClosed = Promise.all(this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    for (const session of this.#sessions) session.shutdownWhenIdle();
    const deadline = Date.now() + graceMs;
    while (this.#sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await Promise.all([...this.#sessions].map((session) => session.abort(this.#texts.shuttingDown)));
    await listenersClosed;
  }
}
