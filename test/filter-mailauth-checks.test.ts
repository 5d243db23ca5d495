import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { authenticate, type AuthenticateResult, type DNSResolver } from 'mailauth';
import { dkimSign } from 'mailauth/lib/dkim/sign.js';
import { Authenticator } from '../src/filter/authenticator.ts';
import { DkimKeyCache } from '../src/filter/dkim-keys.ts';
import { passingDkim } from '../src/filter/dkim-pass.ts';
import { FilterDns } from '../src/filter/dns.ts';
import { authenticateMessage, CheckMemos } from '../src/filter/mailauth-checks.ts';
import { startDns, type TestDns } from './helpers/dns.ts';

// popgate runs mailauth's checks from its pieces, with DKIM keys parsed once for all messages
// (src/filter/mailauth-checks.ts, src/filter/dkim-keys.ts). Here the same messages go through
// mailauth's authenticate() and through popgate's path, with the same resolver against a real
// DNS server on loopback, and the verdicts and the header fields must be the same, octet for
// octet, the first time a key is seen and when it comes from the shared cache. Then the cache
// against the DNS: a key rotated or revoked is used once the cached DNS answer expires. SPF and
// DMARC results remembered while their DNS answers stand (src/filter/answer-memo.ts) are the
// same too, and give way to new answers as soon as the DNS cache has them.

const ALLOWED = '127.0.0.30';
const HOSTNAME = 'mx.popgate.test';

function rsaKey() {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), record: `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}` };
}
const KEY_A = rsaKey();
const KEY_B = rsaKey();
const KEY_UNPUBLISHED = rsaKey();
const ED25519 = (() => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ type: 'spki', format: 'der' }).subarray(-32);
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), record: `v=DKIM1; k=ed25519; p=${raw.toString('base64')}` };
})();

const ZONE = {
  'one.example': { TXT: [`v=spf1 ip4:${ALLOWED} -all`] },
  'a._domainkey.one.example': { TXT: [KEY_A.record] },
  'ed._domainkey.one.example': { TXT: [ED25519.record] },
  'revoked._domainkey.one.example': { TXT: ['v=DKIM1; k=rsa; p='] },
  'junk._domainkey.one.example': { TXT: ['v=DKIM1; k=rsa; p=AAAAnotakey'] },
  'broken._domainkey.one.example': { servfail: true },
  '_dmarc.one.example': { TXT: ['v=DMARC1; p=reject'] },
  'testing._domainkey.one.example': { TXT: [`${KEY_A.record}; t=y`] },
  'sameonly._domainkey.one.example': { TXT: [`${KEY_A.record}; t=s`] },
  'sha1._domainkey.one.example': { TXT: [KEY_A.record.replace('k=rsa;', 'k=rsa; h=sha1;')] },
  'two.example': { TXT: ['v=spf1 ip4:192.0.2.1 ~all'] },
  'b._domainkey.two.example': { TXT: [KEY_B.record] },
  '_dmarc.two.example': { TXT: ['v=DMARC1; p=quarantine; adkim=s'] },
  'helo.example': { TXT: [`v=spf1 ip4:${ALLOWED} -all`] },
};

function text(from: string, subject: string, body = 'Hello.\r\n', extra = ''): string {
  return `From: Sender <${from}>\r\nTo: alice@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n${extra}\r\n${body}`;
}

async function sign(
  message: string,
  signer: { domain: string; selector: string; privatePem: string },
  canonicalization = 'relaxed/relaxed',
  algorithm?: string,
  options: { maxBodyLength?: number; expires?: Date; headerList?: string[] } = {},
): Promise<string> {
  const result = await dkimSign(message, {
    canonicalization,
    signTime: new Date('2026-01-01T00:00:00Z'),
    ...(options.expires ? { expires: options.expires } : {}),
    ...(options.headerList ? { headerList: options.headerList } : {}),
    signatureData: [{ signingDomain: signer.domain, selector: signer.selector, privateKey: signer.privatePem, ...(algorithm ? { algorithm } : {}), ...(options.maxBodyLength !== undefined ? { maxBodyLength: options.maxBodyLength } : {}) }],
  } as Parameters<typeof dkimSign>[1]);
  assert.ok(result.signatures, 'the test message was signed');
  return result.signatures + message;
}

