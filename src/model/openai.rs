//! OpenAI Chat Completions, streamed, and every server that speaks it: the
//! OpenAI API itself, Ollama, LM Studio, and any other local server (llama.cpp,
//! vLLM, mlx_lm.server …) given by URL.
//!
//! This module owns the request body (messages, tool calls, tool results,
//! tools, stream flags), the decoding of `chat.completion.chunk` events into
//! [`ModelEvent`]s (tool-call arguments assembled by `index` and id), and
//! where each kind of server lives by default. HTTP, retries, timeouts and
//! error wording are [`super::http`]'s; it must not read the environment
//! (`from_spec` does).

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, Call, DecodeError, Decoder, Event, Peer};
use super::{
    Message, Model, ModelError, ModelEvent, ModelRequest, ModelSettings, ModelStream, Picture,
    REASONING_CONTENT, Reasoning, Stop, ToolCall, ToolSpec, Usage,
};

/// Where the OpenAI API lives unless `OPENAI_BASE_URL` says otherwise.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Where Ollama listens unless `OLLAMA_HOST` says otherwise.
pub const OLLAMA_BASE_URL: &str = "http://127.0.0.1:11434/v1";
/// Where LM Studio's server listens by default.
pub const LMSTUDIO_BASE_URL: &str = "http://127.0.0.1:1234/v1";
/// Ollama's port when `OLLAMA_HOST` names a host without one.
const OLLAMA_PORT: u16 = 11434;

/// Which kind of server speaks Chat Completions at the other end: it decides
/// the wording of errors and whether an API key is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiServer {
    /// The OpenAI API (`openai:`): needs `OPENAI_API_KEY`.
    OpenAi,
    /// Ollama (`ollama:`).
    Ollama,
    /// LM Studio's server (`lmstudio:`).
    LmStudio,
    /// Any other OpenAI-compatible server (`local:`).
    Local,
}

impl OpenAiServer {
    /// The spec prefix that chooses this server.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Ollama => "ollama",
            Self::LmStudio => "lmstudio",
            Self::Local => "local",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "OpenAI",
            Self::Ollama => "Ollama",
            Self::LmStudio => "LM Studio",
            Self::Local => "the model server",
        }
    }

    fn not_running_hint(self) -> Option<&'static str> {
        match self {
            Self::OpenAi => None,
            Self::Ollama => Some("is Ollama running?"),
            Self::LmStudio => Some("is LM Studio's server running?"),
            Self::Local => Some("is the model server running?"),
        }
    }

    /// The environment variable an API key for this server comes from.
    pub fn key_variable(self) -> &'static str {
        match self {
            Self::OpenAi => "OPENAI_API_KEY",
            _ => "PUNIE_LOCAL_API_KEY",
        }
    }

    /// Where the base URL comes from, for a 404's hint.
    fn base_url_source(self) -> Option<&'static str> {
        match self {
            Self::OpenAi => Some("OPENAI_BASE_URL"),
            Self::Ollama => Some("OLLAMA_HOST"),
            Self::LmStudio => None,
            Self::Local => Some("the URL in `local:URL/MODEL`"),
        }
    }

    fn missing_model_hint(self, model: &str, base_url: &Url) -> Option<String> {
        match self {
            Self::OpenAi => None,
            Self::Ollama => Some(format!("`ollama pull {model}` downloads it")),
            Self::LmStudio => Some("`lms ls` lists the models LM Studio has".to_owned()),
            Self::Local => Some(format!(
                "{} lists the models the server offers",
                http::join(base_url, "models")
            )),
        }
    }
}

/// A model behind an OpenAI-compatible Chat Completions endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    id: String,
    model: String,
    url: Url,
    /// The `Authorization` header, or why it cannot be sent; a missing key is
    /// reported when the model is called, so the server can start without one.
    authorization: Result<Option<HeaderValue>, ModelError>,
    client: reqwest::Client,
    settings: ModelSettings,
    /// The field that limits a reply's length, and the limit, when set.
    output_limit: Option<(&'static str, u32)>,
    peer: Arc<Peer>,
}

impl OpenAiModel {
    /// `model` at the Chat Completions endpoint under `base_url` (e.g.
    /// `http://127.0.0.1:11434/v1`), sending `api_key` as a bearer token. The
    /// OpenAI API requires a key; calling it without one yields an error that
    /// says to set `OPENAI_API_KEY`. `from_spec` uses this after reading the
    /// environment; tests and embedders can call it directly.
    pub fn new(
        server: OpenAiServer,
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        settings: &ModelSettings,
    ) -> Result<Self, ModelError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(ModelError::Setup(format!(
                "`{}:` needs a model name",
                server.prefix()
            )));
        }
        let base_url = http::parse_base_url(base_url, "the base URL")?;
        let id = match server {
            OpenAiServer::Local => {
                format!("local:{}/{model}", base_url.as_str().trim_end_matches('/'))
            }
            _ => format!("{}:{model}", server.prefix()),
        };
        let peer = Peer {
            name: server.name(),
            base_url: base_url.clone(),
            model: model.to_owned(),
            not_running_hint: server.not_running_hint(),
            key_variable: Some(server.key_variable()),
            missing_model_hint: server.missing_model_hint(model, &base_url),
            base_url_source: server.base_url_source(),
        };
        // OpenAI's own API takes only `max_completion_tokens` for its
        // reasoning models; the servers that copy its wire know `max_tokens`.
        let field = if base_url.host_str() == Some("api.openai.com") {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        Ok(Self {
            id,
            model: model.to_owned(),
            url: http::join(&base_url, "chat/completions"),
            authorization: authorization(server, api_key),
            client: http::client_for(&base_url)?,
            settings: settings.clone(),
            output_limit: settings.max_output_tokens.map(|limit| (field, limit)),
            peer: Arc::new(peer),
        })
    }

    fn headers(&self) -> Result<HeaderMap, ModelError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(value) = self.authorization.clone()? {
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }
}

