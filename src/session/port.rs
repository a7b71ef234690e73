//! How a running turn reaches clients: its updates go to the store and then
//! to every attached connection; its requests (`fs/*`, `terminal/*`,
//! `session/request_permission`) go to the connection that sent the prompt,
//! or, once that one has gone, to another attached connection — waiting a
//! bounded time for one to attach, after which the turn ends cancelled.

use std::sync::Arc;

use agent_client_protocol::v1::schema::{ClientCapabilities, SessionUpdate};
use agent_client_protocol::{Error, ErrorCode, JsonRpcRequest};
use tokio_util::sync::CancellationToken;

use super::{ConnectionId, Session};
use crate::tools::ClientPort;

/// The clients of one turn.
#[derive(Clone)]
pub struct SessionPort {
    pub(super) session: Arc<Session>,
    /// The connection that sent the prompt.
    pub(super) prompter: ConnectionId,
    pub(super) cancel: CancellationToken,
}

/// Requests that wait as long as they need: a person deciding, a command
/// running (under its own timeout).
const PATIENT_METHODS: &[&str] = &["session/request_permission", "terminal/wait_for_exit"];

impl SessionPort {
    /// `answer`, within the client request timeout unless `method` waits for
    /// as long as it takes.
    async fn patient<T>(
        &self,
        method: &str,
        answer: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if PATIENT_METHODS.contains(&method) {
            return answer.await;
        }
        let limit = self.session.settings.client_request_timeout;
        tokio::time::timeout(limit, answer)
            .await
            .unwrap_or_else(|_| {
                Err(failure(format!(
                    "the client did not answer {method} within {limit:?} (--client-request-timeout)"
                )))
            })
    }

    fn no_client(&self) -> Error {
        let patience = self.session.settings.reattach_timeout;
        self.session.note_turn_end(format!(
            "no client was attached to answer a request for {patience:?}"
        ));
        self.cancel.cancel();
        failure(format!(
            "no client attached to session {} within {patience:?}; the turn was cancelled",
            self.session.id
        ))
    }
}

impl ClientPort for SessionPort {
    fn capabilities(&self) -> Arc<ClientCapabilities> {
        self.session
            .attachments
            .target(self.prompter)
            .map(|client| client.capabilities)
            .unwrap_or_default()
    }

    fn notify(&self, update: SessionUpdate) -> bool {
        self.session.publish(update, None);
        true
    }

    async fn request<R>(&self, request: R) -> Result<R::Response, Error>
    where
        R: JsonRpcRequest + Clone + Send + 'static,
        R::Response: Send + 'static,
    {
        // Everything the turn said before this request reaches clients first.
        self.session.store.flush().await;
        let patience = self.session.settings.reattach_timeout;
        loop {
            let target = tokio::select! {
                target = self.session.attachments.wait_for_target(self.prompter, patience) => target,
                () = self.cancel.cancelled() => return Err(failure("the turn was cancelled".to_owned())),
            };
            let Some(target) = target else {
                return Err(self.no_client());
            };
            let asks_the_person = request.method() == "session/request_permission";
            if asks_the_person {
                self.session
                    .set_activity(super::Activity::WaitingForPermission);
            }
            let answer = target.cx.send_request(request.clone()).block_task();
            let answer = tokio::select! {
                answer = self.patient(request.method(), answer) => answer,
                () = self.cancel.cancelled() => return Err(failure("the turn was cancelled".to_owned())),
            };
            if asks_the_person {
                self.session.set_activity(super::Activity::Running);
            }
            match answer {
                Ok(response) => return Ok(response),
                // The connection went away before it answered: ask another.
                Err(error)
                    if agent_client_protocol::is_incoming_transport_closed(&error)
                        || target.cx.is_incoming_closed() =>
                {
                    self.session.attachments.detach(target.connection);
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn send_detached<R>(&self, request: R)
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static,
    {
        if let Some(target) = self.session.attachments.target(self.prompter) {
            target.cx.send_request(request).detach();
        }
    }
}

/// A request that did not get an answer, said so the model (and the person)
/// can tell why.
fn failure(message: String) -> Error {
    Error::new(ErrorCode::INTERNAL_ERROR, message)
}
