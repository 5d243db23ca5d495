import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { sleep, waitFor } from './helpers/wire.ts';

// Every limit answers with a clear -ERR, ends only the offending session, and leaves the
// server serving everyone else. Times are configured short; only lower bounds are asserted.

/** Without TLS the test server starts in milliseconds (no key generation). */
const NO_TLS = { tls: { self_signed: false }, pop3s: { listen: [] } };

async function greeted(server: TestServer, localAddress?: string): Promise<Pop3Client> {
  const client = await Pop3Client.connect(server.pop3Port, { localAddress });
  assert.match(await client.line(), /^\+OK /);
  return client;
}

async function loggedIn(server: TestServer, localAddress?: string): Promise<Pop3Client> {
  const client = await greeted(server, localAddress);
  assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
  return client;
}

describe('command line length (pop3.max_line_length)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ...NO_TLS, pop3: { max_line_length: 256 } });
    await server.addUser('alice@example.test');
    await server.deliver('alice@example.test', message('one'));
  });
  after(() => server.close());

  test('a line of exactly max_line_length octets, CRLF included, is accepted', async () => {
    const client = await greeted(server);
    const command = 'USER ' + 'a'.repeat(256 - 'USER '.length - 2);
    assert.equal(Buffer.byteLength(`${command}\r\n`), 256);
    assert.equal(await client.command(command), '+OK Send your password with PASS');
    client.close();
  });

  test('a longer line gets "-ERR Line too long" and the connection is closed, while another session carries on', async () => {
    const other = await loggedIn(server);
    const client = await greeted(server);
    assert.equal(await client.command('USER ' + 'a'.repeat(300)), '-ERR Line too long (the limit is 256 octets), closing connection');
    await client.waitClosed();
    assert.match(await other.command('STAT'), /^\+OK 1 \d+$/);
    assert.match(await other.command('QUIT'), /^\+OK Goodbye/);
  });

  test('a line is refused as soon as it is over the limit, without waiting for its CRLF', async () => {
    const client = await greeted(server);
    client.write('X'.repeat(300));
    assert.match(await client.line(), /^-ERR Line too long/);
    await client.waitClosed();
  });

  test('the limit also holds in the TRANSACTION state', async () => {
    const client = await loggedIn(server);
    assert.match(await client.command('LIST ' + '1'.repeat(400)), /^-ERR Line too long/);
    await client.waitClosed();
    const again = await loggedIn(server); // the maildrop lock was released
    await again.command('QUIT');
  });
});

describe('idle timeout (pop3.idle_timeout)', () => {
  // Long enough for a login (scrypt) on a busy machine.
  const IDLE_MS = 1500;
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ...NO_TLS, pop3: { idle_timeout: `${IDLE_MS}ms` } });
    await server.addUser('alice@example.test');
    await server.deliver('alice@example.test', message('one'));
    await server.deliver('alice@example.test', message('two'));
  });
  after(() => server.close());

  test('a silent client gets "-ERR Autologout" and is disconnected, no sooner than idle_timeout', async () => {
    const started = performance.now();
    const client = await greeted(server);
    assert.match(await client.line(), /^-ERR Autologout/);
    assert.ok(performance.now() - started >= IDLE_MS, `autologout after ${Math.round(performance.now() - started)} ms`);
    await client.waitClosed();
  });

  test('each command restarts the timer: a client active more often than idle_timeout stays connected', async () => {
    const client = await loggedIn(server);
    const started = performance.now();
    while (performance.now() - started < IDLE_MS * 2.5) {
      await sleep(IDLE_MS / 4);
      assert.equal(await client.command('NOOP'), '+OK');
    }
    assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
  });

  test('a logged-in session that times out deletes nothing and releases the maildrop lock', async () => {
    const client = await loggedIn(server);
    assert.equal(await client.command('DELE 1'), '+OK Message 1 marked for deletion');
    assert.match(await client.line(), /^-ERR Autologout/);
    await client.waitClosed();

    const again = await loggedIn(server); // the lock is free again, no [IN-USE]
    assert.match(await again.command('STAT'), /^\+OK 2 \d+$/, 'the DELE of the timed-out session was not applied');
    assert.match(await again.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
  });
});

