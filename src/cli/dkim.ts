import { Option, type Command } from 'commander';
import { normalizeDomain } from '../accounts/address.ts';
import type { Config } from '../config/schema.ts';
import { DkimKeyError, dnsRecord, generateKey, keyPath, readKey, zoneFileLine, type DkimAlgorithm, type DkimKey } from '../dkim/keys.ts';

// `popgate dkim`: create DKIM keys and print the DNS records to publish for them. Keys live in
// dkim.keys_dir/<domain>/<selector>.pem; the server signs with the key of dkim.selector and
// notices a new file within seconds, so no restart is needed for a first key.

const SELECTOR = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i;

interface GenerateOptions {
  selector?: string;
  algorithm: DkimAlgorithm;
  bits?: string;
}

export function registerDkimCommands(program: Command, loadConfig: () => Config): void {
  const dkim = program.command('dkim').description('DKIM signing keys and the DNS records to publish');

  dkim
    .command('generate <domain>')
    .description('create a signing key for a domain and print the DNS TXT record to publish')
    .option('--selector <selector>', 'the selector (default: dkim.selector of the config, "popgate" unless set)')
    .addOption(new Option('--algorithm <algorithm>', 'key type: rsa is verified everywhere; ed25519 (RFC 8463) is not yet').choices(['rsa', 'ed25519']).default('rsa'))
    .option('--bits <bits>', 'RSA key size, 1024 to 4096 (default 2048)')
    .action((name: string, options: GenerateOptions) => {
      const config = loadConfig();
      const domain = domainFrom(name);
      const selector = selectorFrom(options.selector, config);
      const bits = bitsFrom(options);
      const key = generateKey(config.dkim.keys_dir, domain, selector, options.algorithm, bits);
      const size = key.algorithm === 'rsa' ? `a ${bits}-bit RSA` : 'an Ed25519';
      const lines = [`created ${size} DKIM key for ${domain}: ${keyPath(config.dkim.keys_dir, domain, selector)} (mode 0600)`, '', ...recordLines(key), ''];
      if (selector === config.dkim.selector) {
        lines.push(
          `a running server signs mail from ${domain} with this key within seconds: publish the record now ` +
            '(until receivers can see it, they treat the signatures as failing, the same as unsigned mail)',
        );
      } else {
        lines.push(
          `popgate signs with the selector of dkim.selector ("${config.dkim.selector}"), not "${selector}": once this record is published, ` +
            `set dkim.selector = "${selector}" in the config file and restart popgate ` +
            `(the selector applies to every domain, so each domain you sign for needs a "${selector}" key first)`,
        );
      }
      console.log(lines.join('\n'));
    });

  dkim
    .command('show <domain>')
    .description('print the DNS TXT record of an existing key')
    .option('--selector <selector>', 'the selector (default: dkim.selector of the config)')
    .action((name: string, options: { selector?: string }) => {
      const config = loadConfig();
      const domain = domainFrom(name);
      const selector = selectorFrom(options.selector, config);
      const key = readKey(config.dkim.keys_dir, domain, selector);
      if (!key) {
        const flag = selector === config.dkim.selector ? '' : ` --selector ${selector}`;
        throw new DkimKeyError(`no DKIM key for ${domain} (selector ${selector}): create one with popgate dkim generate ${domain}${flag}`);
      }
      const used = selector === config.dkim.selector ? 'in use: dkim.selector is' : `not in use: dkim.selector is "${config.dkim.selector}", not`;
      const lines = [`${key.algorithm === 'rsa' ? 'RSA' : 'Ed25519'} DKIM key for ${domain}: ${keyPath(config.dkim.keys_dir, domain, selector)} (${used} "${selector}")`, '', ...recordLines(key)];
      console.log(lines.join('\n'));
    });
}

function recordLines(key: DkimKey): string[] {
  const { name, value } = dnsRecord(key);
  return ['publish this DNS TXT record:', `  name:  ${name}`, `  value: ${value}`, '', 'as a zone-file line:', zoneFileLine(key)];
}

function domainFrom(input: string): string {
  const domain = normalizeDomain(input);
  if (!domain) throw new DkimKeyError(`"${input}" is not a valid domain name: give the domain of the senders' From: addresses, such as example.com`);
  return domain;
}

function selectorFrom(input: string | undefined, config: Config): string {
  if (input === undefined) return config.dkim.selector;
  if (!SELECTOR.test(input) || input.split('.').some((label) => label.length > 63)) {
    throw new DkimKeyError(`"${input}" is not a valid selector: use letters, digits and hyphens, such as popgate2026`);
  }
  return input;
}

function bitsFrom(options: GenerateOptions): number {
  if (options.bits === undefined) return 2048;
  if (options.algorithm !== 'rsa') throw new DkimKeyError('--bits applies to RSA keys only: Ed25519 keys have a fixed size');
  const bits = Number(options.bits);
  if (!Number.isInteger(bits) || bits < 1024 || bits > 4096) {
    throw new DkimKeyError(`--bits ${options.bits}: give a size from 1024 to 4096 (2048 is the usual choice; RFC 8301 forbids fewer than 1024)`);
  }
  return bits;
}
