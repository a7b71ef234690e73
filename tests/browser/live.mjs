// A session an IDE drives through the Rust SDK shows up in the page: its
// history replays when opened, and the IDE's next prompt and reply stream in
// live, with the session's status in the list (waiting, too, when the IDE
// is asked for permission, which the tool call's card says); a session the
// IDE starts later appears on its own.

import { env, expect, scenario, signal, signIn } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const otherWorkspace = env('PUNIE_OTHER_WORKSPACE');
const session = env('PUNIE_SESSION');

await scenario('live', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const entry = page.locator(`.session[data-session-id="${session}"]`);
  await entry.filter({ hasText: 'first from the IDE' }).waitFor();
  expect((await page.locator('.session-group', { has: entry }).getAttribute('data-cwd')) === workspace, 'the session under its project');
  await entry.click();
  await page.locator('.message.agent', { hasText: 'Reply to the first prompt.' }).waitFor();
  expect((await page.locator('.message.user').textContent()).includes('first from the IDE'), 'the IDE prompt replayed');
  await browser.shot(page, 'opened');
  signal('watching');

  // The IDE prompts again: the page follows as it happens.
  await entry.locator('.status[data-status="running"]').waitFor();
  await page.locator('.message.user', { hasText: 'second from the IDE' }).waitFor();
  const reply = page.locator('.message.agent', { hasText: 'Live' });
  await reply.waitFor();
  expect(!(await reply.textContent()).includes('to the second prompt'), 'the reply to arrive in parts');
  expect(await page.locator('#cancel').isVisible(), 'Cancel offered for the IDE\'s turn too');
  await browser.shot(page, 'live');
  await reply.filter({ hasText: 'Live reply to the second prompt.' }).waitFor();
  await entry.locator('.status[data-status="idle"]').waitFor();
  await page.locator('#send:not([disabled])').waitFor();

  // A session the IDE starts now appears under its own project.
  const other = page.locator(`.session-group[data-cwd="${otherWorkspace}"] .session`);
  await other.waitFor();
  await other.filter({ hasText: 'another from the IDE' }).waitFor();
  await browser.shot(page, 'another-session');
  signal('saw the other session');

  // The IDE is asked for permission: the page shows the session waiting,
  // though the question is not the page's to answer.
  await entry.locator('.status[data-status="waiting_for_permission"]', { hasText: 'waiting for permission' }).waitFor();
  await page.locator('.tool-call .permission .elsewhere', { hasText: 'Waiting for an answer in another client.' }).waitFor();
  expect((await page.locator('.permission .options button').count()) === 0, 'no question to answer in the page');
  await browser.shot(page, 'ide-waiting');
  signal("saw the IDE's question");
  await page.locator('.message.agent', { hasText: 'Written.' }).waitFor();
  await entry.locator('.status[data-status="idle"]').waitFor();
  await page.locator('.permission .elsewhere').waitFor({ state: 'detached' });
});
