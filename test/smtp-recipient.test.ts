import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseForwardPath, parseReversePath } from '../src/mail/address.ts';
import { addressReply } from '../src/smtp/replies.ts';

// The text inside <...> of RCPT TO and MAIL FROM, parsed without interpretation: a plain
// user@domain is accepted and normalized; every form that has been used to make a server
// relay is refused with a reply a client can show. The parser says what is wrong; the SMTP
// reply for it comes from src/smtp/replies.ts, and both are checked here together.

type ParsedRecipient =
  | { ok: true; local: string; domain: string; address: string }
  | { ok: false; code: number; enhanced: string; reason: string };

/** The parse and, for a refusal, the reply RCPT TO gets. */
function parseRecipient(text: string): ParsedRecipient {
  const parsed = parseForwardPath(text);
  if (parsed.ok) return parsed;
  const reply = addressReply(parsed.problem, 'RCPT');
  return { ok: false, code: reply.code, enhanced: reply.enhanced, reason: parsed.problem.reason };
}

/** The same for MAIL FROM. */
function parseSender(text: string): ParsedRecipient | { ok: true; nullSender: true } {
  const parsed = parseReversePath(text);
  if (parsed.ok) return parsed;
  const reply = addressReply(parsed.problem, 'MAIL');
  return { ok: false, code: reply.code, enhanced: reply.enhanced, reason: parsed.problem.reason };
}

function accepts(text: string, address: string): void {
  const parsed = parseRecipient(text);
  assert.ok(parsed.ok, `${JSON.stringify(text)} should be accepted, got ${JSON.stringify(parsed)}`);
  assert.equal(parsed.address, address);
  assert.equal(`${parsed.local}@${parsed.domain}`, address);
}

function refuses(text: string, code: number, enhanced: string, reason?: RegExp): void {
  const parsed = parseRecipient(text);
  if (parsed.ok) assert.fail(`${JSON.stringify(text.slice(0, 80))} should be refused, got ${JSON.stringify(parsed)}`);
  assert.equal(parsed.code, code, parsed.reason);
  assert.equal(parsed.enhanced, enhanced, parsed.reason);
  if (reason) assert.match(parsed.reason, reason);
  assertSmtpSentence(parsed.reason);
}

const syntaxError = (text: string, reason?: RegExp) => refuses(text, 501, '5.1.3', reason);
const relayTrick = (text: string, reason: RegExp) => refuses(text, 550, '5.7.1', reason);

/** A reason goes after "550 5.7.1 " in a reply: one printable line, a capitalized sentence. */
function assertSmtpSentence(reason: string): void {
  assert.match(reason, /^[A-Z][\x20-\x7e§]*$/u, `not a reply sentence: ${JSON.stringify(reason)}`);
  assert.ok(reason.length < 200);
}

describe('plain addresses are accepted and normalized', () => {
  test('local part and domain are lower-cased', () => {
    accepts('user@example.test', 'user@example.test');
    accepts('User@EXAMPLE.test', 'user@example.test');
    accepts('USER@Example.Test', 'user@example.test');
    accepts('First.Last+Tag@Mail.Example.Test', 'first.last+tag@mail.example.test');
  });

  test('the result carries local, domain and address separately', () => {
    assert.deepEqual(parseRecipient('Jane.Doe@Example.TEST'), { ok: true, local: 'jane.doe', domain: 'example.test', address: 'jane.doe@example.test' });
  });

  test('atext other than % and ! is allowed in the local part', () => {
    accepts("o'brien@example.test", "o'brien@example.test");
    accepts('a#b$c&d*e+f/g=h?i^j_k`l{m|n}o~p-q@example.test', 'a#b$c&d*e+f/g=h?i^j_k`l{m|n}o~p-q@example.test');
    accepts('1234@example.test', '1234@example.test');
  });

  test('IDN domains become A-labels, whatever the case or the form given', () => {
    accepts('user@bücher.example', 'user@xn--bcher-kva.example');
    accepts('user@BÜCHER.example', 'user@xn--bcher-kva.example');
    accepts('User@Bücher.Example', 'user@xn--bcher-kva.example');
    accepts('user@xn--bcher-kva.example', 'user@xn--bcher-kva.example');
    accepts('user@XN--BCHER-KVA.EXAMPLE', 'user@xn--bcher-kva.example');
    accepts('user@例え.テスト', 'user@xn--r8jz45g.xn--zckzah');
  });

  test('domains may have digits and hyphens, and a numeric label that is not the last', () => {
    accepts('user@1example.test', 'user@1example.test');
    accepts('user@mail-1.example.test', 'user@mail-1.example.test');
    accepts('user@123.example.test', 'user@123.example.test');
  });

  test('normalizing is idempotent: the normalized address parses to itself', () => {
    for (const text of ['User@EXAMPLE.test', 'user@bücher.example', 'Jörg@Bücher.Example', 'A.B+C@Mail.Example.Test']) {
      const first = parseRecipient(text);
      assert.ok(first.ok);
      assert.deepEqual(parseRecipient(first.address), first);
    }
  });
});

