import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { chromiumMissing, launchChromium, screenshots, seriousViolations } from './helpers/browser.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';
import { SmtpClient } from './helpers/smtp-client.ts';

// The admin console in a real browser (Debian's chromium through playwright-core, as
// test/web-browser.test.ts): logging in, the dashboard's charts, revoking a customer's grant
// and SMTP then refusing the relay, a queued message shown and deleted, a forged CSRF token
// refused, and every page scanned by axe-core. Screenshots go to test-artifacts/admin/.

const ADMIN_PASSWORD = 'a long console password';

const shot = screenshots('admin');

/** Checks the page with axe-core and keeps a screenshot of it. */
async function scanAndShoot(page: Page, name: string): Promise<void> {
  assert.deepEqual(await seriousViolations(page), [], name);
  await shot(page, name);
}

describe('admin console in a real browser', { skip: chromiumMissing }, () => {
  let browser: Browser;
  let server: TestServer;
  let base: string;

  before(async () => {
    browser = await launchChromium();
    server = await startTestServer({ smtp: { listen: ['127.0.0.1:0'] }, http: { listen: ['127.0.0.1:0'] } });
    await server.addUser('alice@example.com');
    await server.app.backends.admins.add('root', ADMIN_PASSWORD);
    base = `http://127.0.0.1:${server.app.addresses.http[0].split(':').pop()}`;
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  /** A fresh profile, logged in as root; axe needs its script injected, which CSP would stop. */
  async function loggedIn(): Promise<{ ctx: BrowserContext; page: Page }> {
    const ctx = await browser.newContext({ bypassCSP: true, locale: 'en-US' });
    const page = await ctx.newPage();
    await page.goto(`${base}/admin/login`);
    await page.getByLabel('Name').fill('root');
    await page.getByLabel('Password').fill(ADMIN_PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${base}/admin/dashboard`);
    return { ctx, page };
  }

  test('the login page, a wrong password, then the dashboard with its charts', async () => {
    const ctx = await browser.newContext({ bypassCSP: true, locale: 'en-US' });
    const page = await ctx.newPage();
    const response = await page.goto(`${base}/admin`);
    assert.equal(response?.status(), 200);
    assert.equal(new URL(page.url()).pathname, '/admin/login');
    await scanAndShoot(page, 'login');
    await page.getByLabel('Name').fill('root');
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByText('Wrong name or password.').waitFor();
    await scanAndShoot(page, 'login_failed');
    await server.app.backends.guard.reset('127.0.0.1');
    await ctx.close();

    const { ctx: admin, page: dashboard } = await loggedIn();
    assert.equal(await dashboard.locator('h1').textContent(), 'Dashboard');
    assert.ok((await dashboard.locator('svg.chart').count()) >= 10);
    assert.ok(await dashboard.locator('svg.chart title').first().textContent());
    // The session cookie is out of reach of scripts.
    const cookie = (await admin.cookies()).find((c) => c.name === 'popgate_admin');
    assert.equal(cookie?.httpOnly, true);
    assert.equal(cookie?.sameSite, 'Strict');
    assert.equal(await dashboard.evaluate('document.cookie.includes("popgate_admin")'), false);
    await scanAndShoot(dashboard, 'dashboard');
    await admin.close();
  });

  test('a customer\'s grant revoked in the console: SMTP then refuses the relay; the queued message is shown and deleted', async () => {
    // alice logs in to POP3 from 127.0.0.1 and relays one message while her grant is live.
    const pop3 = await Pop3Client.connect(server.pop3Port);
    await pop3.line();
    assert.match(await pop3.login('alice@example.com', PASSWORD), /^\+OK/);
    await pop3.command('QUIT');
    const smtp = await SmtpClient.connect(server.smtpPort);
    await smtp.hello();
    assert.match(await smtp.send('alice@example.com', ['bob@remote.example'], 'From: alice@example.com\r\nTo: bob@remote.example\r\nSubject: queued for the console\r\n\r\nhello\r\n'), /^250 /);

    const { ctx, page } = await loggedIn();
    await page.getByRole('link', { name: 'Grants' }).click();
    const row = page.locator('tr', { hasText: 'alice@example.com' });
    assert.match((await row.textContent())!, /127\.0\.0\.1/);
    assert.match((await row.locator('td').nth(2).textContent())!, /^\d+m$/);
    await scanAndShoot(page, 'grants');
    await row.getByRole('button', { name: /Revoke/ }).click();
    await page.getByText(/revoked 1 grant\(s\) for 127\.0\.0\.1/).waitFor();
    assert.match(await page.content(), /No live grants/);

    assert.match(await smtp.command('RSET'), /^250 /);
    assert.match(await smtp.command('MAIL FROM:<alice@example.com>'), /^250 /);
    assert.match(await smtp.command('RCPT TO:<carol@remote.example>'), /^554 5\.7\.1 Relay access denied: log in with POP3 first/);
    smtp.close();

    await page.getByRole('link', { name: 'Queue' }).click();
    await scanAndShoot(page, 'queue');
    const [message] = await server.app.queue.list();
    await page.getByRole('link', { name: message.id }).click();
    const shown = (await page.locator('pre.queued').textContent())!;
    assert.match(shown, /from: +alice@example\.com/);
    assert.match(shown, /bob@remote\.example: pending/);
    assert.match(shown, /Subject: queued for the console/);
    await scanAndShoot(page, 'queue_message');
    await page.getByRole('button', { name: 'Delete without a bounce' }).click();
    await page.getByText(new RegExp(`deleted ${message.id} from alice@example\\.com to bob@remote\\.example`)).waitFor();
    assert.deepEqual(await server.app.queue.list(), []);

    await page.getByRole('link', { name: 'Audit log' }).click();
    const audit = (await page.locator('table').textContent())!;
    assert.match(audit, /admin root.*127\.0\.0\.1.*grant\.revoke/s);
    assert.match(audit, /queue\.delete/);
    await scanAndShoot(page, 'audit');
    await ctx.close();
  });

  test('a form with a forged CSRF token is refused and changes nothing', async () => {
    const { ctx, page } = await loggedIn();
    await page.getByRole('link', { name: 'Accounts' }).click();
    await scanAndShoot(page, 'accounts');
    await page.getByLabel('New domain').fill('forged.example');
    await page.evaluate(`document.querySelector('form[action="/admin/domains/add"] input[name="csrf"]').value = 'forged'`);
    const [response] = await Promise.all([page.waitForResponse(`${base}/admin/domains/add`), page.getByRole('button', { name: 'Add domain' }).click()]);
    assert.equal(response.status(), 403);
    await page.getByText(/Refused: .*CSRF/).waitFor();
    await scanAndShoot(page, 'csrf_refused');
    assert.equal(await server.app.accounts.isLocalDomain('forged.example'), false);
    await ctx.close();
  });

  test('the lockouts and limits pages', async () => {
    const { ctx, page } = await loggedIn();
    await server.app.backends.guard.failure('192.0.2.44', 'alice@example.com');
    await page.getByRole('link', { name: 'Lockouts' }).click();
    assert.match((await page.locator('table').textContent())!, /ip 192\.0\.2\.44/);
    await scanAndShoot(page, 'lockouts');
    await page.getByRole('button', { name: 'Reset ip 192.0.2.44', exact: true }).click();
    await page.getByText(/cleared 0 counted message\(s\) and \d+ failed-login record\(s\) of 192\.0\.2\.44/).waitFor();
    await page.getByRole('link', { name: 'Limits' }).click();
    await scanAndShoot(page, 'limits');
    await ctx.close();
  });
});
