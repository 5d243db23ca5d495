import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { LineReader, sleep, waitFor, Xorshift32 } from './helpers/wire.ts';

// Whatever a client sends, the server neither crashes nor hangs: every hostile session ends
// or is answered, no session is left behind, and afterwards a fresh session logs in and
// retrieves its mail byte for byte.

const SMALL = message('one');
const BIG = message('big', bigBody(4 * 1024 * 1024));
/** BIG as RETR sends it: lines beginning with "." get a second "." (RFC 1939 §3). */
const BIG_ON_WIRE = BIG.split('\r\n').map((line) => (line.startsWith('.') ? `.${line}` : line)).join('\r\n');

function bigBody(octets: number): string {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < octets; i++) {
    const line = i % 40 === 0 ? `.line ${i} begins with a dot` : `Line ${i} ${'x'.repeat(70)}`;
    lines.push(line);
    size += line.length + 2;
  }
  return lines.join('\r\n') + '\r\n';
}

const plainAuth = (text: string | Buffer) => Buffer.from(text).toString('base64');

describe('POP3 under hostile input', () => {
  let server: TestServer;
  before(async () => {
    // The lockout has its own tests; here many deliberate failures must not lock 127.0.0.1 out.
    server = await startTestServer({ auth: { failure_delay: '10ms', lockout_threshold: 1000 } });
    await server.addUser('alice@example.test');
    await server.addUser('bob@example.test');
    await server.deliver('alice@example.test', SMALL);
    await server.deliver('alice@example.test', BIG);
    await server.deliver('bob@example.test', message('for bob'));
    await server.addUser('carol@example.test');
    await Promise.all(Array.from({ length: 100 }, (_, i) => server.deliver('carol@example.test', message(`number ${i}`))));
  });
  after(() => server.close());

  async function greeted(): Promise<Pop3Client> {
    const client = await Pop3Client.connect(server.pop3Port);
    assert.match(await client.line(), /^\+OK /);
    return client;
  }

  async function loggedIn(user = 'alice@example.test'): Promise<Pop3Client> {
    const client = await greeted();
    assert.match(await client.login(user, PASSWORD), /^\+OK Logged in/);
    return client;
  }

  /** Every line the server sends until it closes the connection; fails if it never does. */
  async function repliesUntilClosed(client: Pop3Client): Promise<string[]> {
    const replies: string[] = [];
    for (;;) {
      try {
        replies.push(await client.line(10_000));
      } catch (error) {
        if (client.closed) return replies;
        throw error;
      }
    }
  }

  const sessionsGone = () => waitFor(() => server.app.pop3.sessionCount === 0, 'every session to be cleaned up', 8000);

  // After every hostile test: nothing is left hanging, and the server still does its job.
  afterEach(async () => {
    await sessionsGone();
    const client = await loggedIn();
    assert.match(await client.command('STAT'), /^\+OK 2 \d+$/, 'no hostile session deleted anything');
    assert.match(await client.command('RETR 1'), new RegExp(`^\\+OK ${Buffer.byteLength(SMALL)} octets$`));
    assert.equal((await client.multilineRaw()).toString(), SMALL);
    assert.match(await client.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
    await client.waitClosed();
  });

  describe('random and malformed bytes', () => {
    test('random bytes without line breaks are cut off with "-ERR Line too long" on every connection', async () => {
      const rng = new Xorshift32(0x5eed0001);
      for (let connection = 0; connection < 16; connection++) {
        const junk = Buffer.from(rng.bytes(8 * 1024).map((b) => (b === 0x0a || b === 0x0d ? b | 0x80 : b)));
        const client = await greeted();
        client.write(junk);
        const replies = await repliesUntilClosed(client);
        assert.deepEqual(replies, ['-ERR Line too long (the limit is 1024 octets), closing connection'], `connection ${connection}`);
      }
    });

    test('random bytes with CR and LF mixed in, in random-sized writes, get only well-formed replies and the session ends', async () => {
      const rng = new Xorshift32(0x5eed0002);
      let total = 0;
      for (let connection = 0; connection < 32; connection++) {
        const junk = rng.bytes(8 * 1024);
        for (let i = 0; i < junk.length; i++) {
          const r = rng.below(48);
          if (r === 0) junk[i] = 0x0a;
          else if (r === 1) junk[i] = 0x0d;
          else if (r === 2 && i + 1 < junk.length) {
            junk[i] = 0x0d;
            junk[++i] = 0x0a;
          }
        }
        total += junk.length;
        // Half of the connections are logged in first, so TRANSACTION-state parsing is hit too.
        const client = connection % 2 === 0 ? await greeted() : await loggedIn(connection % 4 === 1 ? 'alice@example.test' : 'bob@example.test');
        for (let offset = 0; offset < junk.length; ) {
          const size = 1 + rng.below(2048);
          client.write(junk.subarray(offset, offset + size));
          offset += size;
          if (rng.below(4) === 0) await new Promise((resolve) => setImmediate(resolve));
        }
        client.write('\r\nQUIT\r\n');
        const replies = await repliesUntilClosed(client);
        assert.ok(replies.length > 0, `connection ${connection} got no reply at all`);
        for (const reply of replies) assert.match(reply, /^(\+OK|-ERR)( |$)/, `connection ${connection}`);
        await sessionsGone(); // the next login must not find the maildrop still locked
      }
      assert.ok(total >= 256 * 1024);
    });

    test('NUL bytes inside a command get "-ERR Invalid characters" and the session goes on', async () => {
      const client = await greeted();
      for (const command of ['US\0ER alice@example.test', 'USER alice@example.test\0', '\0', 'CAPA\0']) {
        assert.equal(await client.command(command), '-ERR Invalid characters in command', JSON.stringify(command));
      }
      assert.equal(await client.command('USER alice@example.test'), '+OK Send your password with PASS');
      assert.equal(await client.command(`PASS ${PASSWORD}\0`), '-ERR Invalid characters in command');
      assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
      assert.equal(await client.command('STAT\0'), '-ERR Invalid characters in command');
      assert.equal(await client.command('DELE 1\0'), '-ERR Invalid characters in command');
      assert.match(await client.command('STAT'), /^\+OK 2 /);
      assert.match(await client.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
    });

    test('a 1 MB line without CRLF gets "-ERR Line too long" and the connection is closed', async () => {
      const client = await greeted();
      client.write(Buffer.alloc(1024 * 1024, 'A'));
      assert.deepEqual(await repliesUntilClosed(client), ['-ERR Line too long (the limit is 1024 octets), closing connection']);
    });

    test('invalid UTF-8 in commands and arguments is answered with -ERR, and unknown verbs are not echoed', async () => {
      const client = await greeted();
      const raw = (...parts: (string | number[])[]) => Buffer.concat([...parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))), Buffer.from('\r\n')]);
      client.write(raw([0xff, 0xfe, 0xc0, 0xaf]));
      assert.equal(await client.line(), '-ERR Unknown command');
      client.write(raw('US', [0xc3], 'ER x'));
      assert.equal(await client.line(), '-ERR Unknown command');
      client.write(raw('USER ', [0xed, 0xa0, 0x80], '@example.test'));
      assert.equal(await client.line(), '+OK Send your password with PASS');
      client.write(raw('PASS ', [0xc3, 0x28, 0xf8, 0x88, 0x80, 0x80, 0x80]));
      assert.match(await client.line(), /^-ERR \[AUTH\] Login failed/);
      assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
      client.write(raw('RETR ', [0xef, 0xbc, 0x91])); // a full-width digit one is not a message number
      assert.match(await client.line(), /^-ERR Give a message number/);
      client.write(raw('LIST 1', [0xff]));
      assert.match(await client.line(), /^-ERR Give a message number/);
      assert.match(await client.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
    });
  });

  describe('floods and stalls', () => {
    test('a burst of 5,000 pipelined commands after login is answered completely and in order', async () => {
      const client = await loggedIn();
      const stat = await client.command('STAT');
      client.write('NOOP\r\nSTAT\r\n'.repeat(2500));
      for (let i = 0; i < 2500; i++) {
        assert.equal(await client.line(), '+OK');
        assert.equal(await client.line(), stat);
      }
      assert.match(await client.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
    });

    test('a client that pipelines commands without reading the replies is not served further until it reads', async () => {
      // 4,000 UIDL listings of 100 messages are some 25 MB of replies, far more than socket
      // buffers hold. A server that answered them all into memory would reach the QUIT behind
      // them within a few hundred milliseconds and release the maildrop lock.
      const client = await loggedIn('carol@example.test');
      const listing = await client.multiline('UIDL');
      const listingOctets = Buffer.byteLength(['+OK', ...listing.lines, '.', ''].join('\r\n'));
      const socket = client.socket;
      socket.removeAllListeners('data');
      let octets = 0;
      let tail = '';
      socket.on('data', (chunk: Buffer) => {
        octets += chunk.length;
        tail = (tail + chunk.toString('latin1')).slice(-100);
      });
      socket.pause(); // adding a 'data' listener resumes the stream; this client does not read yet
      socket.write('UIDL\r\n'.repeat(4000) + 'QUIT\r\n');
      await sleep(1000);

      const probe = await greeted();
      assert.match(await probe.login('carol@example.test', PASSWORD), /^-ERR \[IN-USE\]/, 'the QUIT behind the unread replies was not reached');
      probe.close();

      socket.resume();
      const goodbye = '+OK Goodbye, 0 messages deleted\r\n';
      await waitFor(() => tail.endsWith(goodbye), 'the reply to QUIT', 20_000);
      assert.equal(octets, 4000 * listingOctets + goodbye.length, 'every listing arrived, once, in full');
      await client.waitClosed();
    });

    test('a client that keeps pushing commands without reading the replies is no longer read', async () => {
      const client = await loggedIn();
      const socket = client.socket;
      socket.pause();
      // Without backpressure the server would read on and queue a reply for every command;
      // with it, only socket buffers (a few MB) take the client's bytes.
      const CAP = 32 * 1024 * 1024;
      const chunk = Buffer.from('NOOP\r\n'.repeat(10_000));
      let sent = 0;
      let stalled = false;
      while (sent < CAP && !stalled) {
        sent += chunk.length;
        if (!socket.write(chunk)) stalled = !(await Promise.race([once(socket, 'drain').then(() => true), sleep(1000).then(() => false)]));
      }
      assert.ok(stalled, `the server kept reading: ${sent} octets of NOOP went in while no reply was read`);
      client.close(); // afterEach: the session is cleaned up and the server serves on
    });

    test('a client that starts RETR of a large message and never reads holds up nobody, and may vanish', async () => {
      const stuck = await loggedIn();
      stuck.socket.pause();
      stuck.write('RETR 2\r\n');
      await sleep(100);

      const other = await loggedIn('bob@example.test');
      assert.match(await other.command('STAT'), /^\+OK 1 \d+$/);
      assert.match(await other.command('QUIT'), /^\+OK Goodbye/);

      stuck.close();
      await sessionsGone();
      const client = await loggedIn(); // the stuck session's maildrop lock is gone
      assert.equal(await client.command('RETR 2'), `+OK ${Buffer.byteLength(BIG)} octets`);
      const body = await client.multilineRaw(30_000);
      assert.equal(body.length, Buffer.byteLength(BIG_ON_WIRE));
      assert.ok(body.equals(Buffer.from(BIG_ON_WIRE)), 'the large message arrives intact');
      assert.match(await client.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
    });
  });

  describe('connections that stop half way', () => {
    test('a client that sends half a command and then closes its side is disconnected; the half command is not run', async () => {
      const anonymous = await greeted();
      anonymous.write('USER ali');
      anonymous.socket.end();
      await anonymous.waitClosed();

      const client = await loggedIn();
      assert.equal(await client.command('DELE 1'), '+OK Message 1 marked for deletion');
      client.write('QU');
      client.socket.end();
      await client.waitClosed(); // afterEach: message 1 is still there
    });

    test('clients that connect and vanish, before or after the greeting, leave no session behind', async () => {
      for (let i = 0; i < 10; i++) {
        const client = await Pop3Client.connect(server.pop3Port);
        client.close();
      }
      const silent = await greeted();
      silent.close();
      const finOnly = await greeted();
      finOnly.socket.end();
      await finOnly.waitClosed();
    });

    test('clients that vanish in the middle of a TLS handshake or a SASL exchange leave no session behind', async () => {
      const stls = await greeted();
      assert.equal(await stls.command('STLS'), '+OK Begin TLS negotiation');
      stls.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])); // the start of a ClientHello
      await sleep(20);
      stls.close();

      const implicit = netConnect({ host: '127.0.0.1', port: server.pop3sPort });
      await once(implicit, 'connect');
      implicit.write(Buffer.from([0x16, 0x03, 0x01]));
      await sleep(20);
      implicit.destroy();

      const sasl = await greeted();
      assert.equal(await sasl.command('AUTH LOGIN'), '+ VXNlcm5hbWU6');
      assert.equal(await sasl.command(plainAuth('alice@example.test')), '+ UGFzc3dvcmQ6');
      sasl.close();
    });
  });

  describe('bad SASL exchanges', () => {
    const INVALID_BASE64 = '-ERR [AUTH] Invalid base64 in authentication exchange';
    const LOGIN_FAILED = /^-ERR \[AUTH\] Login failed/;

    test('AUTH PLAIN with invalid base64 is refused, and the session stays usable', async () => {
      const client = await greeted();
      assert.equal(await client.command('AUTH PLAIN'), '+ ');
      assert.equal(await client.command('this is not base64!'), INVALID_BASE64);
      assert.equal(await client.command('AUTH PLAIN %%%%'), INVALID_BASE64);
      assert.equal(await client.command('AUTH PLAIN abc'), INVALID_BASE64, 'a length that is not a multiple of 4');
      assert.equal(await client.command('AUTH PLAIN ab=c'), INVALID_BASE64, 'padding in the middle');
      assert.equal(await client.command('AUTH PLAIN'), '+ ');
      assert.equal(await client.command('AAAA\0AAA'), INVALID_BASE64, 'a NUL in the response');
      assert.equal(await client.command('AUTH LOGIN'), '+ VXNlcm5hbWU6');
      assert.equal(await client.command('#'), INVALID_BASE64);
      assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
      assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
    });

    test('AUTH PLAIN with a wrongly structured message fails like a wrong password', async () => {
      const client = await greeted();
      const malformed = [
        plainAuth('alice@example.test'), // no NUL separators
        plainAuth(`\0alice@example.test`), // no password part
        plainAuth(`\0alice@example.test\0${PASSWORD}\0extra`), // one part too many
        plainAuth(`bob@example.test\0alice@example.test\0${PASSWORD}`), // acting as another user
        plainAuth(Buffer.from([0xff, 0x00, 0xfe, 0x00, 0xfd])), // invalid UTF-8
        '=', // an empty initial response
      ];
      for (const response of malformed) assert.match(await client.command(`AUTH PLAIN ${response}`), LOGIN_FAILED, response);
      assert.equal(await client.command('AUTH PLAIN'), '+ ');
      assert.match(await client.command(plainAuth('\0\0')), LOGIN_FAILED, 'empty user and password');
      assert.match(await client.command(`AUTH PLAIN ${plainAuth(`\0alice@example.test\0${PASSWORD}`)}`), /^\+OK Logged in/);
      assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
    });

    test('"*" cancels AUTH PLAIN and AUTH LOGIN at every step', async () => {
      const client = await greeted();
      const CANCELLED = '-ERR [AUTH] Authentication cancelled';
      assert.equal(await client.command('AUTH PLAIN'), '+ ');
      assert.equal(await client.command('*'), CANCELLED);
      assert.equal(await client.command('AUTH LOGIN'), '+ VXNlcm5hbWU6');
      assert.equal(await client.command('*'), CANCELLED);
      assert.equal(await client.command('AUTH LOGIN'), '+ VXNlcm5hbWU6');
      assert.equal(await client.command(plainAuth('alice@example.test')), '+ UGFzc3dvcmQ6');
      assert.equal(await client.command('*'), CANCELLED);
      assert.equal(await client.command(`AUTH LOGIN ${plainAuth('alice@example.test')}`), '+ UGFzc3dvcmQ6');
      assert.equal(await client.command('*'), CANCELLED);
      assert.match(await client.command('STAT'), /^-ERR Log in first/, 'a cancelled exchange logs nobody in');
      assert.equal(await client.command('AUTH LOGIN'), '+ VXNlcm5hbWU6');
      assert.equal(await client.command(plainAuth('alice@example.test')), '+ UGFzc3dvcmQ6');
      assert.match(await client.command(plainAuth(PASSWORD)), /^\+OK Logged in/);
      assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
    });

    test('an unknown mechanism is refused and the next line is a command again, not a SASL response', async () => {
      const client = await greeted();
      assert.equal(await client.command('AUTH XYZ'), '-ERR [AUTH] Unsupported mechanism; use PLAIN or LOGIN');
      assert.equal(await client.command(`AUTH CRAM-MD5 ${plainAuth('x')}`), '-ERR [AUTH] Unsupported mechanism; use PLAIN or LOGIN');
      const { status, lines } = await client.multiline('CAPA');
      assert.equal(status, '+OK Capability list follows');
      assert.ok(lines.includes('SASL PLAIN LOGIN'));
      assert.match(await client.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
      assert.match(await client.command('QUIT'), /^\+OK Goodbye/);
    });
  });

  describe('STLS command injection (RFC 2595 §4, CVE-2011-0411)', () => {
    /** Sends STLS with `pipelined` in the same write, then does the TLS handshake itself. */
    async function stlsWith(pipelined: string): Promise<LineReader> {
      const socket = netConnect({ host: '127.0.0.1', port: server.pop3Port });
      await once(socket, 'connect');
      const plain = new LineReader(socket);
      assert.match(await plain.line(), /^\+OK /);
      plain.write(`STLS\r\n${pipelined}`);
      assert.equal(await plain.line(), '+OK Begin TLS negotiation');
      assert.equal(plain.pending.length, 0, 'nothing is answered in the clear after STLS');
      plain.detach();
      const secure = tlsConnect({ socket, rejectUnauthorized: false });
      await once(secure, 'secureConnect'); // garbage in the clear would break the handshake
      return new LineReader(secure);
    }

    test('a command pipelined after STLS is answered neither in the clear nor inside TLS', async () => {
      const secure = await stlsWith('CAPA\r\n');
      secure.write('CAPA\r\n');
      assert.equal(await secure.line(), '+OK Capability list follows');
      const capabilities = await secure.multilineBody();
      assert.ok(capabilities.includes('USER'), 'inside TLS, USER is offered');
      assert.ok(!capabilities.includes('STLS'), 'inside TLS, STLS is no longer offered');
      // The server answers in order: anything queued from before the handshake would come first.
      assert.equal(await secure.command('QUIT'), '+OK Goodbye');
      await secure.waitClosed();
      assert.equal(secure.pending.length, 0, 'exactly one CAPA response came back');
    });

    test('a USER pipelined after STLS is forgotten: PASS inside TLS gets "-ERR Send USER first"', async () => {
      const secure = await stlsWith('USER alice@example.test\r\n');
      assert.equal(await secure.command(`PASS ${PASSWORD}`), '-ERR Send USER first');
      assert.equal(await secure.command('USER alice@example.test'), '+OK Send your password with PASS');
      assert.match(await secure.command(`PASS ${PASSWORD}`), /^\+OK Logged in, 2 messages/);
      assert.match(await secure.command('QUIT'), /^\+OK Goodbye, 0 messages deleted/);
      await secure.waitClosed();
    });

    test('a plaintext command sent after "+OK Begin TLS negotiation" is not run: the connection is dropped', async () => {
      const socket = netConnect({ host: '127.0.0.1', port: server.pop3Port });
      await once(socket, 'connect');
      const plain = new LineReader(socket);
      await plain.line();
      assert.equal(await plain.command('STLS'), '+OK Begin TLS negotiation');
      plain.write('CAPA\r\n');
      await plain.waitClosed();
      assert.ok(!plain.pending.includes('+OK'), `no POP3 reply after STLS: ${JSON.stringify(plain.pending.toString('latin1'))}`);
    });
  });
});

