// Markdown beyond the basics: a task list shows its boxes, ticked or not,
// as characters rather than form controls; a code block has a Copy button,
// and its language's label is outside the code, so that selecting the whole
// block (or copying it) takes the code alone. A word of 40,000 characters
// wraps without `overflow-wrap: anywhere` (which took Chromium seconds to
// lay out) and never widens the page. Only links to the web, to mail or
// within the page stay links (a footnote is not a link to `note`), and an
// override in the text is shown marked, its paragraph laid out apart.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const code = 'fn main() {\n    println!("hi");\n}';

await scenario('markdown', async (browser) => {
  const page = await browser.newPage();
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write']);
  await signIn(page, link);
  await newSession(page, workspace);
  await prompt(page, 'Plan, and show me the code');
  const reply = page.locator('.message.agent');
  await reply.filter({ hasText: 'Done.' }).waitFor();
  await turnOver(page);

  const tasks = await reply.locator('li').evaluateAll((items) =>
    items.map((item) => ({ text: item.textContent.trim(), said: item.querySelector('.task-box')?.getAttribute('aria-label') })),
  );
  expect(
    JSON.stringify(tasks) ===
      JSON.stringify([
        { text: '☐ write the test', said: 'not done' },
        { text: '☑ read the code', said: 'done' },
      ]),
    `the task list's boxes, got ${JSON.stringify(tasks)}`,
  );
  expect((await reply.locator('input').count()) === 0, 'no form controls from the model');
  await browser.shot(page, 'tasks-and-code');

  // The label is outside the code: selected whole, the block is the code alone.
  const block = reply.locator('.code-block');
  expect((await block.locator('.code-language').textContent()) === 'rust', 'the language named');
  expect((await block.locator('pre .code-language').count()) === 0, 'the label outside the code');
  const selected = await block.locator('pre').evaluate((pre) => {
    const range = document.createRange();
    range.selectNodeContents(pre);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    return getSelection().toString();
  });
  expect(selected === code, `the selection to be the code alone, got ${JSON.stringify(selected)}`);

  // Copy puts the code on the clipboard, and says it did.
  const copy = block.getByRole('button', { name: 'Copy the code' });
  await copy.click();
  await copy.filter({ hasText: 'Copied' }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied === code, `the code on the clipboard, got ${JSON.stringify(copied)}`);

  // The long word wraps the cheap way, and nothing gets wider than the window.
  const wrap = await reply.evaluate((node) => getComputedStyle(node).overflowWrap);
  expect(wrap === 'break-word', `long words wrapped with break-word, got ${wrap}`);
  for (const width of [1200, 390]) {
    await page.setViewportSize({ width, height: 800 });
    await page.waitForFunction((width) => innerWidth === width, width);
    const wide = await page.evaluate(() => {
      const host = document.querySelector('#transcript-host');
      const blob = [...document.querySelectorAll('.message.agent p')].find((p) => p.textContent.startsWith('A blob:'));
      return { page: document.documentElement.scrollWidth, host: host.scrollWidth - host.clientWidth, blob: blob.scrollWidth - blob.clientWidth };
    });
    expect(wide.page <= width && wide.host <= 0 && wide.blob <= 0, `the long word within a ${width}px window, got ${JSON.stringify(wide)}`);
  }
  await browser.shot(page, 'long-word');
  await page.setViewportSize({ width: 1200, height: 800 });

  // Links lead to the web, to mail or within the page; the rest are text.
  const links = await reply.locator('a').evaluateAll((links) => links.map((a) => [a.textContent, a.getAttribute('href')]));
  expect(
    JSON.stringify(links) ===
      JSON.stringify([
        ['the site', 'https://example.com/'],
        ['mail', 'mailto:a@example.com'],
        ['above', '#top'],
      ]),
    `only links to the web, to mail and within the page, got ${JSON.stringify(links)}`,
  );
  await reply.locator('p', { hasText: 'A note^1, a page, the site' }).waitFor();

  // The override is a mark, and its paragraph is laid out apart.
  const saved = reply.locator('p', { hasText: 'Saved as' });
  const said = await saved.textContent();
  expect(!/[\u202a-\u202e\u2066-\u2069]/.test(said), `no override on the page, got ${JSON.stringify(said)}`);
  expect(said === 'Saved as invoiceU+202Efdp.exe for you.', `the paragraph in the order it was written, got ${JSON.stringify(said)}`);
  expect((await saved.locator('.hidden-char').getAttribute('title')).startsWith('U+202E RIGHT-TO-LEFT OVERRIDE'), 'the mark to say what it is');
  const bidi = await saved.evaluate((node) => getComputedStyle(node).unicodeBidi);
  expect(bidi === 'isolate', `the paragraph laid out apart, got ${bidi}`);
});
