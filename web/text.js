// Text that names things — paths, commands, tool calls — as the page shows
// it. Characters that draw nothing, or that reorder the text around them
// (U+202E, say, makes "invoice\u202Efdp.exe" read "invoiceexe.pdf"), are shown
// as marked escapes, so that a file name or a command cannot pass for
// another; each name is laid out apart from the text beside it (the
// `isolated` class), so that right-to-left letters in it do not move that
// text. Letters of any script are shown as they are.

/** Characters that draw nothing or that steer the layout of others: the
 * default-ignorable ones (bidirectional controls, zero-width characters,
 * tags, fillers), control characters, and the line and paragraph
 * separators. Tab is shown as the space it is, and the variation selectors
 * U+FE00–FE0F, which pick a glyph's look (an emoji's colour), as that look. */
const HIDDEN = /[\p{Default_Ignorable_Code_Point}\p{Cc}\u2028\u2029]/gu;

function shownAsIs(char) {
  return char === '\t' || (char >= '\uFE00' && char <= '\uFE0F');
}

/** Whether the zero-width (non-)joiner at `index` of `text` joins two
 * visible characters of a script that needs it — Persian and the Indic
 * scripts between letters, emoji sequences — rather than hiding in ASCII
 * text or beside a space: there it is shown as it is. */
function joinsItsNeighbours(text, index, char) {
  if (char !== '\u200C' && char !== '\u200D') return false;
  return [pointBefore(text, index), pointAfter(text, index + 1)].every(
    (point) => point !== '' && point.codePointAt(0) >= 0x80 && !/^[\s]$/u.test(point) && !HIDDEN_ONE.test(point),
  );
}

const HIDDEN_ONE = /^[\p{Default_Ignorable_Code_Point}\p{Cc}\u2028\u2029]$/u;

function pointBefore(text, index) {
  if (index <= 0) return '';
  const low = text.charCodeAt(index - 1);
  return low >= 0xdc00 && low <= 0xdfff && index >= 2 ? text.slice(index - 2, index) : text[index - 1];
}

function pointAfter(text, index) {
  return index < text.length ? String.fromCodePoint(text.codePointAt(index)) : '';
}

/** The names of the characters a spoofed name most often hides in. */
const NAMES = {
  0x061c: 'ARABIC LETTER MARK',
  0x200b: 'ZERO WIDTH SPACE',
  0x200c: 'ZERO WIDTH NON-JOINER',
  0x200d: 'ZERO WIDTH JOINER',
  0x200e: 'LEFT-TO-RIGHT MARK',
  0x200f: 'RIGHT-TO-LEFT MARK',
  0x202a: 'LEFT-TO-RIGHT EMBEDDING',
  0x202b: 'RIGHT-TO-LEFT EMBEDDING',
  0x202c: 'POP DIRECTIONAL FORMATTING',
  0x202d: 'LEFT-TO-RIGHT OVERRIDE',
  0x202e: 'RIGHT-TO-LEFT OVERRIDE',
  0x2028: 'LINE SEPARATOR',
  0x2029: 'PARAGRAPH SEPARATOR',
  0x2060: 'WORD JOINER',
  0x2066: 'LEFT-TO-RIGHT ISOLATE',
  0x2067: 'RIGHT-TO-LEFT ISOLATE',
  0x2068: 'FIRST STRONG ISOLATE',
  0x2069: 'POP DIRECTIONAL ISOLATE',
  0xfeff: 'ZERO WIDTH NO-BREAK SPACE',
  0x00ad: 'SOFT HYPHEN',
};

