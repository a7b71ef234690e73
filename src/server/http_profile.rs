//! The HTTP/SSE profile of the ACP transport, under the server's limits.
//!
//! The SDK's transport ([`AcpHttpServer`]) serves the protocol; this module
//! decides who may use it. A client that POSTs `initialize` takes one of the
//! connection slots WebSockets take too, so `--max-connections` bounds both
//! doors together; later requests carry the connection's `Acp-Connection-Id`
//! and are never refused for want of a slot. The profile has no pings, so a
//! connection that sends nothing and holds no event stream open for the pong
//! timeout is ended as a silent WebSocket is (its sessions stay stored), and
//! so is one whose event stream the client has stopped reading for the
//! outgoing stall. A POST body over the largest message is refused with 413,
//! and one that has not all arrived within the header timeout is cut off: a
//! client trickling a body would hold a slot for as long as it liked. A
//! POST gets the answers a WebSocket's message would: an invalid request
//! with an id is answered `-32600` with that id, saying what is wrong (the
//! transport would answer with a `null` id), and a body that is not one
//! JSON-RPC message gets a 400 whose JSON-RPC error says why.
//!
//! What the messages mean is [`crate::acp`]'s business, not this module's.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use agent_client_protocol_http::{AcpHttpServer, ServerOptions};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

use crate::acp::{AcpConnection, AgentHub, Amended, amend_post};
use crate::config::ConnectionLimits;

/// The header that names a connection of the HTTP profile.
const CONNECTION_ID: &str = "acp-connection-id";

/// The HTTP profile's connections and the slots they hold.
pub(super) struct HttpProfile {
    transport: Router,
    slots: Arc<Semaphore>,
    limits: Arc<ConnectionLimits>,
    connections: Mutex<HashMap<String, Tracked>>,
}

/// One connection of the profile, as its liveness sees it.
struct Tracked {
    /// Given back when the connection ends.
    _slot: OwnedSemaphorePermit,
    last_heard: Instant,
    /// Event streams (`GET`) the client holds open: while one is, the
    /// transport's own keep-alives find out whether the client is there.
    streams: Arc<Mutex<Streams>>,
}

/// A connection's open event streams, and whether its client reads them.
#[derive(Default)]
struct Streams {
    /// For each open stream, since when a message taken from it has waited
    /// to be written (once the client stops reading, nothing more is
    /// taken), or `None` while it keeps up. Each stream apart: a client
    /// reading one stream does not make up for another it stopped reading.
    open: HashMap<u64, Option<Instant>>,
    next: u64,
}

impl Streams {
    /// Since when the stream stuck longest has been.
    fn stuck_since(&self) -> Option<Instant> {
        self.open.values().flatten().min().copied()
    }
}

/// An event stream of `response`, keeping its connection's [`Streams`].
struct WatchedStream<S> {
    inner: S,
    streams: Arc<Mutex<Streams>>,
    id: u64,
}

impl<S> WatchedStream<S> {
    fn new(inner: S, streams: Arc<Mutex<Streams>>) -> Self {
        let id = {
            let mut streams = lock(&streams);
            let id = streams.next;
            streams.next += 1;
            streams.open.insert(id, None);
            id
        };
        Self { inner, streams, id }
    }
}

impl<S: Stream + Unpin> Stream for WatchedStream<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(context);
        // Asked for more: what was taken before has been written.
        let stuck_since = match &polled {
            Poll::Ready(Some(_)) => Some(Instant::now()),
            Poll::Ready(None) | Poll::Pending => None,
        };
        let id = self.id;
        lock(&self.streams).open.insert(id, stuck_since);
        polled
    }
}

impl<S> Drop for WatchedStream<S> {
    fn drop(&mut self) {
        lock(&self.streams).open.remove(&self.id);
    }
}

impl HttpProfile {
    pub(super) fn new(
        hub: Arc<AgentHub>,
        slots: Arc<Semaphore>,
        limits: Arc<ConnectionLimits>,
    ) -> Self {
        let transport = AcpHttpServer::new(move || AcpConnection::new(hub.clone()))
            .with_options(ServerOptions::default().with_health_endpoint(false))
            .into_router();
        Self {
            transport,
            slots,
            limits,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Serve one request of the profile. `Err` when it would open a
    /// connection and the server has no slot left for one.
    pub(super) async fn serve(&self, request: Request) -> Result<Response, NoSlot> {
        if let Some(refusal) = self.refuse_if_too_big(request.headers()) {
            return Ok(refusal);
        }
        // A body that turns out bigger makes the transport answer 413 once
        // it has read that much.
        let limit = self.limits.max_message_bytes;
        let deadline = tokio::time::Instant::now() + self.limits.header_timeout;
        let request = request
            .map(|body| Body::new(http_body_util::Limited::new(due_by(body, deadline), limit)));
        let (request, initialize) = match self.read_whole(request).await {
            Ok(read) => read,
            Err(refusal) => return Ok(refusal),
        };
        match connection_id(request.headers()) {
            // The transport opens a new connection for every `initialize`,
            // whatever connection it names: it takes a slot like any other.
            Some(id) if !initialize => Ok(self.continue_connection(&id, request).await),
            _ => self.open(request).await,
        }
    }

    /// `request` with its body read whole (the transport reads it whole
    /// too) and amended, and whether it is an `initialize`; unless it is too
    /// big, too slow, or not one JSON-RPC message: the answer then.
    async fn read_whole(&self, request: Request) -> Result<(Request, bool), Response> {
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(error) => {
                return Err(if over_the_limit(&error) {
                    self.too_big()
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("the request's body could not be read: {error}"),
                    )
                        .into_response()
                });
            }
        };
        let mut parts = parts;
        let bytes = match Self::amended(&parts, bytes).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::info!("refused an HTTP request: {}", error.message);
                let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": error});
                return Err((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
            }
        };
        // The transport reads the body whole; a replaced one has its own length.
        parts.headers.remove(header::CONTENT_LENGTH);
        let initialize = parts.method == Method::POST && is_initialize(&bytes);
        Ok((Request::from_parts(parts, Body::from(bytes)), initialize))
    }

