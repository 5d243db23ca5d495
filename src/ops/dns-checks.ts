import { Resolver } from 'node:dns/promises';
import { isIPv4 } from 'node:net';
import { dnsRecord, keyPath, readKey } from '../dkim/keys.ts';
import { DnsError, SystemDnsResolver } from '../dns/resolver.ts';
import { fail, ok, warn, type CheckName, type Finding } from './findings.ts';
import { parseDkimRecord, parseDmarcRecord, parseTagList, parseTlsRptRecord, spfAllQualifier, spfRecords } from './records.ts';

// The DNS side of `popgate doctor`: what other mail servers look up before they accept mail
// from this server or send mail to it. Every lookup goes through the resolvers of [dns] servers
// (or the system's), like the queue's own. mailauth's SPF and MTA-STS code is loaded by the
// checks that use it: the CLI and the server import this module, and neither should pay for it.

/** The configured resolvers, with the lookups the doctor needs beside those of routing. */
export class DoctorDns {
  readonly routing: SystemDnsResolver;
  readonly #resolver: Resolver;

  constructor(servers: readonly string[], timeoutMs: number) {
    this.routing = new SystemDnsResolver(servers, timeoutMs);
    this.#resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
    if (servers.length > 0) this.#resolver.setServers([...servers]);
  }

