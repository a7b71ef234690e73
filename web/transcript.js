// One session's conversation on the page: `session/update` notifications
// (replayed history, then live ones) become messages, thoughts, tool call
// cards and permission questions. It owns its own DOM and nothing else.

import { GrowingMarkdown } from './markdown.js';
import { renderDiff } from './diff.js';
import { isolated, steeringMarked, titleParts, visibleNodes, visibleText } from './text.js';

const STATUS_LABELS = {
  pending: 'pending',
  in_progress: 'running',
  completed: 'done',
  failed: 'failed',
};

const STOP_REASONS = {
  cancelled: 'Cancelled.',
  max_tokens: 'Stopped: the model reached its output limit.',
  max_turn_requests: 'Stopped: the turn made too many tool calls.',
  refusal: 'The model refused.',
};

/** Terminal escape sequences (colours, cursor moves) in a command's output:
 * a page shows them as stray characters, so they are left out. */
const ESCAPES = /\x1b(?:\[[0-?]*[ -\/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;

function withoutEscapes(text) {
  return text.replace(ESCAPES, '');
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The name a resource URI shows: the last part of its path. */
export function resourceName(uri) {
  try {
    const path = new URL(uri).pathname;
    return decodeURIComponent(path.split('/').filter(Boolean).pop() || uri);
  } catch {
    return uri;
  }
}

/** A tool call's title in `node`, its `code` spans as code: as text
 * nodes, never as HTML, and hidden characters marked. */
function withCodeSpans(node, text) {
  node.replaceChildren(
    ...titleParts(String(text)).flatMap((part) => (part.code ? [isolated('code', '', part.text)] : visibleNodes(part.text))),
  );
}

/** A chip for an attached resource (or a link to one). */
function resourceChip(block) {
  const uri = block.type === 'resource' ? block.resource?.uri : block.uri;
  const chip = isolated('span', 'chip attachment', block.name || resourceName(uri || ''));
  chip.title = uri || '';
  return chip;
}

/** Image types a tool's picture may have; an `<img>` runs no script in any. */
const IMAGE_TYPES = /^image\/(png|jpeg|gif|webp|avif|bmp)$/;

/** A picture (a prompt's, or an MCP server's screenshot), or a chip naming
 * it when it is of a type or shape the page does not draw. */
function picture(block, className, alt) {
  const type = String(block.mimeType || '');
  if (!IMAGE_TYPES.test(type) || !/^[A-Za-z0-9+/=\s]*$/.test(block.data || '')) {
    return element('span', 'chip attachment', `an image (${type || 'of no type'})`);
  }
  const image = element('img', className);
  image.alt = alt;
  image.src = `data:${type};base64,${block.data}`;
  return image;
}

/** Agent text that grows chunk by chunk and is drawn at most once a frame. */
class AgentMessage {
  constructor(parent) {
    this.text = '';
    this.node = element('div', 'message agent markdown');
    // A screen reader reads the message once it is whole, not chunk by chunk.
    this.node.setAttribute('aria-busy', 'true');
    this.finished = false;
    this.markdown = new GrowingMarkdown(this.node);
    this.frame = 0;
    this.timer = 0;
    /** How long the last drawing took, and when it ended. */
    this.cost = 0;
    this.drawn = 0;
    parent.append(this.node);
  }

  append(text) {
    this.text += text;
    if (this.frame || this.timer) return;
    // Each drawing renders the message's last blocks again, and a long one
    // (a big code block, highlighted) takes long: drawing waits a few times
    // its cost, so that the page keeps most of its time for the person.
    const wait = this.drawn + DRAW_SPACING * this.cost - performance.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = 0;
        this.drawSoon();
      }, wait);
    } else {
      this.drawSoon();
    }
  }

  drawSoon() {
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const start = performance.now();
      this.draw();
      this.drawn = performance.now();
      this.cost = this.drawn - start;
      if (this.finished) this.node.removeAttribute('aria-busy');
    });
  }

  /** Nothing more comes: once its last chunk is drawn, the message is read out. */
  finish() {
    this.finished = true;
    if (!this.frame && !this.timer) this.node.removeAttribute('aria-busy');
  }

  draw() {
    this.markdown.draw(this.text);
  }
}

/** How many times its own cost a message's drawing waits before the next. */
const DRAW_SPACING = 4;

