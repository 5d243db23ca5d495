import cluster, { type Worker } from 'node:cluster';
import { createServer } from 'node:net';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log/logger.ts';
import { formatListenAddress, parseListenAddress } from '../net/listen.ts';

// Every core of a machine: `[server] workers = N` runs N worker processes (node:cluster), each
// serving every listener. The kernel spreads new connections over them (SO_REUSEPORT: each
// worker binds the same address itself), so no process hands connections on. The primary only
// supervises: it prepares the data once before the workers start (certificate, schema, queue
// recovery), restarts a worker that dies, passes SIGTERM, SIGINT and SIGHUP on, and tells the
// worker that delivers the outbound queue when another worker has queued mail.
//
// What must be consistent between workers is not kept in any one of them: maildrop locks,
// connections per address, grants, lockouts and sending counts go through the shared
// backends (src/server/app.ts).

/** What a worker is told by its primary, in its environment. */
export interface WorkerAssignment {
  /** 1 … count; stable across restarts (slot 1 delivers the queue). */
  slot: number;
  count: number;
  /** The config as the primary resolved it (port 0 replaced by the free port chosen once). */
  config: Config;
  source: string;
}

/** Messages between a worker and its primary. */
export type WorkerMessage =
  /** The worker's listeners are up. */
  | { type: 'ready' }
  /** The worker could not start; `reason` is one line for the operator. */
  | { type: 'start_failed'; reason: string }
  /** The worker queued outbound mail: the delivering worker should look at the queue. */
  | { type: 'queued' }
  /** To the delivering worker: look at the queue now. */
  | { type: 'wake_delivery' };

const ASSIGNMENT = 'POPGATE_WORKER';

/** The assignment of this process when it is a worker, else undefined. */
export function workerAssignment(): WorkerAssignment | undefined {
  if (!cluster.isWorker) return undefined;
  const text = process.env[ASSIGNMENT];
  return text ? (JSON.parse(text) as WorkerAssignment) : undefined;
}

/** Sends a message to the primary, when there is one. */
export function tellPrimary(message: WorkerMessage): void {
  if (cluster.isWorker && process.connected) process.send?.(message);
}

/** Every listen list of the config. */
const LISTENERS = ['pop3', 'pop3s', 'smtp', 'submission', 'submissions', 'http', 'https'] as const;

/**
 * Port 0 (tests) would give each worker a port of its own: the primary picks one free port per
 * such address, once, and every worker binds that one.
 */
async function resolvePorts(config: Config): Promise<Config> {
  const resolved = structuredClone(config);
  for (const section of LISTENERS) {
    resolved[section].listen = await Promise.all(
      resolved[section].listen.map(async (entry) => {
        const parsed = parseListenAddress(entry);
        if (!parsed.ok || parsed.value.port !== 0) return entry;
        const probe = createServer();
        await new Promise<void>((resolve, reject) => {
          probe.once('error', reject);
          probe.listen({ host: parsed.value.host, port: 0 }, resolve);
        });
        const port = (probe.address() as { port: number }).port;
        await new Promise<void>((resolve) => probe.close(() => resolve()));
        return formatListenAddress({ host: parsed.value.host, port });
      }),
    );
  }
  return resolved;
}

export interface SupervisorOptions {
  config: Config;
  source: string;
  log: Logger;
  /** Work done once before any worker starts (certificate, schema, queue recovery). */
  prepare: (config: Config) => Promise<void>;
  /** What a dead worker leaves behind that nobody else would clean up (its maildrop locks). */
  workerGone: (config: Config, pid: number) => void;
}

