// Punie in the browser: an ACP client over the page's own WebSocket. It lists
// every session on the server grouped by project, opens them (history
// replays, live updates follow), starts new ones, prompts with attachments,
// answers permission questions and cancels turns. The server owns all state;
// this page only shows it.

import { Connection, RpcError, METHOD_NOT_FOUND } from './acp.js';

const INVALID_REQUEST = -32600;
const INVALID_PARAMS = -32602;
const RESOURCE_NOT_FOUND = -32002;
import { Transcript } from './transcript.js';
import { isolated, showText, visibleText } from './text.js';

/** Biggest file the page attaches to a prompt. */
const MAX_ATTACHMENT_BYTES = 8 * 1024 * 1024;

/** Pictures go to the model as images (Punie advertises `image`); these are
 * the types it takes. */
const PICTURE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];

/** Pages of session/list read at start, and at each "Show older
 * sessions"; 100 sessions each. */
const LIST_PAGES_AT_ONCE = 20;

const RECONNECT_DELAYS_MS = [500, 1000, 2000, 5000];

/** What the page says of an address naming a session it cannot find. */
const NOT_FOUND = 'The session in the address was not found on this server: the link is wrong, or the session was deleted.';

const STATUS_TEXT = {
  running: 'running',
  waiting_for_permission: 'waiting for permission',
  idle: 'idle',
  failed: 'last turn failed',
};

const $ = (selector) => document.querySelector(selector);

const ui = {
  body: document.body,
  connection: $('#connection'),
  notice: $('#notice'),
  noticeText: $('#notice-text'),
  noticeClose: $('#notice-close'),
  signIn: $('#sign-in'),
  signOut: $('#sign-out'),
  notify: $('#notify'),
  sessionTitle: $('#session-title'),
  sessionCwd: $('#session-cwd'),
  sessionCwdText: $('#session-cwd-text'),
  usage: $('#usage'),
  usageMeter: $('#usage-meter'),
  usageText: $('#usage-text'),
  toggleSessions: $('#toggle-sessions'),
  waitingBadge: $('#waiting-badge'),
  announcer: $('#announcer'),
  newBelow: $('#new-below'),
  sidebar: $('#sidebar'),
  groups: $('#session-groups'),
  newSession: $('#new-session'),
  main: $('#main'),
  welcome: $('#welcome'),
  transcriptHost: $('#transcript-host'),
  composer: $('#composer'),
  prompt: $('#prompt'),
  attachments: $('#attachments'),
  fileInput: $('#file-input'),
  send: $('#send'),
  cancel: $('#cancel'),
  commandHints: $('#command-hints'),
  sessionModel: $('#session-model'),
  sessionMode: $('#session-mode'),
  dialog: $('#new-session-dialog'),
  deleteSession: $('#delete-session'),
  deleteDialog: $('#delete-dialog'),
  deleteForm: $('#delete-form'),
  deleteWhat: $('#delete-what'),
  deleteError: $('#delete-error'),
  newSessionForm: $('#new-session-form'),
  newSessionCwd: $('#new-session-cwd'),
  newSessionModel: $('#new-session-model'),
  knownModels: $('#known-models'),
  olderSessions: $('#older-sessions'),
  newSessionError: $('#new-session-error'),
  knownCwds: $('#known-cwds'),
  dropZone: $('#drop-zone'),
  skipToPrompt: $('#skip-to-prompt'),
  skipToConversation: $('#skip-to-conversation'),
};

const state = {
  connection: null,
  defaultModel: null,
  /** The largest message the server takes, as it says (`_punie/info`). */
  maxMessageBytes: null,
  /** The session/list cursor of the sessions not read yet, if any. */
  olderSessions: null,
  /** Every session the page knows: id → { sessionId, cwd, title, status,
   * updatedAt }, and what the page saw of it: `failed` (its last turn
   * ended in an error) and `unread` (a turn ended while another session
   * was open). */
  sessions: new Map(),
  /** The settings (ACP config options) of each session this connection is
   * attached to: id → [{ id, name, currentValue, options, … }]. */
  settings: new Map(),
  /** The slash commands each attached session offers: id → [{ name, description, input }]. */
  commands: new Map(),
  /** Sessions this connection is attached to: id → Transcript. */
  transcripts: new Map(),
  /** Sessions whose turn this page started and that have not answered yet. */
  prompting: new Set(),
  current: null,
  /** Files to go with the open session's next prompt: { name, size, block }. */
  attachments: [],
  /** What the composer held for each session the person left: id → { text, attachments }. */
  drafts: new Map(),
  /** The session that was open when a server restart signed the page out,
   * to open again once it is signed in. */
  reopen: null,
  reconnects: 0,
};

/** What the notice is about: 'connection' while the server is out of reach,
 * 'attachment' for a file left out of the next prompt, else anything the
 * person was told about what they did. */
let noticeKind = null;

function showNotice(text, kind = 'action') {
  ui.noticeText.textContent = text;
  ui.notice.hidden = !text;
  noticeKind = text ? kind : null;
}

/** Say `text` to a screen reader, politely, once. */
function announce(text) {
  ui.announcer.textContent = '';
  // A change of text is what is read: the same words again are read again.
  setTimeout(() => (ui.announcer.textContent = text), 100);
}

function setConnection(text, kind) {
  ui.connection.textContent = text;
  ui.connection.dataset.state = kind;
}

function describe(error) {
  if (!(error instanceof Error)) return String(error);
  // The server names the method it answers; the person did not call it.
  const prefix = error instanceof RpcError && error.method ? `${error.method}: ` : null;
  return prefix && error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
}

// ---------------------------------------------------------------- sessions

function upsertSession(info) {
  const known = state.sessions.get(info.sessionId) || { status: 'idle' };
  const merged = { ...known };
  for (const [key, value] of Object.entries(info)) {
    if (value !== undefined && value !== null) merged[key] = value;
  }
  state.sessions.set(info.sessionId, merged);
  return merged;
}

/** What a session is doing, as far as the server and this page know. */
function statusOf(id) {
  const transcript = state.transcripts.get(id);
  if (transcript?.waitingForPermission) return 'waiting_for_permission';
  const status = state.sessions.get(id)?.status || 'idle';
  if (status === 'idle' && state.prompting.has(id)) return 'running';
  return status;
}

/** What a session's row shows: what it does, or, idle, that its last turn failed. */
function rowStatus(id) {
  const status = statusOf(id);
  return status === 'idle' && state.sessions.get(id)?.failed ? 'failed' : status;
}

/** A turn of session `id` ended with `stopReason`: replayed from its
 * history, or now, while the person may be looking at another session. */
function noteTurnEnd(id, stopReason, { replayed = false } = {}) {
  const session = state.sessions.get(id);
  if (!session) return;
  session.failed = stopReason === 'error';
  if (!replayed && id !== state.current) session.unread = true;
  scheduleRender();
}

function basename(path) {
  const parts = path.split('/').filter(Boolean);
  return parts.length ? parts[parts.length - 1] : path;
}

function timeAgo(iso) {
  if (!iso) return '';
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(seconds)) return '';
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

/** Sessions grouped by project, most recently used first, in sidebar order.
 * A session the page knows only part of (no directory yet) is left out. */
function groupedSessions() {
  const groups = new Map();
  const recent = new Map();
  for (const session of state.sessions.values()) {
    if (session.cwd) recent.set(session, Date.parse(session.updatedAt || '') || 0);
  }
  const sorted = [...recent.keys()].sort((a, b) => recent.get(b) - recent.get(a));
  for (const session of sorted) {
    if (!groups.has(session.cwd)) groups.set(session.cwd, []);
    groups.get(session.cwd).push(session);
  }
  return groups;
}

