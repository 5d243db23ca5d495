import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { generate } from 'selfsigned';
import { startTestServer, type TestServer } from './helpers/server.ts';

// A renewed certificate is served without a restart: popgate notices changed files
// (tls.reload_check) and new sessions get the new certificate; a broken file never
// replaces a working certificate.

async function certificate(name: string): Promise<{ cert: string; key: string }> {
  const pems = await generate([{ name: 'commonName', value: name }], { keySize: 2048, algorithm: 'sha256' } as Parameters<typeof generate>[1]);
  return { cert: pems.cert, key: pems.private };
}

function servedName(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const subject = socket.getPeerCertificate().subject;
      socket.destroy();
      resolve(String(subject.CN));
    });
    socket.once('error', reject);
  });
}

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('certificate reload without restart', () => {
  const dir = mkdtempSync(join(tmpdir(), 'popgate-tls-'));
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  let server: TestServer;
  before(async () => {
    const first = await certificate('first.example.test');
    writeFileSync(certPath, first.cert);
    writeFileSync(keyPath, first.key);
    server = await startTestServer({
      tls: { self_signed: false, cert: certPath, key: keyPath, reload_check: '100ms' },
      submissions: { listen: ['127.0.0.1:0'] },
    });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('new POP3S and submissions sessions get the renewed certificate once the files change', async () => {
    const submissionsPort = Number(server.app.addresses.submissions[0].split(':').pop());
    assert.equal(await servedName(server.pop3sPort), 'first.example.test');
    const second = await certificate('second.example.test');
    writeFileSync(keyPath, second.key);
    writeFileSync(certPath, second.cert);
    await until(async () => (await servedName(server.pop3sPort)) === 'second.example.test');
    assert.equal(await servedName(submissionsPort), 'second.example.test');
  });

  test('a broken certificate file keeps the working one in service', async () => {
    writeFileSync(certPath, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(await servedName(server.pop3sPort), 'second.example.test');
    const third = await certificate('third.example.test');
    writeFileSync(keyPath, third.key);
    writeFileSync(certPath, third.cert);
    await until(async () => (await servedName(server.pop3sPort)) === 'third.example.test');
  });
});
