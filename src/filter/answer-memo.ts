import type { MailauthResolver } from './dns.ts';

// Results of SPF and DMARC evaluations, remembered for exactly as long as every DNS answer they
// were computed from is still the answer the filter's DNS cache holds (src/filter/dns.ts).
//
// mailauth's SPF and DMARC evaluations are functions of their inputs (the client address, HELO
// and sender; the From: domains and the identifiers that passed) and of the DNS answers they
// get: the same inputs and the same answers ask the same questions in the same order and give
// the same result, octet for octet. A busy MX evaluates the same few senders' records message
// after message, each time from the same cached answers; measured, the two evaluations cost
// about a fifth of the CPU and a quarter of the garbage of checking a 1 KB signed message
// (docs/filtering.md, performance).
//
// So an evaluation records the answer (the records, or the error) to each question it asked,
// and its result is used again while the DNS cache still holds that very answer (the same
// object) for every one of those questions: a new answer after a cached one expires (a record
// changed, or the same record fetched again), or a question that is not in the cache at all,
// means evaluating afresh. Answers the cache does not keep (a timeout, SERVFAIL) are therefore
// never the basis of a remembered result. An evaluation whose result could depend on anything
// else (SPF's %{t} macro, the current time) is not remembered: `keep` says so.

/** What a resolver can tell of its cache: the answer it would give now without asking, if any. */
export interface CachedAnswers {
  /** The records (or the error) a lookup of `name` and `rrtype` would be answered with now from the cache, undefined if it would ask the DNS. */
  cached(name: string, rrtype: string): object | undefined;
}

type Answer = { name: string; rrtype: string; answer: object };

/** How many results are kept; the least recently used goes first. */
const ENTRY_LIMIT = 1000;

/** Remembered results are shared by every message they are used for: their users only read them. */
export class AnswerBoundMemo<T> {
  readonly #answers: CachedAnswers;
  readonly #entries = new Map<string, { value: T; answers: Answer[] }>();
  readonly #limit: number;

  constructor(answers: CachedAnswers, limit = ENTRY_LIMIT) {
    this.#answers = answers;
    this.#limit = limit;
  }

  /** How many results are kept now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The result of `evaluate` for `key` (every input the evaluation reads besides the DNS):
   * remembered while its answers stand, else evaluated through `resolver` with its answers
   * recorded. `keep` may refuse to remember a result (given the answers it came from).
   */
  async get(key: string, resolver: MailauthResolver, evaluate: (resolver: MailauthResolver) => Promise<T>, keep: (value: T, answers: readonly Answer[]) => boolean = () => true): Promise<T> {
    const entry = this.#entries.get(key);
    if (entry && this.#standing(entry.answers)) {
      // Most recently used last, so that the oldest is the one let go when the memo is full.
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      return entry.value;
    }
    const answers: Answer[] = [];
    let pending = 0;
    let unrecorded = false;
    const recording: MailauthResolver = (name, rrtype) => {
      pending++;
      let lookup: Promise<unknown[]>;
      try {
        lookup = resolver(name, rrtype);
      } catch (error) {
        pending--;
        unrecorded = true;
        throw error;
      }
      return lookup.then(
        (records) => {
          pending--;
          if (records !== null && typeof records === 'object') answers.push({ name, rrtype, answer: records });
          else unrecorded = true;
          return records;
        },
        (error: unknown) => {
          pending--;
          if (error !== null && typeof error === 'object') answers.push({ name, rrtype, answer: error });
          else unrecorded = true;
          throw error;
        },
      );
    };
    const value = await evaluate(recording);
    // Only a result whose every answer came to rest in the cache, and none still awaited.
    if (pending === 0 && !unrecorded && this.#standing(answers) && keep(value, answers)) this.#remember(key, { value, answers });
    return value;
  }

  #standing(answers: readonly Answer[]): boolean {
    for (const { name, rrtype, answer } of answers) if (this.#answers.cached(name, rrtype) !== answer) return false;
    return true;
  }

  #remember(key: string, entry: { value: T; answers: Answer[] }): void {
    this.#entries.delete(key);
    if (this.#entries.size >= this.#limit) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(key, entry);
  }
}
