import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { runPopgate } from './helpers/cli.ts';
import { pop3LoginAnswer } from './helpers/pop3-client.ts';
import { writeConfig } from './helpers/process.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { LoginService } from '../src/auth/login.ts';
import { WebService } from '../src/web/service.ts';

// The customers' self-service pages over real HTTP against a real popgate: login through the
// mail login path (its lockouts shared with POP3 both ways), the signed session cookie, CSRF
// on every form, the password, forwarding and vacation forms with the CLI's rules, the quota
// numbers as `popgate user list` prints them, the feature switches, and the Japanese pages.
// The browser side (and POP3 after a password change on the web) is self-service-browser.test.ts.

interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A browser without a browser: keeps cookies, reads the CSRF token of the last page, posts forms. */
class WebClient {
  readonly cookies = new Map<string, string>();
  csrf = '';
  readonly #port: number;
  readonly #language: string;
  readonly #https: boolean;

  constructor(port: number, language = 'en', options: { https?: boolean } = {}) {
    this.#port = port;
    this.#language = language;
    this.#https = options.https ?? false;
  }

  get(path: string): Promise<Response> {
    return this.#send('GET', path);
  }

  /** Posts a form with the current CSRF token unless `fields` names its own. */
  post(path: string, fields: Record<string, string>, options: { csrf?: string | null } = {}): Promise<Response> {
    const form = new URLSearchParams(fields);
    const token = options.csrf === undefined ? this.csrf : options.csrf;
    if (token !== null) form.set('csrf', token);
    return this.#send('POST', path, form.toString());
  }

  /** Opens the login page (for a token), then logs in. */
  async login(address: string, password: string): Promise<Response> {
    await this.get('/account/login');
    return this.post('/account/login', { address, password });
  }

  #send(method: string, path: string, body?: string): Promise<Response> {
    const headers: Record<string, string> = { 'Accept-Language': this.#language };
    if (this.cookies.size > 0) headers.Cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
    if (body !== undefined) headers['Content-Type'] = 'application/x-www-form-urlencoded';
    return new Promise((resolve, reject) => {
      const request = (this.#https ? httpsRequest : httpRequest)({ host: '127.0.0.1', port: this.#port, path, method, headers, rejectUnauthorized: false }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          for (const line of response.headers['set-cookie'] ?? []) {
            const [pair] = line.split(';');
            const name = pair.slice(0, pair.indexOf('='));
            const value = pair.slice(pair.indexOf('=') + 1);
            if (value === '' || /Expires=Thu, 01 Jan 1970/i.test(line)) this.cookies.delete(name);
            else this.cookies.set(name, value);
          }
          const text = Buffer.concat(chunks).toString('utf8');
          const token = /name="csrf" value="([^"]+)"/.exec(text)?.[1];
          if (token) this.csrf = token;
          resolve({ status: response.statusCode!, headers: response.headers, body: text });
        });
      });
      request.on('error', reject);
      request.end(body);
    });
  }
}

const portOf = (address: string) => Number(address.split(':').pop());
/** The visible text of an element with this id (tags dropped, entities of eta's escaping undone). */
function textOf(html: string, id: string): string | undefined {
  const match = new RegExp(`id="${id}"[^>]*>([\\s\\S]*?)</`).exec(html);
  return match?.[1].replace(/<[^>]+>/g, '').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&').trim();
}

const ALICE = 'alice@example.com';
const BOB = 'bob@example.com';

