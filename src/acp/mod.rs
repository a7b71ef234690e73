//! Protocol glue: one ACP connection, from the frames a client sends to the
//! sessions they act on and back.
//!
//! [`AcpConnection`] is the agent side of one client connection, built on the
//! official SDK (`agent-client-protocol`): the SDK parses and answers JSON-RPC,
//! this module decides what each ACP method does. It is transport-neutral — the
//! server hands it a [`agent_client_protocol::Channel`] of frames from a
//! WebSocket or from the SDK's HTTP transport — and it keeps everything
//! per-connection (the client's capabilities, its running turns) to itself.
//! Session state lives in [`crate::session`]; sockets and HTTP live in
//! [`crate::server`].

mod commands;
mod connection;
mod errors;
mod frames;
mod methods;
mod options;
mod prompt;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::ModelCatalogue;
use crate::session::{ConnectionId, SessionRegistry};

pub use connection::AcpConnection;
pub use frames::{Amended, amend_post, frame_from_text};
pub use methods::{CWD_META, MODEL_META, RUNNING_META};
pub use options::{MODE_OPTION, MODEL_OPTION};

/// What every ACP connection of one server shares.
pub struct AgentHub {
    /// Every session in memory, and the way to the stored ones.
    pub sessions: SessionRegistry,
    /// The models a client may give a session.
    pub models: ModelCatalogue,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// The largest message a connection takes (`--max-message-bytes`), for
    /// clients that cannot read it from the upgrade's header.
    pub max_message_bytes: usize,
    /// One entry per live ACP connection; waited on at shutdown.
    connections: TaskTracker,
    /// Every running turn, whether or not its prompter is still connected.
    turns: TaskTracker,
    next_connection: AtomicU64,
}

impl AgentHub {
    pub fn new(
        sessions: SessionRegistry,
        models: ModelCatalogue,
        shutdown: CancellationToken,
        max_message_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions,
            models,
            shutdown,
            max_message_bytes,
            connections: TaskTracker::new(),
            turns: TaskTracker::new(),
            next_connection: AtomicU64::new(1),
        })
    }

    /// How many ACP connections are open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Wait until every connection and every turn has ended; call after
    /// [`Self::shutdown`] fired.
    pub async fn connections_ended(&self) {
        self.connections.close();
        self.connections.wait().await;
        self.turns.close();
        self.turns.wait().await;
    }

    /// Ask the local model servers for their lists again; when what they
    /// offer changed, every client attached to a session in memory is shown
    /// the session's model menu anew. Every model there is now.
    pub async fn refresh_models(&self) -> Vec<String> {
        let before = self.models.known();
        let models = self.models.refreshed().await;
        if models != before {
            for session in self.sessions.in_memory() {
                for notice in options::change_notices(
                    &session,
                    options::config_options(&session, &models),
                    false,
                ) {
                    session.tell_attached(notice, None);
                }
            }
        }
        models
    }

    /// [`Self::refresh_models`] in the background, if the lists are old and
    /// nobody is asking for them already.
    pub fn refresh_models_if_stale(self: &Arc<Self>) {
        if self.models.claim_refresh() {
            let hub = self.clone();
            tokio::spawn(async move { hub.refresh_models().await });
        }
    }

    fn next_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
