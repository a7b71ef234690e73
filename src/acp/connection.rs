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

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{ClientCapabilities, Implementation, SessionId};
use agent_client_protocol::{Agent, Channel, Client, ConnectTo, Error};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AgentHub, errors, methods};
use crate::session::{AttachPoint, ClientHandle, ConnectionId, RegistryError, Session};

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
        // The HTTP/SSE profile aborts this future when its client ends the
        // connection (`DELETE`): the sessions are let go when it is dropped,
        // however it ends.
        let _ends = EndsWhenDropped(connection.clone());
        let (served, (), driven) = futures::join!(agent, relay, driver);
        served.and(driven)
    }
}

/// Ends its connection when dropped.
struct EndsWhenDropped(Arc<Connection>);

impl Drop for EndsWhenDropped {
    fn drop(&mut self) {
        self.0.end();
        tracing::debug!(connection = self.0.id, "connection closed");
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
    /// Shared with every session the connection attaches to: they are large.
    pub capabilities: Arc<ClientCapabilities>,
    pub info: Option<Implementation>,
}

/// What belongs to one connection alone.
pub(super) struct Connection {
    pub id: ConnectionId,
    pub hub: Arc<AgentHub>,
    /// What the client said of itself in `initialize`; never shared.
    client: Mutex<Option<ClientDescription>>,
    /// The sessions this connection is attached to; detached when it ends.
    sessions: Mutex<Vec<SessionId>>,
    /// The turns this connection started and that are still running.
    turns: TaskTracker,
    /// False once the connection winds down: new turns end at once, cancelled.
    admitting_turns: Mutex<bool>,
}

impl Connection {
    fn new(hub: Arc<AgentHub>) -> Self {
        Self {
            id: hub.next_connection_id(),
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

    /// This connection as a session reaches it.
    pub fn handle(&self, cx: ConnectionTo<Client>) -> ClientHandle {
        ClientHandle {
            connection: self.id,
            cx,
            capabilities: self
                .client()
                .map(|client| client.capabilities)
                .unwrap_or_default(),
        }
    }

    /// Create a session attached to this connection.
    pub fn create_session(
        &self,
        cwd: std::path::PathBuf,
        model: Option<&str>,
        cx: ConnectionTo<Client>,
    ) -> Result<Arc<Session>, RegistryError> {
        let model = self.hub.sessions.model_choice(model)?;
        let session = self.hub.sessions.create(cwd, model, self.handle(cx))?;
        self.remember(session.id());
        Ok(session)
    }

    /// Attach this connection to the stored session `id`; with `replaying`,
    /// live updates wait until the replay is sent. Returns the session and
    /// the newest entry of its history the replay must include.
    pub async fn attach_session(
        &self,
        id: &SessionId,
        cx: ConnectionTo<Client>,
        replaying: bool,
    ) -> Result<(Arc<Session>, AttachPoint), RegistryError> {
        let attached = self
            .hub
            .sessions
            .attach(id, self.handle(cx), replaying)
            .await?;
        self.remember(id);
        Ok(attached)
    }

    fn remember(&self, id: &SessionId) {
        let mut sessions = lock(&self.sessions);
        if !sessions.contains(id) {
            sessions.push(id.clone());
        }
    }

    /// Detach this connection from session `id`; false if it was not attached.
    pub fn detach_session(&self, id: &SessionId) -> bool {
        lock(&self.sessions).retain(|attached| attached != id);
        self.hub.sessions.detach(id, self.id)
    }

    /// `session/close`: detach, stopping this connection's running turn.
    pub fn close_session(&self, id: &SessionId) -> bool {
        lock(&self.sessions).retain(|attached| attached != id);
        self.hub.sessions.close(id, self.id)
    }

    /// A token that cancels one turn. Only the server's shutdown cancels it
    /// otherwise: a turn outlives the connection that started it.
    pub fn turn_cancel_token(&self) -> CancellationToken {
        self.hub.shutdown.child_token()
    }

    /// The session `id`, if this connection is attached to it.
    pub fn attached_session(&self, method: &str, id: &SessionId) -> Result<Arc<Session>, Error> {
        match self.hub.sessions.get(id) {
            Some(session) if session.is_attached(self.id) => Ok(session),
            _ if self.hub.sessions.was_deleted(id) => Err(errors::deleted_session(method, id)),
            // Not in memory: stored or not, this connection must attach first.
            _ => Err(errors::not_attached(method, id)),
        }
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
        self.turns.spawn(self.hub.turns.track_future(turn));
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

    /// The client is gone: detach it from its sessions. Their turns go on.
    fn end(&self) {
        let sessions = std::mem::take(&mut *lock(&self.sessions));
        for id in &sessions {
            self.hub.sessions.detach(id, self.id);
        }
        if !sessions.is_empty() {
            tracing::debug!(
                connection = self.id,
                sessions = sessions.len(),
                "detached a closed connection from its sessions"
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
