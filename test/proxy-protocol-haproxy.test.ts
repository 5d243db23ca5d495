import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { freePort, missingEngine, startHaproxy, type RunningHaproxy } from './helpers/engines.ts';
import { capturingLogger } from './helpers/outbound.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { LineReader, sleep } from './helpers/wire.ts';

// A real HAProxy (Debian's) in front of popgate, as in docs/cluster.md: TCP mode, the PROXY
// protocol v2 (send-proxy-v2) to POP3, POP3S and SMTP, v1 (send-proxy) on a second pair of
// frontends, and health checks that announce themselves (check-send-proxy). Clients connect
// to HAProxy from their own loopback addresses; popgate sees only HAProxy (127.0.0.1) and
// must still tell them apart.

const BALANCER = '127.0.0.1';

describe('popgate behind HAProxy', { skip: missingEngine('haproxy') }, () => {
  let server: TestServer;
  let haproxy: RunningHaproxy;
  let captured: ReturnType<typeof capturingLogger>;
  const front = { pop3: 0, pop3s: 0, smtp: 0, pop3V1: 0, smtpV1: 0 };

  before(async () => {
    captured = capturingLogger();
    server = await startTestServer(
      {
        pop3: { proxy_protocol_from: [BALANCER] },
        pop3s: { proxy_protocol_from: [BALANCER] },
        smtp: { listen: ['127.0.0.1:0'], proxy_protocol_from: [BALANCER], error_delay: '0ms' },
      },
      { log: captured.log },
    );
    for (const name of Object.keys(front) as (keyof typeof front)[]) front[name] = await freePort();
    const backendPort = (name: 'pop3' | 'pop3s' | 'smtp') => Number(server.app.addresses[name][0].split(':').pop());
    const pair = (name: string, port: number, target: number, proxy: 'send-proxy' | 'send-proxy-v2') => `
frontend ${name}
    bind 127.0.0.1:${port}
    default_backend ${name}
backend ${name}
    server popgate 127.0.0.1:${target} ${proxy} check inter 500ms check-send-proxy
`;
    haproxy = await startHaproxy(`
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
${pair('pop3', front.pop3, backendPort('pop3'), 'send-proxy-v2')}
${pair('pop3s', front.pop3s, backendPort('pop3s'), 'send-proxy-v2')}
${pair('smtp', front.smtp, backendPort('smtp'), 'send-proxy-v2')}
${pair('pop3_v1', front.pop3V1, backendPort('pop3'), 'send-proxy')}
${pair('smtp_v1', front.smtpV1, backendPort('smtp'), 'send-proxy')}
`);
    await server.addUser('alice@example.test');
  });
  after(async () => {
    await haproxy?.destroy();
    await server?.close();
  });

  async function popLogin(port: number, localAddress: string): Promise<void> {
    const client = await Pop3Client.connect(port, { localAddress });
    assert.match(await client.line(), /^\+OK mail\.example\.test POP3 server ready/, haproxy.output());
    assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    assert.match(await client.command('QUIT'), /^\+OK/);
  }

  async function relay(port: number, localAddress: string): Promise<{ reply: string; hello: string }> {
    const client = await SmtpClient.connect(port, localAddress);
    const hello = await client.hello();
    const reply = await client.send('alice@example.test', ['friend@remote.example'], message(`from ${localAddress}`).replace('From: sender@example.net', 'From: alice@example.test'));
    client.close();
    return { reply, hello };
  }

  test('send-proxy-v2: a POP3 login from 127.0.0.2 lets SMTP from 127.0.0.2 relay, with [127.0.0.2] in Received; 127.0.0.3 is refused', async () => {
    await popLogin(front.pop3, '127.0.0.2');
    const granted = await relay(front.smtp, '127.0.0.2');
    assert.match(granted.hello, /Hello client\.example \[127\.0\.0\.2\]/);
    const id = /^250 2\.0\.0 OK: queued as (\w+)/.exec(granted.reply)?.[1];
    assert.ok(id, granted.reply);
    const spooled = (await server.app.queue.read(id)).toString('latin1');
    assert.match(spooled, /^Received: from client\.example \(\[127\.0\.0\.2\]\)\r\n\tby mail\.example\.test \(popgate\)/);

    const refused = await relay(front.smtp, '127.0.0.3');
    assert.match(refused.hello, /\[127\.0\.0\.3\]/);
    assert.match(refused.reply, /^554 5\.7\.1 Relay access denied/);
    assert.ok(!(await server.app.popBeforeSmtp.list()).some((grant) => grant.key === BALANCER), 'HAProxy\'s own address was never granted');
  });

  test('send-proxy (v1): the same, for 127.0.0.4', async () => {
    await popLogin(front.pop3V1, '127.0.0.4');
    const granted = await relay(front.smtpV1, '127.0.0.4');
    const id = /queued as (\w+)/.exec(granted.reply)?.[1];
    assert.ok(id, granted.reply);
    assert.match((await server.app.queue.read(id)).toString('latin1'), /^Received: from client\.example \(\[127\.0\.0\.4\]\)/);
    assert.match((await relay(front.smtpV1, '127.0.0.5')).reply, /^554 5\.7\.1 Relay access denied/);
  });

  test('POP3S through HAProxy: the header in the clear, TLS end to end between client and popgate', async () => {
    const secure = tlsConnect({ socket: connect({ host: '127.0.0.1', port: front.pop3s, localAddress: '127.0.0.6' }), rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    assert.equal(secure.getPeerCertificate().subject?.CN, 'mail.example.test', 'popgate\'s certificate, not one of HAProxy\'s');
    const reader = new LineReader(secure);
    assert.match(await reader.line(), /^\+OK /);
    assert.match(await reader.command('USER alice@example.test'), /^\+OK/);
    assert.match(await reader.command(`PASS ${PASSWORD}`), /^\+OK Logged in/);
    await reader.command('QUIT');
    assert.ok((await server.app.popBeforeSmtp.list()).some((grant) => grant.key === '127.0.0.6'));
  });

  test('HAProxy\'s health checks (check-send-proxy) pass without an error; a client going around HAProxy is refused', async () => {
    await sleep(1200); // at least two rounds of checks on every backend
    // HAProxy 2.6 sends its checks a header naming the check connection's own addresses.
    assert.ok(captured.lines.some((line) => line.event === 'connect' && line.ip === BALANCER), 'health checks reached popgate as sessions');
    assert.deepEqual(captured.lines.filter((line) => line.event === 'proxy_error'), []);
    const direct = await Pop3Client.connect(Number(server.app.addresses.pop3[0].split(':').pop()), { localAddress: '127.0.0.2' });
    await direct.waitClosed();
    assert.ok(captured.lines.some((line) => line.event === 'proxy_refused' && line.ip === '127.0.0.2'));
  });
});
