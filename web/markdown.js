// Agent text as HTML: Markdown by marked, code highlighted by highlight.js,
// and everything through DOMPurify before it reaches the page. The model's
// text is untrusted: it may quote a web page or a hostile file.

import { Lexer, Marked } from './vendor/marked.esm.js';
import DOMPurify from './vendor/purify.es.mjs';
import hljs from './vendor/highlight/core.js';
import { markSteering, writtenText } from './text.js';
import bash from './vendor/highlight/languages/bash.js';
import c from './vendor/highlight/languages/c.js';
import cpp from './vendor/highlight/languages/cpp.js';
import css from './vendor/highlight/languages/css.js';
import diff from './vendor/highlight/languages/diff.js';
import go from './vendor/highlight/languages/go.js';
import ini from './vendor/highlight/languages/ini.js';
import java from './vendor/highlight/languages/java.js';
import javascript from './vendor/highlight/languages/javascript.js';
import json from './vendor/highlight/languages/json.js';
import markdown from './vendor/highlight/languages/markdown.js';
import plaintext from './vendor/highlight/languages/plaintext.js';
import python from './vendor/highlight/languages/python.js';
import rust from './vendor/highlight/languages/rust.js';
import shell from './vendor/highlight/languages/shell.js';
import sql from './vendor/highlight/languages/sql.js';
import typescript from './vendor/highlight/languages/typescript.js';
import xml from './vendor/highlight/languages/xml.js';
import yaml from './vendor/highlight/languages/yaml.js';

const languages = {
  bash, c, cpp, css, diff, go, ini, java, javascript, json, markdown,
  plaintext, python, rust, shell, sql, typescript, xml, yaml,
};
for (const [name, language] of Object.entries(languages)) hljs.registerLanguage(name, language);
hljs.registerAliases(['toml'], { languageName: 'ini' });
hljs.configure({ ignoreUnescapedHTML: true });

/** `text` as highlighted HTML in `language`; plain when no known language
 * is named, since a guess colours prose and logs as if they were code. */
export function highlight(text, language) {
  if (!language || !hljs.getLanguage(language)) return escapeHtml(text);
  try {
    return hljs.highlight(text, { language, ignoreIllegals: true }).value;
  } catch {
    return escapeHtml(text);
  }
}

export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

const marked = new Marked({
  gfm: true,
  renderer: {
    // The language's label goes above the code, outside it: a selection of
    // the whole block copies the code alone. (The Copy button joins the bar
    // once sanitised: no button passes DOMPurify.)
    code({ text, lang }) {
      const language = (lang || '').trim().split(/\s+/)[0];
      const label = language ? `<span class="code-language">${escapeHtml(language)}</span>` : '';
      return `<div class="code-block"><div class="code-bar">${label}</div><pre class="code"><code class="hljs">${highlight(text, language)}</code></pre></div>`;
    },
    // A task list's boxes as the characters they look like: a checkbox
    // would be a form control in the model's text, which the page forbids.
    checkbox({ checked }) {
      const [box, said] = checked ? ['☑', 'done'] : ['☐', 'not done'];
      return `<span class="task-box" role="img" aria-label="${said}">${box}</span> `;
    },
    // HTML in the model's text is shown as text, never parsed: even an inert
    // parse of `<img onerror=…>` makes the browser try the handler (which the
    // page's policy then blocks).
    html({ text }) {
      return escapeHtml(text);
    },
    // Images would be fetched from wherever the model points: shown as links instead.
    image({ href, text }) {
      return `<a href="${escapeHtml(href || '')}">${escapeHtml(text || href || 'image')}</a>`;
    },
  },
});

// Links open in a new tab, and never tell the target where they came from.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

const PURIFY = {
  FORBID_TAGS: ['style', 'img', 'svg', 'math', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'video', 'audio', 'source', 'picture'],
  // Inline styles would break the page's policy (and its layout).
  FORBID_ATTR: ['style'],
  ADD_ATTR: ['target'],
};

/** Markdown `text` as sanitised nodes, in a fragment. */
export function renderMarkdown(text) {
  return sanitised(marked.parse(text));
}

