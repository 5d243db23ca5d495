import { readdirSync, readFileSync, statSync } from 'node:fs';

// What the scale-out rows read from Linux's /proc to say what bounds a figure: the CPU time of
// a group of processes (a popgate primary and its workers, redis-server, a postmaster and its
// backends), of the whole machine, and the flushes of the disk under a folder (each fsync of a
// file or folder on a disk with a write cache ends in one). Every reading is a snapshot; the
// difference between two snapshots is what happened in between (proc(5)). Linux only, as the
// benchmark's other /proc readings (idle-load.ts).

/** Clock ticks per second of the times in /proc/<pid>/stat: USER_HZ, 100 on every Linux ABI. */
const USER_HZ = 100;

/** One process of /proc, as much of it as the accounting needs. */
export interface ProcessEntry {
  ppid: number;
  /** utime + stime, in seconds. */
  own: number;
  /** cutime + cstime: what its children that it has waited for used, in seconds. */
  reaped: number;
}

/** One /proc/<pid>/stat line: "pid (comm) state ppid ..." (proc(5)); comm may hold spaces and parentheses. */
export function parseProcessStat(text: string): ProcessEntry {
  const close = text.lastIndexOf(')');
  // Fields from state on: state 0, ppid 1, utime 11, stime 12, cutime 13, cstime 14.
  const fields = text.slice(close + 2).split(' ');
  if (close === -1 || fields.length < 15) throw new Error(`not a /proc/<pid>/stat line: ${JSON.stringify(text.slice(0, 60))}`);
  return {
    ppid: Number(fields[1]),
    own: (Number(fields[11]) + Number(fields[12])) / USER_HZ,
    reaped: (Number(fields[13]) + Number(fields[14])) / USER_HZ,
  };
}

function readProcesses(): Map<number, ProcessEntry> {
  const processes = new Map<number, ProcessEntry>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      processes.set(Number(entry), parseProcessStat(readFileSync(`/proc/${entry}/stat`, 'latin1')));
    } catch {
      continue; // gone since the listing
    }
  }
  return processes;
}

/**
 * CPU seconds of each process of the trees under `roots` (the roots included). A process's
 * figure is its own time plus that of the children it has reaped: a child that exits between
 * two snapshots (a PostgreSQL backend, a restarted worker) then moves from its own line into
 * its parent's, and the difference of the sums stays right. Zombies keep their times and are
 * counted until reaped.
 */
export type CpuSnapshot = Map<number, number>;

export function cpuOfTrees(roots: readonly number[]): CpuSnapshot {
  const processes = readProcesses();
  const children = new Map<number, number[]>();
  for (const [pid, entry] of processes) {
    const list = children.get(entry.ppid);
    if (list) list.push(pid);
    else children.set(entry.ppid, [pid]);
  }
  const snapshot: CpuSnapshot = new Map();
  const stack = roots.filter((pid) => processes.has(pid));
  while (stack.length > 0) {
    const pid = stack.pop()!;
    if (snapshot.has(pid)) continue;
    const entry = processes.get(pid)!;
    snapshot.set(pid, entry.own + entry.reaped);
    for (const child of children.get(pid) ?? []) stack.push(child);
  }
  return snapshot;
}

/** The CPU seconds between two snapshots of the same group, per process of the later one and in total. */
export function cpuBetween(before: CpuSnapshot, after: CpuSnapshot): { total: number; perProcess: Map<number, number> } {
  let total = 0;
  for (const seconds of after.values()) total += seconds;
  for (const seconds of before.values()) total -= seconds;
  const perProcess = new Map<number, number>();
  for (const [pid, seconds] of after) perProcess.set(pid, seconds - (before.get(pid) ?? 0));
  return { total: Math.max(0, total), perProcess };
}

/** The machine's CPU time so far, in seconds summed over its cores (the "cpu" line of /proc/stat). */
export interface MachineCpu {
  /** user, nice, system, irq and softirq: work done by this machine's CPUs. */
  busy: number;
  /** Time the hypervisor gave to other guests while this one wanted to run. */
  steal: number;
}

export function machineCpu(): MachineCpu | undefined {
  try {
    return parseProcStat(readFileSync('/proc/stat', 'latin1'));
  } catch {
    return undefined;
  }
}

/** The machine's CPU time from the text of /proc/stat (its first line, "cpu  user nice system ..."). */
export function parseProcStat(text: string): MachineCpu {
  const line = text.slice(0, text.indexOf('\n') === -1 ? text.length : text.indexOf('\n'));
  if (!line.startsWith('cpu ')) throw new Error(`/proc/stat does not start with the "cpu" line: ${JSON.stringify(line.slice(0, 40))}`);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user already)
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return { busy: (user + nice + system + irq + softirq) / USER_HZ, steal: (steal ?? 0) / USER_HZ };
}

/** Flush requests completed by the disk that holds a folder, from /proc/diskstats (Linux 5.5 and later). */
export interface DiskFlushes {
  /** The device name in /proc/diskstats, e.g. "vda" or "nvme0n1p2". */
  device: string;
  flushes: number;
}

/**
 * The flush count of the block device of `path`, or undefined where there is none to read: a
 * file system without one (tmpfs, overlay: the device number is anonymous) or an older kernel.
 * All processes' flushes on that disk count, not only popgate's.
 */
export function diskFlushes(path: string): DiskFlushes | undefined {
  let dev: number;
  try {
    dev = statSync(path).dev;
  } catch {
    return undefined;
  }
  // glibc's major()/minor() of a dev_t, for the low 32 bits (where Linux keeps disk numbers).
  const major = (dev >>> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  try {
    return parseDiskstats(readFileSync('/proc/diskstats', 'latin1'), major, minor);
  } catch {
    return undefined;
  }
}

/** The flush count of device major:minor in the text of /proc/diskstats; undefined if absent or without flush counters. */
export function parseDiskstats(text: string, major: number, minor: number): DiskFlushes | undefined {
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (Number(fields[0]) !== major || Number(fields[1]) !== minor) continue;
    // major minor name, then the counters; the 16th is "flush requests completed" (Linux 5.5+).
    if (fields.length < 20) return undefined;
    return { device: fields[2], flushes: Number(fields[18]) };
  }
  return undefined;
}