  /**
   * The PTR names of an address in DNS, lower case without the final dot; [] when it has none.
   * Asked as a PTR query: Resolver.reverse() would answer from /etc/hosts first, and other
   * mail servers see only DNS.
   */
  async reverse(ip: string): Promise<string[]> {
    try {
      return ((await this.#resolver.resolve(reverseName(ip), 'PTR')) as string[]).map(bareName);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
      if (code === 'ENOTFOUND' || code === 'ENODATA') return [];
      throw new DnsError(`PTR lookup for ${ip} failed (${code})`, code, false);
    }
  }

  /** TXT records of a name, [] when the name or its TXT records do not exist. */
  async txt(name: string): Promise<string[]> {
    try {
      return await this.routing.txt(name);
    } catch (error) {
      if (error instanceof DnsError && error.permanent) return [];
      throw error;
    }
  }

  /** The shape of dns.promises.resolve, for mailauth's SPF and MTA-STS code. */
  readonly resolve = (name: string, type: string): Promise<string[][] | string[]> =>
    this.#resolver.resolve(name, type as 'TXT') as Promise<string[][] | string[]>;
}

export interface DnsCheckSettings {
  /** The server's name (config `hostname`). */
  hostname: string;
  /** outbound.source_address, or "". */
  sourceAddress: string;
  /** outbound.relayhost, or "". */
  relayhost: string;
  keysDir: string;
  selector: string;
  /** For a lookup that takes several queries (SPF). */
  timeoutMs: number;
}

/** A failed lookup is a finding too: what failed, and where to look. */
function lookupFailed(check: CheckName, subject: string, error: unknown): Finding {
  const message = error instanceof Error ? error.message : String(error);
  return fail(check, subject, `lookup failed: ${message}`, "check the resolvers ([dns] servers) and the zone's name servers, then run doctor again");
}

/** Runs a check; a lookup that throws becomes a failure of that check. */
export async function guarded(check: CheckName, subject: string, run: () => Promise<Finding | Finding[]>): Promise<Finding[]> {
  try {
    const found = await run();
    return Array.isArray(found) ? found : [found];
  } catch (error) {
    return [lookupFailed(check, subject, error)];
  }
}

/** A and AAAA of `hostname`; the addresses are what the other checks compare with. */
export async function checkAddress(dns: DoctorDns, settings: DnsCheckSettings): Promise<{ findings: Finding[]; addresses: string[] }> {
  const { hostname, sourceAddress } = settings;
  let addresses: string[];
  try {
    addresses = await dns.routing.addresses(hostname);
  } catch (error) {
    const permanent = error instanceof DnsError && error.permanent;
    return {
      findings: [permanent ? fail('address', hostname, `${hostname} does not exist in DNS`, `publish an A (and an AAAA) record for ${hostname} with this server's public address`) : lookupFailed('address', hostname, error)],
      addresses: [],
    };
  }
  if (addresses.length === 0) {
    return { findings: [fail('address', hostname, 'no A or AAAA record', `publish an A (and an AAAA) record for ${hostname} with this server's public address`)], addresses };
  }
  const findings = [ok('address', hostname, addresses.join(', '))];
  if (sourceAddress && !addresses.includes(sourceAddress)) {
    findings.push(
      warn('address', sourceAddress, `outbound.source_address is not an address of ${hostname}`, `add ${sourceAddress} to the A/AAAA records of ${hostname}, or send from one of ${addresses.join(', ')}`),
    );
  }
  return { findings, addresses };
}

/** The addresses mail leaves from: outbound.source_address, else every address of `hostname`. */
export function sendingAddresses(settings: DnsCheckSettings, hostAddresses: readonly string[]): string[] {
  return settings.sourceAddress ? [settings.sourceAddress] : [...hostAddresses];
}

/**
 * Reverse DNS of each sending address: receivers refuse or score mail from an address without
 * a PTR, or whose PTR name does not resolve back to it (forward-confirmed reverse DNS).
 */
export async function checkPtr(dns: DoctorDns, settings: DnsCheckSettings, addresses: readonly string[]): Promise<Finding[]> {
  const { hostname } = settings;
  const findings: Finding[] = [];
  for (const ip of addresses) {
    findings.push(
      ...(await guarded('ptr', ip, async () => {
        const names = await dns.reverse(ip);
        const setPtr = `have whoever runs ${ip} (your hosting or network provider) set its PTR record to ${hostname}`;
        if (names.length === 0) return fail('ptr', ip, 'no reverse DNS (PTR) record: many receivers refuse mail from such an address', setPtr);
        if (names.includes(hostname)) return ok('ptr', ip, hostname);
        const [name] = names;
        const back = await dns.routing.addresses(name).catch((): string[] => []);
        if (back.includes(ip)) {
          return warn('ptr', ip, `PTR names ${name}, not ${hostname}; it resolves back, but receivers compare it with the name this server greets with`, `${setPtr}, or set hostname = "${name}"`);
        }
        return fail('ptr', ip, `PTR names ${name}, which does not resolve back to ${ip}`, setPtr);
      })),
    );
  }
  return findings;
}

/** MX of a local domain: does mail for it reach this server? */
export async function checkMx(dns: DoctorDns, settings: DnsCheckSettings, hostAddresses: readonly string[], domain: string): Promise<Finding> {
  const { hostname } = settings;
  const publish = `publish "${domain}. MX 10 ${hostname}."`;
  let records;
  try {
    records = await dns.routing.mx(domain);
  } catch (error) {
    if (error instanceof DnsError && error.permanent) return fail('mx', domain, `${domain} does not exist in DNS: no mail reaches it`, `register the domain and ${publish}`);
    return lookupFailed('mx', domain, error);
  }
  const isOurs = async (host: string) => host === hostname || (await dns.routing.addresses(host).catch((): string[] => [])).some((ip) => hostAddresses.includes(ip));
  if (records.some((record) => record.exchange === '')) {
    return fail('mx', domain, 'a null MX (RFC 7505): the domain says it accepts no mail', `replace it: ${publish}`);
  }
  if (records.length === 0) {
    // RFC 5321 §5.1: without MX records, senders use the domain's own address records.
    if (await isOurs(domain)) return warn('mx', domain, `no MX record; senders fall back to the address of ${domain}, which is this server`, publish);
    return fail('mx', domain, `no MX record, and ${domain} itself is not this server: mail for ${domain} does not arrive here`, publish);
  }
  records.sort((a, b) => a.priority - b.priority);
  const listed = records.map((record) => `${record.priority} ${record.exchange}`).join(', ');
  const ours: string[] = [];
  for (const record of records) if (await isOurs(record.exchange)) ours.push(record.exchange);
  if (ours.length === 0) {
    return warn('mx', domain, `MX ${listed}: none of them is this server (${hostname})`, `fine if those hosts pass mail for ${domain} on to this server; otherwise ${publish}`);
  }
  return ok('mx', domain, `MX ${listed} (${ours.join(', ')} is this server)`);
}

/** SPF of a local domain: may this server send as the domain, and may nobody else? */
export async function checkSpf(dns: DoctorDns, settings: DnsCheckSettings, senders: readonly string[], domain: string): Promise<Finding> {
  const { hostname, relayhost } = settings;
  const records = spfRecords(await dns.txt(domain));
  const suggestion = `"${domain}. TXT \\"v=spf1 a:${hostname} -all\\""`;
  if (records.length === 0) return fail('spf', domain, 'no SPF record: receivers cannot tell this server may send for the domain', `publish ${suggestion}`);
  if (records.length > 1) return fail('spf', domain, `${records.length} SPF records: receivers treat that as an error (RFC 7208 §4.5)`, 'merge them into one record');
  const [record] = records;
  if (spfAllQualifier(record) === '+') return fail('spf', domain, `"${record}" ends in +all: anybody may send as ${domain}`, 'end the record with -all (or ~all)');
  if (relayhost) return ok('spf', domain, `"${record}" (mail leaves through the relayhost ${relayhost}: the record must allow the addresses it sends from)`);
  if (senders.length === 0) return fail('spf', domain, `"${record}" cannot be checked: ${hostname} has no address`, `publish an A record for ${hostname} (see the address check)`);
  const refused: string[] = [];
  let temporary = false;
  const { spf } = await import('mailauth/lib/spf/index.js');
  for (const ip of senders) {
    const result = await spf({
      sender: `postmaster@${domain}`,
      ip,
      helo: hostname,
      mta: hostname,
      resolver: dns.resolve,
      maxElapsedTime: settings.timeoutMs * 4,
    });
    const verdict = result.status.result;
    if (verdict === 'pass') continue;
    if (verdict === 'temperror') temporary = true;
    refused.push(`${ip} (${verdict})`);
  }
  if (refused.length === 0) return ok('spf', domain, `"${record}" allows ${senders.join(', ')}`);
  const text = `"${record}" does not allow ${refused.join(', ')}`;
  if (temporary) return warn('spf', domain, `${text}: a lookup failed for now`, 'run doctor again; if it persists, check the names the record includes');
  return fail('spf', domain, `${text}: receivers see SPF fail for mail from this server`, `add "a:${hostname}" (or ip4:/ip6: with the address) before the all`);
}

/** DKIM: is the record published for the selector in use the key popgate signs with? */
export async function checkDkim(dns: DoctorDns, settings: DnsCheckSettings, domain: string): Promise<Finding> {
  const { keysDir, selector } = settings;
  let key;
  try {
    key = readKey(keysDir, domain, selector);
  } catch (error) {
    return fail('dkim', domain, `cannot read the key ${keyPath(keysDir, domain, selector)}: ${(error as Error).message}`, 'run doctor as the user popgate runs as, and check the file');
  }
  if (!key) return warn('dkim', domain, `no DKIM key for selector ${selector}: mail from ${domain} leaves unsigned`, `popgate dkim generate ${domain}, then publish the record it prints`);
  const { name, value } = dnsRecord(key);
  const expected = parseDkimRecord(value);
  if (!expected.ok) throw new Error(`the record of the key in use does not parse: ${expected.reason}`);
  const show = `publish the record "popgate dkim show ${domain}" prints`;
  const texts = await dns.txt(name);
  if (texts.length === 0) return fail('dkim', domain, `nothing published at ${name}: receivers cannot verify the signatures`, show);
  for (const text of texts) {
    const published = parseDkimRecord(text);
    if (!published.ok) return fail('dkim', domain, `the record at ${name} is not valid: ${published.reason}`, show);
    if (published.value.publicKey === '') return fail('dkim', domain, `the key at ${name} is revoked (empty p=)`, show);
    if (published.value.publicKey !== expected.value.publicKey || published.value.keyType !== expected.value.keyType) {
      return fail('dkim', domain, `the key published at ${name} is not the one popgate signs with (${keyPath(keysDir, domain, selector)}): signatures fail`, show);
    }
  }
  return ok('dkim', domain, `${name} publishes the ${key.algorithm === 'rsa' ? 'RSA' : 'Ed25519'} key in use`);
}

/** DMARC: present and parseable (RFC 7489 §6.6.3: several records, or none, mean no policy). */
export async function checkDmarc(dns: DoctorDns, domain: string): Promise<Finding> {
  const name = `_dmarc.${domain}`;
  const records = (await dns.txt(name)).filter((text) => /^v\s*=\s*DMARC1\b/i.test(text.trim()));
  if (records.length === 0) {
    return warn(
      'dmarc',
      domain,
      `no DMARC record at ${name}: large receivers (Gmail, Yahoo) expect one from domains that send much mail`,
      `publish "${name}. TXT \\"v=DMARC1; p=none; rua=mailto:postmaster@${domain}\\"", then tighten p= once the reports look right`,
    );
  }
  if (records.length > 1) return fail('dmarc', domain, `${records.length} DMARC records at ${name}: receivers then apply none (RFC 7489 §6.6.3)`, 'keep one');
  const parsed = parseDmarcRecord(records[0].trim());
  if (!parsed.ok) return fail('dmarc', domain, `"${records[0]}" cannot be parsed: ${parsed.reason}`, `correct the record at ${name} (RFC 7489 §6.4)`);
  const { policy, percent, aggregateReports } = parsed.value;
  const reports = aggregateReports.length > 0 ? `reports to ${aggregateReports.join(', ')}` : 'no rua= (nobody receives aggregate reports)';
  return ok('dmarc', domain, `p=${policy}${percent < 100 ? ` pct=${percent}` : ''}, ${reports}`);
}

/**
 * MTA-STS (RFC 8461), when published: the policy must name this server, or senders that
 * honour it refuse to deliver here once its mode is "enforce".
 */
export async function checkMtaSts(dns: DoctorDns, settings: DnsCheckSettings, domain: string): Promise<Finding> {
  const name = `_mta-sts.${domain}`;
  const records = (await dns.txt(name)).filter((text) => /^v=STSv1\b/.test(text.trim()));
  if (records.length === 0) return ok('mta-sts', domain, 'not published (optional, RFC 8461)');
  if (records.length > 1) return fail('mta-sts', domain, `${records.length} records at ${name}: senders then use no policy (RFC 8461 §3.1)`, 'keep one');
  const tags = parseTagList(records[0].trim());
  const id = tags.ok ? tags.value.get('id') : undefined;
  if (!tags.ok || !id || !/^[A-Za-z0-9]{1,32}$/.test(id)) {
    return fail('mta-sts', domain, `"${records[0]}" is not a valid MTA-STS record`, `publish "${name}. TXT \\"v=STSv1; id=20260101\\"" (id: 1 to 32 letters and digits)`);
  }
  const url = `https://mta-sts.${domain}/.well-known/mta-sts.txt`;
  const { fetchPolicy, validateMx } = await import('mailauth/lib/mta-sts.js');
  let policy;
  try {
    policy = await fetchPolicy(domain, { resolver: dns.resolve, timeout: settings.timeoutMs * 2 });
  } catch (error) {
    return warn('mta-sts', domain, `id=${id} is published, but the policy at ${url} cannot be fetched (${(error as Error).message})`, `serve the policy there with a valid certificate, or remove the record at ${name}`);
  }
  if (!policy) return warn('mta-sts', domain, `id=${id} is published, but mta-sts.${domain} has no address`, `serve the policy at ${url}, or remove the record at ${name}`);
  const described = `id=${id}, mode ${policy.mode}, mx ${(policy.mx ?? []).join(' ') || '(none)'}, max_age ${policy.maxAge ?? '?'}s`;
  if (validateMx(settings.hostname, policy).valid) return ok('mta-sts', domain, described);
  const fix = `add "mx: ${settings.hostname}" to the policy at ${url} and change the id in ${name}`;
  if (policy.mode === 'enforce') return fail('mta-sts', domain, `${described}: ${settings.hostname} is not listed, so senders that honour MTA-STS refuse to deliver here`, fix);
  return warn('mta-sts', domain, `${described}: ${settings.hostname} is not listed (reports only while the mode is testing)`, fix);
}

/** TLS-RPT (RFC 8460), when published: where senders report TLS trouble. */
export async function checkTlsRpt(dns: DoctorDns, domain: string): Promise<Finding> {
  const name = `_smtp._tls.${domain}`;
  const records = (await dns.txt(name)).filter((text) => /^v=TLSRPTv1\b/.test(text.trim()));
  if (records.length === 0) return ok('tls-rpt', domain, 'not published (optional, RFC 8460)');
  if (records.length > 1) return warn('tls-rpt', domain, `${records.length} records at ${name}: senders then report nowhere (RFC 8460 §3)`, 'keep one');
  const parsed = parseTlsRptRecord(records[0].trim());
  if (!parsed.ok) return warn('tls-rpt', domain, `"${records[0]}" cannot be parsed: ${parsed.reason}`, `correct the record at ${name} (RFC 8460 §3)`);
  return ok('tls-rpt', domain, `reports to ${parsed.value.reportTo.join(', ')}`);
}

/** The name of an address's PTR record (RFC 1035 §3.5, RFC 3596 §2.5). */
export function reverseName(ip: string): string {
  if (isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  let text = ip.toLowerCase();
  // An IPv4 tail (::ffff:192.0.2.1) as two groups of hex.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const nibbles = groups.map((group) => group.padStart(4, '0')).join('');
  return `${[...nibbles].reverse().join('.')}.ip6.arpa`;
}

function bareName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}
