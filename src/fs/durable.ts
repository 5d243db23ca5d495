import { open, type FileHandle } from 'node:fs/promises';

// The two halves of "on disk before we say so" (RFC 5321 §6.1): the file's bytes, and the
// directory entry that names it. A rename is durable only once its folder is fsync'd.

/** Creates `path` (it must not exist), writes the pieces without concatenating, and fsyncs. */
export async function writeDurably(path: string, data: Buffer | Buffer[]): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await writeAll(handle, Array.isArray(data) ? data : [data]);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** One writev per call (not a write per piece), continuing after a partial write. */
async function writeAll(handle: FileHandle, pieces: Buffer[]): Promise<void> {
  let pending = pieces.filter((piece) => piece.length > 0);
  while (pending.length > 0) {
    let { bytesWritten } = await handle.writev(pending);
    let index = 0;
    while (index < pending.length && bytesWritten >= pending[index].length) bytesWritten -= pending[index++].length;
    pending = pending.slice(index);
    if (pending.length > 0 && bytesWritten > 0) pending[0] = pending[0].subarray(bytesWritten);
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
