import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.ts';
import { silentLogger } from '../log/logger.ts';
import type { QueuedMessage } from '../queue/store.ts';
import { openBackends } from '../server/app.ts';
import {
  checkAddress,
  checkDkim,
  checkDmarc,
  checkMtaSts,
  checkMx,
  checkPtr,
  checkSpf,
  checkTlsRpt,
  DoctorDns,
  guarded,
  sendingAddresses,
  type DnsCheckSettings,
} from './dns-checks.ts';
import { CHECKS, fail, ok, skip, warn, type CheckName, type Finding } from './findings.ts';
import { checkCertificate, checkListeners, checkPostgres, checkQueue, checkRedis, checkSqlite, checkStorage } from './host-checks.ts';
import { queryClockOffset } from './ntp.ts';

// `popgate doctor`: everything that makes mail work, checked from this machine, each finding
// with what to do. It only reads: it never migrates a schema, creates a file it does not
// remove again, or sends mail.

export interface DoctorOptions {
  /** Check only these domains (`--domain`); by default every local domain. */
  domains?: readonly string[];
  /** Compare the clock with this NTP server, "host" or "host:port" (`--ntp`). */
  ntpServer?: string;
  /** Run only these checks (`--only`); by default all. */
  only?: readonly CheckName[];
  /** How long one network probe may take: a listener's greeting, NTP, Redis, PostgreSQL. */
  timeoutMs?: number;
  now?: () => number;
}

/** Checks that look at each local domain. */
const DOMAIN_CHECKS: readonly CheckName[] = ['mx', 'spf', 'dkim', 'dmarc', 'mta-sts', 'tls-rpt'];
/** Domains are checked this many at a time (each check is a few DNS queries). */
const DOMAIN_CONCURRENCY = 8;
/** A clock this far off is noticed (TLS, DKIM timestamps, POP-before-SMTP windows); this far, mail suffers. */
const CLOCK_WARN_MS = 1000;
const CLOCK_FAIL_MS = 60_000;

