// What a diff shows the person asked to allow a write: a newline taken off
// the end of the file (marked as git marks it), a line ending changed from
// LF to CR LF (the carriage return marked), and a rewrite of every other
// line of a 3,000-line file as the 1,500 changes it is, removed and added
// lines side by side. A diff too costly to search for in full still shows
// both what goes and what comes, with counts that add up.

import { env, expect, newSession, prompt, scenario, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

/** The rows of a card's diff, in order: `<kind> <text>`, where kind is a
 * line's class (added, removed, context) or the row's own (diff-no-eol). */
async function rows(card) {
  return card.locator('.diff-lines > *').evaluateAll((nodes) =>
    nodes.map((node) =>
      node.classList.contains('diff-line')
        ? `${node.classList[1]} ${node.querySelector('.diff-text').textContent}`
        : `${node.className} ${node.textContent}`,
    ),
  );
}

async function counts(card) {
  return (await card.locator('.diff-counts').textContent()).trim();
}

await scenario('diffs', async (browser) => {
  const page = await browser.newPage();
  await signIn(page, link);
  await newSession(page, workspace);
  await prompt(page, 'Write the three files');

  const eof = page.locator('.tool-call').nth(0);
  await eof.locator('button[data-option-id="allow_once"]').waitFor();
  expect((await counts(eof)) === '+1 −1', `the last line counted as changed, got ${await counts(eof)}`);
  const eofRows = await rows(eof);
  expect(
    JSON.stringify(eofRows) ===
      JSON.stringify(['context hello', 'removed world', 'added world', 'diff-no-eol \\ No newline at end of file']),
    `the lost newline shown, got ${JSON.stringify(eofRows)}`,
  );
  await browser.shot(page, 'final-newline');
  await eof.locator('button[data-option-id="allow_once"]').click();

  const ending = page.locator('.tool-call').nth(1);
  await ending.locator('button[data-option-id="allow_once"]').waitFor();
  expect((await counts(ending)) === '+1 −1', `the line counted as changed, got ${await counts(ending)}`);
  const removed = ending.locator('.diff-line.removed');
  const added = ending.locator('.diff-line.added');
  expect((await removed.locator('.diff-eol').count()) === 0, 'no carriage return marked on the LF line');
  expect((await added.locator('.diff-eol').count()) === 1, 'the carriage return marked on the CR LF line');
  await browser.shot(page, 'line-ending');
  await ending.locator('button[data-option-id="allow_once"]').click();

  const big = page.locator('.tool-call').nth(2);
  await big.locator('button[data-option-id="allow_once"]').waitFor();
  expect((await counts(big)) === '+1500 −1500', `the real number of changes, got ${await counts(big)}`);
  const bigRows = await rows(big);
  expect(
    JSON.stringify(bigRows.slice(0, 5)) ===
      JSON.stringify(['context line 1', 'removed line 2', 'added line 2 changed', 'context line 3', 'removed line 4']),
    `each change where it is, got ${JSON.stringify(bigRows.slice(0, 5))}`,
  );
  const lines = bigRows.filter((row) => !row.startsWith('diff-'));
  expect(lines.length === 2000, `the diff cut at 2,000 rows, got ${lines.length}`);
  const shownAdded = lines.filter((row) => row.startsWith('added ')).length;
  const shownRemoved = lines.filter((row) => row.startsWith('removed ')).length;
  expect(shownAdded > 500 && shownRemoved > 500, `added and removed lines alike, got +${shownAdded} −${shownRemoved}`);
  const more = await big.locator('.diff-more').textContent();
  const hidden = Number(/… and (\d+) more changed lines/.exec(more)?.[1]);
  expect(shownAdded + shownRemoved + hidden === 3000, `the hidden lines counted, got ${more}`);
  await browser.shot(page, 'large-rewrite');
  await big.locator('button[data-option-id="allow_once"]').click();
  await page.locator('.message.agent', { hasText: 'All three written.' }).waitFor();
  await turnOver(page);

  // Texts no search can diff in full in good time: shuffled lines, and lines
  // with nothing in common. The page's own diff code, on them.
  const hard = await page.evaluate(async () => {
    const { diffLines } = await import('/app/diff.js');
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const words = Array.from({ length: 100_000 }, () => `word ${Math.floor(random() * 50)}`);
    const shuffled = words.map((word) => [random(), word]).sort((x, y) => x[0] - y[0]).map(([, word]) => word);
    const other = words.map((_, i) => `other ${i}`);
    return [shuffled, other].map((next) => {
      const oldText = `${words.join('\n')}\n`;
      const newText = `${next.join('\n')}\n`;
      const started = performance.now();
      const script = diffLines(oldText, newText);
      const ms = performance.now() - started;
      const text = (keep) =>
        script
          .filter((line) => line.op !== keep)
          .map((line) => `${line.text}\n`)
          .join('');
      const first = script.slice(0, 2000).map((line) => line.op);
      return {
        ms,
        whole: text('+') === oldText && text('-') === newText,
        added: script.filter((line) => line.op === '+').length,
        removed: script.filter((line) => line.op === '-').length,
        kept: script.filter((line) => line.op === ' ').length,
        firstAdded: first.filter((op) => op === '+').length,
        firstRemoved: first.filter((op) => op === '-').length,
      };
    });
  });
  for (const [name, result] of [['shuffled', hard[0]], ['unrelated', hard[1]]]) {
    expect(result.whole, `the ${name} diff to lead from the old text to the new`);
    expect(
      result.removed + result.kept === 100_000 && result.added + result.kept === 100_000,
      `the ${name} counts to add up, got ${JSON.stringify(result)}`,
    );
    expect(
      result.firstAdded > 200 && result.firstRemoved > 200,
      `the first 2,000 rows of the ${name} diff to show both sides, got ${JSON.stringify(result)}`,
    );
    expect(result.ms < 5000, `the ${name} diff within 5 s, took ${Math.round(result.ms)} ms`);
  }
});