describe('connection limits (pop3.max_connections, pop3.max_connections_per_ip)', () => {
  let server: TestServer;
  const open: Pop3Client[] = [];
  const connect = async (localAddress: string) => {
    const client = await Pop3Client.connect(server.pop3Port, { localAddress });
    open.push(client);
    return client;
  };
  before(async () => {
    server = await startTestServer({ ...NO_TLS, pop3: { max_connections: 4, max_connections_per_ip: 2 } });
  });
  afterEach(async () => {
    for (const client of open.splice(0)) client.close();
    await waitFor(() => server.app.pop3.sessionCount === 0, 'all sessions to end');
  });
  after(() => server.close());

  test('one address beyond max_connections_per_ip is refused with [SYS/TEMP], other addresses are still served', async () => {
    for (let i = 0; i < 2; i++) assert.match(await (await connect('127.0.0.1')).line(), /^\+OK /);
    const refused = await connect('127.0.0.1');
    assert.equal(await refused.line(), '-ERR [SYS/TEMP] Too many connections from your address, try again later');
    await refused.waitClosed();

    const elsewhere = await connect('127.0.0.2');
    assert.match(await elsewhere.line(), /^\+OK /, 'the per-address limit counts each address separately');
    assert.equal(server.app.pop3.sessionCount, 3);
  });

  test('once a connection from that address closes, a new one is accepted', async () => {
    const first = await connect('127.0.0.1');
    await first.line();
    await (await connect('127.0.0.1')).line();
    assert.match(await (await connect('127.0.0.1')).line(), /^-ERR \[SYS\/TEMP\] Too many connections from your address/);

    assert.match(await first.command('QUIT'), /^\+OK Goodbye/);
    await first.waitClosed();
    await waitFor(() => server.app.pop3.sessionCount === 1, 'the closed session to be counted out');
    assert.match(await (await connect('127.0.0.1')).line(), /^\+OK /);
  });

  test('beyond max_connections every address is refused "on this server"; closing one makes room again', async () => {
    const sessions: Pop3Client[] = [];
    for (const address of ['127.0.0.1', '127.0.0.1', '127.0.0.2', '127.0.0.2']) {
      const client = await connect(address);
      assert.match(await client.line(), /^\+OK /);
      sessions.push(client);
    }
    const refused = await connect('127.0.0.3');
    assert.equal(await refused.line(), '-ERR [SYS/TEMP] Too many connections on this server, try again later');
    await refused.waitClosed();

    sessions[3].close();
    await waitFor(() => server.app.pop3.sessionCount === 3, 'the closed session to be counted out');
    const admitted = await connect('127.0.0.3');
    assert.match(await admitted.line(), /^\+OK /);
    assert.match(await admitted.command('CAPA'), /^\+OK Capability list follows/, 'the admitted session is fully served');
  });

  test('refused connections do not count against the limits', async () => {
    for (let i = 0; i < 2; i++) await (await connect('127.0.0.1')).line();
    for (let i = 0; i < 5; i++) {
      const refused = await connect('127.0.0.1');
      assert.match(await refused.line(), /^-ERR \[SYS\/TEMP\] Too many connections/);
      await refused.waitClosed();
    }
    assert.equal(server.app.pop3.sessionCount, 2);
    assert.match(await (await connect('127.0.0.2')).line(), /^\+OK /);
    assert.match(await (await connect('127.0.0.2')).line(), /^\+OK /);
  });
});

