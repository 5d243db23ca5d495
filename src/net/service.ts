import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log/logger.ts';
import { NetworkList, normalizeIp } from './ip.ts';
import { formatListenAddress, type ListenAddress } from './listen.ts';

import type { SecureContext } from 'node:tls';
import { LocalConnectionRegistry, type ConnectionRegistry } from './connection-registry.ts';
import { LineConnection, type ConnectionTexts, type LineConnectionSettings, type LineSession } from './line-connection.ts';
import type { MailMetrics } from '../metrics/metrics.ts';
import { readProxiedClient, refuseUnproxiedPeer } from './proxy-admission.ts';
import { DEFAULT_SINGLE_PEER_WARNING, SinglePeerWatch, type SinglePeerWarningSettings } from './single-peer-watch.ts';

// What every line-protocol service shares: listeners, the limits on connections in total and
// per client address, a LineConnection per client, session bookkeeping, and a graceful stop.
// The protocols differ only in their sessions and in how they word things.
//
// Behind a load balancer, a listener may take the client's address from a PROXY protocol
// header (HAProxy's doc/proxy-protocol.txt) that the balancer puts before the client's bytes.
// Such a listener believes a header only from its configured balancers and refuses every other
// peer outright: the spec (§2) forbids guessing whether a header is there, since a port that
// took both would let anyone claim any address, and a POP3 login "from" an address grants
// POP-before-SMTP relay to it. The header is read before anything else, TLS included (the
// balancer sends it in the clear), and its address is the connection's address for everything
// after: limits, logs, lockouts, grants, Received: lines.

/** Limits and timing of a service, as its config section sets them. */
export interface ServiceOptions {
  maxConnections: number;
  maxConnectionsPerIp: number;
  /** New connections per client address per minute (0: no limit); trusted networks exempt. */
  maxConnectionRatePerIp?: number;
  trustedNetworks?: readonly string[];
  maxLineLength: number;
  idleTimeoutMs: number;
  /** The longest a command line may take to arrive in all (see LineConnectionSettings); the idle timeout by default. */
  commandTimeoutMs?: number;
  /** The longest raw input (an SMTP DATA block) may take in all; the command deadline by default. */
  dataTimeoutMs?: number;
  /** How long a TLS handshake may take (implicit TLS and STARTTLS); 30 s by default. */
  handshakeTimeoutMs?: number;
  /** Client errors tolerated before the connection is closed; 20 by default. */
  maxErrors?: number;
  /** Pause before answering the n-th client error: n times this (0 by default). */
  errorDelayMs?: number;
  /** When a listener without the PROXY protocol warns that one address is all it sees; see SinglePeerWatch. */
  singlePeerWarning?: SinglePeerWarningSettings;
}

/** The protocol's words for what the service itself decides. */
export interface ServiceTexts extends ConnectionTexts {
  tooManyConnections: (scope: 'from your address' | 'on this server' | 'from your address in a short time') => string;
}

export interface ServiceDependencies {
  log: Logger;
  /** The current certificate (it may be reloaded), or undefined when TLS is not configured. */
  tls: () => SecureContext | undefined;
  /**
   * Where connections per address and their rate are counted, and this process's name in it:
   * shared by the workers or nodes that serve the same clients. In memory by default.
   */
  connections?: { registry: ConnectionRegistry; holder: string };
  /**
   * Bind with SO_REUSEPORT, so the workers of one machine each listen on the same addresses and
   * the kernel spreads connections over them. Off for a single process: there a second server
   * on the same port must fail (EADDRINUSE), not share it silently.
   */
  reusePort?: boolean;
  /** Where admitted connections and their durations are counted (src/metrics). */
  metrics?: Pick<MailMetrics, 'connectionOpened' | 'connectionClosed'>;
}

/** What a listener's context makes of a new connection: the session, and whether TLS comes first. */
export type SessionOpener<Context> = (connection: LineConnection, context: Context) => { session: LineSession; implicitTls: boolean };

/** One listening socket: its name in logs ("pop3s", "submission"), and how it finds the client's address. */
interface Listener<Context> {
  label: string;
  context: Context;
  /** The balancers that must send a PROXY header; undefined: every peer is the client itself. */
  proxyFrom: NetworkList | undefined;
  /** Only on listeners without the PROXY protocol. */
  singlePeer: SinglePeerWatch | undefined;
}

