import { open } from 'node:fs/promises';

// The two halves of "on disk before we say so" (RFC 5321 §6.1): the file's bytes, and the
// directory entry that names it. A rename is durable only once its folder is fsync'd.

/** Creates `path` (it must not exist), writes the pieces without concatenating, and fsyncs. */
export async function writeDurably(path: string, data: Buffer | Buffer[]): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
