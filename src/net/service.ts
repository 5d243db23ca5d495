import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { NetworkList, normalizeIp } from './ip.ts';
import type { ListenAddress } from './listen.ts';

// What every protocol service shares: listeners, the limits on connections in total and per
// client address, session bookkeeping, and a graceful stop. The protocols differ only in
// their sessions and in how they word a refusal.

export interface ServiceSession {
  onClosed?: () => void;
  /** Ends the session once it is between commands. */
  shutdownWhenIdle(): void;
  /** Ends the session now with a last reply. */
  abort(text: string): Promise<void>;
}

export interface ServiceSettings {
  /** "pop3", "smtp": for logs and session ids. */
  name: string;
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** New connections per client address per minute (0: no limit); trusted networks exempt. */
  maxConnectionRatePerIp?: number;
  trustedNetworks?: readonly string[];
  /** The protocol's words for refusing a connection. */
  shuttingDownReply: string;
  tooManyReply: (scope: 'from your address' | 'on this server' | 'from your address in a short time') => string;
}

export class ServiceListeners<Session extends ServiceSession, Context> {
  readonly #settings: ServiceSettings;
  readonly #log: Logger;
  readonly #createSession: (socket: Socket, ip: string, id: string, context: Context) => Session;
  readonly #servers: Server[] = [];
  readonly #sessions = new Set<Session>();
  readonly #perIp = new Map<string, number>();
  /** Token buckets for the connection rate: capacity = rate, refilled over a minute. */
  readonly #rate = new Map<string, { tokens: number; at: number }>();
  readonly #trusted: NetworkList;
  #nextId = 0;
  #closing = false;

  constructor(settings: ServiceSettings, log: Logger, createSession: (socket: Socket, ip: string, id: string, context: Context) => Session) {
    this.#settings = settings;
    this.#log = log;
    this.#createSession = createSession;
    this.#trusted = new NetworkList(settings.trustedNetworks ?? []);
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
    if (this.#closing) return this.#refuse(socket, this.#settings.shuttingDownReply);
    const perIp = this.#perIp.get(ip) ?? 0;
    if (this.#sessions.size >= this.#settings.maxConnections || perIp >= this.#settings.maxConnectionsPerIp) {
      const scope = perIp >= this.#settings.maxConnectionsPerIp ? 'from your address' : 'on this server';
      this.#log.warn({ event: 'connection_refused', service: this.#settings.name, ip, reason: `too many connections ${scope}` }, 'connection refused');
      return this.#refuse(socket, this.#settings.tooManyReply(scope));
    }
    if (!this.#withinRate(ip)) {
      this.#log.warn({ event: 'connection_refused', service: this.#settings.name, ip, reason: 'connection rate' }, 'connection refused');
      return this.#refuse(socket, this.#settings.tooManyReply('from your address in a short time'));
    }
    this.#perIp.set(ip, perIp + 1);
    const id = `${this.#settings.name[0]}${(++this.#nextId).toString(36)}${process.pid.toString(36)}`;
    const session = this.#createSession(socket, ip, id, context);
    this.#sessions.add(session);
    session.onClosed = () => {
      this.#sessions.delete(session);
      const left = (this.#perIp.get(ip) ?? 1) - 1;
      if (left <= 0) this.#perIp.delete(ip);
      else this.#perIp.set(ip, left);
    };
  }

  #withinRate(ip: string): boolean {
    const rate = this.#settings.maxConnectionRatePerIp ?? 0;
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
    await Promise.all([...this.#sessions].map((session) => session.abort(this.#settings.shuttingDownReply)));
    await listenersClosed;
  }
}
