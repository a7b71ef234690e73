//! A client's mistakes get the right JSON-RPC code and a message a person can
//! act on, and the connection stays usable afterwards.

mod support;

use futures::SinkExt as _;
use serde_json::{Value, json};
use support::{Server, error, still_usable};

#[tokio::test]
async fn an_unparsable_frame_is_answered_with_a_parse_error_and_the_connection_stays() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    client.send_text("{this is not json").await;
    let response = client.recv().await;
    assert_eq!(response["id"], Value::Null);
    let (code, message) = error(&response);
    assert_eq!(code, -32700);
    assert!(
        message.contains("not valid JSON") && message.contains("column"),
        "says what is wrong and where: {message}"
    );
    client.send_text("[1, 2]").await;
    let (code, message) = error(&client.recv().await);
    assert_eq!(code, -32600, "batches are refused");
    assert!(message.contains("send one message per frame"), "{message}");
    // JSON too deep or a number too large to read: said why, like any other.
    for (text, why) in [
        (
            format!("{}{}", "[".repeat(200), "]".repeat(200)),
            "recursion limit",
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1e400, "method": "x"}"#.to_owned(),
            "number out of range",
        ),
    ] {
        client.send_text(text).await;
        let (code, message) = error(&client.recv().await);
        assert_eq!(code, -32700);
        assert!(message.contains(why), "{message}");
    }
    // Megabytes of garbage get a short answer, not an echo.
    client.send_text("{garbage ".repeat(500_000)).await;
    let response = client.recv().await;
    assert_eq!(error(&response).0, -32700);
    let size = response.to_string().len();
    assert!(size < 4096, "the answer is {size} bytes");
    still_usable(&mut client, &server).await;
}

/// Each JSON value parsed takes tens of bytes, whatever it took as text:
/// a message of little but `0,` would take many times its size. One with
/// more values than any ACP message needs is refused before it is parsed,
/// with its id, and the connection goes on.
#[tokio::test]
async fn a_message_of_too_many_values_is_refused_before_it_is_parsed() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let zeros = vec![0; 100_001];
    client
        .send(json!({"jsonrpc": "2.0", "id": 4, "method": "session/list",
                     "params": {"padding": zeros}}))
        .await;
    let response = client.recv().await;
    assert_eq!(response["id"], 4, "{response}");
    let (code, message) = error(&response);
    assert_eq!(code, -32600);
    assert!(
        message.contains("more than 100000 JSON values"),
        "{message}"
    );
    // Without a method it may be an answer to a request of the server's: an
    // error carrying its id would answer the client's own request 5.
    client
        .send(json!({"jsonrpc": "2.0", "id": 5, "result": vec![0; 100_001]}))
        .await;
    let response = client.recv().await;
    assert_eq!(response["id"], Value::Null, "{response}");
    assert_eq!(error(&response).0, -32600);
    // A long text is one value.
    client
        .send(json!({"jsonrpc": "2.0", "id": 5, "method": "session/list",
                     "params": {"padding": "0,".repeat(1_000_000)}}))
        .await;
    let response = client.recv().await;
    assert!(response.get("result").is_some(), "{response}");
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn an_invalid_request_with_a_readable_id_is_answered_with_that_id() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let cases = [
        (
            json!({"id": 5, "method": "session/list"}),
            "`jsonrpc` must be \"2.0\"",
        ),
        (
            json!({"jsonrpc": "1.0", "id": "a", "method": "session/list"}),
            "`jsonrpc`",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 6, "method": 7}),
            "`method` must be a string",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 9, "method": "session/list", "params": 3}),
            "`params`",
        ),
    ];
    for (message, problem) in cases {
        client.send(message.clone()).await;
        let response = client.recv().await;
        assert_eq!(response["id"], message["id"], "{message}: {response}");
        let (code, text) = error(&response);
        assert_eq!(code, -32600, "{message}: {text}");
        assert!(text.contains(problem), "{message}: {text}");
    }
    // An id no response could carry is answered with `null`, as JSON-RPC
    // says; so is a message with no method, which may be a broken answer to
    // one of the server's requests rather than a request of the client's.
    let id_problem = "the id must be a string, null or an integer from -2^63 to 2^63 - 1";
    for (message, problem) in [
        (json!({"id": 7.5, "method": "session/list"}), id_problem),
        (
            json!({"jsonrpc": "2.0", "id": 1u64 << 63, "method": "session/list"}),
            id_problem,
        ),
        (
            serde_json::from_str(
                r#"{"jsonrpc": "2.0", "id": 18446744073709551616, "method": "session/list"}"#,
            )
            .unwrap(),
            id_problem,
        ),
        (json!({"jsonrpc": "2.0", "id": 8}), "it has no `method`"),
    ] {
        client.send(message.clone()).await;
        let response = client.recv().await;
        assert_eq!(response["id"], Value::Null, "{message}: {response}");
        let (code, text) = error(&response);
        assert_eq!(code, -32600);
        assert!(text.contains(problem), "{message}: {text}");
    }
    still_usable(&mut client, &server).await;
    // A client's mistakes are not the server's warnings.
    let log = server.log();
    assert!(!log.contains("WARN"), "{log}");
}

