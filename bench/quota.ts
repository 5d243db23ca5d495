import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'smol-toml';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { freePort, PopgateChild } from './popgate-server.ts';
import { MessageSet, runAccept } from './smtp-load.ts';

// What quota accounting costs SMTP: 1 KB messages accepted into one local mailbox by a popgate
// with [quota] enabled = false and by one with a 1 GB default quota (every delivery then checks
// the limit and usage and moves the usage counter), runs alternating between the two so the
// machine's noise falls on both alike. The inbound filter is off in both: it would add DNS
// lookups that are the same with and without quotas and only widen the spread.

const HOSTNAME = 'bench.example.test';
const SINK = `quota-sink@${HOSTNAME}`;
const CLIENTS = 10;

export interface QuotaRows {
  /** msg/s per run, without and with quotas. */
  off: number[];
  on: number[];
  /**
   * The server's CPU time per accepted message (µs) per run: on a shared, noisy machine far
   * steadier than the rate, and what quota accounting adds is CPU work.
   */
  cpuOff: number[];
  cpuOn: number[];
}

const CLOCK_TICKS_PER_SECOND = 100;

/** User + system CPU seconds of a process so far (Linux /proc; undefined elsewhere). */
function cpuSeconds(pid: number): number | undefined {
  try {
    // Fields after the command name (which may contain spaces, so split after its ")").
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

async function startPopgate(quotas: boolean, cpuProfDir: string | undefined): Promise<{ server: PopgateChild; port: number; dataDir: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), `popgate-bench-quota-${quotas ? 'on' : 'off'}-`));
  const port = await freePort();
  const configPath = join(dataDir, 'popgate.toml');
  const config = {
    hostname: HOSTNAME,
    data_dir: dataDir,
    shutdown_grace: '1s',
    log: { level: 'warn' },
    server: { workers: 1 },
    pop3: { listen: [] },
    smtp: { listen: [`127.0.0.1:${port}`], max_connections_per_ip: 10_000, max_connection_rate_per_ip: 0 },
    filter: { enabled: false },
    quota: quotas ? { enabled: true, default: '1GB' } : { enabled: false },
  };
  writeFileSync(configPath, `${stringify(config)}\n`);
  const accounts = new SqliteAccountStore(openDatabase(dataDir), true);
  try {
    await accounts.addDomain(HOSTNAME);
    await accounts.addUser(SINK, 'bench password');
    await new MaildirStore(dataDir, HOSTNAME).ensure(SINK);
  } finally {
    await accounts.close();
  }
  const server = await PopgateChild.start({ configPath, endpoint: { host: '127.0.0.1', port }, cpuProfDir });
  return { server, port, dataDir };
}

/** `runs` runs of `messages` 1 KB messages each, without and with quotas, each run on a fresh pair of servers. */
export async function runQuotaRows(options: { runs: number; messages: number; progress: (text: string) => void; cpuProfDir?: string }): Promise<QuotaRows> {
  const messages = new MessageSet({ size: 1024, from: 'sender@remote.example', to: SINK, tag: 'quota' });
  const accept = (port: number, total: number) =>
    runAccept({ endpoint: { host: '127.0.0.1', port }, clients: CLIENTS, total, messages, from: 'sender@remote.example', to: SINK, pipelining: false });
  const rows: QuotaRows = { off: [], on: [], cpuOff: [], cpuOn: [] };
  for (let run = 0; run < options.runs; run++) {
    // A fresh pair of servers for every run: one long-lived process can run 15 % faster or
    // slower than another of the same build for its whole life (measured: the same two
    // processes kept their order over fifteen runs, and the order flipped with the next pair),
    // which would come out as a difference between quotas on and off.
    const started: { server: PopgateChild; port: number; dataDir: string }[] = [];
    try {
      const off = await startPopgate(false, options.cpuProfDir);
      started.push(off);
      const on = await startPopgate(true, options.cpuProfDir);
      started.push(on);
      // Warm-up as long as a run, not measured: the JIT, the page cache, SQLite's statements.
      await accept(off.port, options.messages);
      await accept(on.port, options.messages);
      // Alternating which goes first, so neither always runs on a machine warmed by the other.
      const order = run % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const which of order) {
        const child = which === 'off' ? off : on;
        const cpuBefore = cpuSeconds(child.server.pid);
        const result = await accept(child.port, options.messages);
        const cpuAfter = cpuSeconds(child.server.pid);
        rows[which].push(result.messagesPerSecond);
        const cpu = cpuBefore !== undefined && cpuAfter !== undefined ? ((cpuAfter - cpuBefore) * 1e6) / result.accepted : undefined;
        if (cpu !== undefined) rows[which === 'off' ? 'cpuOff' : 'cpuOn'].push(cpu);
        options.progress(
          `  SMTP accept 1 KB, quotas ${which}, run ${run + 1}/${options.runs}: ${result.messagesPerSecond.toFixed(0)} msg/s${cpu !== undefined ? `, ${cpu.toFixed(0)} µs CPU/msg` : ''}`,
        );
      }
    } finally {
      for (const { server, dataDir } of started) {
        await server.stop().catch(() => {});
        rmSync(dataDir, { recursive: true, force: true });
      }
    }
  }
  return rows;
}
