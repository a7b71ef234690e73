//! A client's WebSocket as the SDK sees it: a [`Channel`] of frames, each
//! text frame one JSON-RPC message. Framing is the WebSocket library's and
//! parsing the SDK's; this only carries frames across.

use agent_client_protocol::{Channel, TransportFrame};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Carry frames between `socket` and the returned channel until either ends.
/// When the server closes, the channel's input ends; when the SDK is done
/// sending, the socket is closed — the returned task finishes then. A
/// message larger than the server takes (`limit`, as it said) is not sent:
/// the server would close the connection over it. A request is answered
/// instead, saying so.
pub fn sdk_channel(
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    limit: Option<usize>,
) -> (Channel, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = Channel::duplex();
    let (mut from_sdk, to_sdk) = ours.into_parts();
    // Answers to refused requests reach the SDK through the reader, which
    // alone holds the way in: when the server closes, the SDK must see its
    // input end.
    let (refusals, mut refused) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (mut outgoing, mut incoming) = socket.split();
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                message = incoming.next() => match message {
                    Some(Ok(Message::Text(text))) => TransportFrame::parse_json(text.as_str()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                },
                Some(answer) = refused.recv() => TransportFrame::parse_json(&answer),
            };
            if to_sdk.unbounded_send(frame).is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(frame) = from_sdk.next().await {
            match frame.to_json() {
                Ok(text) => {
                    if let Some(refusal) = too_big(&text, limit) {
                        tracing::error!("{}", refusal.message);
                        if let Some(answer) = refusal.answer {
                            let _ = refusals.send(answer);
                        }
                        continue;
                    }
                    if outgoing.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Err(error) => tracing::error!("cannot serialize an outgoing message: {error}"),
            }
        }
        let goodbye = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = outgoing.send(Message::Close(Some(goodbye))).await;
    });
    (theirs, writer)
}

/// Why a message the server would not take is not sent, and the answer to
/// it when it is a request.
pub struct Refusal {
    pub message: String,
    pub answer: Option<String>,
}

/// The refusal of `text` when it is longer than `limit` bytes, the most the
/// server takes.
pub fn too_big(text: &str, limit: Option<usize>) -> Option<Refusal> {
    let limit = limit.filter(|limit| text.len() > *limit)?;
    let message = format!(
        "a message of {} was not sent: the server takes messages of up to {} \
         (`punie serve --max-message-bytes`); send less, or raise the server's limit",
        size(text.len()),
        size(limit)
    );
    let answer = request_id(text).map(|id| {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": -32600, "message": message},
        })
        .to_string()
    });
    Some(Refusal { message, answer })
}

/// `bytes` as a person reads a size: in bytes, KiB or MiB.
fn size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let amount = bytes as f64;
    if amount >= KIB * KIB {
        format!("{:.1} MiB", amount / (KIB * KIB))
    } else if amount >= KIB {
        format!("{:.1} KiB", amount / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The id of `text`, when it is a request an answer can carry back.
fn request_id(text: &str) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Request {
        id: serde_json::Value,
        #[allow(dead_code)] // Only its presence counts: a request has a method.
        method: serde::de::IgnoredAny,
    }
    let request: Request = serde_json::from_str(text).ok()?;
    (request.id.is_string() || request.id.is_i64()).then_some(request.id)
}
