import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { OffLoopWriter } from '../src/fs/durable.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { Spool } from '../src/queue/spool.ts';
import { findEngine, missingEngine } from './helpers/engines.ts';

// Shared storage (a cluster's data_dir on a network file system): a delivery's file calls run
// off the event loop, all of them in one hand-off to a thread of OffLoopWriter, which writes,
// fsyncs, renames and fsyncs the folder, and only then answers.

const root = mkdtempSync(join(tmpdir(), 'popgate-off-loop-'));
after(() => rmSync(root, { recursive: true, force: true }));
let folders = 0;
const folder = (...subs: string[]) => {
  const dir = join(root, String(folders++));
  mkdirSync(dir);
  for (const sub of subs) mkdirSync(join(dir, sub), { recursive: true });
  return dir;
};

describe('OffLoopWriter', () => {
  const writer = new OffLoopWriter();
  after(() => writer.close());

  test('a job writes each file whole, renames them in order, and leaves nothing staged', async () => {
    const dir = folder('tmp', 'new');
    const pieces = [Buffer.from('Subject: a\r\n'), Buffer.alloc(0), Buffer.from('\r\nbody\r\n')];
    await writer.run({
      writes: [
        { path: join(dir, 'tmp', 'one'), data: pieces },
        { path: join(dir, 'tmp', 'two'), data: Buffer.from('{"id":1}') },
      ],
      renames: [
        [join(dir, 'tmp', 'one'), join(dir, 'new', 'one')],
        [join(dir, 'tmp', 'two'), join(dir, 'new', 'two')],
      ],
      sync: [join(dir, 'new')],
    });
    assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
    assert.equal(readFileSync(join(dir, 'new', 'one'), 'utf8'), 'Subject: a\r\n\r\nbody\r\n');
    assert.equal(readFileSync(join(dir, 'new', 'two'), 'utf8'), '{"id":1}');
  });

  test('a write that fails fails the job with the error code, removes what the job wrote, and renames nothing', async () => {
    const dir = folder('tmp', 'new');
    const job = writer.run({
      writes: [
        { path: join(dir, 'tmp', 'first'), data: Buffer.from('first') },
        { path: join(dir, 'gone', 'second'), data: Buffer.from('second') },
      ],
      renames: [[join(dir, 'tmp', 'first'), join(dir, 'new', 'first')]],
      sync: [join(dir, 'new')],
    });
    await assert.rejects(job, (error: NodeJS.ErrnoException) => error.code === 'ENOENT');
    assert.deepEqual(readdirSync(join(dir, 'tmp')), [], 'the first file was removed');
    assert.deepEqual(readdirSync(join(dir, 'new')), []);
    // A file must not exist before: never overwritten.
    writeFileSync(join(dir, 'tmp', 'taken'), 'old');
    await assert.rejects(writer.run({ writes: [{ path: join(dir, 'tmp', 'taken'), data: Buffer.from('new') }], renames: [], sync: [] }), (error: NodeJS.ErrnoException) => error.code === 'EEXIST');
    assert.equal(readFileSync(join(dir, 'tmp', 'taken'), 'utf8'), 'old');
  });

  test('a folder that cannot be synced fails the jobs that renamed into it, not the others', async () => {
    const dir = folder('tmp', 'new');
    const jobs = Array.from({ length: 20 }, (_, i) =>
      writer.run({
        writes: [{ path: join(dir, 'tmp', `m${i}`), data: Buffer.from(`m${i}`) }],
        renames: [[join(dir, 'tmp', `m${i}`), join(dir, 'new', `m${i}`)]],
        sync: i % 2 === 0 ? [join(dir, 'new')] : [join(dir, 'new'), join(dir, 'no-such-folder')],
      }),
    );
    const outcomes = await Promise.allSettled(jobs);
    outcomes.forEach((outcome, i) => {
      if (i % 2 === 0) assert.equal(outcome.status, 'fulfilled', `job ${i}`);
      else assert.equal(outcome.status === 'rejected' && (outcome.reason as NodeJS.ErrnoException).code, 'ENOENT', `job ${i}`);
    });
  });

  test('many jobs at once into a few folders all land, once each, byte for byte', async () => {
    const dirs = [folder('tmp', 'new'), folder('tmp', 'new'), folder('tmp', 'new')];
    const body = (i: number) => Buffer.from(`message ${i} `.repeat(1 + (i % 50)));
    await Promise.all(
      Array.from({ length: 300 }, (_, i) => {
        const dir = dirs[i % 3];
        return writer.run({ writes: [{ path: join(dir, 'tmp', `m${i}`), data: [body(i)] }], renames: [[join(dir, 'tmp', `m${i}`), join(dir, 'new', `m${i}`)]], sync: [join(dir, 'new')] });
      }),
    );
    for (let i = 0; i < 300; i++) assert.deepEqual(readFileSync(join(dirs[i % 3], 'new', `m${i}`)), body(i));
    for (const dir of dirs) {
      assert.equal(readdirSync(join(dir, 'new')).length, 100);
      assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
    }
  });

  test('jobs under way when the threads stop are failed, and the next job starts a thread again', async () => {
    const own = new OffLoopWriter();
    const dir = folder('tmp', 'new');
    const job = (i: number) => own.run({ writes: [{ path: join(dir, 'tmp', `m${i}`), data: Buffer.alloc(64 * 1024, i) }], renames: [[join(dir, 'tmp', `m${i}`), join(dir, 'new', `m${i}`)]], sync: [join(dir, 'new')] });
    await job(0);
    const settled = Promise.allSettled(Array.from({ length: 50 }, (_, i) => job(1 + i)));
    await own.close();
    const outcomes = await settled;
    assert.ok(
      outcomes.some((outcome) => outcome.status === 'rejected' && /stopped/.test((outcome.reason as Error).message)),
      'some jobs were still under way and are failed, not left waiting',
    );
    await job(100);
    assert.ok(existsSync(join(dir, 'new', 'm100')));
    await own.close();
  });

  test('idle threads do not keep the process alive', () => {
    const script = join(folder(), 'script.ts');
    const dir = folder('tmp', 'new');
    writeFileSync(
      script,
      `import { offLoopWriter } from ${JSON.stringify(resolve('src/fs/durable.ts'))};\n` +
        `await offLoopWriter().run({ writes: [{ path: ${JSON.stringify(join(dir, 'tmp', 'm'))}, data: Buffer.from('x') }], renames: [[${JSON.stringify(join(dir, 'tmp', 'm'))}, ${JSON.stringify(join(dir, 'new', 'm'))}]], sync: [${JSON.stringify(join(dir, 'new'))}] });\n` +
        `console.log('written');\n`,
    );
    const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.signal, null, 'ended by itself, not by the timeout');
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'written\n');
    assert.ok(existsSync(join(dir, 'new', 'm')));
  });
});

