//! A WebSocket relay between one client and the server that passes every
//! frame on untouched and keeps the text of each: what the server sent and
//! what it was sent, exactly, to hold against what the client's other side
//! saw.

use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::{RawClient, Server, within};

/// The text frames that went through, each way, in order.
#[derive(Debug, Default)]
pub struct Recorded {
    pub to_server: Vec<String>,
    pub from_server: Vec<String>,
}

/// A relay to `server` for a single connection, accepted on its own
/// listener.
pub struct RecordingRelay {
    /// Where the client connects instead of the server.
    pub url: String,
    done: tokio::task::JoinHandle<Recorded>,
}

impl RecordingRelay {
    /// The relay presents the server's token itself, so the client may
    /// present any.
    pub async fn start(server: &Server) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the relay");
        let url = format!("ws://{}/acp", listener.local_addr().expect("its address"));
        let server_url = server.ws_url();
        let token = server.token.clone();
        let done = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("the client connects");
            let client = tokio_tungstenite::accept_async(stream)
                .await
                .expect("the client's handshake");
            // Opened when the client's is, as though the client had opened it.
            let upstream = RawClient::connect(&server_url, &token).await;
            let (mut to_server, mut from_server) = upstream.ws.split();
            let (mut to_client, mut from_client) = client.split();
            let mut recorded = Recorded::default();
            // Either side ending ends the relay; a close frame is passed on
            // like any other, so each side sees the other's goodbye.
            loop {
                tokio::select! {
                    message = from_client.next() => {
                        let Some(Ok(message)) = message else { break };
                        if let Message::Text(text) = &message {
                            recorded.to_server.push(text.to_string());
                        }
                        if to_server.send(message).await.is_err() {
                            break;
                        }
                    }
                    message = from_server.next() => {
                        let Some(Ok(message)) = message else { break };
                        if let Message::Text(text) = &message {
                            recorded.from_server.push(text.to_string());
                        }
                        if to_client.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            }
            recorded
        });
        Self { url, done }
    }

    /// What went through, once the connection has ended.
    pub async fn finished(self) -> Recorded {
        within("the relayed connection to end", self.done)
            .await
            .expect("the relay ran to its end")
    }
}
