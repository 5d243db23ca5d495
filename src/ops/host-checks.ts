import { randomBytes, createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { open, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { Config } from '../config/schema.ts';
import { silentLogger } from '../log/logger.ts';
import { NetworkList } from '../net/ip.ts';
import type { QueuedMessage } from '../queue/store.ts';
import type { RedisConnection } from '../redis/client.ts';
import { fail, ok, skip, warn, type Finding } from './findings.ts';
import { configuredListeners, readGreeting } from './listeners.ts';

// The machine side of `popgate doctor`: the engines of a cluster, the data folder, the
// databases, the queue, the listeners and the certificate.

const DAY_MS = 86_400_000;
/** Certificates are renewed 30 days ahead (certbot's default); 14 days left means renewal failed. */
const CERTIFICATE_WARN_DAYS = 14;
const MAX_PEM_BYTES = 1024 * 1024;
const MAX_CHAIN = 16;

/** Redis of `[cluster] redis` answers PING. */
export async function checkRedis(url: string, timeoutMs: number): Promise<Finding> {
  const shown = withoutPassword(url);
  let connection: RedisConnection | undefined;
  try {
    // Loaded here, not with this module: a process that checks no Redis never loads its client.
    const { RedisConnection } = await import('../redis/backends.ts');
    connection = await RedisConnection.open({ url, connectTimeoutMs: timeoutMs, commandTimeoutMs: timeoutMs }, silentLogger());
    const started = Date.now();
    await connection.client.ping();
    const elapsed = Date.now() - started;
    const version = /^redis_version:(\S+)/m.exec(await connection.client.info('server'))?.[1] ?? 'unknown';
    return ok('redis', shown, `answers (Redis ${version}, PING ${elapsed} ms)`);
  } catch (error) {
    return fail('redis', shown, `does not answer: ${(error as Error).message}`, 'start Redis, or correct [cluster] redis; until it answers, relay is refused with 451 and logins fall back to each node alone');
  } finally {
    await connection?.close().catch(() => {});
  }
}

/** PostgreSQL of `[database] url` answers, and its schema is the one this popgate expects. */
export async function checkPostgres(url: string, timeoutMs: number): Promise<{ finding: Finding; current: boolean }> {
  const shown = withoutPassword(url);
  const { createPool, SCHEMA_VERSION } = await import('../postgres/backends.ts');
  let pool;
  try {
    pool = createPool(url, silentLogger(), { applicationName: 'popgate doctor', maxConnections: 1, connectTimeoutMs: timeoutMs, statementTimeoutMs: timeoutMs });
  } catch (error) {
    return { finding: fail('postgres', shown, (error as Error).message, 'correct [database] url'), current: false };
  }
  try {
    const { rows } = await pool.query<{ version: string }>("SELECT current_setting('server_version') AS version");
    const server = `PostgreSQL ${rows[0].version}`;
    let schema: number;
    try {
      schema = (await pool.query<{ version: number }>('SELECT coalesce(max(version), 0) AS version FROM popgate_schema_migrations')).rows[0].version;
    } catch (error) {
      if ((error as { code?: string }).code !== '42P01') throw error; // undefined_table
      return { finding: fail('postgres', shown, `${server} answers, but holds no popgate schema`, 'popgate db migrate'), current: false };
    }
    if (schema < SCHEMA_VERSION) return { finding: fail('postgres', shown, `${server}: schema version ${schema}, this popgate needs ${SCHEMA_VERSION}`, 'popgate db migrate'), current: false };
    if (schema > SCHEMA_VERSION) {
      return { finding: fail('postgres', shown, `${server}: schema version ${schema} is newer than this popgate (${SCHEMA_VERSION})`, 'upgrade popgate on this node to the version the other nodes run'), current: false };
    }
    return { finding: ok('postgres', shown, `${server} answers, schema version ${schema}`), current: true };
  } catch (error) {
    return { finding: fail('postgres', shown, `does not answer: ${(error as Error).message}`, 'start PostgreSQL, or correct [database] url; until it answers, logins and mail for local users fail temporarily'), current: false };
  } finally {
    await pool.end().catch(() => {});
  }
}

/** The embedded SQLite files pass `PRAGMA quick_check` (https://sqlite.org/pragma.html#pragma_quick_check). */
export function checkSqlite(config: Config): Finding[] {
  const files = [join(config.data_dir, 'popgate.sqlite')];
  // In a cluster the queue index lives in PostgreSQL.
  if (config.database.url === '') files.push(join(config.data_dir, 'queue', 'index.sqlite'));
  const findings: Finding[] = [];
  const restoreFix = "stop popgate and restore the data from a backup (popgate restore), or recover the file with the sqlite3 shell's .recover";
  for (const file of files) {
    if (!existsSync(file)) {
      findings.push(fail('sqlite', file, 'missing', 'check data_dir in the config; popgate creates the file at its first start'));
      continue;
    }
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(file);
      db.exec('PRAGMA busy_timeout = 5000');
      const problems = (db.prepare('PRAGMA quick_check(10)').all() as { quick_check: string }[]).map((row) => row.quick_check);
      if (problems.length === 1 && problems[0] === 'ok') findings.push(ok('sqlite', file, 'quick_check ok'));
      else findings.push(fail('sqlite', file, `quick_check: ${problems.join('; ')}`, restoreFix));
    } catch (error) {
      // SQLITE_CORRUPT (11) or SQLITE_NOTADB (26): the file is damaged, not merely unreadable.
      const code = ((error as { errcode?: number }).errcode ?? 0) & 0xff;
      if (code === 11 || code === 26) findings.push(fail('sqlite', file, `damaged: ${(error as Error).message}`, restoreFix));
      else findings.push(fail('sqlite', file, `cannot be checked: ${(error as Error).message}`, 'run doctor as the user popgate runs as'));
    } finally {
      db?.close();
    }
  }
  return findings;
}

/** data_dir: writable (a file written, flushed and removed), with room and inodes to spare. */
export async function checkStorage(dataDir: string): Promise<Finding[]> {
  const probe = join(dataDir, `.doctor-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const handle = await open(probe, 'wx', 0o600);
    try {
      await handle.writeFile('popgate doctor\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await unlink(probe);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [fail('storage', dataDir, 'does not exist', 'check data_dir in the config; popgate creates it at its first start')];
    return [fail('storage', dataDir, `not writable: ${(error as Error).message}`, 'run doctor as the user popgate runs as; that user must own data_dir')];
  }
  const space = await statfs(dataDir);
  const freeBytes = space.bavail * space.bsize;
  const freeShare = space.blocks > 0 ? space.bavail / space.blocks : 1;
  const text = `${formatBytes(freeBytes)} free (${Math.floor(freeShare * 100)}%)`;
  const findings: Finding[] = [];
  const makeRoom = 'free space (old logs, backups kept beside the data), or move data_dir to a larger disk';
  if (freeBytes < 100 * 1024 ** 2 || freeShare < 0.01) findings.push(fail('storage', dataDir, `${text}: mail cannot be accepted much longer`, makeRoom));
  else if (freeBytes < 1024 ** 3 || freeShare < 0.1) findings.push(warn('storage', dataDir, `${text}: under 1 GB or 10%`, makeRoom));
  else findings.push(ok('storage', dataDir, `writable, ${text}`));
  // Every message is a file: a Maildir disk can run out of inodes long before bytes.
  if (space.files > 0 && space.ffree / space.files < 0.1) {
    findings.push(warn('storage', dataDir, `${space.ffree} of ${space.files} inodes free (under 10%): every message takes one`, 'move data_dir to a file system with more inodes (mkfs -i), or remove old mail'));
  }
  return findings;
}

/** The outbound queue: how much waits, and for how long. */
export function checkQueue(config: Config, messages: readonly QueuedMessage[], now: number): Finding {
  const { outbound } = config;
  if (messages.length === 0) return ok('queue', 'outbound', 'empty');
  const oldest = Math.min(...messages.map((message) => message.receivedAt));
  const age = now - oldest;
  const text = `${messages.length} message(s), the oldest ${formatAge(age)} old`;
  if (!outbound.enabled) return warn('queue', 'outbound', `${text}, and outbound.enabled = false: nothing is delivered`, 'set outbound.enabled = true when the maintenance is over');
  // Past max_lifetime a message should have bounced: nobody is working the queue.
  if (age > outbound.max_lifetime + 3_600_000) return fail('queue', 'outbound', `${text}, past outbound.max_lifetime: the queue is not being delivered`, 'check that popgate runs (worker 1 delivers) and its log for delivery errors');
  if (outbound.delay_warning > 0 && age > outbound.delay_warning) return warn('queue', 'outbound', `${text}: senders have been told of the delay`, 'popgate queue list shows each message\'s last error');
  return ok('queue', 'outbound', text);
}

export interface CertificateReport {
  findings: Finding[];
  /** The SHA-256 fingerprint of the server certificate in the files, to compare with what listeners serve. */
  fingerprint?: string;
}

/** The certificate files: the names, the days left, the key, the chain. */
export function checkCertificate(config: Config, now: number): CertificateReport {
  const files = config.tls.cert && config.tls.key
    ? { cert: config.tls.cert, key: config.tls.key }
    : config.tls.self_signed
      ? { cert: join(config.data_dir, 'tls', 'self-signed-cert.pem'), key: join(config.data_dir, 'tls', 'self-signed-key.pem') }
      : undefined;
  if (!files) {
    return {
      findings: [warn('certificate', '-', 'no certificate: passwords are accepted only over loopback, and there is no POP3S or STARTTLS', 'set tls.cert and tls.key (e.g. certbot\'s fullchain.pem and privkey.pem)')],
    };
  }
  if (!existsSync(files.cert) && config.tls.self_signed && !config.tls.cert) {
    return { findings: [skip('certificate', files.cert, 'the self-signed certificate is generated at the first start')] };
  }
  const subject = files.cert;
  let chain: X509Certificate[];
  try {
    if (statSync(files.cert).size > MAX_PEM_BYTES) throw new Error(`larger than ${MAX_PEM_BYTES} bytes`);
    const pems = readFileSync(files.cert, 'latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    if (pems.length === 0) throw new Error('no PEM certificate in the file');
    chain = pems.slice(0, MAX_CHAIN).map((pem) => new X509Certificate(pem));
  } catch (error) {
    return { findings: [fail('certificate', subject, `cannot be read: ${(error as Error).message}`, 'point tls.cert at the PEM certificate chain (fullchain.pem), readable by popgate')] };
  }
  const [leaf] = chain;
  const findings: Finding[] = [];
  const { hostname } = config;
  const fullchain = 'use the full chain (certbot: fullchain.pem) for tls.cert';
  try {
    const key = createPrivateKey(readFileSync(files.key));
    if (!leaf.checkPrivateKey(key)) findings.push(fail('certificate', files.key, 'the key does not belong to the certificate', 'point tls.key at the key of this certificate (certbot: privkey.pem of the same lineage)'));
  } catch (error) {
    findings.push(fail('certificate', files.key, `cannot be read: ${(error as Error).message}`, 'point tls.key at the PEM private key, readable by popgate'));
  }
  if (!leaf.checkHost(hostname)) {
    findings.push(fail('certificate', subject, `does not cover ${hostname} (${leaf.subjectAltName ?? leaf.subject})`, `get a certificate for ${hostname}, the name customers' mail programs connect to`));
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i].checkIssued(chain[i + 1]) || !chain[i].verify(chain[i + 1].publicKey)) {
      findings.push(fail('certificate', subject, `certificate ${i + 2} of the file did not issue certificate ${i + 1}: the chain is out of order or mixed up`, fullchain));
      break;
    }
  }
  const selfSigned = leaf.checkIssued(leaf) && leaf.verify(leaf.publicKey);
  if (selfSigned) findings.push(warn('certificate', subject, 'self-signed: mail programs warn about it or refuse it', `get a certificate from a CA for ${hostname} (e.g. Let's Encrypt with certbot)`));
  else if (chain.length === 1) findings.push(warn('certificate', subject, 'holds no intermediate certificate: some mail programs cannot verify it', fullchain));
  // The chain is only as good as its first certificate to expire.
  const expires = Math.min(...chain.map((certificate) => certificate.validToDate.getTime()));
  const daysLeft = Math.floor((expires - now) / DAY_MS);
  const until = new Date(expires).toISOString().slice(0, 10);
  const renew = 'renew it (certbot renew; its deploy hook reloads popgate), and check why the automatic renewal did not';
  if (expires <= now) findings.push(fail('certificate', subject, `expired on ${until}`, renew));
  else if (leaf.validFromDate.getTime() > now) findings.push(fail('certificate', subject, `not valid before ${leaf.validFrom}: is the clock right?`, 'check the clock (doctor --ntp SERVER)'));
  else if (daysLeft < CERTIFICATE_WARN_DAYS) findings.push(warn('certificate', subject, `expires in ${daysLeft} day(s), on ${until}`, renew));
  if (findings.length === 0) {
    findings.push(ok('certificate', subject, `covers ${hostname}, valid until ${until} (${daysLeft} days), ${chain.length} certificate(s)`));
  }
  return { findings, fingerprint: leaf.fingerprint256 };
}

