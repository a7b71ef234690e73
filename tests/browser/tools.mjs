// Tool calls as cards: an edit shows its diff (removed, added and context
// lines, each change in a hunk of its own), a command shows its output (an
// override in it marked, the output laid out apart from the card), and
// each card's status follows its call as it changes (pending while its
// question waits, running once allowed, then done); the model's plan is a
// checklist. The view follows the turn past a tall output to its last
// line, and a reload opens the session at its newest line. The Cancel
// button stops a running turn, and the page says so once, then again after
// a reload.

import { env, expect, newSession, prompt, scenario, scrolledToNewest, signal, signIn, turnOver } from './lib.mjs';

const link = env('PUNIE_LINK');
const workspace = env('PUNIE_WORKSPACE');

/** `card` shows `status` in its data and `label` in words. */
async function expectStatus(card, status, label) {
  const shown = await card.evaluate((node) => [node.dataset.status, node.querySelector('.tool-status').textContent]);
  expect(
    JSON.stringify(shown) === JSON.stringify([status, label]),
    `the card ${status} and saying "${label}", got ${JSON.stringify(shown)}`,
  );
}

await scenario('tools', async (browser) => {
  // Short enough that the cards fill the view before the command's output comes.
  const page = await browser.newPage({ height: 600 });
  await signIn(page, link);
  await newSession(page, workspace);

  await prompt(page, 'Tidy the list');
  // The model's plan, as a checklist rather than a card.
  await page.locator('.plan .plan-entry[data-status="in_progress"]', { hasText: 'Edit the list' }).waitFor();
  await page.locator('.plan .plan-entry[data-status="pending"]', { hasText: 'Run the check' }).waitFor();
  const edit = page.locator('.tool-call').first();
  await edit.locator('button[data-option-id="allow_once"]').waitFor();
  const diff = edit.locator('.diff');
  const rows = await diff.locator('.diff-line').evaluateAll((lines) =>
    lines.map((line) => `${line.classList[1]} ${line.querySelector('.diff-text').textContent}`),
  );
  for (const row of ['removed first item', 'added first entry', 'context b', 'removed last item', 'added last entry']) {
    expect(rows.includes(row), `the diff to show "${row}", got ${JSON.stringify(rows)}`);
  }
  expect(!rows.includes('context f'), `lines far from a change left out, got ${JSON.stringify(rows)}`);
  expect((await diff.locator('.diff-gap').count()) === 1, 'the two changes in hunks of their own');
  expect((await diff.locator('.diff-counts').textContent()).trim() === '+2 −2', 'the counts of added and removed lines');
  // Each line with its numbers in the old and the new text.
  const numbers = await diff.locator('.diff-line').evaluateAll((lines) =>
    lines.slice(0, 3).map((line) => [...line.querySelectorAll('.diff-number')].map((n) => n.textContent).join('|')),
  );
  expect(JSON.stringify(numbers) === JSON.stringify(['1|', '|1', '2|2']), `old and new line numbers, got ${JSON.stringify(numbers)}`);
  await expectStatus(edit, 'pending', 'waiting for you');
  await browser.shot(page, 'edit-asked');
  await edit.locator('button[data-option-id="allow_once"]').click();
  await page.locator('.tool-call[data-status="completed"]').first().waitFor();

  const command = page.locator('.tool-call').nth(1);
  // The command in the title is code, without the backticks around it.
  await command.locator('.tool-title code', { hasText: 'seq 100' }).waitFor();
  const title = await command.locator('.tool-title').textContent();
  expect(!title.includes('`'), `no backticks in the title, got ${JSON.stringify(title)}`);
  await command.locator('button[data-option-id="allow_once"]').waitFor();
  await expectStatus(command, 'pending', 'waiting for you');
  await command.locator('button[data-option-id="allow_once"]').click();
  // The command waits at a gate tests/browser.rs opens only when told the
  // page has seen it running.
  await command.locator('.tool-status', { hasText: 'running' }).waitFor();
  await expectStatus(command, 'in_progress', 'running');
  await command.locator('.answered', { hasText: 'You chose: Allow' }).waitFor();
  expect((await command.locator('.output').count()) === 0, 'no output before the command has any');
  await page.locator('.session[aria-current] .status[data-status="running"]').waitFor();
  await browser.shot(page, 'command-running');
  signal('the command is running');
  await page.locator('.message.agent', { hasText: 'Tidied.' }).waitFor();
  await turnOver(page);
  expect((await command.getAttribute('data-status')) === 'completed', 'the command to have completed');
  const output = await command.locator('.output').textContent();
  // The colour codes around "out one" are left out.
  expect(output.includes('out one\nout two\n1\n2\n'), `the card to show the command's output, got ${JSON.stringify(output)}`);
  expect(!output.includes('\u001b') && !output.includes('[32m'), `no terminal escapes in the card, got ${JSON.stringify(output)}`);
  // An override in the output is marked, and reverses nothing after it.
  expect(!/[\u202a-\u202e\u2066-\u2069]/.test(output), `no override in the card's output, got ${JSON.stringify(output)}`);
  expect(output.includes('saved invoiceU+202Efdp.exe\nafter'), `the override marked in its place, got ${JSON.stringify(output)}`);
  const isolated = await command.locator('.output').evaluate((node) => getComputedStyle(node).unicodeBidi);
  expect(isolated === 'isolate', `the output laid out apart from the card, got ${isolated}`);
  // The page followed the turn past the tall output to its last words.
  await scrolledToNewest(page);
  await browser.shot(page, 'tools-done');

  await prompt(page, 'Count slowly');
  await page.locator('.message.agent', { hasText: 'Counting: 1' }).waitFor();
  await page.locator('#cancel').click();
  await page.locator('.turn-end.cancelled').waitFor();
  await turnOver(page);
  const counted = await page.locator('.message.agent', { hasText: 'Counting' }).textContent();
  expect(!counted.includes('never'), `nothing after the cancel, got ${JSON.stringify(counted)}`);
  expect((await page.locator('.turn-end').count()) === 1, 'the cancel said once, not by both the update and the answer');
  await browser.shot(page, 'cancelled');

  // Opened again, the session shows its newest line, past the tall cards,
  // and how the last turn ended.
  await page.reload();
  await page.locator('.message.agent', { hasText: 'Counting: 1' }).waitFor();
  await page.locator('.turn-end.cancelled', { hasText: 'Cancelled.' }).waitFor();
  expect((await page.locator('.turn-end').count()) === 1, 'one turn ended short, in the replay too');
  await scrolledToNewest(page);
  await browser.shot(page, 'reopened');
});
