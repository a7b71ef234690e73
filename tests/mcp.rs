//! MCP servers a client hands a session: Punie starts them, offers their
//! tools to the model, calls them with the person's permission, and stops
//! them with the session. The servers are real ones, on the official MCP SDK
//! for Node (tests/mcp/server.mjs), over stdio and Streamable HTTP.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_provider::{
    FakeProvider, Reply, Wire, openai_delta, openai_done, openai_finish, openai_text_reply,
};
use support::mcp::{node, stdio, test_server};
use support::{Home, RawClient, Server, ended, within};
use tokio::io::AsyncBufReadExt as _;

/// The test server as `tools`, with `args`, writing `started <pid>` to
/// `started` as it starts.
fn counted(started: &Path, args: &[&str]) -> Value {
    let started = started.display().to_string();
    stdio("tools", args, &[("MCP_STARTED_FILE", &started)])
}

/// A server on a `script:` model that plays `script`, a client, and a
/// session in the server's workspace with the MCP servers `servers` names
/// for that workspace.
async fn scene(script: Value, servers: impl FnOnce(&Path) -> Value) -> (Server, RawClient, String) {
    let server = Server::scripted(script, &[]).await;
    let mut client = server.initialized().await;
    let workspace = server.home.workspace();
    let session = session_with(&mut client, &workspace, servers(&workspace)).await;
    (server, client, session)
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"tool_call": {"name": name, "arguments": arguments}})
}

/// `session/new` in `cwd` with `servers`; the session's id.
async fn session_with(client: &mut RawClient, cwd: &Path, servers: Value) -> String {
    let response = client
        .request("session/new", json!({"cwd": cwd, "mcpServers": servers}))
        .await;
    response["result"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("session/new failed: {response}"))
        .to_owned()
}

