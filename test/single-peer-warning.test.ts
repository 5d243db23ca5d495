import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LoginService } from '../src/auth/login.ts';
import { parseConfig } from '../src/config/load.ts';
import type { SinglePeerWarningSettings } from '../src/net/single-peer-watch.ts';
import { Pop3Server } from '../src/pop3/server.ts';
import { openBackends, type Backends } from '../src/server/app.ts';
import { capturingLogger } from './helpers/outbound.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { proxyV2 } from './helpers/proxy-header.ts';
import { startTestServer } from './helpers/server.ts';
import { sleep } from './helpers/wire.ts';

// A load balancer without the PROXY protocol makes every client look like the balancer, and
// one POP3 login would grant relay to all of them. A listener whose first connections all
// come from one address says so, loudly, once. Every test address here is loopback, which is
// exempt by default (local tools); the tests exempt only 127.0.0.1 so that 127.0.0.2 can stand
// in for a balancer on another machine.

describe('the single-peer warning', () => {
  let dir: string;
  let backends: Backends;
  let captured: ReturnType<typeof capturingLogger>;
  const servers: Pop3Server[] = [];
  const warnings = () => captured.lines.filter((line) => line.event === 'single_peer_address');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'popgate-single-peer-'));
    captured = capturingLogger();
    backends = await openBackends(parseConfig({ hostname: 'mail.example.test', data_dir: dir }, 'test'), captured.log);
  });
  after(async () => {
    await Promise.all(servers.map((server) => server.close(100)));
    await backends.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A real POP3 service on the shared backends, with its own warning settings. */
  function pop3(singlePeerWarning: SinglePeerWarningSettings): Pop3Server {
    const login = new LoginService(backends.accounts, backends.guard, { plaintextWithoutTls: 'loopback', defaultDomain: '' });
    const server = new Pop3Server(
      { hostname: 'mail.example.test', maxConnections: 100, maxConnectionsPerIp: 100, idleTimeoutMs: 60_000, maxLineLength: 1024, apop: false, implementation: 'popgate', singlePeerWarning },
      { login, mailstore: backends.mailstore, locks: backends.locks, log: captured.log, tls: () => undefined },
    );
    servers.push(server);
    return server;
  }

  async function connectFrom(port: number, localAddress: string, header?: Buffer): Promise<void> {
    const client = await Pop3Client.connect(port, { localAddress });
    if (header) client.write(header);
    assert.match(await client.line(), /^\+OK /);
    client.close();
  }

  test('the first N connections all from one address: one warning naming the address, the listener and the setting', async () => {
    const server = pop3({ afterConnections: 5, exemptNetworks: ['127.0.0.1'] });
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 }, false);
    for (let i = 0; i < 4; i++) await connectFrom(port, '127.0.0.2');
    assert.equal(warnings().length, 0, 'not before the 5th');
    for (let i = 0; i < 6; i++) await connectFrom(port, '127.0.0.2');
    assert.equal(warnings().length, 1, 'once, not again');
    const [warning] = warnings();
    assert.equal(warning.level, 40, 'warn level');
    assert.equal(warning.ip, '127.0.0.2');
    assert.equal(warning.listener, 'pop3');
    assert.match(String(warning.msg), /load balancer/);
    assert.match(String(warning.msg), /POP-before-SMTP relay to 127\.0\.0\.2, that is, to everybody behind it/);
    assert.match(String(warning.msg), /proxy_protocol_from = \["127\.0\.0\.2"\] in \[pop3\]/);
  });

  test('no warning when a second address shows up first, for an exempt address, or behind the PROXY protocol', async () => {
    const earlier = warnings().length;
    const mixed = pop3({ afterConnections: 5, exemptNetworks: ['127.0.0.1'] });
    const mixedPort = (await mixed.listen({ host: '127.0.0.1', port: 0 }, false)).port;
    for (const address of ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.2']) await connectFrom(mixedPort, address);

    const exempt = pop3({ afterConnections: 5, exemptNetworks: ['127.0.0.0/8'] });
    const exemptPort = (await exempt.listen({ host: '127.0.0.1', port: 0 }, false)).port;
    for (let i = 0; i < 6; i++) await connectFrom(exemptPort, '127.0.0.2');

    const proxied = pop3({ afterConnections: 5, exemptNetworks: [] });
    const proxiedPort = (await proxied.listen({ host: '127.0.0.1', port: 0, proxyProtocolFrom: ['127.0.0.2'] }, false)).port;
    for (let i = 0; i < 6; i++) await connectFrom(proxiedPort, '127.0.0.2', proxyV2(`203.0.113.${i + 1}`));

    await sleep(50);
    assert.equal(warnings().length, earlier);
  });

  test('by default loopback clients never warn (100 connections from 127.0.0.2)', async () => {
    const own = capturingLogger();
    const server = await startTestServer({}, { log: own.log });
    try {
      for (let i = 0; i < 100; i++) await connectFrom(server.pop3Port, '127.0.0.2');
      await sleep(50);
      assert.equal(own.lines.filter((line) => line.event === 'single_peer_address').length, 0);
    } finally {
      await server.close();
    }
  });
});
