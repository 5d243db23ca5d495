import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { MailboxQuotas } from '../src/quota/quota.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { SqliteQuotaStore } from '../src/sqlite/quotas.ts';
import { capturingLogger } from './helpers/outbound.ts';
import { runScriptUntil } from './helpers/process.ts';

// The embedded store holds deliveries' counter moves back for a moment and writes them
// together (src/sqlite/quotas.ts). A process killed while it holds some must not leave the
// counters short for good: the next store of the file sees that a writer died and every
// mailbox is counted from its folder again. A process that ends cleanly writes them first.

const HOSTNAME = 'example.test';
const MAILBOX = `user@${HOSTNAME}`;
const MESSAGE = Buffer.from('Subject: counted\r\n\r\nhello\r\n');

/**
 * Another process delivers `messages` messages through the quota-tracking mailstore (so their
 * counter moves are held back), says so, and then ends as `ending` says: killed with SIGKILL by
 * the test, or closing its store cleanly.
 */
async function deliverInAnotherProcess(dataDir: string, messages: number, ending: 'killed' | 'clean'): Promise<void> {
  const module = (path: string) => JSON.stringify(pathToFileURL(resolve(import.meta.dirname, '..', path)).href);
  const script = `
    const { MaildirStore } = await import(${module('src/mailstore/maildir.ts')});
    const { MailboxQuotas, QuotaTrackingMailstore } = await import(${module('src/quota/quota.ts')});
    const { openDatabase } = await import(${module('src/sqlite/open.ts')});
    const { SqliteQuotaStore } = await import(${module('src/sqlite/quotas.ts')});
    const dataDir = ${JSON.stringify(dataDir)};
    const usage = SqliteQuotaStore.openUsageDatabase(dataDir);
    const store = new SqliteQuotaStore(openDatabase(dataDir), usage);
    const maildir = new MaildirStore(dataDir, ${JSON.stringify(HOSTNAME)});
    const silent = { info() {}, warn() {}, error() {}, debug() {} };
    const quotas = new MailboxQuotas(store, maildir, { defaultLimit: 1e9, soft: false, warningPercent: 0, hostname: ${JSON.stringify(HOSTNAME)} }, silent);
    const tracked = new QuotaTrackingMailstore(maildir, quotas);
    for (let n = 0; n < ${messages}; n++) await tracked.deliver(${JSON.stringify(MAILBOX)}, Buffer.from(${JSON.stringify(MESSAGE.toString('latin1'))}, 'latin1'));
    if (${JSON.stringify(ending)} === 'clean') {
      await store.flush();
      usage.close();
      process.stdout.write('done\\n');
    } else {
      // Held moves stay held: the event loop never runs the timer that would write them
      // (stdout to a pipe is written at once on Linux), however late the test's kill comes.
      process.stdout.write('delivered\\n');
      for (;;);
    }
  `;
  await runScriptUntil(script, ending, 'the delivering process');
}

describe('quota counters when a process ends while holding moves back', () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'popgate-quota-crash-'));
    await new MaildirStore(dataDir, HOSTNAME).ensure(MAILBOX);
  });
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  /** The store and quotas the next process opens on the same data folder. */
  function nextProcess() {
    const usage = SqliteQuotaStore.openUsageDatabase(dataDir);
    const store = new SqliteQuotaStore(openDatabase(dataDir), usage);
    const maildir = new MaildirStore(dataDir, HOSTNAME);
    const quotas = new MailboxQuotas(store, maildir, { defaultLimit: 1e9, soft: false, warningPercent: 0, hostname: HOSTNAME }, capturingLogger().log);
    return { store, maildir, quotas, close: () => usage.close() };
  }

  test('killed with SIGKILL: the counter is forgotten and the mailbox counted from its folder', async () => {
    await deliverInAnotherProcess(dataDir, 5, 'killed');
    const next = nextProcess();
    try {
      assert.equal(await next.store.usage(MAILBOX), undefined, 'the short counter was forgotten');
      const inFolder = (await next.maildir.list(MAILBOX)).reduce((sum, message) => sum + message.size, 0);
      assert.equal((await next.maildir.list(MAILBOX)).length, 5);
      assert.equal(await next.quotas.used(MAILBOX), inFolder, 'counted from the folder: every message');
    } finally {
      next.close();
    }
  });

  test('ended cleanly: every held move is written and the counter kept', async () => {
    await deliverInAnotherProcess(dataDir, 5, 'clean');
    const next = nextProcess();
    try {
      const inFolder = (await next.maildir.list(MAILBOX)).reduce((sum, message) => sum + message.size, 0);
      assert.deepEqual(await next.store.usage(MAILBOX), { used: inFolder, warned: false }, 'the counter holds all five');
    } finally {
      next.close();
    }
  });
});
