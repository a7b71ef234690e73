//! From the text of one message to the SDK frame a connection takes, before
//! it means anything: the WebSocket loop's first step, kept here so that the
//! fuzz tests take the same one. (The SDK's HTTP transport parses its POSTs
//! itself, with its own bare parse errors.)
//!
//! Two things are added to the SDK's parsing. Text that is not JSON gets a
//! parse error saying where. And an object with a `method` that is not a
//! valid request but carries an id the client can match (`{"id": 5,
//! "method": "x"}`, missing its `jsonrpc`) is answered with that id, saying
//! what is wrong: the SDK
//! would answer it with a `null` id, and the client would wait for ever for
//! the answer to request 5. It becomes a request for
//! [`INVALID_REQUEST_METHOD`], which the connection answers `-32600`.

use agent_client_protocol::{ErrorCode, RawJsonRpcId, TransportFrame};
use serde_json::{Map, Value, json};

use super::errors::excerpt;

/// The method an invalid request with a readable id is turned into; its
/// `params.problem` says what was wrong.
pub const INVALID_REQUEST_METHOD: &str = "_punie/invalid_request";

/// Longest excerpt of a frame that is not JSON quoted back in the `-32700`
/// answer; a client sending megabytes of garbage gets a short answer.
const PARSE_ERROR_EXCERPT_BYTES: usize = 1024;

/// The SDK frame for a text frame. For text that is not JSON at all, the
/// SDK's bare "Parse error" gains what is wrong and where, and the text is
/// cut to an excerpt before the SDK quotes it back.
pub fn frame_from_text(text: &str) -> TransportFrame {
    match TransportFrame::parse_json(text) {
        TransportFrame::Malformed { raw, mut error } if error.code == ErrorCode::PARSE_ERROR => {
            if let Err(why) = serde_json::from_str::<serde::de::IgnoredAny>(&raw) {
                error.message = format!("Parse error: the message is not valid JSON ({why})");
            }
            let raw = excerpt(&raw, PARSE_ERROR_EXCERPT_BYTES).into_owned();
            error = error.data(serde_json::json!({ "line": raw }));
            TransportFrame::Malformed { raw, error }
        }
        TransportFrame::Malformed { raw, error } if error.code == ErrorCode::INVALID_REQUEST => {
            answerable(&raw).unwrap_or(TransportFrame::Malformed { raw, error })
        }
        frame => frame,
    }
}

/// The request that answers an invalid message with its own id, if it has
/// one a response can carry and is not itself a response.
fn answerable(raw: &str) -> Option<TransportFrame> {
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(raw) else {
        return None;
    };
    let id = message.get("id")?;
    if matches!(
        serde_json::from_value::<RawJsonRpcId>(id.clone()),
        Err(_) | Ok(RawJsonRpcId::Null)
    ) {
        return None;
    }
    // Without a method it may as well be a broken answer to one of the
    // server's requests: an error with its id would answer the client's own
    // request of that number instead.
    if !message.contains_key("method") {
        return None;
    }
    let request = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": INVALID_REQUEST_METHOD,
        "params": {"problem": what_is_wrong(&message)},
    });
    match TransportFrame::parse_json(&request.to_string()) {
        frame @ TransportFrame::Single(_) => Some(frame),
        _ => None,
    }
}

fn what_is_wrong(message: &Map<String, Value>) -> &'static str {
    if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return "`jsonrpc` must be \"2.0\"";
    }
    if !message.get("method").is_some_and(Value::is_string) {
        return "`method` must be a string";
    }
    match message.get("params") {
        None | Some(Value::Object(_) | Value::Array(_)) => "it is not a JSON-RPC 2.0 request",
        Some(_) => "`params` must be an object or an array",
    }
}
