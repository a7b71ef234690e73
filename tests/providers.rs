//! The network model providers against local fakes that speak the real wire
//! formats: OpenAI Chat Completions (and the local servers that copy it) and
//! Anthropic Messages, streamed as server-sent events.
//!
//! Every provider is chosen the way the server chooses it, through
//! `from_spec_with_env`, with its base URL and key given per test instead of
//! through the process environment, which parallel tests would race on.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fake_provider::{
    FakeProvider, Part, Reply, Wire, anthropic_event, anthropic_message_end,
    anthropic_message_start, anthropic_text_block, anthropic_text_reply, anthropic_tool_block,
    llama_cpp_refuses_pictures, openai_delta, openai_done, openai_finish, openai_text_reply,
    openai_usage, picture_too_large,
};
use futures::StreamExt as _;
use punie::model::{
    Message, Model, ModelError, ModelEvent, ModelRequest, ModelSettings, ModelStream, OpenAiModel,
    OpenAiServer, Picture, Reasoning, Stop, ToolCall, ToolSpec, Usage, from_spec_with_env,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// How long any single wait in a test may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Patient enough for any test, and no retries unless a test asks.
fn settings() -> ModelSettings {
    ModelSettings {
        idle_timeout: Duration::from_secs(10),
        retries: 0,
        retry_backoff: Duration::from_millis(1),
        max_output_tokens: None,
    }
}

/// Choose a model by `spec` with only `vars` set in its environment.
fn model_with(spec: &str, settings: &ModelSettings, vars: &[(&str, &str)]) -> Arc<dyn Model> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let env = move |name: &str| {
        vars.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    match from_spec_with_env(spec, settings, env) {
        Ok(model) => model,
        Err(error) => panic!("`{spec}` was refused: {error}"),
    }
}

/// The fake as a provider speaking `wire`: `local:` for OpenAI's format,
/// `anthropic:` for Anthropic's.
fn model_on(wire: Wire, fake: &FakeProvider, settings: &ModelSettings) -> Arc<dyn Model> {
    let (spec, env) = wire.model_spec(fake);
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    model_with(&spec, settings, &env)
}

/// The fake as an OpenAI-compatible `local:` server.
fn local_model(fake: &FakeProvider, settings: &ModelSettings) -> Arc<dyn Model> {
    model_on(Wire::OpenAi, fake, settings)
}

/// The fake as the Anthropic API.
fn anthropic_model(fake: &FakeProvider, settings: &ModelSettings) -> Arc<dyn Model> {
    model_on(Wire::Anthropic, fake, settings)
}

fn ask(prompt: &str) -> ModelRequest {
    ModelRequest {
        system: "You are Punie.".into(),
        messages: Arc::new(vec![Message::user(prompt)]),
        left_out: 0,
        without_pictures: false,
        tools: Arc::new(Vec::new()),
        turn: 1,
    }
}

/// Everything one call produced, and the error it ended with, if any.
async fn run(model: &dyn Model, request: ModelRequest) -> (Vec<ModelEvent>, Option<ModelError>) {
    collect(model.stream(request)).await
}

/// What `model` answers to `request`, which must not fail.
async fn answer(model: &dyn Model, request: ModelRequest) -> Vec<ModelEvent> {
    let (events, error) = run(model, request).await;
    assert!(error.is_none(), "{error:?}");
    events
}

async fn collect(mut stream: ModelStream) -> (Vec<ModelEvent>, Option<ModelError>) {
    within("the model's reply", async {
        let mut events = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => events.push(event),
                Err(error) => return (events, Some(error)),
            }
        }
        (events, None)
    })
    .await
}

/// The error a call ended with; fails if it ended well.
async fn error_of(model: &dyn Model, request: ModelRequest) -> String {
    match run(model, request).await {
        (_, Some(error)) => error.to_string(),
        (events, None) => panic!("expected an error, got {events:?}"),
    }
}

fn text(piece: &str) -> ModelEvent {
    ModelEvent::Text(piece.to_owned())
}

fn thought(piece: &str) -> ModelEvent {
    ModelEvent::Thought(piece.to_owned())
}

fn usage(input_tokens: u64, output_tokens: u64) -> ModelEvent {
    ModelEvent::Usage(Usage {
        input_tokens,
        output_tokens,
    })
}

fn tool_call(id: &str, name: &str, arguments: Value) -> ModelEvent {
    ModelEvent::ToolCall(ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments,
    })
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    listener.local_addr().expect("its address")
}

/// A conversation with every kind of message, and two tools.
fn conversation() -> ModelRequest {
    ModelRequest {
        system: "You are Punie.".into(),
        messages: Arc::new(vec![
            Message::user("What is in main.rs?"),
            Message::Assistant {
                text: "Let me look.".to_owned(),
                tool_calls: vec![ToolCall {
                    id: "call_1".to_owned(),
                    name: "read_file".to_owned(),
                    arguments: json!({"path": "src/main.rs"}),
                }],
                reasoning: Default::default(),
            },
            Message::ToolResult {
                call_id: "call_1".to_owned(),
                name: "read_file".to_owned(),
                content: "fn main() {}".to_owned(),
                is_error: false,
            },
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_2".to_owned(),
                    name: "run".to_owned(),
                    arguments: json!({"command": "cargo test"}),
                }],
                reasoning: Default::default(),
            },
            Message::ToolResult {
                call_id: "call_2".to_owned(),
                name: "run".to_owned(),
                content: "no such command".to_owned(),
                is_error: true,
            },
        ]),
        left_out: 0,
        without_pictures: false,
        tools: Arc::new(vec![
            ToolSpec {
                name: "read_file".to_owned(),
                description: "Read a file of the workspace.".to_owned(),
                parameters: json!({
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                }),
            },
            ToolSpec {
                name: "run".to_owned(),
                description: "Run a command.".to_owned(),
                parameters: json!({
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                }),
            },
        ]),
        turn: 1,
    }
}

// ---------------------------------------------------------------- OpenAI

#[tokio::test]
async fn openai_text_streams_each_delta_as_it_arrives() {
    let gate = Arc::new(Notify::new());
    let fake = FakeProvider::start([Reply::Stream(vec![
        Part::Send(openai_delta(json!({"role": "assistant", "content": ""}))),
        Part::Send(openai_delta(json!({"content": "Hel"}))),
        Part::Wait(gate.clone()),
        Part::Send(openai_delta(json!({"content": "lo"}))),
        Part::Send(openai_delta(json!({"content": ", world"}))),
        Part::Send(openai_finish("stop")),
        Part::Send(openai_usage(12, 3)),
        Part::Send(openai_done()),
    ])])
    .await;
    let model = local_model(&fake, &settings());
    let mut stream = model.stream(ask("hello"));

    // The first piece arrives while the server still holds back the rest.
    let first = within("the first piece", stream.next()).await;
    assert_eq!(first.map(|item| item.ok()), Some(Some(text("Hel"))));
    gate.notify_one();

    let (rest, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        rest,
        [
            text("lo"),
            text(", world"),
            usage(12, 3),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn a_proxy_that_sends_a_finish_reason_on_every_chunk_is_read_to_the_streams_end() {
    // Some gateways put `"stop"` on every chunk; older KoboldCpp `"null"`
    // until the end. A pause past the finish grace is no end of the reply.
    let chunk = |delta: Value, reason: &str| {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
        )
    };
    let parts = vec![
        // Before anything of the reply: a long prefill follows.
        Part::Send(chunk(json!({"role": "assistant"}), "stop")),
        Part::Flush,
        Part::Pause(Duration::from_millis(700)),
        Part::Send(chunk(json!({"content": "<think>Hm"}), "stop")),
        Part::Send(chunk(json!({"content": "m.</think>Rea"}), "null")),
        Part::Send(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "read_file", "arguments": "{\"pa"}}]}),
            "stop",
        )),
        Part::Flush,
        // Longer than the grace a finished reply is given.
        Part::Pause(Duration::from_millis(700)),
        Part::Send(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "th\":\"a\"}"}}]}),
            "tool_calls",
        )),
        Part::Send("data: [DONE]\n\n".to_owned()),
    ];
    let fake = FakeProvider::start([Reply::Stream(parts)]).await;
    // A finished reply gets half the idle timeout, 500 ms, to end.
    let settings = ModelSettings {
        idle_timeout: Duration::from_millis(1000),
        ..settings()
    };
    let (events, error) = run(&*local_model(&fake, &settings), ask("x")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        [
            ModelEvent::Thought("Hm".to_owned()),
            ModelEvent::Thought("m.".to_owned()),
            text("Rea"),
            tool_call("call_1", "read_file", json!({"path": "a"})),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn openai_tool_call_arguments_split_mid_json_are_assembled() {
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": "call_abc", "type": "function",
             "function": {"name": "read_file", "arguments": ""}}
        ]})),
        openai_delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"pa"}}]})),
        openai_delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "th\": \"src/ma"}}]}),
        ),
        openai_delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "in.rs\"}"}}]})),
        openai_finish("tool_calls"),
        openai_usage(30, 9),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("read it")).await;
    // The calls go out at the stream's end, after the usage that follows
    // the finish reason: more of them could have come.
    assert_eq!(
        events,
        [
            usage(30, 9),
            tool_call("call_abc", "read_file", json!({"path": "src/main.rs"})),
            ModelEvent::Stop(Stop::Done),
        ]
    );
}

#[tokio::test]
async fn several_openai_tool_calls_in_one_message_come_out_in_order() {
    let call = |index: usize, id: &str, name: &str| {
        openai_delta(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}}]}),
        )
    };
    let arguments = |index: usize, piece: &str| {
        openai_delta(json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    };
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"role": "assistant", "content": "Two things. "})),
        call(0, "call_a", "read_file"),
        arguments(0, "{\"path\":"),
        call(1, "call_b", "list"),
        arguments(1, "{\"dir\": \"src\"}"),
        arguments(0, " \"a.rs\"}"),
        call(2, "call_c", "run"),
        arguments(2, "{\"command\": \"ls"),
        openai_finish("tool_calls"),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("go")).await;
    assert_eq!(
        events,
        [
            text("Two things. "),
            tool_call("call_a", "read_file", json!({"path": "a.rs"})),
            tool_call("call_b", "list", json!({"dir": "src"})),
            // Malformed arguments come through as the raw text.
            tool_call(
                "call_c",
                "run",
                Value::String("{\"command\": \"ls".to_owned())
            ),
            ModelEvent::Stop(Stop::Done),
        ]
    );
}

