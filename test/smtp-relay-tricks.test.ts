import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SmtpClient } from './helpers/smtp-client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// No open relay: every historical trick to make a server forward mail is refused, from a
// client without a POP-before-SMTP grant.

describe('open-relay tricks are refused', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms', max_errors: 100 } });
    await server.addUser('user@example.test');
    await server.app.accounts.addDomain('bücher.example');
    await server.addUser('leser@xn--bcher-kva.example');
  });
  after(() => server.close());

  const tricks: [string, RegExp][] = [
    ['user%remote.example@example.test', /^550 5\.7\.1 Percent-hack/],
    ['remote.example!user@example.test', /^550 5\.7\.1 Bang paths/],
    ['remote.example!user', /^550 5\.7\.1 Bang paths/],
    ['@example.test:user@remote.example', /^550 5\.7\.1 Source routes/],
    ['@a.example,@b.example:user@remote.example', /^550 5\.7\.1 Source routes/],
    ['"user@remote.example"@example.test', /^550 5\.7\.1 Quoted local parts/],
    ['"user%remote.example"@example.test', /^550 5\.7\.1 Quoted local parts/],
    ['user@[127.0.0.1]', /^550 5\.7\.1 Address literals/],
    ['user@[IPv6:::1]', /^550 5\.7\.1 Address literals/],
    ['user@example.test.', /^550 5\.7\.1 Domains with a trailing dot/],
    ['user@remote.example@example.test', /^550 5\.7\.1 Addresses with more than one @/],
    ['user@example.test.remote.example', /^554 5\.7\.1 Relay access denied/],
    ['user@evil-example.test', /^554 5\.7\.1 Relay access denied/],
    ['user@xample.test', /^554 5\.7\.1 Relay access denied/],
    ['user@remote.example', /^554 5\.7\.1 Relay access denied/],
    ['USER@REMOTE.EXAMPLE', /^554 5\.7\.1 Relay access denied/],
    ['user', /^501 5\.1\.3/],
    ['', /^501 5\.1\.3/],
  ];

  for (const [address, expected] of tricks) {
    test(`RCPT TO:<${address}>`, async () => {
      const client = await SmtpClient.connect(server.smtpPort, '127.0.0.20');
      await client.hello();
      assert.match(await client.command('MAIL FROM:<someone@remote.example>'), /^250/);
      assert.match(await client.command(`RCPT TO:<${address}>`), expected);
      client.close();
    });
  }

  test('case and IDN variants of local addresses are accepted as local', async () => {
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.20');
    await client.hello();
    await client.command('MAIL FROM:<someone@remote.example>');
    assert.match(await client.command('RCPT TO:<User@EXAMPLE.Test>'), /^250 2\.1\.5/);
    assert.match(await client.command('RCPT TO:<leser@bücher.example>'), /^250 2\.1\.5/);
    assert.match(await client.command('RCPT TO:<leser@XN--BCHER-KVA.example>'), /^250 2\.1\.5/);
    client.close();
  });

  test('RCPT parameters and unknown MAIL parameters are refused, not ignored', async () => {
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.20');
    await client.hello();
    assert.match(await client.command('MAIL FROM:<a@remote.example> AUTH=<>'), /^555 5\.5\.4/);
    assert.match(await client.command('MAIL FROM:<a@remote.example> BODY=8BITMIME SMTPUTF8'), /^250/);
    assert.match(await client.command('RCPT TO:<user@example.test> NOTIFY=NEVER'), /^555 5\.5\.4/);
    client.close();
  });
});
