// Signing in by link: the link leads into the app and sets an HttpOnly,
// SameSite=Strict cookie; the same link a second time does not work, and a
// browser without the cookie is told how to sign in. Signing out forgets the
// cookie in the browser and on the server, so a copy of it is refused. A
// server that restarts forgets every sign-in; a tab signed out that way
// keeps what the person was writing for when it is signed in again, in the
// tab itself or in another that it follows. Signing out forgets it.

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
  // What the person was writing waits for them.
  browser.allowError(/^http:\/\/127\.0\.0\.1:\d+\/#session=/, /ERR_CONNECTION_REFUSED/);
  const open = await browser.newPage();
  await signIn(open, env('PUNIE_SECOND_LINK'));
  const id = await newSession(open, env('PUNIE_WORKSPACE'));
  await open.locator('#prompt').fill('A follow-up, half written');
  await open.locator('#file-input').setInputFiles({ name: 'draft.txt', mimeType: 'text/plain', buffer: Buffer.from('draft\n') });
  await open.locator('#attachments .chip', { hasText: 'draft.txt' }).waitFor();
  // Another tab on the session, with a draft of its own.
  const beside = await open.context().newPage();
  await beside.goto(new URL(`/#session=${id}`, url).href);
  await beside.locator('#send:not([disabled])').waitFor();
  await beside.locator('#prompt').fill('Written in the other tab');
  signal('stop the server');
  await open.locator('#notice', { hasText: 'Cannot reach the Punie server' }).waitFor();
  // Meanwhile the conversation stays on show, with nothing to send it with.
  expect(await open.locator('.transcript').isVisible(), 'the transcript kept while the server is out of reach');
  expect(await open.locator('#send').isDisabled(), 'Send disabled while the server is out of reach');
  expect(!(await open.locator('#welcome').isVisible()), 'no welcome text over the session');
  expect((await open.locator('#prompt').inputValue()) === 'A follow-up, half written', 'the draft kept while the server is out of reach');
  await browser.shot(open, 'server-gone');
  // A session clicked meanwhile cannot open; the page says why.
  await open.locator(`.session[data-session-id="${id}"]`).click();
  await open.locator('#notice-text', { hasText: 'not connected to the server' }).waitFor();
  signal('the server is out of reach');
  await open.locator('#sign-in').waitFor();
  await open.locator('#notice').waitFor({ state: 'hidden' });
  const header = await open.locator('.bar .current').textContent();
  expect(header.trim() === '', `no session named in the header, got ${JSON.stringify(header)}`);
  expect(!(await open.locator('#composer').isVisible()), 'the draft put away while signed out');
  await browser.shot(open, 'server-restarted');

  // Signed in again by a link opened in the same tab (the page loads
  // afresh), the session opens again with the draft and its file.
  const [again, afterSignOut] = await linksFromFile(env('PUNIE_LINKS_FILE'));
  await signIn(open, again);
  await open.locator(`.session[aria-current="true"][data-session-id="${id}"]`).waitFor();
  expect(
    (await open.locator('#prompt').inputValue()) === 'A follow-up, half written',
    `the draft back after signing in again, got ${JSON.stringify(await open.locator('#prompt').inputValue())}`,
  );
  await open.locator('#attachments .chip', { hasText: 'draft.txt' }).waitFor();
  await browser.shot(open, 'draft-back');

  // The other tab follows once the person comes back to it, its draft with it.
  await beside.evaluate(() => window.dispatchEvent(new Event('focus')));
  await beside.locator('#connection[data-state="connected"]').waitFor();
  expect(!(await beside.locator('#sign-in').isVisible()), 'no sign-in notice in the tab that followed');
  await beside.locator(`.session[aria-current="true"][data-session-id="${id}"]`).waitFor();
  expect(
    (await beside.locator('#prompt').inputValue()) === 'Written in the other tab',
    `the other tab's draft back, got ${JSON.stringify(await beside.locator('#prompt').inputValue())}`,
  );

  // Signing out on purpose forgets the draft.
  await open.locator('#prompt').fill('Not for after signing out');
  await open.locator('#sign-out').click();
  await open.locator('#sign-in').waitFor();
  await signIn(open, afterSignOut);
  await open.locator(`.session[data-session-id="${id}"]`).click();
  await open.locator(`.session[aria-current="true"][data-session-id="${id}"]`).waitFor();
  await open.locator('#send:not([disabled])').waitFor();
  expect((await open.locator('#prompt').inputValue()) === '', 'no draft after signing out');
  expect((await open.locator('#attachments .chip').count()) === 0, 'no files after signing out');
});

/** The links, one a line, the test writes to `file` once it can: waited
 * for, with a deadline. */
async function linksFromFile(file) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    if (existsSync(file)) {
      const links = readFileSync(file, 'utf8').split('\n').filter(Boolean);
      if (links.length > 0) return links;
    }
    if (Date.now() > deadline) throw new Error(`no links in ${file} within ${TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
