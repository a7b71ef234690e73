//! Hostile input on the path from a frame to dispatch: whatever a client
//! sends — bytes that are not JSON, JSON that is not JSON-RPC, batches, huge
//! numbers, deep nesting, broken `\u` escapes, or well-formed requests with
//! params of any shape for every method Punie serves — the server answers with
//! well-formed JSON-RPC 2.0 or not at all, never panics, never hangs, and the
//! connection goes on serving.
//!
//! The generated frames run through the real `AcpConnection`, session
//! registry and SQLite store in this process, fed as the WebSocket loop feeds
//! them (`TransportFrame::parse_json` on a `Channel`): that is fast enough for
//! millions of inputs. A smaller run goes through the real binary over real
//! WebSockets. `PUNIE_FUZZ_CASES` sets how many connections the in-process
//! run opens (each carries 1–6 generated frames), `PUNIE_FUZZ_SOCKET_CASES`
//! the same for the WebSocket run, `PUNIE_FUZZ_WORKERS` how many connections
//! run at once; `PROPTEST_RNG_SEED` replays a run.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use agent_client_protocol::{Channel, ConnectTo as _, TransportFrame};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::{SinkExt as _, StreamExt as _};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use punie::acp::{AcpConnection, AgentHub};
use punie::config::{
    DEFAULT_CLIENT_REQUEST_TIMEOUT, DEFAULT_CONTEXT_WINDOW, DEFAULT_MAX_TOOL_ROUNDS,
    DEFAULT_MCP_CALL_TIMEOUT, DEFAULT_MCP_START_TIMEOUT, DEFAULT_REATTACH_TIMEOUT,
    DEFAULT_SESSION_IDLE_TIMEOUT,
};
use punie::model::{ModelCatalogue, ModelSettings};
use punie::session::{ModelChoice, SessionRegistry, TurnSettings};
use punie::store::Store;
use serde_json::{Map, Value, json};
use support::{RawClient, Server, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How long one frame may take to be answered (with the probe after it)
/// before the server counts as hung.
const FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// Connections the in-process run opens unless `PUNIE_FUZZ_CASES` says otherwise:
/// a few seconds of the ordinary `cargo test`.
const DEFAULT_CASES: u64 = 400;

/// How often the size of the store's write-ahead log is looked at while the
/// in-process run writes to it.
const LOG_WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Connections the WebSocket run opens unless `PUNIE_FUZZ_SOCKET_CASES` says otherwise.
const DEFAULT_SOCKET_CASES: u64 = 24;

/// Every method Punie answers, and the notification it acts on.
const SERVED: &[&str] = &[
    "initialize",
    "session/new",
    "session/load",
    "session/resume",
    "session/list",
    "session/prompt",
    "session/cancel",
    "session/close",
    "session/delete",
    "session/set_config_option",
    "session/set_mode",
    "_punie/connection",
];

/// Placeholders a generated frame may carry; each connection puts in real
/// values, so requests reach the paths behind a valid workspace or session.
const CWD: &str = "$CWD";
const FILE: &str = "$FILE";
const SESSION: &str = "$SESSION";
const STORED: &str = "$STORED";

/// Strings that commonly break path, id and text handling.
const TRICKY: &[&str] = &[
    "",
    " ",
    ".",
    "..",
    "../..",
    "/",
    "/etc/passwd",
    "/nonexistent/dir",
    "relative/dir",
    "$CWD",
    "$CWD/",
    "$CWD/..",
    "$CWD/./sub/../",
    "$CWD/\u{0}",
    "$FILE",
    "$SESSION",
    "$STORED",
    "$SESSION\u{0}",
    "null",
    "\u{0}",
    "\u{FEFF}",
    "\u{202E}gnp.exe",
    "\u{200B}",
    "\u{FF0E}\u{FF0E}/\u{FF0E}\u{FF0E}",
    "e\u{301}\u{301}\u{301}",
    "\u{1F600}",
    "\u{10FFFF}",
    "\r\n",
    "\\",
    "\"",
    "%2e%2e%2f",
    "file:///etc/passwd",
    "-1",
    "9223372036854775807",
];

// ---------------------------------------------------------------------------
// Generated frames

/// One text frame a client sends.
#[derive(Clone, Debug)]
struct Frame {
    text: String,
    /// For a well-formed request, the id its one answer must carry.
    answer: Option<Value>,
}

impl Frame {
    fn raw(text: String) -> Self {
        Self { text, answer: None }
    }
}

fn tricky() -> impl Strategy<Value = String> {
    prop::sample::select(TRICKY).prop_map(str::to_owned)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => tricky(),
        2 => "\\PC{0,16}",
        2 => any::<String>(),
        1 => (tricky(), any::<String>()).prop_map(|(a, b)| a + &b),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..70_000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ]
}

/// Keys the ACP schemas use, so random objects sometimes land on a real field.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&[
            "sessionId", "cwd", "mcpServers", "prompt", "type", "text", "uri", "name",
            "resource", "protocolVersion", "clientCapabilities", "clientInfo", "fs",
            "readTextFile", "writeTextFile", "terminal", "cursor", "_meta", "requestId",
            "mimeType", "data", "version", "command", "args", "env",
        ][..]).prop_map(str::to_owned),
        1 => text(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A field that is usually plausible, sometimes any value, sometimes missing.
fn field(
    name: &'static str,
    plausible: impl Strategy<Value = Value> + 'static,
) -> BoxedStrategy<Option<(String, Value)>> {
    prop_oneof![
        12 => plausible.prop_map(move |value| Some((name.to_owned(), value))),
        1 => json_value().prop_map(move |value| Some((name.to_owned(), value))),
        1 => Just(None),
    ]
    .boxed()
}

/// An object of the given fields, plus now and then an unknown key or `_meta`.
fn object(fields: Vec<BoxedStrategy<Option<(String, Value)>>>) -> BoxedStrategy<Value> {
    let extra = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec((key(), json_value()), 1..3),
    ];
    (fields, extra)
        .prop_map(|(fields, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            object.extend(fields.into_iter().flatten());
            Value::Object(object)
        })
        .boxed()
}