#[tokio::test]
async fn a_new_id_at_an_index_already_in_use_begins_another_tool_call() {
    // Some servers give every call index 0; only the id, with a name, tells
    // them apart, whether the calls share a chunk or follow one another.
    let call = |id: &str, name: &str, arguments: &str| {
        json!({"index": 0, "id": id, "type": "function",
               "function": {"name": name, "arguments": arguments}})
    };
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"role": "assistant", "content": null, "tool_calls": [
            call("x1", "read_file", "{\"path\": \"a.txt\"}"),
            call("x2", "list_files", "{}"),
        ]})),
        openai_delta(json!({"tool_calls": [call("y1", "read_file", "{\"pa")]})),
        openai_delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "th\": \"b.txt\"}"}}]}),
        ),
        openai_delta(json!({"tool_calls": [call("y1", "", "")]})),
        openai_delta(json!({"tool_calls": [call("y2", "search", "{\"pattern\": ")]})),
        // A server that changes the id from piece to piece of one call: no
        // name, so no new call.
        openai_delta(json!({"tool_calls": [
            {"index": 0, "id": "y2-again", "function": {"arguments": "\"x\"}"}}
        ]})),
        openai_finish("tool_calls"),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("go")).await;
    assert_eq!(
        events,
        [
            tool_call("x1", "read_file", json!({"path": "a.txt"})),
            tool_call("x2", "list_files", json!({})),
            tool_call("y1", "read_file", json!({"path": "b.txt"})),
            tool_call("y2", "search", json!({"pattern": "x"})),
            ModelEvent::Stop(Stop::Done),
        ]
    );
}

#[tokio::test]
async fn reasoning_of_either_spelling_becomes_thoughts() {
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"role": "assistant", "reasoning_content": "First, "})),
        openai_delta(json!({"reasoning": "then."})),
        openai_delta(json!({"content": "Answer."})),
        openai_finish("stop"),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("think")).await;
    assert_eq!(
        events,
        [
            thought("First, "),
            thought("then."),
            text("Answer."),
            // Named `reasoning_content`, it is sent back with the reply.
            ModelEvent::SendBack(json!({"reasoning_content": "First, then."})),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn reasoning_named_only_reasoning_is_not_sent_back() {
    // Groq and Cerebras stream `reasoning` and refuse `reasoning_content`
    // in the messages they are sent.
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"role": "assistant", "reasoning": "Hm."})),
        openai_delta(json!({"content": "Answer."})),
        openai_finish("stop"),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("think")).await;
    assert_eq!(
        events,
        [
            thought("Hm."),
            text("Answer."),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn reasoning_sent_under_both_spellings_in_one_delta_is_one_thought() {
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"role": "assistant", "reasoning_content": "R1", "reasoning": "R1"})),
        openai_delta(json!({"reasoning_content": "", "reasoning": "R2"})),
        openai_delta(json!({"content": "Answer."})),
        openai_finish("stop"),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("think")).await;
    assert_eq!(
        events,
        [
            thought("R1"),
            thought("R2"),
            text("Answer."),
            ModelEvent::SendBack(json!({"reasoning_content": "R1R2"})),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn openai_finish_reasons_become_stops() {
    let reply = |reason: &str| {
        Reply::events([
            openai_delta(json!({"content": "x"})),
            openai_finish(reason),
            openai_done(),
        ])
    };
    // TGI ends with `eos_token`; proxies may pass on Anthropic's words.
    let reasons = [
        ("length", Stop::MaxTokens),
        ("content_filter", Stop::Refusal),
        ("stop", Stop::Done),
        ("eos_token", Stop::Done),
        ("end_turn", Stop::Done),
        ("function_call", Stop::Done),
    ];
    let fake = FakeProvider::start(reasons.map(|(reason, _)| reply(reason))).await;
    let model = local_model(&fake, &settings());
    for (reason, expected) in reasons {
        let events = answer(&*model, ask("x")).await;
        assert_eq!(events.last(), Some(&ModelEvent::Stop(expected)), "{reason}");
    }
}

#[tokio::test]
async fn a_reply_the_server_cut_short_fails_naming_the_finish_reason_and_runs_no_tool() {
    // vLLM's `abort` (a request it dropped), Mistral's `error`.
    for reason in ["abort", "error"] {
        let fake = FakeProvider::start([Reply::events([
            openai_delta(json!({"role": "assistant", "content": "Let me "})),
            openai_delta(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                               "function": {"name": "run", "arguments": "{\"comm"}}]})),
            openai_finish(reason),
            openai_done(),
        ])])
        .await;
        let (events, error) = run(&*local_model(&fake, &one_retry()), ask("x")).await;
        assert_eq!(events, [text("Let me ")], "{reason}: no tool call, no stop");
        let error = error.expect("an error").to_string();
        assert!(
            error.contains(&format!("finish reason `{reason}`")) && error.contains("incomplete"),
            "{error}"
        );
        assert_eq!(fake.requests().len(), 1, "{reason}: the answer had begun");
    }
}

#[tokio::test]
async fn a_reply_cut_short_before_its_first_token_is_retried() {
    let first = Reply::events([openai_finish("abort"), openai_done()]);
    the_retry_alone_is_heard(Wire::OpenAi, first).await;
}

#[tokio::test]
async fn an_error_in_the_middle_of_an_openai_stream_ends_the_call_with_its_message() {
    let fake = FakeProvider::start([Reply::events([
        openai_delta(json!({"content": "Partly"})),
        format!(
            "data: {}\n\n",
            json!({"error": {"message": "The server had an error while processing your request.",
                             "type": "server_error"}})
        ),
    ])])
    .await;
    let (events, error) = run(&*local_model(&fake, &settings()), ask("x")).await;
    assert_eq!(events, [text("Partly")]);
    let error = error.expect("an error").to_string();
    assert!(
        error.contains("The server had an error while processing your request."),
        "{error}"
    );
}

// ------------------------------- Retries and the idle timeout, either wire

/// A 429 as the provider words it, without `Retry-After`.
fn rate_limited(wire: Wire) -> Reply {
    wire.error_status(429, "rate_limit_error", "Rate limit reached")
}

/// One retry, at once.
fn one_retry() -> ModelSettings {
    ModelSettings {
        retries: 1,
        ..settings()
    }
}

/// `first`, then a good reply: the call succeeds on the retry.
async fn succeeds_after(wire: Wire, first: Reply) {
    succeeds_on_the_retry(wire, first, &one_retry()).await;
}

/// [`succeeds_after`] with `settings`; the provider, for what it was asked.
async fn succeeds_on_the_retry(wire: Wire, first: Reply, settings: &ModelSettings) -> FakeProvider {
    let fake = FakeProvider::start([first, Reply::events(wire.text_reply(&["fine"]))]).await;
    let (events, error) = run(&*model_on(wire, &fake, settings), ask("x")).await;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    assert_eq!(events.first(), Some(&text("fine")), "{wire:?}");
    assert_eq!(
        fake.requests().len(),
        2,
        "{wire:?}: one attempt and one retry"
    );
    fake
}

#[tokio::test]
async fn a_429_is_retried_when_retry_after_says_so() {
    for wire in Wire::ALL {
        // Backoff alone would wait longer than the test's deadline: only
        // `Retry-After: 0` lets this finish.
        let settings = ModelSettings {
            retries: 1,
            retry_backoff: Duration::from_secs(3600),
            ..settings()
        };
        let first = rate_limited(wire).with_header("retry-after", "0");
        succeeds_on_the_retry(wire, first, &settings).await;
    }
}

