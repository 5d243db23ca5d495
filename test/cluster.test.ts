import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { freePort, missingEngine, startHaproxy, startPostgres, startRedis, type RunningEngine } from './helpers/engines.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { MAIN, NODE, spawnNode, type NodeProcess } from './helpers/process.ts';
import { PASSWORD } from './helpers/server.ts';
import { loadConfigFile } from '../src/config/load.ts';
import { silentLogger } from '../src/log/logger.ts';
import { openBackends } from '../src/server/app.ts';
import { startSink, type Sink } from './helpers/sink.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { sleep, waitFor } from './helpers/wire.ts';

// Two popgate nodes on one machine, as two machines would run them: node A on 127.0.1.1 and
// node B on 127.0.1.2, sharing a real Redis (grants, lockouts, counters, maildrop locks,
// account announcements), a real PostgreSQL (accounts, queue index) and one data folder (the
// shared storage). What one node learns, the other knows at once; a node killed with kill -9
// loses no acknowledged message, and its leased mail is delivered by the other; engines that go
// away give temporary errors, and service comes back by itself.

const run = promisify(execFile);
const LEASE_S = 6;

describe('two nodes sharing Redis, PostgreSQL and one data folder', { skip: missingEngine('redis-server', 'postgres') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-cluster-'));
  const data = join(dir, 'data');
  let redis: RunningEngine;
  let postgres: RunningEngine;
  let sink: Sink;
  const nodes: Record<'a' | 'b', { config: string; process?: NodeProcess }> = { a: { config: join(dir, 'a.toml') }, b: { config: join(dir, 'b.toml') } };
  const address = { a: '127.0.1.1', b: '127.0.1.2' };

  function writeNodeConfig(name: 'a' | 'b', ports: { pop3: number; smtp: number }): void {
    writeFileSync(
      nodes[name].config,
      [
        'hostname = "mail.example.test"',
        `data_dir = "${data}"`,
        'shutdown_grace = "1s"',
        '[server]',
        'workers = 1',
        '[cluster]',
        `redis = "${redis.url}"`,
        `node = "${name}"`,
        '[database]',
        `url = "${postgres.url}"`,
        '[pop3]',
        `listen = ["${address[name]}:${ports.pop3}"]`,
        'max_connection_rate_per_ip = 0',
        // HAProxy connects from 127.0.0.1 (see the last test); direct clients use other addresses.
        `proxy_protocol_from = []`,
        '[smtp]',
        `listen = ["${address[name]}:${ports.smtp}"]`,
        'max_connection_rate_per_ip = 0',
        '[auth]',
        'failure_delay = "10ms"',
        'lockout_threshold = 3',
        '[outbound]',
        `transport = { "remote.example" = "127.0.0.3:${sink.port}" }`,
        'tls = "none"',
        'connect_timeout = "2s"',
        'command_timeout = "2s"',
        `lease = "${LEASE_S}s"`,
        'retry_schedule = ["1s"]',
      ].join('\n'),
    );
  }

  const ports = { a: { pop3: 0, smtp: 0 }, b: { pop3: 0, smtp: 0 } };

  async function startNode(name: 'a' | 'b'): Promise<NodeProcess> {
    const node = await spawnNode(nodes[name].config, { listeners: ['pop3', 'smtp'] });
    nodes[name].process = node;
    return node;
  }

  /** The popgate CLI against a node's config (the cluster's backends). */
  async function cli(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const child = execFile(NODE, [MAIN, '--config', nodes.a.config, ...args]);
    if (stdin !== undefined) child.stdin!.end(stdin);
    return new Promise((resolve) => {
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (chunk) => (stdout += chunk));
      child.stderr!.on('data', (chunk) => (stderr += chunk));
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  async function pop3(name: 'a' | 'b', from: string): Promise<Pop3Client> {
    const client = await Pop3Client.connect(ports[name].pop3, { host: address[name], localAddress: from });
    assert.match(await client.line(), /^\+OK/);
    return client;
  }

  async function smtp(name: 'a' | 'b', from: string, port = ports[name].smtp, host = address[name]): Promise<SmtpClient> {
    const client = await SmtpClient.connect(port, from, host);
    assert.match(await client.reply(), /^220/);
    assert.match(await client.command('EHLO client.example'), /^250/);
    return client;
  }

  async function send(client: SmtpClient, from: string, to: string, subject: string): Promise<string> {
    const mail = await client.command(`MAIL FROM:<${from}>`);
    if (!mail.startsWith('250')) return mail;
    const rcpt = await client.command(`RCPT TO:<${to}>`);
    if (!rcpt.startsWith('250')) {
      await client.command('RSET');
      return rcpt;
    }
    await client.command('DATA');
    return client.command(`From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\nHello from the cluster.\r\n.`);
  }

  /**
   * Mail to a local user through both nodes, one message after another, until stopped; then
   * every message that got a 250 must be in the Maildir, once.
   */
  function startLoad(from: string): { stop(): Promise<void>; check(): void } {
    const acknowledged: string[] = [];
    let running = true;
    const tag = `load ${from} ${Date.now()}`;
    const done = (async () => {
      for (let i = 0; running; i++) {
        const name = i % 2 === 0 ? 'a' : 'b';
        try {
          const client = await smtp(name, from);
          const subject = `${tag} ${i}`;
          const answer = await send(client, 'sender@elsewhere.example', 'erin@example.test', subject);
          if (answer.startsWith('250')) acknowledged.push(subject);
          client.close();
        } catch {
          // a refused or dropped connection is the client's to retry
        }
        await sleep(20);
      }
    })();
    return {
      async stop() {
        running = false;
        await done;
      },
      check() {
        assert.ok(acknowledged.length > 5, `${acknowledged.length} messages acknowledged during the test`);
        const maildir = join(data, 'mail', 'example.test', 'erin');
        const texts = ['new', 'cur'].flatMap((sub) => readdirSync(join(maildir, sub)).map((name) => readFileSync(join(maildir, sub, name), 'latin1')));
        for (const subject of acknowledged) {
          assert.equal(texts.filter((text) => text.includes(`Subject: ${subject}\r\n`)).length, 1, `"${subject}" stored once`);
        }
      },
    };
  }

  before(async () => {
    [redis, postgres, sink] = await Promise.all([startRedis(), startPostgres(), startSink({ host: '127.0.0.3' })]);
    for (const name of ['a', 'b'] as const) ports[name] = { pop3: await freePort(address[name]), smtp: await freePort(address[name]) };
    writeNodeConfig('a', ports.a);
    writeNodeConfig('b', ports.b);
    // The CLI works against the cluster's backends before any node runs (and migrates the schema).
    assert.equal((await cli(['domain', 'add', 'example.test'])).code, 0);
    for (const user of ['alice', 'bob', 'carol', 'dave', 'erin']) {
      const added = await cli(['user', 'add', `${user}@example.test`, '--password-stdin'], PASSWORD);
      assert.equal(added.code, 0, added.stderr);
    }
    await Promise.all([startNode('a'), startNode('b')]);
  });

  after(async () => {
    await Promise.all([nodes.a.process?.stop(), nodes.b.process?.stop()]);
    await Promise.all([redis?.destroy(), postgres?.destroy(), sink?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a user added with the CLI logs in on every node; a new one at once', async () => {
    for (const name of ['a', 'b'] as const) {
      const client = await pop3(name, '127.0.2.1');
      assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/, `node ${name}`);
      await client.command('QUIT');
    }
    assert.equal((await cli(['user', 'add', 'frank@example.test', '--password-stdin'], PASSWORD)).code, 0);
    const client = await pop3('b', '127.0.2.1');
    assert.match(await client.login('frank@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
  });

  test('a POP3 login on node A lets the same address relay through node B at once; another address may not', async () => {
    const client = await pop3('a', '127.0.2.2');
    assert.match(await client.login('bob@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
    const relay = await smtp('b', '127.0.2.2');
    assert.match(await relay.command('MAIL FROM:<bob@example.test>'), /^250/);
    assert.match(await relay.command('RCPT TO:<friend@remote.example>'), /^250/);
    relay.close();
    const stranger = await smtp('b', '127.0.2.3');
    await stranger.command('MAIL FROM:<bob@example.test>');
    assert.match(await stranger.command('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 Relay access denied/);
    stranger.close();
    const grants = await cli(['relay', 'list']);
    assert.match(grants.stdout, /127\.0\.2\.2\tbob@example\.test/, 'the CLI sees the grant node A wrote');
  });

  test('a lockout earned on node A holds on node B', async () => {
    for (let i = 0; i < 3; i++) {
      const client = await pop3('a', '127.0.2.4');
      assert.match(await client.login('carol@example.test', `wrong ${i}`), /^-ERR \[AUTH\] Login failed/);
      client.close();
    }
    const client = await pop3('b', '127.0.2.4');
    assert.match(await client.login('carol@example.test', PASSWORD), /^-ERR \[AUTH\] Too many failed logins from your address/);
    client.close();
    assert.equal((await cli(['limits', 'reset', '127.0.2.4'])).code, 0);
  });

  test('a mailbox held by a session on node A is in use on node B', async () => {
    const first = await pop3('a', '127.0.2.5');
    assert.match(await first.login('dave@example.test', PASSWORD), /^\+OK Logged in/);
    const second = await pop3('b', '127.0.2.5');
    assert.match(await second.login('dave@example.test', PASSWORD), /^-ERR \[IN-USE\]/);
    second.close();
    await first.command('QUIT');
    const third = await pop3('b', '127.0.2.5');
    assert.match(await third.login('dave@example.test', PASSWORD), /^\+OK Logged in/);
    await third.command('QUIT');
  });

  test('mail accepted by either node lands once in the shared Maildir, and either node serves it', async () => {
    const a = await smtp('a', '127.0.2.6');
    assert.match(await send(a, 'sender@elsewhere.example', 'erin@example.test', 'via node A'), /^250 2\.0\.0/);
    a.close();
    const b = await smtp('b', '127.0.2.6');
    assert.match(await send(b, 'sender@elsewhere.example', 'erin@example.test', 'via node B'), /^250 2\.0\.0/);
    b.close();
    const client = await pop3('a', '127.0.2.6');
    assert.match(await client.login('erin@example.test', PASSWORD), /^\+OK Logged in, 2 messages/);
    await client.command('QUIT');
  });

  test('user remove on node A is refused on node B within a second', async () => {
    const removed = await cli(['user', 'remove', 'frank@example.test']);
    assert.equal(removed.code, 0, removed.stderr);
    const started = Date.now();
    const client = await smtp('b', '127.0.2.7');
    await client.command('MAIL FROM:<sender@elsewhere.example>');
    assert.match(await client.command('RCPT TO:<frank@example.test>'), /^550 5\.1\.1/);
    client.close();
    assert.ok(Date.now() - started < 1000, `refused after ${Date.now() - started} ms`);
    const pop = await pop3('b', '127.0.2.7');
    assert.match(await pop.login('frank@example.test', PASSWORD), /^-ERR \[AUTH\] Login failed/);
    pop.close();
  });

  test('a forwarding rule and a vacation reply set on node B, as the CLI sets them, are obeyed by node A at once, though A had just found none', { timeout: 60_000 }, async () => {
    // Node B's stores as the CLI opens them; node A remembers a user's settings, absent ones
    // too, for a second: within that second only the announcement can tell it of the change.
    const nodeB = await openBackends(loadConfigFile(nodes.b.config), silentLogger());
    const mailOf = (user: string) => {
      const maildir = join(data, 'mail', 'example.test', user);
      // A mailbox's folders are made with its first message.
      return ['new', 'cur'].flatMap((sub) => (existsSync(join(maildir, sub)) ? readdirSync(join(maildir, sub)) : []).map((name) => readFileSync(join(maildir, sub, name), 'latin1')));
    };
    try {
      for (const user of ['gina', 'hank', 'ivan']) await nodeB.accounts.addUser(`${user}@example.test`, PASSWORD);
      let conclusive = 0;
      for (let round = 1; round <= 3 && conclusive === 0; round++) {
        const sender = `friend${round}@remote.example`;
        await nodeB.forwarding.remove('gina@example.test');
        await nodeB.vacations.remove('ivan@example.test');
        const client = await smtp('a', '127.0.2.8');
        const message = async (subject: string) => {
          assert.match(await client.command(`MAIL FROM:<${sender}>`), /^250/);
          assert.match(await client.command('RCPT TO:<gina@example.test>'), /^250/);
          assert.match(await client.command('RCPT TO:<ivan@example.test>'), /^250/);
          assert.match(await client.command('DATA'), /^354/);
          assert.match(await client.command(`From: ${sender}\r\nSubject: ${subject}\r\n\r\nHello.\r\n.`), /^250/);
        };
        const started = Date.now();
        await message(`before the change ${round}`);
        await nodeB.forwarding.set('gina@example.test', { targets: ['hank@example.test'], keep: false });
        await nodeB.vacations.set('ivan@example.test', { subject: `Away ${round}`, body: 'Back on Monday.', since: Date.now() });
        await message(`after the change ${round}`);
        if (Date.now() - started < 1000) conclusive++;
        client.close();
        await waitFor(() => mailOf('hank').some((text) => text.includes(`Subject: after the change ${round}\r\n`)), 'the forwarded copy in the target\'s mailbox', 10_000);
        assert.ok(!mailOf('gina').some((text) => text.includes(`Subject: after the change ${round}\r\n`)), 'forwarded without a copy kept');
        assert.ok(mailOf('gina').some((text) => text.includes(`Subject: before the change ${round}\r\n`)), 'the message before the rule stayed');
        await waitFor(() => sink.messages.some((m) => m.to.includes(sender) && m.data.includes(`Subject: Away ${round}`)), 'the vacation reply at the sender', 20_000);
        assert.equal(sink.messages.filter((m) => m.to.includes(sender)).length, 1, 'one reply: to the message after the change only');
      }
      assert.ok(conclusive > 0, 'no round ran within the second node A remembers an answer (the machine is too slow to tell)');
    } finally {
      await nodeB.forwarding.remove('gina@example.test');
      await nodeB.vacations.remove('ivan@example.test');
      await nodeB.close();
    }
  });

  test('node A killed with kill -9 while delivering: node B delivers its leased mail after the lease, nothing lost', { timeout: 60_000 }, async () => {
    const client = await pop3('a', '127.0.2.8');
    assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    await client.command('QUIT');
    // Node B is away while node A takes the mail, so A holds every lease; the sink holds every
    // DATA answer, so A's deliveries stay in flight.
    await nodes.b.process!.stop();
    let releaseHold!: () => void;
    const hold = new Promise<void>((resolve) => (releaseHold = resolve));
    sink.behaviour.hold = () => hold;
    const before = sink.messages.length;
    const subjects = [0, 1, 2].map((i) => `leased ${i}`);
    try {
      for (const subject of subjects) {
        const relay = await smtp('a', '127.0.2.8');
        assert.match(await send(relay, 'alice@example.test', 'friend@remote.example', subject), /^250 2\.0\.0/);
        relay.close();
      }
      await waitFor(() => sink.connections > 0, 'node A delivering', 10_000);
      await sleep(500);
      nodes.a.process!.child.kill('SIGKILL');
      await new Promise((resolve) => nodes.a.process!.child.once('exit', resolve));
      // New deliveries go through; the held ones stay unanswered, as they would when the node
      // that sent them died: those messages were never delivered.
      sink.behaviour.hold = undefined;
      const killedAt = Date.now();
      const queued = JSON.parse((await cli(['queue', 'list', '--json'])).stdout) as { leaseOwner?: string }[];
      assert.equal(queued.filter((m) => m.leaseOwner === 'a/1').length, subjects.length, 'the killed node holds the lease of every message');
      await startNode('b');
      const arrivedAt = new Map<string, number>();
      await waitFor(
        () => {
          for (const subject of subjects) {
            if (!arrivedAt.has(subject) && sink.messages.slice(before).some((m) => m.data.toString().includes(`Subject: ${subject}\r\n`))) arrivedAt.set(subject, Date.now());
          }
          return arrivedAt.size === subjects.length;
        },
        'every message delivered by node B',
        30_000,
      );
      for (const subject of subjects) assert.ok(arrivedAt.get(subject)! - killedAt >= LEASE_S * 1000 - 2500, `"${subject}" waited for node A's lease to run out`);
    } finally {
      sink.behaviour.hold = undefined;
      const heldCount = sink.messages.length;
      releaseHold(); // the dead connections' answers go nowhere; their copies are not counted
      await sleep(100);
      sink.messages.splice(heldCount);
      if (nodes.a.process!.child.exitCode !== null || nodes.a.process!.child.signalCode !== null) await startNode('a');
      if (nodes.b.process!.child.exitCode !== null || nodes.b.process!.child.signalCode !== null) await startNode('b');
    }
  });

  test('Redis away mid-load: POP3 logins still work without grants, relay is refused 451, mail to local users flows, no acknowledged message is lost, and all comes back by itself', { timeout: 60_000 }, async () => {
    const load = startLoad('127.0.2.13');
    await sleep(500);
    await redis.stop();
    const client = await pop3('a', '127.0.2.9');
    assert.match(await client.login('bob@example.test', PASSWORD), /^\+OK Logged in/, 'mail can be read');
    await client.command('QUIT');
    const relay = await smtp('b', '127.0.2.9');
    assert.match(await relay.command('MAIL FROM:<bob@example.test>'), /^250/);
    assert.match(await relay.command('RCPT TO:<friend@remote.example>'), /^451 4\.3\.0/, 'relay fails closed, temporarily');
    assert.match(await relay.command('RCPT TO:<erin@example.test>'), /^250/, 'local mail still flows');
    await relay.command('DATA');
    assert.match(await relay.command('Subject: while Redis is away\r\n\r\nHello.\r\n.'), /^250 2\.0\.0/);
    relay.close();
    // Password guessing is still limited, by the node's own fallback guard.
    for (let i = 0; i < 3; i++) {
      const guess = await pop3('a', '127.0.2.14');
      assert.match(await guess.login('carol@example.test', `guess ${i}`), /^-ERR \[AUTH\] Login failed/);
      guess.close();
    }
    const locked = await pop3('a', '127.0.2.14');
    assert.match(await locked.login('carol@example.test', PASSWORD), /^-ERR \[AUTH\] Too many failed logins/, 'locked out by the local guard');
    locked.close();
    await redis.start();
    // Back by itself: a login grants again, and relay works.
    await waitFor(() => nodes.a.process!.log.some((e) => e.event === 'redis_available'), 'node A reconnected', 15_000).catch(() => {});
    let relayed = false;
    for (let attempt = 0; attempt < 30 && !relayed; attempt++) {
      const again = await pop3('a', '127.0.2.9');
      await again.login('bob@example.test', PASSWORD);
      await again.command('QUIT');
      const after = await smtp('b', '127.0.2.9');
      await after.command('MAIL FROM:<bob@example.test>');
      relayed = /^250/.test(await after.command('RCPT TO:<friend@remote.example>'));
      after.close();
      if (!relayed) await sleep(500);
    }
    assert.ok(relayed, 'relay works again after Redis came back');
    await load.stop();
    load.check();
    assert.equal(nodes.a.process!.child.exitCode, null, 'node A never stopped');
    assert.equal(nodes.b.process!.child.exitCode, null, 'node B never stopped');
  });

  test('PostgreSQL away mid-load: logins get [SYS/TEMP], RCPT gets 451, no acknowledged message is lost, and all comes back by itself', { timeout: 90_000 }, async () => {
    const load = startLoad('127.0.2.10');
    try {
      await sleep(500);
      await postgres.stop();
      const pop = await pop3('b', '127.0.2.11');
      assert.match(await pop.login('alice@example.test', PASSWORD), /^-ERR \[SYS\/TEMP\]/);
      pop.close();
      const refused = await smtp('a', '127.0.2.11');
      await refused.command('MAIL FROM:<sender@elsewhere.example>');
      // (An address looked up in the last second is still known without PostgreSQL; dave was not.)
      assert.match(await refused.command('RCPT TO:<dave@example.test>'), /^451 4\.3\.0/);
      refused.close();
      await sleep(1000);
      await postgres.start();
      let back = false;
      for (let attempt = 0; attempt < 40 && !back; attempt++) {
        const client = await pop3('b', '127.0.2.12');
        back = /^\+OK Logged in/.test(await client.login('alice@example.test', PASSWORD));
        if (back) await client.command('QUIT');
        else client.close();
        if (!back) await sleep(500);
      }
      assert.ok(back, 'logins work again');
      await sleep(1000);
    } finally {
      await load.stop();
    }
    load.check();
    assert.equal(nodes.a.process!.child.exitCode, null, 'node A never stopped');
    assert.equal(nodes.b.process!.child.exitCode, null, 'node B never stopped');
  });

  test('HAProxy in front of both nodes with send-proxy-v2: every client is seen with its own address', { skip: missingEngine('haproxy'), timeout: 60_000 }, async () => {
    // The nodes are restarted with the balancer's address trusted for the PROXY protocol.
    for (const name of ['a', 'b'] as const) {
      const config = readFileSync(nodes[name].config, 'utf8').replace('proxy_protocol_from = []', 'proxy_protocol_from = ["127.0.0.1"]');
      writeFileSync(nodes[name].config, config.replace(/\[smtp\]\n/, '[smtp]\nproxy_protocol_from = ["127.0.0.1"]\n'));
      await nodes[name].process!.stop();
      await startNode(name);
    }
    const front = { pop3: await freePort('127.0.0.1'), smtp: await freePort('127.0.0.1') };
    const haproxy = await startHaproxy(
      [
        'defaults',
        '  mode tcp',
        '  timeout connect 5s',
        '  timeout client 1m',
        '  timeout server 1m',
        '  balance roundrobin',
        'frontend pop3',
        `  bind 127.0.0.1:${front.pop3}`,
        '  default_backend pop3',
        'backend pop3',
        `  server a ${address.a}:${ports.a.pop3} send-proxy-v2`,
        `  server b ${address.b}:${ports.b.pop3} send-proxy-v2`,
        'frontend smtp',
        `  bind 127.0.0.1:${front.smtp}`,
        '  default_backend smtp',
        'backend smtp',
        `  server a ${address.a}:${ports.a.smtp} send-proxy-v2`,
        `  server b ${address.b}:${ports.b.smtp} send-proxy-v2`,
        '',
      ].join('\n'),
    );
    try {
        const client = await Pop3Client.connect(front.pop3, { host: '127.0.0.1', localAddress: '127.0.2.21' });
        assert.match(await client.line(), /^\+OK/);
        assert.match(await client.login('bob@example.test', PASSWORD), /^\+OK Logged in/);
        await client.command('QUIT');
        const before = sink.messages.length;
        // Round robin: two connections, one to each node; both see 127.0.2.21.
        for (let i = 0; i < 2; i++) {
          const relay = await smtp('a', '127.0.2.21', front.smtp, '127.0.0.1');
          assert.match(await send(relay, 'bob@example.test', 'friend@remote.example', `through haproxy ${i}`), /^250 2\.0\.0/, `connection ${i + 1}`);
          relay.close();
        }
        const stranger = await smtp('a', '127.0.2.22', front.smtp, '127.0.0.1');
        await stranger.command('MAIL FROM:<bob@example.test>');
        assert.match(await stranger.command('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 Relay access denied/);
        stranger.close();
        await sink.waitFor(before + 2, 15_000);
        for (const message of sink.messages.slice(before)) assert.match(message.data.toString(), /Received: from client\.example \(\[127\.0\.2\.21\]\)/);
    } finally {
      await haproxy.destroy();
    }
  });
});
