import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pop3LoginAnswer } from './helpers/pop3-client.ts';
import { spawnNode, writeConfig, type NodeProcess } from './helpers/process.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { startSink, type Sink } from './helpers/sink.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';

// /metrics read as Prometheus reads it (parsed by an independent parser of the text format),
// and checked against what was done: a login raises the login counter, a grant the gauge, a
// relay attempt the decision counter … in one process, and merged over two worker processes.

interface Sample {
  labels?: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
}
interface Family {
  name: string;
  type: string;
  help: string;
  metrics: Sample[];
}
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

async function scrape(url: string, headers: Record<string, string> = {}): Promise<Map<string, Family>> {
  const response = await fetch(url, { headers });
  assert.equal(response.status, 200, await response.clone().text());
  assert.match(response.headers.get('content-type')!, /^text\/plain; version=0\.0\.4/);
  return new Map(parsePrometheus(await response.text()).map((family) => [family.name, family]));
}

/** The value of one sample (labels matched exactly), 0 when the sample is not there yet. */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name);
  assert.ok(family, `${name} is exported`);
  const sample = family.metrics.find((m) => JSON.stringify(Object.entries(m.labels ?? {}).sort()) === JSON.stringify(Object.entries(labels).sort()));
  return sample ? Number(sample.value) : 0;
}

/** Observations of a histogram over all its label sets (the parser keeps their +Inf buckets). */
function observations(families: Map<string, Family>, name: string): number {
  const family = families.get(name);
  assert.equal(family?.type, 'HISTOGRAM', name);
  return family.metrics.reduce((sum, sample) => sum + Number(sample.buckets?.['+Inf'] ?? 0), 0);
}