describe('failed-login delay (auth.failure_delay)', () => {
  const DELAY_MS = 100;
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ...NO_TLS, auth: { failure_delay: `${DELAY_MS}ms` } });
    await server.addUser('alice@example.test');
  });
  after(() => server.close());

  async function timedPass(client: Pop3Client, password: string): Promise<{ reply: string; ms: number }> {
    const started = performance.now();
    const reply = await client.command(`PASS ${password}`);
    return { reply, ms: performance.now() - started };
  }

  test('the -ERR for a wrong password comes no sooner than failure_delay', async () => {
    const client = await greeted(server, '127.0.0.11');
    await client.command('USER alice@example.test');
    const { reply, ms } = await timedPass(client, 'wrong password');
    assert.match(reply, /^-ERR \[AUTH\] Login failed/);
    assert.ok(ms >= DELAY_MS, `answered after ${Math.round(ms)} ms`);
    client.close();
  });

  test('an unknown user is delayed the same way, so timing does not reveal which addresses exist', async () => {
    const client = await greeted(server, '127.0.0.12');
    await client.command('USER nobody@example.test');
    const { reply, ms } = await timedPass(client, PASSWORD);
    assert.match(reply, /^-ERR \[AUTH\] Login failed/);
    assert.ok(ms >= DELAY_MS, `answered after ${Math.round(ms)} ms`);
    client.close();
  });

  test('the delay grows with further failures from the same address', async () => {
    const client = await greeted(server, '127.0.0.13');
    await client.command('USER alice@example.test');
    await timedPass(client, 'wrong 1');
    await client.command('USER alice@example.test');
    const { reply, ms } = await timedPass(client, 'wrong 2');
    assert.match(reply, /^-ERR \[AUTH\] Login failed/);
    assert.ok(ms >= 2 * DELAY_MS, `second failure answered after ${Math.round(ms)} ms`);
    client.close();
  });

  test('a client that hangs up during the delay does not disturb the server', async () => {
    const client = await greeted(server, '127.0.0.14');
    client.write('USER alice@example.test\r\nPASS wrong\r\n');
    assert.match(await client.line(), /^\+OK Send your password/);
    client.close();
    await sleep(DELAY_MS * 2);
    const other = await loggedIn(server, '127.0.0.15');
    await other.command('QUIT');
  });
});

describe('lockout (auth.lockout_threshold, lockout_window, lockout_duration, trusted_networks)', () => {
  const LOCKOUT_MS = 1000;
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      ...NO_TLS,
      auth: {
        failure_delay: '10ms',
        lockout_threshold: 3,
        lockout_window: '1m',
        lockout_duration: `${LOCKOUT_MS}ms`,
        trusted_networks: ['127.0.0.3/32'],
      },
    });
    await server.addUser('alice@example.test');
  });
  after(() => server.close());

  async function failThreeTimes(localAddress: string): Promise<Pop3Client> {
    const client = await greeted(server, localAddress);
    for (let i = 0; i < 3; i++) assert.match(await client.login('alice@example.test', `wrong ${i}`), /^-ERR \[AUTH\] Login failed/);
    return client;
  }

  const LOCKED = /^-ERR \[AUTH\] Too many failed logins from your address: try again in 1 minute$/;

  test('after lockout_threshold failures from one address even the right password is refused with [AUTH] Too many failed logins', async () => {
    const client = await failThreeTimes('127.0.0.1');
    assert.match(await client.login('alice@example.test', PASSWORD), LOCKED);
    assert.match(await client.login('alice@example.test', 'still wrong'), LOCKED, 'a locked address learns nothing about its guesses');
    const plain = Buffer.from(`\0alice@example.test\0${PASSWORD}`).toString('base64');
    assert.match(await client.command(`AUTH PLAIN ${plain}`), LOCKED, 'every mechanism is locked, not only USER/PASS');
    client.close();

    const reconnected = await greeted(server, '127.0.0.1');
    assert.match(await reconnected.login('alice@example.test', PASSWORD), LOCKED, 'the lockout is per address, not per connection');
    reconnected.close();
  });

  test('another source address is not locked out and logs in', async () => {
    const locked = await failThreeTimes('127.0.0.4');
    assert.match(await locked.login('alice@example.test', PASSWORD), LOCKED);
    locked.close();

    const other = await loggedIn(server, '127.0.0.2');
    assert.match(await other.command('QUIT'), /^\+OK Goodbye/);
  });

  test('after lockout_duration the right password works again', async () => {
    const client = await failThreeTimes('127.0.0.5');
    assert.match(await client.login('alice@example.test', PASSWORD), LOCKED);
    await sleep(LOCKOUT_MS + 100);
    assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
  });

  test('a successful login in between does not forgive earlier failures', async () => {
    // Otherwise whoever holds one valid account could keep guessing at other accounts.
    const client = await greeted(server, '127.0.0.6');
    for (let i = 0; i < 2; i++) assert.match(await client.login('victim@example.test', `guess ${i}`), /^-ERR \[AUTH\] Login failed/);
    assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
    const again = await greeted(server, '127.0.0.6');
    assert.match(await again.login('victim@example.test', 'guess 2'), /^-ERR \[AUTH\] Login failed/);
    assert.match(await again.login('alice@example.test', PASSWORD), LOCKED);
    again.close();
  });

  test('addresses in trusted_networks are never locked out', async () => {
    const client = await greeted(server, '127.0.0.3');
    for (let i = 0; i < 7; i++) assert.match(await client.login('alice@example.test', `wrong ${i}`), /^-ERR \[AUTH\] Login failed/);
    assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
  });
});

