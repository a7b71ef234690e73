// Line diffs for the `diff` content of tool calls: which lines an edit
// removes and adds, shown with a few lines of context around each change.
//
// Lines are compared with their endings, so a change of line ending or of
// the newline at the end of the file is a change like any other, and shown.
// Characters that draw nothing or reorder the text around them are shown
// marked, in the path and in the lines (text.js): an edit cannot hide what
// it changes, as "Trojan Source" code does.

import { isolated, visibleNodes } from './text.js';

/** Edit cost the search for the shortest script of one region goes to
 * before it settles for the split that got furthest: a rewrite of a large
 * file then still diffs in moments, as a run of smaller regions. */
const MAX_COST = 256;

/** Steps the whole search may take; past them, what is left is shown as
 * removed and added lines taking turns, a few at a time. */
const MAX_WORK = 20_000_000;

/** Lines taken at a time from each side when the search gives up. */
const FALLBACK_RUN = 8;

/** Lines of unchanged text kept around each change. */
const CONTEXT = 3;

/** Most rows a diff shows: a change of a whole big file would otherwise
 * put hundreds of thousands of rows in the page. */
const MAX_ROWS = 2000;

/** The lines of `text`, each with its ending: `\n`, `\r\n`, or none for a
 * last line without one. */
function lines(text) {
  const result = [];
  let start = 0;
  while (start < text.length) {
    const end = text.indexOf('\n', start);
    if (end === -1) {
      result.push(text.slice(start));
      break;
    }
    result.push(text.slice(start, end + 1));
    start = end + 1;
  }
  return result;
}

/** Both texts' lines as numbers, equal for equal lines: compared faster. */
function numbered(oldLines, newLines) {
  const ids = new Map();
  const id = (line) => {
    let n = ids.get(line);
    if (n === undefined) {
      n = ids.size;
      ids.set(line, n);
    }
    return n;
  };
  return [Int32Array.from(oldLines, id), Int32Array.from(newLines, id)];
}

/**
 * Where to cut the region a[aLo, aHi) × b[bLo, bHi) in two: the middle of a
 * shortest edit script (Myers' search from both ends at once, in linear
 * space).
 * Past MAX_COST, the point either search got furthest, the one nearest the
 * region's diagonal, so that a big rewrite is cut into runs of removed and
 * added lines that take turns. Null when there is no cut to make: the
 * region has no line in common, or nothing better was found.
 */
function cut(a, aLo, aHi, b, bLo, bHi, budget) {
  const n = aHi - aLo;
  const m = bHi - bLo;
  const whole = Math.ceil((n + m) / 2);
  const limit = Math.min(whole, MAX_COST);
  const offset = limit + 1;
  const size = 2 * offset + 1;
  // Furthest x reached on each diagonal k = x - y, forward from the start
  // and backward from the end (there, x and y count from the end).
  const forward = new Int32Array(size).fill(-1);
  const backward = new Int32Array(size).fill(-1);
  forward[offset + 1] = 0;
  backward[offset + 1] = 0;
  const delta = n - m;
  const odd = (delta & 1) !== 0;
  // Diagonals that left the region are not searched again.
  let forwardStart = 0;
  let forwardEnd = 0;
  let backwardStart = 0;
  let backwardEnd = 0;
  let best = null;
  let bestReach = -1;
  let bestSkew = Infinity;
  const candidate = (x, y, fromEnd) => {
    const skew = Math.abs(x * m - y * n);
    if (x + y > bestReach || (x + y === bestReach && skew < bestSkew)) {
      bestReach = x + y;
      bestSkew = skew;
      best = fromEnd ? [n - x, m - y] : [x, y];
    }
  };
  for (let d = 0; d < limit; d++) {
    const last = d === limit - 1 && limit < whole;
    for (let k = -d + forwardStart; k <= d - forwardEnd; k += 2) {
      const i = offset + k;
      let x = k === -d || (k !== d && forward[i - 1] < forward[i + 1]) ? forward[i + 1] : forward[i - 1] + 1;
      let y = x - k;
      const from = x;
      while (x < n && y < m && a[aLo + x] === b[bLo + y]) {
        x++;
        y++;
      }
      budget.work += 1 + x - from;
      forward[i] = x;
      if (x > n) {
        forwardEnd += 2;
      } else if (y > m) {
        forwardStart += 2;
      } else {
        if (odd) {
          const j = offset + delta - k;
          if (j >= 0 && j < size && backward[j] !== -1 && x >= n - backward[j]) return [aLo + x, bLo + y];
        }
        if (last) candidate(x, y, false);
      }
    }
    for (let k = -d + backwardStart; k <= d - backwardEnd; k += 2) {
      const i = offset + k;
      let x = k === -d || (k !== d && backward[i - 1] < backward[i + 1]) ? backward[i + 1] : backward[i - 1] + 1;
      let y = x - k;
      const from = x;
      while (x < n && y < m && a[aHi - 1 - x] === b[bHi - 1 - y]) {
        x++;
        y++;
      }
      budget.work += 1 + x - from;
      backward[i] = x;
      if (x > n) {
        backwardEnd += 2;
      } else if (y > m) {
        backwardStart += 2;
      } else {
        if (!odd) {
          const j = offset + delta - k;
          if (j >= 0 && j < size && forward[j] !== -1) {
            const fx = forward[j];
            if (fx >= n - x) return [aLo + fx, bLo + fx - (delta - k)];
          }
        }
        if (last) candidate(x, y, true);
      }
    }
  }
  // A whole search that found no middle found no line in common.
  if (!best || limit === whole) return null;
  const [x, y] = best;
  if ((x === 0 && y === 0) || (x === n && y === m)) return null;
  return [aLo + x, bLo + y];
}