describe('metrics of one process', () => {
  let server: TestServer;
  let metricsUrl: string;
  let webUrl: string;

  before(async () => {
    server = await startTestServer({
      smtp: { listen: ['127.0.0.1:0'] },
      http: { listen: ['127.0.0.1:0'] },
      metrics: { listen: ['127.0.0.1:0'], token: 'a-long-enough-secret-token' },
      auth: { lockout_threshold: 2, failure_delay: '0s' },
    });
    await server.addUser('alice@example.com');
    metricsUrl = `http://${server.app.addresses.metrics[0]}/metrics`;
    webUrl = `http://${server.app.addresses.http[0]}/metrics`;
  });
  after(() => server.close());

  test('every family is named popgate_… with its unit, and typed', async () => {
    const families = await scrape(metricsUrl);
    const expected: Record<string, string> = {
      popgate_connections_total: 'counter',
      popgate_connections_open: 'gauge',
      popgate_connection_duration_seconds: 'histogram',
      popgate_logins_total: 'counter',
      popgate_login_duration_seconds: 'histogram',
      popgate_lockouts_total: 'counter',
      popgate_relay_decisions_total: 'counter',
      popgate_messages_accepted_total: 'counter',
      popgate_message_acceptance_duration_seconds: 'histogram',
      popgate_deliveries_total: 'counter',
      popgate_delivery_duration_seconds: 'histogram',
      popgate_pop_before_smtp_grants: 'gauge',
      popgate_queue_messages: 'gauge',
      popgate_queue_oldest_age_seconds: 'gauge',
      popgate_store_up: 'gauge',
      popgate_filter_verdicts_total: 'counter',
    };
    for (const [name, type] of Object.entries(expected)) assert.equal(families.get(name)?.type.toLowerCase(), type, name);
    assert.equal(value(families, 'popgate_store_up'), 1);
  });

  test('a POP3 login raises the login counter and the grant gauge; a wrong password the failures, then a lockout', async () => {
    const before = await scrape(metricsUrl);
    assert.match(await pop3LoginAnswer(server.pop3Port, 'alice@example.com', PASSWORD), /^\+OK/);
    const afterLogin = await scrape(metricsUrl);
    assert.equal(value(afterLogin, 'popgate_logins_total', { protocol: 'pop3', result: 'success' }), value(before, 'popgate_logins_total', { protocol: 'pop3', result: 'success' }) + 1);
    assert.equal(value(afterLogin, 'popgate_pop_before_smtp_grants'), 1);
    assert.ok(value(afterLogin, 'popgate_connections_total', { listener: 'pop3' }) >= 1);
    assert.equal(observations(afterLogin, 'popgate_login_duration_seconds'), observations(before, 'popgate_login_duration_seconds') + 1);
    // Two failures from one address reach lockout_threshold = 2.
    for (let i = 0; i < 2; i++) assert.match(await pop3LoginAnswer(server.pop3Port, 'alice@example.com', 'wrong', '127.0.0.4'), /^-ERR \[AUTH\]/);
    const afterFailures = await scrape(metricsUrl);
    assert.equal(value(afterFailures, 'popgate_logins_total', { protocol: 'pop3', result: 'failed' }), 2);
    assert.equal(value(afterFailures, 'popgate_lockouts_total'), 1);
    assert.match(await pop3LoginAnswer(server.pop3Port, 'alice@example.com', PASSWORD, '127.0.0.4'), /^-ERR \[AUTH\] Too many failed logins/);
    assert.equal(value(await scrape(metricsUrl), 'popgate_logins_total', { protocol: 'pop3', result: 'locked' }), 1);
  });

  test('relay decisions by result, accepted messages, and the queue they leave behind', async () => {
    // 127.0.0.1 holds the grant of the previous test; 127.0.0.5 holds none.
    if (value(await scrape(metricsUrl), 'popgate_pop_before_smtp_grants') === 0) await pop3LoginAnswer(server.pop3Port, 'alice@example.com', PASSWORD);
    const granted = await SmtpClient.connect(server.smtpPort);
    await granted.hello();
    assert.match(await granted.send('alice@example.com', ['someone@remote.example'], 'Subject: out\r\n\r\nhello\r\n'), /^250/);
    assert.match(await granted.send('someone@remote.example', ['alice@example.com'], 'Subject: in\r\n\r\nhello\r\n'), /^250/);
    granted.close();
    const stranger = await SmtpClient.connect(server.smtpPort, '127.0.0.5');
    await stranger.hello();
    await stranger.command('MAIL FROM:<x@remote.example>');
    assert.match(await stranger.command('RCPT TO:<y@elsewhere.example>'), /^554 5\.7\.1 Relay access denied/);
    stranger.close();
    const families = await scrape(metricsUrl);
    // The message from remote.example to alice went through the inbound filter.
    const verdicts = families.get('popgate_filter_verdicts_total')!.metrics;
    assert.ok(verdicts.some((sample) => sample.labels?.check === 'message' && Number(sample.value) >= 1), JSON.stringify(verdicts));
    assert.equal(value(families, 'popgate_relay_decisions_total', { result: 'allowed' }), 1);
    assert.equal(value(families, 'popgate_relay_decisions_total', { result: 'denied' }), 1);
    assert.equal(value(families, 'popgate_messages_accepted_total', { outcome: 'accepted' }), 2);
    assert.equal(observations(families, 'popgate_message_acceptance_duration_seconds'), 2);
    assert.equal(value(families, 'popgate_queue_messages'), 1, 'outbound delivery is off in tests: the relayed message waits');
    const age = value(families, 'popgate_queue_oldest_age_seconds');
    assert.ok(age >= 0 && age < 600, `oldest age ${age}`);
  });

  test('on the web listeners /metrics needs the bearer token', async () => {
    const anonymous = await fetch(webUrl);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get('www-authenticate'), 'Bearer realm="popgate metrics"');
    assert.equal((await fetch(webUrl, { headers: { authorization: 'Bearer a-long-enough-secret-tokeX' } })).status, 401);
    const families = await scrape(webUrl, { authorization: 'Bearer a-long-enough-secret-token' });
    assert.ok(families.has('popgate_logins_total'));
  });
});

