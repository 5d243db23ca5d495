import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DnsLists, reversedAddress, type DnsListSettings, type ListZone } from '../src/filter/dns-lists.ts';
import { FilterDns } from '../src/filter/dns.ts';
import { silentLogger } from '../src/log/logger.ts';
import { startDns, type TestDns } from './helpers/dns.ts';
import { capturingLogger } from './helpers/outbound.ts';

// DNS blocklists and allowlists against a real DNS server on loopback, through the filter's
// resolver: what counts as a listing, weights and actions, zones that answer late, fail or
// answer everything, and the cache (by TTL, on a clock the test moves).

const T0 = 1_700_000_000_000;
/** The names of 2001:db8::7 and 192.0.2.7 in a zone. */
const V6_NAME = '7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2';
const SLOW_MS = 2000;

const zone = (name: string, action: ListZone['action'], weight: number, codes: string[] = []): ListZone => ({ zone: name, action, weight, codes });

describe('DNS lists', () => {
  let dns: TestDns;
  let resolver: FilterDns;
  let clock = T0;

  before(async () => {
    dns = await startDns({
      '7.2.0.192.bl.test': { A: ['127.0.0.4', '127.0.0.2'], ttl: 30 },
      '8.2.0.192.bl.test': { A: ['127.0.0.10'] },
      [`${V6_NAME}.bl.test`]: { A: ['127.0.0.3'] },
      '9.2.0.192.wl.test': { A: ['127.0.10.1'] },
      '7.2.0.192.reject.test': { A: ['127.0.0.2'] },
      '*.everything.test': { A: ['127.0.0.2'] },
      '*.refusing.test': { A: ['127.255.255.254'] },
      '*.rewriting.test': { A: ['198.51.100.1'] },
      '*.servfail.test': { servfail: true },
      '7.2.0.192.untestable.test': { A: ['127.0.0.2'] },
      '1.0.0.127.untestable.test': { servfail: true },
      '7.2.0.192.slow.test': { A: ['127.0.0.2'], delayMs: SLOW_MS },
      ...Object.fromEntries(['a', 'b', 'c', 'd'].map((name) => [`7.2.0.192.${name}.parallel.test`, { A: ['127.0.0.2'], delayMs: 400 }])),
    });
    resolver = new FilterDns([dns.address], 5000);
  });
  after(() => dns?.close());

  function lists(zones: ListZone[], settings: Partial<DnsListSettings> = {}, log = silentLogger(), dnsResolver = resolver) {
    return new DnsLists(zones, dnsResolver, { deadlineMs: 1500, now: () => clock, ...settings }, log);
  }
  /**
   * A resolver with no history: c-ares shortens its timeouts to the latency it has seen from a
   * server, so one that saw many quick answers gives up on a slow zone well before `timeoutMs`.
   */
  const freshResolver = () => new FilterDns([dns.address], 5000);
  /** How often `name` was asked since the test began. */
  const asked = (name: string, since: number) => dns.queries.slice(since).filter((query) => query === `A ${name}`).length;

  test('addresses are asked about reversed: IPv4 octets, IPv6 nibbles (RFC 5782 §2.4), IPv4-mapped IPv6 as IPv4', () => {
    assert.equal(reversedAddress('192.0.2.7'), '7.2.0.192');
    assert.equal(reversedAddress('2001:db8:1:2:3:4:567:89ab'), 'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2', "the RFC's own example");
    assert.equal(reversedAddress('2001:DB8::7'), V6_NAME);
    assert.equal(reversedAddress('::ffff:192.0.2.7'), '7.2.0.192');
    assert.equal(reversedAddress('::ffff:c000:207'), '7.2.0.192');
    assert.equal(reversedAddress('::1'), `1${'.0'.repeat(31)}`, 'not mapped: an IPv6 address like any other');
    for (const bad of ['', 'example.test', '192.0.2', '192.0.2.256', '1:2:3', '7.2.0.192.bl.test']) assert.throws(() => reversedAddress(bad), /not an IP address/, bad);
  });

  test('a listed address is a hit with its zone, code, action and weight; an unlisted one is not; IPv6 and IPv4-mapped alike', async () => {
    const since = dns.queries.length;
    const list = lists([zone('bl.test', 'score', 3), zone('wl.test', 'allow', 2)]);
    assert.deepEqual(await list.lookup('192.0.2.7'), { hits: [{ zone: 'bl.test', code: '127.0.0.2', action: 'score', weight: 3 }], unanswered: [] }, 'two codes: one hit, the lowest code');
    assert.deepEqual(await list.lookup('192.0.2.99'), { hits: [], unanswered: [] });
    assert.deepEqual(await list.lookup('192.0.2.9'), { hits: [{ zone: 'wl.test', code: '127.0.10.1', action: 'allow', weight: 2 }], unanswered: [] });
    assert.deepEqual((await list.lookup('2001:db8::7')).hits, [{ zone: 'bl.test', code: '127.0.0.3', action: 'score', weight: 3 }]);
    assert.deepEqual((await list.lookup('::ffff:192.0.2.7')).hits.map((hit) => hit.zone), ['bl.test'], 'answered from the cache of 192.0.2.7');
    assert.equal(asked('7.2.0.192.bl.test', since), 1);
    assert.equal(asked(`${V6_NAME}.wl.test`, since), 1, 'IPv6 is asked as nibbles');
    assert.equal(asked('1.0.0.127.bl.test', since), 1, 'the zone was tested once before its listing was believed');
    assert.equal(asked('1.0.0.127.wl.test', since), 1);
  });

  test('return codes: only the configured ones count; none configured, any 127.x.y.z listing', async () => {
    assert.deepEqual((await lists([zone('bl.test', 'score', 1, ['127.0.0.4'])]).lookup('192.0.2.7')).hits.map((hit) => hit.code), ['127.0.0.4']);
    assert.deepEqual((await lists([zone('bl.test', 'score', 1, ['127.0.0.3', '127.0.0.11'])]).lookup('192.0.2.7')).hits, []);
    assert.deepEqual((await lists([zone('bl.test', 'score', 1, ['127.0.0.2', '127.0.0.11'])]).lookup('192.0.2.8')).hits, [], 'PBL-style 127.0.0.10 not asked for');
    assert.deepEqual((await lists([zone('bl.test', 'score', 1)]).lookup('192.0.2.8')).hits.map((hit) => hit.code), ['127.0.0.10']);
  });

  test('every zone is asked; hits come in the configured order with their own actions', async () => {
    const list = lists([zone('wl.test', 'allow', 5), zone('reject.test', 'reject', 0), zone('bl.test', 'score', 2.5)]);
    assert.deepEqual((await list.lookup('192.0.2.7')).hits, [
      { zone: 'reject.test', code: '127.0.0.2', action: 'reject', weight: 0 },
      { zone: 'bl.test', code: '127.0.0.2', action: 'score', weight: 2.5 },
    ]);
  });

  test('a zone that answers every query (it lists 127.0.0.1) lists nobody, and that is logged once', async () => {
    const { log, lines } = capturingLogger();
    const list = lists([zone('everything.test', 'reject', 10), zone('bl.test', 'score', 1)], {}, log);
    for (const ip of ['192.0.2.7', '198.51.100.20', '2001:db8::7']) {
      const result = await list.lookup(ip);
      assert.ok(!result.hits.some((hit) => hit.zone === 'everything.test'), ip);
      assert.deepEqual(result.unanswered, []);
    }
    assert.deepEqual((await list.lookup('192.0.2.7')).hits.map((hit) => hit.zone), ['bl.test'], 'a sound zone beside it still counts');
    const warnings = lines.filter((line) => line.event === 'dns_list_lists_everything');
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].zone, 'everything.test');
  });

  test('a zone that stops answering everything is believed again after its next test', async () => {
    const { log, lines } = capturingLogger();
    dns.zone['*.healing.test'] = { A: ['127.0.0.2'] };
    const list = lists([zone('healing.test', 'score', 1)], {}, log);
    assert.deepEqual((await list.lookup('192.0.2.7')).hits, []);
    delete dns.zone['*.healing.test'];
    dns.zone['7.2.0.192.healing.test'] = { A: ['127.0.0.2'] };
    clock += 61_000;
    assert.deepEqual((await list.lookup('192.0.2.7')).hits.map((hit) => hit.zone), ['healing.test']);
    assert.deepEqual(lines.map((line) => line.event).filter((event) => event?.toString().startsWith('dns_list')), ['dns_list_lists_everything', 'dns_list_trusted_again']);
  });

  test('a listing from a zone whose test cannot be answered counts as unanswered, never as a listing', async () => {
    const result = await lists([zone('untestable.test', 'reject', 1)]).lookup('192.0.2.7');
    assert.deepEqual(result, { hits: [], unanswered: ['untestable.test'] });
  });

  test('"query refused" codes (127.255.255.254) and answers outside 127.0.0.0/8 are no listing, logged once per zone', async () => {
    const { log, lines } = capturingLogger();
    const list = lists([zone('refusing.test', 'reject', 1), zone('rewriting.test', 'reject', 1), zone('bl.test', 'score', 1)], {}, log);
    for (const ip of ['192.0.2.7', '192.0.2.30', '192.0.2.31']) {
      const result = await list.lookup(ip);
      assert.deepEqual(result.hits.map((hit) => hit.zone), ip === '192.0.2.7' ? ['bl.test'] : [], ip);
      assert.deepEqual(result.unanswered, []);
    }
    const problems = lines.filter((line) => line.event === 'dns_list_problem');
    assert.deepEqual(problems.map((line) => [line.zone, line.problem]), [
      ['refusing.test', 'query_refused'],
      ['rewriting.test', 'not_a_list_answer'],
    ]);
    assert.match(String(problems[0].msg), /public or unattributable resolver/);
  });

  test('a zone answering after the deadline is unanswered and the lookup answers in time; its late answer is kept', async () => {
    const since = dns.queries.length;
    const list = lists([zone('slow.test', 'reject', 1), zone('bl.test', 'score', 1)], { deadlineMs: 300 }, silentLogger(), freshResolver());
    const started = Date.now();
    const result = await list.lookup('192.0.2.7');
    const tookMs = Date.now() - started;
    assert.deepEqual(result, { hits: [{ zone: 'bl.test', code: '127.0.0.2', action: 'score', weight: 1 }], unanswered: ['slow.test'] });
    assert.ok(tookMs < SLOW_MS - 500, `answered after ${tookMs} ms, the slow zone answers after ${SLOW_MS}`);
    await new Promise((resolve) => setTimeout(resolve, SLOW_MS));
    assert.deepEqual((await list.lookup('192.0.2.7')).hits.map((hit) => hit.zone), ['slow.test', 'bl.test']);
    assert.equal(asked('7.2.0.192.slow.test', since), 1, 'the late answer was cached');
  });

  test('the deadline covers all zones together: they are asked in parallel', async () => {
    // Four zones answering after 400 ms each: one after the other they would need 1.6 s.
    const zones = ['a', 'b', 'c', 'd'].map((name) => zone(`${name}.parallel.test`, 'score', 1));
    const result = await lists(zones, { deadlineMs: 1400 }, silentLogger(), freshResolver()).lookup('192.0.2.7');
    assert.deepEqual(result.unanswered, []);
    assert.equal(result.hits.length, 4);
  });

  test('SERVFAIL leaves the zone unanswered and is not cached; it is logged once', async () => {
    const since = dns.queries.length;
    const { log, lines } = capturingLogger();
    const list = lists([zone('servfail.test', 'reject', 1)], {}, log);
    assert.deepEqual(await list.lookup('192.0.2.7'), { hits: [], unanswered: ['servfail.test'] });
    assert.deepEqual(await list.lookup('192.0.2.7'), { hits: [], unanswered: ['servfail.test'] });
    assert.ok(asked('7.2.0.192.servfail.test', since) >= 2, 'asked again');
    assert.equal(lines.filter((line) => line.event === 'dns_list_problem' && line.problem === 'unanswered').length, 1);
  });

  test('a listing is kept for its TTL, "not listed" for a minute; then asked again', async () => {
    const since = dns.queries.length;
    const list = lists([zone('bl.test', 'score', 1)]);
    const start = clock;
    await list.lookup('192.0.2.7'); // listed, TTL 30 s
    await list.lookup('192.0.2.50'); // not listed
    clock = start + 29_000;
    assert.equal((await list.lookup('192.0.2.7')).hits.length, 1);
    await list.lookup('192.0.2.50');
    assert.equal(asked('7.2.0.192.bl.test', since), 1, 'within its TTL: not asked');
    clock = start + 31_000;
    assert.equal((await list.lookup('192.0.2.7')).hits.length, 1);
    assert.equal(asked('7.2.0.192.bl.test', since), 2, 'after its TTL: asked again');
    clock = start + 59_000;
    await list.lookup('192.0.2.50');
    assert.equal(asked('50.2.0.192.bl.test', since), 1);
    clock = start + 61_000;
    await list.lookup('192.0.2.50');
    assert.equal(asked('50.2.0.192.bl.test', since), 2);
  });

  test('the cache is bounded: the oldest answers go first', async () => {
    const since = dns.queries.length;
    const list = lists([zone('bl.test', 'score', 1)], { cacheEntries: 3 });
    for (const last of [60, 61, 62, 63]) await list.lookup(`192.0.2.${last}`);
    await list.lookup('192.0.2.63');
    await list.lookup('192.0.2.60');
    assert.equal(asked('63.2.0.192.bl.test', since), 1, 'still cached');
    assert.equal(asked('60.2.0.192.bl.test', since), 2, 'evicted, asked again');
  });

  test('many concurrent lookups of one address ask each zone once', async () => {
    const since = dns.queries.length;
    const list = lists([zone('bl.test', 'score', 1), zone('wl.test', 'allow', 1), zone('slow.test', 'reject', 1)], { deadlineMs: 5000 }, silentLogger(), freshResolver());
    const results = await Promise.all(Array.from({ length: 25 }, () => list.lookup('192.0.2.7')));
    for (const result of results) assert.deepEqual(result.hits.map((hit) => hit.zone), ['bl.test', 'slow.test']);
    for (const name of ['7.2.0.192.bl.test', '7.2.0.192.wl.test', '7.2.0.192.slow.test', '1.0.0.127.bl.test', '1.0.0.127.slow.test']) {
      assert.equal(asked(name, since), 1, name);
    }
  });

  test('a bad address or a bad zone is refused with a clear error', async () => {
    await assert.rejects(lists([zone('bl.test', 'score', 1)]).lookup('unknown'), /not an IP address: "unknown"/);
    const bad: [ListZone, RegExp][] = [
      [zone('', 'score', 1), /not a DNS zone name/],
      [zone('bad zone.test', 'score', 1), /not a DNS zone name/],
      [zone(`${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.example`, 'score', 1), /at most 189 characters/],
      [zone('bl.test', 'block' as ListZone['action'], 1), /action must be "reject", "score" or "allow"/],
      [zone('bl.test', 'score', -1), /weight must be a number of 0 or more/],
      [zone('bl.test', 'score', Number.NaN), /weight/],
      [zone('bl.test', 'score', 1, ['127.0.0.1']), /"127\.0\.0\.1" can never count/],
      [zone('bl.test', 'score', 1, ['127.255.255.254']), /can never count/],
      [zone('bl.test', 'score', 1, ['10.0.0.2']), /can never count/],
      [zone('bl.test', 'score', 1, ['127.0.0.2/8']), /can never count/],
    ];
    for (const [config, message] of bad) assert.throws(() => lists([config]), message, JSON.stringify(config));
    assert.throws(() => lists([zone('bl.test', 'score', 1), zone('BL.test.', 'reject', 1)]), /"bl\.test" is configured twice/);
    assert.throws(() => lists([], { deadlineMs: 0 }), /deadline must be a positive number/);
  });
});
