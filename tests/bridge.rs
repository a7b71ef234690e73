//! `punie`, the stdio bridge an IDE launches: ACP lines in and out, carried to
//! and from the server, with nothing else ever on stdout.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{CancelNotification, PromptRequest, StopReason};
use agent_client_protocol::{AcpAgent, AcpAgentConfig};
use futures::SinkExt as _;
use nix::sys::signal::Signal;
use serde_json::json;
use support::hand_written::HandWrittenAgent;
use support::relay::RecordingRelay;
use support::sdk::{Received, client, first_update, initialize, new_session, prompt};
use support::terminal::Terminal;
use support::{
    Bridge, Home, Server, full_disk, reader_gone, run_with, stderr_of, unused_port, updates, within,
};
use tokio_tungstenite::tungstenite::Message;

fn initialize_request(id: u64) -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"protocolVersion": 1, "clientCapabilities": {}}})
}

fn request(id: u64, method: &str, params: serde_json::Value) -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The bridge as the SDK's client role launches an agent: a child process on stdio.
fn bridge_agent(server: &Server) -> AcpAgent {
    let home = server.home.dir.path();
    AcpAgent::new(
        AcpAgentConfig::new(env!("CARGO_BIN_EXE_punie"))
            .args(["--server", &server.ws_url()])
            .env("PUNIE_TOKEN", &server.token)
            .env(
                "XDG_STATE_HOME",
                home.join("bridge-state").to_string_lossy(),
            )
            .env("XDG_DATA_HOME", home.join("bridge-data").to_string_lossy())
            .env(
                "XDG_CONFIG_HOME",
                home.join("bridge-config").to_string_lossy(),
            ),
    )
}

/// Through `bridge`: `initialize` (request 1) and a session in the server's
/// workspace (request 2); the session's id.
async fn open_session(bridge: &mut Bridge, server: &Server) -> serde_json::Value {
    open_session_offering(bridge, server, json!({})).await
}

/// [`open_session`], for an IDE offering `capabilities`.
async fn open_session_offering(
    bridge: &mut Bridge,
    server: &Server,
    capabilities: serde_json::Value,
) -> serde_json::Value {
    let initialize = json!({"protocolVersion": 1, "clientCapabilities": capabilities});
    bridge.send(request(1, "initialize", initialize)).await;
    bridge.response_to(1).await;
    let new_session = json!({"cwd": server.home.workspace(), "mcpServers": []});
    bridge.send(request(2, "session/new", new_session)).await;
    let session = bridge.response_to(2).await["result"]["sessionId"].clone();
    let offered = bridge.recv().await.expect("the session's commands");
    assert_eq!(
        offered["params"]["update"]["sessionUpdate"], "available_commands_update",
        "{offered}"
    );
    session
}

/// Prompt `session` with `text` through `bridge`, as request 3.
async fn start_prompt(bridge: &mut Bridge, session: &serde_json::Value, text: &str) {
    let prompt = json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]});
    bridge.send(request(3, "session/prompt", prompt)).await;
}

#[tokio::test]
async fn an_acp_client_drives_the_server_through_the_bridge() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let received = Received::default();
    client(bridge_agent(&server), received.clone(), async |cx| {
        initialize(&cx).await?;
        let session = new_session(&cx, &workspace).await?;
        assert_eq!(
            prompt(&cx, &session, "through the bridge").await?,
            StopReason::EndTurn
        );
        let (text, chunks) = received.agent_text(&session);
        assert_eq!(
            text,
            "Turn 1. You said: \"through the bridge\". That is the first thing you said."
        );
        assert!(chunks > 1, "the reply streams through the bridge in chunks");

        let counting = cx.send_request(PromptRequest::new(
            session.clone(),
            vec!["count to 1000".into()],
        ));
        first_update(&received, &session).await;
        cx.send_notification(CancelNotification::new(session.clone()))?;
        assert_eq!(
            counting.block_task().await?.stop_reason,
            StopReason::Cancelled
        );
        Ok(())
    })
    .await;
    assert_eq!(
        server.health().await["sessions"],
        0,
        "the bridge's connection closed cleanly"
    );
}

