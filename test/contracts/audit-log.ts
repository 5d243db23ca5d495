import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AuditLog } from '../../src/audit/store.ts';
import { withStore, type OpenStore } from './backend.ts';

// What every AuditLog promises: entries kept as written, newest first, limited, filtered by
// exact fields, and one log for every instance.

export function auditLogContract(backend: string, open: OpenStore<AuditLog>): void {
  describe(`AuditLog contract: ${backend}`, () => {
    test('entries come back newest first, as written, limited and filtered', () =>
      withStore(open, async ({ store }) => {
        const entries = [
          { at: 1000, actor: 'cli', ip: '', action: 'domain.add', subject: 'example.com', detail: 'added domain example.com' },
          { at: 2000, actor: 'admin root', ip: '192.0.2.7', action: 'user.add', subject: 'a@example.com', detail: 'added a@example.com (mailbox /x)' },
          { at: 2000, actor: 'admin root', ip: '2001:db8::1', action: 'grant.revoke', subject: '192.0.2.9', detail: 'revoked 1 grant(s) — «quoted» \'text\'' },
          { at: 3000, actor: 'customer a@example.com', ip: '192.0.2.8', action: 'user.passwd', subject: 'a@example.com', detail: 'password changed' },
        ];
        for (const entry of entries) await store.record(entry);
        const all = await store.recent(10);
        assert.deepEqual(all.map(({ id: _id, ...entry }) => entry), [...entries].reverse());
        assert.ok(all[0].id > all[1].id);
        assert.equal((await store.recent(2)).length, 2);
        assert.deepEqual((await store.recent(10, { actor: 'admin root' })).map((e) => e.action), ['grant.revoke', 'user.add']);
        assert.deepEqual((await store.recent(10, { subject: 'a@example.com' })).map((e) => e.action), ['user.passwd', 'user.add']);
        assert.deepEqual((await store.recent(10, { actor: 'admin root', action: 'user.add' })).map((e) => e.subject), ['a@example.com']);
        assert.deepEqual(await store.recent(10, { actor: "admin root' OR '1'='1" }), []);
      }));

    test('another instance writes into and reads the same log', () =>
      withStore(open, async ({ store, reopen }) => {
        if (!reopen) return;
        const other = await reopen();
        await store.record({ at: 1, actor: 'cli', ip: '', action: 'domain.add', subject: 'a.example', detail: 'one' });
        await other.record({ at: 2, actor: 'cli', ip: '', action: 'domain.add', subject: 'b.example', detail: 'two' });
        assert.deepEqual((await store.recent(10)).map((e) => e.detail), ['two', 'one']);
      }));
  });
}
