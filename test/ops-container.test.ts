import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfigFile } from '../src/config/load.ts';
import { parseListenAddress } from '../src/net/listen.ts';
import { ROOT } from './helpers/process.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The Dockerfile cannot be built here (no container engine), so what can be checked without
// one is: what it copies exists and is not left out of the build context, what it installs
// (production dependencies only) is all that popgate imports, the command it runs is
// popgate's, its ports are those of the config it comes with, and its health check, run as
// the image would run it, tells a serving popgate from one that does not answer.

interface Instruction {
  keyword: string;
  args: string;
}

/** The Dockerfile's instructions, continuation lines joined and comments dropped. */
function instructions(text: string): Instruction[] {
  const joined = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => {
      const space = line.indexOf(' ');
      return { keyword: line.slice(0, space).toUpperCase(), args: line.slice(space + 1).trim() };
    });
}

const dockerfile = instructions(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const all = (keyword: string) => dockerfile.filter((i) => i.keyword === keyword).map((i) => i.args);
const one = (keyword: string) => {
  const found = all(keyword);
  assert.equal(found.length, 1, `one ${keyword} instruction`);
  return found[0];
};

/** .dockerignore patterns (the simple forms it uses: a name, or *.suffix). */
function ignored(path: string): boolean {
  const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
  const first = path.replace(/^\.\//, '').split('/')[0];
  return patterns.some((pattern) => pattern === first || pattern === path || (pattern.startsWith('*.') && path.endsWith(pattern.slice(1))));
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => (entry.isDirectory() ? sources(join(dir, entry.name)) : /\.(ts|js)$/.test(entry.name) ? [join(dir, entry.name)] : []));
}

describe('the container image', () => {
  test('Debian slim with Node.js 24; what it copies exists and is in the build context', () => {
    assert.equal(one('FROM'), 'node:24-bookworm-slim');
    const copies = all('COPY');
    assert.ok(copies.length >= 3);
    for (const copy of copies) {
      const parts = copy.split(/\s+/);
      for (const source of parts.slice(0, -1)) {
        assert.ok(existsSync(join(ROOT, source)), `COPY ${source}: exists`);
        assert.ok(!ignored(source), `COPY ${source}: not left out by .dockerignore`);
      }
    }
    assert.ok(ignored('node_modules') && ignored('data') && ignored('.git'), 'local installs and data stay out of the context');
  });

  test('production dependencies only, and they are all popgate imports', () => {
    assert.ok(all('RUN').some((run) => /\bnpm ci --omit=dev\b/.test(run)));
    const { dependencies, devDependencies } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    const imported = new Set<string>();
    for (const file of [...sources(join(ROOT, 'src')), join(ROOT, 'bin', 'popgate.js')]) {
      // import … from 'x', export … from 'x', import 'x', import('x'); relative paths aside.
      for (const match of readFileSync(file, 'utf8').matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+'([^'.][^']*)'|(?:^|\n)\s*import\s+'([^'.][^']*)'|import\('([^'.][^']*)'\)/g)) {
        const specifier = match[1] ?? match[2] ?? match[3];
        if (specifier.startsWith('node:') || builtinModules.includes(specifier)) continue;
        imported.add(specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]);
      }
    }
    const missing = [...imported].filter((name) => !(name in dependencies));
    assert.deepEqual(missing, [], `imported by src/ but not a production dependency (devDependencies: ${Object.keys(devDependencies).join(', ')})`);
    assert.ok(imported.has('pino') && imported.has('mailauth'), 'the scan finds imports');
  });

  test('it runs bin/popgate.js serve as a user of its own, with the config and data paths of contrib/container/popgate.toml', () => {
    assert.equal(one('WORKDIR'), '/opt/popgate');
    assert.ok(all('COPY').some((copy) => copy.split(/\s+/)[0] === 'bin/'));
    const argv = [...JSON.parse(one('ENTRYPOINT')), ...JSON.parse(one('CMD'))];
    assert.deepEqual(argv, ['node', '--max-semi-space-size=1', '/opt/popgate/bin/popgate.js', 'serve']);
    // The same V8 flag as the installed command's own first line.
    assert.match(readFileSync(join(ROOT, 'bin', 'popgate.js'), 'utf8').split('\n')[0], /node --max-semi-space-size=1$/);
    const user = one('USER');
    assert.ok(user !== 'root' && user !== '0', `USER ${user}`);
    assert.equal(one('STOPSIGNAL'), 'SIGTERM');
    assert.equal(one('ENV'), 'POPGATE_CONFIG=/etc/popgate/popgate.toml');
    const config = loadConfigFile(join(ROOT, 'contrib', 'container', 'popgate.toml'));
    assert.deepEqual(JSON.parse(one('VOLUME')), [config.data_dir]);
    assert.equal(config.data_dir, '/var/lib/popgate');
    const exposed = one('EXPOSE').split(/\s+/).map(Number).sort((a, b) => a - b);
    assert.deepEqual(exposed, [25, 110, 465, 587, 995]);
    const listened = (['pop3', 'pop3s', 'smtp', 'submission', 'submissions'] as const)
      .flatMap((section) => config[section].listen)
      .map((address) => { const parsed = parseListenAddress(address); assert.ok(parsed.ok); return parsed.value.port; })
      .sort((a, b) => a - b);
    assert.deepEqual(listened, exposed, 'the config listens on exactly the exposed ports');
  });

  describe('the health check, run as the image runs it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'popgate-healthcheck-'));
    let server: TestServer;
    let command: string;
    before(async () => {
      server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] } });
      const healthcheck = one('HEALTHCHECK');
      command = /\bCMD (.+)$/.exec(healthcheck)![1];
      // `popgate` on PATH, as the image's /usr/local/bin/popgate link; Node.js 24 from this checkout.
      mkdirSync(join(dir, 'bin'));
      symlinkSync(join(ROOT, 'bin', 'popgate.js'), join(dir, 'bin', 'popgate'));
    });
    after(async () => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    });

    // Not spawnSync: the server answering the health check runs in this process.
    const run = (config: string) =>
      new Promise<{ status: number | null; output: string }>((resolve) => {
        const child = spawn('/bin/sh', ['-c', command], { env: { PATH: `${join(dir, 'bin')}:${dirname(process.execPath)}:/usr/bin:/bin`, POPGATE_CONFIG: config } });
        let output = '';
        child.stdout.on('data', (chunk) => (output += chunk));
        child.stderr.on('data', (chunk) => (output += chunk));
        child.on('exit', (status) => resolve({ status, output }));
      });

    test('healthy (0) while every listener greets, unhealthy (1, never 2) when one does not', async () => {
      assert.doesNotMatch(command, /\bcurl\b|\bwget\b/);
      const good = join(dir, 'good.toml');
      const { pop3, smtp } = server.app.addresses;
      writeFileSync(good, `hostname = "mail.example.test"\ndata_dir = "${server.dir}"\n[pop3]\nlisten = ["${pop3[0]}"]\n[smtp]\nlisten = ["${smtp[0]}"]\n`);
      const healthy = await run(good);
      assert.equal(healthy.status, 0, healthy.output);
      const bad = join(dir, 'bad.toml');
      writeFileSync(bad, `hostname = "mail.example.test"\ndata_dir = "${server.dir}"\n[pop3]\nlisten = ["${pop3[0]}"]\n[smtp]\nlisten = ["127.0.0.1:1"]\n`);
      const unhealthy = await run(bad);
      assert.equal(unhealthy.status, 1, 'Docker reserves exit code 2');
    });
  });
});
