import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createClient } from 'redis';
import { parseConfig } from '../src/config/load.ts';
import { silentLogger } from '../src/log/logger.ts';
import { startApp } from '../src/server/app.ts';
import { startPostgres, startRedis } from '../test/helpers/engines.ts';
import { MessageSet, runAccept } from './smtp-load.ts';

// What one inbound message asks the engines of a cluster: popgate as one node of
// bench/scale.ts's cluster (Redis, PostgreSQL, filter off), in this process, takes N messages of
// 1 KB from an outside sender to a local user over 10 connections without pipelining, and the
// engines' own counters are read before and after: PostgreSQL's transactions
// (pg_stat_database: every statement outside a transaction is one) and its table accesses
// (pg_stat_user_tables), and Redis's commands (INFO commandstats). A window of the same length
// without mail is measured too and taken off, so timers (heartbeats, the console's history,
// the queue's poll) do not count as per-message work.
//
//   npx node bench/round-trips.ts [--messages 400]

const HOSTNAME = 'bench.example.test';
const USER = `scale-1k@${HOSTNAME}`;
const SENDER = 'sender@example.org';
const CLIENTS = 10;
/** PostgreSQL sends a backend's counters to the shared statistics within 10 s of it going idle. */
const STATS_SETTLE_MS = 11_000;

interface Counts {
  transactions: number;
  tables: Map<string, { reads: number; writes: number }>;
  redis: Map<string, number>;
}

const { values } = parseArgs({ options: { messages: { type: 'string', default: '400' } } });
const total = Number(values.messages);

const [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
const dir = mkdtempSync(join(tmpdir(), 'popgate-round-trips-'));
// Read from another database, so reading the counters adds nothing to popgate's.
const stats = new pg.Client({ connectionString: postgres.url.replace(/\/popgate$/, '/postgres') });
const redisStats = createClient({ url: redis.url });
try {
  await stats.connect();
  await redisStats.connect();
  const config = parseConfig(
    {
      hostname: HOSTNAME,
      data_dir: dir,
      shutdown_grace: '1s',
      filter: { enabled: false },
      server: { workers: 1 },
      cluster: { redis: redis.url, node: 'node-a' },
      database: { url: postgres.url },
      pop3: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 0 },
      pop3s: { listen: [] },
      smtp: { listen: ['127.0.0.1:0'], max_connections_per_ip: 10_000, max_connection_rate_per_ip: 0 },
      submission: { listen: [] },
      submissions: { listen: [] },
      outbound: { enabled: false },
    },
    'bench',
  );
  const app = await startApp(config, silentLogger());
  try {
    await app.accounts.addDomain(HOSTNAME);
    await app.accounts.addUser(USER, 'correct horse battery');
    const smtp = { host: '127.0.0.1', port: Number(app.addresses.smtp[0].split(':').pop()) };
    const send = async (count: number, tag: string) => {
      const messages = new MessageSet({ size: 1024, from: SENDER, to: USER, tag });
      await runAccept({ endpoint: smtp, clients: CLIENTS, total: count, messages, from: SENDER, to: USER, pipelining: false, localAddress: '127.0.0.2' });
    };
    // Warm: prepared statements, pools and connections are made once, not per message.
    await send(50, 'warm');
    await sleep(STATS_SETTLE_MS);

    const idleStart = await read();
    const started = performance.now();
    await send(total, 'counted');
    const sending = performance.now() - started;
    await sleep(STATS_SETTLE_MS);
    const busy = difference(await read(), idleStart);
    const idleFrom = await read();
    await sleep(sending + STATS_SETTLE_MS);
    const idle = difference(await read(), idleFrom);

    console.log(`${total} messages of 1 KB to ${USER}, ${CLIENTS} connections, no pipelining (${Math.round(sending)} ms); per message, less an idle window as long:`);
    console.log(`PostgreSQL transactions: ${perMessage(busy.transactions - idle.transactions)}`);
    for (const [table, busyTable] of busy.tables) {
      const idleTable = idle.tables.get(table) ?? { reads: 0, writes: 0 };
      const reads = busyTable.reads - idleTable.reads;
      const writes = busyTable.writes - idleTable.writes;
      if (Math.abs(reads) + Math.abs(writes) >= total / 20) console.log(`  ${table}: ${perMessage(reads)} reads (scans), ${perMessage(writes)} rows written`);
    }
    let commands = 0;
    const lines: string[] = [];
    for (const [command, calls] of busy.redis) {
      const net = calls - (idle.redis.get(command) ?? 0);
      if (net < total / 20) continue;
      commands += net;
      lines.push(`  ${command}: ${perMessage(net)}`);
    }
    console.log(`Redis commands: ${perMessage(commands)}`);
    for (const line of lines) console.log(line);
  } finally {
    await app.close();
  }
} finally {
  await stats.end().catch(() => {});
  await redisStats.quit().catch(() => {});
  await Promise.all([redis.stop(), postgres.stop()]);
  rmSync(dir, { recursive: true, force: true });
}

function perMessage(count: number): string {
  return (count / total).toFixed(2);
}

async function read(): Promise<Counts> {
  await stats.query('SELECT pg_stat_clear_snapshot()');
  const database = await stats.query<{ xacts: string }>("SELECT xact_commit + xact_rollback AS xacts FROM pg_stat_database WHERE datname = 'popgate'");
  const tableCounts = await tableStats();
  const info = await redisStats.info('commandstats');
  const redisCounts = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) redisCounts.set(match[1], Number(match[2]));
  return { transactions: Number(database.rows[0].xacts), tables: tableCounts, redis: redisCounts };
}

/** pg_stat_user_tables shows one database's tables: read in popgate's, the reading's own transaction the same in both windows. */
async function tableStats(): Promise<Map<string, { reads: number; writes: number }>> {
  const client = new pg.Client({ connectionString: postgres.url });
  await client.connect();
  try {
    const rows = await client.query<{ relname: string; reads: string; writes: string }>(
      'SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS reads, n_tup_ins + n_tup_upd + n_tup_del AS writes FROM pg_stat_user_tables',
    );
    return new Map(rows.rows.map((row) => [row.relname, { reads: Number(row.reads), writes: Number(row.writes) }]));
  } finally {
    await client.end();
  }
}

function difference(after: Counts, before: Counts): Counts {
  const tables = new Map<string, { reads: number; writes: number }>();
  for (const [name, value] of after.tables) {
    const earlier = before.tables.get(name) ?? { reads: 0, writes: 0 };
    tables.set(name, { reads: value.reads - earlier.reads, writes: value.writes - earlier.writes });
  }
  const redisCounts = new Map<string, number>();
  for (const [name, calls] of after.redis) redisCounts.set(name, calls - (before.redis.get(name) ?? 0));
  return { transactions: after.transactions - before.transactions, tables, redis: redisCounts };
}
