import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { startDns, type TestDns } from './helpers/dns.ts';
import { NODE, ROOT, spawnNode, writeConfig, type NodeProcess } from './helpers/process.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// What a popgate process keeps in memory: every process (one, or the primary and each worker)
// loads only what its configuration uses. The Redis and PostgreSQL clients are for a cluster,
// mailauth for the sender checks (on their own thread) and for DKIM signing (at the first
// signature); an embedded server's event loop thread loads none of them, which is some 60 MB of
// memory per process (docs/benchmarks.md). A hook records every module each thread loads.

const HOOK = `
import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
registerHooks({
  load(url, context, next) {
    appendFileSync(process.env.POPGATE_TEST_LOADED, threadId + ' ' + url + '\\n');
    return next(url, context);
  },
});
`;

/** The engines' clients and mailauth, as their files' URLs show them. */
const HEAVY = { redis: /\/node_modules\/(@redis\/client|redis)\//, pg: /\/node_modules\/pg\//, mailauth: /\/node_modules\/mailauth\// };

describe('what a popgate process loads', () => {
  let dir: string;
  let dns: TestDns;
  let server: NodeProcess;
  let loadedPath: string;

  /** Per thread (0 is the event loop's), the module URLs it loaded so far. */
  const loaded = (): Map<number, string[]> => {
    const threads = new Map<number, string[]>();
    for (const line of readFileSync(loadedPath, 'utf8').split('\n')) {
      if (line === '') continue;
      const at = line.indexOf(' ');
      const thread = Number(line.slice(0, at));
      threads.set(thread, [...(threads.get(thread) ?? []), line.slice(at + 1)]);
    }
    return threads;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'popgate-memory-'));
    dns = await startDns({});
    const hookPath = join(dir, 'hook.mjs');
    writeFileSync(hookPath, HOOK);
    loadedPath = join(dir, 'loaded.txt');
    writeFileSync(loadedPath, '');
    const dataDir = join(dir, 'data');
    const accounts = new SqliteAccountStore(openDatabase(dataDir), true);
    await accounts.addDomain('example.test');
    await accounts.addUser('alice@example.test', 'a long enough password');
    const config = writeConfig(
      dir,
      [
        'hostname = "mail.example.test"',
        `data_dir = "${dataDir}"`,
        'shutdown_grace = "1s"',
        '[server]',
        'workers = 1',
        '[dns]',
        `servers = ["${dns.address}"]`,
        '[pop3]',
        'listen = ["127.0.0.1:0"]',
        '[pop3s]',
        'listen = []',
        '[smtp]',
        'listen = ["127.0.0.1:0"]',
        '[submission]',
        'listen = []',
        '[submissions]',
        'listen = []',
      ].join('\n') + '\n',
    );
    server = await spawnNode(config, { listeners: ['pop3', 'smtp'], env: { NODE_OPTIONS: `--import ${hookPath}`, POPGATE_TEST_LOADED: loadedPath } });
  });

  after(async () => {
    await server?.stop();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an embedded server starts without the Redis client, the PostgreSQL client or mailauth', () => {
    const main = loaded().get(0) ?? [];
    // The hook sees the server's own modules and its dependencies (else the test proves nothing).
    assert.ok(main.some((url) => url.endsWith('/src/server/app.ts')), 'the hook saw app.ts load');
    assert.ok(main.some((url) => url.includes('/node_modules/smol-toml/')), 'the hook saw a dependency load');
    for (const [name, pattern] of Object.entries(HEAVY)) {
      assert.deepEqual(main.filter((url) => pattern.test(url)), [], `${name} is not loaded`);
    }
  });

  test('a message checked and accepted loads mailauth in the checks thread, never in the sessions thread', async () => {
    const client = await SmtpClient.connect(server.ports.smtp);
    await client.hello('client.example');
    assert.match(await client.command('MAIL FROM:<someone@sender.example>'), /^250 /);
    assert.match(await client.command('RCPT TO:<alice@example.test>'), /^250 /);
    assert.match(await client.command('DATA'), /^354 /);
    client.write('From: someone@sender.example\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nhi\r\n.\r\n');
    // The checks' thread starts with this first message (and loads mailauth): on a busy machine
    // that takes a while, and the reply waits for the checks.
    assert.match(await client.reply(30_000), /^250 /);
    await client.command('QUIT');
    const threads = loaded();
    const main = threads.get(0) ?? [];
    assert.deepEqual(main.filter((url) => HEAVY.mailauth.test(url)), [], 'mailauth is not loaded in the sessions thread');
    const checks = [...threads.entries()].filter(([thread]) => thread !== 0).flatMap(([, urls]) => urls);
    assert.ok(checks.some((url) => url.endsWith('/src/filter/check-worker.ts')), 'the checks ran on their thread');
    assert.ok(checks.some((url) => HEAVY.mailauth.test(url)), 'the checks thread loaded mailauth');
    for (const name of ['redis', 'pg'] as const) assert.deepEqual(main.filter((url) => HEAVY[name].test(url)), [], `${name} is not loaded`);
  });
});

describe('the installed command', () => {
  test('bin/popgate.js keeps the stripped and compiled sources in the compile cache', async () => {
    // Not through NODE_COMPILE_CACHE, which would turn the cache on by itself: bin/popgate.js must
    // do it, into the system's temporary folder.
    const temporary = mkdtempSync(join(tmpdir(), 'popgate-compile-cache-'));
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: temporary };
    delete env.NODE_COMPILE_CACHE;
    delete env.NODE_DISABLE_COMPILE_CACHE;
    try {
      const { stdout } = await promisify(execFile)(NODE, [join(ROOT, 'bin', 'popgate.js'), '--help'], { env });
      assert.match(stdout, /^Usage: popgate/);
      const entries = readdirSync(join(temporary, 'node-compile-cache'), { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile());
      // One entry per module at least: main.ts and what it imports.
      assert.ok(entries.length > 20, `the cache holds ${entries.length} files`);
    } finally {
      rmSync(temporary, { recursive: true, force: true });
    }
  });
});
