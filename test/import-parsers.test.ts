import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LegacyHashError, parseImportedPassword } from '../src/accounts/legacy-hash.ts';
import { MailLocation, MailLocationError } from '../src/import/mail-location.ts';
import { parsePasswdFile } from '../src/import/passwd-file.ts';
import { parseServer } from '../src/import/pop3-client.ts';
import { parsePasswordsFile, PasswordsFileError } from '../src/import/pop3.ts';
import { parsePostfixMap } from '../src/import/postfix.ts';
import { assignPositions } from '../src/import/target.ts';
import { parseUidlist, UidlistError } from '../src/import/uidlist.ts';
import { UidlFormat, UidlFormatError } from '../src/import/uidl-format.ts';

// The formats an import reads from another server, each with its limits and its refusals.

describe('dovecot-uidlist', () => {
  test('version 3: header keys, record fields (P, O, G ...), records by base name', () => {
    const list = parseUidlist('3 V1700000000 N7 G0123abcd\n1 :1.M1.host,S=10:2,S\n3 Pkept/uidl,1:x O2 W12 :2.M2.host,S=10\n5 P :3.M3.host\n');
    assert.equal(list.version, 3);
    assert.equal(list.uidValidity, 1700000000);
    assert.equal(list.nextUid, 7);
    assert.deepEqual([...list.records.keys()], ['1.M1.host,S=10', '2.M2.host,S=10', '3.M3.host']);
    assert.equal(list.records.get('2.M2.host,S=10')?.fields.get('P'), 'kept/uidl,1:x');
    assert.equal(list.records.get('2.M2.host,S=10')?.fields.get('O'), '2');
    assert.equal(list.records.get('3.M3.host')?.fields.get('P'), '', 'an empty P: the base name');
  });

  test('version 1 (Dovecot 1.0, Courier): "1 <uidvalidity> <nextuid>" and "<uid> <filename>"', () => {
    const list = parseUidlist('1 1234 4\n1 1.M1.host:2,S\n3 2.M2.host\n');
    assert.equal(list.version, 1);
    assert.equal(list.records.get('1.M1.host')?.uid, 1);
  });

  test('a damaged file is refused whole, naming the line', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['3 V1 N2\n1 :a', /truncated/],
      ['3 V1 N5\n2 :a\n1 :b\n', /line 3: UID 1 is not above/],
      ['3 V1 N5\nx :a\n', /line 2: no valid UID/],
      ['3 V1 N5\n1 :\n', /line 2: no valid file name/],
      ['3 V1 N5\n1 a b\n', /line 2: no " :"/],
      ['3 V1 N5\n1 p1 :a\n', /upper-case key/],
      ['2 1 5\n', /version 2/],
      ['3 N5\n', /UID validity/],
      ['1 1 3\n5 a\n', /not below the next UID/],
      [`3 V1 N5\n1 :${'a'.repeat(9000)}\n`, /longer than 8192/],
    ];
    for (const [text, why] of cases) assert.throws(() => parseUidlist(text), (error: Error) => error instanceof UidlistError && why.test(error.message), JSON.stringify(text.slice(0, 40)));
  });
});

describe('pop3_uidl_format', () => {
  const values = { uid: 26, uidValidity: 1700000000, filename: '1700.M1P2.host,S=5', guid: 'G-1' };
  test("Dovecot 2.3's default and the usual variants, as var_expand() computes them", () => {
    assert.equal(new UidlFormat('%08Xu%08Xv').expand(values), '0000001a6553f100');
    assert.equal(new UidlFormat('%f').expand(values), '1700.M1P2.host,S=5');
    assert.equal(new UidlFormat('%v.%u').expand(values), '1700000000.26');
    assert.equal(new UidlFormat('%{uidvalidity}-%{uid}').expand(values), '1700000000-26');
    assert.equal(new UidlFormat('%g').expand(values), 'G-1');
    assert.equal(new UidlFormat('%XUu').expand(values), '1A', 'X then U: upper-case hex');
    assert.equal(new UidlFormat('%UXu').expand(values), '1a', 'modifiers apply in the order written, as in Dovecot');
    assert.equal(new UidlFormat('%4f').expand(values), '1700', 'a width without 0 cuts');
    assert.equal(new UidlFormat('%5.3f').expand(values), 'M1P', 'an offset, then a width');
    assert.equal(new UidlFormat('100%%').expand(values), '100%');
    assert.equal(new UidlFormat('%08Xu%08Xv').needsUid, true);
    assert.equal(new UidlFormat('%f').needsUid, false);
  });

  test('what Dovecot cannot give for Maildir, or that is not a format, is refused', () => {
    for (const format of ['%m', '%{md5}', '%x', '%{nosuch}', '%Mu', '%{uid', '%', '', 'x'.repeat(201), '%99999u']) {
      assert.throws(() => new UidlFormat(format), UidlFormatError, format);
    }
  });
});

