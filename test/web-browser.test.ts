import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { chromiumMissing, launchChromium, screenshots, seriousViolations } from './helpers/browser.ts';
import { freePort } from './helpers/engines.ts';
import { Pop3Client } from './helpers/pop3-client.ts';
import { PASSWORD, startTestServer, type TestServer } from './helpers/server.ts';

// The help pages in a real browser: Debian's chromium driven by playwright-core (no browser is
// ever downloaded; .ci/run installs the package). Without chromium the suite is skipped, and
// under CI=1 it fails, like the engine-backed suites (test/helpers/engines.ts). Screenshots of
// every page go to test-artifacts/web/ (not committed) for a human to look at.


const portOf = (address: string) => Number(address.split(':').pop());

const shot = screenshots('web');

describe('help pages in a real browser', { skip: chromiumMissing }, () => {
  let browser: Browser;
  let server: TestServer;
  let base: string;
  let submissionPort: number;

  before(async () => {
    browser = await launchChromium();
    submissionPort = await freePort();
    server = await startTestServer({
      submission: { listen: [`127.0.0.1:${submissionPort}`] },
      http: { listen: ['127.0.0.1:0'] },
      web: { provider_name: 'Example Net', provider_contact: 'support@example.com' },
    });
    await server.addUser('alice@example.com');
    base = `http://127.0.0.1:${portOf(server.app.addresses.http[0])}`;
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  /** A fresh browser profile (no cookies); axe needs its script injected, which CSP would stop. */
  const context = (options: Parameters<Browser['newContext']>[0] = {}): Promise<BrowserContext> => browser.newContext({ bypassCSP: true, locale: 'en-US', ...options });

  test('every page shows this server\'s values, and passes the accessibility scan', async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    const pages = ['/', '/setup/thunderbird', '/setup/outlook-classic', '/setup/outlook-express-6', '/setup/becky-2', '/setup/apple-mail-ios', '/setup/scanner-printer', '/pop-before-smtp', '/port-25', '/troubleshooting', '/can-i-send'];
    for (const path of pages) {
      const response = await page.goto(base + path);
      assert.equal(response?.status(), 200, path);
      assert.deepEqual(await seriousViolations(page), [], path);
      await shot(page, `en${path.replace(/\//g, '_') || '_index'}`);
    }
    await page.goto(`${base}/setup/thunderbird`);
    const steps = await page.locator('ol.steps li').allTextContents();
    assert.ok(steps.length >= 6);
    assert.ok(steps.some((step) => step.includes(`incoming (POP3) port ${server.pop3sPort} with SSL/TLS`) && step.includes(`outgoing (SMTP) port ${submissionPort} with STARTTLS`)), steps.join('\n'));
    assert.ok(steps.some((step) => step.includes('mail.example.test')));
    assert.ok(steps.some((step) => step.includes('you@example.com')));
    assert.equal(await page.locator('[data-setting="pop3-starttls"]').textContent(), String(server.pop3Port));
    await page.goto(`${base}/pop-before-smtp`);
    assert.equal(await page.locator('#window').textContent(), '10 minutes');
    // The troubleshooting page quotes what popgate really answers.
    await page.goto(`${base}/troubleshooting`);
    assert.match((await page.locator('#relay-denied code').textContent())!, /^554 5\.7\.1 Relay access denied: log in with POP3 first, then send within 10 minutes$/);
    assert.match((await page.locator('#limit-hour code').textContent())!, /300 messages per hour/);
    await ctx.close();
  });

  test('a changed port or window in the config changes the pages', async () => {
    const otherPort = await freePort();
    const other = await startTestServer({ submission: { listen: [`127.0.0.1:${otherPort}`] }, http: { listen: ['127.0.0.1:0'] }, pop_before_smtp: { window: '25m' } });
    try {
      await other.addUser('bob@example.net');
      const ctx = await context();
      const page = await ctx.newPage();
      const otherBase = `http://127.0.0.1:${portOf(other.app.addresses.http[0])}`;
      await page.goto(`${otherBase}/port-25`);
      assert.equal(await page.locator('[data-setting="submission"]').textContent(), String(otherPort));
      await page.goto(`${otherBase}/pop-before-smtp`);
      assert.equal(await page.locator('#window').textContent(), '25 minutes');
      await ctx.close();
    } finally {
      await other.close();
    }
  });

  test('Japanese by Accept-Language, English by the switch, kept on the next page', async () => {
    const ctx = await context({ locale: 'ja-JP' });
    const page = await ctx.newPage();
    await page.goto(`${base}/setup/outlook-2003`);
    assert.equal(await page.locator('html').getAttribute('lang'), 'ja');
    assert.match((await page.locator('ol.steps').textContent())!, /受信メールサーバー \(POP3\): mail\.example\.test/);
    await shot(page, 'ja_setup_outlook-2003');
    await page.getByRole('link', { name: 'English' }).click();
    await page.waitForURL(`${base}/setup/outlook-2003`);
    assert.equal(await page.locator('html').getAttribute('lang'), 'en');
    assert.match((await page.locator('ol.steps').textContent())!, /Incoming mail server \(POP3\): mail\.example\.test/);
    await page.goto(`${base}/`);
    assert.equal(await page.locator('h1').textContent(), 'Mail help');
    await page.getByRole('link', { name: '日本語' }).click();
    await page.waitForURL(`${base}/`);
    assert.equal(await page.locator('h1').textContent(), 'メールのヘルプ');
    assert.deepEqual(await seriousViolations(page), []);
    // The choice sticks while navigating, over the browser's Accept-Language.
    await page.getByRole('link', { name: 'うまくいかないとき' }).click();
    await page.waitForURL(`${base}/troubleshooting`);
    assert.equal(await page.locator('html').getAttribute('lang'), 'ja');
    assert.equal(await page.locator('[aria-current="true"]').textContent(), '日本語');
    await ctx.close();
  });

  test('readable on a phone: nothing wider than the screen, tap targets of 44 px', async () => {
    const ctx = await context({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    const page = await ctx.newPage();
    for (const path of ['/', '/setup/android', '/troubleshooting', '/can-i-send']) {
      await page.goto(base + path);
      const [scrollWidth, innerWidth] = (await page.evaluate('[document.documentElement.scrollWidth, window.innerWidth]')) as number[];
      assert.ok(scrollWidth <= innerWidth, `${path}: ${scrollWidth} > ${innerWidth}`);
      await shot(page, `phone${path.replace(/\//g, '_') || '_index'}`);
    }
    const height = (await page.getByRole('link', { name: 'English' }).boundingBox())!.height;
    assert.ok(height >= 44, `language switch height ${height}`);
    await ctx.close();
  });

  test('"Can I send now?" before and after a POP3 login from the same address', async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    await page.goto(`${base}/can-i-send`);
    assert.equal(await page.locator('#client-ip').textContent(), '127.0.0.1');
    assert.match((await page.locator('#answer').textContent())!, /Not through POP before SMTP right now/);
    await shot(page, 'can-i-send_before');
    const pop3 = await Pop3Client.connect(server.pop3Port);
    await pop3.line();
    assert.match(await pop3.login('alice@example.com', PASSWORD), /^\+OK/);
    await pop3.command('QUIT');
    await page.getByRole('link', { name: 'Check again' }).click();
    assert.match((await page.locator('#answer').textContent())!, /Yes\. A POP3 login from this address lets you send for about 10 more minutes/);
    assert.doesNotMatch(await page.content(), /alice/);
    await shot(page, 'can-i-send_after');
    await ctx.close();
  });

  test('reading the help pages leaves no cookie; the switch leaves only the language', async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    for (const path of ['/', '/setup/thunderbird', '/troubleshooting', '/can-i-send']) await page.goto(base + path);
    assert.deepEqual(await ctx.cookies(), []);
    await page.getByRole('link', { name: '日本語' }).click();
    await page.waitForURL(`${base}/can-i-send`);
    assert.deepEqual((await ctx.cookies()).map((cookie) => [cookie.name, cookie.value, cookie.httpOnly, cookie.sameSite]), [['popgate_lang', 'ja', true, 'Lax']]);
    await ctx.close();
  });
});