/// `first`, then a good reply: `words` are told of the wait before the
/// retry is made, and the call succeeds on it. The provider, for what it
/// was asked.
async fn told_then_retried(
    wire: Wire,
    first: Reply,
    settings: &ModelSettings,
    words: &str,
) -> FakeProvider {
    let fake = FakeProvider::start([first, Reply::events(wire.text_reply(&["fine"]))]).await;
    let mut stream = model_on(wire, &fake, settings).stream(ask("x"));
    let told = within("the notice of the wait", stream.next()).await;
    assert!(
        matches!(&told, Some(Ok(ModelEvent::Waiting(said))) if said == words),
        "{wire:?}: {told:?}, not {words}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "{wire:?}: told before the wait, not after it"
    );
    let (events, error) = collect(stream).await;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    assert_eq!(events.first(), Some(&text("fine")), "{wire:?}");
    fake
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_retry_after_asks_and_the_wait_is_told_first() {
    let settings = ModelSettings {
        retries: 2,
        ..settings()
    };
    for wire in Wire::ALL {
        let cases = [
            (rate_limited(wire), "is rate-limiting"),
            (
                wire.error_status(503, "api_error", "overloaded"),
                "is unavailable (503 Service Unavailable)",
            ),
        ];
        for (refusal, state) in cases {
            // The backoff is a millisecond: only the header makes it wait longer.
            let first = refusal.with_header("retry-after", "1");
            let words = format!(
                "{} {state}: it asks to wait 1 s before trying again, so Punie waits and then \
                 tries again (retry 1 of 2)",
                wire.peer_name()
            );
            let fake = told_then_retried(wire, first, &settings, &words).await;
            let [first, second] = fake
                .requests()
                .try_into()
                .expect("one attempt and one retry");
            let waited = second.at.duration_since(first.at);
            assert!(
                waited >= Duration::from_secs(1),
                "{wire:?}: retried after {waited:?}"
            );
        }
    }
}

/// A wait of Punie's own backoff that a person would notice is told too,
/// with what went wrong; a shorter one passes unsaid.
#[tokio::test]
async fn a_backoff_of_a_second_or_more_is_told_before_it_is_waited_out() {
    for wire in Wire::ALL {
        let peer = wire.peer_name();
        let cases = [
            (
                wire.error_status(503, "api_error", "overloaded"),
                format!("{peer} is unavailable (503 Service Unavailable)"),
            ),
            (
                Reply::Reset,
                format!("{peer} dropped the connection before answering"),
            ),
            (
                Reply::events(opening_without_a_token(wire)),
                format!("{peer} failed before its reply began"),
            ),
        ];
        for (failure, what_went_wrong) in cases {
            let settings = ModelSettings {
                retries: 2,
                retry_backoff: Duration::from_secs(1),
                ..settings()
            };
            let words = format!("{what_went_wrong}, so Punie tries again in 1 s (retry 1 of 2)");
            told_then_retried(wire, failure, &settings, &words).await;
        }
        // Half a second is not told.
        let settings = ModelSettings {
            retries: 1,
            retry_backoff: Duration::from_millis(500),
            ..settings()
        };
        let fake = FakeProvider::start([
            wire.error_status(503, "api_error", "overloaded"),
            Reply::events(wire.text_reply(&["fine"])),
        ])
        .await;
        let (events, error) = run(&*model_on(wire, &fake, &settings), ask("x")).await;
        assert!(error.is_none(), "{wire:?}: {error:?}");
        assert_eq!(events.first(), Some(&text("fine")), "{wire:?}");
    }
}

#[tokio::test]
async fn a_retry_after_longer_than_punie_waits_fails_the_call_at_once() {
    for wire in Wire::ALL {
        let first = rate_limited(wire).with_header("retry-after", "3600");
        let fake = FakeProvider::start([first, Reply::events(wire.text_reply(&["late"]))]).await;
        // Waiting even the longest wait Punie allows would outlast the
        // test's deadline.
        let error = error_of(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert_eq!(
            error,
            format!(
                "{} is rate-limiting: it asks to wait 3600 s before trying again: \
                 Rate limit reached (rate_limit_error)",
                wire.peer_name()
            )
        );
        assert_eq!(fake.requests().len(), 1, "{wire:?}: not retried");
    }
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried() {
    for wire in Wire::ALL {
        succeeds_after(wire, rate_limited(wire)).await;
    }
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    for wire in Wire::ALL {
        succeeds_after(wire, Reply::Reset).await;
    }
}

#[tokio::test]
async fn a_connection_closed_before_the_answer_is_retried() {
    for wire in Wire::ALL {
        succeeds_after(wire, Reply::Close).await;
    }
}

#[tokio::test]
async fn a_server_error_is_retried() {
    for wire in Wire::ALL {
        succeeds_after(wire, wire.error_status(503, "api_error", "overloaded")).await;
    }
}

#[tokio::test]
async fn an_overloaded_anthropic_api_is_retried() {
    // Anthropic's own status for "overloaded", outside the standard names.
    succeeds_after(
        Wire::Anthropic,
        Wire::Anthropic.error_status(529, "overloaded_error", "Overloaded"),
    )
    .await;
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_token_is_not_retried() {
    for wire in Wire::ALL {
        let crash = Arc::new(Notify::new());
        let fake = FakeProvider::start([
            wire.opening_then("Half", [Part::Wait(crash.clone()), Part::Abort]),
            Reply::events(wire.text_reply(&["again"])),
        ])
        .await;
        let mut stream = model_on(wire, &fake, &one_retry()).stream(ask("x"));
        let first = within("the first token", stream.next()).await;
        assert!(
            matches!(&first, Some(Ok(event)) if *event == text("Half")),
            "{wire:?}: {first:?}"
        );
        crash.notify_one();
        let (rest, error) = collect(stream).await;
        assert_eq!(rest, [], "{wire:?}: nothing is said twice");
        let error = error.expect("the broken stream").to_string();
        let broke = format!("the stream from {} broke", wire.peer_name());
        assert!(error.starts_with(&broke), "{wire:?}: {error}");
        assert!(error.ends_with(KEPT), "{wire:?}: {error}");
        assert_eq!(fake.requests().len(), 1, "{wire:?}");
    }
}

/// What a person is told after a reply broke off, once its text began.
const KEPT: &str = "; the part of the reply that arrived is kept: send \"go on\" for the model \
                    to continue from there, or send the prompt again";

#[tokio::test]
async fn a_reply_that_broke_off_before_any_text_says_to_send_the_prompt_again() {
    // Only a thought came before the stream ended: no text is kept to go on from.
    let opening = [
        anthropic_message_start(10),
        anthropic_event(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "Hm"}})),
    ];
    let fake = FakeProvider::start([Reply::events(opening)]).await;
    let (events, error) = run(&*anthropic_model(&fake, &one_retry()), ask("x")).await;
    assert_eq!(events, [thought("Hm")]);
    assert_eq!(
        error.expect("the reply cut short").to_string(),
        "Anthropic closed the stream before the reply was complete; none of the reply's text \
         had arrived: send the prompt again to retry"
    );
}

/// How a reply opens before its first token: a role, `message_start`, an
/// empty text block, `ping`, and, for OpenAI, an early usage chunk.
fn opening_without_a_token(wire: Wire) -> Vec<String> {
    match wire {
        Wire::OpenAi => vec![
            openai_delta(json!({"role": "assistant", "content": ""})),
            openai_usage(7, 0),
        ],
        Wire::Anthropic => vec![
            anthropic_message_start(7),
            anthropic_event(json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            })),
            anthropic_event(json!({"type": "ping"})),
        ],
    }
}

/// `first`, then a good reply: the call succeeds on the retry, and says
/// only what the good reply said.
async fn the_retry_alone_is_heard(wire: Wire, first: Reply) {
    let fake = FakeProvider::start([first, Reply::events(wire.text_reply(&["fine"]))]).await;
    let (events, error) = run(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
    assert!(error.is_none(), "{wire:?}: {error:?}");
    let usage = match wire {
        Wire::OpenAi => usage(10, 5),
        Wire::Anthropic => usage(25, 15),
    };
    assert_eq!(
        events,
        [text("fine"), usage, ModelEvent::Stop(Stop::Done)],
        "{wire:?}"
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "{wire:?}: one attempt and one retry"
    );
}

#[tokio::test]
async fn a_stream_that_ends_before_its_first_token_is_retried() {
    for wire in Wire::ALL {
        let first = Reply::events(opening_without_a_token(wire));
        the_retry_alone_is_heard(wire, first).await;
    }
}

#[tokio::test]
async fn a_stream_that_breaks_before_its_first_token_is_retried() {
    for wire in Wire::ALL {
        let mut parts: Vec<Part> = opening_without_a_token(wire)
            .into_iter()
            .map(Part::Send)
            .collect();
        // The opening reaches Punie before the connection breaks.
        parts.extend([Part::Flush, Part::Abort]);
        the_retry_alone_is_heard(wire, Reply::Stream(parts)).await;
    }
}

#[tokio::test]
async fn an_overloaded_error_event_before_the_first_token_is_retried() {
    let mut events = opening_without_a_token(Wire::Anthropic);
    events.push(anthropic_event(
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    the_retry_alone_is_heard(Wire::Anthropic, Reply::events(events)).await;

    let mut events = opening_without_a_token(Wire::OpenAi);
    events.push(format!(
        "data: {}\n\n",
        json!({"error": {"message": "The server had an error while processing your request.",
                         "type": "server_error"}})
    ));
    the_retry_alone_is_heard(Wire::OpenAi, Reply::events(events)).await;
}

#[tokio::test]
async fn an_error_event_that_blames_the_request_is_not_retried() {
    let mut events = opening_without_a_token(Wire::Anthropic);
    events.push(anthropic_event(json!({
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long"},
    })));
    let fake = FakeProvider::start([
        Reply::events(events),
        Reply::events(anthropic_text_reply(&["fine"])),
    ])
    .await;
    let error = error_of(&*anthropic_model(&fake, &one_retry()), ask("x")).await;
    assert_eq!(
        error,
        "Anthropic reported an error: prompt is too long (invalid_request_error)"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_context_too_long_reported_inside_the_stream_is_known_for_what_it_is() {
    // LM Studio answers `200 OK`, then refuses in an error event; Anthropic
    // may say the same in its own error event.
    let lm_studio = "event: error\ndata: {\"error\":{\"message\":\"Input does not fit in context length. The input has 31430 tokens, but the context length only supports 30000 tokens.\"}}\n\n".to_owned();
    let anthropic = anthropic_event(json!({
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"},
    }));
    for (wire, refusal) in [(Wire::OpenAi, lm_studio), (Wire::Anthropic, anthropic)] {
        let fake = FakeProvider::start([Reply::events([refusal])]).await;
        let (events, error) = run(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert!(events.is_empty(), "{wire:?}: {events:?}");
        let Some(ModelError::TooLong(why)) = error else {
            panic!("{wire:?}: {error:?}")
        };
        assert!(
            why.starts_with(&format!("{} reported an error: ", wire.peer_name())),
            "{why}"
        );
        assert_eq!(fake.requests().len(), 1, "{wire:?}: not retried");
    }
}

#[tokio::test]
async fn an_anthropic_error_event_is_read_whatever_its_data_says_its_type_is() {
    // llama.cpp's `/v1/messages` names the event and puts the error bare in
    // the data.
    let fake = FakeProvider::start([Reply::events([
        "event: error\ndata: {\"code\":400,\"message\":\"the model failed to load\",\"type\":\"invalid_request_error\"}\n\n".to_owned(),
    ])])
    .await;
    let error = error_of(&*anthropic_model(&fake, &one_retry()), ask("x")).await;
    assert_eq!(
        error,
        "Anthropic reported an error: the model failed to load (invalid_request_error)"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_that_ends_with_nothing_in_it_is_an_error_not_an_empty_reply() {
    // How an older llama.cpp server ends after an `error:` line, which is not
    // an SSE field.
    let fake = FakeProvider::start([Reply::events([
        "error: {\"code\":400,\"message\":\"the request exceeds the available context size\"}\n\n"
            .to_owned(),
        openai_done(),
    ])])
    .await;
    let error = error_of(&*local_model(&fake, &settings()), ask("x")).await;
    assert!(
        error.contains("ended its stream without a reply or a finish reason")
            && error.contains("its own log says more"),
        "{error}"
    );
}

#[tokio::test]
async fn an_anthropic_message_that_stops_with_nothing_in_it_is_an_error_not_an_empty_reply() {
    let fake = FakeProvider::start([Reply::events([
        anthropic_message_start(10),
        anthropic_event(json!({"type": "ping"})),
        anthropic_event(json!({"type": "message_stop"})),
    ])])
    .await;
    let error = error_of(&*anthropic_model(&fake, &settings()), ask("x")).await;
    assert_eq!(
        error,
        "Anthropic ended its stream without a reply or a finish reason; it may have sent an \
         error in a form Punie cannot read — its own log says more"
    );
}

#[tokio::test]
async fn an_empty_finish_reason_on_every_chunk_finishes_nothing() {
    // SGLang's way: `""` until the real reason.
    let chunk = |delta: Value, reason: &str| {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
        )
    };
    let fake = FakeProvider::start([Reply::events([
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "read_file", "arguments": ""}}]}),
            "",
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\":\"a\"}"}}]}),
            "",
        ),
        chunk(json!({}), "tool_calls"),
        openai_done(),
    ])])
    .await;
    let events = answer(&*local_model(&fake, &settings()), ask("x")).await;
    assert_eq!(
        events,
        [
            tool_call("call_1", "read_file", json!({"path": "a"})),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn a_replys_length_is_limited_as_each_wire_asks_and_as_set() {
    // Anthropic's wire needs a limit; OpenAI-style servers have their own
    // unless one is set.
    let limited = ModelSettings {
        max_output_tokens: Some(32_000),
        ..settings()
    };
    for (wire, settings, field, expected) in [
        (Wire::Anthropic, settings(), "max_tokens", json!(8192)),
        (
            Wire::Anthropic,
            limited.clone(),
            "max_tokens",
            json!(32_000),
        ),
        (Wire::OpenAi, settings(), "max_tokens", Value::Null),
        (Wire::OpenAi, limited, "max_tokens", json!(32_000)),
    ] {
        let fake = FakeProvider::start([Reply::events(wire.text_reply(&["ok"]))]).await;
        answer(&*model_on(wire, &fake, &settings), ask("x")).await;
        let [sent] = fake.requests().try_into().expect("one request");
        assert_eq!(sent.body[field], expected, "{wire:?}: {}", sent.body);
        assert!(sent.body.get("max_completion_tokens").is_none());
    }
}

#[tokio::test]
async fn a_stream_that_ends_before_its_first_token_every_time_says_so() {
    for wire in Wire::ALL {
        let first = || Reply::events(opening_without_a_token(wire));
        let fake = FakeProvider::start([first(), first()]).await;
        let error = error_of(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert_eq!(
            error,
            format!(
                "{} closed the stream before the reply was complete (after 1 retry)",
                wire.peer_name()
            )
        );
        assert_eq!(fake.requests().len(), 2, "{wire:?}");
    }
}

#[tokio::test]
async fn a_connection_closed_every_time_ends_the_call_after_the_retries() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([Reply::Close, Reply::Close]).await;
        let error = error_of(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert!(
            error.contains("connection closed before message completed"),
            "{wire:?}: {error}"
        );
        assert!(error.ends_with(" (after 1 retry)"), "{wire:?}: {error}");
        assert_eq!(fake.requests().len(), 2, "{wire:?}");
    }
}

#[tokio::test]
async fn a_connection_reset_every_time_ends_the_call_saying_it_was_retried() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([Reply::Reset, Reply::Reset]).await;
        let error = error_of(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert!(error.ends_with(" (after 1 retry)"), "{wire:?}: {error}");
        assert_eq!(fake.requests().len(), 2, "{wire:?}");
    }
}

#[tokio::test]
async fn a_reply_that_is_not_streamed_is_named_and_not_retried() {
    for wire in Wire::ALL {
        let whole = Reply::status(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                "finish_reason": "stop"}]}),
        );
        let refused = Reply::status(
            200,
            json!({"error": {"message": "streaming is disabled", "type": "invalid_request_error"}}),
        );
        let fake = FakeProvider::start([whole, refused]).await;
        let model = model_on(wire, &fake, &one_retry());
        let not_streamed = format!(
            "{} did not stream its reply: it answered with application/json, not server-sent \
             events (text/event-stream)",
            wire.peer_name()
        );
        assert_eq!(error_of(&*model, ask("x")).await, not_streamed, "{wire:?}");
        assert_eq!(
            error_of(&*model, ask("x")).await,
            format!("{not_streamed}: streaming is disabled (invalid_request_error)"),
            "{wire:?}"
        );
        assert_eq!(fake.requests().len(), 2, "{wire:?}: neither was retried");
    }
}

