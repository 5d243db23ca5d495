import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Config } from '../config/schema.ts';

// TLS 1.2 is the floor (RFC 8996 retired 1.0 and 1.1).
export const TLS_MIN_VERSION = 'TLSv1.2' as const;

/**
 * The server's cipher order (RFC 9325 §4.2; Mozilla's "intermediate" profile without the DHE
 * suites, for which no parameters are configured): TLS 1.3's three suites, then for TLS 1.2
 * only forward-secret AEAD suites. No CBC suite is offered (Lucky13 and its kin, RFC 9325
 * §4.2), and the server picks from this order rather than following the client's.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

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

/**
 * The context of every server-side TLS socket (POP3S, STLS, submissions, STARTTLS). Client-
 * initiated renegotiation (TLS 1.2; TLS 1.3 has none) is refused by OpenSSL itself
 * (SSL_OP_NO_RENEGOTIATION): each one costs the server a full handshake, so a client could
 * otherwise keep a CPU busy on one connection, which testssl reports as a vulnerability.
 * Set on the context, it covers every socket that uses it, however the socket was made.
 */
export function loadSecureContext(files: TlsFiles): SecureContext {
  return createSecureContext({
    cert: readFileSync(files.cert),
    key: readFileSync(files.key),
    minVersion: TLS_MIN_VERSION,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  });
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
