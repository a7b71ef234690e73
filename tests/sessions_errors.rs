//! What a client that gets the session methods wrong is told: the right
//! JSON-RPC code, a message a person can act on and that stays short
//! whatever the client sent, and a connection that goes on working.

mod support;

use serde_json::{Value, json};
use support::disk::Disk;
use support::{Home, Server, error, still_usable, updates};

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

/// How `messages` say their turns ended: the `punie/turnEnded` of each
/// `session_info_update`.
fn turn_endings(messages: &[Value]) -> Vec<Value> {
    updates(messages, "session_info_update")
        .into_iter()
        .filter_map(|update| update["_meta"].get("punie/turnEnded").cloned())
        .collect()
}

/// A delete the disk refuses is an error, and nothing else: every client
/// stays attached and the turn runs on, not ended "because the session was
/// deleted". Once the disk has room the delete goes through.
#[tokio::test]
async fn a_delete_the_disk_refuses_leaves_the_session_its_clients_and_its_turn() {
    let home = Home::new();
    let disk = Disk::mount(&home, "1m");
    let server = Server::start_in(home, &[]).await;
    let workspace = server.home.workspace();
    let mut prompter = server.initialized().await;
    let session = prompter.new_session(&workspace).await;
    let mut watcher = server.initialized().await;
    watcher.attach("session/resume", &session, &workspace).await;
    let turn = prompter.start_prompt(&session, "count to 100000").await;
    let filler = disk.fill();
    server
        .health_until("the store to meet the full disk", |health| {
            health["store"] != "ok"
        })
        .await;

    let refused = watcher
        .request("session/delete", json!({"sessionId": session}))
        .await;
    let (code, message) = error(&refused);
    assert_eq!(code, -32603, "{message}");
    assert!(message.contains("the disk is full"), "{message}");
    for client in [&mut watcher, &mut prompter] {
        let still = client
            .request(
                "session/set_mode",
                json!({"sessionId": session, "modeId": "edit"}),
            )
            .await;
        assert_eq!(still["result"], json!({}), "still attached: {still}");
    }
    let listed = watcher.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"][0]["sessionId"], session,
        "{listed}"
    );
    // The turn ran on, and ends as the watcher asks, for that reason.
    let cancelled = watcher
        .request("session/cancel", json!({"sessionId": session}))
        .await;
    assert_eq!(cancelled["result"], Value::Null, "{cancelled}");
    let answer = prompter.response_to(turn).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    let endings = turn_endings(&prompter.notifications);
    assert!(
        endings.iter().all(|ended| ended.get("note").is_none()),
        "{endings:?}"
    );

    std::fs::remove_file(filler).expect("the filler can be removed");
    server
        .health_until("the store to be written again", |health| {
            health["store"] == "ok"
        })
        .await;
    let deleted = watcher
        .request("session/delete", json!({"sessionId": session}))
        .await;
    assert_eq!(deleted["result"], json!({}), "{deleted}");
    let gone = prompter
        .request(
            "session/set_mode",
            json!({"sessionId": session, "modeId": "ask"}),
        )
        .await;
    let (code, message) = error(&gone);
    assert_eq!(code, -32002);
    assert!(message.contains("was deleted"), "{message}");
}

/// A model spec with spaces around it, as pasted, is that model: the menu
/// shows it once, chosen, and a new session is given it.
#[tokio::test]
async fn a_model_spec_with_spaces_around_it_is_that_model() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let chosen = client
        .request(
            "session/set_config_option",
            json!({"sessionId": session, "configId": "model", "value": " test "}),
        )
        .await;
    let model = chosen["result"]["configOptions"]
        .as_array()
        .and_then(|options| options.iter().find(|option| option["id"] == "model"))
        .unwrap_or_else(|| panic!("the model option: {chosen}"));
    assert_eq!(model["currentValue"], "test", "{model}");
    let values: Vec<&Value> = model["options"]
        .as_array()
        .expect("the models offered")
        .iter()
        .map(|offered| &offered["value"])
        .collect();
    assert_eq!(
        values
            .iter()
            .filter(|value| value.as_str().is_some_and(|value| value.trim() == "test"))
            .count(),
        1,
        "{values:?}"
    );
    let created = client
        .request(
            "session/new",
            json!({"cwd": server.home.workspace(), "mcpServers": [],
                   "_meta": {"punie/model": "test  "}}),
        )
        .await;
    let model = created["result"]["configOptions"]
        .as_array()
        .and_then(|options| options.iter().find(|option| option["id"] == "model"))
        .unwrap_or_else(|| panic!("the model option: {created}"));
    assert_eq!(model["currentValue"], "test", "{model}");
}

/// A request sent without an id is a notification, which cannot be
/// answered: it is not run, and the log says why for whoever wrote the
/// client.
#[tokio::test]
async fn a_prompt_sent_as_a_notification_is_not_run_and_the_log_says_why() {
    let mut server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    client
        .notify(
            "session/prompt",
            json!({"sessionId": session, "prompt": [{"type": "text", "text": "unseen"}]}),
        )
        .await;
    server
        .wait_for_log("ignored session/prompt: it came as a notification, without an id")
        .await;
    let listed = client.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"][0]["sessionId"], session,
        "{listed}"
    );
    assert!(
        listed["result"]["sessions"][0].get("title").is_none(),
        "no turn ran: {listed}"
    );
    still_usable(&mut client, &server).await;
}
