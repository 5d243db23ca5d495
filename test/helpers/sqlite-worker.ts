import { createInterface } from 'node:readline';
import { silentLogger } from '../../src/log/logger.ts';
import { SqliteConnectionRegistry } from '../../src/sqlite/connection-registry.ts';
import { SqliteMaildropLocks } from '../../src/sqlite/maildrop-locks.ts';
import { openCountersDatabase } from '../../src/sqlite/open.ts';

// One worker process of test/sqlite-shared-workers.test.ts: opens the shared stores on the data
// folder it is given, as a worker would, says "ready", and at "go" (sent to every worker at
// once) races the others: admissions, tokens and a maildrop lock. Prints what it got as JSON,
// then holds its lock (renewing it) until it is killed.

const [dataDir, name, at] = process.argv.slice(2);
const now = Number(at);
const db = openCountersDatabase(dataDir);
const registry = new SqliteConnectionRegistry(db);
const locks = new SqliteMaildropLocks(db, { leaseMs: 500, holder: name }, silentLogger());
await registry.heartbeat(name, now, 60_000);
console.log('ready');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line !== 'go') continue;
  let admitted = 0;
  let tokens = 0;
  for (let i = 0; i < 300; i++) {
    if (await registry.admit('pop3', '192.0.2.7', name, `c${i}`, 500, now)) admitted++;
    if (await registry.takeToken('pop3', '192.0.2.7', 500, now)) tokens++;
  }
  const locked = (await locks.acquire('alice@example.test')) !== undefined;
  console.log(JSON.stringify({ admitted, tokens, locked }));
}