describe('Postmaster without a domain (RFC 5321 §4.1.1.3)', () => {
  test('is accepted in any case with domain "" (the caller maps it to its primary domain)', () => {
    for (const text of ['postmaster', 'Postmaster', 'POSTMASTER', 'PostMaster']) {
      assert.deepEqual(parseRecipient(text), { ok: true, local: 'postmaster', domain: '', address: 'postmaster' });
    }
  });

  test('postmaster at a domain is an ordinary address', () => {
    accepts('Postmaster@Example.Test', 'postmaster@example.test');
  });

  test('other bare names, and postmaster with junk around it, are refused', () => {
    syntaxError('abuse', /needs a domain/);
    syntaxError('root', /needs a domain/);
    syntaxError('postmaster@', /empty domain/);
    syntaxError(' postmaster', /spaces/);
    syntaxError('postmaster\r\n', /control/);
    relayTrick('"postmaster"', /^Quoted local parts/);
  });
});

describe('source routes are refused', () => {
  test('one hop, several hops, any case', () => {
    relayTrick('@example.test:user@remote.net', /^Source routes are not accepted: send to a plain address/);
    relayTrick('@a,@b:user@remote.net', /^Source routes/);
    relayTrick('@a.example,@b.example:user@remote.example', /^Source routes/);
    relayTrick('@EXAMPLE.TEST:User@Remote.Net', /^Source routes/);
    relayTrick('@example.test:user', /^Source routes/);
    relayTrick('@a,@b', /^Source routes/);
  });

  test('a lone leading @ is an empty local part, not a route', () => {
    syntaxError('@example.test', /empty local part/);
    syntaxError('@', /empty local part/);
  });
});

describe('the percent hack is refused', () => {
  test('anywhere in the address', () => {
    relayTrick('user%remote.net@example.test', /^Percent-hack addresses are not accepted: send to a plain address/);
    relayTrick('USER%REMOTE.NET@EXAMPLE.TEST', /^Percent-hack/);
    relayTrick('user%remote.net%other.net@example.test', /^Percent-hack/);
    relayTrick('user%remote.net', /^Percent-hack/);
    relayTrick('user@ex%61mple.test', /^Percent-hack/);
    relayTrick('%@example.test', /^Percent-hack/);
  });
});

describe('bang paths are refused', () => {
  test('with or without a local domain', () => {
    relayTrick('remote.net!user@example.test', /^Bang paths are not accepted: send to a plain address/);
    relayTrick('remote.net!user', /^Bang paths/);
    relayTrick('a!b!user@example.test', /^Bang paths/);
    relayTrick('REMOTE!User@Example.Test', /^Bang paths/);
    relayTrick('user!@example.test', /^Bang paths/);
  });
});

