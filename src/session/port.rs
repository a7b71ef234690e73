//! How a running turn reaches clients: its updates go to the store and then
//! to every attached connection; its requests (`fs/*`, `terminal/*`,
//! `session/request_permission`) go to the connection that sent the prompt,
//! or, once that one has gone, to another attached connection — waiting a
//! bounded time for one to attach, after which the turn ends cancelled.

use std::sync::Arc;

use agent_client_protocol::v1::schema::{ClientCapabilities, SessionUpdate};
use agent_client_protocol::{Error, JsonRpcRequest};
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

impl SessionPort {
    fn no_client(&self) -> Error {
        let patience = self.session.settings.reattach_timeout;
        self.session.note_turn_end(format!(
            "no client was attached to answer a request for {patience:?}"
        ));
        self.cancel.cancel();
        Error::internal_error().data(format!(
            "no client attached to session {} within {patience:?}; the turn was cancelled",
            self.session.id
        ))
    }
}

impl ClientPort for SessionPort {
    fn capabilities(&self) -> ClientCapabilities {
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
                () = self.cancel.cancelled() => return Err(Error::internal_error().data("the turn was cancelled")),
            };
            let Some(target) = target else {
                return Err(self.no_client());
            };
            match target.cx.send_request(request.clone()).block_task().await {
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
