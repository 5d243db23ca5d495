import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { findEngine, missingEngine } from './helpers/engines.ts';
import { startTestServer } from './helpers/server.ts';

// "+" runs the script whatever service nmap guesses for the test's ephemeral port.
// Operators and outside checkers test a new mail server with nmap's smtp-open-relay script:
// about 16 relay attempts in one session, each refused. The session must last long enough for
// the scan to finish (smtp.max_errors, 20 by default as Postfix's smtpd_hard_error_limit),
// and every attempt must fail.

describe('nmap smtp-open-relay', { skip: missingEngine('nmap') }, () => {
  test('the scan completes with the default settings and finds no open relay', async () => {
    const server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'], error_delay: '0ms' } });
    try {
      await server.addUser('alice@example.test');
      const { stdout } = await promisify(execFile)(
        findEngine('nmap')!,
        ['-Pn', '-n', '-p', String(server.smtpPort), '--script', '+smtp-open-relay', '--script-args', 'smtp-open-relay.domain=example.test', '127.0.0.1'],
        { timeout: 120_000 },
      );
      assert.match(stdout, /Server doesn't seem to be an open relay, all tests failed/, stdout);
    } finally {
      await server.close();
    }
  });
});
