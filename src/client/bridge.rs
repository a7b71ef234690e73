//! `punie` with no command: the stdio bridge an IDE launches as its ACP agent.
//!
//! A stateless proxy: one stdin line becomes one WebSocket text frame to the
//! server, one frame from the server becomes one stdout line. Nothing but ACP
//! ever reaches stdout; everything else goes to stderr. The bridge reads the
//! messages only as far as it must to keep its promises: it remembers which
//! requests the IDE is waiting on, so that when stdin closes it can wait for
//! their answers, and when the server goes away it can answer them itself.

use std::collections::HashSet;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{ConnectError, Target};

mod stdio;

/// How long the bridge waits, after stdin closes, for answers still owed.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the bridge waits for the server to accept it. With
/// [`UNREACHABLE_GRACE`], an IDE hears within a second that no server is there.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(700);

/// When the server cannot be reached, how long after its start the bridge
/// keeps reading stdin for requests to answer with the error: an IDE writes
/// `initialize` as soon as it has started the bridge.
const UNREACHABLE_GRACE: Duration = Duration::from_millis(250);

/// How long the bridge waits for the server to answer its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long after stdout's reader goes away stdin may take to close too, for
/// the two to count as the IDE quitting: it closes both at once.
const STDIN_WITH_STDOUT: Duration = Duration::from_millis(100);

/// Lines between the stdio threads and the WebSocket.
const LINE_QUEUE: usize = 1024;

/// Longest excerpt of a bad line quoted on stderr.
const EXCERPT_CHARS: usize = 80;

/// How the bridge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeExit {
    /// stdin closed and every answer was delivered.
    Done,
    /// The server could not be reached, or went away.
    ServerLost,
    /// stdout could not be written: the IDE cannot be answered any more.
    StdoutLost,
}

/// The requests the IDE sent and is still waiting on, by id (as JSON text).
#[derive(Default)]
struct Pending {
    ids: HashSet<String>,
}

impl Pending {
    fn insert(&mut self, id: String) {
        self.ids.insert(id);
    }

    fn remove(&mut self, id: &str) {
        self.ids.remove(id);
    }

