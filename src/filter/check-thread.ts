import { RequestThread, ThreadStopped } from '../threads/request-thread.ts';
import { uncheckedResult, type AuthenticationInput, type SenderAuthentication, type SenderChecks } from './authentication.ts';
import type { Authenticator, CheckSettings } from './authenticator.ts';

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

/** The checks' settings, as the thread (and this thread, if it stops) makes them from. */
export type CheckThreadSettings = CheckSettings;

/** What the thread is given at start. */
export type CheckWorkerData = CheckThreadSettings;

export interface CheckRequest {
  message: ArrayBuffer;
  ip: string;
  helo: string;
  sender: string;
}

/** A thread that does not answer this long after the checks' own deadline is given up on. */
const GRACE_MS = 1000;

export class CheckThread implements SenderChecks {
  readonly #settings: CheckThreadSettings;
  readonly #thread: RequestThread<CheckRequest, SenderAuthentication>;
  /** The checks made in this thread, loaded (mailauth and all) only once the thread has stopped. */
  #local: Promise<Authenticator> | undefined;
  /** Checks answered by the thread, and made in this thread instead because it had stopped (for tests and logs). */
  readonly counts = { thread: 0, local: 0 };

  constructor(settings: CheckThreadSettings) {
    this.#settings = settings;
    const workerData: CheckWorkerData = { ...settings, dnsServers: [...settings.dnsServers] };
    this.#thread = new RequestThread(new URL('./check-worker.ts', import.meta.url), { name: 'the sender checks thread', workerData });
  }

  async check(input: AuthenticationInput): Promise<SenderAuthentication> {
    // A copy of its own, handed over (transferred) rather than copied again by postMessage.
    const bytes = new Uint8Array(input.message.length);
    bytes.set(input.message);
    const answer = this.#thread.request({ message: bytes.buffer, ip: input.ip, helo: input.helo, sender: input.sender }, [bytes.buffer]).then(
      (result) => {
        this.counts.thread++;
        return result;
      },
      (error: unknown) => {
        if (!(error instanceof ThreadStopped)) throw error;
        this.counts.local++;
        this.#local ??= import('./authenticator.ts').then(({ checksInThisThread }) => checksInThisThread(this.#settings));
        return this.#local.then((local) => local.check(input));
      },
    );
    let timer: NodeJS.Timeout | undefined;
    const givenUp = new Promise<SenderAuthentication>((resolve) => {
      timer = setTimeout(() => resolve(uncheckedResult(this.#settings.hostname, input, true)), this.#settings.deadlineMs + GRACE_MS);
    });
    try {
      return await Promise.race([answer, givenUp]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the thread; checks under way are made in this thread. */
  close(): Promise<void> {
    return this.#thread.close();
  }
}
