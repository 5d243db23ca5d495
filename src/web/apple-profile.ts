import { createHash } from 'node:crypto';
import plist from 'plist';
import { preferredIncoming, preferredOutgoing, type MailSettings } from './mail-settings.ts';

// An Apple configuration profile (.mobileconfig) that sets up one POP account in Mail on iOS,
// iPadOS and macOS: an unsigned plist with one com.apple.mail.managed payload
// (https://developer.apple.com/documentation/devicemanagement/mail). The password is not in
// it: the device asks for it when the profile is installed. Built by the plist library, which
// escapes every string.

export const MOBILECONFIG_TYPE = 'application/x-apple-aspen-config';

/** A UUID derived from the address, so installing a new profile replaces the old one. */
function stableUuid(text: string): string {
  const hex = createHash('sha256').update(text).digest('hex');
  // RFC 9562 §5.8 (custom, version 8) layout: version and variant bits set.
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${((parseInt(hex[16], 16) & 0x3) | 0x8).toString(16)}${hex.slice(17, 20)}-${hex.slice(20, 32)}`.toUpperCase();
}

/** The profile for one address of a local domain (the address is checked by the caller). */
export function appleMailProfile(settings: MailSettings, address: string): string {
  const incoming = preferredIncoming(settings);
  const outgoing = preferredOutgoing(settings);
  if (!incoming || !outgoing) throw new Error('this server offers no POP3 or no outgoing SMTP listener');
  const reverseHost = settings.hostname.split('.').reverse().join('.');
  const identifier = `${reverseHost}.popgate.mail.${stableUuid(address)}`;
  const account = {
    PayloadType: 'com.apple.mail.managed',
    PayloadVersion: 1,
    PayloadIdentifier: `${identifier}.account`,
    PayloadUUID: stableUuid(`account:${address}`),
    PayloadDisplayName: address,
    EmailAccountDescription: `${settings.provider.name}: ${address}`,
    EmailAccountType: 'EmailTypePOP',
    EmailAddress: address,
    IncomingMailServerHostName: settings.hostname,
    IncomingMailServerPortNumber: incoming.port,
    IncomingMailServerUseSSL: incoming.security !== 'none',
    IncomingMailServerAuthentication: 'EmailAuthPassword',
    IncomingMailServerUsername: address,
    OutgoingMailServerHostName: settings.hostname,
    OutgoingMailServerPortNumber: outgoing.port,
    OutgoingMailServerUseSSL: outgoing.security !== 'none',
    // Without a login (POP before SMTP on port 25) Mail sends right after checking mail.
    OutgoingMailServerAuthentication: outgoing.login ? 'EmailAuthPassword' : 'EmailAuthNone',
    ...(outgoing.login ? { OutgoingMailServerUsername: address, OutgoingPasswordSameAsIncomingPassword: true } : {}),
  };
  const profile = {
    PayloadType: 'Configuration',
    PayloadVersion: 1,
    PayloadIdentifier: identifier,
    PayloadUUID: stableUuid(`profile:${address}`),
    PayloadDisplayName: `${settings.provider.name} mail (${address})`,
    PayloadDescription: `Sets up ${address} in Mail (POP3).`,
    PayloadOrganization: settings.provider.name,
    PayloadRemovalDisallowed: false,
    PayloadContent: [account],
  };
  return plist.build(profile);
}

/** A file name for the download: only characters that need no quoting in Content-Disposition. */
export function profileFileName(address: string): string {
  return `${address.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100)}.mobileconfig`;
}
