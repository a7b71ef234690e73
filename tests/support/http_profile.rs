//! A client of the transport's HTTP/SSE profile spoken by hand, to see
//! exactly what the server answers, valid input or not.

use serde_json::{Value, json};

use super::{Server, within};

/// A client of the transport's HTTP/SSE profile, speaking it by hand to see
/// exactly what the server sends before it goes away.
pub struct HttpProfileClient {
    http: reqwest::Client,
    url: String,
    token: String,
    connection_id: String,
}

pub type EventStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<eventsource_stream::Event, String>> + Send>,
>;

impl HttpProfileClient {
    pub async fn initialize(server: &Server) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = server.http_url("/acp");
        let response = server.http_profile_initialize().await;
        assert_eq!(response.status(), 200);
        let connection_id = response.headers()["acp-connection-id"]
            .to_str()
            .unwrap()
            .to_owned();
        Self {
            http,
            url,
            token: server.token.clone(),
            connection_id,
        }
    }

    pub async fn post(&self, session: Option<&str>, message: Value) {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .header("Acp-Connection-Id", &self.connection_id)
            .json(&message);
        if let Some(session) = session {
            request = request.header("Acp-Session-Id", session);
        }
        assert_eq!(request.send().await.unwrap().status(), 202);
    }

    /// `body` POSTed on the connection as it is, valid or not.
    pub async fn post_text(&self, body: &str) -> reqwest::Response {
        self.http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .header("Acp-Connection-Id", &self.connection_id)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// `session/new` in `cwd`, its answer read from the connection's own
    /// event stream; the session's id.
    pub async fn new_session(&self, cwd: &std::path::Path) -> String {
        let mut connection_events = self.events(None).await;
        self.post(None, json!({"jsonrpc": "2.0", "id": 1, "method": "session/new", "params": {"cwd": cwd, "mcpServers": []}}))
            .await;
        let created = next_message(&mut connection_events)
            .await
            .expect("the session/new answer");
        created["result"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a session id: {created}"))
            .to_owned()
    }

    /// End the connection, as the profile's client does.
    pub async fn delete(&self) {
        let response = self
            .http
            .delete(&self.url)
            .bearer_auth(&self.token)
            .header("Acp-Connection-Id", &self.connection_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    pub async fn events(&self, session: Option<&str>) -> EventStream {
        use eventsource_stream::Eventsource as _;
        use futures::StreamExt as _;
        let mut request = self
            .http
            .get(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "text/event-stream")
            .header("Acp-Connection-Id", &self.connection_id);
        if let Some(session) = session {
            request = request.header("Acp-Session-Id", session);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        response
            .bytes_stream()
            .eventsource()
            .map(|event| event.map_err(|error| error.to_string()))
            .boxed()
    }
}

/// The next JSON-RPC message on an SSE stream, skipping keep-alives.
pub async fn next_message(events: &mut EventStream) -> Option<Value> {
    use futures::StreamExt as _;
    loop {
        match within("an SSE event", events.next()).await? {
            Ok(event) if event.data.is_empty() => continue,
            Ok(event) => return Some(serde_json::from_str(&event.data).expect("SSE data is JSON")),
            Err(error) => panic!("the SSE stream failed: {error}"),
        }
    }
}
