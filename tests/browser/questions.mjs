// Questions in sessions the person is not looking at: a desktop
// notification says which session asks what (once they turned notifications
// on), Alt+W opens the session and puts the keyboard on the question's
// options, and answering closes the notification. A question never takes the
// keyboard from the prompt: an Enter typed there answers nothing.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connected, env, expect, newSession, prompt, scenario, signal, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const notes = join(workspace, 'notes.txt');

/** The page's notifications, recorded rather than shown: headless Chromium
 * has no desktop to show them on. */
function recordNotifications() {
  const Real = window.Notification;
  window.shown = [];
  window.Notification = class {
    static get permission() {
      return Real.permission;
    }

    static requestPermission() {
      return Real.requestPermission();
    }

    constructor(title, options = {}) {
      Object.assign(this, { title, body: options.body, tag: options.tag, closed: false });
      window.shown.push(this);
    }

    close() {
      this.closed = true;
    }
  };
}

const shownCount = (page) => page.evaluate(() => window.shown.length);

await scenario('questions', async (browser) => {
  const page = await browser.newPage();
  await page.context().grantPermissions(['notifications']);
  await page.addInitScript(recordNotifications);
  await signIn(page, link);
  const notify = page.locator('#notify');
  await notify.click();
  await page.locator('#notify[aria-pressed="true"]').waitFor();

  const asking = await newSession(page, workspace);
  await prompt(page, 'Open the gate, then write the notes');
  const command = page.locator('.tool-call').first();
  await command.locator('button[data-option-id="allow_once"]').waitFor();
  const focused = await page.evaluate(() => document.activeElement?.id);
  expect(focused === 'prompt', `the prompt to keep the keyboard when a question comes, not ${focused}`);
  await page.locator('#prompt').pressSequentially('still typing');
  await page.locator('#prompt').press('Enter');
  expect((await command.locator('.permission .options button').count()) === 4, 'an Enter typed in the prompt to answer nothing');
  expect((await shownCount(page)) === 0, 'no notification for a question in the open session of a page in view');
  // Alt+W: the open session's question first.
  await page.keyboard.press('Alt+KeyW');
  await page.waitForFunction(() => document.activeElement?.dataset?.optionId === 'allow_once');
  await page.keyboard.press('Enter');
  await command.locator('.answered', { hasText: 'You chose: Allow' }).waitFor();

  // The command waits at the gate while the person works in another session.
  const other = await newSession(page, workspace);
  expect(other !== asking, 'a second session');
  signal('at the gate');
  await page.waitForFunction(() => window.shown.length === 1);
  const shown = await page.evaluate(() => ({ title: window.shown[0].title, body: window.shown[0].body }));
  expect(shown.title === 'Punie needs your answer', `the notification's title, got ${shown.title}`);
  expect(
    shown.body.startsWith('Open the gate, then write the notes: ') && shown.body.includes('notes.txt'),
    `the notification to name the session and the question, got ${shown.body}`,
  );
  await page.locator(`.session[data-session-id="${asking}"] .status[data-status="waiting_for_permission"]`).waitFor();
  await browser.shot(page, 'asked-elsewhere');

  await page.keyboard.press('Alt+KeyW');
  await page.waitForFunction((id) => new URLSearchParams(location.hash.slice(1)).get('session') === id, asking);
  await page.waitForFunction(() => document.activeElement?.dataset?.optionId === 'allow_once');
  await browser.shot(page, 'question-in-reach');
  await page.keyboard.press('Enter');
  await page.locator('.message.agent', { hasText: 'The notes are written.' }).waitFor();
  await turnOver(page);
  expect(readFileSync(notes, 'utf8') === 'written by punie\n', 'the write allowed by the keyboard to write the file');
  expect(await page.evaluate(() => window.shown[0].closed), 'the notification to close once the question was answered');

  await page.keyboard.press('Alt+KeyW');
  await page.locator('#notice-text', { hasText: 'No session is waiting for your answer.' }).waitFor();

  // The choice outlives a reload.
  await page.reload();
  await connected(page);
  await page.locator('#notify[aria-pressed="true"]').waitFor();
});
