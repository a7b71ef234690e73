//! A local stand-in for a model API (OpenAI Chat Completions or Anthropic
//! Messages) on 127.0.0.1, port 0: it records every request and answers each
//! with the next scripted [`Reply`] — server-sent events in the provider's
//! real wire format, or an HTTP error. Point a provider at it with
//! `local:http://ADDR/v1/MODEL`, `OPENAI_BASE_URL=http://ADDR/v1` or
//! `ANTHROPIC_BASE_URL=http://ADDR`.
//!
//! Self-contained (no `super::`), so a test binary may include it by path.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One part of a streamed answer.
#[derive(Clone)]
pub enum Part {
    /// Send this text as it is (already framed as SSE).
    Send(String),
    /// Wait until the test calls `notify_one` on it.
    Wait(Arc<Notify>),
    /// Wait this long: a server that paces what it sends, as a slow model
    /// does. The fake's own pace, never how a test synchronises.
    #[allow(dead_code)] // Only tests/providers.rs has a use for it.
    Pause(std::time::Duration),
    /// Send nothing more, and never close.
    Stall,
    /// Send nothing more, never close, and notify this once the client has
    /// gone and the response was dropped.
    #[allow(dead_code)] // Only tests/agent.rs has a use for it.
    StallUntilDropped(Arc<Notify>),
    /// Let what was sent so far go out before the next part: the body is not
    /// ready once, so hyper writes out what it holds.
    #[allow(dead_code)] // tests/agent.rs includes this file but has no use for it.
    Flush,
    /// Drop the connection at once, without ending the response: a server
    /// that crashed mid-reply.
    #[allow(dead_code)] // tests/providers.rs includes this file but has no use for it.
    Abort,
}

/// How the fake answers one request.
#[derive(Clone)]
pub enum Reply {
    /// `200 OK`, `text/event-stream`, these parts; closes after the last.
    Stream(Vec<Part>),
    /// An error status with headers and a body.
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, then reset the connection (RST) without answering:
    /// a server that crashed, or a proxy that gave up.
    Reset,
    /// Read the request, then close the connection (FIN) without answering:
    /// a server that restarted, or closed a keep-alive connection as it was reused.
    Close,
    /// Read the request and never answer it: a server stuck before its
    /// first byte.
    #[allow(dead_code)] // Only tests/providers.rs has a use for it.
    Hang,
}

impl Reply {
    /// A stream of these already-framed events, sent at once.
    pub fn events(events: impl IntoIterator<Item = String>) -> Self {
        Self::Stream(events.into_iter().map(Part::Send).collect())
    }

    /// An error status with a JSON body.
    pub fn status(status: u16, body: Value) -> Self {
        Self::Status {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
        }
    }

    /// The same error status with header `name` added.
    pub fn with_header(self, name: &'static str, value: &str) -> Self {
        match self {
            Self::Status {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value.to_owned()));
                Self::Status {
                    status,
                    headers,
                    body,
                }
            }
            _ => panic!("only an error status carries headers here"),
        }
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON, or `Value::Null` if it was not JSON.
    pub body: Value,
    /// When the fake had read it.
    pub at: std::time::Instant,
}

struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

/// The running fake; it stops when dropped.
pub struct FakeProvider {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// Serve `replies`, one per request, in order; requests beyond them get
    /// a 500 saying the fake has no reply left.
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the fake provider");
        Self::on(listener, replies)
    }

    /// [`Self::start`] on a listener the test bound: for a server Punie
    /// looks for at a fixed address, which the test must hold first.
    #[allow(dead_code)] // Only tests/providers.rs has a use for it.
    pub fn on(listener: TcpListener, replies: impl IntoIterator<Item = Reply>) -> Self {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<Connection>();
        let addr = listener.local_addr().expect("the fake provider's address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(Droppable(listener), app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .expect("the request log")
            .clone()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: std::time::Instant::now(),
    };
    shared
        .requests
        .lock()
        .expect("the request log")
        .push(recorded);
    let reply = shared.replies.lock().expect("the replies").pop_front();
    let reply = reply.unwrap_or_else(|| Reply::Status {
        status: 500,
        headers: Vec::new(),
        body: r#"{"error":{"message":"the fake provider has no reply left"}}"#.to_owned(),
    });
    if matches!(reply, Reply::Hang) {
        std::future::pending::<()>().await;
    }
    respond(reply, &connection)
}

