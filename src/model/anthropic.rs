//! Anthropic's Messages API, streamed, with tool use.
//!
//! This module owns the request body (system, alternating user and assistant
//! messages, `tool_use` and `tool_result` blocks, tools with `input_schema`)
//! and the decoding of the Messages event stream into [`ModelEvent`]s
//! (`input_json_delta` pieces assembled per content block). HTTP, retries,
//! timeouts and error wording are [`super::http`]'s; it must not read the
//! environment (`from_spec` does).

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, Call, DecodeError, Decoder, Event, Peer};
use super::{
    Message, Model, ModelError, ModelEvent, ModelRequest, ModelSettings, ModelStream, Stop,
    ToolCall, ToolSpec, Usage,
};

/// Where the Anthropic API lives unless `ANTHROPIC_BASE_URL` says otherwise.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The API version Punie speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The most output tokens one call may produce.
pub const MAX_TOKENS: u32 = 8192;
/// The environment variable the API key comes from.
pub const KEY_VARIABLE: &str = "ANTHROPIC_API_KEY";

/// A Claude model behind the Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicModel {
    id: String,
    model: String,
    url: Url,
    /// The `x-api-key` header, or why it cannot be sent; a missing key is
    /// reported when the model is called, so the server can start without one.
    api_key: Result<HeaderValue, ModelError>,
    client: reqwest::Client,
    settings: ModelSettings,
    peer: Arc<Peer>,
}

impl AnthropicModel {
    /// `model` at the Messages API under `base_url` (e.g.
    /// `https://api.anthropic.com`), authenticated with `api_key`; calling it
    /// without a key yields an error that says to set `ANTHROPIC_API_KEY`.
    /// `from_spec` uses this after reading the environment; tests and
    /// embedders can call it directly.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        settings: &ModelSettings,
    ) -> Result<Self, ModelError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(ModelError::Setup(
                "`anthropic:` needs a model name, e.g. anthropic:claude-sonnet-4-5".to_owned(),
            ));
        }
        let base_url = http::parse_base_url(base_url, "ANTHROPIC_BASE_URL")?;
        let peer = Peer {
            name: "Anthropic",
            base_url: base_url.clone(),
            model: model.to_owned(),
            not_running_hint: None,
            key_variable: Some(KEY_VARIABLE),
            missing_model_hint: None,
            base_url_source: Some("ANTHROPIC_BASE_URL"),
        };
        Ok(Self {
            id: format!("anthropic:{model}"),
            model: model.to_owned(),
            url: http::join(&base_url, "v1/messages"),
            api_key: api_key_header(api_key),
            client: http::client_for(&base_url)?,
            settings: settings.clone(),
            peer: Arc::new(peer),
        })
    }

    fn headers(&self) -> Result<HeaderMap, ModelError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        headers.insert(HeaderName::from_static("x-api-key"), self.api_key.clone()?);
        Ok(headers)
    }
}

