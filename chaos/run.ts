import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fuzz, type Protocol } from './fuzz.ts';
import { DOMAIN, PASSWORD, Popgate } from './popgate.ts';
import { plainAuth, Wire } from './wire.ts';

// npm run chaos: the reliability and security campaign of issue 17, rerun against a real
// popgate process on loopback, ending in a table (docs/reliability.md publishes it).
//
//   npm run chaos                         everything, with the published volumes
//   npm run chaos -- --only fuzz          scenarios whose name contains "fuzz"
//   npm run chaos -- --fuzz-lines 100000  a quicker fuzz
//   npm run chaos -- --rounds 2           fewer kill -9 rounds
//
// It is not part of `npm test`: it takes many minutes, and the disk-full scenarios need root
// (mount). What it cannot do here it reports as skipped, with the reason.

const { values: args } = parseArgs({
  options: {
    only: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    'fuzz-lines': { type: 'string', default: '1000000' },
    seed: { type: 'string', default: '17' },
    keep: { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(args.rounds);
const FUZZ_LINES = Number(args['fuzz-lines']);
const SEED = Number(args.seed);

interface Row {
  scenario: string;
  volume: string;
  result: string;
  ok: boolean | 'skipped';
}
const rows: Row[] = [];
const root = mkdtempSync(join(tmpdir(), 'popgate-chaos-'));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const progress = (text: string) => process.stderr.write(`[chaos] ${text}\n`);

// --- counting messages where they are kept ---

/** Token → copies found in the files of a folder tree (Maildir new/ and cur/, or the queue). */
function countTokens(dirs: string[], into = new Map<string, number>()): Map<string, number> {
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (name.startsWith('.') || !name.match(/\.eml$|^\d/)) continue;
      const text = readFileSync(path, 'latin1');
      const token = /X-Chaos-Token: (\S+)/.exec(text)?.[1];
      if (token) into.set(token, (into.get(token) ?? 0) + 1);
    }
  }
  return into;
}

function mailboxDirs(instance: Popgate, user: string): string[] {
  const base = join(instance.dataDir, 'mail', DOMAIN, user);
  return [join(base, 'new'), join(base, 'cur')];
}

const queueDir = (instance: Popgate) => join(instance.dataDir, 'queue');

interface Ledger {
  acknowledged: Set<string>;
  /** Sent up to the final "." with no reply seen (the server died or refused late). */
  inDoubt: Set<string>;
  refused: Set<string>;
  replies: Map<string, number>;
}
const newLedger = (): Ledger => ({ acknowledged: new Set(), inDoubt: new Set(), refused: new Set(), replies: new Map() });

/** One message over an open SMTP session; records what the server answered. */
async function sendOne(wire: Wire, ledger: Ledger, token: string, recipient: string, size = 2000): Promise<void> {
  const note = (reply: string) => ledger.replies.set(reply.slice(0, 9), (ledger.replies.get(reply.slice(0, 9)) ?? 0) + 1);
  const start = await wire.smtp('MAIL FROM:<alice@chaos.test>');
  // A full disk is refused at MAIL (452 4.3.1) before any body is sent.
  if (start.startsWith('452')) {
    note(start);
    ledger.refused.add(token);
    await wire.smtp('RSET');
    return;
  }
  if (!start.startsWith('250')) throw new Error(`MAIL: ${start}`);
  const rcpt = await wire.smtp(`RCPT TO:<${recipient}>`);
  if (!rcpt.startsWith('250')) {
    note(rcpt);
    ledger.refused.add(token);
    await wire.smtp('RSET');
    return;
  }
  const data = await wire.smtp('DATA');
  if (!data.startsWith('354')) {
    note(data);
    ledger.refused.add(token);
    await wire.smtp('RSET');
    return;
  }
  const body = 'x'.repeat(76) + '\r\n';
  wire.write(`From: alice@chaos.test\r\nTo: ${recipient}\r\nSubject: chaos ${token}\r\nX-Chaos-Token: ${token}\r\n\r\n${body.repeat(Math.ceil(size / body.length))}.\r\n`);
  ledger.inDoubt.add(token);
  const reply = await wire.smtpReply(120_000);
  ledger.inDoubt.delete(token);
  note(reply);
  if (reply.startsWith('250')) ledger.acknowledged.add(token);
  else ledger.refused.add(token);
}

/** SMTP sessions sending to `recipient` until stopped or the server goes; relayed ones log in. */
async function load(instance: Popgate, ledger: Ledger, options: { recipient: string; relay: boolean; clients: number; prefix: string; size?: number; until: () => boolean }): Promise<void> {
  let sequence = 0;
  const client = async (index: number) => {
    while (!options.until()) {
      let wire: Wire;
      try {
        wire = await Wire.connect(options.relay ? instance.ports.submission : instance.ports.smtp);
      } catch {
        return; // the server is gone
      }
      try {
        await wire.smtpReply();
        await wire.smtp('EHLO chaos.example');
        if (options.relay && !(await wire.smtp(plainAuth(`alice@${DOMAIN}`, PASSWORD))).startsWith('235')) throw new Error('AUTH refused');
        for (let i = 0; i < 20 && !options.until(); i++) await sendOne(wire, ledger, `${options.prefix}-${index}-${sequence++}`, options.recipient, options.size);
        wire.close();
      } catch {
        wire.close();
        if (!instance.alive) return;
      }
    }
  };
  await Promise.all(Array.from({ length: options.clients }, (_, i) => client(i)));
}

/** Acknowledged but missing, or found more than once: the two numbers that must be 0. */
function audit(ledger: Ledger, found: Map<string, number>): { lost: number; duplicated: number; refusedButKept: number; inDoubtKept: number } {
  let lost = 0;
  let duplicated = 0;
  let refusedButKept = 0;
  let inDoubtKept = 0;
  for (const token of ledger.acknowledged) if (!found.has(token)) lost++;
  for (const [token, copies] of found) {
    if (copies > 1) duplicated++;
    if (ledger.refused.has(token)) refusedButKept++;
    if (ledger.inDoubt.has(token)) inDoubtKept++;
  }
  return { lost, duplicated, refusedButKept, inDoubtKept };
}

// --- the scenarios ---

async function killUnderLoad(relay: boolean): Promise<void> {
  const name = relay ? 'kill -9 under load, relayed (submission + AUTH → queue)' : 'kill -9 under load, local delivery (port 25 → Maildir)';
  const instance = await Popgate.create(join(root, relay ? 'kill-relay' : 'kill-local'));
  let acknowledged = 0;
  let lost = 0;
  let duplicated = 0;
  let inDoubt = 0;
  let inDoubtKept = 0;
  let refusedButKept = 0;
  for (let round = 0; round < ROUNDS; round++) {
    await instance.start();
    const ledger = newLedger();
    let stop = false;
    const running = load(instance, ledger, { recipient: relay ? 'someone@remote.example' : `alice@${DOMAIN}`, relay, clients: 8, prefix: `r${round}`, until: () => stop || !instance.alive });
    // Relayed mail starts slower (a login per session): the kill comes 3-8 s in.
    await sleep(3000 + Math.floor(Math.random() * 5000));
    await instance.kill9();
    stop = true;
    await running;
    await instance.start(); // recovery runs at start
    await sleep(500);
    const found = countTokens(relay ? [queueDir(instance)] : mailboxDirs(instance, 'alice'));
    const result = audit(ledger, found);
    acknowledged += ledger.acknowledged.size;
    inDoubt += ledger.inDoubt.size;
    lost += result.lost;
    duplicated += result.duplicated;
    inDoubtKept += result.inDoubtKept;
    refusedButKept += result.refusedButKept;
    progress(`${name}: round ${round + 1}: ${ledger.acknowledged.size} acknowledged, ${result.lost} lost, ${result.duplicated} duplicated`);
    await instance.stop();
  }
  rows.push({
    scenario: name,
    volume: `${ROUNDS} kills, ${acknowledged} acknowledged`,
    result: `${lost} lost, ${duplicated} duplicated, ${refusedButKept} refused but kept; ${inDoubt} cut off before the reply (${inDoubtKept} of them kept)`,
    ok: lost === 0 && duplicated === 0 && refusedButKept === 0 && instance.unexpectedExits === 0,
  });
}

async function pop3KilledBeforeQuit(): Promise<void> {
  const instance = await Popgate.create(join(root, 'pop3-kill'));
  await instance.start();
  const ledger = newLedger();
  const wire = await Wire.connect(instance.ports.smtp);
  await wire.smtpReply();
  await wire.smtp('EHLO chaos.example');
  for (let i = 0; i < 50; i++) await sendOne(wire, ledger, `pop-${i}`, `bob@${DOMAIN}`);
  wire.close();
  const login = async () => {
    const pop = await Wire.connect(instance.ports.pop3);
    await pop.line();
    await pop.pop3(`USER bob@${DOMAIN}`);
    const reply = await pop.pop3(`PASS ${PASSWORD}`);
    return { pop, count: Number(/(\d+) message/.exec(reply)?.[1] ?? -1) };
  };
  let resurrected = 0;
  let lostBeforeQuit = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const { pop, count } = await login();
    for (let i = 1; i <= count; i++) await pop.pop3(`DELE ${i}`);
    await pop.pop3('RETR 1').catch(() => '');
    await instance.kill9(); // before QUIT: RFC 1939 §6, nothing may be deleted
    pop.close();
    await instance.start();
    const after = await login();
    lostBeforeQuit += count - after.count;
    after.pop.close();
    await sleep(200);
  }
  // And the other way round: DELE + QUIT acknowledged, then kill -9 at once.
  const { pop, count } = await login();
  for (let i = 1; i <= count; i++) await pop.pop3(`DELE ${i}`);
  const quit = await pop.pop3('QUIT');
  await instance.kill9();
  await instance.start();
  const after = await login();
  if (quit.startsWith('+OK')) resurrected = after.count;
  after.pop.close();
  await instance.stop();
  rows.push({
    scenario: 'POP3 killed before QUIT (then after an acknowledged QUIT)',
    volume: `${ROUNDS} kills with 50 messages marked, 1 after QUIT`,
    result: `${lostBeforeQuit} deleted without QUIT; ${resurrected} back after an acknowledged QUIT`,
    ok: lostBeforeQuit === 0 && resurrected === 0,
  });
}

function mountSmall(kind: 'tmpfs' | 'ext4', at: string, megabytes: number): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (mount)';
  mkdirSync(at, { recursive: true });
  try {
    if (kind === 'tmpfs') {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${megabytes}m`, 'tmpfs', at]);
    } else {
      const image = `${at}.img`;
      execFileSync('truncate', ['-s', `${megabytes}M`, image]);
      execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
      execFileSync('mount', ['-o', 'loop', image, at]);
    }
    return undefined;
  } catch (error) {
    return `cannot mount ${kind}: ${(error as Error).message.split('\n')[0]}`;
  }
}

async function diskFull(kind: 'tmpfs' | 'ext4'): Promise<void> {
  const name = `disk full (${kind === 'ext4' ? 'loop ext4' : 'tmpfs'}, 24 MB, data_dir on it)`;
  const dir = join(root, `disk-${kind}`);
  const mountPoint = join(dir, 'data');
  const why = mountSmall(kind, mountPoint, 24);
  if (why) {
    rows.push({ scenario: name, volume: '-', result: `skipped: ${why}`, ok: 'skipped' });
    return;
  }
  try {
    const instance = await Popgate.create(dir, { dataDir: mountPoint });
    // The default reserve (100 MiB) is larger than this disk: keep 4 MB, so mail is accepted
    // until the disk is nearly full and then refused before its body.
    writeExtra(instance, 'smtp', ['min_free_space = 4194304']);
    await instance.start();
    const ledger = newLedger();
    // Local and relayed mail of 256 KiB until the disk refuses for a while.
    let refusedInARow = 0;
    let stop = false;
    const until = () => stop || !instance.alive;
    const watcher = (async () => {
      let refusedBefore = 0;
      for (let i = 0; i < 600 && !stop; i++) {
        await sleep(250);
        refusedInARow = ledger.refused.size > refusedBefore ? refusedInARow + 1 : 0;
        refusedBefore = ledger.refused.size;
        if (refusedInARow >= 12) stop = true;
      }
      stop = true;
    })();
    await Promise.all([
      load(instance, ledger, { recipient: `alice@${DOMAIN}`, relay: false, clients: 2, prefix: 'local', size: 256 * 1024, until }),
      load(instance, ledger, { recipient: 'someone@remote.example', relay: true, clients: 2, prefix: 'relay', size: 256 * 1024, until }),
    ]);
    await watcher;
    const refusals = [...ledger.replies.entries()].filter(([reply]) => !reply.startsWith('250')).map(([reply, n]) => `${reply.trim()} ×${n}`).join(', ');
    // A customer can log in and delete mail to free space.
    const pop = await Wire.connect(instance.ports.pop3);
    await pop.line();
    await pop.pop3(`USER alice@${DOMAIN}`);
    const loggedIn = await pop.pop3(`PASS ${PASSWORD}`);
    const count = Number(/(\d+) message/.exec(loggedIn)?.[1] ?? 0);
    let deleted = '';
    if (loggedIn.startsWith('+OK')) {
      for (let i = 1; i <= count; i += 2) await pop.pop3(`DELE ${i}`);
      deleted = await pop.pop3('QUIT');
    }
    pop.close();
    // Every acknowledged message once, every refused one nowhere: counted after a restart.
    await instance.kill9();
    await instance.start();
    await sleep(500);
    const found = countTokens([...mailboxDirs(instance, 'alice'), queueDir(instance)]);
    const deletedTokens = Math.floor((count + 1) / 2);
    const result = audit(ledger, found);
    await instance.stop();
    const lostBeyondDeleted = Math.max(0, result.lost - (deleted.startsWith('+OK') ? deletedTokens : 0));
    rows.push({
      scenario: name,
      volume: `${ledger.acknowledged.size} acknowledged, ${ledger.refused.size} refused`,
      result:
        `refusals: ${refusals || 'none'}; POP3 login on the full disk: ${loggedIn.startsWith('+OK') ? `ok, ${deletedTokens} deleted (${deleted.slice(0, 30)})` : loggedIn}; ` +
        `${lostBeyondDeleted} acknowledged lost, ${result.duplicated} duplicated, ${result.refusedButKept} refused but kept`,
      ok: loggedIn.startsWith('+OK') && deleted.startsWith('+OK') && lostBeyondDeleted === 0 && result.duplicated === 0 && result.refusedButKept === 0 && instance.unexpectedExits === 0,
    });
  } finally {
    execFileSync('umount', ['-l', mountPoint]);
  }
}

async function fuzzProtocol(protocol: Protocol, tls: boolean): Promise<void> {
  const label = tls ? (protocol === 'pop3' ? 'pop3s' : 'submissions') : protocol;
  // Error delays and failed-login delays off, or a million lines would take hours: what is
  // measured here is robustness, not the pacing (which has its own tests).
  const instance = await Popgate.create(join(root, `fuzz-${label}`), { toml: '[auth]\nfailure_delay = "0s"\n' });
  writeExtra(instance, 'smtp', ['error_delay = "0s"']);
  await instance.start();
  // Some mail to read for POP3.
  const seedLedger = newLedger();
  const wire = await Wire.connect(instance.ports.smtp);
  await wire.smtpReply();
  await wire.smtp('EHLO chaos.example');
  for (let i = 0; i < 5; i++) for (const user of ['alice', 'bob']) await sendOne(wire, seedLedger, `fuzz-seed-${user}-${i}`, `${user}@${DOMAIN}`);
  wire.close();
  const port = protocol === 'pop3' ? (tls ? instance.ports.pop3s : instance.ports.pop3) : protocol === 'smtp' ? instance.ports.smtp : tls ? instance.ports.submissions : instance.ports.submission;
  const rssBefore = instance.rssKb();
  let rssMax = rssBefore;
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, instance.rssKb())), 500);
  const started = Date.now();
  // The TLS variants cost a handshake per connection: a tenth of the lines.
  const lines = tls ? Math.ceil(FUZZ_LINES / 10) : FUZZ_LINES;
  const sources = Array.from({ length: 16 }, (_, i) => `127.0.${20 + Math.floor(i / 4)}.${1 + (i % 4)}`);
  const result = await fuzz({ protocol, port, tls, lines, parallel: 16, seed: SEED, password: PASSWORD, sources });
  clearInterval(sampler);
  const seconds = (Date.now() - started) / 1000;
  await sleep(3000);
  const rssAfter = instance.rssKb();
  // Still serving: a clean session works after the storm.
  let healthy = false;
  try {
    const check = await Wire.connect(protocol === 'pop3' ? instance.ports.pop3 : instance.ports.smtp, { localAddress: '127.0.9.9' });
    healthy = protocol === 'pop3' ? (await check.line()).startsWith('+OK') && (await check.pop3('CAPA')).startsWith('+OK') : (await check.smtpReply()).startsWith('220') && (await check.smtp('EHLO check.example')).startsWith('250');
    check.close();
  } catch {
    healthy = false;
  }
  const alive = instance.alive;
  await instance.stop();
  rows.push({
    scenario: `fuzz ${label}`,
    volume: `${result.lines.toLocaleString('en')} lines, ${result.sessions.toLocaleString('en')} sessions, ${result.connections.toLocaleString('en')} connections in ${seconds.toFixed(0)} s`,
    result: `${alive ? 0 : 1} exits, RSS ${Math.round(rssBefore / 1024)} → max ${Math.round(rssMax / 1024)} → ${Math.round(rssAfter / 1024)} MB after, ${result.connectFailures} connects refused, ${healthy ? 'serving after' : 'NOT serving after'}`,
    ok: alive && healthy && instance.unexpectedExits === 0,
  });
}

async function slowClients(): Promise<void> {
  const instance = await Popgate.create(join(root, 'slow'));
  // idle_timeout = 5s as the campaign set it, with the whole-command deadline an operator who
  // wants slow clients gone that fast sets beside it (the default is RFC 5321's 5 minutes);
  // the rest of [smtp] as written by create().
  writeExtra(instance, 'smtp', ['idle_timeout = "5s"', 'command_timeout = "10s"', 'max_connections = 20', 'max_connections_per_ip = 10']);
  await instance.start();
  const started = Date.now();
  // One byte every 3 s, mid-command: how long does the server keep the session?
  const dribble = await Wire.connect(instance.ports.smtp, { localAddress: '127.0.5.1' });
  await dribble.smtpReply();
  let closedAfter = -1;
  const text = 'EHLO slow.example.with.a.long.name.that.takes.a.while\r\n';
  for (let i = 0; i < text.length && Date.now() - started < 60_000; i++) {
    dribble.write(text[i]);
    if (await dribble.waitClosed(3000)) {
      closedAfter = (Date.now() - started) / 1000;
      break;
    }
  }
  dribble.close();
  // Slow clients from two addresses fill max_connections: is a good client still served?
  const holders: Wire[] = [];
  for (const source of ['127.0.5.2', '127.0.5.3']) {
    for (let i = 0; i < 10; i++) {
      const holder = await Wire.connect(instance.ports.smtp, { localAddress: source }).catch(() => undefined);
      if (holder) {
        holders.push(holder);
        holder.write('E');
      }
    }
  }
  const dripper = setInterval(() => holders.forEach((holder) => !holder.closed && holder.write('H')), 3000);
  await sleep(15_000);
  const good = await Wire.connect(instance.ports.smtp, { localAddress: '127.0.5.4' });
  const greeting = await good.smtpReply().catch((error: Error) => error.message);
  good.close();
  clearInterval(dripper);
  holders.forEach((holder) => holder.close());
  await instance.stop();
  rows.push({
    scenario: 'slow clients (smtp.idle_timeout = 5s, command_timeout = 10s, one byte every 3 s)',
    volume: '1 dribbling session; 20 slow sessions from 2 addresses filling max_connections = 20',
    result: `mid-command session ${closedAfter < 0 ? 'still open after 60 s' : `closed after ${closedAfter.toFixed(0)} s`}; a good client after 15 s: ${greeting.split('\n')[0].slice(0, 40)}`,
    ok: closedAfter >= 0 && closedAfter <= 30 && greeting.startsWith('220'),
  });
}

/** Adds settings to a section of the instance's config (before it starts). */
function writeExtra(instance: Popgate, section: string, settings: string[]): void {
  writeFileSync(instance.config, readFileSync(instance.config, 'utf8').replace(`[${section}]\n`, `[${section}]\n${settings.join('\n')}\n`));
}

async function renegotiation(): Promise<void> {
  const instance = await Popgate.create(join(root, 'tls'));
  await instance.start();
  const results: string[] = [];
  let accepted = 0;
  for (const [label, port] of [['pop3s', instance.ports.pop3s], ['submissions', instance.ports.submissions]] as const) {
    const { connect } = await import('node:tls');
    const socket = connect({ port, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.2' });
    await new Promise((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    socket.on('error', () => {});
    let done = 0;
    for (let i = 0; i < 200; i++) {
      // Refused shows as an error (the server's no_renegotiation alert) or a closed socket.
      const ok = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 5000);
        const settle = (outcome: boolean) => {
          clearTimeout(timer);
          resolve(outcome);
        };
        socket.once('error', () => settle(false));
        socket.once('close', () => settle(false));
        if (socket.destroyed || !socket.renegotiate({ rejectUnauthorized: false }, (error) => settle(!error))) settle(false);
      });
      if (!ok) break;
      done++;
    }
    socket.destroy();
    accepted += done;
    // A CBC-only client.
    const cbc = await new Promise<string>((resolve) => {
      const client = connect({ port, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA:AES128-SHA' });
      client.once('secureConnect', () => {
        resolve(`connected with ${client.getCipher().name}`);
        client.destroy();
      });
      client.once('error', () => resolve('refused'));
    });
    results.push(`${label}: ${done} of 200 renegotiations done, CBC-only client ${cbc}`);
  }
  await instance.stop();
  rows.push({ scenario: 'TLS 1.2 renegotiation and CBC suites', volume: '200 renegotiations per port', result: results.join('; '), ok: accepted === 0 && results.every((r) => r.endsWith('refused')) });
}

async function lockout(): Promise<void> {
  const instance = await Popgate.create(join(root, 'lockout'));
  await instance.start();
  for (const source of ['127.0.7.1', '127.0.7.2', '127.0.7.3']) {
    const pop = await Wire.connect(instance.ports.pop3, { localAddress: source });
    await pop.line();
    for (let i = 0; i < 8; i++) {
      await pop.pop3(`USER alice@${DOMAIN}`);
      await pop.pop3(`PASS guess-${i}`, 60_000);
    }
    pop.close();
  }
  const customer = await Wire.connect(instance.ports.pop3, { localAddress: '127.0.7.9' });
  await customer.line();
  await customer.pop3(`USER alice@${DOMAIN}`);
  const pop3 = await customer.pop3(`PASS ${PASSWORD}`, 60_000);
  customer.close();
  const smtp = await Wire.connect(instance.ports.submission, { localAddress: '127.0.7.10' });
  await smtp.smtpReply();
  await smtp.smtp('EHLO customer.example');
  const auth = await smtp.smtp(plainAuth(`alice@${DOMAIN}`, PASSWORD), 60_000);
  smtp.close();
  await instance.stop();
  rows.push({
    scenario: 'lockout: 24 wrong guesses from 3 addresses, then the customer',
    volume: '24 guesses (POP3), the right password from a clean address',
    result: `POP3: ${pop3.slice(0, 40)}; SMTP AUTH: ${auth.slice(0, 40)}`,
    ok: pop3.startsWith('+OK') && auth.startsWith('235'),
  });
}

const SCENARIOS: [string, () => Promise<void>][] = [
  ['kill-local', () => killUnderLoad(false)],
  ['kill-relay', () => killUnderLoad(true)],
  ['pop3-kill-before-quit', pop3KilledBeforeQuit],
  ['disk-full-tmpfs', () => diskFull('tmpfs')],
  ['disk-full-ext4', () => diskFull('ext4')],
  ['fuzz-smtp', () => fuzzProtocol('smtp', false)],
  ['fuzz-submission', () => fuzzProtocol('submission', false)],
  ['fuzz-pop3', () => fuzzProtocol('pop3', false)],
  ['fuzz-pop3s', () => fuzzProtocol('pop3', true)],
  ['fuzz-submissions', () => fuzzProtocol('submission', true)],
  ['slow-clients', slowClients],
  ['renegotiation', renegotiation],
  ['lockout', lockout],
];

const startedAt = Date.now();
for (const [key, scenario] of SCENARIOS) {
  if (args.only && !key.includes(args.only)) continue;
  progress(`${key} ...`);
  try {
    await scenario();
  } catch (error) {
    rows.push({ scenario: key, volume: '-', result: `ERROR: ${(error as Error).message.split('\n')[0].slice(0, 160)}`, ok: false });
  }
}
if (!args.keep) rmSync(root, { recursive: true, force: true });

const widths = [Math.max(...rows.map((r) => r.scenario.length), 8), Math.max(...rows.map((r) => r.volume.length), 6)];
console.log(`\npopgate chaos run, ${new Date().toISOString()}, ${((Date.now() - startedAt) / 60_000).toFixed(1)} min, seed ${SEED}\n`);
console.log(`${'scenario'.padEnd(widths[0])}  ${'volume'.padEnd(widths[1])}  verdict  result`);
for (const row of rows) {
  const verdict = row.ok === 'skipped' ? 'skipped' : row.ok ? 'held' : 'FAILED';
  console.log(`${row.scenario.padEnd(widths[0])}  ${row.volume.padEnd(widths[1])}  ${verdict.padEnd(7)}  ${row.result}`);
}
process.exitCode = rows.some((row) => row.ok === false) ? 1 : 0;
