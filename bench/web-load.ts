import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './popgate-server.ts';
import { runRetr } from './pop3-load.ts';
import {
  acceptRun,
  alternate,
  Children,
  CLIENTS,
  HOSTNAME,
  MAILBOXES,
  mailboxUser,
  PASSWORD,
  prepareSingleData,
  ratioRow,
  retrRun,
  seriesRow,
  startSingle,
  warmAccept,
  type Configuration,
  type ScaleOptions,
  type ScaleResult,
  type ScaleRow,
} from './scale.ts';
import { fmt, matchesOnly, median, Samples, summarize } from './stats.ts';

// The web row of `npm run bench` (issue 15): the help pages are served by the same process as
// the mail, so a visitor reading them must not slow mail down. One popgate child with
// `[http] listen` runs the main table's SMTP accept (1 KB, 10 clients) and POP3 RETR (10 KB,
// 10 clients) workloads alone and, alternating run by run, while an open-loop generator asks
// it for help pages at a fixed rate. The row gives each workload's rate with and without the
// pages, their ratio, the server's CPU per message, and the pages' own rate and latency.
//
// Open loop: request n is sent at start + n / rate whatever happened to the earlier ones, and
// its latency is counted from that moment, so a server that falls behind shows as latency (and
// as fewer answers within the window), not as a generator that politely asks less. The
// generator runs in a child process of its own: on the benchmark's event loop, busy checking
// RETR octets, its timers would fire late and its latencies would be the benchmark's, and its
// CPU is then reported apart from the mail generator's.

/** Requests per second of the row, as issue 15 asks. */
export const PAGE_RATE = 200;
/** Before each measured window: keep-alive connections opened and the rotation under way. */
const LEAD_IN_MS = 300;
/** A page not answered within this is counted as a failed request. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Keep-alive connections at most: a few visitors at once; more requests wait in the agent, which the latency shows. */
const MAX_CONNECTIONS = 16;

/**
 * What a visitor of the help site reads: the index, the setup pages of the common clients and
 * of an old one, POP before SMTP, troubleshooting, "Can I send now?", and the Thunderbird
 * autoconfig document for an address of `domain`.
 */
export function helpPages(domain: string): string[] {
  return [
    '/',
    '/setup/thunderbird',
    '/setup/outlook-new',
    '/setup/apple-mail-ios',
    '/setup/android',
    '/setup/outlook-express-6',
    '/pop-before-smtp',
    '/troubleshooting',
    '/can-i-send',
    `/mail/config-v1.1.xml?emailaddress=${encodeURIComponent(`visitor@${domain}`)}`,
  ];
}

export interface PageLoadOptions {
  host: string;
  port: number;
  /** Paths asked in turn; each turn of the rotation switches between English and Japanese. */
  paths: string[];
  /** Requests per second. */
  rate: number;
}

/** The requests scheduled in one measured window, as figures (sent between processes as JSON). */
export interface PageResult {
  /** Requests scheduled in the window. */
  requests: number;
  windowMs: number;
  /** Answers received before the window ended, per second of it: the set rate while the server keeps up. */
  answeredPerSecond: number;
  /** Milliseconds from each request's scheduled time to the end of its answer, for every request answered. */
  latencyMs: number[];
  /** Answers other than 200, and requests that failed or timed out. */
  notOk: number;
  /** A few of them, e.g. "/setup/x: 404". */
  notOkExamples: string[];
  /** The generator's own CPU over the window (user + system), in ms. */
  generatorCpuMs: number;
}

/** The open-loop generator itself; PageLoadProcess runs it in a child process. */
export class PageLoad {
  readonly #options: PageLoadOptions;
  readonly #agent: Agent;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #startedAt = 0;
  #next = 0;
  #window = this.#freshWindow(0);

  constructor(options: PageLoadOptions) {
    this.#options = options;
    this.#agent = new Agent({ keepAlive: true, maxSockets: MAX_CONNECTIONS });
  }

