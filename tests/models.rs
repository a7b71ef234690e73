//! Models as a person meets them through the real server: the specs `punie
//! serve` and a session's settings take, and what a client is told while a
//! model server makes it wait or after its stream broke off. Cloud and local
//! model servers are local fakes speaking their real wire formats.

mod support;

use std::process::Stdio;

use serde_json::json;
use support::{Home, Server, text, within};

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