describe('quoted local parts are refused', () => {
  test('with @, % or ! inside, and plain ones too', () => {
    relayTrick('"user@remote.net"@example.test', /^Quoted local parts are not accepted: send to a plain address/);
    relayTrick('"user%remote.net"@example.test', /^Quoted local parts/);
    relayTrick('"remote.net!user"@example.test', /^Quoted local parts/);
    relayTrick('"user"@example.test', /^Quoted local parts/);
    syntaxError('"john doe"@example.test', /spaces/); // refused all the same, by the space rule
    relayTrick('""@example.test', /^Quoted local parts/);
    relayTrick('"unterminated@example.test', /^Quoted local parts/);
    relayTrick('us"er@example.test', /^Quoted local parts/);
  });
});

describe('address literals are refused', () => {
  test('IPv4 and IPv6 in brackets', () => {
    relayTrick('user@[127.0.0.1]', /^Address literals are not accepted: send to a plain address/);
    relayTrick('user@[192.0.2.1]', /^Address literals/);
    relayTrick('user@[IPv6:::1]', /^Address literals/);
    relayTrick('user@[IPv6:2001:db8::1]', /^Address literals/);
    relayTrick('user@[ipv6:::ffff:127.0.0.1]', /^Address literals/);
    relayTrick('user@[example.test]', /^Address literals/);
    relayTrick('user@[]', /^Address literals/);
    relayTrick('user@[127.0.0.1', /^Address literals/);
    relayTrick('user@127.0.0.1]', /^Address literals/);
  });

  test('IP addresses without brackets, in every form a URL parser understands', () => {
    relayTrick('user@192.0.2.1', /^IP addresses as domains are not accepted/);
    relayTrick('user@127.0.0.1', /^IP addresses as domains/);
    relayTrick('user@127.1', /^IP addresses as domains/);
    relayTrick('user@1.2.3', /^IP addresses as domains/);
    relayTrick('user@2130706433', /^IP addresses as domains/);
    relayTrick('user@0x7f.1', /^IP addresses as domains/);
    relayTrick('user@0x7f.0.0.1', /^IP addresses as domains/);
    relayTrick('user@0177.0.0.1', /^IP addresses as domains/);
  });

  test('an all-numeric last label that is no IPv4 address is a bad domain', () => {
    syntaxError('user@example.123', /Invalid domain/);
  });
});

describe('a trailing dot in the domain is refused, never stripped', () => {
  test('one dot, two dots, with IDN and mixed case', () => {
    relayTrick('user@example.test.', /^Domains with a trailing dot are not accepted/);
    relayTrick('user@example.test..', /^Domains with a trailing dot/);
    relayTrick('User@EXAMPLE.TEST.', /^Domains with a trailing dot/);
    relayTrick('user@bücher.example.', /^Domains with a trailing dot/);
    relayTrick('user@.', /^Domains with a trailing dot/);
  });

  test('nor hidden behind characters that trimming would remove', () => {
    syntaxError('user@example.test.\u00a0', /spaces/);
    syntaxError('user@example.test.\u2028', /spaces/);
    syntaxError('user@example.test.\ufeff', /invisible/);
    syntaxError('user@example.test\u3002', /Invalid characters in the domain/); // ideographic full stop
    syntaxError('user@example.test\uff0e', /Invalid characters in the domain/); // fullwidth full stop
  });
});

