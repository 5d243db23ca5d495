import { constants, existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { chown, copyFile, link, lstat, mkdir, open, readdir, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative } from 'node:path';
import { backup as sqliteBackup, DatabaseSync } from 'node:sqlite';
import type { Config } from '../config/schema.ts';
import { SqliteMaildropLocks } from '../sqlite/maildrop-locks.ts';
import { accepting, configuredListeners } from './listeners.ts';

// `popgate backup DIR` and `popgate restore DIR`.
//
// A backup is taken while the server runs, and each part of it is consistent by itself:
// - the SQLite files through SQLite's online backup API (https://sqlite.org/backup.html), in
//   one step, so each is a snapshot of one moment (WAL lets the server write meanwhile);
// - the queue spool after its index: an entry is taken only with both of its files, so a
//   message that left during the backup is missing from the files and forgotten by the index
//   at the next start (OutboundQueue.recover), and one that arrived is indexed then;
// - the Maildirs file by file: a message is in new/ or cur/ only once it is complete and
//   durable (popgate writes it in tmp/ first, as every Maildir writer does), and tmp/ is never
//   taken, so a message delivered during the backup is either in it, whole, or not in it.
//   A message moved from new/ to cur/ meanwhile (a POP3 login) is taken once.
// Files are hard links when the backup is on the same file system (instant, no space: mail
// files and spool files are never changed in place, only renamed and removed), else copies.
//
// The manifest is written last: a folder without one is an unfinished backup.

export class BackupError extends Error {}

export const MANIFEST = 'manifest.json';
const FORMAT = 'popgate-backup';
const FORMAT_VERSION = 1;
const MAX_MANIFEST_BYTES = 1024 * 1024;
/** What --force moves an existing data_dir's contents into, inside it (a rename, never a copy). */
const ASIDE_PREFIX = '.before-restore-';
/** A Maildir folder is walked again while messages vanish between listing and taking (moved new/ → cur/). */
const MAILDIR_PASSES = 3;

export interface BackupManifest {
  format: typeof FORMAT;
  version: typeof FORMAT_VERSION;
  startedAt: string;
  finishedAt: string;
  /** The popgate version that made it. */
  popgate: string;
  hostname: string;
  /** The data_dir backed up, under data/. */
  dataDir: string;
  /** The DKIM keys folder: inside data_dir (so under data/), or else under dkim/. */
  keysDir: string;
  keysInData: boolean;
  /** "hard links" (same file system as data_dir) or "copies". */
  method: 'hard links' | 'copies';
  databases: { file: string; bytes: number }[];
  queue: { messages: number };
  mail: { mailboxes: number; messages: number; bytes: number };
  /** DKIM private keys (.pem files of the keys folder). */
  dkimKeys: number;
  otherFiles: number;
  /** What a backup of files cannot hold (a cluster's PostgreSQL database). */
  notIncluded: string[];
}

/** Takes files into the backup: a hard link while that works, a copy once it does not. */
class FileTaker {
  method: 'hard links' | 'copies' = 'hard links';

  /** Takes `from` as `to`; its size, or undefined when `from` is gone (moved or removed meanwhile). */
  async take(from: string, to: string): Promise<number | undefined> {
    try {
      if (this.method === 'hard links') {
        try {
          await link(from, to);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          // Another file system, or one without hard links: copies from now on.
          if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EMLINK' && code !== 'EOPNOTSUPP') throw error;
          this.method = 'copies';
          return await this.take(from, to);
        }
      } else {
        await copyFile(from, to, constants.COPYFILE_EXCL);
      }
      return (await lstat(to)).size;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !existsSync(from)) return undefined;
      throw error;
    }
  }
}

