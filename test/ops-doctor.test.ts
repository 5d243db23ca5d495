import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generate } from 'selfsigned';
import { parseConfig } from '../src/config/load.ts';
import type { Config } from '../src/config/schema.ts';
import { dnsRecord, generateKey } from '../src/dkim/keys.ts';
import { runDoctor } from '../src/ops/doctor.ts';
import { reverseName } from '../src/ops/dns-checks.ts';
import { exitCodeOf, formatFinding, type Finding } from '../src/ops/findings.ts';
import { parseDkimRecord, parseDmarcRecord, parseTagList, parseTlsRptRecord, spfAllQualifier } from '../src/ops/records.ts';
import { Spool } from '../src/queue/spool.ts';
import { runPopgate } from './helpers/cli.ts';
import { startDns, type TestDns } from './helpers/dns.ts';
import { missingEngine, startPostgres, startRedis, type RunningEngine } from './helpers/engines.ts';
import { freshSchema } from './helpers/postgres.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// `popgate doctor` against a real DNS server on loopback (good and broken records), a real
// popgate serving on loopback, a local SNTP server, and real Redis and PostgreSQL.

const HOSTNAME = 'mail.example.test';

/** One finding by check and subject; fails the test when there is none, or several. */
function finding(findings: Finding[], check: string, subject: string): Finding {
  const found = findings.filter((f) => f.check === check && f.subject === subject);
  assert.equal(found.length, 1, `one ${check} finding for ${subject} in:\n${findings.map(formatFinding).join('\n')}`);
  return found[0];
}

/** A fullchain.pem: the server certificate, then the CA's. */
function pemChain(...pems: string[]): string {
  return pems.map((pem) => `${pem.trim()}\n`).join('');
}

async function certificate(names: string[], days: number, ca?: { key: string; cert: string }) {
  const notBeforeDate = new Date(Date.now() - 86_400_000);
  return generate([{ name: 'commonName', value: names[0] }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate: new Date(Date.now() + days * 86_400_000),
    extensions: [{ name: 'subjectAltName', altNames: names.map((value) => ({ type: 2 as const, value })) }],
    ...(ca ? { ca } : {}),
  });
}

