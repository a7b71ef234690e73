//! Asking the person before a tool changes something, and remembering
//! "always" answers for the rest of the session; and the session's mode,
//! the person's standing choice of how much to be asked. Whoever holds the
//! session keeps those answers and the mode where they outlive it in memory:
//! the memory starts from them and hands over every change of the answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use agent_client_protocol::v1::schema::{
    PermissionOption, PermissionOptionKind, RequestPermissionOutcome, RequestPermissionRequest,
    ToolCallContent, ToolCallStatus, ToolCallUpdateFields,
};

use super::{ClientPort, Report, Stop, ToolContext};

/// "Always" answers by tool name: `true` for "allow always", `false` for
/// "reject always".
pub type LastingAnswers = HashMap<String, bool>;

/// The tools that ask before they run: they write files or run commands.
pub const ASKING_TOOLS: [&str; 3] = ["write_file", "edit_file", "run_command"];

/// The tools [`PermissionMode::Edit`] lets change files without asking.
const EDITING_TOOLS: [&str; 2] = ["write_file", "edit_file"];

/// How much the person wants to be asked in one session, before the
/// "always" answers are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum PermissionMode {
    /// Every write, edit and command asks first.
    #[default]
    Ask,
    /// Writes and edits go ahead without asking; commands still ask.
    Edit,
    /// Nothing that would ask runs at all.
    ReadOnly,
}

impl PermissionMode {
    /// Every mode, in the order of their indices.
    pub const ALL: [Self; 3] = [Self::Ask, Self::Edit, Self::ReadOnly];

    /// How ACP clients and the store name it.
    pub fn id(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::Edit => "edit",
            Self::ReadOnly => "read-only",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.id() == id)
    }

    /// The mode named `id`, or what to say to whoever named another: the
    /// modes there are.
    pub fn named(id: &str) -> Result<Self, String> {
        Self::from_id(id).ok_or_else(|| {
            let ids: Vec<String> = Self::ALL
                .iter()
                .map(|mode| format!("`{}`", mode.id()))
                .collect();
            format!("there is no mode `{id}`; the modes are {}", ids.join(", "))
        })
    }

    /// How a person sees it named.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ask => "Ask first",
            Self::Edit => "Edit without asking",
            Self::ReadOnly => "Read only",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Ask => "Writing or editing a file and running a command ask you first",
            Self::Edit => "Files are written and edited without asking; commands still ask",
            Self::ReadOnly => "Punie reads and searches but changes nothing and runs no command",
        }
    }

    /// What the model is told of the mode, after the system prompt.
    pub fn note(self) -> &'static str {
        match self {
            Self::Ask => "",
            Self::Edit => {
                " In this session the user lets you write and edit files without asking; running commands still asks."
            }
            Self::ReadOnly => {
                " The user has made this session read-only: you cannot write or edit files or run commands. \
                 Read, search and explain, and describe the changes you would make."
            }
        }
    }

    /// Whether the model is offered Punie's tool `tool` in this mode.
    pub fn offers(self, tool: &str) -> bool {
        self.offers_asking_tools() || !ASKING_TOOLS.contains(&tool)
    }

    /// Whether the model is offered tools that ask first: in a read-only
    /// session they would only be refused.
    pub fn offers_asking_tools(self) -> bool {
        self != Self::ReadOnly
    }

    fn from_index(index: u8) -> Self {
        Self::ALL
            .get(usize::from(index))
            .copied()
            .unwrap_or_default()
    }

    fn index(self) -> u8 {
        self as u8
    }
}

/// "Allow always" and "reject always" answers, per tool, and the mode, for
/// one session.
pub struct PermissionMemory {
    always: Mutex<LastingAnswers>,
    /// A [`PermissionMode`], by its index: read at every call, changed by a
    /// client at any time, even while a turn runs.
    mode: AtomicU8,
    /// Told every answer kept, each time one changes.
    keep: Box<dyn Fn(&LastingAnswers) + Send + Sync>,
}

impl PermissionMemory {
    /// A memory that starts from `answers` and hands every change to `keep`.
    pub fn new(
        answers: LastingAnswers,
        keep: impl Fn(&LastingAnswers) + Send + Sync + 'static,
    ) -> Self {
        Self {
            always: Mutex::new(answers),
            mode: AtomicU8::new(PermissionMode::default().index()),
            keep: Box::new(keep),
        }
    }

    pub fn mode(&self) -> PermissionMode {
        PermissionMode::from_index(self.mode.load(Ordering::Relaxed))
    }

    pub fn set_mode(&self, mode: PermissionMode) {
        self.mode.store(mode.index(), Ordering::Relaxed);
    }

    fn remembered(&self, tool: &str) -> Option<bool> {
        self.lock().get(tool).copied()
    }