fn cwd() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!(CWD)),
        1 => Just(json!(FILE)),
        2 => text().prop_map(Value::from),
    ]
}

fn session_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => Just(json!(SESSION)),
        2 => Just(json!(STORED)),
        2 => text().prop_map(Value::from),
        1 => number(),
    ]
}

fn mcp_servers() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!([])),
        1 => Just(json!([{"name": "x", "command": "/bin/true", "args": [], "env": []}])),
        1 => prop::collection::vec(json_value(), 0..3).prop_map(Value::Array),
    ]
}

fn content_block() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => text().prop_map(|text| json!({"type": "text", "text": text})),
        1 => (text(), text()).prop_map(|(name, uri)| json!({"type": "resource_link", "name": name, "uri": uri})),
        1 => (text(), text()).prop_map(|(uri, text)| json!({"type": "resource", "resource": {"uri": uri, "text": text}})),
        1 => text().prop_map(|uri| json!({"type": "resource", "resource": {"uri": uri, "blob": "AAAA"}})),
        1 => Just(json!({"type": "image", "data": "AAAA", "mimeType": "image/png"})),
        1 => Just(json!({"type": "audio", "data": "AAAA", "mimeType": "audio/wav"})),
        1 => json_value(),
    ]
}

fn prompt() -> impl Strategy<Value = Value> {
    prop_oneof![
        9 => prop::collection::vec(content_block(), 1..4).prop_map(Value::Array),
        1 => Just(json!([])),
    ]
}

fn client_capabilities() -> impl Strategy<Value = Value> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(read, write, terminal)| {
        json!({"fs": {"readTextFile": read, "writeTextFile": write}, "terminal": terminal})
    })
}

/// A method Punie serves with params of its own shape (perturbed), or another method.
fn method_and_params() -> impl Strategy<Value = (String, Option<Value>)> {
    let with = |method: &'static str, params: BoxedStrategy<Value>| {
        params.prop_map(move |params| (method.to_owned(), Some(params)))
    };
    prop_oneof![
        4 => with("initialize", object(vec![
            field("protocolVersion", prop_oneof![Just(json!(1)), number()]),
            field("clientCapabilities", client_capabilities()),
            field("clientInfo", (text(), text()).prop_map(|(name, version)| json!({"name": name, "version": version}))),
        ])),
        5 => with("session/new", object(vec![field("cwd", cwd()), field("mcpServers", mcp_servers())])),
        2 => with("session/load", object(vec![
            field("sessionId", session_id()), field("cwd", cwd()), field("mcpServers", mcp_servers()),
        ])),
        2 => with("session/resume", object(vec![
            field("sessionId", session_id()), field("cwd", cwd()), field("mcpServers", mcp_servers()),
        ])),
        2 => with("session/list", object(vec![
            field("cwd", cwd()), field("cursor", text().prop_map(Value::from)),
        ])),
        8 => with("session/prompt", object(vec![field("sessionId", session_id()), field("prompt", prompt())])),
        2 => with("session/cancel", object(vec![field("sessionId", session_id())])),
        1 => with("session/close", object(vec![field("sessionId", session_id())])),
        1 => with("session/delete", object(vec![field("sessionId", session_id())])),
        2 => with("session/set_config_option", object(vec![
            field("sessionId", session_id()),
            field("configId", prop_oneof![
                prop::sample::select(&["model", "mode"][..]).prop_map(Value::from),
                text().prop_map(Value::from),
            ].boxed()),
            field("value", setting_value()),
        ])),
        1 => with("session/set_mode", object(vec![
            field("sessionId", session_id()), field("modeId", setting_value()),
        ])),
        1 => with("_punie/connection", object(vec![])),
        1 => with("$/cancel_request", object(vec![field("requestId", json_value())])),
        1 => (prop_oneof![
                prop::sample::select(&["authenticate", "session/set_model", "fs/read_text_file", "terminal/create", "session/update", "rpc.discover", ""][..]).prop_map(str::to_owned),
                text(),
             ], json_value())
            .prop_map(|(method, params)| (method, Some(params))),
        1 => prop::sample::select(SERVED).prop_map(|method| (method.to_owned(), None)),
    ]
}

/// A value for a session setting: one of the modes, a model that fails
/// fast, or anything.
fn setting_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::sample::select(&["ask", "edit", "read-only", "test", "bogus", "ollama:", "script:/nonexistent"][..])
            .prop_map(Value::from),
        1 => json_value(),
    ]
    .boxed()
}

/// An id as JSON-RPC allows it; never one a probe uses.
fn request_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0i64..8).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        2 => text()
            // Probe ids are the test's own; placeholders are filled in, and
            // the answer could no longer be matched to the id.
            .prop_filter("an id of its own", |id| !id.starts_with("probe-") && !id.contains('$'))
            .prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn envelope(id: Option<Value>, method: String, params: Option<Value>) -> Value {
    let mut message = json!({"jsonrpc": "2.0", "method": method});
    if let Some(id) = id {
        message["id"] = id;
    }
    if let Some(params) = params {
        message["params"] = params;
    }
    message
}

/// A well-formed request: it must be answered exactly once, with its id,
/// unless its params are neither an object nor an array.
fn request() -> impl Strategy<Value = Frame> {
    (request_id(), method_and_params()).prop_map(|(id, (method, params))| {
        let well_formed = params
            .as_ref()
            .is_none_or(|params| params.is_object() || params.is_array());
        Frame {
            text: envelope(Some(id.clone()), method, params).to_string(),
            answer: well_formed.then_some(id),
        }
    })
}

