import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { message, PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// RFC 1939 command by command, over a real loopback socket.

describe('POP3 session', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.addUser('alice@example.test');
    await server.deliver('alice@example.test', message('one'));
    await server.deliver('alice@example.test', message('two', 'Line 1\r\nLine 2\r\nLine 3\r\n'));
    await server.deliver('alice@example.test', message('three'));
  });
  after(() => server.close());

  test('greets with +OK and the host name', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    assert.match(await client.line(), /^\+OK mail\.example\.test POP3 server ready$/);
    client.close();
  });

  test('CAPA lists the RFC 2449 capabilities, STLS before TLS', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    const { status, lines } = await client.multiline('CAPA');
    assert.match(status, /^\+OK/);
    for (const capability of ['TOP', 'UIDL', 'USER', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING', 'SASL PLAIN LOGIN', 'STLS', 'IMPLEMENTATION popgate']) {
      assert.ok(lines.includes(capability), `CAPA lacks ${capability}: ${lines.join(', ')}`);
    }
    client.close();
  });

  test('transaction commands before login are refused', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    for (const command of ['STAT', 'LIST', 'RETR 1', 'DELE 1', 'UIDL', 'TOP 1 0', 'RSET', 'NOOP']) {
      assert.match(await client.command(command), /^-ERR Log in first/, command);
    }
    assert.match(await client.command('PASS x'), /^-ERR Send USER first/);
    client.close();
  });

  test('USER/PASS logs in and reports the maildrop', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.equal(await client.command('USER alice@example.test'), '+OK Send your password with PASS');
    assert.match(await client.command(`PASS ${PASSWORD}`), /^\+OK Logged in, 3 messages \(\d+ octets\)$/);
    assert.equal(await client.command('QUIT'), '+OK Goodbye, 0 messages deleted');
    await client.waitClosed();
  });

  test('a wrong password gets -ERR [AUTH] and no session', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.match(await client.login('alice@example.test', 'wrong password'), /^-ERR \[AUTH\] Login failed/);
    assert.match(await client.login('nobody@example.test', PASSWORD), /^-ERR \[AUTH\] Login failed/);
    assert.match(await client.command('STAT'), /^-ERR Log in first/);
    client.close();
  });

  test('STAT, LIST and UIDL agree with each other', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    await client.login('alice@example.test', PASSWORD);
    const [, count, total] = /^\+OK (\d+) (\d+)$/.exec(await client.command('STAT'))!;
    assert.equal(count, '3');
    const list = await client.multiline('LIST');
    assert.equal(list.lines.length, 3);
    const sizes = list.lines.map((l) => Number(l.split(' ')[1]));
    assert.equal(sizes.reduce((a, b) => a + b, 0), Number(total));
    assert.equal(await client.command('LIST 2'), `+OK 2 ${sizes[1]}`);
    const uidl = await client.multiline('UIDL');
    assert.deepEqual(uidl.lines.map((l) => l.split(' ')[0]), ['1', '2', '3']);
    const ids = uidl.lines.map((l) => l.split(' ')[1]);
    assert.equal(new Set(ids).size, 3);
    for (const id of ids) assert.match(id, /^[\x21-\x7e]{1,70}$/);
    assert.equal(await client.command('UIDL 3'), `+OK 3 ${ids[2]}`);
    assert.match(await client.command('LIST 4'), /^-ERR No message 4/);
    assert.match(await client.command('LIST 0'), /^-ERR No message 0/);
    assert.match(await client.command('LIST x'), /^-ERR Give a message number/);
    await client.command('QUIT');
  });

  test('RETR sends the message with its exact octet count', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    await client.login('alice@example.test', PASSWORD);
    const size = Number((await client.command('LIST 2')).split(' ')[2]);
    assert.equal(await client.command('RETR 2'), `+OK ${size} octets`);
    const body = await client.multilineRaw();
    assert.equal(body.length, size);
    assert.equal(body.toString(), message('two', 'Line 1\r\nLine 2\r\nLine 3\r\n'));
    await client.command('QUIT');
  });

  test('TOP sends the header, the blank line and n body lines', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    await client.login('alice@example.test', PASSWORD);
    const header = 'From: sender@example.net\r\nTo: user@example.test\r\nSubject: two\r\n\r\n';
    assert.match(await client.command('TOP 2 0'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString(), header);
    assert.match(await client.command('TOP 2 2'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString(), header + 'Line 1\r\nLine 2\r\n');
    assert.match(await client.command('TOP 2 99'), /^\+OK/);
    assert.equal((await client.multilineRaw()).toString(), header + 'Line 1\r\nLine 2\r\nLine 3\r\n');
    assert.match(await client.command('TOP 2'), /^-ERR Usage: TOP/);
    assert.match(await client.command('TOP 2 -1'), /^-ERR Usage: TOP/);
    await client.command('QUIT');
  });

  test('DELE marks, RSET unmarks, deleted messages vanish from listings but keep their numbers', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    await client.login('alice@example.test', PASSWORD);
    assert.equal(await client.command('DELE 2'), '+OK Message 2 marked for deletion');
    assert.match(await client.command('DELE 2'), /^-ERR Message 2 is already deleted/);
    assert.match(await client.command('RETR 2'), /^-ERR Message 2 is already deleted/);
    assert.match(await client.command('STAT'), /^\+OK 2 /);
    assert.deepEqual((await client.multiline('LIST')).lines.map((l) => l.split(' ')[0]), ['1', '3']);
    assert.match(await client.command('RETR 3'), /^\+OK/);
    await client.multilineRaw();
    assert.match(await client.command('RSET'), /^\+OK 3 messages/);
    assert.match(await client.command('STAT'), /^\+OK 3 /);
    assert.equal(await client.command('NOOP'), '+OK');
    assert.equal(await client.command('QUIT'), '+OK Goodbye, 0 messages deleted');
  });

  test('unknown commands and commands in the wrong state get -ERR', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.equal(await client.command('FOO'), '-ERR Unknown command FOO');
    assert.equal(await client.command(''), '-ERR Unknown command');
    await client.login('alice@example.test', PASSWORD);
    assert.equal(await client.command('USER alice@example.test'), '-ERR Already logged in');
    assert.equal(await client.command('STLS'), '-ERR Already logged in');
    assert.match(await client.command('stat'), /^\+OK 3 /, 'commands are case-insensitive');
    await client.command('QUIT');
  });

  test('QUIT before login just says goodbye', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    assert.equal(await client.command('QUIT'), '+OK Goodbye');
    await client.waitClosed();
  });

  test('pipelined commands are answered in order (RFC 2449 §6.6)', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    client.write(`USER alice@example.test\r\nPASS ${PASSWORD}\r\nSTAT\r\nLIST 1\r\nUIDL 1\r\nRETR 1\r\nNOOP\r\nQUIT\r\n`);
    assert.match(await client.line(), /^\+OK Send your password/);
    assert.match(await client.line(), /^\+OK Logged in/);
    assert.match(await client.line(), /^\+OK 3 /);
    assert.match(await client.line(), /^\+OK 1 \d+$/);
    assert.match(await client.line(), /^\+OK 1 \S+$/);
    assert.match(await client.line(), /^\+OK \d+ octets$/);
    assert.equal((await client.multilineRaw()).toString(), message('one'));
    assert.equal(await client.line(), '+OK');
    assert.match(await client.line(), /^\+OK Goodbye/);
    await client.waitClosed();
  });

  test('bare LF line ends from a client are accepted', async () => {
    const client = await Pop3Client.connect(server.pop3Port);
    await client.line();
    client.write('CAPA\n');
    assert.match(await client.line(), /^\+OK Capability/);
    await client.multilineRaw();
    client.close();
  });
});
