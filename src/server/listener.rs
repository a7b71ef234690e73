//! The accept loop: takes TCP connections and serves HTTP/1.1 on each, with
//! upgrades for WebSockets, until shutdown; then lets the requests in flight
//! finish. Each connection must send its request headers within the header
//! timeout, and may sit idle between requests no longer than that.
//!
//! What a request means is the router's business; an upgraded WebSocket
//! leaves this loop's care for [`super::websocket`].

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long accepting pauses after a failure that is not one connection's,
/// such as running out of file descriptors: retrying at once would spin.
const ACCEPT_FAILURE_PAUSE: Duration = Duration::from_millis(100);

/// Serve `app` on every connection `listener` accepts until `shutdown`, then
/// wait for the requests in flight.
pub(super) async fn serve_http(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after_failure(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        connections.spawn(serve_connection(
            stream,
            http.clone(),
            app.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    http: http1::Builder,
    app: Router,
    shutdown: CancellationToken,
) {
    // ACP is many small messages each way; Nagle's algorithm would hold each
    // one back until the previous is acknowledged.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {error}");
    }
    let connection = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!("HTTP connection ended: {error}");
    }
}

/// A failed accept of one connection (it was reset while queued) is that
/// connection's; anything else is the server's, and is worth a pause.
async fn pause_after_failure(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("cannot accept a connection: {error}");
    tokio::time::sleep(ACCEPT_FAILURE_PAUSE).await;
}
