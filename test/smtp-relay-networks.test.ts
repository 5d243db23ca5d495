import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { MAIN, NODE, writeConfig } from './helpers/process.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { message, startTestServer } from './helpers/server.ts';

// smtp.relay_networks: clients from the provider's own networks (internal servers) relay
// without a POP3 login, logged and traced as such; off by default, a warning for networks
// wider than a /16 or a /48, and no start at all with 0.0.0.0/0 or ::/0.

function capturedLog() {
  let text = '';
  const sink = new Writable({ write: (chunk, _encoding, done) => ((text += chunk), done()) });
  return { log: pino({ level: 'info' }, sink), lines: () => text };
}

describe('relay by network', () => {
  test('a client of a relay network relays without a POP3 login, logged and traced; others are still refused', async () => {
    const { log, lines } = capturedLog();
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], relay_networks: ['127.0.0.64/26'] } }, { log });
    try {
      const inside = await SmtpClient.connect(server.smtpPort, '127.0.0.70');
      await inside.hello();
      const reply = await inside.send('app@internal.example', ['friend@remote.example'], message('from an internal server'));
      inside.close();
      assert.match(reply, /^250 2\.0\.0 OK: queued as (\w+)/);
      const id = /queued as (\w+)/.exec(reply)![1];
      assert.match(readFileSync(join(server.dir, 'queue', `${id}.eml`), 'utf8'), /^Received: from client\.example \(\[127\.0\.0\.70\]\)\r\n[^]*\(relay allowed for network 127\.0\.0\.64\/26\)/);
      assert.match(lines(), /"event":"relay_use","network":"127\.0\.0\.64\/26","to":"friend@remote\.example"/);

      const outside = await SmtpClient.connect(server.smtpPort, '127.0.0.10');
      await outside.hello();
      assert.match(await outside.send('app@internal.example', ['friend@remote.example'], message('from outside')), /^554 5\.7\.1 Relay access denied/);
      outside.close();
    } finally {
      await server.close();
    }
  });

  test('off by default', async () => {
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } });
    try {
      assert.deepEqual(server.app.config.smtp.relay_networks, []);
      const client = await SmtpClient.connect(server.smtpPort, '127.0.0.70');
      await client.hello();
      assert.match(await client.send('app@internal.example', ['friend@remote.example'], message('no network')), /^554 5\.7\.1 /);
      client.close();
    } finally {
      await server.close();
    }
  });

  test('networks wider than a /16 or a /48 are warned about at start', async () => {
    const { log, lines } = capturedLog();
    const networks = ['10.0.0.0/8', '2001:db8::/32', '::ffff:10.0.0.0/104', '192.168.1.0/24', '2001:db8:1::/48', '172.16.0.0/16'];
    const server = await startTestServer({ smtp: { relay_networks: networks } }, { log });
    await server.close();
    const warned = [...lines().matchAll(/"event":"relay_network_wide","network":"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(warned, ['10.0.0.0/8', '2001:db8::/32', '::ffff:10.0.0.0/104']);
  });

  for (const everything of ['0.0.0.0/0', '::/0']) {
    test(`${everything} is refused: popgate does not start (exit 2, naming the key)`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'popgate-relay-networks-'));
      try {
        const config = writeConfig(dir, `data_dir = "${join(dir, 'data')}"\n[smtp]\nlisten = ["127.0.0.1:0"]\nrelay_networks = ["192.0.2.0/24", "${everything}"]\n`);
        const run = spawnSync(NODE, [MAIN, 'serve', '--config', config], { encoding: 'utf8', timeout: 60_000 });
        assert.equal(run.status, 2, run.stderr);
        assert.match(run.stderr, /smtp\.relay_networks\[1\]: .*whole Internet/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
