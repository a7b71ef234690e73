//! Sessions and the turn loop: every conversation, who is attached to it,
//! what was said, and the one turn that may be running in it.
//!
//! A session lives in the store, its "always" answers to permission requests
//! with it; it is in memory only while a connection is attached to it or a
//! turn runs in it, and even then its conversation is dropped from memory
//! when it has been idle a while. Several connections may be attached at
//! once: each receives every update, written to the store before it is sent.
//! The registry is the single source of truth for which sessions are in
//! memory. This module speaks ACP's session vocabulary (ids, updates, stop
//! reasons) and reaches clients only through the SDK's connection handles;
//! it never touches a transport.

mod attachments;
mod context;
mod history;
pub mod instructions;
mod port;
mod turn;

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{
    ContentBlock, SessionId, SessionInfo, SessionNotification, SessionUpdate,
};
use tokio_util::sync::CancellationToken;

use crate::mcp::{McpServers, McpTimeouts};
use crate::model::{Message, Model, Picture, ToolSpec};
use crate::store::{AfterWrite, EntryKind, ListPosition, SessionRow, Setting, Store, StoreError};
use crate::tools::{LastingAnswers, PermissionMemory, PermissionMode};
use crate::workspace::{Terminals, Workspace, WorkspaceError};
use context::Conversation;

pub use attachments::ClientHandle;
pub use history::TURN_ENDED_META;
pub use port::SessionPort;
pub use turn::{Turn, TurnError};

/// Why a turn ended when the server stopped during it.
const SERVER_STOPPED: &str = "the server stopped during this turn";

/// Identifies one client connection for the lifetime of the server.
pub type ConnectionId = u64;

/// Longest session title, in characters, derived from the first prompt.
const TITLE_CHARS: usize = 80;

/// How turns run and sessions are kept; the same for every session of a server.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Rounds of tool calls one turn may take before it ends with
    /// `max_turn_requests`.
    pub max_rounds: usize,
    /// The model's context window in tokens: reported with token usage, and
    /// what of a long conversation the model is sent is fitted to it.
    pub context_window: u64,
    /// Tokens of the window kept for the model's reply when it is told how
    /// many it may write (`--max-output-tokens`); 0 when it is not.
    pub reply_tokens: u64,
    /// The tools the model may call.
    pub tools: Arc<Vec<ToolSpec>>,
    /// How long a turn whose client has gone waits for another to attach
    /// when it needs one, before it ends cancelled.
    pub reattach_timeout: Duration,
    /// How long an attached session may sit idle before its conversation is
    /// dropped from memory (it is read back from the store when needed).
    pub idle_timeout: Duration,
    /// How long a client may take to answer `fs/*` and `terminal/*` requests.
    pub client_request_timeout: Duration,
    /// How long a tool of an MCP server may take.
    pub mcp_call_timeout: Duration,
    /// How long an MCP server may take to start and list its tools.
    pub mcp_start_timeout: Duration,
    /// The person's own instructions for every project, if they wrote any:
    /// see [`instructions`].
    pub user_instructions: Option<PathBuf>,
    /// Cancelled when the server starts to stop. Turns that end from then on
    /// tell only their prompters how: every connection is closing, and a
    /// later load replays the end from the history.
    pub server_stopping: CancellationToken,
}

/// One conversation, in memory.
pub struct Session {
    id: SessionId,
    cwd: PathBuf,
    settings: Arc<TurnSettings>,
    /// Who Punie is and where it works, for the model.
    system_prompt: Arc<str>,
    /// What the system prompt and Punie's own tools cost in the context
    /// window, as estimated.
    fixed_tokens: u64,
    workspace: Workspace,
    /// The `AGENTS.md` files every turn gives the model.
    instructions: instructions::Instructions,
    /// Commands Punie runs itself for this session.
    terminals: Terminals,
    /// "Always" answers to permission requests, from the store and kept
    /// there as they change.
    permissions: PermissionMemory,
    /// The MCP servers clients gave the session, running while it is in memory.
    mcp: McpServers,
    store: Store,
    attachments: attachments::Attachments,
    /// Where status changes go.
    watchers: tokio::sync::broadcast::Sender<SessionStatus>,
    state: Mutex<SessionState>,
}

struct SessionState {
    /// The model the next turn talks to; a client may change it.
    model: ModelChoice,
    /// The conversation as the model sees it; `None` when dropped from
    /// memory. Shared with a running turn's model requests.
    history: Option<Conversation>,
    /// Prompts answered so far.
    turns: usize,
    title: Option<String>,
    /// The running turn; `None` when the session is idle.
    running: Option<RunningTurn>,
    /// Why the running turn is ending, when it is not the model's doing.
    end_note: Option<String>,
    last_active: Instant,
    activity: Activity,
    /// How the last turn this server ran ended (`end_turn`, `cancelled`,
    /// `error`…), for watchers: which sessions need a look.
    last_turn: Option<String>,
    /// A window smaller than the configured one, learned from a model
    /// server that refused a longer conversation.
    learned_window: Option<u64>,
    /// The model server refused the conversation's pictures: they are named
    /// in text from then on.
    pictures_refused: bool,
}