/** Runs `config.server.workers` workers until SIGTERM or SIGINT; resolves when all have stopped. */
export async function superviseWorkers(options: SupervisorOptions): Promise<void> {
  const { log, source } = options;
  const config = await resolvePorts(options.config);
  const count = config.server.workers;
  await options.prepare(config);

  const workers = new Map<number, Worker>();
  const slotOf = new Map<Worker, number>();
  /** When each slot's current worker started, and how long the next restart waits. */
  const restarts = new Map<number, { startedAt: number; delayMs: number }>();
  let stopping = false;
  let booting = true;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let resolveBooted!: (failure: string | undefined) => void;
  const booted = new Promise<string | undefined>((resolve) => (resolveBooted = resolve));
  let ready = 0;

  const fork = (slot: number) => {
    const assignment: WorkerAssignment = { slot, count, config, source };
    const worker = cluster.fork({ [ASSIGNMENT]: JSON.stringify(assignment) });
    workers.set(slot, worker);
    slotOf.set(worker, slot);
    const restart = restarts.get(slot);
    restarts.set(slot, { startedAt: Date.now(), delayMs: restart?.delayMs ?? 1000 });
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'ready' && booting && ++ready === count) resolveBooted(undefined);
      else if (message.type === 'start_failed' && booting) resolveBooted(message.reason);
      else if (message.type === 'queued') workers.get(1)?.send({ type: 'wake_delivery' } satisfies WorkerMessage);
    });
  };

  cluster.on('exit', (worker, code, signal) => {
    const slot = slotOf.get(worker);
    slotOf.delete(worker);
    if (slot === undefined) return;
    if (worker.process.pid !== undefined && code !== 0) {
      try {
        options.workerGone(config, worker.process.pid);
      } catch (error) {
        log.error({ err: error, slot }, 'cannot clean up after a worker');
      }
    }
    if (workers.get(slot) === worker) workers.delete(slot);
    if (stopping) {
      if (workers.size === 0) resolveStopped();
      return;
    }
    if (booting) return resolveBooted(`worker ${slot} exited during start-up (code ${code ?? signal})`);
    // A worker that keeps dying soon after its start is restarted less and less often, so a
    // crash loop does not spin; one that ran for a while is restarted at once.
    const restart = restarts.get(slot)!;
    const ranMs = Date.now() - restart.startedAt;
    const delayMs = ranMs > 60_000 ? 0 : restart.delayMs;
    restart.delayMs = ranMs > 60_000 ? 1000 : Math.min(restart.delayMs * 2, 60_000);
    log.error({ event: 'worker_exit', slot, workerPid: worker.process.pid, code, signal, restartInMs: delayMs }, `worker ${slot} exited; restarting it`);
    setTimeout(() => {
      if (stopping) return;
      fork(slot);
      log.info({ event: 'worker_restart', slot, workerPid: workers.get(slot)?.process.pid }, `worker ${slot} restarted`);
    }, delayMs);
  });

  const stopAll = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    if (booting) resolveBooted(undefined); // a stop during start-up is a stop, not a failure
    log.info({ event: 'stop', signal, workers: workers.size }, 'popgate stopping: finishing sessions in every worker');
    if (workers.size === 0) resolveStopped();
    for (const worker of workers.values()) worker.process.kill('SIGTERM');
    // A worker that does not finish within the grace (and some) is ended.
    setTimeout(() => {
      for (const worker of workers.values()) worker.process.kill('SIGKILL');
    }, config.shutdown_grace + 10_000).unref();
  };
  // The terminal's Ctrl-C reaches the workers too; they stop on their own, and must not be restarted.
  process.on('SIGTERM', () => stopAll('SIGTERM'));
  process.on('SIGINT', () => stopAll('SIGINT'));
  process.on('SIGHUP', () => {
    for (const worker of workers.values()) worker.process.kill('SIGHUP');
  });

  for (let slot = 1; slot <= count; slot++) fork(slot);
  const failure = await booted;
  booting = false;
  if (failure !== undefined) {
    stopAll('SIGTERM');
    await stopped;
    throw new Error(failure);
  }
  if (!stopping) log.info({ event: 'workers_ready', workers: count, pids: [...workers.values()].map((w) => w.process.pid) }, `popgate ready: ${count} workers`);
  await stopped;
  log.info({ event: 'stopped' }, 'popgate stopped');
}
