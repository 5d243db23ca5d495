import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { resolve, dirname, isAbsolute, join } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.ts';
import { formatDuration } from './duration.ts';
import { isLoopback } from '../net/ip.ts';
import { parseNextHop } from '../net/next-hop.ts';

/** A config problem a person can fix: names the file, the key and the reason. Exit code 2. */
export class ConfigError extends Error {
  readonly exitCode = 2;
}

export const DEFAULT_CONFIG_PATH = './popgate.toml';

export function configPathFrom(flag: string | undefined): { path: string; explicit: boolean } {
  if (flag) return { path: flag, explicit: true };
  if (process.env.POPGATE_CONFIG) return { path: process.env.POPGATE_CONFIG, explicit: true };
  return { path: DEFAULT_CONFIG_PATH, explicit: false };
}

/** Reads and validates a config file. Relative paths inside it are taken from the file's folder. */
export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === 'ENOENT'
        ? `config file ${path} does not exist: create it (see docs/configuration.md) or pass --config FILE`
        : `cannot read config file ${path}: ${(error as Error).message}`,
    );
  }
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (error) {
    const where = error instanceof TomlError ? ` (line ${error.line}, column ${error.column})` : '';
    throw new ConfigError(`${path}${where}: not valid TOML: ${(error as Error).message.split('\n')[0]}`);
  }
  return parseConfig(raw, path, dirname(resolve(path)));
}

export function parseConfig(raw: unknown, source: string, baseDir = process.cwd()): Config {
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(`${source}: ${describeIssues(result.error.issues)}`);
  const config = result.data;
  const fromBase = (p: string) => (p === '' || isAbsolute(p) ? p : resolve(baseDir, p));
  config.data_dir = fromBase(config.data_dir);
  config.tls.cert = fromBase(config.tls.cert);
  config.tls.key = fromBase(config.tls.key);
  config.dkim.keys_dir = config.dkim.keys_dir === '' ? join(config.data_dir, 'dkim') : fromBase(config.dkim.keys_dir);
  checkConsistency(config, source);
  return config;
}

function describeIssues(issues: z.core.$ZodIssue[]): string {
  return issues
    .map((issue) => {
      const key = issue.path.map((part) => (typeof part === 'number' ? `[${part}]` : `.${String(part)}`)).join('').replace(/^\./, '');
      if (issue.code === 'unrecognized_keys') {
        const prefix = key ? `${key}.` : '';
        return issue.keys.map((k) => `${prefix}${k}: unknown key (check the spelling against docs/configuration.md)`).join('\n');
      }
      if (issue.code === 'invalid_key') {
        // A record key that fails its own rule: zod nests the reason.
        const inner = (issue as { issues?: { message: string }[] }).issues?.[0]?.message;
        return `${key || '(top level)'}: ${inner ?? issue.message}`;
      }
      return `${key || '(top level)'}: ${issue.message}`;
    })
    .join('\n');
}

function checkConsistency(config: Config, source: string): void {
  const hasTls = config.tls.self_signed || (config.tls.cert !== '' && config.tls.key !== '');
  if ((config.tls.cert === '') !== (config.tls.key === '')) {
    throw new ConfigError(`${source}: tls.${config.tls.cert === '' ? 'cert' : 'key'}: must be set together with tls.${config.tls.cert === '' ? 'key' : 'cert'}`);
  }
  if (config.pop3s.listen.length > 0 && !hasTls) {
    throw new ConfigError(`${source}: pop3s.listen: implicit TLS needs a certificate: set tls.cert and tls.key (or tls.self_signed = true for testing)`);
  }
  const relayhost = config.outbound.relayhost === '' ? undefined : parseNextHop(config.outbound.relayhost, 25);
  if (config.outbound.relayhost_user !== '' && relayhost?.ok) {
    const encrypted = config.outbound.relayhost_tls === 'starttls' || config.outbound.relayhost_tls === 'tls';
    const { host } = relayhost.value;
    if (!encrypted && !(isIP(host) ? isLoopback(host) : host === 'localhost')) {
      throw new ConfigError(
        `${source}: outbound.relayhost_tls: must be "starttls" or "tls" when outbound.relayhost_user is set, so the password never crosses the network unencrypted`,
      );
    }
  }
  const attempt = config.outbound.connect_timeout + config.outbound.command_timeout;
  if (config.outbound.lease <= attempt) {
    throw new ConfigError(
      `${source}: outbound.lease: must be longer than outbound.connect_timeout + outbound.command_timeout (${formatDuration(attempt)}), or a slow delivery would lose its claim and a second node deliver the message again`,
    );
  }
  if (config.outbound.relayhost_user !== '' && config.outbound.relayhost === '') {
    throw new ConfigError(`${source}: outbound.relayhost_user: a login needs outbound.relayhost (the smarthost it is for)`);
  }
  if ((config.outbound.relayhost_user === '') !== (config.outbound.relayhost_password === '')) {
    throw new ConfigError(`${source}: outbound.relayhost_${config.outbound.relayhost_user === '' ? 'user' : 'password'}: must be set together with outbound.relayhost_${config.outbound.relayhost_user === '' ? 'password' : 'user'}`);
  }
  if (config.submissions.listen.length > 0 && !hasTls) {
    throw new ConfigError(`${source}: submissions.listen: implicit TLS needs a certificate: set tls.cert and tls.key (or tls.self_signed = true for testing)`);
  }
  if (config.auth.default_domain !== '' && !/^[a-z0-9.-]+$/i.test(config.auth.default_domain)) {
    throw new ConfigError(`${source}: auth.default_domain: "${config.auth.default_domain}" is not a domain name`);
  }
}

export type { Config };
