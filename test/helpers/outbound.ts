import { startDns, type TestDns, type ZoneEntry } from './dns.ts';
import { startSinks, type Sink, type SinkOptions } from './sink.ts';
import { startTestServer, type TestServer } from './server.ts';
import { Spool } from '../../src/queue/spool.ts';
import pino from 'pino';
import type { Logger } from '../../src/log/logger.ts';

// popgate with its outbound queue switched on, a real DNS server for its lookups, and real
// SMTP sinks on loopback addresses standing in for the rest of the Internet.

export interface OutboundWorld {
  server: TestServer;
  dns: TestDns;
  sinks: Sink[];
  /** Queues a message as the SMTP server would after an authorized relay. */
  /** As SMTP would queue it; `signingDomain`: the From: domain checked for the sender (DKIM-signed). */
  queue(from: string, to: string[], message: string | Buffer, authorizedUser?: string, signingDomain?: string): Promise<string>;
  close(): Promise<void>;
}

export async function startOutboundWorld(options: {
  zone: Record<string, ZoneEntry>;
  sinks: SinkOptions[];
  config?: Record<string, unknown>;
  /** Outbound config keys; a function when they depend on the sinks' port. */
  outbound?: Record<string, unknown> | ((sinks: Sink[]) => Record<string, unknown>);
  log?: Logger;
}): Promise<OutboundWorld> {
  const dns = await startDns(options.zone);
  const sinks = await startSinks(options.sinks);
  const server = await startTestServer({
    dns: { servers: [dns.address], timeout: '2s' },
    outbound: {
      enabled: true,
      port: sinks[0]?.port ?? 25,
      retry_schedule: ['300ms'],
      connect_timeout: '2s',
      command_timeout: '5s',
      ...(typeof options.outbound === 'function' ? options.outbound(sinks) : options.outbound),
    },
    ...options.config,
  }, { log: options.log });
  return {
    server,
    dns,
    sinks,
    async queue(from, to, message, authorizedUser, signingDomain) {
      const id = Spool.newId();
      await server.app.queue.enqueue({ id, from, to, receivedAt: Date.now(), clientIp: '192.0.2.10', authorizedUser, signingDomain }, Buffer.isBuffer(message) ? message : Buffer.from(message));
      return id;
    },
    async close() {
      await server.close();
      await Promise.all([dns.close(), ...sinks.map((s) => s.close())]);
    },
  };
}

/** Polls until `check` returns a value (not undefined/false), or fails after `timeoutMs`. */
export async function until<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A real pino logger whose JSON lines a test can read. */
export function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (text: string) => void lines.push(JSON.parse(text)) });
  return { log, lines };
}