  #freshWindow(at: number) {
    return { at, cpu: process.cpuUsage(), requests: 0, answeredInWindow: 0, latencyMs: [] as number[], notOk: 0, notOkExamples: [] as string[] };
  }

  start(): void {
    this.#startedAt = performance.now();
    this.#next = 0;
    this.measure();
    this.#tick();
  }

  /** The measured window starts now: requests scheduled before it are not counted. */
  measure(): void {
    this.#window = this.#freshWindow(performance.now());
  }

  /** Stops sending, waits for the answers still due, and gives the window's figures. */
  async stop(): Promise<PageResult> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const window = this.#window;
    const endedAt = performance.now();
    const cpu = process.cpuUsage(window.cpu);
    // Answers after the window still give their latency: a slow answer must not vanish from p99.
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
    // No idle connections into the runs without pages.
    this.#agent.destroy();
    const windowMs = endedAt - window.at;
    return {
      requests: window.requests,
      windowMs,
      answeredPerSecond: windowMs > 0 ? (window.answeredInWindow * 1000) / windowMs : 0,
      latencyMs: window.latencyMs,
      notOk: window.notOk,
      notOkExamples: window.notOkExamples,
      generatorCpuMs: (cpu.user + cpu.system) / 1000,
    };
  }

  /** Sends every request whose time has come, then sleeps until the next one is due. */
  #tick(): void {
    const interval = 1000 / this.#options.rate;
    const now = performance.now();
    for (let due = this.#startedAt + this.#next * interval; due <= now; due = this.#startedAt + this.#next * interval) {
      this.#send(this.#next++, due);
    }
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, this.#startedAt + this.#next * interval - performance.now()));
  }

  #send(n: number, scheduledAt: number): void {
    const { paths, host, port } = this.#options;
    const path = paths[n % paths.length];
    const language = Math.floor(n / paths.length) % 2 === 0 ? 'en' : 'ja';
    // Counted in the window the request was scheduled in, even if it answers in a later one.
    const window = this.#window;
    const counted = scheduledAt >= window.at;
    if (counted) window.requests++;
    const done = new Promise<void>((resolve) => {
      let finished = false;
      // Once per request: a response that fails midway also fails its request.
      const finish = (status: number | string) => {
        if (finished) return;
        finished = true;
        if (counted) {
          const at = performance.now();
          window.latencyMs.push(at - scheduledAt);
          if (this.#window === window && this.#timer !== undefined) window.answeredInWindow++;
          if (status !== 200) {
            window.notOk++;
            if (window.notOkExamples.length < 5) window.notOkExamples.push(`${path}: ${status}`);
          }
        }
        resolve();
      };
      const req = request({ host, port, path, agent: this.#agent, headers: { 'accept-language': language }, timeout: REQUEST_TIMEOUT_MS }, (response) => {
        response.resume();
        response.once('end', () => finish(response.statusCode ?? 'no status'));
        response.once('error', (error) => finish(error.message));
      });
      req.once('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.once('error', (error) => finish(error.message));
      req.end();
    });
    this.#inFlight.add(done);
    void done.then(() => this.#inFlight.delete(done));
  }
}

type ToChild = { type: 'start'; options: PageLoadOptions } | { type: 'measure' } | { type: 'stop' };
type FromChild = { type: 'started' } | { type: 'result'; result: PageResult };

/**
 * PageLoad in a child process (this file run with node), driven over the IPC channel: one
 * child for a whole row, started and stopped around each run with pages.
 */
export class PageLoadProcess {
  readonly #child: ChildProcess;
  /** Answers come in the order of the questions. */
  readonly #waiting: { resolve: (message: FromChild) => void; reject: (error: Error) => void }[] = [];
  #exitError: Error | undefined;

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (message: FromChild) => this.#waiting.shift()?.resolve(message));
    child.once('exit', (code, signal) => {
      this.#exitError = new Error(`the page generator exited (${code ?? signal})`);
      for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#exitError);
    });
  }

  static fork(): PageLoadProcess {
    return new PageLoadProcess(fork(import.meta.filename, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  }

  get pid(): number {
    return this.#child.pid!;
  }

  #ask(message: ToChild): Promise<FromChild> {
    if (this.#exitError) return Promise.reject(this.#exitError);
    return new Promise((resolve, reject) => {
      this.#waiting.push({ resolve, reject });
      this.#child.send(message);
    });
  }

  /** Resolves once the first request is sent. */
  async start(options: PageLoadOptions): Promise<void> {
    await this.#ask({ type: 'start', options });
  }

  /** The measured window starts now (the child's clock, on receipt). */
  measure(): void {
    this.#child.send({ type: 'measure' } satisfies ToChild);
  }

  async stop(): Promise<PageResult> {
    const answer = await this.#ask({ type: 'stop' });
    if (answer.type !== 'result') throw new Error(`the page generator answered ${answer.type} to stop`);
    return answer.result;
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.disconnect();
    await exited;
  }
}

/** Throws unless every page of a window was a 200: the row is about pages served, not refused. */
export function checkAllOk(result: PageResult): void {
  if (result.notOk > 0) throw new Error(`${result.notOk} of ${result.requests} help page requests were not answered 200 (${result.notOkExamples.join(', ')})`);
}

// The child's side: started by PageLoadProcess.fork, it ends when the parent disconnects.
if (import.meta.main && process.send) {
  let load: PageLoad | undefined;
  const reply = (message: FromChild) => process.send!(message);
  process.on('message', (message: ToChild) => {
    if (message.type === 'start') {
      load = new PageLoad(message.options);
      load.start();
      reply({ type: 'started' });
    } else if (message.type === 'measure') {
      load?.measure();
    } else {
      const stopping = load;
      load = undefined;
      void stopping?.stop().then((result) => reply({ type: 'result', result }));
    }
  });
}

// --- the row ---

const WORKLOADS = {
  accept: `SMTP accept 1 KB, ${CLIENTS} clients, no pipelining`,
  retr: `POP3 RETR 10 KB, ${CLIENTS} clients`,
};
/** The rows' names, for the table and for --only (each contains "web pages"). */
const LABELS = {
  without: (workload: string) => `web pages beside mail, no pages: ${workload}`,
  with: (workload: string) => `web pages beside mail, pages at ${PAGE_RATE}/s: ${workload}`,
  ratio: (workload: string) => `web pages beside mail, pages / no pages: ${workload}`,
  pages: `web pages beside mail: help pages at ${PAGE_RATE}/s, answered`,
  notOk: 'web pages beside mail: help page answers other than 200',
};

/** What the page windows of one workload's runs add up to. */
class PageTotals {
  readonly rates: number[] = [];
  readonly notOk: number[] = [];
  readonly latency = new Samples();
  requests = 0;
  generatorCpuMs = 0;
  windowMs = 0;

  add(result: PageResult): void {
    this.rates.push(result.answeredPerSecond);
    this.notOk.push(result.notOk);
    for (const ms of result.latencyMs) this.latency.push(ms);
    this.requests += result.requests;
    this.generatorCpuMs += result.generatorCpuMs;
    this.windowMs += result.windowMs;
  }
}

type Series = Awaited<ReturnType<typeof alternate>>[number];
type Timed = { start(): void; end(): void };
type RunOne = Parameters<typeof alternate>[5];

/**
 * One run of `one`, with pages when `config` is the with-pages view: the page generator starts,
 * runs LEAD_IN_MS unmeasured, and its window and the CPU readings then cover the same span —
 * the run, or the part of it the workload marks as timed (RETR's transfers) — in both views.
 */
function besidePages(pages: PageLoadProcess, pageOptions: PageLoadOptions, withPages: Configuration, totals: PageTotals, one: RunOne): RunOne {
  return async (config, run, timed) => {
    const paged = config === withPages;
    if (paged) {
      await pages.start(pageOptions);
      await sleep(LEAD_IN_MS);
    }
    let ended = false;
    const window: Timed = {
      start: () => {
        timed.start();
        if (paged) pages.measure();
      },
      end: () => {
        ended = true;
        timed.end();
      },
    };
    // The window starts now, and again where the workload marks its timed part.
    window.start();
    let figure: Awaited<ReturnType<RunOne>>;
    try {
      figure = await one(config, run, window);
    } finally {
      if (!ended) timed.end();
      if (paged) {
        const result = await pages.stop();
        totals.add(result);
        checkAllOk(result);
      }
    }
    if (!paged) return figure;
    return { ...figure, text: `${figure.text ?? ''}; pages ${fmt(totals.rates.at(-1))}/s, all 200` };
  };
}

/** popgate's CPU seconds over a series' runs. */
const popgateSeconds = (entry: Series) => entry.totals.roleSeconds('popgate');

function pageRows(workload: string, withPages: Series, without: Series, totals: PageTotals): ScaleRow[] {
  // What the pages cost the server: its CPU beyond what the same messages cost without them.
  const mailShare = (popgateSeconds(without) / without.totals.items) * withPages.totals.items;
  const perPageUs = ((popgateSeconds(withPages) - mailShare) * 1e6) / totals.requests;
  const generatorCores = totals.generatorCpuMs / totals.windowMs;
  const latency = summarize(totals.latency.values());
  return [
    {
      workload: `${LABELS.pages}, during ${workload}`,
      unit: 'req/s',
      runs: totals.rates,
      latency,
      note:
        `open loop from a child process (${PAGE_RATE} requests/s on the clock, keep-alive, at most ${MAX_CONNECTIONS} connections; latency from each request's scheduled time), ` +
        `a rotation of ${helpPages(HOSTNAME).length} help pages in English and Japanese; ${totals.requests} requests, all 200; ` +
        `server CPU per page about ${fmt(perPageUs)} µs (popgate's CPU with pages less what the same messages cost without, over the pages); ` +
        `page generator CPU ${fmt(generatorCores)} cores, ${fmt((totals.generatorCpuMs * 1000) / totals.requests)} µs per page (not in the "generator" of the other notes)`,
      details: { requests: totals.requests, serverCpuUsPerPage: perPageUs, pageGeneratorCores: generatorCores, latencyMs: latency },
    },
    {
      workload: `${LABELS.notOk}, during ${workload}`,
      unit: 'answers',
      runs: totals.notOk,
      note: 'a run with any other answer (or a failed request) fails the row',
    },
  ];
}

export async function runWebBesideMail(options: ScaleOptions): Promise<ScaleResult> {
  const { progress, quick } = options;
  const rows: ScaleRow[] = [];
  const labels = (workload: string) => [LABELS.without(workload), LABELS.with(workload), LABELS.ratio(workload), `${LABELS.pages}, during ${workload}`, `${LABELS.notOk}, during ${workload}`];
  const wanted = { accept: labels(WORKLOADS.accept).some((l) => matchesOnly(options.only, l)), retr: labels(WORKLOADS.retr).some((l) => matchesOnly(options.only, l)) };
  if (!wanted.accept && !wanted.retr) return { rows, skipped: [] };
  // As the scale-out rows: runs are short, so more of them (RETR's last about a second).
  const runs = quick ? 2 : Math.max(options.runs, 9);
  const retrRuns = quick ? 3 : Math.max(options.runs, 15);

  const root = mkdtempSync(join(tmpdir(), 'popgate-web-'));
  const children = new Children(options.cpuProfDir);
  let pages: PageLoadProcess | undefined;
  const killAll = () => {
    children.killSync();
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', killAll);
  try {
    progress(`web pages beside mail: SMTP accept and POP3 RETR without and with help pages at ${PAGE_RATE}/s`);
    await prepareSingleData(root, options, wanted.retr);
    const httpPort = await freePort();
    const { config: without, server } = await startSingle(children, 'no pages', root, 1, 46, { config: { http: { listen: [`127.0.0.1:${httpPort}`] } } });
    // The same server seen as a second configuration: `alternate` starts the pages for this one.
    const withPages: Configuration = { ...without, name: `pages at ${PAGE_RATE}/s` };
    progress(`  server: popgate pid ${server.pid}, SMTP ${without.smtp[0].port}, POP3 ${without.pop3[0].port}, HTTP ${httpPort}`);
    pages = PageLoadProcess.fork();
    const pageOptions: PageLoadOptions = { host: '127.0.0.1', port: httpPort, paths: helpPages(HOSTNAME), rate: PAGE_RATE };

    // Unmeasured: every page rendered once per language (and checked), the mail paths warm.
    progress(`  warm-up: help pages for 2 s, page generator pid ${pages.pid} (not measured)`);
    await pages.start(pageOptions);
    await sleep(2000);
    checkAllOk(await pages.stop());
    const boxes = Array.from({ length: MAILBOXES }, (_, i) => mailboxUser(i));
    const configs = [without, withPages];
    const measure = async (workload: string, count: number, one: RunOne): Promise<void> => {
      const totals = new PageTotals();
      const [withSeries, withoutSeries] = await alternate(`web: ${workload}`, 'msg/s', [withPages, without], count, options, besidePages(pages!, pageOptions, withPages, totals, one));
      rows.push(
        seriesRow(LABELS.without(workload), 'msg/s', withoutSeries, 'message', workload === WORKLOADS.accept, 'popgate with [http] listen, no page asked'),
        seriesRow(LABELS.with(workload), 'msg/s', withSeries, 'message', workload === WORKLOADS.accept, `the same popgate while help pages are asked at ${PAGE_RATE}/s (its CPU includes serving them)`),
        ratioRow(LABELS.ratio(workload), withSeries, withoutSeries, 'message'),
        ...pageRows(workload, withSeries, withoutSeries, totals),
      );
    };
    if (wanted.accept) {
      await warmAccept([without], options);
      await measure(WORKLOADS.accept, runs, acceptRun(options, 'web'));
    }
    if (wanted.retr) {
      progress(`  warm-up: ${WORKLOADS.retr} (not measured)`);
      await runRetr({ endpoint: without.pop3, users: boxes, password: PASSWORD });
      await measure(WORKLOADS.retr, retrRuns, retrRun(boxes));
    }
    await children.stop(server);
    return { rows, skipped: [] };
  } finally {
    await pages?.close();
    await children.stopAll(progress);
    process.off('exit', killAll);
    rmSync(root, { recursive: true, force: true });
  }
}