describe('invalid commands', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(NO_TLS);
    await server.addUser('alice@example.test');
  });
  after(() => server.close());

  test('20 invalid commands are answered; the 21st gets "-ERR Too many invalid commands" and the connection closes', async () => {
    const client = await greeted(server);
    for (let i = 0; i < 20; i++) assert.equal(await client.command('XYZZY'), '-ERR Unknown command XYZZY');
    assert.equal(await client.command('XYZZY'), '-ERR Too many invalid commands, closing connection');
    await client.waitClosed();
  });

  test('every kind of refused command counts: unknown, wrong state, bad arguments', async () => {
    const client = await greeted(server);
    const refused = ['FOO', 'STAT', 'PASS x', 'USER', 'RETR 1', 'AUTH XYZ', 'APOP alice x'];
    for (let i = 0; i < 20; i++) assert.match(await client.command(refused[i % refused.length]), /^-ERR /);
    assert.equal(await client.command('FOO'), '-ERR Too many invalid commands, closing connection');
    await client.waitClosed();
  });

  test('the closed session does not affect others', async () => {
    const other = await loggedIn(server);
    const client = await greeted(server);
    client.write('BAD\r\n'.repeat(25));
    for (let i = 0; i < 20; i++) assert.equal(await client.line(), '-ERR Unknown command BAD');
    assert.equal(await client.line(), '-ERR Too many invalid commands, closing connection');
    await client.waitClosed();
    assert.match(await other.command('STAT'), /^\+OK 0 0$/);
    await other.command('QUIT');
  });
});

describe('server shutdown (shutdown_grace)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ ...NO_TLS, shutdown_grace: '200ms' });
    await server.addUser('alice@example.test');
    await server.deliver('alice@example.test', message('one'));
  });
  after(() => server.close());

  test('connected clients do not hold up a shutdown: they get [SYS/TEMP] and nothing is deleted', { timeout: 15_000 }, async () => {
    const idle = await greeted(server);
    const busy = await loggedIn(server);
    try {
      assert.equal(await busy.command('DELE 1'), '+OK Message 1 marked for deletion');
      await server.app.pop3.close(200);
      for (const client of [idle, busy]) {
        assert.equal(await client.line(), '-ERR [SYS/TEMP] Server is shutting down, try again in a minute');
        await client.waitClosed();
      }
      assert.equal((await server.app.mailstore.list('alice@example.test')).length, 1, 'no UPDATE state for a session ended by shutdown');
    } finally {
      idle.close();
      busy.close();
    }
  });
});
