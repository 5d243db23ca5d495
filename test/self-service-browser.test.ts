import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { chromiumMissing, launchChromium, screenshots, seriousViolations } from './helpers/browser.ts';
import { pop3LoginAnswer } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// The customers' self-service pages in a real browser (Debian's chromium, as in
// web-browser.test.ts): a password changed on the web is the password of POP3 at once, over a
// real socket; the forwarding and vacation forms; the language switch; a phone's screen; and
// axe-core's scan. Screenshots go to test-artifacts/account/.

const portOf = (address: string) => Number(address.split(':').pop());

const shot = screenshots('account');

describe('self-service pages in a real browser', { skip: chromiumMissing }, () => {
  let browser: Browser;
  let server: TestServer;
  let base: string;

  before(async () => {
    browser = await launchChromium();
    server = await startTestServer({ http: { listen: ['127.0.0.1:0'] }, quota: { default: '50MB' }, web: { provider_name: 'Example Net' } });
    base = `http://127.0.0.1:${portOf(server.app.addresses.http[0])}`;
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  const context = (options: Parameters<Browser['newContext']>[0] = {}): Promise<BrowserContext> => browser.newContext({ bypassCSP: true, locale: 'en-US', ...options });

  async function logIn(page: Page, address: string, password: string): Promise<void> {
    await page.goto(`${base}/account`);
    await page.waitForURL(`${base}/account/login`);
    await page.getByLabel('E-mail address').fill(address);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Log in' }).click();
  }

  test('a password changed on the web is the POP3 password at once; the old one fails', async () => {
    const address = 'erin@example.com';
    await server.addUser(address);
    await server.deliver(address, `Subject: hello\r\n\r\n${'x'.repeat(100_000)}\r\n`);
    assert.match(await pop3LoginAnswer(server.pop3Port, address, PASSWORD), /^\+OK/);
    const ctx = await context();
    const page = await ctx.newPage();
    await logIn(page, address, PASSWORD);
    await page.waitForURL(`${base}/account`);
    assert.equal(await page.locator('h1').textContent(), 'My account');
    assert.match((await page.locator('#quota').textContent())!, /^[\d.]+ KB of 50 MB used \(0%\)$/);
    assert.deepEqual(await seriousViolations(page), []);
    await shot(page, 'en_overview');

    await page.getByRole('link', { name: 'Change password' }).click();
    await page.waitForURL(`${base}/account/password`);
    assert.deepEqual(await seriousViolations(page), []);
    await page.getByLabel('Current password').fill(PASSWORD);
    await page.getByLabel('New password', { exact: true }).fill('a brand new secret');
    await page.getByLabel('New password again').fill('a brand new secret');
    await shot(page, 'en_password');
    await page.getByRole('button', { name: 'Change password' }).click();
    assert.match((await page.locator('#notice').textContent())!, /Your password has been changed/);
    await shot(page, 'en_password_changed');

    assert.match(await pop3LoginAnswer(server.pop3Port, address, 'a brand new secret'), /^\+OK/, 'the new password works for POP3');
    assert.match(await pop3LoginAnswer(server.pop3Port, address, PASSWORD), /^-ERR/, 'the old one does not');

    // Logged out: the overview sends the browser back to the login page.
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.waitForURL(`${base}/account/login`);
    await page.goto(`${base}/account`);
    await page.waitForURL(`${base}/account/login`);
    await logIn(page, address, PASSWORD);
    assert.equal(await page.locator('#error').textContent(), 'The e-mail address or the password is wrong.');
    await shot(page, 'en_login_failed');
    await ctx.close();
  });

  test('forwarding and vacation forms: an error shown in place, then saved and shown on the overview', async () => {
    const address = 'frank@example.com';
    await server.addUser(address);
    const ctx = await context();
    const page = await ctx.newPage();
    await logIn(page, address, PASSWORD);
    await page.getByRole('link', { name: 'Forwarding' }).first().click();
    await page.waitForURL(`${base}/account/forwarding`);
    await page.getByLabel(/Forward to/).fill(address);
    await page.getByRole('button', { name: 'Save' }).click();
    assert.match((await page.locator('#error').textContent())!, /cannot forward to itself/);
    assert.equal(await page.getByLabel(/Forward to/).inputValue(), address, 'what was typed stays');
    assert.deepEqual(await seriousViolations(page), []);
    await shot(page, 'en_forwarding_error');
    await page.getByLabel(/Forward to/).fill('frank@elsewhere.example');
    await page.getByLabel('Keep a copy in my mailbox').check();
    await page.getByRole('button', { name: 'Save' }).click();
    assert.equal(await page.locator('#notice').textContent(), 'Forwarding has been saved.');
    assert.equal(await page.locator('#forwarding-state').textContent(), 'Your mail is forwarded to frank@elsewhere.example, and a copy stays in your mailbox.');
    assert.deepEqual(await server.app.backends.forwarding.get(address), { targets: ['frank@elsewhere.example'], keep: true });

    await page.getByRole('link', { name: 'Vacation reply' }).first().click();
    await page.waitForURL(`${base}/account/vacation`);
    await page.getByLabel('Subject').fill('Away until Monday — 月曜まで不在');
    await page.getByLabel('Message').fill('I am away.\nBack on Monday.');
    await page.getByLabel('Last day (optional)').fill('2999-08-31');
    assert.deepEqual(await seriousViolations(page), []);
    await shot(page, 'en_vacation');
    await page.getByRole('button', { name: 'Save' }).click();
    assert.equal(await page.locator('#notice').textContent(), 'The vacation reply has been saved.');
    assert.equal(await page.locator('#vacation-state').textContent(), 'An automatic reply "Away until Monday — 月曜まで不在" is sent until 2999-08-31.');
    const vacation = await server.app.backends.vacations.get(address);
    assert.equal(vacation?.body, 'I am away.\nBack on Monday.');
    await shot(page, 'en_overview_after');

    // Turned off again from its page.
    await page.getByRole('link', { name: 'Forwarding' }).first().click();
    await page.getByRole('button', { name: 'Turn off' }).click();
    assert.equal(await page.locator('#forwarding-state').textContent(), 'Your mail is not forwarded.');
    assert.equal(await server.app.backends.forwarding.get(address), undefined);
    await ctx.close();
  });

  test('Japanese by Accept-Language, English by the switch, on the account pages', async () => {
    const address = 'gina@example.com';
    await server.addUser(address);
    const ctx = await context({ locale: 'ja-JP' });
    const page = await ctx.newPage();
    await page.goto(`${base}/account/login`);
    assert.equal(await page.locator('html').getAttribute('lang'), 'ja');
    assert.equal(await page.locator('h1').textContent(), 'アカウントにログイン');
    await page.getByLabel('メールアドレス').fill(address);
    await page.getByLabel('パスワード').fill(PASSWORD);
    await page.getByRole('button', { name: 'ログイン' }).click();
    await page.waitForURL(`${base}/account`);
    assert.match((await page.locator('#quota').textContent())!, /^50 MB 中 0 B 使用（0%）$/);
    assert.equal(await page.locator('#forwarding-state').textContent(), 'メールは転送されていません。');
    assert.deepEqual(await seriousViolations(page), []);
    await shot(page, 'ja_overview');
    await page.getByRole('link', { name: '自動応答（不在通知）' }).first().click();
    await page.waitForURL(`${base}/account/vacation`);
    await shot(page, 'ja_vacation');
    await page.getByRole('link', { name: 'English' }).click();
    await page.waitForURL(`${base}/account/vacation`);
    assert.equal(await page.locator('html').getAttribute('lang'), 'en');
    assert.equal(await page.locator('h1').textContent(), 'Vacation reply');
    await ctx.close();
  });

  test('readable on a phone: nothing wider than the screen, tap targets of 44 px', async () => {
    const address = 'hana@example.com';
    await server.addUser(address);
    const ctx = await context({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    const page = await ctx.newPage();
    await page.goto(`${base}/account/login`);
    await shot(page, 'phone_login');
    await logIn(page, address, PASSWORD);
    await page.waitForURL(`${base}/account`);
    for (const path of ['/account', '/account/password', '/account/forwarding', '/account/vacation']) {
      await page.goto(base + path);
      const [scrollWidth, innerWidth] = (await page.evaluate('[document.documentElement.scrollWidth, window.innerWidth]')) as number[];
      assert.ok(scrollWidth <= innerWidth, `${path}: ${scrollWidth} > ${innerWidth}`);
      await shot(page, `phone${path.replace(/\//g, '_')}`);
    }
    for (const name of ['Log out', 'Save']) {
      const height = (await page.getByRole('button', { name }).boundingBox())!.height;
      assert.ok(height >= 44, `${name}: ${height}`);
    }
    const link = (await page.getByRole('link', { name: 'Overview' }).boundingBox())!.height;
    assert.ok(link >= 44, `Overview link: ${link}`);
    await ctx.close();
  });
});
