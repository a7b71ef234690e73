// Markdown beyond the basics: a task list shows its boxes, ticked or not,
// as characters rather than form controls; a code block has a Copy button,
// and its language's label is outside the code, so that selecting the whole
// block (or copying it) takes the code alone.

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
});
