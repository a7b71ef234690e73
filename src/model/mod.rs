//! Model providers: one streaming interface every model implements, and the
//! choice of model from a spec such as `test`, `openai:gpt-4.1` or
//! `ollama:qwen3`.
//!
//! A provider turns a conversation into a stream of events as the model
//! produces them: text, thoughts, complete tool calls (a provider assembles
//! arguments that arrive in pieces), token usage, and why the model stopped.
//! Dropping the stream stops the model. Providers know nothing of ACP,
//! sessions or connections: the turn loop in [`crate::session`] drives them
//! and reports what they produce.

mod anthropic;
mod discover;
mod http;
mod openai;
mod script;
mod test_model;

use std::sync::Arc;

use futures::stream::BoxStream;
use serde_json::Value;

pub use anthropic::AnthropicModel;
pub use discover::ModelCatalogue;
pub use openai::{OpenAiModel, OpenAiServer};
pub use script::ScriptModel;
pub use test_model::TestModel;

/// One message of a conversation, in the shape every provider can express.
/// Stored as JSON, so a renamed field needs a schema migration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// What the person said.
    User(String),
    /// What the model answered: text, and the tools it asked to run.
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
        /// How it reasoned its way there, kept to be sent back.
        #[serde(default, skip_serializing_if = "Reasoning::is_empty")]
        reasoning: Reasoning,
    },
    /// The result of one tool call, told back to the model.
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
    /// A picture shown to the model: one the person attached, right after
    /// their prompt, or one a tool returned, after its result.
    Picture(Picture),
}

/// What a reply's reasoning leaves that the model server must be sent back
/// with the reply, as it sent it. DeepSeek and Kimi in thinking mode refuse a
/// conversation whose replies that called tools lack their
/// `reasoning_content`; Anthropic's wire takes thinking blocks back only
/// whole and signed. A server that streams reasoning under another name
/// (`reasoning`: Groq, Cerebras, Ollama, OpenRouter) is sent nothing back:
/// some of them refuse a field they do not know.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reasoning {
    /// Anthropic's `thinking` and `redacted_thinking` blocks, whole; or one
    /// `{"reasoning_content": …}` from an OpenAI-style server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<serde_json::Value>,
    /// The model that reasoned so (its spec): only it is sent this back. A
    /// session may change models, and OpenAI refuses fields it does not
    /// know, Anthropic signatures of another model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

impl Reasoning {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// This reasoning, if `model` is to be sent it back.
    pub fn for_model(&self, model: &str) -> Option<&Self> {
        (!self.is_empty() && self.model == model).then_some(self)
    }

    /// The `reasoning_content` an OpenAI-style server streamed, if it did.
    pub fn content(&self) -> Option<&str> {
        self.blocks
            .iter()
            .find_map(|block| block.get(REASONING_CONTENT)?.as_str())
    }

    /// What it costs in the context window, as estimated: the text of its
    /// blocks.
    pub fn text_len(&self) -> usize {
        self.blocks
            .iter()
            .filter_map(|block| {
                ["reasoning_content", "thinking", "data"]
                    .iter()
                    .find_map(|key| block.get(*key)?.as_str())
            })
            .map(str::len)
            .sum()
    }
}

/// The field DeepSeek, Kimi, llama.cpp and vLLM stream reasoning in, and
/// take it back in.
pub const REASONING_CONTENT: &str = "reasoning_content";

/// A picture as the model is sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Picture {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`: what every
    /// provider takes.
    pub mime_type: String,
    /// The picture's bytes in base64.
    pub data: String,
}

/// The picture types Punie accepts, as both cloud APIs take them.
pub const PICTURE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The picture type `mime_type` names, if Punie takes it (`image/jpg` is
/// read as `image/jpeg`).
pub fn picture_type(mime_type: &str) -> Option<&'static str> {
    let mime_type = mime_type.trim().to_ascii_lowercase();
    let mime_type = if mime_type == "image/jpg" {
        "image/jpeg"
    } else {
        mime_type.as_str()
    };
    PICTURE_TYPES.into_iter().find(|known| *known == mime_type)
}

