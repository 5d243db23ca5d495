import { generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { Authenticator } from '../src/filter/authenticator.ts';
import { FilterDns } from '../src/filter/dns.ts';
import { startDns, type TestDns, type ZoneEntry } from '../test/helpers/dns.ts';
import { startPostfix, type RunningPeer } from './peers/index.ts';
import {
  ACCEPT_SINK,
  ACCEPT_SIZE,
  ACCEPT_SOURCE,
  acceptRun,
  alternate,
  Children,
  CLIENTS,
  HOSTNAME,
  mkdirp,
  mkMaildir,
  PASSWORD,
  postfixConfiguration,
  prepareSingleData,
  ratioRow,
  seriesRow,
  startSingle,
  WARM_SINK,
  warmAccept,
  type AcceptTraffic,
  type Configuration,
  type ScaleOptions,
  type ScaleResult,
  type ScaleRow,
} from './scale.ts';
import { MessageSet, SmtpLoadError, type AcceptMessages } from './smtp-load.ts';
import { matchesOnly } from './stats.ts';

// The filtering row of `npm run bench` (issue 14): SMTP accept of 1 KB DKIM-signed messages
// with 10 clients, popgate checking SPF, DKIM and DMARC on each (the defaults of [filter]),
// against the same popgate with `[filter] enabled = false`, and with --peers against Postfix
// (which, as bench/peers/postfix configures it, checks nothing).
//
// The sender's domain publishes what a well-run domain does: an SPF record naming the client's
// address with -all, a DKIM key (RSA 2048, the common size), and DMARC p=reject, so every
// message passes all three and takes the path most mail takes; the run checks that each one
// arrived marked spf=pass, dkim=pass and dmarc=pass. The records come from a DNS server on
// loopback in this process (dns2, as the tests use it), popgate's [dns] servers pointing at it.
// popgate keeps answers for a minute (src/filter/dns.ts), so after the first message of a run
// the DNS is hardly asked: what the row measures is the verification itself (parsing, the body
// hash, the RSA signature) on top of the accept path.
//
// The messages are signed before the runs (signing in the runs would be the generator's CPU),
// the same ones every run: a receiver has no reason to remember signatures, and popgate does not.

const SENDER_DOMAIN = 'signed-sender.example';
export const SENDER = `news@${SENDER_DOMAIN}`;
const SELECTOR = 'bench';
/** The signature's time, fixed so that every signature has the same length (t= and no x=: it never expires). */
const SIGN_TIME = new Date('2026-01-01T00:00:00Z');
const TARGETS = { overUnfiltered: 0.6, overPostfix: 2 };

const WORKLOAD = `SMTP accept 1 KB DKIM-signed, ${CLIENTS} clients, no pipelining`;
/** The rows' names, for the table and for --only (each contains "filtering"). */
const LABELS = {
  on: `filtering on (SPF, DKIM, DMARC): ${WORKLOAD}`,
  off: `filtering off: ${WORKLOAD}`,
  ratio: `filtering on / off: ${WORKLOAD}`,
  peer: (peer: string) => `filtering peer, ${peer} (no filtering): ${WORKLOAD}`,
  overPeer: `filtering on / Postfix: ${WORKLOAD}`,
};

/**
 * Messages of ACCEPT_SIZE octets, DKIM-signature included, signed by SENDER_DOMAIN: built once
 * from a MessageSet (numbered by its Message-ID) one octet-count shorter than the signature.
 */
export class SignedMessageSet implements AcceptMessages {
  readonly size: number;
  readonly #base: MessageSet;
  readonly #messages: Buffer[];
  readonly #wires: Buffer[];

  private constructor(base: MessageSet, messages: Buffer[]) {
    this.#base = base;
    this.#messages = messages;
    this.#wires = messages.map((message) => Buffer.from(`${message.toString('latin1').replace(/(^|\r\n)\./g, '$1..')}.\r\n`, 'latin1'));
    this.size = messages[0].length;
  }

  static async create(options: { count: number; to: string; tag: string; privateKey: string }): Promise<SignedMessageSet> {
    const sign = async (text: Buffer): Promise<Buffer> => {
      const result = await dkimSign(text, {
        canonicalization: 'relaxed/relaxed',
        signTime: SIGN_TIME,
        signatureData: [{ signingDomain: SENDER_DOMAIN, selector: SELECTOR, privateKey: options.privateKey }],
      } as Parameters<typeof dkimSign>[1]);
      if (!result.signatures || result.errors.length > 0) throw new SmtpLoadError(`DKIM signing failed: ${JSON.stringify(result.errors)}`);
      return Buffer.concat([Buffer.from(result.signatures, 'latin1'), text]);
    };
    // The signature's length, from a probe, sets the size of the unsigned text.
    const probe = new MessageSet({ size: ACCEPT_SIZE, from: SENDER, to: options.to, tag: options.tag });
    const signatureLength = (await sign(probe.message(0))).length - ACCEPT_SIZE;
    const base = new MessageSet({ size: ACCEPT_SIZE - signatureLength, from: SENDER, to: options.to, tag: options.tag });
    const messages: Buffer[] = [];
    for (let n = 0; n < options.count; n++) {
      const signed = await sign(base.message(n));
      if (signed.length !== ACCEPT_SIZE) throw new SmtpLoadError(`signed message ${n} has ${signed.length} octets, not ${ACCEPT_SIZE}`);
      messages.push(signed);
    }
    return new SignedMessageSet(base, messages);
  }

  message(n: number): Buffer {
    return this.#messages[n];
  }

  wire(n: number): Buffer {
    return this.#wires[n];
  }

  numberOf(stored: Buffer): number | undefined {
    return this.#base.numberOf(stored);
  }
}

/** What the sender's domain publishes: SPF for the accept source with -all, its DKIM key (`publicKey`: SPKI DER in base64), DMARC p=reject. */
export function senderZone(publicKey: string): Record<string, ZoneEntry> {
  return {
    [SENDER_DOMAIN]: { TXT: [`v=spf1 ip4:${ACCEPT_SOURCE} -all`] },
    [`${SELECTOR}._domainkey.${SENDER_DOMAIN}`]: { TXT: [`v=DKIM1; k=rsa; p=${publicKey}`] },
    [`_dmarc.${SENDER_DOMAIN}`]: { TXT: ['v=DMARC1; p=reject'] },
  };
}

/** The headers popgate put on a filtered message must say that all three checks passed, and no spam mark. */
export function checkPassed(added: Buffer, file: string): void {
  const header = added.toString('latin1');
  for (const verdict of ['spf=pass', 'dkim=pass', 'dmarc=pass', 'X-Spam-Flag: NO']) {
    if (!header.includes(verdict)) throw new SmtpLoadError(`${file}: the filtered message lacks "${verdict}" in the headers popgate added:\n${header}`);
  }
}

export async function runFiltering(options: ScaleOptions): Promise<ScaleResult> {
  const { progress, quick } = options;
  const rows: ScaleRow[] = [];
  if (!Object.values(LABELS).some((label) => matchesOnly(options.only, typeof label === 'string' ? label : label('Postfix')))) return { rows, skipped: [] };
  const runs = quick ? 2 : Math.max(options.runs, 9);
  const workers = options.filteringWorkers ?? 1;

  const root = mkdtempSync(join(tmpdir(), 'popgate-filter-'));
  const children = new Children(options.cpuProfDir);
  let dns: TestDns | undefined;
  let postfix: RunningPeer | undefined;
  const killAll = () => {
    children.killSync();
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', killAll);
  try {
    progress('filtering: SPF, DKIM and DMARC on against off');
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const privatePem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    dns = await startDns(senderZone(publicKey.export({ type: 'spki', format: 'der' }).toString('base64')));
    const started = performance.now();
    const signedFor = new Map<string, SignedMessageSet>([
      [ACCEPT_SINK, await SignedMessageSet.create({ count: options.smtpMessages, to: ACCEPT_SINK, tag: 'filter', privateKey: privatePem })],
      [WARM_SINK, await SignedMessageSet.create({ count: options.smtpWarmUp, to: WARM_SINK, tag: 'filter-warm', privateKey: privatePem })],
    ]);
    progress(`  setup: ${options.smtpMessages + options.smtpWarmUp} messages signed (${ACCEPT_SIZE} octets each) in ${((performance.now() - started) / 1000).toFixed(1)} s; DNS on ${dns.address}`);
    const traffic: AcceptTraffic = { from: SENDER, messages: (_tag, to) => signedFor.get(to)! };

    const dirs = { on: join(root, 'on'), off: join(root, 'off') };
    await prepareSingleData(dirs.on, options, false);
    cpSync(dirs.on, dirs.off, { recursive: true });
    // Both point at the local DNS server; only the filtered one asks it.
    const dnsConfig = { dns: { servers: [dns.address], timeout: '1s' } };
    const on = await startSingle(children, 'filtering on', dirs.on, workers, 42, { config: { ...dnsConfig, filter: { enabled: true } }, checkAdded: checkPassed });
    const off = await startSingle(children, 'filtering off', dirs.off, workers, 43, { config: { ...dnsConfig, filter: { enabled: false } } });
    progress(`  servers: filtering on, popgate pid ${on.server.pid}, SMTP ${on.config.smtp[0].port}; filtering off, pid ${off.server.pid}, SMTP ${off.config.smtp[0].port}`);
    const configs: Configuration[] = [on.config, off.config];
    if (options.peers) {
      postfix = await startPostfix({
        workDir: mkdirp(join(root, 'postfix-work')),
        domain: HOSTNAME,
        recipients: [WARM_SINK, ACCEPT_SINK].map((address) => ({ address, password: PASSWORD, maildir: mkMaildir(join(root, 'postfix-mail', address)) })),
      });
      progress(`  server: ${postfix.version}, SMTP ${postfix.smtp!.port}`);
      configs.push(postfixConfiguration(postfix, root));
    }

    await warmAccept(configs, options, traffic);
    const [filtered, unfiltered, peer] = await alternate(`filtering: ${WORKLOAD}`, 'msg/s', configs, runs, options, acceptRun(options, 'filter', { traffic }));
    const records = `the sender's domain publishes SPF (-all), a DKIM key (RSA 2048) and DMARC p=reject; every message arrived marked spf=pass, dkim=pass, dmarc=pass; DNS answers are kept by popgate for a minute, so the local DNS server (${dns.queries.length} queries in all) is hardly asked`;
    rows.push(
      seriesRow(LABELS.on, 'msg/s', filtered, 'message', true, records),
      seriesRow(LABELS.off, 'msg/s', unfiltered, 'message', true, 'the same signed messages, [filter] enabled = false'),
      ratioRow(LABELS.ratio, filtered, unfiltered, 'message', TARGETS.overUnfiltered),
    );
    if (peer) {
      rows.push(
        seriesRow(LABELS.peer(peer.config.name), 'msg/s', peer, 'message', true, 'the same signed messages, alternating with both popgates; its run lasts until the accepted mail is in its Maildir'),
        ratioRow(LABELS.overPeer, filtered, peer, 'message', TARGETS.overPostfix),
      );
    }
    await children.stop(on.server);
    await children.stop(off.server);
    return { rows, skipped: [] };
  } finally {
    await postfix?.stop().catch((error) => progress(`stopping Postfix: ${(error as Error).message}`));
    await children.stopAll(progress);
    await dns?.close();
    process.off('exit', killAll);
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * The sender authentication alone, in this process: `count` of the row's signed messages
 * through Authenticator.check (SPF, DKIM, DMARC, ARC as the filter runs them), 10 at a time
 * as the row's 10 clients send them, every DNS answer cached after the first. Prints the CPU
 * of this process per message, the figure to compare before and after a change to
 * src/filter/: `npx node [--cpu-prof] bench/filter.ts [count]` (docs/filtering.md, performance).
 */
async function measureChecks(count: number): Promise<void> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dns = await startDns(senderZone(publicKey.export({ type: 'spki', format: 'der' }).toString('base64')));
  try {
    const messages = await SignedMessageSet.create({ count: 200, to: ACCEPT_SINK, tag: 'checks', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() });
    const authenticator = new Authenticator({ hostname: HOSTNAME, resolver: new FilterDns([dns.address], 1000).resolve, deadlineMs: 5000 });
    const checkAll = async (total: number) => {
      for (let n = 0; n < total; n += CLIENTS) {
        const batch = Array.from({ length: CLIENTS }, (_, i) => authenticator.check({ message: messages.message((n + i) % 200), ip: ACCEPT_SOURCE, helo: 'client.example', sender: SENDER }));
        for (const result of await Promise.all(batch)) {
          if (result.spf !== 'pass' || result.dkim !== 'pass' || result.dmarc !== 'pass') throw new SmtpLoadError(`a check did not pass: ${JSON.stringify(result)}`);
        }
      }
    };
    await checkAll(500); // warm: compiled code, DNS answers and keys cached
    const cpu = process.cpuUsage();
    const started = performance.now();
    await checkAll(count);
    const used = process.cpuUsage(cpu);
    const perMessage = (micros: number) => `${Math.round(micros / count).toLocaleString('en-US')} µs`;
    console.log(`sender authentication of ${count} signed 1 KB messages, ${CLIENTS} at a time: CPU ${perMessage(used.user + used.system)} per message (wall ${perMessage((performance.now() - started) * 1000)}), node ${process.execArgv.join(' ') || '(no flags)'}`);
  } finally {
    await dns.close();
  }
}

if (import.meta.main) await measureChecks(Number(process.argv[2] ?? 5000));
