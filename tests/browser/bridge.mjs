// A session an IDE drives through the stdio bridge (`punie` speaking ACP on
// its stdin and stdout) shows live in a page that watches it: the session
// runs while the IDE holds the file read it was asked for, waits while the
// IDE holds the permission question (which the page cannot answer), and is
// idle once the IDE has allowed the write; each reply appears as it comes.
// tests/browser.rs plays the IDE, and goes on only when told what the page saw.

import { env, expect, scenario, signal, signIn } from './lib.mjs';

const link = env('PUNIE_LINK');
const session = env('PUNIE_SESSION');

await scenario('bridge', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const entry = page.locator(`.session[data-session-id="${session}"]`);
  const status = (value, text) => entry.locator(`.status[data-status="${value}"]`, { hasText: text });
  await status('idle', 'idle').waitFor();
  await entry.click();
  // Watching only once the (empty) history is in: what follows comes live.
  await page.locator(`.transcript[data-session-id="${session}"]:not(.loading) .transcript-empty`).waitFor();
  await browser.shot(page, 'watching');
  signal('watching');

  // The IDE prompts; the read it was asked for holds the turn.
  await status('running', 'running').waitFor();
  await page.locator('.message.user', { hasText: 'Look at the notes, then write them down' }).waitFor();
  await page.locator('.message.agent', { hasText: 'Reading the notes first.' }).waitFor();
  const read = page.locator('.tool-call').first();
  await read.and(page.locator('[data-status="in_progress"]')).waitFor();
  expect((await read.locator('.tool-status').textContent()) === 'running', 'the read the IDE holds to say it runs');
  expect(await page.locator('#cancel').isVisible(), "Cancel offered for the IDE's turn");
  expect((await page.locator('.tool-call').count()) === 1, 'nothing past the read while the IDE holds it');
  await entry.filter({ hasText: 'Look at the notes' }).waitFor();
  await browser.shot(page, 'running');
  signal('saw it running');

  // The IDE answered the read from its own copy of the file; the write
  // after it asks the IDE, not the page.
  await status('waiting_for_permission', 'waiting for permission').waitFor();
  await read.and(page.locator('[data-status="completed"]')).waitFor();
  const output = await read.locator('.output').textContent();
  expect(output.includes("From the IDE's unsaved buffer."), `the read to show what the IDE gave, got ${JSON.stringify(output)}`);
  await page.locator('.message.agent', { hasText: 'Now writing them down.' }).waitFor();
  const write = page.locator('.tool-call').nth(1);
  await write.locator('.permission .elsewhere', { hasText: 'Waiting for an answer in another client.' }).waitFor();
  expect((await write.getAttribute('data-status')) === 'pending', 'the write not begun while the IDE decides');
  expect((await write.locator('.tool-status').textContent()) === 'waiting for permission', 'the write card to say it waits');
  expect((await page.locator('.permission .options button').count()) === 0, 'no question to answer in the page');
  expect((await page.locator('.message.agent', { hasText: 'Written through the bridge.' }).count()) === 0, 'no reply before the answer');
  await browser.shot(page, 'waiting');
  signal("saw the IDE's question");

  // The IDE allowed it: the last reply streams in and the session rests.
  await page.locator('.message.agent', { hasText: 'Written through the bridge.' }).waitFor();
  await write.and(page.locator('[data-status="completed"]')).waitFor();
  await status('idle', 'idle').waitFor();
  await page.locator('.permission .elsewhere').waitFor({ state: 'detached' });
  await page.locator('#send:not([disabled])').waitFor();
  await browser.shot(page, 'idle');
});