    fn take_all(&mut self) -> Vec<String> {
        self.ids.drain().collect()
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Just enough of a JSON-RPC message to tell requests from responses.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: bool,
    // Present even when `null`: `{"id": 1, "result": null}` is an answer.
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(member: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(member).map(|_| true)
}

enum Kind {
    Request(String),
    Response(String),
    Other,
}

/// What a line from the IDE is. Anything with a method and an id an answer
/// can carry (a string or an integer) is owed an answer, even when it is not
/// a valid request: the server answers those with their id.
/// An id no answer can carry (`7.5`, `{}`) gets one with a `null` id, which
/// the bridge passes on but cannot wait for.
fn classify(line: &str) -> Result<Kind, serde_json::Error> {
    // JSON, but not an object (a batch, a number): answered, if at all,
    // with a `null` id. (A struct would take an array's items as members.)
    if !line.trim_start().starts_with('{') {
        return serde_json::from_str::<IgnoredAny>(line).map(|_| Kind::Other);
    }
    let envelope: Envelope = match serde_json::from_str(line) {
        Ok(envelope) => envelope,
        Err(error) if error.is_data() => return Ok(Kind::Other),
        Err(error) => return Err(error),
    };
    let Some(id) = envelope.id.as_ref().and_then(answerable_id) else {
        return Ok(Kind::Other);
    };
    Ok(if envelope.method {
        Kind::Request(id)
    } else if envelope.result || envelope.error {
        Kind::Response(id)
    } else {
        Kind::Other
    })
}

fn answerable_id(id: &Value) -> Option<String> {
    match id {
        Value::String(_) => Some(id.to_string()),
        Value::Number(number) if number.is_i64() => Some(id.to_string()),
        _ => None,
    }
}

/// Run the bridge until stdin closes or the server goes away.
pub async fn run(target: Target, drain_timeout: Duration) -> BridgeExit {
    let (mut from_stdin, to_stdout, stdout_done) = start_stdio();
    let started = tokio::time::Instant::now();
    // A proxy passes on whatever its server sends, whatever the size.
    let exit = match target.connect_with(CONNECT_TIMEOUT, None).await {
        Ok(connected) => {
            proxy(
                connected.socket,
                connected.server_limit,
                &mut from_stdin,
                &to_stdout,
                drain_timeout,
            )
            .await
        }
        Err(error) => {
            let deadline = started + UNREACHABLE_GRACE;
            unreachable(&error, deadline, &mut from_stdin, &to_stdout).await;
            BridgeExit::ServerLost
        }
    };
    drop(to_stdout);
    // Every line for stdout is written and flushed before the bridge exits.
    let delivered = stdout_done.finish().await;
    if delivered {
        exit
    } else {
        BridgeExit::StdoutLost
    }
}

/// Lines read from stdin, and lines for stdout, each through a bounded
/// queue; the writer's handle tells when stdout has everything.
fn start_stdio() -> (
    mpsc::Receiver<String>,
    mpsc::Sender<String>,
    stdio::StdoutWriter,
) {
    let (stdin_lines, from_stdin) = mpsc::channel::<String>(LINE_QUEUE);
    let (to_stdout, stdout_lines) = mpsc::channel::<String>(LINE_QUEUE);
    stdio::spawn_stdin_reader(stdin_lines);
    (
        from_stdin,
        to_stdout,
        stdio::spawn_stdout_writer(stdout_lines),
    )
}

/// The bridge cannot run as set up (a server URL that names no server):
/// answer any request the IDE sends in the first moment with `message`, so
/// the IDE shows why rather than only that the agent exited. The caller
/// says it on stderr.
pub async fn refuse(message: &str) {
    let (mut from_stdin, to_stdout, stdout_done) = start_stdio();
    let deadline = tokio::time::Instant::now() + UNREACHABLE_GRACE;
    answer_until(message, deadline, &mut from_stdin, &to_stdout).await;
    drop(to_stdout);
    stdout_done.finish().await;
}

/// The server could not be reached: say so, and answer any request the IDE
/// has sent, or sends before `deadline`, with the same message, so the IDE
/// can show it.
async fn unreachable(
    error: &ConnectError,
    deadline: tokio::time::Instant,
    from_stdin: &mut mpsc::Receiver<String>,
    to_stdout: &mpsc::Sender<String>,
) {
    let message = error.to_string();
    tracing::error!("{message}");
    answer_until(&message, deadline, from_stdin, to_stdout).await;
}

/// Answer every request that arrives before `deadline` with `message`.
async fn answer_until(
    message: &str,
    deadline: tokio::time::Instant,
    from_stdin: &mut mpsc::Receiver<String>,
    to_stdout: &mpsc::Sender<String>,
) {
    // A deadline already past still takes the lines waiting.
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, from_stdin.recv()).await {
        if let Ok(Kind::Request(id)) = classify(&line) {
            let _ = to_stdout.send(error_response(&id, message)).await;
        }
    }
}

async fn proxy(
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    limit: Option<usize>,
    from_stdin: &mut mpsc::Receiver<String>,
    to_stdout: &mpsc::Sender<String>,
    drain_timeout: Duration,
) -> BridgeExit {
    let mut pending = Pending::default();
    let (mut to_server, mut from_server) = socket.split();
    // Set once stdin has closed: the bridge then only waits for what is owed.
    let mut drain_deadline: Option<tokio::time::Instant> = None;

    loop {
        if drain_deadline.is_some() && pending.is_empty() {
            break;
        }
        tokio::select! {
            line = from_stdin.recv(), if drain_deadline.is_none() => {
                let Some(line) = line else {
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                    continue;
                };
                let line = match super::transport::too_big(&line, limit) {
                    Some(refusal) => {
                        tracing::error!("{}", refusal.message);
                        if let Some(answer) = refusal.answer
                            && to_stdout.send(answer).await.is_err()
                        {
                            return BridgeExit::StdoutLost;
                        }
                        match refusal.instead {
                            Some(instead) => instead,
                            None => continue,
                        }
                    }
                    None => line,
                };
                match classify(&line) {
                    Ok(Kind::Request(id)) => pending.insert(id),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        "stdin line is not valid JSON ({error}); forwarding it anyway: {}",
                        excerpt(&line)
                    ),
                }
                if let Err(error) = to_server.send(Message::text(line)).await {
                    let reason = format!("the connection failed: {error}");
                    return server_lost(&reason, &mut pending, to_stdout).await;
                }
            }
            frame = from_server.next() => {
                match frame_to_line(frame) {
                    Ok(Some(line)) => {
                        if let Ok(Kind::Response(id)) = classify(&line) {
                            pending.remove(&id);
                        }
                        // The writer has stopped: stdout failed.
                        if to_stdout.send(line).await.is_err() {
                            return BridgeExit::StdoutLost;
                        }
                    }
                    Ok(None) => {}
                    Err(reason) => return server_lost(&reason, &mut pending, to_stdout).await,
                }
            }
            // The stdout writer has stopped: nothing can reach the IDE any
            // more, and the server is told so now rather than at the next
            // message. An IDE that quits closes stdin too, which is an end
            // like any other when nothing is owed.
            () = to_stdout.closed() => {
                let stdin_ended = drain_deadline.is_some()
                    || tokio::time::timeout(STDIN_WITH_STDOUT, async {
                        // A request among them is owed an answer that
                        // cannot be given.
                        while let Some(line) = from_stdin.recv().await {
                            if let Ok(Kind::Request(id)) = classify(&line) {
                                pending.insert(id);
                            }
                        }
                    })
                    .await
                    .is_ok();
                let (exit, reason) = if stdin_ended && pending.is_empty() {
                    (BridgeExit::Done, "stdin closed")
                } else {
                    tracing::error!("cannot write to stdout: its reader has gone");
                    (BridgeExit::StdoutLost, "stdout closed")
                };
                let goodbye = CloseFrame {
                    code: CloseCode::Normal,
                    reason: reason.into(),
                };
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    to_server.send(Message::Close(Some(goodbye))),
                )
                .await;
                return exit;
            }
            () = sleep_until(drain_deadline) => {
                let message = format!("the server did not answer within {drain_timeout:?} after stdin closed");
                tracing::warn!("{message}");
                answer_all(&mut pending, &message, to_stdout).await;
            }
        }
    }

    // stdin closed and nothing is owed: close. The server answers what it
    // already has (a parse error, say) before its own close frame; pass it on.
    let goodbye = CloseFrame {
        code: CloseCode::Normal,
        reason: "stdin closed".into(),
    };
    if to_server.send(Message::Close(Some(goodbye))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Ok(Some(line)) = frame_to_line(from_server.next().await) {
                if to_stdout.send(line).await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    BridgeExit::Done
}

/// Sleep until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a frame from the server means for stdout: a line, nothing, or the end
/// of the connection (with the reason).
fn frame_to_line(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<String>, String> {
    match frame {
        Some(Ok(Message::Text(text))) => Ok(Some(one_line(text.as_str()))),
        Some(Ok(Message::Binary(_))) => {
            tracing::warn!("ignored a binary frame from the server: ACP messages are text");
            Ok(None)
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(None),
        Some(Ok(Message::Close(frame))) => Err(describe_close(frame)),
        Some(Err(error)) => Err(format!("the connection failed: {error}")),
        None => Err("the connection ended".to_owned()),
    }
}

/// The server went away mid-session: say so, and answer everything still owed.
async fn server_lost(
    reason: &str,
    pending: &mut Pending,
    to_stdout: &mpsc::Sender<String>,
) -> BridgeExit {
    let message = format!(
        "lost the connection to the Punie server: {reason}. See `punie status`, or restart it with `punie serve`"
    );
    tracing::error!("{message}");
    answer_all(pending, &message, to_stdout).await;
    BridgeExit::ServerLost
}

async fn answer_all(pending: &mut Pending, message: &str, to_stdout: &mpsc::Sender<String>) {
    for id in pending.take_all() {
        let _ = to_stdout.send(error_response(&id, message)).await;
    }
}

/// A JSON-RPC error answering the request whose id is `id` (as JSON text).
fn error_response(id: &str, message: &str) -> String {
    let id: Value = serde_json::from_str(id).unwrap_or(Value::Null);
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32603, "message": message},
    })
    .to_string()
}