function sessionOrder() {
  return [...groupedSessions().values()].flat().map((s) => s.sessionId);
}

/** The list's elements, kept from one drawing to the next and changed only
 * where what they show changed: with thousands of sessions, building the
 * list anew at each change of status took the page a fifth of a second, and
 * a rebuild while a reply streams would swallow a click on the list. */
const sidebar = {
  /** cwd → { section, list } */
  groups: new Map(),
  /** session id → { item, button, title, badge, badgeText, unread, when, shown } */
  rows: new Map(),
  empty: null,
  cwds: null,
};

function groupElements(cwd) {
  let group = sidebar.groups.get(cwd);
  if (group) return group;
  const section = document.createElement('section');
  section.className = 'session-group';
  section.dataset.cwd = cwd;
  const heading = document.createElement('h2');
  heading.title = visibleText(cwd);
  const name = isolated('span', 'group-name', basename(cwd));
  const path = isolated('span', 'group-path', cwd);
  heading.append(name, path);
  const list = document.createElement('ul');
  section.append(heading, list);
  group = { section, list };
  sidebar.groups.set(cwd, group);
  return group;
}

function rowElements(id) {
  let row = sidebar.rows.get(id);
  if (row) return row;
  const item = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'session';
  button.dataset.sessionId = id;
  const title = document.createElement('span');
  title.className = 'session-title';
  const meta = document.createElement('span');
  meta.className = 'session-meta';
  const badge = document.createElement('span');
  badge.className = 'status';
  // The dot's colour says what the words say; a screen reader reads the words.
  const dot = document.createElement('span');
  dot.className = 'dot';
  dot.setAttribute('aria-hidden', 'true');
  dot.textContent = '●';
  const badgeText = document.createElement('span');
  badge.append(dot, badgeText);
  const unread = document.createElement('span');
  unread.className = 'unread';
  unread.textContent = 'new';
  unread.title = 'A turn ended here while you looked elsewhere';
  unread.hidden = true;
  const when = document.createElement('span');
  when.className = 'when';
  meta.append(badge, unread, when);
  button.append(title, meta);
  button.addEventListener('click', () => openSession(id));
  item.append(button);
  row = { item, button, title, badge, badgeText, unread, when, shown: {} };
  sidebar.rows.set(id, row);
  return row;
}

/** Show `session` in its row; only what changed is touched. `force`: the
 * time since it was used is worked out again. */
function updateRow(row, session, force) {
  const shown = row.shown;
  const title = session.title || 'Untitled session';
  if (shown.title !== title) {
    shown.title = title;
    showText(row.title, title);
    // A title too long for the list ends in an ellipsis; the tooltip has it whole.
    row.title.title = visibleText(title);
  }
  const status = rowStatus(session.sessionId);
  if (shown.status !== status) {
    shown.status = status;
    row.button.dataset.status = status;
    row.badge.dataset.status = status;
    row.badgeText.textContent = STATUS_TEXT[status] || status;
  }
  const unread = Boolean(session.unread);
  if (shown.unread !== unread) {
    shown.unread = unread;
    row.unread.hidden = !unread;
    row.button.dataset.unread = String(unread);
  }
  const current = session.sessionId === state.current;
  if (shown.current !== current) {
    shown.current = current;
    if (current) row.button.setAttribute('aria-current', 'true');
    else row.button.removeAttribute('aria-current');
  }
  if (force || shown.updatedAt !== session.updatedAt) {
    shown.updatedAt = session.updatedAt;
    const when = timeAgo(session.updatedAt);
    if (row.when.textContent !== when) row.when.textContent = when;
  }
}

/** Make `nodes` the children of `parent`, in order, moving only those out
 * of place; the children left over are removed. */
function arrange(parent, nodes) {
  let next = parent.firstChild;
  for (const node of nodes) {
    if (node === next) next = next.nextSibling;
    else parent.insertBefore(node, next);
  }
  while (next) {
    const after = next.nextSibling;
    next.remove();
    next = after;
  }
}

function renderSessions({ force = false } = {}) {
  const groups = groupedSessions();
  const sections = [];
  const listed = new Set();
  for (const [cwd, sessions] of groups) {
    const group = groupElements(cwd);
    const items = [];
    for (const session of sessions) {
      const row = rowElements(session.sessionId);
      updateRow(row, session, force);
      items.push(row.item);
      listed.add(session.sessionId);
    }
    arrange(group.list, items);
    sections.push(group.section);
  }
  for (const cwd of sidebar.groups.keys()) if (!groups.has(cwd)) sidebar.groups.delete(cwd);
  for (const id of sidebar.rows.keys()) if (!listed.has(id)) sidebar.rows.delete(id);
  if (groups.size === 0) {
    if (!sidebar.empty) {
      sidebar.empty = document.createElement('p');
      sidebar.empty.className = 'sessions-empty';
      sidebar.empty.textContent = 'No sessions yet.';
    }
    sections.push(sidebar.empty);
  }
  arrange(ui.groups, sections);
  const cwds = [...groups.keys()].join('\n');
  if (cwds !== sidebar.cwds) {
    sidebar.cwds = cwds;
    ui.knownCwds.replaceChildren(
      ...[...groups.keys()].map((cwd) => {
        const option = document.createElement('option');
        option.value = cwd;
        return option;
      }),
    );
  }
}

function renderHeader() {
  const session = state.sessions.get(state.current);
  showText(ui.sessionTitle, session ? session.title || 'Untitled session' : '');
  showText(ui.sessionCwdText, session?.cwd || '');
  // Either may be cut short in a narrow window: the tooltip has it whole.
  ui.sessionTitle.title = session ? visibleText(session.title || 'Untitled session') : '';
  ui.sessionCwd.title = visibleText(session?.cwd || '');
  ui.deleteSession.hidden = !session;
  const waiting = [...state.sessions.keys()].filter((id) => statusOf(id) === 'waiting_for_permission');
  const title = session ? `${visibleText(session.title || 'Untitled session')} — Punie` : 'Punie';
  document.title = waiting.length ? `(${waiting.length}) ${title}` : title;
  renderWaitingBadge(waiting.filter((id) => id !== state.current).length);
  const usage = state.transcripts.get(state.current)?.usage;
  ui.usage.hidden = !usage;
  if (usage) {
    ui.usageMeter.max = usage.size || 1;
    ui.usageMeter.value = Math.min(usage.used, usage.size || usage.used);
    const unit = document.createElement('span');
    unit.className = 'usage-unit';
    unit.textContent = ' tokens';
    ui.usageText.replaceChildren(`${tokens(usage.used)} / ${tokens(usage.size)}`, unit);
    ui.usage.title = `${usage.used} of ${usage.size} tokens of the context window used`;
  }
}

/** How many other sessions wait for an answer, on ☰: in a narrow window
 * the list and Notify are out of sight, and nothing else would say so. */
function renderWaitingBadge(count) {
  const text = count ? String(count) : '';
  if (ui.waitingBadge.textContent === text) return;
  ui.waitingBadge.textContent = text;
  ui.waitingBadge.hidden = !count;
  const label = count
    ? `Sessions: ${count} other ${count === 1 ? 'session waits' : 'sessions wait'} for your answer (Alt+W)`
    : 'Sessions';
  ui.toggleSessions.setAttribute('aria-label', label);
  ui.toggleSessions.title = label;
}

function tokens(count) {
  if (count >= 1_000_000) return `${(count / 1_000_000).toFixed(1)}M`;
  if (count >= 10_000) return `${Math.round(count / 1000)}k`;
  if (count >= 1000) return `${(count / 1000).toFixed(1)}k`;
  return String(count ?? 0);
}