#[tokio::test]
async fn requests_written_just_before_stdin_closes_are_all_answered() {
    let server = Server::start().await;
    let mut bridge = Bridge::to(&server);
    bridge.send(initialize_request(1)).await;
    bridge
        .send(request(
            2,
            "session/new",
            json!({"cwd": server.home.workspace(), "mcpServers": []}),
        ))
        .await;
    for id in 3..103 {
        bridge.send(request(id, "session/list", json!({}))).await;
    }
    bridge.send_line("this line is not JSON").await;
    bridge.close_stdin();

    let answers = bridge.rest().await;
    let mut ids: Vec<u64> = answers.iter().filter_map(|a| a["id"].as_u64()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..103).collect::<Vec<_>>(),
        "every request got its answer"
    );
    assert!(
        answers.iter().any(|a| a["error"]["code"] == -32700),
        "the parse error for the bad line arrived too"
    );
    assert!(bridge.exit_status().await.success());
}

/// A bridge to `url` that cannot get in: its `initialize` must be answered
/// with an error and the bridge must exit 1, within a second. The error's
/// message, and what the bridge said on stderr.
async fn refused_initialize(home: &Home, url: &str, token: &str) -> (String, String) {
    let started = Instant::now();
    let mut bridge = Bridge::spawn(home, url, token);
    bridge.send(initialize_request(1)).await;
    let answer = bridge.recv().await.expect("an answer to initialize");
    let status = bridge.exit_status().await;
    let took = started.elapsed();
    assert_eq!(answer["id"], 1);
    assert_eq!(status.code(), Some(1));
    assert!(
        took < Duration::from_secs(1),
        "gave up within a second, took {took:?}"
    );
    let message = answer["error"]["message"]
        .as_str()
        .expect("an error message")
        .to_owned();
    (message, bridge.stderr().await)
}

#[tokio::test]
async fn with_no_server_the_pending_request_is_answered_and_the_bridge_exits_1_within_a_second() {
    let home = Home::new();
    let url = format!("ws://127.0.0.1:{}/acp", unused_port());
    let (message, stderr) = refused_initialize(&home, &url, "any-token").await;
    assert!(message.contains(&url), "names the URL: {message}");
    assert!(
        message.contains("punie serve"),
        "says how to fix it: {message}"
    );
    assert!(
        stderr.contains(&url) && stderr.contains("punie serve"),
        "{stderr}"
    );

    let help = home
        .command()
        .arg("--help")
        .output()
        .await
        .expect("punie --help runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("1 error (no server answers"),
        "`punie --help` documents the bridge's exit status 1 for no server: {help}"
    );
}

#[tokio::test]
async fn a_server_url_that_names_no_server_is_the_answer_to_the_ides_first_request() {
    let home = Home::new();
    let started = Instant::now();
    let mut bridge = Bridge::spawn(&home, "ftp://127.0.0.1/acp", "any-token");
    bridge.send(initialize_request(1)).await;
    let answer = bridge.recv().await.expect("an answer to initialize");
    let status = bridge.exit_status().await;
    assert_eq!(status.code(), Some(2), "a usage error");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(answer["id"], 1);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ftp://127.0.0.1/acp"), "{answer}");
    let stderr = bridge.stderr().await;
    assert!(stderr.contains(message), "said on stderr too: {stderr}");
}

#[tokio::test]
async fn a_log_file_that_cannot_be_opened_is_the_answer_to_the_ides_first_request() {
    let home = Home::new();
    let log_file = home.dir.path().join("no-such-dir").join("bridge.log");
    let mut bridge = Bridge::spawn_with(&home, "ws://127.0.0.1:9/acp", "any-token", |command| {
        command.arg("--log-file").arg(&log_file);
    });
    bridge.send(initialize_request(1)).await;
    let answer = bridge.recv().await.expect("an answer to initialize");
    assert_eq!(bridge.exit_status().await.code(), Some(2), "a usage error");
    assert_eq!(answer["id"], 1);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot open the log file") && message.contains("bridge.log"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_reported_within_a_second() {
    let home = Home::new();
    // It listens but never accepts: the kernel takes the connection, and
    // nobody answers the upgrade.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/acp", silent.local_addr().unwrap());
    let (message, stderr) = refused_initialize(&home, &url, "any-token").await;
    assert!(
        message.contains(&url) && message.contains("no answer"),
        "names the URL and the reason: {message}"
    );
    assert!(stderr.contains(&url), "{stderr}");
}

#[tokio::test]
async fn after_stdin_closes_a_request_the_server_never_answers_gets_an_error_at_the_drain_timeout()
{
    let home = Home::new();
    let model =
        home.script_model(json!([[{"text": "one "}, {"pause_ms": 30000}, {"text": "never"}]]));
    let server = Server::start_in(home, &["--model", &model]).await;
    let mut bridge = Bridge::spawn_with(&server.home, &server.ws_url(), &server.token, |command| {
        command.args(["--drain-timeout", "0.3"]);
    });
    let session = open_session(&mut bridge, &server).await;
    start_prompt(&mut bridge, &session, "go").await;
    bridge.close_stdin();

    let answer = bridge.response_to(3).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("did not answer within 300ms after stdin closed"),
        "{answer}"
    );
    assert!(bridge.exit_status().await.success());
}

