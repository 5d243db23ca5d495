import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { cpuBetween, cpuOfTrees, diskFlushes, machineCpu, parseDiskstats, parseProcessStat, parseProcStat } from '../bench/proc.ts';

// The /proc readings behind the scale-out rows' notes (bench/proc.ts), checked against
// processes whose CPU time is known: a child that burns CPU itself, and one whose own child
// burns CPU and exits between two readings (its time must move into its parent's, not vanish).
// /proc counts in ticks of 10 ms, hence the bounds a few ticks below what was burnt.

const linux = process.platform === 'linux' ? false : 'reads /proc (Linux only)';

/** Burns `ms` of CPU time (not wall time: on a busy machine a loop gets less than the clock shows). */
const BURN = (ms: number) => `{ const from = process.cpuUsage(); for (let u = process.cpuUsage(from); u.user + u.system < ${ms * 1000}; u = process.cpuUsage(from)); }`;

/**
 * A node process running `script` once told to go (a line on its standard input: a delay would
 * not do, as on a busy machine the readings before it may come late), and a way to wait for a
 * word on its standard output.
 */
function run(script: string): { pid: number; go(): void; says(word: string): Promise<void>; exited: Promise<void> } {
  const child = spawn(process.execPath, ['-e', `console.log('ready'); process.stdin.once('data', () => { process.stdin.pause(); ${script} });`], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let output = '';
  const waiting: { word: string; resolve: () => void }[] = [];
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    for (const w of waiting.filter((w) => output.includes(w.word))) w.resolve();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid!,
    go: () => child.stdin!.write('go\n'),
    says: (word) => (output.includes(word) ? Promise.resolve() : new Promise((resolve) => waiting.push({ word, resolve }))),
    exited,
  };
}

/** "write back" or "write through" for a disk (a partition: its disk's), or undefined where sysfs does not say. */
function writeCache(device: string): string | undefined {
  for (const path of [`/sys/class/block/${device}/queue/write_cache`, `/sys/class/block/${device}/../queue/write_cache`]) {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch {
      // not this one
    }
  }
  return undefined;
}

