import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'smol-toml';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { renderChart, type ChartRow } from './chart.ts';
import { processMemory, processTree, runIdle, type IdleResult } from './idle-load.ts';
import { fillMaildir, runLargeMailbox } from './mailbox-load.ts';
import { fillMailboxes } from './messages.ts';
import { installPeers, startDovecot, startHaraka, startPostfix, type PeerMailbox, type RunningPeer } from './peers/index.ts';
import { runLogins, runRetr, type Endpoint } from './pop3-load.ts';
import { freePort, PopgateChild } from './popgate-server.ts';
import { fmt, matchesOnly, median } from './stats.ts';
import { MessageSet, relayLag, runAccept } from './smtp-load.ts';

// `npm run bench -- --peers`: popgate side by side with the servers a provider would otherwise
// run — Postfix (SMTP into Maildir), Dovecot (POP3 on the same Maildirs), Haraka (SMTP) — on
// this machine, in one run, on loopback. Each workload runs against each server in turn, run
// after run (so a noisy neighbour hurts all alike), and every figure is the median of the runs.
// The peers' configurations are in bench/peers/ (README.md there says what each setting is).

export interface CompareOptions {
  /** Start Postfix, Dovecot and Haraka too (else popgate alone). */
  peers: boolean;
  /** The workload families to run (default all): large, pop3, lag, smtp, idle. */
  families?: string[];
  quick: boolean;
  runs: number;
  only?: string;
  progress: (text: string) => void;
  cpuProfDir?: string;
  /** `[server] workers` of popgate in this table (1 by default, as the table has always measured). */
  workers?: number;
}

type ServerName = 'popgate' | 'Postfix' | 'Dovecot' | 'Haraka';
const SERVERS: ServerName[] = ['popgate', 'Postfix', 'Dovecot', 'Haraka'];

export interface ComparisonRow {
  workload: string;
  unit: string;
  /** True for rates, false for times and memory. */
  higherIsBetter: boolean;
  /** Per server, the figure of each run (the median is shown). */
  runs: Partial<Record<ServerName, number[]>>;
  /** What popgate must reach: a ratio to a peer's median, or an absolute bound. */
  target?: { ratio?: number; against?: ServerName; bound?: number; text: string };
  note?: string;
  /** Per server, why it has no figure (e.g. it could not hold the connections). */
  details?: Record<string, string>;
}

export interface ComparisonResult {
  versions: Partial<Record<ServerName, string>>;
  settings: ReturnType<typeof settingsFor>;
  rows: ComparisonRow[];
}

const DOMAIN = 'bench.example.test';
const PASSWORD = 'bench-password-1';
const INBOUND_SENDER = 'sender@example.org';
/** Accept traffic comes from an address without a POP-before-SMTP grant, as MX traffic does. */
const ACCEPT_SOURCE = '127.0.0.2';
const REMOTE_RECIPIENT = 'relay-probe@example.com';
const pop3User = (i: number) => `pop${String(i + 1).padStart(2, '0')}@${DOMAIN}`;
const LARGE_USER = `large@${DOMAIN}`;
const RELAY_USER = `relay@${DOMAIN}`;
const SMTP_ROWS = [
  { key: '1k', size: 1024, pipelining: false },
  { key: '1k-pipe', size: 1024, pipelining: true },
  { key: '100k', size: 100 * 1024, pipelining: false },
  { key: '100k-pipe', size: 100 * 1024, pipelining: true },
] as const;
const smtpSink = (key: string) => `smtp-${key}@${DOMAIN}`;
const WARM_SINK = smtpSink('warm');
const RETR_SETTLE_MS = 250;

function settingsFor(quick: boolean, runs: number) {
  return {
    runs,
    smtp: { clients: 10, smallMessages: quick ? 1000 : 20_000, largeMessages: quick ? 100 : 2000, warmUp: quick ? 100 : 500 },
    pop3: { clients: 10, mailboxes: 10, messagesPerMailbox: quick ? 200 : 1000, messageSize: 10 * 1024, logins: quick ? 20 : 100 },
    lagSamples: quick ? 5 : 30,
    idle: quick ? [1000] : [1000, 10_000],
    idleProbes: quick ? 50 : 200,
    large: { messages: quick ? 10_000 : 100_000, size: 2048, runs: Math.max(runs, 3) },
  };
}

