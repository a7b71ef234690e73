//! One turn: the model answers the prompt, and what it produces is handed to
//! the client as it arrives, until the model stops or the turn is cancelled.

use std::sync::Arc;

use agent_client_protocol::v1::schema::{
    ContentBlock, ContentChunk, SessionId, SessionInfoUpdate, SessionUpdate, StopReason,
};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::Session;
use crate::model::{Message, ModelError, ModelEvent, ModelRequest};

/// Why a turn ended without a stop reason.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A turn that has been admitted to its session; [`Turn::run`] plays it out.
///
/// Dropping a turn that never ran still frees the session for the next prompt.
pub struct Turn {
    session: Arc<Session>,
    prompt: Arc<str>,
    history: Arc<Vec<Message>>,
    new_title: Option<String>,
    cancel: CancellationToken,
    recorded: bool,
}

impl Turn {
    pub(super) fn new(
        session: Arc<Session>,
        prompt: Arc<str>,
        history: Arc<Vec<Message>>,
        new_title: Option<String>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            session,
            prompt,
            history,
            new_title,
            cancel,
            recorded: false,
        }
    }

    pub fn session_id(&self) -> &SessionId {
        self.session.id()
    }

    /// The token that cancels this turn.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Run the turn to its end. `send` delivers one update to the client and
    /// returns whether it could; a client that is gone cancels the turn.
    pub async fn run(
        mut self,
        mut send: impl FnMut(SessionUpdate) -> bool,
    ) -> Result<StopReason, TurnError> {
        if let Some(title) = self.new_title.take() {
            send(SessionUpdate::SessionInfoUpdate(
                SessionInfoUpdate::new().title(title),
            ));
        }
        let request = ModelRequest {
            history: std::mem::take(&mut self.history),
            prompt: self.prompt.clone(),
        };
        let mut stream = self.session.model.stream(request);
        let mut reply = String::new();
        let outcome = loop {
            let event = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break Ok(StopReason::Cancelled),
                event = stream.next() => event,
            };
            match event {
                None => break Ok(StopReason::EndTurn),
                Some(Ok(ModelEvent::Text(text))) => {
                    if !send(agent_text(text.clone())) {
                        break Ok(StopReason::Cancelled);
                    }
                    reply.push_str(&text);
                }
                Some(Err(error)) => break Err(TurnError::Model(error)),
            }
        };
        drop(stream);
        self.record(reply);
        outcome
    }

    fn record(&mut self, reply: String) {
        self.recorded = true;
        self.session.end_turn(&self.prompt, reply);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(String::new());
        }
    }
}

fn agent_text(text: String) -> SessionUpdate {
    SessionUpdate::AgentMessageChunk(ContentChunk::new(ContentBlock::from(text)))
}
