import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger, createLogger, type Logger } from '../../src/log/logger.ts';
import { startApp, type App } from '../../src/server/app.ts';

export interface TestServer {
  app: App;
  dir: string;
  pop3Port: number;
  pop3sPort: number;
  smtpPort: number;
  /** Adds the domain if needed, then the user. */
  addUser(address: string, password?: string): Promise<void>;
  deliver(address: string, message: string | Buffer): Promise<string>;
  close(): Promise<void>;
}

export const PASSWORD = 'correct horse battery';

/** popgate on ephemeral loopback ports with a fresh data dir; `overrides` are config keys. */
export async function startTestServer(overrides: Record<string, unknown> = {}, options: { log?: Logger } = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-test-'));
  const raw = deepMerge(
    {
      hostname: 'mail.example.test',
      data_dir: dir,
      // Tests open connections quickly from 127.0.0.1; the rate limit has its own test.
      pop3: { listen: ['127.0.0.1:0'], max_connection_rate_per_ip: 0 },
      pop3s: { listen: ['127.0.0.1:0'] },
      smtp: { listen: [], max_connection_rate_per_ip: 0 },
      tls: { self_signed: true },
      auth: { failure_delay: '10ms' },
      shutdown_grace: '200ms',
      // Relayed mail stays in the queue unless a test sets up somewhere for it to go.
      outbound: { enabled: false },
    },
    overrides,
  );
  const config = parseConfig(raw, 'test');
  const log = options.log ?? (process.env.POPGATE_TEST_LOG ? createLogger(process.env.POPGATE_TEST_LOG) : silentLogger());
  const app = await startApp(config, log);
  const portOf = (list: string[]) => (list[0] ? Number(list[0].split(':').pop()) : 0);
  const domains = new Set<string>();
  return {
    app,
    dir,
    pop3Port: portOf(app.addresses.pop3),
    pop3sPort: portOf(app.addresses.pop3s),
    smtpPort: portOf(app.addresses.smtp),
    async addUser(address, password = PASSWORD) {
      const domain = address.split('@')[1];
      if (!domains.has(domain) && !(await app.accounts.isLocalDomain(domain))) await app.accounts.addDomain(domain);
      domains.add(domain);
      await app.accounts.addUser(address, password);
    },
    deliver(address, message) {
      return app.mailstore.deliver(address, Buffer.isBuffer(message) ? message : Buffer.from(message));
    },
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function deepMerge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const current = out[key];
    out[key] =
      value && typeof value === 'object' && !Array.isArray(value) && current && typeof current === 'object' && !Array.isArray(current)
        ? deepMerge(current as Record<string, unknown>, value as Record<string, unknown>)
        : value;
  }
  return out;
}

/** A simple RFC 5322 message with CRLF line ends. */
export function message(subject: string, body = 'Hello.\r\n', extraHeaders = ''): string {
  return `From: sender@example.net\r\nTo: user@example.test\r\nSubject: ${subject}\r\n${extraHeaders}\r\n${body}`;
}