/// Whether `data` is non-empty standard base64 with padding: what both
/// cloud APIs require of a picture.
pub fn is_base64(data: &str) -> bool {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    !data.is_empty() && BASE64_STANDARD.decode(data).is_ok()
}

impl Picture {
    /// What a model that is not sent the picture reads in its place.
    pub fn left_out(&self) -> String {
        format!(
            "[a picture ({}) was here; this model server did not take pictures, so it was left out]",
            self.mime_type
        )
    }
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Self::User(text.into())
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self::Assistant {
            text: text.into(),
            tool_calls: Vec::new(),
            reasoning: Reasoning::default(),
        }
    }
}

/// A tool call the model asked for, its arguments complete.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; tool results refer to it.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: a JSON object, if the model
    /// wrote valid JSON. Arguments that are not valid JSON arrive as
    /// `Value::String` holding the raw text, so the turn loop can tell the
    /// model its arguments were malformed; no arguments at all arrive as `{}`.
    pub arguments: Value,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// What the model is asked.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    /// Who Punie is, its tools, the workspace.
    pub system: Arc<str>,
    /// The conversation so far, oldest first, ending with the newest user
    /// prompt or tool results. Shared rather than copied.
    pub messages: Arc<Vec<Message>>,
    /// How many of the oldest `messages` are not sent: the conversation
    /// outgrew the model's context window. See [`Self::sent`].
    pub left_out: usize,
    /// Name each picture in text instead of sending it: the model server
    /// refused pictures before.
    pub without_pictures: bool,
    /// The tools the model may call.
    pub tools: Arc<Vec<ToolSpec>>,
    /// Which prompt of the session this answers, counting from 1.
    pub turn: usize,
}

/// The conversation as a provider sends it, with each picture a tool
/// returned moved after the last result of its round: both APIs want a
/// round's results together, right after the calls they answer.
pub(crate) fn in_sending_order(messages: &[Message]) -> Vec<&Message> {
    let mut ordered = Vec::with_capacity(messages.len());
    let mut held = Vec::new();
    let mut among_results = false;
    for message in messages {
        match message {
            Message::ToolResult { .. } => {
                among_results = true;
                ordered.push(message);
            }
            Message::Picture(_) if among_results => held.push(message),
            _ => {
                among_results = false;
                ordered.append(&mut held);
                ordered.push(message);
            }
        }
    }
    ordered.append(&mut held);
    ordered
}

impl ModelRequest {
    /// The messages the model is sent.
    pub fn sent(&self) -> &[Message] {
        self.messages.get(self.left_out..).unwrap_or_default()
    }

