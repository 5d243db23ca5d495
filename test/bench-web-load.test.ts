import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkAllOk, helpPages, PageLoadProcess } from '../bench/web-load.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The web row of the benchmark (bench/web-load.ts) at a tiny size: its open-loop page generator,
// in its child process as the row runs it, against a real popgate serving the help pages. It
// must keep the rate it was set to, see every page of its rotation answered 200, and count an
// answer other than 200 so that the row fails on it. Rates are checked with generous bounds:
// the machine is shared.

const DOMAIN = 'example.test';
const RATE = 50;

describe('bench: the web pages row', () => {
  let server: TestServer;
  let port: number;
  let pages: PageLoadProcess;

  before(async () => {
    server = await startTestServer({ http: { listen: ['127.0.0.1:0'] } });
    await server.addUser(`someone@${DOMAIN}`);
    port = Number(server.app.addresses.http[0].split(':').pop());
    pages = PageLoadProcess.fork();
  });

  after(async () => {
    await pages?.close();
    await server?.close();
  });

  it(`asks the rotation of help pages at ${RATE}/s for a second, every one answered 200`, async () => {
    await pages.start({ host: '127.0.0.1', port, paths: helpPages(DOMAIN), rate: RATE });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const result = await pages.stop();
    // Open loop: one request per 20 ms on the clock, from the start, whatever the answers did.
    assert.ok(result.requests >= 45 && result.requests <= 60, `${result.requests} requests in ${result.windowMs} ms`);
    assert.ok(result.answeredPerSecond >= 0.8 * RATE && result.answeredPerSecond <= 1.2 * RATE, `answered ${result.answeredPerSecond}/s`);
    assert.equal(result.notOk, 0, result.notOkExamples.join(', '));
    assert.equal(result.latencyMs.length, result.requests);
    const p99 = [...result.latencyMs].sort((a, b) => a - b)[Math.floor(0.99 * (result.latencyMs.length - 1))];
    assert.ok(Number.isFinite(p99) && p99 > 0 && p99 < 5000, `p99 ${p99} ms`);
    assert.ok(result.generatorCpuMs > 0, 'the generator reports its own CPU');
    assert.doesNotThrow(() => checkAllOk(result));
  });

  it('counts an answer other than 200, and the row check refuses the window', async () => {
    await pages.start({ host: '127.0.0.1', port, paths: ['/', '/setup/no-such-client'], rate: RATE });
    // Only the window counts: requests before measure() do not.
    await new Promise((resolve) => setTimeout(resolve, 200));
    pages.measure();
    await new Promise((resolve) => setTimeout(resolve, 400));
    const result = await pages.stop();
    assert.ok(result.requests >= 10 && result.requests <= 27, `${result.requests} requests in ${result.windowMs} ms`);
    assert.ok(result.notOk >= result.requests / 2 - 1 && result.notOk <= result.requests / 2 + 1, `${result.notOk} of ${result.requests} not 200`);
    assert.match(result.notOkExamples[0], /^\/setup\/no-such-client: 404$/);
    assert.throws(() => checkAllOk(result), /were not answered 200 \(\/setup\/no-such-client: 404/);
  });
});