export async function runDoctor(config: Config, options: DoctorOptions = {}): Promise<Finding[]> {
  const wanted = (check: CheckName) => !options.only || options.only.includes(check);
  const now = options.now ?? Date.now;
  const timeoutMs = options.timeoutMs ?? 5000;
  const findings: Finding[] = [];
  const domainChecks = DOMAIN_CHECKS.filter(wanted);
  // The stores are opened only when needed: for the local domains and the queue.
  const needStores = wanted('queue') || (domainChecks.length > 0 && options.domains === undefined);

  // The engines of a cluster come first: without them the stores cannot be opened, and
  // openBackends would migrate an outdated schema, which a check must not do.
  let storesReachable = true;
  if (config.cluster.redis !== '' && (wanted('redis') || needStores)) {
    const finding = await checkRedis(config.cluster.redis, timeoutMs);
    findings.push(finding);
    if (finding.status === 'fail') storesReachable = false;
  }
  if (config.database.url !== '' && (wanted('postgres') || needStores)) {
    const { finding, current } = await checkPostgres(config.database.url, timeoutMs);
    findings.push(finding);
    if (!current) storesReachable = false;
  }
  if (wanted('sqlite')) findings.push(...checkSqlite(config));
  if (wanted('storage')) findings.push(...(await checkStorage(config.data_dir)));

  let domains = options.domains;
  let queued: QueuedMessage[] | undefined;
  let storesProblem = storesReachable ? undefined : { message: 'the shared stores do not answer', fix: 'see the redis and postgres findings' };
  // openBackends would create an empty database where there is none: a wrong data_dir
  // must be reported, not papered over.
  if (storesReachable && !existsSync(join(config.data_dir, 'popgate.sqlite'))) {
    storesReachable = false;
    storesProblem = { message: `there is no database in ${config.data_dir}`, fix: 'check data_dir in the config; popgate creates the database at its first start' };
  }
  if (needStores && storesReachable) {
    try {
      const backends = await openBackends(config, silentLogger());
      try {
        domains ??= await backends.accounts.listDomains();
        if (wanted('queue')) queued = await backends.queue.list();
      } finally {
        await backends.close();
      }
    } catch (error) {
      storesProblem = { message: `the stores cannot be opened: ${(error as Error).message}`, fix: 'run doctor as the user popgate runs as, with the same config' };
    }
  }
  if (wanted('queue')) findings.push(queued ? checkQueue(config, queued, now()) : fail('queue', 'outbound', `not read: ${storesProblem?.message}`, storesProblem?.fix ?? ''));

  const certificate = wanted('certificate') || wanted('listeners') ? checkCertificate(config, now()) : undefined;
  if (wanted('listeners')) findings.push(...(await checkListeners(config, timeoutMs, certificate?.fingerprint)));
  if (certificate && wanted('certificate')) findings.push(...certificate.findings);

  const dnsWanted = wanted('address') || wanted('ptr') || domainChecks.length > 0;
  if (dnsWanted) {
    const dns = new DoctorDns(config.dns.servers, config.dns.timeout);
    const settings: DnsCheckSettings = {
      hostname: config.hostname.toLowerCase(),
      sourceAddress: config.outbound.source_address,
      relayhost: config.outbound.relayhost,
      keysDir: config.dkim.keys_dir,
      selector: config.dkim.selector,
      timeoutMs: config.dns.timeout,
    };
    const address = await checkAddress(dns, settings);
    if (wanted('address')) findings.push(...address.findings);
    const senders = sendingAddresses(settings, address.addresses);
    if (wanted('ptr')) findings.push(...(await checkPtr(dns, settings, senders)));
    if (domainChecks.length > 0) {
      if (domains === undefined) {
        findings.push(fail(domainChecks[0], '-', `local domains unknown: ${storesProblem?.message}`, `${storesProblem?.fix}, or name the domains with --domain`));
      } else if (domains.length === 0) {
        findings.push(warn(domainChecks[0], '-', 'no local domains', 'popgate domain add example.net'));
      } else {
        const perDomain = async (domain: string): Promise<Finding[]> => {
          const runs: Promise<Finding[]>[] = [];
          const run = (check: CheckName, body: () => Promise<Finding | Finding[]>) => wanted(check) && runs.push(guarded(check, domain, body));
          run('mx', () => checkMx(dns, settings, address.addresses, domain));
          run('spf', () => checkSpf(dns, settings, senders, domain));
          run('dkim', () => checkDkim(dns, settings, domain));
          run('dmarc', () => checkDmarc(dns, domain));
          run('mta-sts', () => checkMtaSts(dns, settings, domain));
          run('tls-rpt', () => checkTlsRpt(dns, domain));
          return (await Promise.all(runs)).flat();
        };
        findings.push(...(await mapLimited(domains, DOMAIN_CONCURRENCY, perDomain)).flat());
      }
    }
  }

  if (wanted('clock')) findings.push(await checkClock(options.ntpServer, timeoutMs));
  // One block per check, in the order of CHECKS (the sort is stable: domains keep their order).
  return findings.sort((a, b) => CHECKS.indexOf(a.check) - CHECKS.indexOf(b.check));
}

async function checkClock(server: string | undefined, timeoutMs: number): Promise<Finding> {
  if (!server) return skip('clock', '-', 'not compared: give --ntp SERVER (for example pool.ntp.org) to compare this clock with an NTP server');
  try {
    const { offsetMs, stratum } = await queryClockOffset(server, timeoutMs);
    // A positive offset: the server's clock is ahead, so ours is behind.
    const text = `this clock is ${(Math.abs(offsetMs) / 1000).toFixed(3)} s ${offsetMs >= 0 ? 'behind' : 'ahead of'} ${server} (stratum ${stratum})`;
    const fix = 'run a time service (systemd-timesyncd, chrony) on this machine';
    if (Math.abs(offsetMs) > CLOCK_FAIL_MS) return fail('clock', server, `${text}: certificates, DKIM signatures and relay windows go wrong`, fix);
    if (Math.abs(offsetMs) > CLOCK_WARN_MS) return warn('clock', server, text, fix);
    return ok('clock', server, text);
  } catch (error) {
    return warn('clock', server, `no usable answer: ${(error as Error).message}`, 'check the server name, and that UDP port 123 towards it is open');
  }
}

/** `work` over `items`, at most `limit` at a time, results in the order of `items`. */
async function mapLimited<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
