//! ACP as a client sees it, through the official Rust SDK's client role and
//! its WebSocket and HTTP transports.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_client_protocol::UntypedMessage;
use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    CancelNotification, ClientCapabilities, CloseSessionRequest, DeleteSessionRequest,
    FileSystemCapabilities, InitializeRequest, ListSessionsRequest, LoadSessionRequest,
    PromptRequest, SessionId, SessionUpdate, StopReason,
};
use serde_json::{Value, json};
use support::sdk::{Received, client, first_update, initialize, new_session, prompt};
use support::{Server, sdk_transport, sdk_transport_to};

#[tokio::test]
async fn initialize_negotiates_version_1_and_advertises_only_what_punie_does() {
    let server = Server::start().await;
    let response = client(sdk_transport(&server), Received::default(), async |cx| {
        cx.send_request(InitializeRequest::new(ProtocolVersion::V1))
            .block_task()
            .await
    })
    .await;
    assert_eq!(response.protocol_version, ProtocolVersion::V1);
    let info = response.agent_info.expect("agentInfo");
    assert_eq!(info.name, "punie");
    assert_eq!(info.title.as_deref(), Some("Punie"));
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    let capabilities = serde_json::to_value(&response.agent_capabilities).unwrap();
    assert_eq!(capabilities["loadSession"], true);
    assert_eq!(
        capabilities["sessionCapabilities"],
        json!({"list": {}, "resume": {}, "close": {}, "delete": {}})
    );
    assert_eq!(capabilities["promptCapabilities"]["image"], true);
    assert_eq!(capabilities["promptCapabilities"]["audio"], false);
    // Stdio MCP servers every agent takes; Punie reaches HTTP ones too.
    assert_eq!(
        capabilities["mcpCapabilities"],
        json!({"http": true, "sse": false})
    );
    assert!(response.auth_methods.is_empty());

    // A client from the future is answered with the version Punie speaks.
    let mut raw = server.raw().await;
    let answer = raw
        .request(
            "initialize",
            json!({"protocolVersion": 7, "clientCapabilities": {}}),
        )
        .await;
    assert_eq!(answer["result"]["protocolVersion"], 1, "{answer}");
}

#[tokio::test]
async fn a_prompt_streams_its_reply_and_the_session_remembers_the_conversation() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let received = Received::default();
    let session = client(sdk_transport(&server), received.clone(), async |cx| {
        initialize(&cx).await?;
        let session = new_session(&cx, &workspace).await?;
        assert_eq!(prompt(&cx, &session, "hello").await?, StopReason::EndTurn);
        let (text, chunks) = received.agent_text(&session);
        assert_eq!(
            text,
            "Turn 1. You said: \"hello\". That is the first thing you said."
        );
        assert!(
            chunks > 1,
            "the reply streams in several chunks, got {chunks}"
        );

        assert_eq!(prompt(&cx, &session, "again").await?, StopReason::EndTurn);
        let (text, _) = received.agent_text(&session);
        assert!(
            text.ends_with("Turn 2. You said: \"again\". Before that you said: \"hello\"."),
            "the second turn remembers the first: {text}"
        );
        Ok(session)
    })
    .await;
    let titles: Vec<String> = received
        .updates
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.session_id == session)
        .filter_map(|n| match &n.update {
            SessionUpdate::SessionInfoUpdate(info) => serde_json::to_value(info).ok(),
            _ => None,
        })
        .filter_map(|info| info["title"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        titles,
        ["hello"],
        "the first prompt names the session, once"
    );
}

