import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { silentLogger } from '../src/log/logger.ts';
import { SqliteMaildropLocks } from '../src/sqlite/maildrop-locks.ts';
import { openCountersDatabase } from '../src/sqlite/open.ts';
import { NODE, ROOT } from './helpers/process.ts';

// The SQLite shared stores used as the workers of one machine use them: separate processes on
// one file, racing. The contract suites run every instance in one process, where SQLite calls
// cannot interleave; here they can, and the limits must still hold exactly.

const WORKER = join(ROOT, 'test', 'helpers', 'sqlite-worker.ts');

interface Worker {
  child: ChildProcess;
  lines: AsyncIterator<string>;
}

async function startWorker(dataDir: string, name: string, now: number): Promise<Worker> {
  const child = spawn(NODE, [WORKER, dataDir, name, String(now)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  assert.equal(first.value, 'ready', `worker ${name} did not start`);
  return { child, lines };
}

test('workers racing on one SQLite file: the per-address maximum, the token bucket and the maildrop lock hold exactly; a killed worker loses its lock after the lease', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'popgate-workers-'));
  const workers: Worker[] = [];
  const db = openCountersDatabase(dataDir);
  const locks = new SqliteMaildropLocks(db, { leaseMs: 500 }, silentLogger());
  try {
    const now = Date.now();
    for (let i = 0; i < 4; i++) workers.push(await startWorker(dataDir, `worker-${i}`, now));
    for (const worker of workers) worker.child.stdin!.write('go\n');
    const results = await Promise.all(workers.map(async (worker) => JSON.parse((await worker.lines.next()).value) as { admitted: number; tokens: number; locked: boolean }));
    assert.equal(results.reduce((sum, r) => sum + r.admitted, 0), 500, `admitted: ${JSON.stringify(results)}`);
    assert.equal(results.reduce((sum, r) => sum + r.tokens, 0), 500, `tokens: ${JSON.stringify(results)}`);
    assert.equal(results.filter((r) => r.locked).length, 1, `lock winners: ${JSON.stringify(results)}`);

    // The winner holds the lock while it lives (renewing it), and loses it once killed.
    const winner = workers[results.findIndex((r) => r.locked)];
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(await locks.acquire('alice@example.test'), undefined, 'held past its lease by a live worker');
    winner.child.kill('SIGKILL');
    const deadline = Date.now() + 10_000;
    let release = await locks.acquire('alice@example.test');
    while (!release && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      release = await locks.acquire('alice@example.test');
    }
    assert.ok(release, "the killed worker's lock ran out with its lease");
    await release();
  } finally {
    for (const worker of workers) worker.child.kill('SIGKILL');
    await locks.close();
    db.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
