//! Sessions and the turn loop: every conversation the server holds, who it
//! belongs to, what was said, and the one turn that may be running in it.
//!
//! A session is created by one connection and stays attached to it; its
//! updates go only there. The registry is the single source of truth for
//! sessions, shared by all connections. The turn loop drives the model and
//! its tools until the model stops. This module speaks in ACP's session
//! vocabulary (ids, updates, stop reasons) but never touches a transport: it
//! reaches the client only through a [`crate::tools::ClientPort`].

mod turn;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use agent_client_protocol::v1::schema::{SessionId, SessionInfo};
use tokio_util::sync::CancellationToken;

use crate::model::{Message, Model, ToolSpec};
use crate::tools::PermissionMemory;
use crate::workspace::{Terminals, Workspace, WorkspaceError};

pub use turn::{Turn, TurnError};

/// Identifies one client connection for the lifetime of the server.
pub type ConnectionId = u64;

/// Longest session title, in characters, derived from the first prompt.
const TITLE_CHARS: usize = 80;

/// How turns run; the same for every session of a server.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Rounds of tool calls one turn may take before it ends with
    /// `max_turn_requests`.
    pub max_rounds: usize,
    /// The model's context window in tokens, reported with token usage.
    pub context_window: u64,
    /// The tools the model may call.
    pub tools: Arc<Vec<ToolSpec>>,
}

/// One conversation.
pub struct Session {
    id: SessionId,
    cwd: PathBuf,
    owner: ConnectionId,
    model: Arc<dyn Model>,
    settings: Arc<TurnSettings>,
    /// Who Punie is and where it works, for the model.
    system_prompt: Arc<str>,
    workspace: Workspace,
    /// Commands Punie runs itself for this session.
    terminals: Terminals,
    /// "Always" answers to permission requests.
    permissions: PermissionMemory,
    state: Mutex<SessionState>,
}

struct SessionState {
    /// Shared with running turns' model requests; copied only if a turn still
    /// holds it when the next one is recorded.
    history: Arc<Vec<Message>>,
    /// Prompts answered so far.
    turns: usize,
    title: Option<String>,
    updated_at: SystemTime,
    /// Cancels the running turn; `None` when the session is idle.
    running: Option<CancellationToken>,
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

    /// The connection that created the session and receives its updates.
    pub fn owner(&self) -> ConnectionId {
        self.owner
    }

    /// Start a turn for `prompt`, unless one is running. `cancel` stops it.
    pub fn begin_turn(
        self: &Arc<Self>,
        prompt: String,
        cancel: CancellationToken,
    ) -> Result<Turn, SessionBusy> {
        let mut state = self.lock();
        if state.running.is_some() {
            return Err(SessionBusy(self.id.clone()));
        }
        state.running = Some(cancel.clone());
        let new_title = state.title.is_none().then(|| title_from(&prompt));
        if let Some(title) = &new_title {
            state.title = Some(title.clone());
        }
        let history = state.history.clone();
        let number = state.turns + 1;
        Ok(Turn::new(
            self.clone(),
            &prompt,
            number,
            history,
            new_title,
            cancel,
        ))
    }

    /// The session is going away: stop its turn and its commands.
    fn close(&self) {
        self.cancel_turn();
        self.terminals.release_all();
    }

    /// Stop the running turn, if any; it ends with `cancelled`.
    pub fn cancel_turn(&self) {
        if let Some(cancel) = &self.lock().running {
            cancel.cancel();
        }
    }

    /// Record a finished turn: the conversation now includes it, as far as
    /// the client saw it.
    fn end_turn(&self, history: Arc<Vec<Message>>) {
        let mut state = self.lock();
        state.history = history;
        state.turns += 1;
        state.updated_at = SystemTime::now();
        state.running = None;
    }