/** Makes a backup of `config`'s data in `target` (a new or empty folder); resolves to its manifest. */
export async function createBackup(config: Config, target: string): Promise<BackupManifest> {
  const startedAt = new Date().toISOString();
  const dataDir = config.data_dir;
  const keysDir = config.dkim.keys_dir;
  if (!existsSync(join(dataDir, 'popgate.sqlite'))) throw new BackupError(`there is no popgate data in ${dataDir}: check data_dir in the config`);
  await prepareEmptyFolder(target);
  for (const [inner, outer] of [[target, dataDir], [target, keysDir], [dataDir, target]]) {
    if (inside(inner, outer)) throw new BackupError(`the backup folder ${target} must not be inside ${outer}, nor hold it`);
  }
  const keysInData = inside(keysDir, dataDir);
  const data = join(target, 'data');
  await mkdir(data, { mode: 0o700 });
  const taker = new FileTaker();
  const manifest: BackupManifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    startedAt,
    finishedAt: '',
    popgate: packageVersion(),
    hostname: config.hostname,
    dataDir,
    keysDir,
    keysInData,
    method: 'hard links',
    databases: [],
    queue: { messages: 0 },
    mail: { mailboxes: 0, messages: 0, bytes: 0 },
    dkimKeys: 0,
    otherFiles: 0,
    notIncluded: config.database.url === '' ? [] : ['the PostgreSQL database of [database] url (domains, users, aliases, the queue index): back it up with pg_dump'],
  };

  // 1. The databases first: the queue index before the spool files (see the top of the file).
  const databases = [join(dataDir, 'popgate.sqlite'), join(dataDir, 'queue', 'index.sqlite')].filter((file) => existsSync(file));
  for (const file of databases) {
    const name = relative(dataDir, file);
    await mkdir(dirname(join(data, name)), { recursive: true, mode: 0o700 });
    // The maildrop locks of sessions open right now (kept in the database when several
    // workers serve) belong to nobody once restored.
    const tidy = name === 'popgate.sqlite' ? (copy: DatabaseSync) => void SqliteMaildropLocks.releaseAll(copy) : undefined;
    manifest.databases.push({ file: name, bytes: await backupDatabase(file, join(data, name), tidy) });
  }
  // 2. The queue spool: complete entries only.
  manifest.queue.messages = await takeSpool(join(dataDir, 'queue'), join(data, 'queue'), taker);
  // 3. The Maildirs.
  const mailRoot = join(dataDir, 'mail');
  if (existsSync(mailRoot)) {
    const counts = { mailboxes: 0, messages: 0, bytes: 0, otherFiles: 0 };
    await takeMail(mailRoot, join(data, 'mail'), taker, counts);
    manifest.mail = { mailboxes: counts.mailboxes, messages: counts.messages, bytes: counts.bytes };
    manifest.otherFiles += counts.otherFiles;
  }
  // 4. Everything else in data_dir (generated certificates, DKIM keys by default, …).
  const skipped = new Set(['mail', 'queue', ...databases.map((file) => basename(file))]);
  for (const entry of await readdir(dataDir, { withFileTypes: true })) {
    if (skipped.has(entry.name) || isTransient(entry.name) || entry.name.startsWith(ASIDE_PREFIX)) continue;
    const counts = { mailboxes: 0, messages: 0, bytes: 0, otherFiles: 0 };
    await takeEntry(join(dataDir, entry.name), join(data, entry.name), taker, counts);
    manifest.otherFiles += counts.otherFiles;
  }
  // 5. The DKIM keys, when they live outside data_dir.
  if (!keysInData && existsSync(keysDir)) {
    const counts = { mailboxes: 0, messages: 0, bytes: 0, otherFiles: 0 };
    await takeTree(keysDir, join(target, 'dkim'), taker, counts);
    manifest.otherFiles += counts.otherFiles;
  }
  manifest.dkimKeys = await countFiles(keysInData ? join(data, relative(dataDir, keysDir)) : join(target, 'dkim'), '.pem');
  manifest.method = taker.method;
  manifest.finishedAt = new Date().toISOString();
  // Last, and whole or not at all: a folder without a manifest is an unfinished backup.
  await writeFile(join(target, `${MANIFEST}.tmp`), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
  await syncFile(join(target, `${MANIFEST}.tmp`));
  await rename(join(target, `${MANIFEST}.tmp`), join(target, MANIFEST));
  return manifest;
}

/** SQLite's online backup in one step (a snapshot of one moment), checked, as a single file. */
async function backupDatabase(source: string, destination: string, tidy?: (copy: DatabaseSync) => void): Promise<number> {
  const db = new DatabaseSync(source, { readOnly: true });
  try {
    db.exec('PRAGMA busy_timeout = 5000');
    // All pages in one step: a step reads in one transaction, and WAL lets writers go on.
    await sqliteBackup(db, destination, { rate: 2 ** 31 - 1 });
  } finally {
    db.close();
  }
  const copy = new DatabaseSync(destination);
  try {
    // One file, not three: the server turns WAL on again when it opens a restored copy.
    copy.exec('PRAGMA journal_mode = DELETE');
    tidy?.(copy);
    const problems = (copy.prepare('PRAGMA quick_check(10)').all() as { quick_check: string }[]).map((row) => row.quick_check);
    if (problems.join() !== 'ok') throw new BackupError(`the copy of ${source} fails SQLite's quick_check (${problems.join('; ')}): the database itself is damaged; see docs/operations.md`);
  } finally {
    copy.close();
  }
  await syncFile(destination);
  return (await stat(destination)).size;
}

