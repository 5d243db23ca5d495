import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { prepareData, releaseWorkerLocks, startApp, type App } from '../server/app.ts';
import cluster from 'node:cluster';
import { flushCompileCache } from 'node:module';
import type { WebService } from '../web/service.ts';
import { superviseWorkers, tellPrimary, workerAssignment, type WorkerAssignment } from '../server/workers.ts';

export async function serve(config: Config, options: { dev: boolean; source: string }): Promise<void> {
  const assignment = workerAssignment();
  if (assignment) return serveAsWorker(assignment);
  const log = createLogger(config.log.level);
  log.info({ event: 'start', config: options.source, data_dir: config.data_dir, pid: process.pid, workers: config.server.workers }, 'popgate starting');
  // The sources loaded so far, stripped and compiled, go to the compile cache now rather than at
  // exit (bin/popgate.js): the workers started next, and a start after a crash, find them there.
  flushCompileCache();
  if (config.server.workers > 1) {
    const metrics = config.metrics.listen.length > 0 ? await serveWorkersMetrics(config, log) : undefined;
    try {
      return await superviseWorkers({
        config,
        source: options.source,
        log,
        prepare: (resolved) => prepareData(resolved, log),
        workerGone: (resolved, pid) => releaseWorkerLocks(resolved, log, pid),
      });
    } finally {
      await metrics?.close();
    }
  }
  // The handlers come first: a listener accepts connections before startApp() has returned,
  // and a SIGTERM in that moment must still shut down gracefully, not kill the process.
  const stopOnSignal = stopper(log);
  const app = await startApp(config, log);
  flushCompileCache(); // with what startApp() loaded for this config
  stopOnSignal.started(app);
  if (options.dev) await bootstrapDemo(app);
  reloadOnHangup(app, log);
}

/** One worker of several (src/server/workers.ts): its config comes from the primary. */
async function serveAsWorker(assignment: WorkerAssignment): Promise<void> {
  const { config, slot, count } = assignment;
  const log = createLogger(config.log.level).child({ worker: slot });
  const stopOnSignal = stopper(log);
  // A primary that is gone (killed with kill -9, crashed) takes its workers with it at once, as
  // if they had been killed too: nobody would restart them, and a half-alive server that
  // goes on delivering mail confuses whoever restarts it. What was acknowledged is on disk.
  process.on('disconnect', () => {
    log.fatal({ event: 'primary_gone' }, 'the primary process is gone: this worker stops now');
    process.exit(1);
  });
  let app: App;
  try {
    app = await startApp(config, log, { worker: { slot, count } });
  } catch (error) {
    tellPrimary({ type: 'start_failed', reason: (error as Error).message });
    throw error;
  }
  stopOnSignal.started(app);
  reloadOnHangup(app, log);
  tellPrimary({ type: 'ready' });
}

