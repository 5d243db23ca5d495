import { join } from 'node:path';
import { Eta } from 'eta';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { normalizeDomain, parseAddress } from '../accounts/address.ts';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';
import type { PopBeforeSmtp } from '../relay-auth/pop-before-smtp.ts';
import { appleMailProfile, MOBILECONFIG_TYPE, profileFileName } from './apple-profile.ts';
import { AUTODISCOVER_MAX_BYTES, AutodiscoverRequestError, autodiscoverError, autodiscoverResponse, parseAutodiscoverRequest, thunderbirdAutoconfig } from './autoconfig.ts';
import { CLIENTS, findClient, securityName, setupSteps } from './clients.ts';
import { LANGS, troubles, UI, type Lang } from './i18n.ts';
import { mailSettings, preferredIncoming, preferredOutgoing, type MailSettings } from './mail-settings.ts';
import { CsrfError } from './security.ts';

// The customer site: help pages per local domain, "Can I send now?", and the automatic setup
// documents. Public, read-only apart from the language choice. Which domain a page is about
// comes from ?domain=, from an address asked about, or from the host name the visitor used
// (autoconfig.example.com, mail.example.com, example.com …); a domain that is not local is a
// 404 that names only the domain asked about.

export const VIEWS_DIR = join(import.meta.dirname, 'views');
/**
 * The site's templates: escaping by default, each read and compiled once (they ship with
 * popgate and do not change while it runs). @fastify/view renders the account and error pages
 * with them (src/web/service.ts); the help pages are rendered here, once per place.
 */
export const SITE_VIEWS = new Eta({ views: VIEWS_DIR, autoEscape: true, cache: true });
export const STATIC_DIR = join(import.meta.dirname, 'static');
export const LANG_COOKIE = 'popgate_lang';

/** What the site reads: account domains, and the grants (never who holds them). */
export interface SiteStores {
  isLocalDomain(domain: string): Promise<boolean>;
  listDomains(): Promise<string[]>;
  popBeforeSmtp: Pick<PopBeforeSmtp, 'authorization'>;
}

export interface SiteOptions {
  config: Config;
  /** The bound addresses of the mail listeners (ports as really served). */
  addresses: () => Record<string, string[]>;
  stores: SiteStores;
  log: Logger;
}

/** Thrown for a client error the site words itself (status and a short sentence). */
export class PageError extends Error {
  readonly statusCode: number;
  constructor(statusCode: number, message: string) {
    super(message);
    this.statusCode = statusCode;
  }
}

const CLIENT_ID = /^[a-z0-9-]{1,40}$/;

/** The address the pages show as the customer's, in the page's domain. */
const exampleAddress = (domain: string | undefined) => `you@${domain ?? 'example.com'}`;

/**
 * The language each Accept-Language header picks: browsers send a handful of distinct ones, and
 * parsing one costs more than the rest of finding a cached page. Headers are visitor input, so
 * the map is bounded (cleared when full).
 */
const languageByHeader = new Map<string, Lang>();
const LANGUAGE_HEADERS_LIMIT = 1000;

/** The visitor's language: the switch's cookie, else Accept-Language, else English. */
export function languageOf(request: FastifyRequest): Lang {
  const chosen = request.cookies[LANG_COOKIE];
  if (chosen === 'en' || chosen === 'ja') return chosen;
  const header = request.headers['accept-language'] ?? '';
  let lang = languageByHeader.get(header);
  if (!lang) {
    lang = request.languages([...LANGS]) === 'ja' ? 'ja' : 'en';
    if (languageByHeader.size >= LANGUAGE_HEADERS_LIMIT) languageByHeader.clear();
    languageByHeader.set(header, lang);
  }
  return lang;
}

