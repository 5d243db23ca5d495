import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';
import { findEngine, missingEngine } from './helpers/engines.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { ROOT, spawnNode, writeConfig, type NodeProcess } from './helpers/process.ts';
import { PASSWORD } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// The fail2ban filters of contrib/fail2ban/ against what popgate really logs: a popgate
// process is driven through failed logins (POP3 and SMTP AUTH, IPv4 and IPv6), a lockout,
// relay refusals, protocol abuse and ordinary traffic, each from a client address of its own,
// and Debian's fail2ban-regex must find exactly the expected lines, with the right address,
// and nothing else. The jail file is checked by fail2ban-client's own configuration test.

const FILTERS = join(ROOT, 'contrib', 'fail2ban', 'filter.d');
const b64 = (text: string) => Buffer.from(text).toString('base64');

/** What fail2ban-regex matched in `log` with `filter`: the address and the line, in order. */
function matched(log: string, filter: string): { ip: string; line: string }[] {
  const result = spawnSync(findEngine('fail2ban-regex')!, ['--out', '<ip> <msg>', log, filter], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => ({ ip: line.slice(0, line.indexOf(' ')), line: line.slice(line.indexOf(' ') + 1) }));
}

describe('fail2ban filters on real popgate logs', { skip: missingEngine('fail2ban-regex') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-fail2ban-'));
  let node: NodeProcess;
  let logFile: string;
  let journalFile: string;
  /** Addresses of the lines each filter must match, one entry per line, from what the test did. */
  const expected = { logins: [] as string[], abuse: [] as string[] };

  before(async () => {
    const data = join(dir, 'data');
    const accounts = new SqliteAccountStore(openDatabase(data), true);
    await accounts.addDomain('example.test');
    for (const user of ['alice', 'bob', 'carol']) await accounts.addUser(`${user}@example.test`, PASSWORD);
    await accounts.close();
    const config = writeConfig(
      dir,
      [
        'hostname = "mail.example.test"',
        `data_dir = "${data}"`,
        '[server]\nworkers = 1',
        '[pop3]\nlisten = ["127.0.0.1:0", "[::1]:0"]',
        '[smtp]\nlisten = ["127.0.0.1:0"]\nmax_errors = 3\nerror_delay = "10ms"\nmax_line_length = 512\nmax_connection_rate_per_ip = 3',
        '[submission]\nlisten = ["127.0.0.1:0"]',
        '[auth]\nfailure_delay = "10ms"\nlockout_threshold = 3\naccount_lockout_threshold = 7',
        '[outbound]\nenabled = false',
        // Port 25 waits this long before its greeting: a client that talks first is refused.
        '[filter]\npregreet_delay = "300ms"',
        '',
      ].join('\n'),
    );
    node = await spawnNode(config, { listeners: ['pop3', 'smtp', 'submission'] });
    const pop3v6 = (node.log.find((e) => e.event === 'listening' && e.listener === 'pop3' && (e.address as { host: string }).host === '::1')!.address as { port: number }).port;

    const pop3 = async (localAddress: string, commands: string[], host = '127.0.0.1', port = node.ports.pop3) => {
      const client = await Pop3Client.connect(port, { host, localAddress });
      await client.line();
      const replies: string[] = [];
      for (const command of commands) replies.push(await client.command(command));
      await client.command('QUIT').catch(() => '');
      client.close();
      return replies;
    };
    const smtp = async (localAddress: string, port = node.ports.smtp) => {
      const client = await SmtpClient.connect(port, localAddress);
      await client.hello();
      return client;
    };

    // Failed logins: POP3 USER/PASS, twice on one connection.
    const wrong = await pop3('127.0.0.2', ['USER alice@example.test', 'PASS wrong', 'USER alice@example.test', 'PASS also wrong']);
    assert.match(wrong[1], /^-ERR \[AUTH\]/);
    expected.logins.push('127.0.0.2', '127.0.0.2');
    // SMTP AUTH on submission.
    const submission = await smtp('127.0.0.3', node.ports.submission);
    assert.match(await submission.command(`AUTH PLAIN ${b64('\0bob@example.test\0wrong')}`), /^535 /);
    submission.close();
    expected.logins.push('127.0.0.3');
    // Over IPv6.
    await pop3('::1', ['USER bob@example.test', 'PASS wrong'], '::1', pop3v6);
    expected.logins.push('::1');
    // A user name that tries to forge the address field of its log line.
    await pop3('127.0.0.12', ['USER x","ip":"198.51.100.7', 'PASS wrong']);
    expected.logins.push('127.0.0.12');
    // Three failures lock the address out; the right password is then refused unseen.
    const locked = await pop3('127.0.0.4', ['USER alice@example.test', 'PASS a', 'USER alice@example.test', 'PASS b', 'USER alice@example.test', 'PASS c', 'USER alice@example.test', `PASS ${PASSWORD}`]);
    assert.match(locked[7], /^-ERR \[AUTH\] Too many failed logins from your address/);
    expected.logins.push('127.0.0.4', '127.0.0.4', '127.0.0.4', '127.0.0.4');
    // Guesses at one account from seven addresses put it under attack: its owner, logging in
    // from an eighth, still gets in and must not be banned; a guesser trying again is locked
    // out of that account, and that try is banned too.
    for (let i = 13; i < 20; i++) {
      await pop3(`127.0.0.${i}`, ['USER carol@example.test', `PASS guess ${i}`]);
      expected.logins.push(`127.0.0.${i}`);
    }
    const owner = await pop3('127.0.0.20', ['USER carol@example.test', `PASS ${PASSWORD}`]);
    assert.match(owner[1], /^\+OK Logged in/);
    const guesser = await pop3('127.0.0.13', ['USER carol@example.test', 'PASS guess again', 'USER carol@example.test', `PASS ${PASSWORD}`]);
    assert.match(guesser[3], /^-ERR \[AUTH\] Too many failed logins for this account/);
    expected.logins.push('127.0.0.13', '127.0.0.13');

    // Relay without a grant.
    const relay = await smtp('127.0.0.5');
    assert.match(await relay.command('MAIL FROM:<spammer@example.net>'), /^250/);
    assert.match(await relay.command('RCPT TO:<victim@far.example>'), /^554 5\.7\.1/);
    await relay.command('QUIT');
    relay.close();
    expected.abuse.push('127.0.0.5');
    // Errors until the session is closed.
    const errors = await smtp('127.0.0.6');
    for (let i = 0; i < 3; i++) assert.match(await errors.command(`XYZZY ${i}`), /^500 /);
    assert.match(await errors.command('XYZZY 3'), /^421 /);
    errors.close();
    expected.abuse.push('127.0.0.6');
    // A line longer than smtp.max_line_length.
    const long = await smtp('127.0.0.7');
    assert.match(await long.command(`NOOP ${'x'.repeat(600)}`), /^500 5\.5\.2/);
    long.close();
    expected.abuse.push('127.0.0.7');
    // HTTP on the SMTP port.
    const http = await SmtpClient.connect(node.ports.smtp, '127.0.0.8');
    await http.reply();
    http.write('GET / HTTP/1.1\r\nHost: mail.example.test\r\n\r\n');
    await http.reply();
    http.close();
    expected.abuse.push('127.0.0.8');
    // A client that talks before the greeting (spam software that does not wait).
    const bot = await SmtpClient.connect(node.ports.smtp, '127.0.0.21');
    bot.write('EHLO bot.example\r\n');
    assert.match(await bot.reply(), /^554 /);
    bot.close();
    expected.abuse.push('127.0.0.21');
    // Five connections in a moment where three a minute are allowed: two refused.
    for (let i = 0; i < 5; i++) {
      const client = await SmtpClient.connect(node.ports.smtp, '127.0.0.9');
      const greeting = await client.reply();
      client.close();
      if (i >= 3) assert.match(greeting, /^421 4\.7\.0 Too many connections from your address in a short time/);
    }
    expected.abuse.push('127.0.0.9', '127.0.0.9');

    // Ordinary traffic: a POP3 login, then mail for a local user and relayed mail on its grant;
    // a sender that mistypes a local address.
    assert.match((await pop3('127.0.0.10', ['USER alice@example.test', `PASS ${PASSWORD}`, 'STAT']))[1], /^\+OK Logged in/);
    const customer = await smtp('127.0.0.10');
    assert.match(await customer.send('alice@example.test', ['bob@example.test', 'friend@far.example'], 'Subject: hi\r\n\r\nhello\r\n'), /^250 /);
    await customer.command('QUIT');
    customer.close();
    const typo = await smtp('127.0.0.11');
    assert.match(await typo.command('MAIL FROM:<someone@example.net>'), /^250/);
    assert.match(await typo.command('RCPT TO:<alcie@example.test>'), /^550 /);
    await typo.command('QUIT');
    typo.close();

    await node.waitForLog((e) => e.event === 'close' && e.ip === '127.0.0.11');
    await node.stop();
    const lines = node.lines.filter((line) => line.startsWith('{'));
    logFile = join(dir, 'popgate.log');
    writeFileSync(logFile, `${lines.join('\n')}\n`);
    // As fail2ban's systemd backend hands a journal entry to the filter: "host ident[pid]: message".
    journalFile = join(dir, 'journal.log');
    writeFileSync(journalFile, `${lines.map((line) => `mail popgate[${node.child.pid}]: ${line}`).join('\n')}\n`);
  });

  after(async () => {
    await node?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the popgate filter matches each failed login, and an address locked out trying again, with the client address', () => {
    for (const log of [logFile, journalFile]) {
      const found = matched(log, join(FILTERS, 'popgate.conf'));
      assert.deepEqual(found.map((m) => m.ip).sort(), [...expected.logins].sort(), `in ${log}`);
      for (const { ip, line } of found) {
        const entry = JSON.parse(line.slice(line.indexOf('{')));
        assert.ok(entry.event === 'login_failed' || (entry.event === 'login_refused_locked' && ['address', 'account'].includes(entry.scope)), line);
        assert.equal(entry.ip, ip, 'the address fail2ban bans is the one popgate logged');
      }
    }
  });

  test('the popgate-abuse filter matches relay refusals, too many errors, long lines, HTTP, talking before the greeting and connections over the rate, and nothing else', () => {
    for (const log of [logFile, journalFile]) {
      const found = matched(log, join(FILTERS, 'popgate-abuse.conf'));
      assert.deepEqual(found.map((m) => m.ip).sort(), [...expected.abuse].sort(), `in ${log}`);
      const events = found.map(({ line }) => JSON.parse(line.slice(line.indexOf('{'))));
      assert.deepEqual(events.map((e) => `${e.event} ${e.reason ?? e.check ?? ''}`.trim()).sort(), [
        'connection_refused connection rate',
        'connection_refused connection rate',
        'filter pregreet',
        'http_on_smtp',
        'line_too_long',
        'rcpt_refused relay-denied',
        'too_many_errors',
      ]);
    }
  });

  test('every line the filters are about names the client in "ip"', () => {
    const lines = node.log.filter((e) => ['login_failed', 'login_refused_locked', 'lockout', 'rcpt_refused', 'too_many_errors', 'line_too_long', 'http_on_smtp', 'connection_refused', 'filter'].includes(String(e.event)));
    assert.ok(lines.length >= 27);
    for (const entry of lines) assert.match(String(entry.ip), /^(127\.0\.0\.\d+|::1)$/, JSON.stringify(entry));
    assert.ok(node.log.some((e) => e.event === 'lockout' && e.scope === 'address' && e.ip === '127.0.0.4'), 'the lockout itself is logged with the address');
    assert.ok(node.log.some((e) => e.event === 'login_refused_locked' && e.scope === 'account' && e.ip === '127.0.0.13'), "the guesser is refused that account's logins, and named");
    assert.ok(!node.log.some((e) => String(e.event).startsWith('login_refused') && e.ip === '127.0.0.20'), 'the owner is never refused');
  });

  test('fail2ban accepts the jails with both filters', () => {
    const conf = join(dir, 'fail2ban');
    cpSync('/etc/fail2ban', conf, { recursive: true });
    // Only popgate's jails: the distribution's own (sshd) may want a log this machine lacks.
    rmSync(join(conf, 'jail.d'), { recursive: true, force: true });
    cpSync(join(ROOT, 'contrib', 'fail2ban'), conf, { recursive: true });
    const dump = spawnSync('fail2ban-client', ['-c', conf, '-d'], { encoding: 'utf8' });
    assert.equal(dump.status, 0, dump.stderr);
    for (const jail of ['popgate', 'popgate-abuse']) {
      assert.match(dump.stdout, new RegExp(`\\['add', '${jail}', 'systemd'\\]`));
      assert.match(dump.stdout, new RegExp(`\\['set', '${jail}', 'addjournalmatch', '_SYSTEMD_UNIT=popgate\\.service'\\]`));
    }
    const check = spawnSync('fail2ban-client', ['-c', conf, '--test'], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /OK: configuration test is successful/);
  });
});
