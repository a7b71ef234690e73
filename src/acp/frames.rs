//! From the text of one message to the SDK frame a connection takes, before
//! it means anything: the WebSocket loop's first step, kept here so that the
//! fuzz tests take the same one. The SDK's HTTP transport parses its POSTs
//! itself; [`amend_post`] gives the HTTP profile's clients the same answers.
//!
//! Four things are added to the SDK's parsing. Text of more than
//! [`MAX_JSON_VALUES`] values is refused before any is built (parsed, a
//! value takes many times the bytes its text did). Text that is not JSON
//! gets a parse error saying what is wrong and where. An object with a
//! `method` that is not a valid request but carries an id the client can
//! match (`{"id": 5, "method": "x"}`, missing its `jsonrpc`) is answered
//! with that id, saying what is wrong: the SDK would answer it with a `null`
//! id, and the client would wait for ever for the answer to request 5. It
//! becomes a request for [`INVALID_REQUEST_METHOD`], which the connection
//! answers `-32600`. And an invalid message that must be answered with a
//! `null` id still says what is wrong with it.

use agent_client_protocol::{ErrorCode, RawJsonRpcId, RawJsonRpcMessage, TransportFrame};
use serde_json::{Map, Value, json};

use super::errors::excerpt;

/// The method an invalid request with a readable id is turned into; its
/// `params.problem` says what was wrong.
pub const INVALID_REQUEST_METHOD: &str = "_punie/invalid_request";

/// Longest excerpt of a frame that is not JSON quoted back in the `-32700`
/// answer; a client sending megabytes of garbage gets a short answer.
const PARSE_ERROR_EXCERPT_BYTES: usize = 1024;

/// Most JSON values (numbers, strings, arrays, objects…) one message may
/// hold. Parsed, each takes tens of bytes however few it took as text: a
/// message of 64 MiB of `0,` would take gigabytes. No ACP message needs
/// more; a long text is one value.
pub const MAX_JSON_VALUES: usize = 100_000;

/// The SDK frame for a text frame. For text that is not JSON at all, the
/// SDK's bare "Parse error" gains what is wrong and where, and the text is
/// cut to an excerpt before the SDK quotes it back. Text of more than
/// [`MAX_JSON_VALUES`] values is refused before it is parsed into them.
pub fn frame_from_text(text: &str) -> TransportFrame {
    match count_values(text, MAX_JSON_VALUES) {
        Err(Counted::NotJson(why)) => return not_json(text, &why),
        Err(Counted::TooMany) => return too_many_values(text),
        Ok(()) => {}
    }
    match TransportFrame::parse_json(text) {
        TransportFrame::Malformed { raw, error } if error.code == ErrorCode::PARSE_ERROR => {
            let why = serde_json::from_str::<serde::de::IgnoredAny>(&raw)
                .err()
                .map_or_else(|| "it is not valid JSON".to_owned(), |why| why.to_string());
            not_json(&raw, &why)
        }
        TransportFrame::Malformed { raw, error } if error.code == ErrorCode::INVALID_REQUEST => {
            invalid(raw, error)
        }
        frame => frame,
    }
}

/// What becomes of a message that a transport parsing it itself (the SDK's
/// HTTP transport) would answer with a bare error and a `null` id.
#[derive(Debug)]
pub enum Amended {
    /// The transport's own parsing finds nothing wrong, or says as much as
    /// [`frame_from_text`] would.
    AsIs,
    /// The message to hand the transport instead: the request that answers
    /// an invalid request with its own id, saying what is wrong.
    Replaced(String),
    /// The answer to give at once: the text is not one JSON-RPC message,
    /// and this says why.
    Refused(agent_client_protocol::Error),
}

/// What [`frame_from_text`] makes of `text`, for a transport that parses
/// messages itself.
pub fn amend_post(text: &str) -> Amended {
    match frame_from_text(text) {
        TransportFrame::Malformed { error, .. } => Amended::Refused(error),
        TransportFrame::Single(RawJsonRpcMessage::Request(request))
            if &*request.method == INVALID_REQUEST_METHOD =>
        {
            serde_json::to_string(&RawJsonRpcMessage::Request(request))
                .map_or(Amended::AsIs, Amended::Replaced)
        }
        _ => Amended::AsIs,
    }
}

/// The `-32700` answer to `text`, which is not JSON for the reason `why`.
fn not_json(text: &str, why: &str) -> TransportFrame {
    let raw = excerpt(text, PARSE_ERROR_EXCERPT_BYTES).into_owned();
    let error = agent_client_protocol::Error::new(
        ErrorCode::PARSE_ERROR,
        format!("Parse error: the message is not valid JSON ({why})"),
    )
    .data(json!({ "line": raw }));
    TransportFrame::Malformed { raw, error }
}

const TOO_MANY_VALUES: &str = "it holds more than 100000 JSON values (numbers, strings, arrays, \
     objects); no ACP message needs so many";

const _: () = assert!(
    MAX_JSON_VALUES == 100_000,
    "TOO_MANY_VALUES names the limit"
);