/** SIGTERM and SIGINT stop the app gracefully, also when they come while it is starting. */
function stopper(log: Logger) {
  let started: App | undefined;
  let stopping: string | undefined;
  const stop = async (app: App, signal: string) => {
    log.info({ event: 'stop', signal }, 'popgate stopping: finishing sessions');
    await app.close();
    log.info({ event: 'stopped' }, 'popgate stopped');
    process.exit(0);
  };
  const onSignal = (signal: string) => {
    if (stopping) return;
    stopping = signal;
    if (started) void stop(started, signal);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  return {
    stop: onSignal,
    started(app: App) {
      started = app;
      if (stopping) void stop(app, stopping);
    },
  };
}

function reloadOnHangup(app: App, log: Logger): void {
  process.on('SIGHUP', () => {
    try {
      app.reloadTls();
      log.info({ event: 'tls_reloaded' }, 'TLS certificate reloaded');
    } catch (error) {
      log.error({ err: error }, 'TLS reload failed; keeping the previous certificate');
    }
  });
}

/** First start of the development server: a domain, a demo account and a welcome message. */
async function bootstrapDemo(app: App): Promise<void> {
  const pop3 = app.addresses.pop3[0];
  const pop3s = app.addresses.pop3s[0];
  const domains = await app.accounts.listDomains();
  const lines: (string | undefined)[] = ['', 'popgate is running (development server: loopback only, data in ' + app.config.data_dir + ')'];
  if (domains.length === 0) {
    const domain = 'example.test';
    const address = `demo@${domain}`;
    const password = randomBytes(9).toString('base64url');
    await app.accounts.addDomain(domain);
    await app.accounts.addUser(address, password);
    await app.mailstore.deliver(address, welcomeMessage(app.config.hostname, address));
    lines.push(
      '',
      `  Demo account  ${address}`,
      `  Password      ${password}   (shown only this once; change it: npm run popgate -- user passwd ${address})`,
      '',
      '  Fetch the welcome message:',
      pop3 && `    curl pop3://${pop3}/1 --user '${address}:${password}'`,
      pop3s && `    curl --insecure pop3s://${pop3s}/1 --user '${address}:${password}'   (self-signed certificate)`,
    );
  } else {
    lines.push('', `  Domains: ${domains.join(', ')}   (accounts: npm run popgate -- user list)`);
  }
  lines.push('', `  POP3 ${app.addresses.pop3.join(' ') || '-'}   POP3S ${app.addresses.pop3s.join(' ') || '-'}   SMTP ${app.addresses.smtp.join(' ') || '-'}`,
    `  Submission (SMTP AUTH) ${app.addresses.submission.join(' ') || '-'} STARTTLS   ${app.addresses.submissions.join(' ') || '-'} TLS`,
    `  Help pages ${app.addresses.http.map((address) => `http://${address}/`).join(' ') || '-'}   Metrics ${app.addresses.metrics.map((address) => `http://${address}/metrics`).join(' ') || '-'}`,
    ...(app.addresses.http.length > 0
      ? [
          app.config.self_service.enabled ? `  Customers' own settings http://${app.addresses.http[0]}/account` : undefined,
          `  Admin console http://${app.addresses.http[0]}/admin   (first: npm run popgate -- admin add NAME)`,
        ]
      : []),
    '  Stop with Ctrl-C.',
    '');
  process.stdout.write(lines.filter((line) => typeof line === 'string').join('\n') + '\n');
}

function welcomeMessage(hostname: string, address: string): Buffer {
  const date = new Date().toUTCString().replace('GMT', '+0000');
  return Buffer.from(
    [
      `Return-Path: <postmaster@${address.split('@')[1]}>`,
      `From: popgate <postmaster@${address.split('@')[1]}>`,
      `To: <${address}>`,
      'Subject: Welcome to popgate',
      `Date: ${date}`,
      `Message-ID: <${randomBytes(8).toString('hex')}@${hostname}>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      'Your mailbox works: this message was fetched over POP3.',
      '',
      'Mail programs: incoming server (POP3) on the port shown at start,',
      'user name = your full e-mail address.',
      '',
    ].join('\r\n'),
  );
}

/**
 * [metrics] listen of several workers, served by their primary: every worker's values merged
 * (src/metrics/workers.ts). Ready while at least one worker is connected.
 */
async function serveWorkersMetrics(config: Config, log: Logger): Promise<WebService> {
  const [{ WebService }, { collectFromWorkers }, { prometheusContentType }] = await Promise.all([import('../web/service.ts'), import('../metrics/workers.ts'), import('prom-client')]);
  return WebService.start({
    config: { ...config, http: { ...config.http, listen: [] }, https: { ...config.https, listen: [] } },
    log,
    stores: undefined,
    addresses: () => ({}),
    tlsFiles: undefined,
    metrics: { contentType: prometheusContentType, text: collectFromWorkers },
    ready: async () => {
      if (!Object.values(cluster.workers ?? {}).some((worker) => worker?.isConnected())) throw new Error('no worker is running');
    },
    reusePort: false,
  });
}
