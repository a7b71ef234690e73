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
//! "arguments"}}`, `{"usage": {"input_tokens", "output_tokens"}}`,
//! `{"stop": "end_turn" | "max_tokens" | "refusal"}`, `{"pause_ms": N}` (wait
//! before the next event) and `{"error": "…"}` (the model fails there). The
//! n-th time the model is called in a session it plays the n-th response,
//! counting every response of earlier turns too, so one script can drive a
//! whole conversation. A session that asks for more responses than the script
//! has gets an error saying so.

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

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ScriptFile {
    Responses(Vec<Vec<ScriptEvent>>),
    Wrapped { responses: Vec<Vec<ScriptEvent>> },
}

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
        let text = std::fs::read_to_string(path).map_err(|error| {
            ModelError::Setup(format!(
                "cannot read the script {}: {error}",
                path.display()
            ))
        })?;
        let file: ScriptFile = serde_json::from_str(&text).map_err(|error| {
            ModelError::Setup(format!(
                "{} is not a model script ({error}); see the script: model in the README",
                path.display()
            ))
        })?;
        let responses = match file {
            ScriptFile::Responses(responses) | ScriptFile::Wrapped { responses } => responses,
        };
        Ok(Self {
            id: format!("script:{}", path.display()),
            path: path.to_owned(),
            responses: Arc::new(responses),
        })
    }
}

impl Model for ScriptModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ModelRequest) -> ModelStream {
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
            let mut stopped = false;
            for (number, event) in events.into_iter().enumerate() {
                match event {
                    ScriptEvent::Text(text) => yield Ok(ModelEvent::Text(text)),
                    ScriptEvent::Thought(text) => yield Ok(ModelEvent::Thought(text)),
                    ScriptEvent::ToolCall { id, name, arguments } => {
                        let id = id.unwrap_or_else(|| format!("script_{index}_{number}"));
                        yield Ok(ModelEvent::ToolCall(ToolCall { id, name, arguments }));
                    }
                    ScriptEvent::Usage { input_tokens, output_tokens } => {
                        yield Ok(ModelEvent::Usage(Usage { input_tokens, output_tokens }));
                    }
                    ScriptEvent::Stop(stop) => {
                        stopped = true;
                        yield Ok(ModelEvent::Stop(match stop {
                            ScriptStop::EndTurn => Stop::Done,
                            ScriptStop::MaxTokens => Stop::MaxTokens,
                            ScriptStop::Refusal => Stop::Refusal,
                        }));
                    }
                    ScriptEvent::PauseMs(millis) => tokio::time::sleep(Duration::from_millis(millis)).await,
                    ScriptEvent::Error(message) => {
                        yield Err(ModelError::Provider(message));
                        return;
                    }
                }
            }
            if !stopped {
                yield Ok(ModelEvent::Stop(Stop::Done));
            }
        }
        .boxed()
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
                [{"text": "b"}, {"stop": "max_tokens"}]]"#,
        );
        let first = play(&model, vec![Message::user("go")]).await;
        assert!(matches!(&first[0], Ok(ModelEvent::Text(text)) if text == "a"));
        assert!(
            matches!(&first[1], Ok(ModelEvent::ToolCall(call)) if call.name == "read_file" && call.id == "script_0_1")
        );
        assert!(matches!(&first[2], Ok(ModelEvent::Stop(Stop::Done))));
        let second = play(&model, vec![Message::user("go"), Message::assistant("a")]).await;
        assert!(matches!(&second[1], Ok(ModelEvent::Stop(Stop::MaxTokens))));
        let third = play(
            &model,
            vec![Message::assistant("a"), Message::assistant("b")],
        )
        .await;
        assert!(
            matches!(&third[0], Err(ModelError::Provider(message)) if message.contains("has 2 responses"))
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
}