fn api_key_header(api_key: Option<String>) -> Result<HeaderValue, ModelError> {
    let Some(key) = api_key.filter(|key| !key.trim().is_empty()) else {
        return Err(ModelError::Setup(format!(
            "{KEY_VARIABLE} is not set; export it, or choose another model with --model"
        )));
    };
    let mut value = HeaderValue::from_str(key.trim()).map_err(|_| {
        ModelError::Setup(format!(
            "{KEY_VARIABLE} holds characters an HTTP header cannot carry; check its value"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl Model for AnthropicModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ModelRequest) -> ModelStream {
        let headers = match self.headers() {
            Ok(headers) => headers,
            Err(error) => return http::failed(error),
        };
        let (model, id) = (self.model.clone(), self.id.clone());
        let max_tokens = self.settings.max_output_tokens.unwrap_or(MAX_TOKENS);
        let call = Call::new(
            self.url.clone(),
            headers,
            request,
            move |request, pictures| {
                let mut body = request_body(&model, &id, request, pictures);
                body["max_tokens"] = max_tokens.into();
                body
            },
        );
        let peer = self.peer.clone();
        http::model_stream(
            self.client.clone(),
            call,
            self.peer.clone(),
            self.settings.clone(),
            move || EventDecoder::new(peer.clone()),
        )
    }
}

/// The Messages request for `request`; without `pictures`, each picture is
/// sent as a line of text saying it was left out.
/// The request for `model` (the name the server knows it by; `id` is its
/// spec).
pub(crate) fn request_body(model: &str, id: &str, request: &ModelRequest, pictures: bool) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": messages_json(request.sent(), id, pictures),
        "stream": true,
    });
    if !request.system.is_empty() {
        body["system"] = Value::from(&*request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(tool_json).collect();
    }
    body
}

/// The conversation as the Messages API wants it: roles alternate, so
/// neighbours with the same role (tool results and the prompt after them)
/// share one message; empty text is left out, as the API rejects it.
fn messages_json(messages: &[Message], id: &str, pictures: bool) -> Vec<Value> {
    let mut merged: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in super::in_sending_order(messages) {
        let (role, blocks) = content_blocks(message, id, pictures);
        if blocks.is_empty() {
            continue;
        }
        match merged.last_mut() {
            Some((last_role, content)) if *last_role == role => content.extend(blocks),
            _ => merged.push((role, blocks)),
        }
    }
    merged
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// `message` as content blocks of a role; a reply of model `id` carries
/// its thinking blocks back.
fn content_blocks(message: &Message, id: &str, pictures: bool) -> (&'static str, Vec<Value>) {
    match message {
        Message::User(text) => ("user", text_block(text).into_iter().collect()),
        Message::Assistant {
            text,
            tool_calls,
            reasoning,
        } => {
            // Thinking first, as it came, then the text and the tool uses.
            // A history may hold thinking kept before unsigned blocks were
            // left out: the API refuses the whole request for one.
            let thinking = reasoning
                .for_model(id)
                .into_iter()
                .flat_map(|reasoning| reasoning.blocks.iter())
                .filter(|block| goes_back(block))
                .cloned();
            let tool_uses = tool_calls.iter().map(tool_use_block);
            (
                "assistant",
                thinking.chain(text_block(text)).chain(tool_uses).collect(),
            )
        }
        Message::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } => {
            let mut block =
                json!({"type": "tool_result", "tool_use_id": call_id, "is_error": is_error});
            if !content.is_empty() {
                block["content"] = Value::from(content.as_str());
            }
            ("user", vec![block])
        }
        Message::Picture(picture) if pictures => {
            let source =
                json!({"type": "base64", "media_type": picture.mime_type, "data": picture.data});
            ("user", vec![json!({"type": "image", "source": source})])
        }
        Message::Picture(picture) => (
            "user",
            text_block(&picture.left_out()).into_iter().collect(),
        ),
    }
}

/// Whether a kept thinking block can be sent back: the API takes a
/// `thinking` block only with the signature it was streamed with.
fn goes_back(block: &Value) -> bool {
    block["type"] != "thinking"
        || block["signature"]
            .as_str()
            .is_some_and(|signature| !signature.is_empty())
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn tool_use_block(call: &ToolCall) -> Value {
    // The API takes only an object; malformed arguments (kept as text) go back
    // as an empty one, and the tool result already says what was wrong.
    let input = match &call.arguments {
        Value::Object(_) => call.arguments.clone(),
        _ => json!({}),
    };
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

fn tool_json(tool: &ToolSpec) -> Value {
    json!({
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.parameters,
    })
}

/// One event of the Messages stream.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageChange,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: Value,
    },
    /// `ping`, and events newer than this code.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// Deltas newer than this code.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageChange {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl WireUsage {
    /// All input tokens, cached or not, if the event reports input at all.
    fn total_input(&self) -> Option<u64> {
        let input = self.input_tokens?;
        Some(
            input
                + self.cache_creation_input_tokens.unwrap_or_default()
                + self.cache_read_input_tokens.unwrap_or_default(),
        )
    }
}

/// A `tool_use` block whose input is still arriving.
#[derive(Debug)]
struct PartialToolUse {
    id: String,
    name: String,
    /// The input in the start event; the deltas replace it when there are any.
    start_input: Value,
    json: String,
}

impl PartialToolUse {
    fn complete(self) -> ToolCall {
        let arguments = if self.json.trim().is_empty() {
            match self.start_input {
                Value::Null => json!({}),
                input => input,
            }
        } else {
            http::tool_arguments(&self.json)
        };
        ToolCall {
            id: self.id,
            name: self.name,
            arguments,
        }
    }
}

/// A thinking block as it streams in.
#[derive(Debug)]
enum PartialThinking {
    Thinking { thinking: String, signature: String },
    Redacted { data: String },
}

impl PartialThinking {
    /// Whether it can go back: signed, or redacted.
    fn is_whole(&self) -> bool {
        match self {
            Self::Thinking { signature, .. } => !signature.is_empty(),
            Self::Redacted { .. } => true,
        }
    }

    /// The block as the wire takes it back.
    fn block(self) -> Value {
        match self {
            Self::Thinking {
                thinking,
                signature,
            } => json!({"type": "thinking", "thinking": thinking, "signature": signature}),
            Self::Redacted { data } => json!({"type": "redacted_thinking", "data": data}),
        }
    }
}

/// Messages events in, model events out. Text and thinking pass straight
/// through; a tool use is held until its block stops; usage is reported with
/// the `message_delta` that carries the output count.
struct EventDecoder {
    peer: Arc<Peer>,
    tool_uses: BTreeMap<usize, PartialToolUse>,
    /// Thinking blocks begun and not yet ended, by index.
    thinking: BTreeMap<usize, PartialThinking>,
    usage: Usage,
    stop: Option<Stop>,
    /// Text, thinking or a tool use has arrived.
    started: bool,
}

impl EventDecoder {
    fn new(peer: Arc<Peer>) -> Self {
        Self {
            peer,
            tool_uses: BTreeMap::new(),
            thinking: BTreeMap::new(),
            usage: Usage::default(),
            stop: None,
            started: false,
        }
    }

    fn block_started(&mut self, index: usize, block: Block, out: &mut Vec<ModelEvent>) {
        match block {
            Block::Text { text } if !text.is_empty() => {
                self.started = true;
                out.push(ModelEvent::Text(text));
            }
            Block::Thinking {
                thinking,
                signature,
            } => {
                self.started = true;
                if !thinking.is_empty() {
                    out.push(ModelEvent::Thought(thinking.clone()));
                }
                let block = PartialThinking::Thinking {
                    thinking,
                    signature,
                };
                self.thinking.insert(index, block);
            }
            Block::RedactedThinking { data } => {
                self.started = true;
                self.thinking
                    .insert(index, PartialThinking::Redacted { data });
            }
            Block::ToolUse { id, name, input } => {
                self.started = true;
                let tool_use = PartialToolUse {
                    id,
                    name,
                    start_input: input,
                    json: String::new(),
                };
                self.tool_uses.insert(index, tool_use);
            }
            _ => {}
        }
    }

    fn block_delta(&mut self, index: usize, delta: BlockDelta, out: &mut Vec<ModelEvent>) {
        match delta {
            BlockDelta::TextDelta { text } if !text.is_empty() => {
                self.started = true;
                out.push(ModelEvent::Text(text));
            }
            BlockDelta::ThinkingDelta { thinking } if !thinking.is_empty() => {
                self.started = true;
                if let Some(PartialThinking::Thinking {
                    thinking: so_far, ..
                }) = self.thinking.get_mut(&index)
                {
                    so_far.push_str(&thinking);
                }
                out.push(ModelEvent::Thought(thinking));
            }
            BlockDelta::SignatureDelta { signature } => {
                if let Some(PartialThinking::Thinking {
                    signature: so_far, ..
                }) = self.thinking.get_mut(&index)
                {
                    so_far.push_str(&signature);
                }
            }
            BlockDelta::InputJsonDelta { partial_json } => {
                if let Some(tool_use) = self.tool_uses.get_mut(&index) {
                    tool_use.json.push_str(&partial_json);
                }
            }
            _ => {}
        }
    }

    fn block_stopped(&mut self, index: usize, out: &mut Vec<ModelEvent>) {
        // A thinking block that ended unsigned (a proxy or a compatible
        // server that leaves `signature_delta` out) would only be refused.
        if let Some(thinking) = self.thinking.remove(&index)
            && thinking.is_whole()
        {
            out.push(ModelEvent::SendBack(thinking.block()));
        }
        if let Some(tool_use) = self.tool_uses.remove(&index) {
            out.push(ModelEvent::ToolCall(tool_use.complete()));
        }
    }

    fn message_changed(
        &mut self,
        change: MessageChange,
        usage: Option<WireUsage>,
        out: &mut Vec<ModelEvent>,
    ) {
        if let Some(reason) = change.stop_reason {
            self.stop = Some(stop_for(&reason));
        }
        if let Some(usage) = usage {
            if let Some(input) = usage.total_input() {
                self.usage.input_tokens = input;
            }
            if let Some(output) = usage.output_tokens {
                self.usage.output_tokens = output;
            }
            out.push(ModelEvent::Usage(self.usage));
        }
    }

    fn end(&mut self, out: &mut Vec<ModelEvent>) {
        // Blocks whose stop never came go back too, before the tool uses
        // they led to; a thinking block without its signature would only
        // be refused.
        for (_, thinking) in std::mem::take(&mut self.thinking) {
            if thinking.is_whole() {
                out.push(ModelEvent::SendBack(thinking.block()));
            }
        }
        for (_, tool_use) in std::mem::take(&mut self.tool_uses) {
            out.push(ModelEvent::ToolCall(tool_use.complete()));
        }
        out.push(ModelEvent::Stop(self.stop.unwrap_or(Stop::Done)));
    }
}

fn stop_for(stop_reason: &str) -> Stop {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => Stop::MaxTokens,
        "refusal" => Stop::Refusal,
        // end_turn, tool_use, stop_sequence, pause_turn, and reasons to come.
        _ => Stop::Done,
    }
}

