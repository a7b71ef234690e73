// A prompt cannot be sent before the session's history is on the page: it
// would show above the history. Send waits for it; Ctrl+Enter does nothing
// meanwhile, and the prompt stays in the composer, to go after the history.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

await scenario('early', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  await newSession(page, workspace);
  await prompt(page, 'The first prompt');
  await page.locator('.message.agent', { hasText: 'The first prompt' }).waitFor();
  await turnOver(page);

  // The draft outlasts a reload; the moment the history starts loading,
  // the page is told to send it.
  await page.locator('#prompt').fill('The second prompt');
  await page.addInitScript(() => {
    const watch = new MutationObserver(() => {
      const loading = document.querySelector('.transcript.loading');
      const text = document.querySelector('#prompt')?.value;
      if (!loading || !text || window.__tried) return;
      window.__tried = { sendDisabled: document.querySelector('#send').disabled };
      document.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', ctrlKey: true, bubbles: true }));
    });
    watch.observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['class'] });
  });
  await page.reload();
  await page.locator('.transcript:not(.loading) .message.agent').first().waitFor();
  const tried = await page.evaluate(() => window.__tried);
  expect(tried, 'the prompt tried while the history was loading');
  expect(tried.sendDisabled, 'Send disabled while the history loads');
  const users = async () => page.locator('.message.user .user-text').allTextContents();
  expect(JSON.stringify(await users()) === JSON.stringify(['The first prompt']), `only the history, got ${JSON.stringify(await users())}`);
  expect((await page.locator('#prompt').inputValue()) === 'The second prompt', 'the prompt kept in the composer');
  await browser.shot(page, 'loaded');

  // Sent now, it goes after the history.
  await page.locator('#send:not([disabled])').waitFor();
  await page.locator('#prompt').press('Control+Enter');
  await page.locator('.message.agent', { hasText: 'The second prompt' }).waitFor();
  await turnOver(page);
  const order = await page.locator('.transcript > *').evaluateAll((nodes) => nodes.map((node) => node.classList[1]));
  expect(
    JSON.stringify(order) === JSON.stringify(['user', 'agent', 'user', 'agent']),
    `the prompt after the history, got ${JSON.stringify(order)}`,
  );
  const sent = await users();
  expect(JSON.stringify(sent) === JSON.stringify(['The first prompt', 'The second prompt']), `both prompts in order, got ${JSON.stringify(sent)}`);
  await browser.shot(page, 'sent');
});