    /// The newest thing the person said.
    pub fn prompt(&self) -> &str {
        self.sent()
            .iter()
            .rev()
            .find_map(|message| match message {
                Message::User(text) => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Whether any message sent is a picture.
    pub fn has_pictures(&self) -> bool {
        self.sent()
            .iter()
            .any(|message| matches!(message, Message::Picture(_)))
    }
}

/// Tokens a model call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It is done, or waits for the results of its tool calls.
    Done,
    /// It ran out of output tokens.
    MaxTokens,
    /// It refused.
    Refusal,
}

/// Something the model produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// A piece of the reply, in order.
    Text(String),
    /// A piece of the model's reasoning.
    Thought(String),
    /// Something of the reply's reasoning the server must be sent back with
    /// it, whole once it has ended (see [`Reasoning`]).
    SendBack(serde_json::Value),
    /// A tool call, complete.
    ToolCall(ToolCall),
    /// Token usage so far for this call.
    Usage(Usage),
    /// Why the model stopped; the last event of a call that ended normally.
    Stop(Stop),
    /// The model server refused the conversation's pictures (`why` is its
    /// error), so the call was made again with each picture named in text
    /// instead. `for_good`: it said the model reads no pictures at all, so
    /// later calls should set [`ModelRequest::without_pictures`].
    PicturesRefused { why: String, for_good: bool },
    /// The call waits before it is made again — as long as the model server
    /// asked (a rate limit's `Retry-After`), or Punie's own backoff — and
    /// waits now: what to tell the person, who would otherwise see nothing
    /// for as long as 30 s. Not part of the reply.
    Waiting(String),
}

/// Why a model could not answer, worded for the person who has to fix it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error(
        "unknown model `{0}`; use test, openai:MODEL, anthropic:MODEL, ollama:MODEL, lmstudio:MODEL, local:URL/MODEL or script:PATH"
    )]
    UnknownModel(String),
    #[error("{0}")]
    Setup(String),
    /// An environment variable, which the message names, holds a value
    /// Punie cannot use (a base URL that is not one, say): the spec that
    /// read it is not at fault.
    #[error("{0}")]
    Environment(String),
    #[error("{0}")]
    Provider(String),
    /// The model server refused the conversation as longer than its
    /// context window.
    #[error("{0}")]
    TooLong(String),
}

/// The events of one model call, as they arrive.
pub type ModelStream = BoxStream<'static, Result<ModelEvent, ModelError>>;

/// A model that can hold a conversation.
pub trait Model: Send + Sync + 'static {
    /// The spec this model was chosen by, e.g. `test`.
    fn id(&self) -> &str;

    /// Start answering `request`. The stream ends after [`ModelEvent::Stop`],
    /// or with an error.
    fn stream(&self, request: ModelRequest) -> ModelStream;
}

/// How patient providers are with a model server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    /// A stream that sends nothing for this long is given up on.
    pub idle_timeout: std::time::Duration,
    /// Attempts after the first when a call fails before its first token
    /// (429, 5xx, a reset connection, a stream that ends or reports an
    /// overloaded server before the answer begins).
    pub retries: u32,
    /// The first wait between attempts; each further wait doubles it.
    pub retry_backoff: std::time::Duration,
    /// The most tokens a model may write in one reply. Anthropic's wire
    /// needs a number ([`anthropic::MAX_TOKENS`] unless set); OpenAI-style
    /// servers are sent one only when it is set, and otherwise use their own.
    pub max_output_tokens: Option<u32>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            idle_timeout: std::time::Duration::from_secs(120),
            retries: 3,
            retry_backoff: std::time::Duration::from_millis(500),
            max_output_tokens: None,
        }
    }
}

/// The model a spec names, reading keys and base URLs from the environment:
///
/// | spec | server | key |
/// |---|---|---|
/// | `test` | none: the offline model | |
/// | `openai:MODEL` | `OPENAI_BASE_URL`, else `https://api.openai.com/v1` | `OPENAI_API_KEY`, required |
/// | `anthropic:MODEL` | `ANTHROPIC_BASE_URL`, else `https://api.anthropic.com` | `ANTHROPIC_API_KEY`, required |
/// | `ollama:MODEL` | `OLLAMA_HOST`, else `http://127.0.0.1:11434`, plus `/v1` | `PUNIE_LOCAL_API_KEY`, if set |
/// | `lmstudio:MODEL` | `http://127.0.0.1:1234/v1` | `PUNIE_LOCAL_API_KEY`, if set |
/// | `local:URL/MODEL` | `URL` (everything up to `/v1`, else up to the last `/`; one ending in `/` or `/v1` names no model) | `PUNIE_LOCAL_API_KEY`, if set |
/// | `script:PATH` | none: replies scripted in a file | |
///
/// A malformed spec is an error here; a missing key is not — it is the error
/// of every call, so the server starts and says what to do when asked.
pub fn from_spec(spec: &str, settings: &ModelSettings) -> Result<Arc<dyn Model>, ModelError> {
    from_spec_with_env(spec, settings, |name| std::env::var(name).ok())
}