export class ServiceListeners<Context> {
  readonly #name: string;
  readonly #options: ServiceOptions;
  readonly #texts: ServiceTexts;
  readonly #connection: LineConnectionSettings;
  readonly #reusePort: boolean;
  readonly #log: Logger;
  readonly #metrics: ServiceDependencies['metrics'];
  readonly #open: SessionOpener<Context>;
  readonly #servers: Server[] = [];
  readonly #sessions = new Set<LineConnection>();
  readonly #registry: ConnectionRegistry;
  readonly #holder: string;
  readonly #trusted: NetworkList;
  readonly #singlePeerWarning: SinglePeerWarningSettings;
  /** The registry failed its last admission (its backend is away): logged once until it answers. */
  #registryDown = false;
  /** Connections accepted and still being admitted: they count towards max_connections too. */
  #admitting = 0;
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
      commandTimeoutMs: options.commandTimeoutMs ?? options.idleTimeoutMs,
      rawTimeoutMs: options.dataTimeoutMs ?? options.commandTimeoutMs ?? options.idleTimeoutMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 30_000,
      maxErrors: options.maxErrors ?? 20,
      errorDelayMs: options.errorDelayMs ?? 0,
      tls: deps.tls,
    };
    this.#log = deps.log;
    this.#metrics = deps.metrics;
    this.#open = open;
    this.#registry = deps.connections?.registry ?? new LocalConnectionRegistry();
    this.#reusePort = deps.reusePort ?? false;
    this.#holder = deps.connections?.holder ?? String(process.pid);
    this.#trusted = new NetworkList(options.trustedNetworks ?? []);
    this.#singlePeerWarning = options.singlePeerWarning ?? DEFAULT_SINGLE_PEER_WARNING;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Starts listening; resolves to the bound address (port 0 yields a free port). With
   * `address.proxyProtocolFrom`, connections from those networks start with a PROXY header and
   * all others are refused.
   */
  async listen(address: ListenAddress, label: string, context: Context): Promise<ListenAddress> {
    const proxyFrom = address.proxyProtocolFrom?.length ? new NetworkList(address.proxyProtocolFrom) : undefined;
    const listener: Listener<Context> = { label, context, proxyFrom, singlePeer: proxyFrom ? undefined : new SinglePeerWatch(this.#singlePeerWarning) };
    const server = createServer({ noDelay: true }, (socket) => void this.#accept(socket, listener));
    await new Promise<void>((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException) => reject(new Error(listenFailure(label, address, error)));
      server.once('error', failed);
      server.listen({ host: address.host, port: address.port, backlog: 1024, reusePort: this.#reusePort, exclusive: this.#reusePort }, () => {
        server.off('error', failed);
        resolve();
      });
    });
    server.on('error', (error) => this.#log.error({ err: error, listener: label }, 'listener error'));
    this.#servers.push(server);
    const bound = server.address();
    const result = typeof bound === 'object' && bound ? { host: bound.address, port: bound.port } : address;
    this.#log.info({ event: 'listening', listener: label, address: result, proxyProtocolFrom: proxyFrom?.entries }, `${label} listening`);
    return result;
  }

  async #accept(socket: Socket, listener: Listener<Context>): Promise<void> {
    const peer = normalizeIp(socket.remoteAddress);
    socket.on('error', () => {}); // a reset by the peer is routine; the session logs its own end
    if (listener.proxyFrom && !listener.proxyFrom.has(peer)) return refuseUnproxiedPeer(socket, peer, { log: this.#log, service: this.#name, listener: listener.label });
    const suspect = listener.singlePeer?.observe(peer);
    if (suspect !== undefined) this.#warnSinglePeer(suspect, listener.label);
    if (this.#closing) return this.#refuse(socket, this.#texts.shuttingDown);
    // The total is this process's own resource limit; per address, every process counts together.
    if (this.#sessions.size + this.#admitting >= this.#options.maxConnections) return this.#refuseTooMany(socket, peer, 'on this server');
    const id = `${this.#name[0]}${(++this.#nextId).toString(36)}${process.pid.toString(36)}`;
    this.#admitting++;
    let ip = peer;
    let verdict: 'admitted' | 'from your address' | 'from your address in a short time';
    try {
      if (listener.proxyFrom) {
        const client = await readProxiedClient(socket, peer, { log: this.#log, service: this.#name, listener: listener.label });
        if (client === undefined) return;
        ip = client;
      }
      verdict = await this.#admit(ip, id);
    } finally {
      this.#admitting--;
    }
    if (verdict !== 'admitted') return this.#refuseTooMany(socket, ip, verdict);
    const release = () => void this.#registry.release(this.#name, ip, this.#holder, id).catch((error) => this.#log.error({ err: error }, 'cannot release a connection count'));
    if (socket.destroyed || this.#closing) {
      release(); // gone, or the server began to stop, while it was being admitted
      return socket.destroyed ? undefined : this.#refuse(socket, this.#texts.shuttingDown);
    }
    // A proxied session's log lines name the balancer it came through, beside the client.
    const log = ip === peer ? this.#log : this.#log.child({ via: peer });
    const connection = new LineConnection(socket, ip, id, this.#connection, this.#texts, log);
    this.#sessions.add(connection);
    const opened = performance.now();
    this.#metrics?.connectionOpened(listener.label);
    connection.onClosed = () => {
      this.#sessions.delete(connection);
      this.#metrics?.connectionClosed(listener.label, (performance.now() - opened) / 1000);
      release();
    };
    const { session, implicitTls } = this.#open(connection, listener.context);
    connection.start(session, implicitTls);
  }

  #warnSinglePeer(ip: string, label: string): void {
    const { afterConnections } = this.#singlePeerWarning;
    this.#log.warn(
      { event: 'single_peer_address', service: this.#name, listener: label, ip, connections: afterConnections },
      `the first ${afterConnections} connections to ${label} all came from ${ip}: this looks like a load balancer that does not pass the client's address on. ` +
        `A POP3 login through it would grant POP-before-SMTP relay to ${ip}, that is, to everybody behind it. ` +
        `Have the balancer send the PROXY protocol (HAProxy: send-proxy-v2) and set proxy_protocol_from = ["${ip}"] in [${label}]`,
    );
  }

  /**
   * Per-address limits: live connections, then the rate (a connection refused for the first
   * takes no token). A registry that cannot answer (its backend is down) admits: the clients
   * of a provider are not turned away because a counter is unreachable; it is logged.
   */
  async #admit(ip: string, id: string): Promise<'admitted' | 'from your address' | 'from your address in a short time'> {
    const now = Date.now();
    try {
      if (!(await this.#registry.admit(this.#name, ip, this.#holder, id, this.#options.maxConnectionsPerIp, now))) return 'from your address';
      const rate = this.#options.maxConnectionRatePerIp ?? 0;
      if (rate > 0 && !this.#trusted.has(ip) && !(await this.#registry.takeToken(this.#name, ip, rate, now))) {
        await this.#registry.release(this.#name, ip, this.#holder, id);
        return 'from your address in a short time';
      }
      if (this.#registryDown) {
        this.#registryDown = false;
        this.#log.info({ event: 'connection_registry_back', service: this.#name }, 'connections per address are counted again');
      }
    } catch (error) {
      // Logged once per outage, not once per connection.
      if (!this.#registryDown) {
        this.#registryDown = true;
        this.#log.error({ event: 'connection_registry_unavailable', service: this.#name, err: error }, 'cannot count connections: admitting without the per-address limits until the counter answers again');
      }
    }
    return 'admitted';
  }

  #refuseTooMany(socket: Socket, ip: string, scope: 'from your address' | 'on this server' | 'from your address in a short time'): void {
    const reason = scope === 'from your address in a short time' ? 'connection rate' : `too many connections ${scope}`;
    this.#log.warn({ event: 'connection_refused', service: this.#name, ip, reason }, 'connection refused');
    this.#refuse(socket, this.#texts.tooManyConnections(scope));
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

/** Why a listener could not start, in words that say what to do. */
function listenFailure(label: string, address: ListenAddress, error: NodeJS.ErrnoException): string {
  const where = `${label} cannot listen on ${formatListenAddress(address)}`;
  switch (error.code) {
    case 'EADDRINUSE':
      return `${where}: the address is in use (another popgate, or another mail server, already listens there); stop it or change ${label}.listen`;
    case 'EACCES':
      return `${where}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; see the README)`;
    case 'EADDRNOTAVAIL':
      return `${where}: this machine has no such address; change ${label}.listen`;
    default:
      return `${where}: ${error.message}`;
  }
}
