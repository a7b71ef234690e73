// Line diffs for the `diff` content of tool calls: which lines an edit
// removes and adds, shown with a few lines of context around each change.

/** Most edit steps the diff searches before it shows the whole file replaced. */
const MAX_EDITS = 1000;

/** Lines of unchanged text kept around each change. */
const CONTEXT = 3;

/** Most rows a diff shows: a change of a whole big file would otherwise
 * put hundreds of thousands of rows in the page. */
const MAX_ROWS = 2000;

function lines(text) {
  if (!text) return [];
  const split = text.split('\n');
  if (split[split.length - 1] === '') split.pop();
  return split;
}

/**
 * The edit script from `oldText` to `newText`: a list of
 * `{ op: ' ' | '-' | '+', text, oldLine, newLine }` (Myers' algorithm).
 */
export function diffLines(oldText, newText) {
  const a = lines(oldText);
  const b = lines(newText);
  const n = a.length;
  const m = b.length;
  const max = Math.min(n + m, MAX_EDITS);
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace = [];
  let found = n === 0 && m === 0;
  for (let d = 0; d <= max && !found; d++) {
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1]) ? v[offset + k + 1] : v[offset + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      v[offset + k] = x;
      if (x >= n && y >= m) {
        found = true;
        break;
      }
    }
  }
  if (!found) {
    return [
      ...a.map((text, i) => ({ op: '-', text, oldLine: i + 1 })),
      ...b.map((text, i) => ({ op: '+', text, newLine: i + 1 })),
    ];
  }
  // Walk the trace back from the end to recover the script.
  const script = [];
  let x = n;
  let y = m;
  for (let d = trace.length - 1; d >= 0 && (x > 0 || y > 0); d--) {
    const row = trace[d];
    const k = x - y;
    const down = k === -d || (k !== d && row[offset + k - 1] < row[offset + k + 1]);
    const prevK = down ? k + 1 : k - 1;
    const prevX = d === 0 ? 0 : row[offset + prevK];
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) {
      x--;
      y--;
      script.push({ op: ' ', text: a[x], oldLine: x + 1, newLine: y + 1 });
    }
    if (d === 0) break;
    if (down) {
      y--;
      script.push({ op: '+', text: b[y], newLine: y + 1 });
    } else {
      x--;
      script.push({ op: '-', text: a[x], oldLine: x + 1 });
    }
  }
  while (x > 0 && y > 0) {
    x--;
    y--;
    script.push({ op: ' ', text: a[x], oldLine: x + 1, newLine: y + 1 });
  }
  return script.reverse();
}

/** The script cut into hunks: changes with CONTEXT lines around them. */
export function hunks(script) {
  const keep = new Array(script.length).fill(false);
  script.forEach((line, i) => {
    if (line.op === ' ') return;
    for (let j = Math.max(0, i - CONTEXT); j <= Math.min(script.length - 1, i + CONTEXT); j++) keep[j] = true;
  });
  const result = [];
  let current = null;
  script.forEach((line, i) => {
    if (!keep[i]) {
      current = null;
      return;
    }
    if (!current) {
      current = [];
      result.push(current);
    }
    current.push(line);
  });
  return result;
}

/** A diff view of a change to `path`: an element with a header and hunks. */
export function renderDiff(path, oldText, newText) {
  const view = document.createElement('div');
  view.className = 'diff';
  const header = document.createElement('div');
  header.className = 'diff-path';
  const script = diffLines(oldText ?? '', newText ?? '');
  const added = script.filter((l) => l.op === '+').length;
  const removed = script.filter((l) => l.op === '-').length;
  header.textContent = `${path}${oldText == null ? ' (new file)' : ''}`;
  const counts = document.createElement('span');
  counts.className = 'diff-counts';
  counts.textContent = ` +${added} −${removed}`;
  header.append(counts);
  view.append(header);
  const table = document.createElement('div');
  table.className = 'diff-lines';
  const parts = hunks(script);
  if (parts.length === 0) {
    const same = document.createElement('div');
    same.className = 'diff-same';
    same.textContent = 'No change.';
    table.append(same);
  }
  let rows = 0;
  let hidden = 0;
  parts.forEach((hunk, index) => {
    if (rows >= MAX_ROWS) {
      hidden += hunk.filter((line) => line.op !== ' ').length;
      return;
    }
    if (index > 0) {
      const gap = document.createElement('div');
      gap.className = 'diff-gap';
      gap.textContent = '⋯';
      table.append(gap);
    }
    for (const line of hunk) {
      if (rows >= MAX_ROWS) {
        if (line.op !== ' ') hidden += 1;
        continue;
      }
      rows += 1;
      const row = document.createElement('div');
      row.className = `diff-line ${line.op === '+' ? 'added' : line.op === '-' ? 'removed' : 'context'}`;
      // Both numbers: a context line has moved when lines above it were
      // added or removed.
      const oldNumber = document.createElement('span');
      oldNumber.className = 'diff-number old';
      oldNumber.textContent = line.op === '+' ? '' : String(line.oldLine);
      const newNumber = document.createElement('span');
      newNumber.className = 'diff-number new';
      newNumber.textContent = line.op === '-' ? '' : String(line.newLine);
      const sign = document.createElement('span');
      sign.className = 'diff-sign';
      sign.textContent = line.op;
      const text = document.createElement('span');
      text.className = 'diff-text';
      text.textContent = line.text;
      row.append(oldNumber, newNumber, sign, text);
      table.append(row);
    }
  });
  if (hidden > 0) {
    const more = document.createElement('div');
    more.className = 'diff-more';
    more.textContent = `… and ${hidden} more changed lines, not shown`;
    table.append(more);
  }
  view.append(table);
  return view;
}