/// [`from_spec`] with the environment given rather than read: `env` answers
/// for each variable. For tests and embedders that must not touch the
/// process environment.
pub fn from_spec_with_env(
    spec: &str,
    settings: &ModelSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Model>, ModelError> {
    let spec = spec.trim();
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if spec == "test" {
        return Ok(Arc::new(TestModel::default()));
    }
    let Some((provider, rest)) = spec.split_once(':') else {
        return Err(ModelError::UnknownModel(spec.to_owned()));
    };
    let model = || model_name(provider, rest);
    let local_key = || var(OpenAiServer::Local.key_variable());
    Ok(match provider {
        "script" => Arc::new(ScriptModel::load(std::path::Path::new(rest))?),
        "openai" => {
            let base = base_url_from(&var, "OPENAI_BASE_URL")?
                .unwrap_or_else(|| openai::OPENAI_BASE_URL.to_owned());
            let key = var(OpenAiServer::OpenAi.key_variable());
            Arc::new(OpenAiModel::new(
                OpenAiServer::OpenAi,
                &base,
                model()?,
                key,
                settings,
            )?)
        }
        "ollama" => {
            let base = openai::ollama_base_url(var("OLLAMA_HOST").as_deref())
                .map_err(in_the_environment)?;
            let server = OpenAiServer::Ollama;
            Arc::new(OpenAiModel::new(
                server,
                base.as_str(),
                model()?,
                local_key(),
                settings,
            )?)
        }
        "lmstudio" => {
            let (server, base) = (OpenAiServer::LmStudio, openai::LMSTUDIO_BASE_URL);
            Arc::new(OpenAiModel::new(
                server,
                base,
                model()?,
                local_key(),
                settings,
            )?)
        }
        "local" => {
            let (base, model) = openai::split_local_url(rest)?;
            let server = OpenAiServer::Local;
            Arc::new(OpenAiModel::new(
                server,
                base.as_str(),
                &model,
                local_key(),
                settings,
            )?)
        }
        "anthropic" => {
            let base = base_url_from(&var, "ANTHROPIC_BASE_URL")?
                .unwrap_or_else(|| anthropic::ANTHROPIC_BASE_URL.to_owned());
            let key = var(anthropic::KEY_VARIABLE);
            Arc::new(AnthropicModel::new(&base, model()?, key, settings)?)
        }
        _ => return Err(ModelError::UnknownModel(spec.to_owned())),
    })
}

/// The base URL environment variable `name` holds, if it is set; one that is
/// not a URL is an error naming the variable.
fn base_url_from(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<String>, ModelError> {
    let Some(base) = var(name) else {
        return Ok(None);
    };
    http::parse_base_url(&base, name).map_err(in_the_environment)?;
    Ok(Some(base))
}

/// `error`, a setup error in a value read from the environment.
fn in_the_environment(error: ModelError) -> ModelError {
    match error {
        ModelError::Setup(message) => ModelError::Environment(message),
        other => other,
    }
}

/// The model name after `provider:`, which must be one word.
fn model_name<'a>(provider: &str, rest: &'a str) -> Result<&'a str, ModelError> {
    let name = rest.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ModelError::Setup(format!(
            "`{provider}:{rest}` needs a model name after `{provider}:`, e.g. {provider}:{}",
            example_model(provider)
        )));
    }
    Ok(name)
}

