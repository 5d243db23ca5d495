import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { PostgresQuotaStore } from '../src/postgres/quotas.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { freshSchema } from './helpers/postgres.ts';
import { runScriptUntil } from './helpers/process.ts';

// A cluster's nodes hold deliveries' counter moves back for a moment and write them together
// (src/postgres/quotas.ts). A node killed while it holds some must not leave the counters short
// for good: its writer row outlives it, and when the row's lease runs out the other nodes
// forget the counters, so every mailbox is counted from its folder again. A node that ends
// cleanly writes its moves first and leaves no row behind.

const MAILBOX = 'user@example.test';

/**
 * A node process on `url` (a real PostgreSQL) that moves MAILBOX's counter by five deliveries
 * of 100 octets, held back, and then ends as `ending` says: killed with SIGKILL by the test, or
 * closing its store cleanly.
 */
async function moveInAnotherNode(url: string, leaseMs: number, ending: 'killed' | 'clean'): Promise<void> {
  const module = (path: string) => JSON.stringify(pathToFileURL(resolve(import.meta.dirname, '..', path)).href);
  const script = `
    const { createPool } = await import(${module('src/postgres/pool.ts')});
    const { PostgresQuotaStore } = await import(${module('src/postgres/quotas.ts')});
    const silent = { info() {}, warn() {}, error() {}, debug() {}, child() { return silent; } };
    const pool = createPool(${JSON.stringify(url)}, silent);
    const store = new PostgresQuotaStore(pool, { node: 'doomed', writerLeaseMs: ${leaseMs} });
    await store.setUsage(${JSON.stringify(MAILBOX)}, 0, true);
    for (let n = 0; n < 5; n++) await store.add(${JSON.stringify(MAILBOX)}, 100);
    if (${JSON.stringify(ending)} === 'clean') {
      await store.close();
      await pool.end();
      process.stdout.write('done\\n');
    } else {
      // Held moves stay held: the event loop never runs the timer that would write them
      // (stdout to a pipe is written at once on Linux), however late the test's kill comes.
      process.stdout.write('delivered\\n');
      for (;;);
    }
  `;
  await runScriptUntil(script, ending, 'the node');
}

describe('quota counters when a cluster node ends while holding moves back', { skip: missingEngine('postgres') }, () => {
  const LEASE_MS = 600;
  let engine: RunningEngine;
  before(async () => {
    engine = await startPostgres();
  });
  after(async () => {
    await engine?.destroy();
  });

  test('killed with SIGKILL: once its lease runs out another node forgets the counters, to be counted from the folders', async () => {
    const schema = await freshSchema(engine);
    try {
      const pool = await schema.pool();
      await moveInAnotherNode(schema.url, LEASE_MS, 'killed');
      const other = new PostgresQuotaStore(pool, { writerLeaseMs: LEASE_MS });
      try {
        // Until then it reads 0 (short: the moves died with the node); when the lease has run out, nothing.
        const started = Date.now();
        let usage: unknown = 'not read';
        while (Date.now() - started < 5000) {
          usage = await other.usage(MAILBOX);
          if (usage === undefined) break;
          await new Promise((done) => setTimeout(done, 50));
        }
        assert.equal(usage, undefined, 'the short counter was forgotten (MailboxQuotas counts the folder at its next use)');
        assert.equal(await other.forgetCountersOfDeadWriters(), 0, 'the dead writer is gone');
      } finally {
        await other.close();
      }
    } finally {
      await schema.drop();
    }
  });

  test('ended cleanly: every held move is written and no writer is left to be taken for dead', async () => {
    const schema = await freshSchema(engine);
    try {
      const pool = await schema.pool();
      await moveInAnotherNode(schema.url, LEASE_MS, 'clean');
      const other = new PostgresQuotaStore(pool, { writerLeaseMs: LEASE_MS });
      try {
        assert.deepEqual(await other.usage(MAILBOX), { used: 500, warned: false });
        await new Promise((done) => setTimeout(done, LEASE_MS * 2));
        assert.equal(await other.forgetCountersOfDeadWriters(), 0);
        assert.deepEqual(await other.usage(MAILBOX), { used: 500, warned: false }, 'kept');
      } finally {
        await other.close();
      }
    } finally {
      await schema.drop();
    }
  });
});
