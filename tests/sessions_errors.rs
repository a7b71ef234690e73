//! What a client that gets the session methods wrong is told: the right
//! JSON-RPC code, a message a person can act on and that stays short
//! whatever the client sent, and a connection that goes on working.

mod support;

use serde_json::{Value, json};
use support::{RawClient, Server};

/// The code and message of a response, asserting it is an error.
fn error(response: &Value) -> (i64, String) {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {response}"));
    (
        error["code"].as_i64().expect("an integer code"),
        error["message"].as_str().expect("a message").to_owned(),
    )
}

/// The connection still works: a fresh session can be prompted.
async fn still_usable(client: &mut RawClient, server: &Server) {
    let session = client.new_session(&server.home.workspace()).await;
    let answer = client.prompt(&session, "ping").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
}

#[tokio::test]
async fn a_blank_session_id_is_invalid_params_saying_it_is_empty() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let cwd = server.home.workspace();
    for blank in ["", "  "] {
        for (method, params) in [
            (
                "session/load",
                json!({"sessionId": blank, "cwd": cwd, "mcpServers": []}),
            ),
            ("session/resume", json!({"sessionId": blank, "cwd": cwd})),
            (
                "session/prompt",
                json!({"sessionId": blank, "prompt": [{"type": "text", "text": "hi"}]}),
            ),
            ("session/close", json!({"sessionId": blank})),
            ("session/delete", json!({"sessionId": blank})),
            ("session/cancel", json!({"sessionId": blank})),
            (
                "session/set_mode",
                json!({"sessionId": blank, "modeId": "edit"}),
            ),
        ] {
            let (code, message) = error(&client.request(method, params).await);
            assert_eq!(code, -32602, "{method}: {message}");
            assert!(
                message.starts_with(method) && message.contains("`sessionId` is empty"),
                "{method}: {message}"
            );
        }
    }
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn megabytes_in_a_session_methods_params_get_a_short_answer() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let huge = "x".repeat(1_000_000);
    let cases = [
        (
            "session/list",
            json!({"cursor": huge}),
            "unknown cursor",
            "nextCursor of a previous session/list, or none",
        ),
        (
            "session/list",
            json!({"cwd": huge}),
            "cwd must be an absolute path",
            "is relative",
        ),
        (
            "session/new",
            json!({"cwd": format!("/{huge}"), "mcpServers": []}),
            "cwd `/xxx",
            "",
        ),
        (
            "session/set_mode",
            json!({"sessionId": session, "modeId": huge}),
            "there is no mode",
            "the modes are `ask`, `edit`, `read-only`",
        ),
        (
            "session/set_config_option",
            json!({"sessionId": session, "configId": huge, "value": "a"}),
            "there is no option",
            "the options are `model` and `mode`",
        ),
        (
            "session/set_config_option",
            json!({"sessionId": session, "configId": "model", "value": huge}),
            "cannot use the model",
            "",
        ),
        (
            "session/prompt",
            json!({"sessionId": session, "prompt": [{"type": huge}]}),
            "unknown variant",
            "`resource_link`, `resource`",
        ),
    ];
    for (method, params, start, end) in cases {
        let response = client.request(method, params).await;
        let size = response.to_string().len();
        let (code, message) = error(&response);
        assert_eq!(code, -32602, "{method}: {message}");
        assert!(size < 2048, "{method}: the answer is {size} bytes");
        assert!(
            message.starts_with(method) && message.contains(start),
            "{method}: {message}"
        );
        assert!(message.ends_with(end), "{method}: {message}");
    }
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn a_method_the_agent_calls_on_the_client_is_said_to_be_the_clients() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    for method in [
        "session/update",
        "session/request_permission",
        "fs/read_text_file",
        "terminal/create",
    ] {
        let (code, message) = error(&client.request(method, json!({})).await);
        assert_eq!(code, -32601, "{method}: {message}");
        assert!(
            message.contains("a method of the client"),
            "{method}: {message}"
        );
    }
    // A session method Punie lacks is still said not to be offered.
    let (code, message) = error(&client.request("session/fork", json!({})).await);
    assert_eq!(code, -32601);
    assert!(message.contains("not supported"), "{message}");
    still_usable(&mut client, &server).await;
}
