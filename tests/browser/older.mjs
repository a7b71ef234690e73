// A server with more sessions than the page reads at start: the newest
// 2,000 are listed, and "Show older sessions" brings the rest. A link to a
// session older than those opens it all the same; a link to none says so.
// Opening a session changes its row and leaves the others' be. A project
// whose name is too long for the list ends in an ellipsis, in a wide window
// and a narrow one; in the header, its path keeps its end (the project's
// name) in view.

import { env, expect, scenario, signIn } from './lib.mjs';

const link = env('PUNIE_LINK');
const stored = Number(env('PUNIE_SESSIONS'));
const oldest = env('PUNIE_OLDEST_SESSION');
const longProject = env('PUNIE_LONG_PROJECT');

/** Whether the session list scrolls sideways. */
function sidebarScrollsSideways(page) {
  return page.locator('#sidebar').evaluate((node) => node.scrollWidth > node.clientWidth);
}

await scenario('older', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const listed = page.locator('#session-groups button.session');
  const older = page.locator('#older-sessions');
  await older.waitFor();
  expect((await listed.count()) === 2000, `the newest 2,000 sessions listed at start, got ${await listed.count()}`);
  await browser.shot(page, 'newest-listed');

  // The long project name ends in an ellipsis; its heading names it whole.
  const heading = page.locator(`.session-group[data-cwd="${longProject}"] h2`);
  expect((await heading.getAttribute('title')) === longProject, 'the whole path in the heading\'s tooltip');
  const name = await heading.locator('.group-name').evaluate((node) => ({
    cut: node.scrollWidth > node.clientWidth,
    ellipsis: getComputedStyle(node).textOverflow,
  }));
  expect(name.cut && name.ellipsis === 'ellipsis', `the long name cut with an ellipsis, got ${JSON.stringify(name)}`);
  expect(!(await sidebarScrollsSideways(page)), 'the session list not to scroll sideways');

  // Opening a session redraws its row, not the whole list.
  const bystander = await listed.nth(5).elementHandle();
  await listed.nth(1).click();
  await page.locator('#session-groups button.session[aria-current="true"]').waitFor();
  await page.locator('.transcript:not(.loading)').waitFor();
  expect(await bystander.evaluate((node) => node.isConnected), 'the other rows kept as they were');

  // A link to a session the list does not have yet opens it, and it joins the list.
  expect((await page.locator(`.session[data-session-id="${oldest}"]`).count()) === 0, 'the oldest session not listed at start');
  await page.evaluate((id) => (location.hash = `#session=${id}`), oldest);
  await page.locator(`.transcript[data-session-id="${oldest}"]:not(.loading)`).waitFor();
  await page.locator(`.session[aria-current="true"][data-session-id="${oldest}"]`).waitFor();
  await page.locator('#composer').waitFor();
  expect(await page.locator('#notice').isHidden(), 'no notice for a session that is there');
  expect(new URL(page.url()).hash === `#session=${oldest}`, 'the address to name the session');
  await browser.shot(page, 'oldest-open');

  // A link to no session says so, and the open one stays open.
  await page.evaluate(() => (location.hash = '#session=no-such-session'));
  await page.locator('#notice', { hasText: 'The session in the address was not found' }).waitFor();
  await page.waitForFunction((id) => location.hash === `#session=${id}`, oldest);
  expect(
    (await page.locator('.session[aria-current="true"]').getAttribute('data-session-id')) === oldest,
    'the open session still open',
  );

  // A page opened at the link opens it too.
  const other = await page.context().newPage();
  await other.goto(new URL(`/#session=${oldest}`, page.url()).href);
  await other.locator(`.transcript[data-session-id="${oldest}"]:not(.loading)`).waitFor();
  expect(await other.locator('#notice').isHidden(), 'no notice in a page opened at the link');
  await other.close();

  await older.click();
  await older.waitFor({ state: 'hidden' });
  expect((await listed.count()) === stored, `all ${stored} sessions listed once, got ${await listed.count()}`);
  await browser.shot(page, 'all-listed');

  // In a narrow window, the list opened over the conversation.
  await page.setViewportSize({ width: 360, height: 700 });
  await page.locator('#toggle-sessions').click();
  await page.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0);
  expect(!(await sidebarScrollsSideways(page)), 'the session list not to scroll sideways in a narrow window');
  await browser.shot(page, 'narrow');

  // Its session open, the header keeps the end of the long path in view,
  // the project's name, and cuts its start; the tooltips have them whole.
  const row = page.locator(`.session-group[data-cwd="${longProject}"] .session`).first();
  expect((await row.locator('.session-title').getAttribute('title')) === 'Untitled session', 'the title whole in its tooltip');
  await row.click();
  await page.locator('#composer').waitFor();
  const path = await page.locator('#session-cwd').evaluate((node) => {
    const box = node.getBoundingClientRect();
    const text = node.querySelector('#session-cwd-text').firstChild;
    const range = document.createRange();
    range.setStart(text, text.length - 1);
    range.setEnd(text, text.length);
    const last = range.getBoundingClientRect();
    range.setStart(text, 0);
    range.setEnd(text, 1);
    const first = range.getBoundingClientRect();
    return { endShown: last.left >= box.left && last.right <= box.right + 0.5, startCut: first.right <= box.left, title: node.title };
  });
  expect(path.endShown && path.startCut, `the path's end in view and its start cut, got ${JSON.stringify(path)}`);
  expect(path.title === longProject, `the whole path in the tooltip, got ${path.title}`);
  await browser.shot(page, 'narrow-long-path');
});
