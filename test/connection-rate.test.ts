import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// New connections per client address per minute, on every listener: a client that opens
// connections in a tight loop is told to slow down; other addresses and trusted networks are not.

describe('connection rate per address', () => {
  let server: TestServer;
  let submissionPort: number;
  before(async () => {
    server = await startTestServer({
      pop3: { max_connection_rate_per_ip: 3 },
      smtp: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 3 },
      submission: { listen: ['127.0.0.1:0'] },
      auth: { trusted_networks: ['127.0.0.79/32'] },
    });
    submissionPort = Number(server.app.addresses.submission[0].split(':').pop());
  });
  after(() => server.close());

  test('POP3: the 4th connection within a minute from one address is refused with [SYS/TEMP]', async () => {
    for (let i = 0; i < 3; i++) {
      const client = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.71' });
      assert.match(await client.line(), /^\+OK /);
      client.socket.destroy();
    }
    const refused = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.71' });
    assert.match(await refused.line(), /^-ERR \[SYS\/TEMP\] Too many connections from your address in a short time/);
    const other = await Pop3Client.connect(server.pop3Port, { localAddress: '127.0.0.72' });
    assert.match(await other.line(), /^\+OK /);
    other.socket.destroy();
  });

  test('SMTP and submission: 421 4.7.0 past the rate; a trusted network is exempt', async () => {
    for (let i = 0; i < 3; i++) {
      const client = await SmtpClient.connect(i % 2 === 0 ? server.smtpPort : submissionPort, '127.0.0.73');
      assert.match(await client.reply(), /^220 /);
      client.socket.destroy();
    }
    const refused = await SmtpClient.connect(submissionPort, '127.0.0.73');
    assert.match(await refused.reply(), /^421 4\.7\.0 Too many connections from your address in a short time/);
    for (let i = 0; i < 6; i++) {
      const trusted = await SmtpClient.connect(server.smtpPort, '127.0.0.79');
      assert.match(await trusted.reply(), /^220 /);
      trusted.socket.destroy();
    }
  });
});
