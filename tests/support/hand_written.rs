//! An ACP agent written by hand, on the far end of a client's WebSocket: for
//! what Punie's own server never does, and to see each frame a client sends
//! exactly as it came, close frames and pongs included.

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use super::within;

/// One ACP client connection to an agent written by hand, over a WebSocket:
/// it answers `initialize` and `session/new` (session `s1`) itself.
pub struct HandWrittenAgent {
    pub ws: WebSocketStream<tokio::net::TcpStream>,
    /// What the client said it can do, once it has said so.
    pub client_capabilities: Value,
}

impl HandWrittenAgent {
    pub async fn accept(listener: tokio::net::TcpListener) -> Self {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        Self {
            ws,
            client_capabilities: Value::Null,
        }
    }

    /// The next message past the handshake; `None` once the client has gone.
    pub async fn next(&mut self) -> Option<Value> {
        while let Some(Ok(message)) = self.ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            let result = match message["method"].as_str() {
                Some("initialize") => {
                    self.client_capabilities = message["params"]["clientCapabilities"].clone();
                    json!({"protocolVersion": 1, "agentCapabilities": {}, "authMethods": []})
                }
                Some("session/new") => json!({"sessionId": "s1"}),
                _ => return Some(message),
            };
            self.send(json!({"jsonrpc": "2.0", "id": message["id"], "result": result}))
                .await;
        }
        None
    }

    pub async fn send(&mut self, message: Value) {
        let text = Message::text(message.to_string());
        self.ws.send(text).await.unwrap();
    }

    /// The next frame from the client, whatever it is, with nothing answered
    /// on the agent's part; `None` once the connection has ended.
    pub async fn frame(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        within("a frame from the client", self.ws.next()).await
    }

    /// The next text frame, parsed, failing the test on anything else.
    pub async fn text(&mut self) -> Value {
        match self.frame().await {
            Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
            other => panic!("expected a text frame from the client, got {other:?}"),
        }
    }
}
