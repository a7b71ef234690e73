//! The network service `punie serve`: binds the listener, serves HTTP and
//! WebSocket with axum, and owns the server's life from the ready line to a
//! graceful shutdown.
//!
//! Routes: `GET /health` (no token), and ACP at `/acp` — a WebSocket upgrade,
//! or the HTTP/SSE profile of the SDK's transport for everything else — with
//! `/ws` serving the same WebSocket; the browser app at `/` with its sign-in
//! routes ([`crate::web`]). Every request passes the checks in
//! [`crate::auth`] first. On SIGINT or SIGTERM the server stops accepting,
//! lets every connection wind down (running turns end `cancelled`, each
//! WebSocket gets close frame 1001), removes `server.json` and exits 0.
//!
//! What ACP messages mean is [`crate::acp`]'s business, not this module's.

mod http_profile;
mod listener;
mod record;
mod websocket;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use axum::extract::{FromRequestParts as _, Request, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router, middleware};
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acp::AgentHub;
use crate::auth::{self, AccessToken, RequestGuard};
use crate::config::{
    ConnectionLimits, EVICTION_INTERVAL, MESSAGE_LIMIT_HEADER, SHUTDOWN_GRACE, ServeConfig,
};
use crate::session::{ModelChoice, SessionRegistry, TurnSettings};
use crate::store::Store;
use crate::web::{self, SignIns};
use crate::{model, tools};

use http_profile::HttpProfile;
pub use record::ServerRecord;

/// Messages longer than this are parsed on a blocking thread: reading
/// megabytes of JSON takes a while, not to be spent on a thread every
/// connection's work shares.
const PARSE_APART_BYTES: usize = 1024 * 1024;

/// `parse(message)`, of `length` bytes, on a blocking thread when that is
/// more than [`PARSE_APART_BYTES`]; `None` if that thread failed.
async fn parse_message<M, T>(length: usize, message: M, parse: fn(&M) -> T) -> Option<T>
where
    M: Send + 'static,
    T: Send + 'static,
{
    if length <= PARSE_APART_BYTES {
        return Some(parse(&message));
    }
    match tokio::task::spawn_blocking(move || parse(&message)).await {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            tracing::error!("reading a message failed: {error}");
            None
        }
    }
}

/// Pending connections the kernel queues before the server accepts them.
const LISTEN_BACKLOG: u32 = 4096;

/// Initial read buffer of a WebSocket; it grows for large messages. Kept
/// small because idle connections are the common case.
const WEBSOCKET_READ_BUFFER: usize = 4 * 1024;

/// Outgoing bytes a WebSocket gathers before writing them; a flush writes
/// sooner. Lets a burst of messages go out in one write.
const WEBSOCKET_WRITE_BUFFER: usize = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "port {port} on {host} is already in use — is Punie already running? See `punie status`"
    )]
    PortInUse { host: IpAddr, port: u16 },
    #[error(
        "another `punie serve` (pid {pid}, {url}) is recorded in {}, where clients look for their server; `punie stop` stops it, or give this one a directory of its own with another XDG_STATE_HOME",
        record.display()
    )]
    AlreadyRecorded {
        pid: u32,
        url: String,
        record: std::path::PathBuf,
    },
}

/// How long starting waits for the `/health` of a server `server.json`
/// names, to tell a live one from a record left by a crash.
const RECORDED_SERVER_TIMEOUT: Duration = Duration::from_secs(1);