fn notification() -> impl Strategy<Value = Frame> {
    method_and_params()
        .prop_map(|(method, params)| Frame::raw(envelope(None, method, params).to_string()))
}

/// The byte index of the `index`-th place in `text`, on a character boundary.
fn boundary(text: &str, index: Index) -> usize {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(at, _)| at)
        .chain([text.len()])
        .collect();
    boundaries[index.index(boundaries.len())]
}

/// A request with one small slip: cut short, a character added or lost, a
/// quote swapped, a piece repeated.
fn near_valid() -> impl Strategy<Value = Frame> {
    let damage = prop_oneof![
        Just('"'),
        Just('\\'),
        Just('{'),
        Just('}'),
        Just(','),
        Just(':'),
        Just('\u{0}'),
        any::<char>()
    ];
    (request(), 0u8..6, any::<Index>(), any::<Index>(), damage).prop_map(
        |(frame, how, first, second, character)| {
            let mut text = frame.text;
            let at = boundary(&text, first);
            match how {
                0 => text.truncate(at),
                1 => text.insert(at, character),
                2 => {
                    if let Some(removed) = text[at..].chars().next() {
                        text.replace_range(at..at + removed.len_utf8(), "");
                    }
                }
                3 => text = text.replacen('"', "'", 1 + first.index(4)),
                4 => {
                    let end = boundary(&text, second).max(at);
                    let piece = text[at..end].to_owned();
                    text.insert_str(end, &piece);
                }
                _ => text = text.replace("\"2.0\"", "\"2.1\""),
            }
            Frame::raw(text)
        },
    )
}

/// Envelopes that break a JSON-RPC rule: wrong version, no version, a
/// method that is not a string, an id that is not an id, params that are
/// not structured, both result and error, and the like.
fn odd_envelope() -> impl Strategy<Value = Frame> {
    (method_and_params(), json_value(), 0u8..9).prop_map(|((method, params), odd, how)| {
        let mut message = envelope(Some(json!(1)), method, params);
        match how {
            0 => message["jsonrpc"] = odd,
            1 => {
                message.as_object_mut().map(|m| m.remove("jsonrpc"));
            }
            2 => message["method"] = odd,
            3 => message["id"] = odd,
            4 => message["params"] = odd,
            5 => message["result"] = odd,
            6 => message["error"] = odd,
            7 => {
                message.as_object_mut().map(|m| m.remove("method"));
            }
            _ => message = odd,
        }
        Frame::raw(message.to_string())
    })
}

/// What a client sends when it answers a request nobody made.
fn stray_response() -> impl Strategy<Value = Frame> {
    (request_id(), json_value(), any::<bool>()).prop_map(|(id, value, ok)| {
        let message = if ok {
            json!({"jsonrpc": "2.0", "id": id, "result": value})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": value}})
        };
        Frame::raw(message.to_string())
    })
}

fn batch() -> impl Strategy<Value = Frame> {
    prop::collection::vec(prop_oneof![request(), notification()], 0..4).prop_map(|frames| {
        let texts: Vec<String> = frames.into_iter().map(|frame| frame.text).collect();
        Frame::raw(format!("[{}]", texts.join(",")))
    })
}

/// Number literals JSON allows but no Rust integer holds, and some it forbids.
fn huge_number() -> impl Strategy<Value = Frame> {
    let literal = prop::sample::select(
        &[
            "1e400",
            "-1e400",
            "1e-400",
            "123456789012345678901234567890",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "1.0",
            "-0",
            "0e0",
            "1E+2",
            "00",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "Infinity",
            "-Infinity",
            "0x10",
        ][..],
    );
    (literal, prop::sample::select(SERVED), 0u8..4).prop_map(|(n, method, place)| {
        let text = match place {
            0 => format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"{method}","params":{{}}}}"#),
            1 => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"protocolVersion":{n},"sessionId":{n},"cwd":{n}}}}}"#
            ),
            2 => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"session/prompt","params":{{"sessionId":"$SESSION","prompt":[{{"type":"text","text":"x","_meta":{{"n":{n}}}}}]}}}}"#
            ),
            _ => n.to_owned(),
        };
        Frame::raw(text)
    })
}

/// Nesting from shallow to far past serde_json's limit of 128 levels.
fn deep_nesting() -> impl Strategy<Value = Frame> {
    let depth = prop_oneof![
        1usize..140,
        Just(127),
        Just(128),
        Just(129),
        Just(1_000),
        Just(100_000)
    ];
    (depth, 0u8..4, any::<bool>()).prop_map(|(depth, place, closed)| {
        let (open, close) = if place % 2 == 0 {
            ("[", "]")
        } else {
            ("{\"a\":", "}")
        };
        let nested = format!(
            "{}0{}",
            open.repeat(depth),
            if closed { close.repeat(depth) } else { String::new() }
        );
        let text = if place < 2 {
            nested
        } else {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"session/new","params":{{"cwd":"$CWD","mcpServers":[],"_meta":{{"x":{nested}}}}}}}"#
            )
        };
        Frame::raw(text)
    })
}

