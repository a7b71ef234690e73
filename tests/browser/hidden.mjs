// Names cannot pass for others in a permission card: characters that draw
// nothing or reorder the text around them (a right-to-left override in a
// file name, isolates in a command) are shown marked, wherever the card
// names a file or a command, and a name does not reorder the text beside
// it; words in right-to-left scripts read as they are. A command with
// backticks is one code span in its card's title, in the titles of older
// Punie servers and in the CommonMark fences of newer ones.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

/** Characters that must never reach the page as they are. */
const HIDDEN = /[\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/;

/** Reject the question in `card`, once it is asked. */
async function reject(card) {
  await card.locator('button[data-option-id="reject_once"]').click();
  await card.locator('.answered').waitFor();
}

await scenario('hidden', async (browser) => {
  const page = await browser.newPage({ width: 900, height: 800 });
  await signIn(page, link);
  await newSession(page, workspace);
  await prompt(page, 'Save the report');
  const cards = page.locator('.tool-call');

  // A file whose name hides an override: marked where the card names it.
  const file = cards.nth(0);
  await file.locator('.permission .options button').first().waitFor();
  const text = await file.evaluate((node) => node.textContent);
  expect(!HIDDEN.test(text), `no hidden character on the page, got ${JSON.stringify(text)}`);
  for (const where of ['.tool-locations', '.diff-path']) {
    const mark = file.locator(`${where} .hidden-char`);
    expect((await mark.count()) === 1, `the override marked in ${where}`);
    expect((await mark.textContent()) === 'U+202E', `the override named in ${where}, got ${await mark.textContent()}`);
    expect((await mark.getAttribute('title')).startsWith('U+202E RIGHT-TO-LEFT OVERRIDE'), `what it is, in ${where}`);
  }
  expect(
    (await file.locator('.tool-locations .location').textContent()).endsWith('invoiceU+202Efdp.exe'),
    'the name in the order it was written',
  );
  // Nothing spills into the counts beside the path.
  const counts = await file.locator('.diff-counts').textContent();
  expect(counts === ' +1 −0', `the counts as they are, got ${JSON.stringify(counts)}`);
  const path = await file.locator('.diff-file').boundingBox();
  const countsBox = await file.locator('.diff-counts').boundingBox();
  expect(countsBox.x >= path.x + path.width - 1, `the counts after the path, got ${JSON.stringify({ path, countsBox })}`);
  await browser.shot(page, 'override');
  await reject(file);

  // A command with isolates in it.
  const command = cards.nth(1);
  await command.locator('.permission .options button').first().waitFor();
  const title = await command.locator('.tool-title').textContent();
  expect(!HIDDEN.test(title), `no hidden character in the command, got ${JSON.stringify(title)}`);
  expect(title.includes('U+2067') && title.includes('U+2069'), `the isolates shown, got ${JSON.stringify(title)}`);
  expect(title.indexOf('echo hello') < title.indexOf('cat secrets'), `the command in its order, got ${JSON.stringify(title)}`);
  const bidi = await command.locator('.tool-title code').evaluate((node) => getComputedStyle(node).unicodeBidi);
  expect(bidi === 'isolate', `the command laid out apart from the title, got ${bidi}`);
  await browser.shot(page, 'isolates');
  await reject(command);

  // Arabic and Hebrew words are words, not hidden characters.
  const words = cards.nth(2);
  await words.locator('.permission .options button').first().waitFor();
  expect((await words.locator('.hidden-char').count()) === 0, 'nothing marked in words of right-to-left scripts');
  expect(
    (await words.locator('.tool-locations .location').textContent()).endsWith('/مرحبا-שלום-می\u200Cخواهم.txt'),
    'the right-to-left name as it is',
  );
  await words.locator('.diff-line.added .diff-text', { hasText: 'سلام עולם' }).waitFor();
  await browser.shot(page, 'right-to-left');
  await reject(words);

  // A command with backticks: one code span.
  const ticks = cards.nth(3);
  await ticks.locator('.permission .options button').first().waitFor();
  const spans = await ticks.locator('.tool-title code').allTextContents();
  expect(JSON.stringify(spans) === JSON.stringify(["printf 'a `b` c'"]), `one code span, got ${JSON.stringify(spans)}`);
  await reject(ticks);
  await page.locator('.message.agent', { hasText: 'Nothing was done.' }).waitFor();
  await turnOver(page);

  // Titles as servers old and new write them.
  const parts = await page.evaluate(async () => {
    const { titleParts } = await import('/app/text.js');
    const titles = [
      'Run `ls`',
      "Run `printf 'a `b` c'`",
      "Run `` printf 'a `b` c' ``",
      "Run `` printf 'a `b` c' `` in src",
      "Run `echo a`b` in src",
      'Run `` `x` ``',
      'Search for `a``b` in src',
      'Edit `a.rs` and `b.rs`',
      'Read ``notes`',
      'Call `` ` ``',
    ];
    return titles.map((title) => titleParts(title).map((part) => (part.code ? `[${part.text}]` : part.text)).join(''));
  });
  const expected = [
    'Run [ls]',
    "Run [printf 'a `b` c']",
    "Run [printf 'a `b` c']",
    "Run [printf 'a `b` c'] in src",
    'Run [echo a`b] in src',
    'Run [`x`]',
    'Search for [a``b] in src',
    'Edit [a.rs] and [b.rs]',
    'Read ``notes`',
    'Call [`]',
  ];
  expect(JSON.stringify(parts) === JSON.stringify(expected), `titles read as code spans, got ${JSON.stringify(parts)}`);
});
