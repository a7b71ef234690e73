//! The official Rust SDK's client role, as the tests use it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ContentBlock, InitializeRequest, NewSessionRequest, PromptRequest, SessionId,
    SessionNotification, SessionUpdate, StopReason,
};
use agent_client_protocol::{Agent, Client, ConnectTo, Error, on_receive_notification};
use tokio::sync::Notify;

use super::within;

/// What one client has received: every `session/update`, and a bell rung on each.
#[derive(Clone, Default)]
pub struct Received {
    pub updates: Arc<Mutex<Vec<SessionNotification>>>,
    pub arrived: Arc<Notify>,
}

impl Received {
    /// The agent text of `session`, and in how many chunks it came.
    pub fn agent_text(&self, session: &SessionId) -> (String, usize) {
        let updates = self.updates.lock().unwrap();
        let chunks: Vec<String> = updates
            .iter()
            .filter(|n| &n.session_id == session)
            .filter_map(|n| match &n.update {
                SessionUpdate::AgentMessageChunk(chunk) => match &chunk.content {
                    ContentBlock::Text(text) => Some(text.text.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        (chunks.concat(), chunks.len())
    }

    pub fn sessions_seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = self
            .updates
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.session_id.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }
}

/// Run `body` as an SDK client on `transport`, recording what it receives.
pub async fn client<R>(
    transport: impl ConnectTo<Client> + 'static,
    received: Received,
    body: impl AsyncFnOnce(ConnectionTo<Agent>) -> Result<R, Error>,
) -> R {
    let recorder = received.clone();
    let run = Client
        .v1()
        .name("protocol-test")
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                recorder.updates.lock().unwrap().push(notification);
                recorder.arrived.notify_one();
                Ok(())
            },
            on_receive_notification!(),
        )
        .connect_with(transport, body);
    within("the client to finish", run)
        .await
        .expect("the client ran without errors")
}

pub async fn initialize(cx: &ConnectionTo<Agent>) -> Result<(), Error> {
    cx.send_request(InitializeRequest::new(ProtocolVersion::V1))
        .block_task()
        .await?;
    Ok(())
}

pub async fn new_session(cx: &ConnectionTo<Agent>, cwd: &Path) -> Result<SessionId, Error> {
    Ok(cx
        .send_request(NewSessionRequest::new(cwd))
        .block_task()
        .await?
        .session_id)
}

pub async fn prompt(
    cx: &ConnectionTo<Agent>,
    session: &SessionId,
    text: &str,
) -> Result<StopReason, Error> {
    Ok(cx
        .send_request(PromptRequest::new(session.clone(), vec![text.into()]))
        .block_task()
        .await?
        .stop_reason)
}

/// Wait until `received` holds at least one update for `session`.
pub async fn first_update(received: &Received, session: &SessionId) {
    within("the first update", async {
        loop {
            let arrived = received.arrived.notified();
            if received
                .updates
                .lock()
                .unwrap()
                .iter()
                .any(|n| &n.session_id == session)
            {
                return;
            }
            arrived.await;
        }
    })
    .await;
}