/// `\u` escapes that are not UTF-16 (lone or reversed surrogates) or not
/// escapes at all, where a string is expected.
fn bad_escape() -> impl Strategy<Value = Frame> {
    let escape = prop::sample::select(
        &[
            r"\ud800",
            r"\udfff",
            r"\udc00\ud800",
            r"\ud800\u0041",
            r"\ud800\ud800",
            r"\uD83D",
            r"\ud83d\ude00",
            r"\u0000",
            r"\u",
            r"\u12",
            r"\uZZZZ",
            r"\x41",
            r"\'",
            r"\0",
            r"\U0001F600",
        ][..],
    );
    (escape, 0u8..6).prop_map(|(e, place)| {
        let text = match place {
            0 => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{e}","params":{{}}}}"#),
            1 => format!(r#"{{"jsonrpc":"2.0","id":"{e}","method":"initialize","params":{{}}}}"#),
            2 => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"session/new","params":{{"cwd":"$CWD/{e}","mcpServers":[]}}}}"#
            ),
            3 => format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"session/prompt","params":{{"sessionId":"$SESSION","prompt":[{{"type":"text","text":"{e}"}}]}}}}"#
            ),
            4 => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"session/load","params":{{"sessionId":"{e}","cwd":"$CWD","mcpServers":[]}}}}"#),
            _ => format!(r#"{{"{e}":"2.0","id":1,"method":"initialize"}}"#),
        };
        Frame::raw(text)
    })
}

/// Text that is nothing like JSON-RPC.
fn junk() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        prop::sample::select(
            &[
                "", " ", "\n", "null", "true", "17", "\"text\"", "[]", "{}", "[[]]", "\u{FEFF}{}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"} trailing",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\"}{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\"}",
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"_punie/connection\"}",
            ][..]
        )
        .prop_map(str::to_owned),
        (json_value(), prop::collection::vec(any::<char>(), 0..3)).prop_map(|(value, tail)| {
            value.to_string() + &tail.into_iter().collect::<String>()
        }),
        (1usize..200_000).prop_map(|length| "x".repeat(length)),
    ]
    .prop_map(Frame::raw)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        30 => request(),
        6 => notification(),
        8 => near_valid(),
        5 => odd_envelope(),
        2 => stray_response(),
        3 => batch(),
        3 => huge_number(),
        3 => deep_nesting(),
        3 => bad_escape(),
        6 => junk(),
    ]
}

/// One connection's frames: usually starting with `initialize`, often with a
/// session of its own, so that the rest reach the methods behind them.
fn script() -> impl Strategy<Value = Vec<Frame>> {
    let opening = [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": 1, "clientCapabilities": {}}}),
        json!({"jsonrpc": "2.0", "id": "new", "method": "session/new",
            "params": {"cwd": CWD, "mcpServers": []}}),
    ]
    .map(|message| Frame {
        answer: Some(message["id"].clone()),
        text: message.to_string(),
    });
    (0..10usize, prop::collection::vec(frame(), 1..6)).prop_map(move |(opened, frames)| {
        // None, initialize alone, or initialize and session/new.
        let opened = match opened {
            0..2 => 0,
            2..6 => 1,
            _ => 2,
        };
        opening[..opened].iter().cloned().chain(frames).collect()
    })
}

// ---------------------------------------------------------------------------
// What a client receives

/// Replies and notifications received, by kind: evidence that the frames
/// reached real dispatch, not just the parser.
#[derive(Debug, Default)]
struct Tally {
    frames: u64,
    /// Answers to the generated frames, not to the probes.
    results: u64,
    /// Prompts answered with a stop reason: turns that ran.
    turns: u64,
    errors: BTreeMap<i64, u64>,
    from_agent: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.frames += other.frames;
        self.results += other.results;
        self.turns += other.turns;
        self.from_agent += other.from_agent;
        for (code, count) in &other.errors {
            *self.errors.entry(*code).or_default() += count;
        }
    }
}

/// What a connection may still be answered, and the checks on everything it
/// receives.
#[derive(Default)]
struct Ledger {
    /// Replies each id may still get (keyed by the id's JSON): one per frame
    /// that carried that id, and one `null` per frame, for frames the server
    /// cannot read an id from.
    owed: HashMap<String, u64>,
    /// The session the last successful `session/new` created.
    session: Option<String>,
    tally: Tally,
}

impl Ledger {
    fn sent(&mut self, text: &str) {
        *self.owed.entry("null".to_owned()).or_default() += 1;
        if let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text)
            && let Some(id) = message.get("id")
            && !id.is_null()
        {
            *self.owed.entry(id.to_string()).or_default() += 1;
        }
    }

    /// Check one message from the server; a reply's id is returned.
    fn received(&mut self, text: &str) -> Result<Option<Value>, String> {
        let message: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON ({error}): {text}"))?;
        well_formed(&message).map_err(|problem| format!("{problem}: {text}"))?;
        if message.get("method").is_some() {
            self.tally.from_agent += 1;
            return Ok(None);
        }
        let id = message["id"].clone();
        let owed = self.owed.entry(id.to_string()).or_default();
        if *owed == 0 {
            return Err(format!(
                "a reply with id {id} that no frame asked for, or a second one: {text}"
            ));
        }
        *owed -= 1;
        if let Some(session) = message["result"]["sessionId"].as_str() {
            self.session = Some(session.to_owned());
        }
        if id.as_str().is_some_and(|id| id.starts_with("probe-")) {
            return Ok(Some(id));
        }
        match message.get("error") {
            Some(error) => {
                let code = error["code"].as_i64().unwrap_or_default();
                *self.tally.errors.entry(code).or_default() += 1;
            }
            None if message["result"]["stopReason"].is_string() => self.tally.turns += 1,
            None => self.tally.results += 1,
        }
        Ok(Some(id))
    }
}