#[tokio::test]
async fn an_unknown_method_is_method_not_found() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let (code, message) = error(&client.request("frobnicate", json!({})).await);
    assert_eq!(code, -32601);
    assert!(message.contains("frobnicate"), "{message}");
    let (code, message) = error(
        &client
            .request("session/fork", json!({"sessionId": "x", "cwd": "/"}))
            .await,
    );
    assert_eq!(code, -32601, "session/fork is not offered: {message}");
    let (code, message) = error(
        &client
            .request(
                "session/load",
                json!({"sessionId": "no-such-session", "cwd": "/", "mcpServers": []}),
            )
            .await,
    );
    assert_eq!(code, -32002, "{message}");
    assert!(
        message.contains("session/list"),
        "the fix is named: {message}"
    );
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn a_bad_cwd_is_invalid_params_naming_the_problem() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let file = server.home.workspace().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let cases = [
        (json!({"mcpServers": []}), "cwd"),
        (
            json!({"cwd": "relative/path", "mcpServers": []}),
            "absolute",
        ),
        (
            json!({"cwd": "/no/such/directory/anywhere", "mcpServers": []}),
            "does not exist",
        ),
        (json!({"cwd": file, "mcpServers": []}), "not a directory"),
        (json!({"cwd": 42, "mcpServers": []}), "cwd"),
    ];
    for (params, problem) in cases {
        let (code, message) = error(&client.request("session/new", params.clone()).await);
        assert_eq!(code, -32602, "{params}: {message}");
        assert!(
            message.starts_with("session/new: ") && message.contains(problem),
            "{params}: the message names the problem ({problem}): {message}"
        );
    }
    // A list filtered by a relative cwd would match nothing, silently.
    let listed = client
        .request("session/list", json!({"cwd": "relative/path"}))
        .await;
    let (code, message) = error(&listed);
    assert_eq!(code, -32602, "{message}");
    assert!(message.contains("absolute"), "{message}");
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn a_prompt_to_an_unknown_session_is_resource_not_found() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let response = client.prompt("no-such-session", "hello").await;
    let (code, message) = error(&response);
    assert_eq!(code, -32002);
    assert!(message.contains("no-such-session"), "{message}");
    assert_eq!(response["error"]["data"]["sessionId"], "no-such-session");
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn a_prompt_to_a_session_the_connection_is_not_attached_to_is_refused() {
    let server = Server::start().await;
    let mut owner = server.initialized().await;
    let mut other = server.initialized().await;
    let session = owner.new_session(&server.home.workspace()).await;
    let (code, message) = error(&other.prompt(&session, "let me in").await);
    assert_eq!(code, -32002);
    assert!(message.contains("not attached"), "{message}");
    assert!(
        message.contains("session/load"),
        "the fix is named: {message}"
    );
    let (code, _) = error(
        &other
            .request("session/close", json!({"sessionId": session}))
            .await,
    );
    assert_eq!(code, -32002, "nor may it close the session");
    other
        .notify("session/cancel", json!({"sessionId": session}))
        .await;

    // The owner is unaffected, and so is the refused client.
    let answer = owner.prompt(&session, "mine").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");
    assert!(owner.agent_text(&session).contains("mine"));
    still_usable(&mut other, &server).await;
}