    /// The body a POST hands the transport: the client's own, or, for one
    /// that the transport would answer with a bare error and a `null` id,
    /// what a WebSocket's message would have become; or the refusal to send.
    async fn amended(parts: &Parts, bytes: Bytes) -> Result<Bytes, agent_client_protocol::Error> {
        if parts.method != Method::POST {
            return Ok(bytes);
        }
        let amended = super::parse_message(bytes.len(), bytes.clone(), amend_body).await;
        match amended {
            Some(Amended::Replaced(text)) => Ok(Bytes::from(text)),
            Some(Amended::Refused(error)) => Err(error),
            Some(Amended::AsIs) | None => Ok(bytes),
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
                    streams: Arc::default(),
                },
            );
        }
        Ok(response)
    }

    async fn continue_connection(&self, id: &str, request: Request) -> Response {
        let method = request.method().clone();
        let streams = self.lock().get_mut(id).map(|tracked| {
            tracked.last_heard = Instant::now();
            tracked.streams.clone()
        });
        let response = self.forward(request).await;
        if method == Method::DELETE {
            self.lock().remove(id);
        }
        if response.status() == StatusCode::NOT_FOUND {
            return no_such_connection();
        }
        if method == Method::DELETE {
            return response;
        }
        match streams {
            Some(streams) if method == Method::GET && response.status() == StatusCode::OK => {
                watched_stream(response, streams)
            }
            _ => response,
        }
    }

    /// The 413 for a request whose body says it is bigger than the largest
    /// message, before any of it is read.
    fn refuse_if_too_big(&self, headers: &HeaderMap) -> Option<Response> {
        let limit = self.limits.max_message_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())?;
        if declared <= limit as u64 {
            return None;
        }
        Some(self.too_big())
    }

    /// The 413 for a request whose body is bigger than the largest message.
    fn too_big(&self) -> Response {
        let limit = self.limits.max_message_bytes;
        let why = format!("message too big: the limit is {limit} bytes (--max-message-bytes)");
        tracing::info!("refused an HTTP request: {why}");
        (StatusCode::PAYLOAD_TOO_LARGE, why).into_response()
    }

    /// End the connections that have sent nothing for the pong timeout and
    /// hold no event stream open, and those whose client has stopped reading
    /// its event stream for the outgoing stall; their slots come back.
    pub(super) async fn end_silent(&self) {
        let (timeout, stall) = (self.limits.pong_timeout, self.limits.outgoing_stall);
        let ended: Vec<(String, String)> = {
            let mut connections = self.lock();
            let ended: Vec<(String, String)> = connections
                .iter()
                .filter_map(|(id, tracked)| {
                    let streams = lock(&tracked.streams);
                    let why = if streams
                        .stuck_since()
                        .is_some_and(|since| since.elapsed() > stall)
                    {
                        format!("it stopped reading an event stream for {stall:?}")
                    } else if streams.open.is_empty() && tracked.last_heard.elapsed() > timeout {
                        format!("it sent nothing for {timeout:?} and holds no event stream")
                    } else {
                        return None;
                    };
                    Some((id.clone(), why))
                })
                .collect();
            for (id, _) in &ended {
                connections.remove(id);
            }
            ended
        };
        for (id, why) in &ended {
            tracing::info!("dropping a client of the HTTP profile: {why}");
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
        lock(&self.connections)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every connection slot is taken.
#[derive(Debug)]
pub(super) struct NoSlot;

/// `body`, failing once `deadline` passes before all of it has arrived.
fn due_by(body: Body, deadline: tokio::time::Instant) -> Body {
    let mut data = body.into_data_stream();
    Body::from_stream(async_stream::stream! {
        loop {
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut data)).await {
                Ok(Some(chunk)) => yield chunk,
                Ok(None) => break,
                Err(_) => {
                    tracing::info!("cut off an HTTP request whose body took longer than --header-timeout");
                    yield Err(axum::Error::new(BodyTooSlow));
                    break;
                }
            }
        }
    })
}

/// Why a request's body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request's body did not arrive within --header-timeout")]
struct BodyTooSlow;

/// Whether reading a body failed for its length, however deep the
/// transport wrapped the reason.
fn over_the_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The transport's bare 404 for a connection id it does not know, saying
/// why that may be and what to do.
fn no_such_connection() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such connection: the Acp-Connection-Id names one that ended (a connection that sends nothing and holds no event stream for --pong-timeout is ended) or never was; POST `initialize` to open another (its sessions stay stored)",
    )
        .into_response()
}

/// [`amend_post`] of a POST's body that is UTF-8 (one that is not is the
/// transport's to refuse).
fn amend_body(body: &Bytes) -> Amended {
    std::str::from_utf8(body).map_or(Amended::AsIs, amend_post)
}

/// Whether `body` is an `initialize` request.
fn is_initialize(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Named>(body)
        .is_ok_and(|message| message.method.as_deref() == Some("initialize"))
}

/// The connection a request names, or a response to `initialize` opened.
fn connection_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONNECTION_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The event stream of `response`, kept in `streams` while it is open.
fn watched_stream(response: Response, streams: Arc<Mutex<Streams>>) -> Response {
    let (parts, body) = response.into_parts();
    let stream = WatchedStream::new(body.into_data_stream(), streams);
    Response::from_parts(parts, Body::from_stream(stream))
}