export function registerSite(app: FastifyInstance, options: SiteOptions): void {
  const { config, stores } = options;
  const neverGrant = new NetworkList(config.pop_before_smtp.never_grant);
  // Derived at the first request, then kept: the config does not change while popgate runs (a
  // changed popgate.toml takes a restart; SIGHUP reloads the certificate only), and the mail
  // listeners are bound before the web side starts (src/server/app.ts).
  let derivedSettings: MailSettings | undefined;
  const settings = (): MailSettings => (derivedSettings ??= mailSettings(config, options.addresses()));
  // With one local domain (most small providers) every page is about it; cached briefly so
  // help pages do not list the domains on every request.
  let onlyDomain: { value: string | undefined; until: number } = { value: undefined, until: 0 };
  // The local domain a host name leads to, kept as long: every page asks it, a site is reached
  // by few host names, and the names a visitor makes up are bounded by the size (cleared when
  // full). Keyed by the Host header as sent, so a known one costs no IDNA normalization.
  const domainByHost = new Map<string, { value: string | undefined; until: number }>();
  const HOST_CACHE_LIMIT = 1000;

  /** The local domain a request is about; PageError 404 for a domain that is not local. */
  const domainOf = async (request: FastifyRequest, asked?: string): Promise<string | undefined> => {
    const query = request.query as Record<string, unknown>;
    const explicit = asked ?? (typeof query.domain === 'string' ? query.domain : undefined);
    if (explicit !== undefined) {
      const domain = normalizeDomain(explicit);
      if (!domain || !(await stores.isLocalDomain(domain))) throw new PageError(404, UI[languageOf(request)].domainUnknown(domain ?? 'This'));
      return domain;
    }
    const now = Date.now();
    let known = domainByHost.get(request.hostname);
    if (!known || known.until < now) {
      const host = normalizeDomain(request.hostname.replace(/:\d+$/, '').replace(/^\[.*\]$/, ''));
      let found: string | undefined;
      const labels = host?.split('.') ?? [];
      for (let i = 0; i < labels.length - 1 && i < 4 && !found; i++) {
        const candidate = labels.slice(i).join('.');
        if (await stores.isLocalDomain(candidate)) found = candidate;
      }
      if (domainByHost.size >= HOST_CACHE_LIMIT) domainByHost.clear();
      known = { value: found, until: now + 10_000 };
      domainByHost.set(request.hostname, known);
    }
    if (known.value) return known.value;
    if (now > onlyDomain.until) {
      const domains = await stores.listDomains();
      onlyDomain = { value: domains.length === 1 ? domains[0] : undefined, until: Date.now() + 10_000 };
    }
    return onlyDomain.value;
  };

  /** Where a page is: its path (the route's, never the URL as sent), and the domain it is about. */
  interface Place {
    path: string;
    lang: Lang;
    domain: string | undefined;
    /** The domain came from ?domain=, which the page's links then carry on. */
    named: boolean;
  }

  const placeOf = async (request: FastifyRequest, path: string): Promise<Place> => {
    const domain = await domainOf(request);
    return { path, lang: languageOf(request), domain, named: domain !== undefined && typeof (request.query as Record<string, unknown>).domain === 'string' };
  };

  /** What the layout and every page read. */
  const commonData = ({ path, lang, domain, named }: Place) => {
    const mail = settings();
    return {
      lang,
      t: UI[lang],
      langs: LANGS.map((code) => ({ code, name: UI[code].langName })),
      path,
      domain,
      domainQuery: named ? `?domain=${encodeURIComponent(domain!)}` : '',
      example: exampleAddress(domain),
      mail,
      incoming: preferredIncoming(mail),
      outgoing: preferredOutgoing(mail),
      securityName: (security: Parameters<typeof securityName>[0]) => securityName(security, lang),
      provider: mail.provider,
    };
  };

  const sendPage = (reply: FastifyReply, lang: Lang, html: string | Buffer) =>
    reply.header('Content-Language', lang).header('Vary', 'Accept-Language, Cookie').type('text/html; charset=utf-8').send(html);

  // Every help page but "Can I send now?" is the same for every visitor of one place (language,
  // domain, ?domain= or not, path) under the running config, which does not change while
  // popgate runs (see `settings`): each is rendered at its first request and kept, so a visit
  // costs no template run, and no session either (the language switch needs none). The keys
  // are bounded: a language of two, a local domain (domainOf refuses others) and a route's own
  // path; with many domains the oldest make room (a page is about 3 KB). The autoconfig
  // documents and the layout of "Can I send now?" are kept here too, keyed alike.
  const kept = new Map<string, unknown>();
  const KEPT_LIMIT = 2000;

  /** What is kept under `key`, made (and kept) at its first request. */
  function keep<T>(key: string, make: () => T): T {
    if (kept.has(key)) return kept.get(key) as T;
    const made = make();
    if (kept.size >= KEPT_LIMIT) kept.delete(kept.keys().next().value!);
    kept.set(key, made);
    return made;
  }

  const placeKey = (place: Place) => `${place.lang} ${place.domain ?? ''} ${place.named ? 'named' : 'host'} ${place.path}`;

  /** A page in the layout, as @fastify/view renders it; the templates are compiled once (SITE_VIEWS). */
  const renderPage = (view: string, data: Record<string, unknown>): string => SITE_VIEWS.render('layout', { ...data, body: SITE_VIEWS.render(view, data) });

  const helpPage = async (request: FastifyRequest, reply: FastifyReply, path: string, view: string, pageData: (place: Place) => Record<string, unknown>) => {
    const place = await placeOf(request, path);
    const body = keep(`page ${placeKey(place)}`, () => Buffer.from(renderPage(view, { ...commonData(place), ...pageData(place) })));
    return sendPage(reply, place.lang, body);
  };

  // "Can I send now?" answers each visitor, but around the answer it is a page like the others:
  // its layout is kept per place, split where the body goes, and only the body is rendered per
  // request (from its template, escaping by default, as every page).
  const BODY_SLOT = '\u0000body\u0000';
  const frameOf = (place: Place, title: string): [string, string] =>
    keep(`frame ${placeKey(place)}`, () => {
      const parts = SITE_VIEWS.render('layout', { ...commonData(place), title, body: BODY_SLOT }).split(BODY_SLOT);
      if (parts.length !== 2) throw new Error('the layout must place the body exactly once');
      return parts as [string, string];
    });

  app.get('/', (request, reply) => helpPage(request, reply, '/', 'index', ({ lang }) => ({ title: UI[lang].help, clients: CLIENTS, selfService: config.self_service.enabled })));

  app.get('/setup/:client', async (request, reply) => {
    const { client: id } = request.params as { client: string };
    const client = CLIENT_ID.test(id) ? findClient(id) : undefined;
    if (!client) throw new PageError(404, UI[languageOf(request)].notFound);
    return helpPage(request, reply, `/setup/${client.id}`, 'setup', ({ lang, domain }) => ({
      title: client.name,
      client,
      steps: setupSteps(client, settings(), lang, exampleAddress(domain)),
      apple: client.id.startsWith('apple-'),
    }));
  });

  app.get('/pop-before-smtp', (request, reply) => helpPage(request, reply, '/pop-before-smtp', 'pop-before-smtp', ({ lang }) => ({ title: UI[lang].aboutPbs })));
  app.get('/port-25', (request, reply) => helpPage(request, reply, '/port-25', 'port-25', ({ lang }) => ({ title: UI[lang].port25 })));
  app.get('/troubleshooting', (request, reply) =>
    helpPage(request, reply, '/troubleshooting', 'troubleshooting', ({ lang, domain }) => ({ title: UI[lang].troubleshooting, troubles: troubles(config, lang, exampleAddress(domain)) })),
  );

  // The visitor's own address only, and whether it holds a grant: never who holds it.
  app.get('/can-i-send', async (request, reply) => {
    const lang = languageOf(request);
    const ip = request.ip;
    let answer: 'yes' | 'no' | 'never' | 'unknown';
    let minutesLeft = 0;
    if (neverGrant.has(ip)) {
      answer = 'never';
    } else {
      try {
        const authorization = await stores.popBeforeSmtp.authorization(ip);
        answer = authorization ? 'yes' : 'no';
        if (authorization) minutesLeft = Math.max(1, Math.ceil((authorization.expiresAt - Date.now()) / 60_000));
      } catch (error) {
        options.log.error({ event: 'web_grant_check_failed', err: error }, 'cannot check POP-before-SMTP grants for the help page');
        answer = 'unknown';
        reply.code(503);
      }
    }
    reply.header('Cache-Control', 'no-store');
    const place = await placeOf(request, '/can-i-send');
    const [head, tail] = frameOf(place, UI[lang].canISend);
    return sendPage(reply, lang, head + SITE_VIEWS.render('can-i-send', { ...commonData(place), ip, answer, minutesLeft }) + tail);
  });

  // The language switch: a link that sets a preference cookie, then back to the page. A GET
  // without a CSRF token on purpose: it changes nothing on the server and nothing of an
  // account, only how this browser's pages are worded, which the visitor sees at once and
  // undoes with one click, so another site linking here can do no more than that. A form with
  // a token would need a session (and its cookie) for every first visit of a public page.
  app.get('/language', async (request, reply) => {
    const query = request.query as Record<string, unknown>;
    const lang = query.lang;
    if (lang !== 'en' && lang !== 'ja') throw new PageError(400, 'lang must be "en" or "ja"');
    const back = typeof query.back === 'string' && /^\/(?!\/)[A-Za-z0-9\-._~/?=&%]{0,200}$/.test(query.back) ? query.back : '/';
    reply.setCookie(LANG_COOKIE, lang, { path: '/', httpOnly: true, sameSite: 'lax', secure: request.protocol === 'https', maxAge: 365 * 24 * 3600 });
    return reply.header('Cache-Control', 'no-store').redirect(back, 303);
  });

  // Thunderbird autoconfig (both places Thunderbird looks: autoconfig.<domain>/mail/… and
  // <domain>/.well-known/autoconfig/mail/…); ?emailaddress= names the domain when given.
  const autoconfig = async (request: FastifyRequest, reply: FastifyReply) => {
    const query = request.query as Record<string, unknown>;
    let asked: string | undefined;
    if (typeof query.emailaddress === 'string') {
      const address = parseAddress(query.emailaddress);
      if (!address) throw new PageError(400, 'emailaddress is not an e-mail address');
      asked = address.domain;
    }
    const domain = await domainOf(request, asked);
    if (!domain) throw new PageError(404, 'no local mail domain matches this host name: add ?emailaddress=');
    // Like the help pages, the document of a local domain is built once (keyed as they are).
    const document = keep(`autoconfig ${domain}`, () => Buffer.from(thunderbirdAutoconfig(settings(), domain)));
    return reply.type('application/xml; charset=utf-8').header('Cache-Control', 'max-age=3600').send(document);
  };
  app.get('/mail/config-v1.1.xml', autoconfig);
  app.get('/.well-known/autoconfig/mail/config-v1.1.xml', autoconfig);

  // Outlook autodiscover (POX). The body is read as text up to a small limit, then parsed
  // without a DTD (see parseAutodiscoverRequest).
  app.addContentTypeParser(['text/xml', 'application/xml'], { parseAs: 'string', bodyLimit: AUTODISCOVER_MAX_BYTES }, (_request, body, done) => done(null, body));
  app.post('/autodiscover/autodiscover.xml', { bodyLimit: AUTODISCOVER_MAX_BYTES }, async (request, reply) => {
    if (typeof request.body !== 'string') throw new PageError(415, 'send the autodiscover request as text/xml');
    let address: string;
    try {
      address = parseAutodiscoverRequest(request.body);
    } catch (error) {
      if (error instanceof AutodiscoverRequestError) throw new PageError(400, `invalid autodiscover request: ${error.message}`);
      throw error;
    }
    const parsed = parseAddress(address);
    reply.type('application/xml; charset=utf-8');
    if (!parsed || !(await stores.isLocalDomain(parsed.domain))) {
      // [MS-OXDSCLI]: error 600 "Invalid Request" for an address this server does not serve.
      return reply.code(404).send(autodiscoverError(600, 'Invalid Request: not a mail domain served here'));
    }
    return reply.send(autodiscoverResponse(settings(), parsed.address));
  });

  // An Apple configuration profile for one address (the address only decides the domain and
  // the account's user name: nothing about the account is looked up or revealed).
  app.get('/setup/apple.mobileconfig', async (request, reply) => {
    const query = request.query as Record<string, unknown>;
    const address = typeof query.address === 'string' ? parseAddress(query.address) : undefined;
    if (!address) throw new PageError(400, 'address is not an e-mail address');
    await domainOf(request, address.domain);
    return reply
      .type(MOBILECONFIG_TYPE)
      .header('Content-Disposition', `attachment; filename="${profileFileName(address.address)}"`)
      .header('Cache-Control', 'no-store')
      .send(appleMailProfile(settings(), address.address));
  });

  app.setNotFoundHandler((request, reply) => {
    const lang = languageOf(request);
    reply.code(404);
    return reply.view('error', { lang, t: UI[lang], title: UI[lang].notFound, message: UI[lang].notFound, langs: [], path: '/' });
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    const lang = languageOf(request);
    const status = error instanceof CsrfError ? 403 : error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 503;
    // Client errors say what was wrong; anything else is logged here and stays here.
    const message = error instanceof CsrfError ? `Refused: ${error.message}` : status < 500 ? error.message : 'This page cannot be shown right now; please try again in a few minutes.';
    if (status >= 500) options.log.error({ event: 'web_error', url: request.url, err: error }, 'web request failed');
    reply.code(status);
    if (request.url.toLowerCase().startsWith('/autodiscover/')) return reply.type('application/xml; charset=utf-8').send(autodiscoverError(600, message));
    return reply.view('error', { lang, t: UI[lang], title: String(status), message, langs: [], path: '/' });
  });
}
