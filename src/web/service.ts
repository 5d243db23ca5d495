import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import fastifyAccepts from '@fastify/accepts';
import fastifyCookie from '@fastify/cookie';
import fastifyFormbody from '@fastify/formbody';
import fastifyStatic from '@fastify/static';
import fastifyView from '@fastify/view';
import Fastify, { type FastifyInstance } from 'fastify';
import helmet from 'helmet';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import { NetworkList, normalizeIp } from '../net/ip.ts';
import { formatListenAddress, parseListenAddress, type ListenAddress } from '../net/listen.ts';
import { readProxiedClient, refuseUnproxiedPeer, type ProxyListenerName } from '../net/proxy-admission.ts';
import { TLS_MIN_VERSION, type TlsFiles } from '../tls/context.ts';
import { BrowserSessions, loadSiteSecret } from './security.ts';
import { registerSite, SITE_VIEWS, STATIC_DIR, VIEWS_DIR, type SiteStores } from './site.ts';
import { registerAdminConsole, type AdminConsoleStores } from './admin/console.ts';
import { registerSelfService, type SelfServiceOptions } from './account/routes.ts';

// popgate's web side, in the same process as the mail services (src/server/app.ts starts it;
// docs/web.md). Built on fastify: routing, cookies, form bodies, content negotiation, static
// files, security headers and templates (eta, escaping by default) come from its plugins.
//
// - [https] listeners serve the site with the mail certificate (reloaded with it);
// - [http] listeners serve it too when there is no HTTPS listener (the development server),
//   and otherwise redirect to HTTPS, except what clients fetch over plain HTTP: Thunderbird's
//   autoconfig (it tries http:// first) and the health checks of load balancers;
// - [metrics] listeners serve /metrics and the health checks only.
//
// Every listener binds with SO_REUSEPORT in worker processes, like the mail listeners
// (src/net/service.ts), so each worker serves the web too.
//
// The visitor's address (request.ip: the "Can I send now?" answer, [admin] networks, the login
// guards, logs) is the socket's peer; behind a balancer in TCP mode, [http] and [https] take it
// from a PROXY protocol header (proxy_protocol_from, as the mail listeners do), and behind an
// HTTP reverse proxy from X-Forwarded-For, believed only from [web] trusted_proxies. With both,
// the header's address is the peer, and its X-Forwarded-For counts only if that peer is trusted.

export interface MetricsSource {
  contentType: string;
  /** The Prometheus text of this process (or of every worker, in their primary). */
  text(): Promise<string>;
}

export interface WebDependencies {
  config: Config;
  log: Logger;
  /** What the site reads; without it (the primary of workers) only [metrics] listen is served. */
  stores: SiteStores | undefined;
  /** Every store, for the admin console at /admin (src/web/admin); without it there is no console. */
  backends?: AdminConsoleStores;
  /** The mail listeners' bound addresses. */
  addresses: () => Record<string, string[]>;
  tlsFiles: TlsFiles | undefined;
  metrics: MetricsSource | undefined;
  /** Resolves when this process can serve mail (its stores answer); rejects with the reason. */
  ready: () => Promise<void>;
  reusePort: boolean;
  /** The customers' own pages under /account (src/web/account), served where the site is. */
  selfService?: Pick<SelfServiceOptions, 'stores' | 'recordChange'>;
}

/** Paths a client fetches over plain HTTP that must not be redirected. */
const PLAIN_HTTP_PATHS = new Set(['/mail/config-v1.1.xml', '/.well-known/autoconfig/mail/config-v1.1.xml', '/healthz/live', '/healthz/ready']);

/** How long a readiness check may take before the answer is "not ready". */
const READY_TIMEOUT_MS = 3000;

type Handler = (request: IncomingMessage, response: ServerResponse) => void;
type ConnectionHandler = (socket: Socket) => void;

/** The headers helmet's middleware sets, recorded from one run of it. */
function helmetHeaders(kind: 'http' | 'https'): Record<string, string> {
  const headers: Record<string, string> = {};
  const middleware = helmet({
    // HSTS only where the page came over HTTPS: a development server on plain HTTP must not pin it.
    strictTransportSecurity: kind === 'https' ? { maxAge: 180 * 24 * 3600 } : false,
    contentSecurityPolicy: { directives: { 'upgrade-insecure-requests': null } },
  });
  const recorder = { setHeader: (name: string, value: string) => (headers[name.toLowerCase()] = value), removeHeader: () => {} };
  let failed: unknown;
  middleware({} as IncomingMessage, recorder as unknown as ServerResponse, (error?: unknown) => (failed = error));
  if (failed || Object.keys(headers).length === 0) throw new Error(`helmet gave no security headers: ${String(failed)}`);
  return headers;
}

