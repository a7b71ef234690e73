// The open session's model and mode are chosen in the composer. "Edit without
// asking" writes a file with no question; every tab on the session sees the
// change as it happens, and a reload shows the mode the session keeps. Typing
// `/` lists the session's slash commands; Esc puts the list away. The model
// and mode stay readable in a narrow window.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const notes = join(workspace, 'notes.txt');

await scenario('settings', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const id = await newSession(page, workspace);
  const mode = page.locator('#session-mode');
  const model = page.locator('#session-model');
  await mode.waitFor();
  expect((await mode.inputValue()) === 'ask', `a new session to ask first, got ${await mode.inputValue()}`);
  expect((await model.inputValue()).startsWith('script:'), `the server's model, got ${await model.inputValue()}`);
  const modes = await mode.locator('option').evaluateAll((options) => options.map((o) => `${o.value}:${o.textContent}`));
  expect(
    JSON.stringify(modes) === JSON.stringify(['ask:Ask first', 'edit:Edit without asking', 'read-only:Read only']),
    `the three modes, got ${JSON.stringify(modes)}`,
  );

  // A second tab on the same session sees the change live.
  const other = await page.context().newPage();
  await other.goto(new URL(`/#session=${id}`, page.url()).href);
  await other.locator('#session-mode').waitFor();
  await mode.selectOption('edit');
  await other.waitForFunction(() => document.querySelector('#session-mode').value === 'edit');

  await prompt(page, 'Write the notes');
  await page.locator('.message.agent', { hasText: 'The notes are written.' }).waitFor();
  await turnOver(page);
  await page.locator('.tool-call[data-status="completed"]').waitFor();
  expect((await page.locator('.permission .options button').count()) === 0, 'no question in edit mode');
  expect(existsSync(notes) && readFileSync(notes, 'utf8') === 'written by punie\n', 'the file to be written');
  await browser.shot(page, 'edit-mode');

  // Slash commands: typing `/` lists them, Tab takes the first that fits.
  await page.locator('#prompt').fill('/');
  await page.locator('#command-hints .command-hint').first().waitFor();
  const offered = await page.locator('#command-hints .command-hint').evaluateAll((hints) => hints.map((h) => h.dataset.command));
  expect(JSON.stringify(offered) === JSON.stringify(['init', 'review']), `the commands, got ${JSON.stringify(offered)}`);
  await browser.shot(page, 'commands-listed');
  // Esc puts the list away, leaving the prompt as it was; typing brings it back.
  await page.locator('#prompt').press('Escape');
  await page.locator('#command-hints').waitFor({ state: 'hidden' });
  expect((await page.locator('#prompt').inputValue()) === '/', 'Esc to leave the prompt alone');
  await page.locator('#prompt').pressSequentially('re');
  await page.locator('#command-hints .command-hint').first().waitFor();
  await page.locator('#prompt').press('Tab');
  expect((await page.locator('#prompt').inputValue()) === '/review ', `Tab to complete the command, got ${await page.locator('#prompt').inputValue()}`);
  await page.locator('#command-hints').waitFor({ state: 'hidden' });
  await browser.shot(page, 'command-taken');

  await page.reload();
  await page.locator('#session-mode').waitFor();
  await page.waitForFunction(() => document.querySelector('#session-mode').value === 'edit');

  // On a phone held upright, the chosen mode reads in full and the model's
  // name has room to be told apart.
  await page.setViewportSize({ width: 320, height: 640 });
  const shown = await page.evaluate(() =>
    ['#session-model', '#session-mode'].map((selector) => {
      const select = document.querySelector(selector);
      const style = getComputedStyle(select);
      const pen = document.createElement('canvas').getContext('2d');
      pen.font = `${style.fontSize} ${style.fontFamily}`;
      return { width: select.clientWidth, text: pen.measureText(select.selectedOptions[0].text).width };
    }),
  );
  const [modelShown, modeShown] = shown;
  expect(modeShown.width >= modeShown.text + 24, `the mode's name to fit, got ${JSON.stringify(modeShown)}`);
  expect(modelShown.width >= 120, `room for the model's name, got ${JSON.stringify(modelShown)}`);
  const composer = await page.locator('#composer').boundingBox();
  expect(composer.x + composer.width <= 320, `the composer to fit, it ends at ${composer.x + composer.width}px`);
  await browser.shot(page, 'narrow');
});
