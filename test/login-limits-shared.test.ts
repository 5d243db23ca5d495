import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { MAIN, NODE } from './helpers/process.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// Failed logins are counted per address, per account and per address at an account, together
// across POP3 and SMTP AUTH: guessing from one address is stopped, guessing at one account from
// many is slowed to one guess per address, and nobody can lock a customer out of their mail.

const run = promisify(execFile);
const plain = (user: string, password: string) => `AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`;

describe('shared brute-force limits', () => {
  let server: TestServer;
  let submissionPort: number;
  before(async () => {
    server = await startTestServer({
      submission: { listen: ['127.0.0.1:0'] },
      auth: { failure_delay: '10ms', lockout_threshold: 3, account_lockout_threshold: 5, lockout_window: '1m', lockout_duration: '1m', trusted_networks: ['127.0.0.99/32'] },
    });
    submissionPort = Number(server.app.addresses.submission[0].split(':').pop());
    for (const user of ['alice', 'bob', 'carol']) await server.addUser(`${user}@example.test`);
  });
  after(() => server.close());

  async function pop3(localAddress: string): Promise<Pop3Client> {
    const client = await Pop3Client.connect(server.pop3Port, { localAddress });
    await client.line();
    return client;
  }
  async function smtp(localAddress: string): Promise<SmtpClient> {
    const client = await SmtpClient.connect(submissionPort, localAddress);
    await client.hello();
    return client;
  }

  test('failures from one address count across POP3 and SMTP AUTH, then both refuse even the right password', async () => {
    const p = await pop3('127.0.0.31');
    assert.match(await p.login('bob@example.test', 'wrong 1'), /^-ERR \[AUTH\] Login failed/);
    assert.match(await p.login('carol@example.test', 'wrong 2'), /^-ERR \[AUTH\] Login failed/);
    const s = await smtp('127.0.0.31');
    assert.match(await s.command(plain('carol@example.test', 'wrong 3')), /^535 5\.7\.8/);
    assert.match(await s.command(plain('carol@example.test', PASSWORD)), /^454 4\.7\.0 Too many failed logins from your address/);
    assert.match(await p.login('carol@example.test', PASSWORD), /^-ERR \[AUTH\] Too many failed logins from your address/);
    s.socket.destroy();
    p.socket.destroy();
  });

  test('guesses at one account spread over many addresses never lock the customer out; each guessing address then gets one guess', async () => {
    for (let i = 0; i < 5; i++) {
      const address = `127.0.0.${40 + i}`;
      if (i % 2 === 0) {
        const p = await pop3(address);
        assert.match(await p.login('alice@example.test', `guess ${i}`), /^-ERR \[AUTH\] Login failed/);
        p.socket.destroy();
      } else {
        const s = await smtp(address);
        assert.match(await s.command(plain('alice@example.test', `guess ${i}`)), /^535 /);
        s.socket.destroy();
      }
    }
    // The account is under attack now: the customer from an address that has not failed logs
    // in on every protocol ...
    const fresh = await pop3('127.0.0.50');
    assert.match(await fresh.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    fresh.socket.destroy();
    const s = await smtp('127.0.0.51');
    assert.match(await s.command(plain('alice@example.test', PASSWORD)), /^235 /);
    s.socket.destroy();
    // ... while a guessing address gets one more guess at it, then is locked out of that
    // account only (its other logins go on), on every protocol.
    const guesser = await pop3('127.0.0.40');
    assert.match(await guesser.login('alice@example.test', 'guess 5'), /^-ERR \[AUTH\] Login failed/);
    assert.match(await guesser.login('alice@example.test', PASSWORD), /^-ERR \[AUTH\] Too many failed logins for this account: try again in 1 minute/);
    const guesserSmtp = await smtp('127.0.0.40');
    assert.match(await guesserSmtp.command(plain('alice@example.test', PASSWORD)), /^454 4\.7\.0 Too many failed logins for this account/);
    guesserSmtp.socket.destroy();
    assert.match(await guesser.login('bob@example.test', PASSWORD), /^\+OK Logged in/);
    guesser.socket.destroy();
  });

  test('popgate limits show names the locked account and address; limits reset lets them in again', async () => {
    const config = join(server.dir, 'popgate.toml');
    writeFileSync(config, `data_dir = "${server.dir}"\n[auth]\nlockout_threshold = 3\naccount_lockout_threshold = 5\nlockout_window = "1m"\nlockout_duration = "1m"\n`);
    const shown = await run(NODE, [MAIN, '--config', config, 'limits', 'show']);
    assert.match(shown.stdout, /account alice@example\.test\t\d+ failed login\(s\)\tnot locked/);
    assert.match(shown.stdout, /address 127\.0\.0\.40 user alice@example\.test\t2 failed login\(s\)\tLOCKED for /);
    assert.match((await run(NODE, [MAIN, '--config', config, 'limits', 'show', 'alice@example.test'])).stdout, /address 127\.0\.0\.40 user alice@example\.test\t2 failed/);
    assert.match(shown.stdout, /address 127\.0\.0\.31\t3 failed login\(s\)\tLOCKED for /);
    const one = await run(NODE, [MAIN, '--config', config, 'limits', 'show', '127.0.0.31']);
    assert.doesNotMatch(one.stdout, /alice/);
    await run(NODE, [MAIN, '--config', config, 'limits', 'reset', 'alice@example.test']);
    const p = await pop3('127.0.0.40');
    assert.match(await p.login('alice@example.test', PASSWORD), /^\+OK Logged in/);
    p.socket.destroy();
  });

  test('a trusted network is never slowed or locked out', async () => {
    const p = await pop3('127.0.0.99');
    for (let i = 0; i < 6; i++) assert.match(await p.login('carol@example.test', `typo ${i}`), /^-ERR \[AUTH\] Login failed/);
    assert.match(await p.login('carol@example.test', PASSWORD), /^\+OK Logged in/);
    p.socket.destroy();
  });
});

describe('the campaign: 24 wrong guesses from three addresses (default thresholds)', () => {
  test('the right password from a clean address still logs in over POP3 and SMTP AUTH', async () => {
    const server = await startTestServer({ submission: { listen: ['127.0.0.1:0'] }, auth: { failure_delay: '1ms' } });
    try {
      await server.addUser('victim@example.test');
      for (const address of ['127.0.1.1', '127.0.1.2', '127.0.1.3']) {
        const guesser = await Pop3Client.connect(server.pop3Port, { localAddress: address });
        await guesser.line();
        for (let i = 0; i < 8; i++) assert.match(await guesser.login('victim@example.test', `guess ${i}`), /^-ERR \[AUTH\] /);
        guesser.socket.destroy();
      }
      const customer = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.1.9' });
      await customer.line();
      assert.match(await customer.login('victim@example.test', PASSWORD), /^\+OK Logged in/);
      customer.socket.destroy();
      const smtp = await SmtpClient.connect(Number(server.app.addresses.submission[0].split(':').pop()), '127.0.1.10');
      await smtp.hello();
      assert.match(await smtp.command(plain('victim@example.test', PASSWORD)), /^235 /);
      smtp.socket.destroy();
    } finally {
      await server.close();
    }
  });
});
