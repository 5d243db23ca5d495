import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ROOT } from './process.ts';

// What the browser tests share: Debian's chromium (installed by .ci/run; no browser download),
// axe-core's scan, and screenshots kept under test-artifacts/ for a human to look at.

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => existsSync(path));
/** Why the browser tests cannot run here (a skip reason), or false. Under CI a missing chromium fails. */
export const chromiumMissing: string | false = CHROMIUM ? false : 'chromium is not installed (apt-get install chromium)';
if (chromiumMissing && process.env.CI) throw new Error(`${chromiumMissing}: CI installs it (.ci/run)`);

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

/** Serious and critical accessibility violations (axe-core, WCAG 2 A/AA rules) of the page. */
export async function seriousViolations(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: AXE });
  const violations = (await page.evaluate(
    `axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'best-practice'] }).then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) })))`,
  )) as { id: string; impact: string; nodes: string[] }[];
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.nodes.join(', ')}`);
}

/** A screenshot taker for test-artifacts/<folder>/ (created now). */
export function screenshots(folder: string): (page: Page, name: string) => Promise<void> {
  const dir = join(ROOT, 'test-artifacts', folder);
  mkdirSync(dir, { recursive: true });
  return async (page, name) => {
    await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
  };
}