/// Refuse to start beside a live server recorded in `server.json`: taking
/// over the record would leave it running where no client finds it, nor
/// `punie stop` reaches it. A record whose process has gone, or is not
/// that server, was left by a crash and is replaced.
async fn refuse_if_another_is_recorded(server_file: &std::path::Path) -> anyhow::Result<()> {
    let Ok(Some(recorded)) = ServerRecord::read(server_file) else {
        return Ok(());
    };
    let alive = i32::try_from(recorded.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
    if !alive || recorded.pid == std::process::id() {
        return Ok(());
    }
    let answered = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(RECORDED_SERVER_TIMEOUT)
            .build()
            .ok()?;
        let health: serde_json::Value = client
            .get(format!("{}/health", recorded.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        health["pid"].as_u64()
    };
    if answered.await == Some(u64::from(recorded.pid)) {
        return Err(StartError::AlreadyRecorded {
            pid: recorded.pid,
            url: recorded.url,
            record: server_file.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// What the routes share.
#[derive(Clone)]
struct AppState {
    hub: Arc<AgentHub>,
    /// The HTTP/SSE profile, for `/acp` requests that are not WebSocket upgrades.
    http_profile: Arc<HttpProfile>,
    /// Open WebSockets; waited on at shutdown.
    sockets: TaskTracker,
    /// One permit per connection the server may still take.
    connection_slots: Arc<Semaphore>,
    limits: Arc<ConnectionLimits>,
    started: Instant,
}

/// Run `punie serve` until SIGINT or SIGTERM, with `model` (built from
/// `config.model`) for new sessions.
pub async fn serve(config: ServeConfig, model: Arc<dyn model::Model>) -> anyhow::Result<()> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    raise_open_file_limit();
    refuse_if_another_is_recorded(&config.paths.server_file()).await?;
    let listener = bind(config.host, config.port)?;
    let address = listener.local_addr()?;
    let token = AccessToken::load_or_create(&config.paths.token_file())?;
    let mut signals = Signals::install()?;

    let shutdown = CancellationToken::new();
    let store = Store::open(&config.paths.database_file())?;
    let sessions = session_registry(&config, store.clone(), model, &shutdown);
    let recovered = sessions.recover_interrupted().await?;
    if recovered > 0 {
        tracing::info!(
            sessions = recovered,
            "recorded turns the last server was stopped in"
        );
    }
    let models = model::ModelCatalogue::new(
        &config.model,
        &config.offered_models,
        std::env::var("OLLAMA_HOST").ok(),
    );
    let hub = AgentHub::new(
        sessions,
        models,
        shutdown.clone(),
        config.limits.max_message_bytes,
    );
    tokio::spawn(evict_idle_sessions(hub.clone()));
    // So that the first session's model menu lists the local servers' models.
    hub.refresh_models_if_stale();
    let connection_slots = Arc::new(Semaphore::new(config.limits.max_connections));
    let limits = Arc::new(config.limits.clone());
    let http_profile = Arc::new(HttpProfile::new(
        hub.clone(),
        connection_slots.clone(),
        limits.clone(),
    ));
    tokio::spawn(end_silent_http_connections(
        http_profile.clone(),
        limits.ping_interval,
        shutdown.clone(),
    ));
    let state = AppState {
        http_profile,
        hub: hub.clone(),
        sockets: TaskTracker::new(),
        connection_slots,
        limits,
        started,
    };
    let sign_ins = Arc::new(SignIns::new(address.port()));
    let guard = Arc::new(RequestGuard::new(
        token,
        (config.host, address.port()),
        &config.allowed_hosts,
        sign_ins.clone(),
    ));
    let app = router(state.clone(), guard, sign_ins.clone());
    let sign_in_link = web::startup_link(&sign_ins, address)?;

    let record = ServerRecord::for_this_process(address, started_at);
    let server_file = config.paths.server_file();
    record.write(&server_file)?;
    announce_ready(address, config.host, &sign_in_link);
    tracing::info!(model = config.model, "ready in {:?}", started.elapsed());

    let served = listener::serve_http(
        listener,
        app,
        config.limits.header_timeout,
        shutdown.clone(),
    );
    let mut served = std::pin::pin!(served);
    tokio::select! {
        () = &mut served => anyhow::bail!("the server stopped accepting connections unexpectedly"),
        signal = signals.next() => {
            tracing::info!("{signal} received: shutting down");
            shutdown.cancel();
            store.checkpoint_soon();
            let drained = async {
                served.await;
                state.sockets.close();
                tokio::join!(state.sockets.wait(), hub.connections_ended());
            };
            wind_down(drained, &mut signals).await;
        }
    }
    let closing = Instant::now();
    store.close();
    tracing::info!("the session store closed in {:?}", closing.elapsed());
    record.remove(&server_file)?;
    Ok(())
}

/// Tell the person the server is ready, on stderr whatever the log level:
/// where it listens, whether other machines can reach it, and how a browser
/// signs in.
fn announce_ready(address: std::net::SocketAddr, host: std::net::IpAddr, sign_in_link: &str) {
    crate::say!("punie listening on http://{address}");
    if !host.is_loopback() {
        crate::say!(
            "punie: warning: listening on {host} is reachable from other machines, and the token and the browser's cookie cross the network in the clear; put a TLS proxy in front (see the README)"
        );
    }
    if only_this_user_reads_stderr() {
        crate::say!(
            "punie: sign in from a browser with {sign_in_link} (it works once, within {}; `punie open` makes another)",
            humantime::format_duration(web::LINK_LIFETIME)
        );
    } else {
        crate::say!(
            "punie: sign in from a browser with `punie open`; no sign-in link is written here, where others may read it"
        );
    }
}

/// Whether what this process writes to stderr can be read only by its own
/// user: a terminal or a pipe, or a file no one else may read. A sign-in
/// link is as good as the token until it is used, and a log kept in a file
/// others can read (`>punie.log 2>&1` under the usual umask) would hand it
/// to them; the system's journal, behind a socket, is read by others too.
fn only_this_user_reads_stderr() -> bool {
    use rustix::fs::FileType;
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    match FileType::from_raw_mode(stat.st_mode) {
        // What is written to a device is shown or dropped, not kept.
        FileType::CharacterDevice => true,
        FileType::RegularFile | FileType::Fifo => {
            stat.st_uid == rustix::process::geteuid().as_raw() && stat.st_mode & 0o044 == 0
        }
        _ => false,
    }
}

/// Wait for every connection to close (`drained`), within
/// [`SHUTDOWN_GRACE`]; a second signal stops waiting at once.
async fn wind_down(drained: impl std::future::Future<Output = ()>, signals: &mut Signals) {
    let stopping = Instant::now();
    tokio::select! {
        () = drained => tracing::info!("every connection closed in {:?}", stopping.elapsed()),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; exiting anyway"),
        signal = signals.next() => tracing::warn!("{signal} received again: exiting now"),
    }
}

fn session_registry(
    config: &ServeConfig,
    store: Store,
    model: Arc<dyn model::Model>,
    shutdown: &CancellationToken,
) -> SessionRegistry {
    let settings = TurnSettings {
        max_rounds: config.max_tool_rounds,
        context_window: config.context_window,
        reply_tokens: config.model_settings.max_output_tokens.map_or(0, u64::from),
        tools: Arc::new(tools::specs()),
        reattach_timeout: config.reattach_timeout,
        idle_timeout: config.session_idle_timeout,
        client_request_timeout: config.limits.client_request_timeout,
        mcp_call_timeout: config.mcp_call_timeout,
        mcp_start_timeout: config.mcp_start_timeout,
        user_instructions: Some(config.paths.user_instructions_file()),
        server_stopping: shutdown.clone(),
    };
    let model_settings = config.model_settings.clone();
    // A session continues with the model it was created with.
    let model_for = move |spec: &str| {
        model::from_spec(spec, &model_settings).map_err(|error| error.to_string())
    };
    SessionRegistry::new(
        store,
        Arc::new(settings),
        ModelChoice {
            spec: config.model.clone(),
            model,
        },
        Box::new(model_for),
    )
}

/// Drop the conversations of idle sessions from memory, until shutdown.
async fn evict_idle_sessions(hub: Arc<AgentHub>) {
    // A short idle timeout is looked after as promptly as it asks: looking
    // twice per timeout drops a conversation within 1.5 timeouts of its turn.
    let every =
        (hub.sessions.idle_timeout() / 2).clamp(Duration::from_millis(10), EVICTION_INTERVAL);
    until_shutdown(every, hub.shutdown.clone(), || {
        let evicted = hub.sessions.evict_idle();
        if evicted > 0 {
            tracing::debug!(sessions = evicted, "dropped idle conversations from memory");
        }
        std::future::ready(())
    })
    .await;
}

/// Run `work` every `period` until `shutdown`.
async fn until_shutdown<F: Future<Output = ()>>(
    period: Duration,
    shutdown: CancellationToken,
    mut work: impl FnMut() -> F,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        work().await;
    }
}

fn router(state: AppState, guard: Arc<RequestGuard>, sign_ins: Arc<SignIns>) -> Router {
    let acp = Router::new()
        .route("/acp", any(acp_endpoint))
        .route("/ws", get(websocket_endpoint))
        .route_layer(middleware::from_fn_with_state(
            guard.clone(),
            auth::require_client,
        ));
    let sign_in_links = web::link_routes(sign_ins.clone()).route_layer(
        middleware::from_fn_with_state(guard.clone(), auth::require_token),
    );
    Router::new()
        .route("/health", get(health))
        .merge(acp)
        .with_state(state)
        .merge(web::routes(sign_ins))
        .merge(sign_in_links)
        .layer(middleware::from_fn_with_state(
            guard,
            auth::check_host_and_origin,
        ))
}

/// End connections of the HTTP profile that went silent or stopped reading,
/// until shutdown: the profile has no pings, so that is all there is to judge.
async fn end_silent_http_connections(
    profile: Arc<HttpProfile>,
    every: Duration,
    shutdown: CancellationToken,
) {
    until_shutdown(every, shutdown, || profile.end_silent()).await;
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": crate::VERSION,
        "pid": std::process::id(),
        "connections": state.hub.connection_count(),
        "sessions": state.hub.sessions.len(),
        "conversationsInMemory": state.hub.sessions.conversations_in_memory(),
        "store": state.hub.sessions.store_problem().unwrap_or_else(|| "ok".to_owned()),
        "uptimeSeconds": (state.started.elapsed().as_millis() as f64) / 1000.0,
    }))
}

/// `/acp`: a WebSocket upgrade is served here, anything else by the SDK's HTTP transport.
async fn acp_endpoint(State(state): State<AppState>, request: Request) -> Response {
    if state.hub.shutdown.is_cancelled() {
        return shutting_down();
    }
    if !is_websocket_upgrade(&request) {
        return match state.http_profile.serve(request).await {
            Ok(response) => response,
            Err(http_profile::NoSlot) => too_many_connections(state.limits.max_connections),
        };
    }
    let (mut parts, _body) = request.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => accept_websocket(upgrade, state),
        Err(rejection) => rejection.into_response(),
    }
}

