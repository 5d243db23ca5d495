import type { Config } from '../config/schema.ts';
import { parseListenAddress } from '../net/listen.ts';

// What a mail program must be told, derived from the running config, so the help pages, the
// autoconfig and autodiscover answers, the Apple profile and the DNS records never disagree
// with the listeners. The port of a service is that of its first listener.

export type Security = 'none' | 'starttls' | 'tls';

export interface ServerEndpoint {
  port: number;
  /** STARTTLS/STLS on a plain port, or TLS from the first byte (RFC 8314 implicit TLS). */
  security: Security;
}

export interface MailSettings {
  hostname: string;
  /** POP3 with STLS (RFC 2595) when a certificate is configured. */
  pop3: ServerEndpoint | undefined;
  pop3s: ServerEndpoint | undefined;
  /** Port 25: relay for customers only after a POP3 login (or SMTP AUTH when smtp.auth is on). */
  smtp: (ServerEndpoint & { auth: boolean }) | undefined;
  /** Port 587 (RFC 6409): SMTP AUTH, STARTTLS; POP before SMTP too unless switched off. */
  submission: (ServerEndpoint & { popBeforeSmtp: boolean }) | undefined;
  submissions: ServerEndpoint | undefined;
  popBeforeSmtp: { windowMinutes: number; mode: 'sliding' | 'fixed' };
  /** Passwords may be sent without TLS only from loopback (or never): clients must turn TLS on. */
  tlsRequiredForPasswords: boolean;
  provider: { name: string; contact: string };
}

function firstPort(listen: readonly string[]): number | undefined {
  for (const entry of listen) {
    const parsed = parseListenAddress(entry);
    if (parsed.ok) return parsed.value.port;
  }
  return undefined;
}

export function mailSettings(config: Config, bound?: Record<string, string[]>): MailSettings {
  // Bound addresses (port 0 in tests resolved to the real port) win over the configured ones.
  const port = (section: 'pop3' | 'pop3s' | 'smtp' | 'submission' | 'submissions') => firstPort(bound?.[section]?.length ? bound[section] : config[section].listen);
  const tls = config.tls.self_signed || (config.tls.cert !== '' && config.tls.key !== '');
  const endpoint = <T extends object>(p: number | undefined, security: Security, extra: T) => (p === undefined ? undefined : { port: p, security, ...extra });
  return {
    hostname: config.hostname,
    pop3: endpoint(port('pop3'), tls ? 'starttls' : 'none', {}),
    pop3s: tls ? endpoint(port('pop3s'), 'tls', {}) : undefined,
    smtp: endpoint(port('smtp'), tls ? 'starttls' : 'none', { auth: config.smtp.auth }),
    submission: endpoint(port('submission'), tls ? 'starttls' : 'none', { popBeforeSmtp: config.submission.pop_before_smtp }),
    submissions: tls ? endpoint(port('submissions'), 'tls', {}) : undefined,
    popBeforeSmtp: { windowMinutes: Math.max(1, Math.round(config.pop_before_smtp.window / 60_000)), mode: config.pop_before_smtp.mode },
    tlsRequiredForPasswords: config.auth.plaintext_without_tls !== 'anywhere',
    provider: { name: config.web.provider_name || config.hostname, contact: config.web.provider_contact },
  };
}

/** The incoming server to recommend: POP3S first (RFC 8314 §3.3 prefers implicit TLS), else POP3. */
export function preferredIncoming(settings: MailSettings): ServerEndpoint | undefined {
  return settings.pop3s ?? settings.pop3;
}

/**
 * The outgoing server to recommend: submission with a login (587, else 465); port 25 with POP
 * before SMTP only where nothing else is offered.
 */
export function preferredOutgoing(settings: MailSettings): (ServerEndpoint & { login: boolean; popBeforeSmtp: boolean }) | undefined {
  if (settings.submission) return { ...settings.submission, login: true, popBeforeSmtp: settings.submission.popBeforeSmtp };
  if (settings.submissions) return { ...settings.submissions, login: true, popBeforeSmtp: false };
  if (settings.smtp) return { ...settings.smtp, login: settings.smtp.auth, popBeforeSmtp: true };
  return undefined;
}