const A = { domain: 'one.example', selector: 'a', privatePem: KEY_A.privatePem };
const B = { domain: 'two.example', selector: 'b', privatePem: KEY_B.privatePem };

/** What popgate reads of a result, and the header fields it adds. */
function verdicts(result: AuthenticateResult) {
  return {
    spf: result.spf && { result: result.spf.status.result, comment: result.spf.status.comment },
    dkim: result.dkim.results.map((r) => ({ result: r.status.result, comment: r.status.comment, aligned: (r.status as { aligned?: unknown }).aligned, domain: r.signingDomain })),
    dmarc: result.dmarc && { result: result.dmarc.status.result, policy: result.dmarc.policy, from: result.dmarc.status.header?.from, dkim: result.dmarc.alignment?.dkim },
    arc: result.arc && result.arc.status.result,
    headers: result.headers,
  };
}

describe('mailauth checks as popgate runs them', () => {
  let dns: TestDns;
  let resolver: FilterDns;
  let memos: CheckMemos;
  const keys = new DkimKeyCache();

  before(async () => {
    dns = await startDns(structuredClone(ZONE));
    resolver = new FilterDns([dns.address], 1000);
    memos = new CheckMemos(resolver);
  });
  after(() => dns?.close());

  async function both(message: string, client: { ip?: string; helo?: string; sender?: string } = {}) {
    const input = { ip: client.ip ?? ALLOWED, helo: client.helo ?? 'client.one.example', sender: client.sender ?? 'news@one.example' };
    const buffer = Buffer.from(message, 'latin1');
    const theirs = await authenticate(buffer, { ...input, mta: HOSTNAME, resolver: resolver.resolve as DNSResolver, disableBimi: true, strict: true });
    const first = await authenticateMessage({ ...input, message: buffer, hostname: HOSTNAME, resolver: resolver.resolve, keys });
    const again = await authenticateMessage({ ...input, message: buffer, hostname: HOSTNAME, resolver: resolver.resolve, keys });
    assert.deepEqual(verdicts(first), verdicts(theirs), 'the same verdicts and header fields as authenticate()');
    assert.deepEqual(verdicts(again), verdicts(theirs), 'the same again with the key from the shared cache');
    const evaluated = await authenticateMessage({ ...input, message: buffer, hostname: HOSTNAME, resolver: resolver.resolve, keys, memos });
    const remembered = await authenticateMessage({ ...input, message: buffer, hostname: HOSTNAME, resolver: resolver.resolve, keys, memos });
    assert.deepEqual(verdicts(evaluated), verdicts(theirs), 'the same with SPF and DMARC remembered');
    assert.deepEqual(verdicts(remembered), verdicts(theirs), 'the same with SPF and DMARC from the memo');
    return verdicts(first);
  }

  // The last column: whether src/filter/dkim-pass.ts answers by itself (every signature passes
  // and nothing is unusual), or the message goes through mailauth's verifier.
  const cases: [string, () => Promise<string>, string[], boolean][] = [
    ['relaxed/relaxed, RSA', () => sign(text('news@one.example', 'relaxed'), A), ['pass'], true],
    ['simple/simple', () => sign(text('news@one.example', 'simple'), A, 'simple/simple'), ['pass'], true],
    ['relaxed/simple', () => sign(text('news@one.example', 'relaxed simple'), A, 'relaxed/simple'), ['pass'], true],
    ['Ed25519 (RFC 8463)', () => sign(text('news@one.example', 'ed'), { ...A, selector: 'ed', privatePem: ED25519.privatePem }, 'relaxed/relaxed', 'ed25519-sha256'), ['pass'], true],
    ['two signatures by two keys of two domains', async () => sign(await sign(text('news@one.example', 'two'), B), A), ['pass', 'pass'], true],
    ['a body changed after signing', async () => (await sign(text('news@one.example', 'changed'), A)).replace('Hello.', 'Hellp.'), ['fail'], false],
    ['a header field changed after signing', async () => (await sign(text('news@one.example', 'subject changed'), A)).replace('Subject: subject changed', 'Subject: other'), ['fail'], false],
    ['signed with a key the domain does not publish', () => sign(text('news@one.example', 'wrong key'), { ...A, privatePem: KEY_UNPUBLISHED.privatePem }), ['fail'], false],
    ['a revoked key (p=)', () => sign(text('news@one.example', 'revoked'), { ...A, selector: 'revoked' }), ['neutral'], false],
    ['a record that is not a key', () => sign(text('news@one.example', 'junk'), { ...A, selector: 'junk' }), ['neutral'], false],
    ['no key record', () => sign(text('news@one.example', 'nokey'), { ...A, selector: 'missing' }), ['neutral'], false],
    ['the key server failing', () => sign(text('news@one.example', 'servfail'), { ...A, selector: 'broken' }), ['temperror'], false],
    ['not signed', async () => text('news@one.example', 'unsigned'), ['none'], true],
    ['signed by another domain than From (strict alignment)', () => sign(text('news@two.example', 'unaligned'), A), ['pass'], true],
    ['bare LFs in the header and body', async () => (await sign(text('news@one.example', 'bare'), A)).replace(/\r\n/g, '\n'), ['pass'], false],
    ['an empty first line (no header section)', async () => `\r\n${await sign(text('news@one.example', 'empty'), A)}`, ['none'], false],
    ['no body at all', async () => (await sign(text('news@one.example', 'headers only'), A)).replace(/\r\n\r\nHello\.\r\n$/, '\r\n'), ['fail'], false],
    ['a body of several pieces (over 64 KiB)', () => sign(text('news@one.example', 'large', 'x'.repeat(76) + '\r\n'.repeat(1) + `${'y'.repeat(998)}\r\n`.repeat(100)), A), ['pass'], false],
    ['two From fields', async () => sign(text('news@one.example', 'two from', undefined, 'From: other@two.example\r\n'), A), ['pass'], true],
    ['simple/relaxed', () => sign(text('news@one.example', 'simple relaxed'), A, 'simple/relaxed'), ['pass'], true],
    ['a folded header field and runs of white space, relaxed', () => sign(text('news@one.example', 'folded  \t subject', undefined, 'X-Folded:   one\r\n \t two  \r\n'), A, 'relaxed/relaxed', undefined, { headerList: ['from', 'subject', 'x-folded', 'to'] }), ['pass'], true],
    ['the same folded field, simple', () => sign(text('news@one.example', 'folded  \t simple', undefined, 'X-Folded:   one\r\n \t two  \r\n'), A, 'simple/simple', undefined, { headerList: ['from', 'subject', 'x-folded', 'to'] }), ['pass'], true],
    ['a body with trailing white space and empty lines, relaxed', () => sign(text('news@one.example', 'body ws', 'line one  \r\n\tline\t two \r\n\r\n\r\n'), A), ['pass'], true],
    ['a body with trailing empty lines, simple', () => sign(text('news@one.example', 'body simple', 'line one  \r\n\r\n\r\n'), A, 'simple/simple'), ['pass'], true],
    ['an empty body', async () => sign(text('news@one.example', 'empty body', ''), A), ['pass'], true],
    ['a body length limit (l=)', () => sign(text('news@one.example', 'length'), A, 'relaxed/relaxed', undefined, { maxBodyLength: 3 }), ['pass'], false],
    ['a body length limit with unsigned text after it', async () => (await sign(text('news@one.example', 'length more'), A, 'relaxed/relaxed', undefined, { maxBodyLength: 3 })).replace('Hello.', 'Hello. And more'), ['pass'], false],
    ['an expiry (x=) in the future', () => sign(text('news@one.example', 'expires'), A, 'relaxed/relaxed', undefined, { expires: new Date('2099-01-01T00:00:00Z') }), ['pass'], false],
    ['an expiry (x=) in the past', () => sign(text('news@one.example', 'expired'), A, 'relaxed/relaxed', undefined, { expires: new Date('2026-01-02T00:00:00Z') }), ['neutral'], false],
    ['From not signed (h= without it)', async () => (await sign(text('news@one.example', 'no from'), A)).replace(/(h=[^;]*)\bFrom\b/, '$1Sender'), ['neutral'], false],
    ['rsa-sha1', () => sign(text('news@one.example', 'sha1'), { ...A, selector: 'sha1' }, 'relaxed/relaxed', 'rsa-sha1'), ['policy'], false],
    ['a key in testing mode (t=y)', () => sign(text('news@one.example', 'testing'), { ...A, selector: 'testing' }), ['pass'], false],
    ['a key for the domain itself only (t=s)', () => sign(text('news@one.example', 'same only'), { ...A, selector: 'sameonly' }), ['pass'], false],
    ['three signatures', async () => sign(await sign(await sign(text('news@one.example', 'three'), B), A), { ...A, selector: 'ed', privatePem: ED25519.privatePem }, 'relaxed/relaxed', 'ed25519-sha256'), ['pass', 'pass', 'pass'], false],
    ['one signature passing and one failing', async () => sign(await sign(text('news@one.example', 'pass and fail'), { ...B, privatePem: KEY_A.privatePem }), A), ['pass', 'fail'], false],
    ['a tag name in capitals (strict: an unknown tag)', async () => (await sign(text('news@one.example', 'capital'), A)).replace('; s=a;', '; s=a; Q=x;'), ['fail'], false],
    ['a broken ARC set', async () => `ARC-Seal: i=x; a=rsa-sha256; cv=none; d=one.example; s=a; b=AAAA\r\n${await sign(text('news@one.example', 'arc junk'), A)}`, ['pass'], false],
    ['a bare CR in the body', () => sign(text('news@one.example', 'bare cr', 'Hello.\rWorld.\r\n'), A), ['pass'], false],
    ['a group and an encoded display name in From', () => sign(text('news@one.example', 'group').replace('From: Sender <news@one.example>', 'From: =?utf-8?q?S=C3=A9nder?= <news@one.example>, Team: news@one.example;'), A), ['pass'], true],
  ];
  for (const [name, build, dkim, own] of cases) {
    test(name, async () => {
      const message = await build();
      const result = await both(message);
      assert.deepEqual(
        result.dkim.map((r) => r.result),
        dkim,
      );
      const answered = await passingDkim(Buffer.from(message, 'latin1'), 'news@one.example', keys.forMessage(resolver.resolve));
      assert.equal(answered !== undefined, own, own ? 'answered by popgate\'s own pass path' : 'left to mailauth\'s verifier');
    });
  }

  test('a key lookup that fails is asked of the DNS as often as authenticate() asks it (not again by the verifier after the pass path)', async () => {
    const message = Buffer.from(await sign(text('news@one.example', 'servfail count'), { ...A, selector: 'broken' }), 'latin1');
    const asked = () => dns.queries.filter((query) => query === 'TXT broken._domainkey.one.example').length;
    const input = { ip: ALLOWED, helo: 'client.one.example', sender: 'news@one.example' };
    let before = asked();
    await authenticate(message, { ...input, mta: HOSTNAME, resolver: resolver.resolve as DNSResolver, disableBimi: true, strict: true });
    const theirs = asked() - before;
    before = asked();
    const ours = await authenticateMessage({ ...input, message, hostname: HOSTNAME, resolver: resolver.resolve, keys, memos });
    assert.equal(ours.dkim.results[0].status.result, 'temperror');
    assert.ok(theirs > 0);
    assert.equal(asked() - before, theirs);
  });

  test('the null sender: the envelope address is the last Return-Path, as the verifier reads it', async () => {
    const message = `Return-Path: <first@one.example>\r\nReturn-Path: <bounces@one.example>\r\n${await sign(text('news@one.example', 'null sender'), A)}`;
    await both(message, { sender: '', helo: 'helo.example' });
    const own = await passingDkim(Buffer.from(message, 'latin1'), '', keys.forMessage(resolver.resolve));
    assert.equal(own?.result.envelopeFrom, 'bounces@one.example');
  });

  test('SPF: a client the record does not name, the null sender (HELO checked), an address literal as HELO', async () => {
    const message = await sign(text('news@one.example', 'spf'), A);
    const stranger = await both(message, { ip: '127.0.0.31' });
    assert.equal(stranger.spf && stranger.spf.result, 'fail');
    const nullSender = await both(message, { sender: '', helo: 'helo.example' });
    assert.equal(nullSender.spf && nullSender.spf.result, 'pass');
    await both(message, { helo: ALLOWED });
    await both(message, { ip: '::ffff:127.0.0.30' });
  });

  test('the DMARC verdicts follow: reject for a failing one.example message, quarantine for two.example', async () => {
    const failing = await both((await sign(text('news@one.example', 'dmarc'), A)).replace('Hello.', 'Changed.'), { ip: '127.0.0.31' });
    assert.deepEqual(failing.dmarc && [failing.dmarc.result, failing.dmarc.policy], ['fail', 'reject']);
    const quarantined = await both(await sign(text('news@two.example', 'dmarc two'), A), { sender: 'news@two.example' });
    assert.deepEqual(quarantined.dmarc && [quarantined.dmarc.result, quarantined.dmarc.policy], ['fail', 'quarantine']);
  });
});

