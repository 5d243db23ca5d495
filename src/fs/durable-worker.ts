import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writevSync } from 'node:fs';
import { parentPort, receiveMessageOnPort } from 'node:worker_threads';
import type { ThreadReply } from '../threads/request-thread.ts';
import type { DurableJobMessage } from './durable.ts';

type DurableJobReply = ThreadReply<undefined>;

// A thread of OffLoopWriter (durable.ts): runs each job's file calls synchronously, off the
// main thread's event loop, so a delivery to shared storage is one hand-off instead of one per
// call. Jobs that queue up while it is busy are taken together: each job's files are written,
// fsync'd and renamed in order, then every folder the batch renamed into is fsync'd once
// (group commit), and only then are the batch's jobs answered. A folder's fsync starts after
// the renames it covers, in this thread, so an answered job's entries are on disk.

const port = parentPort!;
/** Jobs answered together at most. */
const MAX_BATCH = 16;

port.on('message', (first: DurableJobMessage) => {
  const batch = [first];
  const replies: DurableJobReply[] = [];
  const folders = new Map<string, DurableJobReply[]>();
  // Jobs that arrive while the batch's files are written join it, before its folders' fsyncs
  // (up to MAX_BATCH, so the first job's answer is not held back for long).
  for (let next = 0; next < batch.length || (batch.length < MAX_BATCH && take(batch)); next++) {
    const job = batch[next];
    const reply: DurableJobReply = { id: job.id };
    replies.push(reply);
    try {
      run(job);
    } catch (error) {
      reply.error = describe(error);
      continue;
    }
    for (const folder of job.sync) {
      const waiting = folders.get(folder);
      if (waiting) waiting.push(reply);
      else folders.set(folder, [reply]);
    }
  }
  for (const [folder, waiting] of folders) {
    try {
      syncFolder(folder);
    } catch (error) {
      for (const reply of waiting) reply.error ??= describe(error);
    }
  }
  port.postMessage(replies);
});

/** Adds the jobs waiting for this thread to `batch`, up to MAX_BATCH; false when there were none. */
function take(batch: DurableJobMessage[]): boolean {
  const before = batch.length;
  while (batch.length < MAX_BATCH) {
    const more = receiveMessageOnPort(port);
    if (!more) break;
    batch.push(more.message as DurableJobMessage);
  }
  return batch.length > before;
}

/** The writes (each created, written whole, fsync'd and closed), then the renames, in order. */
function run(job: DurableJobMessage): void {
  // Only files this job created are removed when it fails (never one that was there before).
  const created: string[] = [];
  try {
    for (const write of job.writes) {
      const fd = openSync(write.path, 'wx', 0o600);
      created.push(write.path);
      try {
        const bytes = new Uint8Array(write.data);
        let done = 0;
        while (done < bytes.length) done += writevSync(fd, [bytes.subarray(done)]);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  } catch (error) {
    for (const path of created) {
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    }
    throw error;
  }
  for (const [from, to] of job.renames) renameSync(from, to);
}

function syncFolder(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function describe(error: unknown): DurableJobReply['error'] {
  const { message, code } = error as NodeJS.ErrnoException;
  return { message: String(message), code };
}