    fn remember(&self, tool: &str, allowed: bool) {
        let mut answers = self.lock();
        // Kept under the lock, so that what is kept last is the newest.
        if answers.insert(tool.to_owned(), allowed) != Some(allowed) {
            (self.keep)(&answers);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LastingAnswers> {
        self.always
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for PermissionMemory {
    /// Nothing remembered, and nothing kept beyond this memory.
    fn default() -> Self {
        Self::new(LastingAnswers::new(), |_| {})
    }
}

impl std::fmt::Debug for PermissionMemory {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PermissionMemory")
            .field("always", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// What the person decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `asked` when the person answered a question just now
    /// rather than a mode or an "always" answer deciding: time passed, and
    /// what they were shown may have changed meanwhile.
    Allowed { asked: bool },
    /// The person declined, this call only or (`lasting`) every call of
    /// the tool for the rest of the session.
    Rejected { lasting: bool },
    /// A "reject always" the person gave earlier refused it: nobody was
    /// asked. The model is told so, not that the person just declined, so
    /// it stops trying the tool rather than ask again.
    RejectedEarlier,
    /// The prompt was cancelled while waiting: the turn ends.
    Cancelled,
    /// Nobody decided: the client failed the request or answered with
    /// something Punie did not offer. Nothing is done, and the model is told
    /// why rather than that the user declined.
    Unanswered(String),
    /// The session is read-only: nobody was asked, and nothing is done.
    ReadOnly,
}

impl Decision {
    /// Go on when allowed (saying whether the person was asked); else how
    /// the tool stops, telling the model why it did nothing (`not_done`,
    /// such as "the file was not modified").
    pub(super) fn or_stop(self, not_done: &str) -> Result<bool, Stop> {
        match self {
            Self::Allowed { asked } => Ok(asked),
            Self::Cancelled => Err(Stop::Cancelled),
            Self::Rejected { lasting: false } => {
                Err(Stop::Failed(format!("the user declined; {not_done}")))
            }
            Self::Rejected { lasting: true } => Err(Stop::Failed(format!(
                "the user declined, this call and every later call of this tool in this \
                 session; {not_done}"
            ))),
            Self::RejectedEarlier => Err(Stop::Failed(format!(
                "the user chose earlier to decline every call of this tool in this session, so \
                 nobody was asked; {not_done}"
            ))),
            Self::Unanswered(why) => Err(Stop::Failed(format!(
                "permission could not be asked ({why}); {not_done}"
            ))),
            Self::ReadOnly => Err(Stop::Failed(format!(
                "the user has made this session read-only; {not_done}"
            ))),
        }
    }
}

const OPTIONS: [(&str, &str, PermissionOptionKind); 4] = [
    ("allow_once", "Allow", PermissionOptionKind::AllowOnce),
    (
        "allow_always",
        "Always allow",
        PermissionOptionKind::AllowAlways,
    ),
    ("reject_once", "Reject", PermissionOptionKind::RejectOnce),
    (
        "reject_always",
        "Always reject",
        PermissionOptionKind::RejectAlways,
    ),
];

/// Ask whether `tool` may do what `title` says, showing `content` (a diff, say).
pub(super) async fn ask<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    tool: &str,
    title: &str,
    content: Vec<ToolCallContent>,
) -> Decision {
    let mode = context.permissions.mode();
    if mode == PermissionMode::ReadOnly {
        return Decision::ReadOnly;
    }
    // An "always reject" the person gave for this tool outweighs a mode
    // that lets edits through: it names this tool, the mode only a kind.
    match context.permissions.remembered(tool) {
        Some(true) => return Decision::Allowed { asked: false },
        Some(false) => return Decision::RejectedEarlier,
        None if mode == PermissionMode::Edit && EDITING_TOOLS.contains(&tool) => {
            return Decision::Allowed { asked: false };
        }
        None => {}
    }
    let options = OPTIONS
        .iter()
        .map(|(id, name, kind)| PermissionOption::new(*id, *name, *kind))
        .collect();
    let mut fields = ToolCallUpdateFields::new()
        .title(title.to_owned())
        .status(ToolCallStatus::Pending);
    if !content.is_empty() {
        fields = fields.content(content);
    }
    let request =
        RequestPermissionRequest::new(context.session_id.clone(), report.update(fields), options);
    let answer = tokio::select! {
        biased;
        () = context.cancel.cancelled() => return Decision::Cancelled,
        answer = context.client.request(request) => answer,
    };
    let outcome = match answer {
        Ok(response) => response.outcome,
        // The request failed because the turn ended (no client attached in
        // time, say): nobody declined, and the turn says why it ended.
        Err(_) if context.cancel.is_cancelled() => return Decision::Cancelled,
        Err(error) => {
            let why = format!("the client failed the request: {}", error.message);
            tracing::warn!("{why}; nothing is done");
            return Decision::Unanswered(why);
        }
    };
    let chosen = match outcome {
        RequestPermissionOutcome::Selected(selected) => selected.option_id,
        RequestPermissionOutcome::Cancelled => return Decision::Cancelled,
        other => {
            let why = format!("the client answered with an outcome Punie does not know: {other:?}");
            tracing::warn!("{why}; nothing is done");
            return Decision::Unanswered(why);
        }
    };
    let kind = OPTIONS
        .iter()
        .find(|(id, _, _)| *id == &*chosen.0)
        .map(|(_, _, kind)| *kind);
    match kind {
        Some(PermissionOptionKind::AllowAlways) => {
            context.permissions.remember(tool, true);
            Decision::Allowed { asked: true }
        }
        Some(PermissionOptionKind::AllowOnce) => Decision::Allowed { asked: true },
        Some(PermissionOptionKind::RejectAlways) => {
            context.permissions.remember(tool, false);
            Decision::Rejected { lasting: true }
        }
        Some(_) => Decision::Rejected { lasting: false },
        None => {
            let why = format!("the client chose `{}`, which was not offered", chosen.0);
            tracing::warn!("{why}; nothing is done");
            Decision::Unanswered(why)
        }
    }
}