/** A tool call, as its card shows it, updated as the call goes on. */
class ToolCallCard {
  constructor(parent, id) {
    this.id = id;
    this.fields = {};
    this.node = element('article', 'tool-call');
    this.node.dataset.toolCallId = id;
    const header = element('header', 'tool-header');
    this.kind = element('span', 'tool-kind');
    this.title = element('span', 'tool-title');
    this.status = element('span', 'tool-status');
    header.append(this.kind, this.title, this.status);
    this.locations = element('div', 'tool-locations');
    this.content = element('div', 'tool-content');
    this.permission = element('div', 'permission');
    this.permission.hidden = true;
    this.node.append(header, this.locations, this.content, this.permission);
    parent.append(this.node);
  }

  update(fields) {
    Object.assign(this.fields, Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined && v !== null)));
    const { title, kind, status = 'pending', content, locations } = this.fields;
    this.kind.textContent = kind || 'tool';
    this.kind.dataset.kind = kind || 'other';
    withCodeSpans(this.title, title || 'Tool call');
    this.node.dataset.status = status;
    this.status.textContent = this.waiting
      ? 'waiting for you'
      : this.elsewhere
        ? 'waiting for permission'
        : STATUS_LABELS[status] || status;
    this.locations.replaceChildren(
      ...(locations || []).flatMap((l, i) => [
        ...(i > 0 ? ['  '] : []),
        isolated('span', 'location', String(l.path ?? '')),
        ...(l.line ? [`:${l.line}`] : []),
      ]),
    );
    this.locations.hidden = !this.locations.textContent;
    if (fields.content !== undefined && fields.content !== null) this.drawContent(content || []);
  }

  drawContent(content) {
    this.content.replaceChildren();
    for (const item of content) {
      if (item.type === 'diff') {
        this.content.append(renderDiff(item.path, item.oldText, item.newText));
      } else if (item.type === 'terminal') {
        this.content.append(element('pre', 'output', `Output in terminal ${item.terminalId}`));
      } else if (item.type === 'content' && item.content?.type === 'text') {
        if (item.content.text) {
          const output = element('pre', 'output');
          output.append(...steeringMarked(withoutEscapes(item.content.text)));
          this.content.append(output);
        }
      } else if (item.type === 'content' && item.content?.type === 'image') {
        this.content.append(picture(item.content, 'tool-image', 'An image the tool returned'));
      } else if (item.type === 'content' && item.content) {
        this.content.append(resourceChip(item.content));
      }
    }
  }

  /** Whether the call may still be waiting for a question to be answered. */
  get open() {
    return !this.asked && this.fields.status !== 'completed' && this.fields.status !== 'failed';
  }

  /** Say that the call waits for an answer in another client, which this
   * page cannot give; or stop saying so. */
  waitElsewhere(yes) {
    if (this.asked || Boolean(this.elsewhere) === yes) return;
    this.elsewhere = yes;
    this.permission.hidden = !yes;
    this.permission.replaceChildren(
      ...(yes ? [element('p', 'elsewhere', 'Waiting for an answer in another client.')] : []),
    );
    this.update({});
  }

  /** Ask the person; resolves with the chosen option id, or null if the question lapsed. */
  ask(options) {
    this.asked = true;
    this.elsewhere = false;
    this.waiting = true;
    this.update({});
    this.permission.hidden = false;
    this.permission.replaceChildren();
    this.permission.append(element('p', 'question', 'Allow this?'));
    const buttons = element('div', 'options');
    this.permission.append(buttons);
    return new Promise((resolve) => {
      this.settle = (optionId, label) => {
        this.settle = null;
        this.waiting = false;
        const answered = element('p', 'answered');
        answered.append(...visibleNodes(label));
        this.permission.replaceChildren(answered);
        this.permission.dataset.answer = optionId || 'none';
        this.update({});
        resolve(optionId);
      };
      for (const option of options) {
        const button = element('button', `option ${option.kind}`);
        button.append(...visibleNodes(String(option.name ?? '')));
        button.type = 'button';
        button.dataset.optionId = option.optionId;
        // Heard alone (tabbing from one to the next), a button says what it allows.
        button.setAttribute('aria-label', `${visibleText(String(option.name ?? ''))}: ${this.title.textContent}`);
        button.addEventListener('click', () => this.settle?.(option.optionId, `You chose: ${option.name}`));
        buttons.append(button);
      }
    });
  }

  /** The question no longer stands (the turn was cancelled or ended). */
  lapse(why) {
    this.settle?.(null, why);
  }
}