/// A `200 OK` of type `content_type` whose body is `body`.
fn ok_with(content_type: &str, body: &str) -> Reply {
    Reply::Status {
        status: 200,
        headers: vec![("content-type", content_type.to_owned())],
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn a_body_that_is_no_event_stream_is_named_quoted_and_not_retried() {
    let whole_reply = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
    let json_lines = "{\"model\":\"m\",\"message\":{\"content\":\"hi\"},\"done\":false}\n\u{1b}[31m{\"done\":true}\n";
    for (content_type, body, quoted) in [
        (
            "text/plain; charset=utf-8",
            whole_reply,
            format!("text/plain beginning `{whole_reply}`"),
        ),
        (
            "application/x-ndjson",
            json_lines,
            // The escape character is dropped, the line break is a space.
            "application/x-ndjson beginning `{\"model\":\"m\",\"message\":{\"content\":\"hi\"},\"done\":false} [31m{\"done\":true}`".to_owned(),
        ),
    ] {
        let fake = FakeProvider::start([
            ok_with(content_type, body),
            Reply::events(openai_text_reply(&["never"])),
        ])
        .await;
        let error = error_of(&*local_model(&fake, &one_retry()), ask("x")).await;
        assert_eq!(
            error,
            format!(
                "the model server did not answer with server-sent events: it sent {quoted} — \
                 check that {}/v1 is the model server's API (the URL in `local:URL/MODEL` sets it)",
                fake.url()
            )
        );
        assert_eq!(fake.requests().len(), 1, "{content_type}: not retried");
    }
}

/// A server on 127.0.0.1 that answers every request with `response`, bytes
/// as they are (the fake provider sends only text); how many it answered.
async fn raw_server(response: Vec<u8>) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (response, count) = (response.clone(), count.clone());
            tokio::spawn(async move {
                // The whole request, so that closing sends no reset.
                let mut request = Vec::new();
                let mut buffer = [0; 4096];
                while !is_whole_request(&request) {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, answered)
}

/// Whether `request` holds its headers and the body they announce.
fn is_whole_request(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let headers = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length = headers
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|length| length.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

#[tokio::test]
async fn a_compressed_body_never_asked_for_is_named_and_not_retried() {
    // The start of a gzip stream: magic, method, flags, then deflated bytes.
    let body: &[u8] =
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\x56\xca\x48\xcd\xc9\xc9\x57\xb2\x52\x00\x00";
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    let (addr, answered) = raw_server(response).await;
    let model = model_with(&format!("local:http://{addr}/v1/m"), &one_retry(), &[]);
    let error = error_of(&*model, ask("x")).await;
    assert_eq!(
        error,
        format!(
            "the model server did not answer with server-sent events: it sent text/event-stream \
             that is not text, compressed (gzip), which Punie does not ask for — check that \
             http://{addr}/v1 is the model server's API (the URL in `local:URL/MODEL` sets it)"
        )
    );
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn an_error_for_a_path_the_server_does_not_serve_says_to_check_the_base_url() {
    // LM Studio's answer to a base URL without its `/v1`.
    let fake = FakeProvider::start([Reply::status(
        200,
        json!({"error": "Unexpected endpoint or method. (POST /chat/completions)"}),
    )])
    .await;
    let error = error_of(&*local_model(&fake, &settings()), ask("x")).await;
    assert!(
        error.ends_with(&format!(
            "Unexpected endpoint or method. (POST /chat/completions) — POST {}/v1/chat/completions: \
             check the base URL (the URL in `local:URL/MODEL`)",
            fake.url()
        )),
        "{error}"
    );
}

#[tokio::test]
async fn server_errors_beyond_the_retries_end_the_call() {
    for wire in Wire::ALL {
        let failure = || wire.error_status(500, "api_error", "kaboom");
        let fake = FakeProvider::start([failure(), failure(), failure()]).await;
        let error = error_of(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert_eq!(
            error,
            format!(
                "{} answered 500 Internal Server Error: kaboom (api_error) (after 1 retry)",
                wire.peer_name()
            )
        );
        assert_eq!(
            fake.requests().len(),
            2,
            "{wire:?}: one attempt and one retry"
        );
    }
}

#[tokio::test]
async fn rate_limits_beyond_the_retries_end_the_call_saying_so() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([rate_limited(wire), rate_limited(wire)]).await;
        let error = error_of(&*model_on(wire, &fake, &one_retry()), ask("x")).await;
        assert_eq!(
            error,
            format!(
                "{} answered 429 Too Many Requests: Rate limit reached (rate_limit_error) \
                 (after 1 retry)",
                wire.peer_name()
            )
        );
        assert_eq!(fake.requests().len(), 2, "{wire:?}");
    }
}

/// Settings that give up on a model server silent for 200 ms.
fn impatient() -> ModelSettings {
    ModelSettings {
        idle_timeout: Duration::from_millis(200),
        ..settings()
    }
}

/// The error of a call given up for 200 ms of silence from `wire`'s server.
fn gave_up_waiting(wire: Wire, error: Option<ModelError>) -> String {
    let error = error.expect("an idle timeout").to_string();
    let stalled = format!("{} sent nothing for 200ms", wire.peer_name());
    assert!(error.starts_with(&stalled), "{wire:?}: {error}");
    error
}

#[tokio::test]
async fn a_stream_that_stalls_fails_after_the_idle_timeout() {
    for wire in Wire::ALL {
        let mut parts: Vec<Part> = wire
            .text_opening("Thinking")
            .into_iter()
            .map(Part::Send)
            .collect();
        parts.push(Part::Stall);
        let fake = FakeProvider::start([Reply::Stream(parts)]).await;
        let (events, error) = run(&*model_on(wire, &fake, &impatient()), ask("x")).await;
        assert_eq!(events, [text("Thinking")], "{wire:?}");
        let error = gave_up_waiting(wire, error);
        assert!(error.contains("--model-idle-timeout"), "{wire:?}: {error}");
    }
}

#[tokio::test]
async fn a_finished_reply_is_kept_when_the_server_then_goes_silent_or_breaks_off() {
    // The stop reason has come; the stream's end never does.
    let openai = vec![
        openai_delta(json!({"role": "assistant", "content": "Reading."})),
        openai_delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                           "function": {"name": "read_file",
                                                        "arguments": "{\"path\":\"a.txt\"}"}}]}),
        ),
        openai_finish("tool_calls"),
    ];
    let mut anthropic = vec![anthropic_message_start(10)];
    anthropic.extend(anthropic_text_block(0, &["Reading."]));
    anthropic.extend(anthropic_tool_block(
        1,
        "call_1",
        "read_file",
        &["{\"path\":\"a.txt\"}"],
    ));
    anthropic.extend(anthropic_message_end("tool_use", 4).into_iter().take(1));
    // Or it breaks off then.
    let cases = [
        (Wire::OpenAi, openai.clone(), Part::Stall),
        (Wire::Anthropic, anthropic.clone(), Part::Stall),
        (Wire::OpenAi, openai, Part::Abort),
        (Wire::Anthropic, anthropic, Part::Abort),
    ];
    for (wire, events, ending) in cases {
        let mut parts: Vec<Part> = events.into_iter().map(Part::Send).collect();
        parts.push(Part::Flush);
        parts.push(ending);
        let fake = FakeProvider::start([Reply::Stream(parts)]).await;
        let (events, error) = run(&*model_on(wire, &fake, &impatient()), ask("x")).await;
        assert!(error.is_none(), "{wire:?}: {error:?}");
        let read = tool_call("call_1", "read_file", json!({"path": "a.txt"}));
        assert_eq!(events.first(), Some(&text("Reading.")), "{wire:?}");
        assert!(events.contains(&read), "{wire:?}: {events:?}");
        assert_eq!(
            events.last(),
            Some(&ModelEvent::Stop(Stop::Done)),
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn events_that_add_nothing_after_the_stop_reason_do_not_hold_the_reply_open() {
    // Pings and empty chunks for longer than the test's deadline, and never
    // the stream's end: the reply ends once the grace after its stop reason
    // is over, whatever keeps coming.
    let mut openai = vec![openai_delta(
        json!({"role": "assistant", "content": "Done."}),
    )];
    openai.push(openai_finish("stop"));
    let mut anthropic = vec![anthropic_message_start(10)];
    anthropic.extend(anthropic_text_block(0, &["Done."]));
    anthropic.extend(anthropic_message_end("end_turn", 4).into_iter().take(1));
    let nothing = |wire: Wire| match wire {
        Wire::OpenAi => openai_delta(json!({})),
        Wire::Anthropic => anthropic_event(json!({"type": "ping"})),
    };
    for (wire, events) in [(Wire::OpenAi, openai), (Wire::Anthropic, anthropic)] {
        let mut parts: Vec<Part> = events.into_iter().map(Part::Send).collect();
        for _ in 0..DEADLINE.as_millis() / 50 {
            parts.push(Part::Pause(Duration::from_millis(100)));
            parts.push(Part::Send(nothing(wire)));
        }
        parts.push(Part::Stall);
        let fake = FakeProvider::start([Reply::Stream(parts)]).await;
        // A grace of 1 s, ten times the pause between two pings.
        let settings = ModelSettings {
            idle_timeout: Duration::from_secs(2),
            ..settings()
        };
        let (events, error) = run(&*model_on(wire, &fake, &settings), ask("x")).await;
        assert!(error.is_none(), "{wire:?}: {error:?}");
        assert_eq!(events.first(), Some(&text("Done.")), "{wire:?}");
        assert_eq!(
            events.last(),
            Some(&ModelEvent::Stop(Stop::Done)),
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn keep_alive_comments_hold_off_the_idle_timeout() {
    for wire in Wire::ALL {
        // A slow reasoning model: nothing but comments for three times the
        // idle timeout, each well within it, then the answer.
        let settings = ModelSettings {
            idle_timeout: Duration::from_millis(500),
            ..settings()
        };
        let mut parts = Vec::new();
        for comment in [": keep-alive", ": OPENROUTER PROCESSING"].repeat(5) {
            parts.push(Part::Pause(Duration::from_millis(150)));
            parts.push(Part::Send(format!("{comment}\n\n")));
        }
        parts.extend(
            wire.text_reply(&["Worth the wait."])
                .into_iter()
                .map(Part::Send),
        );
        let fake = FakeProvider::start([Reply::Stream(parts)]).await;
        let started = std::time::Instant::now();
        let (events, error) = run(&*model_on(wire, &fake, &settings), ask("x")).await;
        assert!(error.is_none(), "{wire:?}: {error:?}");
        assert_eq!(events.first(), Some(&text("Worth the wait.")), "{wire:?}");
        assert!(
            started.elapsed() > settings.idle_timeout,
            "{wire:?}: the stream outlasted the idle timeout"
        );
    }
}

#[tokio::test]
async fn a_server_that_never_answers_fails_after_the_idle_timeout() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([Reply::Hang]).await;
        let (events, error) = run(&*model_on(wire, &fake, &impatient()), ask("x")).await;
        assert!(events.is_empty(), "{wire:?}: {events:?}");
        gave_up_waiting(wire, error);
        assert_eq!(
            fake.requests().len(),
            1,
            "{wire:?}: no retry of a call that may be running"
        );
    }
}

#[tokio::test]
async fn a_reply_that_ends_before_it_is_complete_is_an_error() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([Reply::events(wire.text_opening("Cut short"))]).await;
        let (events, error) = run(&*model_on(wire, &fake, &settings()), ask("x")).await;
        assert_eq!(events, [text("Cut short")], "{wire:?}");
        assert_eq!(
            error.map(|error| error.to_string()),
            Some(format!(
                "{} closed the stream before the reply was complete{KEPT}",
                wire.peer_name()
            ))
        );
    }
}

#[tokio::test]
async fn an_event_that_is_not_json_ends_the_call_quoting_it() {
    for wire in Wire::ALL {
        let mut events = wire.text_opening("Partly");
        events.push(wire.malformed_event());
        let fake = FakeProvider::start([Reply::events(events)]).await;
        let (events, error) = run(&*model_on(wire, &fake, &settings()), ask("x")).await;
        assert_eq!(events, [text("Partly")], "{wire:?}");
        let error = error.expect("an error").to_string();
        let not_understood = format!(
            "{} sent an event Punie does not understand",
            wire.peer_name()
        );
        assert!(error.starts_with(&not_understood), "{wire:?}: {error}");
        assert!(error.contains("oops"), "{wire:?}: {error}");
    }
}

#[tokio::test]
async fn nothing_listening_names_the_server_to_start() {
    let addr = closed_port().await;
    let settings = ModelSettings {
        retries: 2,
        ..settings()
    };
    let host = addr.to_string();
    let ollama = model_with("ollama:qwen3", &settings, &[("OLLAMA_HOST", &host)]);
    assert_eq!(
        error_of(&*ollama, ask("x")).await,
        format!("no server at http://{addr} — is Ollama running?")
    );
    let local = model_with(&format!("local:http://{addr}/v1/m"), &settings, &[]);
    assert_eq!(
        error_of(&*local, ask("x")).await,
        format!("no server at http://{addr} — is the model server running?")
    );
    let base = format!("http://{addr}/v1");
    let openai = model_with(
        "openai:gpt-4.1",
        &settings,
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "sk-test")],
    );
    let error = error_of(&*openai, ask("x")).await;
    assert!(
        error.starts_with(&format!("cannot reach {base}: ")),
        "{error}"
    );
}

