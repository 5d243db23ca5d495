import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { LocalAccountEvents } from '../src/accounts/events.ts';
import { LocalMaildropLocks } from '../src/mailstore/store.ts';
import { MaildirStore } from '../src/mailstore/maildir.ts';
import { LocalConnectionRegistry } from '../src/net/connection-registry.ts';
import { silentLogger } from '../src/log/logger.ts';
import { SqliteAccountStore } from '../src/sqlite/accounts.ts';
import { SqliteLoginFailureStore } from '../src/sqlite/login-failures.ts';
import { SqliteConnectionRegistry } from '../src/sqlite/connection-registry.ts';
import { SqliteGreylistStore } from '../src/sqlite/greylist.ts';
import { SqliteMaildropLocks } from '../src/sqlite/maildrop-locks.ts';
import { openCountersDatabase, openDatabase } from '../src/sqlite/open.ts';
import { SqliteQueueStore } from '../src/sqlite/queue-index.ts';
import { SqliteRelayAuthStore } from '../src/sqlite/relay-grants.ts';
import { SqliteSendLimitStore } from '../src/sqlite/send-counts.ts';
import { accountEventsContract } from './contracts/account-events.ts';
import { accountStoreContract } from './contracts/account-store.ts';
import { domainSettingsStoreContract } from './contracts/domain-settings-store.ts';
import { SqliteDomainSettingsStore } from '../src/sqlite/domain-settings.ts';
import type { OpenedStore } from './contracts/backend.ts';
import { connectionRegistryContract } from './contracts/connection-registry.ts';
import { greylistStoreContract } from './contracts/greylist-store.ts';
import { loginFailureStoreContract } from './contracts/login-failure-store.ts';
import { maildropLocksContract } from './contracts/maildrop-locks.ts';
import { mailstoreContract } from './contracts/mailstore.ts';
import { queueStoreContract } from './contracts/queue-store.ts';
import { relayAuthStoreContract } from './contracts/relay-auth-store.ts';
import { sendLimitStoreContract } from './contracts/send-limit-store.ts';

// Every storage contract against today's backends: SQLite files in a fresh folder per test
// (opened as the server opens them), Maildir folders, and the in-process maildrop locks.
// reopen() opens a second instance on the same folder, as a restart or the CLI would.

/** A fresh data folder; each instance made by `make` is closed (by `release`) and the folder removed at the end. */
function inFolder<Store>(make: (dataDir: string) => { store: Store; release: () => void | Promise<void> }): () => Promise<OpenedStore<Store>> {
  return async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'popgate-contract-'));
    const releases: (() => void | Promise<void>)[] = [];
    const instance = () => {
      const { store, release } = make(dataDir);
      releases.push(release);
      return store;
    };
    return {
      store: instance(),
      reopen: async () => instance(),
      close: async () => {
        for (const release of releases) await release();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  };
}

/** A store on the counters connection, as openBackends gives it. */
const onCounters = <Store>(make: (db: DatabaseSync) => Store) =>
  inFolder((dataDir) => {
    const db = openCountersDatabase(dataDir);
    return { store: make(db), release: () => db.close() };
  });

accountStoreContract(
  'SQLite',
  inFolder((dataDir) => {
    // No verified-login cache: the timing check compares full password checks.
    const store = new SqliteAccountStore(openDatabase(dataDir), true, 0);
    return { store, release: () => store.close() };
  }),
);

mailstoreContract(
  'Maildir',
  inFolder((dataDir) => ({ store: new MaildirStore(dataDir, 'mail.example.test'), release: () => {} })),
);

// On a cluster's shared storage every file call goes off the event loop and nothing is cached:
// the same promises, by the other code paths.
mailstoreContract(
  'Maildir on shared storage',
  inFolder((dataDir) => ({ store: new MaildirStore(dataDir, 'mail.example.test', { shared: true }), release: () => {} })),
);

maildropLocksContract('in-process', async () => ({ store: new LocalMaildropLocks(), close: async () => {} }));

// The workers of one machine: each instance is another worker's connection to the same file.
const LOCK_LEASE_MS = 300;
maildropLocksContract(
  'SQLite (shared by workers)',
  inFolder((dataDir) => {
    const db = openCountersDatabase(dataDir);
    const store = new SqliteMaildropLocks(db, { leaseMs: LOCK_LEASE_MS }, silentLogger());
    return {
      store,
      release: async () => {
        await store.close();
        db.close();
      },
    };
  }),
  { leaseMs: LOCK_LEASE_MS },
);

relayAuthStoreContract('SQLite', onCounters((db) => new SqliteRelayAuthStore(db)));

loginFailureStoreContract('SQLite', onCounters((db) => new SqliteLoginFailureStore(db)));

sendLimitStoreContract('SQLite', onCounters((db) => new SqliteSendLimitStore(db)));

greylistStoreContract('SQLite', onCounters((db) => new SqliteGreylistStore(db)));

accountEventsContract('in-process', async () => ({ store: new LocalAccountEvents(), close: async () => {} }));

connectionRegistryContract('in-process', async () => ({ store: new LocalConnectionRegistry(), close: async () => {} }));

connectionRegistryContract('SQLite (shared by workers)', onCounters((db) => new SqliteConnectionRegistry(db)));

queueStoreContract(
  'SQLite',
  inFolder((dataDir) => {
    const store = SqliteQueueStore.open(dataDir);
    return { store, release: () => store.close() };
  }),
);

domainSettingsStoreContract(
  'SQLite',
  inFolder((dataDir) => {
    const db = openDatabase(dataDir);
    return { store: new SqliteDomainSettingsStore(db), release: () => db.close() };
  }),
);