describe('syntax errors are 501 5.1.3', () => {
  test('no @', () => {
    syntaxError('user', /needs a domain/);
    syntaxError('example.test', /needs a domain/);
    syntaxError('', /empty/);
  });

  test('empty local part or domain', () => {
    syntaxError('@example.test', /empty local part/);
    syntaxError('user@', /empty domain/);
  });

  test('more than one @ is refused as a relay trick', () => {
    relayTrick('user@remote.net@example.test', /^Addresses with more than one @ are not accepted/);
    relayTrick('user@@example.test', /more than one @/);
    relayTrick('a@b@c@example.test', /more than one @/);
  });

  test('spaces of any kind', () => {
    for (const text of ['user @example.test', 'user@ example.test', ' user@example.test', 'user@example.test ', 'us er@example.test', 'user@exa mple.test', 'user\t@example.test', 'user@example.test\u00a0', 'user\u3000@example.test', 'user@example\u2003.test']) {
      syntaxError(text, /spaces/);
    }
  });

  test('CR, LF, NUL and other controls: no command injection through the address', () => {
    for (const text of [
      'user@example.test\r\nRCPT TO:<victim@remote.net>',
      'user@example.test\nDATA',
      'user@example.test\r',
      'user\r\n@example.test',
      'user@example.test\0',
      '\0user@example.test',
      'us\0er@example.test',
      'user@exa\0mple.test',
      'user@example.test\x7f',
      'user\x1b[31m@example.test',
      'user@example.test\u0085',
      'postmaster\0',
    ]) {
      syntaxError(text, /control/);
    }
  });

  test('invisible characters: zero-width, soft hyphen, direction overrides, lone surrogates', () => {
    for (const text of ['us\u200ber@example.test', 'user@exa\u200dmple.test', 'user@exa\u00admple.test', 'us\u202eer@example.test', 'user@example\u2066.test', '\ufeffuser@example.test', 'user\ud800@example.test', 'user@\udc00.test']) {
      syntaxError(text, /invisible/);
    }
  });

  test('dots misplaced in the local part', () => {
    syntaxError('.user@example.test', /local part/);
    syntaxError('user.@example.test', /local part/);
    syntaxError('us..er@example.test', /local part/);
    syntaxError('.@example.test', /local part/);
  });

  test('characters outside atext in the local part', () => {
    for (const text of ['us(er)@example.test', 'us,er@example.test', 'us:er@example.test', 'us;er@example.test', 'us<er@example.test', 'us>er@example.test', 'us[er]@example.test', 'us\\er@example.test', 'user\u2603@example.test']) {
      syntaxError(text, /Invalid characters in the local part/);
    }
  });

  test('bad domains', () => {
    syntaxError('user@localhost', /Invalid domain/);
    syntaxError('user@-example.test', /Invalid domain/);
    syntaxError('user@example-.test', /Invalid domain/);
    syntaxError('user@.example.test', /Invalid domain/);
    syntaxError('user@exa..mple.test', /Invalid domain/);
    syntaxError('user@ex_ample.test', /Invalid characters in the domain/);
    syntaxError('user@example.test:25', /Invalid characters in the domain/);
    syntaxError(`user@${'a'.repeat(64)}.test`, /Invalid domain/);
  });

  test('nothing is silently cut off the domain (a URL host parser would stop at / ? # \\)', () => {
    for (const text of ['user@example.test/x', 'user@example.test?evil.net', 'user@example.test#evil.net', 'user@example.test\\evil.net', 'user@evil.net/example.test']) {
      syntaxError(text, /Invalid characters in the domain/);
    }
  });
});

describe('lengths (RFC 5321 §4.5.3.1)', () => {
  const domain253 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;

  test('a 64-octet local part is accepted, 65 octets are refused', () => {
    accepts(`${'a'.repeat(64)}@example.test`, `${'a'.repeat(64)}@example.test`);
    syntaxError(`${'a'.repeat(65)}@example.test`, /64 octets/);
  });

  test('octets, not characters: 32 two-octet letters fit, 33 do not', () => {
    accepts(`${'ü'.repeat(32)}@example.test`, `${'ü'.repeat(32)}@example.test`);
    syntaxError(`${'ü'.repeat(33)}@example.test`, /64 octets/);
  });

  test('the longest domain is accepted, with the longest local part', () => {
    assert.equal(domain253.length, 253);
    accepts(`${'a'.repeat(64)}@${domain253}`, `${'a'.repeat(64)}@${domain253}`);
  });

  test('a longer domain is refused', () => {
    syntaxError(`user@x${domain253}`);
    syntaxError(`user@${'a.'.repeat(200)}test`, /too long/);
  });

  test('a 1 MB address is refused at once', () => {
    for (const text of [`${'a'.repeat(1 << 20)}@example.test`, `user@${'a.'.repeat(1 << 19)}test`, '@'.repeat(1 << 20), '\0'.repeat(1 << 20)]) {
      const started = performance.now();
      syntaxError(text, /too long/);
      assert.ok(performance.now() - started < 50, 'took too long');
    }
  });
});

