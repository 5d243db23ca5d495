import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { headerSection, parseHeaderFrom } from '../src/dkim/header-from.ts';
import { DkimKeyring, generateKey } from '../src/dkim/keys.ts';
import { DkimSigner } from '../src/dkim/sign.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// A customer relaying (POP-before-SMTP grant or SMTP AUTH) may write in From: only an address
// of their own (their address, or an alias reaching them), and the queue DKIM-signs only the
// From: domain that was checked: otherwise a customer gets another hosted domain's signature
// on a forged message that passes DMARC (issue 17, item 1).

const forged = (from: string) => `From: ${from}\r\nTo: victim@remote.invalid\r\nSubject: wire the money\r\n\r\nNow.\r\n`;

async function popLogin(server: TestServer, user: string, localAddress: string): Promise<void> {
  const client = await Pop3Client.connect(server.pop3Port, { localAddress });
  await client.line();
  assert.match(await client.login(user, PASSWORD), /^\+OK Logged in/);
  await client.command('QUIT');
}

describe('From: of relayed mail belongs to the relaying user', () => {
  let server: TestServer;
  let keysDir: string;
  let signer: DkimSigner;
  before(async () => {
    keysDir = mkdtempSync(join(tmpdir(), 'popgate-dkim-'));
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms', auth: true } });
    await server.addUser('alice@example.test');
    await server.addUser('ceo@other.test');
    await server.addUser('fwd@forward.test');
    // An alias of an alias: both reach alice, so both are hers.
    await server.app.accounts.addAlias('sales@other.test', ['alice@example.test']);
    await server.app.accounts.addAlias('desk@other.test', ['sales@other.test']);
    for (const domain of ['example.test', 'other.test', 'forward.test']) generateKey(keysDir, domain, 'sel', 'ed25519');
    signer = new DkimSigner(new DkimKeyring(keysDir, 'sel'));
  });
  after(async () => {
    await server.close();
    rmSync(keysDir, { recursive: true, force: true });
  });

  /** Relays `body` from `ip` after a POP3 login as alice; the final reply. */
  async function relayAsAlice(ip: string, body: string): Promise<string> {
    await popLogin(server, 'alice@example.test', ip);
    const client = await SmtpClient.connect(server.smtpPort, ip);
    await client.hello();
    try {
      return await client.send('alice@example.test', ['victim@remote.invalid'], body);
    } finally {
      client.close();
    }
  }

  /** What the queue's signer does with a queued message: the d= it signs for, or undefined. */
  async function signedDomain(reply: string): Promise<string | undefined> {
    const id = /queued as (\w+)/.exec(reply)![1];
    const raw = readFileSync(join(server.dir, 'queue', `${id}.eml`));
    const result = await signer.sign(raw, await server.app.queue.signingDomain(id));
    return result.signed ? result.domain : undefined;
  }

  test('a grant holder writing another hosted domain in From: is refused at the end of DATA', async () => {
    const reply = await relayAsAlice('127.0.0.2', forged('CEO <ceo@other.test>'));
    assert.match(reply, /^550 5\.7\.1 From: address <ceo@other\.test> is not yours/);
    assert.deepEqual((await server.app.queue.list()).length, 0, 'nothing queued');
  });

  test('two From: fields, or one that cannot be read, are refused', async () => {
    const twice = `From: alice@example.test\r\n${forged('ceo@other.test')}`;
    assert.match(await relayAsAlice('127.0.0.3', twice), /^550 5\.7\.1 Message refused: more than one From: field/);
    assert.match(await relayAsAlice('127.0.0.3', forged('"CEO <alice@example.test>')), /^550 5\.7\.1 Message refused: From: field with an unterminated/);
    assert.match(await relayAsAlice('127.0.0.3', forged('a@b@c')), /^550 5\.7\.1 Message refused: From: <a@b@c> is not an address/);
  });

  test('her own address, an alias and an alias of an alias are accepted and signed for their domain', async () => {
    const own = await relayAsAlice('127.0.0.4', forged('"Alice, Example (Ltd)" <Alice@Example.TEST> (home)'));
    assert.match(own, /^250 /);
    assert.equal(await signedDomain(own), 'example.test');
    const alias = await relayAsAlice('127.0.0.4', forged('Sales <sales@other.test>'));
    assert.match(alias, /^250 /);
    assert.equal(await signedDomain(alias), 'other.test');
    assert.match(await relayAsAlice('127.0.0.4', forged('desk@other.test')), /^250 /);
  });

  test('SMTP AUTH: the same rule', async () => {
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.5');
    await client.hello();
    const plain = Buffer.from(`\0alice@example.test\0${PASSWORD}`).toString('base64');
    assert.match(await client.command(`AUTH PLAIN ${plain}`), /^235 /);
    assert.match(await client.send('alice@example.test', ['victim@remote.invalid'], forged('ceo@other.test')), /^550 5\.7\.1 From: address <ceo@other\.test>/);
    client.close();
  });

  test('a domain with from_check = off may relay any From:, which is then never signed', async () => {
    await server.app.backends.domainSettings.set('forward.test', 'from_check', 'off');
    await popLogin(server, 'fwd@forward.test', '127.0.0.6');
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.6');
    await client.hello();
    const reply = await client.send('fwd@forward.test', ['victim@remote.invalid'], forged('ceo@other.test'));
    client.close();
    assert.match(reply, /^250 /);
    assert.equal(await signedDomain(reply), undefined, 'no other.test signature');
  });

  test('mail from outside forwarded by an alias is queued unsigned, whatever its From: says', async () => {
    await server.app.accounts.addAlias('ext@example.test', ['someone@remote.invalid']);
    const client = await SmtpClient.connect(server.smtpPort, '127.0.0.7');
    await client.hello();
    const reply = await client.send('x@outside.invalid', ['ext@example.test'], forged('ceo@other.test'));
    client.close();
    assert.match(reply, /^250 /);
    assert.equal(await signedDomain(reply), undefined);
  });
});

describe('the From: parser', () => {
  const from = (header: string) => parseHeaderFrom(headerSection([Buffer.from(header)]));
  test('display names, quoted commas, comments, folding and lists', () => {
    assert.deepEqual(from('Subject: x\r\nFROM :\r\n "Doe, John <j@evil.test>" (c, <x@evil.test>)\r\n\t<John@Example.test>\r\n\r\nFrom: body@evil.test\r\n'), {
      ok: true,
      addresses: ['john@example.test'],
    });
    assert.deepEqual(from('From: a@example.test, b@example.test\r\n\r\n'), { ok: true, addresses: ['a@example.test', 'b@example.test'] });
    assert.deepEqual(from('Subject: none\r\n\r\n'), { ok: true, addresses: [] });
    assert.deepEqual(from('Subject: headers only\r\nFrom: a@example.test'), { ok: true, addresses: ['a@example.test'] });
  });
  test('groups, routes, nested brackets and oversized fields are malformed', () => {
    for (const value of ['undisclosed:;', '<@relay.test:a@example.test>', '<a@example.test> <b@example.test>', 'x (unclosed', `${'a'.repeat(20_000)}@example.test`]) {
      assert.equal(from(`From: ${value}\r\n\r\n`).ok, false, value);
    }
    assert.equal(parseHeaderFrom(headerSection([Buffer.alloc(2 * 1024 * 1024, 0x61)])).ok, false, 'a header section past the limit');
  });
});