fn describe_close(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => format!(
            "the server closed the connection ({})",
            u16::from(frame.code)
        ),
        Some(frame) => format!(
            "the server closed the connection ({} {})",
            u16::from(frame.code),
            frame.reason
        ),
        None => "the server closed the connection".to_owned(),
    }
}

/// A message as one line: frames are JSON, and JSON may be re-serialised
/// without its newlines; anything else keeps its text with newlines escaped.
fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_owned();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => value.to_string(),
        Err(_) => text.replace('\r', "\\r").replace('\n', "\\n"),
    }
}

fn excerpt(line: &str) -> String {
    let mut excerpt: String = line.chars().take(EXCERPT_CHARS).collect();
    if line.chars().nth(EXCERPT_CHARS).is_some() {
        excerpt.push('…');
    }
    format!("{excerpt:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_told_apart_by_id_and_method() {
        assert!(
            matches!(classify(r#"{"jsonrpc":"2.0","id":1,"method":"x"}"#), Ok(Kind::Request(id)) if id == "1")
        );
        assert!(
            matches!(classify(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#), Ok(Kind::Response(id)) if id == "\"a\"")
        );
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","method":"n"}"#),
            Ok(Kind::Other)
        ));
        assert!(classify("{oops").is_err());
    }

    #[test]
    fn what_the_server_answers_with_an_id_is_owed_and_nothing_else() {
        let owed = |line: &str| matches!(classify(line), Ok(Kind::Request(_)));
        // Invalid, yet answered with their ids.
        assert!(owed(r#"{"id":5,"method":"session/list"}"#));
        assert!(owed(r#"{"jsonrpc":"2.0","id":6,"method":7}"#));
        // Neither request nor answer: the server's answer carries no id.
        assert!(!owed(r#"{"jsonrpc":"2.0","id":8}"#));
        // Answers, even a `null` one.
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","id":1,"result":null}"#),
            Ok(Kind::Response(id)) if id == "1"
        ));
        // Ids no answer carries back, and JSON that is not an object.
        assert!(!owed(r#"{"id":7.5,"method":"x"}"#));
        assert!(!owed(r#"{"id":{"a":1},"method":"x"}"#));
        assert!(!owed(r#"{"id":null,"method":"x"}"#));
        assert!(matches!(classify("[1,2]"), Ok(Kind::Other)));
    }

    #[test]
    fn an_error_answer_keeps_the_id_exactly() {
        let answer: Value = serde_json::from_str(&error_response("\"abc\"", "gone")).unwrap();
        assert_eq!(answer["id"], "abc");
        assert_eq!(answer["error"]["message"], "gone");
        let answer: Value = serde_json::from_str(&error_response("7", "gone")).unwrap();
        assert_eq!(answer["id"], 7);
    }

    #[test]
    fn frames_become_single_lines() {
        assert_eq!(one_line("{\n \"a\": 1\n}"), r#"{"a":1}"#);
        assert_eq!(one_line("not\njson"), "not\\njson");
        assert_eq!(one_line(r#"{"a":"é"}"#), r#"{"a":"é"}"#);
    }

    #[test]
    fn excerpts_are_short() {
        let long = "x".repeat(500);
        assert!(excerpt(&long).chars().count() < 100);
    }
}
