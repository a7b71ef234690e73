// Signing in by link: the link leads into the app and sets an HttpOnly,
// SameSite=Strict cookie; the same link a second time does not work, and a
// browser without the cookie is told how to sign in. Signing out forgets the
// cookie in the browser and on the server, so a copy of it is refused. A
// server that restarts forgets every sign-in; a tab signed out that way
// follows another tab that signs in again.

import { existsSync, readFileSync } from 'node:fs';
import { TIMEOUT_MS, env, expect, newSession, scenario, signal, signIn } from './lib.mjs';

const url = env('PUNIE_URL');
const link = env('PUNIE_LINK');

await scenario('sign-in', async (browser) => {
  const stranger = await browser.newPage();
  await stranger.goto(url);
  await stranger.locator('#sign-in').waitFor();
  expect(await stranger.locator('#sign-in').textContent().then((t) => t.includes('punie open')), 'the page to say how to sign in');
  expect(await stranger.locator('#connection[data-state="disconnected"]').isVisible(), 'no connection without a sign-in');
  await browser.shot(stranger, 'not-signed-in');

  const page = await browser.newPage();
  await signIn(page, link);
  expect(!(await page.locator('#sign-in').isVisible()), 'no sign-in notice once signed in');
  await page.locator('#new-session').waitFor();
  const cookies = await page.context().cookies(url);
  expect(cookies.length === 1, `one cookie, got ${JSON.stringify(cookies.map((c) => c.name))}`);
  const [cookie] = cookies;
  expect(cookie.httpOnly, 'the cookie to be HttpOnly');
  expect(cookie.sameSite === 'Strict', `the cookie to be SameSite=Strict, got ${cookie.sameSite}`);
  expect(!(await page.evaluate(() => document.cookie)), 'scripts not to see the cookie');
  await browser.shot(page, 'signed-in');

  await page.locator('#connection[data-state="connected"]').waitFor();
  await page.locator('#sign-out').click();
  await page.locator('#sign-in').waitFor();
  expect(await page.locator('#connection[data-state="disconnected"]').isVisible(), 'no connection once signed out');
  expect(!(await page.locator('#sign-out').isVisible()), 'no sign-out button once signed out');
  expect((await page.context().cookies(url)).length === 0, 'the browser to forget the cookie');
  await browser.shot(page, 'signed-out');
  await page.reload();
  await page.locator('#sign-in').waitFor();
  const copy = await browser.newPage();
  await copy.context().addCookies([cookie]);
  await copy.goto(url);
  await copy.locator('#sign-in').waitFor();
  expect(await copy.locator('#connection[data-state="disconnected"]').isVisible(), 'a copy of a signed-out cookie not to sign in');

  // The same link, in another browser profile: used up.
  browser.allowError(/\/sign-in\//, /status of 403/);
  const late = await browser.newPage();
  const answer = await late.goto(link);
  expect(answer.status() === 403, `a used link to answer 403, got ${answer.status()}`);
  expect((await late.locator('h1').textContent()).includes('does not work'), 'the page to say the link does not work');
  expect((await late.context().cookies(url)).length === 0, 'no cookie from a used link');
  await browser.shot(late, 'link-used-twice');
  await late.goto(url);
  await late.locator('#sign-in').waitFor();

  // A restarted server has forgotten every sign-in: an open page says how to
  // sign in again once the server answers, and shows nothing from before.
  browser.allowError(/^http:\/\/127\.0\.0\.1:\d+\/#session=/, /ERR_CONNECTION_REFUSED/);
  const open = await browser.newPage();
  await signIn(open, env('PUNIE_SECOND_LINK'));
  await newSession(open, env('PUNIE_WORKSPACE'));
  signal('stop the server');
  await open.locator('#notice', { hasText: 'Cannot reach the Punie server' }).waitFor();
  // Meanwhile the conversation stays on show, with nothing to send it with.
  expect(await open.locator('.transcript').isVisible(), 'the transcript kept while the server is out of reach');
  expect(await open.locator('#send').isDisabled(), 'Send disabled while the server is out of reach');
  expect(!(await open.locator('#welcome').isVisible()), 'no welcome text over the session');
  await browser.shot(open, 'server-gone');
  signal('the server is out of reach');
  await open.locator('#sign-in').waitFor();
  await open.locator('#notice').waitFor({ state: 'hidden' });
  const header = await open.locator('.bar .current').textContent();
  expect(header.trim() === '', `no session named in the header, got ${JSON.stringify(header)}`);
  await browser.shot(open, 'server-restarted');

  // Signed in again in another tab of the same browser, the signed-out tab
  // follows once the person comes back to it.
  const again = await open.context().newPage();
  await signIn(again, await linkFromFile(env('PUNIE_THIRD_LINK_FILE')));
  await open.evaluate(() => window.dispatchEvent(new Event('focus')));
  await open.locator('#connection[data-state="connected"]').waitFor();
  expect(!(await open.locator('#sign-in').isVisible()), 'no sign-in notice in the tab that followed');
  await open.locator('.session').first().waitFor();
});

/** The link the test writes to `file` once it can: waited for, with a
 * deadline. */
async function linkFromFile(file) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    if (existsSync(file)) {
      const link = readFileSync(file, 'utf8').trim();
      if (link) return link;
    }
    if (Date.now() > deadline) throw new Error(`no link in ${file} within ${TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
