import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from './helpers/server.ts';

// The admin console over real HTTP: login (right, wrong, locked out), the session cookie, a
// forged cookie, CSRF on every change, path traversal in the queue id, the audit log, and the
// network restriction. The browser side is test/admin-browser.test.ts.

const ADMIN_PASSWORD = 'a long console password';

/** A client that keeps its cookies, as a browser would (one jar per client). */
class Browser {
  readonly cookies = new Map<string, string>();
  readonly base: string;
  constructor(base: string) {
    this.base = base;
  }

  /** One request, its path sent as given (no client-side normalisation of "..", unlike fetch). */
  request(path: string, init: { method?: string; form?: Record<string, string> } = {}): Promise<{ status: number; text: string; headers: Headers }> {
    const headers: Record<string, string> = { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
    const body = init.form ? new URLSearchParams(init.form).toString() : undefined;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    return new Promise((resolve, reject) => {
      const { hostname, port } = new URL(this.base);
      const client = httpRequest({ hostname, port, path, method: init.method ?? (body !== undefined ? 'POST' : 'GET'), headers }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (text += chunk));
        response.on('end', () => {
          const list = new Headers();
          for (const [name, value] of Object.entries(response.headers)) for (const v of [value ?? []].flat()) list.append(name, v);
          for (const line of list.getSetCookie()) {
            const [pair] = line.split(';');
            const eq = pair.indexOf('=');
            if (pair.slice(eq + 1) === '') this.cookies.delete(pair.slice(0, eq));
            else this.cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
          }
          resolve({ status: response.statusCode ?? 0, text, headers: list });
        });
      });
      client.on('error', reject);
      client.end(body);
    });
  }

  /** The CSRF token in a page's forms. */
  async csrf(path: string): Promise<string> {
    const page = await this.request(path);
    const token = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1];
    assert.ok(token, `no CSRF token on ${path} (status ${page.status})`);
    return token;
  }

  async logIn(name = 'root', password = ADMIN_PASSWORD): Promise<{ status: number; text: string; headers: Headers }> {
    const csrf = await this.csrf('/admin/login');
    return this.request('/admin/login', { form: { csrf, name, password } });
  }
}

