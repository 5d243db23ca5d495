import { existsSync } from 'node:fs';
import { configPathFrom, loadConfigFile, parseConfig, ConfigError } from '../config/load.ts';
import type { Config } from '../config/schema.ts';

/**
 * The config for a command: the file named by --config or POPGATE_CONFIG, else ./popgate.toml
 * if present, else the built-in defaults (those of the development server), when allowed.
 */
export function resolveConfig(flag: string | undefined, allowDefaults: boolean): { config: Config; source: string } {
  const { path, explicit } = configPathFrom(flag);
  if (explicit || existsSync(path)) return { config: loadConfigFile(path), source: path };
  if (!allowDefaults) {
    throw new ConfigError(
      `no config file at ${path}: create one (see docs/configuration.md), pass --config FILE, or run "npm start" for a development server`,
    );
  }
  return { config: parseConfig(DEV_DEFAULTS, 'built-in development defaults'), source: 'built-in development defaults' };
}

/** The development server of `npm start`: loopback only, unprivileged ports, ./data. */
export const DEV_DEFAULTS = {
  hostname: 'mail.example.test',
  data_dir: './data',
  server: { workers: 1 },
  pop3: { listen: ['127.0.0.1:2110'] },
  pop3s: { listen: ['127.0.0.1:2995'] },
  smtp: { listen: ['127.0.0.1:2525'] },
  submission: { listen: ['127.0.0.1:2587'] },
  submissions: { listen: ['127.0.0.1:2465'] },
  tls: { self_signed: true },
  http: { listen: ['127.0.0.1:2080'] },
  metrics: { listen: ['127.0.0.1:2090'] },
};