    /// What `session/list` shows of this session, with its place in the list.
    fn list_entry(&self) -> (ListKey, SessionInfo) {
        let state = self.lock();
        let key = ListKey {
            updated_nanos: nanos_since_epoch(state.updated_at),
            id: self.id.to_string(),
        };
        let info = SessionInfo::new(self.id.clone(), self.cwd.clone())
            .title(state.title.clone())
            .updated_at(humantime::format_rfc3339_millis(state.updated_at).to_string());
        (key, info)
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who Punie is, for the model: short and honest.
fn system_prompt(root: &Path) -> String {
    format!(
        "You are Punie, a coding agent working in the user's project at {root} on {os}. \
         You can read, list and search files, edit and write them, and run commands, using the tools provided; \
         paths are relative to the project root. Writing, editing and running commands ask the user first, \
         and the user may decline. Inspect before you change things, keep changes small, and say plainly what you did \
         and what you did not manage to do.",
        root = root.display(),
        os = std::env::consts::OS,
    )
}

/// A session's title: the first line of its first prompt, shortened.
fn title_from(prompt: &str) -> String {
    let line = prompt.trim().lines().next().unwrap_or_default().trim();
    if line.chars().count() <= TITLE_CHARS {
        return line.to_owned();
    }
    let mut title: String = line.chars().take(TITLE_CHARS - 1).collect();
    title.push('…');
    title
}

/// Every session the server holds.
pub struct SessionRegistry {
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
}

/// One page of `session/list`.
pub struct SessionPage {
    pub sessions: Vec<SessionInfo>,
    pub next_cursor: Option<String>,
}

/// A `session/list` cursor that this server did not hand out.
#[derive(Debug, thiserror::Error)]
#[error("unknown cursor `{0}`; pass the nextCursor of a previous session/list, or none")]
pub struct InvalidCursor(pub String);

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionRegistry {
    pub fn new() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Create a session in `cwd`, attached to connection `owner`.
    pub fn create(
        &self,
        cwd: PathBuf,
        owner: ConnectionId,
        model: Arc<dyn Model>,
        settings: Arc<TurnSettings>,
    ) -> Result<Arc<Session>, WorkspaceError> {
        let workspace = Workspace::new(&cwd)?;
        let session = Arc::new(Session {
            id: SessionId::new(uuid::Uuid::new_v4().to_string()),
            system_prompt: system_prompt(workspace.root()).into(),
            cwd,
            owner,
            model,
            settings,
            workspace,
            terminals: Terminals::default(),
            permissions: PermissionMemory::default(),
            state: Mutex::new(SessionState {
                history: Arc::default(),
                turns: 0,
                title: None,
                updated_at: SystemTime::now(),
                running: None,
            }),
        });
        self.lock().insert(session.id.clone(), session.clone());
        Ok(session)
    }

    pub fn get(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Forget a session; its running turn, if any, is cancelled.
    pub fn remove(&self, id: &SessionId) -> Option<Arc<Session>> {
        let removed = self.lock().remove(id);
        if let Some(session) = &removed {
            session.close();
        }
        removed
    }

    /// Forget the sessions `ids` at once, cancelling their running turns;
    /// returns how many were still held.
    pub fn remove_all(&self, ids: &[SessionId]) -> usize {
        let removed: Vec<Arc<Session>> = {
            let mut sessions = self.lock();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for session in &removed {
            session.close();
        }
        removed.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions newest first, optionally only those in `cwd`, `page_size` at a
    /// time. The cursor names the last session of the previous page.
    pub fn list(
        &self,
        cwd: Option<&Path>,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<SessionPage, InvalidCursor> {
        let after = cursor.map(parse_cursor).transpose()?;
        let mut entries: Vec<(ListKey, SessionInfo)> = self
            .lock()
            .values()
            .filter(|session| cwd.is_none_or(|cwd| session.cwd == cwd))
            .map(|session| session.list_entry())
            .collect();
        entries.sort_by(|(a, _), (b, _)| a.cmp(b));
        let start = match &after {
            Some(after) => entries.partition_point(|(key, _)| key <= after),
            None => 0,
        };
        let rest = &entries[start..];
        let page: Vec<(ListKey, SessionInfo)> = rest.iter().take(page_size).cloned().collect();
        let next_cursor = (rest.len() > page_size)
            .then(|| page.last().map(|(key, _)| key.to_cursor()))
            .flatten();
        Ok(SessionPage {
            sessions: page.into_iter().map(|(_, info)| info).collect(),
            next_cursor,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Sort key of `session/list`: newest first, ties broken by id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListKey {
    updated_nanos: u128,
    id: String,
}

impl Ord for ListKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .updated_nanos
            .cmp(&self.updated_nanos)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for ListKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ListKey {
    fn to_cursor(&self) -> String {
        format!("{}.{}", self.updated_nanos, self.id)
    }
}

fn parse_cursor(cursor: &str) -> Result<ListKey, InvalidCursor> {
    let invalid = || InvalidCursor(cursor.to_owned());
    let (nanos, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok(ListKey {
        updated_nanos: nanos.parse().map_err(|_| invalid())?,
        id: id.to_owned(),
    })
}

fn nanos_since_epoch(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TestModel;

    fn settings() -> Arc<TurnSettings> {
        Arc::new(TurnSettings {
            max_rounds: 5,
            context_window: 1000,
            tools: Arc::default(),
        })
    }

    fn registry_with(count: usize, cwd: &str) -> SessionRegistry {
        let registry = SessionRegistry::new();
        for _ in 0..count {
            registry
                .create(
                    PathBuf::from(cwd),
                    1,
                    Arc::new(TestModel::default()),
                    settings(),
                )
                .unwrap();
        }
        registry
    }

    #[test]
    fn pages_cover_every_session_once_newest_first() {
        let registry = registry_with(7, "/");
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = registry.list(None, cursor.as_deref(), 3).unwrap();
            seen.extend(page.sessions.iter().map(|info| info.session_id.to_string()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 7);
    }

    #[test]
    fn listing_filters_by_cwd() {
        let registry = registry_with(2, "/");
        registry
            .create(
                PathBuf::from("/tmp"),
                2,
                Arc::new(TestModel::default()),
                settings(),
            )
            .unwrap();
        let page = registry.list(Some(Path::new("/tmp")), None, 10).unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(page.sessions[0].cwd, Path::new("/tmp"));
    }

    #[test]
    fn a_foreign_cursor_is_refused() {
        let registry = registry_with(1, "/");
        assert!(registry.list(None, Some("nonsense"), 10).is_err());
    }

    #[test]
    fn sessions_can_be_forgotten_together() {
        let registry = registry_with(3, "/");
        let ids: Vec<SessionId> = registry
            .list(None, None, 10)
            .unwrap()
            .sessions
            .into_iter()
            .map(|info| info.session_id)
            .collect();
        assert_eq!(registry.remove_all(&ids[..2]), 2);
        assert_eq!(registry.remove_all(&ids[..2]), 0, "already gone");
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_second_turn_is_refused_while_one_runs() {
        let registry = registry_with(1, "/");
        let session = registry.list(None, None, 1).unwrap().sessions[0]
            .session_id
            .clone();
        let session = registry.get(&session).unwrap();
        let _turn = session
            .begin_turn("one".into(), CancellationToken::new())
            .unwrap();
        assert!(
            session
                .begin_turn("two".into(), CancellationToken::new())
                .is_err()
        );
    }

    #[test]
    fn titles_come_from_the_first_line_of_the_first_prompt() {
        assert_eq!(title_from("  Fix the build\nthen more"), "Fix the build");
        let long = "x".repeat(200);
        assert_eq!(title_from(&long).chars().count(), TITLE_CHARS);
    }
}
