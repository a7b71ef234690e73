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
/// sending, the socket is closed — the returned task finishes then.
pub fn sdk_channel(
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
) -> (Channel, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = Channel::duplex();
    let (mut from_sdk, to_sdk) = ours.into_parts();
    let (mut outgoing, mut incoming) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Text(text)
                    if to_sdk
                        .unbounded_send(TransportFrame::parse_json(text.as_str()))
                        .is_err() =>
                {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(frame) = from_sdk.next().await {
            match frame.to_json() {
                Ok(text) => {
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
