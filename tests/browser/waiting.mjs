// Watching several sessions at once. After a reload, questions of sessions
// the page has not opened again are still reached with Alt+W: opening such a
// session brings its question back to the page (the client that was asked
// is gone). A question another client holds is shown where it waits, with a
// word on who can answer it. In a narrow window ☰ counts the other sessions
// waiting for an answer. The list tells a turn that failed from one that
// finished, and marks a session whose turn ended while the person looked
// elsewhere (opened in the page or not) until they open it.

import { connected, env, expect, newSession, prompt, scenario, signal, signIn } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const asks = env('PUNIE_ASKS');
const fails = env('PUNIE_FAILS');
const finishes = env('PUNIE_FINISHES');

/** Wait until the keyboard is on "Allow" in session `id`'s question. */
function keyboardOnQuestion(page, id) {
  return page.waitForFunction(
    (id) =>
      document.activeElement?.dataset?.optionId === 'allow_once' &&
      document.activeElement.closest('.transcript')?.dataset.sessionId === id,
    id,
  );
}

const row = (page, id) => page.locator(`.session[data-session-id="${id}"]`);

await scenario('waiting', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const first = await newSession(page, workspace, asks);
  await prompt(page, 'Ask in the first');
  await page.locator(`.transcript[data-session-id="${first}"] button[data-option-id="allow_once"]`).waitFor();
  const second = await newSession(page, workspace, asks);
  await prompt(page, 'Ask in the second');
  await page.locator(`.transcript[data-session-id="${second}"] button[data-option-id="allow_once"]`).waitFor();

  // A reload: the page the server asked is gone. The open session asks again
  // once the page has opened it; the other only waits in the list.
  await page.reload();
  await connected(page);
  await page.locator(`.transcript[data-session-id="${second}"] button[data-option-id="allow_once"]`).waitFor();
  await row(page, first).locator('.status[data-status="waiting_for_permission"]').waitFor();
  expect((await page.locator('.transcript').count()) === 1, 'only the open session opened again');

  // A narrow window: the list is out of sight, ☰ says another session waits.
  await page.setViewportSize({ width: 600, height: 800 });
  const badge = page.locator('#waiting-badge');
  await badge.waitFor();
  expect((await badge.textContent()) === '1', `one other session counted, got ${await badge.textContent()}`);
  const label = await page.locator('#toggle-sessions').getAttribute('aria-label');
  expect(label.includes('1 other session waits for your answer'), `the button to say so, got ${label}`);
  await browser.shot(page, 'narrow-one-waiting');

  // Alt+W: the open session's question, then the other's, which the page
  // opens, and to which the server puts its question again.
  await page.keyboard.press('Alt+KeyW');
  await keyboardOnQuestion(page, second);
  await page.keyboard.press('Enter');
  await page.locator(`.transcript[data-session-id="${second}"] .message.agent`, { hasText: 'Done as allowed.' }).waitFor();
  expect(await badge.isVisible(), 'the other session still counted');
  await page.keyboard.press('Alt+KeyW');
  await keyboardOnQuestion(page, first);
  expect(new URL(page.url()).hash === `#session=${first}`, 'the session with the question open');
  await badge.waitFor({ state: 'hidden' });
  await browser.shot(page, 'question-after-reload');
  await page.keyboard.press('Enter');
  await page.locator(`.transcript[data-session-id="${first}"] .message.agent`, { hasText: 'Done as allowed.' }).waitFor();

  // A question an IDE holds: counted, reached, and said to be the IDE's to answer.
  signal('ask in the IDE');
  const held = page.locator('.session[data-status="waiting_for_permission"]');
  // The list is put away in the narrow window: its rows are there, unseen.
  await held.waitFor({ state: 'attached' });
  const ide = await held.getAttribute('data-session-id');
  // A screen reader hears of it, the list being out of sight.
  await page.waitForFunction(() => document.querySelector('#announcer').textContent.includes('waits for your answer. Alt+W goes to it.'));
  await badge.filter({ hasText: '1' }).waitFor();
  await page.keyboard.press('Alt+KeyW');
  await page.waitForFunction((id) => new URLSearchParams(location.hash.slice(1)).get('session') === id, ide);
  await page.locator('#notice-text', { hasText: 'waits for an answer in another client' }).waitFor();
  await page.locator(`.transcript[data-session-id="${ide}"] .permission .elsewhere`).waitFor();
  await browser.shot(page, 'question-held-elsewhere');
  signal("saw the IDE's question");
  await row(page, ide).locator('.status[data-status="idle"]').waitFor({ state: 'attached' });
  // A session the page never opened, whose turn ends meanwhile: news.
  const news = page.locator('.session[data-unread="true"]');
  await news.locator('.unread').waitFor({ state: 'attached' });
  expect((await news.getAttribute('data-session-id')) !== ide, 'the session on show not marked as news');

  // A turn that fails, and one that finishes while the person looks elsewhere.
  await page.setViewportSize({ width: 1200, height: 800 });
  const failing = await newSession(page, workspace, fails);
  await prompt(page, 'This one fails');
  await page.locator('.error-note').waitFor();
  const failed = row(page, failing).locator('.status[data-status="failed"]');
  await failed.waitFor();
  expect((await failed.textContent()).includes('last turn failed'), `the list to say the turn failed, got ${await failed.textContent()}`);
  const finishing = await newSession(page, workspace, finishes);
  await prompt(page, 'This one finishes while you look elsewhere');
  await row(page, first).click();
  const unread = row(page, finishing).locator('.unread');
  await unread.waitFor();
  await row(page, finishing).locator('.status[data-status="idle"]').waitFor();
  expect(!(await row(page, failing).locator('.unread').isVisible()), 'a turn seen to fail not marked as news');
  expect(await failed.isVisible(), 'the failed turn still said to have failed');
  await browser.shot(page, 'failed-and-finished');
  await row(page, finishing).click();
  await page.locator('.message.agent', { hasText: 'All finished.' }).waitFor();
  await unread.waitFor({ state: 'hidden' });
});