fn authorization(
    server: OpenAiServer,
    api_key: Option<String>,
) -> Result<Option<HeaderValue>, ModelError> {
    let variable = server.key_variable();
    let key = api_key.filter(|key| !key.trim().is_empty());
    match key {
        None if server == OpenAiServer::OpenAi => Err(ModelError::Setup(format!(
            "{variable} is not set; export it, or choose another model with --model"
        ))),
        None => Ok(None),
        Some(key) => {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
                    ModelError::Setup(format!(
                        "{variable} holds characters an HTTP header cannot carry; check its value"
                    ))
                })?;
            value.set_sensitive(true);
            Ok(Some(value))
        }
    }
}

impl Model for OpenAiModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ModelRequest) -> ModelStream {
        let headers = match self.headers() {
            Ok(headers) => headers,
            Err(error) => return http::failed(error),
        };
        let (model, id) = (self.model.clone(), self.id.clone());
        let output_limit = self.output_limit;
        let call = Call::new(
            self.url.clone(),
            headers,
            request,
            move |request, pictures| {
                let mut body = request_body(&model, &id, request, pictures);
                if let Some((field, limit)) = output_limit {
                    body[field] = limit.into();
                }
                body
            },
        );
        let peer = self.peer.clone();
        http::model_stream(
            self.client.clone(),
            call,
            self.peer.clone(),
            self.settings.clone(),
            move || ChunkDecoder::new(peer.clone()),
        )
    }
}

/// Ollama's base URL from `OLLAMA_HOST`, read the way Ollama reads it:
/// `host`, `host:port`, `http://host:port/path`; a bare host gets port 11434,
/// and the bind-everything addresses `0.0.0.0` and `::` mean this machine.
pub fn ollama_base_url(ollama_host: Option<&str>) -> Result<Url, ModelError> {
    let Some(host) = ollama_host.map(str::trim).filter(|host| !host.is_empty()) else {
        return http::parse_base_url(OLLAMA_BASE_URL, "the Ollama URL");
    };
    let (text, default_port) = match host.split_once("://") {
        Some(_) => (host.to_owned(), None),
        None => {
            let (host_port, path) = host.split_once('/').unwrap_or((host, ""));
            let host_port = if host_port.is_empty() {
                "127.0.0.1"
            } else {
                host_port
            };
            let port = (!has_port(host_port)).then_some(OLLAMA_PORT);
            (format!("http://{host_port}/{path}"), port)
        }
    };
    let mut url = http::parse_base_url(&text, "OLLAMA_HOST")?;
    let unusable = || ModelError::Setup(format!("OLLAMA_HOST `{host}` is not a usable address"));
    if default_port.is_some() {
        url.set_port(default_port).map_err(|()| unusable())?;
    }
    let this_machine = match url.host_str() {
        Some("0.0.0.0") => Some("127.0.0.1"),
        Some("[::]") => Some("[::1]"),
        _ => None,
    };
    if let Some(host) = this_machine {
        url.set_host(Some(host)).map_err(|_| unusable())?;
    }
    let path = format!("{}/v1", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// Whether `host:port` text names a port (`[::1]:80` does, `::1` does not).
fn has_port(host_port: &str) -> bool {
    host_port.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && (!host.contains(':') || host.ends_with(']'))
    })
}

/// Split a `local:` URL into the server's base URL and the model name. The
/// model is what follows `/v1/` (so names with slashes, such as
/// `Qwen/Qwen3-8B`, work), or else the last path segment. A URL that ends
/// in `/` or in `/v1` names no model: read as the last segment, `v1` would
/// be sent as the model's name to a server one level up.
pub fn split_local_url(text: &str) -> Result<(Url, String), ModelError> {
    let usage = || {
        ModelError::Setup(format!(
            "`local:{text}` should be the server's URL followed by the model name, e.g. local:http://localhost:8080/v1/qwen3"
        ))
    };
    let url = http::parse_base_url(text, "the local server URL").map_err(|_| usage())?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage());
    }
    let path = url.path().to_owned();
    let (base_path, model) = match path.find("/v1/") {
        Some(at) => (&path[..at + 3], &path[at + 4..]),
        None => path.rsplit_once('/').ok_or_else(usage)?,
    };
    let model = model.trim_end_matches('/');
    if model.is_empty() || (model == "v1" && !path.contains("/v1/")) {
        return Err(no_model_named(text));
    }
    let mut base = url.clone();
    base.set_path(base_path);
    Ok((base, model.to_owned()))
}

/// The error for a `local:` URL with nothing after its base: the spec says
/// where the server is, and the example shows where the model's name goes.
fn no_model_named(text: &str) -> ModelError {
    let base = text.trim().trim_end_matches('/');
    let has_path = base
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    let example = if has_path {
        format!("{base}/qwen3")
    } else {
        format!("{base}/v1/qwen3")
    };
    ModelError::Setup(format!(
        "`local:{text}` names no model: a model name must follow the URL, e.g. local:{example}"
    ))
}

/// The Chat Completions request for `request`; without `pictures`, each
/// picture is sent as a line of text saying it was left out.
/// The request for `model` (the name the server knows it by; `id` is its
/// spec).
pub(crate) fn request_body(model: &str, id: &str, request: &ModelRequest, pictures: bool) -> Value {
    let system = (!request.system.is_empty())
        .then(|| json!({"role": "system", "content": &*request.system}));
    let mut messages: Vec<Value> = system.into_iter().collect();
    // DeepSeek in thinking mode wants `reasoning_content` on every reply
    // once any has it.
    let with_reasoning = request.sent().iter().any(|message| match message {
        Message::Assistant { reasoning, .. } => reasoning
            .for_model(id)
            .and_then(Reasoning::content)
            .is_some(),
        _ => false,
    });
    for message in crate::model::in_sending_order(request.sent()) {
        match message {
            Message::Picture(picture) => add_picture(&mut messages, picture, pictures),
            _ => messages.push(message_json(message, with_reasoning.then_some(id))),
        }
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    // Some servers reject an empty tools array.
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(tool_json).collect();
    }
    body
}

