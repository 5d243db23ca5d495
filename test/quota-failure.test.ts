import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { migrate } from '../src/postgres/migrate.ts';
import { createPool } from '../src/postgres/pool.ts';
import { PostgresForwardingStore } from '../src/postgres/forwarding.ts';
import { PostgresQuotaStore } from '../src/postgres/quotas.ts';
import { PostgresVacationStore } from '../src/postgres/vacation.ts';
import { MailboxQuotas, QuotaTrackingMailstore } from '../src/quota/quota.ts';
import { missingEngine, startPostgres, type RunningEngine } from './helpers/engines.ts';
import { capturingLogger } from './helpers/outbound.ts';

// The mailbox-service stores of a cluster while PostgreSQL is away: every method rejects
// promptly (never hangs), a delivery still succeeds though its counter cannot move, and once
// the server is back the same stores work and the missed counter is counted again from the
// folder, without anyone restarting anything.

/** Generous for a loaded machine; the pool's own limits are 5 s to connect. */
const PROMPT_MS = 15_000;

async function rejectsPromptly(what: string, call: () => Promise<unknown>): Promise<void> {
  const started = Date.now();
  await assert.rejects(call(), `${what} rejects`);
  assert.ok(Date.now() - started < PROMPT_MS, `${what} rejected within ${PROMPT_MS} ms`);
}

describe('mailbox-service stores while PostgreSQL is away', { skip: missingEngine('postgres') }, () => {
  let engine: RunningEngine;
  let dir: string;
  before(async () => {
    engine = await startPostgres();
    dir = mkdtempSync(join(tmpdir(), 'popgate-quota-failure-'));
  });
  after(async () => {
    await engine?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('stopped: every store rejects promptly, deliveries go on, and all is right again once it is back', async () => {
    const { log, lines } = capturingLogger();
    const pool = createPool(engine.url, log);
    try {
      await migrate(pool);
      const quotaStore = new PostgresQuotaStore(pool);
      const forwarding = new PostgresForwardingStore(pool);
      const vacations = new PostgresVacationStore(pool);
      const maildir = new MaildirStore(dir, 'mail.example.test');
      const quotas = new MailboxQuotas(quotaStore, maildir, { defaultLimit: 1_000_000, soft: false, warningPercent: 90, hostname: 'mail.example.test' }, log);
      const mailstore = new QuotaTrackingMailstore(maildir, quotas);
      await mailstore.deliver('a@example.test', Buffer.from('Subject: one\r\n\r\nbody\r\n'));
      const before = await quotas.used('a@example.test');

      await engine.stop();
      // A mailbox read in the last second is answered from memory; one not read since is asked.
      await rejectsPromptly('quota check', () => quotas.check('b@example.test', 10));
      await rejectsPromptly('limit', () => quotaStore.setLimit('a@example.test', 5));
      await rejectsPromptly('forwarding rule', () => forwarding.get('a@example.test'));
      await rejectsPromptly('vacation claim', () => vacations.claimReply('a@example.test', 'x@remote.test', Date.now(), 1000));
      // The message is stored whatever the counter: the delivery does not fail.
      await mailstore.deliver('a@example.test', Buffer.from('Subject: two\r\n\r\nbody\r\n'));
      assert.ok(lines.some((line) => line.event === 'quota_count_failed'), 'the missed count is logged');

      await engine.start();
      let folder = 0;
      for (const message of await maildir.list('a@example.test')) folder += message.size;
      assert.ok(folder > before);
      assert.equal(await quotas.used('a@example.test'), folder, 'counted again from the folder');
      assert.deepEqual(await quotas.check('a@example.test', 10), { ok: true });
      await forwarding.set('a@example.test', { targets: ['x@remote.test'], keep: true });
      assert.deepEqual(await forwarding.get('a@example.test'), { targets: ['x@remote.test'], keep: true });
      assert.equal(await vacations.claimReply('a@example.test', 'x@remote.test', Date.now(), 1000), true);
    } finally {
      await pool.end();
    }
  });
});
