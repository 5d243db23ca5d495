import { parentPort } from 'node:worker_threads';
import { verifyLegacyHashHere } from './legacy-hash.ts';

// The worker thread of LegacyHashVerifier (legacy-hash.ts): one verification at a time, in order.

parentPort!.on('message', async ({ id, password, stored }: { id: number; password: string; stored: string }) => {
  try {
    parentPort!.postMessage({ id, ok: await verifyLegacyHashHere(password, stored) });
  } catch (error) {
    parentPort!.postMessage({ id, error: (error as Error).message });
  }
});