/** Whether a transcript is on show: one the connection follows, or, while
 * the page reconnects, the one it followed. */
function showing() {
  return Boolean(state.current && ui.transcriptHost.firstElementChild);
}

/** Open or put away the session list, in a narrow window a drawer (the
 * stylesheet takes it out of the keyboard's and screen readers' reach
 * while it is put away). */
function showSessions(open) {
  ui.body.classList.toggle('sessions-open', open);
  ui.toggleSessions.setAttribute('aria-expanded', String(open));
}

function renderComposer() {
  const open = Boolean(state.current && state.transcripts.has(state.current));
  const running = open && statusOf(state.current) !== 'idle';
  // A prompt sent before the history is on the page would show above it.
  const loading = open && state.transcripts.get(state.current).loading;
  ui.composer.hidden = !showing();
  ui.send.disabled = !state.connection || !open || running || loading;
  ui.cancel.hidden = !running;
  ui.cancel.disabled = !state.connection;
  renderSetting(ui.sessionModel, 'model', open);
  renderSetting(ui.sessionMode, 'mode', open);
  renderCommandHints();
  renderAttachments();
}

/** The chip of each file waiting in the composer, made once: a chip drawn
 * anew at every update of a streaming session (any session the page
 * follows) would swallow a click on its × and drop the keyboard from it. */
const chips = new WeakMap();

function chipOf(attachment) {
  let chip = chips.get(attachment);
  if (chip) return chip;
  chip = document.createElement('span');
  chip.className = 'chip attachment pending';
  // A long name ends in an ellipsis, the × still beside it: the tooltip has it whole.
  chip.title = visibleText(attachment.name);
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.className = 'remove';
  remove.textContent = '×';
  remove.setAttribute('aria-label', `Remove ${visibleText(attachment.name)}`);
  remove.addEventListener('click', () => removeAttachment(attachment));
  chip.append(isolated('span', 'chip-name', attachment.name), remove);
  chips.set(attachment, chip);
  return chip;
}

function renderAttachments() {
  arrange(ui.attachments, state.attachments.map(chipOf));
}

/** Take `attachment` out of the next prompt; the keyboard, if it was on its
 * ×, goes to the next file's, else to the prompt. */
function removeAttachment(attachment) {
  const at = state.attachments.indexOf(attachment);
  if (at === -1) return;
  const focused = chips.get(attachment)?.contains(document.activeElement);
  state.attachments.splice(at, 1);
  renderAttachments();
  if (!focused) return;
  const next = state.attachments[Math.min(at, state.attachments.length - 1)];
  (next ? chipOf(next).querySelector('.remove') : ui.prompt).focus();
}

/** Show the open session's option `id` (a select config option) in `select`. */
function renderSetting(select, id, open) {
  const option = open && state.settings.get(state.current)?.find((setting) => setting.id === id && setting.type === 'select');
  select.hidden = !option;
  if (!option) return;
  select.disabled = !state.connection;
  const choices = (option.options || []).flatMap((choice) => choice.options || [choice]);
  const shown = [...select.options].map((choice) => choice.value).join('\n');
  if (shown !== choices.map((choice) => choice.value).join('\n')) {
    select.replaceChildren(
      ...choices.map((choice) => {
        const element = document.createElement('option');
        element.value = choice.value;
        element.textContent = choice.name;
        if (choice.description) element.title = choice.description;
        return element;
      }),
    );
  }
  select.value = option.currentValue;
  select.title = `${option.name}: ${choices.find((choice) => choice.value === option.currentValue)?.description || option.currentValue}`;
}

/** Whether Esc put the command list away; typing brings it back. */
let hintsDismissed = false;

/** The open session's commands that the prompt, a `/` and the start of a
 * name so far, could become. */
function matchingCommands() {
  const typed = /^\/(\S*)$/.exec(ui.prompt.value);
  if (!typed || !state.current || hintsDismissed) return [];
  return (state.commands.get(state.current) || []).filter((command) => command.name.startsWith(typed[1]));
}

/** What the command list shows now, so that it is drawn again only when
 * that changes: a list drawn anew at every update of a streaming session
 * would swallow a click on it. */
let shownHints = '';

function renderCommandHints() {
  const matching = matchingCommands();
  ui.commandHints.hidden = matching.length === 0;
  const hints = matching.map((command) => [command.name, command.description, command.input?.hint].join('\t')).join('\n');
  if (hints === shownHints) return;
  shownHints = hints;
  ui.commandHints.replaceChildren(
    ...matching.map((command, index) => {
      const hint = document.createElement('button');
      hint.type = 'button';
      hint.className = 'command-hint';
      hint.setAttribute('role', 'option');
      hint.setAttribute('aria-selected', String(index === 0));
      hint.dataset.command = command.name;
      const name = document.createElement('strong');
      name.textContent = `/${command.name}`;
      const about = document.createElement('span');
      about.textContent = ` ${command.description}${command.input?.hint ? ` — then ${command.input.hint}` : ''}`;
      hint.append(name, about);
      hint.addEventListener('click', () => useCommand(command.name));
      return hint;
    }),
  );
}

/** Put `/name ` in the prompt, for the person to go on typing. */
function useCommand(name) {
  ui.prompt.value = `/${name} `;
  renderCommandHints();
  ui.prompt.focus();
}

/** Change the open session's option `configId` to `value`. */
async function changeSetting(configId, value) {
  const id = state.current;
  try {
    const { configOptions } = await state.connection.request('session/set_config_option', { sessionId: id, configId, value });
    state.settings.set(id, configOptions);
  } catch (error) {
    showNotice(`Cannot change the ${configId}: ${describe(error)}`);
  }
  renderComposer();
}

function render() {
  renderSessions();
  renderHeader();
  renderComposer();
  const transcript = state.transcripts.get(state.current);
  transcript?.waitingElsewhere(state.sessions.get(state.current)?.status === 'waiting_for_permission' && !transcript.waitingForPermission);
  ui.welcome.hidden = showing();
  renderNewBelow();
}

/** Make `id` the open session; the composer keeps each session's draft. */
function switchTo(id) {
  if (state.current !== id) {
    if (state.current) state.drafts.set(state.current, { text: ui.prompt.value, attachments: state.attachments });
    const draft = state.drafts.get(id);
    state.drafts.delete(id);
    ui.prompt.value = draft?.text || '';
    state.attachments = draft?.attachments || [];
    hintsDismissed = false;
  }
  state.current = id;
  const session = state.sessions.get(id);
  if (session) session.unread = false;
  remember(id);
  // What the page said about the last session is not about this one.
  if (noticeKind !== 'connection') showNotice('');
}

/** Where a tab keeps its drafts while it reloads: following a sign-in link
 * in a tab a server restart signed out loads the page again. */
const DRAFTS_KEY = 'punie.drafts';

function saveDrafts() {
  const drafts = new Map(state.drafts);
  if (state.current) drafts.set(state.current, { text: ui.prompt.value, attachments: state.attachments });
  const kept = [...drafts].filter(([, draft]) => draft.text || draft.attachments.length > 0);
  if (kept.length === 0 && !state.reopen) {
    forgetSavedDrafts();
    return;
  }
  const saved = (withFiles) =>
    JSON.stringify({
      reopen: state.reopen,
      drafts: kept.map(([id, draft]) => [id, { text: draft.text, attachments: withFiles ? draft.attachments : [] }]),
    });
  try {
    sessionStorage.setItem(DRAFTS_KEY, saved(true));
  } catch {
    // Files too big for the browser's storage are left behind; the words
    // are kept if they fit.
    try {
      sessionStorage.setItem(DRAFTS_KEY, saved(false));
    } catch {
      forgetSavedDrafts();
    }
  }
}

