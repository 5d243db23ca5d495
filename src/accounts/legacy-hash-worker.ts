import { parentPort } from 'node:worker_threads';
import type { ThreadReply } from '../threads/request-thread.ts';
import { verifyLegacyHashHere } from './legacy-hash.ts';

// The worker thread of LegacyHashVerifier (legacy-hash.ts): one verification at a time, in order.

parentPort!.on('message', async ({ id, password, stored }: { id: number; password: string; stored: string }) => {
  let reply: ThreadReply<boolean>;
  try {
    reply = { id, value: await verifyLegacyHashHere(password, stored) };
  } catch (error) {
    reply = { id, error: { message: `carried-over password check failed: ${(error as Error).message}` } };
  }
  parentPort!.postMessage(reply);
});