/// Whether `message` is well-formed JSON-RPC 2.0 as an agent may send it: a
/// response (id, exactly one of result and error, an error with an integer
/// code in the range JSON-RPC reserves and a message), or a request or
/// notification of its own.
fn well_formed(message: &Value) -> Result<(), String> {
    let object = message.as_object().ok_or("not a JSON object")?;
    if object.get("jsonrpc") != Some(&json!("2.0")) {
        return Err("no \"jsonrpc\": \"2.0\"".into());
    }
    let id_ok = |id: &Value| id.is_null() || id.is_i64() || id.is_string();
    if let Some(method) = object.get("method") {
        if method.as_str().is_none_or(str::is_empty) {
            return Err("a method that is not a non-empty string".into());
        }
        if let Some(params) = object.get("params")
            && !(params.is_object() || params.is_array())
        {
            return Err("params that are neither an object nor an array".into());
        }
        if object.get("id").is_some_and(|id| !id_ok(id)) {
            return Err("an id that is not an integer, a string or null".into());
        }
        return only_keys(object, &["jsonrpc", "method", "params", "id"]);
    }
    let id = object.get("id").ok_or("a response without an id")?;
    if !id_ok(id) {
        return Err("an id that is not an integer, a string or null".into());
    }
    only_keys(object, &["jsonrpc", "id", "result", "error"])?;
    match (object.get("result"), object.get("error")) {
        (Some(_), None) => Ok(()),
        (None, Some(error)) => {
            let error = error.as_object().ok_or("an error that is not an object")?;
            let code = error
                .get("code")
                .and_then(Value::as_i64)
                .ok_or("an error code that is not an integer")?;
            if !(-32768..=-32000).contains(&code) {
                return Err(format!("error code {code} outside -32768..=-32000"));
            }
            if error
                .get("message")
                .and_then(Value::as_str)
                .is_none_or(|message| message.trim().is_empty())
            {
                return Err("an error without a message".into());
            }
            only_keys(error, &["code", "message", "data"])
        }
        _ => Err("not exactly one of result and error".into()),
    }
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(format!("an unexpected member `{key}`")),
        None => Ok(()),
    }
}

/// The real values behind the placeholders, for one connection.
struct Places {
    cwd: String,
    file: String,
    stored: String,
}

impl Places {
    fn render(&self, text: &str, session: Option<&str>) -> String {
        text.replace(CWD, &self.cwd)
            .replace(FILE, &self.file)
            .replace(SESSION, session.unwrap_or(&self.stored))
            .replace(STORED, &self.stored)
    }
}

/// A client's end of one connection, whatever carries it.
trait Wire {
    async fn send(&mut self, text: String) -> Result<(), String>;
    /// The next text the server sent; `None` once the connection is over.
    async fn recv(&mut self) -> Option<String>;
}

/// Send each frame of `script`, each followed by a probe request, and check
/// that the probe is answered — and a well-formed request too — within
/// [`FRAME_DEADLINE`], and that everything received is well-formed.
async fn play(
    wire: &mut impl Wire,
    script: &[Frame],
    places: &Places,
    ledger: &mut Ledger,
) -> Result<(), String> {
    for (n, frame) in script.iter().enumerate() {
        let text = places.render(&frame.text, ledger.session.as_deref());
        let probe = format!("probe-{n}");
        let probe_text =
            json!({"jsonrpc": "2.0", "id": probe, "method": "_punie/connection"}).to_string();
        let mut waiting = vec![json!(probe)];
        waiting.extend(frame.answer.clone());
        ledger.sent(&text);
        ledger.sent(&probe_text);
        ledger.tally.frames += 1;
        let excerpt = excerpt(&text);
        wire.send(text).await?;
        wire.send(probe_text).await?;
        let answered = async {
            while !waiting.is_empty() {
                let Some(message) = wire.recv().await else {
                    return Err(format!("the connection ended after {excerpt}"));
                };
                if let Some(id) = ledger.received(&message)?
                    && let Some(at) = waiting.iter().position(|waited| *waited == id)
                {
                    waiting.remove(at);
                }
            }
            Ok(())
        };
        tokio::time::timeout(FRAME_DEADLINE, answered)
            .await
            .map_err(|_| format!("no answer within {FRAME_DEADLINE:?} after {excerpt}"))??;
    }
    Ok(())
}

/// The start of a frame, for a failure message.
fn excerpt(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!("{:?}{more}", &text[..end])
}

// ---------------------------------------------------------------------------
// In process: the real connection, registry and store, without sockets

/// Panics anywhere in this process, in server tasks too.
static PANICS: AtomicU64 = AtomicU64::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// The ACP side of a server in this process.
struct Agent {
    hub: Arc<AgentHub>,
    home: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        let home = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(home.path().join("workspace")).expect("a workspace");
        std::fs::write(home.path().join("a-file"), "not a directory\n").expect("a file");
        let store = Store::open(&home.path().join("punie.db")).expect("the store opens");
        let settings = TurnSettings {
            max_rounds: DEFAULT_MAX_TOOL_ROUNDS,
            context_window: DEFAULT_CONTEXT_WINDOW,
            reply_tokens: 0,
            tools: Arc::new(punie::tools::specs()),
            reattach_timeout: DEFAULT_REATTACH_TIMEOUT,
            idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            client_request_timeout: DEFAULT_CLIENT_REQUEST_TIMEOUT,
            mcp_call_timeout: DEFAULT_MCP_CALL_TIMEOUT,
            mcp_start_timeout: DEFAULT_MCP_START_TIMEOUT,
            user_instructions: None,
            server_stopping: CancellationToken::new(),
        };
        let model =
            punie::model::from_spec("test", &ModelSettings::default()).expect("the test model");
        let sessions = SessionRegistry::new(
            store,
            Arc::new(settings),
            ModelChoice {
                spec: "test".to_owned(),
                model,
            },
            Box::new(|_: &str| Err("only the default model here".to_owned())),
        );
        Self {
            hub: AgentHub::new(
                sessions,
                ModelCatalogue::new("test", &[], None),
                CancellationToken::new(),
                punie::config::MAX_MESSAGE_BYTES,
            ),
            home,
        }
    }

    fn places(&self, stored: String) -> Places {
        Places {
            cwd: path_text(&self.home.path().join("workspace")),
            file: path_text(&self.home.path().join("a-file")),
            stored,
        }
    }

    fn connect(&self) -> InProcess {
        let (ours, theirs) = Channel::duplex();
        let task = tokio::spawn(AcpConnection::new(self.hub.clone()).connect_to(theirs));
        let (from_agent, to_agent) = ours.into_parts();
        InProcess {
            to_agent: Some(to_agent),
            from_agent,
            task,
        }
    }

    /// A stored session no connection is attached to, for `session/load`
    /// and `session/resume` to find.
    async fn stored_session(&self) -> String {
        let mut wire = self.connect();
        let mut ledger = Ledger::default();
        let places = self.places(String::new());
        let script = [
            Frame {
                text: json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}}).to_string(),
                answer: Some(json!(1)),
            },
            Frame {
                text: json!({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": CWD, "mcpServers": []}}).to_string(),
                answer: Some(json!(2)),
            },
        ];
        play(&mut wire, &script, &places, &mut ledger)
            .await
            .expect("a session is created");
        wire.leave(&mut ledger).await.expect("the connection ends");
        ledger.session.expect("session/new answered with a session")
    }

    async fn is_stored(&self, session: &str) -> bool {
        matches!(
            self.hub.sessions.store().session(session).await,
            Ok(Some(_))
        )
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("temporary paths are UTF-8").to_owned()
}