#[test]
fn a_base_url_variable_that_is_not_a_url_is_named_as_the_fault() {
    let cases = [
        ("openai:gpt-4.1", "OPENAI_BASE_URL", "127.0.0.1:5000/v1"),
        ("anthropic:claude-x", "ANTHROPIC_BASE_URL", "127.0.0.1:5000"),
        ("ollama:qwen3", "OLLAMA_HOST", "http://"),
    ];
    for (spec, variable, value) in cases {
        let env = move |name: &str| (name == variable).then(|| value.to_owned());
        match from_spec_with_env(spec, &settings(), env) {
            Err(ModelError::Environment(message)) => assert!(
                message.starts_with(&format!("{variable} `{value}` is not a URL")),
                "{message}"
            ),
            Err(other) => panic!("{spec}: not blamed on {variable}: {other:?}"),
            Ok(_) => panic!("{spec} with {variable}={value} was taken"),
        }
    }
}

/// LM Studio listens at a fixed address (`lmstudio:`), so the test builds the
/// model the way `from_spec` does, at a local address instead.
#[tokio::test]
async fn lm_studio_is_named_when_its_server_is_down_or_lacks_the_model() {
    let lm_studio = |base: &str| {
        OpenAiModel::new(OpenAiServer::LmStudio, base, "qwen3", None, &settings())
            .expect("a valid LM Studio model")
    };
    let addr = closed_port().await;
    assert_eq!(
        error_of(&lm_studio(&format!("http://{addr}/v1")), ask("x")).await,
        format!("no server at http://{addr} — is LM Studio's server running?")
    );
    let fake = FakeProvider::start([Reply::status(
        404,
        json!({"error": {"message": "Model \"qwen3\" not found", "type": "invalid_request_error"}}),
    )])
    .await;
    let error = error_of(&lm_studio(&format!("{}/v1", fake.url())), ask("x")).await;
    assert_eq!(
        error,
        format!(
            "Model \"qwen3\" not found (invalid_request_error) — POST {}/v1/chat/completions: \
             is the model name `qwen3` right? (`lms ls` lists the models LM Studio has) If it \
             is, check the base URL",
            fake.url()
        )
    );
}

/// `lmstudio:` reads no base URL: LM Studio's own address, which no other
/// provider's variable moves, is the only one it calls.
#[tokio::test]
async fn lm_studio_is_called_at_its_default_address_whatever_else_is_set() {
    // Held by the test, the port is known to have nothing else behind it: a
    // running LM Studio would make the answers below its own.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:1234").await {
        Ok(listener) => listener,
        Err(error) => panic!("this test needs LM Studio's port, 127.0.0.1:1234, free: {error}"),
    };
    let elsewhere = closed_port().await.to_string();
    let base = format!("http://{elsewhere}/v1");
    let vars = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("OLLAMA_HOST", elsewhere.as_str()),
        ("PUNIE_LOCAL_API_KEY", "lm-key"),
    ];
    let lm_studio = || model_with("lmstudio:qwen3", &settings(), &vars);
    let fake = FakeProvider::on(listener, [Reply::events(openai_text_reply(&["Hi."]))]);
    assert_eq!(
        answer(&*lm_studio(), ask("x")).await,
        [text("Hi."), usage(10, 5), ModelEvent::Stop(Stop::Done)]
    );
    let [request] = fake.requests().try_into().expect("one request");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["host"], "127.0.0.1:1234");
    assert_eq!(request.headers["authorization"], "Bearer lm-key");
    assert_eq!(request.body["model"], "qwen3");
    drop(fake);
    assert_eq!(
        error_of(&*lm_studio(), ask("x")).await,
        "no server at http://127.0.0.1:1234 — is LM Studio's server running?"
    );
}

#[tokio::test]
async fn a_missing_openai_key_says_how_to_fix_it() {
    let model = model_with("openai:gpt-4.1", &settings(), &[]);
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "OPENAI_API_KEY is not set; export it, or choose another model with --model"
    );
}

#[tokio::test]
async fn refused_keys_and_unknown_models_are_worded_for_a_person() {
    let fake = FakeProvider::start([
        Reply::status(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-wrong.",
                             "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ),
        Reply::status(
            404,
            json!({"error": {"message": "The model `gpt-nope` does not exist or you do not have access to it.",
                             "type": "invalid_request_error", "code": "model_not_found"}}),
        ),
    ])
    .await;
    let base = format!("{}/v1", fake.url());
    let model = model_with(
        "openai:gpt-nope",
        &settings(),
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "sk-wrong")],
    );
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "OpenAI refused the API key (401): Incorrect API key provided: [the key in \
         OPENAI_API_KEY]. (invalid_request_error); check OPENAI_API_KEY"
    );
    assert_eq!(
        error_of(&*model, ask("x")).await,
        format!(
            "The model `gpt-nope` does not exist or you do not have access to it. \
             (invalid_request_error) — POST {base}/chat/completions: is the model name \
             `gpt-nope` right? If it is, check the base URL (OPENAI_BASE_URL)"
        )
    );
}

