import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { VerifiedPasswordCache } from '../src/accounts/password.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { openDatabase } from '../src/sqlite/open.ts';

// A successful password check is remembered for a while (auth.verified_login_cache), so a
// POP3 client polling every few minutes does not pay scrypt each time; guesses always do.

const dir = mkdtempSync(join(tmpdir(), 'popgate-verified-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const timed = async <T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> => {
  const started = performance.now();
  const value = await work();
  return { value, ms: performance.now() - started };
};

test('a second login with the same password skips scrypt; a wrong one never does', async () => {
  const store = new SqliteAccountStore(openDatabase(join(dir, 'a')), true, 600_000);
  await store.addDomain('example.test');
  await store.addUser('poller@example.test', 'correct horse battery');
  const first = await timed(() => store.authenticate('poller@example.test', 'correct horse battery'));
  assert.deepEqual(first.value, { address: 'poller@example.test' });
  const again = await timed(() => store.authenticate('poller@example.test', 'correct horse battery'));
  assert.deepEqual(again.value, { address: 'poller@example.test' });
  assert.ok(again.ms * 4 < first.ms, `remembered: ${again.ms.toFixed(2)} ms against ${first.ms.toFixed(2)} ms for scrypt`);
  const wrong = await timed(() => store.authenticate('poller@example.test', 'correct horse battery!'));
  assert.equal(wrong.value, undefined);
  assert.ok(wrong.ms * 4 > first.ms, 'a wrong password pays the full check');
  await store.close();
});

test('a password change forgets the old password at once', async () => {
  const store = new SqliteAccountStore(openDatabase(join(dir, 'b')), true, 600_000);
  await store.addDomain('example.test');
  await store.addUser('mover@example.test', 'old password 1');
  assert.ok(await store.authenticate('mover@example.test', 'old password 1'));
  await store.setPassword('mover@example.test', 'new password 2');
  assert.equal(await store.authenticate('mover@example.test', 'old password 1'), undefined);
  assert.ok(await store.authenticate('mover@example.test', 'new password 2'));
  await store.close();
});

test('entries expire, and a time to live of 0 turns the cache off', () => {
  const cache = new VerifiedPasswordCache(1000);
  cache.remember('$scrypt$x', 'pw', 0);
  assert.equal(cache.matches('$scrypt$x', 'pw', 999), true);
  assert.equal(cache.matches('$scrypt$x', 'other', 999), false);
  assert.equal(cache.matches('$scrypt$x', 'pw', 1000), false);
  const off = new VerifiedPasswordCache(0);
  off.remember('$scrypt$x', 'pw', 0);
  assert.equal(off.matches('$scrypt$x', 'pw', 1), false);
});

test('the cache holds a bounded number of accounts, dropping the oldest', () => {
  const cache = new VerifiedPasswordCache(60_000, 2);
  cache.remember('h1', 'a', 0);
  cache.remember('h2', 'b', 0);
  cache.remember('h3', 'c', 0);
  assert.equal(cache.matches('h1', 'a', 1), false);
  assert.equal(cache.matches('h2', 'b', 1), true);
  assert.equal(cache.matches('h3', 'c', 1), true);
});
