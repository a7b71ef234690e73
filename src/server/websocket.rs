//! One WebSocket: every text frame is one JSON-RPC message, handed to an
//! [`AcpConnection`] and answered the same way.
//!
//! The socket ends with a close frame that says why: 1001 when the server is
//! shutting down, 1000 when the conversation simply ended, 1011 when the
//! connection failed. The socket knows nothing of what the messages mean.

use std::sync::Arc;

use agent_client_protocol::{Channel, ConnectTo as _, TransportFrame};
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::{SinkExt as _, StreamExt as _};

use crate::acp::{AcpConnection, AgentHub};
use crate::config::CLOSE_HANDSHAKE_TIMEOUT;

/// Serve ACP on `socket` until either side closes it.
pub(super) async fn serve(socket: WebSocket, hub: Arc<AgentHub>) {
    let (socket_end, connection_end) = Channel::duplex();
    let (mut from_connection, to_connection) = socket_end.into_parts();
    let connection = tokio::spawn(AcpConnection::new(hub.clone()).connect_to(connection_end));
    let (mut outgoing, mut incoming) = socket.split();
    let (close_sent, close_sent_rx) = tokio::sync::oneshot::channel::<()>();

    let reader = async move {
        // After our close frame, wait a little for the client's answer, no longer.
        let mut handshake_over = std::pin::pin!(async move {
            let _ = close_sent_rx.await;
            tokio::time::sleep(CLOSE_HANDSHAKE_TIMEOUT).await;
        });
        loop {
            let message = tokio::select! {
                message = incoming.next() => message,
                () = &mut handshake_over => break,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    // Once the connection stops taking input the frame has no
                    // one to go to; the close frame follows shortly.
                    let _ = to_connection.unbounded_send(TransportFrame::parse_json(text.as_str()));
                }
                Some(Ok(Message::Binary(_))) => {
                    tracing::warn!("ignored a binary frame: ACP messages are text frames");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(error)) => {
                    tracing::debug!("WebSocket read failed: {error}");
                    break;
                }
            }
        }
        // Dropping `to_connection` tells the connection the client is gone.
    };

    let writer = async move {
        // Messages come in bursts (a turn's updates, then its answer): queue
        // every one already waiting, then write them out together.
        'writing: while let Some(frame) = from_connection.next().await {
            let mut next = Some(frame);
            while let Some(frame) = next {
                if let Some(message) = frame_message(frame)
                    && outgoing.feed(message).await.is_err()
                {
                    break 'writing;
                }
                next = from_connection.try_recv().ok();
            }
            if outgoing.flush().await.is_err() {
                break;
            }
        }
        let ended = match connection.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let frame = close_frame(hub.shutdown.is_cancelled(), ended);
        // When the client closed first, the WebSocket has already queued its
        // answer and refuses ours; flushing still delivers the queued one. When
        // the client is gone, neither matters.
        if outgoing.send(Message::Close(Some(frame))).await.is_err() {
            let _ = outgoing.flush().await;
        }
        let _ = close_sent.send(());
    };

    futures::join!(reader, writer);
}

/// The WebSocket message carrying `frame`. The SDK built the frame itself, so
/// it always serialises; were it ever not to, it is logged and skipped.
fn frame_message(frame: TransportFrame) -> Option<Message> {
    match frame.to_json() {
        Ok(text) => Some(Message::Text(text.into())),
        Err(error) => {
            tracing::error!("cannot serialize an outgoing message: {error}");
            None
        }
    }
}

fn close_frame(shutting_down: bool, ended: Result<(), String>) -> CloseFrame {
    let (code, reason) = match ended {
        Err(error) => {
            tracing::warn!("connection failed: {error}");
            (close_code::ERROR, "internal error")
        }
        Ok(()) if shutting_down => (close_code::AWAY, "server shutting down"),
        Ok(()) => (close_code::NORMAL, ""),
    };
    CloseFrame {
        code,
        reason: reason.into(),
    }
}
