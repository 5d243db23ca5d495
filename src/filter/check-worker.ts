import { parentPort, workerData } from 'node:worker_threads';
import type { ThreadReply } from '../threads/request-thread.ts';
import type { SenderAuthentication } from './authentication.ts';
import { checksInThisThread } from './authenticator.ts';
import type { CheckRequest, CheckWorkerData } from './check-thread.ts';

// The thread of src/filter/check-thread.ts: one Authenticator with its own resolver and caches,
// checking each message it is sent and answering with the plain result. Authenticator.check
// never throws (a failure or its deadline is a temperror result), so every request is answered.

const authenticator = checksInThisThread(workerData as CheckWorkerData);

parentPort!.on('message', (request: CheckRequest & { id: number }) => {
  void authenticator.check({ message: Buffer.from(request.message), ip: request.ip, helo: request.helo, sender: request.sender }).then((value) => {
    const reply: ThreadReply<SenderAuthentication> = { id: request.id, value };
    parentPort!.postMessage(reply);
  });
});