export async function runComparison(options: CompareOptions): Promise<ComparisonResult> {
  const { progress } = options;
  const settings = settingsFor(options.quick, options.runs);
  const family = (name: string) => options.families === undefined || options.families.includes(name);
  const selected = (label: string) => matchesOnly(options.only, label);
  const rows: ComparisonRow[] = [];
  const versions: Partial<Record<ServerName, string>> = {};
  const root = mkdtempSync(join(tmpdir(), 'popgate-peers-'));
  const peers: RunningPeer[] = [];
  let popgate: PopgateChild | undefined;
  const cleanup = () => {
    popgate?.killSync();
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  try {
    if (options.peers) await installPeers(progress);

    // --- popgate's data: accounts, the POP3 mailboxes, the large mailbox ---
    const dataDir = join(root, 'popgate');
    mkdirSync(dataDir);
    const ports = { pop3: await freePort(), smtp: await freePort() };
    const mailstore = new MaildirStore(dataDir, DOMAIN);
    const accounts = new SqliteAccountStore(openDatabase(dataDir), true);
    const pop3Users = Array.from({ length: settings.pop3.mailboxes }, (_, i) => pop3User(i));
    const sinks = [WARM_SINK, ...SMTP_ROWS.map((row) => smtpSink(row.key))];
    try {
      await accounts.addDomain(DOMAIN);
      for (const user of [...pop3Users, LARGE_USER, RELAY_USER, ...sinks]) {
        await accounts.addUser(user, PASSWORD);
        await mailstore.ensure(user);
      }
    } finally {
      await accounts.close();
    }
    const started = performance.now();
    progress(`setup: ${settings.pop3.mailboxes} mailboxes x ${settings.pop3.messagesPerMailbox} messages of ~10 KB, and ${settings.large.messages} messages of ~2 KB in one`);
    await fillMailboxes((user, message) => mailstore.deliver(user, message), pop3Users, settings.pop3.messagesPerMailbox, settings.pop3.messageSize, 16);
    await fillMaildir(mailstore.pathOf(LARGE_USER), settings.large.messages, { hostname: DOMAIN, size: settings.large.size });
    progress(`setup: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    // --- the peers: Dovecot serves copies of the same Maildirs; Postfix and Haraka deliver into their own ---
    const dovecotMailboxes: PeerMailbox[] = [];
    for (const user of options.peers ? [...pop3Users, LARGE_USER] : []) {
      const maildir = join(root, 'dovecot-mail', user);
      cpSync(mailstore.pathOf(user), maildir, { recursive: true });
      dovecotMailboxes.push({ address: user, password: PASSWORD, maildir });
    }
    const peerRecipients = (name: string): PeerMailbox[] =>
      sinks.map((address) => {
        const maildir = join(root, `${name}-mail`, address);
        for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(maildir, sub), { recursive: true });
        return { address, password: PASSWORD, maildir };
      });
    const postfixRecipients = peerRecipients('postfix');
    const harakaRecipients = peerRecipients('haraka');
    const workDir = (name: string) => {
      const dir = join(root, `${name}-work`);
      mkdirSync(dir);
      return dir;
    };

    const configPath = join(dataDir, 'popgate.toml');
    writeFileSync(
      configPath,
      stringify({
        hostname: DOMAIN,
        data_dir: dataDir,
        shutdown_grace: '1s',
        log: { level: 'warn' },
        // One process unless --comparison-workers says more (the default of `serve` is one
        // worker per core); the memory and CPU figures read every process of popgate's tree.
        server: { workers: options.workers ?? 1 },
        // The peers check no sender authentication as configured here, so neither does popgate
        // in these rows; what filtering costs is its own row (bench/filter.ts).
        filter: { enabled: false },
        // Sized for the idle workload (10,000 + 10,000): a provider expecting that many raises
        // max_connections too. The per-address limits stay; the load comes from many addresses.
        pop3: { listen: [`127.0.0.1:${ports.pop3}`], max_connections: 12_000, max_connection_rate_per_ip: 0 },
        pop3s: { listen: [] },
        smtp: { listen: [`127.0.0.1:${ports.smtp}`], max_connections: 12_000, max_connection_rate_per_ip: 0 },
        submission: { listen: [] },
        submissions: { listen: [] },
      }) + '\n',
    );
    const pop3Endpoint: Endpoint = { host: '127.0.0.1', port: ports.pop3 };
    const smtpEndpoint: Endpoint = { host: '127.0.0.1', port: ports.smtp };
    popgate = await PopgateChild.start({ configPath, endpoint: pop3Endpoint, cpuProfDir: options.cpuProfDir });
    versions.popgate = `popgate ${process.env.npm_package_version ?? ''}`.trim() + ` (Node ${process.version}${(options.workers ?? 1) > 1 ? `, [server] workers = ${options.workers}` : ''})`;
    progress(`server: popgate pid ${popgate.pid}, POP3 ${ports.pop3}, SMTP ${ports.smtp}`);
    const postfix = options.peers ? await startPostfix({ workDir: workDir('postfix'), domain: DOMAIN, recipients: postfixRecipients }) : undefined;
    if (postfix) peers.push(postfix);
    const dovecot = options.peers ? await startDovecot({ workDir: workDir('dovecot'), mailboxes: dovecotMailboxes }) : undefined;
    if (dovecot) peers.push(dovecot);
    const haraka = options.peers ? await startHaraka({ workDir: workDir('haraka'), domain: DOMAIN, recipients: harakaRecipients }) : undefined;
    if (haraka) peers.push(haraka);
    for (const peer of peers) {
      versions[peer.name] = peer.version;
      progress(`server: ${peer.version}${peer.smtp ? `, SMTP ${peer.smtp.port}` : ''}${peer.pop3 ? `, POP3 ${peer.pop3.port}` : ''}`);
    }
    const popgateChild = popgate;
    const popgatePids = () => processTree(popgateChild.pid);

    const maildirNew = {
      popgate: (address: string) => join(mailstore.pathOf(address), 'new'),
      Postfix: (address: string) => join(postfixRecipients.find((r) => r.address === address)!.maildir, 'new'),
      Haraka: (address: string) => join(harakaRecipients.find((r) => r.address === address)!.maildir, 'new'),
    };
    const smtpServers: { name: 'popgate' | 'Postfix' | 'Haraka'; endpoint: Endpoint }[] = [{ name: 'popgate', endpoint: smtpEndpoint }];
    if (postfix) smtpServers.push({ name: 'Postfix', endpoint: postfix.smtp! });
    if (haraka) smtpServers.push({ name: 'Haraka', endpoint: haraka.smtp! });
    const pop3Servers: { name: 'popgate' | 'Dovecot'; endpoint: Endpoint }[] = [{ name: 'popgate', endpoint: pop3Endpoint }];
    if (dovecot) pop3Servers.push({ name: 'Dovecot', endpoint: dovecot.pop3! });
    const smtpNames = smtpServers.map((s) => s.name);
    const pop3Names = pop3Servers.map((s) => s.name);

    /** Adds a row, running `measure` for each server in turn, run after run. */
    async function measure<S extends ServerName>(
      row: Omit<ComparisonRow, 'runs'>,
      servers: readonly S[],
      one: (server: S, run: number) => Promise<number>,
    ): Promise<void> {
      if (!selected(row.workload)) return;
      const result: ComparisonRow = { ...row, runs: {} };
      for (let run = 0; run < settings.runs; run++) {
        for (const server of servers) {
          const value = await one(server, run);
          const runs: number[] = (result.runs[server as ServerName] ??= []);
          runs.push(value);
          progress(`  ${row.workload}, ${server}, run ${run + 1}/${settings.runs}: ${fmt(value)} ${row.unit}`);
        }
      }
      rows.push(result);
    }

    // --- 4. idle connections (first, on servers that have only just started, as a provider's
    // would be after a restart; popgate's memory after all the other workloads is reported too) ---
    for (const connections of family('idle') ? settings.idle : []) {
      const label = `idle ${connections.toLocaleString('en-US')} SMTP + ${connections.toLocaleString('en-US')} POP3 connections`;
      if (!selected(label)) continue;
      const rss: ComparisonRow = { workload: `${label}: server RSS`, unit: 'MB', higherIsBetter: false, runs: {}, note: 'peers hold one protocol each: Postfix and Haraka SMTP, Dovecot POP3' };
      // PSS counts a page shared by several processes once, split among them (RSS counts it in
      // each): for servers of several processes (Dovecot's, popgate with workers, whose processes
      // share the Node binary's pages) it is the memory the machine actually gives them.
      const pss: ComparisonRow = { workload: `${label}: server PSS`, unit: 'MB', higherIsBetter: false, runs: {}, note: 'proportional set size from /proc/PID/smaps_rollup, summed over the server\'s processes' };
      const greeting: ComparisonRow = { workload: `${label}: new session greeting p50`, unit: 'ms', higherIsBetter: false, runs: {} };
      if (connections >= 10_000) {
        rss.target = { bound: 300, text: 'under 300 MB' };
        greeting.target = { bound: 5, text: 'under 5 ms' };
      }
      const idleServers: { name: ServerName; smtp?: Endpoint; pop3?: Endpoint; pids: () => number[] }[] = [
        { name: 'popgate', smtp: smtpEndpoint, pop3: pop3Endpoint, pids: popgatePids },
      ];
      // Postfix runs one smtpd process per session and starts them at some 20-35 a second here:
      // 10,000 would take over 5 minutes to open (longer than its 300 s idle timeout) and about
      // 12 GB (bench/peers/README.md). It is measured at 1,000.
      if (postfix && connections < 10_000) idleServers.push({ name: 'Postfix', smtp: postfix.smtp, pids: () => postfix.pids() });
      else if (postfix) (rss.details ??= {}).Postfix = 'not measured at 10,000: one process per session, started at 20-35 a second here (see bench/peers/README.md)';
      if (dovecot) idleServers.push({ name: 'Dovecot', pop3: dovecot.pop3, pids: () => dovecot.pids() });
      if (haraka) idleServers.push({ name: 'Haraka', smtp: haraka.smtp, pids: () => haraka.pids() });
      // One process holding 2 x 10,000 sockets needs more than 20,000 open files; where the hard
      // limit is lower and cannot be raised, popgate holds as many as fit, and the row says so.
      const fdLimit = hardFileLimit();
      const fitting = Math.min(connections, Math.floor((fdLimit - 100) / 2));
      if (fitting < connections) {
        (rss.details ??= {}).popgate = `held ${fitting.toLocaleString('en-US')} + ${fitting.toLocaleString('en-US')}: this machine's open-files hard limit is ${fdLimit.toLocaleString('en-US')} and cannot be raised here`;
      }
      for (let run = 0; run < (connections >= 10_000 ? 1 : settings.runs); run++) {
        for (const server of idleServers) {
          let result: IdleResult;
          const count = server.name === 'popgate' ? fitting : connections;
          try {
            // 20 per source address: within every server's default per-client limit (popgate's SMTP has 20).
            result = await runIdle({ smtp: server.smtp, pop3: server.pop3, connections: count, probes: settings.idleProbes, pids: server.pids, perSource: 20 });
          } catch (error) {
            progress(`  ${label}, ${server.name}: failed: ${(error as Error).message}`);
            continue;
          }
          const held = result.held.smtp + result.held.pop3;
          const wanted = (server.smtp ? count : 0) + (server.pop3 ? count : 0);
          progress(
            `  ${label}, ${server.name}: held ${held}/${wanted} (still open at the end: ${result.stillOpen}), RSS ${fmt(result.loaded.rssBytes / 1e6)} MB` +
              `${result.loaded.pssBytes !== undefined ? ` (PSS ${fmt(result.loaded.pssBytes / 1e6)} MB)` : ''}, baseline ${fmt(result.baseline.rssBytes / 1e6)} MB, ` +
              `greeting p50 ${fmt(result.greeting.p50)} ms p99 ${fmt(result.greeting.p99)} ms${result.errors.length > 0 ? `; errors: ${result.errors.slice(0, 3).join('; ')}` : ''}`,
          );
          if (held < wanted) {
            (rss.details ??= {})[server.name] = `held ${held} of ${wanted}`;
            continue;
          }
          (rss.runs[server.name] ??= []).push(result.loaded.rssBytes / 1e6);
          if (result.loaded.pssBytes !== undefined) (pss.runs[server.name] ??= []).push(result.loaded.pssBytes / 1e6);
          (greeting.runs[server.name] ??= []).push(result.greeting.p50);
        }
      }
      rows.push(rss, pss, greeting);
    }


    // --- 5. large mailbox (first: nothing else has touched those Maildirs yet) ---
    const largeLabel = `large mailbox, ${settings.large.messages.toLocaleString('en-US')} messages: login + STAT`;
    if (family('large') && selected(largeLabel)) {
      const first: Partial<Record<ServerName, number[]>> = {};
      const warm: Partial<Record<ServerName, number[]>> = {};
      const uidl: Partial<Record<ServerName, number[]>> = {};
      for (const { name, endpoint } of pop3Servers) {
        const result = await runLargeMailbox({ endpoint, user: LARGE_USER, password: PASSWORD, runs: settings.large.runs + 1, expectedMessages: settings.large.messages });
        first[name] = [result.loginStatMs[0]];
        warm[name] = result.loginStatMs.slice(1);
        uidl[name] = result.uidlMs.slice(1);
        progress(`  ${largeLabel}, ${name}: first ${fmt(result.loginStatMs[0])} ms, then ${result.loginStatMs.slice(1).map(fmt).join(' / ')} ms; UIDL ${result.uidlMs.slice(1).map(fmt).join(' / ')} ms`);
      }
      rows.push({ workload: `${largeLabel}, first login`, unit: 'ms', higherIsBetter: false, runs: first, note: "Dovecot builds its index; popgate has none to build" });
      rows.push({ workload: largeLabel, unit: 'ms', higherIsBetter: false, runs: warm, target: { ratio: 2, against: 'Dovecot', text: "within 2x Dovecot's time" } });
      rows.push({ workload: `large mailbox, ${settings.large.messages.toLocaleString('en-US')} messages: UIDL`, unit: 'ms', higherIsBetter: false, runs: uidl });
    }

    // --- 2. POP3 retrieval and logins ---
    const retrRows = family('pop3')
      ? [
          { clients: 1, label: `POP3 RETR 10 KB, 1 client` },
          { clients: settings.pop3.clients, label: `POP3 RETR 10 KB, ${settings.pop3.clients} clients` },
        ]
      : [];
    for (const { clients, label } of retrRows) {
      if (!selected(label)) continue;
      // Unmeasured runs of the same shape per server first, over every mailbox: they warm the
      // page cache for both, and let popgate's JIT finish compiling the paths this shape takes
      // (one client waiting on each reply exercises other branches of Node's stream code than
      // ten do).
      for (const { name, endpoint } of pop3Servers) {
        progress(`  warm-up: ${label} on ${name} (not measured)`);
        for (let first = 0; first < pop3Users.length; first += clients) {
          await runRetr({ endpoint, users: pop3Users.slice(first, first + clients), password: PASSWORD });
        }
      }
      const msgs: ComparisonRow = { workload: label, unit: 'msg/s', higherIsBetter: true, runs: {}, target: { ratio: 1, against: 'Dovecot', text: "at least Dovecot's" } };
      const mbs: ComparisonRow = { workload: label, unit: 'MB/s', higherIsBetter: true, runs: {}, target: { ratio: 1, against: 'Dovecot', text: "at least Dovecot's" } };
      // A RETR run is short (a tenth of a second with one client): many of them, so a burst of
      // noise from a neighbour on a shared machine moves the medians little.
      const retrRuns = Math.max(settings.runs, 11);
      for (let run = 0; run < retrRuns; run++) {
        for (const { name, endpoint } of pop3Servers) {
          const users = pop3Users.slice((run * clients) % pop3Users.length).concat(pop3Users).slice(0, clients);
          // What the previous server does after its sessions end (Dovecot's processes write
          // their index and exit) must not land in the next server's run.
          await new Promise((resolve) => setTimeout(resolve, RETR_SETTLE_MS));
          const result = await runRetr({ endpoint, users, password: PASSWORD });
          (msgs.runs[name] ??= []).push(result.messagesPerSecond);
          (mbs.runs[name] ??= []).push(result.megabytesPerSecond);
          progress(`  ${label}, ${name}, run ${run + 1}/${retrRuns}: ${fmt(result.messagesPerSecond)} msg/s, ${fmt(result.megabytesPerSecond)} MB/s (${result.messages} messages)`);
        }
      }
      rows.push(msgs, mbs);
    }
    if (family('pop3')) await measure(
      { workload: `POP3 login (USER/PASS), ${settings.pop3.clients} clients`, unit: 'logins/s', higherIsBetter: true, note: 'popgate: scrypt N=2^14; Dovecot: SHA512-CRYPT (see bench/peers/README.md)' },
      pop3Names,
      async (name) => {
        const endpoint = pop3Servers.find((s) => s.name === name)!.endpoint;
        return (await runLogins({ endpoint, users: pop3Users, password: PASSWORD, clients: settings.pop3.clients, total: settings.pop3.logins })).perSecond;
      },
    );

    // --- 3. POP3-login-to-relay lag (popgate only: the peers have no POP-before-SMTP) ---
    let lagSource = 0;
    if (family('lag')) await measure(
      { workload: 'POP3 login to SMTP relay lag', unit: 'ms', higherIsBetter: false, target: { bound: 5, text: 'under 5 ms' }, note: 'a log-following POP-before-SMTP daemon lags 1-3.5 s' },
      ['popgate'] as const,
      async () => {
        const lags: number[] = [];
        for (let n = 0; n < settings.lagSamples; n++) {
          const source = `127.0.${10 + Math.floor(lagSource / 250)}.${1 + (lagSource % 250)}`;
          lagSource++;
          lags.push((await relayLag({ pop3: pop3Endpoint, smtp: smtpEndpoint, user: RELAY_USER, password: PASSWORD, remoteRecipient: REMOTE_RECIPIENT, source })).lagMs);
        }
        return median(lags);
      },
    );

    // --- 1. SMTP accept ---
    const smtpLabel = (row: (typeof SMTP_ROWS)[number]) => `SMTP accept ${row.size === 1024 ? '1 KB' : '100 KB'}, ${settings.smtp.clients} clients, ${row.pipelining ? 'pipelining' : 'no pipelining'}`;
    const smtpRows = family('smtp') ? SMTP_ROWS : [];
    if (smtpRows.some((row) => selected(smtpLabel(row)))) {
      for (const { name, endpoint } of smtpServers) {
        progress(`  warm-up: SMTP on ${name} (not measured)`);
        await acceptAndCheck(name, endpoint, WARM_SINK, 1024, settings.smtp.warmUp, true, 'warm');
      }
    }
    async function acceptAndCheck(name: 'popgate' | 'Postfix' | 'Haraka', endpoint: Endpoint, to: string, size: number, total: number, pipelining: boolean, tag: string) {
      const dir = maildirNew[name](to);
      const before = countFiles(dir);
      const messages = new MessageSet({ size, from: INBOUND_SENDER, to, tag });
      const result = await runAccept({ endpoint, clients: settings.smtp.clients, total, messages, from: INBOUND_SENDER, to, pipelining, localAddress: ACCEPT_SOURCE });
      // Every 250 must become a file in the recipient's Maildir. popgate answers 250 after that;
      // Postfix and Haraka may deliver after the 250, so the next run waits for them (their
      // delivery work must not spill into another server's measured run).
      const expected = before + result.accepted;
      const deadline = Date.now() + 120_000;
      while (countFiles(dir) < expected) {
        if (Date.now() > deadline) throw new Error(`${name}: ${result.accepted} messages got 250 but only ${countFiles(dir) - before} reached ${dir} within 120 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return result;
    }
    for (const row of smtpRows) {
      const label = smtpLabel(row);
      const total = row.size === 1024 ? settings.smtp.smallMessages : settings.smtp.largeMessages;
      await measure(
        {
          workload: label,
          unit: 'msg/s',
          higherIsBetter: true,
          target: { ratio: row.size === 1024 ? 3 : 2.5, against: 'Postfix', text: `at least ${row.size === 1024 ? 3 : 2.5}x Postfix's` },
        },
        smtpNames,
        async (name, run) => {
          const endpoint = smtpServers.find((s) => s.name === name)!.endpoint;
          return (await acceptAndCheck(name, endpoint, smtpSink(row.key), row.size, total, row.pipelining, `${row.key}-${run}`)).messagesPerSecond;
        },
      );
    }

    // What popgate holds once every workload has run (the heap keeps what it grew to).
    const after = processMemory(popgatePids());
    rows.push({ workload: 'popgate RSS after all the workloads above, idle', unit: 'MB', higherIsBetter: false, runs: { popgate: [after.rssBytes / 1e6] } });
    return { versions, settings, rows };
  } finally {
    for (const peer of peers) await peer.stop().catch((error) => progress(`stopping ${peer.name}: ${(error as Error).message}`));
    if (popgate) {
      const exit = await popgate.stop();
      if (exit !== 0) progress(`popgate exited with ${exit}:\n${popgate.output}`);
      else if (popgate.output.trim() !== '') progress(`popgate output (warnings and errors):\n${popgate.output.trim()}`);
    }
    process.off('exit', cleanup);
    cleanup();
  }
}