function restoreSavedDrafts() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(DRAFTS_KEY) || 'null');
  } catch {
    // Storage the browser will not give, or not ours to read: no drafts.
  }
  forgetSavedDrafts();
  if (!saved) return;
  for (const [id, draft] of saved.drafts || []) {
    state.drafts.set(id, { text: draft.text || '', attachments: draft.attachments || [] });
  }
  state.reopen = saved.reopen || null;
}

function forgetSavedDrafts() {
  try {
    sessionStorage.removeItem(DRAFTS_KEY);
  } catch {
    // Nothing was kept where the browser gives no storage.
  }
}

// ---------------------------------------------------------------- opening

/** The transcript on show. */
let shownTranscript = null;

function showTranscript(id) {
  const transcript = state.transcripts.get(id) || null;
  keepPlace();
  ui.transcriptHost.replaceChildren(...(transcript ? [transcript.node] : []));
  shownTranscript = transcript;
  growth.disconnect();
  growth.observe(ui.transcriptHost);
  if (transcript) growth.observe(transcript.node);
  returnTo(transcript);
}

/** Note where the person is in the transcript on show, to bring them back
 * there when it is shown again. */
function keepPlace() {
  const transcript = shownTranscript;
  const host = ui.transcriptHost;
  if (!transcript || host.firstElementChild !== transcript.node) return;
  transcript.place = { top: host.scrollTop, following, height: host.scrollHeight, newBelow: newOutputBelow };
}

/** Show `transcript` as the person left it: at its newest output if they
 * followed it (or never saw it), else where they were reading, saying so
 * when something came below meanwhile. */
function returnTo(transcript) {
  const place = transcript?.place;
  if (!place || place.following) {
    followNewest();
    return;
  }
  const host = ui.transcriptHost;
  follow(false);
  host.scrollTop = place.top;
  scrolledTo = host.scrollTop;
  grownTo = host.scrollHeight;
  markNewBelow(place.newBelow || host.scrollHeight > place.height);
}

function newTranscript(id) {
  const transcript = new Transcript(id);
  transcript.onChange = (update) => {
    if (update?.sessionUpdate === 'session_info_update' && update.title) {
      upsertSession({ sessionId: id, title: update.title });
    }
    scheduleRender();
  };
  // Replayed turns (the history loading) say how the last one ended, not
  // that anything happened since the person last looked.
  transcript.onTurnEnd = (stopReason) => noteTurnEnd(id, stopReason, { replayed: transcript.loading });
  state.transcripts.set(id, transcript);
  return transcript;
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  // A hidden tab gets no animation frames, yet its title must go on counting
  // the questions waiting: there a timer (slowed by the browser, but run) renders.
  const later = document.hidden ? (run) => setTimeout(run, 0) : requestAnimationFrame;
  later(() => {
    renderQueued = false;
    render();
  });
}

// A frame asked for just before the tab was hidden would wait for its return.
document.addEventListener('visibilitychange', () => {
  if (document.hidden && renderQueued) {
    renderQueued = false;
    render();
  }
});

// The newest output stays in view while the person is at the bottom. Whether
// they are is decided when they scroll, never when the transcript grows: a
// tall block (a command's output, Markdown drawn a frame later) would
// otherwise push the bottom out of reach before it is measured.
const NEAR_BOTTOM_PX = 40;
let following = true;
/** Where the page last scrolled the transcript to, so that the scroll event
 * it causes is not taken for the person's. */
let scrolledTo = null;
/** Whether output came below the view while the person read above it. */
let newOutputBelow = false;
/** How tall the transcript was when last measured: what grows is new, what
 * only changes the view's size (the composer growing, say) is not. */
let grownTo = 0;

function scrollToNewest() {
  const host = ui.transcriptHost;
  host.scrollTop = host.scrollHeight;
  scrolledTo = host.scrollTop;
}

function follow(yes) {
  following = yes;
  // The browser's scroll anchoring keeps the line in view where it was when
  // something above it grows: right while the person reads back, but while
  // following it would scroll on its own, and look like the person did.
  ui.transcriptHost.classList.toggle('following', yes);
  if (yes) markNewBelow(false);
}

function markNewBelow(yes) {
  newOutputBelow = yes;
  renderNewBelow();
}

/** The button that says output came below the view, and takes the person
 * there: a question that waits says it is one. */
function renderNewBelow() {
  const show = newOutputBelow && !following && showing();
  ui.newBelow.hidden = !show;
  if (!show) return;
  const text = shownTranscript?.waitingForPermission ? 'A question waits below ↓' : 'New output below ↓';
  if (ui.newBelow.textContent !== text) ui.newBelow.textContent = text;
}

function followNewest() {
  follow(true);
  scrollToNewest();
}

ui.transcriptHost.addEventListener('scroll', () => {
  const host = ui.transcriptHost;
  if (host.scrollTop === scrolledTo) return;
  scrolledTo = null;
  follow(host.scrollHeight - host.scrollTop - host.clientHeight < NEAR_BOTTOM_PX);
});

/** Whether the transcript on show changed since it was last measured. A
 * transcript that grows only because its lines wrap anew (the window made
 * narrower) has nothing new below. */
let contentChanged = false;
const changes = new MutationObserver(() => {
  if (contentChanged) return;
  contentChanged = true;
  // A change that moved nothing is not measured; once the frame that laid
  // it out is over, it is old news.
  requestAnimationFrame(() => requestAnimationFrame(() => (contentChanged = false)));
});
changes.observe(ui.transcriptHost, { childList: true, subtree: true, characterData: true });

// Runs after layout, before paint: whatever grew is measured already.
const growth = new ResizeObserver(() => {
  const host = ui.transcriptHost;
  if (following) scrollToNewest();
  else if (contentChanged && host.scrollHeight > grownTo + 1) markNewBelow(true);
  grownTo = host.scrollHeight;
});

ui.newBelow.addEventListener('click', () => {
  followNewest();
  // Asked for, the question takes the keyboard, as with Alt+W; else the
  // prompt does, rather than the button that goes away.
  if (!shownTranscript?.focusQuestion()) ui.prompt.focus({ preventScroll: true });
});

function remember(id) {
  const hash = id ? `#session=${encodeURIComponent(id)}` : '';
  if (location.hash !== hash) history.replaceState(null, '', hash || location.pathname);
}

/** Open session `id`: its history replays, then its live updates follow.
 * A session not in the list (a link to one older than the list reads at
 * start, say) is asked of the server all the same; while it answers, a
 * session open before stays open, and if the server has no such session,
 * the page says the link leads nowhere. */