/** Marked's HTML as sanitised nodes, in a fragment. */
function sanitised(html) {
  const fragment = DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
  // Only a link to the web, to mail or within the page leads anywhere: a
  // relative address (marked makes `[^1]: note` a link to `note`) leads
  // into the app itself.
  for (const link of fragment.querySelectorAll('a[href]')) {
    const href = link.getAttribute('href').trim();
    if (!href.startsWith('#') && !/^(https?|mailto):/i.test(href)) link.removeAttribute('href');
  }
  // A link that lost its target (`javascript:` and the like) would look
  // clickable and do nothing: it is shown as the text it was.
  for (const link of fragment.querySelectorAll('a:not([href])')) link.replaceWith(...link.childNodes);
  // An override in the model's text (quoting a hostile file, say) would
  // reverse what follows it, code included: shown as a mark instead.
  markSteering(fragment);
  // A table wider than the message scrolls on its own, rather than breaking
  // its words apart to fit.
  for (const table of fragment.querySelectorAll('table')) {
    const scroller = document.createElement('div');
    scroller.className = 'table-scroll';
    table.replaceWith(scroller);
    scroller.append(table);
  }
  for (const bar of fragment.querySelectorAll('.code-block > .code-bar')) bar.append(copyButton(bar.nextElementSibling));
  for (const item of fragment.querySelectorAll('li')) {
    if (item.querySelector(':scope > .task-box, :scope > p:first-child > .task-box')) item.classList.add('task');
  }
  return fragment;
}

/** How long a Copy button says it copied. */
const COPIED_MS = 1500;

/** A button that copies the code of `pre`, and says it did. */
function copyButton(pre) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'copy-code';
  button.textContent = 'Copy';
  button.setAttribute('aria-label', 'Copy the code');
  button.addEventListener('click', async () => {
    const copied = (await copyText(writtenText(pre))) || copySelected(pre);
    // Selected, the code is the person's to copy with the keyboard.
    button.textContent = copied ? 'Copied' : 'Selected: press Ctrl+C';
    setTimeout(() => (button.textContent = 'Copy'), COPIED_MS);
  });
  return button;
}

/** Put `text` on the clipboard; false when the browser will not (a page
 * served over plain HTTP to another machine has no clipboard API). */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

/** Select the text of `node` and copy it the old way; false when that did
 * not work either, the text left selected. */
function copySelected(node) {
  selectWhole(node);
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  if (copied) getSelection().removeAllRanges();
  return copied;
}

/** Select all of `node`'s text, for the person to copy themselves. */
function selectWhole(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

/**
 * Markdown that grows at its end, as a streamed reply does, drawn in `node`
 * again and again. Drawing the whole of a long reply again at every chunk
 * made the page stall for most of a second; here a block, once done, is
 * drawn once, and each drawing reads and draws only the last few blocks
 * again. A block is done when the lines received so far (whole lines: a
 * line still arriving, `-` on its way to `- item`, may read as something
 * else for now) hold two more blocks after it, since the one right after
 * it may still join it (a paragraph `2.` that becomes the list's next
 * item). Text with a link reference definition (`[1]: <address>`), which
 * may link text drawn before it, is drawn whole each time.
 */
export class GrowingMarkdown {
  constructor(node) {
    this.node = node;
    /** How much of the text (line endings made `\n`) is drawn for good. */
    this.settled = 0;
    /** The nodes of the blocks not done yet, drawn again next time. */
    this.live = [];
    /** Whether the text is drawn whole each time. */
    this.whole = false;
  }

  /** Draw `text`: what the last drawing had, and maybe more after it. */
  draw(text) {
    const source = text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
    if (!this.whole) {
      const lines = lex(source.slice(this.settled, source.lastIndexOf('\n') + 1));
      const done = lines.links ? 0 : Math.max(0, blockBefore(lines, blockBefore(lines, lines.length)));
      for (const node of this.live) node.remove();
      this.live = [];
      if (done > 0) {
        const blocks = lines.slice(0, done);
        this.node.append(sanitised(marked.parser(blocks)));
        for (const block of blocks) this.settled += block.raw.length;
      }
      const rest = lex(source.slice(this.settled));
      if (!lines.links && !rest.links) {
        const fragment = sanitised(marked.parser(rest));
        this.live = [...fragment.childNodes];
        this.node.append(fragment);
        return;
      }
      this.whole = true;
    }
    this.live = [];
    this.node.replaceChildren(renderMarkdown(source));
  }
}

/** The blocks of `text`; `links` is set when it defines any link references. */
function lex(text) {
  const tokens = new Lexer({ ...marked.defaults }).lex(text);
  const blocks = [...tokens];
  blocks.links = Object.keys(tokens.links).length > 0;
  return blocks;
}

/** The index of the last block before `index` that is not blank space (0 at least). */
function blockBefore(blocks, index) {
  let at = index - 1;
  while (at > 0 && blocks[at].type === 'space') at -= 1;
  return at;
}