describe('password fields of another server', () => {
  test('{SCHEME} prefixes, bare crypt(3) strings, {CRYPT}, plain text and the default scheme', () => {
    const sha = '$6$nq0iGEF/5/9hW.vE$toX1OQctcxOlKe3SpbreaNP3w0fI9EUrPZtWs/wmmHK88B37BxTrmLtOohOhLgoe5Bwm3MnGveuBWq3jymSzV.';
    assert.deepEqual(parseImportedPassword(`{SHA512-CRYPT}${sha}`), { kind: 'hash', stored: `{SHA512-CRYPT}${sha}`, scheme: 'SHA512-CRYPT' });
    assert.deepEqual(parseImportedPassword(sha), { kind: 'hash', stored: `{SHA512-CRYPT}${sha}`, scheme: 'SHA512-CRYPT' });
    assert.deepEqual(parseImportedPassword(`{CRYPT}${sha}`), { kind: 'hash', stored: `{SHA512-CRYPT}${sha}`, scheme: 'SHA512-CRYPT' });
    assert.deepEqual(parseImportedPassword('{PLAIN}secret words'), { kind: 'plain', password: 'secret words' });
    assert.deepEqual(parseImportedPassword('{cleartext}x y'), { kind: 'plain', password: 'x y' });
    assert.deepEqual(parseImportedPassword('bare', 'PLAIN'), { kind: 'plain', password: 'bare' });
    assert.throws(() => parseImportedPassword('bare'), /no \{SCHEME\} prefix/);
    assert.throws(() => parseImportedPassword('{SHA512-CRYPT.HEX}abc'), /encoding suffix/);
    assert.throws(() => parseImportedPassword('$6$rounds=5000000$salt$' + 'a'.repeat(86)), /rounds=5000000 is above the limit/);
    assert.throws(() => parseImportedPassword('{ARGON2ID}$argon2id$v=19$m=1048576,t=3,p=1$1fi4VABIZNTOycbBcg90LQ$idn87/TodXoqTSiGJ3/Jrt0kTPm5qfJjFb7zRjdH/kw'), /m=1048576/);
    assert.throws(() => parseImportedPassword('{ARGON2ID}$argon2id$v=16$m=65536,t=3,p=1$1fi4VABIZNTOycbBcg90LQ$idn87/TodXoqTSiGJ3/Jrt0kTPm5qfJjFb7zRjdH/kw'), /version 16/);
    assert.throws(() => parseImportedPassword('{SSHA512}AAAA'), /64 octets/);
    assert.throws(() => parseImportedPassword(`{PLAIN}${'x'.repeat(600)}`), LegacyHashError);
  });
});

