import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// One login path for every protocol (src/auth/): the same credentials give the same outcome
// whether they arrive as POP3 USER/PASS, POP3 AUTH PLAIN or LOGIN, APOP, or SMTP AUTH PLAIN
// or LOGIN. Each row below is tried with every mechanism it applies to, each from its own
// client address so that the login guard's counts stay apart, and each is also repeated
// lockout_threshold times to show whether it counts as a failed login (then the right
// password is refused as locked) or not (then it works).

const THRESHOLD = 3;
const APOP_SECRET = 'apop secret 2026';

type Outcome = 'ok' | 'failed' | 'locked' | 'malformed' | 'cancelled';

interface Row {
  name: string;
  user: string;
  password: string;
  /** SASL PLAIN's authorization identity. */
  authzid?: string;
  /** Instead of credentials: a response that is not base64, or "*". */
  raw?: 'not base64' | 'cancel';
  expected: Outcome;
  /** Whether the outcome counts as a failed login towards a lockout. */
  counts: boolean;
}

const ROWS: Row[] = [
  { name: 'right password', user: 'alice@example.test', password: PASSWORD, expected: 'ok', counts: false },
  { name: 'wrong password', user: 'alice@example.test', password: 'wrong password', expected: 'failed', counts: true },
  { name: 'unknown user', user: 'nobody@example.test', password: PASSWORD, expected: 'failed', counts: true },
  { name: 'authorization identity of another user', user: 'alice@example.test', password: PASSWORD, authzid: 'bob@example.test', expected: 'failed', counts: true },
  { name: 'authorization identity equal to the user', user: 'alice@example.test', password: PASSWORD, authzid: 'alice@example.test', expected: 'ok', counts: false },
  { name: 'response that is not base64', user: '', password: '', raw: 'not base64', expected: 'malformed', counts: false },
  { name: 'cancelled with "*"', user: '', password: '', raw: 'cancel', expected: 'cancelled', counts: false },
];

interface Mechanism {
  name: string;
  /** Which rows this mechanism can express. */
  applies(row: Row): boolean;
  attempt(server: TestServer, ip: string, row: Row): Promise<Outcome>;
}

const b64 = (text: string) => Buffer.from(text).toString('base64');

function pop3Outcome(reply: string): Outcome {
  if (reply.startsWith('+OK Logged in')) return 'ok';
  if (reply.startsWith('-ERR [AUTH] Login failed')) return 'failed';
  if (reply.startsWith('-ERR [AUTH] Too many failed logins')) return 'locked';
  if (reply.startsWith('-ERR [AUTH] Invalid base64')) return 'malformed';
  if (reply.startsWith('-ERR [AUTH] Authentication cancelled')) return 'cancelled';
  throw new Error(`unexpected POP3 reply: ${reply}`);
}

function smtpOutcome(reply: string): Outcome {
  if (reply.startsWith('235 2.7.0')) return 'ok';
  if (reply.startsWith('535 5.7.8')) return 'failed';
  if (reply.startsWith('454 4.7.0 Too many failed logins')) return 'locked';
  if (reply.startsWith('501 5.5.2')) return 'malformed';
  if (reply.startsWith('501 5.0.0')) return 'cancelled';
  throw new Error(`unexpected SMTP reply: ${reply}`);
}

async function pop3(server: TestServer, ip: string, talk: (client: Pop3Client, greeting: string) => Promise<string>): Promise<Outcome> {
  const client = await Pop3Client.connect(server.pop3Port, { localAddress: ip });
  const greeting = await client.line();
  try {
    return pop3Outcome(await talk(client, greeting));
  } finally {
    client.close();
  }
}

async function smtp(server: TestServer, ip: string, talk: (client: SmtpClient) => Promise<string>): Promise<Outcome> {
  const port = Number(server.app.addresses.submission[0].split(':').pop());
  const client = await SmtpClient.connect(port, ip);
  await client.reply();
  await client.command('EHLO client.example');
  try {
    return smtpOutcome(await talk(client));
  } finally {
    client.close();
  }
}

/** The SASL exchange common to POP3 AUTH and SMTP AUTH, spoken through `send`. */
async function sasl(send: (line: string) => Promise<string>, mechanism: 'PLAIN' | 'LOGIN', row: Row): Promise<string> {
  const started = await send(`AUTH ${mechanism}`);
  if (!/^(\+ |334)/.test(started)) return started;
  if (row.raw === 'not base64') return send('this is not base64!');
  if (row.raw === 'cancel') return send('*');
  if (mechanism === 'PLAIN') return send(b64(`${row.authzid ?? ''}\0${row.user}\0${row.password}`));
  const prompt = await send(b64(row.user));
  if (!/^(\+ |334)/.test(prompt)) return prompt;
  return send(b64(row.password));
}

