// A picture an MCP server's tool returned (a screenshot, say) shows in the
// tool call's card, as an image, when the session is opened in the page.

import { env, expect, scenario, signIn } from './lib.mjs';

const link = env('PUNIE_LINK');
const session = env('PUNIE_SESSION');

await scenario('picture', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  await page.locator(`.session[data-session-id="${session}"]`).click();
  const card = page.locator('.tool-call', { hasText: 'Picture (tools)' });
  await card.waitFor();
  const image = card.locator('img.tool-image');
  await image.waitFor();
  expect((await image.getAttribute('src')).startsWith('data:image/png;base64,'), 'the picture as a PNG');
  const width = await image.evaluate((img) => img.complete && img.naturalWidth);
  expect(width === 1, `the 1×1 picture decoded, got a width of ${width}`);
  expect((await card.locator('pre.output').textContent()).includes('a picture'), 'its caption beside it');
  await browser.shot(page, 'picture');
});