describe('admin console over HTTP', () => {
  let server: TestServer;
  let base: string;

  before(async () => {
    server = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, auth: { lockout_threshold: 3 } });
    await server.app.backends.admins.add('root', ADMIN_PASSWORD);
    await server.addUser('alice@example.com');
    base = `http://127.0.0.1:${server.app.addresses.http[0].split(':').pop()}`;
  });
  after(async () => {
    await server?.close();
  });

  test('a login sets a session cookie (HttpOnly, SameSite=Strict, path /admin) and shows the dashboard', async () => {
    const browser = new Browser(base);
    const login = await browser.logIn();
    assert.equal(login.status, 303);
    assert.equal(login.headers.get('location'), '/admin/dashboard');
    const cookie = login.headers.getSetCookie().find((line) => line.startsWith('popgate_admin='));
    assert.ok(cookie);
    assert.match(cookie, /HttpOnly/i);
    assert.match(cookie, /SameSite=Strict/i);
    assert.match(cookie, /Path=\/admin/i);
    const dashboard = await browser.request('/admin/dashboard');
    assert.equal(dashboard.status, 200);
    assert.match(dashboard.text, /Live relay grants/);
    assert.match(dashboard.text, /<svg class="chart"/);
    assert.equal(dashboard.headers.get('cache-control'), 'no-store');
    const entries = await server.app.backends.audit.recent(5, { action: 'admin.login' });
    assert.equal(entries[0].actor, 'admin root');
    assert.equal(entries[0].ip, '127.0.0.1');
    // Logging out ends the session on the server: the old cookie no longer works.
    const old = new Map(browser.cookies);
    const logout = await browser.request('/admin/logout', { form: { csrf: await browser.csrf('/admin/dashboard') } });
    assert.equal(logout.status, 303);
    browser.cookies.clear();
    for (const [k, v] of old) browser.cookies.set(k, v);
    assert.equal((await browser.request('/admin/dashboard')).status, 401);
  });

  test('a wrong password is a 401, audited without the password; pages need a session', async () => {
    const browser = new Browser(base);
    const wrong = await browser.logIn('root', 'not the password');
    assert.equal(wrong.status, 401);
    assert.match(wrong.text, /Wrong name or password/);
    assert.equal(wrong.headers.getSetCookie().some((line) => line.startsWith('popgate_admin=')), false);
    const failed = await server.app.backends.audit.recent(10, { action: 'admin.login_failed' });
    assert.ok(failed.length > 0);
    assert.ok(failed.every((entry) => !JSON.stringify(entry).includes('not the password')));
    for (const path of ['/admin/dashboard', '/admin/grants', '/admin/queue', '/admin/accounts', '/admin/audit']) {
      const response = await browser.request(path);
      assert.equal(response.status, 401, path);
      assert.doesNotMatch(response.text, /alice@example\.com/, path);
    }
    await server.app.backends.guard.reset('127.0.0.1');
  });

  test('a forged or unsigned session cookie is refused and changes nothing', async () => {
    const real = new Browser(base);
    await real.logIn();
    const signed = real.cookies.get('popgate_admin')!;
    const [id] = decodeURIComponent(signed).split('.');
    for (const forged of [
      'x'.repeat(43), // unsigned
      encodeURIComponent(`${'A'.repeat(43)}.${decodeURIComponent(signed).split('.')[1]}`), // another id under the real signature
      encodeURIComponent(`${id}.forgedsignatureforgedsignatureforgedsignatur`), // the real id, a forged signature
    ]) {
      const browser = new Browser(base);
      browser.cookies.set('popgate_admin', forged);
      assert.equal((await browser.request('/admin/dashboard')).status, 401);
      const change = await browser.request('/admin/domains/add', { form: { csrf: await real.csrf('/admin/dashboard'), domain: 'forged.example' } });
      assert.equal(change.status, 401);
    }
    assert.equal(await server.app.accounts.isLocalDomain('forged.example'), false);
  });

  test('every change needs the CSRF token of its own session: missing or forged is a 403 and no change', async () => {
    const browser = new Browser(base);
    await browser.logIn();
    const other = new Browser(base);
    await other.logIn();
    const othersToken = await other.csrf('/admin/dashboard');
    for (const form of [{ domain: 'csrf.example' }, { domain: 'csrf.example', csrf: 'forged' }, { domain: 'csrf.example', csrf: othersToken }] as Record<string, string>[]) {
      const response = await browser.request('/admin/domains/add', { form });
      assert.equal(response.status, 403, JSON.stringify(form));
      assert.match(response.text, /CSRF/);
    }
    assert.equal(await server.app.accounts.isLocalDomain('csrf.example'), false);
    const ok = await browser.request('/admin/domains/add', { form: { domain: 'csrf.example', csrf: await browser.csrf('/admin/accounts') } });
    assert.equal(ok.status, 303);
    assert.equal(await server.app.accounts.isLocalDomain('csrf.example'), true);
    // The result is shown after the redirect; a crafted link cannot put its own words there.
    assert.match((await browser.request(ok.headers.get('location')!)).text, /added domain csrf\.example/);
    for (const forged of ['?done=Call%20us%20at%20555', '?done=Call%20us%20at%20555&sig=forged', `?done=Call%20us%20at%20555&sig=${new URL(ok.headers.get('location')!, base).searchParams.get('sig')}`]) {
      assert.doesNotMatch((await browser.request(`/admin/accounts${forged}`)).text, /Call us at 555/, forged);
    }
    const [entry] = await server.app.backends.audit.recent(1, { action: 'domain.add' });
    assert.deepEqual([entry.actor, entry.subject], ['admin root', 'csrf.example']);
    // The login form has its own (pre-session) token too: a login without it is refused.
    assert.equal((await new Browser(base).request('/admin/login', { form: { name: 'root', password: ADMIN_PASSWORD } })).status, 403);
  });

  test('users, passwords and aliases through the console, recorded in the audit log without passwords', async () => {
    const browser = new Browser(base);
    await browser.logIn();
    const csrf = await browser.csrf('/admin/accounts');
    assert.equal((await browser.request('/admin/users/add', { form: { csrf, address: 'bob@example.com', password: 'bobs first password' } })).status, 303);
    assert.equal(await server.app.accounts.authenticate('bob@example.com', 'bobs first password') !== undefined, true);
    assert.equal((await browser.request('/admin/users/password', { form: { csrf, address: 'bob@example.com', password: 'bobs second password' } })).status, 303);
    assert.equal((await browser.request('/admin/aliases/add', { form: { csrf, alias: 'info@example.com', targets: 'bob@example.com, alice@example.com' } })).status, 303);
    const page = await browser.request('/admin/accounts');
    assert.match(page.text, /info@example\.com → alice@example\.com, bob@example\.com/);
    assert.equal((await browser.request('/admin/users/add', { form: { csrf, address: 'not an address', password: 'whatever password' } })).status, 400);
    assert.equal((await browser.request('/admin/users/password', { form: { csrf, address: 'nobody@example.com', password: 'whatever password' } })).status, 404);
    const entries = await server.app.backends.audit.recent(20, { actor: 'admin root' });
    assert.ok(entries.some((e) => e.action === 'user.passwd' && e.subject === 'bob@example.com'));
    assert.ok(entries.every((e) => !e.detail.includes('password') || !/bobs (first|second) password/.test(e.detail)));
  });

  test('path traversal and odd ids in the queue paths are 404s that change nothing and leak nothing', async () => {
    const browser = new Browser(base);
    await browser.logIn();
    const csrf = await browser.csrf('/admin/queue');
    for (const id of ['..%2F..%2Fpopgate.sqlite', '..%2F..%2F..%2Fetc%2Fpasswd', '%2e%2e', 'a.eml', 'x%00y', 'A'.repeat(65)]) {
      const shown = await browser.request(`/admin/queue/${id}`);
      assert.equal(shown.status, 404, id);
      assert.doesNotMatch(shown.text, new RegExp(server.dir.replace(/[/.]/g, '\\$&')), id);
      assert.equal((await browser.request(`/admin/queue/${id}/delete`, { form: { csrf } })).status, 404, id);
      assert.equal((await browser.request(`/admin/queue/${id}/retry`, { form: { csrf } })).status, 404, id);
    }
    assert.equal((await browser.request('/admin/queue/NOSUCHID')).status, 404);
    // A field longer than its limit is a 400 before any store sees it.
    assert.equal((await browser.request('/admin/domains/add', { form: { csrf, domain: 'a'.repeat(300) } })).status, 400);
  });

  test('guessing at the console locks the address out through the login guard, and says when to retry', async () => {
    const browser = new Browser(base);
    for (let i = 0; i < 3; i++) assert.equal((await browser.logIn('root', `guess ${i}`)).status, 401);
    const locked = await browser.logIn();
    assert.equal(locked.status, 429);
    assert.match(locked.text, /locked for about \d+ minute/);
    assert.ok(Number(locked.headers.get('retry-after')) > 0);
    assert.equal(locked.headers.getSetCookie().some((line) => line.startsWith('popgate_admin=')), false);
    assert.ok((await server.app.backends.audit.recent(1, { action: 'admin.login_locked' })).length === 1);
    await server.app.backends.guard.reset('127.0.0.1');
    assert.equal((await browser.logIn()).status, 303);
  });
});

describe('admin console network restriction', () => {
  test('a client outside [admin] networks gets 403 saying what to change, even with a valid password', async () => {
    const server = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, admin: { networks: ['192.0.2.0/24'] } });
    try {
      await server.app.backends.admins.add('root', ADMIN_PASSWORD);
      const base = `http://127.0.0.1:${server.app.addresses.http[0].split(':').pop()}`;
      for (const path of ['/admin/login', '/admin/dashboard', '/admin/']) {
        const response = await fetch(base + path, { redirect: 'manual' });
        assert.equal(response.status, 403, path);
        assert.match(await response.text(), /\[admin\] networks/);
      }
      const post = await fetch(`${base}/admin/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `name=root&password=${encodeURIComponent(ADMIN_PASSWORD)}` });
      assert.equal(post.status, 403);
      assert.equal(post.headers.getSetCookie().length, 0);
      // The help pages stay public.
      assert.equal((await fetch(`${base}/`)).status, 200);
    } finally {
      await server.close();
    }
  });
});
