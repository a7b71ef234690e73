//! Models as a person meets them through the real server: the specs `punie
//! serve` and a session's settings take, and what a client is told while a
//! model server makes it wait or after its stream broke off. Cloud and local
//! model servers are local fakes speaking their real wire formats.

mod support;

use std::process::Stdio;
use std::sync::Arc;

use serde_json::{Value, json};
use support::fake_provider::{
    FakeProvider, Part, Reply, Wire, anthropic_event, anthropic_message_end,
    anthropic_message_start, anthropic_text_block, anthropic_text_reply,
};
use support::{Home, RawClient, Server, text, within};
use tokio::sync::Notify;

/// `punie serve --model SPEC`, run until it exits.
async fn serve_with_model(home: &Home, spec: &str) -> std::process::Output {
    within(
        &format!("punie serve --model {spec}"),
        home.command()
            .args(["serve", "--port", "0", "--model", spec])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("punie runs")
}

#[tokio::test]
async fn a_local_url_without_a_model_name_is_refused_saying_where_the_name_goes() {
    // Nothing listens on port 9: a spec taken as valid would not be called.
    let cases = [
        (
            "local:http://127.0.0.1:9/v1",
            "local:http://127.0.0.1:9/v1/qwen3",
        ),
        (
            "local:http://127.0.0.1:9/v1/",
            "local:http://127.0.0.1:9/v1/qwen3",
        ),
        (
            "local:http://127.0.0.1:9/openai/v1",
            "local:http://127.0.0.1:9/openai/v1/qwen3",
        ),
        (
            "local:http://127.0.0.1:9/",
            "local:http://127.0.0.1:9/v1/qwen3",
        ),
    ];
    let home = Home::new();
    for (spec, example) in cases {
        let output = serve_with_model(&home, spec).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{spec}: {stderr}");
        let said =
            format!("`{spec}` names no model: a model name must follow the URL, e.g. {example}");
        assert!(stderr.contains(&said), "{spec}: {stderr}");
        assert!(!stderr.contains("punie listening"), "{spec}: {stderr}");
    }

    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    for (spec, example) in cases {
        let answer = client
            .request(
                "session/set_config_option",
                json!({"sessionId": session, "configId": "model", "value": spec}),
            )
            .await;
        let (code, message) = support::error(&answer);
        assert_eq!(code, -32602, "{spec}: {answer}");
        assert!(
            message.contains(&format!(
                "cannot use the model `{spec}`: `{spec}` names no model: a model name must \
                 follow the URL, e.g. {example}"
            )),
            "{spec}: {message}"
        );
    }
    // The session keeps the model it had.
    let answer = client.prompt(&session, "still here?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(
        client.agent_text(&session).starts_with("Turn 1."),
        "{}",
        client.agent_text(&session)
    );
}

/// A server in a new home whose model is `fake`, speaking `wire`.
async fn server_speaking(wire: Wire, fake: &FakeProvider) -> Server {
    let home = Home::new();
    let (model, env) = wire.model_spec(fake);
    let mut command = home.command();
    command
        .args(["serve", "--port", "0", "--model", &model])
        .envs(env);
    Server::spawn(home, command).await
}

/// The agent message chunks `client` has received, as (text, is a notice).
fn agent_chunks(client: &RawClient) -> Vec<(String, bool)> {
    client
        .notifications
        .iter()
        .map(|message| &message["params"]["update"])
        .filter(|update| update["sessionUpdate"] == "agent_message_chunk")
        .map(|update| {
            let text = update["content"]["text"].as_str().unwrap_or_default();
            let notice = update["_meta"]["punie/notice"] == Value::Bool(true);
            (text.to_owned(), notice)
        })
        .collect()
}

#[tokio::test]
async fn a_client_is_told_while_punie_waits_out_a_rate_limit_and_the_model_is_not() {
    for wire in Wire::ALL {
        let refusal = wire
            .error_status(429, "rate_limit_error", "Rate limit reached")
            .with_header("retry-after", "2");
        let fake = FakeProvider::start([
            refusal,
            Reply::events(wire.text_reply(&["fine"])),
            Reply::events(wire.text_reply(&["again"])),
        ])
        .await;
        let server = server_speaking(wire, &fake).await;
        let mut client = server.initialized().await;
        let session = client.new_session(&server.home.workspace()).await;
        let prompt = client.start_prompt(&session, "hello").await;

        client
            .receive_until(|received| {
                received.iter().any(|message| {
                    message["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
                })
            })
            .await;
        let told = format!(
            "{} is rate-limiting: it asks to wait 2 s before trying again, so Punie waits and \
             then tries again (retry 1 of 3)\n\n",
            wire.peer_name()
        );
        assert_eq!(agent_chunks(&client), [(told.clone(), true)], "{wire:?}");
        assert_eq!(
            fake.requests().len(),
            1,
            "{wire:?}: told while it waits, before trying again"
        );

        let answer = client.response_to(prompt).await;
        assert_eq!(
            answer["result"]["stopReason"], "end_turn",
            "{wire:?}: {answer}"
        );
        assert_eq!(
            agent_chunks(&client),
            [(told, true), ("fine".to_owned(), false)],
            "{wire:?}"
        );

        // The notice was for the person: the model's conversation holds
        // only its own reply.
        let answer = client.prompt(&session, "and?").await;
        assert_eq!(
            answer["result"]["stopReason"], "end_turn",
            "{wire:?}: {answer}"
        );
        let requests = fake.requests();
        let last = requests.last().expect("the second prompt's request");
        assert_eq!(wire.assistant_texts(&last.body), ["fine"], "{wire:?}");
    }
}

#[tokio::test]
async fn a_reply_that_broke_off_says_it_is_kept_and_go_on_continues_from_it() {
    for wire in Wire::ALL {
        let crash = Arc::new(Notify::new());
        let fake = FakeProvider::start([
            wire.opening_then("Half of it", [Part::Wait(crash.clone()), Part::Abort]),
            Reply::events(wire.text_reply(&[" and the rest."])),
        ])
        .await;
        let server = server_speaking(wire, &fake).await;
        let mut client = server.initialized().await;
        let session = client.new_session(&server.home.workspace()).await;
        let prompt = client.start_prompt(&session, "tell me").await;
        client
            .receive_until(|received| {
                received
                    .iter()
                    .any(|message| message["params"]["update"]["content"]["text"] == "Half of it")
            })
            .await;
        crash.notify_one();

        let answer = client.response_to(prompt).await;
        let (code, message) = support::error(&answer);
        assert_eq!(code, -32603, "{wire:?}: {answer}");
        let broke = format!("the stream from {} broke", wire.peer_name());
        assert!(message.contains(&broke), "{wire:?}: {message}");
        assert!(
            message.ends_with(
                "; the part of the reply that arrived is kept: send \"go on\" for the model \
                 to continue from there, or send the prompt again"
            ),
            "{wire:?}: {message}"
        );
        assert_eq!(fake.requests().len(), 1, "{wire:?}: not retried");

        // What the error says holds: the model is sent what it had said.
        let answer = client.prompt(&session, "go on").await;
        assert_eq!(
            answer["result"]["stopReason"], "end_turn",
            "{wire:?}: {answer}"
        );
        let requests = fake.requests();
        let last = requests.last().expect("the request after go on");
        assert_eq!(wire.assistant_texts(&last.body), ["Half of it"], "{wire:?}");
        assert_eq!(
            client.agent_text(&session),
            "Half of it and the rest.",
            "{wire:?}"
        );
    }
}

/// A thinking block at `index` streamed as Anthropic streams it: its text,
/// then its signature, if it has one.
fn anthropic_thinking_block(index: usize, thinking: &str, signature: Option<&str>) -> Vec<String> {
    let mut events = vec![
        anthropic_event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": ""}})),
        anthropic_event(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "thinking_delta", "thinking": thinking}})),
    ];
    if let Some(signature) = signature {
        events.push(anthropic_event(
            json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": signature}}),
        ));
    }
    events.push(anthropic_event(
        json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

#[tokio::test]
async fn anthropic_thinking_goes_back_in_later_turns_only_with_its_signature() {
    let signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";
    let mut first = vec![anthropic_message_start(10)];
    first.extend(anthropic_thinking_block(
        0,
        "Signed thought.",
        Some(signature),
    ));
    // As a proxy or an Anthropic-compatible server may stream it: no signature.
    first.extend(anthropic_thinking_block(1, "Unsigned thought.", None));
    first.extend(anthropic_text_block(2, &["42"]));
    first.extend(anthropic_message_end("end_turn", 20));
    let fake = FakeProvider::start([
        Reply::events(first),
        Reply::events(anthropic_text_reply(&["Still 42."])),
    ])
    .await;
    let server = server_speaking(Wire::Anthropic, &fake).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    for prompt in ["think", "and again?"] {
        let answer = client.prompt(&session, prompt).await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    }

    let requests = fake.requests();
    let [_, second] = requests.as_slice() else {
        panic!("expected two requests, got {}", requests.len());
    };
    assert_eq!(
        second.body["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Signed thought.", "signature": signature},
            {"type": "text", "text": "42"},
        ]}),
        "{}",
        second.body
    );
}