async function openSession(id) {
  // Sessions open through the connection; the notice goes once it is back.
  if (!state.connection) {
    showNotice('The page is not connected to the server, so it cannot open that session now. It reconnects by itself; try again then.', 'connection');
    return;
  }
  showSessions(false);
  if (state.transcripts.has(id)) {
    switchTo(id);
    showTranscript(id);
    render();
    ui.prompt.focus();
    return;
  }
  const listed = Boolean(state.sessions.get(id)?.cwd);
  const keep = !listed && state.current !== id && state.transcripts.has(state.current);
  if (!keep) switchTo(id);
  const transcript = newTranscript(id);
  transcript.setLoading(true);
  if (!keep) showTranscript(id);
  render();
  const cwd = state.sessions.get(id)?.cwd || '/';
  const load = state.connection.request('session/load', { sessionId: id, cwd, mcpServers: [] });
  transcript.loaded = load.then(
    () => true,
    () => false,
  );
  try {
    const { configOptions, _meta: meta } = await load;
    // Deleted (or forgotten) while it loaded: nothing is left to show.
    if (state.transcripts.get(id) !== transcript) {
      render();
      return;
    }
    if (configOptions) state.settings.set(id, configOptions);
    // Not in the list yet: it joins it, in its project.
    if (!listed && typeof meta?.['punie/cwd'] === 'string') upsertSession({ sessionId: id, cwd: meta['punie/cwd'] });
  } catch (error) {
    state.transcripts.delete(id);
    if (state.current === id) showTranscript(null);
    const missing =
      error instanceof RpcError && (error.code === RESOURCE_NOT_FOUND || (!listed && error.code === INVALID_PARAMS));
    if (missing && !listed) {
      state.sessions.delete(id);
      if (state.current === id) state.current = null;
      remember(state.current);
      showNotice(NOT_FOUND);
    } else if (missing) {
      forgetSession(id, 'That session no longer exists: it was deleted.');
    } else {
      showNotice(`Cannot open the session: ${describe(error)}`);
    }
    render();
    return;
  } finally {
    transcript.setLoading(false);
  }
  // Unless the person went elsewhere meanwhile.
  if (keep && wantedSession() === id) switchTo(id);
  if (state.current === id) {
    showTranscript(id);
    ui.prompt.focus();
  }
  render();
}

function moveSession(step) {
  const order = sessionOrder();
  if (order.length === 0) return;
  const here = order.indexOf(state.current);
  const next = here === -1 ? (step > 0 ? 0 : order.length - 1) : (here + step + order.length) % order.length;
  openSession(order[next]);
  document.querySelector(`.session[data-session-id="${CSS.escape(order[next])}"]`)?.scrollIntoView({ block: 'nearest' });
}

/** Put the keyboard on a question waiting for this page's answer: the open
 * session's, unless it has it already; else the next session's, in the
 * list's order, opening that session. A session the page has not opened
 * (one from before a reload, say) counts as the list shows it waiting. */
async function nextQuestion() {
  const here = state.transcripts.get(state.current);
  if (here?.waitingForPermission && !here.questionFocused) {
    here.focusQuestion();
    return;
  }
  const order = sessionOrder();
  const at = order.indexOf(state.current);
  for (let step = 1; step <= order.length; step += 1) {
    const id = order[(at + step + order.length) % order.length];
    if (statusOf(id) === 'waiting_for_permission') {
      await goToQuestion(id);
      return;
    }
  }
  showNotice('No session is waiting for your answer.');
}

/** How long the page waits, once it opened a session that waits for
 * permission, for the server to put the question to it. The server asks
 * the client that sent the prompt; once that one is gone (a tab reloaded),
 * it asks the next client to attach, which the page just did. */
const QUESTION_ARRIVES_MS = 3000;

/** Open session `id`, which waits for permission, and put the keyboard on
 * its question; or, when another client holds the question, show the call
 * that waits and say where it is answered. */
async function goToQuestion(id) {
  const attachedBefore = state.transcripts.has(id);
  await openSession(id);
  if (state.current !== id) return;
  document.querySelector(`.session[data-session-id="${CSS.escape(id)}"]`)?.scrollIntoView({ block: 'nearest' });
  const transcript = state.transcripts.get(id);
  if (!transcript) return;
  // Attached already, the page would have been asked by now.
  if (await transcript.questionSoon(attachedBefore ? 0 : QUESTION_ARRIVES_MS)) {
    if (state.current === id) transcript.focusQuestion();
    return;
  }
  if (state.current !== id || statusOf(id) !== 'waiting_for_permission') return;
  render();
  transcript.showWaitingElsewhere();
  showNotice('This session waits for an answer in another client, the one that sent its prompt: only that client can answer it.');
}

// ---------------------------------------------------------------- notifications

/** Where the page keeps whether the person wants desktop notifications. */
const NOTIFY_KEY = 'punie.notify';

const notificationsExist = typeof Notification !== 'undefined';

function notificationsOn() {
  return notificationsExist && Notification.permission === 'granted' && localStorage.getItem(NOTIFY_KEY) === 'on';
}

function renderNotifyButton() {
  ui.notify.hidden = !notificationsExist;
  if (!notificationsExist) return;
  const on = notificationsOn();
  ui.notify.setAttribute('aria-pressed', String(on));
  ui.notify.textContent = on ? 'Notifying' : 'Notify me';
  ui.notify.title =
    Notification.permission === 'denied'
      ? 'The browser blocks notifications from this page: allow them in its site settings'
      : on
        ? 'A notification comes when a session needs your answer while you look elsewhere (click to stop)'
        : 'Notify me when a session needs an answer while I look elsewhere';
}

async function toggleNotifications() {
  if (notificationsOn()) {
    localStorage.setItem(NOTIFY_KEY, 'off');
  } else {
    const permission = Notification.permission === 'default' ? await Notification.requestPermission() : Notification.permission;
    if (permission === 'granted') localStorage.setItem(NOTIFY_KEY, 'on');
    else showNotice('The browser blocks notifications from this page: allow them in its site settings, then try again.');
  }
  renderNotifyButton();
}

/** Tell the person that a session asks them something, when they look at
 * another session, tab or window; the notification, to close once the
 * question is answered. */
function notifyOfQuestion(sessionId, request) {
  if (!notificationsOn() || (!document.hidden && state.current === sessionId)) return null;
  const session = state.sessions.get(sessionId);
  const notification = new Notification('Punie needs your answer', {
    body: visibleText(`${session?.title || 'Untitled session'}: ${request.toolCall?.title || 'a tool call'}`),
    tag: `punie-question-${sessionId}`,
  });
  notification.onclick = () => {
    window.focus();
    openSession(sessionId);
    notification.close();
  };
  return notification;
}

// ---------------------------------------------------------------- delete

/** Ask whether to delete the open session: its history goes for good. */
function openDeleteDialog() {
  const session = state.sessions.get(state.current);
  if (!session) return;
  const running = statusOf(session.sessionId) !== 'idle';
  ui.deleteWhat.textContent =
    `“${visibleText(session.title || 'Untitled session')}” and its whole history are removed from the server` +
    (running ? ', and its running turn is stopped.' : '.') + ' This cannot be undone.';
  ui.deleteError.textContent = '';
  ui.deleteDialog.dataset.sessionId = session.sessionId;
  ui.deleteDialog.showModal();
}

async function deleteSession(id) {
  await state.connection.request('session/delete', { sessionId: id });
  forgetSession(id, 'The session was deleted.');
}

// ---------------------------------------------------------------- new session

function openNewSessionDialog() {
  ui.newSessionError.textContent = '';
  const current = state.sessions.get(state.current);
  if (!ui.newSessionCwd.value) ui.newSessionCwd.value = current?.cwd || '';
  ui.newSessionModel.placeholder = state.defaultModel ? `${state.defaultModel} (the server's default)` : "the server's default";
  ui.dialog.showModal();
  ui.newSessionCwd.focus();
}

async function createSession(cwd, model) {
  const params = { cwd, mcpServers: [] };
  if (model && model !== state.defaultModel) params._meta = { 'punie/model': model };
  const { sessionId, configOptions } = await state.connection.request('session/new', params);
  if (configOptions) state.settings.set(sessionId, configOptions);
  upsertSession({ sessionId, cwd, title: null, status: 'idle', updatedAt: new Date().toISOString() });
  newTranscript(sessionId);
  switchTo(sessionId);
  showTranscript(sessionId);
  render();
  ui.prompt.focus();
}