/** The spool's complete entries (<id>.eml and <id>.json), message first; tmp/ is never taken. */
async function takeSpool(spool: string, target: string, taker: FileTaker): Promise<number> {
  await mkdir(target, { recursive: true, mode: 0o700 });
  let names: string[];
  try {
    names = await readdir(spool);
  } catch {
    return 0;
  }
  let messages = 0;
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const id = name.slice(0, -'.json'.length);
    const taken = (await taker.take(join(spool, `${id}.eml`), join(target, `${id}.eml`))) !== undefined && (await taker.take(join(spool, name), join(target, name))) !== undefined;
    if (taken) messages++;
    // Delivered (and removed) while it was being taken: it is not in the backup at all.
    else await Promise.all([rm(join(target, `${id}.eml`), { force: true }), rm(join(target, name), { force: true })]);
  }
  return messages;
}

interface TreeCounts {
  mailboxes: number;
  messages: number;
  bytes: number;
  otherFiles: number;
}

/** A folder taken file by file (generated certificates, DKIM keys, anything else of data_dir). */
async function takeTree(from: string, to: string, taker: FileTaker, counts: TreeCounts): Promise<void> {
  await mkdir(to, { recursive: true, mode: (await stat(from)).mode & 0o7777 });
  for (const entry of await readdir(from)) {
    if (!isTransient(entry)) await takeEntry(join(from, entry), join(to, entry), taker, counts);
  }
}

/**
 * The mail tree in popgate's layout, mail/<domain>/<local part>/, each mailbox a Maildir
 * (the layout is known, so a user named "new" or "cur" cannot pass for a Maildir's folder).
 */
async function takeMail(root: string, to: string, taker: FileTaker, counts: TreeCounts): Promise<void> {
  await mkdir(to, { recursive: true, mode: (await stat(root)).mode & 0o7777 });
  for (const domain of await readdir(root, { withFileTypes: true })) {
    const domainPath = join(root, domain.name);
    if (!domain.isDirectory()) {
      await takeEntry(domainPath, join(to, domain.name), taker, counts);
      continue;
    }
    await mkdir(join(to, domain.name), { mode: (await stat(domainPath)).mode & 0o7777 });
    for (const mailbox of await readdir(domainPath, { withFileTypes: true })) {
      const target = join(to, domain.name, mailbox.name);
      if (!mailbox.isDirectory()) await takeEntry(join(domainPath, mailbox.name), target, taker, counts);
      else {
        counts.mailboxes++;
        await takeMaildir(join(domainPath, mailbox.name), target, taker, counts);
      }
    }
  }
}

/** One Maildir: its messages (see takeMaildirMessages), never tmp/, and any other files and Maildir++ folders (".Sent" …) in it. */
async function takeMaildir(from: string, to: string, taker: FileTaker, counts: TreeCounts): Promise<void> {
  await mkdir(to, { mode: (await stat(from)).mode & 0o7777 });
  await takeMaildirMessages(from, to, taker, counts);
  for (const entry of await readdir(from, { withFileTypes: true })) {
    if (entry.name === 'new' || entry.name === 'cur' || entry.name === 'tmp' || isTransient(entry.name)) continue;
    const inner = join(from, entry.name);
    const isFolder = entry.isDirectory() && entry.name.startsWith('.') && existsSync(join(inner, 'cur'));
    if (isFolder) await takeMaildir(inner, join(to, entry.name), taker, counts);
    else await takeEntry(inner, join(to, entry.name), taker, counts);
  }
}