/// Prompt and allow every permission request until the prompt is answered;
/// the permission requests' titles and the answer.
async fn prompt_allowing(
    client: &mut RawClient,
    session: &str,
    text: &str,
) -> (Vec<String>, Value) {
    let id = client.start_prompt(session, text).await;
    let mut asked = Vec::new();
    loop {
        let message = client.recv().await;
        if message["method"] == "session/request_permission" {
            asked.push(
                message["params"]["toolCall"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            client.allow(&message).await;
        } else if message.get("id") == Some(&json!(id)) {
            return (asked, message);
        } else {
            client.notifications.push(message);
        }
    }
}

/// Each tool call among `notifications` as it ended: its first update
/// merged with every later one, and the statuses it went through. A
/// `tool_call` leaves out the defaults: `pending`, kind `other`.
fn tool_calls(notifications: &[Value]) -> Vec<Value> {
    let mut calls: Vec<Value> = Vec::new();
    for update in notifications
        .iter()
        .map(|n| &n["params"]["update"])
        .filter(|u| u["sessionUpdate"] == "tool_call" || u["sessionUpdate"] == "tool_call_update")
    {
        let id = &update["toolCallId"];
        let index = match calls.iter().position(|call| &call["toolCallId"] == id) {
            Some(index) => index,
            None => {
                calls.push(json!({"toolCallId": id, "kind": "other", "statuses": []}));
                if update.get("status").is_none() {
                    calls.last_mut().unwrap()["statuses"] = json!(["pending"]);
                }
                calls.len() - 1
            }
        };
        let call = calls[index].as_object_mut().unwrap();
        for (key, value) in update.as_object().unwrap() {
            if key == "status" {
                call["statuses"].as_array_mut().unwrap().push(value.clone());
            } else if !value.is_null() {
                call.insert(key.clone(), value.clone());
            }
        }
    }
    calls
}

/// Wait until `file` holds a line starting with `start`; that line.
async fn line_in(file: &Path, start: &str) -> String {
    within(&format!("`{start}` in {}", file.display()), async {
        loop {
            if let Some(line) = std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find(|line| line.starts_with(start))
            {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// The pid in a line `started <pid>` or `waiting <pid>`.
fn pid_of(line: &str) -> rustix::process::Pid {
    let pid: i32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    rustix::process::Pid::from_raw(pid).expect("a real pid")
}

/// A server on a fake model server that answers with `calls` (Chat
/// Completions' `tool_calls`), then, given their results, with `text`.
async fn on_a_fake_model(calls: Value, text: &str) -> (FakeProvider, Server) {
    let provider = FakeProvider::start([
        Reply::events([
            openai_delta(json!({"role": "assistant", "content": null, "tool_calls": calls})),
            openai_finish("tool_calls"),
            openai_done(),
        ]),
        Reply::events(openai_text_reply(&[text])),
    ])
    .await;
    let model = Wire::OpenAi.model_spec(&provider).0;
    let server = Server::start_in(Home::new(), &["--model", &model]).await;
    (provider, server)
}

#[tokio::test]
async fn the_model_is_offered_an_mcp_servers_tools_and_is_given_what_one_returned() {
    let (provider, server) = on_a_fake_model(
        json!([
            {"index": 0, "id": "call_add", "type": "function",
             "function": {"name": "mcp__tools__add", "arguments": "{\"a\": 2, \"b\": 3}"}}
        ]),
        "Five.",
    )
    .await;
    let mut client = server.raw().await;
    let initialized = client.initialize().await;
    assert_eq!(
        initialized["result"]["agentCapabilities"]["mcpCapabilities"],
        json!({"http": true, "sse": false}),
        "stdio servers are a given; HTTP ones are offered too"
    );
    let workspace = server.home.workspace();
    let session = session_with(&mut client, &workspace, json!([stdio("tools", &[], &[])])).await;

    let (asked, answer) = prompt_allowing(&mut client, &session, "add 2 and 3").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(asked, ["Add (tools)"], "the person is asked first");
    let requests = provider.requests();
    let offered = requests[0].body["tools"].as_array().unwrap();
    let add = offered
        .iter()
        .find(|tool| tool["function"]["name"] == "mcp__tools__add")
        .unwrap_or_else(|| panic!("the MCP tool is offered: {offered:?}"));
    assert_eq!(add["function"]["description"], "Adds two numbers.");
    let parameters = &add["function"]["parameters"];
    assert_eq!(
        parameters["required"],
        json!(["a", "b"]),
        "the server's own schema"
    );
    assert_eq!(parameters["type"], "object");
    assert!(
        parameters.get("$schema").is_none(),
        "left out, as some providers refuse it: {parameters}"
    );
    assert!(
        offered
            .iter()
            .any(|tool| tool["function"]["name"] == "read_file"),
        "Punie's own tools stay"
    );
    let system = requests[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("`mcp__`"), "{system}");
    let told = &requests[1].body["messages"];
    let result = told
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["role"] == "tool")
        .unwrap_or_else(|| panic!("the model is given the result: {told}"));
    assert_eq!(result["content"], "5");
    assert_eq!(result["tool_call_id"], "call_add");

    let calls = tool_calls(&client.notifications);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["title"], "Add (tools)");
    assert_eq!(calls[0]["kind"], "other");
    assert_eq!(calls[0]["rawInput"], json!({"a": 2, "b": 3}));
    assert_eq!(
        calls[0]["statuses"],
        json!(["pending", "in_progress", "completed"])
    );
    assert_eq!(calls[0]["content"][0]["content"]["text"], "5");
}

#[tokio::test]
async fn a_picture_an_mcp_tool_returned_is_shown_to_the_model_after_the_results() {
    let (provider, server) = on_a_fake_model(
        json!([
            {"index": 0, "id": "call_pic", "type": "function",
             "function": {"name": "mcp__tools__picture", "arguments": "{}"}},
            {"index": 1, "id": "call_add", "type": "function",
             "function": {"name": "mcp__tools__add", "arguments": "{\"a\": 1, \"b\": 1}"}}
        ]),
        "A dot, and two.",
    )
    .await;
    let mut client = server.initialized().await;
    let workspace = server.home.workspace();
    let session = session_with(&mut client, &workspace, json!([stdio("tools", &[], &[])])).await;

    let (_, answer) = prompt_allowing(&mut client, &session, "look, then add").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let requests = provider.requests();
    let told = requests[1].body["messages"].as_array().unwrap();
    let roles: Vec<&str> = told.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool", "user"],
        "both results come right after the calls, the picture after them"
    );
    let picture = &told[5]["content"][0];
    assert_eq!(picture["type"], "image_url", "{picture}");
    let url = picture["image_url"]["url"].as_str().unwrap_or_default();
    assert!(url.starts_with("data:image/png;base64,iVBOR"), "{url}");
    assert_eq!(
        told[3]["content"],
        "[an image, image/png, shown to the user and, after the tool results, to you]\na picture"
    );
}

#[tokio::test]
async fn a_stdio_server_runs_in_the_workspace_with_its_environment_and_its_results_are_shown() {
    let (server, mut client, session) = scene(
        json!([
            [call("mcp__tools__whereami", json!({})), call("mcp__tools__fail", json!({})), call("mcp__tools__picture", json!({}))],
            [{"text": "Done."}]
        ]),
        |_| json!([stdio("tools", &[], &[("PUNIE_TEST_GREETING", "hello there")])]),
    )
    .await;

    let (_, answer) = prompt_allowing(&mut client, &session, "look around").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let calls = tool_calls(&client.notifications);
    let shown = |index: usize| calls[index]["content"][0]["content"]["text"].clone();
    let root = std::fs::canonicalize(server.home.workspace()).unwrap();
    assert_eq!(
        shown(0),
        format!("cwd={} greeting=hello there client=punie", root.display())
    );
    assert_eq!(
        calls[1]["statuses"],
        json!(["pending", "in_progress", "failed"])
    );
    assert_eq!(shown(1), "the tool failed on purpose");
    assert_eq!(
        calls[2]["statuses"],
        json!(["pending", "in_progress", "completed"])
    );
    assert_eq!(
        shown(2),
        "[an image, image/png, shown to the user and, after the tool results, to you]\na picture"
    );
    assert_eq!(calls[2]["content"][1]["content"]["type"], "image");
    assert_eq!(calls[2]["content"][1]["content"]["mimeType"], "image/png");
}

#[tokio::test]
async fn the_person_asked_about_an_mcp_call_is_shown_its_arguments() {
    let (_server, mut client, session) = scene(
        json!([[call("mcp__tools__add", json!({"a": 2, "b": 3}))], [{"text": "Five."}]]),
        |_| json!([stdio("tools", &[], &[])]),
    )
    .await;

    let prompt = client.start_prompt(&session, "add").await;
    let asked = client.permission_request().await;
    client.allow(&asked).await;
    let answer = client.response_to(prompt).await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let content = &asked["params"]["toolCall"]["content"];
    assert_eq!(content[0]["type"], "content", "{asked}");
    assert_eq!(
        content[0]["content"]["text"], "{\n  \"a\": 2,\n  \"b\": 3\n}",
        "{asked}"
    );
}

#[tokio::test]
async fn a_tool_its_server_marks_read_only_is_called_without_asking() {
    let (_server, mut client, session) = scene(
        json!([[call("mcp__tools__peek", json!({}))], [{"text": "Done."}]]),
        |_| json!([stdio("tools", &[], &[])]),
    )
    .await;

    let (asked, answer) = prompt_allowing(&mut client, &session, "peek").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(asked.is_empty(), "{asked:?}");
    let calls = tool_calls(&client.notifications);
    assert_eq!(calls[0]["content"][0]["content"]["text"], "nothing to see");
}

#[tokio::test]
async fn a_read_only_session_offers_only_the_mcp_tools_that_only_read() {
    let (provider, server) = on_a_fake_model(
        json!([
            {"index": 0, "id": "call_add", "type": "function",
             "function": {"name": "mcp__tools__add", "arguments": "{\"a\": 2, \"b\": 3}"}}
        ]),
        "I may not.",
    )
    .await;
    let mut client = server.initialized().await;
    let workspace = server.home.workspace();
    let session = session_with(&mut client, &workspace, json!([stdio("tools", &[], &[])])).await;
    let changed = client
        .request(
            "session/set_config_option",
            json!({"sessionId": session, "configId": "mode", "value": "read-only"}),
        )
        .await;
    assert!(changed.get("result").is_some(), "{changed}");

    let (asked, answer) = prompt_allowing(&mut client, &session, "add 2 and 3").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(asked.is_empty(), "nobody is asked: {asked:?}");
    let requests = provider.requests();
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|tool| tool["function"]["name"].as_str())
        .filter(|name| name.starts_with("mcp__"))
        .collect();
    assert_eq!(
        offered,
        ["mcp__tools__peek"],
        "only the tool its server marks read-only"
    );
    let calls = tool_calls(&client.notifications);
    assert_eq!(
        calls[0]["statuses"].as_array().unwrap().last().unwrap(),
        "failed"
    );
    let told = calls[0]["content"][0]["content"]["text"].as_str().unwrap();
    assert!(told.contains("read-only"), "{told}");
}

#[tokio::test]
async fn a_tool_a_server_adds_is_offered_from_the_next_turn() {
    let (_server, mut client, session) = scene(
        json!([
            [call("mcp__tools__grow", json!({}))],
            [{"text": "Grown."}],
            [call("mcp__tools__extra", json!({}))],
            [{"text": "Done."}]
        ]),
        |_| json!([stdio("tools", &[], &[])]),
    )
    .await;
    prompt_allowing(&mut client, &session, "grow").await;
    client.notifications.clear();

    let (asked, answer) = prompt_allowing(&mut client, &session, "use it").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(asked, ["Extra (tools)"]);
    let calls = tool_calls(&client.notifications);
    assert_eq!(calls[0]["content"][0]["content"]["text"], "extra here");
}

#[tokio::test]
async fn a_server_that_cannot_start_is_named_once_and_the_turn_goes_on() {
    let (_server, mut client, session) =
        scene(json!([[{"text": "One."}], [{"text": "Two."}]]), |_| {
            json!([stdio("broken", &["--crash-on-start"], &[])])
        })
        .await;

    let first = client.prompt(&session, "hello").await;
    assert_eq!(first["result"]["stopReason"], "end_turn", "{first}");
    let said = client.agent_text(&session);
    assert!(
        said.starts_with("MCP server `broken` could not start: "),
        "{said}"
    );
    assert!(said.contains("cannot start: crash requested"), "{said}");
    assert!(said.ends_with("One."), "{said}");

    client.notifications.clear();
    client.prompt(&session, "again").await;
    assert_eq!(client.agent_text(&session), "Two.", "told once is enough");
}

#[tokio::test]
async fn a_server_slower_to_start_than_mcp_start_timeout_is_said_not_to_start() {
    let home = Home::new();
    let model = home.script_model(json!([[{"text": "One."}]]));
    // Sooner than a turn says it waits for its servers.
    let server = Server::start_in(home, &["--model", &model, "--mcp-start-timeout", "1"]).await;
    let mut client = server.initialized().await;
    let slow =
        json!([{"name": "slow", "command": "/bin/sh", "args": ["-c", "sleep 30"], "env": []}]);
    let session = session_with(&mut client, &server.home.workspace(), slow).await;

    let began = std::time::Instant::now();
    client.prompt(&session, "hello").await;

    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let said = client.agent_text(&session);
    assert!(
        said.starts_with("MCP server `slow` could not start: it did not start within 1 s"),
        "{said}"
    );
}

#[tokio::test]
async fn a_turn_waiting_for_a_slow_server_says_so_before_it_gives_up() {
    let home = Home::new();
    let model = home.script_model(json!([[{"text": "One."}]]));
    let server = Server::start_in(home, &["--model", &model, "--mcp-start-timeout", "5"]).await;
    let mut client = server.initialized().await;
    let slow =
        json!([{"name": "slow", "command": "/bin/sh", "args": ["-c", "sleep 30"], "env": []}]);
    let session = session_with(&mut client, &server.home.workspace(), slow).await;

    client.prompt(&session, "hello").await;

    let said = client.agent_text(&session);
    assert!(
        said.starts_with(
            "Waiting for this session's MCP servers to start (up to 5 s, --mcp-start-timeout)…\n\n\
             MCP server `slow` could not start: it did not start within 5 s"
        ),
        "{said}"
    );
}

#[tokio::test]
async fn an_sse_server_is_refused_with_a_word_to_the_person() {
    let (_server, mut client, session) = scene(json!([[{"text": "One."}]]), |_| {
        json!([{"type": "sse", "name": "old", "url": "http://127.0.0.1:9/sse?key=secret", "headers": []}])
    })
    .await;

    client.prompt(&session, "hello").await;

    let said = client.agent_text(&session);
    assert!(
        said.starts_with("MCP server `old` could not start: it speaks the old SSE transport"),
        "{said}"
    );
    assert!(!said.contains("secret"), "{said}");
}

#[tokio::test]
async fn naming_a_server_again_with_another_launch_replaces_it() {
    let server = Server::scripted(
        json!([
            [{"text": "One."}],
            [call("mcp__tools__whereami", json!({}))],
            [{"text": "Two."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let started = workspace.join("started.log");
    let started_text = started.display().to_string();
    let launch = |greeting: &str| {
        json!([stdio(
            "tools",
            &[],
            &[
                ("MCP_STARTED_FILE", &started_text),
                ("PUNIE_TEST_GREETING", greeting)
            ]
        )])
    };
    let mut ide = server.initialized().await;
    let session = session_with(&mut ide, &workspace, launch("first")).await;
    ide.prompt(&session, "hello").await;
    let first = pid_of(&line_in(&started, "started").await);

    let mut other = server.initialized().await;
    let loaded = other
        .request(
            "session/load",
            json!({"sessionId": session, "cwd": workspace, "mcpServers": launch("second")}),
        )
        .await;
    assert!(loaded.get("result").is_some(), "{loaded}");
    ended(first).await;
    other.notifications.clear();
    let (_, answer) = prompt_allowing(&mut other, &session, "where").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let calls = tool_calls(&other.notifications);
    let shown = calls[0]["content"][0]["content"]["text"].as_str().unwrap();
    assert!(shown.contains(" greeting=second "), "{shown}");
}

#[tokio::test]
async fn cancelling_a_turn_cancels_the_mcp_call_it_is_waiting_for() {
    let (server, mut client, session) = scene(
        json!([[call("mcp__tools__wait", json!({}))], [{"text": "Never."}]]),
        |workspace| {
            let wait_file = workspace.join("wait.log").display().to_string();
            json!([stdio("tools", &[], &[("MCP_WAIT_FILE", &wait_file)])])
        },
    )
    .await;
    let wait_file = server.home.workspace().join("wait.log");

    let prompt = client.start_prompt(&session, "wait").await;
    let permission = client.permission_request().await;
    client.allow(&permission).await;
    line_in(&wait_file, "waiting").await;
    client
        .notify("session/cancel", json!({"sessionId": session}))
        .await;
    let answer = client.response_to(prompt).await;

    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    line_in(&wait_file, "aborted").await;
    let calls = tool_calls(&client.notifications);
    assert_eq!(
        calls[0]["statuses"],
        json!(["pending", "in_progress", "failed"])
    );
}

#[tokio::test]
async fn a_server_runs_once_for_every_client_of_its_session_and_stops_when_the_session_leaves_memory()
 {
    let server = Server::scripted(json!([[{"text": "One."}], [{"text": "Two."}]]), &[]).await;
    let workspace = server.home.workspace();
    let started = workspace.join("started.log");
    let servers = json!([through_a_shell(&started)]);
    let mut ide = server.initialized().await;
    let session = session_with(&mut ide, &workspace, servers.clone()).await;
    let pid = pid_of(&line_in(&started, "started").await);

    let mut watcher = server.initialized().await;
    let loaded = watcher
        .request(
            "session/load",
            json!({"sessionId": session, "cwd": workspace, "mcpServers": servers}),
        )
        .await;
    assert!(loaded.get("result").is_some(), "{loaded}");
    // The turn waits for every server that is starting; a second one would
    // have written its line by the time the turn ends.
    watcher.prompt(&session, "hello").await;
    let starts = std::fs::read_to_string(&started).unwrap();
    assert_eq!(starts.lines().count(), 1, "{starts}");

    drop(ide);
    drop(watcher);
    ended(pid).await;
}

#[tokio::test]
async fn a_server_that_stopped_is_started_again_for_the_next_turn() {
    let (server, mut client, session) = scene(
        json!([
            [call("mcp__tools__quit", json!({}))],
            [{"text": "It quit."}],
            [call("mcp__tools__add", json!({"a": 1, "b": 1}))],
            [{"text": "Two."}]
        ]),
        |workspace| json!([counted(&workspace.join("started.log"), &[])]),
    )
    .await;
    let started = server.home.workspace().join("started.log");
    let first = pid_of(&line_in(&started, "started").await);
    prompt_allowing(&mut client, &session, "quit").await;
    ended(first).await;

    client.notifications.clear();
    let (_, answer) = prompt_allowing(&mut client, &session, "add").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let calls = tool_calls(&client.notifications);
    assert_eq!(calls[0]["content"][0]["content"]["text"], "2", "{calls:?}");
    let starts = std::fs::read_to_string(&started).unwrap();
    assert_eq!(starts.lines().count(), 2, "{starts}");
}

#[tokio::test]
async fn a_call_to_a_stdio_server_that_crashed_fails_at_once_and_what_it_left_is_killed() {
    let (server, mut client, session) = scene(
        json!([[call("mcp__tools__crash", json!({}))], [{"text": "It crashed."}]]),
        |workspace| json!([counted(&workspace.join("started.log"), &["--spawn-child"])]),
    )
    .await;
    let started = server.home.workspace().join("started.log");
    // The child shares the server's stdout: the connection stays open
    // after the server is gone.
    let child = pid_of(&line_in(&started, "child").await);

    let (_, answer) = prompt_allowing(&mut client, &session, "crash").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let calls = tool_calls(&client.notifications);
    assert_eq!(
        calls[0]["statuses"],
        json!(["pending", "in_progress", "failed"])
    );
    let shown = calls[0]["content"][0]["content"]["text"].as_str().unwrap();
    assert!(shown.contains("the server exited"), "{shown}");
    ended(child).await;
}

#[tokio::test]
async fn a_server_that_does_not_list_its_changed_tools_keeps_its_old_ones_without_stalling_turns() {
    let add = |a: u32| call("mcp__tools__add", json!({"a": a, "b": a}));
    let (_server, mut client, session) = scene(
        json!([
            [call("mcp__tools__stall", json!({}))], [{"text": "Stalled."}],
            [add(1)], [{"text": "Two."}],
            [add(2)], [{"text": "Four."}]
        ]),
        |_| json!([stdio("tools", &[], &[])]),
    )
    .await;
    prompt_allowing(&mut client, &session, "stall").await;

    for (prompt, sum, most) in [("add", "2", 8), ("add again", "4", 2)] {
        client.notifications.clear();
        let began = std::time::Instant::now();
        let (_, answer) = prompt_allowing(&mut client, &session, prompt).await;
        let took = began.elapsed();

        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        assert!(took < Duration::from_secs(most), "{prompt}: {took:?}");
        let calls = tool_calls(&client.notifications);
        assert_eq!(calls[0]["content"][0]["content"]["text"], sum, "{calls:?}");
    }
}

#[tokio::test]
async fn a_stdio_server_dies_with_a_killed_punie() {
    let (mut server, mut client, session) = scene(json!([[{"text": "One."}]]), |workspace| {
        json!([counted(&workspace.join("started.log"), &["--linger"])])
    })
    .await;
    let started = server.home.workspace().join("started.log");
    let pid = pid_of(&line_in(&started, "started").await);
    // A turn waits for the server: after it, the server has said all it
    // will, and has nothing more to write that could fail it.
    client.prompt(&session, "hello").await;

    server.signal(nix::sys::signal::Signal::SIGKILL);
    server.exit_status().await;
    ended(pid).await;
}

#[tokio::test]
async fn stopping_punie_stops_every_mcp_server_it_started() {
    let (server, mut client, session) = scene(json!([[{"text": "One."}]]), |workspace| {
        json!([through_a_shell(&workspace.join("started.log"))])
    })
    .await;
    let started = server.home.workspace().join("started.log");
    let pid = pid_of(&line_in(&started, "started").await);
    client.prompt(&session, "hello").await;

    server.stop().await;
    ended(pid).await;
}

/// The test server (`name` "tools") started through a shell, as `npx`
/// starts a server: the process that speaks MCP is a child of the one Punie
/// started, and outlives its stdin, so only killing the whole group stops
/// it. It writes `started <pid>` to `started`.
fn through_a_shell(started: &Path) -> Value {
    let node = node().display().to_string();
    let script = test_server().display().to_string();
    json!({
        "name": "tools",
        "command": "/bin/sh",
        "args": ["-c", "\"$0\" \"$1\" --linger; true", node, script],
        "env": [{"name": "MCP_STARTED_FILE", "value": started}],
    })
}

/// The test server on Streamable HTTP, answering only requests that carry
/// `X-Punie-Test: sesame`; its URL.
async fn http_server() -> (tokio::process::Child, String) {
    http_server_on(0, &[]).await
}

/// The same on `port` (0: any free one), with `extra` arguments.
async fn http_server_on(port: u16, extra: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(node())
        .arg(test_server())
        .args(["--http", "--port", &port.to_string()])
        .args(extra)
        .env("MCP_REQUIRE_HEADER", "X-Punie-Test: sesame")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the MCP server starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = within("the MCP server's ready line", lines.next_line())
        .await
        .unwrap()
        .expect("a ready line");
    let url = line
        .strip_prefix("mcp listening on ")
        .unwrap_or_else(|| panic!("a ready line: {line}"))
        .to_owned();
    (child, url)
}

#[tokio::test]
async fn an_http_server_is_reached_with_the_headers_the_client_gave() {
    let (_mcp, url) = http_server().await;
    let server = Server::scripted(
        json!([[call("mcp__remote__add", json!({"a": 40, "b": 2}))], [{"text": "Done."}]]),
        &[],
    )
    .await;
    let mut client = server.initialized().await;
    let workspace = server.home.workspace();
    let servers = json!([
        {"type": "http", "name": "remote", "url": url, "headers": [{"name": "X-Punie-Test", "value": "sesame"}]},
        {"type": "http", "name": "keyless", "url": url, "headers": []}
    ]);
    let session = session_with(&mut client, &workspace, servers).await;

    let (asked, answer) = prompt_allowing(&mut client, &session, "add").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(asked, ["Add (remote)"]);
    let calls = tool_calls(&client.notifications);
    assert_eq!(calls[0]["content"][0]["content"]["text"], "42");
    let said = client.agent_text(&session);
    assert!(
        said.starts_with("MCP server `keyless` could not start: "),
        "the server refused it without the header: {said}"
    );
}

#[tokio::test]
async fn an_http_server_nothing_answers_at_is_said_to_refuse_the_connection() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|free| free.local_addr())
        .expect("a free port")
        .port();
    let (_server, mut client, session) = scene(json!([[{"text": "One."}]]), |_| {
        json!([{"type": "http", "name": "gone", "url": format!("http://127.0.0.1:{port}/mcp?key=secret"), "headers": []}])
    })
    .await;

    client.prompt(&session, "hello").await;
    let said = client.agent_text(&session);
    assert!(
        said.starts_with(&format!(
            "MCP server `gone` could not start: could not connect to it at http://127.0.0.1:{port}/mcp"
        )),
        "{said}"
    );
    assert!(
        said.contains("Connection refused"),
        "the cause is named: {said}"
    );
    assert!(!said.contains("secret"), "{said}");
}

#[tokio::test]
async fn an_http_server_that_went_away_is_connected_again_for_the_next_turn() {
    let (mut mcp, url) = http_server().await;
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("a port in {url}"));
    let add = || call("mcp__remote__add", json!({"a": 1, "b": 2}));
    let home = Home::new();
    let model = home.script_model(json!([
        [add()], [{"text": "3."}],
        [add(), add()], [{"text": "No answer."}],
        [add()], [{"text": "Back."}]
    ]));
    let server = Server::start_in(home, &["--model", &model, "--mcp-call-timeout", "1"]).await;
    let mut client = server.initialized().await;
    let servers = json!([{"type": "http", "name": "remote", "url": url,
        "headers": [{"name": "X-Punie-Test", "value": "sesame"}]}]);
    let session = session_with(&mut client, &server.home.workspace(), servers).await;
    prompt_allowing(&mut client, &session, "add").await;

    // Started again, it has forgotten Punie's session, and answers it with
    // an error rmcp cannot match to the call: the call gets no answer.
    mcp.kill().await.unwrap();
    let (_again, _) = http_server_on(port, &["--unknown-session-400"]).await;
    client.notifications.clear();
    prompt_allowing(&mut client, &session, "add again").await;
    let calls = tool_calls(&client.notifications);
    assert_eq!(
        calls[0]["statuses"],
        json!(["pending", "in_progress", "failed"]),
        "{calls:?}"
    );
    let shown = calls[0]["content"][0]["content"]["text"].as_str().unwrap();
    assert!(shown.contains("no answer within 1 s"), "{shown}");
    // The turn's next call does not wait on the same lost connection.
    let next = calls[1]["content"][0]["content"]["text"].as_str().unwrap();
    assert!(next.contains("its connection failed earlier"), "{next}");

    client.notifications.clear();
    let (_, answer) = prompt_allowing(&mut client, &session, "and again").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let calls = tool_calls(&client.notifications);
    assert_eq!(calls[0]["content"][0]["content"]["text"], "3", "{calls:?}");
}
