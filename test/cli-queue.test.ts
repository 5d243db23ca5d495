import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../src/log/logger.ts';
import { OutboundQueue } from '../src/queue/queue.ts';
import { Spool } from '../src/queue/spool.ts';
import { SqliteQueueStore } from '../src/sqlite/queue-index.ts';
import type { QueuedMessage } from '../src/queue/store.ts';
import { MAIN, NODE } from './helpers/process.ts';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

function popgate(config: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MAIN, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

function message(subject: string): Buffer {
  return Buffer.from(`From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: ${subject}\r\n\r\nthe body, which queue show does not print\r\n`);
}

describe('popgate queue commands, on a queue the server also uses (SQLite index beside the spool)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-cli-queue-'));
  const dataDir = join(dir, 'data');
  const config = join(dir, 'popgate.toml');
  let queue: OutboundQueue;
  // The test keeps the index open, as a running server does, while the CLI works on it.
  // waiting: three recipients, one delivered, one bounced, one deferred with a remote answer.
  // bounce: a null-sender message (a bounce), due now. doomed: deleted by a test.
  const ids = { waiting: '', bounce: '', doomed: '', longError: '' };

  async function enqueue(from: string, to: string[], receivedAt: number, subject: string): Promise<string> {
    const id = Spool.newId();
    await queue.enqueue({ id, from, to, receivedAt, clientIp: '192.0.2.7', authorizedUser: from || undefined }, message(subject));
    return id;
  }

  /** An attempt that changed no recipient: only the next attempt and the error move. */
  function deferred(id: string, attempts: number, nextAttemptAt: number, lastError: string): Promise<void> {
    return queue.recordAttempt(id, [], { attempts, nextAttemptAt, lastError, warned: false }, Date.now());
  }

  async function get(id: string): Promise<QueuedMessage> {
    const m = await queue.get(id);
    assert.ok(m, `${id} is still in the index`);
    return m;
  }

  before(async () => {
    writeFileSync(config, `data_dir = "${dataDir}"\nhostname = "mail.example.test"\n`);
    queue = new OutboundQueue(new Spool(dataDir), SqliteQueueStore.open(dataDir), silentLogger());
    const now = Date.now();
    ids.bounce = await enqueue('', ['postmaster@remote.test'], now - 2 * HOUR - MINUTE, 'Undelivered Mail Returned to Sender');
    ids.waiting = await enqueue('alice@example.test', ['bob@remote.test', 'carol@remote.test', 'dave@remote.test'], now - 3 * MINUTE - 5000, 'Hello');
    await queue.recordAttempt(
      ids.waiting,
      [
        { address: 'bob@remote.test', state: 'pending', status: '4.2.2', diagnostic: 'mx.remote.test said: 452 4.2.2 Mailbox full\x1b[31m', remoteMta: 'mx.remote.test' },
        { address: 'carol@remote.test', state: 'delivered', status: '2.0.0', diagnostic: 'mx.remote.test said: 250 2.0.0 Ok: queued', remoteMta: 'mx.remote.test' },
        { address: 'dave@remote.test', state: 'bounced', status: '5.1.1', diagnostic: 'mx.remote.test said: 550 5.1.1 No such user', remoteMta: 'mx.remote.test' },
      ],
      { attempts: 2, nextAttemptAt: now + 15 * MINUTE + 30_000, lastError: 'mx.remote.test said: 452 4.2.2 Mailbox full', warned: false },
      now - MINUTE,
    );
    ids.longError = await enqueue('carol@example.test', ['erin@far.test'], now - MINUTE, 'Long error');
    await deferred(ids.longError, 1, now + HOUR + MINUTE, `far.test: ${'connection timed out '.repeat(10)}`);
    ids.doomed = await enqueue('frank@example.test', ['gina@remote.test', 'hank@remote.test'], now - 10_000, 'Delete me');
  });

  after(async () => {
    await queue.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('queue list prints one tab-separated line per message, oldest first: id, age, sender, pending recipients with counts, next attempt, last error', async () => {
    const { code, stdout, stderr } = await popgate(config, ['queue', 'list']);
    assert.equal(code, 0, stderr);
    const lines = stdout.trimEnd().split('\n');
    assert.equal(lines.length, 4);
    assert.equal(lines[0], `${ids.bounce}\t2h\t<>\tpostmaster@remote.test\tnext now\t-`);
    // Ages and waits are minutes from now: a busy machine may let one pass before the command runs.
    assert.match(lines[1], new RegExp(`^${ids.waiting}\t[34]m\talice@example.test\tbob@remote.test \\(1 delivered, 1 bounced\\)\tnext in 1[45]m\tmx.remote.test said: 452 4.2.2 Mailbox full$`));
    assert.match(lines[2], new RegExp(`^${ids.longError}\t[12]m\tcarol@example.test\terin@far.test\tnext in 1h\tfar\\.test: connection timed out .*\\.\\.\\.$`));
    assert.equal(lines[2].split('\t')[5].length, 80, 'a long last error is truncated');
    assert.match(lines[3], new RegExp(`^${ids.doomed}\t\\d+s\tfrank@example.test\tgina@remote.test, hank@remote.test\tnext now\t-$`));
  });

  test('queue list --json prints the index as an array, with every recipient state', async () => {
    const { code, stdout } = await popgate(config, ['queue', 'list', '--json']);
    assert.equal(code, 0);
    const list = JSON.parse(stdout) as QueuedMessage[];
    assert.deepEqual(
      list.map((m) => m.id),
      [ids.bounce, ids.waiting, ids.longError, ids.doomed],
    );
    const waiting = list[1];
    assert.equal(waiting.from, 'alice@example.test');
    assert.equal(waiting.attempts, 2);
    assert.deepEqual(
      waiting.recipients.map((r) => [r.address, r.state, r.status]),
      [
        ['bob@remote.test', 'pending', '4.2.2'],
        ['carol@remote.test', 'delivered', '2.0.0'],
        ['dave@remote.test', 'bounced', '5.1.1'],
      ],
    );
    assert.equal(list[0].from, '', 'the null sender is an empty string in JSON');
  });

  test('queue show prints the envelope, every recipient with state, status, diagnostic and remote MTA, and the header only', async () => {
    const { code, stdout, stderr } = await popgate(config, ['queue', 'show', ids.waiting]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, new RegExp(`^id: +${ids.waiting}$`, 'm'));
    assert.match(stdout, /^from: +alice@example\.test$/m);
    assert.match(stdout, /^received: +\S+Z \([34]m ago\) from 192\.0\.2\.7, relay granted to alice@example\.test$/m);
    assert.match(stdout, /^attempts: +2$/m);
    assert.match(stdout, /^next attempt: +\S+Z \(in 1[45]m\)$/m);
    assert.match(stdout, /^last error: +mx\.remote\.test said: 452 4\.2\.2 Mailbox full$/m);
    assert.match(stdout, /^ {2}bob@remote\.test: pending, status 4\.2\.2, remote MTA mx\.remote\.test, updated 1m ago\n {4}mx\.remote\.test said: 452 4\.2\.2 Mailbox full\\x1b\[31m$/m);
    assert.match(stdout, /^ {2}carol@remote\.test: delivered, status 2\.0\.0, remote MTA mx\.remote\.test/m);
    assert.match(stdout, /^ {2}dave@remote\.test: bounced, status 5\.1\.1, remote MTA mx\.remote\.test, updated 1m ago\n {4}mx\.remote\.test said: 550 5\.1\.1 No such user$/m);
    assert.ok(!stdout.includes('\x1b'), 'no control character from a remote answer reaches the terminal');
    assert.match(stdout, /^header:\n {2}From: Alice <alice@example\.test>\n {2}To: bob@remote\.test\n {2}Subject: Hello\n$/m);
    assert.ok(!stdout.includes('the body'), 'the body is not printed');
  });

  test('queue show of a null-sender message prints <> as the sender', async () => {
    const { code, stdout } = await popgate(config, ['queue', 'show', ids.bounce]);
    assert.equal(code, 0);
    assert.match(stdout, /^from: +<>$/m);
    assert.match(stdout, /^ {2}postmaster@remote\.test: pending$/m);
  });

  test('queue show, retry and delete of an unknown id exit 1 and point to queue list', async () => {
    for (const command of ['show', 'retry', 'delete']) {
      const result = await popgate(config, ['queue', command, 'NOSUCHID']);
      assert.equal(result.code, 1, command);
      assert.equal(result.stderr, 'popgate: no queued message NOSUCHID: see popgate queue list\n');
      assert.equal(result.stdout, '');
    }
    const traversal = await popgate(config, ['queue', 'delete', '../popgate']);
    assert.equal(traversal.code, 1, 'an id that is not letters and digits names no message');
  });

  test('queue retry ID makes that message due now in the index and leaves the others alone', async () => {
    const before = await get(ids.longError);
    assert.ok((await get(ids.waiting)).nextAttemptAt > Date.now());
    const { code, stdout, stderr } = await popgate(config, ['queue', 'retry', ids.waiting]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, new RegExp(`^1 message due now \\(${ids.waiting}\\); a running server picks up due mail within a few seconds`));
    assert.ok((await get(ids.waiting)).nextAttemptAt <= Date.now());
    assert.equal((await get(ids.waiting)).attempts, 2, 'the attempt count is kept (it drives the retry schedule)');
    assert.equal((await get(ids.longError)).nextAttemptAt, before.nextAttemptAt);
    assert.match((await popgate(config, ['queue', 'list'])).stdout, new RegExp(`^${ids.waiting}\t.*\tnext now\t`, 'm'));
  });

  test('queue retry without an id makes every message due now and says how many', async () => {
    await deferred(ids.waiting, 3, Date.now() + HOUR, 'deferred');
    const { code, stdout } = await popgate(config, ['queue', 'retry']);
    assert.equal(code, 0);
    assert.match(stdout, /^4 message\(s\) due now \(2 were waiting for a later attempt\); a running server picks up due mail within a few seconds/);
    for (const id of [ids.waiting, ids.longError, ids.bounce, ids.doomed]) assert.ok((await get(id)).nextAttemptAt <= Date.now(), id);
  });

  test('queue flush makes every message due now, like postqueue -f', async () => {
    await deferred(ids.waiting, 3, Date.now() + HOUR, 'deferred');
    await deferred(ids.bounce, 1, Date.now() + 2 * HOUR, 'deferred');
    const { code, stdout } = await popgate(config, ['queue', 'flush']);
    assert.equal(code, 0);
    assert.match(stdout, /^4 message\(s\) due now \(2 were waiting for a later attempt\)/);
    for (const id of [ids.waiting, ids.bounce]) assert.ok((await get(id)).nextAttemptAt <= Date.now(), id);
  });

  test('queue delete removes the spool files and the index row, sends no bounce, and says what was deleted', async () => {
    const spoolDir = join(dataDir, 'queue');
    assert.ok(existsSync(join(spoolDir, `${ids.doomed}.eml`)));
    const { code, stdout, stderr } = await popgate(config, ['queue', 'delete', ids.doomed]);
    assert.equal(code, 0, stderr);
    assert.equal(
      stdout,
      `deleted ${ids.doomed} from frank@example.test to gina@remote.test, hank@remote.test; no bounce was sent, so tell the sender yourself if they should know\n`,
    );
    assert.ok(!existsSync(join(spoolDir, `${ids.doomed}.eml`)));
    assert.ok(!existsSync(join(spoolDir, `${ids.doomed}.json`)));
    assert.equal(await queue.get(ids.doomed), undefined);
    assert.equal((await queue.list()).length, 3, 'no bounce was queued');
    const again = await popgate(config, ['queue', 'delete', ids.doomed]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no queued message/);
  });

  test('queue delete of a partly delivered message names the recipients that will not get it', async () => {
    const { code, stdout } = await popgate(config, ['queue', 'delete', ids.waiting]);
    assert.equal(code, 0);
    assert.equal(
      stdout,
      `deleted ${ids.waiting} from alice@example.test to bob@remote.test (2 already delivered or bounced); no bounce was sent, so tell the sender yourself if they should know\n`,
    );
    assert.equal(await queue.get(ids.waiting), undefined);
  });

  test('an empty queue: list says "queue is empty", --json prints [], retry and flush say so too', async () => {
    const emptyDir = join(dir, 'empty');
    mkdirSync(emptyDir);
    const emptyConfig = join(emptyDir, 'popgate.toml');
    writeFileSync(emptyConfig, `data_dir = "${emptyDir}/data"\n`);
    assert.equal((await popgate(emptyConfig, ['queue', 'list'])).stdout, 'queue is empty\n');
    assert.deepEqual(JSON.parse((await popgate(emptyConfig, ['queue', 'list', '--json'])).stdout), []);
    assert.equal((await popgate(emptyConfig, ['queue', 'retry'])).stdout, 'queue is empty\n');
    assert.equal((await popgate(emptyConfig, ['queue', 'flush'])).stdout, 'queue is empty\n');
  });
});