/// Add `picture` to the user message before it (the prompt it came with, or
/// the pictures of a round's tool results), or in a user message of its own
/// after tool results: many chat templates want roles to alternate.
fn add_picture(messages: &mut Vec<Value>, picture: &Picture, pictures: bool) {
    let part = if pictures {
        let url = format!("data:{};base64,{}", picture.mime_type, picture.data);
        json!({"type": "image_url", "image_url": {"url": url}})
    } else {
        json!({"type": "text", "text": picture.left_out()})
    };
    if let Some(last) = messages.last_mut().filter(|last| last["role"] == "user") {
        let content = &mut last["content"];
        if let Value::String(text) = content {
            // Some servers refuse an empty text part: a prompt of pictures alone has none.
            *content = if text.is_empty() {
                json!([])
            } else {
                json!([{"type": "text", "text": std::mem::take(text)}])
            };
        }
        if let Value::Array(parts) = content {
            parts.push(part);
            return;
        }
    }
    messages.push(json!({"role": "user", "content": [part]}));
}

/// `message` as Chat Completions takes it; replies carry the reasoning of
/// model `reasoning_of` (empty if they have none), when it is given.
fn message_json(message: &Message, reasoning_of: Option<&str>) -> Value {
    match message {
        Message::User(text) => json!({"role": "user", "content": text}),
        Message::Assistant {
            text,
            tool_calls,
            reasoning,
        } => {
            let mut message = if tool_calls.is_empty() {
                json!({"role": "assistant", "content": text})
            } else {
                json!({
                    "role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { Value::from(text.as_str()) },
                    "tool_calls": tool_calls.iter().map(tool_call_json).collect::<Vec<_>>(),
                })
            };
            // It goes back to the model it came from, as it came: DeepSeek
            // and Kimi refuse a reply that called tools without it, and want
            // it on every reply once one has it; llama.cpp and vLLM give it
            // to the model's template.
            if let Some(model) = reasoning_of {
                let text = reasoning
                    .for_model(model)
                    .and_then(Reasoning::content)
                    .unwrap_or_default();
                message[REASONING_CONTENT] = Value::from(text);
            }
            message
        }
        Message::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } => {
            // Chat Completions has no error flag on tool results: say it in words.
            let content = if *is_error {
                format!("Error: {content}")
            } else {
                content.clone()
            };
            json!({"role": "tool", "tool_call_id": call_id, "content": content})
        }
        Message::Picture(picture) => {
            json!({"role": "user", "content": [{"type": "text", "text": picture.left_out()}]})
        }
    }
}

fn tool_call_json(call: &ToolCall) -> Value {
    // Malformed arguments were kept as the raw text (and arguments that are
    // no object are refused too), which the tool's result quotes to the model. Sent back as written, they would break the
    // conversation for good on a server that reads them (vLLM and llama.cpp
    // parse them to fill in their chat templates, and refuse what is not
    // JSON), so an empty object stands in for them.
    let arguments = match &call.arguments {
        object @ Value::Object(_) => object.to_string(),
        _ => "{}".to_owned(),
    };
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    })
}

fn tool_json(tool: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// One `chat.completion.chunk`, or an error a server sends in its place.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
    /// `error` on vLLM's flat error chunk (`{"object":"error","message":…}`).
    #[serde(default)]
    object: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<Content>,
    /// The reasoning of DeepSeek, llama.cpp and vLLM.
    #[serde(default)]
    reasoning_content: Option<String>,
    /// The reasoning of Ollama and OpenRouter.
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<OneOrMany<ToolCallDelta>>,
}

impl Delta {
    /// Whether it adds to the reply: text, reasoning, a refusal or a piece
    /// of a tool call.
    fn says_something(&self) -> bool {
        let text = |field: &Option<String>| field.as_deref().is_some_and(|text| !text.is_empty());
        let content = match &self.content {
            Some(Content::Text(text)) => !text.is_empty(),
            Some(Content::Parts(parts)) => !parts.is_empty(),
            None => false,
        };
        content
            || text(&self.reasoning_content)
            || text(&self.reasoning)
            || text(&self.refusal)
            || self.tool_calls.as_ref().is_some_and(|calls| match calls {
                OneOrMany::Many(calls) => !calls.is_empty(),
                OneOrMany::One(_) => true,
            })
    }
}

/// A delta's `content`: text, or, from Mistral's reasoning models, a list of
/// typed parts (`text`, and `thinking` holding parts of its own).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// What one piece of `content` adds to the reply.
#[derive(Debug, PartialEq)]
enum ContentPiece {
    Text(String),
    Thought(String),
}

impl Content {
    /// The pieces in order; parts of a type Punie does not know, or without
    /// text, add nothing.
    fn pieces(self) -> Vec<ContentPiece> {
        match self {
            Self::Text(text) => vec![ContentPiece::Text(text)],
            Self::Parts(parts) => parts.iter().filter_map(content_part).collect(),
        }
    }
}

fn content_part(part: &Value) -> Option<ContentPiece> {
    match part.get("type")?.as_str()? {
        "text" => Some(ContentPiece::Text(part.get("text")?.as_str()?.to_owned())),
        "thinking" => Some(ContentPiece::Thought(thinking_text(part.get("thinking")?))),
        _ => None,
    }
}

/// The text of a `thinking` part: a list of text parts, or text itself.
fn thinking_text(thinking: &Value) -> String {
    match thinking {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text")?.as_str())
            .collect(),
        _ => String::new(),
    }
}

