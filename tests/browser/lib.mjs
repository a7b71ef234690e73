// What every browser scenario shares: headless Chromium driven by
// Playwright, screenshots kept as artifacts, and a check that nothing was
// logged as an error in any page's console.
//
// A scenario is started by tests/browser.rs against a real `punie serve`; it
// learns where from environment variables, reports progress as lines on
// stdout (`tests/browser.rs` waits on some of them) and exits non-zero on the
// first failed expectation.

import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** How long any single wait in a scenario may take. */
export const TIMEOUT_MS = 20_000;

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; tests/browser.rs sets it`);
  return value;
}

export function expect(condition, message) {
  if (!condition) throw new Error(`expected ${message}`);
}

/** Tell tests/browser.rs how far the scenario got; it may be waiting for this line. */
export function signal(line) {
  process.stdout.write(`${line}\n`);
}

export class Browser {
  /** Chromium, with console errors of every page recorded. */
  static async launch(scenario) {
    const browser = await chromium.launch({
      executablePath: process.env.PUNIE_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      // Containers often give /dev/shm a few megabytes; Chromium then crashes.
      args: ['--disable-dev-shm-usage'],
    });
    return new Browser(scenario, browser);
  }

  constructor(scenario, browser) {
    this.scenario = scenario;
    this.browser = browser;
    this.errors = [];
    this.allowed = [];
    this.shots = 0;
    this.artifacts = env('PUNIE_ARTIFACTS');
    mkdirSync(this.artifacts, { recursive: true });
    // This run's screenshots replace the last run's, rather than mix with them.
    for (const file of readdirSync(this.artifacts)) {
      if (file.startsWith(`${scenario}-`) && file.endsWith('.png')) rmSync(join(this.artifacts, file));
    }
  }

  /** A fresh browser profile (its own cookies) with one page open. */
  async newPage({ width = 1200, height = 800 } = {}) {
    const context = await this.browser.newContext({ viewport: { width, height } });
    context.setDefaultTimeout(TIMEOUT_MS);
    context.on('page', (page) => this.watch(page));
    const page = await context.newPage();
    return page;
  }

  watch(page) {
    page.on('console', (message) => {
      if (message.type() === 'error') this.errors.push({ url: page.url(), text: message.text() });
    });
    page.on('pageerror', (error) => this.errors.push({ url: page.url(), text: `uncaught: ${error.message}` }));
  }

  /** A console error the scenario causes on purpose, on pages whose URL matches. */
  allowError(urlPattern, textPattern) {
    this.allowed.push({ urlPattern, textPattern });
  }

  async shot(page, name) {
    this.shots += 1;
    const file = join(this.artifacts, `${this.scenario}-${String(this.shots).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, animations: 'disabled' });
    signal(`screenshot ${file}`);
  }

  /** Close the browser; fail if any page logged an error nobody expected. */
  async close() {
    await this.browser.close();
    const unexpected = this.errors.filter(
      (error) => !this.allowed.some((a) => a.urlPattern.test(error.url) && a.textPattern.test(error.text)),
    );
    if (unexpected.length > 0) {
      throw new Error(`the browser console logged errors:\n${unexpected.map((e) => `  ${e.url}: ${e.text}`).join('\n')}`);
    }
  }
}

/** Sign `page` in with `link`, and wait until the app is connected. */
export async function signIn(page, link) {
  await page.goto(link);
  expect(new URL(page.url()).pathname === '/', `the sign-in link to lead to the app, not ${page.url()}`);
  await connected(page);
}

export async function connected(page) {
  await page.locator('#connection[data-state="connected"]').waitFor();
}

/** Start a session in `cwd` through the New session dialog. */
export async function newSession(page, cwd, model = '') {
  await page.locator('#new-session').click();
  await page.locator('#new-session-dialog').waitFor();
  await page.locator('#new-session-cwd').fill(cwd);
  await page.locator('#new-session-model').fill(model);
  await page.locator('#create-session').click();
  await page.locator('#new-session-dialog').waitFor({ state: 'hidden' });
  await page.locator('#composer').waitFor();
  const id = new URLSearchParams(new URL(page.url()).hash.slice(1)).get('session');
  expect(id, `the new session's id in the address, got ${page.url()}`);
  return id;
}

/** Type `text` and send it with Ctrl+Enter. */
export async function prompt(page, text) {
  await page.locator('#prompt').fill(text);
  await page.locator('#prompt').press('Control+Enter');
}

/** Wait until the open session's turn is over. */
export async function turnOver(page) {
  await page.locator('#cancel').waitFor({ state: 'hidden' });
  await page.locator('#send:not([disabled])').waitFor();
}

/** Wait until the transcript, taller than its view, shows its newest line. */
export async function scrolledToNewest(page) {
  await page.waitForFunction(() => {
    const host = document.querySelector('#transcript-host');
    return host.scrollTop > 0 && host.scrollHeight - host.scrollTop - host.clientHeight <= 1;
  });
}

/** Run `body`, then close the browser; exit non-zero on any failure. */
export async function scenario(name, body) {
  let browser;
  try {
    browser = await Browser.launch(name);
    await body(browser);
    await browser.close();
    signal('done');
    process.exit(0);
  } catch (error) {
    process.stderr.write(`${name}: ${error.stack || error}\n`);
    if (browser) await browser.browser.close().catch(() => {});
    process.exit(1);
  }
}