#[tokio::test]
async fn malformed_prompts_are_invalid_params() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let cases = [
        (json!({"sessionId": session}), "prompt"),
        (json!({"sessionId": session, "prompt": []}), "empty"),
        (
            json!({"sessionId": session, "prompt": [{"type": "image", "data": "AAAA", "mimeType": "image/svg+xml"}]}),
            "image/svg+xml",
        ),
        (
            json!({"sessionId": session, "prompt": [{"type": "text", "text": "see"}, {"type": "image", "data": "not base64!", "mimeType": "image/png"}]}),
            "block 1 holds a picture whose data is not base64",
        ),
        (
            json!({"sessionId": session, "prompt": [{"type": "audio", "data": "AAAA", "mimeType": "audio/wav"}]}),
            "audio",
        ),
        (
            json!({"sessionId": session, "prompt": [{"type": "text", "text": " "}]}),
            "the prompt says nothing",
        ),
        (
            json!({"sessionId": session, "prompt": [{"type": "image", "data": "", "mimeType": "image/png"}]}),
            "block 0 holds an empty picture",
        ),
        (
            json!({"prompt": [{"type": "text", "text": "hi"}]}),
            "sessionId",
        ),
        (
            json!({"sessionId": session, "prompt": [{"type": "resource", "resource": {"uri": "file:///x.bin", "blob": "!!!", "mimeType": "application/octet-stream"}}]}),
            "block 0 holds a blob whose data is not base64",
        ),
    ];
    for (params, problem) in cases {
        let (code, message) = error(&client.request("session/prompt", params.clone()).await);
        assert_eq!(code, -32602, "{params}: {message}");
        assert!(
            message.contains(problem),
            "{params}: names {problem}: {message}"
        );
    }
    let answer = client.prompt(&session, "after all that").await;
    assert_eq!(
        answer["result"]["stopReason"], "end_turn",
        "the session was not harmed"
    );
}

#[tokio::test]
async fn a_second_prompt_while_a_turn_runs_is_refused() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let first = client.start_prompt(&session, "count to 1000").await;
    let (code, message) = error(&client.prompt(&session, "me too").await);
    assert_eq!(code, -32600);
    assert!(message.contains("already running a turn"), "{message}");
    client
        .notify("session/cancel", json!({"sessionId": session}))
        .await;
    let answer = client.response_to(first).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled");
}

#[tokio::test]
async fn a_cancel_sent_as_a_request_cancels_and_is_answered() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let turn = client.start_prompt(&session, "count to 1000").await;
    let answer = client
        .request("session/cancel", json!({"sessionId": session}))
        .await;
    assert_eq!(answer["result"], Value::Null, "{answer}");
    assert!(answer.get("error").is_none(), "{answer}");
    let ended = client.response_to(turn).await;
    assert_eq!(ended["result"]["stopReason"], "cancelled");

    let (code, message) = error(&client.request("session/cancel", json!({})).await);
    assert_eq!(code, -32602, "{message}");
    assert!(message.contains("sessionId"), "{message}");
    let mut other = server.initialized().await;
    let (code, message) = error(
        &other
            .request("session/cancel", json!({"sessionId": session}))
            .await,
    );
    assert_eq!(
        code, -32002,
        "only an attached client may cancel: {message}"
    );
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn requests_before_initialize_are_refused_and_initialize_still_works() {
    let server = Server::start().await;
    let mut client = server.raw().await;
    let response = client
        .request(
            "session/new",
            json!({"cwd": server.home.workspace(), "mcpServers": []}),
        )
        .await;
    let (code, _) = error(&response);
    assert_eq!(code, -32600);
    client.initialize().await;
    still_usable(&mut client, &server).await;
}

#[tokio::test]
async fn one_clients_mistakes_never_reach_another() {
    let server = Server::start().await;
    let mut careful = server.initialized().await;
    let session = careful.new_session(&server.home.workspace()).await;
    let mut clumsy = server.raw().await;
    clumsy.send_text("\u{0}\u{1}garbage").await;
    clumsy
        .request("initialize", json!({"protocolVersion": "banana"}))
        .await;
    clumsy
        .send_text("{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":")
        .await;
    clumsy
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            0u8;
            16
        ]))
        .await
        .unwrap();
    drop(clumsy);
    let answer = careful.prompt(&session, "unbothered").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");
}