async function takeEntry(from: string, to: string, taker: FileTaker, counts: TreeCounts): Promise<void> {
  let info;
  try {
    info = await lstat(from);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (info.isDirectory()) return takeTree(from, to, taker, counts);
  if (info.isSymbolicLink()) {
    await symlink(await readlink(from), to);
    counts.otherFiles++;
    return;
  }
  if (!info.isFile()) return;
  if (from.endsWith('.sqlite')) {
    await backupDatabase(from, to);
    counts.otherFiles++;
    return;
  }
  if ((await taker.take(from, to)) !== undefined) counts.otherFiles++;
}

/**
 * new/ and cur/ of one Maildir, each message once: it is known by its unique name (the part
 * before ":"), which stays the same when a reader moves it from new/ to cur/ or changes its
 * flags. new/ is read before cur/, so a message moved in between is found in cur/; one that
 * vanished is looked for again, and one still missing after that was deleted.
 */
async function takeMaildirMessages(from: string, to: string, taker: FileTaker, counts: TreeCounts): Promise<void> {
  for (const sub of ['tmp', 'new', 'cur']) {
    const mode = await stat(join(from, sub)).then((info) => info.mode & 0o7777, () => 0o700);
    await mkdir(join(to, sub), { mode });
  }
  const taken = new Set<string>();
  for (let pass = 0; pass < MAILDIR_PASSES; pass++) {
    let vanished = false;
    for (const sub of ['new', 'cur']) {
      let entries;
      try {
        entries = await readdir(join(from, sub), { withFileTypes: true });
      } catch {
        continue;
      }
      for (const entry of entries) {
        const name = entry.name;
        const unique = name.split(':')[0];
        if (!entry.isFile() || name.startsWith('.') || taken.has(unique)) continue;
        const size = await taker.take(join(from, sub, name), join(to, sub, name));
        if (size === undefined) {
          vanished = true;
          continue;
        }
        taken.add(unique);
        counts.messages++;
        counts.bytes += size;
      }
    }
    if (!vanished) return;
  }
}

export interface RestoreReport {
  manifest: BackupManifest;
  /** Where --force moved what was in the way. */
  movedAside: string[];
  files: number;
  /** The owner given to the restored files (when run as root), or undefined. */
  owner?: { uid: number; gid: number };
}

/** Reads and checks a backup's manifest. */
export function readManifest(source: string): BackupManifest {
  const path = join(source, MANIFEST);
  let text: string;
  try {
    if (statSync(path).size > MAX_MANIFEST_BYTES) throw new BackupError(`${path} is too large to be a popgate manifest`);
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (error instanceof BackupError) throw error;
    const hint = existsSync(join(source, `${MANIFEST}.tmp`)) || existsSync(join(source, 'data')) ? ' (the backup did not finish)' : '';
    throw new BackupError(`${source} is not a popgate backup: it has no ${MANIFEST}${hint}`);
  }
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(text) as BackupManifest;
  } catch (error) {
    throw new BackupError(`${path} is not valid JSON: ${(error as Error).message}`);
  }
  if (manifest?.format !== FORMAT) throw new BackupError(`${path} is not a popgate manifest`);
  if (manifest.version !== FORMAT_VERSION) throw new BackupError(`${path} has format version ${manifest.version}; this popgate reads version ${FORMAT_VERSION}`);
  if (!existsSync(join(source, 'data', 'popgate.sqlite'))) throw new BackupError(`${source} has a manifest but no data/popgate.sqlite: it is incomplete`);
  return manifest;
}

/**
 * Puts a backup back into data_dir (and dkim.keys_dir), which must be empty: with `force`,
 * what is there is moved aside into `.before-restore-<time>` inside it. Refuses while a server
 * uses the data: a listener of the config answers, or a process has the database open.
 */
export async function restoreBackup(config: Config, source: string, options: { force: boolean }): Promise<RestoreReport> {
  const manifest = readManifest(source);
  const running = await runningServer(config);
  if (running) throw new BackupError(`popgate is running (${running}): stop it first (systemctl stop popgate), then restore`);
  const dataDir = config.data_dir;
  const keysDir = config.dkim.keys_dir;
  const keysSource = join(source, 'dkim');
  const targets = [dataDir];
  if (existsSync(keysSource) && !inside(keysDir, dataDir)) targets.push(keysDir);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const movedAside: string[] = [];
  const owner = process.getuid?.() === 0 ? ownerOf(dataDir) : undefined;
  for (const target of targets) {
    const present = existsSync(target) ? (await readdir(target)).filter((name) => !name.startsWith(ASIDE_PREFIX)) : [];
    if (present.length === 0) continue;
    if (!options.force) throw new BackupError(`${target} is not empty (${present.slice(0, 3).join(', ')}${present.length > 3 ? ', …' : ''}): restore into an empty folder, or add --force to move what is there into ${join(target, `${ASIDE_PREFIX}<time>`)}`);
    const aside = join(target, `${ASIDE_PREFIX}${stamp}`);
    await mkdir(aside, { mode: 0o700 });
    for (const name of present) await rename(join(target, name), join(aside, name));
    movedAside.push(aside);
  }
  const counts = { files: 0 };
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await copyTree(join(source, 'data'), dataDir, counts);
  if (existsSync(keysSource)) {
    await mkdir(keysDir, { recursive: true, mode: 0o700 });
    await copyTree(keysSource, keysDir, counts);
  }
  // Run as root, the files take the owner of the data_dir they were put in (popgate's user).
  if (owner && owner.uid !== 0) {
    for (const target of new Set([dataDir, ...(existsSync(keysSource) ? [keysDir] : [])])) await chownTree(target, owner, movedAside);
  }
  return { manifest, movedAside, files: counts.files, owner: owner && owner.uid !== 0 ? owner : undefined };
}