/// `/ws`: the same WebSocket endpoint, at the address the design notes name.
async fn websocket_endpoint(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    if state.hub.shutdown.is_cancelled() {
        return shutting_down();
    }
    accept_websocket(upgrade, state)
}

/// Upgrade to a WebSocket, if the server has room for one more connection:
/// the slot is taken before any work is done, and held until the socket ends.
fn accept_websocket(upgrade: WebSocketUpgrade, state: AppState) -> Response {
    let AppState {
        hub,
        sockets,
        connection_slots,
        limits,
        ..
    } = state;
    let Ok(slot) = connection_slots.try_acquire_owned() else {
        return too_many_connections(limits.max_connections);
    };
    let limit = header::HeaderValue::from(limits.max_message_bytes);
    let mut response = upgrade
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .write_buffer_size(WEBSOCKET_WRITE_BUFFER)
        .on_failed_upgrade(|error| tracing::debug!("WebSocket upgrade failed: {error}"))
        .on_upgrade(move |socket| {
            sockets.track_future(async move {
                websocket::serve(socket, hub, &limits).await;
                drop(slot);
            })
        });
    response.headers_mut().insert(MESSAGE_LIMIT_HEADER, limit);
    response
}

fn too_many_connections(limit: usize) -> Response {
    tracing::warn!(
        limit,
        "refused a connection: the server is at --max-connections"
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        format!("the server holds its limit of {limit} connections (--max-connections); try again later\n"),
    )
        .into_response()
}