/// A turn while it runs.
struct RunningTurn {
    cancel: CancellationToken,
    /// The connection that sent its prompt.
    prompter: ConnectionId,
}

/// What a session is doing, as watchers of the server see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    Idle,
    Running,
    WaitingForPermission,
    /// Deleted, by any client: watchers drop it from their lists.
    Deleted,
}

/// One session's state, sent to every watcher when it changes.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub session_id: SessionId,
    pub cwd: PathBuf,
    pub title: Option<String>,
    pub status: Activity,
    /// How its last turn ended, when this server ran one since it was
    /// loaded: `end_turn`, `cancelled`, `error`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_turn: Option<String>,
}

/// Status changes a slow watcher may fall behind by before it misses some.
const STATUS_BACKLOG: usize = 1024;

/// A prompt as a turn takes it.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    /// The blocks the client sent, as every attached client is shown them.
    pub shown: Vec<ContentBlock>,
    /// What the model reads: the text, with files and links written out.
    pub text: String,
    /// The pictures that came with it, shown to the model after the text.
    pub pictures: Vec<Picture>,
}

/// Why a prompt cannot start a turn now.
#[derive(Debug, thiserror::Error)]
#[error("session {0} is already running a turn; wait for it to end or send session/cancel")]
pub struct SessionBusy(pub SessionId);

impl Session {
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Start the MCP servers a client named for this session, unless they
    /// run already; what could not be started at all is said in the log.
    pub fn use_mcp_servers(&self, servers: &[agent_client_protocol::v1::schema::McpServer]) {
        for refused in self.mcp.offer(servers) {
            tracing::warn!(session = %self.id, "{refused}");
        }
    }

    pub fn is_attached(&self, connection: ConnectionId) -> bool {
        self.attachments.contains(connection)
    }

    /// Start a turn for `prompt` sent by `prompter`, unless one is running.
    /// `cancel` stops it.
    pub async fn begin_turn(
        self: &Arc<Self>,
        mut prompt: Prompt,
        prompter: ConnectionId,
        cancel: CancellationToken,
    ) -> Result<Turn, BeginError> {
        if !self.workspace.exists() {
            return Err(BeginError::WorkspaceGone(WorkspaceGone(self.cwd.clone())));
        }
        // A turn the store cannot keep would be lost without anyone knowing.
        self.store.writable()?;
        let claim = self.claim_for_turn(prompter, &cancel)?;
        let history = self.conversation().await?;
        claim.keep();
        let mut state = self.lock();
        // The turn holds the conversation until it ends, as its only holder,
        // so adding to it never copies it.
        state.history = None;
        state.end_note = None;
        state.last_active = Instant::now();
        // A prompt of pictures alone names nothing; a later one may.
        let new_title = state
            .title
            .is_none()
            .then(|| title_from(typed_text(&prompt.shown).unwrap_or(&prompt.text)))
            .flatten();
        if let Some(title) = &new_title {
            state.title = Some(title.clone());
            self.store.set(&self.id.0, Setting::Title, title.clone());
        }
        let number = state.turns + 1;
        let model = state.model.model.clone();
        drop(state);
        self.set_activity(Activity::Running);
        self.store.turn_started(&self.id.0, number as i64);
        for block in std::mem::take(&mut prompt.shown) {
            self.publish(
                SessionUpdate::UserMessageChunk(
                    agent_client_protocol::v1::schema::ContentChunk::new(block),
                ),
                Some(prompter),
            );
        }
        let port = SessionPort {
            session: self.clone(),
            prompter,
            cancel: cancel.clone(),
            terminals: Arc::default(),
        };
        Ok(Turn::new(
            port, model, prompt, number, history, new_title, cancel,
        ))
    }

