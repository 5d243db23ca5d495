import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeDurably } from '../fs/durable.ts';

// The SRS key: `[srs] secret` when the operator sets one (several independent servers that
// must reverse each other's addresses), otherwise generated once into data_dir/srs.secret,
// which every node of a cluster shares with the data folder. Losing it makes the bounces of
// mail forwarded before unreturnable (refused as forged), so it is created once and kept.

const FILE = 'srs.secret';

export async function srsSecret(dataDir: string, configured: string): Promise<string> {
  if (configured !== '') return configured;
  const path = join(dataDir, FILE);
  const existing = await readSecret(path);
  if (existing) return existing;
  await mkdir(dataDir, { recursive: true });
  // Written whole under a name of its own, then linked into place: a process starting at the
  // same moment (another worker or node) either wins the link or reads the winner's key, never
  // half a file.
  const staged = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeDurably(staged, Buffer.from(`${randomBytes(32).toString('base64url')}\n`));
  try {
    await link(staged, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await unlink(staged);
  }
  const created = await readSecret(path);
  if (!created) throw new Error(`${path} is empty: delete it to have a new SRS key made, or set [srs] secret`);
  return created;
}

async function readSecret(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim() || undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
