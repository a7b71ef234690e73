//! `script:<path>`: a model that replays a JSON file of responses — text,
//! thoughts, tool calls, usage — for offline demos and for tests of the whole
//! agent loop.
//!
//! The file holds a list of responses (or `{"responses": [...]}`); each
//! response is a list of events, played in order:
//!
//! ```json
//! [
//!   [{"text": "Let me look. "},
//!    {"tool_call": {"name": "read_file", "arguments": {"path": "README.md"}}}],
//!   [{"thought": "It is short."}, {"text": "Done."},
//!    {"usage": {"input_tokens": 120, "output_tokens": 8}}]
//! ]
//! ```
//!
//! Events: `{"text": "…"}`, `{"thought": "…"}`, `{"tool_call": {"id"?, "name",
//! "arguments"?}}` (an object, or a string holding one as OpenAI sends it;
//! none is `{}`), `{"usage": {"input_tokens", "output_tokens"}}`,
//! `{"stop": "end_turn" | "max_tokens" | "refusal"}`, `{"pause_ms": N}` (wait
//! before the next event) and `{"error": "…"}` (the model fails there). The
//! n-th time the model is called in a session it plays the n-th response,
//! counting every response of earlier turns too, so one script can drive a
//! whole conversation. A session that asks for more responses than the script
//! has gets an error saying so. Responses are counted by the replies the
//! conversation holds, and a refused turn is dropped from it: the next prompt
//! plays the refusal again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Message, Model, ModelError, ModelEvent, ModelRequest, ModelStream, Stop, ToolCall, Usage,
};

/// A model that replays a script.
#[derive(Debug)]
pub struct ScriptModel {
    id: String,
    path: PathBuf,
    responses: Arc<Vec<Vec<ScriptEvent>>>,
}

/// The events a script may hold, for errors about one that is not.
const EVENT_FORMS: &str = r#"{"text": "…"}, {"thought": "…"}, {"tool_call": {"id"?, "name", "arguments"?}}, {"usage": {"input_tokens", "output_tokens"}}, {"stop": "end_turn" | "max_tokens" | "refusal"}, {"pause_ms": N}, {"error": "…"}"#;

/// How much of a bad event an error quotes.
const QUOTE_LIMIT: usize = 200;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ScriptEvent {
    Text(String),
    Thought(String),
    ToolCall {
        #[serde(default)]
        id: Option<String>,
        name: String,
        #[serde(default)]
        arguments: Value,
    },
    Usage {
        input_tokens: u64,
        output_tokens: u64,
    },
    Stop(ScriptStop),
    PauseMs(u64),
    Error(String),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScriptStop {
    EndTurn,
    MaxTokens,
    Refusal,
}

impl ScriptModel {
    /// Load the script at `path`; a missing or malformed file is an error now,
    /// not at the first prompt.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = read_script(path).map_err(|error| {
            ModelError::Setup(format!(
                "cannot read the script {}: {error}",
                path.display()
            ))
        })?;
        let responses = parse(&text).map_err(|problem| {
            ModelError::Setup(format!(
                "{} is not a model script: {problem}; see the script: model in the README",
                path.display()
            ))
        })?;
        Ok(Self {
            id: format!("script:{}", path.display()),
            path: path.to_owned(),
            responses: Arc::new(responses),
        })
    }
}