/**
 * The edit script from line numbers `a` to `b`, in order: `{ op, x, y }`
 * with x an index in `a` (kept and removed lines) and y one in `b` (kept
 * and added lines).
 */
function editScript(a, b) {
  const script = [];
  const budget = { work: 0 };
  const remove = (x) => script.push({ op: '-', x });
  const add = (y) => script.push({ op: '+', y });
  // Regions still to diff, and runs of kept lines to put after them; the
  // last pushed comes first.
  const stack = [[0, a.length, 0, b.length]];
  while (stack.length > 0) {
    const item = stack.pop();
    if (item.length === 3) {
      const [x, y, count] = item;
      for (let i = 0; i < count; i++) script.push({ op: ' ', x: x + i, y: y + i });
      continue;
    }
    let [aLo, aHi, bLo, bHi] = item;
    while (aLo < aHi && bLo < bHi && a[aLo] === b[bLo]) {
      script.push({ op: ' ', x: aLo, y: bLo });
      aLo++;
      bLo++;
    }
    let kept = 0;
    while (aHi > aLo && bHi > bLo && a[aHi - 1] === b[bHi - 1]) {
      aHi--;
      bHi--;
      kept++;
    }
    if (kept > 0) stack.push([aHi, bHi, kept]);
    if (budget.work > MAX_WORK) {
      // Still both sides of the change, in the order they come.
      let x = aLo;
      let y = bLo;
      while (x < aHi || y < bHi) {
        for (let i = 0; i < FALLBACK_RUN && x < aHi; i++) remove(x++);
        for (let i = 0; i < FALLBACK_RUN && y < bHi; i++) add(y++);
      }
      continue;
    }
    const at = aLo < aHi && bLo < bHi ? cut(a, aLo, aHi, b, bLo, bHi, budget) : null;
    if (at) {
      const [x, y] = at;
      stack.push([x, aHi, y, bHi], [aLo, x, bLo, y]);
      continue;
    }
    for (let x = aLo; x < aHi; x++) remove(x);
    for (let y = bLo; y < bHi; y++) add(y);
  }
  return script;
}

/** A line as shown: its text without its ending, and what the ending was. */
function shown(line) {
  const eol = line.endsWith('\n');
  let text = eol ? line.slice(0, -1) : line;
  const cr = text.endsWith('\r');
  if (cr) text = text.slice(0, -1);
  return { text, cr, eol };
}

/**
 * The edit script from `oldText` to `newText`: a list of
 * `{ op: ' ' | '-' | '+', text, cr, eol, oldLine, newLine }`, where `cr`
 * and `eol` say whether the line ended in a carriage return and a newline.
 */
export function diffLines(oldText, newText) {
  const oldLines = lines(oldText);
  const newLines = lines(newText);
  const [a, b] = numbered(oldLines, newLines);
  return editScript(a, b).map(({ op, x, y }) => {
    if (op === '+') return { op, ...shown(newLines[y]), newLine: y + 1 };
    if (op === '-') return { op, ...shown(oldLines[x]), oldLine: x + 1 };
    return { op, ...shown(oldLines[x]), oldLine: x + 1, newLine: y + 1 };
  });
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
  // Carriage returns are marked where the texts mix line endings: there a
  // line whose ending changed would otherwise look unchanged.
  const markReturns = script.some((l) => l.cr) && script.some((l) => l.eol && !l.cr);
  header.append(isolated('span', 'diff-file', String(path ?? '')));
  if (oldText == null) header.append(' (new file)');
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
      text.append(...visibleNodes(line.text));
      if (line.cr && markReturns) {
        const mark = document.createElement('span');
        mark.className = 'diff-eol';
        // In letters: fonts for the code lack the control pictures (␍).
        mark.textContent = 'CR';
        mark.title = 'This line ends with a carriage return (CR LF)';
        text.append(mark);
      }
      row.append(oldNumber, newNumber, sign, text);
      table.append(row);
      if (!line.eol) {
        // As git marks it: the line is the file's last, with no newline after.
        const end = document.createElement('div');
        end.className = 'diff-no-eol';
        end.textContent = '\\ No newline at end of file';
        table.append(end);
      }
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