#[tokio::test]
async fn a_refused_token_is_reported_with_its_fix() {
    let server = Server::start().await;
    let (message, stderr) =
        refused_initialize(&server.home, &server.ws_url(), "not-the-token").await;
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("token"), "{message}");
    // The same words on stderr, for whoever reads the IDE's log.
    assert!(
        stderr.contains(&server.ws_url())
            && stderr.contains("refused the access token (401)")
            && stderr.contains("PUNIE_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_no_token_at_all_the_fix_says_where_one_comes_from() {
    let server = Server::start().await;
    // Another home: no token file in it, and no PUNIE_TOKEN.
    let elsewhere = Home::new();
    let output = run_with(
        elsewhere.command().args(["--server", &server.ws_url()]),
        format!("{}\n", initialize_request(1)).as_bytes(),
        Stdio::piped(),
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("There is no token to present")
            && message.contains("does not exist")
            && message.contains("punie serve"),
        "{message}"
    );
}

#[tokio::test]
async fn an_invalid_line_is_reported_forwarded_and_survived() {
    let server = Server::start().await;
    let mut bridge = Bridge::to(&server);
    bridge
        .send_line("{\"jsonrpc\": \"2.0\", \"id\": 1, oops")
        .await;
    let answer = bridge.recv().await.expect("the server's answer");
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
    bridge.send(initialize_request(2)).await;
    assert!(bridge.response_to(2).await.get("result").is_some());
    // JSON, but not a valid request: answered with its id, so closing stdin
    // right after it does not leave the bridge waiting for the drain timeout.
    bridge
        .send_line(r#"{"id": 3, "method": "session/list"}"#)
        .await;
    bridge.close_stdin();
    assert_eq!(bridge.response_to(3).await["error"]["code"], -32600);
    assert!(bridge.exit_status().await.success());
    let stderr = bridge.stderr().await;
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    assert!(!stderr.contains("did not answer"), "{stderr}");
    assert!(stderr.contains("oops"), "quotes an excerpt: {stderr}");
}

#[tokio::test]
async fn a_20_mb_message_and_any_unicode_pass_through_intact() {
    let server = Server::start().await;
    let mut bridge = Bridge::to(&server);
    let session = open_session(&mut bridge, &server).await;
    let unicode =
        "héllo 世界 🦀 مرحبا e\u{301} \u{200d}\u{1F469}\u{200D}\u{1F4BB} \"quoted\" \\ tab\t";
    let mut big = unicode.repeat(20 * 1024 * 1024 / unicode.len() + 1);
    big.push_str(" end");
    assert!(big.len() > 20 * 1024 * 1024);
    bridge
        .send(request(
            3,
            "session/prompt",
            json!({"sessionId": session, "prompt": [{"type": "text", "text": big}]}),
        ))
        .await;
    let mut text = String::new();
    loop {
        let message = bridge.recv().await.expect("the reply");
        if message["id"] == 3 {
            assert_eq!(message["result"]["stopReason"], "end_turn");
            break;
        }
        if let Some(chunk) = message["params"]["update"]["content"]["text"].as_str() {
            text.push_str(chunk);
        }
    }
    assert!(
        text.contains(&format!("You said: \"{big}\"")),
        "the 20 MB prompt came back intact"
    );
    bridge.close_stdin();
    assert!(bridge.exit_status().await.success());
}

#[tokio::test]
async fn stdout_may_be_a_regular_file() {
    let server = Server::start().await;
    let output = server.home.dir.path().join("bridge-output.jsonl");
    let mut child = server
        .home
        .command()
        .args(["--server", &server.ws_url()])
        .env("PUNIE_TOKEN", &server.token)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{}\n", initialize_request(1)).as_bytes())
            .await
            .unwrap();
    }
    let status = within("the bridge to exit", child.wait()).await.unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1, "{written}");
    assert_eq!(lines[0]["result"]["agentInfo"]["name"], "punie");
}

