import { hostname as systemHostname } from 'node:os';
import { z } from 'zod';
import { parseDuration } from './duration.ts';
import { parseListenAddress } from '../net/listen.ts';
import { validateNetwork } from '../net/ip.ts';

// Every key and default here is documented in docs/configuration.md; keep the two in step.

const duration = z.string().transform((text, ctx) => {
  const ms = parseDuration(text);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration (for example "500ms", "30s", "10m", "2h", "5d")` });
    return z.NEVER;
  }
  return ms;
});

const listenList = z.array(
  z.string().superRefine((text, ctx) => {
    const parsed = parseListenAddress(text);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
  }),
);

const network = z.string().superRefine((text, ctx) => {
  const error = validateNetwork(text);
  if (error) ctx.addIssue({ code: 'custom', message: error });
});

const positiveInt = z.number().int().positive();

const pop3Schema = z.strictObject({
  listen: listenList.default(['127.0.0.1:2110']),
  max_connections: positiveInt.default(2000),
  max_connections_per_ip: positiveInt.default(50),
  idle_timeout: duration.prefault('10m'),
  max_line_length: z.number().int().min(64).max(65536).default(1024),
  apop: z.boolean().default(false),
  implementation: z.string().default('popgate'),
});

export const configSchema = z.strictObject({
  hostname: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'must be a host name such as "mail.example.net"')
    .default(systemHostname()),
  data_dir: z.string().min(1).default('./data'),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
  pop3: pop3Schema.prefault({}),
  pop3s: z.strictObject({ listen: listenList.default([]) }).prefault({}),
  smtp: z
    .strictObject({
      listen: listenList.default(['127.0.0.1:2525']),
      max_message_size: positiveInt.default(25 * 1024 * 1024),
      max_recipients: positiveInt.default(100),
      max_line_length: z.number().int().min(512).max(65536).default(4096),
      max_connections: positiveInt.default(2000),
      max_connections_per_ip: positiveInt.default(20),
      idle_timeout: duration.prefault('5m'),
      max_errors: positiveInt.default(10),
      error_delay: duration.prefault('250ms'),
      postmaster: z.string().default(''),
    })
    .prefault({}),
  submission: z.strictObject({ listen: listenList.default([]) }).prefault({}),
  submissions: z.strictObject({ listen: listenList.default([]) }).prefault({}),
  tls: z
    .strictObject({
      cert: z.string().default(''),
      key: z.string().default(''),
      self_signed: z.boolean().default(false),
    })
    .prefault({}),
  auth: z
    .strictObject({
      plaintext_without_tls: z.enum(['loopback', 'anywhere', 'never']).default('loopback'),
      default_domain: z.string().default(''),
      failure_delay: duration.prefault('2s'),
      lockout_threshold: positiveInt.default(10),
      lockout_window: duration.prefault('15m'),
      lockout_duration: duration.prefault('15m'),
      trusted_networks: z.array(network).default([]),
    })
    .prefault({}),
  pop_before_smtp: z
    .strictObject({
      window: duration.prefault('10m'),
      mode: z.enum(['sliding', 'fixed']).default('sliding'),
      ipv4_prefix: z.number().int().min(8).max(32).default(32),
      ipv6_prefix: z.number().int().min(32).max(128).default(128),
      never_grant: z.array(network).default(['100.64.0.0/10']),
      max_users_per_ip: z.number().int().min(0).default(0),
      enforce_sender: z.boolean().default(true),
    })
    .prefault({}),
  shutdown_grace: duration.prefault('5s'),
});

export type Config = z.output<typeof configSchema>;
export type Pop3Settings = Config['pop3'];