/// A client's end of an in-process connection.
struct InProcess {
    to_agent: Option<UnboundedSender<TransportFrame>>,
    from_agent: UnboundedReceiver<TransportFrame>,
    task: tokio::task::JoinHandle<Result<(), agent_client_protocol::Error>>,
}

impl Wire for InProcess {
    async fn send(&mut self, text: String) -> Result<(), String> {
        let to_agent = self.to_agent.as_ref().ok_or("the client already left")?;
        // Exactly what the WebSocket loop does with a text frame.
        to_agent
            .unbounded_send(punie::acp::frame_from_text(&text))
            .map_err(|_| "the connection stopped taking frames".to_owned())
    }

    async fn recv(&mut self) -> Option<String> {
        let frame = self.from_agent.next().await?;
        Some(match frame.to_json() {
            Ok(text) => text,
            Err(error) => format!("<a frame that does not serialize: {error}>"),
        })
    }
}

impl InProcess {
    /// Leave as a client does, then check what still arrives and that the
    /// connection ends cleanly.
    async fn leave(mut self, ledger: &mut Ledger) -> Result<(), String> {
        self.to_agent = None;
        let drained = async {
            while let Some(text) = self.recv().await {
                ledger.received(&text)?;
            }
            Ok::<_, String>(())
        };
        tokio::time::timeout(FRAME_DEADLINE, drained)
            .await
            .map_err(|_| "the connection went on sending after the client left".to_owned())??;
        match tokio::time::timeout(FRAME_DEADLINE, self.task).await {
            Err(_) => Err("the connection did not end after the client left".into()),
            Ok(Err(error)) => Err(format!("the connection's task failed: {error}")),
            Ok(Ok(Err(error))) => Err(format!("the connection ended with an error: {error}")),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
        Err(_) => default,
    }
}

fn workers() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get() as u64);
    env_number("PUNIE_FUZZ_WORKERS", cores).max(1)
}

/// The config of one worker's share of the cases.
fn runner_config(cases: u64) -> Config {
    Config {
        cases: u32::try_from(cases).expect("fewer than 2^32 cases per worker"),
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    }
}

