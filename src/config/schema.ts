import { isIP } from 'node:net';
import { availableParallelism, hostname as systemHostname } from 'node:os';
import { z } from 'zod';
import { parseDuration } from './duration.ts';
import { parseListenAddress } from '../net/listen.ts';
import { validateNetwork } from '../net/ip.ts';
import { parseNextHop } from '../net/next-hop.ts';
import { CLIENT_WORKAROUNDS } from '../pop3/workarounds.ts';
import { parseQuota } from '../quota/size.ts';

// Every key and default here is documented in docs/configuration.md; keep the two in step.

const duration = z.string().transform((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration (for example "500ms", "30s", "10m", "2h", "5d")` });
    return z.NEVER;
  }
  return ms;
});

const listenList = z.array(
  z.string().superRefine((text, ctx) => {
    const parsed = parseListenAddress(text);
    if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.reason });
  }),
);

const network = z.string().superRefine((text, ctx) => {
  const error = validateNetwork(text);
  if (error) ctx.addIssue({ code: 'custom', message: error });
});

const positiveInt = z.number().int().positive();

/** A mailbox size such as "1GB", or "none" for no limit (read with src/quota/size.ts parseQuota). */
const quotaSize = z.string().superRefine((text, ctx) => {
  const parsed = parseQuota(text);
  if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.reason });
});

/** A DNS zone name such as "zen.spamhaus.org". */
const dnsZone = z.string().regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$/i, 'must be a DNS zone such as "zen.spamhaus.org"');

/** A blocklist or allowlist zone with its weight, matched return codes and action. */
const listZone = z.strictObject({
  zone: dnsZone,
  action: z.enum(['reject', 'score', 'allow']).optional(),
  weight: z.number().min(0).max(100).default(0),
  codes: z.array(z.string().regex(/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/, 'must be a 127.x.y.z return code')).default([]),
});

/** A listener's load balancers, which must send a PROXY protocol header (src/net/service.ts). */
const proxyProtocolFrom = z.array(network).default([]);

/** A next hop: "host", "host:port" or "[v6]:port" (the host is used as is: no MX lookup). */
const nextHop = z.string().superRefine((text, ctx) => {
  const parsed = parseNextHop(text, 25);
  if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.reason });
});

const pop3Schema = z.strictObject({
  listen: listenList.default(['127.0.0.1:2110']),
  max_connections: positiveInt.default(2000),
  max_connections_per_ip: positiveInt.default(50),
  max_connection_rate_per_ip: z.number().int().min(0).default(120),
  idle_timeout: duration.prefault('10m'),
  // The longest one command line may take to arrive, however it trickles in (RFC 1939 §3: 10 minutes).
  command_timeout: duration.prefault('10m'),
  max_line_length: z.number().int().min(64).max(65536).default(1024),
  apop: z.boolean().default(false),
  implementation: z.string().default('popgate'),
  // Dovecot's names (pop3_client_workarounds); see src/pop3/workarounds.ts.
  client_workarounds: z.array(z.enum(CLIENT_WORKAROUNDS)).default([...CLIENT_WORKAROUNDS]),
  proxy_protocol_from: proxyProtocolFrom,
});

export const configSchema = z.strictObject({
  hostname: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'must be a host name such as "mail.example.net"')
    .default(systemHostname()),
  data_dir: z.string().min(1).default('./data'),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
  server: z
    .strictObject({
      // One worker process per core unless set; the development server sets 1.
      workers: z.number().int().min(1).max(256).default(() => availableParallelism()),
    })
    .prefault({}),
  cluster: z
    .strictObject({
      // Shared short-lived state (grants, lockouts, counters, locks) for several nodes.
      redis: z.union([z.literal(''), z.string().regex(/^rediss?:\/\/\S+$/, 'must be a redis:// (or rediss://) URL such as "redis://127.0.0.1:6379"')]).default(''),
      // This node's name, unique in the cluster ("" = the machine's host name): queue leases
      // carry it, so a node restarted after a crash takes back at once what it was delivering.
      node: z.string().regex(/^[A-Za-z0-9._-]*$/, 'must be letters, digits, ".", "_" or "-" such as "mx1"').default(''),
    })
    .prefault({}),
  database: z
    .strictObject({
      // Accounts and the queue index in PostgreSQL, shared by several nodes.
      url: z
        .union([z.literal(''), z.string().regex(/^postgres(ql)?:\/\/\S*$/, 'must be a postgres:// URL such as "postgres://popgate@127.0.0.1:5432/popgate" (a host=/socket/dir query works too)')])
        .default(''),
    })
    .prefault({}),
  pop3: pop3Schema.prefault({}),
  pop3s: z.strictObject({ listen: listenList.default([]), proxy_protocol_from: proxyProtocolFrom }).prefault({}),
  smtp: z
    .strictObject({
      listen: listenList.default(['127.0.0.1:2525']),
      max_message_size: positiveInt.default(25 * 1024 * 1024),
      max_recipients: positiveInt.default(100),
      max_line_length: z.number().int().min(512).max(65536).default(4096),
      max_connections: positiveInt.default(2000),
      max_connections_per_ip: positiveInt.default(20),
      max_connection_rate_per_ip: z.number().int().min(0).default(120),
      idle_timeout: duration.prefault('5m'),
      // Totals, however slowly the bytes come (RFC 5321 §4.5.3.2): a command line, and a DATA
      // block from the 354 to its final dot.
      command_timeout: duration.prefault('5m'),
      data_timeout: duration.prefault('10m'),
      max_errors: positiveInt.default(20),
      // Octets of message bodies all SMTP sessions of a process keep in memory while receiving
      // them; past it (and past 256 KiB per message) bodies go to files in the spool.
      max_data_memory: z.number().int().min(0).default(64 * 1024 * 1024),
      // Octets that must stay free under data_dir for new mail; below it 452 4.3.1 at MAIL,
      // RCPT and DATA (0: not checked).
      min_free_space: z.number().int().min(0).default(100 * 1024 * 1024),
      error_delay: duration.prefault('250ms'),
      postmaster: z.string().default(''),
      // Clients from these networks relay without a POP3 login (internal servers); off by default.
      relay_networks: z
        .array(
          network.superRefine((text, ctx) => {
            if (Number(text.split('/')[1]) === 0) ctx.addIssue({ code: 'custom', message: `"${text}" would let the whole Internet relay (an open relay): list only your own networks` });
          }),
        )
        .default([]),
      auth: z.boolean().default(false),
      proxy_protocol_from: proxyProtocolFrom,
    })
    .prefault({}),
  submission: z
    .strictObject({ listen: listenList.default([]), pop_before_smtp: z.boolean().default(true), proxy_protocol_from: proxyProtocolFrom })
    .prefault({}),
  submissions: z.strictObject({ listen: listenList.default([]), proxy_protocol_from: proxyProtocolFrom }).prefault({}),
  tls: z
    .strictObject({
      cert: z.string().default(''),
      key: z.string().default(''),
      self_signed: z.boolean().default(false),
      reload_check: duration.prefault('1m'),
    })
    .prefault({}),
  auth: z
    .strictObject({
      plaintext_without_tls: z.enum(['loopback', 'anywhere', 'never']).default('loopback'),
      default_domain: z.string().default(''),
      failure_delay: duration.prefault('2s'),
      lockout_threshold: positiveInt.default(10),
      account_lockout_threshold: positiveInt.default(20),
      lockout_window: duration.prefault('15m'),
      lockout_duration: duration.prefault('15m'),
      trusted_networks: z.array(network).default([]),
      verified_login_cache: duration.prefault('10m'),
    })
    .prefault({}),
  pop_before_smtp: z
    .strictObject({
      window: duration.prefault('10m'),
      mode: z.enum(['sliding', 'fixed']).default('sliding'),
      ipv4_prefix: z.number().int().min(8).max(32).default(32),
      ipv6_prefix: z.number().int().min(32).max(128).default(128),
      never_grant: z.array(network).default(['100.64.0.0/10']),
      max_users_per_ip: z.number().int().min(0).default(0),
      enforce_sender: z.boolean().default(true),
    })
    .prefault({}),
  dns: z
    .strictObject({
      servers: z
        .array(
          z.string().superRefine((text, ctx) => {
            const parsed = parseNextHop(text, 53);
            if (!parsed.ok || isIP(parsed.value.host) === 0) ctx.addIssue({ code: 'custom', message: `"${text}" is not an IP address with an optional port (for example "127.0.0.1:5353")` });
          }),
        )
        .default([]),
      timeout: duration.prefault('5s'),
    })
    .prefault({}),
  outbound: z
    .strictObject({
      enabled: z.boolean().default(true),
      relayhost: z.union([z.literal(''), nextHop]).default(''),
      relayhost_tls: z.enum(['opportunistic', 'starttls', 'tls', 'none']).default('opportunistic'),
      relayhost_user: z.string().default(''),
      relayhost_password: z.string().default(''),
      transport: z.record(z.string().regex(/^[a-z0-9.-]+$/i, 'must be a domain name'), nextHop).default({}),
      port: z.number().int().min(1).max(65535).default(25),
      tls: z.enum(['opportunistic', 'required', 'none']).default('opportunistic'),
      source_address: z.string().default(''),
      max_connections: positiveInt.default(20),
      max_connections_per_domain: positiveInt.default(4),
      max_messages_per_connection: positiveInt.default(100),
      connect_timeout: duration.prefault('30s'),
      command_timeout: duration.prefault('5m'),
      // How long a message being delivered stays claimed by the node delivering it; if that
      // node dies, another takes the message after this.
      lease: duration.prefault('15m'),
      retry_schedule: z.array(duration).min(1).prefault(['5m', '10m', '20m', '40m', '80m', '160m', '4h']),
      max_lifetime: duration.prefault('5d'),
      delay_warning: duration.prefault('4h'),
      bounce_size_limit: z.number().int().min(0).default(100 * 1024),
    })
    .prefault({}),
  dkim: z
    .strictObject({
      keys_dir: z.string().default(''),
      selector: z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'must be a DNS label such as "popgate2026"').default('popgate'),
    })
    .prefault({}),
  limits: z
    .strictObject({
      messages_per_hour: positiveInt.default(300),
      messages_per_day: positiveInt.default(1000),
      recipients_per_day: positiveInt.default(2000),
      exempt_users: z.array(z.string()).default([]),
    })
    .prefault({}),
  filter: z
    .strictObject({
      // false: no inbound filtering at all (another filter in front of popgate does it).
      enabled: z.boolean().default(true),
      // DMARC p=reject failing: "enforce" refuses it (p=quarantine is marked), "mark" marks
      // both, "off" neither (the Authentication-Results header is still added).
      dmarc: z.enum(['enforce', 'mark', 'off']).default('enforce'),
      // SPF -all fail without a passing aligned DKIM signature.
      spf_fail: z.enum(['reject', 'mark', 'off']).default('mark'),
      // A check that could not be made (DNS timeout): accept (and say so in the headers) or 451.
      temporary_errors: z.enum(['accept', 'defer']).default('accept'),
      dnsbl: z.array(z.union([dnsZone, listZone])).default([]),
      dnswl: z.array(z.union([dnsZone, listZone])).default([]),
      greylisting: z.boolean().default(false),
      greylist_delay: duration.prefault('5m'),
      greylist_retry_window: duration.prefault('2d'),
      greylist_remember: duration.prefault('36d'),
      // Port 25 only: wait this long before the greeting; a client that talks first is refused.
      pregreet_delay: duration.prefault('0s'),
      spam_score: z.number().min(0).default(5),
      subject_tag: z.string().max(40).default(''),
      // The longest the checks of one message may take; past it they count as temporary errors.
      deadline: duration.prefault('20s'),
      rspamd: z
        .strictObject({
          url: z.union([z.literal(''), z.string().regex(/^https?:\/\/\S+$/, 'must be an http:// URL such as "http://127.0.0.1:11333"')]).default(''),
          timeout: duration.prefault('10s'),
          // rspamd down or too slow: "accept" with popgate's own verdict, or "defer" (451).
          on_failure: z.enum(['accept', 'defer']).default('accept'),
          // Also check mail that customers relay (a compromised account's spam), naming the user.
          outbound: z.boolean().default(false),
        })
        .prefault({}),
    })
    .prefault({}),
  // The web side (src/web, docs/web.md): help pages, automatic client setup, health checks.
  // proxy_protocol_from: as on the mail listeners (src/web/service.ts); not on [metrics], where
  // no address is judged and each node is scraped directly.
  http: z.strictObject({ listen: listenList.default([]), proxy_protocol_from: proxyProtocolFrom }).prefault({}),
  https: z.strictObject({ listen: listenList.default([]), proxy_protocol_from: proxyProtocolFrom }).prefault({}),
  web: z
    .strictObject({
      provider_name: z.string().max(100).default(''),
      provider_contact: z.string().max(300).default(''),
      // Balancers or reverse proxies whose X-Forwarded-For names the real client (the
      // "Can I send now?" page answers for that address).
      trusted_proxies: z.array(network).default([]),
    })
    .prefault({}),
  // The admin console at /admin on the web listeners (src/web/admin, docs/web.md).
  admin: z
    .strictObject({
      // Clients that may reach /admin at all; loopback only, so a fresh install exposes nothing.
      networks: z.array(network).default(['127.0.0.0/8', '::1/128']),
      // OWASP Session Management: an idle and an absolute timeout.
      session_idle: duration.prefault('30m'),
      session_max: duration.prefault('12h'),
    })
    .prefault({}),
  // The customers' own pages under /account on the site (src/web/account, docs/web.md): each
  // feature can be turned off, and off is neither shown nor answered.
  self_service: z
    .strictObject({
      enabled: z.boolean().default(true),
      password: z.boolean().default(true),
      forwarding: z.boolean().default(true),
      vacation: z.boolean().default(true),
    })
    .prefault({}),
  // Prometheus metrics: on their own listeners, and on the web listeners with this bearer token.
  metrics: z
    .strictObject({
      listen: listenList.default([]),
      token: z.union([z.literal(''), z.string().min(16, 'must be at least 16 characters (or "" for none)')]).default(''),
    })
    .prefault({}),
  // Mailbox services (docs/mailbox-services.md): quotas, forwarding with SRS, vacation replies.
  quota: z
    .strictObject({
      enabled: z.boolean().default(true),
      // Every mailbox's limit unless its domain or the user has one: a size ("1GB") or "none".
      default: quotaSize.default('none'),
      // true: a full mailbox answers 452 4.2.2 (try later) instead of 552 5.2.2.
      soft: z.boolean().default(false),
      // Percent of the quota at which the owner is sent one warning (0: never).
      warning: z.number().int().min(0).max(100).default(90),
    })
    .prefault({}),
  srs: z
    .strictObject({
      // false: forwarded mail keeps its original envelope sender (and fails SPF at the receiver).
      enabled: z.boolean().default(true),
      // The domain of rewritten senders ("" = hostname); its MX must be popgate.
      domain: z.union([z.literal(''), z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/i, 'must be a domain such as "srs.example.net"')]).default(''),
      // The HMAC key ("" = generated into data_dir/srs.secret); at least 16 characters.
      secret: z.union([z.literal(''), z.string().min(16, 'must be at least 16 characters')]).default(''),
      // Bounces to rewritten senders older than this are refused (counted in whole days).
      max_age: duration.prefault('21d'),
    })
    .prefault({}),
  vacation: z.strictObject({ interval: duration.prefault('7d') }).prefault({}),
  shutdown_grace: duration.prefault('5s'),
});

export type Config = z.output<typeof configSchema>;
export type Pop3Settings = Config['pop3'];