export class Transcript {
  constructor(sessionId) {
    this.sessionId = sessionId;
    this.node = element('div', 'transcript');
    this.node.dataset.sessionId = sessionId;
    // Read out as it grows, politely: a message once it is whole, a question
    // as it comes. Each session's own, so that showing one reads none of it.
    this.node.setAttribute('role', 'log');
    this.node.setAttribute('aria-label', 'Conversation');
    this.empty = element('p', 'transcript-empty', 'Nothing here yet. Ask Punie something.');
    this.node.append(this.empty);
    this.cards = new Map();
    this.last = null;
    this.plan = null;
    this.usage = null;
    /** Permission questions waiting for the person: request id → card. */
    this.questions = new Map();
    /** Turns whose end the page has shown. */
    this.turnsEnded = 0;
    /** Resolves once the history is on the page: true, or false if it never will be. */
    this.loaded = Promise.resolve(true);
    /** Whether the history is still on its way. */
    this.loading = false;
    /** The block that is still streaming: an agent message or a thought. */
    this.streaming = null;
    /** Who waits for the next question: see questionSoon. */
    this.questionWaiters = new Set();
    /** Where the person left the conversation when another was shown. */
    this.place = null;
    this.onChange = () => {};
    /** `(stopReason)` at the end of every turn, replayed ones too. */
    this.onTurnEnd = () => {};
  }

  /** The history is on its way (`true`), or on the page. A screen reader
   * waits for all of it rather than read each replayed message. */
  setLoading(yes) {
    this.loading = yes;
    this.node.classList.toggle('loading', yes);
    if (yes) this.node.setAttribute('aria-busy', 'true');
    else this.node.removeAttribute('aria-busy');
  }

  /** The block that was streaming is done: it is read out whole. */
  endStreaming() {
    const block = this.streaming;
    this.streaming = null;
    if (block?.message) block.message.finish();
    else block?.node.removeAttribute('aria-busy');
  }

  /** Start a new block of the conversation. */
  push(node, kind) {
    this.endStreaming();
    this.empty.remove();
    this.node.append(node);
    this.last = { kind, node };
    return node;
  }

  /** The user's message the next chunk joins, or a new one. */
  userMessage() {
    if (this.last?.kind !== 'user') {
      const node = element('div', 'message user');
      node.append(element('div', 'user-text'), element('div', 'attachments'));
      this.push(node, 'user');
    }
    return this.last.node;
  }

  addUserBlock(block) {
    const node = this.userMessage();
    if (block.type === 'text') {
      const text = node.querySelector('.user-text');
      text.textContent += text.textContent ? `\n${block.text}` : block.text;
    } else if (block.type === 'resource' || block.type === 'resource_link') {
      node.querySelector('.attachments').append(resourceChip(block));
    } else if (block.type === 'image') {
      node.querySelector('.attachments').append(picture(block, 'prompt-image', 'A picture sent with the prompt'));
    }
  }

  /** The prompt this page sent: the server sends it to everyone else. */
  localPrompt(blocks) {
    this.last = null;
    for (const block of blocks) this.addUserBlock(block);
    this.sent = this.last?.node || null;
  }

  /** The prompt this page sent was refused before its turn began: it was
   * never part of the conversation. */
  withdrawLocalPrompt() {
    if (this.last?.node === this.sent) this.last = null;
    this.sent?.remove();
    this.sent = null;
  }

  apply(update) {
    switch (update.sessionUpdate) {
      case 'user_message_chunk':
        this.addUserBlock(update.content);
        break;
      case 'agent_message_chunk':
        if (this.last?.kind !== 'agent') {
          this.endStreaming();
          const message = new AgentMessage(this.node);
          this.empty.remove();
          this.last = { kind: 'agent', node: message.node, message };
          this.streaming = this.last;
        }
        if (update.content?.type === 'text') this.last.message.append(update.content.text);
        break;
      case 'agent_thought_chunk': {
        if (this.last?.kind !== 'thought') {
          const details = element('details', 'thought');
          details.append(element('summary', '', 'Thinking'), element('div', 'thought-text'));
          this.push(details, 'thought');
          details.setAttribute('aria-busy', 'true');
          this.streaming = this.last;
        }
        const text = this.last.node.querySelector('.thought-text');
        if (update.content?.type === 'text') text.textContent += update.content.text;
        break;
      }
      case 'tool_call':
      case 'tool_call_update':
        this.card(update.toolCallId).update(update);
        break;
      case 'plan':
        this.drawPlan(update.entries || []);
        break;
      case 'usage_update':
        this.usage = { used: update.used, size: update.size };
        break;
      case 'session_info_update': {
        // How a turn ended, for every client and in every replay: the
        // prompter's answer says it only to the prompter.
        const ended = update._meta?.['punie/turnEnded'];
        if (ended) this.turnEnded(ended.stopReason, ended.error || ended.note);
        break;
      }
      default:
        break;
    }
    this.onChange(update);
  }