    /// Make the session the turn's, unless one is running: from here no
    /// other prompt begins, nor reads the conversation, until it ends. The
    /// claim lapses unless [kept](Claim::keep): a prompt that fails, or
    /// whose request is dropped, before its turn begins leaves the session
    /// free.
    fn claim_for_turn(
        &self,
        prompter: ConnectionId,
        cancel: &CancellationToken,
    ) -> Result<Claim<'_>, SessionBusy> {
        let mut state = self.lock();
        if state.running.is_some() {
            return Err(SessionBusy(self.id.clone()));
        }
        state.running = Some(RunningTurn {
            cancel: cancel.clone(),
            prompter,
        });
        Ok(Claim { session: self })
    }

    /// The conversation, read back from the store if it was dropped; only
    /// for the turn that has claimed the session, so that no read taken
    /// while another turn ran, or before it was all written, is kept.
    async fn conversation(&self) -> Result<Conversation, StoreError> {
        if let Some(history) = self.lock().history.clone() {
            return Ok(history);
        }
        // Dropped the moment a turn ended, its last messages may still be
        // on their way to the disk.
        self.store.flush().await;
        let entries = self.store.messages(&self.id.0).await?;
        let history = Conversation::new(history::conversation(&entries));
        let mut state = self.lock();
        Ok(state.history.get_or_insert(history).clone())
    }

    /// The context window the conversation is fitted to: the configured
    /// one, or less if the model server refused that much.
    fn context_window(&self) -> u64 {
        let configured = self.settings.context_window;
        self.lock()
            .learned_window
            .map_or(configured, |learned| learned.min(configured))
    }

    /// The model server refused a conversation fitted to the window as too
    /// long: fit the next ones to `window`.
    fn shrink_context_window(&self, window: u64) {
        let mut state = self.lock();
        state.learned_window = Some(state.learned_window.map_or(window, |w| w.min(window)));
    }

    fn pictures_refused(&self) -> bool {
        self.lock().pictures_refused
    }

    /// The model server refused the conversation's pictures: name them in
    /// text from now on, rather than be refused on every call.
    fn refuse_pictures(&self) {
        self.lock().pictures_refused = true;
    }

    /// The spec of the model the next turn uses, e.g. `ollama:qwen3`.
    pub fn model_spec(&self) -> String {
        self.lock().model.spec.clone()
    }

    /// Use `model` from the next turn on; a running turn finishes with the
    /// one it began with. What was learned of the old model's limits is
    /// forgotten.
    pub fn set_model(&self, model: ModelChoice) {
        let mut state = self.lock();
        if state.model.spec == model.spec {
            return;
        }
        self.store
            .set(&self.id.0, Setting::Model, model.spec.clone());
        state.model = model;
        state.learned_window = None;
        state.pictures_refused = false;
    }

    pub fn mode(&self) -> PermissionMode {
        self.permissions.mode()
    }

    /// Ask as `mode` says from now on, in the running turn too.
    pub fn set_mode(&self, mode: PermissionMode) {
        if self.permissions.mode() == mode {
            return;
        }
        self.permissions.set_mode(mode);
        self.store
            .set(&self.id.0, Setting::Mode, mode.id().to_owned());
    }

    /// Send `notification` to every connection attached to the session (but
    /// `except`, if given) at once: it is news of the session's settings, not of its
    /// conversation, so it is not stored and a load does not replay it.
    pub fn tell_attached(&self, notification: SessionNotification, except: Option<ConnectionId>) {
        self.attachments.deliver(notification, except);
    }

    /// Stop the running turn, if any; it ends with `cancelled`.
    pub fn cancel_turn(&self) {
        if let Some(running) = &self.lock().running {
            running.cancel.cancel();
        }
    }

    /// `connection` closed the session: its work stops, as if cancelled,
    /// when it sent the running prompt or nobody else is left to see the
    /// turn through. A watcher closing leaves another client's turn alone.
    fn closed_by(&self, connection: ConnectionId) {
        let mut state = self.lock();
        let Some(running) = &state.running else {
            return;
        };
        let note = if running.prompter == connection {
            "the client that sent the prompt closed the session"
        } else if self.attachments.is_empty() {
            "the last client attached closed the session"
        } else {
            return;
        };
        let cancel = running.cancel.clone();
        state.end_note.get_or_insert_with(|| note.to_owned());
        drop(state);
        cancel.cancel();
    }

    /// The replay to `connection` has been sent; live updates follow.
    pub fn replayed(&self, connection: ConnectionId) {
        self.attachments.replayed(connection);
    }

    /// `connection` has been answered the request that attached it: a
    /// running turn may now send it requests.
    pub fn answered_attach(&self, connection: ConnectionId) {
        self.attachments.ready(connection);
    }

    /// The updates `session/load` replays: the history up to entry `newest`.
    pub async fn replay(&self, newest: i64) -> Result<Vec<SessionUpdate>, StoreError> {
        let entries = self.store.history(&self.id.0).await?;
        Ok(history::replay(&entries, newest))
    }

    /// What a client resuming the session mid-turn is sent before its
    /// answer: the running turn's unfinished tool calls, up to entry
    /// `newest` (see [`history::unfinished_tool_calls`]).
    pub async fn unfinished_tool_calls(
        &self,
        newest: i64,
    ) -> Result<Vec<SessionUpdate>, StoreError> {
        let entries = self.store.history(&self.id.0).await?;
        Ok(history::unfinished_tool_calls(&entries, newest))
    }

    /// Say why the running turn ends, for the history.
    fn note_turn_end(&self, note: String) {
        self.lock().end_note = Some(note);
    }

    /// Why the running turn is ending, when it is not the model's doing
    /// nor the person's.
    fn turn_end_note(&self) -> Option<String> {
        let noted = self.lock().end_note.clone();
        noted.or_else(|| self.stopping_note())
    }

    /// The note of a turn the server's stop cancels.
    fn stopping_note(&self) -> Option<String> {
        self.settings
            .server_stopping
            .is_cancelled()
            .then(|| SERVER_STOPPED.to_owned())
    }

    /// Store `update`, then send it to every attached connection but `except`.
    fn publish(self: &Arc<Self>, update: SessionUpdate, except: Option<ConnectionId>) {
        let Some(body) = self.stored_form(&update) else {
            return;
        };
        let notification = SessionNotification::new(self.id.clone(), update);
        self.store_update(body, move |attachments| {
            attachments.deliver(notification, except);
        });
    }

    /// Publish a tool call's update that may show a client's terminal: as
    /// it is to `terminal_client`, the connection that created the
    /// terminal, and without the terminal to every other (and in a replay,
    /// which strips it too). Another client does not know the terminal's id
    /// (Zed fails the whole update); the command's output goes beside it as
    /// text.
    fn publish_showing_terminals(
        self: &Arc<Self>,
        update: SessionUpdate,
        terminal_client: Option<ConnectionId>,
    ) {
        let Some(without) = history::without_terminals(&update) else {
            return self.publish(update, None);
        };
        let Some(body) = self.stored_form(&update) else {
            return;
        };
        let shown = terminal_client
            .map(|client| (client, SessionNotification::new(self.id.clone(), update)));
        let without = SessionNotification::new(self.id.clone(), without);
        self.store_update(body, move |attachments| {
            attachments.deliver_showing(without, shown);
        });
    }

    /// `update` as the store keeps it; `None`, said in the log, if it cannot
    /// be written out.
    fn stored_form(&self, update: &SessionUpdate) -> Option<String> {
        serde_json::to_string(update)
            .inspect_err(|error| {
                tracing::error!(session = %self.id, "cannot store an update: {error}");
            })
            .ok()
    }

    /// Append an update's `body` to the session's history, then `deliver` it
    /// to the attached connections once it is committed. The follow-up runs
    /// on the store's writer, between its commits: what can be made before
    /// is made by the caller.
    fn store_update(
        self: &Arc<Self>,
        body: String,
        deliver: impl FnOnce(&attachments::Attachments) + Send + 'static,
    ) {
        let session = self.clone();
        self.store.append(
            &self.id.0,
            EntryKind::Update,
            body,
            Some(Box::new(move || deliver(&session.attachments))),
        );
    }

    /// Store a message of the conversation.
    fn remember(&self, message: &Message) {
        match serde_json::to_string(message) {
            Ok(body) => self
                .store
                .append(&self.id.0, EntryKind::Message, body, None),
            Err(error) => tracing::error!(session = %self.id, "cannot store a message: {error}"),
        }
    }

    /// Record a finished turn: the conversation now includes it, as far as
    /// the clients saw it. Every attached client is told how it ended, once
    /// that is stored: the one that sent the prompt has its answer too, the
    /// others only this.
    fn end_turn(self: &Arc<Self>, history: Conversation, outcome: &str, error: Option<String>) {
        let noted = self.lock().end_note.take();
        // Only a cancelled turn was ended by another hand: a close that came
        // as the model finished changed nothing.
        let note = (outcome == "cancelled")
            .then(|| noted.or_else(|| self.stopping_note()))
            .flatten();
        let ended = serde_json::json!({"stopReason": outcome, "note": note, "error": error});
        let tell_everyone = history::turn_ended_update(&ended)
            .filter(|_| !self.settings.server_stopping.is_cancelled())
            .map(|update| {
                let notification = SessionNotification::new(self.id.clone(), update);
                let session = self.clone();
                Box::new(move || session.attachments.deliver(notification, None)) as AfterWrite
            });
        // Queued while the turn still holds the session: the next turn's start
        // is stored (and sent) after this end, never before it.
        self.store
            .turn_ended(&self.id.0, ended.to_string(), tell_everyone);
        let mut state = self.lock();
        state.history = Some(history);
        state.turns += 1;
        state.last_active = Instant::now();
        state.last_turn = Some(outcome.to_owned());
        state.running = None;
        drop(state);
        self.set_activity(Activity::Idle);
    }

    /// Record what the session is doing, and tell the watchers.
    fn set_activity(&self, activity: Activity) {
        let mut state = self.lock();
        if activity == Activity::Running && state.running.is_none() {
            // The turn ended meanwhile: idle it stays.
            return;
        }
        if state.activity == activity {
            // Watchers already know.
            return;
        }
        state.activity = activity;
        drop(state);
        let _ = self.watchers.send(self.status());
    }

    pub fn status(&self) -> SessionStatus {
        let state = self.lock();
        SessionStatus {
            session_id: self.id.clone(),
            cwd: self.cwd.clone(),
            title: state.title.clone(),
            status: state.activity,
            last_turn: state.last_turn.clone(),
        }
    }

    /// Once everything queued for the store so far is written, and what
    /// waited on it (deliveries to clients) has run.
    pub async fn settled(&self) {
        self.store.flush().await;
    }

    /// Whether a turn is running now.
    pub fn is_running(&self) -> bool {
        self.lock().running.is_some()
    }

    /// Drop the conversation from memory if the session has been idle longer
    /// than `idle`; true if it did.
    fn evict_if_idle(&self, idle: Duration) -> bool {
        let mut state = self.lock();
        if state.running.is_some() || state.history.is_none() || state.last_active.elapsed() < idle
        {
            return false;
        }
        state.history = None;
        true
    }

    /// A running turn holds the conversation itself.
    fn has_history_in_memory(&self) -> bool {
        let state = self.lock();
        state.history.is_some() || state.running.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where in a session's history a connection was attached.
#[derive(Debug, Clone, Copy)]
pub struct AttachPoint {
    /// The newest entry stored then: a replay goes up to it, and every
    /// later update is delivered.
    pub newest: i64,
    /// A turn was running then.
    pub mid_turn: bool,
}

/// A session claimed for a turn that has not begun yet (see
/// [`Session::claim_for_turn`]).
struct Claim<'a> {
    session: &'a Session,
}