impl Decoder for EventDecoder {
    fn decode(&mut self, event: &Event, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError> {
        if event.data.trim().is_empty() {
            return Ok(());
        }
        if event.event == "error" {
            // Anthropic's own error events say `"type": "error"` in the data
            // too; llama.cpp's `/v1/messages` names only the event.
            let value = serde_json::from_str(&event.data)
                .unwrap_or_else(|_| Value::from(event.data.as_str()));
            return Err(http::reported_error(&self.peer, &value));
        }
        match http::parse_data(&self.peer, event)? {
            WireEvent::MessageStart { message } => {
                if let Some(input) = message.usage.as_ref().and_then(WireUsage::total_input) {
                    self.usage.input_tokens = input;
                }
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => self.block_started(index, content_block, out),
            WireEvent::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            WireEvent::ContentBlockStop { index } => self.block_stopped(index, out),
            WireEvent::MessageDelta { delta, usage } => self.message_changed(delta, usage, out),
            // An empty reply that ended without saying why is a failure
            // the server did not word, not an answer.
            WireEvent::MessageStop if !self.started && self.stop.is_none() => {
                return Err(http::ended_empty(&self.peer));
            }
            WireEvent::MessageStop => self.end(out),
            WireEvent::Error { error } => {
                return Err(http::reported_error(&self.peer, &json!({ "error": error })));
            }
            WireEvent::Other => {}
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError> {
        if self.stop.is_some() {
            self.end(out);
            Ok(())
        } else {
            Err(http::cut_short(&self.peer))
        }
    }

    fn finished(&self) -> bool {
        self.stop.is_some()
    }

    fn started(&self) -> bool {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reasoning;

    #[test]
    fn tool_results_and_the_next_prompt_share_one_user_message() {
        let messages = vec![
            Message::user("look"),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "toolu_1".to_owned(),
                    name: "read".to_owned(),
                    arguments: json!({"path": "a"}),
                }],
                reasoning: Default::default(),
            },
            Message::ToolResult {
                call_id: "toolu_1".to_owned(),
                name: "read".to_owned(),
                content: "text".to_owned(),
                is_error: false,
            },
            Message::user("and now?"),
        ];
        let json = messages_json(&messages, "anthropic:m", true);
        assert_eq!(json.len(), 3);
        assert_eq!(json[1]["content"][0]["type"], "tool_use");
        assert_eq!(json[2]["role"], "user");
        assert_eq!(json[2]["content"][0]["type"], "tool_result");
        assert_eq!(json[2]["content"][1]["text"], "and now?");
    }

    fn decoder() -> EventDecoder {
        EventDecoder::new(Arc::new(Peer {
            name: "Anthropic",
            base_url: Url::parse("https://api.anthropic.com").expect("a URL"),
            model: "m".to_owned(),
            not_running_hint: None,
            key_variable: None,
            missing_model_hint: None,
            base_url_source: None,
        }))
    }

    /// What `decoder` makes of events with these `data`.
    fn decode(decoder: &mut EventDecoder, data: &[&str]) -> Vec<ModelEvent> {
        let mut out = Vec::new();
        for data in data {
            let event = Event {
                data: (*data).to_owned(),
                ..Event::default()
            };
            decoder.decode(&event, &mut out).expect("a known shape");
        }
        out
    }

    #[test]
    fn unknown_events_and_blocks_are_ignored() {
        let out = decode(
            &mut decoder(),
            &[
                r#"{"type":"ping"}"#,
                r#"{"type":"something_new","x":1}"#,
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use_2","id":"x"}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}"#,
            ],
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn thinking_whose_block_stop_never_came_goes_back_if_signed() {
        let mut decoder = decoder();
        let mut out = decode(
            &mut decoder,
            &[
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"Hm.","signature":"EqQB"}}"#,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"thinking","thinking":"Unsigned.","signature":""}}"#,
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"read","input":{}}}"#,
            ],
        );
        out.clear();
        decoder.end(&mut out);
        assert_eq!(
            out[0],
            ModelEvent::SendBack(
                json!({"type": "thinking", "thinking": "Hm.", "signature": "EqQB"})
            )
        );
        assert!(matches!(out[1], ModelEvent::ToolCall(_)), "{out:?}");
        assert_eq!(out.len(), 3, "{out:?}");
    }