#[tokio::test]
async fn an_initialize_without_a_usable_version_names_it_and_a_good_one_still_works() {
    let server = Server::start().await;
    let mut client = server.raw().await;
    for params in [
        json!({"protocolVersion": "banana"}),
        json!({"protocolVersion": -1}),
        json!({}),
    ] {
        let answer = client.request("initialize", params.clone()).await;
        let (code, _) = error(&answer);
        assert_eq!(code, -32602, "{params}: {answer}");
        assert!(
            answer["error"].to_string().contains("protocolVersion"),
            "the answer names the field: {answer}"
        );
    }
    let answer = client.initialize().await;
    assert_eq!(answer["result"]["protocolVersion"], 1, "{answer}");
}

#[tokio::test]
async fn capabilities_that_cannot_be_read_are_named_in_the_answer_and_count_as_not_offered() {
    let server = Server::start().await;
    let mut client = server.raw().await;
    let answer = client
        .request(
            "initialize",
            json!({"protocolVersion": 1,
                   "clientCapabilities": {"fs": {"readTextFile": "yes"}, "terminal": 1}}),
        )
        .await;
    assert_eq!(answer["result"]["protocolVersion"], 1, "{answer}");
    assert_eq!(
        answer["result"]["_meta"]["punie/unreadCapabilities"],
        "`clientCapabilities.fs.readTextFile` is \"yes\", not true or false; \
         `clientCapabilities.terminal` is 1, not true or false: what cannot be read counts as \
         not offered, and Punie does that work itself",
        "{answer}"
    );
    let described = client.request("_punie/connection", json!({})).await;
    assert_eq!(
        described["result"]["clientCapabilities"]["terminal"], false,
        "{described}"
    );

    let mut fine = server.raw().await;
    let answer = fine.initialize().await;
    assert!(answer["result"].get("_meta").is_none(), "{answer}");
    // Null is as good as absent.
    let answer = server
        .raw()
        .await
        .request(
            "initialize",
            json!({"protocolVersion": 1,
                   "clientCapabilities": {"fs": {"writeTextFile": null}, "terminal": null}}),
        )
        .await;
    assert!(answer["result"].get("_meta").is_none(), "{answer}");
    // A huge value is quoted back short.
    let answer = server
        .raw()
        .await
        .request(
            "initialize",
            json!({"protocolVersion": 1,
                   "clientCapabilities": {"terminal": "x".repeat(1 << 20)}}),
        )
        .await;
    let said = answer["result"]["_meta"]["punie/unreadCapabilities"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.starts_with("`clientCapabilities.terminal` is \"xxx"),
        "{said}"
    );
    assert!(said.len() < 1000, "{} bytes", said.len());
}

#[tokio::test]
async fn params_of_the_wrong_shape_are_named_in_plain_words() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let workspace = server.home.workspace();
    let cases = [
        (
            json!([workspace, []]),
            "`params` must be an object of named parameters, not an array",
        ),
        (
            json!({"cwd": workspace, "mcpServers": [{"name": "bad"}]}),
            "`mcpServers[0]`: not an MCP server: give `name`, `command`",
        ),
    ];
    for (params, problem) in cases {
        let (code, message) = error(&client.request("session/new", params.clone()).await);
        assert_eq!(code, -32602, "{params}: {message}");
        assert!(
            message.contains(problem),
            "{params}: names {problem}: {message}"
        );
    }
    assert_eq!(server.health().await["sessions"], 0);

    // Parameters left out are none given: the one missing is named.
    let (code, message) = error(&client.request("session/new", Value::Null).await);
    assert_eq!(
        (code, message.as_str()),
        (-32602, "session/new: missing field `cwd`")
    );
    let session = client.new_session(&workspace).await;
    let (code, message) = error(
        &client
            .request(
                "session/set_config_option",
                json!({"sessionId": session, "configId": "mode"}),
            )
            .await,
    );
    assert_eq!(code, -32602, "{message}");
    assert!(
        message.contains("`value` is missing or of the wrong type: give the id of one of"),
        "{message}"
    );
    for method in ["session/load", "session/resume"] {
        let (code, message) = error(
            &client
                .request(
                    method,
                    json!({"sessionId": session, "cwd": "relative/dir", "mcpServers": []}),
                )
                .await,
        );
        assert_eq!(code, -32602, "{method}: {message}");
        assert!(
            message.contains("cwd must be an absolute path"),
            "{message}"
        );
    }
}
