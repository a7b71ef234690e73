// Start a session from the page and watch its reply stream in as rendered,
// highlighted Markdown with the token usage, each block drawn once it is done; cancel a slow turn with Esc;
// reload and find the session as it was; then the same in a narrow window,
// where the session title keeps its room and wide tables scroll.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

await scenario('stream', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  await page.locator('#welcome').waitFor();
  const id = await newSession(page, workspace);

  await prompt(page, 'Show me streaming');
  const reply = page.locator('.message.agent').first();
  // Part of the reply is on the page while the turn still runs.
  await reply.filter({ hasText: 'The first part arrives' }).waitFor();
  const partial = await reply.textContent();
  expect(!partial.includes('The last part'), `a partial reply first, got ${JSON.stringify(partial)}`);
  expect(await page.locator('#cancel').isVisible(), 'Cancel to show while the turn runs');
  expect(await page.locator('#send').isDisabled(), 'Send to wait while the turn runs');
  // Rendered as it streams, not only once the turn is over.
  expect((await reply.locator('h1').textContent()) === 'Streaming', 'the heading rendered while streaming');
  await browser.shot(page, 'streaming');
  await reply.locator('pre.code code.hljs .hljs-keyword').first().waitFor();
  expect(!(await reply.textContent()).includes('The last part'), 'the code highlighted before the reply is over');
  expect(await page.locator('#cancel').isVisible(), 'the turn still running while the code shows highlighted');
  // Blocks followed by others are done: drawn once, not again with each chunk.
  const heading = await reply.locator('h1').elementHandle();

  await reply.filter({ hasText: 'The last part.' }).waitFor();
  await turnOver(page);
  expect(await heading.evaluate((node) => node.isConnected), 'the heading drawn once');
  // Drawn block by block, the reply is drawn as it is when drawn whole.
  const streamed = await reply.innerHTML();
  expect((await reply.locator('h1').textContent()) === 'Streaming', 'the heading rendered as Markdown');
  expect(await reply.locator('pre.code code.hljs .hljs-keyword').count() > 0, 'the Rust code highlighted');
  // Sanitised: HTML in the model's text stays text, script links lose their target.
  expect((await reply.textContent()).includes('<img src=x'), 'raw HTML shown as text');
  expect((await reply.locator('img').count()) === 0, 'no image element from the model');
  expect((await reply.locator('a', { hasText: 'a link' }).count()) === 0, 'a javascript: link shown as text, not as a link');
  expect((await reply.textContent()).includes('and a link.'), 'the text of the javascript: link kept');
  // Code without a language is plain text; a language's label sits above the code, not over it.
  const plain = reply.locator('.code-block', { hasText: '<note>plain</note>' });
  expect((await plain.locator('[class*="hljs-"]').count()) === 0, 'code without a language not coloured by a guess');
  expect((await plain.locator('.code-language').count()) === 0, 'code without a language not labelled');
  const rust = reply.locator('.code-block', { hasText: 'println' });
  const label = await rust.locator('.code-language').boundingBox();
  const code = await rust.locator('pre code').boundingBox();
  expect(label.y + label.height <= code.y, `the language label above the code, got ${JSON.stringify({ label, code })}`);
  expect(!(await page.title()).includes('owned'), 'nothing the model wrote ran');
  await page.locator('#usage-text').filter({ hasText: '1.2k / 128k tokens' }).waitFor();
  const entry = page.locator(`.session[data-session-id="${id}"]`);
  await entry.filter({ hasText: 'Show me streaming' }).waitFor();
  const group = page.locator('.session-group', { has: entry });
  expect((await group.getAttribute('data-cwd')) === workspace, 'the session under its project');
  expect((await page.locator('#session-title').textContent()) === 'Show me streaming', 'the session titled by its first prompt');
  await browser.shot(page, 'replied');

  // A slow turn, cancelled with Esc.
  await prompt(page, 'Count slowly');
  const counting = page.locator('.message.agent').nth(1);
  await counting.filter({ hasText: 'Counting: 1 2' }).waitFor();
  await page.keyboard.press('Escape');
  await page.locator('.turn-end.cancelled').waitFor();
  await turnOver(page);
  expect(!(await counting.textContent()).includes('and so on'), 'the turn to stop where it was cancelled');
  await browser.shot(page, 'cancelled');

  // A reload comes back to the same session, its history replayed.
  await page.reload();
  await page.locator('#connection[data-state="connected"]').waitFor();
  await page.locator('.message.agent pre.code').first().waitFor();
  expect(new URL(page.url()).hash === `#session=${id}`, 'the session in the address');
  const users = await page.locator('.message.user .user-text').allTextContents();
  expect(JSON.stringify(users) === JSON.stringify(['Show me streaming', 'Count slowly']), `both prompts replayed, got ${JSON.stringify(users)}`);
  expect((await page.locator('.message.agent').nth(1).textContent()).startsWith('Counting: 1 2'), 'the cancelled reply replayed as far as it went');
  await page.locator('.message.agent').first().filter({ hasText: 'The last part.' }).waitFor();
  const replayed = await page.locator('.message.agent').first().innerHTML();
  expect(replayed === streamed, `the reply as it was drawn while streaming, got ${replayed} after ${streamed}`);
  await page.locator('#usage-text').filter({ hasText: 'tokens' }).waitFor();
  await browser.shot(page, 'reloaded');

  // A narrow window: the session list is a drawer behind the ☰ button.
  await page.setViewportSize({ width: 390, height: 760 });
  expect(await page.locator('#toggle-sessions').isVisible(), 'the sessions button in a narrow window');
  // The list slides out of the way.
  await page.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().right <= 1);
  // Put away, it casts no shadow on the window's edge.
  const shadow = await page.locator('#sidebar').evaluate((node) => getComputedStyle(node).boxShadow);
  expect(shadow === 'none', `no shadow from the list put away, got ${shadow}`);
  // Nor can the keyboard or a screen reader reach it, and ☰ says it is closed.
  await page.waitForFunction(() => getComputedStyle(document.querySelector('#sidebar')).visibility === 'hidden');
  const toggle = page.locator('#toggle-sessions');
  expect((await toggle.getAttribute('aria-controls')) === 'sidebar', 'the sessions button to name the list it opens');
  expect((await toggle.getAttribute('aria-expanded')) === 'false', 'the sessions button to say the list is closed');
  await page.locator('#sign-out').focus();
  await page.keyboard.press('Tab');
  const reached = await page.evaluate(() => document.querySelector('#sidebar').contains(document.activeElement));
  expect(!reached, 'the keyboard to pass the list put away');
  const title = await page.locator('#session-title').evaluate((node) => [node.scrollWidth, node.clientWidth]);
  expect(title[0] <= title[1], `the whole session title shown, got ${title[0]}px in ${title[1]}px`);
  // A table too wide for the window scrolls on its own.
  const scrolled = await reply.locator('.table-scroll').evaluate((node) => {
    node.scrollLeft = node.scrollWidth;
    return node.scrollLeft;
  });
  expect(scrolled > 0, 'the table to scroll sideways');
  const host = await page.locator('#transcript-host').evaluate((node) => [node.scrollWidth, node.clientWidth]);
  expect(host[0] <= host[1], `the conversation not to scroll sideways, got ${host[0]}px in ${host[1]}px`);
  await browser.shot(page, 'narrow');
  await page.locator('#toggle-sessions').click();
  await page.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0);
  expect((await toggle.getAttribute('aria-expanded')) === 'true', 'the sessions button to say the list is open');
  expect(
    (await page.locator('#sidebar').evaluate((node) => getComputedStyle(node).visibility)) === 'visible',
    'the list open to be seen',
  );
  // A click beside the list puts it away.
  await page.mouse.click(380, 400);
  await page.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().right <= 1);
  expect((await toggle.getAttribute('aria-expanded')) === 'false', 'the sessions button to say the list is closed again');
  await page.locator('#toggle-sessions').click();
  await page.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().x >= 0);
  await browser.shot(page, 'narrow-sessions');
  await entry.click();
  await page.waitForFunction(() => document.querySelector('#sidebar').getBoundingClientRect().right <= 1);
  const composer = await page.locator('#composer').boundingBox();
  expect(composer.width <= 390, `the composer to fit, it is ${composer.width}px wide`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(overflow <= 390, `nothing wider than the window, got ${overflow}px`);
});
