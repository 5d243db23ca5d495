import type { Command } from 'commander';
import { normalizeDomain } from '../accounts/address.ts';
import type { Config } from '../config/schema.ts';
import { parseListenAddress } from '../net/listen.ts';
import { clientSetupRecords } from '../web/dns-records.ts';
import { mailSettings } from '../web/mail-settings.ts';
import { UsageError } from './password.ts';

// `popgate dns records [domain...]`: the records to publish so that mail programs set
// themselves up (autoconfig, autodiscover, RFC 6186 SRV), for the named or every local domain.

export function registerDnsCommands(program: Command, loadConfig: () => Config, localDomains: () => Promise<string[]>): void {
  const dns = program.command('dns').description('DNS records to publish');
  dns
    .command('records [domains...]')
    .description('print the autoconfig/autodiscover CNAMEs and RFC 6186 SRV records for local domains (all by default)')
    .action(async (names: string[]) => {
      const config = loadConfig();
      const local = await localDomains();
      const domains = names.length > 0 ? names.map((name) => normalizeDomain(name) ?? name) : local;
      const unknown = domains.filter((domain) => !local.includes(domain));
      if (unknown.length > 0) throw new UsageError(`not a local domain: ${unknown.join(', ')} (see popgate domain list)`);
      if (domains.length === 0) throw new UsageError('there is no local domain yet: popgate domain add example.com');
      const httpsPort = config.https.listen.map((entry) => parseListenAddress(entry)).find((parsed) => parsed.ok)?.value.port;
      const settings = mailSettings(config);
      const blocks = domains.map((domain) => clientSetupRecords(settings, domain, httpsPort).join('\n'));
      process.stdout.write(blocks.join('\n\n') + '\n');
    });
}