  card(id) {
    let card = this.cards.get(id);
    if (!card) {
      this.endStreaming();
      this.empty.remove();
      card = new ToolCallCard(this.node, id);
      this.cards.set(id, card);
      this.last = { kind: 'tool', node: card.node };
    }
    return card;
  }

  drawPlan(entries) {
    if (this.last?.kind !== 'plan') {
      this.plan = this.push(element('ol', 'plan'), 'plan');
    }
    this.plan.replaceChildren(
      ...entries.map((entry) => {
        const item = element('li', `plan-entry ${entry.status}`, entry.content);
        item.dataset.status = entry.status;
        return item;
      }),
    );
  }

  /** Ask the person about `request` (session/request_permission) in its card. */
  async ask(requestId, request) {
    const call = request.toolCall || {};
    const card = this.card(call.toolCallId || `permission-${requestId}`);
    card.update(call);
    this.questions.set(requestId, card);
    for (const waiter of this.questionWaiters) waiter();
    this.onChange();
    const optionId = await card.ask(request.options || []);
    this.questions.delete(requestId);
    this.onChange();
    return optionId;
  }

  get waitingForPermission() {
    return this.questions.size > 0;
  }

  /** Resolves true once a question waits for this page's answer, or false
   * if none came within `ms`. */
  questionSoon(ms) {
    if (this.waitingForPermission) return Promise.resolve(true);
    if (ms <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const arrived = () => {
        clearTimeout(timer);
        this.questionWaiters.delete(arrived);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.questionWaiters.delete(arrived);
        resolve(false);
      }, ms);
      this.questionWaiters.add(arrived);
    });
  }

  /** Bring into view the call that waits for another client's answer. */
  showWaitingElsewhere() {
    const card = [...this.cards.values()].find((c) => c.elsewhere);
    card?.node.scrollIntoView({ block: 'nearest' });
    return Boolean(card);
  }

  /** Put the keyboard on the first option of the oldest open question, as
   * the person asked (Alt+W). A question never takes it by itself: an Enter
   * meant for the prompt, or a Space to scroll, would answer it. */
  focusQuestion() {
    const [card] = this.questions.values();
    const option = card?.permission.querySelector('.options button');
    if (!option) return false;
    option.focus({ preventScroll: true });
    card.node.scrollIntoView({ block: 'nearest' });
    return true;
  }

  /** Whether the keyboard is on one of the open questions. */
  get questionFocused() {
    return [...this.questions.values()].some((card) => card.permission.contains(document.activeElement));
  }

  /** The session waits for permission, but not for this page's answer:
   * the newest call that may be asking says so. */
  waitingElsewhere(yes) {
    const asking = yes ? [...this.cards.values()].reverse().find((card) => card.open) : null;
    for (const card of this.cards.values()) card.waitElsewhere(card === asking);
  }

  /** Every open question lapses, e.g. because the turn was cancelled. */
  lapseQuestions(why) {
    for (const card of this.questions.values()) card.lapse(why);
    this.questions.clear();
  }

  lapseQuestion(requestId, why) {
    this.questions.get(requestId)?.lapse(why);
    this.questions.delete(requestId);
  }

  /** A turn ended; `why` is the server's word for an error or a cut-short turn. */
  turnEnded(stopReason, why) {
    this.turnsEnded += 1;
    this.endStreaming();
    this.onTurnEnd(stopReason);
    this.lapseQuestions('The turn ended before an answer.');
    if (stopReason === 'error') {
      this.note(why || 'The turn failed.');
      return;
    }
    const note = STOP_REASONS[stopReason];
    const said = note && why ? `${note} ${why.charAt(0).toUpperCase()}${why.slice(1)}.` : note;
    if (said) this.push(element('p', `turn-end ${stopReason}`, said), 'note');
    this.last = null;
  }

  note(text, className = 'error-note') {
    this.push(element('p', className, text), 'note');
    this.last = null;
  }
}
