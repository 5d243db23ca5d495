import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { clientNetwork, Greylisting, tripletKey, type GreylistSettings } from '../src/filter/greylist.ts';
import { silentLogger } from '../src/log/logger.ts';
import { SqliteGreylistStore } from '../src/sqlite/greylist.ts';
import { openCountersDatabase } from '../src/sqlite/open.ts';
import { capturingLogger } from './helpers/outbound.ts';

// The greylisting rules over the embedded store, on a clock the test moves: first attempts
// deferred, retries after the delay passing, triplets and client networks remembered and
// forgotten. What the stores promise is checked by test/contracts/greylist-store.ts.

const T0 = 1_700_000_000_000;
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
const SETTINGS: GreylistSettings = { delayMs: 5 * MINUTE, retryWindowMs: 2 * DAY, rememberMs: 36 * DAY };
const ALICE = 'alice@example.test';
const BOB = 'bob@example.net';

describe('greylisting', () => {
  let dataDir: string;
  let db: DatabaseSync;
  let store: SqliteGreylistStore;
  let greylisting: Greylisting;

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'popgate-greylist-'));
    db = openCountersDatabase(dataDir);
    store = new SqliteGreylistStore(db);
    greylisting = new Greylisting(store, SETTINGS, silentLogger());
  });
  afterEach(() => {
    if (db.isOpen) db.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  /** Passes the triplet through greylisting: a first attempt at `at`, its retry after the delay. */
  async function pass(ip: string, sender: string, recipient: string, at: number): Promise<void> {
    assert.equal((await greylisting.check(ip, sender, recipient, at)).pass, false);
    assert.deepEqual(await greylisting.check(ip, sender, recipient, at + SETTINGS.delayMs), { pass: true, reason: 'retried after the delay' });
  }

  test('a first attempt is deferred for the delay; an early retry is deferred for what is left; a retry after it passes', async () => {
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0), { pass: false, retryAfterMs: 5 * MINUTE, first: true });
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0 + 2 * MINUTE), { pass: false, retryAfterMs: 3 * MINUTE, first: false });
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0 + 5 * MINUTE), { pass: true, reason: 'retried after the delay' });
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0 + 6 * MINUTE), { pass: true, reason: 'known triplet' });
  });

  test('the retry may come from another address of the network; addresses are compared without case', async () => {
    await greylisting.check('192.0.2.7', 'Alice@Example.TEST', BOB, T0);
    assert.deepEqual(await greylisting.check('192.0.2.200', ALICE, 'BOB@example.net', T0 + 10 * MINUTE), { pass: true, reason: 'retried after the delay' });
  });

  test('a network that passed once passes for other senders and recipients; other networks are greylisted', async () => {
    await pass('192.0.2.7', ALICE, BOB, T0);
    assert.deepEqual(await greylisting.check('192.0.2.8', 'carol@example.org', 'dave@example.net', T0 + DAY), { pass: true, reason: 'known client' });
    assert.deepEqual(await greylisting.check('192.0.2.9', '', BOB, T0 + DAY), { pass: true, reason: 'known client' });
    assert.deepEqual(await greylisting.check('192.0.3.7', ALICE, BOB, T0 + DAY), { pass: false, retryAfterMs: 5 * MINUTE, first: true }, 'the next /24');
  });

  test('the null sender and a sender are different triplets', async () => {
    await greylisting.check('192.0.2.7', '', BOB, T0);
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0 + 10 * MINUTE), { pass: false, retryAfterMs: 5 * MINUTE, first: true });
    assert.deepEqual(await greylisting.check('192.0.2.7', '', BOB, T0 + 10 * MINUTE), { pass: true, reason: 'retried after the delay' });
  });

  test('IPv6 clients are taken by /64; IPv4-mapped IPv6 is the IPv4 client', async () => {
    await pass('2001:db8:1:2::7', ALICE, BOB, T0);
    assert.deepEqual(await greylisting.check('2001:db8:1:2:ffff:ffff:ffff:9', ALICE, 'carol@example.net', T0 + DAY), { pass: true, reason: 'known client' });
    assert.equal((await greylisting.check('2001:db8:1:3::7', ALICE, BOB, T0 + DAY)).pass, false, 'the next /64');
    await pass('::ffff:198.51.100.7', ALICE, BOB, T0);
    assert.deepEqual(await greylisting.check('198.51.100.7', ALICE, BOB, T0 + DAY), { pass: true, reason: 'known triplet' });
    assert.equal(clientNetwork('::ffff:198.51.100.7'), '198.51.100.0/24');
    assert.equal(clientNetwork('2001:DB8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  });

  test('a retry after the retry window is a first attempt again', async () => {
    await greylisting.check('192.0.2.7', ALICE, BOB, T0);
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0 + 2 * DAY), { pass: false, retryAfterMs: 5 * MINUTE, first: true });
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, T0 + 2 * DAY + 5 * MINUTE), { pass: true, reason: 'retried after the delay' });
  });

  test('a triplet and its network are forgotten after rememberMs of silence, and remembered while they keep coming', async () => {
    await pass('192.0.2.7', ALICE, BOB, T0);
    const passedAt = T0 + SETTINGS.delayMs;
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, passedAt + 36 * DAY - 1), { pass: true, reason: 'known triplet' });
    // That pass renewed the memory for another 36 days.
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, passedAt + 72 * DAY - 2), { pass: true, reason: 'known triplet' });
    assert.deepEqual(await greylisting.check('192.0.2.7', ALICE, BOB, passedAt + 108 * DAY), { pass: false, retryAfterMs: 5 * MINUTE, first: true }, 'silent for 36 days');

    await pass('198.51.100.7', ALICE, BOB, T0);
    for (let day = 30; day <= 120; day += 30) {
      assert.deepEqual(await greylisting.check('198.51.100.7', `sender${day}@example.test`, BOB, passedAt + day * DAY), { pass: true, reason: 'known client' }, `day ${day}`);
    }
    assert.equal((await greylisting.check('198.51.100.7', 'new@example.test', BOB, passedAt + 157 * DAY)).pass, false, 'silent for 37 days');
  });

  test('memories are renewed at most once a day, not at every message', async () => {
    const network = clientNetwork('192.0.2.7');
    const triplet = tripletKey(network, ALICE, BOB);
    await pass('192.0.2.7', ALICE, BOB, T0);
    const passedAt = T0 + SETTINGS.delayMs;
    const until = async (now: number) => (await store.lookup(triplet, network, now)).triplet?.expiresAt;
    await greylisting.check('192.0.2.7', ALICE, BOB, passedAt + 23 * 60 * MINUTE);
    assert.equal(await until(passedAt), passedAt + 36 * DAY, 'not renewed within the day');
    await greylisting.check('192.0.2.7', ALICE, BOB, passedAt + 25 * 60 * MINUTE);
    assert.equal(await until(passedAt), passedAt + 25 * 60 * MINUTE + 36 * DAY, 'renewed after it');
    await greylisting.check('192.0.2.99', 'carol@example.org', BOB, passedAt + 48 * 60 * MINUTE);
    assert.equal((await store.lookup(triplet, network, passedAt)).networkUntil, passedAt + 25 * 60 * MINUTE + 36 * DAY, 'the network was renewed with the triplet, and not again within the day');
    await greylisting.check('192.0.2.99', 'carol@example.org', BOB, passedAt + 50 * 60 * MINUTE);
    assert.equal((await store.lookup(triplet, network, passedAt)).networkUntil, passedAt + 50 * 60 * MINUTE + 36 * DAY);
  });

  test('a pass after the delay is logged with how long the client waited', async () => {
    const { log, lines } = capturingLogger();
    const logged = new Greylisting(store, SETTINGS, log);
    await logged.check('192.0.2.7', ALICE, BOB, T0);
    await logged.check('192.0.2.7', ALICE, BOB, T0 + 17 * MINUTE);
    const passed = lines.find((line) => line.event === 'greylist_passed');
    assert.equal(passed?.waitedMs, 17 * MINUTE);
    assert.equal(passed?.triplet, '192.0.2.0/24 "alice@example.test" "bob@example.net"');
  });

  test('bad settings and a client that is not an IP address are refused with a clear error', async () => {
    assert.throws(() => new Greylisting(store, { ...SETTINGS, delayMs: 0 }, silentLogger()), /delay must be a positive number/);
    assert.throws(() => new Greylisting(store, { ...SETTINGS, retryWindowMs: SETTINGS.delayMs }, silentLogger()), /retry window .* must be longer than its delay/);
    assert.throws(() => new Greylisting(store, { ...SETTINGS, rememberMs: Number.NaN }, silentLogger()), /remembers must be a positive number/);
    await assert.rejects(greylisting.check('unknown', ALICE, BOB, T0), /needs the client's IP address, got "unknown"/);
  });

  test('a store that fails makes check reject, for the caller to decide', async () => {
    db.close();
    await assert.rejects(greylisting.check('192.0.2.7', ALICE, BOB, T0), Error);
  });

  test('the embedded store: sweep deletes the rows that expired, keeping the tables small', async () => {
    await greylisting.check('192.0.2.7', ALICE, BOB, T0);
    await pass('198.51.100.7', ALICE, BOB, T0);
    const rows = () => [db.prepare('SELECT count(*) AS n FROM greylist_triplets').get()?.n, db.prepare('SELECT count(*) AS n FROM greylist_networks').get()?.n];
    assert.deepEqual(rows(), [2, 1]);
    await greylisting.sweep(T0 + 3 * DAY);
    assert.deepEqual(rows(), [1, 1], 'the unanswered first attempt went');
    await greylisting.sweep(T0 + 40 * DAY);
    assert.deepEqual(rows(), [0, 0]);
  });
});