/** The hard limit of open files a child of this process can raise itself to. */
function hardFileLimit(): number {
  const text = execFileSync('/bin/sh', ['-c', 'ulimit -H -n'], { encoding: 'utf8' }).trim();
  return text === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(text);
}

function countFiles(dir: string): number {
  return existsSync(dir) ? readdirSync(dir).filter((name) => !name.startsWith('.')).length : 0;
}

// --- output ---


const medianOf = (row: ComparisonRow, server: ServerName) => (row.runs[server]?.length ? median(row.runs[server]!) : undefined);

/** popgate's median over the peer's, and whether the row's target is met. */
function verdict(row: ComparisonRow): { ratio?: number; met?: boolean } {
  const ours = medianOf(row, 'popgate');
  const target = row.target;
  if (ours === undefined) return {};
  if (target?.bound !== undefined) return { met: row.higherIsBetter ? ours >= target.bound : ours < target.bound };
  const against = target?.against;
  const theirs = against ? medianOf(row, against) : undefined;
  if (!target?.ratio || theirs === undefined || theirs === 0) return {};
  const ratio = ours / theirs;
  return { ratio, met: row.higherIsBetter ? ratio >= target.ratio : ratio <= target.ratio };
}

/** The comparison as a Markdown table (for the terminal and for docs/benchmarks.md). */
export function comparisonTable(result: ComparisonResult): string {
  const header = ['workload', 'unit', ...SERVERS, 'popgate / peer', 'target', 'met'];
  const body = result.rows.map((row) => {
    const { ratio, met } = verdict(row);
    const ratios = SERVERS.slice(1)
      .filter((peer) => row.runs[peer]?.length && medianOf(row, 'popgate') !== undefined)
      .map((peer) => `${fmt(medianOf(row, 'popgate')! / medianOf(row, peer)!)}x ${peer}`);
    return [
      row.workload,
      row.unit,
      ...SERVERS.map((server) => fmt(medianOf(row, server))),
      ratios.join(', ') || (ratio !== undefined ? `${fmt(ratio)}x` : ''),
      row.target?.text ?? '',
      met === undefined ? '' : met ? 'yes' : 'NO',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const numeric = new Set([2, 3, 4, 5]);
  const line = (cells: string[]) => '| ' + cells.map((cell, i) => (numeric.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join(' | ') + ' |';
  const notes = result.rows.filter((row) => row.note || row.details).map((row) => `- ${row.workload}: ${[row.note, ...Object.entries(row.details ?? {}).map(([k, v]) => `${k} ${v}`)].filter(Boolean).join('; ')}`);
  return [
    line(header),
    '|' + widths.map((w, i) => (numeric.has(i) ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|',
    ...body.map(line),
    '',
    ...notes,
  ].join('\n');
}

/** The rows with a ratio target, as bars: popgate's figure over the peer's, against the target. */
export function comparisonChart(result: ComparisonResult, title: string): string {
  const bars: ChartRow[] = [];
  for (const row of result.rows) {
    const { ratio, met } = verdict(row);
    if (ratio === undefined || !row.target?.ratio) continue;
    // Shown as "times better" either way: for times, the peer's time over popgate's.
    bars.push({
      label: `${row.workload} (${row.unit}) vs ${row.target.against}`,
      value: row.higherIsBetter ? ratio : 1 / ratio,
      target: row.higherIsBetter ? row.target.ratio : 1 / row.target.ratio,
      met: met ?? false,
    });
  }
  return renderChart(bars, title);
}