#[tokio::test]
async fn cancel_stops_a_streaming_turn_promptly() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let received = Received::default();
    client(sdk_transport(&server), received.clone(), async |cx| {
        initialize(&cx).await?;
        let session = new_session(&cx, &workspace).await?;
        let counting = cx.send_request(PromptRequest::new(
            session.clone(),
            vec!["count to 1000".into()],
        ));
        first_update(&received, &session).await;

        let cancelled_at = Instant::now();
        cx.send_notification(CancelNotification::new(session.clone()))?;
        let answer = counting.block_task().await?;
        let took = cancelled_at.elapsed();
        assert_eq!(answer.stop_reason, StopReason::Cancelled);
        assert!(
            took < Duration::from_secs(1),
            "cancelled promptly, took {took:?}"
        );
        let (at_cancel, _) = received.agent_text(&session);
        assert!(
            !at_cancel.contains("1000"),
            "the count stopped early: {at_cancel}"
        );

        // The session goes on, and remembers what was cut short; nothing of
        // the cancelled turn arrives after its answer.
        assert_eq!(prompt(&cx, &session, "next").await?, StopReason::EndTurn);
        let (text, _) = received.agent_text(&session);
        assert_eq!(
            text.strip_prefix(at_cancel.as_str()),
            Some("Turn 2. You said: \"next\". Before that you said: \"count to 1000\"."),
            "after the cancelled answer, only the next turn's text: {text}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_running_prompt_blocks_nothing_else() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let received = Received::default();
    let other_received = Received::default();
    client(sdk_transport(&server), received.clone(), async |cx| {
        initialize(&cx).await?;
        let slow = new_session(&cx, &workspace).await?;
        let counting = cx.send_request(PromptRequest::new(
            slow.clone(),
            vec!["count to 1000".into()],
        ));
        first_update(&received, &slow).await;

        // On the same connection: listing, a new session, and its own turn.
        let listed = cx
            .send_request(ListSessionsRequest::new())
            .block_task()
            .await?;
        assert_eq!(listed.sessions.len(), 1);
        let quick = new_session(&cx, &workspace).await?;
        assert_eq!(prompt(&cx, &quick, "quick").await?, StopReason::EndTurn);

        // On another connection: a whole conversation.
        client(
            sdk_transport(&server),
            other_received.clone(),
            async |other| {
                initialize(&other).await?;
                let theirs = new_session(&other, &workspace).await?;
                assert_eq!(prompt(&other, &theirs, "hi").await?, StopReason::EndTurn);
                Ok(())
            },
        )
        .await;

        let (text, _) = received.agent_text(&slow);
        assert!(
            !text.contains("1000"),
            "all that happened while the count ran"
        );
        cx.send_notification(CancelNotification::new(slow.clone()))?;
        assert_eq!(
            counting.block_task().await?.stop_reason,
            StopReason::Cancelled
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_hundred_clients_with_two_sessions_each_get_only_their_own_updates() {
    let server = Arc::new(Server::start().await);
    let workspace = server.home.workspace();
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..100 {
        let server = server.clone();
        let workspace = workspace.clone();
        clients.spawn(async move {
            let received = Received::default();
            let sessions = client(sdk_transport(&server), received.clone(), async |cx| {
                initialize(&cx).await?;
                let a = new_session(&cx, &workspace).await?;
                let b = new_session(&cx, &workspace).await?;
                let (text_a, text_b) = (format!("client {n} session a"), format!("client {n} session b"));
                let (stop_a, stop_b) =
                    tokio::join!(prompt(&cx, &a, &text_a), prompt(&cx, &b, &text_b));
                assert_eq!(stop_a?, StopReason::EndTurn);
                assert_eq!(stop_b?, StopReason::EndTurn);
                Ok([a, b])
            })
            .await;
            let mut expected: Vec<String> = sessions.iter().map(ToString::to_string).collect();
            expected.sort();
            assert_eq!(received.sessions_seen(), expected, "client {n} saw only its own sessions");
            for (session, name) in sessions.iter().zip(["a", "b"]) {
                let (text, _) = received.agent_text(session);
                assert_eq!(
                    text,
                    format!("Turn 1. You said: \"client {n} session {name}\". That is the first thing you said.")
                );
            }
            expected
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(joined) = clients.join_next().await {
        ids.extend(joined.expect("every client succeeded"));
    }
    assert_eq!(ids.len(), 200, "every session has an id of its own");
    for id in &ids {
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("{id} is a UUID"));
        assert_eq!(
            parsed.get_version(),
            Some(uuid::Version::Random),
            "{id} is random, so unguessable"
        );
    }
}

#[tokio::test]
async fn list_shows_every_session_newest_first_close_detaches_and_delete_forgets() {
    let server = Server::start().await;
    let alpha = server.home.dir.path().join("alpha");
    let beta = server.home.dir.path().join("beta");
    std::fs::create_dir_all(&alpha).unwrap();
    std::fs::create_dir_all(&beta).unwrap();
    client(sdk_transport(&server), Received::default(), async |cx| {
        initialize(&cx).await?;
        let first = new_session(&cx, &alpha).await?;
        let second = new_session(&cx, &beta).await?;
        let third = new_session(&cx, &alpha).await?;
        prompt(&cx, &first, "Fix the flaky test\nand more").await?;

        let all = cx
            .send_request(ListSessionsRequest::new())
            .block_task()
            .await?;
        let ids: Vec<&SessionId> = all.sessions.iter().map(|s| &s.session_id).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], &first, "the session prompted last is newest");
        assert_eq!(all.sessions[0].title.as_deref(), Some("Fix the flaky test"));
        assert!(all.sessions[0].updated_at.is_some());
        assert!(all.next_cursor.is_none());

        let in_alpha = cx
            .send_request(ListSessionsRequest::new().cwd(alpha.clone()))
            .block_task()
            .await?;
        let mut alpha_ids: Vec<String> = in_alpha
            .sessions
            .iter()
            .map(|s| s.session_id.to_string())
            .collect();
        alpha_ids.sort();
        let mut expected = vec![first.to_string(), third.to_string()];
        expected.sort();
        assert_eq!(alpha_ids, expected);

        cx.send_request(CloseSessionRequest::new(second.clone()))
            .block_task()
            .await?;
        let after = cx
            .send_request(ListSessionsRequest::new())
            .block_task()
            .await?;
        assert!(
            after.sessions.iter().any(|s| s.session_id == second),
            "a closed session stays stored"
        );
        let refused = prompt(&cx, &second, "hello?")
            .await
            .expect_err("a closed session is detached");
        assert_eq!(refused.code.value(), -32002);

        cx.send_request(DeleteSessionRequest::new(second.clone()))
            .block_task()
            .await?;
        let after = cx
            .send_request(ListSessionsRequest::new())
            .block_task()
            .await?;
        assert!(after.sessions.iter().all(|s| s.session_id != second));
        let again = cx
            .send_request(DeleteSessionRequest::new(second.clone()))
            .block_task()
            .await
            .expect_err("a deleted session is gone");
        assert_eq!(again.code.value(), -32002);
        assert!(again.message.contains("was deleted"), "{}", again.message);
        let prompted = prompt(&cx, &second, "still there?")
            .await
            .expect_err("a deleted session takes no prompt");
        assert_eq!(prompted.code.value(), -32002);
        assert!(
            prompted
                .message
                .contains("was deleted; start a new one with session/new"),
            "{}",
            prompted.message
        );
        let loaded = cx
            .send_request(LoadSessionRequest::new(second.clone(), alpha.clone()))
            .block_task()
            .await
            .expect_err("a deleted session does not load");
        assert_eq!(loaded.code.value(), -32002);
        assert!(loaded.message.contains("was deleted"), "{}", loaded.message);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn list_pages_through_many_sessions_with_a_cursor() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let mut raw = server.initialized().await;
    let mut created = Vec::new();
    for _ in 0..150 {
        created.push(raw.new_session(&workspace).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        };
        let page = raw.request("session/list", params).await;
        pages += 1;
        for session in page["result"]["sessions"].as_array().expect("sessions") {
            seen.push(session["sessionId"].as_str().unwrap().to_owned());
        }
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    seen.sort();
    created.sort();
    assert_eq!(seen, created, "every session exactly once");
    let bad = raw
        .request("session/list", json!({"cursor": "made-up"}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
}

#[tokio::test]
async fn client_capabilities_belong_to_their_connection() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let describe = UntypedMessage::new("_punie/connection", json!({})).unwrap();
    let with_fs = ClientCapabilities::new()
        .fs(FileSystemCapabilities::new()
            .read_text_file(true)
            .write_text_file(true))
        .terminal(true);
    let rich: Value = client(sdk_transport(&server), Received::default(), async |cx| {
        cx.send_request(InitializeRequest::new(ProtocolVersion::V1).client_capabilities(with_fs))
            .block_task()
            .await?;
        let plain: Value = client(sdk_transport(&server), Received::default(), async |other| {
            // An odd initialize here must not change anything for anyone else.
            other
                .send_request(
                    UntypedMessage::new(
                        "initialize",
                        json!({"protocolVersion": 1, "clientCapabilities": {"fs": {"readTextFile": false}, "surprise": [1, 2]}}),
                    )
                    .unwrap(),
                )
                .block_task()
                .await?;
            new_session(&other, &workspace).await?;
            other.send_request(describe.clone()).block_task().await
        })
        .await;
        assert_eq!(plain["clientCapabilities"]["fs"]["readTextFile"], false);
        assert_eq!(plain["clientCapabilities"]["terminal"], false);

        new_session(&cx, &workspace).await?;
        cx.send_request(describe.clone()).block_task().await
    })
    .await;
    assert_eq!(rich["clientCapabilities"]["fs"]["readTextFile"], true);
    assert_eq!(rich["clientCapabilities"]["fs"]["writeTextFile"], true);
    assert_eq!(rich["clientCapabilities"]["terminal"], true);
}

/// An SDK client at `url` runs one turn of the `test` model, saying
/// `words`; how many chunks the reply came in.
async fn one_turn_at(server: &Server, url: &str, words: &str) -> usize {
    let workspace = server.home.workspace();
    let received = Received::default();
    let transport = sdk_transport_to(url, &server.token);
    client(transport, received.clone(), async |cx| {
        initialize(&cx).await?;
        let session = new_session(&cx, &workspace).await?;
        assert_eq!(prompt(&cx, &session, words).await?, StopReason::EndTurn);
        let (text, chunks) = received.agent_text(&session);
        assert_eq!(
            text,
            format!("Turn 1. You said: \"{words}\". That is the first thing you said.")
        );
        Ok(chunks)
    })
    .await
}

#[tokio::test]
async fn ws_the_python_punies_address_serves_the_same_agent() {
    let server = Server::start().await;
    let url = server.ws_url().replace("/acp", "/ws");
    one_turn_at(&server, &url, "over /ws").await;
}

#[tokio::test]
async fn the_http_and_sse_profile_serves_the_same_agent() {
    let server = Server::start().await;
    let chunks = one_turn_at(&server, &server.http_url("/acp"), "over http").await;
    assert!(chunks > 1, "the reply streams");
}

/// `punie serve` with `OLLAMA_HOST` at `host`.
async fn serving_with_ollama_at(host: &str) -> Server {
    let home = support::Home::new();
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("OLLAMA_HOST", host);
    Server::spawn(home, command).await
}

/// A local model server that lists `models` at `GET /v1/models`, as Ollama
/// does, for as long as the test runs; its address.
async fn model_server_listing(models: &[&str]) -> std::net::SocketAddr {
    let models = models.iter().map(|model| (*model).to_owned()).collect();
    model_server_listing_now(Arc::new(std::sync::Mutex::new(models))).await
}

/// A local model server that lists whatever `models` holds when asked.
async fn model_server_listing_now(
    models: Arc<std::sync::Mutex<Vec<String>>>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = json!({"object": "list", "data": models.lock().unwrap().iter()
                .map(|id| json!({"id": id, "object": "model", "owned_by": "library"}))
                .collect::<Vec<_>>()})
            .to_string();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|end| end == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                assert!(
                    request.starts_with(b"GET /v1/models "),
                    "{}",
                    String::from_utf8_lossy(&request)
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

/// The ids of the values of a `model` option among `options`.
fn model_values(options: &Value) -> Vec<String> {
    options
        .as_array()
        .and_then(|options| options.iter().find(|option| option["id"] == "model"))
        .and_then(|model| model["options"].as_array())
        .map(|values| {
            values
                .iter()
                .filter_map(|value| value["value"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_model_a_local_server_gains_reaches_the_menu_of_every_attached_client() {
    let listed = Arc::new(std::sync::Mutex::new(vec!["qwen3:8b".to_owned()]));
    let ollama = model_server_listing_now(listed.clone()).await;
    let server = serving_with_ollama_at(&ollama.to_string()).await;
    let workspace = server.home.workspace();
    let mut prompter = server.initialized().await;
    let session = prompter.new_session(&workspace).await;
    let mut watcher = server.initialized().await;
    let resumed = watcher
        .request(
            "session/resume",
            json!({"sessionId": session, "cwd": workspace}),
        )
        .await;
    assert!(resumed.get("result").is_some(), "{resumed}");
    let known = prompter.request("_punie/models", json!({})).await;
    assert_eq!(
        known["result"]["models"],
        json!(["test", "ollama:qwen3:8b"])
    );

    listed.lock().unwrap().push("llama3.2".to_owned());
    let refreshed = prompter.request("_punie/models", json!({})).await;

    assert_eq!(
        refreshed["result"]["models"],
        json!(["test", "ollama:qwen3:8b", "ollama:llama3.2"])
    );
    let with_new_model = |message: &Value| {
        let update = &message["params"]["update"];
        (update["sessionUpdate"] == "config_option_update"
            && message["params"]["sessionId"] == json!(session))
        .then(|| model_values(&update["configOptions"]))
        .filter(|values| values.iter().any(|model| model == "ollama:llama3.2"))
    };
    for client in [&mut prompter, &mut watcher] {
        // The prompter may have been told while it waited for its answer.
        let mut menu = client.notifications.iter().find_map(with_new_model);
        while menu.is_none() {
            menu = with_new_model(&client.recv().await);
        }
        assert_eq!(
            menu.unwrap(),
            ["test", "ollama:qwen3:8b", "ollama:llama3.2"]
        );
    }
}

#[tokio::test]
async fn the_models_offered_are_the_default_then_what_local_servers_have_installed() {
    let ollama = model_server_listing(&["qwen3:8b", "llama3.2"]).await;
    let server = serving_with_ollama_at(&ollama.to_string()).await;
    let mut client = server.initialized().await;
    let answer = client.request("_punie/models", json!({})).await;
    let models: Vec<&str> = answer["result"]["models"]
        .as_array()
        .expect("a list of models")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        models[..3],
        ["test", "ollama:qwen3:8b", "ollama:llama3.2"],
        "{answer}"
    );

    // No local server running: only the default.
    let server = serving_with_ollama_at(&format!("127.0.0.1:{}", support::unused_port())).await;
    let mut client = server.initialized().await;
    let answer = client.request("_punie/models", json!({})).await;
    assert_eq!(answer["result"]["models"][0], "test", "{answer}");
}
