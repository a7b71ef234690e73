// Files go with a prompt as embedded resources, chosen with the file picker
// or dropped on the conversation, text as text and anything else as a blob,
// none over the size limit; pictures go as images, which the prompt shows.
// The `test` model repeats the prompt it got, attachments included, and
// counts its pictures. A directory the server cannot use is refused. A new
// session can have a model of its own. The keyboard and the address move
// between sessions, each with its own draft; an address naming no session
// says so. A file left out (too big, or an empty picture) stays said after
// the prompt goes, until the notice is put away or a file is attached again.
// A file's chip shows an override in its name marked, laid out apart from
// the chips beside it, and a long name cut short with its × in reach.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');
const script = env('PUNIE_SCRIPT');

await scenario('attachments', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  const first = await newSession(page, workspace);

  await page.locator('#file-input').setInputFiles({
    name: 'picked.md',
    mimeType: 'text/markdown',
    buffer: Buffer.from('# Picked\nchosen with the picker\n'),
  });
  await page.locator('#attachments .chip', { hasText: 'picked.md' }).waitFor();

  // A drop, as the browser delivers one. The page must take the dragover
  // (prevent its default), or a real browser opens the file instead.
  const taken = await page.evaluate(() => {
    const transfer = new DataTransfer();
    transfer.items.add(new File(['dropped on the page\n'], 'dropped.txt', { type: 'text/plain' }));
    const main = document.querySelector('#main');
    const prevented = {};
    for (const type of ['dragenter', 'dragover', 'drop']) {
      const event = new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true });
      main.dispatchEvent(event);
      prevented[type] = event.defaultPrevented;
    }
    return prevented;
  });
  expect(taken.dragover && taken.drop, `the page to take the drag and the drop, got ${JSON.stringify(taken)}`);
  await page.locator('#attachments .chip', { hasText: 'dropped.txt' }).waitFor();
  await browser.shot(page, 'attached');

  await prompt(page, 'Read these');
  await turnOver(page);
  // Drawn a frame or so after it arrives.
  await page.locator('.message.agent', { hasText: 'dropped on the page' }).waitFor();
  const reply = await page.locator('.message.agent').textContent();
  for (const part of ['Read these', 'file:///picked.md', 'chosen with the picker', 'file:///dropped.txt', 'dropped on the page']) {
    expect(reply.includes(part), `the model to get ${JSON.stringify(part)}, it said ${JSON.stringify(reply)}`);
  }
  const chips = await page.locator('.message.user .chip').allTextContents();
  expect(chips.length === 2, `the prompt to show its two files, got ${JSON.stringify(chips)}`);
  expect((await page.locator('#attachments .chip').count()) === 0, 'the composer emptied');
  await browser.shot(page, 'sent');

  // Names that would pass for others, or push the row out of shape.
  const spoofed = 'invoice\u202Efdp.exe';
  const long = `${'a_file_with_a_long_name_'.repeat(12)}end.txt`;
  await page.locator('#file-input').setInputFiles([
    { name: spoofed, mimeType: 'text/plain', buffer: Buffer.from('x\n') },
    { name: 'next.txt', mimeType: 'text/plain', buffer: Buffer.from('x\n') },
    { name: long, mimeType: 'text/plain', buffer: Buffer.from('x\n') },
  ]);
  const pending = page.locator('#attachments .chip');
  await pending.nth(2).waitFor();
  const row = await page.evaluate(() => {
    const chips = [...document.querySelectorAll('#attachments .chip')];
    const box = (node) => node.getBoundingClientRect();
    return {
      texts: chips.map((chip) => chip.textContent),
      labels: chips.map((chip) => chip.querySelector('.remove').getAttribute('aria-label')),
      titles: chips.map((chip) => chip.title),
      bidi: getComputedStyle(chips[0]).unicodeBidi,
      // Each × after its own name, to the right, not reversed to its left.
      inOrder: chips.slice(0, 2).every((chip) => box(chip.querySelector('.remove')).left >= box(chip.querySelector('.chip-name')).right - 1),
      next: box(chips[1]).left >= box(chips[0]).right,
    };
  });
  expect(row.texts[0] === 'invoiceU+202Efdp.exe×', `the override marked in the chip, got ${JSON.stringify(row.texts[0])}`);
  expect(!row.labels.some((label) => /[\u202a-\u202e]/.test(label)), `no override in the × labels, got ${JSON.stringify(row.labels)}`);
  expect(row.labels[0] === 'Remove invoice⟨U+202E⟩fdp.exe', `the × names the file, got ${JSON.stringify(row.labels[0])}`);
  expect(row.bidi === 'isolate', `the chip laid out apart from the next, got ${row.bidi}`);
  expect(row.inOrder && row.next, `the chips and their × in order, got ${JSON.stringify(row)}`);
  const cut = await pending.nth(2).evaluate((chip) => {
    const name = chip.querySelector('.chip-name');
    const remove = chip.querySelector('.remove').getBoundingClientRect();
    const box = chip.getBoundingClientRect();
    const list = document.querySelector('#attachments');
    return {
      ellipsis: getComputedStyle(name).textOverflow === 'ellipsis' && name.scrollWidth > name.clientWidth,
      removeInside: remove.width > 0 && remove.left >= box.left && remove.right <= box.right + 0.5,
      fits: box.right <= list.getBoundingClientRect().right + 0.5 && list.scrollWidth <= list.clientWidth,
    };
  });
  expect(cut.ellipsis && cut.removeInside && cut.fits, `a long name cut short, its × in the chip, got ${JSON.stringify(cut)}`);
  expect((await pending.nth(2).getAttribute('title')) === long, 'the long name whole in the tooltip');
  await browser.shot(page, 'names');
  await pending.nth(2).getByRole('button', { name: `Remove ${long}` }).click();
  await pending.nth(1).getByRole('button', { name: 'Remove next.txt' }).click();
  await pending.first().getByRole('button').click();
  await pending.first().waitFor({ state: 'detached' });

  // A file that is not text goes as a blob and a picture as an image; one
  // over the limit is refused with a notice, and nothing else is lost.
  const pixel = Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
    'base64',
  );
  // A screenshot pasted into the prompt is attached too; pasted text is not,
  // even with a picture of it beside.
  const pasted = await page.evaluate((pixelBase64) => {
    const bytes = Uint8Array.from(atob(pixelBase64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], 'image.png', { type: 'image/png' }));
    const event = new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true });
    document.querySelector('#prompt').dispatchEvent(event);
    // Cells copied from a spreadsheet: their text, and a picture of them.
    const text = new DataTransfer();
    text.setData('text/plain', 'words');
    text.items.add(new File([bytes], 'image.png', { type: 'image/png' }));
    const words = new ClipboardEvent('paste', { clipboardData: text, bubbles: true, cancelable: true });
    document.querySelector('#prompt').dispatchEvent(words);
    return { picture: event.defaultPrevented, text: words.defaultPrevented };
  }, pixel.toString('base64'));
  expect(pasted.picture && !pasted.text, `a pasted picture taken and pasted text left alone, got ${JSON.stringify(pasted)}`);
  await page.locator('#attachments .chip', { hasText: /^pasted-\d{6}\.png/ }).waitFor();
  await page.locator('#attachments .chip', { hasText: 'pasted-' }).getByRole('button').click();
  await page.locator('#attachments .chip', { hasText: 'pasted-' }).waitFor({ state: 'detached' });
  await page.locator('#file-input').setInputFiles({ name: 'empty.png', mimeType: 'image/png', buffer: Buffer.alloc(0) });
  await page.locator('#notice', { hasText: 'empty.png is empty; it was not attached.' }).waitFor();
  await page.locator('#file-input').setInputFiles([
    { name: 'data.bin', mimeType: 'application/octet-stream', buffer: Buffer.from([0x00, 0xff, 0xfe, 0x01]) },
    { name: 'pixel.png', mimeType: 'image/png', buffer: pixel },
    { name: 'huge.txt', mimeType: 'text/plain', buffer: Buffer.alloc(8 * 1024 * 1024 + 1, 'a') },
  ]);
  // Attaching again put the last notice away; this one is left up.
  await page.locator('#notice', { hasText: 'huge.txt is larger than 8 MiB; it was not attached.' }).waitFor();
  const waiting = await page.locator('#attachments .chip').allTextContents();
  expect(
    waiting.length === 2 && waiting[0].includes('data.bin') && waiting[1].includes('pixel.png'),
    `only the small files attached, got ${JSON.stringify(waiting)}`,
  );
  await prompt(page, 'And these');
  await page.locator('.message.agent', { hasText: '[binary content of file:///data.bin]' }).waitFor();
  await page.locator('.message.agent', { hasText: 'You showed me 1 picture (image/png).' }).waitFor();
  await turnOver(page);
  // The prompt went without the file: the notice still says so.
  await page.locator('#notice', { hasText: 'huge.txt is larger than 8 MiB' }).waitFor();
  // A file attached again puts it away.
  await page.locator('#file-input').setInputFiles({ name: 'again.txt', mimeType: 'text/plain', buffer: Buffer.from('x\n') });
  await page.locator('#attachments .chip', { hasText: 'again.txt' }).waitFor();
  expect(!(await page.locator('#notice').isVisible()), 'the notice gone once a file was attached again');
  await page.locator('#attachments .chip', { hasText: 'again.txt' }).getByRole('button').click();
  await page.locator('#attachments .chip').first().waitFor({ state: 'detached' });
  const shown = page.locator('.message.user img.prompt-image');
  await shown.waitFor();
  const width = await shown.evaluate((image) => image.complete && image.naturalWidth);
  expect(width === 1, `the prompt to show the picture it sent, drawn, got a width of ${width}`);
  await browser.shot(page, 'picture-sent');

  // A directory the server cannot use is refused in the dialog, saying why.
  await page.locator('#new-session').click();
  await page.locator('#new-session-cwd').fill('/no/such/directory');
  await page.locator('#create-session').click();
  await page.locator('#new-session-error', { hasText: '/no/such/directory' }).waitFor();
  const refused = await page.locator('#new-session-error').textContent();
  expect(!refused.includes('session/new'), `the reason without the method's name, got ${JSON.stringify(refused)}`);
  await page.locator('#new-session-dialog button[value="cancel"]').click();
  await page.locator('#new-session-dialog').waitFor({ state: 'hidden' });

  // A session with a model of its own; a model the server cannot make is refused.
  await page.locator('#new-session').click();
  await page.locator('#new-session-cwd').fill(workspace);
  // The model field offers the models the server names, the default first.
  expect(
    (await page.locator('#new-session-model').getAttribute('list')) === 'known-models',
    'the model field to offer choices',
  );
  await page.locator('#known-models option').first().waitFor({ state: 'attached' });
  const offered = await page.locator('#known-models option').evaluateAll((options) => options.map((o) => o.value));
  expect(offered[0] === 'test', `the server's default model offered first, got ${JSON.stringify(offered)}`);
  await page.locator('#new-session-model').fill('nonesuch');
  await page.locator('#create-session').click();
  await page.locator('#new-session-error', { hasText: 'nonesuch' }).waitFor();
  expect(await page.locator('#new-session-dialog').isVisible(), 'the dialog to stay open with the error');
  await browser.shot(page, 'unknown-model');
  await page.locator('#new-session-dialog button[value="cancel"]').click();
  await page.locator('#new-session-dialog').waitFor({ state: 'hidden' });
  // A notice about this session, which the next session does not show.
  await page.evaluate(() => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(8 * 1024 * 1024 + 1)], 'big.bin'));
    document.querySelector('#main').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  });
  await page.locator('#notice', { hasText: 'big.bin is larger than 8 MiB' }).waitFor();
  const second = await newSession(page, workspace, `script:${script}`);
  expect(!(await page.locator('#notice').isVisible()), 'the notice gone with its session');
  await prompt(page, 'The second session');
  await page.locator('.message.agent', { hasText: 'A reply from the chosen model.' }).waitFor();
  await turnOver(page);

  // Alt+↑/↓ go through the sessions in the list's order; newest first. A
  // draft and its files stay with their session.
  await page.locator('#prompt').fill('A draft for the second session');
  await page.locator('#file-input').setInputFiles({ name: 'draft.txt', mimeType: 'text/plain', buffer: Buffer.from('draft\n') });
  await page.locator('#attachments .chip', { hasText: 'draft.txt' }).waitFor();
  const current = () => page.locator('.session[aria-current="true"]').getAttribute('data-session-id');
  expect((await current()) === second, 'the new session open');
  await page.keyboard.press('Alt+ArrowDown');
  await page.locator(`.session[aria-current="true"][data-session-id="${first}"]`).waitFor();
  await page.locator('.message.agent', { hasText: 'Read these' }).first().waitFor();
  expect((await page.locator('#prompt').inputValue()) === '', 'no draft of another session');
  expect((await page.locator('#attachments .chip').count()) === 0, 'no files of another session');
  await page.keyboard.press('Alt+ArrowUp');
  await page.locator(`.session[aria-current="true"][data-session-id="${second}"]`).waitFor();
  await page.locator('.message.agent', { hasText: 'A reply from the chosen model.' }).waitFor();
  expect(new URL(page.url()).hash === `#session=${second}`, 'the address to follow');
  expect((await page.locator('#prompt').inputValue()) === 'A draft for the second session', 'the draft back');
  await page.locator('#attachments .chip', { hasText: 'draft.txt' }).waitFor();

  // An address naming a session opens it, without a reload.
  await page.evaluate((id) => (location.hash = `#session=${id}`), first);
  await page.locator(`.session[aria-current="true"][data-session-id="${first}"]`).waitFor();
  await page.locator('.message.agent', { hasText: 'Read these' }).first().waitFor();
  // One naming no session says so, and the address goes back to the open one.
  await page.evaluate(() => (location.hash = '#session=nope'));
  await page.locator('#notice', { hasText: 'The session in the address was not found' }).waitFor();
  await page.waitForFunction((id) => location.hash === `#session=${id}`, first);
  expect(
    (await page.locator('.session[aria-current="true"]').getAttribute('data-session-id')) === first,
    'the open session still open',
  );
});