// ---------------------------------------------------------------- prompting

async function send() {
  const id = state.current;
  const transcript = state.transcripts.get(id);
  const text = ui.prompt.value;
  if (!id || (!text.trim() && state.attachments.length === 0)) return;
  const unable = cannotSend(id, transcript);
  if (unable) {
    // Send is off, but Ctrl+Enter is typed blind: the prompt stays, and why.
    showNotice(unable);
    return;
  }
  const prompt = [];
  if (text.trim()) prompt.push({ type: 'text', text });
  for (const attachment of state.attachments) prompt.push(attachment.block);
  const tooBig = oversize({ sessionId: id, prompt });
  if (tooBig) {
    showNotice(tooBig);
    return;
  }
  const attachments = state.attachments;
  ui.prompt.value = '';
  state.attachments = [];
  // What the page said about an earlier attempt (a prompt refused) is over
  // once a prompt goes; a file it could not attach stays said, since the
  // prompt went without it, until the person puts it away or attaches again.
  if (noticeKind === 'action') showNotice('');
  transcript.localPrompt(prompt);
  state.prompting.add(id);
  upsertSession({ sessionId: id, updatedAt: new Date().toISOString() });
  render();
  if (id === state.current) followNewest();
  // The server tells every client how the turn ended just before it answers;
  // the answer itself is the word of a server that does not, or of a prompt
  // refused before its turn began.
  const ended = transcript.turnsEnded;
  try {
    const { stopReason } = await state.connection.request('session/prompt', { sessionId: id, prompt });
    if (transcript.turnsEnded === ended) transcript.turnEnded(stopReason);
  } catch (error) {
    transcript.lapseQuestions('The turn ended before an answer.');
    if (refusedBeforeItsTurn(error)) {
      // Never part of the conversation: the prompt goes back to be sent again.
      transcript.withdrawLocalPrompt();
      giveBack(id, text, attachments);
      showNotice(refusalInPlainWords(error));
    } else if (transcript.turnsEnded === ended) {
      transcript.note(describe(error));
      noteTurnEnd(id, 'error');
    }
  } finally {
    state.prompting.delete(id);
    render();
  }
}

/** Why a prompt cannot go to session `id` now, or null when it can. */
function cannotSend(id, transcript) {
  if (!state.connection) return 'The page is not connected to the server: your prompt stays here until it is.';
  if (!transcript || transcript.loading) return "The session's history is still loading: send your prompt once it is on the page.";
  if (statusOf(id) === 'waiting_for_permission') {
    return 'A turn is running in this session and waits for an answer: your prompt stays here until the turn ends (Esc cancels it).';
  }
  if (statusOf(id) !== 'idle') return 'A turn is running in this session: your prompt stays here until it ends (Esc cancels it).';
  return null;
}

/** What to say instead of sending `params` as a session/prompt, when the
 * server would not take a message that big; null when it would. */
function oversize(params) {
  if (!state.maxMessageBytes) return null;
  const message = JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'session/prompt', params });
  const bytes = new Blob([message]).size;
  if (bytes <= state.maxMessageBytes) return null;
  const mib = (n) => `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  return `This prompt and its files come to ${mib(bytes)}; the server takes messages of up to ${mib(state.maxMessageBytes)} (punie serve --max-message-bytes). Remove some files and send it again.`;
}

/** Drop session `id` from the page, which it no longer exists for; if it
 * was open, say `why`. */
function forgetSession(id, why) {
  state.sessions.delete(id);
  state.transcripts.get(id)?.lapseQuestions(why);
  state.transcripts.delete(id);
  state.drafts.delete(id);
  if (state.current === id) {
    state.current = null;
    remember(null);
    showTranscript(null);
    showNotice(why);
  }
  scheduleRender();
}

/** Whether a session/prompt was refused before a turn began: invalid, or
 * the session busy with another client's turn. */
function refusedBeforeItsTurn(error) {
  return error instanceof RpcError && (error.code === INVALID_REQUEST || error.code === INVALID_PARAMS);
}

function refusalInPlainWords(error) {
  if (error.code === INVALID_REQUEST && /already running a turn/.test(error.message)) {
    return 'Another client is running a turn in this session: send your prompt again once it ends.';
  }
  return `The prompt was not sent: ${describe(error)}`;
}

/** Put a prompt back in `id`'s composer, or its draft if another session is
 * open now, unless the person has begun another. */
function giveBack(id, text, attachments) {
  if (id === state.current) {
    if (!ui.prompt.value && state.attachments.length === 0) {
      ui.prompt.value = text;
      state.attachments = attachments;
    }
    return;
  }
  if (!state.drafts.has(id)) state.drafts.set(id, { text, attachments });
}

function cancel() {
  const id = state.current;
  if (!id || !state.connection || statusOf(id) === 'idle') return;
  state.connection.notify('session/cancel', { sessionId: id });
  // The protocol asks a client that cancels to answer its open questions so.
  state.transcripts.get(id)?.lapseQuestions('Cancelled.');
  render();
}

// ---------------------------------------------------------------- attachments

function base64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

async function attach(files) {
  if (noticeKind === 'attachment') showNotice('');
  try {
    // Into the list of the session open now, even if another opens meanwhile.
    await readAttachments(files, state.attachments);
  } catch (error) {
    showNotice(`Cannot attach the file: ${describe(error)}`);
  }
  renderComposer();
}

async function readAttachments(files, attachments) {
  for (const file of files) {
    if (file.size > MAX_ATTACHMENT_BYTES) {
      showNotice(`${visibleText(file.name)} is larger than ${MAX_ATTACHMENT_BYTES / 1024 / 1024} MiB; it was not attached.`, 'attachment');
      continue;
    }
    if (PICTURE_TYPES.includes(file.type) && file.size === 0) {
      showNotice(`${visibleText(file.name)} is empty; it was not attached.`, 'attachment');
      continue;
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    if (PICTURE_TYPES.includes(file.type)) {
      // A picture the model is shown, not a file it reads.
      attachments.push({ name: file.name, size: file.size, block: { type: 'image', mimeType: file.type, data: base64(bytes) } });
      continue;
    }
    const uri = `file:///${encodeURIComponent(file.name)}`;
    let resource;
    try {
      const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      resource = { uri, text, mimeType: file.type || 'text/plain' };
    } catch {
      resource = { uri, blob: base64(bytes), mimeType: file.type || 'application/octet-stream' };
    }
    attachments.push({ name: file.name, size: file.size, block: { type: 'resource', resource } });
  }
}

// ---------------------------------------------------------------- the server

function handleNotification(method, params) {
  if (method === 'session/update') {
    const transcript = state.transcripts.get(params.sessionId);
    const update = params.update || {};
    if (update.sessionUpdate === 'session_info_update' && update.title) {
      upsertSession({ sessionId: params.sessionId, title: update.title });
    }
    if (update.sessionUpdate === 'available_commands_update') {
      state.commands.set(params.sessionId, update.availableCommands || []);
      renderCommandHints();
      return;
    }
    if (update.sessionUpdate === 'config_option_update') {
      state.settings.set(params.sessionId, update.configOptions || []);
      scheduleRender();
      return;
    }
    if (transcript) transcript.apply(update);
    else scheduleRender();
  } else if (method === '_punie/session_status' && params.status === 'deleted') {
    forgetSession(params.sessionId, 'That session was deleted by another client.');
  } else if (method === '_punie/session_status') {
    const before = state.sessions.get(params.sessionId)?.status;
    const session = upsertSession(params);
    // The server says how the last turn it ran ended, opened here or not.
    if (params.status === 'idle' && params.lastTurn) session.failed = params.lastTurn === 'error';
    if (params.status !== before && params.status !== 'idle') session.updatedAt = new Date().toISOString();
    noteStatusChange(session, before);
    scheduleRender();
  } else if (method === '$/cancel_request') {
    for (const transcript of state.transcripts.values()) {
      transcript.lapseQuestion(params?.requestId ?? params?.id, 'The agent no longer needs an answer.');
    }
    scheduleRender();
  }
}