/// Run `cases` generated scripts, each on a fresh connection to `agent`;
/// the first failure, shrunk to a minimal script.
fn fuzz(
    agent: &Agent,
    handle: &tokio::runtime::Handle,
    cases: u64,
    tally: &Mutex<Tally>,
) -> Option<String> {
    let stored = Mutex::new(handle.block_on(agent.stored_session()));
    let played = AtomicU64::new(0);
    let mut runner = TestRunner::new(runner_config(cases));
    let result = runner.run(&script(), |script| {
        handle.block_on(async {
            // A session's history grows with every prompt it gets; a fresh one
            // now and then keeps replays short.
            if (played.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(1_000) {
                let fresh = agent.stored_session().await;
                *stored.lock().unwrap() = fresh;
            }
            let session = stored.lock().unwrap().clone();
            let places = agent.places(session.clone());
            let panics = PANICS.load(Ordering::SeqCst);
            let mut ledger = Ledger::default();
            let mut wire = agent.connect();
            let outcome = match play(&mut wire, &script, &places, &mut ledger).await {
                Ok(()) => wire.leave(&mut ledger).await,
                Err(error) => Err(error),
            };
            tally.lock().unwrap().add(&ledger.tally);
            let deleting = script
                .iter()
                .any(|frame| frame.text.contains("session/delete"));
            if deleting && !agent.is_stored(&session).await {
                let fresh = agent.stored_session().await;
                *stored.lock().unwrap() = fresh;
            }
            if PANICS.load(Ordering::SeqCst) != panics {
                return Err(TestCaseError::fail(
                    "something in the process panicked while this connection ran",
                ));
            }
            outcome.map_err(TestCaseError::fail)
        })
    });
    match result {
        Ok(()) => None,
        Err(TestError::Fail(why, script)) => Some(format!("{why}\nminimal input:\n{script:#?}")),
        Err(error) => Some(error.to_string()),
    }
}

#[test]
fn every_frame_is_answered_well_or_not_at_all_and_the_connection_goes_on() {
    count_panics();
    let cases = env_number("PUNIE_FUZZ_CASES", DEFAULT_CASES);
    let workers = workers().min(cases.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let handle = runtime.handle();
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    let panics_before = PANICS.load(Ordering::SeqCst);
    // One server and one store for the whole run, however long: the store's
    // log must stay bounded under it.
    let agent = {
        let _entered = runtime.enter();
        Agent::start()
    };
    let log = agent.home.path().join("punie.db-wal");
    let fuzzing = AtomicBool::new(true);
    let (failures, largest_log): (Vec<String>, u64) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut largest = 0;
            while fuzzing.load(Ordering::SeqCst) {
                largest = largest.max(std::fs::metadata(&log).map_or(0, |file| file.len()));
                std::thread::sleep(LOG_WATCH_INTERVAL);
            }
            largest
        });
        let running: Vec<_> = (0..workers)
            .map(|worker| {
                let share = cases / workers + u64::from(worker < cases % workers);
                let (agent, tally) = (&agent, &tally);
                scope.spawn(move || {
                    fuzz(agent, handle, share, tally)
                        .map(|failure| format!("worker {worker}: {failure}"))
                })
            })
            .collect();
        let failures = running
            .into_iter()
            .filter_map(|worker| worker.join().expect("the worker does not panic"))
            .collect();
        fuzzing.store(false, Ordering::SeqCst);
        (
            failures,
            watcher.join().expect("the watcher does not panic"),
        )
    });
    let shutdown = handle.block_on(async {
        agent.hub.shutdown.cancel();
        tokio::time::timeout(FRAME_DEADLINE, agent.hub.connections_ended()).await
    });
    agent.hub.sessions.store().close();
    let elapsed = started.elapsed();
    let tally = tally.into_inner().unwrap();
    let database =
        std::fs::metadata(agent.home.path().join("punie.db")).map_or(0, |file| file.len());
    eprintln!(
        "hostile input: {cases} connections, {} frames, {workers} at a time, in {:.1} s ({:.0} frames/s); \
         answers: {} results, {} turns, errors by code {:?}; {} messages from the agent; \
         one store: database {:.1} MiB, its log at most {:.1} MiB",
        tally.frames,
        elapsed.as_secs_f64(),
        tally.frames as f64 / elapsed.as_secs_f64(),
        tally.results,
        tally.turns,
        tally.errors,
        tally.from_agent,
        database as f64 / 1048576.0,
        largest_log as f64 / 1048576.0,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics_before,
        "nothing in the process panicked"
    );
    assert!(
        shutdown.is_ok(),
        "every connection and turn ended at shutdown"
    );
    assert!(
        !tally.errors.contains_key(&-32603),
        "a client's bad input is never an internal error: {:?}",
        tally.errors
    );
    if cases >= DEFAULT_CASES {
        // The frames reached real dispatch, not just the parser.
        for code in [-32700, -32600, -32601, -32602, -32002] {
            assert!(
                tally.errors.contains_key(&code),
                "no {code} among the answers: {:?}",
                tally.errors
            );
        }
        assert!(tally.results > 0, "no request succeeded");
        assert!(tally.turns > 0, "no turn ran");
    }
}

// ---------------------------------------------------------------------------
// Over real WebSockets to the real binary

impl Wire for RawClient {
    async fn send(&mut self, text: String) -> Result<(), String> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|error| format!("the frame could not be sent: {error}"))
    }

    async fn recv(&mut self) -> Option<String> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(frame)) => {
                    return Some(format!("<closed: {frame:?}>"));
                }
                Ok(other) => return Some(format!("<not a text frame: {other:?}>")),
                Err(_) => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_over_a_real_websocket_leave_the_server_serving() {
    let server = Server::start().await;
    let stored = {
        let mut client = server.initialized().await;
        let session = client.new_session(&server.home.workspace()).await;
        client
            .ws
            .close(None)
            .await
            .expect("the close frame is sent");
        session
    };
    let file = server.home.dir.path().join("a-file");
    std::fs::write(&file, "not a directory\n").expect("a file");
    let places = Places {
        cwd: path_text(&server.home.workspace()),
        file: path_text(&file),
        stored,
    };
    let cases = env_number("PUNIE_FUZZ_SOCKET_CASES", DEFAULT_SOCKET_CASES);
    let scripts = {
        let mut runner = TestRunner::new(runner_config(cases));
        (0..cases)
            .map(|_| script().new_tree(&mut runner).expect("a script").current())
            .collect::<Vec<_>>()
    };
    for script in scripts {
        let mut client = server.raw().await;
        let mut ledger = Ledger::default();
        if let Err(error) = play(&mut client, &script, &places, &mut ledger).await {
            panic!("{error}\nthe frames:\n{script:#?}");
        }
        client
            .ws
            .close(None)
            .await
            .expect("the close frame is sent");
        while let Some(text) = within("the end of the connection", Wire::recv(&mut client)).await {
            if text.starts_with("<closed") {
                break;
            }
            ledger
                .received(&text)
                .unwrap_or_else(|error| panic!("{error}"));
        }
    }
    // Another client sees nothing of all that.
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let answer = client.prompt(&session, "still there?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(
        !server.log().contains("panicked"),
        "the server panicked:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn binary_frames_are_ignored_and_the_connection_goes_on() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    for bytes in [
        Vec::new(),
        b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"initialize\"}".to_vec(),
        vec![0xff; 70_000],
    ] {
        client
            .ws
            .send(Message::binary(bytes))
            .await
            .expect("the frame is sent");
    }
    let answer = client.request("_punie/connection", json!({})).await;
    assert!(answer["result"]["connectionId"].is_number(), "{answer}");
    assert!(
        client.notifications.is_empty(),
        "a binary frame got an answer: {:?}",
        client.notifications
    );
}

