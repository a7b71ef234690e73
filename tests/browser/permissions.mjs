// Permission questions are answered in the tool call's card: the card shows
// the diff and all four options; "Reject" leaves the file untouched and
// "Allow" writes it. A tab in the background counts the question in its title.
// A reload asks the question again, where the history has the tool call.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const notes = join(workspace, 'notes.txt');

/**
 * A second tab of the app, signed in with the same cookie, as a tab in the
 * background: hidden, and given no animation frames, as browsers do there.
 * Headless Chromium shows every tab, so the page is told it is hidden.
 */
async function hiddenTab(page) {
  const tab = await page.context().newPage();
  await tab.addInitScript(() => {
    Object.defineProperty(document, 'hidden', { get: () => true });
    Object.defineProperty(document, 'visibilityState', { get: () => 'hidden' });
    window.requestAnimationFrame = () => 0;
  });
  await tab.goto(new URL('/', page.url()).href);
  return tab;
}

await scenario('permissions', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const id = await newSession(page, workspace);
  const background = await hiddenTab(page);

  await prompt(page, 'Write the notes');
  const first = page.locator('.tool-call').first();
  await first.locator('.permission .options button').first().waitFor();
  const options = await first.locator('.permission .options button').evaluateAll((buttons) =>
    buttons.map((b) => `${b.dataset.optionId}:${b.textContent}`),
  );
  expect(
    JSON.stringify(options) ===
      JSON.stringify(['allow_once:Allow', 'allow_always:Always allow', 'reject_once:Reject', 'reject_always:Always reject']),
    `all four options, got ${JSON.stringify(options)}`,
  );
  expect((await first.locator('.tool-title').textContent()).includes('notes.txt'), 'the card to name the file');
  await first.locator('.diff-line.added', { hasText: 'written by punie' }).waitFor();
  await page.locator(`.session[data-session-id="${id}"] .status[data-status="waiting_for_permission"]`).waitFor();
  expect(!existsSync(notes), 'nothing written while the question stands');
  expect((await page.title()).startsWith('(1) '), `the tab to count the question, got ${await page.title()}`);
  // Polled by a timer: the hidden tab runs no animation frames.
  await background.waitForFunction(() => document.title.startsWith('(1) '), null, { polling: 50 });
  await browser.shot(page, 'asked');

  // A reload asks again, in the card where the history has the call.
  await page.reload();
  await first.locator('.permission .options button').first().waitFor();
  const order = await page.locator('.transcript > *').evaluateAll((nodes) =>
    nodes.map((node) => (node.classList.contains('message') ? node.classList[1] : node.classList[0])),
  );
  expect(
    JSON.stringify(order) === JSON.stringify(['user', 'agent', 'tool-call']),
    `the question after the prompt that led to it, got ${JSON.stringify(order)}`,
  );
  await browser.shot(page, 'asked-again');

  await first.locator('button[data-option-id="reject_once"]').click();
  await first.locator('.answered', { hasText: 'You chose: Reject' }).waitFor();
  await page.locator('.message.agent', { hasText: 'You declined' }).waitFor();
  await turnOver(page);
  expect((await first.getAttribute('data-status')) === 'failed', 'the rejected call to have failed');
  expect(!existsSync(notes), 'a rejected write to leave the file untouched');
  await browser.shot(page, 'rejected');

  await prompt(page, 'Write them after all');
  const second = page.locator('.tool-call').nth(1);
  await second.locator('button[data-option-id="allow_once"]').click();
  await second.locator('.answered', { hasText: 'You chose: Allow' }).waitFor();
  await page.locator('.message.agent', { hasText: 'The notes are written.' }).waitFor();
  await turnOver(page);
  await page.locator('.tool-call[data-status="completed"]').waitFor();
  expect(existsSync(notes) && readFileSync(notes, 'utf8') === 'written by punie\n', 'an allowed write to write the file');
  await page.locator(`.session[data-session-id="${id}"] .status[data-status="idle"]`).waitFor();
  await browser.shot(page, 'allowed');
});