/** Copies a backup's folder back (never links: the restored data must not share files with the backup). */
async function copyTree(from: string, to: string, counts: { files: number }): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = join(from, entry.name);
    const target = join(to, entry.name);
    if (entry.isDirectory()) {
      await mkdir(target, { mode: (await stat(source)).mode & 0o7777 }).catch((error) => {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      });
      await copyTree(source, target, counts);
    } else if (entry.isSymbolicLink()) {
      await symlink(await readlink(source), target);
    } else if (entry.isFile()) {
      await copyFile(source, target, constants.COPYFILE_EXCL);
      counts.files++;
    }
  }
}

async function chownTree(dir: string, owner: { uid: number; gid: number }, except: string[]): Promise<void> {
  await chown(dir, owner.uid, owner.gid);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (except.includes(path)) continue;
    if (entry.isDirectory()) await chownTree(path, owner, except);
    else await chown(path, owner.uid, owner.gid);
  }
}

/** The owner of a folder, or undefined when it does not exist yet. */
function ownerOf(path: string): { uid: number; gid: number } | undefined {
  try {
    const { uid, gid } = statSync(path);
    return { uid, gid };
  } catch {
    return undefined;
  }
}

/**
 * Why a server seems to be using this config's data, or undefined: a configured listener
 * accepts connections, or a process (a server, a worker, a running command) has the database
 * open (read from /proc, where the kernel lists each process's open files).
 */
export async function runningServer(config: Config): Promise<string | undefined> {
  for (const listener of configuredListeners(config)) {
    if (await accepting(listener, 1000)) return `its ${listener.section} listener ${listener.address} accepts connections`;
  }
  let database: string;
  try {
    database = realpathSync(join(config.data_dir, 'popgate.sqlite'));
  } catch {
    return undefined;
  }
  let pids: string[];
  try {
    pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid);
  } catch {
    return undefined; // not Linux: only the listeners tell
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or another user's
    }
    for (const fd of fds) {
      const file = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (file === database || file.startsWith(`${database}-`)) {
        const command = (await readFileText(`/proc/${pid}/comm`)).trim() || 'a process';
        return `process ${pid} (${command}) has ${database} open`;
      }
    }
  }
  return undefined;
}

async function readFileText(path: string): Promise<string> {
  try {
    const handle = await open(path, 'r');
    try {
      return (await handle.readFile('utf8')).slice(0, 256);
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

/** `dir` must not exist, or be empty; it is created readable by its owner only (it holds password hashes and keys). */
async function prepareEmptyFolder(dir: string): Promise<void> {
  if (existsSync(dir)) {
    const entries = await readdir(dir).catch(() => {
      throw new BackupError(`${dir} is not a folder`);
    });
    if (entries.length > 0) throw new BackupError(`${dir} is not empty: give a new folder for each backup (for example with the date in its name)`);
    return;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/** Leftovers of work in progress that a backup never takes: SQLite's side files, doctor's probe. */
function isTransient(name: string): boolean {
  return /\.sqlite-(wal|shm|journal)$/.test(name) || name.startsWith('.doctor-');
}

/** Whether `path` is `folder` or inside it (real paths, so symlinks do not fool it). */
export function inside(path: string, folder: string): boolean {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  const rel = relative(real(folder), real(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

async function countFiles(dir: string, suffix: string): Promise<number> {
  let count = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    if (entry.isDirectory()) count += await countFiles(join(dir, entry.name), suffix);
    else if (entry.name.endsWith(suffix)) count++;
  }
  return count;
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