describe('SMTPUTF8 local parts', () => {
  test('letters and digits of any script are accepted and lower-cased', () => {
    accepts('jörg@example.test', 'jörg@example.test');
    accepts('JÖRG@Bücher.Example', 'jörg@xn--bcher-kva.example');
    accepts('Ωμέγα@example.test', 'ωμέγα@example.test');
    accepts('用户@例え.テスト', '用户@xn--r8jz45g.xn--zckzah');
    accepts('пользователь.1@example.test', 'пользователь.1@example.test');
    accepts('user٣@example.test', 'user٣@example.test');
  });

  test('symbols, punctuation and combining marks are refused (only precomposed letters pass)', () => {
    for (const text of ['user\u2603@example.test', 'user\u00b7x@example.test', 'user\u2019s@example.test', 'user\u00ab@example.test', 'use\u0301r@example.test', 'e\u0301@example.test']) {
      syntaxError(text, /Invalid characters in the local part/);
    }
  });

  test('letters that lower-case into ASCII are refused, so no address collides with an ASCII mailbox', () => {
    syntaxError('\u212Aarl@example.test', /lower-case to ASCII/); // KELVIN SIGN -> "k"
    syntaxError('\u0130stanbul@example.test', /./); // İ -> "i" + combining dot
    syntaxError('\u0130\u0130@example.test', /./);
  });
});

describe('local domains must be compared by exact equality', () => {
  // The caller checks parsed.domain === localDomain. These addresses parse fine and keep
  // their remote domain intact, so an exact comparison with example.test rejects them;
  // a suffix or substring comparison would not.
  const cases: [string, string][] = [
    ['user@example.test.remote.net', 'example.test.remote.net'],
    ['user@example.test.evil.net', 'example.test.evil.net'],
    ['user@evil-example.test', 'evil-example.test'],
    ['user@evilexample.test', 'evilexample.test'],
    ['user@xample.test', 'xample.test'],
    ['user@sub.example.test', 'sub.example.test'],
    ['USER@EXAMPLE.TEST.EVIL.NET', 'example.test.evil.net'],
  ];
  for (const [text, domain] of cases) {
    test(`${text} keeps domain ${domain}`, () => {
      const parsed = parseRecipient(text);
      assert.ok(parsed.ok);
      assert.equal(parsed.domain, domain);
      assert.notEqual(parsed.domain, 'example.test');
    });
  }

  test('the local domain itself matches exactly after normalization', () => {
    for (const text of ['user@example.test', 'user@EXAMPLE.TEST', 'user@Example.Test']) {
      const parsed = parseRecipient(text);
      assert.ok(parsed.ok);
      assert.equal(parsed.domain, 'example.test');
    }
  });
});

