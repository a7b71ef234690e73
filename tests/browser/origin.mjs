// A page from another origin cannot open Punie's WebSocket, even in a
// browser that is signed in (browsers send the cookie to every port of the
// host): one served from another port of 127.0.0.1, and one with an opaque
// origin (a data: URL). The app's own page, in the same browser, can.

import { createServer } from 'node:http';
import { env, expect, scenario, signal, signIn } from './lib.mjs';

const url = env('PUNIE_URL');
const link = env('PUNIE_LINK');
const acp = `${url.replace(/^http/, 'ws')}/acp`;

/** Try to open Punie's WebSocket from `page`: 'open', or how it failed. */
function tryWebSocket(page) {
  return page.evaluate(
    (target) =>
      new Promise((resolve) => {
        const ws = new WebSocket(target);
        ws.onopen = () => {
          ws.close();
          resolve('open');
        };
        ws.onclose = (event) => resolve(`closed ${event.code}`);
      }),
    acp,
  );
}

await scenario('origin', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  expect((await tryWebSocket(page)) === 'open', 'the app itself to open the WebSocket');

  // Another site on this host: a port of its own.
  const other = createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>Another site</title><h1>Another site</h1>');
  });
  await new Promise((resolve) => other.listen(0, '127.0.0.1', resolve));
  const otherUrl = `http://127.0.0.1:${other.address().port}/`;
  signal(`another site at ${otherUrl.slice(0, -1)}`);
  try {
    // Only the other site's page may fail to connect; the app's page, on
    // Punie's own port, must not.
    const exactly = new RegExp(`^${otherUrl.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`);
    browser.allowError(exactly, /WebSocket connection to .* failed/);
    const foreign = await page.context().newPage();
    await foreign.goto(otherUrl);
    const cookies = await foreign.context().cookies(url);
    expect(cookies.length === 1, 'the browser to hold the sign-in cookie');
    const outcome = await tryWebSocket(foreign);
    expect(outcome === 'closed 1006', `another port's page to be refused, got ${outcome}`);
    await browser.shot(foreign, 'another-port');
  } finally {
    other.close();
  }

  // An opaque origin (`Origin: null`).
  browser.allowError(/^data:/, /WebSocket connection to .* failed/);
  const opaque = await page.context().newPage();
  await opaque.goto('data:text/html,<title>data</title>');
  const outcome = await tryWebSocket(opaque);
  expect(outcome === 'closed 1006', `a data: page to be refused, got ${outcome}`);

  // Still signed in and connected, in the app.
  expect((await tryWebSocket(page)) === 'open', 'the app to keep its access');
});
