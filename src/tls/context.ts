import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Config } from '../config/schema.ts';

// TLS 1.2 is the floor (RFC 8996 retired 1.0 and 1.1); Node's default cipher list is modern.
export const TLS_MIN_VERSION = 'TLSv1.2' as const;

export interface TlsFiles {
  cert: string;
  key: string;
}

/** Where the certificate comes from: the configured files, or a generated self-signed pair. */
export async function resolveTlsFiles(config: Config, log?: (message: string) => void): Promise<TlsFiles | undefined> {
  if (config.tls.cert && config.tls.key) return { cert: config.tls.cert, key: config.tls.key };
  if (!config.tls.self_signed) return undefined;
  const dir = join(config.data_dir, 'tls');
  const files = { cert: join(dir, 'self-signed-cert.pem'), key: join(dir, 'self-signed-key.pem') };
  if (!existsSync(files.cert) || !existsSync(files.key)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const { generate } = await import('selfsigned');
    const pems = await generate([{ name: 'commonName', value: config.hostname }], {
      keySize: 2048,
      algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: config.hostname }, { type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] }],
    } as Parameters<typeof generate>[1]);
    writeFileSync(files.key, pems.private, { mode: 0o600 });
    writeFileSync(files.cert, pems.cert);
    log?.(`generated a self-signed certificate for ${config.hostname} in ${dir}`);
  }
  return files;
}

export function loadSecureContext(files: TlsFiles): SecureContext {
  return createSecureContext({ cert: readFileSync(files.cert), key: readFileSync(files.key), minVersion: TLS_MIN_VERSION });
}

/**
 * The files' identity (size and modification time, following symlinks as certbot's live/
 * links need): a change means a renewed certificate to load.
 */
export function tlsFilesStamp(files: TlsFiles): string {
  try {
    return [files.cert, files.key].map((path) => {
      const info = statSync(path);
      return `${info.size}:${info.mtimeMs}:${info.ino}`;
    }).join('|');
  } catch {
    return 'unreadable';
  }
}
