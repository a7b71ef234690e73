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
/// instead, saying so; an answer to the server's request is replaced by an
/// error saying so. Either is said on stderr as a `punie:` line.
pub fn sdk_channel(
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    limit: Option<usize>,
) -> (Channel, tokio::task::JoinHandle<()>) {
    sdk_channel_reporting(socket, limit, |message| crate::say!("punie: {message}"))
}

/// [`sdk_channel`], with what is not sent told to `report` rather than
/// said on stderr: a client that draws on the terminal says it in its own
/// way.
pub fn sdk_channel_reporting(
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    limit: Option<usize>,
    report: impl Fn(&str) + Send + 'static,
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
                    let text = match too_big(&text, limit) {
                        Some(refusal) => {
                            report(&refusal.message);
                            if let Some(answer) = refusal.answer {
                                let _ = refusals.send(answer);
                            }
                            match refusal.instead {
                                Some(instead) => instead,
                                None => continue,
                            }
                        }
                        None => text,
                    };
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

/// Why a message the server would not take is not sent, and what goes in
/// its place.
pub struct Refusal {
    pub message: String,
    /// For a request: the error answering it, for whoever sent it.
    pub answer: Option<String>,
    /// For an answer to the server's request: an error with the same id, for
    /// the server, which would otherwise wait for the answer until its
    /// timeout and then give the wrong reason.
    pub instead: Option<String>,
}

/// The refusal of `text` when it is longer than `limit` bytes, the most the
/// server takes.
pub fn too_big(text: &str, limit: Option<usize>) -> Option<Refusal> {
    let limit = limit.filter(|limit| text.len() > *limit)?;
    if let Some(id) = response_id(text) {
        let error = format!(
            "the client's answer was {}, over the server's limit of {} a message \
             (`punie serve --max-message-bytes`)",
            size(text.len()),
            size(limit)
        );
        let instead = error_answer(id, -32603, &error);
        // An error that would not fit either (a limit of a few bytes) is not
        // sent: the server would close the connection over it.
        let instead = (instead.len() <= limit).then_some(instead);
        let message = format!(
            "an answer of {} to the server's request was not sent: the server takes \
             messages of up to {} (`punie serve --max-message-bytes`){}",
            size(text.len()),
            size(limit),
            if instead.is_some() {
                "; it was told so instead"
            } else {
                ""
            }
        );
        return Some(Refusal {
            message,
            answer: None,
            instead,
        });
    }
    let message = format!(
        "a message of {} was not sent: the server takes messages of up to {} \
         (`punie serve --max-message-bytes`); send less, or raise the server's limit",
        size(text.len()),
        size(limit)
    );
    let answer = request_id(text).map(|id| error_answer(id, -32600, &message));
    Some(Refusal {
        message,
        answer,
        instead: None,
    })
}

fn error_answer(id: serde_json::Value, code: i32, message: &str) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    })
    .to_string()
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

/// The id of `text`, when it is an answer (a result or an error) to a
/// request.
fn response_id(text: &str) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct Response {
        id: serde_json::Value,
        #[serde(default)]
        method: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        result: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
    }
    let response: Response = serde_json::from_str(text).ok()?;
    let answers =
        response.method.is_none() && (response.result.is_some() || response.error.is_some());
    (answers && (response.id.is_string() || response.id.is_i64())).then_some(response.id)
}