#[tokio::test]
async fn a_stdout_that_takes_nothing_is_an_error_not_a_success() {
    let server = Server::start().await;
    // A full disk, and a pipe whose reader has gone: either way no answer
    // reaches the IDE.
    for stdout in [full_disk(), reader_gone()] {
        let output = run_with(
            server
                .home
                .command()
                .args(["--server", &server.ws_url()])
                .env("PUNIE_TOKEN", &server.token),
            format!("{}\n", initialize_request(1)).as_bytes(),
            stdout,
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    }
}

#[tokio::test]
async fn stdout_may_be_a_terminal() {
    let server = Server::start().await;
    let mut command = server.home.command();
    command
        .args(["--server", &server.ws_url()])
        .env("PUNIE_TOKEN", &server.token)
        .stdin(Stdio::piped())
        .stderr(Stdio::null());
    let (mut terminal, mut child) = Terminal::spawn_writing_to_it(command);
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        let list = request(2, "session/list", json!({}));
        let lines = format!("{}\n{list}\n", initialize_request(1));
        stdin.write_all(lines.as_bytes()).await.unwrap();
    }
    let screen = terminal.closed().await;
    let status = within("the bridge to exit", child.wait()).await.unwrap();
    assert!(status.success());
    // The terminal turns each "\n" into "\r\n"; nothing else may be there.
    let lines: Vec<serde_json::Value> = screen
        .split_terminator("\r\n")
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{screen:?}");
    assert_eq!(lines[0]["result"]["agentInfo"]["name"], "punie");
    assert_eq!(lines[1]["id"], 2);
    assert!(lines[1]["result"]["sessions"].is_array(), "{screen:?}");
}

#[tokio::test]
async fn when_the_server_dies_mid_turn_the_waiting_request_gets_an_error_and_the_bridge_exits_1() {
    let server = Server::start().await;
    let mut bridge = Bridge::to(&server);
    let session = open_session(&mut bridge, &server).await;
    start_prompt(&mut bridge, &session, "count to 1000").await;
    let update = bridge.recv().await.expect("the turn has begun");
    assert_eq!(update["method"], "session/update");

    server.signal(Signal::SIGKILL);
    let answer = bridge.response_to(3).await;
    let message = answer["error"]["message"]
        .as_str()
        .expect("an error for the waiting prompt");
    assert!(message.contains("lost the connection"), "{message}");
    assert_eq!(bridge.exit_status().await.code(), Some(1));
    let stderr = bridge.stderr().await;
    assert!(stderr.contains("lost the connection"), "{stderr}");
}

#[tokio::test]
async fn when_the_server_shuts_down_the_bridge_passes_on_its_answers_then_exits_1() {
    let mut server = Server::start().await;
    let mut bridge = Bridge::to(&server);
    let session = open_session(&mut bridge, &server).await;
    start_prompt(&mut bridge, &session, "count to 1000").await;
    bridge.recv().await.expect("the turn has begun");

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let answer = bridge.response_to(3).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    assert_eq!(bridge.exit_status().await.code(), Some(1));
    let stderr = bridge.stderr().await;
    assert!(
        stderr.contains("1001"),
        "says why the server closed: {stderr}"
    );
    assert!(server.exit_status().await.success());
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "the bridge answered the server's close at once, so the server did not wait: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn agent_requests_and_the_ides_answers_pass_through_the_bridge() {
    let home = Home::new();
    let model = home.script_model(json!([
        [{"tool_call": {"name": "read_file", "arguments": {"path": "notes.txt"}}}],
        [{"tool_call": {"name": "write_file", "arguments": {"path": "notes.txt", "content": "rewritten"}}}],
        [{"text": "Done."}]
    ]));
    let server = Server::start_in(home, &["--model", &model]).await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("notes.txt"), "original").unwrap();
    let ide = support::sdk::Ide::new(&workspace, true, true);
    let received = Received::default();
    let stop = ide
        .run(bridge_agent(&server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            prompt(&cx, &session, "rewrite the notes").await
        })
        .await;
    assert_eq!(stop, StopReason::EndTurn);
    assert_eq!(
        ide.requests(),
        [
            "fs/read_text_file",
            "fs/read_text_file",
            "session/request_permission",
            "fs/read_text_file",
            "fs/write_text_file"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes.txt")).unwrap(),
        "rewritten"
    );
}