impl Claim<'_> {
    /// The turn has begun: it holds the session now, and ends it.
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.session.lock().running = None;
    }
}

/// A prompt to a session whose workspace directory was removed.
#[derive(Debug, thiserror::Error)]
#[error(
    "the session's workspace {} no longer exists: its history can still be loaded, but it takes no prompts until the directory is back; start a new session to go on elsewhere",
    .0.display()
)]
pub struct WorkspaceGone(PathBuf);

/// Why a prompt did not start a turn.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error(transparent)]
    Busy(#[from] SessionBusy),
    #[error(transparent)]
    WorkspaceGone(#[from] WorkspaceGone),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who Punie is, for the model: short and honest. The tools are named from
/// the list the model is given, so the prompt never names one it lacks.
fn system_prompt(root: &Path, tools: &[ToolSpec]) -> String {
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_str()).collect();
    format!(
        "You are Punie, a coding agent working in the user's project at {root} on {os} ({arch}). \
         Your tools are {names}: with them you read, list and search files, edit and write them, run commands, and show the user your plan for a longer task; \
         paths are relative to the project root. Writing, editing and running commands ask the user first, \
         and the user may decline. Inspect before you change things, keep changes small, and say plainly what you did \
         and what you did not manage to do.",
        root = root.display(),
        os = std::env::consts::OS,
        arch = std::env::consts::ARCH,
        names = names.join(", "),
    )
}

/// The "always" answers stored with `row`. Unreadable ones are dropped: the
/// person is asked again, which is safe.
fn lasting_answers(row: &SessionRow) -> LastingAnswers {
    let Some(stored) = &row.permissions else {
        return LastingAnswers::new();
    };
    serde_json::from_str(stored).unwrap_or_else(|error| {
        tracing::warn!(
            session = row.id,
            "ignored stored permission answers that cannot be read: {error}"
        );
        LastingAnswers::new()
    })
}

/// The permission mode stored with `row`. An unknown one (from a later
/// version) is taken as the default, which asks: the safe side.
fn stored_mode(row: &SessionRow) -> PermissionMode {
    let Some(stored) = &row.mode else {
        return PermissionMode::default();
    };
    PermissionMode::from_id(stored).unwrap_or_else(|| {
        tracing::warn!(
            session = row.id,
            mode = stored,
            "ignored a stored permission mode Punie does not know"
        );
        PermissionMode::default()
    })
}

/// What the person typed in a prompt: its first text block, when it says
/// something. The title comes from it rather than from what the model reads,
/// which starts with an attached file's contents, or is a slash command's
/// instructions.
fn typed_text(shown: &[ContentBlock]) -> Option<&str> {
    shown.iter().find_map(|block| match block {
        ContentBlock::Text(text) if !text.text.trim().is_empty() => Some(text.text.as_str()),
        _ => None,
    })
}

/// A session's title: the first line of its first prompt, shortened.
fn title_from(prompt: &str) -> Option<String> {
    let line = prompt.trim().lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        return None;
    }
    if line.chars().count() <= TITLE_CHARS {
        return Some(line.to_owned());
    }
    let mut title: String = line.chars().take(TITLE_CHARS - 1).collect();
    title.push('…');
    Some(title)
}