/** Each configured listener accepts a connection and greets (POP3 +OK, SMTP 220). */
export async function checkListeners(config: Config, timeoutMs: number, expectedFingerprint: string | undefined): Promise<Finding[]> {
  const listeners = configuredListeners(config);
  if (listeners.length === 0) return [warn('listeners', '-', 'no listener in the config', 'add listen addresses to [pop3], [smtp] …')];
  const findings: Finding[] = [];
  for (const listener of listeners) {
    const subject = `${listener.section} ${listener.address}`;
    let proxyHeader: string | undefined;
    if (listener.proxyProtocolFrom.length > 0) {
      // Such a listener serves its load balancers only; from one of their addresses, a PROXY
      // header without a client address is what their own health checks send.
      if (!new NetworkList(listener.proxyProtocolFrom).has(listener.host)) {
        findings.push(skip('listeners', subject, `takes connections only through its load balancers (proxy_protocol_from): check it through them`));
        continue;
      }
      proxyHeader = 'PROXY UNKNOWN\r\n';
    }
    const expected = listener.protocol === 'pop3' ? '+OK' : '220';
    try {
      const greeting = await readGreeting(listener, timeoutMs, proxyHeader);
      if (!greeting.line.startsWith(expected)) {
        findings.push(fail('listeners', subject, `answers "${greeting.line.slice(0, 120)}" instead of a greeting`, 'see the server log; a full server refuses with this text until sessions end'));
      } else if (expectedFingerprint && greeting.certificateFingerprint && greeting.certificateFingerprint !== expectedFingerprint) {
        findings.push(warn('listeners', subject, 'serves another certificate than the one in the files (renewed, not yet loaded)', 'systemctl reload popgate (SIGHUP); popgate also notices new files every tls.reload_check'));
      } else {
        findings.push(ok('listeners', subject, greeting.line.slice(0, 120)));
      }
    } catch (error) {
      findings.push(fail('listeners', subject, (error as Error).message, 'is popgate running (systemctl status popgate)? Does a firewall stop connections from this machine?'));
    }
  }
  return findings;
}

function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/** "under a minute", "42m", "5h12m", "3d4h". */
function formatAge(ms: number): string {
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 1) return 'under a minute';
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h${minutes % 60 ? `${minutes % 60}m` : ''}`;
  return `${Math.floor(hours / 24)}d${hours % 24 ? `${hours % 24}h` : ''}`;
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
