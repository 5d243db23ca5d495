import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { DomainSettingsStore } from '../../src/filter/domain-settings.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every DomainSettingsStore promises: overrides per domain, set, replaced and removed one
// by one, seen by another instance, and only known settings with allowed values read back.

export function domainSettingsStoreContract(backend: string, open: OpenStore<DomainSettingsStore>): void {
  describe(`DomainSettingsStore contract: ${backend}`, () => {
    test('a domain without overrides has none; overrides are per domain', () =>
      withStore(open, async ({ store }) => {
        assert.deepEqual(await store.get('example.test'), {});
        await store.set('example.test', 'dmarc', 'mark');
        await store.set('example.test', 'greylisting', 'true');
        await store.set('other.test', 'dmarc', 'off');
        assert.deepEqual(await store.get('example.test'), { dmarc: 'mark', greylisting: 'true' });
        assert.deepEqual(await store.get('other.test'), { dmarc: 'off' });
        assert.deepEqual(await store.get('third.test'), {});
      }));

    test('setting again replaces; undefined removes one override only', () =>
      withStore(open, async ({ store }) => {
        await store.set('example.test', 'dmarc', 'mark');
        await store.set('example.test', 'spf_fail', 'reject');
        await store.set('example.test', 'dmarc', 'enforce');
        assert.deepEqual(await store.get('example.test'), { dmarc: 'enforce', spf_fail: 'reject' });
        await store.set('example.test', 'dmarc', undefined);
        assert.deepEqual(await store.get('example.test'), { spf_fail: 'reject' });
        await store.set('example.test', 'dmarc', undefined); // removing what is not there is nothing
        assert.deepEqual(await store.get('example.test'), { spf_fail: 'reject' });
      }));

    test('list gives every override ordered by domain and name', () =>
      withStore(open, async ({ store }) => {
        await store.set('b.test', 'greylisting', 'false');
        await store.set('a.test', 'temporary_errors', 'defer');
        await store.set('a.test', 'dmarc', 'off');
        assert.deepEqual(await store.list(), [
          { domain: 'a.test', name: 'dmarc', value: 'off' },
          { domain: 'a.test', name: 'temporary_errors', value: 'defer' },
          { domain: 'b.test', name: 'greylisting', value: 'false' },
        ]);
      }));

    test('another instance sees the overrides at once', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        await store.set('example.test', 'dmarc', 'mark');
        const other = await reopen();
        assert.deepEqual(await other.get('example.test'), { dmarc: 'mark' });
        await other.set('example.test', 'dmarc', undefined);
        assert.deepEqual(await store.get('example.test'), {});
      }));
  });
}