const MECHANISMS: Mechanism[] = [
  {
    name: 'POP3 USER/PASS',
    applies: (row) => row.raw === undefined && row.authzid === undefined,
    attempt: (server, ip, row) => pop3(server, ip, (client) => client.login(row.user, row.password)),
  },
  {
    name: 'POP3 APOP',
    applies: (row) => row.raw === undefined && row.authzid === undefined,
    attempt: (server, ip, row) =>
      pop3(server, ip, async (client, greeting) => {
        // APOP proves knowledge of the APOP secret; here "the right password" stands for it.
        const banner = /<[^>]+>/.exec(greeting)![0];
        const secret = row.password === PASSWORD ? APOP_SECRET : row.password;
        return client.command(`APOP ${row.user} ${createHash('md5').update(banner + secret).digest('hex')}`);
      }),
  },
  {
    name: 'POP3 AUTH PLAIN',
    applies: () => true,
    attempt: (server, ip, row) => pop3(server, ip, (client) => sasl((line) => client.command(line), 'PLAIN', row)),
  },
  {
    name: 'POP3 AUTH LOGIN',
    applies: (row) => row.authzid === undefined,
    attempt: (server, ip, row) => pop3(server, ip, (client) => sasl((line) => client.command(line), 'LOGIN', row)),
  },
  {
    name: 'SMTP AUTH PLAIN',
    applies: () => true,
    attempt: (server, ip, row) => smtp(server, ip, (client) => sasl((line) => client.command(line), 'PLAIN', row)),
  },
  {
    name: 'SMTP AUTH LOGIN',
    applies: (row) => row.authzid === undefined,
    attempt: (server, ip, row) => smtp(server, ip, (client) => sasl((line) => client.command(line), 'LOGIN', row)),
  },
];

describe('one login path: the same inputs give the same outcome on every protocol', () => {
  let server: TestServer;
  let nextHost = 1;
  /** A fresh client address for each attempt series, so the guard's counts never mix. */
  const freshAddress = () => `127.0.${Math.floor(nextHost / 250) + 10}.${(nextHost++ % 250) + 1}`;

  before(async () => {
    server = await startTestServer({
      pop3: { apop: true },
      submission: { listen: ['127.0.0.1:0'] },
      // Per-account lockouts would couple the rows (they share alice); only per-address ones here.
      auth: { lockout_threshold: THRESHOLD, account_lockout_threshold: 100_000, failure_delay: '0s', verified_login_cache: '0s' },
    });
    await server.addUser('alice@example.test');
    await server.addUser('bob@example.test');
    await server.app.accounts.setApopSecret('alice@example.test', APOP_SECRET);
  });
  after(() => server.close());

  for (const mechanism of MECHANISMS) {
    for (const row of ROWS) {
      if (!mechanism.applies(row)) continue;
      test(`${mechanism.name}: ${row.name} → ${row.expected}${row.counts ? ', counted towards a lockout' : ''}`, async () => {
        const ip = freshAddress();
        assert.equal(await mechanism.attempt(server, ip, row), row.expected);
        // THRESHOLD attempts in all; then the right password shows whether they were counted.
        for (let i = 1; i < THRESHOLD; i++) assert.equal(await mechanism.attempt(server, ip, row), row.expected);
        const right = { ...ROWS[0] };
        assert.equal(await mechanism.attempt(server, ip, right), row.counts ? 'locked' : 'ok');
      });
    }
  }

  // PASSWORD hashed by Dovecot's doveadm pw, as `popgate import` carries such hashes over.
  const CARRIED_OVER = [
    '{SHA512-CRYPT}$6$nq0iGEF/5/9hW.vE$toX1OQctcxOlKe3SpbreaNP3w0fI9EUrPZtWs/wmmHK88B37BxTrmLtOohOhLgoe5Bwm3MnGveuBWq3jymSzV.',
    '{BLF-CRYPT}$2y$05$GEn9PFFWXzsRqWffACdxNO/uB8eo6hM/0vyRcahRvzR6dK2LQH1S6',
  ];
  for (const mechanism of MECHANISMS.filter((m) => m.name !== 'POP3 APOP')) {
    test(`${mechanism.name}: a user carried over with an old server's hash logs in with the old password, which is then kept as scrypt`, async () => {
      for (const [index, hash] of CARRIED_OVER.entries()) {
        const user = `moved${nextHost}-${index}@example.test`;
        await server.app.accounts.addUserWithHash(user, hash);
        assert.equal(await mechanism.attempt(server, freshAddress(), { ...ROWS[1], user }), 'failed', 'a wrong password');
        assert.equal(await mechanism.attempt(server, freshAddress(), { ...ROWS[0], user }), 'ok', hash.slice(0, 14));
        assert.equal(await server.app.accounts.passwordScheme(user), 'scrypt');
        assert.equal(await mechanism.attempt(server, freshAddress(), { ...ROWS[0], user }), 'ok', 'again, against scrypt');
      }
    });
  }

  test('failures on one protocol count on the others: a lockout earned over POP3 holds for SMTP AUTH and APOP', async () => {
    const ip = freshAddress();
    const [userPass, apop, , , smtpPlain] = MECHANISMS;
    for (let i = 0; i < THRESHOLD; i++) assert.equal(await userPass.attempt(server, ip, ROWS[1]), 'failed');
    assert.equal(await smtpPlain.attempt(server, ip, ROWS[0]), 'locked');
    assert.equal(await apop.attempt(server, ip, ROWS[0]), 'locked');
  });
});