/// A list, or the one item some servers send bare in its place.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> IntoIterator for OneOrMany<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Self::Many(items) => items.into_iter(),
            Self::One(item) => vec![item].into_iter(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A piece of the arguments' JSON text; llama.cpp's server (in some
    /// versions) and TGI send the arguments whole, as a JSON object.
    #[serde(default)]
    arguments: Option<Value>,
}

impl FunctionDelta {
    /// The piece of argument text this delta carries.
    fn arguments_text(&self) -> Option<String> {
        match self.arguments.as_ref()? {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            whole => Some(whole.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// A tool call whose pieces are still arriving.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

impl PartialCall {
    /// Whether a piece that names a function, with `id`, continues this
    /// call rather than beginning the next. A call's name comes with its
    /// first piece (some servers split it over a few, or repeat it), so a
    /// name ends the call only when another id comes with it, or, without
    /// ids to tell calls apart, once this call is whole: named, with
    /// arguments that are a complete JSON object.
    fn continues_with_name(&self, id: Option<&str>) -> bool {
        match id {
            Some(id) if !self.id.is_empty() => self.id == id,
            _ => !self.is_whole(),
        }
    }

    fn is_whole(&self) -> bool {
        !self.name.is_empty()
            && serde_json::from_str::<Value>(&self.arguments).is_ok_and(|value| value.is_object())
    }
}

/// Chunks in, model events out. Text and reasoning pass straight through;
/// tool calls are held until the choice finishes; the stop waits for
/// `[DONE]` so that the usage chunk that follows the finish comes before it.
struct ChunkDecoder {
    peer: Arc<Peer>,
    /// Tool calls in the order they began.
    calls: Vec<PartialCall>,
    /// For each wire `index`, which of `calls` its pieces now continue.
    slots: HashMap<usize, usize>,
    stop: Option<Stop>,
    refused: bool,
    /// Text, reasoning or a piece of a tool call has arrived.
    started: bool,
    /// The reasoning streamed, and whether the server named it
    /// `reasoning_content`: then it is sent back (see [`Reasoning`]).
    reasoning: String,
    reasoning_content: bool,
    think_block: ThinkBlock,
    /// The finish reason came as the reply's last word: after some of the
    /// reply, on a chunk that added nothing, and nothing has come since.
    /// Only then is a quiet or broken stream taken as the reply's end; some
    /// gateways put a finish reason on every chunk.
    finish_is_last: bool,
}

impl ChunkDecoder {
    fn new(peer: Arc<Peer>) -> Self {
        Self {
            peer,
            calls: Vec::new(),
            slots: HashMap::new(),
            stop: None,
            refused: false,
            started: false,
            reasoning: String::new(),
            reasoning_content: false,
            think_block: ThinkBlock::default(),
            finish_is_last: false,
        }
    }

    /// Add a piece to the call it continues, or begin a new call. A piece
    /// continues the call at its `index` (the latest call, from a server that
    /// omits `index`) unless it names a function and
    /// [`PartialCall::continues_with_name`] says it begins another: some
    /// servers give every call index 0, or none, and others change the id
    /// from piece to piece of one call. An empty id is no id.
    fn add_tool_call_piece(&mut self, piece: ToolCallDelta) {
        let id = piece.id.filter(|id| !id.is_empty());
        let name = piece
            .function
            .as_ref()
            .and_then(|function| function.name.clone())
            .filter(|name| !name.is_empty());
        let arguments = piece
            .function
            .as_ref()
            .and_then(FunctionDelta::arguments_text);
        let current = match piece.index {
            Some(index) => self.slots.get(&index).copied(),
            None => self.calls.len().checked_sub(1),
        };
        let continued = current.filter(|&at| {
            name.is_none()
                || self
                    .calls
                    .get(at)
                    .is_some_and(|call| call.continues_with_name(id.as_deref()))
        });
        let at = match continued {
            Some(at) => at,
            None => self.begin_call(piece.index),
        };
        let Some(call) = self.calls.get_mut(at) else {
            return;
        };
        if let Some(id) = id
            && call.id.is_empty()
        {
            call.id = id;
        }
        if let Some(name) = name.filter(|name| name != &call.name) {
            call.name.push_str(&name);
        }
        if let Some(arguments) = arguments {
            call.arguments.push_str(&arguments);
        }
    }

    /// Begin a new call, which the pieces at wire `index` continue from
    /// now on; where it is in `calls`.
    fn begin_call(&mut self, index: Option<usize>) -> usize {
        let at = self.calls.len();
        self.calls.push(PartialCall::default());
        if let Some(index) = index {
            self.slots.insert(index, at);
        }
        at
    }

    fn flush_tool_calls(&mut self, out: &mut Vec<ModelEvent>) {
        self.slots.clear();
        for call in std::mem::take(&mut self.calls) {
            let id = if call.id.is_empty() {
                format!("call_{}", uuid::Uuid::new_v4().simple())
            } else {
                call.id
            };
            out.push(ModelEvent::ToolCall(ToolCall {
                id,
                name: call.name,
                arguments: http::tool_arguments(&call.arguments),
            }));
        }
    }

    fn end(&mut self, out: &mut Vec<ModelEvent>) {
        self.think_block.end(out);
        self.flush_tool_calls(out);
        if self.reasoning_content && !self.reasoning.is_empty() {
            let reasoning = std::mem::take(&mut self.reasoning);
            out.push(ModelEvent::SendBack(
                json!({ REASONING_CONTENT: reasoning }),
            ));
        }
        let stop = match self.stop.unwrap_or(Stop::Done) {
            Stop::Done if self.refused => Stop::Refusal,
            stop => stop,
        };
        out.push(ModelEvent::Stop(stop));
    }

    fn choice(&mut self, choice: Choice, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError> {
        let delta = choice.delta.unwrap_or_default();
        let says_something = delta.says_something();
        if says_something {
            self.finish_is_last = false;
        }
        self.reasoning(delta.reasoning_content, delta.reasoning, out);
        for piece in delta.content.map(Content::pieces).into_iter().flatten() {
            match piece {
                ContentPiece::Text(text) => self.text(text, out),
                ContentPiece::Thought(thought) => self.thought(thought, out),
            }
        }
        if let Some(refusal) = delta.refusal.filter(|text| !text.is_empty()) {
            self.started = true;
            self.refused = true;
            out.push(ModelEvent::Text(refusal));
        }
        for piece in delta.tool_calls.into_iter().flatten() {
            self.started = true;
            self.add_tool_call_piece(piece);
        }
        // Some servers (SGLang, once Ollama) send `""` on every chunk
        // until the real reason, older KoboldCpp the word `"null"`: that is
        // no finish. What was held (tool calls, a think block) goes out at
        // the stream's end, as more may come after a finish reason.
        if let Some(reason) = choice
            .finish_reason
            .filter(|reason| !reason.is_empty() && reason != "null")
        {
            let stop = stop_for(&reason).ok_or_else(|| http::stopped_early(&self.peer, &reason))?;
            self.stop = Some(stop);
            self.finish_is_last = self.started && !says_something;
        }
        Ok(())
    }

    /// A delta's reasoning. A server may send the same reasoning under both
    /// names in one delta, for clients of either: it is one thought. Only
    /// reasoning that came as `reasoning_content` goes back so named; an
    /// empty `reasoning_content` beside `reasoning` says nothing of that.
    fn reasoning(
        &mut self,
        reasoning_content: Option<String>,
        reasoning: Option<String>,
        out: &mut Vec<ModelEvent>,
    ) {
        let reasoning_content = reasoning_content.filter(|thought| !thought.is_empty());
        self.reasoning_content |= reasoning_content.is_some();
        let thought = [reasoning_content, reasoning]
            .into_iter()
            .flatten()
            .find(|thought| !thought.is_empty());
        if let Some(thought) = thought {
            self.reasoning.push_str(&thought);
            self.thought(thought, out);
        }
    }

    fn thought(&mut self, thought: String, out: &mut Vec<ModelEvent>) {
        if !thought.is_empty() {
            self.started = true;
            out.push(ModelEvent::Thought(thought));
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<ModelEvent>) {
        if !text.is_empty() {
            self.started = true;
            self.think_block.read(&text, out);
        }
    }
}

/// What opens and closes the reasoning some models write into their text.
const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Where the reply's text stands with a `<think>…</think>` block at its very
/// start: how Qwen3, DeepSeek-R1 and their kin reason when no reasoning
/// parser splits it off (mlx_lm.server; vLLM and llama.cpp without one). The
/// block becomes thoughts; `<think>` anywhere later is the answer's own text.
/// Tags may arrive split over pieces, so what may be part of one is held.
#[derive(Debug)]
enum ThinkBlock {
    /// Nothing yet tells whether a block opens: what came is held.
    Undecided(String),
    /// Inside the block. `held` may be the start of `</think>`; `begun`
    /// says a thought has come (whitespace before the first is dropped).
    Inside { held: String, begun: bool },
    /// The block has closed; whitespace before the answer is dropped.
    Closed,
    /// The answer, passed on as it comes.
    Answer,
}

impl Default for ThinkBlock {
    fn default() -> Self {
        Self::Undecided(String::new())
    }
}

impl ThinkBlock {
    fn read(&mut self, piece: &str, out: &mut Vec<ModelEvent>) {
        match self {
            Self::Undecided(held) => {
                held.push_str(piece);
                let start = held.trim_start();
                if let Some(inside) = start.strip_prefix(THINK_OPEN) {
                    let inside = inside.to_owned();
                    *self = Self::Inside {
                        held: String::new(),
                        begun: false,
                    };
                    self.read(&inside, out);
                } else if !THINK_OPEN.starts_with(start) {
                    out.push(ModelEvent::Text(std::mem::take(held)));
                    *self = Self::Answer;
                }
            }
            Self::Inside { held, begun } => {
                held.push_str(piece);
                let text = std::mem::take(held);
                match text.split_once(THINK_CLOSE) {
                    Some((thought, answer)) => {
                        think(out, thought, begun);
                        let answer = answer.to_owned();
                        *self = Self::Closed;
                        self.read(&answer, out);
                    }
                    None => {
                        let tail = start_of_close(&text);
                        think(out, text.strip_suffix(tail).unwrap_or(&text), begun);
                        *held = tail.to_owned();
                    }
                }
            }
            Self::Closed => {
                let answer = piece.trim_start();
                if !answer.is_empty() {
                    out.push(ModelEvent::Text(answer.to_owned()));
                    *self = Self::Answer;
                }
            }
            Self::Answer => {
                if !piece.is_empty() {
                    out.push(ModelEvent::Text(piece.to_owned()));
                }
            }
        }
    }

    /// The text has ended: what was held is what it seemed.
    fn end(&mut self, out: &mut Vec<ModelEvent>) {
        match self {
            Self::Undecided(held) if !held.is_empty() => {
                out.push(ModelEvent::Text(std::mem::take(held)));
                *self = Self::Answer;
            }
            Self::Inside { held, begun } => {
                let held = std::mem::take(held);
                think(out, &held, begun);
            }
            _ => {}
        }
    }
}

/// A piece of a `<think>` block as a thought; whitespace before the first
/// is none.
fn think(out: &mut Vec<ModelEvent>, thought: &str, begun: &mut bool) {
    let thought = if *begun {
        thought
    } else {
        thought.trim_start()
    };
    if !thought.is_empty() {
        *begun = true;
        out.push(ModelEvent::Thought(thought.to_owned()));
    }
}

/// The end of `text` that may be the start of `</think>`, cut by the
/// piece's end.
fn start_of_close(text: &str) -> &str {
    (1..THINK_CLOSE.len())
        .rev()
        .filter_map(|length| THINK_CLOSE.get(..length))
        .find(|start| text.ends_with(start))
        .unwrap_or_default()
}

/// What a finish reason says of the reply, if it is one that says the reply
/// is whole: OpenAI's own, and those of the servers that copy its wire (TGI's
/// `eos_token`, Mistral's `model_length`, proxies' Anthropic words). Any
/// other is read as the reply cut short: the reasons for that (vLLM's and
/// SGLang's `abort`, Mistral's and OpenRouter's `error`, DeepSeek's
/// `insufficient_system_resource`) are many and not listed anywhere, and a
/// cut-short reply taken as whole would run half-written tool calls.
fn stop_for(finish_reason: &str) -> Option<Stop> {
    match finish_reason.to_ascii_lowercase().as_str() {
        "stop" | "tool_calls" | "function_call" | "eos" | "eos_token" | "end_turn"
        | "stop_sequence" | "tool_use" => Some(Stop::Done),
        "length" | "max_tokens" | "model_length" => Some(Stop::MaxTokens),
        "content_filter" | "refusal" => Some(Stop::Refusal),
        _ => None,
    }
}

impl Decoder for ChunkDecoder {
    fn decode(&mut self, event: &Event, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            if !self.started && self.stop.is_none() {
                return Err(http::ended_empty(&self.peer));
            }
            self.end(out);
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        if event.event == "error" {
            let value = serde_json::from_str(data).unwrap_or_else(|_| Value::from(data));
            return Err(http::reported_error(&self.peer, &value));
        }
        let chunk: Chunk = http::parse_data(&self.peer, event)?;
        if chunk.object.as_deref() == Some("error") {
            let value: Value = http::parse_data(&self.peer, event)?;
            return Err(http::reported_error(&self.peer, &value));
        }
        if let Some(error) = chunk.error {
            return Err(http::reported_error(&self.peer, &json!({ "error": error })));
        }
        for choice in chunk.choices.into_iter().flatten() {
            self.choice(choice, out)?;
        }
        if let Some(usage) = chunk.usage {
            out.push(ModelEvent::Usage(Usage {
                input_tokens: usage.prompt_tokens.unwrap_or_default(),
                output_tokens: usage.completion_tokens.unwrap_or_default(),
            }));
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError> {
        // Some servers close the stream after the finish without `[DONE]`.
        if self.stop.is_some() {
            self.end(out);
            Ok(())
        } else {
            Err(http::cut_short(&self.peer))
        }
    }

    fn finished(&self) -> bool {
        self.stop.is_some() && self.finish_is_last
    }

    fn started(&self) -> bool {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_host_is_read_the_way_ollama_reads_it() {
        let base = |host: Option<&str>| ollama_base_url(host).map(|url| url.to_string());
        assert_eq!(
            base(None).ok().as_deref(),
            Some("http://127.0.0.1:11434/v1")
        );
        assert_eq!(
            base(Some("gpu-box")).ok().as_deref(),
            Some("http://gpu-box:11434/v1")
        );
        assert_eq!(
            base(Some("0.0.0.0:9000")).ok().as_deref(),
            Some("http://127.0.0.1:9000/v1")
        );
        assert_eq!(
            base(Some("https://ollama.example.com/proxy"))
                .ok()
                .as_deref(),
            Some("https://ollama.example.com/proxy/v1")
        );
        assert_eq!(
            base(Some("[::1]")).ok().as_deref(),
            Some("http://[::1]:11434/v1")
        );
        assert!(base(Some("http://")).is_err());
    }

    #[test]
    fn local_urls_split_into_base_and_model() {
        let split = |text: &str| {
            split_local_url(text)
                .map(|(base, model)| (base.to_string(), model))
                .ok()
        };
        assert_eq!(
            split("http://localhost:5001/v1/qwen3"),
            Some(("http://localhost:5001/v1".to_owned(), "qwen3".to_owned()))
        );
        assert_eq!(
            split("http://10.0.0.2:8000/v1/Qwen/Qwen3-8B"),
            Some((
                "http://10.0.0.2:8000/v1".to_owned(),
                "Qwen/Qwen3-8B".to_owned()
            ))
        );
        assert_eq!(
            split("http://localhost:8080/my-model"),
            Some(("http://localhost:8080/".to_owned(), "my-model".to_owned()))
        );
        assert_eq!(split("http://localhost:8080/v1/"), None);
        assert_eq!(split("http://localhost:8080"), None);
        assert_eq!(split("localhost:8080/v1/m"), None);
        assert_eq!(
            split("http://localhost:8080/v1/v1"),
            Some(("http://localhost:8080/v1".to_owned(), "v1".to_owned())),
            "a model may be called v1 when the URL names it"
        );
    }

    #[test]
    fn a_local_url_without_a_model_is_refused_showing_where_the_name_goes() {
        let refusal = |text: &str| match split_local_url(text) {
            Ok((base, model)) => panic!("`{text}` was taken as {model} at {base}"),
            Err(error) => error.to_string(),
        };
        for (text, example) in [
            ("http://127.0.0.1:5001/v1", "http://127.0.0.1:5001/v1/qwen3"),
            (
                "http://127.0.0.1:5001/v1/",
                "http://127.0.0.1:5001/v1/qwen3",
            ),
            (
                "http://10.0.0.2:8000/openai/v1",
                "http://10.0.0.2:8000/openai/v1/qwen3",
            ),
            ("http://localhost:8080/", "http://localhost:8080/v1/qwen3"),
            ("http://localhost:8080", "http://localhost:8080/v1/qwen3"),
            (
                "http://localhost:8080/api/",
                "http://localhost:8080/api/qwen3",
            ),
        ] {
            assert_eq!(
                refusal(text),
                format!(
                    "`local:{text}` names no model: a model name must follow the URL, \
                     e.g. local:{example}"
                )
            );
        }
    }

    fn peer() -> Arc<Peer> {
        Arc::new(Peer {
            name: "the model server",
            base_url: Url::parse("http://127.0.0.1:1/v1").expect("a URL"),
            model: "m".to_owned(),
            not_running_hint: None,
            key_variable: None,
            missing_model_hint: None,
            base_url_source: None,
        })
    }

    fn decode_all(chunks: &[&str]) -> Vec<ModelEvent> {
        let mut decoder = ChunkDecoder::new(peer());
        let mut out = Vec::new();
        for data in chunks {
            let event = Event {
                data: (*data).to_owned(),
                ..Event::default()
            };
            decoder.decode(&event, &mut out).expect("a valid chunk");
        }
        out
    }

    #[test]
    fn tool_calls_without_index_or_id_still_assemble() {
        let events = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"read","arguments":"{\"pa"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"th\":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let [ModelEvent::ToolCall(call), ModelEvent::Stop(Stop::Done)] = events.as_slice() else {
            panic!("unexpected events {events:?}");
        };
        assert_eq!(call.name, "read");
        assert_eq!(call.arguments, json!({"path": 1}));
        assert!(call.id.starts_with("call_"));
    }

    /// What the decoder makes of `chunks` before the first error, and that
    /// error.
    fn decode_until_error(chunks: &[&str]) -> (Vec<ModelEvent>, Option<DecodeError>) {
        let mut decoder = ChunkDecoder::new(peer());
        let mut out = Vec::new();
        for data in chunks {
            let event = Event {
                data: (*data).to_owned(),
                ..Event::default()
            };
            if let Err(error) = decoder.decode(&event, &mut out) {
                return (out, Some(error));
            }
        }
        (out, None)
    }

    fn read_file(path: &str) -> ModelEvent {
        ModelEvent::ToolCall(ToolCall {
            id: String::new(),
            name: "read_file".to_owned(),
            arguments: json!({ "path": path }),
        })
    }

    /// `events` with every tool call's id blanked: ids Punie made up differ
    /// from run to run.
    fn without_made_up_ids(events: Vec<ModelEvent>) -> Vec<ModelEvent> {
        events
            .into_iter()
            .map(|event| match event {
                ModelEvent::ToolCall(call) if call.id.starts_with("call_") => {
                    ModelEvent::ToolCall(ToolCall {
                        id: String::new(),
                        ..call
                    })
                }
                other => other,
            })
            .collect()
    }

    #[test]
    fn content_sent_as_a_list_of_parts_becomes_thoughts_and_text() {
        // Mistral's reasoning models (Magistral) stream so.
        let events = decode_all(&[
            r#"{"choices":[{"delta":{"role":"assistant","content":[{"type":"thinking","thinking":[{"type":"text","text":"hmm"}]}]}}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":", yes"}],"closed":true},{"type":"text","text":"Hi"}]}}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"reference","reference_ids":[1]},{"type":"text","text":" there"}]}}]}"#,
            r#"{"choices":[{"delta":{"content":" again"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            [
                ModelEvent::Thought("hmm".to_owned()),
                ModelEvent::Thought(", yes".to_owned()),
                ModelEvent::Text("Hi".to_owned()),
                ModelEvent::Text(" there".to_owned()),
                ModelEvent::Text(" again".to_owned()),
                ModelEvent::Stop(Stop::Done),
            ],
            "thinking that came as content is not sent back"
        );
    }

    #[test]
    fn arguments_sent_as_an_object_and_a_lone_tool_call_are_read() {
        // llama.cpp's server (ggml-org/llama.cpp#20198) and TGI.
        let events = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"read_file","arguments":{"path":"a.txt"}}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":{"index":1,"id":"c2","function":{"name":"read_file","arguments":"{\"path\":\"b.txt\"}"}}}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let call = |id: &str, path: &str| {
            ModelEvent::ToolCall(ToolCall {
                id: id.to_owned(),
                name: "read_file".to_owned(),
                arguments: json!({ "path": path }),
            })
        };
        assert_eq!(
            events,
            [
                call("c1", "a.txt"),
                call("c2", "b.txt"),
                ModelEvent::Stop(Stop::Done)
            ]
        );
    }

    #[test]
    fn whole_tool_calls_without_index_or_id_are_told_apart() {
        let no_index = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"","function":{"name":"read_file","arguments":"{\"path\":\"a.txt\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"","function":{"name":"list_files","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let list_files = ModelEvent::ToolCall(ToolCall {
            id: String::new(),
            name: "list_files".to_owned(),
            arguments: json!({}),
        });
        assert_eq!(
            without_made_up_ids(no_index),
            [read_file("a.txt"), list_files, ModelEvent::Stop(Stop::Done)]
        );

        let both_index_0 = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"read_file","arguments":"{\"path\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"a.txt\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"read_file","arguments":"{\"path\":\"b.txt\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            without_made_up_ids(both_index_0),
            [
                read_file("a.txt"),
                read_file("b.txt"),
                ModelEvent::Stop(Stop::Done)
            ]
        );
    }

    #[test]
    fn a_name_split_over_pieces_is_one_call() {
        let events = decode_all(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"read_","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"file","arguments":"{\"path\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"read_file","arguments":"\"a.txt\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            without_made_up_ids(events),
            [read_file("a.txt"), ModelEvent::Stop(Stop::Done)]
        );
    }

    #[test]
    fn vllms_flat_error_chunk_ends_the_call_with_its_message() {
        let (events, error) = decode_until_error(&[
            r#"{"choices":[{"delta":{"content":"Partly"}}]}"#,
            r#"{"object":"error","message":"Engine loop has died","type":"InternalServerError","code":500}"#,
            "[DONE]",
        ]);
        assert_eq!(events, [ModelEvent::Text("Partly".to_owned())]);
        let error = error.expect("the reported error");
        assert_eq!(
            error.error.to_string(),
            "the model server reported an error: Engine loop has died (InternalServerError)"
        );
        assert!(error.transient, "a 500 may pass");

        let (_, too_long) = decode_until_error(&[
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","code":400}"#,
        ]);
        let too_long = too_long.expect("the reported error");
        assert!(
            matches!(too_long.error, ModelError::TooLong(_)),
            "{:?}",
            too_long.error
        );
        assert!(!too_long.transient);
    }

    #[test]
    fn an_empty_reasoning_content_beside_reasoning_is_not_sent_back() {
        let events = decode_all(&[
            r#"{"choices":[{"delta":{"reasoning_content":"","reasoning":"Hmm."}}]}"#,
            r#"{"choices":[{"delta":{"content":"Yes."},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            [
                ModelEvent::Thought("Hmm.".to_owned()),
                ModelEvent::Text("Yes.".to_owned()),
                ModelEvent::Stop(Stop::Done)
            ]
        );
    }

    /// The chunks that stream `pieces` of content, then finish.
    fn content_chunks(pieces: &[&str]) -> Vec<String> {
        let mut chunks: Vec<String> = pieces
            .iter()
            .map(|piece| json!({"choices": [{"delta": {"content": piece}}]}).to_string())
            .collect();
        chunks.push(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#.to_owned());
        chunks.push("[DONE]".to_owned());
        chunks
    }

    fn decode_content(pieces: &[&str]) -> Vec<ModelEvent> {
        let chunks = content_chunks(pieces);
        let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
        decode_all(&chunks)
    }

    fn thought(text: &str) -> ModelEvent {
        ModelEvent::Thought(text.to_owned())
    }

    fn text(text: &str) -> ModelEvent {
        ModelEvent::Text(text.to_owned())
    }

    #[test]
    fn a_think_block_at_the_start_of_the_text_becomes_thoughts() {
        let events = decode_content(&["<think>\nLet me", " see.</think>\n\nHello", " there."]);
        assert_eq!(
            events,
            [
                thought("Let me"),
                thought(" see."),
                text("Hello"),
                text(" there."),
                ModelEvent::Stop(Stop::Done)
            ]
        );
    }

    #[test]
    fn think_tags_split_over_pieces_are_still_found() {
        let events = decode_content(&[
            "\n<th", "ink>", "Hmm", ".</th", "in", "k>", "\n", "Yes, <b>",
        ]);
        assert_eq!(
            events,
            [
                thought("Hmm"),
                thought("."),
                text("Yes, <b>"),
                ModelEvent::Stop(Stop::Done)
            ]
        );
        // Qwen3 with thinking turned off: an empty block.
        let events = decode_content(&["<think>\n\n</think>\n\n", "Hi"]);
        assert_eq!(events, [text("Hi"), ModelEvent::Stop(Stop::Done)]);
    }

    #[test]
    fn think_tags_anywhere_but_the_start_are_text() {
        let events = decode_content(&["Use <think>", " tags.</think>"]);
        assert_eq!(
            events,
            [
                text("Use <think>"),
                text(" tags.</think>"),
                ModelEvent::Stop(Stop::Done)
            ]
        );
        let events = decode_content(&["<thi", "nking> is a tag"]);
        assert_eq!(
            events,
            [text("<thinking> is a tag"), ModelEvent::Stop(Stop::Done)]
        );
        let events = decode_content(&["<"]);
        assert_eq!(events, [text("<"), ModelEvent::Stop(Stop::Done)]);
    }

    #[test]
    fn a_think_block_the_reply_never_closes_is_all_thoughts() {
        let events = decode_content(&["<think>Still going</thi"]);
        assert_eq!(
            events,
            [
                thought("Still going"),
                thought("</thi"),
                ModelEvent::Stop(Stop::Done)
            ]
        );
    }

    #[test]
    fn openais_own_api_is_sent_the_limit_its_reasoning_models_take() {
        let settings = ModelSettings {
            max_output_tokens: Some(500),
            ..ModelSettings::default()
        };
        let field = |server, base_url| {
            OpenAiModel::new(server, base_url, "m", Some("k".to_owned()), &settings)
                .map(|model| model.output_limit)
                .ok()
                .flatten()
        };
        assert_eq!(
            field(OpenAiServer::OpenAi, "https://api.openai.com/v1"),
            Some(("max_completion_tokens", 500))
        );
        assert_eq!(
            field(OpenAiServer::OpenAi, "https://api.deepseek.com"),
            Some(("max_tokens", 500))
        );
        assert_eq!(
            field(OpenAiServer::Ollama, "http://127.0.0.1:11434/v1"),
            Some(("max_tokens", 500))
        );
    }

    #[test]
    fn reasoning_goes_back_on_every_reply_to_the_model_that_reasoned_only() {
        let reply = |text: &str, reasoning: &str, model: &str| Message::Assistant {
            text: text.to_owned(),
            tool_calls: Vec::new(),
            reasoning: Reasoning {
                blocks: if reasoning.is_empty() {
                    Vec::new()
                } else {
                    vec![json!({"reasoning_content": reasoning})]
                },
                model: model.to_owned(),
            },
        };
        let request = ModelRequest {
            messages: Arc::new(vec![
                Message::user("a"),
                reply("One.", "", ""),
                Message::user("b"),
                reply("Two.", "I should answer.", "local:m"),
            ]),
            ..ModelRequest::default()
        };
        let body = request_body("m", "local:m", &request, true);
        let reasoning: Vec<&Value> = body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|message| message["role"] == "assistant")
            .map(|message| &message["reasoning_content"])
            .collect();
        assert_eq!(reasoning, [&json!(""), &json!("I should answer.")]);

        let body = request_body("gpt-5", "openai:gpt-5", &request, true);
        assert!(
            !body.to_string().contains("reasoning_content"),
            "another model is not sent fields it may refuse: {body}"
        );
    }

    #[test]
    fn tool_calls_go_back_with_null_text_and_arguments_a_server_can_read() {
        let request = ModelRequest {
            messages: Arc::new(vec![Message::Assistant {
                text: String::new(),
                tool_calls: [json!("{oops"), json!([1]), json!({"path": "a"})]
                    .into_iter()
                    .map(|arguments| ToolCall {
                        id: "c".to_owned(),
                        name: "n".to_owned(),
                        arguments,
                    })
                    .collect(),
                reasoning: Default::default(),
            }]),
            ..ModelRequest::default()
        };
        let body = request_body("m", "local:m", &request, true);
        assert_eq!(body["messages"][0]["content"], Value::Null);
        let sent: Vec<&Value> = (0..3)
            .map(|call| &body["messages"][0]["tool_calls"][call]["function"]["arguments"])
            .collect();
        assert_eq!(
            sent,
            [&json!("{}"), &json!("{}"), &json!(r#"{"path":"a"}"#)],
            "what a server can read as a JSON object"
        );
        assert!(body.get("tools").is_none());
    }
}