describe('self-service pages over HTTP', () => {
  let server: TestServer;
  let port: number;
  const logLines: Record<string, unknown>[] = [];
  const recorded: { address: string; ip: string; action: string; detail: string }[] = [];

  before(async () => {
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line) logLines.push(JSON.parse(line));
        done();
      },
    });
    server = await startTestServer(
      {
        http: { listen: ['127.0.0.1:0'] },
        smtp: { listen: ['127.0.0.1:0'] },
        filter: { enabled: false },
        quota: { default: '10MB' },
        // Failed logins of several tests add up on 127.0.0.1; the lockout has its own server below.
        auth: { lockout_threshold: 100, account_lockout_threshold: 100 },
      },
      { log: pino({ level: 'info' }, sink) },
    );
    await server.addUser(ALICE);
    await server.addUser(BOB);
    await server.app.accounts.addAlias('team@example.com', [BOB]);
    port = portOf(server.app.addresses.http[0]);
  });
  after(() => server?.close());

  test('login page, a wrong password, an unknown address (same answer), then the right password', async () => {
    const web = new WebClient(port);
    const page = await web.get('/account/login');
    assert.equal(page.status, 200);
    assert.match(page.headers['cache-control'] ?? '', /no-store/);
    assert.match(page.body, /<input id="password" name="password" type="password"/);
    const wrong = await web.post('/account/login', { address: ALICE, password: 'not the password' });
    const unknown = await web.post('/account/login', { address: 'nobody@example.com', password: 'not the password' });
    assert.equal(wrong.status, 401);
    assert.equal(unknown.status, 401);
    assert.equal(textOf(wrong.body, 'error'), 'The e-mail address or the password is wrong.');
    assert.equal(textOf(unknown.body, 'error'), textOf(wrong.body, 'error'), 'never says whether an address exists');
    assert.equal(web.cookies.get('popgate_account'), undefined);
    const ok = await web.post('/account/login', { address: 'Alice@Example.COM', password: PASSWORD });
    assert.equal(ok.status, 303);
    assert.equal(ok.headers.location, '/account');
    const cookie = ok.headers['set-cookie']!.find((line) => line.startsWith('popgate_account='))!;
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.match(cookie, /Path=\/account/);
    const overview = await web.get('/account');
    assert.equal(overview.status, 200);
    assert.match(overview.body, /alice@example\.com/);
    const failures = logLines.filter((line) => line.event === 'login_failed' && line.protocol === 'web');
    assert.ok(failures.length >= 2, 'web failures are logged on the login path');
  });

  test('no session, a forged or altered cookie: sent to the login page', async () => {
    const anonymous = new WebClient(port);
    for (const path of ['/account', '/account/password', '/account/forwarding', '/account/vacation']) {
      const answer = await anonymous.get(path);
      assert.equal(answer.status, 303, path);
      assert.equal(answer.headers.location, '/account/login', path);
    }
    const web = new WebClient(port);
    assert.equal((await web.login(ALICE, PASSWORD)).status, 303);
    const genuine = web.cookies.get('popgate_account')!;
    // Another address in the same cookie, with the signature of the real one.
    const [value, signature] = decodeURIComponent(genuine).split('.');
    const fields = JSON.parse(Buffer.from(value, 'base64url').toString()) as unknown[];
    fields[0] = BOB;
    web.cookies.set('popgate_account', encodeURIComponent(`${Buffer.from(JSON.stringify(fields)).toString('base64url')}.${signature}`));
    assert.equal((await web.get('/account')).status, 303);
    web.cookies.set('popgate_account', 'forged');
    assert.equal((await web.get('/account')).status, 303);
    web.cookies.set('popgate_account', genuine);
    assert.equal((await web.get('/account')).status, 200);
  });

  test('a missing or forged CSRF token is a 403 and nothing changes', async () => {
    const web = new WebClient(port);
    await web.login(BOB, PASSWORD);
    await web.get('/account/forwarding');
    const before = await server.app.backends.forwarding.get(BOB);
    for (const csrf of [null, 'forged', '']) {
      const answer = await web.post('/account/forwarding', { action: 'save', targets: 'elsewhere@example.net' }, { csrf });
      assert.equal(answer.status, 403, String(csrf));
      assert.match(answer.body, /Refused/);
    }
    assert.deepEqual(await server.app.backends.forwarding.get(BOB), before);
    assert.equal((await web.post('/account/password', { current: PASSWORD, new: 'another password', repeat: 'another password' }, { csrf: 'forged' })).status, 403);
    assert.equal((await web.post('/account/vacation', { action: 'save', subject: 'x', body: 'y' }, { csrf: null })).status, 403);
    assert.equal(await server.app.backends.vacations.get(BOB), undefined);
    assert.equal((await server.app.accounts.authenticate(BOB, PASSWORD))?.address, BOB, 'the password is unchanged');
    // A login without the token is refused too (login CSRF: OWASP).
    const fresh = new WebClient(port);
    assert.equal((await fresh.post('/account/login', { address: BOB, password: PASSWORD }, { csrf: null })).status, 403);
  });

  test('password change: rules checked, current password required, other sessions end, logged without the password', async () => {
    const address = 'carol@example.com';
    await server.addUser(address);
    const other = new WebClient(port);
    await other.login(address, PASSWORD);
    assert.equal((await other.get('/account')).status, 200);
    const web = new WebClient(port);
    await web.login(address, PASSWORD);
    await web.get('/account/password');
    const short = await web.post('/account/password', { current: PASSWORD, new: 'short', repeat: 'short' });
    assert.equal(short.status, 400);
    assert.match(textOf(short.body, 'error')!, /at least 8 characters/);
    const differ = await web.post('/account/password', { current: PASSWORD, new: 'new password 1', repeat: 'new password 2' });
    assert.equal(differ.status, 400);
    assert.equal(textOf(differ.body, 'error'), 'The two new passwords are not the same.');
    const wrong = await web.post('/account/password', { current: 'wrong password', new: 'new password 1', repeat: 'new password 1' });
    assert.equal(wrong.status, 401);
    assert.equal(textOf(wrong.body, 'error'), 'The current password is wrong.');
    assert.ok(await server.app.accounts.authenticate(address, PASSWORD), 'nothing changed yet');
    const done = await web.post('/account/password', { current: PASSWORD, new: 'new password 1', repeat: 'new password 1' });
    assert.equal(done.status, 200);
    assert.match(textOf(done.body, 'notice')!, /Your password has been changed/);
    assert.equal(await server.app.accounts.authenticate(address, PASSWORD), undefined);
    assert.ok(await server.app.accounts.authenticate(address, 'new password 1'));
    assert.equal((await web.get('/account')).status, 200, 'this browser stays logged in');
    assert.equal((await other.get('/account')).status, 303, 'the other session ended');
    const change = logLines.find((line) => line.event === 'self_service_change' && line.user === address && line.action === 'password');
    assert.ok(change, 'the change is logged');
    assert.equal(change.ip, '127.0.0.1');
    assert.doesNotMatch(JSON.stringify(logLines), /new password 1/);
    // The server wires the changes into the audit log the console shows (and the CLI writes).
    const [audited] = await server.app.backends.audit.recent(10, { subject: address });
    assert.deepEqual({ actor: audited?.actor, action: audited?.action, ip: audited?.ip }, { actor: `customer ${address}`, action: 'self_service.password', ip: '127.0.0.1' });
    assert.doesNotMatch(audited.detail, /new password 1/);
  });

  test('forwarding: the CLI\'s checks shown on the page, then saved, shown and turned off', async () => {
    const web = new WebClient(port);
    await web.login(BOB, PASSWORD);
    await web.get('/account/forwarding');
    const refusals: [string, RegExp][] = [
      ['not-an-address', /"not-an-address" is not a valid address/],
      [BOB, /cannot forward to itself/],
      ['ghost@example.com', /ghost@example\.com is in a local domain but is no user or alias there/],
      [Array.from({ length: 11 }, (_, i) => `u${i}@example.net`).join('\n'), /at most 10 addresses/],
    ];
    for (const [targets, reason] of refusals) {
      const answer = await web.post('/account/forwarding', { action: 'save', targets });
      assert.equal(answer.status, 400, targets);
      assert.match(textOf(answer.body, 'error')!, reason);
      assert.match(answer.body, /<textarea id="targets"[^>]*>[^<]*<\/textarea>/, 'the form is shown again with what was typed');
    }
    // A circle through another local user's rule: alice forwards to team@ (an alias of bob).
    await server.app.backends.forwarding.set(ALICE, { targets: ['team@example.com'], keep: false });
    const circle = await web.post('/account/forwarding', { action: 'save', targets: ALICE });
    assert.equal(circle.status, 400);
    assert.match(textOf(circle.body, 'error')!, /forwarding in a circle: bob@example\.com → alice@example\.com → team@example\.com → bob@example\.com/);
    await server.app.backends.forwarding.remove(ALICE);
    assert.equal(await server.app.backends.forwarding.get(BOB), undefined, 'nothing was stored');

    const saved = await web.post('/account/forwarding', { action: 'save', targets: 'Bob@Elsewhere.example\nbob.smith@other.example, bob@elsewhere.example', keep: 'on' });
    assert.equal(saved.status, 200);
    assert.equal(textOf(saved.body, 'notice'), 'Forwarding has been saved.');
    assert.deepEqual(await server.app.backends.forwarding.get(BOB), { targets: ['bob@elsewhere.example', 'bob.smith@other.example'], keep: true });
    assert.equal(textOf(saved.body, 'forwarding-state'), 'Your mail is forwarded to bob@elsewhere.example, bob.smith@other.example, and a copy stays in your mailbox.');
    const change = logLines.find((line) => line.event === 'self_service_change' && line.user === BOB && line.action === 'forwarding_set');
    assert.equal(change?.detail, 'to bob@elsewhere.example, bob.smith@other.example, keeping a copy');
    assert.equal((await web.post('/account/forwarding', { action: 'sideways' })).status, 400);
    const off = await web.post('/account/forwarding', { action: 'off' });
    assert.equal(textOf(off.body, 'notice'), 'Forwarding has been turned off.');
    assert.equal(await server.app.backends.forwarding.get(BOB), undefined);
  });

  test('vacation: refused input shown, then saved; a mail to the customer gets the reply queued', async () => {
    const web = new WebClient(port);
    await web.login(ALICE, PASSWORD);
    await web.get('/account/vacation');
    const cases: [Record<string, string>, RegExp][] = [
      [{ subject: '', body: 'Away.' }, /the subject is empty/],
      [{ subject: 'Away', body: '   ' }, /the body is empty/],
      [{ subject: 'Away', body: 'x'.repeat(17 * 1024) }, /the body is larger than 16 KB/],
      [{ subject: 'Away', body: 'Away.', until: '2001-01-01' }, /The last day is in the past/],
      [{ subject: 'Away', body: 'Away.', until: '2999-02-31' }, /The last day must be a date/],
      [{ subject: 'Away', body: 'Away.', until: 'next week' }, /The last day must be a date/],
    ];
    for (const [fields, reason] of cases) {
      const answer = await web.post('/account/vacation', { action: 'save', ...fields });
      assert.equal(answer.status, 400, JSON.stringify(fields).slice(0, 80));
      assert.match(textOf(answer.body, 'error')!, reason);
    }
    assert.equal(await server.app.backends.vacations.get(ALICE), undefined, 'nothing was stored');
    const saved = await web.post('/account/vacation', { action: 'save', subject: 'Away until Monday', body: 'I am away.\r\nBack on Monday.\r\n', until: '2999-08-31' });
    assert.equal(saved.status, 200);
    assert.equal(textOf(saved.body, 'vacation-state'), 'An automatic reply "Away until Monday" is sent until 2999-08-31.');
    const stored = await server.app.backends.vacations.get(ALICE);
    assert.equal(stored?.subject, 'Away until Monday');
    assert.equal(stored?.body, 'I am away.\nBack on Monday.\n');
    assert.equal(stored?.until, Date.UTC(2999, 7, 31, 23, 59, 59, 999), 'the end of that day, as with the CLI');
    const change = logLines.find((line) => line.event === 'self_service_change' && line.user === ALICE && line.action === 'vacation_set');
    assert.ok(change);
    assert.doesNotMatch(JSON.stringify(change), /I am away/, 'the reply text is not logged');

    const smtp = await SmtpClient.connect(server.smtpPort);
    try {
      await smtp.hello('mx.origin.example');
      assert.match(await smtp.send('dave@origin.example', [ALICE], `From: <dave@origin.example>\r\nTo: <${ALICE}>\r\nSubject: hello\r\nMessage-ID: <1@origin.example>\r\n\r\nHello?\r\n`), /^250/);
    } finally {
      smtp.close();
    }
    const queued = await server.app.queue.list();
    const reply = queued.find((message) => message.recipients.some((recipient) => recipient.address === 'dave@origin.example'));
    assert.ok(reply, 'the vacation reply is queued to the sender');
    assert.equal(reply.from, '', 'RFC 3834 §3.3: the null envelope sender');

    const off = await web.post('/account/vacation', { action: 'off' });
    assert.equal(textOf(off.body, 'notice'), 'The vacation reply has been turned off.');
    assert.equal(await server.app.backends.vacations.get(ALICE), undefined);
  });

  test('the quota numbers are those of `popgate user list`', async () => {
    await server.deliver(BOB, `Subject: big\r\n\r\n${'x'.repeat(300_000)}\r\n`);
    const config = writeConfig(server.dir, `data_dir = "${server.dir}"\nhostname = "mail.example.test"\n[quota]\ndefault = "10MB"\n`);
    const listed = await runPopgate(config, ['user', 'list', 'example.com']);
    assert.equal(listed.code, 0, listed.stderr);
    const line = listed.stdout.split('\n').find((entry) => entry.startsWith(`${BOB}\t`))!;
    const cli = /\t([^\t]+ of [^\t]+) used \((\d+)%\)$/.exec(line);
    assert.ok(cli, line);
    const web = new WebClient(port);
    await web.login(BOB, PASSWORD);
    const page = await web.get('/account');
    assert.equal(textOf(page.body, 'quota'), `${cli[1]} used (${cli[2]}%)`);
    assert.match(page.body, new RegExp(`<meter class="quota-bar" id="quota-bar"[^>]* value="${cli[2]}"`));
  });

  test('Japanese by Accept-Language: login, errors and the overview', async () => {
    const web = new WebClient(port, 'ja,en;q=0.5');
    const login = await web.get('/account/login');
    assert.match(login.body, /<html lang="ja">/);
    assert.match(login.body, /アカウントにログイン/);
    const wrong = await web.post('/account/login', { address: ALICE, password: 'not the password' });
    assert.equal(textOf(wrong.body, 'error'), 'メールアドレスまたはパスワードが違います。');
    await web.post('/account/login', { address: ALICE, password: PASSWORD });
    const overview = await web.get('/account');
    assert.match(overview.body, /<h2 id="mailbox-heading">メールボックス<\/h2>/);
    assert.match(textOf(overview.body, 'quota')!, /^10 MB 中 .+ 使用（\d+%）$/);
  });
});

