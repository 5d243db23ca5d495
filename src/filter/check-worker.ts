import { parentPort, workerData } from 'node:worker_threads';
import { checksInThisThread, type CheckReply, type CheckRequest, type CheckWorkerData } from './check-thread.ts';

// The thread of src/filter/check-thread.ts: one Authenticator with its own resolver and caches,
// checking each message it is sent and answering with the plain result. Authenticator.check
// never throws (a failure or its deadline is a temperror result), so every request is answered.

const authenticator = checksInThisThread(workerData as CheckWorkerData);

parentPort!.on('message', (request: CheckRequest) => {
  void authenticator.check({ message: Buffer.from(request.message), ip: request.ip, helo: request.helo, sender: request.sender }).then((result) => {
    const reply: CheckReply = { id: request.id, result };
    parentPort!.postMessage(reply);
  });
});