/** What a change of `session`'s status (from `before`) tells the person:
 * a turn that began has not failed (yet); one that ended while they looked
 * elsewhere is there to read, in any session the server runs, opened here
 * or not; a question elsewhere is announced to a screen reader. */
function noteStatusChange(session, before) {
  const id = session.sessionId;
  if (session.status === before) return;
  if (session.status === 'running' && before !== 'waiting_for_permission') session.failed = false;
  const elsewhere = id !== state.current;
  if (session.status === 'idle' && before && elsewhere) session.unread = true;
  if (session.status === 'waiting_for_permission' && (elsewhere || document.hidden)) {
    announce(`${visibleText(session.title || 'Untitled session')} waits for your answer. Alt+W goes to it.`);
  }
}

async function handleRequest(method, params, id) {
  if (method !== 'session/request_permission') {
    throw new RpcError(METHOD_NOT_FOUND, `${method} is not offered by Punie's browser app`);
  }
  const transcript = state.transcripts.get(params.sessionId);
  // A page that opens a session while a question waits is asked before the
  // history arrives; the question belongs after it, in its tool call's card.
  if (!transcript || !(await transcript.loaded)) return { outcome: { outcome: 'cancelled' } };
  const answer = transcript.ask(id, params);
  scheduleRender();
  const notification = notifyOfQuestion(params.sessionId, params);
  const optionId = await answer;
  notification?.close();
  scheduleRender();
  return optionId ? { outcome: { outcome: 'selected', optionId } } : { outcome: { outcome: 'cancelled' } };
}

/** A request the server may not offer yet: its result, or null. */
async function optional(method, params) {
  try {
    return await state.connection.request(method, params);
  } catch (error) {
    if (error instanceof RpcError && error.code === METHOD_NOT_FOUND) return null;
    throw error;
  }
}

/** Read the next pages of session/list: from the newest, or from where the
 * last read stopped. Older sessions wait for the button, so that a server
 * with many thousands of sessions does not slow the page's start. */
async function listSessions({ older = false } = {}) {
  let cursor = older ? state.olderSessions : undefined;
  for (let page = 0; page < LIST_PAGES_AT_ONCE; page++) {
    const params = cursor ? { cursor } : {};
    const answer = await state.connection.request('session/list', params);
    for (const session of answer.sessions || []) upsertSession(session);
    cursor = answer.nextCursor;
    if (!cursor) break;
  }
  state.olderSessions = cursor || null;
  ui.olderSessions.hidden = !state.olderSessions;
}

/** Offer the models the server names (its default, then what the local
 * model servers have installed) in the New session dialog. Any other model
 * spec can still be typed. */
