//! The HTTP/SSE profile of the ACP transport, under the server's limits.
//!
//! The SDK's transport ([`AcpHttpServer`]) serves the protocol; this module
//! decides who may use it. A client that POSTs `initialize` takes one of the
//! connection slots WebSockets take too, so `--max-connections` bounds both
//! doors together; later requests carry the connection's `Acp-Connection-Id`
//! and are never refused for want of a slot. The profile has no pings, so a
//! connection that sends nothing and holds no event stream open for the pong
//! timeout is ended as a silent WebSocket is (its sessions stay stored).
//!
//! What the messages mean is [`crate::acp`]'s business, not this module's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_client_protocol_http::{AcpHttpServer, ServerOptions};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::acp::{AcpConnection, AgentHub};

/// The header that names a connection of the HTTP profile.
const CONNECTION_ID: &str = "acp-connection-id";

/// The HTTP profile's connections and the slots they hold.
pub(super) struct HttpProfile {
    transport: Router,
    slots: Arc<Semaphore>,
    connections: Mutex<HashMap<String, Tracked>>,
}

/// One connection of the profile, as its liveness sees it.
struct Tracked {
    /// Given back when the connection ends.
    _slot: OwnedSemaphorePermit,
    last_heard: Instant,
    /// Event streams (`GET`) the client holds open: while one is, the
    /// transport's own keep-alives find out whether the client is there.
    open_streams: Arc<AtomicUsize>,
}

/// Counts an open event stream until the stream is dropped.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpProfile {
    pub(super) fn new(hub: Arc<AgentHub>, slots: Arc<Semaphore>) -> Self {
        let transport = AcpHttpServer::new(move || AcpConnection::new(hub.clone()))
            .with_options(ServerOptions::default().with_health_endpoint(false))
            .into_router();
        Self {
            transport,
            slots,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Serve one request of the profile. `Err` when it would open a
    /// connection and the server has no slot left for one.
    pub(super) async fn serve(&self, request: Request) -> Result<Response, NoSlot> {
        match connection_id(request.headers()) {
            None => self.open(request).await,
            Some(id) => Ok(self.continue_connection(&id, request).await),
        }
    }

    /// A request that names no connection: an `initialize` that opens one
    /// (or a mistake the transport answers).
    async fn open(&self, request: Request) -> Result<Response, NoSlot> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| NoSlot)?;
        let response = self.forward(request).await;
        if let Some(id) = connection_id(response.headers()) {
            self.lock().insert(
                id,
                Tracked {
                    _slot: slot,
                    last_heard: Instant::now(),
                    open_streams: Arc::new(AtomicUsize::new(0)),
                },
            );
        }
        Ok(response)
    }

    async fn continue_connection(&self, id: &str, request: Request) -> Response {
        let method = request.method().clone();
        let open_streams = self.lock().get_mut(id).map(|tracked| {
            tracked.last_heard = Instant::now();
            tracked.open_streams.clone()
        });
        let response = self.forward(request).await;
        if method == Method::DELETE {
            self.lock().remove(id);
            return response;
        }
        match open_streams {
            Some(count) if method == Method::GET && response.status() == StatusCode::OK => {
                counting_open_stream(response, count)
            }
            _ => response,
        }
    }

    /// End the connections that have sent nothing for `timeout` and hold no
    /// event stream open; their slots come back.
    pub(super) async fn end_silent(&self, timeout: Duration) {
        let silent: Vec<String> = {
            let mut connections = self.lock();
            let silent: Vec<String> = connections
                .iter()
                .filter(|(_, tracked)| {
                    tracked.open_streams.load(Ordering::Relaxed) == 0
                        && tracked.last_heard.elapsed() > timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &silent {
                connections.remove(id);
            }
            silent
        };
        for id in &silent {
            tracing::info!(
                "dropping a client: its HTTP connection sent nothing for {timeout:?} and holds no event stream"
            );
            let ended = Request::builder()
                .method(Method::DELETE)
                .uri("/acp")
                .header(CONNECTION_ID, id)
                .body(Body::empty());
            if let Ok(request) = ended {
                self.forward(request).await;
            }
        }
    }

    async fn forward(&self, request: Request) -> Response {
        match self.transport.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tracked>> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every connection slot is taken.
#[derive(Debug)]
pub(super) struct NoSlot;

/// The connection a request names, or a response to `initialize` opened.
fn connection_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONNECTION_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The event stream of `response`, counted in `count` while it is open.
fn counting_open_stream(response: Response, count: Arc<AtomicUsize>) -> Response {
    let (parts, body) = response.into_parts();
    let open = OpenStream::new(count);
    let stream = body.into_data_stream().inspect(move |_| {
        let _ = &open;
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
