import { Worker } from 'node:worker_threads';
import { Authenticator, uncheckedResult, type AuthenticationInput, type SenderAuthentication, type SenderChecks } from './authentication.ts';
import { FilterDns } from './dns.ts';

// Sender authentication on a thread of its own. Checking a signed 1 KB message (DKIM's
// canonicalization, hashes and RSA or Ed25519 verification, SPF and DMARC evaluation, and the
// garbage they leave) costs several hundred µs of CPU, more than accepting the message itself;
// on the event loop it is time every other session of the process waits, and one process uses
// one core. On this thread the checks run beside the sessions: a process that accepts mail and
// checks it uses a second core, and a burst of signed mail does not hold up the other
// sessions' replies (docs/filtering.md, performance).
//
// The thread (src/filter/check-worker.ts) has its own resolver, DNS cache, DKIM key cache and
// SPF/DMARC memo, built from the same settings: what it answers is exactly what an Authenticator
// in this thread would answer (test/filter-check-thread.test.ts compares the two). Only the
// message's octets and the plain result cross between the threads.
//
// Never worse than checking here: the deadline is kept on this side too (a thread that does not
// answer in time gives the temperror result the deadline gives), and if the thread stops, the
// checks under way, and the next ones while it is started again, are made in this thread.

export interface CheckThreadSettings {
  hostname: string;
  /** [dns] servers and timeout: the thread makes its own resolver with them. */
  dnsServers: readonly string[];
  dnsTimeoutMs: number;
  deadlineMs: number;
}

/** What the thread is given at start. */
export type CheckWorkerData = CheckThreadSettings;

export interface CheckRequest {
  id: number;
  message: ArrayBuffer;
  ip: string;
  helo: string;
  sender: string;
}

export interface CheckReply {
  id: number;
  result: SenderAuthentication;
}

/** A thread that does not answer this long after the checks' own deadline is given up on. */
const GRACE_MS = 1000;

interface Waiting {
  input: AuthenticationInput;
  resolve: (result: SenderAuthentication) => void;
  timer: NodeJS.Timeout;
}

export class CheckThread implements SenderChecks {
  readonly #settings: CheckThreadSettings;
  #worker: Worker | undefined;
  readonly #waiting = new Map<number, Waiting>();
  #nextId = 0;
  #local: Authenticator | undefined;
  /** Checks answered by the thread, and made in this thread instead because it had stopped (for tests and logs). */
  readonly counts = { thread: 0, local: 0 };

  constructor(settings: CheckThreadSettings) {
    this.#settings = settings;
  }

  check(input: AuthenticationInput): Promise<SenderAuthentication> {
    const worker = this.#worker ?? this.#start();
    const id = this.#nextId++;
    // A copy of its own, handed over (transferred) rather than copied again by postMessage.
    const bytes = new Uint8Array(input.message.length);
    bytes.set(input.message);
    return new Promise<SenderAuthentication>((resolve) => {
      const timer = setTimeout(() => this.#settle(id, uncheckedResult(this.#settings.hostname, input, true)), this.#settings.deadlineMs + GRACE_MS);
      if (this.#waiting.size === 0) worker.ref();
      this.#waiting.set(id, { input, resolve, timer });
      const request: CheckRequest = { id, message: bytes.buffer, ip: input.ip, helo: input.helo, sender: input.sender };
      worker.postMessage(request, [bytes.buffer]);
    });
  }

  /** Stops the thread; checks under way are made in this thread. */
  async close(): Promise<void> {
    const worker = this.#worker;
    if (worker) await worker.terminate();
  }

  #settle(id: number, result: SenderAuthentication): void {
    const waiting = this.#waiting.get(id);
    if (!waiting) return;
    this.#waiting.delete(id);
    clearTimeout(waiting.timer);
    if (this.#waiting.size === 0) this.#worker?.unref(); // idle, it must not keep the process alive
    waiting.resolve(result);
  }

  #start(): Worker {
    const workerData: CheckWorkerData = { ...this.#settings, dnsServers: [...this.#settings.dnsServers] };
    const worker = new Worker(new URL('./check-worker.ts', import.meta.url), { workerData });
    worker.unref();
    worker.on('message', (reply: CheckReply) => {
      this.counts.thread++;
      this.#settle(reply.id, reply.result);
    });
    const lost = () => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      for (const [id, waiting] of [...this.#waiting]) {
        this.#waiting.delete(id);
        clearTimeout(waiting.timer);
        this.counts.local++;
        void this.#checkHere(waiting.input).then(waiting.resolve);
      }
    };
    worker.on('error', lost);
    worker.on('exit', lost);
    this.#worker = worker;
    return worker;
  }

  /** The same checks in this thread, with a resolver and caches made the first time they are needed. */
  #checkHere(input: AuthenticationInput): Promise<SenderAuthentication> {
    this.#local ??= checksInThisThread(this.#settings);
    return this.#local.check(input);
  }
}

/** An Authenticator with its own resolver, as the thread makes one (and this thread when it has stopped). */
export function checksInThisThread(settings: CheckThreadSettings): Authenticator {
  const dns = new FilterDns(settings.dnsServers, settings.dnsTimeoutMs);
  return new Authenticator({ hostname: settings.hostname, resolver: dns.resolve, deadlineMs: settings.deadlineMs });
}