/// The text of the script at `path`. A client may name any path, and the
/// script is read where its request is handled: so only a regular file is
/// opened, without waiting (a named pipe would hold that request, and the
/// thread under it, until someone wrote to it), and only up to
/// [`MAX_SCRIPT_BYTES`] of it (`/dev/zero` would never end).
fn read_script(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let file = crate::workspace::open_named_file(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_SCRIPT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(refuse(format!(
            "it is larger than {} MiB, the most a script may be",
            MAX_SCRIPT_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| refuse("it is not UTF-8 text".to_owned()))
}

/// The largest script read: far beyond any hand-written or recorded one.
pub const MAX_SCRIPT_BYTES: u64 = 16 * 1024 * 1024;

/// The responses of a script, or what is wrong with it and where. Read event
/// by event rather than as one typed document, so that an error names the
/// response and event at fault instead of the file's outermost shape.
fn parse(text: &str) -> Result<Vec<Vec<ScriptEvent>>, String> {
    let shape = || {
        "it should be a list of responses, each a list of events, or {\"responses\": [...]}"
            .to_owned()
    };
    let file: Value =
        serde_json::from_str(text).map_err(|error| format!("it is not JSON ({error})"))?;
    let responses = match &file {
        Value::Array(responses) => responses,
        Value::Object(fields) => match fields.get("responses") {
            Some(Value::Array(responses)) => responses,
            _ => return Err(shape()),
        },
        _ => return Err(shape()),
    };
    responses
        .iter()
        .enumerate()
        .map(|(response, events)| {
            let Value::Array(events) = events else {
                return Err(format!(
                    "response {} is {}, not a list of events",
                    response + 1,
                    quote(events)
                ));
            };
            events
                .iter()
                .enumerate()
                .map(|(number, event)| {
                    ScriptEvent::deserialize(event).map_err(|error| {
                        format!(
                            "event {} of response {} is {}, which is not an event ({error}); \
                             the events are {EVENT_FORMS}",
                            number + 1,
                            response + 1,
                            quote(event)
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// `value` as JSON, shortened to what an error can quote.
fn quote(value: &Value) -> String {
    let mut text = value.to_string();
    if let Some((end, _)) = text.char_indices().nth(QUOTE_LIMIT) {
        text.truncate(end);
        text.push('…');
    }
    format!("`{text}`")
}

impl Model for ScriptModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ModelRequest) -> ModelStream {
        // Counted over the whole conversation, including what is not sent:
        // the script's responses follow one another whatever fits.
        let index = request
            .messages
            .iter()
            .filter(|message| matches!(message, Message::Assistant { .. }))
            .count();
        let Some(events) = self.responses.get(index).cloned() else {
            let error = ModelError::Provider(format!(
                "the script {} has {} responses and this would be response {}",
                self.path.display(),
                self.responses.len(),
                index + 1
            ));
            return futures::stream::once(async move { Err(error) }).boxed();
        };
        async_stream::stream! {
            for (number, event) in events.into_iter().enumerate() {
                match event {
                    ScriptEvent::Text(text) => yield Ok(ModelEvent::Text(text)),
                    ScriptEvent::Thought(text) => yield Ok(ModelEvent::Thought(text)),
                    ScriptEvent::ToolCall { id, name, arguments } => {
                        let id = id.unwrap_or_else(|| format!("script_{index}_{number}"));
                        let arguments = as_a_model_writes_them(arguments);
                        yield Ok(ModelEvent::ToolCall(ToolCall { id, name, arguments }));
                    }
                    ScriptEvent::Usage { input_tokens, output_tokens } => {
                        yield Ok(ModelEvent::Usage(Usage { input_tokens, output_tokens }));
                    }
                    ScriptEvent::Stop(stop) => {
                        // The last event of a call, as from any provider:
                        // what a script puts after it is not said.
                        yield Ok(ModelEvent::Stop(match stop {
                            ScriptStop::EndTurn => Stop::Done,
                            ScriptStop::MaxTokens => Stop::MaxTokens,
                            ScriptStop::Refusal => Stop::Refusal,
                        }));
                        return;
                    }
                    ScriptEvent::PauseMs(millis) => tokio::time::sleep(Duration::from_millis(millis)).await,
                    ScriptEvent::Error(message) => {
                        yield Err(ModelError::Provider(message));
                        return;
                    }
                }
            }
            yield Ok(ModelEvent::Stop(Stop::Done));
        }
        .boxed()
    }
}

/// A script's tool arguments as a provider delivers a model's (see
/// [`ToolCall::arguments`]): none at all are `{}`, and a string is read as
/// the JSON text it holds, as OpenAI's wire format carries arguments; a
/// string that is not JSON stays one, so a script can play a model that
/// writes malformed arguments.
fn as_a_model_writes_them(arguments: Value) -> Value {
    match arguments {
        Value::Null => Value::Object(serde_json::Map::new()),
        Value::String(raw) => super::http::tool_arguments(&raw),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(json: &str) -> (tempfile::TempDir, ScriptModel) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.json");
        std::fs::write(&path, json).unwrap();
        let model = ScriptModel::load(&path).unwrap();
        (dir, model)
    }

    async fn play(
        model: &ScriptModel,
        messages: Vec<Message>,
    ) -> Vec<Result<ModelEvent, ModelError>> {
        let request = ModelRequest {
            messages: Arc::new(messages),
            ..ModelRequest::default()
        };
        model.stream(request).collect().await
    }

    #[tokio::test]
    async fn each_call_plays_the_next_response() {
        let (_dir, model) = script(
            r#"[[{"text": "a"}, {"tool_call": {"name": "read_file", "arguments": {"path": "x"}}}],
                [{"text": "b"}, {"stop": "max_tokens"}, {"text": "never said"}]]"#,
        );
        let first = play(&model, vec![Message::user("go")]).await;
        assert!(matches!(&first[0], Ok(ModelEvent::Text(text)) if text == "a"));
        assert!(
            matches!(&first[1], Ok(ModelEvent::ToolCall(call)) if call.name == "read_file" && call.id == "script_0_1")
        );
        assert!(matches!(&first[2], Ok(ModelEvent::Stop(Stop::Done))));
        let second = play(&model, vec![Message::user("go"), Message::assistant("a")]).await;
        assert!(matches!(&second[1], Ok(ModelEvent::Stop(Stop::MaxTokens))));
        assert_eq!(second.len(), 2, "the stop is the call's last event");
        let third = play(
            &model,
            vec![Message::assistant("a"), Message::assistant("b")],
        )
        .await;
        assert!(
            matches!(&third[0], Err(ModelError::Provider(message)) if message.contains("has 2 responses"))
        );
    }

    #[tokio::test]
    async fn tool_arguments_are_an_object_as_a_providers_would_be() {
        let (_dir, model) = script(
            r#"[[{"tool_call": {"name": "list_files"}},
                 {"tool_call": {"name": "list_files", "arguments": null}},
                 {"tool_call": {"name": "read_file", "arguments": "{\"path\": \"README.md\"}"}},
                 {"tool_call": {"name": "read_file", "arguments": "{\"path\": "}}]]"#,
        );
        let events = play(&model, vec![Message::user("go")]).await;
        let arguments: Vec<Value> = events
            .into_iter()
            .filter_map(|event| match event {
                Ok(ModelEvent::ToolCall(call)) => Some(call.arguments),
                _ => None,
            })
            .collect();
        assert_eq!(
            arguments,
            [
                serde_json::json!({}),
                serde_json::json!({}),
                serde_json::json!({"path": "README.md"}),
                Value::String(r#"{"path": "#.to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn messages_left_out_of_the_request_still_count() {
        let (_dir, model) = script(r#"[[{"text": "a"}], [{"text": "b"}]]"#);
        let request = ModelRequest {
            messages: Arc::new(vec![
                Message::user("go"),
                Message::assistant("a"),
                Message::user("again"),
            ]),
            left_out: 2,
            ..ModelRequest::default()
        };
        let events: Vec<_> = model.stream(request).collect().await;
        assert!(
            matches!(&events[0], Ok(ModelEvent::Text(text)) if text == "b"),
            "{events:?}"
        );
    }

    #[test]
    fn a_malformed_script_is_refused_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"[[{"txet": "typo"}]]"#).unwrap();
        let error = ScriptModel::load(&path).unwrap_err();
        assert!(error.to_string().contains("not a model script"), "{error}");
        assert!(ScriptModel::load(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn only_a_regular_file_of_a_sensible_size_is_read_and_a_pipe_is_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pipe.json");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &pipe,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        // Opening the pipe to read would wait for a writer that never comes.
        for (path, why) in [
            (pipe.as_path(), "is a named pipe, not a file"),
            (Path::new("/dev/zero"), "is a character device, not a file"),
            (dir.path(), "is a directory, not a file"),
        ] {
            let error = ScriptModel::load(path).unwrap_err().to_string();
            assert!(error.contains(why), "{}: {error}", path.display());
        }
        let huge = dir.path().join("huge.json");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_SCRIPT_BYTES + 1)
            .unwrap();
        let error = ScriptModel::load(&huge).unwrap_err().to_string();
        assert!(error.contains("larger than 16 MiB"), "{error}");
    }

    #[test]
    fn a_bad_event_is_named_with_where_it_is_and_what_would_do() {
        let error = |json: &str| parse(json).unwrap_err();
        let typo = error(r#"{"responses": [[{"text": "a"}], [{"text": "b"}, {"txet": "c"}]]}"#);
        assert!(
            typo.starts_with(r#"event 2 of response 2 is `{"txet":"c"}`, which is not an event"#),
            "{typo}"
        );
        assert!(typo.contains("unknown variant `txet`"), "{typo}");
        assert!(typo.contains(EVENT_FORMS), "{typo}");
        let missing = error(r#"[[{"tool_call": {"arguments": {}}}]]"#);
        assert!(missing.starts_with("event 1 of response 1 is"), "{missing}");
        assert!(missing.contains("missing field `name`"), "{missing}");
        assert_eq!(
            error(r#"[{"text": "a"}]"#),
            r#"response 1 is `{"text":"a"}`, not a list of events"#
        );
        assert!(error(r#"{"turns": []}"#).contains("a list of responses"));
        assert!(error("[[").starts_with("it is not JSON"));
    }
}