/// The output of the IDE's terminal: nothing the server could make up.
const IDE_OUTPUT: &str = "printed in the IDE's terminal\n";

/// A hand-played IDE's answer to the agent's `request`.
fn ide_answer(request: &serde_json::Value) -> serde_json::Value {
    let result = match request["method"].as_str().unwrap_or_default() {
        "session/request_permission" => {
            json!({"outcome": {"outcome": "selected", "optionId": "allow_once"}})
        }
        "terminal/create" => json!({"terminalId": "ide-terminal-7"}),
        "terminal/wait_for_exit" => json!({"exitCode": 0}),
        // No exit status: the one in the tool's result can then only have
        // come from the answer to terminal/wait_for_exit.
        "terminal/output" => json!({"output": IDE_OUTPUT, "truncated": false}),
        "terminal/release" => json!({}),
        _ => panic!("the IDE was asked what it did not expect: {request}"),
    };
    json!({"jsonrpc": "2.0", "id": request["id"], "result": result})
}

/// The `terminal/*` requests among `lines`, as they were.
fn terminal_requests(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| {
            let message: serde_json::Value = serde_json::from_str(line).unwrap();
            message.get("id").is_some()
                && message["method"]
                    .as_str()
                    .is_some_and(|method| method.starts_with("terminal/"))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn terminal_requests_and_the_ides_answers_pass_through_the_bridge_byte_for_byte() {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "run_command", "arguments": {"command": "make test"}}}],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    // Between the bridge and the server: what the server sent, and what
    // reached it, exactly.
    let relay = RecordingRelay::start(&server).await;
    let mut bridge = Bridge::spawn(&server.home, &relay.url, "the-relay-takes-any");
    let session = open_session_offering(&mut bridge, &server, json!({"terminal": true})).await;
    start_prompt(&mut bridge, &session, "run the tests").await;

    let (mut on_stdout, mut answers, mut told) = (Vec::new(), Vec::new(), Vec::new());
    let (mut answered, mut released) = (false, false);
    // The release is not waited for, so it may come after the turn's answer.
    while !(answered && released) {
        let line = bridge.recv_line().await.expect("the turn goes on");
        let message: serde_json::Value = serde_json::from_str(&line).unwrap();
        if message["id"] == 3 && message.get("method").is_none() {
            assert_eq!(message["result"]["stopReason"], "end_turn", "{message}");
            answered = true;
        } else if message.get("id").is_some() {
            released |= message["method"] == "terminal/release";
            let answer = ide_answer(&message).to_string();
            bridge.send_line(&answer).await;
            answers.push(answer);
        } else {
            told.push(message);
        }
        on_stdout.push(line);
    }
    bridge.close_stdin();
    assert_eq!(bridge.rest().await, Vec::<serde_json::Value>::new());
    assert!(bridge.exit_status().await.success());
    let recorded = relay.finished().await;

    let asked = terminal_requests(&on_stdout);
    let methods: Vec<String> = asked
        .iter()
        .map(|line| {
            let message: serde_json::Value = serde_json::from_str(line).unwrap();
            message["method"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        methods,
        [
            "terminal/create",
            "terminal/wait_for_exit",
            "terminal/output",
            "terminal/release"
        ]
    );
    assert_eq!(
        asked,
        terminal_requests(&recorded.from_server),
        "each terminal request reached the IDE exactly as the server sent it"
    );
    let answers_received: Vec<&String> = recorded
        .to_server
        .iter()
        .filter(|frame| {
            let message: serde_json::Value = serde_json::from_str(frame).unwrap();
            message.get("method").is_none()
        })
        .collect();
    assert_eq!(
        answers_received,
        answers.iter().collect::<Vec<_>>(),
        "each of the IDE's answers reached the server exactly as written"
    );

    let finished = updates(&told, "tool_call_update")
        .into_iter()
        .rfind(|update| update.get("status").is_some())
        .expect("the tool call's last status")
        .clone();
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(
        finished["content"],
        json!([
            {"type": "terminal", "terminalId": "ide-terminal-7"},
            {"type": "content", "content": {"type": "text", "text": format!("exit code 0; output:\n{IDE_OUTPUT}")}}
        ]),
        "the terminal the IDE made, its exit code and its output"
    );
}

#[tokio::test]
async fn at_the_end_of_stdin_the_bridge_closes_with_1000_after_the_last_answer_and_exits_0() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/acp", listener.local_addr().unwrap());
    let home = Home::new();
    let mut bridge = Bridge::spawn(&home, &url, "any-token");
    // The IDE's last request and the end of its stdin, both before the
    // server is there to answer.
    bridge.send(initialize_request(1)).await;
    bridge.close_stdin();
    let mut server = HandWrittenAgent::accept(listener).await;
    let asked = server.text().await;
    assert_eq!(asked["method"], "initialize", "{asked}");

    // The pong comes after anything the bridge sent before it: a close
    // sent with the answer still owed would come first.
    server
        .ws
        .send(Message::Ping("still there?".into()))
        .await
        .unwrap();
    let before_the_answer = server.frame().await;
    assert!(
        matches!(before_the_answer, Some(Ok(Message::Pong(_)))),
        "nothing but the pong while an answer is owed: {before_the_answer:?}"
    );
    let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": 1, "agentCapabilities": {}, "authMethods": []}});
    server.send(answer.clone()).await;
    let after_the_answer = server.frame().await;
    let Some(Ok(Message::Close(Some(goodbye)))) = after_the_answer else {
        panic!("a close frame, not a dropped socket: {after_the_answer:?}");
    };
    assert_eq!(
        u16::from(goodbye.code),
        1000,
        "a normal closure: {goodbye:?}"
    );
    // Reading on sends the close's answer, which ends the bridge's wait for it.
    while let Some(Ok(_)) = server.frame().await {}

    assert_eq!(
        bridge.recv_line().await.as_deref(),
        Some(answer.to_string().as_str()),
        "the answer reached stdout"
    );
    assert_eq!(bridge.recv_line().await, None, "and nothing else did");
    assert_eq!(bridge.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn with_no_server_named_and_no_token_given_the_bridge_finds_both_in_the_xdg_state_directory()
{
    let server = Server::start().await;
    let mut bridge = Bridge::from_home(&server.home);
    bridge.send(initialize_request(1)).await;
    let answer = bridge.response_to(1).await;
    assert_eq!(answer["result"]["agentInfo"]["name"], "punie", "{answer}");
    assert_eq!(
        server.health().await["connections"],
        1,
        "the bridge is connected to the server its home records"
    );
    bridge.close_stdin();
    assert!(bridge.exit_status().await.success());
}

#[tokio::test]
async fn the_log_file_gets_the_bridges_diagnostics_while_stdout_carries_only_acp() {
    let server = Server::start().await;
    let log_file = server.home.dir.path().join("bridge.log");
    let mut bridge = Bridge::spawn_with(&server.home, &server.ws_url(), &server.token, |command| {
        command.arg("--log-file").arg(&log_file);
    });
    bridge
        .send_line("{\"jsonrpc\": \"2.0\", \"id\": 1, oops")
        .await;
    bridge.send(initialize_request(2)).await;
    bridge.close_stdin();
    // `recv` fails the test on any stdout line that is not JSON.
    let lines = bridge.rest().await;
    assert!(bridge.exit_status().await.success());
    assert_eq!(
        lines.len(),
        2,
        "the two answers and nothing else: {lines:?}"
    );
    assert!(
        lines.iter().all(|line| line["jsonrpc"] == "2.0"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|line| line["error"]["code"] == -32700));
    assert!(
        lines
            .iter()
            .any(|line| line["id"] == 2 && line.get("result").is_some())
    );

    let logged = std::fs::read_to_string(&log_file).expect("the log file was written");
    assert!(logged.contains("not valid JSON"), "{logged:?}");
    assert!(logged.contains("oops"), "quotes an excerpt: {logged:?}");
    assert!(
        !logged.contains('\u{1b}'),
        "no colour in a file: {logged:?}"
    );
    let stderr = bridge.stderr().await;
    assert!(
        stderr.contains("not valid JSON"),
        "stderr has it too: {stderr}"
    );
}

#[tokio::test]
async fn a_line_larger_than_the_server_takes_is_answered_and_the_connection_stays() {
    let server = Server::start_in(Home::new(), &["--max-message-bytes", "4096"]).await;
    let mut bridge = Bridge::to(&server);
    bridge.send(initialize_request(1)).await;
    bridge.response_to(1).await;
    let huge = request(
        2,
        "session/new",
        json!({"cwd": server.home.workspace(), "mcpServers": [], "_meta": {"padding": "x".repeat(8192)}}),
    );
    bridge.send(huge).await;

    let answer = bridge.response_to(2).await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        message.contains("was not sent") && message.contains("--max-message-bytes"),
        "{message}"
    );
    assert!(
        message.contains("messages of up to 4.0 KiB"),
        "a size a person can read: {message}"
    );
    bridge.send(request(3, "session/list", json!({}))).await;
    let listed = bridge.response_to(3).await;
    assert!(
        listed.get("result").is_some(),
        "the connection stays: {listed}"
    );
    bridge.close_stdin();
    assert!(bridge.exit_status().await.success());
    assert!(bridge.stderr().await.contains("was not sent"));
}

#[tokio::test]
async fn an_answer_larger_than_the_server_takes_becomes_an_error_the_server_gets_at_once() {
    // The server would wait for the answer past the test's deadline.
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "read_file", "arguments": {"path": "big.txt"}}}],
            [{"text": "Could not read it."}]
        ]),
        &["--max-message-bytes", "2000"],
    )
    .await;
    let mut bridge = Bridge::to(&server);
    let reads = json!({"fs": {"readTextFile": true}});
    bridge
        .send(request(
            1,
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities": reads}),
        ))
        .await;
    bridge.response_to(1).await;
    let new_session = json!({"cwd": server.home.workspace(), "mcpServers": []});
    bridge.send(request(2, "session/new", new_session)).await;
    let session = bridge.response_to(2).await["result"]["sessionId"].clone();
    start_prompt(&mut bridge, &session, "read big.txt").await;
    let asked = loop {
        let message = bridge.recv().await.expect("the server's request");
        if message["method"] == "fs/read_text_file" {
            break message;
        }
    };
    let content = "x".repeat(3000);
    bridge
        .send(json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"content": content}}))
        .await;
    let mut told = Vec::new();
    let answer = loop {
        let message = bridge.recv().await.expect("the prompt's answer");
        if message["id"] == 3 && message.get("method").is_none() {
            break message;
        }
        told.push(message);
    };
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let told = serde_json::to_string(&told).unwrap();
    assert!(
        told.contains("over the server's limit") && told.contains("--max-message-bytes"),
        "the model is told why: {told}"
    );
    bridge.close_stdin();
    assert!(bridge.exit_status().await.success());
    let stderr = bridge.stderr().await;
    assert!(stderr.contains("it was told so instead"), "{stderr}");
}

#[tokio::test]
async fn when_the_reader_of_stdout_goes_away_while_idle_the_bridge_exits_1_and_disconnects() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let server = Server::start().await;
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = server
        .home
        .command()
        .args(["--server", &server.ws_url()])
        .env("PUNIE_TOKEN", &server.token)
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", initialize_request(1)).as_bytes())
        .await
        .unwrap();
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()).unwrap();
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let answer = within("the answer to initialize", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(answer.contains("\"id\":1"), "{answer}");
    assert_eq!(server.health().await["connections"], 1);

    // Nothing more is owed or sent: the bridge is idle, stdin still open.
    drop(lines);
    let status = within("the bridge to exit", child.wait()).await.unwrap();
    let stderr = stderr_of(&mut child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    server
        .health_until("the bridge's connection to close", |health| {
            health["connections"] == 0
        })
        .await;
    drop(stdin);
}
