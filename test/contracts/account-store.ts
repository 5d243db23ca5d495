import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import { hashPassword } from '../../src/accounts/password.ts';
import { AccountError, type AccountStore } from '../../src/accounts/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every AccountStore promises. The backend under test must not remember verified
// passwords (auth.verified_login_cache = 0): the timing check compares full password checks.

const PASSWORD = 'correct horse battery';

/** A domain with users alice and bob, and an alias info -> alice, carol@elsewhere.test. */
async function populated(store: AccountStore): Promise<void> {
  await store.addDomain('example.test');
  await store.addUser('alice@example.test', PASSWORD);
  await store.addUser('bob@example.test', 'bobs password');
  await store.addAlias('info@example.test', ['alice@example.test', 'carol@elsewhere.test']);
}

/**
 * PASSWORD hashed by Dovecot 2.3's `doveadm pw -s SCHEME` (and one with rounds=20000): every
 * scheme addUserWithHash accepts, in the form Dovecot's passwd-file holds it.
 */
const LEGACY_HASHES = [
  '{SHA512-CRYPT}$6$nq0iGEF/5/9hW.vE$toX1OQctcxOlKe3SpbreaNP3w0fI9EUrPZtWs/wmmHK88B37BxTrmLtOohOhLgoe5Bwm3MnGveuBWq3jymSzV.',
  '{SHA512-CRYPT}$6$rounds=20000$Yo2tDC0Wh8yw6xj6$qLK6YJBxjHQN5cLUsEkffWF2wN5BUkulol4GrM3dy01263VDj3ssfe0dqvOZc7RHkeBXSRXB7QUZ9eK9kcNpj0',
  '{SHA256-CRYPT}$5$81e86pzv3sNGDbCE$MG4Xs.ogDjTc4J6OffW.zTOzX1zyxHbhEvJ5aycYYP4',
  '{BLF-CRYPT}$2y$05$GEn9PFFWXzsRqWffACdxNO/uB8eo6hM/0vyRcahRvzR6dK2LQH1S6',
  '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$1fi4VABIZNTOycbBcg90LQ$idn87/TodXoqTSiGJ3/Jrt0kTPm5qfJjFb7zRjdH/kw',
  '{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$rPJy+ciqvyfo0lIkr3ygbg$TD3tqsngFlwZ0dQEJctXNX1H/BSlFJKQ3mxSNy8zdcY',
  '{SSHA512}JfwMbWqbYzgU12aE02/fjJHND7YjqzV7Go/tpva1POgTtmLHplfeP1W2LqxHOULpnnG2lVd/uHQcmFIYe56/JOhO7Ns=',
  '{SSHA256}s5mvyOjAKs1RUS4MX9D/JhZ3+PV+39zKK4fPfy321JeT4Xp0',
  '{SHA512}zvYeTk7ae6ii/qoSBhf896UTrZIEQjsl4kO30/VW+ShT6VsVatr/3Zon0OUHNq1qa7zFDOipvTUWL315nomlIQ==',
  '{SHA256}kCjqDRXeyqNbLaIcApCvOxpboKMKWRkG+JtQdOIJ6nI=',
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

export function accountStoreContract(backend: string, open: OpenStore<AccountStore>): void {
  describe(`AccountStore contract: ${backend}`, () => {
    test('domains: added in normal form (lower case, A-labels), listed in order, refused twice or when invalid', () =>
      withStore(open, async ({ store }) => {
        await store.addDomain('Example.TEST');
        await store.addDomain('bücher.test');
        await store.addDomain('another.test');
        assert.deepEqual(await store.listDomains(), ['another.test', 'example.test', 'xn--bcher-kva.test']);
        assert.equal(await store.isLocalDomain('example.test'), true);
        assert.equal(await store.isLocalDomain('xn--bcher-kva.test'), true);
        assert.equal(await store.isLocalDomain('elsewhere.test'), false);
        await assert.rejects(store.addDomain('example.test'), AccountError, 'a duplicate');
        await assert.rejects(store.addDomain('not_a domain'), AccountError, 'an invalid name');
      }));

    test('a domain is removed only once it has no users and no aliases; removing an unknown one is refused', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        await assert.rejects(store.removeDomain('example.test'), AccountError);
        await store.removeUser('alice@example.test');
        await store.removeUser('bob@example.test');
        await assert.rejects(store.removeDomain('example.test'), AccountError, 'the alias is still there');
        await store.removeAlias('info@example.test');
        await store.removeDomain('example.test');
        assert.deepEqual(await store.listDomains(), []);
        assert.equal(await store.isLocalDomain('example.test'), false, 'forgotten at once');
        await assert.rejects(store.removeDomain('example.test'), AccountError);
      }));

    test('users: added in normal form, listed per domain or all, looked up, removed; refusals', () =>
      withStore(open, async ({ store }) => {
        await store.addDomain('example.test');
        await store.addDomain('other.test');
        const before = Date.now();
        const added = await store.addUser('Alice@Example.TEST', PASSWORD);
        assert.equal(added.address, 'alice@example.test');
        assert.equal(added.domain, 'example.test');
        assert.equal(added.local, 'alice');
        assert.ok(added.createdAt >= before && added.createdAt <= Date.now(), 'createdAt is the time of adding');
        await store.addUser('zoe@other.test', PASSWORD);
        await store.addUser('bob@example.test', PASSWORD);
        assert.deepEqual((await store.listUsers('example.test')).map((u) => u.address), ['alice@example.test', 'bob@example.test']);
        assert.deepEqual((await store.listUsers()).map((u) => u.address), ['alice@example.test', 'bob@example.test', 'zoe@other.test']);
        assert.deepEqual(await store.getUser('ALICE@example.test'), added);
        assert.equal(await store.getUser('nobody@example.test'), undefined);

        await assert.rejects(store.addUser('alice@example.test', PASSWORD), AccountError, 'a duplicate');
        await assert.rejects(store.addUser('someone@unknown.test', PASSWORD), AccountError, 'an unknown domain');
        await assert.rejects(store.addUser('not an address', PASSWORD), AccountError, 'an invalid address');
        await assert.rejects(store.addUser('carol@example.test', 'short'), AccountError, 'a short password');
        await assert.rejects(store.listUsers('unknown.test'), AccountError, 'listing an unknown domain');

        await store.removeUser('bob@example.test');
        assert.equal(await store.getUser('bob@example.test'), undefined);
        assert.equal(await store.lookup('bob@example.test'), undefined, 'gone at once');
        await assert.rejects(store.removeUser('bob@example.test'), AccountError, 'removing twice');
      }));

    test('authenticate: the right password yields the address; a wrong one, an unknown user or a bad address yield nothing', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        assert.deepEqual(await store.authenticate('alice@example.test', PASSWORD), { address: 'alice@example.test' });
        assert.deepEqual(await store.authenticate('Alice@EXAMPLE.test', PASSWORD), { address: 'alice@example.test' }, 'in any case');
        assert.equal(await store.authenticate('alice@example.test', 'wrong password'), undefined);
        assert.equal(await store.authenticate('alice@example.test', 'bobs password'), undefined, "another user's password");
        assert.equal(await store.authenticate('nobody@example.test', PASSWORD), undefined);
        assert.equal(await store.authenticate('not an address', PASSWORD), undefined);
        assert.equal(await store.authenticate('info@example.test', PASSWORD), undefined, 'an alias has no password');
      }));

    test('a new password replaces the old one at once; an unknown user or a bad password is refused', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        assert.ok(await store.authenticate('alice@example.test', PASSWORD));
        await store.setPassword('alice@example.test', 'a brand new secret');
        assert.equal(await store.authenticate('alice@example.test', PASSWORD), undefined);
        assert.ok(await store.authenticate('alice@example.test', 'a brand new secret'));
        await assert.rejects(store.setPassword('nobody@example.test', 'a brand new secret'), AccountError);
        await assert.rejects(store.setPassword('alice@example.test', 'short'), AccountError);
      }));

    test('a removed user is refused at once, even right after a successful login', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        assert.ok(await store.authenticate('alice@example.test', PASSWORD));
        await store.removeUser('alice@example.test');
        assert.equal(await store.authenticate('alice@example.test', PASSWORD), undefined);
      }));

    test('authenticate takes as long for an unknown user as for a wrong password (no user enumeration by timing)', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        // Warm up both paths (the unknown-user path prepares its dummy hash on first use).
        await store.authenticate('nobody@example.test', 'some guess');
        await store.authenticate('alice@example.test', 'some guess');
        const unknown: number[] = [];
        const wrong: number[] = [];
        for (let i = 0; i < 7; i++) {
          let started = performance.now();
          assert.equal(await store.authenticate(`nobody${i}@example.test`, `guess ${i}`), undefined);
          unknown.push(performance.now() - started);
          started = performance.now();
          assert.equal(await store.authenticate('alice@example.test', `guess ${i}`), undefined);
          wrong.push(performance.now() - started);
        }
        const [a, b] = [median(unknown), median(wrong)];
        assert.ok(Math.max(a, b) <= 3 * Math.min(a, b), `median unknown user ${a.toFixed(2)} ms, wrong password ${b.toFixed(2)} ms`);
      }));

    test('carried-over hashes: each supported scheme logs in with the old password; the first success replaces it with scrypt', () =>
      withStore(open, async ({ store }) => {
        await store.addDomain('example.test');
        for (const [index, hash] of LEGACY_HASHES.entries()) {
          const address = `user${index}@example.test`;
          const scheme = hash.slice(1, hash.indexOf('}'));
          await store.addUserWithHash(address, hash);
          assert.equal(await store.passwordScheme(address), scheme, `${scheme}: kept as it was imported`);
          assert.equal(await store.authenticate(address, `${PASSWORD}!`), undefined, `${scheme}: a wrong password`);
          assert.equal(await store.passwordScheme(address), scheme, `${scheme}: a failed login changes nothing`);
          assert.deepEqual(await store.authenticate(address, PASSWORD), { address }, `${scheme}: the old password`);
          assert.equal(await store.passwordScheme(address), 'scrypt', `${scheme}: replaced on the first login`);
          assert.deepEqual(await store.authenticate(address, PASSWORD), { address }, `${scheme}: the same password against scrypt`);
          assert.equal(await store.authenticate(address, `${PASSWORD}!`), undefined, `${scheme}: still refuses a wrong one`);
        }
        assert.equal(await store.passwordScheme('nobody@example.test'), undefined);
      }));

    test('passwordStamp: stays while the password does, changes with it, undefined for nobody', () =>
      withStore(open, async ({ store }) => {
        await store.addDomain('example.test');
        await store.addUser('stamp@example.test', PASSWORD);
        const first = await store.passwordStamp('stamp@example.test');
        assert.match(first ?? '', /^[A-Za-z0-9_-]{22}$/);
        await store.authenticate('stamp@example.test', PASSWORD);
        assert.equal(await store.passwordStamp('Stamp@EXAMPLE.test'), first, 'a login changes nothing');
        await store.setPassword('stamp@example.test', `${PASSWORD} 2`);
        assert.notEqual(await store.passwordStamp('stamp@example.test'), first);
        assert.equal(await store.passwordStamp('nobody@example.test'), undefined);
        assert.equal(await store.passwordStamp('not an address'), undefined);
      }));

    test('addUserWithHash: an scrypt hash is kept; unsupported schemes, malformed hashes, plain text and taken addresses are refused', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        await store.addUserWithHash('copy@example.test', await hashPassword(PASSWORD));
        assert.ok(await store.authenticate('copy@example.test', PASSWORD), 'an scrypt hash from another popgate');
        for (const [hash, why] of [
          ['{CRAM-MD5}6fb80338fbebe8da9f9b7a8d117e26c01f113de588fe039b0b3cda66db67b3c9', /CRAM-MD5.*not supported/],
          ['{MD5-CRYPT}$1$6MlA4Fap$83Ni.ZdIHmCPaDRr8c301.', /MD5-CRYPT.*not supported/],
          ['$1$6MlA4Fap$83Ni.ZdIHmCPaDRr8c301.', /MD5-CRYPT.*not supported/],
          ['{NOSUCH}abc', /unknown password scheme \{NOSUCH\}/],
          ['{SHA512-CRYPT}$6$salt$short', /malformed/],
          ['{BLF-CRYPT}$2y$31$GEn9PFFWXzsRqWffACdxNO/uB8eo6hM/0vyRcahRvzR6dK2LQH1S6', /cost 31/],
          ['{PLAIN}correct horse battery', /scrypt|SCHEME/],
          ['correct horse battery', /SCHEME|scheme/],
        ] as const) {
          await assert.rejects(store.addUserWithHash('new@example.test', hash), (error: Error) => error instanceof AccountError && why.test(error.message) && error.message.includes('new@example.test'), hash);
        }
        assert.equal(await store.getUser('new@example.test'), undefined, 'nothing added');
        await assert.rejects(store.addUserWithHash('alice@example.test', LEGACY_HASHES[0]), AccountError, 'a user');
        await assert.rejects(store.addUserWithHash('info@example.test', LEGACY_HASHES[0]), AccountError, 'an alias');
        await assert.rejects(store.addUserWithHash('x@unknown.test', LEGACY_HASHES[0]), AccountError, 'an unknown domain');
      }));

    test('a password set while a carried-over hash is being checked is not overwritten by the rehash', () =>
      withStore(open, async ({ store }) => {
        await store.addDomain('example.test');
        await store.addUserWithHash('alice@example.test', LEGACY_HASHES[0]);
        const login = store.authenticate('alice@example.test', PASSWORD);
        await store.setPassword('alice@example.test', 'set by the operator');
        await login;
        assert.ok(await store.authenticate('alice@example.test', 'set by the operator'), 'the new password holds');
        assert.equal(await store.authenticate('alice@example.test', PASSWORD), undefined);
      }));

    test('APOP secrets: set, read back, cleared; kept apart from the password; unknown users refused', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        assert.equal(await store.getApopSecret('alice@example.test'), undefined);
        await store.setApopSecret('alice@example.test', 'apop secret 1');
        assert.equal(await store.getApopSecret('Alice@example.test'), 'apop secret 1');
        assert.equal(await store.getApopSecret('bob@example.test'), undefined, 'per user');
        assert.ok(await store.authenticate('alice@example.test', PASSWORD), 'the password is unchanged');
        assert.equal(await store.authenticate('alice@example.test', 'apop secret 1'), undefined, 'the secret is no password');
        await store.setApopSecret('alice@example.test', undefined);
        assert.equal(await store.getApopSecret('alice@example.test'), undefined);
        await assert.rejects(store.setApopSecret('nobody@example.test', 'apop secret 1'), AccountError);
        assert.equal(await store.getApopSecret('nobody@example.test'), undefined);
      }));

    test('aliases: added with targets, listed, partly and wholly removed; lookup tells users, aliases and nothing apart', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        await store.addAlias('sales@example.test', ['bob@example.test']);
        assert.deepEqual(await store.listAliases('example.test'), [
          { alias: 'info@example.test', targets: ['alice@example.test', 'carol@elsewhere.test'] },
          { alias: 'sales@example.test', targets: ['bob@example.test'] },
        ]);
        assert.deepEqual(await store.lookup('alice@example.test'), { kind: 'user' });
        const info = await store.lookup('info@example.test');
        assert.equal(info?.kind, 'alias');
        assert.deepEqual(info?.kind === 'alias' && [...info.targets].sort(), ['alice@example.test', 'carol@elsewhere.test']);
        assert.equal(await store.lookup('nobody@example.test'), undefined);

        await store.removeAlias('info@example.test', ['carol@elsewhere.test']);
        assert.deepEqual(await store.lookup('info@example.test'), { kind: 'alias', targets: ['alice@example.test'] }, 'seen at once');
        await store.removeAlias('sales@example.test');
        assert.equal(await store.lookup('sales@example.test'), undefined, 'seen at once');
        assert.deepEqual(await store.listAliases(), [{ alias: 'info@example.test', targets: ['alice@example.test'] }]);
        await assert.rejects(store.removeAlias('sales@example.test'), AccountError, 'an unknown alias');
        await assert.rejects(store.removeAlias('info@example.test', ['nobody@example.test']), AccountError, 'an unknown target');
      }));

    test('alias refusals: the address of a user, itself as target, no target, an unknown domain; no user where an alias is', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        await assert.rejects(store.addAlias('alice@example.test', ['bob@example.test']), AccountError, 'alias == user');
        await assert.rejects(store.addAlias('loop@example.test', ['loop@example.test']), AccountError, 'points to itself');
        await assert.rejects(store.addAlias('empty@example.test', []), AccountError, 'no target');
        await assert.rejects(store.addAlias('x@unknown.test', ['alice@example.test']), AccountError, 'unknown domain');
        await assert.rejects(store.addAlias('bad@example.test', ['not an address']), AccountError, 'invalid target');
        await assert.rejects(store.addUser('info@example.test', PASSWORD), AccountError, 'user == alias');
        assert.equal(await store.lookup('loop@example.test'), undefined, 'nothing half-added');
      }));

    test('sendableAddresses: the user and every alias that reaches them', () =>
      withStore(open, async ({ store }) => {
        await populated(store);
        await store.addAlias('sales@example.test', ['alice@example.test']);
        await store.addAlias('support@example.test', ['bob@example.test']);
        const alice = await store.sendableAddresses('alice@example.test');
        assert.equal(alice[0], 'alice@example.test', 'the own address first');
        assert.deepEqual([...alice].sort(), ['alice@example.test', 'info@example.test', 'sales@example.test']);
        assert.deepEqual(await store.sendableAddresses('bob@example.test'), ['bob@example.test', 'support@example.test']);
      }));

    test('what was written is seen by another instance', (t) =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return t.skip('this backend has one instance only');
        await populated(store);
        await store.setApopSecret('bob@example.test', 'apop secret 2');
        const other = await reopen();
        assert.deepEqual(await other.listDomains(), ['example.test']);
        assert.deepEqual(await other.authenticate('alice@example.test', PASSWORD), { address: 'alice@example.test' });
        assert.equal(await other.getApopSecret('bob@example.test'), 'apop secret 2');
        assert.deepEqual(await other.lookup('info@example.test'), await store.lookup('info@example.test'));
      }));
  });
}
