import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkPassed, SENDER, senderZone, SignedMessageSet } from '../bench/filter.ts';
import { ACCEPT_SINK, ACCEPT_SIZE, acceptRun, Children, prepareSingleData, startSingle } from '../bench/scale.ts';
import { startDns, type TestDns } from './helpers/dns.ts';

// The filtering row of the benchmark measures the path where SPF, DKIM and DMARC all pass, and
// says so only because each accepted message is checked for it: its signed messages must be
// what they claim (1,024 octets, numbered, dot-stuffed on the wire) and the check must refuse
// a run in which popgate's verdicts were anything else. Real popgate children, a real DNS server.

const MESSAGES = 12;
const keyOf = () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicDer: publicKey.export({ type: 'spki', format: 'der' }).toString('base64') };
};

describe('bench: the filtering row', () => {
  const signer = keyOf();
  const stranger = keyOf();
  let messages: SignedMessageSet;
  let rightKey: TestDns;
  let wrongKey: TestDns;
  let root: string;
  const children = new Children();

  before(async () => {
    messages = await SignedMessageSet.create({ count: MESSAGES, to: ACCEPT_SINK, tag: 'filter-test', privateKey: signer.privatePem });
    rightKey = await startDns(senderZone(signer.publicDer));
    // The same domain publishing another key: every signature fails to verify.
    wrongKey = await startDns(senderZone(stranger.publicDer));
    root = mkdtempSync(join(tmpdir(), 'popgate-bench-filter-'));
  });

  after(async () => {
    await children.stopAll(() => undefined);
    await rightKey?.close();
    await wrongKey?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('signs messages of exactly 1,024 octets, signature included, each numbered, and on the wire as it will be read back', () => {
    assert.equal(messages.size, ACCEPT_SIZE);
    for (let n = 0; n < MESSAGES; n++) {
      const message = messages.message(n);
      assert.equal(message.length, ACCEPT_SIZE);
      assert.match(message.toString('latin1'), /^DKIM-Signature: v=1; a=rsa-sha256;[^]*?\bd=signed-sender\.example;[^]*?\r\nFrom: /);
      assert.equal(messages.numberOf(message), n);
      const wire = messages.wire(n).toString('latin1');
      assert.ok(wire.endsWith('\r\n.\r\n'));
      assert.equal(wire.slice(0, -3).replace(/(^|\r\n)\.\./g, '$1.'), message.toString('latin1'));
    }
    // Signatures differ with the Message-ID they cover.
    assert.notDeepEqual(messages.message(0).subarray(0, 400), messages.message(1).subarray(0, 400));
  });

  it('passes a run popgate marked spf=pass, dkim=pass, dmarc=pass, and fails one whose signatures did not verify', async () => {
    const [good, bad] = [join(root, 'good'), join(root, 'bad')];
    await prepareSingleData(good, { messagesPerMailbox: 0, progress: () => undefined }, false);
    cpSync(good, bad, { recursive: true });
    const filtered = (dns: TestDns) => ({ config: { dns: { servers: [dns.address], timeout: '1s' }, filter: { enabled: true } }, checkAdded: checkPassed });
    const passing = await startSingle(children, 'right key', good, 1, 44, filtered(rightKey));
    const failing = await startSingle(children, 'wrong key', bad, 1, 45, filtered(wrongKey));
    const run = acceptRun({ smtpMessages: MESSAGES }, 'test', { traffic: { from: SENDER, messages: () => messages } });

    const passed = await run(passing.config, 0);
    assert.equal(passed.items, MESSAGES);
    passed.check!();
    assert.ok(rightKey.queries.includes(`TXT bench._domainkey.signed-sender.example`), 'the DKIM key was looked up in the local DNS server');

    // Accepted all the same (SPF passes and is aligned, so DMARC passes), but not the path the row measures.
    const failed = await run(failing.config, 0);
    assert.equal(failed.items, MESSAGES);
    assert.throws(() => failed.check!(), /lacks "dkim=pass"/);
  });
});
