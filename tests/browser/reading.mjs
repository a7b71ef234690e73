// Reading a conversation while it grows. Scrolled back, the person stays
// where they are, and a button says that output (or a question) came below;
// another session and back, they find their place again. A write of a
// 3,000-line file shows its diff in a box of its own, so that the card's
// title and its question are in view together. For a screen reader: the
// conversation is a log whose messages are read once whole, a status dot is
// not read, the permission buttons name the call, and skip links lead to the
// prompt and the conversation.

import { env, expect, newSession, prompt, scenario, scrolledToNewest, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

const scrollTop = (page) => page.locator('#transcript-host').evaluate((host) => host.scrollTop);
const belowView = (page) =>
  page.locator('#transcript-host').evaluate((host) => host.scrollHeight - host.scrollTop - host.clientHeight);

await scenario('reading', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  // The first stop of the keyboard is a skip link.
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement?.id);
  expect(first === 'skip-to-prompt', `a skip link first, got ${first}`);

  const reading = await newSession(page, workspace);
  // Long enough to take a line more in a narrower window.
  await prompt(
    page,
    'Write at length, then a big file: take your time over every paragraph, say it all in full, leave nothing out, ' +
      'and when the paragraphs are written, write the big file too, every line of it, so that there is plenty to read back in.',
  );
  const reply = page.locator('.message.agent').first();
  await reply.filter({ hasText: 'Paragraph 5 ' }).waitFor();
  expect((await page.locator('.transcript').getAttribute('role')) === 'log', 'the conversation to be a log');
  expect((await reply.getAttribute('aria-busy')) === 'true', 'a message still streaming not read out chunk by chunk');
  await reply.filter({ hasText: 'Paragraph 25 ' }).waitFor();
  await scrolledToNewest(page);

  // Reading back while the reply goes on.
  const host = await page.locator('#transcript-host').boundingBox();
  await page.mouse.move(host.x + host.width / 2, host.y + host.height / 2);
  await page.mouse.wheel(0, -400);
  await page.waitForFunction(() => {
    const host = document.querySelector('#transcript-host');
    return host.scrollHeight - host.scrollTop - host.clientHeight > 200;
  });
  const newBelow = page.locator('#new-below');
  await newBelow.filter({ hasText: 'New output below' }).waitFor();
  const place = await scrollTop(page);
  await browser.shot(page, 'reading-back');

  // Another session, and back: the place is kept, and the news below too.
  await newSession(page, workspace);
  await page.locator(`.session[data-session-id="${reading}"]`).click();
  await page.locator(`.transcript[data-session-id="${reading}"]`).waitFor();
  const back = await scrollTop(page);
  expect(Math.abs(back - place) <= 2, `the place kept, got ${back} after ${place}`);
  expect(await newBelow.isVisible(), 'the button still saying output came below');

  // The question comes below the view; the view stays where it is.
  await page.locator('button[data-option-id="allow_once"]').waitFor({ state: 'attached' });
  await newBelow.filter({ hasText: 'A question waits below' }).waitFor();
  expect(Math.abs((await scrollTop(page)) - place) <= 2, 'the view not moved by the question');
  expect((await belowView(page)) > 200, 'the question out of view');
  await browser.shot(page, 'question-below');
  await newBelow.click();
  await page.waitForFunction(() => document.activeElement?.dataset?.optionId === 'allow_once');
  await newBelow.waitFor({ state: 'hidden' });

  // The big diff scrolls in its card; the card's title and question are in view together.
  const card = page.locator('.tool-call').last();
  const fit = await card.evaluate((card) => {
    const view = document.querySelector('#transcript-host').getBoundingClientRect();
    const title = card.querySelector('.tool-header').getBoundingClientRect();
    const allow = card.querySelector('button[data-option-id="allow_once"]').getBoundingClientRect();
    const lines = card.querySelector('.diff-lines');
    return {
      together: title.top >= view.top && allow.bottom <= view.bottom,
      card: card.getBoundingClientRect().height,
      view: view.height,
      scrolls: lines.scrollHeight > lines.clientHeight,
    };
  });
  expect(fit.together && fit.card < fit.view, `the card's title and question in view together, got ${JSON.stringify(fit)}`);
  expect(fit.scrolls, 'the diff to scroll in its box');
  await browser.shot(page, 'big-diff-question');

  // Each option names the call it answers; the status dots are not read.
  const title = (await card.locator('.tool-title').textContent()).trim();
  const labels = await card.locator('.options button').evaluateAll((buttons) => buttons.map((b) => b.getAttribute('aria-label')));
  expect(labels[0] === `Allow: ${title}` && labels[3] === `Always reject: ${title}`, `the buttons to name the call, got ${JSON.stringify(labels)}`);
  const dots = await page.locator('.session .status .dot').evaluateAll((dots) => dots.map((dot) => dot.getAttribute('aria-hidden')));
  expect(dots.length === 2 && dots.every((hidden) => hidden === 'true'), `the status dots hidden from a screen reader, got ${JSON.stringify(dots)}`);

  await page.keyboard.press('Enter');
  await page.locator('.message.agent', { hasText: 'Written.' }).waitFor();
  await turnOver(page);
  await page.waitForFunction(() => document.querySelectorAll('.message[aria-busy], .transcript[aria-busy]').length === 0);

  // The skip links move the keyboard, and leave the address naming the session.
  await page.locator('#skip-to-conversation').focus();
  await page.keyboard.press('Enter');
  expect(
    await page.evaluate(() => document.activeElement?.classList.contains('transcript')),
    'the keyboard on the conversation',
  );
  await page.locator('#skip-to-prompt').focus();
  await page.keyboard.press('Enter');
  expect((await page.evaluate(() => document.activeElement?.id)) === 'prompt', 'the keyboard on the prompt');
  expect(new URL(page.url()).hash === `#session=${reading}`, `the address to name the session still, got ${page.url()}`);

  // Read back, in a window made narrower: the lines wrap anew and the
  // conversation grows, yet nothing new came below.
  await page.locator('#transcript-host').evaluate((host) => (host.scrollTop = 0));
  await page.waitForFunction(() => !document.querySelector('#transcript-host').classList.contains('following'));
  const before = await page.locator('#transcript-host').evaluate((host) => host.scrollHeight);
  await page.setViewportSize({ width: 800, height: 800 });
  await page.waitForFunction(() => innerWidth === 800);
  // Two frames: the resize laid out and observed.
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  const after = await page.locator('#transcript-host').evaluate((host) => host.scrollHeight);
  expect(after > before, `the conversation taller once wrapped anew, got ${after} after ${before}`);
  expect(!(await newBelow.isVisible()), 'no news below after a resize');
});