#[tokio::test]
async fn a_404_without_a_message_names_the_url_it_called() {
    // A base URL without its `/v1`: the server knows no such path.
    let fake = FakeProvider::start([Reply::Status {
        status: 404,
        headers: Vec::new(),
        body: String::new(),
    }])
    .await;
    let model = model_with(
        "openai:gpt-4o",
        &settings(),
        &[
            ("OPENAI_BASE_URL", &fake.url()),
            ("OPENAI_API_KEY", "sk-test"),
        ],
    );
    assert_eq!(
        error_of(&*model, ask("x")).await,
        format!(
            "OpenAI answered 404 Not Found — POST {}/chat/completions: is the model name \
             `gpt-4o` right? If it is, check the base URL (OPENAI_BASE_URL)",
            fake.url()
        )
    );
}

#[tokio::test]
async fn a_local_server_that_wants_a_key_never_given_says_which_variable_to_set() {
    let unauthorized = || Reply::status(401, json!({"error": {"message": "Invalid API Key"}}));
    let fake = FakeProvider::start([unauthorized(), unauthorized()]).await;
    let spec = format!("local:{}/v1/m", fake.url());
    let keyless = model_with(&spec, &settings(), &[]);
    assert_eq!(
        error_of(&*keyless, ask("x")).await,
        "the model server wants an API key (401): Invalid API Key; set PUNIE_LOCAL_API_KEY to \
         the key it was given"
    );
    let keyed = model_with(&spec, &settings(), &[("PUNIE_LOCAL_API_KEY", "wrong-key")]);
    assert_eq!(
        error_of(&*keyed, ask("x")).await,
        "the model server refused the API key (401): Invalid API Key; check PUNIE_LOCAL_API_KEY"
    );
}

#[tokio::test]
async fn a_key_the_server_quotes_back_is_never_shown() {
    let key = "sk-live-0123456789abcdef";
    let quoting = |status: u16| {
        Reply::status(
            status,
            json!({"error": {"message": format!("key {key} is revoked (Bearer {key})")}}),
        )
    };
    let fake = FakeProvider::start([quoting(401), quoting(500), quoting(500)]).await;
    let base = format!("{}/v1", fake.url());
    let openai = model_with(
        "openai:gpt-4.1",
        &one_retry(),
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", key)],
    );
    let refused = error_of(&*openai, ask("x")).await;
    assert_eq!(
        refused,
        "OpenAI refused the API key (401): key [the key in OPENAI_API_KEY] is revoked (Bearer \
         [the key in OPENAI_API_KEY]); check OPENAI_API_KEY"
    );
    // The last error after a retry too.
    let failed = error_of(&*openai, ask("x")).await;
    assert!(
        failed.ends_with("[the key in OPENAI_API_KEY]) (after 1 retry)"),
        "{failed}"
    );
    let fake = FakeProvider::start([quoting(401)]).await;
    let anthropic = model_with(
        "anthropic:claude-x",
        &settings(),
        &[
            ("ANTHROPIC_BASE_URL", &fake.url()),
            ("ANTHROPIC_API_KEY", key),
        ],
    );
    let refused = error_of(&*anthropic, ask("x")).await;
    assert!(
        refused.contains("key [the key in ANTHROPIC_API_KEY] is revoked") && !refused.contains(key),
        "{refused}"
    );
}

/// A server on 127.0.0.1 that reads each request's headers, then answers
/// `head` and body `piece` again and again, as long as it is read.
async fn flooding_server(head: &'static str, piece: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0; 4096];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while socket.write_all(piece).await.is_ok() {}
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_error_body_that_never_ends_is_quoted_from_its_start_at_once() {
    let addr = flooding_server(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n",
        b"too much ",
    )
    .await;
    // Patient for longer than the test's deadline: only a read that stops
    // early ends the call in time.
    let patient = ModelSettings {
        idle_timeout: DEADLINE * 3,
        ..settings()
    };
    let model = model_with(&format!("local:http://{addr}/v1/m"), &patient, &[]);
    let error = error_of(&*model, ask("x")).await;
    assert!(
        error.starts_with("the model server answered 400 Bad Request: too much too much")
            && error.ends_with('…'),
        "{error}"
    );
}

#[tokio::test]
async fn an_event_that_never_ends_is_given_up_before_it_fills_the_memory() {
    let endless = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}",
        "a".repeat(33 * 1024 * 1024)
    );
    let fake = FakeProvider::start([Reply::Stream(vec![Part::Send(endless), Part::Stall])]).await;
    // Patient for longer than the test's deadline: only the size ends it.
    let patient = ModelSettings {
        idle_timeout: DEADLINE * 3,
        ..settings()
    };
    let error = error_of(&*local_model(&fake, &patient), ask("x")).await;
    assert_eq!(
        error,
        "the model server sent an event of more than 32 MiB, more than any reply needs, so it \
         was given up; its own log may say why"
    );
}

#[tokio::test]
async fn https_to_a_server_of_plain_http_says_to_write_http() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("its address");
    // A plain HTTP server's answer to the bytes of a TLS greeting.
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut greeting = [0; 4096];
            if socket.read(&mut greeting).await.is_ok() {
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let _ = socket.shutdown().await;
            }
        }
    });
    let model = model_with(&format!("local:https://{addr}/v1/m"), &settings(), &[]);
    let error = error_of(&*model, ask("x")).await;
    assert!(
        error.starts_with(&format!("no secure (TLS) connection with https://{addr} ("))
            && error.ends_with(
                ": if it serves plain HTTP, write http:// rather than https:// in the URL in \
                 `local:URL/MODEL`"
            ),
        "{error}"
    );
}

#[tokio::test]
async fn a_url_that_takes_no_post_says_to_check_the_base_url_and_is_not_retried() {
    for status in [405, 501] {
        let fake = FakeProvider::start([
            Reply::Status {
                status,
                headers: vec![("content-type", "text/html".to_owned())],
                body: "<html><body>Unsupported method ('POST')</body></html>".to_owned(),
            },
            Reply::events(openai_text_reply(&["not asked"])),
        ])
        .await;
        let error = error_of(&*local_model(&fake, &one_retry()), ask("x")).await;
        assert!(
            error.ends_with(&format!(
                "to POST {}/v1/chat/completions: check the base URL (the URL in \
                 `local:URL/MODEL`)",
                fake.url()
            )),
            "{error}"
        );
        assert_eq!(fake.requests().len(), 1, "{status}: not retried");
    }
}

#[tokio::test]
async fn the_openai_request_carries_the_conversation_tools_and_stream_flags() {
    let fake = FakeProvider::start([Reply::events(openai_text_reply(&["ok"]))]).await;
    let base = format!("{}/v1", fake.url());
    let model = model_with(
        "openai:gpt-test",
        &settings(),
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "sk-test")],
    );
    answer(&*model, conversation()).await;

    let [request] = fake.requests().try_into().expect("one request");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], "Bearer sk-test");
    assert_eq!(
        request.body,
        json!({
            "model": "gpt-test",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "You are Punie."},
                {"role": "user", "content": "What is in main.rs?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "read_file", "arguments": "{\"path\":\"src/main.rs\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "fn main() {}"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_2", "type": "function",
                     "function": {"name": "run", "arguments": "{\"command\":\"cargo test\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such command"},
            ],
            "tools": [
                {"type": "function", "function": {
                    "name": "read_file",
                    "description": "Read a file of the workspace.",
                    "parameters": {"type": "object",
                                   "properties": {"path": {"type": "string"}},
                                   "required": ["path"]}}},
                {"type": "function", "function": {
                    "name": "run",
                    "description": "Run a command.",
                    "parameters": {"type": "object",
                                   "properties": {"command": {"type": "string"}}}}},
            ],
        })
    );
}

#[tokio::test]
async fn local_servers_get_a_key_only_when_one_is_configured() {
    let fake = FakeProvider::start([
        Reply::events(openai_text_reply(&["a"])),
        Reply::events(openai_text_reply(&["b"])),
    ])
    .await;
    let spec = format!("local:{}/v1/fake-model", fake.url());
    answer(&*model_with(&spec, &settings(), &[]), ask("x")).await;
    let keyed = model_with(&spec, &settings(), &[("PUNIE_LOCAL_API_KEY", "local-key")]);
    answer(&*keyed, ask("x")).await;

    let requests = fake.requests();
    assert!(requests[0].headers.get("authorization").is_none());
    assert_eq!(requests[1].headers["authorization"], "Bearer local-key");
    assert_eq!(requests[1].body["model"], "fake-model");
}

/// An `openai:` model whose base URL is `fake`'s `/v1`, with a key.
fn openai_model(fake: &FakeProvider, model: &str, settings: &ModelSettings) -> Arc<dyn Model> {
    let base = format!("{}/v1", fake.url());
    model_with(
        &format!("openai:{model}"),
        settings,
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "sk-test")],
    )
}