/** `U+202E`: how a character is written out. */
function codePoint(char) {
  return `U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The mark a hidden character is shown as. */
function mark(char) {
  const node = document.createElement('span');
  node.className = 'hidden-char';
  node.textContent = codePoint(char);
  const name = NAMES[char.codePointAt(0)];
  node.title = `${codePoint(char)}${name ? ` ${name}` : ''}: a character that is invisible, or that changes how the text around it reads`;
  // What a copy of the text takes instead of the mark's words.
  node.dataset.char = char;
  return node;
}

/** `text` as nodes to append: text, with every hidden character as a mark. */
export function visibleNodes(value) {
  const text = String(value ?? '');
  const nodes = [];
  let from = 0;
  for (const match of text.matchAll(HIDDEN)) {
    if (shownAsIs(match[0]) || joinsItsNeighbours(text, match.index, match[0])) continue;
    if (match.index > from) nodes.push(document.createTextNode(text.slice(from, match.index)));
    nodes.push(mark(match[0]));
    from = match.index + match[0].length;
  }
  if (from < text.length || nodes.length === 0) nodes.push(document.createTextNode(text.slice(from)));
  return nodes;
}

/** The bidirectional controls whose effect runs on past them, to the end
 * of the paragraph: embeddings, overrides and isolates. In a command's
 * output or the model's prose, where line breaks, tabs and the marks of
 * right-to-left writing are the text's own, only these are marked. */
const STEERING = /[\u202A-\u202E\u2066-\u2069]/g;
const STEERS = /[\u202A-\u202E\u2066-\u2069]/;

/** `text` as nodes to append, its steering characters as marks. */
export function steeringMarked(value) {
  const text = String(value ?? '');
  if (!STEERS.test(text)) return [document.createTextNode(text)];
  const nodes = [];
  let from = 0;
  for (const match of text.matchAll(STEERING)) {
    if (match.index > from) nodes.push(document.createTextNode(text.slice(from, match.index)));
    nodes.push(mark(match[0]));
    from = match.index + 1;
  }
  if (from < text.length) nodes.push(document.createTextNode(text.slice(from)));
  return nodes;
}

/** Mark the steering characters of every text under `root`. */
export function markSteering(root) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const steering = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) if (STEERS.test(node.data)) steering.push(node);
  for (const node of steering) node.replaceWith(...steeringMarked(node.data));
}

/** The text of `node` as it was written: each mark as the character it stands for. */
export function writtenText(node) {
  if (!node.querySelector('.hidden-char')) return node.textContent;
  const copy = node.cloneNode(true);
  for (const mark of copy.querySelectorAll('.hidden-char')) mark.replaceWith(mark.dataset.char || '');
  return copy.textContent;
}

/** `text` where only text goes (a notification, a tooltip): hidden
 * characters written out as ⟨U+202E⟩. */
export function visibleText(text) {
  const whole = String(text ?? '');
  return whole.replace(HIDDEN, (char, index) =>
    shownAsIs(char) || joinsItsNeighbours(whole, index, char) ? char : `⟨${codePoint(char)}⟩`,
  );
}

/** An element showing the name `text`, laid out apart from what is beside it. */
export function isolated(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className ? `isolated ${className}` : 'isolated';
  node.append(...visibleNodes(text));
  return node;
}

/** What each element `showText` filled shows. */
const shownTexts = new WeakMap();

/** Show `text` in `node`, hidden characters marked; nothing is touched
 * when it shows that already. */
export function showText(node, text) {
  if (shownTexts.get(node) === text && node.firstChild) return;
  shownTexts.set(node, text);
  node.replaceChildren(...visibleNodes(text));
}

/**
 * `text` cut into its plain parts and its `code` spans, as CommonMark reads
 * code spans: a run of backticks opens one, the next run of as many closes
 * it, and a space inside each end is dropped when both are there (so
 * "`` a `b` c ``" is the code "a `b` c"). A run that nothing closes is text.
 * Returns `[{ code, text }]`.
 */
export function codeSpans(text) {
  const parts = [];
  const plain = (end) => {
    if (end > from) parts.push({ code: false, text: text.slice(from, end) });
  };
  const runAt = (at) => {
    let end = at;
    while (text[end] === '`') end += 1;
    return end - at;
  };
  let from = 0;
  let at = text.indexOf('`');
  while (at !== -1) {
    const opening = runAt(at);
    let close = text.indexOf('`', at + opening);
    while (close !== -1 && runAt(close) !== opening) close = text.indexOf('`', close + runAt(close));
    if (close === -1) {
      at = text.indexOf('`', at + opening);
      continue;
    }
    plain(at);
    let code = text.slice(at + opening, close).replace(/\r\n|\r|\n/g, ' ');
    if (code.length >= 2 && code.startsWith(' ') && code.endsWith(' ') && /[^ ]/.test(code)) code = code.slice(1, -1);
    parts.push({ code: true, text: code });
    from = close + opening;
    at = text.indexOf('`', from);
  }
  plain(text.length);
  return parts;
}

/** A tool call's title as Punie servers before CommonMark's fences wrote
 * them: a command or a pattern between single backticks, whatever
 * backticks it held itself. */
const OLD_TITLE = /^(Run |Search for )`([^`](?:[\s\S]*[^`])?)`((?: in [^`]*)?)$/;

/** A tool call's title in parts, as codeSpans cuts it; a title of an older
 * Punie that had backticks in its command is read as the one span it meant. */
export function titleParts(title) {
  const old = OLD_TITLE.exec(title);
  if (!old || !old[2].includes('`')) return codeSpans(title);
  return [
    { code: false, text: old[1] },
    { code: true, text: old[2] },
    ...(old[3] ? [{ code: false, text: old[3] }] : []),
  ];
}
