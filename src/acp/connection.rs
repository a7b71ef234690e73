//! One client connection: the state that belongs to it alone, and the relay
//! that lets it wind down cleanly when the server stops.
//!
//! On shutdown the relay stops taking frames from the client, lets the
//! connection's running turns end with `cancelled` (their answers queue up in
//! the SDK), and only then ends the SDK's input. The SDK answers everything it
//! already has, flushes, and returns; the transport then closes.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use agent_client_protocol::v1::schema::{ClientCapabilities, Implementation, SessionId};
use agent_client_protocol::{Agent, Channel, Client, ConnectTo, Error};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AgentHub, errors, methods};
use crate::session::{ConnectionId, Session};

/// The agent side of one client connection, for any transport that carries
/// ACP frames.
pub struct AcpConnection {
    hub: Arc<AgentHub>,
}

impl AcpConnection {
    pub fn new(hub: Arc<AgentHub>) -> Self {
        Self { hub }
    }
}

impl ConnectTo<Client> for AcpConnection {
    async fn connect_to(self, client: impl ConnectTo<Agent>) -> Result<(), Error> {
        let _open = self.hub.connections.token();
        let connection = Arc::new(Connection::new(self.hub));
        tracing::debug!(connection = connection.id, "connection opened");

        let (transport, driver) = ConnectTo::<Agent>::into_channel_and_future(client);
        let (sdk_end, relay_end) = Channel::duplex();
        let agent = methods::serve(connection.clone(), sdk_end);
        let relay = relay(
            transport,
            relay_end,
            connection.clone().wind_down_on_shutdown(),
        );
        let driver = async {
            match driver {
                Some(driver) => driver.await,
                None => Ok(()),
            }
        };
        let (served, (), driven) = futures::join!(agent, relay, driver);

        connection.end();
        tracing::debug!(connection = connection.id, "connection closed");
        served.and(driven)
    }
}

/// Copy frames between the client and the SDK until the client leaves, or
/// until `stop_intake` completes; then end the SDK's input and pass on
/// everything it still sends.
async fn relay(client: Channel, sdk: Channel, stop_intake: impl Future<Output = ()>) {
    let (mut from_client, to_client) = client.into_parts();
    let (mut from_sdk, to_sdk) = sdk.into_parts();
    let intake = async move {
        let mut stop_intake = pin!(stop_intake);
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut stop_intake => break,
                frame = from_client.next() => frame,
            };
            let Some(frame) = frame else { break };
            if to_sdk.unbounded_send(frame).is_err() {
                break;
            }
        }
        // Dropping `to_sdk` here is the SDK's end of input.
    };
    let output = async move {
        while let Some(frame) = from_sdk.next().await {
            if to_client.unbounded_send(frame).is_err() {
                break;
            }
        }
    };
    futures::join!(intake, output);
}

/// What a client said of itself in `initialize`.
#[derive(Debug, Clone)]
pub(super) struct ClientDescription {
    pub capabilities: ClientCapabilities,
    pub info: Option<Implementation>,
}

/// What belongs to one connection alone.
pub(super) struct Connection {
    pub id: ConnectionId,
    pub hub: Arc<AgentHub>,
    /// What the client said of itself in `initialize`; never shared.
    client: Mutex<Option<ClientDescription>>,
    /// The sessions this connection created; forgotten with it.
    sessions: Mutex<Vec<SessionId>>,
    /// The turns this connection started and that are still running.
    turns: TaskTracker,
    /// False once the connection winds down: new turns end at once, cancelled.
    admitting_turns: Mutex<bool>,
    /// Cancelled when the connection ends or the server shuts down.
    cancel: CancellationToken,
}

impl Connection {
    fn new(hub: Arc<AgentHub>) -> Self {
        Self {
            id: hub.next_connection_id(),
            cancel: hub.shutdown.child_token(),
            hub,
            client: Mutex::new(None),
            sessions: Mutex::new(Vec::new()),
            turns: TaskTracker::new(),
            admitting_turns: Mutex::new(true),
        }
    }

    pub fn set_client(&self, client: ClientDescription) {
        *lock(&self.client) = Some(client);
    }

    /// What the client said of itself, once it has initialized.
    pub fn client(&self) -> Option<ClientDescription> {
        lock(&self.client).clone()
    }

    /// Create a session attached to this connection.
    pub fn create_session(
        &self,
        cwd: std::path::PathBuf,
    ) -> Result<Arc<Session>, crate::workspace::WorkspaceError> {
        let session = self.hub.sessions.create(
            cwd,
            self.id,
            self.hub.model.clone(),
            self.hub.turn_settings.clone(),
        )?;
        lock(&self.sessions).push(session.id().clone());
        Ok(session)
    }

    /// A token that cancels one turn, and is cancelled with the connection.
    pub fn turn_cancel_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// The session `id`, if it exists and this connection may use it.
    pub fn owned_session(&self, method: &str, id: &SessionId) -> Result<Arc<Session>, Error> {
        let session = self
            .hub
            .sessions
            .get(id)
            .ok_or_else(|| errors::unknown_session(method, id))?;
        if session.owner() != self.id {
            return Err(errors::foreign_session(method, id));
        }
        Ok(session)
    }

    /// Run `turn` as a task of this connection. While winding down, the turn
    /// is handed back: it is already cancelled, so the caller finishes it in place.
    pub fn spawn_turn<F>(&self, turn: F) -> Option<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let admitting = lock(&self.admitting_turns);
        if !*admitting {
            return Some(turn);
        }
        self.turns.spawn(turn);
        None
    }

    /// Completes once the server is shutting down and every turn of this
    /// connection has answered.
    async fn wind_down_on_shutdown(self: Arc<Self>) {
        self.hub.shutdown.cancelled().await;
        *lock(&self.admitting_turns) = false;
        self.turns.close();
        self.turns.wait().await;
    }

    /// The client is gone: stop its turns and forget its sessions.
    fn end(&self) {
        self.cancel.cancel();
        let sessions = std::mem::take(&mut *lock(&self.sessions));
        let forgotten = self.hub.sessions.remove_all(&sessions);
        if forgotten > 0 {
            tracing::debug!(
                connection = self.id,
                sessions = forgotten,
                "forgot the sessions of a closed connection"
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
