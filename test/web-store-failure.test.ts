import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { missingEngine, startRedis, type RunningEngine } from './helpers/engines.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// The web side over a store that goes away: with the grants in Redis, a Redis that stops
// makes "Can I send now?" say so at once (503, no hang, no crash), /healthz/ready report it and
// /metrics report the store's gauges as unknown (NaN) with popgate_store_up 0; all recover by themselves
// when Redis is back.

const missing = missingEngine('redis-server');

describe('web pages while the grant store is away', { skip: missing }, () => {
  let redis: RunningEngine;
  let server: TestServer;
  let web: string;
  let metrics: string;

  before(async () => {
    redis = await startRedis();
    server = await startTestServer({ cluster: { redis: redis.url }, http: { listen: ['127.0.0.1:0'] }, metrics: { listen: ['127.0.0.1:0'] } });
    await server.addUser('alice@example.com');
    web = `http://${server.app.addresses.http[0]}`;
    metrics = `http://${server.app.addresses.metrics[0]}/metrics`;
  });
  after(async () => {
    await server?.close();
    await redis?.destroy();
  });

  const get = async (url: string) => {
    const started = performance.now();
    const response = await fetch(url);
    return { status: response.status, body: await response.text(), seconds: (performance.now() - started) / 1000 };
  };

  test('Redis stops: a prompt 503 that says so; Redis back: the grant answer again', async () => {
    assert.equal((await get(`${web}/healthz/ready`)).status, 200);
    await redis.stop();
    const page = await get(`${web}/can-i-send`);
    assert.equal(page.status, 503);
    assert.match(page.body, /This cannot be checked right now/);
    assert.ok(page.seconds < 15, `answered after ${page.seconds} s`);
    const ready = await get(`${web}/healthz/ready`);
    assert.equal(ready.status, 503);
    assert.match(ready.body, /^not ready: /);
    const scrape = await get(metrics);
    assert.equal(scrape.status, 200);
    assert.match(scrape.body, /^popgate_store_up 0$/m);
    assert.match(scrape.body, /^popgate_pop_before_smtp_grants NaN$/im, 'unknown, not a stale number');
    // The help pages themselves do not need Redis.
    assert.equal((await get(`${web}/troubleshooting`)).status, 200);

    await redis.start();
    const deadline = Date.now() + 30_000;
    let back = await get(`${web}/can-i-send`);
    while (back.status !== 200 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      back = await get(`${web}/can-i-send`);
    }
    assert.equal(back.status, 200);
    assert.match(back.body, /answer-no/);
    const pop3 = await Pop3Client.connect(server.pop3Port);
    await pop3.line();
    assert.match(await pop3.login('alice@example.com', PASSWORD), /^\+OK/);
    await pop3.command('QUIT');
    assert.match((await get(`${web}/can-i-send`)).body, /answer-yes/);
    assert.equal((await get(`${web}/healthz/ready`)).status, 200);
    assert.match((await get(metrics)).body, /^popgate_pop_before_smtp_grants 1$/m);
  });
});