fn respond(reply: Reply, connection: &Connection) -> Response {
    match reply {
        Reply::Hang => unreachable!("a hanging reply never gets this far"),
        Reply::Reset => connection.drop_with(Ending::Reset),
        Reply::Close => connection.drop_with(Ending::Close),
        Reply::Stream(parts) => {
            let body = async_stream::stream! {
                for part in parts {
                    match part {
                        Part::Send(text) => yield Ok::<_, std::io::Error>(text),
                        Part::Wait(gate) => gate.notified().await,
                        Part::Pause(pause) => tokio::time::sleep(pause).await,
                        Part::Stall => std::future::pending::<()>().await,
                        Part::StallUntilDropped(dropped) => {
                            let _told = NotifyOnDrop(dropped);
                            std::future::pending::<()>().await;
                        }
                        Part::Flush => tokio::task::yield_now().await,
                        // A body that fails makes hyper drop the connection
                        // before the chunk that would end the response.
                        Part::Abort => yield Err(std::io::Error::other("the fake provider aborts")),
                    }
                }
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(body))
                .expect("a streaming response")
        }
        Reply::Status {
            status,
            headers,
            body,
        } => {
            let mut response =
                Response::builder().status(StatusCode::from_u16(status).expect("a valid status"));
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).expect("an error response")
        }
    }
}

/// Notifies when dropped: a response body held to the end of its client.
struct NotifyOnDrop(Arc<Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// How a connection ends before anything is written to it.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Reset,
    Close,
}

/// A TCP listener whose connections a handler can drop: hyper owns the
/// socket, so the handler marks the connection and the socket's next read or
/// write fails, which makes hyper let go of it before writing the answer.
struct Droppable(TcpListener);

impl Listener for Droppable {
    type Io = DroppableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let ending = Arc::new(Mutex::new(None));
                    let handle = Connection(ending.clone());
                    return (DroppableStream { stream, ending }, handle);
                }
                // Out of descriptors, say: the test fails on its own deadline.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Connection(Arc::new(Mutex::new(None))))
    }
}

/// The handler's hold on its connection, as its connect info.
#[derive(Clone, Debug)]
struct Connection(Arc<Mutex<Option<Ending>>>);

impl axum::extract::connect_info::Connected<IncomingStream<'_, Droppable>> for Connection {
    fn connect_info(stream: IncomingStream<'_, Droppable>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connection {
    /// End the connection as `ending` says; the response is never written.
    fn drop_with(&self, ending: Ending) -> Response {
        *self.0.lock().expect("the connection's ending") = Some(ending);
        Response::new(Body::empty())
    }
}

struct DroppableStream {
    stream: TcpStream,
    ending: Arc<Mutex<Option<Ending>>>,
}

impl DroppableStream {
    /// The error that makes hyper drop the connection, once it is to end.
    fn ended(&self) -> Option<std::io::Error> {
        let ending = (*self.ending.lock().expect("the connection's ending"))?;
        if let Ending::Reset = ending {
            // Closing with a zero linger sends RST instead of FIN.
            let _ = self.stream.set_zero_linger();
        }
        Some(std::io::Error::other(
            "the fake provider drops the connection",
        ))
    }
}

impl AsyncRead for DroppableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DroppableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// One OpenAI `chat.completion.chunk` event carrying `choice` (an object
/// with `delta` and `finish_reason`), as `data: {...}`.
pub fn openai_chunk(choice: Value) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-model",
        "system_fingerprint": "fp_fake",
        "choices": [choice],
    });
    format!("data: {chunk}\n\n")
}

/// A delta chunk with no finish reason.
pub fn openai_delta(delta: Value) -> String {
    openai_chunk(serde_json::json!({
        "index": 0,
        "delta": delta,
        "logprobs": null,
        "finish_reason": null,
    }))
}