describe('popgate doctor', () => {
  const work = mkdtempSync(join(tmpdir(), 'popgate-doctor-test-'));
  let dns: TestDns;
  let server: TestServer;
  let config: Config;
  let configPath: string;
  const caCert = { key: '', cert: '' };

  before(async () => {
    // A CA and a server certificate for mail.example.test from it: the chain is complete.
    const ca = await generate([{ name: 'commonName', value: 'popgate test CA' }], { keySize: 2048, algorithm: 'sha256', extensions: [{ name: 'basicConstraints', cA: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true }] });
    Object.assign(caCert, { key: ca.private, cert: ca.cert });
    const leaf = await certificate([HOSTNAME], 90, caCert);
    writeFileSync(join(work, 'fullchain.pem'), pemChain(leaf.cert, ca.cert));
    writeFileSync(join(work, 'privkey.pem'), leaf.private);

    dns = await startDns({});
    server = await startTestServer({
      hostname: HOSTNAME,
      smtp: { listen: ['127.0.0.1:0'] },
      submissions: { listen: ['127.0.0.1:0'] },
      tls: { self_signed: false, cert: join(work, 'fullchain.pem'), key: join(work, 'privkey.pem') },
      dns: { servers: [dns.address], timeout: '2s' },
    });
    for (const domain of ['good.test', 'broken.test', 'strict.test', 'bare.test']) await server.app.accounts.addDomain(domain);
    const keysDir = server.app.config.dkim.keys_dir;
    const good = generateKey(keysDir, 'good.test', 'popgate', 'ed25519');
    generateKey(keysDir, 'broken.test', 'popgate', 'ed25519');
    const stranger = generateKey(join(work, 'other-keys'), 'broken.test', 'popgate', 'ed25519');
    Object.assign(dns.zone, {
      [HOSTNAME]: { A: ['127.0.0.1'] },
      '1.0.0.127.in-addr.arpa': { PTR: [HOSTNAME] },
      // Everything right.
      'good.test': { MX: [[10, HOSTNAME]], TXT: ['v=spf1 a:mail.example.test -all', 'google-site-verification=abc'] },
      'popgate._domainkey.good.test': { TXT: [dnsRecord(good).value] },
      '_dmarc.good.test': { TXT: ['v=DMARC1; p=reject; rua=mailto:dmarc@good.test'] },
      '_smtp._tls.good.test': { TXT: ['v=TLSRPTv1; rua=mailto:tlsrpt@good.test'] },
      // Everything wrong in the ways that happen.
      'broken.test': { MX: [[10, 'mx.elsewhere.test']], TXT: ['v=spf1 +all'] },
      'mx.elsewhere.test': { A: ['192.0.2.99'] },
      'popgate._domainkey.broken.test': { TXT: [dnsRecord(stranger).value] },
      '_mta-sts.broken.test': { TXT: ['v=STSv1; id=20260101'] },
      'mta-sts.broken.test': { A: ['127.0.0.77'] }, // nothing listens there on 443
      '_smtp._tls.broken.test': { TXT: ['v=TLSRPTv1'] },
      // An SPF record that leaves this server out, a DMARC record that does not parse.
      'strict.test': { MX: [[10, HOSTNAME]], TXT: ['v=spf1 ip4:192.0.2.1 ~all'] },
      '_dmarc.strict.test': { TXT: ['v=DMARC1; p=maybe'] },
      // No MX, no SPF, and the domain itself is somewhere else.
      'bare.test': { A: ['192.0.2.50'] },
    });
    config = doctorConfig({});
    configPath = join(work, 'popgate.toml');
    writeFileSync(
      configPath,
      [
        `hostname = "${HOSTNAME}"`,
        `data_dir = "${server.app.config.data_dir}"`,
        `[pop3]\nlisten = ["${server.app.addresses.pop3[0]}"]`,
        `[smtp]\nlisten = ["${server.app.addresses.smtp[0]}"]`,
        `[tls]\ncert = "${join(work, 'fullchain.pem')}"\nkey = "${join(work, 'privkey.pem')}"`,
        `[dns]\nservers = ["${dns.address}"]\ntimeout = "2s"`,
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    await server?.close();
    await dns?.close();
    rmSync(work, { recursive: true, force: true });
  });

  /** The running server's config as doctor sees it: its real listen addresses, plus `overrides`. */
  function doctorConfig(overrides: Record<string, unknown>): Config {
    const app = server.app;
    return parseConfig(
      {
        hostname: HOSTNAME,
        data_dir: app.config.data_dir,
        pop3: { listen: app.addresses.pop3 },
        pop3s: { listen: app.addresses.pop3s },
        smtp: { listen: app.addresses.smtp },
        submissions: { listen: app.addresses.submissions },
        tls: { cert: join(work, 'fullchain.pem'), key: join(work, 'privkey.pem') },
        dns: { servers: [dns.address], timeout: '2s' },
        ...overrides,
      },
      'doctor test',
    );
  }

  test('a domain with every record right passes every DNS check', async () => {
    const findings = await runDoctor(config, { domains: ['good.test'], only: ['address', 'ptr', 'mx', 'spf', 'dkim', 'dmarc', 'mta-sts', 'tls-rpt'] });
    assert.deepEqual(
      findings.map(formatFinding),
      [
        'ok    address mail.example.test: 127.0.0.1',
        'ok    ptr 127.0.0.1: mail.example.test',
        'ok    mx good.test: MX 10 mail.example.test (mail.example.test is this server)',
        'ok    spf good.test: "v=spf1 a:mail.example.test -all" allows 127.0.0.1',
        'ok    dkim good.test: popgate._domainkey.good.test publishes the Ed25519 key in use',
        'ok    dmarc good.test: p=reject, reports to mailto:dmarc@good.test',
        'ok    mta-sts good.test: not published (optional, RFC 8461)',
        'ok    tls-rpt good.test: reports to mailto:tlsrpt@good.test',
      ],
    );
    assert.equal(exitCodeOf(findings), 0);
  });

  test('broken records: each finding says what is wrong and what to do', async () => {
    const findings = await runDoctor(config, { domains: ['broken.test', 'strict.test', 'bare.test'], only: ['mx', 'spf', 'dkim', 'dmarc', 'mta-sts', 'tls-rpt'] });
    const mx = finding(findings, 'mx', 'broken.test');
    assert.equal(mx.status, 'warn');
    assert.match(mx.message, /MX 10 mx\.elsewhere\.test: none of them is this server/);
    const open = finding(findings, 'spf', 'broken.test');
    assert.equal(open.status, 'fail');
    assert.match(open.message, /ends in \+all: anybody may send as broken\.test/);
    const dkim = finding(findings, 'dkim', 'broken.test');
    assert.equal(dkim.status, 'fail');
    assert.match(dkim.message, /the key published at popgate\._domainkey\.broken\.test is not the one popgate signs with/);
    assert.match(dkim.fix!, /popgate dkim show broken\.test/);
    const dmarc = finding(findings, 'dmarc', 'broken.test');
    assert.equal(dmarc.status, 'warn');
    assert.match(dmarc.fix!, /_dmarc\.broken\.test\. TXT \\"v=DMARC1; p=none; rua=mailto:postmaster@broken\.test\\"/);
    const sts = finding(findings, 'mta-sts', 'broken.test');
    assert.equal(sts.status, 'warn');
    assert.match(sts.message, /id=20260101 is published, but the policy at https:\/\/mta-sts\.broken\.test\/\.well-known\/mta-sts\.txt cannot be fetched/);
    assert.equal(finding(findings, 'tls-rpt', 'broken.test').status, 'warn');

    const softfail = finding(findings, 'spf', 'strict.test');
    assert.equal(softfail.status, 'fail');
    assert.match(softfail.message, /"v=spf1 ip4:192\.0\.2\.1 ~all" does not allow 127\.0\.0\.1 \(softfail\)/);
    assert.match(softfail.fix!, /add "a:mail\.example\.test"/);
    const badDmarc = finding(findings, 'dmarc', 'strict.test');
    assert.equal(badDmarc.status, 'fail');
    assert.match(badDmarc.message, /p=maybe is not none, quarantine or reject/);
    const noKey = finding(findings, 'dkim', 'strict.test');
    assert.equal(noKey.status, 'warn');
    assert.match(noKey.fix!, /popgate dkim generate strict\.test/);

    const noMx = finding(findings, 'mx', 'bare.test');
    assert.equal(noMx.status, 'fail');
    assert.match(noMx.message, /no MX record, and bare\.test itself is not this server/);
    assert.match(noMx.fix!, /publish "bare\.test\. MX 10 mail\.example\.test\."/);
    assert.equal(finding(findings, 'spf', 'bare.test').status, 'fail');
    assert.equal(exitCodeOf(findings), 2);
  });

  test('reverse DNS: missing, pointing elsewhere but confirmed, or not resolving back', async () => {
    const reverse = dns.zone['1.0.0.127.in-addr.arpa'];
    try {
      delete dns.zone['1.0.0.127.in-addr.arpa'];
      let [ptr] = await runDoctor(config, { only: ['ptr'] });
      assert.equal(ptr.status, 'fail');
      assert.match(ptr.message, /no reverse DNS \(PTR\) record/);
      dns.zone['1.0.0.127.in-addr.arpa'] = { PTR: ['host-1.isp.test'] };
      dns.zone['host-1.isp.test'] = { A: ['127.0.0.1'] };
      [ptr] = await runDoctor(config, { only: ['ptr'] });
      assert.equal(ptr.status, 'warn');
      assert.match(ptr.message, /PTR names host-1\.isp\.test, not mail\.example\.test; it resolves back/);
      delete dns.zone['host-1.isp.test'];
      [ptr] = await runDoctor(config, { only: ['ptr'] });
      assert.equal(ptr.status, 'fail');
      assert.match(ptr.message, /PTR names host-1\.isp\.test, which does not resolve back to 127\.0\.0\.1/);
    } finally {
      dns.zone['1.0.0.127.in-addr.arpa'] = reverse;
    }
  });

  test('an IPv6 address (AAAA) is checked like the IPv4 one: its reverse name under ip6.arpa', async () => {
    const v6 = '2001:db8::25';
    const v6Reverse = '5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa'; // written out: what resolvers ask for
    const host = dns.zone[HOSTNAME];
    try {
      dns.zone[HOSTNAME] = { A: ['127.0.0.1'], AAAA: [v6] };
      let findings = await runDoctor(config, { only: ['address', 'ptr'] });
      assert.deepEqual(findings.map(formatFinding), [`ok    address ${HOSTNAME}: 127.0.0.1, ${v6}`, `ok    ptr 127.0.0.1: ${HOSTNAME}`, `FAIL  ptr ${v6}: no reverse DNS (PTR) record: many receivers refuse mail from such an address  (fix: have whoever runs ${v6} (your hosting or network provider) set its PTR record to ${HOSTNAME})`]);
      dns.zone[v6Reverse] = { PTR: [HOSTNAME] };
      findings = await runDoctor(config, { only: ['ptr'] });
      assert.deepEqual(findings.map((f) => [f.subject, f.status]), [['127.0.0.1', 'ok'], [v6, 'ok']]);
    } finally {
      dns.zone[HOSTNAME] = host;
      delete dns.zone[v6Reverse];
    }
  });

  // mailauth fetches the policy from port 443 of the name's address, with the system's CAs
  // (plus NODE_EXTRA_CA_CERTS, read by Node at start: hence the command, not runDoctor).
  test('MTA-STS served over HTTPS: a policy listing this server passes; an enforce policy without it fails', { skip: process.getuid?.() === 0 ? false : 'a policy server on port 443 needs root' }, async () => {
    const policyAddress = '127.0.0.78';
    const served = await certificate(['mta-sts.sts.test', 'mta-sts.stsbad.test'], 90, caCert);
    const policies: Record<string, string> = {
      'mta-sts.sts.test': `version: STSv1\r\nmode: enforce\r\nmx: ${HOSTNAME}\r\nmax_age: 86400\r\n`,
      'mta-sts.stsbad.test': 'version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n',
    };
    const https = createHttpsServer({ key: served.private, cert: served.cert }, (request, response) => {
      const policy = request.url === '/.well-known/mta-sts.txt' ? policies[String(request.headers.host)] : undefined;
      response.writeHead(policy ? 200 : 404, { 'content-type': 'text/plain' }).end(policy ?? '');
    });
    await new Promise<void>((resolve, reject) => https.once('error', reject).listen(443, policyAddress, resolve));
    const caFile = join(work, 'ca.pem');
    writeFileSync(caFile, caCert.cert);
    Object.assign(dns.zone, {
      'sts.test': { MX: [[10, HOSTNAME]] },
      '_mta-sts.sts.test': { TXT: ['v=STSv1; id=20260301'] },
      'mta-sts.sts.test': { A: [policyAddress] },
      'stsbad.test': { MX: [[10, HOSTNAME]] },
      '_mta-sts.stsbad.test': { TXT: ['v=STSv1; id=20260301'] },
      'mta-sts.stsbad.test': { A: [policyAddress] },
    });
    try {
      const result = await runPopgate(configPath, ['doctor', '--domain', 'sts.test', '--domain', 'stsbad.test', '--only', 'mta-sts', '--json'], { NODE_EXTRA_CA_CERTS: caFile });
      assert.equal(result.code, 2, result.stdout + result.stderr);
      const findings: Finding[] = JSON.parse(result.stdout).findings;
      assert.deepEqual(findings.map(formatFinding), [
        `ok    mta-sts sts.test: id=20260301, mode enforce, mx ${HOSTNAME}, max_age 86400s`,
        `FAIL  mta-sts stsbad.test: id=20260301, mode enforce, mx mx.elsewhere.test, max_age 86400s: ${HOSTNAME} is not listed, so senders that honour MTA-STS refuse to deliver here  (fix: add "mx: ${HOSTNAME}" to the policy at https://mta-sts.stsbad.test/.well-known/mta-sts.txt and change the id in _mta-sts.stsbad.test)`,
      ]);
    } finally {
      await new Promise((resolve) => https.close(resolve));
    }
  });

  test('a DNS server that fails makes a failed check, not a crash', async () => {
    dns.zone['good.test'].servfail = true;
    try {
      const findings = await runDoctor(config, { domains: ['good.test'], only: ['mx', 'spf'] });
      assert.deepEqual(findings.map((f) => [f.check, f.status]), [['mx', 'fail'], ['spf', 'fail']]);
      assert.match(findings[0].message, /lookup failed: MX lookup for good\.test failed \(ESERVFAIL\)/);
    } finally {
      delete dns.zone['good.test'].servfail;
    }
  });

  test('listeners greet, the certificate is checked, and a renewed certificate not yet loaded is noticed', async () => {
    let findings = await runDoctor(config, { only: ['listeners', 'certificate'] });
    assert.deepEqual(findings.filter((f) => f.check === 'listeners').map((f) => [f.subject.split(' ')[0], f.status]), [['pop3', 'ok'], ['pop3s', 'ok'], ['smtp', 'ok'], ['submissions', 'ok']]);
    assert.match(finding(findings, 'listeners', `smtp ${server.app.addresses.smtp[0]}`).message, /^220 mail\.example\.test/);
    const cert = findings.filter((f) => f.check === 'certificate');
    assert.deepEqual(cert.map((f) => f.status), ['ok']);
    assert.match(cert[0].message, /covers mail\.example\.test, valid until \d{4}-\d\d-\d\d \(8\d days\), 2 certificate\(s\)/);

    // certbot renewed the files: popgate serves the old one until it reloads (SIGHUP or tls.reload_check).
    const renewed = await certificate([HOSTNAME], 10, caCert);
    writeFileSync(join(work, 'fullchain.pem'), pemChain(renewed.cert, caCert.cert));
    writeFileSync(join(work, 'privkey.pem'), renewed.private);
    findings = await runDoctor(config, { only: ['listeners', 'certificate'] });
    const pop3s = finding(findings, 'listeners', `pop3s ${server.app.addresses.pop3s[0]}`);
    assert.equal(pop3s.status, 'warn');
    assert.match(pop3s.message, /serves another certificate than the one in the files/);
    assert.match(pop3s.fix!, /systemctl reload popgate/);
    const expiring = finding(findings, 'certificate', join(work, 'fullchain.pem')); // a warning, and no ok line beside it
    assert.equal(expiring.status, 'warn');
    assert.match(expiring.message, /expires in 9 day\(s\)/);
    server.app.reloadTls();
    findings = await runDoctor(config, { only: ['listeners'] });
    assert.ok(findings.every((f) => f.status === 'ok'), findings.map(formatFinding).join('\n'));

    // A certificate for another name, without its chain; and a listener where nothing listens.
    const wrong = await certificate(['www.example.test'], 90, caCert);
    writeFileSync(join(work, 'wrong.pem'), wrong.cert);
    writeFileSync(join(work, 'wrong-key.pem'), wrong.private);
    findings = await runDoctor(doctorConfig({ tls: { cert: join(work, 'wrong.pem'), key: join(work, 'privkey.pem') }, pop3: { listen: ['127.0.0.1:1'] } }), { only: ['listeners', 'certificate'] });
    assert.equal(finding(findings, 'listeners', 'pop3 127.0.0.1:1').status, 'fail');
    assert.match(finding(findings, 'listeners', 'pop3 127.0.0.1:1').message, /ECONNREFUSED/);
    const certificates = findings.filter((f) => f.check === 'certificate').map((f) => `${f.status} ${f.message}`);
    assert.ok(certificates.some((text) => /^fail the key does not belong to the certificate$/.test(text)), certificates.join('\n'));
    assert.ok(certificates.some((text) => /^fail does not cover mail\.example\.test \(DNS:www\.example\.test\)$/.test(text)), certificates.join('\n'));
    assert.ok(certificates.some((text) => /^warn holds no intermediate certificate/.test(text)), certificates.join('\n'));
  });

  test('data_dir, the SQLite files and the queue', async () => {
    let findings = await runDoctor(config, { only: ['storage', 'sqlite', 'queue'] });
    assert.deepEqual(findings.map((f) => [f.check, f.status]), [['sqlite', 'ok'], ['sqlite', 'ok'], ['storage', 'ok'], ['queue', 'ok']]);
    assert.match(finding(findings, 'storage', config.data_dir).message, /^writable, [\d.]+ [KMGT]?B free \(\d+%\)$/);
    assert.equal(finding(findings, 'queue', 'outbound').message, 'empty');

    const queue = server.app.queue;
    const id = Spool.newId();
    await queue.enqueue({ id, from: 'a@good.test', to: ['b@far.test'], receivedAt: Date.now() - 5 * 3_600_000, clientIp: '192.0.2.1' }, Buffer.from('Subject: old\r\n\r\nold\r\n'));
    try {
      findings = await runDoctor(doctorConfig({ outbound: { enabled: true } }), { only: ['queue'] });
      assert.equal(findings[0].status, 'warn');
      assert.match(findings[0].message, /^1 message\(s\), the oldest 5h old: senders have been told of the delay$/);
      findings = await runDoctor(doctorConfig({ outbound: { enabled: true, max_lifetime: '3h' } }), { only: ['queue'] });
      assert.equal(findings[0].status, 'fail');
      assert.match(findings[0].message, /past outbound\.max_lifetime: the queue is not being delivered/);
    } finally {
      await queue.remove(id);
    }

    // A data_dir that does not exist is reported, and not created.
    const missing = join(work, 'no-such-data');
    findings = await runDoctor(doctorConfig({ data_dir: missing }), { only: ['storage', 'sqlite', 'queue'] });
    assert.deepEqual(findings.map((f) => [f.check, f.status]), [['sqlite', 'fail'], ['sqlite', 'fail'], ['storage', 'fail'], ['queue', 'fail']]);
    assert.match(finding(findings, 'storage', missing).message, /does not exist/);
    assert.match(finding(findings, 'queue', 'outbound').message, /there is no database in/);
  });

  test('a damaged SQLite file fails quick_check', async () => {
    const dir = join(work, 'damaged');
    const { DatabaseSync } = await import('node:sqlite');
    const { mkdirSync, openSync, writeSync, closeSync } = await import('node:fs');
    mkdirSync(join(dir, 'queue'), { recursive: true });
    const db = new DatabaseSync(join(dir, 'popgate.sqlite'));
    db.exec('CREATE TABLE t (x TEXT); CREATE INDEX tx ON t (x)');
    const insert = db.prepare('INSERT INTO t VALUES (?)');
    db.exec('BEGIN');
    for (let i = 0; i < 2000; i++) insert.run(`row ${i} ${'x'.repeat(50)}`);
    db.exec('COMMIT');
    db.close();
    // Overwrite the middle of the file: pages of the table and its index no longer agree.
    const fd = openSync(join(dir, 'popgate.sqlite'), 'r+');
    writeSync(fd, Buffer.alloc(4096, 0x41), 0, 4096, 8 * 4096);
    closeSync(fd);
    const [sqlite] = await runDoctor(doctorConfig({ data_dir: dir }), { only: ['sqlite'] });
    assert.equal(sqlite.status, 'fail');
    assert.match(sqlite.message, /quick_check: |malformed/);
    assert.match(sqlite.fix!, /popgate restore/);
  });

  test('the clock against an SNTP server: in step, far off, a reply to another query, no answer', async () => {
    let shiftMs = 0;
    let originate: ((request: Buffer) => Buffer) | undefined;
    const ntp: UdpSocket = createSocket('udp4');
    ntp.on('message', (request, peer) => {
      const reply = Buffer.alloc(48);
      reply[0] = (0 << 6) | (4 << 3) | 4; // server
      reply[1] = 2;
      (originate ? originate(request) : request.subarray(40, 48)).copy(reply, 24);
      const now = Date.now() + shiftMs;
      for (const offset of [32, 40]) {
        reply.writeUInt32BE(Math.floor(now / 1000) + 2_208_988_800, offset);
        reply.writeUInt32BE(Math.floor(((now % 1000) / 1000) * 2 ** 32), offset + 4);
      }
      ntp.send(reply, peer.port, peer.address);
    });
    await new Promise<void>((resolve) => ntp.bind(0, '127.0.0.1', resolve));
    const server = `127.0.0.1:${ntp.address().port}`;
    try {
      const [none] = await runDoctor(config, { only: ['clock'] });
      assert.equal(none.status, 'skip');
      let [clock] = await runDoctor(config, { only: ['clock'], ntpServer: server });
      assert.equal(clock.status, 'ok', clock.message);
      shiftMs = 90_000;
      [clock] = await runDoctor(config, { only: ['clock'], ntpServer: server });
      assert.equal(clock.status, 'fail');
      // 90 s, give or take the round trip's correction on a busy machine.
      assert.match(clock.message, /^this clock is (89|9\d)\.\d{3} s behind 127\.0\.0\.1:\d+ \(stratum 2\)/);
      shiftMs = -5000;
      [clock] = await runDoctor(config, { only: ['clock'], ntpServer: server });
      assert.equal(clock.status, 'warn');
      assert.match(clock.message, /ahead of/);
      originate = () => Buffer.alloc(8, 7);
      [clock] = await runDoctor(config, { only: ['clock'], ntpServer: server });
      assert.equal(clock.status, 'warn');
      assert.match(clock.message, /does not answer this query/);
    } finally {
      ntp.close();
    }
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    try {
      const [clock] = await runDoctor(config, { only: ['clock'], ntpServer: `127.0.0.1:${silent.address().port}`, timeoutMs: 300 });
      assert.equal(clock.status, 'warn');
      assert.match(clock.message, /no answer from .* within 300 ms/);
    } finally {
      silent.close();
    }
  });

  test('the command: one line per finding, --json, and the exit code for monitoring', async () => {
    const text = await runPopgate(configPath, ['doctor', '--domain', 'good.test']);
    const lines = text.stdout.trimEnd().split('\n');
    for (const line of lines) assert.match(line, /^(ok  |warn|FAIL|skip)  [a-z-]+ (\S+|[a-z0-9]+ \S+): .+$/);
    assert.deepEqual(new Set(lines.map((line) => line.slice(6).split(' ')[0])), new Set(['sqlite', 'storage', 'queue', 'listeners', 'certificate', 'address', 'ptr', 'mx', 'spf', 'dkim', 'dmarc', 'mta-sts', 'tls-rpt', 'clock']));
    assert.ok(lines.includes('skip  clock -: not compared: give --ntp SERVER (for example pool.ntp.org) to compare this clock with an NTP server'));
    const worst = lines.some((line) => line.startsWith('FAIL')) ? 2 : lines.some((line) => line.startsWith('warn')) ? 1 : 0;
    assert.equal(text.code, worst, text.stdout + text.stderr);

    const json = await runPopgate(configPath, ['doctor', '--domain', 'good.test', '--only', 'mx,spf,listeners', '--json']);
    assert.equal(json.code, 0, json.stdout + json.stderr);
    const report = JSON.parse(json.stdout);
    assert.equal(report.status, 'ok');
    assert.equal(report.exitCode, 0);
    assert.deepEqual(report.findings.map((f: Finding) => f.check), ['listeners', 'listeners', 'mx', 'spf']);

    const warning = await runPopgate(configPath, ['doctor', '--domain', 'strict.test', '--only', 'dkim']);
    assert.equal(warning.code, 1);
    assert.match(warning.stdout, /^warn  dkim strict\.test: no DKIM key for selector popgate: mail from strict\.test leaves unsigned  \(fix: popgate dkim generate strict\.test, then publish the record it prints\)$/m);

    const failing = await runPopgate(configPath, ['doctor', '--domain', 'broken.test', '--only', 'spf']);
    assert.equal(failing.code, 2);
    assert.match(failing.stdout, /^FAIL  spf broken\.test: "v=spf1 \+all" ends in \+all: anybody may send as broken\.test  \(fix: end the record with -all \(or ~all\)\)$/m);

    const wrong = await runPopgate(configPath, ['doctor', '--only', 'mx,dns']);
    assert.equal(wrong.code, 3);
    assert.match(wrong.stderr, /--only: unknown check dns/);
  });

  describe('a cluster: Redis and PostgreSQL answer, or do not', { skip: missingEngine('redis-server', 'postgres') }, () => {
    let redis: RunningEngine;
    let postgres: RunningEngine;
    before(async () => {
      [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
    });
    after(async () => {
      await Promise.all([redis?.destroy(), postgres?.destroy()]);
    });

    test('both answering with the current schema pass; the domains come from PostgreSQL', async () => {
      const schema = await freshSchema(postgres);
      try {
        const pool = await schema.pool();
        await pool.query("INSERT INTO popgate_domains (name, created_at) VALUES ('good.test', 0)");
        const findings = await runDoctor(doctorConfig({ cluster: { redis: redis.url }, database: { url: schema.url } }), { only: ['redis', 'postgres', 'mx'] });
        assert.deepEqual(findings.map((f) => [f.check, f.status]), [['redis', 'ok'], ['postgres', 'ok'], ['mx', 'ok']]);
        assert.match(findings[0].message, /^answers \(Redis \d+\.\d+\.\d+, PING \d+ ms\)$/);
        assert.match(findings[1].message, /^PostgreSQL \d+\.\d+.* answers, schema version \d+$/);
        assert.equal(findings[2].subject, 'good.test');
      } finally {
        await schema.drop();
      }
    });

    test('an unmigrated schema is reported, not migrated; engines that are down fail promptly', async () => {
      const schema = await freshSchema(postgres, { migrated: false });
      try {
        let findings = await runDoctor(doctorConfig({ database: { url: schema.url } }), { only: ['postgres', 'mx'] });
        assert.deepEqual(findings.map((f) => [f.check, f.status]), [['postgres', 'fail'], ['mx', 'fail']]);
        assert.match(findings[0].message, /holds no popgate schema/);
        assert.equal(findings[0].fix, 'popgate db migrate');
        const pool = await schema.pool(); // not migrated by the pool helper either
        const tables = await pool.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = $1", [schema.name]);
        assert.equal(tables.rows[0].n, 0, 'doctor created nothing');
        assert.equal(findings[1].status, 'fail');
        assert.match(findings[1].message, /local domains unknown: the shared stores do not answer/);

        await redis.stop();
        const started = Date.now();
        findings = await runDoctor(doctorConfig({ cluster: { redis: redis.url } }), { only: ['redis'], timeoutMs: 1000 });
        assert.equal(findings[0].status, 'fail');
        assert.match(findings[0].message, /^does not answer: /);
        assert.ok(Date.now() - started < 15_000, 'within seconds');

        // PostgreSQL where nothing listens (a port just freed): a failure, and no local domains.
        const closed = createNetServer();
        await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
        const { port } = closed.address() as AddressInfo;
        await new Promise((resolve) => closed.close(resolve));
        const nowhere = new URL(schema.url);
        nowhere.port = String(port);
        findings = await runDoctor(doctorConfig({ database: { url: nowhere.toString() } }), { only: ['postgres', 'mx'], timeoutMs: 1000 });
        assert.deepEqual(findings.map((f) => [f.check, f.status]), [['postgres', 'fail'], ['mx', 'fail']]);
        assert.match(findings[0].message, /^does not answer: /);
      } finally {
        await redis.start();
        await schema.drop();
      }
    });
  });
});

describe('the record parsers doctor relies on', () => {
  test('tag lists: tag=value; limits and duplicates', () => {
    assert.deepEqual(parseTagList(' v = DMARC1 ; p=none ;'), { ok: true, value: new Map([['v', 'DMARC1'], ['p', 'none']]) });
    assert.deepEqual(parseTagList('v=DMARC1; v=DMARC1'), { ok: false, reason: 'the tag v appears twice' });
    assert.deepEqual(parseTagList('v=DMARC1;; p=none'), { ok: false, reason: 'an empty tag between two ";"' });
    assert.equal(parseTagList('x'.repeat(9000)).ok, false);
    assert.equal(parseTagList(Array.from({ length: 70 }, (_, i) => `t${i}=1`).join(';')).ok, false);
  });

  test('DKIM: the key with its spaces removed; v= must come first', () => {
    assert.deepEqual(parseDkimRecord('v=DKIM1; k=rsa; p=MIIB IjAN\tBgkq'), { ok: true, value: { keyType: 'rsa', publicKey: 'MIIBIjANBgkq' } });
    assert.deepEqual(parseDkimRecord('p='), { ok: true, value: { keyType: 'rsa', publicKey: '' } });
    assert.equal(parseDkimRecord('k=rsa; v=DKIM1; p=abc').ok, false);
    assert.equal(parseDkimRecord('v=DKIM1; k=rsa').ok, false);
    assert.equal(parseDkimRecord('v=DKIM1; p=not*base64').ok, false);
  });

  test('DMARC: v=DMARC1 first, a valid p=, sane pct= and rua=', () => {
    assert.deepEqual(parseDmarcRecord('v=DMARC1; p=quarantine; pct=50; rua=mailto:a@x.test,mailto:b@x.test; foo=bar'), {
      ok: true,
      value: { policy: 'quarantine', subdomainPolicy: undefined, percent: 50, aggregateReports: ['mailto:a@x.test', 'mailto:b@x.test'] },
    });
    assert.equal(parseDmarcRecord('p=none; v=DMARC1').ok, false);
    assert.equal(parseDmarcRecord('v=DMARC1; rua=mailto:a@x.test').ok, false);
    assert.equal(parseDmarcRecord('v=DMARC1; p=none; pct=150').ok, false);
    assert.equal(parseDmarcRecord('v=DMARC1; p=none; adkim=x').ok, false);
    assert.equal(parseDmarcRecord('v=DMARC1; p=none; rua=dmarc@x.test').ok, false);
  });

  test('the names of PTR records (RFC 1035 §3.5, RFC 3596 §2.5)', () => {
    assert.equal(reverseName('192.0.2.10'), '10.2.0.192.in-addr.arpa');
    assert.equal(reverseName('2001:db8::1'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
    assert.equal(reverseName('2001:DB8:0:0:1::'), '0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
    assert.equal(reverseName('::ffff:192.0.2.1'), '1.0.2.0.0.0.0.c.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa');
  });

  test('TLS-RPT and the SPF all', () => {
    assert.deepEqual(parseTlsRptRecord('v=TLSRPTv1; rua=mailto:r@x.test, https://r.x.test/'), { ok: true, value: { reportTo: ['mailto:r@x.test', 'https://r.x.test/'] } });
    assert.equal(parseTlsRptRecord('v=TLSRPTv1; rua=ftp://x').ok, false);
    assert.equal(spfAllQualifier('v=spf1 mx -all'), '-');
    assert.equal(spfAllQualifier('v=spf1 mx all'), '+', 'a bare all is +all');
    assert.equal(spfAllQualifier('v=spf1 mx ?ALL'), '?');
    assert.equal(spfAllQualifier('v=spf1 include:_spf.x.test'), undefined);
  });
});