describe('self-service: one lockout for the web and POP3', () => {
  let server: TestServer;
  let port: number;

  before(async () => {
    server = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, auth: { lockout_threshold: 3, account_lockout_threshold: 100 } });
    await server.addUser(ALICE);
    port = portOf(server.app.addresses.http[0]);
  });
  after(() => server?.close());

  test('wrong passwords on the web lock POP3 out for that address, and POP3 failures lock the web out', async () => {
    const web = new WebClient(port);
    for (let i = 0; i < 3; i++) await web.login(ALICE, `wrong ${i}`);
    const pop3 = await pop3LoginAnswer(server.pop3Port, ALICE, PASSWORD);
    assert.match(pop3, /^-ERR/);
    assert.match(pop3, /locked|too many/i);
    // Locked out on the web too, right password or not, with the time to wait.
    const locked = await web.login(ALICE, PASSWORD);
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers['retry-after']) > 60);
    assert.match(textOf(locked.body, 'error')!, /Too many wrong passwords: logins from here are refused for \d+ more minutes/);
    assert.equal(web.cookies.get('popgate_account'), undefined);

    await server.app.backends.guard.reset();
    assert.equal((await web.login(ALICE, PASSWORD)).status, 303, 'free again after the reset');
    const fresh = new WebClient(port);
    for (let i = 0; i < 3; i++) assert.match(await pop3LoginAnswer(server.pop3Port, ALICE, `wrong ${i}`), /^-ERR/);
    const afterPop3 = await fresh.login(ALICE, PASSWORD);
    assert.equal(afterPop3.status, 429);
  });
});

