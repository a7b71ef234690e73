// A server with more sessions than the page reads at start: the newest
// 2,000 are listed, and "Show older sessions" brings the rest.

import { env, expect, scenario, signIn } from './lib.mjs';

const link = env('PUNIE_LINK');
const stored = Number(env('PUNIE_SESSIONS'));

await scenario('older', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const listed = page.locator('#session-groups button.session');
  const older = page.locator('#older-sessions');
  await older.waitFor();
  expect((await listed.count()) === 2000, `the newest 2,000 sessions listed at start, got ${await listed.count()}`);
  await browser.shot(page, 'newest-listed');

  await older.click();
  await older.waitFor({ state: 'hidden' });
  expect((await listed.count()) === stored, `all ${stored} sessions listed, got ${await listed.count()}`);
  await browser.shot(page, 'all-listed');
});