async function offerModels(connection) {
  let answer;
  try {
    answer = await optional('_punie/models', {});
  } catch {
    return; // Only suggestions; the dialog works without them.
  }
  if (state.connection !== connection) return;
  ui.knownModels.replaceChildren(
    ...(answer?.models || []).map((model) => {
      const option = document.createElement('option');
      option.value = model;
      return option;
    }),
  );
}

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/acp`;
}

async function connect() {
  setConnection('connecting…', 'connecting');
  const connection = await Connection.open(wsUrl());
  connection.onNotification(handleNotification);
  connection.onRequest(handleRequest);
  connection.onClose(() => lost(connection));
  state.connection = connection;
  await connection.request('initialize', {
    protocolVersion: 1,
    clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
    clientInfo: { name: 'punie-browser', title: 'Punie in the browser', version: '1' },
  });
  const info = await optional('_punie/info', {});
  state.defaultModel = info?.defaultModel || null;
  state.maxMessageBytes = info?.maxMessageBytes || null;
  // Asking the local model servers may take a moment: not waited for.
  offerModels(connection);
  // What the page knew of the sessions' turns may have changed while it
  // was away: a session not in the server's memory is idle.
  for (const session of state.sessions.values()) session.status = 'idle';
  const watched = await optional('_punie/watch', {});
  for (const session of watched?.sessions || []) upsertSession(session);
  await listSessions();
  setConnection(info?.version ? `connected · Punie ${info.version}` : 'connected', 'connected');
  state.reconnects = 0;
  showNotice('');
}

// What the page knew through its connection no longer holds; open questions
// (permission cards) say why they can no longer be answered. The transcript
// on show stays, to read, until the session opens again.
function forgetConnection(why) {
  state.connection = null;
  for (const transcript of state.transcripts.values()) transcript.lapseQuestions(why);
  state.transcripts.clear();
  state.settings.clear();
  state.commands.clear();
  state.prompting.clear();
}

function lost(connection) {
  if (state.connection !== connection) return;
  forgetConnection('The connection to the server closed.');
  setConnection('disconnected', 'disconnected');
  showNotice('The connection to the server closed. Reconnecting…', 'connection');
  render();
  const delay = RECONNECT_DELAYS_MS[Math.min(state.reconnects, RECONNECT_DELAYS_MS.length - 1)];
  state.reconnects += 1;
  setTimeout(start, delay);
}

async function signedIn() {
  const response = await fetch('/signed-in', { cache: 'no-store' });
  const answer = await response.json();
  return answer.signedIn === true;
}

// Nothing the page showed is the signed-out browser's to see. What the
// person was writing is theirs, though: put away until the page is signed in
// again, unless they signed out themselves.
function showSignedOut(words, { forget = false } = {}) {
  if (forget) {
    state.drafts.clear();
    state.reopen = null;
    forgetSavedDrafts();
  } else if (state.current) {
    state.drafts.set(state.current, { text: ui.prompt.value, attachments: state.attachments });
    state.reopen = state.current;
  }
  state.sessions.clear();
  state.current = null;
  state.attachments = [];
  ui.prompt.value = '';
  showTranscript(null);
  showNotice('');
  render();
  ui.signIn.hidden = false;
  ui.signOut.hidden = true;
  ui.body.classList.add('signed-out');
  setConnection(words, 'disconnected');
  // Signed in again in another tab (the cookie is shared), this one follows
  // when the person comes back to it.
  if (!waitingForFocus) {
    waitingForFocus = true;
    window.addEventListener(
      'focus',
      () => {
        waitingForFocus = false;
        start();
      },
      { once: true },
    );
  }
}

/** A signed-out page looks again when it gets the focus back; once. */
let waitingForFocus = false;

// The server forgets this browser's cookie, so a copy of it stops working
// too; the page closes its own connection and shows how to sign in again.
async function signOut() {
  ui.signOut.disabled = true;
  try {
    const response = await fetch('/sign-out', { method: 'POST', cache: 'no-store' });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
  } catch (error) {
    ui.signOut.disabled = false;
    showNotice(`Cannot sign out (${describe(error)}).`);
    return;
  }
  const connection = state.connection;
  forgetConnection('This browser signed out.');
  connection?.close();
  showSignedOut('signed out', { forget: true });
}

async function start() {
  try {
    const allowed = await signedIn();
    // The server answered: whatever said it could not be reached is over.
    showNotice('');
    if (!allowed) {
      showSignedOut('not signed in');
      return;
    }
    ui.signIn.hidden = true;
    ui.body.classList.remove('signed-out');
    ui.signOut.hidden = false;
    ui.signOut.disabled = false;
    await connect();
  } catch (error) {
    setConnection('disconnected', 'disconnected');
    showNotice(`Cannot reach the Punie server (${describe(error)}). Trying again…`, 'connection');
    const delay = RECONNECT_DELAYS_MS[Math.min(state.reconnects, RECONNECT_DELAYS_MS.length - 1)];
    state.reconnects += 1;
    setTimeout(start, delay);
    return;
  }
  // The address wins: a session link pasted while the server was away.
  const wanted = wantedSession();
  const reopen = wanted || state.current || state.reopen;
  state.reopen = null;
  if (reopen && (state.sessions.has(reopen) || reopen === wanted)) {
    await openSession(reopen);
    return;
  }
  state.current = null;
  showTranscript(null);
  if (reopen) remember(null);
  render();
}

/** The session the address names, if any. */
function wantedSession() {
  return new URLSearchParams(location.hash.slice(1)).get('session');
}

// ---------------------------------------------------------------- events

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  send();
});
ui.cancel.addEventListener('click', cancel);
ui.signOut.addEventListener('click', signOut);
ui.notify.addEventListener('click', toggleNotifications);
ui.newSession.addEventListener('click', openNewSessionDialog);
ui.olderSessions.addEventListener('click', async () => {
  ui.olderSessions.disabled = true;
  try {
    await listSessions({ older: true });
    render();
  } catch (error) {
    showNotice(`Could not list older sessions: ${describe(error)}`);
  } finally {
    ui.olderSessions.disabled = false;
  }
});
ui.toggleSessions.addEventListener('click', () => showSessions(!ui.body.classList.contains('sessions-open')));
// In a narrow window the list lies over the conversation: a click beside it puts it away.
document.addEventListener('click', (event) => {
  if (!ui.body.classList.contains('sessions-open')) return;
  if (ui.sidebar.contains(event.target) || ui.toggleSessions.contains(event.target)) return;
  showSessions(false);
});
ui.noticeClose.addEventListener('click', () => showNotice(''));
// Skip links move the keyboard without a fragment in the address, which
// names the open session.
ui.skipToPrompt.addEventListener('click', (event) => {
  event.preventDefault();
  (ui.composer.hidden ? ui.newSession : ui.prompt).focus();
});
ui.skipToConversation.addEventListener('click', (event) => {
  event.preventDefault();
  const target = showing() ? ui.transcriptHost.firstElementChild : ui.welcome.hidden ? ui.main : ui.welcome;
  target.tabIndex = -1;
  target.focus({ preventScroll: true });
});
// A link to a session, pasted into the address or reached with Back.
window.addEventListener('hashchange', () => {
  const wanted = wantedSession();
  // While the server is away, start() looks at the address once it is back.
  if (!wanted || wanted === state.current || !state.connection) return;
  openSession(wanted);
});
ui.fileInput.addEventListener('change', async () => {
  await attach([...ui.fileInput.files]);
  ui.fileInput.value = '';
});

ui.deleteSession.addEventListener('click', openDeleteDialog);
ui.deleteForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const id = ui.deleteDialog.dataset.sessionId;
  if (event.submitter?.value !== 'delete' || !id) {
    ui.deleteDialog.close();
    return;
  }
  try {
    await deleteSession(id);
    ui.deleteDialog.close();
  } catch (error) {
    ui.deleteError.textContent = describe(error);
  }
});

ui.newSessionForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (event.submitter?.value === 'cancel') {
    ui.dialog.close();
    return;
  }
  const cwd = ui.newSessionCwd.value.trim();
  const model = ui.newSessionModel.value.trim();
  ui.newSessionError.textContent = '';
  try {
    await createSession(cwd, model);
    ui.dialog.close();
  } catch (error) {
    ui.newSessionError.textContent = describe(error);
  }
});

// Files dropped anywhere on the conversation go with the next prompt.
let dragDepth = 0;
ui.main.addEventListener('dragenter', (event) => {
  if (!event.dataTransfer?.types.includes('Files')) return;
  dragDepth += 1;
  // With no session open, there is no prompt for the files to go with.
  ui.dropZone.textContent = state.current && showing() ? 'Drop files to attach them' : 'Open or start a session first, then drop files here';
  ui.body.classList.add('dragging');
});
ui.main.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.body.classList.remove('dragging');
});
ui.main.addEventListener('dragover', (event) => {
  if (event.dataTransfer?.types.includes('Files')) event.preventDefault();
});
ui.main.addEventListener('drop', (event) => {
  event.preventDefault();
  dragDepth = 0;
  ui.body.classList.remove('dragging');
  if (!event.dataTransfer?.files.length) return;
  if (state.current && showing()) attach([...event.dataTransfer.files]);
  else showNotice('Open a session, or start one, before attaching files: they go with its next prompt.');
});

// A screenshot pasted into the prompt goes with it, as a dropped file would;
// pasted text stays the browser's to paste, even when the clipboard holds a
// picture of it too (cells copied from a spreadsheet, say).
ui.prompt.addEventListener('input', () => {
  hintsDismissed = false;
  renderCommandHints();
});
// Tab takes the first command the prompt could become.
ui.prompt.addEventListener('keydown', (event) => {
  if (event.key !== 'Tab' || event.shiftKey) return;
  const [first] = matchingCommands();
  if (!first) return;
  event.preventDefault();
  useCommand(first.name);
});

ui.prompt.addEventListener('paste', (event) => {
  const files = [...(event.clipboardData?.files || [])];
  if (!state.current || files.length === 0 || event.clipboardData.types.includes('text/plain')) return;
  event.preventDefault();
  attach(files.map((file, index) => (file.name && file.name !== 'image.png' ? file : renamed(file, index))));
});

/** A pasted picture, which browsers all name `image.png`, named apart. */
function renamed(file, index) {
  const extension = file.type.split('/')[1] || 'bin';
  const stamp = new Date().toISOString().slice(11, 19).replaceAll(':', '');
  return new File([file], `pasted-${stamp}${index ? `-${index + 1}` : ''}.${extension}`, { type: file.type });
}

ui.sessionModel.addEventListener('change', () => changeSetting('model', ui.sessionModel.value));
ui.sessionMode.addEventListener('change', () => changeSetting('mode', ui.sessionMode.value));

document.addEventListener('keydown', (event) => {
  if (ui.dialog.open || ui.deleteDialog.open) return;
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    send();
  } else if (event.key === 'Escape') {
    if (ui.body.classList.contains('sessions-open')) {
      const inside = ui.sidebar.contains(document.activeElement);
      showSessions(false);
      // Put away, the list can no longer hold the keyboard: it goes back to ☰.
      if (inside) ui.toggleSessions.focus();
    } else if (!ui.commandHints.hidden) {
      hintsDismissed = true;
      renderCommandHints();
    } else {
      cancel();
    }
  } else if (event.altKey && (event.key === 'ArrowDown' || event.key === 'ArrowUp')) {
    event.preventDefault();
    moveSession(event.key === 'ArrowDown' ? 1 : -1);
  } else if (event.altKey && event.code === 'KeyW') {
    // By the key's place: on a Mac, Alt+W types a character.
    event.preventDefault();
    nextQuestion();
  }
});

renderNotifyButton();

restoreSavedDrafts();
window.addEventListener('pagehide', saveDrafts);

// Relative times in the list go stale; redraw them now and then.
setInterval(() => renderSessions({ force: true }), 60_000);

start();