#[tokio::test]
async fn an_account_out_of_quota_is_told_so_at_once_not_retried() {
    let fake = FakeProvider::start([
        Reply::status(
            429,
            json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                             "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
        ),
        Reply::events(openai_text_reply(&["never asked for"])),
    ])
    .await;
    let model = openai_model(&fake, "gpt-4.1", &one_retry());
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "OpenAI says the account is out of quota or credit (429): You exceeded your current \
         quota, please check your plan and billing details. (insufficient_quota); add credit to \
         the account of the key in OPENAI_API_KEY, or use another key"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_403_gives_the_servers_reason_without_blaming_the_key() {
    let fake = FakeProvider::start([Reply::status(
        403,
        json!({"error": {"message": "Project `proj_abc` does not have access to model `gpt-5`",
                         "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
    )])
    .await;
    let model = openai_model(&fake, "gpt-5", &settings());
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "OpenAI refused the request (403): Project `proj_abc` does not have access to model \
         `gpt-5` (invalid_request_error); check that the key in OPENAI_API_KEY may use model \
         `gpt-5`"
    );
}

/// An answer that redirects to `location`.
fn redirect(status: u16, location: &str) -> Reply {
    Reply::Status {
        status,
        headers: vec![("location", location.to_owned())],
        body: String::new(),
    }
}

#[tokio::test]
async fn a_redirect_that_would_turn_the_post_into_a_get_is_reported_not_followed() {
    for (status, reason) in [
        (301, "Moved Permanently"),
        (302, "Found"),
        (303, "See Other"),
    ] {
        // Followed as a GET, the redirect would get the fake's text reply.
        let fake = FakeProvider::start([
            redirect(status, "/moved/v1/chat/completions"),
            Reply::events(openai_text_reply(&["as a GET"])),
        ])
        .await;
        let model = openai_model(&fake, "gpt-4.1", &settings());
        assert_eq!(
            error_of(&*model, ask("x")).await,
            format!(
                "OpenAI redirected POST {url}/v1/chat/completions to \
                 {url}/moved/v1/chat/completions ({status} {reason}): point OPENAI_BASE_URL at \
                 the new address",
                url = fake.url()
            )
        );
        assert_eq!(fake.requests().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn a_307_or_308_to_the_same_server_is_followed_with_the_post_intact() {
    for status in [307, 308] {
        let fake = FakeProvider::start([
            redirect(status, "/moved/v1/chat/completions"),
            Reply::events(openai_text_reply(&["moved"])),
        ])
        .await;
        let events = answer(&*openai_model(&fake, "gpt-4.1", &settings()), ask("x")).await;
        assert_eq!(events.first(), Some(&text("moved")), "{status}");
        let [asked, followed] = fake.requests().try_into().expect("two requests");
        assert_eq!(followed.path, "/moved/v1/chat/completions", "{status}");
        assert_eq!(followed.body, asked.body, "{status}");
        assert_eq!(
            followed.headers.get("authorization"),
            asked.headers.get("authorization"),
            "{status}"
        );
    }
}

#[tokio::test]
async fn a_redirect_to_another_server_is_not_followed_so_no_key_leaves() {
    for wire in Wire::ALL {
        let elsewhere = FakeProvider::start([Reply::events(wire.text_reply(&["elsewhere"]))]).await;
        let moved = format!("{}/v1/messages", elsewhere.url());
        let fake = FakeProvider::start([redirect(307, &moved)]).await;
        let error = error_of(&*model_on(wire, &fake, &settings()), ask("x")).await;
        assert!(
            error.contains(&format!("to {moved} (307 Temporary Redirect)")),
            "{wire:?}: {error}"
        );
        assert!(
            elsewhere.requests().is_empty(),
            "{wire:?}: the other server was asked, with {:?}",
            elsewhere.requests()[0].headers
        );
    }
}

#[tokio::test]
async fn a_servers_words_reach_an_error_without_control_characters_or_their_flood() {
    let hostile = "\u{1b}]0;TITLE\u{7}\u{1b}[2J\u{1b}[31mBad tool schema\r\n\tat line 1\u{202e}";
    let fake = FakeProvider::start([
        Reply::status(400, json!({"error": {"message": hostile}})),
        Reply::status(400, json!({"error": {"message": "x".repeat(50_000)}})),
        Reply::Status {
            status: 500,
            headers: vec![("content-type", "application/octet-stream".to_owned())],
            body: "\u{0}\u{0}\u{1}PNG\u{0}\u{1a}garbage".to_owned(),
        },
        Reply::events([format!(
            "data: {}\n\n",
            json!({"error": {"message": "busy\u{1b}[2J\u{0}", "type": "invalid_request_error"}})
        )]),
    ])
    .await;
    let model = local_model(&fake, &settings());
    let shown = error_of(&*model, ask("x")).await;
    assert_eq!(
        shown,
        "the model server answered 400 Bad Request: ]0;TITLE[2J[31mBad tool schema at line 1"
    );
    let flood = error_of(&*model, ask("x")).await;
    assert!(flood.ends_with('…'), "{flood}");
    assert!(flood.chars().count() < 1100, "{} characters", flood.len());
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "the model server answered 500 Internal Server Error"
    );
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "the model server reported an error: busy[2J (invalid_request_error)"
    );
}

// ------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_text_streams_each_delta_as_it_arrives_with_usage() {
    let gate = Arc::new(Notify::new());
    let mut parts = vec![
        Part::Send(anthropic_message_start(25)),
        Part::Send(anthropic_event(json!({"type": "ping"}))),
    ];
    let block = anthropic_text_block(0, &["Hello", "! How", " can I help?"]);
    parts.extend(block[..2].iter().cloned().map(Part::Send));
    parts.push(Part::Wait(gate.clone()));
    parts.extend(block[2..].iter().cloned().map(Part::Send));
    parts.extend(
        anthropic_message_end("end_turn", 15)
            .into_iter()
            .map(Part::Send),
    );
    let fake = FakeProvider::start([Reply::Stream(parts)]).await;
    let model = anthropic_model(&fake, &settings());
    let mut stream = model.stream(ask("hi"));

    let first = within("the first piece", stream.next()).await;
    assert_eq!(first.map(|item| item.ok()), Some(Some(text("Hello"))));
    gate.notify_one();

    let (rest, error) = collect(stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        rest,
        [
            text("! How"),
            text(" can I help?"),
            usage(25, 15),
            ModelEvent::Stop(Stop::Done)
        ]
    );
}

#[tokio::test]
async fn anthropic_tool_use_input_split_mid_json_is_assembled_per_block() {
    let mut events = vec![anthropic_message_start(40)];
    events.extend(anthropic_text_block(0, &["Let me look."]));
    events.extend(anthropic_tool_block(
        1,
        "toolu_01",
        "read_file",
        &["", "{\"pa", "th\": \"src/ma", "in.rs\"}"],
    ));
    events.extend(anthropic_tool_block(2, "toolu_02", "list", &[]));
    events.extend(anthropic_message_end("tool_use", 60));
    let fake = FakeProvider::start([Reply::events(events)]).await;
    let events = answer(&*anthropic_model(&fake, &settings()), ask("read it")).await;
    assert_eq!(
        events,
        [
            text("Let me look."),
            tool_call("toolu_01", "read_file", json!({"path": "src/main.rs"})),
            tool_call("toolu_02", "list", json!({})),
            usage(40, 60),
            ModelEvent::Stop(Stop::Done),
        ]
    );
}

/// What an Anthropic model answers to a reply that thinks in a block of
/// `deltas`, then says "42".
async fn after_thinking(deltas: &[Value]) -> Vec<ModelEvent> {
    let mut events = vec![
        anthropic_message_start(10),
        anthropic_event(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": ""}})),
    ];
    events.extend(deltas.iter().map(|delta| {
        anthropic_event(json!({"type": "content_block_delta", "index": 0, "delta": delta}))
    }));
    events.push(anthropic_event(
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.extend(anthropic_text_block(1, &["42"]));
    events.extend(anthropic_message_end("end_turn", 20));
    let fake = FakeProvider::start([Reply::events(events)]).await;
    answer(&*anthropic_model(&fake, &settings()), ask("think")).await
}

#[tokio::test]
async fn anthropic_thinking_becomes_thoughts_and_a_signed_block_to_send_back() {
    let events = after_thinking(&[
        json!({"type": "thinking_delta", "thinking": "Let me solve this "}),
        json!({"type": "thinking_delta", "thinking": "step by step."}),
        json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}),
    ])
    .await;
    assert_eq!(
        events,
        [
            thought("Let me solve this "),
            thought("step by step."),
            ModelEvent::SendBack(json!({"type": "thinking",
                "thinking": "Let me solve this step by step.",
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"})),
            text("42"),
            usage(10, 20),
            ModelEvent::Stop(Stop::Done),
        ]
    );
}

#[tokio::test]
async fn an_anthropic_thinking_block_that_ends_unsigned_is_shown_but_not_kept_to_send_back() {
    let events =
        after_thinking(&[json!({"type": "thinking_delta", "thinking": "No signature follows."})])
            .await;
    assert_eq!(
        events,
        [
            thought("No signature follows."),
            text("42"),
            usage(10, 20),
            ModelEvent::Stop(Stop::Done),
        ]
    );
}

#[tokio::test]
async fn anthropic_thinking_kept_without_its_signature_is_left_out_of_the_request() {
    let signed = json!({"type": "thinking", "thinking": "Signed.", "signature": "EqQB"});
    let redacted = json!({"type": "redacted_thinking", "data": "c2VjcmV0"});
    // Kept by an earlier Punie, which sent unsigned blocks back.
    let unsigned = json!({"type": "thinking", "thinking": "Unsigned.", "signature": ""});
    let unsigned_without_field = json!({"type": "thinking", "thinking": "No field."});
    let request = ModelRequest {
        messages: Arc::new(vec![
            Message::user("think"),
            Message::Assistant {
                text: "42".to_owned(),
                tool_calls: Vec::new(),
                reasoning: Reasoning {
                    blocks: vec![
                        unsigned,
                        signed.clone(),
                        unsigned_without_field,
                        redacted.clone(),
                    ],
                    model: "anthropic:claude-fake".to_owned(),
                },
            },
            Message::user("and again?"),
        ]),
        ..ask("x")
    };
    let fake = FakeProvider::start([Reply::events(anthropic_text_reply(&["ok"]))]).await;
    answer(&*anthropic_model(&fake, &settings()), request).await;
    let [sent] = fake.requests().try_into().expect("one request");
    assert_eq!(
        sent.body["messages"][1],
        json!({"role": "assistant", "content": [signed, redacted, {"type": "text", "text": "42"}]})
    );
}

#[tokio::test]
async fn anthropic_stop_reasons_become_stops() {
    let reply = |reason: &str| {
        let mut events = vec![anthropic_message_start(1)];
        events.extend(anthropic_text_block(0, &["x"]));
        events.extend(anthropic_message_end(reason, 1));
        Reply::events(events)
    };
    let fake = FakeProvider::start([
        reply("max_tokens"),
        reply("refusal"),
        reply("stop_sequence"),
        reply("end_turn"),
    ])
    .await;
    let model = anthropic_model(&fake, &settings());
    for expected in [Stop::MaxTokens, Stop::Refusal, Stop::Done, Stop::Done] {
        let events = answer(&*model, ask("x")).await;
        assert_eq!(events.last(), Some(&ModelEvent::Stop(expected)));
    }
}

#[tokio::test]
async fn an_anthropic_error_event_ends_the_call_with_its_message() {
    let mut events = vec![anthropic_message_start(5)];
    events.extend(anthropic_text_block(0, &["Par"]));
    events.push(anthropic_event(
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let fake = FakeProvider::start([Reply::events(events)]).await;
    let (events, error) = run(&*anthropic_model(&fake, &settings()), ask("x")).await;
    assert_eq!(events, [text("Par")]);
    assert_eq!(
        error.expect("an error").to_string(),
        format!("Anthropic reported an error: Overloaded (overloaded_error){KEPT}")
    );
}

#[tokio::test]
async fn a_missing_anthropic_key_says_how_to_fix_it() {
    let model = model_with("anthropic:claude-fake", &settings(), &[]);
    assert_eq!(
        error_of(&*model, ask("x")).await,
        "ANTHROPIC_API_KEY is not set; export it, or choose another model with --model"
    );
}

#[tokio::test]
async fn a_refused_anthropic_key_is_worded_for_a_person() {
    let fake = FakeProvider::start([Reply::status(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    )])
    .await;
    assert_eq!(
        error_of(&*anthropic_model(&fake, &settings()), ask("x")).await,
        "Anthropic refused the API key (401): invalid x-api-key (authentication_error); \
         check ANTHROPIC_API_KEY"
    );
}

#[tokio::test]
async fn the_anthropic_request_carries_the_conversation_tools_and_headers() {
    let fake = FakeProvider::start([Reply::events(anthropic_text_reply(&["ok"]))]).await;
    answer(&*anthropic_model(&fake, &settings()), conversation()).await;

    let [request] = fake.requests().try_into().expect("one request");
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], "sk-ant-test");
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        request.body,
        json!({
            "model": "claude-fake",
            "max_tokens": 8192,
            "stream": true,
            "system": "You are Punie.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is in main.rs?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_1", "name": "read_file",
                     "input": {"path": "src/main.rs"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1",
                     "content": "fn main() {}", "is_error": false},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_2", "name": "run",
                     "input": {"command": "cargo test"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_2",
                     "content": "no such command", "is_error": true},
                ]},
            ],
            "tools": [
                {"name": "read_file", "description": "Read a file of the workspace.",
                 "input_schema": {"type": "object",
                                  "properties": {"path": {"type": "string"}},
                                  "required": ["path"]}},
                {"name": "run", "description": "Run a command.",
                 "input_schema": {"type": "object",
                                  "properties": {"command": {"type": "string"}}}},
            ],
        })
    );
}

// -------------------------------------------------------------- Pictures

/// A prompt with a picture, then a tool call whose two results come back
/// with a picture between them, as an MCP tool's would.
fn conversation_with_pictures() -> ModelRequest {
    let picture = |data: &str| {
        Message::Picture(Picture {
            mime_type: "image/png".to_owned(),
            data: data.to_owned(),
        })
    };
    let result = |call_id: &str, content: &str| Message::ToolResult {
        call_id: call_id.to_owned(),
        name: "shot".to_owned(),
        content: content.to_owned(),
        is_error: false,
    };
    let call = |id: &str| ToolCall {
        id: id.to_owned(),
        name: "shot".to_owned(),
        arguments: json!({}),
    };
    ModelRequest {
        messages: Arc::new(vec![
            Message::user("What is this?"),
            picture("UFJPTVBU"),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![call("c1"), call("c2")],
                reasoning: Default::default(),
            },
            result("c1", "a shot"),
            picture("U0hPVA=="),
            result("c2", "another"),
        ]),
        ..ask("unused")
    }
}

#[tokio::test]
async fn pictures_reach_openai_in_user_messages_after_the_tool_results() {
    let fake = FakeProvider::start([Reply::events(openai_text_reply(&["ok"]))]).await;
    answer(
        &*local_model(&fake, &settings()),
        conversation_with_pictures(),
    )
    .await;

    let [request] = fake.requests().try_into().expect("one request");
    let image = |data: &str| json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}});
    assert_eq!(
        request.body["messages"],
        json!([
            {"role": "system", "content": "You are Punie."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                image("UFJPTVBU"),
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "shot", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "shot", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "a shot"},
            {"role": "tool", "tool_call_id": "c2", "content": "another"},
            {"role": "user", "content": [image("U0hPVA==")]},
        ])
    );
}