test('a spool shared by several nodes stores each entry in one hand-off, the envelope renamed last', async () => {
  const data = folder();
  const spool = new Spool(data, 'node-a');
  const envelope = { id: Spool.newId(), from: 'a@example.test', to: ['x@remote.example'], receivedAt: 1, clientIp: '192.0.2.1' };
  await spool.enqueue(envelope, [Buffer.from('Subject: 1\r\n'), Buffer.from('\r\nbody\r\n')]);
  assert.deepEqual(await spool.list(), [envelope]);
  assert.equal((await spool.read(envelope.id)).toString(), 'Subject: 1\r\n\r\nbody\r\n');
  assert.deepEqual(readdirSync(join(data, 'queue', 'tmp', 'node-a')), [], 'nothing is left in the node\'s staging folder');
});

// The order of the system calls, as strace sees them: what "250 only once the message and its
// folder entry are on disk" rests on, and that none of them runs on the event loop's thread.
describe('a delivery to shared storage, traced', { skip: missingEngine('strace') }, () => {
  test('every file call runs on one thread that is not the event loop, the folder fsync after the rename, all before deliver() resolves', () => {
    const data = folder();
    const script = join(folder(), 'deliver.ts');
    writeFileSync(
      script,
      `import { writeSync } from 'node:fs';\n` +
        `import { MaildirStore } from ${JSON.stringify(resolve('src/mailstore/maildir.ts'))};\n` +
        `const store = new MaildirStore(${JSON.stringify(data)}, 'mx.example.test', { shared: true });\n` +
        `await store.ensure('user@example.test');\n` +
        `for (let i = 0; i < 10; i++) {\n` +
        `  const name = await store.deliver('user@example.test', [Buffer.from('Subject: ' + i + '\\r\\n'), Buffer.from('\\r\\nbody\\r\\n')]);\n` +
        `  writeSync(1, 'delivered ' + name + '\\n');\n` +
        `}\n`,
    );
    const trace = join(folder(), 'trace');
    const run = spawnSync(findEngine('strace')!, ['-f', '-s', '1024', '-o', trace, '-e', 'trace=openat,write,writev,pwritev,pwritev2,fsync,fdatasync,close,rename,renameat,renameat2', process.execPath, script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(run.status, 0, run.stderr);
    const lines = readFileSync(trace, 'utf8').split('\n');
    const mainThread = Number(lines[0].split(' ')[0]); // the first line: the execve of node's main thread
    const newDir = join(new MaildirStore(data, 'mx.example.test').pathOf('user@example.test'), 'new');
    // Each call as strace writes it when it returns: "<tid> <call>(<args>) = <result>", or in
    // two lines ("<tid> <call>(<args> <unfinished ...>", then "<tid> <... call resumed>) = <result>")
    // when another thread's calls come in between.
    const calls: { tid: number; call: string; text: string; result: string }[] = [];
    const unfinished = new Map<number, string>();
    for (const line of lines) {
      const started = /^(\d+) +\w+\((.*) <unfinished \.\.\.>$/.exec(line);
      if (started) {
        unfinished.set(Number(started[1]), started[2]);
        continue;
      }
      const match = /^(\d+) +(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$/.exec(line);
      if (!match) continue;
      const tid = Number(match[1]);
      const call = match[2] ?? match[4];
      const text = match[2] !== undefined ? (unfinished.get(tid) ?? '') + match[3] : match[5];
      calls.push({ tid, call, text, result: / = (-?\d+)/.exec(text)?.[1] ?? '' });
    }
    const delivered = calls.filter((entry) => entry.tid === mainThread && entry.call === 'write' && entry.text.startsWith('1, "delivered '));
    assert.equal(delivered.length, 10);
    let from = 0;
    for (const marker of delivered) {
      const name = /delivered ([^\\"]+)/.exec(marker.text)![1];
      const end = calls.indexOf(marker);
      const window = calls.slice(from, end);
      from = end + 1;
      const unique = name.split(',')[0];
      const open = window.find((entry) => entry.call === 'openat' && entry.text.includes(unique) && entry.text.includes('O_CREAT') && entry.text.includes('O_EXCL'));
      assert.ok(open, `the staged file of ${name} is created (O_EXCL)`);
      const thread = open.tid;
      assert.notEqual(thread, mainThread, 'not on the event loop');
      const fd = Number(open.result);
      const after = (index: number, test: (entry: (typeof calls)[number]) => boolean, what: string) => {
        const found = window.findIndex((entry, i) => i > index && test(entry));
        assert.ok(found > index, `${what} follows, for ${name}`);
        assert.equal(window[found].tid, thread, `${what} on the same thread`);
        return found;
      };
      const opening = window.indexOf(open);
      const written = after(opening, (entry) => /^(write|writev|pwritev2?)$/.test(entry.call) && entry.text.startsWith(`${fd},`), 'the write');
      const synced = after(written, (entry) => entry.call === 'fsync' && entry.text.startsWith(`${fd})`), 'the file fsync');
      const closed = after(synced, (entry) => entry.call === 'close' && entry.text.startsWith(`${fd})`), 'the close');
      const renamed = after(closed, (entry) => /^rename/.test(entry.call) && entry.text.includes(join(newDir, name)), 'the rename into new/');
      const folderOpen = after(renamed, (entry) => entry.call === 'openat' && entry.text.includes(`"${newDir}"`), "new/'s open");
      const folderFd = Number(window[folderOpen].result);
      after(folderOpen, (entry) => entry.call === 'fsync' && entry.text.startsWith(`${folderFd})`) && entry.result === '0', "new/'s fsync");
    }
  });
});