/// Makes a session's model from its spec, or says why it cannot.
pub type ModelFactory = Box<dyn Fn(&str) -> Result<Arc<dyn Model>, String> + Send + Sync>;

/// The model a session was created with, and how to make it again.
#[derive(Clone)]
pub struct ModelChoice {
    pub spec: String,
    pub model: Arc<dyn Model>,
}

/// One page of `session/list`.
pub struct SessionPage {
    pub sessions: Vec<SessionInfo>,
    pub next_cursor: Option<String>,
}

/// Why a session could not be listed, opened or created.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown cursor `{0}`; pass the nextCursor of a previous session/list, or none")]
    InvalidCursor(String),
    #[error("no session {0}; session/list shows the sessions there are")]
    Unknown(SessionId),
    #[error("session {0} was deleted; start a new one with session/new")]
    Deleted(SessionId),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("{0}")]
    Model(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every session in memory, and the way to the stored ones.
pub struct SessionRegistry {
    sessions: Arc<SessionMap>,
    store: Store,
    settings: Arc<TurnSettings>,
    default_model: ModelChoice,
    /// Makes a session's model from its stored spec.
    model_for: ModelFactory,
    watchers: tokio::sync::broadcast::Sender<SessionStatus>,
    /// The sessions deleted lately, newest last: a client still holding one
    /// is told it was deleted, not that it never was.
    deleted: Arc<Mutex<VecDeque<SessionId>>>,
}

/// How many deleted sessions are remembered as such.
const REMEMBERED_DELETIONS: usize = 1024;

impl SessionRegistry {
    pub fn new(
        store: Store,
        settings: Arc<TurnSettings>,
        default_model: ModelChoice,
        model_for: ModelFactory,
    ) -> Self {
        Self {
            sessions: Arc::default(),
            store,
            settings,
            default_model,
            model_for,
            watchers: tokio::sync::broadcast::Sender::new(STATUS_BACKLOG),
            deleted: Arc::default(),
        }
    }

    /// The model a new session asked for by `spec`, or the server's.
    pub fn model_choice(&self, spec: Option<&str>) -> Result<ModelChoice, RegistryError> {
        // Kept, and shown in the model menu, as it is meant: `test ` is
        // `test`, not a second entry beside it.
        match spec.map(str::trim) {
            None => Ok(self.default_model.clone()),
            Some(spec) if spec == self.default_model.spec => Ok(self.default_model.clone()),
            Some(spec) => (self.model_for)(spec)
                .map(|model| ModelChoice {
                    spec: spec.to_owned(),
                    model,
                })
                .map_err(RegistryError::Model),
        }
    }

    /// The server's model, for sessions that do not ask for another.
    pub fn default_model(&self) -> &str {
        &self.default_model.spec
    }

    /// The status of every session in memory, and every change from now on.
    pub fn watch(
        &self,
    ) -> (
        Vec<SessionStatus>,
        tokio::sync::broadcast::Receiver<SessionStatus>,
    ) {
        let changes = self.watchers.subscribe();
        let now = self
            .lock()
            .values()
            .map(|session| session.status())
            .collect();
        (now, changes)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Create a session in `cwd` on `model`, attached to `client`.
    pub fn create(
        &self,
        cwd: PathBuf,
        model: ModelChoice,
        client: ClientHandle,
    ) -> Result<Arc<Session>, RegistryError> {
        let now = crate::store::now_us();
        let row = SessionRow {
            id: uuid::Uuid::new_v4().to_string(),
            cwd,
            title: None,
            model: model.spec.clone(),
            created_us: now,
            updated_us: now,
            turns: 0,
            running: false,
            permissions: None,
            mode: None,
        };
        let session = self.revive(&row, model, Some(Vec::new()))?;
        self.store.create_session(row, session.workspace.root());
        session.attachments.attach(client, false);
        self.lock().insert(session.id.clone(), session.clone());
        let _ = self.watchers.send(session.status());
        Ok(session)
    }

    /// Attach `client` to the session `id`, reading it from the store if it
    /// is not in memory. With `replaying`, updates wait for
    /// [`Session::replayed`]. Returns the session and the newest stored
    /// entry it had when `client` was attached.
    pub async fn attach(
        &self,
        id: &SessionId,
        client: ClientHandle,
        replaying: bool,
    ) -> Result<(Arc<Session>, AttachPoint), RegistryError> {
        let candidate = match self.get(id) {
            Some(session) => session,
            None => {
                let row = self
                    .store
                    .session(&id.0)
                    .await?
                    .ok_or_else(|| self.unknown(id))?;
                let model = self.model_choice(Some(&row.model)).unwrap_or_else(|error| {
                    tracing::warn!(
                        session = row.id,
                        model = row.model,
                        "the session's model is unavailable ({error}); it continues with the server's"
                    );
                    self.default_model.clone()
                });
                self.revive(&row, model, None)?
            }
        };
        // Attach in the store's order: every update before this point is
        // stored (and replayed), every one after it is delivered. Taking the
        // registry's lock there makes attaching and unloading one step, and a
        // session deleted meanwhile is not brought back.
        let (attached, answer) = tokio::sync::oneshot::channel();
        let sessions = self.sessions.clone();
        self.store.at_newest(
            &id.0,
            Box::new(move |newest| {
                let attached_to = newest.map(|newest| {
                    let mut sessions = lock_map(&sessions);
                    let session = sessions
                        .entry(candidate.id.clone())
                        .or_insert(candidate)
                        .clone();
                    session.attachments.attach(client, replaying);
                    // Read here, on the store's writer: a turn's end is stored
                    // before it is running no more, its start after it runs.
                    let mid_turn = session.is_running();
                    (session, AttachPoint { newest, mid_turn })
                });
                let _ = attached.send(attached_to);
            }),
        );
        match answer.await {
            Ok(Some(attached)) => Ok(attached),
            Ok(None) => Err(self.unknown(id)),
            Err(_) => Err(RegistryError::Store(StoreError::message(
                self.store.path(),
                "the store stopped".to_owned(),
            ))),
        }
    }

    /// The permission memory of the session stored as `row`: its stored
    /// answers, and every change written back.
    fn permission_memory(&self, row: &SessionRow) -> PermissionMemory {
        let (store, id) = (self.store.clone(), row.id.clone());
        let memory =
            PermissionMemory::new(
                lasting_answers(row),
                move |answers| match serde_json::to_string(answers) {
                    Ok(stored) => store.set(&id, Setting::Permissions, stored),
                    Err(error) => {
                        tracing::error!(session = id, "cannot store a permission answer: {error}");
                    }
                },
            );
        memory.set_mode(stored_mode(row));
        memory
    }

    fn revive(
        &self,
        row: &SessionRow,
        model: ModelChoice,
        history: Option<Vec<Message>>,
    ) -> Result<Arc<Session>, RegistryError> {
        let workspace = match Workspace::new(&row.cwd) {
            Ok(workspace) => workspace,
            // Its history can still be read; it takes no prompts.
            Err(WorkspaceError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                tracing::warn!(
                    session = row.id,
                    "the workspace {} of this session no longer exists",
                    row.cwd.display()
                );
                Workspace::gone(&row.cwd)
            }
            Err(error) => return Err(error.into()),
        };
        let timeouts = McpTimeouts {
            start: self.settings.mcp_start_timeout,
            call: self.settings.mcp_call_timeout,
        };
        let mcp = McpServers::new(workspace.root().to_owned(), timeouts);
        let system_prompt = system_prompt(workspace.named_root(), &self.settings.tools);
        let fixed_tokens =
            context::text_tokens(&system_prompt) + context::tools_tokens(&self.settings.tools);
        Ok(Arc::new(Session {
            id: SessionId::new(row.id.clone()),
            system_prompt: system_prompt.into(),
            fixed_tokens,
            cwd: row.cwd.clone(),
            settings: self.settings.clone(),
            instructions: instructions::Instructions::new(
                self.settings.user_instructions.clone(),
                workspace.clone(),
            ),
            workspace,
            terminals: Terminals::default(),
            permissions: self.permission_memory(row),
            mcp,
            store: self.store.clone(),
            attachments: attachments::Attachments::default(),
            watchers: self.watchers.clone(),
            state: Mutex::new(SessionState {
                model,
                history: history.map(Conversation::new),
                turns: usize::try_from(row.turns).unwrap_or(0),
                title: row.title.clone(),
                running: None,
                end_note: None,
                last_active: Instant::now(),
                activity: Activity::Idle,
                last_turn: None,
                learned_window: None,
                pictures_refused: false,
            }),
        }))
    }

    /// Every session in memory now.
    pub fn in_memory(&self) -> Vec<Arc<Session>> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Detach `connection` from session `id`; a session nobody is attached
    /// to and with no turn running leaves memory. False if it was not attached.
    pub fn detach(&self, id: &SessionId, connection: ConnectionId) -> bool {
        let Some(session) = self.get(id) else {
            return false;
        };
        let detached = session.attachments.detach(connection);
        self.unload_if_unused(&session);
        detached
    }

    /// `connection` closes session `id`: it detaches, and the running turn
    /// stops if it was that connection's, or nobody else is attached. False
    /// if it was not attached.
    pub fn close(&self, id: &SessionId, connection: ConnectionId) -> bool {
        let Some(session) = self.get(id) else {
            return false;
        };
        let detached = session.attachments.detach(connection);
        if detached {
            session.closed_by(connection);
        }
        self.unload_if_unused(&session);
        detached
    }

    /// A turn has ended: the session leaves memory if nobody is attached.
    pub fn turn_ended(&self, session: &Arc<Session>) {
        self.unload_if_unused(session);
    }

    fn unload_if_unused(&self, session: &Arc<Session>) {
        let mut sessions = self.lock();
        if session.attachments.is_empty() && !session.is_running() {
            sessions.remove(&session.id);
            drop(sessions);
            session.terminals.release_all();
        }
    }

    /// Delete session `id` from memory and disk; its running turn is
    /// cancelled, and what it still writes is dropped.
    pub async fn delete(&self, id: &SessionId) -> Result<(), RegistryError> {
        let in_memory = self.get(id);
        // What watchers are told of it once it is gone: where it was.
        let known = match in_memory {
            Some(session) => Some((session.cwd.clone(), session.lock().title.clone())),
            None => self
                .store
                .session(&id.0)
                .await
                .ok()
                .flatten()
                .map(|row| (row.cwd, row.title)),
        };
        // Said to be deleted from now on: a load replaying it meanwhile
        // fails rather than be answered as if it had loaded it.
        let marked_here = self.mark_deleted(id);
        let deleted = self.store.delete(&id.0).await;
        if deleted != Ok(true) {
            // A delete the store refused (a full disk) changes nothing: the
            // session keeps its clients, and its turn runs on.
            if marked_here {
                self.forget_deleted(id);
            }
        } else if let Some(session) = self.lock().remove(id) {
            // After the delete is written, so an attach queued before it is
            // undone too, and a turn begun meanwhile is ended as well; what
            // the turn still writes is dropped.
            if session.is_running() {
                session.note_turn_end("the session was deleted".to_owned());
                session.cancel_turn();
            }
            session.terminals.release_all();
        }
        if let (Ok(true), Some((cwd, title))) = (&deleted, known) {
            let _ = self.watchers.send(SessionStatus {
                session_id: id.clone(),
                cwd,
                title,
                status: Activity::Deleted,
                last_turn: None,
            });
        }
        match deleted {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.unknown(id)),
            Err(message) => Err(RegistryError::Store(StoreError::message(
                self.store.path(),
                message,
            ))),
        }
    }

    /// Say `id` is deleted from now on; false if it was already.
    fn mark_deleted(&self, id: &SessionId) -> bool {
        let mut deleted = self.deleted();
        if deleted.contains(id) {
            return false;
        }
        if deleted.len() == REMEMBERED_DELETIONS {
            deleted.pop_front();
        }
        deleted.push_back(id.clone());
        true
    }

    /// A delete that did not happen: `id` is not said to be deleted.
    fn forget_deleted(&self, id: &SessionId) {
        self.deleted().retain(|deleted| deleted != id);
    }

    /// Whether `id` was deleted while this server ran (lately).
    pub fn was_deleted(&self, id: &SessionId) -> bool {
        self.deleted().contains(id)
    }

    fn deleted(&self) -> MutexGuard<'_, VecDeque<SessionId>> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.deleted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The error for a session `id` that is not there: deleted, or never was.
    fn unknown(&self, id: &SessionId) -> RegistryError {
        if self.was_deleted(id) {
            RegistryError::Deleted(id.clone())
        } else {
            RegistryError::Unknown(id.clone())
        }
    }

    /// What is wrong with the session store, if anything.
    pub fn store_problem(&self) -> Option<String> {
        self.store.problem()
    }

    /// Sessions in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions in memory whose conversation is held too.
    pub fn conversations_in_memory(&self) -> usize {
        self.lock()
            .values()
            .filter(|session| session.has_history_in_memory())
            .count()
    }

    pub fn idle_timeout(&self) -> Duration {
        self.settings.idle_timeout
    }

    /// Drop the conversations of sessions idle longer than the idle timeout.
    pub fn evict_idle(&self) -> usize {
        self.in_memory()
            .iter()
            .filter(|session| session.evict_if_idle(self.settings.idle_timeout))
            .count()
    }

    /// Stored sessions newest first, optionally only those in `cwd`,
    /// `page_size` at a time. The cursor names the last session of the
    /// previous page.
    pub async fn list(
        &self,
        cwd: Option<&Path>,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<SessionPage, RegistryError> {
        let after = cursor.map(parse_cursor).transpose()?;
        let page = self
            .store
            .list(cwd.map(Path::to_owned), after, page_size)
            .await?;
        Ok(SessionPage {
            sessions: page.rows.iter().map(list_entry).collect(),
            next_cursor: page.next.map(|position| to_cursor(&position)),
        })
    }

    /// Record the turns the server was stopped in the middle of as ended,
    /// keeping what their clients saw in the conversation, and ending the
    /// tool calls they saw begin as failed: a replay must not show a call
    /// still waiting for permission, or running, in a turn that is over.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let interrupted = self.store.interrupted().await?;
        for row in &interrupted {
            let entries = self.store.history(&row.id).await?;
            for message in history::unfinished_turn_messages(&entries) {
                if let Ok(body) = serde_json::to_string(&message) {
                    self.store.append(&row.id, EntryKind::Message, body, None);
                }
            }
            for update in history::unfinished_turn_updates(&entries) {
                if let Ok(body) = serde_json::to_string(&update) {
                    self.store.append(&row.id, EntryKind::Update, body, None);
                }
            }
            let ended = serde_json::json!({"stopReason": "cancelled", "note": SERVER_STOPPED});
            self.store.turn_ended(&row.id, ended.to_string(), None);
            tracing::info!(
                session = row.id,
                "recorded a turn the server was stopped in as cancelled"
            );
        }
        self.store.flush().await;
        Ok(interrupted.len())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        lock_map(&self.sessions)
    }
}

type SessionMap = Mutex<HashMap<SessionId, Arc<Session>>>;

fn lock_map(sessions: &SessionMap) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
    // A panic while holding the lock leaves plain data behind, still usable.
    sessions
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `session/list` shows of a stored session.
fn list_entry(row: &SessionRow) -> SessionInfo {
    let updated =
        std::time::UNIX_EPOCH + Duration::from_micros(u64::try_from(row.updated_us).unwrap_or(0));
    SessionInfo::new(SessionId::new(row.id.clone()), row.cwd.clone())
        .title(row.title.clone())
        .updated_at(humantime::format_rfc3339_millis(updated).to_string())
}

fn to_cursor(position: &ListPosition) -> String {
    format!("{}.{}", position.updated_us, position.id)
}

fn parse_cursor(cursor: &str) -> Result<ListPosition, RegistryError> {
    let invalid = || RegistryError::InvalidCursor(cursor.to_owned());
    let (updated_us, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok(ListPosition {
        updated_us: updated_us.parse().map_err(|_| invalid())?,
        id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line_of_the_first_prompt() {
        assert_eq!(
            title_from("  Fix the build\nthen more").as_deref(),
            Some("Fix the build")
        );
        let long = "x".repeat(200);
        assert_eq!(
            title_from(&long).map(|title| title.chars().count()),
            Some(TITLE_CHARS)
        );
        assert_eq!(title_from(" \n"), None, "a prompt of pictures alone");
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let position = ListPosition {
            updated_us: 1_700_000_000_000,
            id: "a.b".into(),
        };
        assert_eq!(parse_cursor(&to_cursor(&position)).unwrap(), position);
        assert!(parse_cursor("nonsense").is_err());
    }
}
