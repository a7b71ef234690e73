// What the page does when things go wrong around it: a reply streaming in
// one session leaves the session list alone (a click on it lands); a prompt
// larger than the server takes is kept, with a word on why it was not sent;
// a session deleted by another client leaves the list at once.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const deleted = env('PUNIE_DELETED_SESSION');

/** Delete session `id` through a connection of the page's own, as another
 * client of the same person would. */
function deleteSession(page, id) {
  return page.evaluate(
    (id) =>
      new Promise((resolve, reject) => {
        const socket = new WebSocket(`ws://${location.host}/acp`);
        const send = (message) => socket.send(JSON.stringify({ jsonrpc: '2.0', ...message }));
        socket.onopen = () => send({ id: 1, method: 'initialize', params: { protocolVersion: 1, clientCapabilities: {} } });
        socket.onmessage = (event) => {
          const message = JSON.parse(event.data);
          if (message.id === 1) send({ id: 2, method: 'session/delete', params: { sessionId: id } });
          if (message.id === 2) {
            socket.close();
            if (message.error) reject(new Error(message.error.message));
            else resolve();
          }
        };
        socket.onerror = () => reject(new Error('the WebSocket failed'));
      }),
    id,
  );
}

await scenario('mishaps', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const quiet = await newSession(page, workspace);
  const busy = await newSession(page, workspace);

  // A reply streams in one session; the other's entry in the list stays put.
  const entry = page.locator(`.session[data-session-id="${quiet}"]`);
  await prompt(page, 'Count slowly');
  // Once the turn has begun (and the list shows it running), the list stays.
  await page.locator('.message.agent', { hasText: 'chunk 5 ' }).waitFor();
  const before = await entry.elementHandle();
  await page.locator('.message.agent', { hasText: 'chunk 10 ' }).waitFor();
  expect(await before.evaluate((node) => node.isConnected), 'the list not to be rebuilt while a reply streams');
  await entry.click();
  await page.waitForFunction((id) => new URLSearchParams(location.hash.slice(1)).get('session') === id, quiet);

  // Too big to send: kept, and said why.
  await page.setInputFiles('#file-input', { name: 'big.txt', mimeType: 'text/plain', buffer: Buffer.alloc(100_000, 'a') });
  await page.locator('#attachments .attachment').first().waitFor();
  await prompt(page, 'Read this');
  await page.locator('#notice-text', { hasText: 'the server takes messages of up to' }).waitFor();
  const notice = await page.locator('#notice-text').textContent();
  expect(notice.includes('--max-message-bytes'), `the notice to name the limit, got ${notice}`);
  expect((await page.locator('#prompt').inputValue()) === 'Read this', 'the prompt kept to send again');
  expect((await page.locator('#attachments .attachment').count()) === 1, 'the file kept');
  expect((await page.locator('.message.user').count()) === 0, 'nothing shown as sent');
  await browser.shot(page, 'too-big');

  // A session another client deletes leaves the list at once; the open
  // one says so.
  const gone = page.locator(`.session[data-session-id="${deleted}"]`);
  await gone.waitFor();
  await deleteSession(page, deleted);
  await gone.waitFor({ state: 'detached' });
  await deleteSession(page, quiet);
  await page.locator('#notice-text', { hasText: 'That session was deleted by another client.' }).waitFor();
  await page.locator(`.session[data-session-id="${quiet}"]`).waitFor({ state: 'detached' });
  expect(!new URL(page.url()).hash.includes(quiet), 'the address to name the session no more');
  await browser.shot(page, 'deleted');

  // The streaming session ends as it should.
  await page.locator(`.session[data-session-id="${busy}"]`).click();
  await page.locator('.message.agent', { hasText: 'chunk 30 ' }).waitFor();
  await turnOver(page);
});