/// One WebSocket frame from a client, masked as RFC 6455 requires.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(at, byte)| byte ^ mask[at % 4]),
    );
    frame
}

/// The (opcode, payload) of each frame in `bytes` from the server (unmasked).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let [first, second, rest @ ..] = bytes {
        let (length, rest) = match second & 0x7f {
            126 => {
                let (length, rest) = rest.split_at(2);
                (u16::from_be_bytes([length[0], length[1]]) as usize, rest)
            }
            127 => {
                let (length, rest) = rest.split_at(8);
                (
                    u64::from_be_bytes(length.try_into().unwrap()) as usize,
                    rest,
                )
            }
            length => (length as usize, rest),
        };
        let (payload, rest) = rest.split_at(length.min(rest.len()));
        frames.push((first & 0x0f, payload.to_vec()));
        bytes = rest;
    }
    frames
}

/// A WebSocket to `server` opened by hand, for frames no library would send.
async fn raw_websocket(server: &Server) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("the server accepts TCP");
    let handshake = format!(
        "GET /acp HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        server.address, server.token
    );
    stream
        .write_all(handshake.as_bytes())
        .await
        .expect("the handshake is sent");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        within("the handshake's answer", stream.read_exact(&mut byte))
            .await
            .expect("the server answers the handshake");
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    stream
}

/// Send `bytes` on `stream` and read until the server ends the connection:
/// the close code of its one frame, a close frame.
async fn close_code_after(mut stream: tokio::net::TcpStream, bytes: &[u8]) -> u16 {
    stream.write_all(bytes).await.expect("the frame is sent");
    let mut rest = Vec::new();
    within(
        "the server to end the connection",
        stream.read_to_end(&mut rest),
    )
    .await
    .expect("the connection ends cleanly");
    match server_frames(&rest).as_slice() {
        [(0x8, payload)] if payload.len() >= 2 => u16::from_be_bytes([payload[0], payload[1]]),
        frames => panic!("one close frame and no answer: {frames:?}"),
    }
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_ends_only_its_own_connection() {
    let server = Server::start().await;
    let mut bystander = server.initialized().await;

    // A lone continuation byte and an overlong encoding of '/'.
    let not_utf8 = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\x80\xc0\xaf\"}";
    let code = close_code_after(raw_websocket(&server).await, &client_frame(0x1, not_utf8)).await;
    assert_eq!(code, 1007, "invalid payload");

    let answer = bystander.request("_punie/connection", json!({})).await;
    assert!(answer["result"]["connectionId"].is_number(), "{answer}");
}

/// Frames RFC 6455 forbids end the connection that sent them with 1002
/// (protocol error), which says what went wrong, not 1000 (all is well).
#[tokio::test]
async fn a_frame_breaking_the_websocket_protocol_is_closed_as_a_protocol_error() {
    let server = Server::start().await;
    let mut bystander = server.initialized().await;
    let mut unmasked = client_frame(0x1, b"{}");
    unmasked[1] &= 0x7f;
    unmasked.drain(2..6);
    let mut reserved_bit = client_frame(0x1, b"{}");
    reserved_bit[0] |= 0x40;
    let mut unfinished_ping = client_frame(0x9, b"");
    unfinished_ping[0] &= 0x7f;
    let cases = [
        ("an unmasked frame", unmasked),
        ("a reserved bit set", reserved_bit),
        ("a reserved opcode", client_frame(0x3, b"{}")),
        ("a continuation of nothing", client_frame(0x0, b"{}")),
        ("a ping of 200 bytes", client_frame(0x9, &[0; 200])),
        ("a fragmented ping", unfinished_ping),
    ];
    for (what, frame) in cases {
        let code = close_code_after(raw_websocket(&server).await, &frame).await;
        assert_eq!(code, 1002, "{what}");
    }
    let answer = bystander.request("_punie/connection", json!({})).await;
    assert!(answer["result"]["connectionId"].is_number(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_on_the_http_profile_get_client_errors_and_the_server_goes_on() {
    let server = Server::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |body: String, connection: Option<String>| {
        let mut request = http
            .post(server.http_url("/acp"))
            .header("Authorization", format!("Bearer {}", server.token))
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(connection) = connection {
            request = request.header("Acp-Connection-Id", connection);
        }
        request.send()
    };
    let initialize =
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}})
            .to_string();
    let opened = within("initialize", post(initialize.clone(), None))
        .await
        .expect("the server answers");
    assert_eq!(opened.status(), 200);
    let connection = opened.headers()["acp-connection-id"]
        .to_str()
        .expect("a connection id")
        .to_owned();

    let places = Places {
        cwd: path_text(&server.home.workspace()),
        file: path_text(&server.home.dir.path().join("no-file")),
        stored: "no-such-session".to_owned(),
    };
    let cases = env_number("PUNIE_FUZZ_SOCKET_CASES", DEFAULT_SOCKET_CASES) * 4;
    let mut runner = TestRunner::new(runner_config(cases));
    for case in 0..cases {
        let frame = frame().new_tree(&mut runner).expect("a frame").current();
        let body = places.render(&frame.text, None);
        // Alternately on the open connection and on none.
        let on = (case % 2 == 0).then(|| connection.clone());
        let response = within("an HTTP answer", post(body.clone(), on))
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert!(
            matches!(status, 200 | 202 | 400),
            "{status} for {}: {text}",
            excerpt(&body)
        );
        if let Ok(message) = serde_json::from_str::<Value>(&text)
            && let Err(problem) = well_formed(&message)
        {
            panic!("{problem}: {text} for {}", excerpt(&body));
        }
    }
    let again = within("initialize", post(initialize, None))
        .await
        .expect("the server answers");
    assert_eq!(again.status(), 200, "a new client still gets in");
    assert_eq!(server.health().await["status"], "ok");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