export class WebService {
  readonly addresses: { http: string[]; https: string[]; metrics: string[] } = { http: [], https: [], metrics: [] };
  readonly #deps: WebDependencies;
  readonly #apps: FastifyInstance[] = [];
  readonly #servers: (HttpServer | HttpsServer)[] = [];
  readonly #httpsServers: HttpsServer[] = [];
  /** Connections from balancers whose PROXY header is still being read: close() ends them. */
  readonly #awaitingProxyHeader = new Set<Socket>();
  #closing = false;

  private constructor(deps: WebDependencies) {
    this.#deps = deps;
  }

  /** Starts every web listener of the config; none configured is a service that serves nothing. */
  static async start(deps: WebDependencies): Promise<WebService> {
    const service = new WebService(deps);
    try {
      await service.#start();
    } catch (error) {
      await service.close();
      throw error;
    }
    return service;
  }

  async #start(): Promise<void> {
    const { config } = this.#deps;
    const site = config.http.listen.length > 0 || config.https.listen.length > 0;
    if (site && !this.#deps.stores) throw new Error('the web site needs the account and grant stores');
    const secret = site ? loadSiteSecret(config.data_dir) : undefined;
    if (config.https.listen.length > 0) {
      const files = this.#deps.tlsFiles;
      if (!files) throw new Error('[https] listen needs a certificate: set [tls] cert and key (or self_signed = true)');
      const handler = await this.#app('https', secret);
      for (const entry of config.https.listen) {
        const server = createHttpsServer({ cert: readFileSync(files.cert), key: readFileSync(files.key), minVersion: TLS_MIN_VERSION }, handler);
        this.#httpsServers.push(server);
        this.addresses.https.push(await this.#listen(server, entry, 'https', config.https.proxy_protocol_from));
      }
    }
    if (config.http.listen.length > 0) {
      const handler = await this.#app('http', secret);
      for (const entry of config.http.listen) this.addresses.http.push(await this.#listen(createHttpServer(handler), entry, 'http', config.http.proxy_protocol_from));
    }
    if (config.metrics.listen.length > 0) {
      const handler = await this.#app('metrics', undefined);
      for (const entry of config.metrics.listen) this.addresses.metrics.push(await this.#listen(createHttpServer(handler), entry, 'metrics'));
    }
  }

  /** One fastify instance per kind of listener; its request handler serves each listener's server. */
  async #app(kind: 'http' | 'https' | 'metrics', secret: string | undefined): Promise<Handler> {
    const { config, log } = this.#deps;
    let handler: Handler | undefined;
    const app = Fastify({
      // Listeners are created below, one server per address with SO_REUSEPORT: this one never listens.
      serverFactory: (h) => {
        handler = h;
        return createHttpServer(h);
      },
      // Outlook asks for /Autodiscover/Autodiscover.xml and /autodiscover/autodiscover.xml alike.
      routerOptions: { caseSensitive: false },
      trustProxy: config.web.trusted_proxies.length > 0 ? config.web.trusted_proxies : false,
      bodyLimit: 16 * 1024,
      logger: false,
    });
    this.#apps.push(app);
    app.addHook('onResponse', (request, reply, done) => {
      if (reply.statusCode >= 500) log.warn({ event: 'web_request', method: request.method, url: request.url, status: reply.statusCode, ip: request.ip }, 'web request failed');
      done();
    });
    // Only the bodies the site reads: forms, and XML for autodiscover (src/web/site.ts); any
    // other type is a 415.
    app.removeContentTypeParser(['application/json', 'text/plain']);
    this.#healthRoutes(app);
    if (kind === 'metrics') {
      this.#metricsRoute(app, undefined);
    } else {
      if (config.metrics.token !== '') this.#metricsRoute(app, config.metrics.token);
      if (kind === 'http' && this.addresses.https.length > 0) {
        // The bound port (the HTTPS listeners start first), so port 0 in tests works too.
        const httpsPort = Number(this.addresses.https[0].split(':').pop());
        app.addHook('onRequest', async (request, reply) => {
          const path = request.url.split('?')[0].toLowerCase();
          if (PLAIN_HTTP_PATHS.has(path)) return;
          // The visitor's host name, if it is one (never a header's raw text in a Location).
          const host = /^[a-z0-9.-]{1,253}$/i.test(request.hostname) ? request.hostname : config.hostname;
          return reply.redirect(`https://${host}${httpsPort === 443 ? '' : `:${httpsPort}`}${request.url}`, 301);
        });
      }
      // Security headers from helmet, worked out once here: with a fixed policy (no per-request
      // nonce) they are the same on every answer, and handing them to fastify as one object
      // spares each page helmet's dozen res.setHeader calls, each validating its header before
      // fastify's writeHead validates them all again (docs/benchmarks.md, "Web pages beside mail").
      const securityHeaders = helmetHeaders(kind);
      app.addHook('onRequest', (_request, reply, done) => {
        reply.headers(securityHeaders);
        done();
      });
      // Signed cookies and CSRF tokens share the site secret (src/web/security.ts).
      await app.register(fastifyCookie, { secret: secret! });
      await app.register(fastifyFormbody, { bodyLimit: 4096 });
      await app.register(fastifyAccepts);
      // production: @fastify/view sets eta's cache from it (NODE_ENV by default) on every render,
      // and without it each page read and compiled its templates again (a quarter of its CPU);
      // the eta instance is the help pages' too (src/web/site.ts). They are files shipped with
      // popgate, which do not change while it runs.
      await app.register(fastifyView, { engine: { eta: SITE_VIEWS }, root: VIEWS_DIR, layout: 'layout.eta', viewExt: 'eta', production: true });
      // Fixed folder of our own files; @fastify/static refuses paths that leave it.
      await app.register(fastifyStatic, { root: STATIC_DIR, prefix: '/static/', index: false, list: false, dotfiles: 'deny' });
      const sessions = new BrowserSessions(secret!);
      registerSite(app, { config, addresses: this.#deps.addresses, stores: this.#deps.stores!, log });
      if (this.#deps.backends) registerAdminConsole(app, { config, backends: this.#deps.backends, secret: secret!, sessions, log });
      if (this.#deps.selfService) registerSelfService(app, { config, sessions, log, ...this.#deps.selfService });
    }
    await app.ready();
    return handler!;
  }

  #healthRoutes(app: FastifyInstance): void {
    app.get('/healthz/live', async (_request, reply) => reply.header('Cache-Control', 'no-store').send('ok\n'));
    app.get('/healthz/ready', async (_request, reply) => {
      reply.header('Cache-Control', 'no-store');
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          this.#deps.ready(),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS))),
        ]);
        return reply.send('ready\n');
      } catch (error) {
        return reply.code(503).send(`not ready: ${(error as Error).message}\n`);
      } finally {
        clearTimeout(timer);
      }
    });
  }

  /** /metrics; with a token, only for `Authorization: Bearer <token>` (RFC 6750 §2.1). */
  #metricsRoute(app: FastifyInstance, token: string | undefined): void {
    const source = this.#deps.metrics;
    if (!source) return;
    app.get('/metrics', async (request, reply) => {
      if (token !== undefined) {
        const given = Buffer.from(/^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1] ?? '');
        const expected = Buffer.from(token);
        if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
          return reply.code(401).header('WWW-Authenticate', 'Bearer realm="popgate metrics"').send('a bearer token is required\n');
        }
      }
      try {
        return reply.type(source.contentType).header('Cache-Control', 'no-store').send(await source.text());
      } catch (error) {
        this.#deps.log.error({ event: 'metrics_failed', err: error }, 'cannot collect the metrics');
        return reply.code(503).send('metrics cannot be collected right now\n');
      }
    });
  }

  /** `proxyProtocolFrom`: the balancers that must send a PROXY header first; empty: none, every peer is a client. */
  async #listen(server: HttpServer | HttpsServer, entry: string, label: string, proxyProtocolFrom: readonly string[] = []): Promise<string> {
    const parsed = parseListenAddress(entry);
    if (!parsed.ok) throw new Error(`[${label}] listen: ${parsed.reason}`);
    // Slow or idle clients cannot hold connections for long (Node's defaults are minutes).
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    server.keepAliveTimeout = 5_000;
    server.maxHeadersCount = 100;
    server.maxConnections = 2000;
    server.on('clientError', (_error, socket) => socket.destroy());
    if (proxyProtocolFrom.length > 0) this.#takeProxyHeaders(server, label, new NetworkList(proxyProtocolFrom));
    this.#servers.push(server);
    const reusePort = this.#deps.reusePort;
    const address = await new Promise<ListenAddress>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => reject(new Error(`[${label}] cannot listen on ${entry}: ${error.code === 'EADDRINUSE' ? 'the address is in use' : error.message}`)));
      server.listen({ host: parsed.value.host, port: parsed.value.port, reusePort, exclusive: reusePort }, () => {
        const bound = server.address() as { address: string; port: number };
        resolve({ host: bound.address, port: bound.port });
      });
    });
    this.#deps.log.info({ event: 'listening', listener: label, address, proxyProtocolFrom: proxyProtocolFrom.length > 0 ? proxyProtocolFrom : undefined }, `${label} listening`);
    return formatListenAddress(address);
  }

  /**
   * Puts the PROXY protocol in front of the server's own handling of a connection. Node's http
   * and https servers take each accepted socket through their 'connection' event (the way the
   * Node docs give for handing them a socket); here the socket first passes the balancer check
   * and gives up its header (HAProxy's doc/proxy-protocol.txt: before anything else, TLS
   * included, since a balancer in TCP mode passes the client's ClientHello through after it),
   * then goes on to Node's own handlers. The server itself still listens, so SO_REUSEPORT,
   * maxConnections, headersTimeout/requestTimeout and close() work as without.
   *
   * The header's client becomes the socket's remoteAddress: request.ip is read from nothing
   * else (fastify, and @fastify/proxy-addr for the peer whose X-Forwarded-For it may believe),
   * so every page, check and log line sees the client without knowing of the balancer, and a
   * listener without proxy_protocol_from does no work at all per connection or request.
   */
  #takeProxyHeaders(server: HttpServer | HttpsServer, label: string, balancers: NetworkList): void {
    const where: ProxyListenerName = { log: this.#deps.log, service: 'web', listener: label };
    const nodeHandlers = server.listeners('connection') as ConnectionHandler[];
    server.removeAllListeners('connection');
    // Over HTTPS the requests come on the TLSSocket Node wraps around ours, whose remoteAddress
    // asks the kernel again: it gets the client once the handshake is done, found by the
    // balancer's address and port (one connection has them alone while it is open).
    const tlsClients = server instanceof TlsServer ? new Map<string, string>() : undefined;
    if (tlsClients) {
      server.prependListener('secureConnection', (secure: TLSSocket) => {
        const client = tlsClients.get(connectionKey(secure));
        if (client === undefined) return void secure.destroy(); // closed in the meantime: never serve it as the balancer
        setRemoteAddress(secure, client);
      });
    }
    server.on('connection', (socket: Socket) => void this.#acceptFromBalancer(socket, balancers, where, tlsClients, (accepted) => {
      for (const handler of nodeHandlers) handler.call(server, accepted);
    }));
  }

  async #acceptFromBalancer(socket: Socket, balancers: NetworkList, where: ProxyListenerName, tlsClients: Map<string, string> | undefined, serve: ConnectionHandler): Promise<void> {
    const peer = normalizeIp(socket.remoteAddress);
    // Until Node's handlers take the socket (they listen for its errors), a reset is routine.
    const ignore = () => {};
    socket.on('error', ignore);
    if (!balancers.has(peer)) return refuseUnproxiedPeer(socket, peer, where);
    this.#awaitingProxyHeader.add(socket);
    let client: string | undefined;
    try {
      client = await readProxiedClient(socket, peer, where);
    } finally {
      this.#awaitingProxyHeader.delete(socket);
    }
    if (client === undefined) return;
    if (socket.destroyed || this.#closing) return void socket.destroy();
    socket.off('error', ignore);
    if (tlsClients) {
      const key = connectionKey(socket);
      tlsClients.set(key, client);
      socket.once('close', () => tlsClients.delete(key));
    } else {
      setRemoteAddress(socket, client);
    }
    serve(socket);
    // The header's reader left it paused, with the bytes after the header (a request, or a
    // ClientHello, in the same segment) put back in front of what comes next.
    socket.resume();
  }

  /** Loads the renewed certificate into the HTTPS listeners (called with the mail services'). */
  reloadTls(): void {
    const files = this.#deps.tlsFiles;
    if (!files) return;
    const options = { cert: readFileSync(files.cert), key: readFileSync(files.key), minVersion: TLS_MIN_VERSION };
    for (const server of this.#httpsServers) server.setSecureContext(options);
  }

  async close(): Promise<void> {
    this.#closing = true;
    for (const socket of this.#awaitingProxyHeader) socket.destroy();
    await Promise.all(
      this.#servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            if (!server.listening) return resolve();
            server.close(() => resolve());
            server.closeIdleConnections();
            // Requests still running get a moment, then their connections go.
            setTimeout(() => server.closeAllConnections(), 1000).unref();
          }),
      ),
    );
    await Promise.all(this.#apps.map((app) => app.close()));
  }
}

/** A connection's balancer end, the same on our socket and the TLSSocket around it. */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress} ${socket.remotePort}`;
}

/** The client's address from a PROXY header, where fastify (and everything reading request.ip) finds the peer. */
function setRemoteAddress(socket: Socket, client: string): void {
  Object.defineProperty(socket, 'remoteAddress', { value: client, configurable: true, enumerable: true });
}
