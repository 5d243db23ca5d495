import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateKey } from '../src/dkim/keys.ts';
import { startOutboundWorld, until, type OutboundWorld } from './helpers/outbound.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// Vacation replies over real SMTP (RFC 3834): one reply per sender per interval, however many
// messages arrive and however fast; none to lists, bulk mail, automatic mail, the null sender or
// the user's own addresses; the reply is automatic (Auto-Submitted), threaded (In-Reply-To,
// References), has the null envelope sender, and leaves through the queue DKIM-signed.

const ALICE = 'alice@example.test';

describe('vacation replies over SMTP', () => {
  let world: OutboundWorld;
  let origin: OutboundWorld['sinks'][number];

  before(async () => {
    world = await startOutboundWorld({
      zone: { 'origin.example': { MX: [[10, 'mx.origin.example']] }, 'mx.origin.example': { A: ['127.0.0.3'] } },
      sinks: [{ host: '127.0.0.3' }],
      config: { smtp: { listen: ['127.0.0.1:0'] }, filter: { enabled: false } },
    });
    [origin] = world.sinks;
    await world.server.addUser(ALICE);
    await world.server.app.accounts.addAlias('alice.smith@example.test', [ALICE]);
    generateKey(world.server.app.config.dkim.keys_dir, 'example.test', world.server.app.config.dkim.selector, 'ed25519');
    await world.server.app.backends.vacations.set(ALICE, { subject: 'Away until Monday — 月曜まで不在', body: 'I am away.\nBack on Monday.\n', since: Date.now() });
  });
  after(() => world.close());

  async function send(from: string, message: string, to = ALICE): Promise<string> {
    const client = await SmtpClient.connect(world.server.smtpPort);
    try {
      await client.hello('mx.origin.example');
      return await client.send(from, [to], message);
    } finally {
      client.close();
    }
  }

  const letter = (from: string, id: string, extra = '') => `From: <${from}>\r\nTo: <${ALICE}>\r\nSubject: question\r\nMessage-ID: <${id}@origin.example>\r\n${extra}\r\nHello?\r\n`;

  /** Every reply queued so far has left (the sink has it, or it was never queued). */
  const drained = () => until(async () => (await world.server.app.queue.list()).length === 0, 15_000, 'the queue to empty');
  const repliesTo = (address: string) => origin.messages.filter((m) => m.to.includes(address));

  test('the first message gets a reply: automatic, threaded, null sender, DKIM-signed; the second does not', async () => {
    assert.match(await send('bob@origin.example', letter('bob@origin.example', 'first', 'References: <earlier@origin.example>\r\n')), /^250/);
    const [reply] = await until(() => (repliesTo('bob@origin.example').length > 0 ? repliesTo('bob@origin.example') : undefined), 10_000, 'the reply');
    const text = reply.data.toString();
    assert.equal(reply.from, '', 'RFC 3834 §3.3: the null envelope sender');
    assert.match(text, /^Auto-Submitted: auto-replied\r$/m);
    assert.match(text, /^In-Reply-To: <first@origin\.example>\r$/m);
    assert.match(text, /^References: <earlier@origin\.example> <first@origin\.example>\r$/m);
    assert.match(text, /^From: <alice@example\.test>\r$/m);
    assert.match(text, /^Subject: =\?UTF-8\?B\?/m, 'a non-ASCII subject is encoded');
    assert.match(text, /^DKIM-Signature: .*d=example\.test/m);
    assert.match(text, /I am away\.\r\nBack on Monday\./);

    assert.match(await send('bob@origin.example', letter('bob@origin.example', 'second')), /^250/);
    await drained();
    assert.equal(repliesTo('bob@origin.example').length, 1, 'one reply per sender per interval');
    assert.equal((await world.server.app.mailstore.list(ALICE)).length, 2, 'both messages delivered');
  });

  test('a flood from one sender, all at once, gets exactly one reply', async () => {
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => send('carol@origin.example', letter('carol@origin.example', `flood${i}`))));
    for (const result of results) assert.match(result, /^250/);
    await drained();
    assert.equal(repliesTo('carol@origin.example').length, 1);
  });

  test('no reply to lists, bulk, automatic mail, the null sender, programs or the user\'s own addresses', async () => {
    const cases: [string, string][] = [
      ['list@origin.example', letter('list@origin.example', 'l1', 'List-Id: <talk.origin.example>\r\n')],
      ['news@origin.example', letter('news@origin.example', 'l2', 'List-Unsubscribe: <mailto:leave@origin.example>\r\n')],
      ['bulk@origin.example', letter('bulk@origin.example', 'b1', 'Precedence: bulk\r\n')],
      ['junk@origin.example', letter('junk@origin.example', 'b2', 'Precedence: junk\r\n')],
      ['robot@origin.example', letter('robot@origin.example', 'a1', 'Auto-Submitted: auto-generated\r\n')],
      ['MAILER-DAEMON@origin.example', letter('MAILER-DAEMON@origin.example', 'p1')],
      ['owner-talk@origin.example', letter('owner-talk@origin.example', 'p2')],
      ['', letter('nobody@origin.example', 'n1')],
    ];
    for (const [from, message] of cases) assert.match(await send(from, message), /^250/, from);
    // The user's own address (and an alias of hers) writing to her: no reply either.
    assert.match(await send('alice.smith@example.test', letter('alice.smith@example.test', 'own')), /^250/);
    await drained();
    assert.deepEqual(origin.messages.filter((m) => !['bob@origin.example', 'carol@origin.example'].includes(m.to[0])).map((m) => m.to), []);
    // And an explicit "no" is not automatic (RFC 3834 §5): that one is answered.
    assert.match(await send('person@origin.example', letter('person@origin.example', 'x1', 'Auto-Submitted: no\r\n')), /^250/);
    await until(() => repliesTo('person@origin.example').length === 1, 10_000, 'the reply to a person');
  });

  test('after --until, or turned off, nobody gets a reply', async () => {
    const vacations = world.server.app.backends.vacations;
    await vacations.set(ALICE, { subject: 'Away', body: 'Away.', since: Date.now() - 10_000, until: Date.now() - 1000 });
    assert.match(await send('late@origin.example', letter('late@origin.example', 'late')), /^250/);
    await vacations.remove(ALICE);
    assert.match(await send('later@origin.example', letter('later@origin.example', 'later')), /^250/);
    await drained();
    assert.deepEqual([...repliesTo('late@origin.example'), ...repliesTo('later@origin.example')], []);
  });
});