describe('the shared DKIM key cache against the DNS', () => {
  let dns: TestDns;
  let now = Date.parse('2026-06-01T00:00:00Z');

  before(async () => {
    dns = await startDns(structuredClone(ZONE));
  });
  after(() => dns?.close());

  function authenticator() {
    const resolver = new FilterDns([dns.address], 1000, () => now);
    return new Authenticator({ hostname: HOSTNAME, resolver: resolver.resolve, deadlineMs: 5000 });
  }
  /** From a client the SPF record does not name, so that DMARC rests on DKIM alone. */
  const check = (auth: Authenticator, message: string) => auth.check({ message: Buffer.from(message, 'latin1'), ip: '127.0.0.31', helo: 'client.one.example', sender: 'news@one.example' });
  /** Publishes `entry` for key A's name until `body` has run (the next test finds key A again, its DNS answer expired). */
  async function publishing(entry: (typeof ZONE)[keyof typeof ZONE], body: () => Promise<void>): Promise<void> {
    dns.zone['a._domainkey.one.example'] = entry;
    try {
      await body();
    } finally {
      dns.zone['a._domainkey.one.example'] = { TXT: [KEY_A.record] };
      now += 61_000;
    }
  }

  test('a key rotated in the DNS is used once the cached DNS answer expires, and the old one no longer', async () => {
    const auth = authenticator();
    const byA = await sign(text('news@one.example', 'rotation a'), A);
    const byB = await sign(text('news@one.example', 'rotation b'), { ...A, privatePem: KEY_B.privatePem });
    assert.equal((await check(auth, byA)).dkim, 'pass');
    await publishing({ TXT: [KEY_B.record] }, async () => {
      assert.equal((await check(auth, byB)).dkim, 'fail', 'the DNS answer is still the cached one');
      now += 61_000; // popgate keeps DNS answers for a minute (src/filter/dns.ts)
      const rotated = await check(auth, byB);
      assert.deepEqual([rotated.dkim, rotated.dmarc], ['pass', 'pass'], 'the new key');
      const old = await check(auth, byA);
      assert.deepEqual([old.dkim, old.dmarc], ['fail', 'fail'], 'the old key is gone');
    });
  });

  test('a revoked key (p=) fails once the DNS says so, and DMARC with it', async () => {
    const auth = authenticator();
    const byA = await sign(text('news@one.example', 'revocation'), A);
    assert.equal((await check(auth, byA)).dkim, 'pass');
    await publishing({ TXT: ['v=DKIM1; k=rsa; p='] }, async () => {
      now += 61_000;
      const revoked = await check(auth, byA);
      assert.notEqual(revoked.dkim, 'pass');
      assert.match(revoked.headers, /dkim=neutral \(invalid public key\)/);
      assert.deepEqual([revoked.dmarc, revoked.dmarcPolicy], ['fail', 'reject']);
    });
    assert.equal((await check(auth, byA)).dkim, 'pass', 'published again');
  });

  test('a DNS failure is not remembered: the key is used as soon as the DNS answers again', async () => {
    const auth = authenticator();
    const byA = await sign(text('news@one.example', 'servfail then ok'), A);
    await publishing({ servfail: true }, async () => {
      assert.equal((await check(auth, byA)).dkim, 'temperror');
    });
    now -= 61_000; // no time passes: SERVFAIL is never cached (src/filter/dns.ts)
    assert.equal((await check(auth, byA)).dkim, 'pass');
  });

  test('a record is parsed once for all messages; the cache keeps at most its limit of records', async () => {
    const resolver = new FilterDns([dns.address], 1000, () => now);
    const keys = new DkimKeyCache(2);
    const run = async (message: string) => authenticateMessage({ message: Buffer.from(message, 'latin1'), ip: ALLOWED, helo: 'client.one.example', sender: 'news@one.example', hostname: HOSTNAME, resolver: resolver.resolve, keys });
    for (let n = 0; n < 5; n++) await run(await sign(text('news@one.example', `many ${n}`), A));
    assert.equal(keys.size, 1);
    await run(await sign(text('news@one.example', 'ed'), { ...A, selector: 'ed', privatePem: ED25519.privatePem }, 'relaxed/relaxed', 'ed25519-sha256'));
    await run(await sign(text('news@one.example', 'revoked'), { ...A, selector: 'revoked' }));
    assert.equal(keys.size, 2, 'the oldest let go');
    const result = await run(await sign(text('news@one.example', 'after eviction'), A));
    assert.equal(result.dkim.results[0].status.result, 'pass', 'parsed again');
  });
});

