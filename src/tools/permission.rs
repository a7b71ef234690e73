//! Asking the person before a tool changes something, and remembering
//! "always" answers for the rest of the session. Whoever holds the session
//! keeps those answers where they outlive it in memory: the memory starts
//! from them and hands over every change.

use std::collections::HashMap;
use std::sync::Mutex;

use agent_client_protocol::v1::schema::{
    PermissionOption, PermissionOptionKind, RequestPermissionOutcome, RequestPermissionRequest,
    ToolCallContent, ToolCallStatus, ToolCallUpdateFields,
};

use super::{ClientPort, Report, Stop, ToolContext};

/// "Always" answers by tool name: `true` for "allow always", `false` for
/// "reject always".
pub type LastingAnswers = HashMap<String, bool>;

/// "Allow always" and "reject always" answers, per tool, for one session.
pub struct PermissionMemory {
    always: Mutex<LastingAnswers>,
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
            keep: Box::new(keep),
        }
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
    Allowed,
    Rejected,
    /// The prompt was cancelled while waiting: the turn ends.
    Cancelled,
    /// Nobody decided: the client failed the request or answered with
    /// something Punie did not offer. Nothing is done, and the model is told
    /// why rather than that the user declined.
    Unanswered(String),
}

impl Decision {
    /// Go on when allowed; else how the tool stops, telling the model why
    /// it did nothing (`not_done`, such as "the file was not modified").
    pub(super) fn or_stop(self, not_done: &str) -> Result<(), Stop> {
        match self {
            Self::Allowed => Ok(()),
            Self::Cancelled => Err(Stop::Cancelled),
            Self::Rejected => Err(Stop::Failed(format!("the user declined; {not_done}"))),
            Self::Unanswered(why) => Err(Stop::Failed(format!(
                "permission could not be asked ({why}); {not_done}"
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
    if let Some(allowed) = context.permissions.remembered(tool) {
        return if allowed {
            Decision::Allowed
        } else {
            Decision::Rejected
        };
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
            Decision::Allowed
        }
        Some(PermissionOptionKind::AllowOnce) => Decision::Allowed,
        Some(PermissionOptionKind::RejectAlways) => {
            context.permissions.remember(tool, false);
            Decision::Rejected
        }
        Some(_) => Decision::Rejected,
        None => {
            let why = format!("the client chose `{}`, which was not offered", chosen.0);
            tracing::warn!("{why}; nothing is done");
            Decision::Unanswered(why)
        }
    }
}