    #[test]
    fn thinking_blocks_come_whole_and_signed_and_go_back_before_the_tool_use() {
        let out = decode(
            &mut decoder(),
            &[
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Read "}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"it."}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}"#,
                r#"{"type":"content_block_stop","index":0}"#,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"c2VjcmV0"}}"#,
                r#"{"type":"content_block_stop","index":1}"#,
            ],
        );
        let thinking = json!({"type": "thinking", "thinking": "Read it.", "signature": "EqQB"});
        let redacted = json!({"type": "redacted_thinking", "data": "c2VjcmV0"});
        assert_eq!(
            out,
            [
                ModelEvent::Thought("Read ".to_owned()),
                ModelEvent::Thought("it.".to_owned()),
                ModelEvent::SendBack(thinking.clone()),
                ModelEvent::SendBack(redacted.clone()),
            ]
        );

        let reply = |model: &str| Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "toolu_1".to_owned(),
                name: "read".to_owned(),
                arguments: json!({"path": "a"}),
            }],
            reasoning: Reasoning {
                blocks: vec![thinking.clone(), redacted.clone()],
                model: model.to_owned(),
            },
        };
        let sent = messages_json(
            &[Message::user("look"), reply("anthropic:m")],
            "anthropic:m",
            true,
        );
        assert_eq!(sent[1]["content"][0], thinking);
        assert_eq!(sent[1]["content"][1], redacted);
        assert_eq!(sent[1]["content"][2]["type"], "tool_use");

        let to_another = messages_json(
            &[Message::user("look"), reply("anthropic:m")],
            "anthropic:n",
            true,
        );
        assert_eq!(
            to_another[1]["content"].as_array().map(Vec::len),
            Some(1),
            "another model is not sent this one's signatures: {to_another:?}"
        );
    }
}
