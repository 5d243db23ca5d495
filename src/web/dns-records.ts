import type { MailSettings } from './mail-settings.ts';

// The DNS records that let mail programs find this server by themselves, as zone-file lines:
// - autoconfig.<domain> and autodiscover.<domain> pointing at this host (Thunderbird asks
//   http://autoconfig.<domain>/mail/config-v1.1.xml, Outlook https://autodiscover.<domain>/…);
// - the SRV records of RFC 6186 §3 for POP3 and submission, implicit TLS preferred as RFC 8314
//   §5.1 asks (lower priority value), and "." for what is not offered (RFC 6186 §4, RFC 2782),
//   so clients do not probe for IMAP;
// - _autodiscover._tcp (Outlook's SRV fallback, [MS-OXDSCLI] §3.1.5.1) when HTTPS is served.

const TTL = 3600;

export function clientSetupRecords(settings: MailSettings, domain: string, httpsPort: number | undefined): string[] {
  const target = `${settings.hostname}.`;
  const srv = (service: string, priority: number, port: number | undefined) =>
    port === undefined ? `_${service}._tcp.${domain}. ${TTL} IN SRV 0 0 0 .` : `_${service}._tcp.${domain}. ${TTL} IN SRV ${priority} 1 ${port} ${target}`;
  const lines = [
    `; ${domain}: automatic setup of mail programs (see docs/web.md)`,
    `autoconfig.${domain}. ${TTL} IN CNAME ${target}`,
    `autodiscover.${domain}. ${TTL} IN CNAME ${target}`,
  ];
  if (httpsPort !== undefined) lines.push(`_autodiscover._tcp.${domain}. ${TTL} IN SRV 0 1 ${httpsPort} ${target}`);
  lines.push(
    srv('submissions', 0, settings.submissions?.port),
    srv('submission', 10, settings.submission?.port),
    srv('pop3s', 0, settings.pop3s?.port),
    srv('pop3', 10, settings.pop3?.port),
    srv('imaps', 0, undefined),
    srv('imap', 0, undefined),
  );
  return lines;
}