fn is_websocket_upgrade(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn shutting_down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down\n",
    )
        .into_response()
}

/// Bind `host:port`; a port in use is a [`StartError::PortInUse`].
fn bind(host: IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    let socket = match host {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    // Lets a restarted server take its port back from connections in TIME_WAIT;
    // it does not let two servers share a port.
    socket.set_reuseaddr(true)?;
    socket.bind(address).map_err(|error| match error.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::Error::new(StartError::PortInUse { host, port }),
        _ => anyhow::Error::new(error).context(format!("cannot listen on {address}")),
    })?;
    socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("cannot listen on {address}"))
}

/// Many clients mean many sockets: use every file descriptor the system allows.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!("cannot raise the open file limit: {error}"),
    }
}

/// The signals that stop the server, and those it must outlive. Installed
/// before the server is ready, so a signal sent right after the ready line is
/// never missed.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    /// A write past the file size limit (`ulimit -f`): by default it kills
    /// the process. Handled, the write fails instead, and the store holds it
    /// and says so, as on a full disk.
    file_too_big: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            file_too_big: signal(SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw()))
                .context("cannot handle SIGXFSZ")?,
        })
    }

    /// The next stopping signal. A hangup does not stop the server: it runs
    /// in the background until it is told to stop.
    async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => return "SIGTERM",
                _ = self.interrupt.recv() => return "SIGINT",
                _ = self.hangup.recv() => {
                    tracing::info!("ignored SIGHUP: the server keeps running until SIGTERM or SIGINT");
                }
                _ = self.file_too_big.recv() => {
                    tracing::warn!("a write went past the file size limit (ulimit -f); the store keeps what it could not write and retries");
                }
            }
        }
    }
}
