import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { VIEWS_DIR } from '../src/web/site.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The help pages are rendered from templates shipped with popgate, which do not change while it
// runs: each is read and compiled once, not on every request (that was most of a page's CPU,
// issue 15's web row in bench/web-load.ts). Counted at the file system: this test file runs in
// a process of its own, where fs.readFileSync is wrapped to count reads under the views folder.

describe('web: templates are read once', () => {
  let server: TestServer;
  let base: string;
  const viewReads: string[] = [];
  const readFileSync = fs.readFileSync;

  before(async () => {
    fs.readFileSync = ((path: fs.PathOrFileDescriptor, options?: unknown) => {
      if (typeof path === 'string' && path.startsWith(VIEWS_DIR)) viewReads.push(path);
      return (readFileSync as (path: fs.PathOrFileDescriptor, options?: unknown) => string | Buffer)(path, options);
    }) as typeof fs.readFileSync;
    // The modules that imported `readFileSync` by name (eta: `import * as fs`) see the wrapper too.
    syncBuiltinESMExports();
    server = await startTestServer({ http: { listen: ['127.0.0.1:0'] } });
    await server.addUser('someone@example.test');
    base = `http://${server.app.addresses.http[0]}`;
  });

  after(async () => {
    fs.readFileSync = readFileSync;
    syncBuiltinESMExports();
    await server?.close();
  });

  it('serves the same pages many times with the templates read from disk only the first time', async () => {
    // "Can I send now?" is rendered for every request (the other help pages only once per
    // language and domain, src/web/site.ts), and the 404 page by @fastify/view, which sets the
    // shared templates' cache on each render: these show whether templates are read again.
    const pages: [string, number][] = [['/', 200], ['/setup/thunderbird', 200], ['/troubleshooting', 200], ['/can-i-send', 200], ['/no-such-page', 404]];
    for (const [path, status] of pages) assert.equal((await fetch(base + path)).status, status, path);
    const firstRound = viewReads.length;
    assert.ok(firstRound > 0, 'the wrapper sees the template reads (else this test proves nothing)');
    for (let round = 0; round < 5; round++) {
      for (const [path, status] of pages) {
        const response = await fetch(base + path);
        assert.equal(response.status, status, path);
        assert.match(await response.text(), /<\/html>/);
      }
    }
    assert.deepEqual(viewReads.slice(firstRound), [], 'templates read again after the first round');
  });
});