describe('bench/proc.ts: CPU time of process trees from /proc', { skip: linux }, () => {
  test('a child that burns CPU between two readings is counted with what it burnt', async () => {
    const child = run(`${BURN(400)}; console.log('burnt'); setInterval(() => {}, 1000);`);
    await child.says('ready');
    const before = cpuOfTrees([child.pid]);
    child.go();
    await child.says('burnt');
    const after = cpuOfTrees([child.pid]);
    process.kill(child.pid, 'SIGKILL');
    await child.exited;
    const used = cpuBetween(before, after);
    assert.ok(used.total >= 0.37 && used.total <= 0.7, `counted ${used.total} s for 0.4 s of busy loop`);
    assert.ok(Math.abs(used.perProcess.get(child.pid)! - used.total) < 0.02, 'all of it in the child');
  });

  test('a grandchild that exits between the readings is counted in its parent (reaped), not lost', async () => {
    // The parent starts a grandchild that burns 400 ms of CPU and exits; the parent waits for
    // it (reaping it), says "done", and stays until killed.
    const grandchild = JSON.stringify(`console.log('burning'); ${BURN(400)}`);
    const parent = run(
      `require('node:child_process').spawn(process.execPath, ['-e', ${grandchild}], { stdio: ['ignore', 'inherit', 'inherit'] })` +
        `.on('exit', () => { console.log('done'); setInterval(() => {}, 1000); });`,
    );
    await parent.says('ready');
    const before = cpuOfTrees([parent.pid]);
    parent.go();
    await parent.says('burning');
    assert.ok(cpuOfTrees([parent.pid]).size >= 2, 'the tree holds the grandchild while it runs');
    await parent.says('done');
    const after = cpuOfTrees([parent.pid]);
    process.kill(parent.pid, 'SIGKILL');
    await parent.exited;
    assert.equal(after.size, 1, 'only the parent is left');
    const used = cpuBetween(before, after);
    assert.ok(used.total >= 0.37, `counted ${used.total} s for a grandchild that burnt 0.4 s`);
  });

  test('processes outside the trees are not counted; a root that is gone yields an empty reading', () => {
    const reading = cpuOfTrees([process.pid]);
    assert.ok(reading.has(process.pid));
    assert.ok(!reading.has(1) || process.pid === 1, 'init is not below this process');
    assert.equal(cpuOfTrees([2 ** 22 + 12345]).size, 0);
  });

  test("the machine's busy time grows by what a busy loop burns, and by no more than its cores could", () => {
    const startedAt = performance.now();
    const before = machineCpu()!;
    new Function(BURN(300))();
    const after = machineCpu()!;
    const wall = (performance.now() - startedAt) / 1000;
    const grew = after.busy - before.busy;
    assert.ok(grew >= 0.27, `machine busy grew by ${grew} s`);
    // Idle or I/O wait counted as busy would exceed this.
    assert.ok(grew <= wall * availableParallelism() + 0.05, `machine busy grew by ${grew} s in ${wall} s on ${availableParallelism()} cores`);
    assert.ok(after.steal >= before.steal);
  });

  test('disk flushes: read for the disk under a folder, absent where there is no disk (/proc)', () => {
    assert.equal(diskFlushes('/proc'), undefined);
    assert.equal(diskFlushes('/no/such/folder'), undefined);
    const dir = mkdtempSync(join(tmpdir(), 'popgate-flushes-'));
    try {
      const before = diskFlushes(dir);
      // tmpfs or overlay have no disk of their own: nothing to read there, and that is the answer.
      if (before === undefined) return;
      assert.match(before.device, /^\S+$/);
      const fd = openSync(join(dir, 'file'), 'w');
      for (let i = 0; i < 5; i++) {
        writeSync(fd, 'x');
        fsyncSync(fd);
      }
      closeSync(fd);
      const after = diskFlushes(dir)!;
      assert.equal(after.device, before.device);
      // A disk with a volatile write cache gets a flush for each fsync; one without gets none.
      if (writeCache(before.device) === 'write back') assert.ok(after.flushes >= before.flushes + 5, `${after.flushes - before.flushes} flushes for 5 fsyncs`);
      else assert.ok(after.flushes >= before.flushes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bench/proc.ts: the /proc formats', () => {
  test('a process line whose name holds spaces and parentheses', () => {
    // utime 250 and stime 50 ticks, cutime 30 and cstime 20 (USER_HZ = 100).
    const line = '4242 (a (b) c) S 17 4242 4242 0 -1 4194560 1000 0 0 0 250 50 30 20 20 0 11 0 12345 1000000 5000 18446744073709551615\n';
    assert.deepEqual(parseProcessStat(line), { ppid: 17, own: 3, reaped: 0.5 });
    assert.throws(() => parseProcessStat('4242 (truncated'), /not a \/proc\/<pid>\/stat line/);
  });

  test('the machine line of /proc/stat: busy is user, nice, system, irq and softirq; idle and iowait are not', () => {
    const stat = 'cpu  1000 50 300 90000 700 20 30 40 0 0\ncpu0 500 25 150 45000 350 10 15 20 0 0\n';
    assert.deepEqual(parseProcStat(stat), { busy: 14, steal: 0.4 });
    assert.throws(() => parseProcStat('intr 12345\n'), /does not start with the "cpu" line/);
  });

  test('the flush counter of one disk in /proc/diskstats; none on kernels without flush counters', () => {
    const diskstats = [
      '   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0',
      ' 254       0 vda 219413 36149 5995546 93829 3943653 659478 48103048 874046 0 448568 1337072 1073194 2156 27629088 174692 942860 194503',
      ' 254       1 vda1 2000 0 40000 900 300 0 9000 100 0 500 1000 0 0 0 0 812 90',
    ].join('\n');
    assert.deepEqual(parseDiskstats(diskstats, 254, 0), { device: 'vda', flushes: 942860 });
    assert.deepEqual(parseDiskstats(diskstats, 254, 1), { device: 'vda1', flushes: 812 });
    assert.equal(parseDiskstats(diskstats, 8, 0), undefined);
    // Before Linux 5.5 a line had 14 fields: no flush counters to read.
    assert.equal(parseDiskstats(' 254 0 vda 1 2 3 4 5 6 7 8 9 10 11', 254, 0), undefined);
  });
});