#[tokio::test]
async fn pictures_reach_anthropic_as_image_blocks_after_the_tool_results() {
    let fake = FakeProvider::start([Reply::events(anthropic_text_reply(&["ok"]))]).await;
    answer(
        &*anthropic_model(&fake, &settings()),
        conversation_with_pictures(),
    )
    .await;

    let [request] = fake.requests().try_into().expect("one request");
    let image = |data: &str| json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}});
    assert_eq!(
        request.body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                image("UFJPTVBU"),
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "shot", "input": {}},
                {"type": "tool_use", "id": "c2", "name": "shot", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "a shot", "is_error": false},
                {"type": "tool_result", "tool_use_id": "c2", "content": "another", "is_error": false},
                image("U0hPVA=="),
            ]},
        ])
    );
}

/// Whether a request body the fake recorded holds any picture.
fn carries_pictures(body: &Value) -> bool {
    let text = body.to_string();
    text.contains("image_url") || text.contains("\"type\":\"image\"")
}

#[tokio::test]
async fn a_server_that_refuses_pictures_is_asked_again_without_them() {
    for wire in Wire::ALL {
        let refusal =
            wire.error_status(400, "invalid_request_error", "image input is not supported");
        let fake =
            FakeProvider::start([refusal, Reply::events(wire.text_reply(&["I read text"]))]).await;
        let events = answer(
            &*model_on(wire, &fake, &settings()),
            conversation_with_pictures(),
        )
        .await;

        let peer = wire.peer_name();
        assert_eq!(
            events.first(),
            Some(&ModelEvent::PicturesRefused {
                why: format!(
                    "{peer} answered 400 Bad Request: image input is not supported \
                     (invalid_request_error)"
                ),
                for_good: true,
            }),
            "{wire:?}"
        );
        assert!(
            events.contains(&text("I read text")),
            "{wire:?}: {events:?}"
        );
        let [first, second] = fake.requests().try_into().expect("two requests");
        assert!(carries_pictures(&first.body), "{wire:?}");
        assert!(!carries_pictures(&second.body), "{wire:?}: {}", second.body);
        let left_out = "[a picture (image/png) was here; this model server did not take \
                        pictures, so it was left out]";
        assert_eq!(
            second.body.to_string().matches(left_out).count(),
            2,
            "{wire:?}: each picture is named in its place: {}",
            second.body
        );
    }
}

#[tokio::test]
async fn a_refused_request_without_pictures_is_not_sent_again() {
    for wire in Wire::ALL {
        let refusal = wire.error_status(400, "invalid_request_error", "context too long");
        let fake = FakeProvider::start([refusal, Reply::events(wire.text_reply(&["no"]))]).await;
        let error = error_of(&*model_on(wire, &fake, &settings()), ask("hi")).await;
        assert!(error.contains("context too long"), "{wire:?}: {error}");
        assert_eq!(fake.requests().len(), 1, "{wire:?}");
    }
}

#[tokio::test]
async fn a_server_that_refuses_the_request_without_pictures_too_ends_the_call_with_its_words() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([
            wire.error_status(400, "invalid_request_error", "image input is not supported"),
            wire.error_status(400, "invalid_request_error", "context too long"),
        ])
        .await;
        let (events, error) = run(
            &*model_on(wire, &fake, &settings()),
            conversation_with_pictures(),
        )
        .await;
        assert!(
            matches!(events[..], [ModelEvent::PicturesRefused { .. }]),
            "{wire:?}: {events:?}"
        );
        let error = error.map(|error| error.to_string()).unwrap_or_default();
        assert!(error.contains("context too long"), "{wire:?}: {error}");
        assert_eq!(
            fake.requests().len(),
            2,
            "{wire:?}: asked without pictures once only"
        );
    }
}

#[tokio::test]
async fn messages_left_out_of_a_request_are_not_sent() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([Reply::events(wire.text_reply(&["ok"]))]).await;
        let request = ModelRequest {
            messages: Arc::new(vec![
                Message::user("long ago"),
                Message::assistant("an old answer"),
                Message::user("now"),
            ]),
            left_out: 2,
            ..ask("unused")
        };
        answer(&*model_on(wire, &fake, &settings()), request).await;
        let [sent] = fake.requests().try_into().expect("one request");
        let body = sent.body.to_string();
        assert!(body.contains("now"), "{wire:?}: {body}");
        assert!(!body.contains("long ago"), "{wire:?}: {body}");
        assert!(!body.contains("an old answer"), "{wire:?}: {body}");
    }
}

#[tokio::test]
async fn llama_cpps_refusal_of_pictures_is_answered_at_once_not_retried() {
    let fake = FakeProvider::start([
        llama_cpp_refuses_pictures(),
        Reply::events(openai_text_reply(&["I read text."])),
    ])
    .await;
    let events = answer(
        &*local_model(&fake, &one_retry()),
        conversation_with_pictures(),
    )
    .await;
    assert!(
        matches!(&events[0], ModelEvent::PicturesRefused { why, for_good: true } if why.contains("image input is not supported")),
        "{events:?}"
    );
    let [first, second] = fake
        .requests()
        .try_into()
        .expect("two requests, no retry between");
    assert!(carries_pictures(&first.body));
    assert!(!carries_pictures(&second.body));
}

#[tokio::test]
async fn a_refusal_that_is_not_about_pictures_does_not_leave_them_out() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([
            wire.error_status(400, "invalid_request_error", "tools.0.name is invalid"),
            Reply::events(wire.text_reply(&["no"])),
        ])
        .await;
        let (events, error) = run(
            &*model_on(wire, &fake, &settings()),
            conversation_with_pictures(),
        )
        .await;
        assert!(events.is_empty(), "{wire:?}: {events:?}");
        assert!(
            error.is_some_and(|error| error.to_string().contains("tools.0.name is invalid")),
            "{wire:?}"
        );
        assert_eq!(fake.requests().len(), 1, "{wire:?}");
    }
}

#[tokio::test]
async fn a_request_without_pictures_names_each_in_text_and_is_sent_once() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start([Reply::events(wire.text_reply(&["ok"]))]).await;
        let request = ModelRequest {
            without_pictures: true,
            ..conversation_with_pictures()
        };
        answer(&*model_on(wire, &fake, &settings()), request).await;
        let [sent] = fake.requests().try_into().expect("one request");
        assert!(!carries_pictures(&sent.body), "{wire:?}: {}", sent.body);
        assert_eq!(
            sent.body
                .to_string()
                .matches("was here; this model server did not take pictures")
                .count(),
            2,
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn a_conversation_too_long_is_not_answered_by_leaving_its_pictures_out() {
    let fake = FakeProvider::start([
        Reply::status(
            400,
            json!({"object": "error", "type": "BadRequestError",
                   "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 for the image)."}),
        ),
        Reply::events(openai_text_reply(&["no"])),
    ])
    .await;
    let (events, error) = run(
        &*local_model(&fake, &settings()),
        conversation_with_pictures(),
    )
    .await;
    assert!(events.is_empty(), "{events:?}");
    assert!(matches!(error, Some(ModelError::TooLong(_))), "{error:?}");
    assert_eq!(
        fake.requests().len(),
        1,
        "the turn, not the provider, sends less"
    );
}

#[tokio::test]
async fn pictures_refused_for_their_size_are_left_out_of_that_call_only() {
    let fake = FakeProvider::start([
        picture_too_large(),
        Reply::events(openai_text_reply(&["ok"])),
    ])
    .await;
    let events = answer(
        &*local_model(&fake, &settings()),
        conversation_with_pictures(),
    )
    .await;
    assert!(
        matches!(&events[0], ModelEvent::PicturesRefused { why, for_good: false } if why.contains("image exceeds 5 MB")),
        "{events:?}"
    );
}
