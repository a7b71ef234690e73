//! The client that sent a prompt, as the turn's tools reach it: its
//! capabilities, `session/update` notifications, and agent→client requests
//! (`fs/*`, `terminal/*`, `session/request_permission`) over its connection.

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, SessionId, SessionNotification, SessionUpdate,
};
use agent_client_protocol::{Client, Error, JsonRpcRequest};

use crate::tools::ClientPort;

/// The prompting client of one turn.
pub(super) struct PromptingClient {
    pub cx: ConnectionTo<Client>,
    pub session_id: SessionId,
    pub capabilities: ClientCapabilities,
}

impl ClientPort for PromptingClient {
    fn capabilities(&self) -> &ClientCapabilities {
        &self.capabilities
    }

    fn notify(&self, update: SessionUpdate) -> bool {
        self.cx
            .send_notification(SessionNotification::new(self.session_id.clone(), update))
            .is_ok()
    }

    fn request<R>(&self, request: R) -> impl Future<Output = Result<R::Response, Error>> + Send
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static,
    {
        let sent = self.cx.send_request(request);
        sent.block_task()
    }

    fn send_detached<R>(&self, request: R)
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static,
    {
        self.cx.send_request(request).detach();
    }
}
