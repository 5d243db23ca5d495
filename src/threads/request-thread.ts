import { Worker, type Transferable } from 'node:worker_threads';

// A worker thread that answers requests, for work that must not run on the event loop that
// serves every session: carried-over password hashes (Argon2 holds a core for up to a second),
// file calls on shared storage, the sender authentication checks. What each of them needs of
// the thread's life is the same, so it is here once:
//
//   - the thread starts with the first request, and does not keep the process alive while it
//     has nothing to answer;
//   - each request carries an id, and the thread answers it with { id, value } or
//     { id, error: { message, code } } (one reply, or several in an array);
//   - should the thread stop, every request under way is rejected with ThreadStopped, and the
//     next request starts a new thread.

export interface ThreadReply<Value> {
  id: number;
  value?: Value;
  error?: { message: string; code?: string };
}

/** The thread stopped (it died, or close() was called) before answering. */
export class ThreadStopped extends Error {}

interface Waiting<Value> {
  resolve: (value: Value) => void;
  reject: (error: Error) => void;
}

export class RequestThread<Request extends object, Value> {
  readonly #script: URL;
  readonly #name: string;
  readonly #workerData: unknown;
  #worker: Worker | undefined;
  #nextId = 0;
  readonly #waiting = new Map<number, Waiting<Value>>();

  /** `name` words the errors ("the file writer thread stopped: …"); `workerData` is given to each thread at start. */
  constructor(script: URL, options: { name: string; workerData?: unknown }) {
    this.#script = script;
    this.#name = options.name;
    this.#workerData = options.workerData;
  }

  /** Requests sent and not yet answered. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Sends `{ id, ...request }` (handing over `transfer`) and resolves with the thread's value for it. */
  request(request: Request, transfer: readonly Transferable[] = []): Promise<Value> {
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    return new Promise<Value>((resolve, reject) => {
      if (this.#waiting.size === 0) worker.ref();
      this.#waiting.set(id, { resolve, reject });
      worker.postMessage({ ...request, id }, transfer);
    });
  }

  /** Stops the thread; requests under way are rejected with ThreadStopped. */
  async close(): Promise<void> {
    const worker = this.#worker;
    if (worker) await worker.terminate();
  }

  #start(): Worker {
    const worker = new Worker(this.#script, this.#workerData === undefined ? {} : { workerData: this.#workerData });
    worker.unref();
    worker.on('message', (replies: ThreadReply<Value> | ThreadReply<Value>[]) => {
      for (const reply of Array.isArray(replies) ? replies : [replies]) {
        const waiting = this.#waiting.get(reply.id);
        if (!waiting) continue;
        this.#waiting.delete(reply.id);
        if (reply.error === undefined) waiting.resolve(reply.value as Value);
        else waiting.reject(Object.assign(new Error(reply.error.message), reply.error.code === undefined ? {} : { code: reply.error.code }));
      }
      // Idle, it must not keep the process alive.
      if (this.#waiting.size === 0) worker.unref();
    });
    const lost = (why: string) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      const waiting = [...this.#waiting.values()];
      this.#waiting.clear();
      for (const { reject } of waiting) reject(new ThreadStopped(`${this.#name} stopped: ${why}`));
    };
    worker.on('error', (error) => lost(error.message));
    worker.on('exit', (code) => lost(`exit code ${code}`));
    this.#worker = worker;
    return worker;
  }
}