fn example_model(provider: &str) -> &'static str {
    match provider {
        "openai" => "gpt-4.1",
        "anthropic" => "claude-sonnet-4-5",
        "ollama" => "qwen3",
        _ => "qwen3-8b",
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    fn spec(spec: &str, env: &[(&str, &str)]) -> Result<Arc<dyn Model>, ModelError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        from_spec_with_env(spec, &ModelSettings::default(), move |name| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    fn id(result: Result<Arc<dyn Model>, ModelError>) -> String {
        match result {
            Ok(model) => model.id().to_owned(),
            Err(error) => format!("error: {error}"),
        }
    }

    #[test]
    fn every_network_provider_has_a_spec() {
        assert_eq!(id(spec(" test ", &[])), "test");
        assert_eq!(id(spec("openai:gpt-4.1", &[])), "openai:gpt-4.1");
        assert_eq!(id(spec("anthropic:claude-x", &[])), "anthropic:claude-x");
        assert_eq!(id(spec("ollama:qwen3:8b", &[])), "ollama:qwen3:8b");
        assert_eq!(id(spec("lmstudio:qwen3", &[])), "lmstudio:qwen3");
        assert_eq!(
            id(spec("local:http://localhost:5001/v1/qwen", &[])),
            "local:http://localhost:5001/v1/qwen"
        );
    }

    #[test]
    fn malformed_specs_are_refused_with_the_fix() {
        assert!(matches!(
            spec("gpt-4", &[]),
            Err(ModelError::UnknownModel(_))
        ));
        assert!(matches!(
            spec("gemini:x", &[]),
            Err(ModelError::UnknownModel(_))
        ));
        let missing = id(spec("openai:", &[]));
        assert!(missing.contains("e.g. openai:gpt-4.1"), "{missing}");
        let spaced = id(spec("ollama:two words", &[]));
        assert!(spaced.contains("needs a model name"), "{spaced}");
        let local = id(spec("local:localhost:8080/m", &[]));
        assert!(
            local.contains("e.g. local:http://localhost:8080/v1/qwen3"),
            "{local}"
        );
        let base = id(spec(
            "openai:gpt-4.1",
            &[("OPENAI_BASE_URL", "api.example.com")],
        ));
        assert!(
            base.contains("OPENAI_BASE_URL `api.example.com` is not a URL"),
            "{base}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_checked_as_the_providers_read_it() {
        for good in ["aGk=", "aGVsbG8h", "YQ==", "+/+/"] {
            assert!(is_base64(good), "{good}");
        }
        for bad in [
            "",
            "aGk",
            "aGk=x",
            "a=Gk",
            "aG k=",
            "aGk===",
            "aGVsbG8h\n",
            "-_-_",
            "data:image/png;base64,aGk=",
        ] {
            assert!(!is_base64(bad), "{bad:?}");
        }
    }

    #[test]
    fn picture_types_are_the_ones_every_provider_takes() {
        assert_eq!(picture_type("image/PNG"), Some("image/png"));
        assert_eq!(picture_type("image/jpg"), Some("image/jpeg"));
        assert_eq!(picture_type("image/svg+xml"), None);
        assert_eq!(picture_type("text/plain"), None);
    }

    fn result(call_id: &str) -> Message {
        Message::ToolResult {
            call_id: call_id.to_owned(),
            name: "t".to_owned(),
            content: String::new(),
            is_error: false,
        }
    }

    fn picture(data: &str) -> Message {
        Message::Picture(Picture {
            mime_type: "image/png".to_owned(),
            data: data.to_owned(),
        })
    }

    #[test]
    fn a_tools_pictures_are_sent_after_the_last_result_of_its_round() {
        let messages = vec![
            Message::user("look"),
            picture("p0"),
            Message::assistant("calling"),
            result("a"),
            picture("p1"),
            result("b"),
            picture("p2"),
            Message::user("and?"),
        ];
        let order: Vec<&Message> = in_sending_order(&messages);
        let expected = [0, 1, 2, 3, 5, 4, 6, 7].map(|at| &messages[at]);
        assert_eq!(order, expected);
    }

    #[test]
    fn pictures_at_the_end_of_a_round_are_kept() {
        let messages = vec![Message::assistant("calling"), result("a"), picture("p1")];
        assert_eq!(
            in_sending_order(&messages),
            messages.iter().collect::<Vec<_>>()
        );
    }
}
