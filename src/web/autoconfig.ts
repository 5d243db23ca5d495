import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';
import { preferredOutgoing, type MailSettings, type Security, type ServerEndpoint } from './mail-settings.ts';

// Automatic client setup documents, built with an XML library (it escapes text and attributes):
//
// - Thunderbird autoconfig, format "clientConfig" version 1.1 as Thunderbird's readFromXML
//   reads it (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat): POP3
//   first (the account type this server offers), then the outgoing servers in order of
//   preference: submission with a login first, port 25 with "smtp-after-pop" last.
// - Outlook autodiscover, the "POX" protocol ([MS-OXDSCLI] §2.2.4): a POST with the address,
//   answered with POP3 and SMTP settings. `SMTPLast` on tells Outlook to fetch mail before
//   sending, which is what POP before SMTP needs when no login-based submission is offered.

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@', format: true, suppressEmptyNode: true });
const declaration = '<?xml version="1.0" encoding="UTF-8"?>\n';

const SOCKET_TYPES: Record<Security, string> = { none: 'plain', starttls: 'STARTTLS', tls: 'SSL' };

/** The Thunderbird autoconfig document for a local domain. */
export function thunderbirdAutoconfig(settings: MailSettings, domain: string): string {
  const incoming = [settings.pop3s, settings.pop3]
    .filter((endpoint): endpoint is ServerEndpoint => endpoint !== undefined)
    .map((endpoint) => ({
      '@type': 'pop3',
      hostname: settings.hostname,
      port: endpoint.port,
      socketType: SOCKET_TYPES[endpoint.security],
      authentication: 'password-cleartext',
      username: '%EMAILADDRESS%',
      pop3: { leaveMessagesOnServer: 'false', downloadOnBiff: 'true' },
    }));
  const outgoing: object[] = [];
  for (const endpoint of [settings.submission, settings.submissions]) {
    if (endpoint) outgoing.push({ '@type': 'smtp', hostname: settings.hostname, port: endpoint.port, socketType: SOCKET_TYPES[endpoint.security], authentication: 'password-cleartext', username: '%EMAILADDRESS%' });
  }
  if (settings.smtp) {
    outgoing.push({
      '@type': 'smtp',
      hostname: settings.hostname,
      port: settings.smtp.port,
      socketType: SOCKET_TYPES[settings.smtp.security],
      // Thunderbird's name for POP before SMTP: no SMTP login, fetch mail first.
      authentication: settings.smtp.auth ? 'password-cleartext' : 'smtp-after-pop',
      ...(settings.smtp.auth ? { username: '%EMAILADDRESS%' } : {}),
    });
  }
  const document = {
    clientConfig: {
      '@version': '1.1',
      emailProvider: {
        '@id': domain,
        domain,
        displayName: `${settings.provider.name} (${domain})`,
        displayShortName: settings.provider.name,
        incomingServer: incoming,
        outgoingServer: outgoing,
      },
    },
  };
  return declaration + builder.build(document);
}

export const AUTODISCOVER_REQUEST_SCHEMA = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006';
export const AUTODISCOVER_RESPONSE_SCHEMA = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a';
const AUTODISCOVER_ENVELOPE = 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006';

/** The largest autodiscover request read; Outlook's is a few hundred bytes. */
export const AUTODISCOVER_MAX_BYTES = 8 * 1024;

export class AutodiscoverRequestError extends Error {}

/**
 * The e-mail address of an autodiscover request. The parser is bounded (the body's size is
 * limited before it gets here, nesting below) and takes no DTD: a document with one (entity
 * expansion, external entities) is refused before parsing, and entities are never expanded.
 */
export function parseAutodiscoverRequest(body: string): string {
  if (body.length > AUTODISCOVER_MAX_BYTES) throw new AutodiscoverRequestError(`the request is larger than ${AUTODISCOVER_MAX_BYTES} bytes`);
  if (/<!DOCTYPE|<!ENTITY/i.test(body)) throw new AutodiscoverRequestError('document type declarations and entities are not accepted');
  const valid = XMLValidator.validate(body);
  if (valid !== true) throw new AutodiscoverRequestError(`the request is not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`);
  const parser = new XMLParser({ processEntities: false, removeNSPrefix: true, ignoreAttributes: true, parseTagValue: false, maxNestedTags: 16 });
  let parsed: unknown;
  try {
    parsed = parser.parse(body);
  } catch (error) {
    throw new AutodiscoverRequestError(`the request cannot be read: ${(error as Error).message}`);
  }
  const address = (parsed as { Autodiscover?: { Request?: { EMailAddress?: unknown } } })?.Autodiscover?.Request?.EMailAddress;
  if (typeof address !== 'string' || address.trim() === '') throw new AutodiscoverRequestError('the request names no Autodiscover/Request/EMailAddress');
  return address.trim();
}

/** The POX autodiscover answer for one address of a local domain. */
export function autodiscoverResponse(settings: MailSettings, address: string): string {
  const protocols: object[] = [];
  const incoming = settings.pop3s ?? settings.pop3;
  if (incoming) {
    protocols.push({
      Type: 'POP3',
      Server: settings.hostname,
      Port: incoming.port,
      LoginName: address,
      DomainRequired: 'off',
      SPA: 'off',
      SSL: incoming.security === 'none' ? 'off' : 'on',
      ...(incoming.security === 'starttls' ? { Encryption: 'TLS' } : incoming.security === 'tls' ? { Encryption: 'SSL' } : {}),
      AuthRequired: 'on',
    });
  }
  const outgoing = preferredOutgoing(settings);
  if (outgoing) {
    protocols.push({
      Type: 'SMTP',
      Server: settings.hostname,
      Port: outgoing.port,
      ...(outgoing.login ? { LoginName: address } : {}),
      DomainRequired: 'off',
      SPA: 'off',
      SSL: outgoing.security === 'none' ? 'off' : 'on',
      ...(outgoing.security === 'starttls' ? { Encryption: 'TLS' } : outgoing.security === 'tls' ? { Encryption: 'SSL' } : {}),
      AuthRequired: outgoing.login ? 'on' : 'off',
      ...(outgoing.login ? { UsePOPAuth: 'on' } : {}),
      // Only POP before SMTP: Outlook must check for mail before it sends.
      SMTPLast: outgoing.login ? 'off' : 'on',
    });
  }
  const document = {
    Autodiscover: {
      '@xmlns': AUTODISCOVER_ENVELOPE,
      Response: {
        '@xmlns': AUTODISCOVER_RESPONSE_SCHEMA,
        User: { DisplayName: address },
        Account: { AccountType: 'email', Action: 'settings', Protocol: protocols },
      },
    },
  };
  return declaration + builder.build(document);
}

/** An autodiscover error answer ([MS-OXDSCLI] §2.2.4.2.1.1): Outlook then asks the user. */
export function autodiscoverError(code: 500 | 600 | 601, message: string): string {
  const document = {
    Autodiscover: {
      '@xmlns': AUTODISCOVER_ENVELOPE,
      Response: { Error: { '@Time': new Date().toISOString().slice(11, 19), '@Id': '1', ErrorCode: code, Message: message, DebugData: '' } },
    },
  };
  return declaration + builder.build(document);
}