describe('delivery metrics', () => {
  let sink: Sink;
  let server: TestServer;

  before(async () => {
    sink = await startSink({ host: '127.0.0.2' });
    server = await startTestServer({
      smtp: { listen: ['127.0.0.1:0'] },
      metrics: { listen: ['127.0.0.1:0'] },
      outbound: { enabled: true, tls: 'none', transport: { 'remote.example': `127.0.0.2:${sink.port}` } },
    });
    await server.addUser('alice@example.com');
  });
  after(async () => {
    await server?.close();
    await sink?.close();
  });

  test('a relayed message delivered raises the delivery counter and empties the queue gauge', async () => {
    assert.match(await pop3LoginAnswer(server.pop3Port, 'alice@example.com', PASSWORD), /^\+OK/);
    const smtp = await SmtpClient.connect(server.smtpPort);
    await smtp.hello();
    assert.match(await smtp.send('alice@example.com', ['bob@remote.example'], 'Subject: out\r\n\r\nhello\r\n'), /^250/);
    smtp.close();
    const url = `http://${server.app.addresses.metrics[0]}/metrics`;
    const deadline = Date.now() + 30_000;
    let families = await scrape(url);
    while (value(families, 'popgate_deliveries_total', { outcome: 'delivered' }) === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      families = await scrape(url);
    }
    assert.equal(value(families, 'popgate_deliveries_total', { outcome: 'delivered' }), 1);
    assert.equal(observations(families, 'popgate_delivery_duration_seconds'), 1);
    assert.equal(sink.messages.length, 1);
    for (let i = 0; i < 50 && value(families, 'popgate_queue_messages') !== 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      families = await scrape(url);
    }
    assert.equal(value(families, 'popgate_queue_messages'), 0);
  });
});

describe('metrics of two worker processes, merged by their primary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-metrics-'));
  const data = join(dir, 'data');
  let node: NodeProcess;

  before(async () => {
    const accounts = new SqliteAccountStore(openDatabase(data), true);
    await accounts.addDomain('example.test');
    await accounts.addUser('alice@example.test', PASSWORD);
    await accounts.close();
    const config = writeConfig(
      dir,
      [
        'hostname = "mail.example.test"',
        `data_dir = "${data}"`,
        'shutdown_grace = "1s"',
        '[server]',
        'workers = 2',
        '[pop3]',
        'listen = ["127.0.0.1:0"]',
        'max_connection_rate_per_ip = 0',
        '[smtp]',
        'listen = []',
        '[http]',
        'listen = ["127.0.0.1:0"]',
        '[metrics]',
        'listen = ["127.0.0.1:0"]',
      ].join('\n'),
    );
    node = await spawnNode(config, { listeners: ['metrics', 'pop3', 'http'], timeoutMs: 60_000 });
  });
  after(async () => {
    await node?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('every worker serves the help pages; /metrics counts the logins of both workers; health checks on the primary', async () => {
    const web = `http://127.0.0.1:${node.ports.http}`;
    for (let i = 0; i < 4; i++) assert.equal((await fetch(`${web}/`)).status, 200);
    // 16 connections: the kernel's spread leaves one worker without any once in 30,000 runs.
    const logins = 16;
    for (let i = 0; i < logins; i++) assert.match(await pop3LoginAnswer(node.ports.pop3, 'alice@example.test', PASSWORD), /^\+OK/);
    const servedBy = new Set(node.log.filter((e) => e.event === 'login').map((e) => e.pid));
    const metrics = `http://127.0.0.1:${node.ports.metrics}`;
    const families = await scrape(`${metrics}/metrics`);
    assert.equal(servedBy.size, 2, 'both workers served logins');
    assert.equal(value(families, 'popgate_logins_total', { protocol: 'pop3', result: 'success' }), logins);
    assert.equal(value(families, 'popgate_connections_total', { listener: 'pop3' }), logins);
    // The store's gauges are read once (worker 1), not once per worker.
    assert.equal(value(families, 'popgate_pop_before_smtp_grants'), 1);
    assert.equal(value(families, 'popgate_store_up'), 1);
    assert.equal((await fetch(`${metrics}/healthz/ready`)).status, 200);
    assert.equal((await fetch(`${web}/healthz/ready`)).status, 200);
  });
});