describe('self-service: passwords only over TLS where the config says so', () => {
  test('plaintext_without_tls = "never": refused over plain HTTP even from loopback, accepted over HTTPS', async () => {
    const server = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, auth: { plaintext_without_tls: 'never' } });
    try {
      await server.addUser(ALICE);
      const plain = new WebClient(portOf(server.app.addresses.http[0]));
      const refused = await plain.login(ALICE, PASSWORD);
      assert.equal(refused.status, 403);
      assert.match(textOf(refused.body, 'error')!, /only accepted over an encrypted connection/);
      assert.equal(plain.cookies.get('popgate_account'), undefined);
    } finally {
      await server.close();
    }
    const secure = await startTestServer({ https: { listen: ['127.0.0.1:0'] }, auth: { plaintext_without_tls: 'never' } });
    try {
      await secure.addUser(ALICE);
      const web = new WebClient(portOf(secure.app.addresses.https[0]), 'en', { https: true });
      const ok = await web.login(ALICE, PASSWORD);
      assert.equal(ok.status, 303);
      assert.match(ok.headers['set-cookie']!.find((line) => line.startsWith('popgate_account='))!, /; Secure/);
      assert.equal((await web.get('/account')).status, 200);
    } finally {
      await secure.close();
    }
  });
});

describe('self-service switches', () => {
  test('features turned off are neither shown nor answered; all off is no /account at all', async () => {
    const server = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, self_service: { password: false, forwarding: false, vacation: true } });
    const off = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, self_service: { enabled: false } });
    try {
      await server.addUser(ALICE);
      const web = new WebClient(portOf(server.app.addresses.http[0]));
      await web.login(ALICE, PASSWORD);
      const overview = await web.get('/account');
      assert.equal(overview.status, 200);
      assert.doesNotMatch(overview.body, /\/account\/password|\/account\/forwarding|forwarding-state/);
      assert.match(overview.body, /\/account\/vacation/);
      assert.equal((await web.get('/account/password')).status, 404);
      assert.equal((await web.post('/account/password', { current: PASSWORD, new: 'new password 1', repeat: 'new password 1' })).status, 404);
      assert.equal((await web.post('/account/forwarding', { action: 'save', targets: 'x@example.net' })).status, 404);
      assert.ok(await server.app.accounts.authenticate(ALICE, PASSWORD));
      assert.equal(await server.app.backends.forwarding.get(ALICE), undefined);
      assert.equal((await web.get('/account/vacation')).status, 200);

      const closed = new WebClient(portOf(off.app.addresses.http[0]));
      assert.equal((await closed.get('/account/login')).status, 404);
      assert.equal((await closed.get('/account')).status, 404);
      const help = await closed.get('/');
      assert.equal(help.status, 200, 'the help pages stay');
      assert.doesNotMatch(help.body, /href="\/account"/, 'and do not point to pages that are not there');
      assert.match((await web.get('/')).body, /href="\/account"/, 'the help index points customers to their account');
    } finally {
      await server.close();
      await off.close();
    }
  });
});