describe('SPF and DMARC results remembered against the DNS', () => {
  let dns: TestDns;
  let now = Date.parse('2026-06-01T00:00:00Z');
  let resolver: FilterDns;
  let memos: CheckMemos;
  const keys = new DkimKeyCache();

  before(async () => {
    dns = await startDns({ ...structuredClone(ZONE), 'macro.example': { TXT: [`v=spf1 ip4:${ALLOWED} exp=why.macro.example -all`] }, 'why.macro.example': { TXT: ['Refused at %{t}'] } });
  });
  after(() => dns?.close());

  /** A fresh DNS cache and memo for each test, on the test's clock. */
  function fresh() {
    resolver = new FilterDns([dns.address], 1000, () => now);
    memos = new CheckMemos(resolver);
  }
  const input = (sender = 'news@one.example', ip = ALLOWED) => ({ ip, helo: 'client.one.example', sender });
  const run = async (message: string, sender?: string, ip?: string) => authenticateMessage({ ...input(sender, ip), message: Buffer.from(message, 'latin1'), hostname: HOSTNAME, resolver: resolver.resolve, keys, memos });
  /** What authenticate() says now, through the same DNS cache. */
  const theirs = async (message: string, sender?: string, ip?: string) => authenticate(Buffer.from(message, 'latin1'), { ...input(sender, ip), mta: HOSTNAME, resolver: resolver.resolve as DNSResolver, disableBimi: true, strict: true });
  async function changing(name: keyof typeof ZONE, entry: (typeof ZONE)[keyof typeof ZONE], body: () => Promise<void>): Promise<void> {
    const old = dns.zone[name];
    dns.zone[name] = entry;
    try {
      await body();
    } finally {
      dns.zone[name] = old;
      now += 61_000;
    }
  }

  test('an SPF result is used again while its DNS answer stands, and a changed record once the answer expires', async () => {
    fresh();
    const first = await run(await sign(text('news@one.example', 'spf memo 1'), A));
    const second = await run(await sign(text('news@one.example', 'spf memo 2'), A));
    assert.equal(first.spf && first.spf.status.result, 'pass');
    assert.equal(second.spf, first.spf, 'the remembered result');
    await changing('one.example', { TXT: ['v=spf1 -all'] }, async () => {
      const cached = await run(await sign(text('news@one.example', 'spf memo 3'), A));
      assert.equal(cached.spf, first.spf, 'the DNS answer is still the cached one');
      now += 61_000; // popgate keeps DNS answers for a minute (src/filter/dns.ts)
      const message = await sign(text('news@one.example', 'spf memo 4'), A);
      const changed = await run(message);
      assert.equal(changed.spf && changed.spf.status.result, 'fail');
      assert.deepEqual(verdicts(changed), verdicts(await theirs(message)));
    });
  });

  test('a DMARC result is used again while its DNS answers stand, and a changed policy once they expire', async () => {
    fresh();
    const first = await run(await sign(text('news@one.example', 'dmarc memo 1'), A));
    const second = await run(await sign(text('news@one.example', 'dmarc memo 2'), A));
    assert.deepEqual(first.dmarc && [first.dmarc.status.result, first.dmarc.policy], ['pass', 'reject']);
    assert.equal(second.dmarc, first.dmarc, 'the remembered result');
    await changing('_dmarc.one.example', { TXT: ['v=DMARC1; p=quarantine'] }, async () => {
      assert.equal((await run(await sign(text('news@one.example', 'dmarc memo 3'), A))).dmarc, first.dmarc, 'the DNS answer is still the cached one');
      now += 61_000;
      const message = await sign(text('news@one.example', 'dmarc memo 4'), A);
      const changed = await run(message);
      assert.deepEqual(changed.dmarc && [changed.dmarc.status.result, changed.dmarc.policy], ['pass', 'quarantine']);
      assert.deepEqual(verdicts(changed), verdicts(await theirs(message)));
    });
  });

  test('a DNS failure is never the basis of a remembered result: SPF passes as soon as the DNS answers again', async () => {
    fresh();
    const message = await sign(text('news@one.example', 'spf servfail'), A);
    await changing('one.example', { servfail: true }, async () => {
      const failed = await run(message);
      assert.equal(failed.spf && failed.spf.status.result, 'temperror');
      assert.deepEqual(verdicts(failed), verdicts(await theirs(message)));
    });
    now -= 61_000; // no time passes: SERVFAIL is never cached (src/filter/dns.ts)
    const answered = await run(message);
    assert.equal(answered.spf && answered.spf.status.result, 'pass');
  });

  test('an SPF evaluation that read the %{t} macro (the current time, in an explanation) is evaluated every time', async () => {
    fresh();
    const message = await sign(text('news@macro.example', 'time macro'), A);
    const first = await run(message, 'news@macro.example', '127.0.0.31');
    assert.equal(first.spf && first.spf.status.result, 'fail');
    assert.match(String((first.spf as { explanation?: string }).explanation), /^Refused at \d+$/);
    assert.deepEqual(verdicts(first), verdicts(await theirs(message, 'news@macro.example', '127.0.0.31')));
    const second = await run(message, 'news@macro.example', '127.0.0.31');
    assert.notEqual(second.spf, first.spf, 'evaluated again');
    assert.equal(memos.spf.size, 0);
    await run(message, 'news@macro.example');
    assert.equal(memos.spf.size, 1, 'a pass reads no explanation: remembered');
  });
});