describe('MAIL FROM: parseSender', () => {
  test('"" is the null reverse-path of bounces', () => {
    assert.deepEqual(parseSender(''), { ok: true, nullSender: true });
  });

  test('plain senders are normalized like recipients', () => {
    assert.deepEqual(parseSender('Someone@Remote.Example'), { ok: true, local: 'someone', domain: 'remote.example', address: 'someone@remote.example' });
    assert.deepEqual(parseSender('leser@bücher.example'), parseRecipient('leser@bücher.example'));
  });

  test('relay tricks in the sender are 553 5.1.7 with the same reason', () => {
    for (const text of ['user%remote.net@example.test', 'remote.net!user@example.test', '@a,@b:user@remote.net', '"user@remote.net"@example.test', 'user@[127.0.0.1]', 'user@example.test.', 'user@remote.net@example.test', 'user@127.1']) {
      const parsed = parseSender(text);
      assert.ok(!parsed.ok, text);
      assert.equal(parsed.code, 553, text);
      assert.equal(parsed.enhanced, '5.1.7', text);
      assert.equal(parsed.reason, (parseRecipient(text) as { reason: string }).reason);
    }
  });

  test('syntax errors stay 501 5.1.3', () => {
    for (const text of ['user', 'user@', '@example.test', 'user@example.test\r\nDATA', 'us er@example.test']) {
      const parsed = parseSender(text);
      assert.ok(!parsed.ok, text);
      assert.equal(parsed.code, 501, text);
      assert.equal(parsed.enhanced, '5.1.3', text);
    }
  });

  test('a bare Postmaster is a recipient only: a sender needs a domain', () => {
    const parsed = parseSender('Postmaster');
    assert.ok(!parsed.ok);
    assert.equal(parsed.code, 501);
    assert.match(parsed.reason, /Sender needs a domain/);
  });
});

describe('arbitrary input never throws', () => {
  // mulberry32: the same garbage on every run, so a failure can be replayed.
  function prng(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const alphabet = [...'aAzZ09.-_@%!"[]:,;<>()\\/ ?#+=\'`~^{}|$&*', '\0', '\r', '\n', '\t', '\x7f', 'ü', 'ß', 'İ', 'K', '。', '．', '\u00a0', '\u200d', '\u202e', '\ud800', '\udc00', '😀', 'é', '\u0301', 'xn--', 'example.test', 'postmaster', 'IPv6:', '0x', '127.0.0.1'];

  function check(text: string): void {
    let parsed: ParsedRecipient | { ok: true; nullSender: true };
    try {
      parsed = parseRecipient(text);
    } catch (error) {
      assert.fail(`parseRecipient threw on ${JSON.stringify(text)}: ${error}`);
    }
    if (parsed.ok) {
      // Whatever is accepted is a plain address that parses to itself and carries no trick.
      if (parsed.domain === '') {
        assert.equal(parsed.address, 'postmaster');
      } else {
        assert.equal(parsed.address, `${parsed.local}@${parsed.domain}`);
        assert.deepEqual(parseRecipient(parsed.address), parsed, `not idempotent: ${JSON.stringify(text)}`);
        assert.doesNotMatch(parsed.local, /[%!"@[\]\s\0:,;<>()\\]/u);
        assert.match(parsed.domain, /^[a-z0-9-]+(\.[a-z0-9-]+)+$/);
        assert.doesNotMatch(parsed.domain, /\.[0-9]+$/);
        assert.ok(Buffer.byteLength(parsed.local) <= 64 && parsed.domain.length <= 255);
      }
    } else {
      assert.ok([501, 550].includes(parsed.code));
      assertSmtpSentence(parsed.reason);
    }
    assert.doesNotThrow(() => parseSender(text));
  }

  test('20,000 seeded random strings', () => {
    const random = prng(0x5eed);
    for (let i = 0; i < 20_000; i++) {
      const length = Math.floor(random() * 40);
      let text = '';
      for (let j = 0; j < length; j++) {
        text += random() < 0.2 ? String.fromCharCode(Math.floor(random() * 0x10000)) : alphabet[Math.floor(random() * alphabet.length)];
      }
      check(text);
    }
  });

  test('random mutations of a valid address', () => {
    const random = prng(42);
    const base = 'User.Name+tag@Mail.Bücher.Example';
    for (let i = 0; i < 20_000; i++) {
      const chars = [...base];
      for (let k = 0; k < 1 + Math.floor(random() * 3); k++) {
        const at = Math.floor(random() * (chars.length + 1));
        const piece = alphabet[Math.floor(random() * alphabet.length)];
        if (random() < 0.5) chars.splice(at, 1, piece);
        else chars.splice(at, 0, piece);
      }
      check(chars.join(''));
    }
  });
});