describe('passwd-file, --passwords file, mail locations, server addresses', () => {
  test("Dovecot's passwd-file: fields, comments, the home and a per-user mail location", () => {
    const entries = parsePasswdFile('# users\n\nalice@example.test:{PLAIN}pw:8:8::/home/alice::userdb_mail=maildir:~/Mail\nbob@example.test:{PLAIN}x\n');
    assert.deepEqual(entries.map((e) => [e.user, e.password, e.home, e.mailLocation, e.line]), [
      ['alice@example.test', '{PLAIN}pw', '/home/alice', 'maildir:~/Mail', 3],
      ['bob@example.test', '{PLAIN}x', '', undefined, 4],
    ]);
  });

  test('--passwords: "address password" with spaces in the password; duplicates and bad lines refused with the line', () => {
    assert.deepEqual(parsePasswordsFile('# c\nAlice@Example.test  two words \t\n', 'f').map((c) => [c.address, c.login, c.password]), [['alice@example.test', 'Alice@Example.test', 'two words \t']]);
    assert.throws(() => parsePasswordsFile('a@example.test x\nA@example.test y\n', 'f'), (e: Error) => e instanceof PasswordsFileError && /claimed twice, by lines 1 and 2/.test(e.message));
    assert.throws(() => parsePasswordsFile('nopassword\n', 'f'), /f line 1/);
    assert.throws(() => parsePasswordsFile('alice pw\n', 'f'), /not an address/);
  });

  test('mail locations: %d %n %u %h, %L, ~/, INBOX= and CONTROL=; other formats refused', () => {
    assert.deepEqual(new MailLocation('maildir:/var/vmail/%Ld/%n').resolve('alice@Example.test', ''), { inbox: '/var/vmail/example.test/alice', control: '/var/vmail/example.test/alice' });
    assert.deepEqual(new MailLocation('maildir:~/Maildir:CONTROL=/ctl/%u').resolve('a@b.test', '/home/a'), { inbox: '/home/a/Maildir', control: '/ctl/a@b.test' });
    assert.deepEqual(new MailLocation('maildir:%h/mail:INBOX=%h/inbox').resolve('a@b.test', '/h'), { inbox: '/h/inbox', control: '/h/inbox' });
    assert.throws(() => new MailLocation('mdbox:/var/vmail/%d/%n'), MailLocationError);
    assert.throws(() => new MailLocation('maildir:~/Maildir').resolve('a@b.test', ''), /has none/);
    assert.throws(() => new MailLocation('maildir:/v/%z').resolve('a@b.test', ''), /%z/);
  });

  test('host:port and [v6]:port', () => {
    assert.deepEqual(parseServer('pop.example.net:110'), { host: 'pop.example.net', port: 110 });
    assert.deepEqual(parseServer('[::1]:995'), { host: '::1', port: 995 });
    for (const bad of ['pop.example.net', 'x:0', 'x:70000', ':110']) assert.throws(() => parseServer(bad), bad);
  });
});

describe('Postfix lookup tables', () => {
  test('comments, continuation lines, several targets separated by commas and spaces', () => {
    const entries = parsePostfixMap('# aliases\nsales@example.test  a@example.test,\n    b@example.test c@example.test\n\n  # indented comment\nexample.test  anything\n@example.test catchall@example.test\n', 'virtual');
    assert.deepEqual(entries.map((e) => [e.pattern, e.result, e.line]), [
      ['sales@example.test', 'a@example.test, b@example.test c@example.test', 2],
      ['example.test', 'anything', 6],
      ['@example.test', 'catchall@example.test', 7],
    ]);
  });
});

describe('positions of imported messages', () => {
  test('first run: evenly apart in the old order; later runs keep what was given and fit new messages around it', () => {
    const first = assignPositions(['a', 'b', 'c'], new Map(), new Set());
    assert.deepEqual([...first], [['a', 1024], ['b', 2048], ['c', 3072]]);
    // b failed to import last time (only its intent was written), x appeared between a and b, y at the end.
    const known = new Map([['a', 1024], ['b', 2048], ['c', 3072]]);
    const later = assignPositions(['a', 'x', 'b', 'c', 'y'], known, new Set(['a', 'c']));
    assert.deepEqual([...later].sort(), [['b', 2048], ['x', 1536], ['y', 4096]]);
    const crowded = assignPositions(['a', 'x', 'b'], new Map([['a', 1], ['b', 2]]), new Set(['a', 'b']));
    assert.equal(crowded.has('x'), false, 'no room: no position rather than a wrong one');
  });
});
