// The composer while other sessions stream: the chips of attached files and
// the command list are drawn once, not at every chunk of a reply in another
// session, so a slow click on a × or on a command lands and the keyboard
// stays where it was. A prompt that cannot go says why (a turn is running;
// Esc cancels it), and files dropped with no session open are not silently
// lost. A session is deleted from the page once the person confirms it.

import { TIMEOUT_MS, env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

/** Drag a file over the conversation and drop it, as the browser does. */
function dropFile(page, name) {
  return page.evaluate((name) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File(['dropped\n'], name, { type: 'text/plain' }));
    const main = document.querySelector('#main');
    for (const type of ['dragenter', 'dragover']) {
      main.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }
    const said = document.querySelector('#drop-zone').textContent;
    main.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    return said;
  }, name);
}

/** Count the chunks of replies the page receives, as they arrive. */
function countChunks(page) {
  const received = { chunks: 0 };
  page.on('websocket', (socket) =>
    socket.on('framereceived', ({ payload }) => {
      if (typeof payload === 'string' && payload.includes('"agent_message_chunk"')) received.chunks += 1;
    }),
  );
  return received;
}

/** Wait until `count` more reply chunks have reached the page. */
async function chunksArrive(received, count) {
  const target = received.chunks + count;
  const deadline = Date.now() + TIMEOUT_MS;
  while (received.chunks < target) {
    if (Date.now() > deadline) throw new Error(`${count} more chunks did not arrive within ${TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A press of the mouse as a person makes it: a moment between down and up. */
async function slowClick(page, locator) {
  const box = await locator.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(150);
  await page.mouse.up();
}

await scenario('composer', async (browser) => {
  const page = await browser.newPage();
  const received = countChunks(page);
  await signIn(page, link);

  // No session open: no prompt for a dropped file to go with, and the page says so.
  await page.locator('#welcome').waitFor();
  const said = await dropFile(page, 'early.txt');
  expect(/open or start a session/i.test(said), `the drop target to say a session is needed first, got ${JSON.stringify(said)}`);
  await page.locator('#notice-text', { hasText: 'Open a session, or start one, before attaching files' }).waitFor();
  await browser.shot(page, 'dropped-with-no-session');

  const streaming = await newSession(page, workspace);
  await prompt(page, 'Stream for a while');
  await page.locator('.message.agent', { hasText: 'chunk 3 ' }).waitFor();
  // Ctrl+Enter while the turn runs: the prompt stays, and the page says why.
  await prompt(page, 'Too soon');
  await page.locator('#notice-text', { hasText: 'A turn is running in this session' }).waitFor();
  expect((await page.locator('#notice-text').textContent()).includes('Esc'), 'the notice to say Esc cancels the turn');
  expect((await page.locator('#prompt').inputValue()) === 'Too soon', 'the prompt kept in the composer');
  await page.locator('#prompt').fill('');

  // Another session, while the first one streams on.
  const other = await newSession(page, workspace);
  const running = page.locator(`.session[data-session-id="${streaming}"] .status[data-status="running"]`);
  await running.waitFor();
  await page.locator('#file-input').setInputFiles(
    ['one.txt', 'two.txt', 'three.txt'].map((name) => ({ name, mimeType: 'text/plain', buffer: Buffer.from(`${name}\n`) })),
  );
  const chips = page.locator('#attachments .chip');
  await chips.nth(2).waitFor();
  const first = await chips.first().elementHandle();
  await chips.first().getByRole('button').focus();
  const streamed = await page.locator('.message.agent').count();
  // Many chunks of the other session's reply, each a chance to redraw.
  await chunksArrive(received, 10);
  expect(await running.isVisible(), 'the other session to be streaming still');
  expect(await first.evaluate((node) => node.isConnected), 'the chips not drawn again while another session streams');
  const focused = await page.evaluate(() => document.activeElement?.getAttribute('aria-label'));
  expect(focused === 'Remove one.txt', `the keyboard to stay on the ×, got ${focused}`);
  expect(streamed === 0, 'nothing of the other session shown here');

  // Enter on the × with the keyboard lands, and the keyboard goes to the
  // next file's; so does a slow click on a ×.
  await page.keyboard.press('Enter');
  await page.locator('#attachments .chip', { hasText: 'one.txt' }).waitFor({ state: 'detached' });
  const next = await page.evaluate(() => document.activeElement?.getAttribute('aria-label'));
  expect(next === 'Remove two.txt', `the keyboard on the next file's ×, got ${next}`);
  await slowClick(page, chips.nth(1).getByRole('button'));
  await page.locator('#attachments .chip', { hasText: 'three.txt' }).waitFor({ state: 'detached' });
  expect((await chips.allTextContents()).join() === 'two.txt×', `one file left, got ${await chips.allTextContents()}`);
  await browser.shot(page, 'files-while-streaming');

  // The command list, likewise.
  await page.locator('#prompt').fill('/');
  const review = page.locator('.command-hint[data-command="review"]');
  await review.waitFor();
  const hint = await review.elementHandle();
  await chunksArrive(received, 10);
  expect(await running.isVisible(), 'the other session to be streaming still');
  expect(await hint.evaluate((node) => node.isConnected), 'the command list not drawn again while another session streams');
  await slowClick(page, review);
  await page.waitForFunction(() => document.querySelector('#prompt').value === '/review ');
  await browser.shot(page, 'command-while-streaming');

  // Back to the streaming session, whose turn Esc cancels.
  await page.locator(`.session[data-session-id="${streaming}"]`).click();
  await page.locator('#cancel').waitFor();
  await page.keyboard.press('Escape');
  await page.locator('.turn-end.cancelled').waitFor();
  await turnOver(page);

  // Deleting a session asks first; kept, it stays; deleted, it leaves the
  // list and the page.
  const streamingRow = page.locator(`.session[data-session-id="${streaming}"]`);
  await page.locator('#delete-session').click();
  await page.locator('#delete-dialog[open]').waitFor();
  const what = await page.locator('#delete-what').textContent();
  expect(what.includes('cannot be undone'), `the dialog to say what deleting does, got ${what}`);
  await browser.shot(page, 'delete-asks');
  await page.getByRole('button', { name: 'Keep it' }).click();
  await page.locator('#delete-dialog[open]').waitFor({ state: 'detached' });
  expect(await streamingRow.isVisible(), 'a kept session stays in the list');
  await page.locator('#delete-session').click();
  await page.locator('#confirm-delete').click();
  await streamingRow.waitFor({ state: 'detached' });
  await page.locator('#notice-text', { hasText: 'The session was deleted.' }).waitFor();
  await page.locator('#welcome').waitFor();
  // The server has forgotten it: a fresh page lists the other session only.
  await page.reload();
  await page.locator(`.session[data-session-id="${other}"]`).waitFor();
  expect((await streamingRow.count()) === 0, 'the deleted session not listed again');
});