describe('self-service: every change handed to recordChange', () => {
  test('the callback gets address, ip, action and detail of each change; its failure leaves the change standing', async () => {
    const server = await startTestServer({});
    const entries: { address: string; ip: string; action: string; detail: string }[] = [];
    let failing = false;
    const { app } = server;
    // The web side started the way src/server/app.ts starts it, with the callback integration passes.
    const webConfig = { ...app.config, http: { ...app.config.http, listen: ['127.0.0.1:0'] } };
    const web = await WebService.start({
      config: webConfig,
      log: pino({ level: 'silent' }),
      stores: { isLocalDomain: (domain) => app.accounts.isLocalDomain(domain), listDomains: () => app.accounts.listDomains(), popBeforeSmtp: app.popBeforeSmtp },
      addresses: () => app.addresses,
      tlsFiles: undefined,
      metrics: undefined,
      ready: async () => {},
      reusePort: false,
      selfService: {
        stores: { login: new LoginService(app.accounts, app.backends.guard, { plaintextWithoutTls: 'loopback', defaultDomain: '' }), accounts: app.accounts, quotas: app.backends.quotas, forwarding: app.backends.forwarding, vacations: app.backends.vacations },
        recordChange: async (entry) => {
          if (failing) throw new Error('the audit log is away');
          entries.push(entry);
        },
      },
    });
    try {
      await server.addUser(ALICE);
      const client = new WebClient(portOf(web.addresses.http[0]));
      await client.login(ALICE, PASSWORD);
      await client.get('/account/forwarding');
      await client.post('/account/forwarding', { action: 'save', targets: 'alice@elsewhere.example' });
      await client.post('/account/forwarding', { action: 'off' });
      await client.post('/account/vacation', { action: 'save', subject: 'Away', body: 'Back soon.' });
      await client.post('/account/password', { current: PASSWORD, new: 'new password 1', repeat: 'new password 1' });
      assert.deepEqual(entries, [
        { address: ALICE, ip: '127.0.0.1', action: 'forwarding_set', detail: 'to alice@elsewhere.example' },
        { address: ALICE, ip: '127.0.0.1', action: 'forwarding_off', detail: 'forwarding stopped' },
        { address: ALICE, ip: '127.0.0.1', action: 'vacation_set', detail: 'vacation reply on' },
        { address: ALICE, ip: '127.0.0.1', action: 'password', detail: 'password changed' },
      ]);
      failing = true;
      const answer = await client.post('/account/vacation', { action: 'off' });
      assert.equal(answer.status, 200);
      assert.equal(await app.backends.vacations.get(ALICE), undefined);
    } finally {
      await web.close();
      await server.close();
    }
  });
});