/// The `-32600` answer to `text`, which holds too many values: with its id
/// when it has one a response can carry.
fn too_many_values(text: &str) -> TransportFrame {
    /// The id and whether there is a method, read without building the rest.
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<RawJsonRpcId>,
        method: Option<serde::de::IgnoredAny>,
    }
    // Without a method it may be an answer to one of the server's requests:
    // an error with its id would answer the client's own request instead.
    let id = serde_json::from_str::<Id>(text)
        .ok()
        .filter(|message| message.method.is_some())
        .and_then(|message| message.id);
    id.and_then(|id| answer_with_id(&id, TOO_MANY_VALUES))
        .unwrap_or_else(|| {
            let raw = excerpt(text, PARSE_ERROR_EXCERPT_BYTES).into_owned();
            let error = agent_client_protocol::Error::new(
                ErrorCode::INVALID_REQUEST,
                format!("Invalid request: {TOO_MANY_VALUES}"),
            );
            TransportFrame::Malformed { raw, error }
        })
}

/// Why [`count_values`] stopped.
enum Counted {
    NotJson(String),
    TooMany,
}

/// Whether `text` is one JSON value holding at most `limit` values in all,
/// found without building any of them.
fn count_values(text: &str, limit: usize) -> Result<(), Counted> {
    let mut left = limit;
    let mut reader = serde_json::Deserializer::from_str(text);
    let counted = serde::de::DeserializeSeed::deserialize(CountValues(&mut left), &mut reader)
        .and_then(|()| reader.end());
    match counted {
        Ok(()) => Ok(()),
        // The only error of the data rather than the text is the count's.
        Err(error) if error.is_data() => Err(Counted::TooMany),
        Err(error) => Err(Counted::NotJson(error.to_string())),
    }
}

/// Counts the values it is shown down from its start, failing past zero.
struct CountValues<'a>(&'a mut usize);

impl CountValues<'_> {
    fn one<E: serde::de::Error>(&mut self) -> Result<(), E> {
        match self.0.checked_sub(1) {
            Some(left) => {
                *self.0 = left;
                Ok(())
            }
            None => Err(E::custom("too many values")),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for CountValues<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CountValues<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
        self.one()
    }

    fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
        self.one()
    }

    fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
        self.one()
    }

    fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
        self.one()
    }

    fn visit_str<E: serde::de::Error>(mut self, _: &str) -> Result<(), E> {
        self.one()
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.one()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
        self.one()?;
        while items
            .next_element_seed(CountValues(&mut *self.0))?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut entries: A) -> Result<(), A::Error> {
        self.one()?;
        while entries.next_key::<serde::de::IgnoredAny>()?.is_some() {
            entries.next_value_seed(CountValues(&mut *self.0))?;
        }
        Ok(())
    }
}

/// The request that answers the invalid message `raw` with its own id,
/// if it has one a response can carry and is not itself a response; else
/// the SDK's answer, saying what is wrong.
fn invalid(raw: String, mut error: agent_client_protocol::Error) -> TransportFrame {
    let message = serde_json::from_str::<Value>(&raw).ok();
    if let Some(Value::Object(message)) = &message
        // Without a method it may as well be a broken answer to one of the
        // server's requests: an error with its id would answer the client's
        // own request of that number instead.
        && message.contains_key("method")
        && let Some(id) = message
            .get("id")
            .and_then(|id| serde_json::from_value::<RawJsonRpcId>(id.clone()).ok())
        && let Some(frame) = answer_with_id(&id, what_is_wrong(message))
    {
        return frame;
    }
    error.message = format!("Invalid request: {}", problem_of(message.as_ref()));
    TransportFrame::Malformed { raw, error }
}

/// A request for [`INVALID_REQUEST_METHOD`] with `id`, which answers
/// `-32600` saying `problem`; `None` for an id no answer can carry.
fn answer_with_id(id: &RawJsonRpcId, problem: &str) -> Option<TransportFrame> {
    if matches!(id, RawJsonRpcId::Null) {
        return None;
    }
    let request = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": INVALID_REQUEST_METHOD,
        "params": {"problem": problem},
    });
    match TransportFrame::parse_json(&request.to_string()) {
        frame @ TransportFrame::Single(_) => Some(frame),
        _ => None,
    }
}

/// What is wrong with a message answered without its id.
fn problem_of(message: Option<&Value>) -> &'static str {
    match message {
        Some(Value::Array(_)) => {
            "batches (arrays of messages) are not supported: send one message per frame"
        }
        Some(Value::Object(message))
            if message
                .get("id")
                .is_some_and(|id| !(id.is_string() || id.is_i64() || id.is_null())) =>
        {
            // Larger integers are read as another kind of number.
            "the id must be a string, null or an integer from -2^63 to 2^63 - 1"
        }
        Some(Value::Object(message)) if !message.contains_key("method") => {
            "it has no `method` (a request's) nor `result` or `error` (an answer's)"
        }
        Some(Value::Object(message)) => what_is_wrong(message),
        _ => "it is not a JSON-RPC 2.0 message",
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