/// The chunk that finishes the choice.
pub fn openai_finish(reason: &str) -> String {
    openai_chunk(serde_json::json!({
        "index": 0,
        "delta": {},
        "logprobs": null,
        "finish_reason": reason,
    }))
}

/// The usage chunk `stream_options.include_usage` asks for: no choices.
pub fn openai_usage(prompt_tokens: u64, completion_tokens: u64) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    format!("data: {chunk}\n\n")
}

/// The end of an OpenAI stream.
pub fn openai_done() -> String {
    "data: [DONE]\n\n".to_owned()
}

/// A whole OpenAI reply of text `pieces`, finished with `stop` and usage.
pub fn openai_text_reply(pieces: &[&str]) -> Vec<String> {
    let mut events = vec![openai_delta(
        serde_json::json!({"role": "assistant", "content": ""}),
    )];
    events.extend(
        pieces
            .iter()
            .map(|piece| openai_delta(serde_json::json!({ "content": piece }))),
    );
    events.extend([openai_finish("stop"), openai_usage(10, 5), openai_done()]);
    events
}

/// A whole OpenAI reply that calls one tool, `name` with `arguments`, as `id`.
#[allow(dead_code)] // Only tests/settings.rs has a use for it.
pub fn openai_tool_call_reply(id: &str, name: &str, arguments: Value) -> Vec<String> {
    vec![
        openai_delta(serde_json::json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"index": 0, "id": id, "type": "function",
                            "function": {"name": name, "arguments": arguments.to_string()}}],
        })),
        openai_finish("tool_calls"),
        openai_done(),
    ]
}

/// One Anthropic Messages event, `event: TYPE` then `data: {...}`.
pub fn anthropic_event(data: Value) -> String {
    let kind = data["type"].as_str().unwrap_or("message").to_owned();
    format!("event: {kind}\ndata: {data}\n\n")
}

/// `message_start` reporting `input_tokens`.
pub fn anthropic_message_start(input_tokens: u64) -> String {
    anthropic_event(serde_json::json!({
        "type": "message_start",
        "message": {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-fake",
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }))
}

/// `message_delta` with the stop reason and output tokens, then `message_stop`.
pub fn anthropic_message_end(stop_reason: &str, output_tokens: u64) -> Vec<String> {
    vec![
        anthropic_event(serde_json::json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens},
        })),
        anthropic_event(serde_json::json!({"type": "message_stop"})),
    ]
}

