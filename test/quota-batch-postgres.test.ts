import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { PostgresQuotaStore } from '../src/postgres/quotas.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { freshSchema } from './helpers/postgres.ts';

// A cluster node holds its deliveries' counter moves back and writes those of the same moment
// in one statement (src/postgres/quotas.ts): deliveries 50 ms apart share one batch, so that a
// busy node writes a batch per many messages rather than per few.

const MAILBOX = 'user@example.test';

describe('quota counter moves held back on PostgreSQL', { skip: missingEngine('postgres') }, () => {
  let engine: RunningEngine;
  before(async () => {
    engine = await startPostgres();
  });
  after(async () => {
    await engine?.destroy();
  });

  test('two deliveries 50 ms apart are written together, after the second', async () => {
    const schema = await freshSchema(engine);
    try {
      const pool = await schema.pool();
      const store = new PostgresQuotaStore(pool);
      const written = async () => Number((await pool.query<{ used: string }>('SELECT used FROM popgate_mailbox_usage WHERE address = $1', [MAILBOX])).rows[0].used);
      try {
        await store.setUsage(MAILBOX, 0, true);
        let judged = false;
        for (let attempt = 0; attempt < 5 && !judged; attempt++) {
          const before = await written();
          const started = performance.now();
          await store.add(MAILBOX, 100);
          await sleep(50);
          await store.add(MAILBOX, 100);
          const seen = await written();
          // A machine too busy to run this within 90 ms cannot tell: try again.
          if (performance.now() - started < 90) {
            judged = true;
            assert.equal(seen, before, 'neither move written 50 ms after the first: both are held in one batch');
          }
          await store.flush();
          assert.equal(await written(), before + 200, 'and both are written by the batch');
        }
        assert.ok(judged, 'the machine was too busy to judge in five tries');
      } finally {
        await store.close();
      }
    } finally {
      await schema.drop();
    }
  });
});