/// A whole text block at `index`, in `pieces`.
pub fn anthropic_text_block(index: usize, pieces: &[&str]) -> Vec<String> {
    let mut events = vec![anthropic_event(serde_json::json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }))];
    events.extend(pieces.iter().map(|piece| {
        anthropic_event(serde_json::json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": piece},
        }))
    }));
    events.push(anthropic_event(
        serde_json::json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

/// A whole `tool_use` block at `index`, its input JSON in `pieces`.
pub fn anthropic_tool_block(index: usize, id: &str, name: &str, pieces: &[&str]) -> Vec<String> {
    let mut events = vec![anthropic_event(serde_json::json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
    }))];
    events.extend(pieces.iter().map(|piece| {
        anthropic_event(serde_json::json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": piece},
        }))
    }));
    events.push(anthropic_event(
        serde_json::json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

/// A whole Anthropic reply of text `pieces`, ending `end_turn`.
pub fn anthropic_text_reply(pieces: &[&str]) -> Vec<String> {
    let mut events = vec![anthropic_message_start(25)];
    events.extend(anthropic_text_block(0, pieces));
    events.extend(anthropic_message_end("end_turn", 15));
    events
}

/// The wire formats the fake speaks, for what must hold for every provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI Chat Completions, as the local servers (`local:`) speak it.
    OpenAi,
    /// Anthropic Messages (`anthropic:`).
    Anthropic,
}

impl Wire {
    pub const ALL: [Self; 2] = [Self::OpenAi, Self::Anthropic];

    /// The `--model` spec that points Punie at `fake` in this format, and the
    /// environment that spec reads.
    pub fn model_spec(self, fake: &FakeProvider) -> (String, Vec<(&'static str, String)>) {
        match self {
            Self::OpenAi => (format!("local:{}/v1/fake-model", fake.url()), Vec::new()),
            Self::Anthropic => (
                "anthropic:claude-fake".to_owned(),
                vec![
                    ("ANTHROPIC_BASE_URL", fake.url()),
                    ("ANTHROPIC_API_KEY", "sk-ant-test".to_owned()),
                ],
            ),
        }
    }

    /// How Punie names the server in its errors.
    pub fn peer_name(self) -> &'static str {
        match self {
            Self::OpenAi => "the model server",
            Self::Anthropic => "Anthropic",
        }
    }

    /// A whole reply of text `pieces`, ended as the provider ends one.
    pub fn text_reply(self, pieces: &[&str]) -> Vec<String> {
        match self {
            Self::OpenAi => openai_text_reply(pieces),
            Self::Anthropic => anthropic_text_reply(pieces),
        }
    }

    /// A reply that streams `text` as [`Self::text_opening`] opens one,
    /// then goes on with `rest`.
    pub fn opening_then(self, text: &str, rest: impl IntoIterator<Item = Part>) -> Reply {
        let mut parts: Vec<Part> = self
            .text_opening(text)
            .into_iter()
            .map(Part::Send)
            .collect();
        parts.extend(rest);
        Reply::Stream(parts)
    }

    /// The events that open a reply and stream `text`, leaving it unfinished.
    pub fn text_opening(self, text: &str) -> Vec<String> {
        match self {
            Self::OpenAi => vec![openai_delta(
                serde_json::json!({"role": "assistant", "content": text}),
            )],
            Self::Anthropic => {
                let mut events = vec![anthropic_message_start(10)];
                let block = anthropic_text_block(0, &[text]);
                // The block's start and its one delta, not its stop.
                events.extend(block[..2].iter().cloned());
                events
            }
        }
    }

    /// An error answer with `status`, its body shaped as the provider shapes it.
    pub fn error_status(self, status: u16, kind: &str, message: &str) -> Reply {
        let body = match self {
            Self::OpenAi => serde_json::json!({
                "error": {"message": message, "type": kind, "param": null, "code": null},
            }),
            Self::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": kind, "message": message},
            }),
        };
        Reply::status(status, body)
    }

    /// An event that is framed well but whose data is not the JSON it should be.
    pub fn malformed_event(self) -> String {
        match self {
            Self::OpenAi => "data: {\"choices\": [oops\n\n".to_owned(),
            Self::Anthropic => {
                "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", oops\n\n"
                    .to_owned()
            }
        }
    }

    /// The assistant's non-empty texts in a request body the fake recorded,
    /// oldest first.
    #[allow(dead_code)] // tests/providers.rs includes this file but has no use for it.
    pub fn assistant_texts(self, body: &Value) -> Vec<String> {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        messages
            .iter()
            .filter(|message| message["role"] == "assistant")
            .map(|message| match self {
                Self::OpenAi => message["content"].as_str().unwrap_or_default().to_owned(),
                Self::Anthropic => message["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|block| block["type"] == "text")
                    .filter_map(|block| block["text"].as_str())
                    .collect(),
            })
            .filter(|text| !text.is_empty())
            .collect()
    }
}

/// How llama.cpp's server refuses a picture for a model without a projector:
/// a 500 that says the model reads no pictures.
#[allow(dead_code)] // Only tests/providers.rs and tests/persistence.rs use it.
pub fn llama_cpp_refuses_pictures() -> Reply {
    Reply::status(
        500,
        serde_json::json!({"error": {
            "code": 500,
            "message": "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            "type": "server_error",
        }}),
    )
}

/// A refusal of these pictures only, for their size.
#[allow(dead_code)] // Only tests/providers.rs and tests/persistence.rs use it.
pub fn picture_too_large() -> Reply {
    Reply::status(
        400,
        serde_json::json!({"error": {"message": "image exceeds 5 MB maximum"}}),
    )
}
