//! Faults a long-running server must live through: clients that vanish
//! without a word, a bridge or the server itself killed mid-turn, a model
//! server that hangs or talks nonsense, a store that cannot be written, and a
//! flood of connections that come and go. Each test says what must still work.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::disk::Disk;
use support::fake_provider::{FakeProvider, Part, Reply, Wire};
use support::{Bridge, Home, RawClient, Server, stderr_of, text_of, turn_end, updates, within};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// End `client`'s connection with a TCP reset and no close frame, as a client
/// that crashed or lost its network does.
fn vanish(client: RawClient) {
    client
        .ws
        .get_ref()
        .get_ref()
        .set_zero_linger()
        .expect("SO_LINGER can be set");
    drop(client);
}

fn connections(health: &Value) -> u64 {
    health["connections"].as_u64().expect("a connection count")
}

fn agent_text(messages: &[Value]) -> String {
    text_of(&updates(messages, "agent_message_chunk"))
}

/// What the `test` model answers to `count to n`.
fn counted(n: u64) -> String {
    (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
}

/// Read messages until the agent text `client` has seen satisfies `done`.
async fn agent_text_until(client: &mut RawClient, done: impl Fn(&str) -> bool) {
    client.receive_until(|seen| done(&agent_text(seen))).await;
}

/// `session/load` `session` on `client`; returns the replayed messages.
async fn load(client: &mut RawClient, session: &str, cwd: &Path) -> Vec<Value> {
    client.notifications.clear();
    client.attach("session/load", session, cwd).await;
    std::mem::take(&mut client.notifications)
}

fn assert_no_panic(server: &Server) {
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

#[tokio::test]
async fn a_client_reset_mid_turn_harms_no_one_and_its_turn_is_seen_through() {
    // Every session's first prompt asks to write a file; once allowed, the
    // model streams for about two seconds.
    let streamed: Vec<String> = (1..=40).map(|i| format!("w{i} ")).collect();
    let mut stream = Vec::new();
    for piece in &streamed {
        stream.push(json!({"text": piece}));
        stream.push(json!({"pause_ms": 50}));
    }
    let script = json!([
        [{"text": "Let me write it. "},
         {"tool_call": {"id": "call-1", "name": "write_file", "arguments": {"path": "note.txt", "content": "hello"}}}],
        stream,
    ]);
    let home = Home::new();
    let model = home.script_model(&script);
    let server = Server::start_in(home, &["--model", &model, "--reattach-timeout", "0.5"]).await;
    let workspace = server.home.workspace();
    let full_text = format!("Let me write it. {}", streamed.concat());
    let baseline = connections(&server.health().await);

    // One client vanishes while its turn waits for it to answer a permission
    // request; another while its turn streams.
    let mut waiting = server.initialized().await;
    let waiting_session = waiting.new_session(&workspace).await;
    waiting.start_prompt(&waiting_session, "write a note").await;
    waiting.permission_request().await;

    let mut streaming = server.initialized().await;
    let streaming_session = streaming.new_session(&workspace).await;
    streaming
        .start_prompt(&streaming_session, "write a note")
        .await;
    let request = streaming.permission_request().await;
    streaming.allow(&request).await;
    agent_text_until(&mut streaming, |text| text.contains("w1 ")).await;

    // A third client's turn is streaming too when the other two vanish.
    let mut steady = server.initialized().await;
    let steady_session = steady.new_session(&workspace).await;
    let prompt = steady.start_prompt(&steady_session, "write a note").await;
    let request = steady.permission_request().await;
    steady.allow(&request).await;
    agent_text_until(&mut steady, |text| text.contains("w1 ")).await;
    assert_eq!(
        connections(&server.health().await),
        baseline + 3,
        "three connections are open"
    );

    vanish(waiting);
    vanish(streaming);

    let answer = steady.response_to(prompt).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(agent_text(&steady.notifications), full_text);
    // New clients are served as before.
    let mut newcomer = server.initialized().await;
    let listed = newcomer.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"].as_array().map(Vec::len),
        Some(3)
    );
    drop(newcomer);

    server
        .health_until("the vanished connections to be counted out", |health| {
            connections(health) == baseline + 1
        })
        .await;
    // The two orphaned turns end (the steady client keeps its session in
    // memory): one cancelled for want of anyone to ask, one to its end.
    server
        .health_until("the orphaned turns to end", |health| {
            health["sessions"] == 1
        })
        .await;
    let database = server.home.database();
    let ended = turn_end(&database, &waiting_session).expect("the waiting turn ended");
    assert_eq!(ended["stopReason"], "cancelled", "{ended}");
    let note = ended["note"].as_str().unwrap_or_default();
    assert!(note.contains("no client was attached"), "{note}");
    let ended = turn_end(&database, &streaming_session).expect("the streaming turn ended");
    assert_eq!(
        ended["stopReason"], "end_turn",
        "a turn outlives its connection: {ended}"
    );

    // Everything the orphaned turn said after its client vanished was kept.
    let replay = load(&mut steady, &streaming_session, &workspace).await;
    assert_eq!(agent_text(&replay), full_text);
    assert_no_panic(&server);
    // Going away is no breach of the protocol, and nobody is left to tell.
    let log = server.log();
    assert!(!log.contains("protocol error"), "{log}");
}

#[tokio::test]
async fn a_bridge_killed_mid_turn_leaves_the_server_serving_and_the_session_stored() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let baseline = connections(&server.health().await);

    let mut bridge = Bridge::to(&server);
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1, "clientCapabilities": {}}}))
        .await;
    bridge.response_to(1).await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": workspace, "mcpServers": []}}))
        .await;
    let session = bridge.response_to(2).await["result"]["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "session/prompt", "params": {"sessionId": session, "prompt": [{"type": "text", "text": "count to 100"}]}}))
        .await;
    // The session's commands come first, then the turn's text.
    loop {
        let update = bridge.recv().await.expect("the turn has begun");
        assert_eq!(update["method"], "session/update", "{update}");
        if update["params"]["update"]["sessionUpdate"] == "agent_message_chunk" {
            break;
        }
    }
    assert_eq!(
        connections(&server.health().await),
        baseline + 1,
        "the bridge is connected"
    );

    bridge.child.start_kill().expect("the bridge can be killed");
    let status = bridge.exit_status().await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(Signal::SIGKILL as i32)
    );

    server
        .health_until("the bridge's connection to be counted out", |health| {
            connections(health) == baseline
        })
        .await;
    // The turn goes on without its client, to its end; then the session,
    // with no one attached, leaves memory and lives on in the store.
    server
        .health_until("the turn to end", |health| health["sessions"] == 0)
        .await;
    let ended = turn_end(&server.home.database(), &session).expect("the turn ended");
    assert_eq!(ended["stopReason"], "end_turn", "{ended}");

    let mut client = server.initialized().await;
    let replay = load(&mut client, &session, &workspace).await;
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        "count to 100"
    );
    assert_eq!(agent_text(&replay), counted(100));
    let answer = client.prompt(&session, "and now?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        client.agent_text(&session),
        "Turn 2. You said: \"and now?\". Before that you said: \"count to 100\"."
    );
    assert_no_panic(&server);
}

/// `punie ask` with its output streamed as JSON lines, as a script runs it.
struct Ask {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Every line of stdout so far, parsed.
    lines: Vec<Value>,
}

impl Ask {
    fn spawn(server: &Server, question: &str) -> Self {
        let mut child = server
            .home
            .command()
            .args(["ask", "--output", "stream-json", question])
            .current_dir(server.home.workspace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("punie ask starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self {
            child,
            stdout,
            lines: Vec::new(),
        }
    }

    /// The next line of stdout; `None` once it is closed.
    async fn next(&mut self) -> Option<&Value> {
        let line = within("a line from punie ask", self.stdout.next_line())
            .await
            .expect("stdout is readable")?;
        let value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("stream-json prints only JSON, got {line:?}"));
        self.lines.push(value);
        self.lines.last()
    }

    fn agent_text(&self) -> String {
        self.lines
            .iter()
            .filter(|line| line["update"]["sessionUpdate"] == "agent_message_chunk")
            .map(|line| {
                line["update"]["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// A command the server runs dies with it, even when the server is killed
/// with no chance to stop it.
#[tokio::test]
async fn a_command_running_when_the_server_is_killed_dies_with_it() {
    let mut server = Server::scripted(
        json!([
            [{"tool_call": {"name": "run_command", "arguments": {"command": "echo $$ > leader.pid.new && mv leader.pid.new leader.pid && exec sleep 1000"}}}],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    client.start_prompt(&session, "run it").await;
    let permission = client.permission_request().await;
    client.allow(&permission).await;
    let written = workspace.join("leader.pid");
    let pid: i32 = within("the command to start", async {
        loop {
            if let Ok(pid) = std::fs::read_to_string(&written) {
                return pid.trim().parse().expect("the shell wrote its pid");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let command = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).expect("a pid"),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("the command runs");

    server.signal(Signal::SIGKILL);
    server.exit_status().await;

    // Readable once the command has exited, reaped or not.
    // SAFETY: the AsyncFd owns the pidfd and nothing else closes it.
    let command = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(command, tokio::io::Interest::READABLE)
    }
    .expect("a pidfd can be polled");
    let _exited = within("the command to die with the server", command.readable())
        .await
        .expect("the pidfd polls");
}

#[tokio::test]
async fn when_the_server_is_killed_mid_turn_its_clients_fail_and_a_restart_replays_what_they_saw() {
    let mut server = Server::start().await;
    let workspace = server.home.workspace();

    let mut bridge = Bridge::to(&server);
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1, "clientCapabilities": {}}}))
        .await;
    bridge.response_to(1).await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": workspace, "mcpServers": []}}))
        .await;
    let bridge_session = bridge.response_to(2).await["result"]["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "session/prompt", "params": {"sessionId": bridge_session, "prompt": [{"type": "text", "text": "count to 1000"}]}}))
        .await;
    // The session's commands come first; the turn has begun at its text.
    let mut bridge_saw = Vec::new();
    while agent_text(&bridge_saw).is_empty() {
        bridge_saw.push(bridge.recv().await.expect("the turn has begun"));
    }

    let mut ask = Ask::spawn(&server, "count to 1000");
    let ask_session = loop {
        let line = ask.next().await.expect("punie ask streams updates");
        if line["update"]["sessionUpdate"] == "agent_message_chunk" {
            break line["sessionId"].as_str().expect("a session id").to_owned();
        }
    };

    server.signal(Signal::SIGKILL);
    server.exit_status().await;

    // The bridge answers the prompt it still owes with an error, then exits 1.
    let answer = loop {
        let message = bridge.recv().await.expect("an answer to the prompt");
        if message["id"] == 3 {
            break message;
        }
        bridge_saw.push(message);
    };
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("lost the connection"), "{answer}");
    bridge_saw.extend(bridge.rest().await);
    assert_eq!(bridge.exit_status().await.code(), Some(1));

    // `punie ask` says what happened and exits 1.
    while ask.next().await.is_some() {}
    let status = within("punie ask to exit", ask.child.wait())
        .await
        .expect("an exit status");
    let stderr = stderr_of(&mut ask.child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lost the connection"), "{stderr}");
    // The result line says the turn never ended, and why.
    let result = ask.lines.last().expect("a result line");
    assert_eq!(result["stopReason"], Value::Null, "{result}");
    assert_eq!(result["sessionId"], ask_session.as_str(), "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("lost the connection"), "{result}");

    let server = Server::start_in(server.home, &[]).await;
    let mut client = server.initialized().await;
    for (session, saw) in [
        (&bridge_session, agent_text(&bridge_saw)),
        (&ask_session, ask.agent_text()),
    ] {
        assert!(!saw.is_empty(), "the client saw the turn begin");
        let replay = load(&mut client, session, &workspace).await;
        let replayed = agent_text(&replay);
        assert!(
            replayed.starts_with(&saw),
            "everything the client saw is replayed: saw {saw:?}, replayed {replayed:?}"
        );
    }
    assert_no_panic(&server);
}

/// A model server's reply that goes wrong, and what the turn shows for it.
struct ProviderFault {
    /// The provider's wire format.
    wire: Wire,
    reply: Reply,
    /// What streams to the client before the fault.
    partial: &'static str,
    /// Released once `partial` has reached the client.
    release: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// What the turn's error says.
    says: String,
}

/// A faulty reply ends only its own turn, promptly and with a clear error;
/// what streamed before it reached the client, is stored, and is what the
/// model is told it said; the next prompt works.
async fn a_provider_fault_ends_only_its_turn(fault: ProviderFault) {
    let wire = fault.wire;
    let provider = FakeProvider::start([
        fault.reply,
        Reply::events(wire.text_reply(&["All ", "good."])),
    ])
    .await;
    let (model, environment) = wire.model_spec(&provider);
    let home = Home::new();
    let mut command = home.command();
    command
        .args([
            "serve",
            "--port",
            "0",
            "--model",
            &model,
            "--model-idle-timeout",
            "0.5",
            // Each reply above is for one call.
            "--model-retries",
            "0",
        ])
        .envs(environment);
    let server = Server::spawn(home, command).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;

    let started = Instant::now();
    let turn = client.start_prompt(&session, "fault").await;
    if let Some(release) = fault.release {
        agent_text_until(&mut client, |text| text.ends_with(fault.partial)).await;
        release.notify_one();
    }
    let answer = client.response_to(turn).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the turn ended promptly: {:?}",
        started.elapsed()
    );
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("session/prompt: ") && message.contains(&fault.says),
        "{wire:?}: expected {:?}: {message}",
        fault.says
    );
    assert_eq!(
        agent_text(&client.notifications),
        fault.partial,
        "what streamed before the fault reached the client"
    );

    // The session, and the server, go on; the model is told what the person saw.
    let fine = client.prompt(&session, "again").await;
    assert_eq!(fine["result"]["stopReason"], "end_turn", "{fine}");
    let requests = provider.requests();
    assert_eq!(requests.len(), 2);
    let said = wire.assistant_texts(&requests[1].body);
    let partial: Vec<&str> = [fault.partial]
        .into_iter()
        .filter(|partial| !partial.is_empty())
        .collect();
    assert_eq!(said, partial, "{wire:?}");

    // And the stored history has every piece, for another client to load.
    let mut other = server.initialized().await;
    let replay = load(&mut other, &session, &workspace).await;
    assert_eq!(agent_text(&replay), format!("{}All good.", fault.partial));
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        "faultagain"
    );
    assert_eq!(server.health().await["status"], "ok");
    assert_no_panic(&server);
}

#[tokio::test]
async fn a_model_server_that_hangs_ends_the_turn_after_the_idle_timeout() {
    for wire in Wire::ALL {
        a_provider_fault_ends_only_its_turn(ProviderFault {
            wire,
            // The headers, then nothing at all.
            reply: Reply::Stream(vec![Part::Stall]),
            partial: "",
            release: None,
            says: format!("{} sent nothing for 500ms", wire.peer_name()),
        })
        .await;
    }
}

#[tokio::test]
async fn a_model_server_that_stalls_mid_reply_ends_the_turn_after_the_idle_timeout() {
    for wire in Wire::ALL {
        a_provider_fault_ends_only_its_turn(ProviderFault {
            wire,
            reply: wire.opening_then("Thinking about it. ", vec![Part::Stall]),
            partial: "Thinking about it. ",
            release: None,
            says: format!("{} sent nothing for 500ms", wire.peer_name()),
        })
        .await;
    }
}

#[tokio::test]
async fn a_model_server_that_sends_malformed_events_ends_the_turn_with_a_clear_error() {
    for wire in Wire::ALL {
        a_provider_fault_ends_only_its_turn(ProviderFault {
            wire,
            // A start, then lines that are no server-sent events, then data
            // that is not JSON.
            reply: wire.opening_then(
                "Partial answer. ",
                vec![
                    Part::Send("this is not an event\n: nor is this\n\n".to_owned()),
                    Part::Send(wire.malformed_event()),
                ],
            ),
            partial: "Partial answer. ",
            release: None,
            says: format!(
                "{} sent an event Punie does not understand",
                wire.peer_name()
            ),
        })
        .await;
    }
}

#[tokio::test]
async fn a_model_server_that_ends_its_reply_early_ends_the_turn_with_a_clear_error() {
    for wire in Wire::ALL {
        a_provider_fault_ends_only_its_turn(ProviderFault {
            wire,
            // A start, then the response ends as if the reply were complete.
            reply: wire.opening_then("Cut short. ", Vec::new()),
            partial: "Cut short. ",
            release: None,
            says: format!(
                "{} closed the stream before the reply was complete",
                wire.peer_name()
            ),
        })
        .await;
    }
}

#[tokio::test]
async fn a_model_server_that_drops_the_connection_mid_reply_ends_the_turn_with_a_clear_error() {
    for wire in Wire::ALL {
        let crash = std::sync::Arc::new(tokio::sync::Notify::new());
        a_provider_fault_ends_only_its_turn(ProviderFault {
            wire,
            // A start, then the connection drops mid-response.
            reply: wire.opening_then("Broken off. ", vec![Part::Wait(crash.clone()), Part::Abort]),
            partial: "Broken off. ",
            release: Some(crash),
            says: format!("the stream from {} broke", wire.peer_name()),
        })
        .await;
    }
}

/// Set the server's file size limit: the kernel refuses (EFBIG) any write at
/// or past `bytes` into any file, whatever the file's size already is.
fn limit_file_size(server: &Server, bytes: u64) {
    let pid = i32::try_from(server.child.id().expect("the server runs")).expect("a pid");
    rlimit::prlimit(
        pid,
        rlimit::Resource::FSIZE,
        Some((bytes, rlimit::INFINITY)),
        None,
    )
    .expect("the server's file size limit can be set");
}

/// The message of a prompt refused because the store cannot be written.
fn assert_refused_for_the_store(answer: &Value, database: &Path, problem: &str) {
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("session/prompt: "), "{message}");
    assert!(
        message.contains(&database.display().to_string()),
        "names the store: {message}"
    );
    assert!(message.contains(problem), "says what: {message}");
    assert!(
        message.contains("free disk space or make it writable"),
        "says what to do: {message}"
    );
}

/// A server in a home, with one session whose first turn said "before".
struct Prompted {
    server: Server,
    workspace: PathBuf,
    database: PathBuf,
    client: RawClient,
    session: String,
}

async fn prompted_once(home: Home) -> Prompted {
    let database = home.database();
    let server = Server::start_in(home, &[]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    client.prompt(&session, "before").await;
    Prompted {
        server,
        workspace,
        database,
        client,
        session,
    }
}

/// `session/list` on `client` shows `session` first: what is stored can
/// still be read.
async fn assert_listed_first(client: &mut RawClient, session: &str) {
    let listed = client.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"][0]["sessionId"], session,
        "{listed}"
    );
}

/// Prompt `session`, after its first turn ("before"), until a prompt is
/// refused: the log the store writes to may have room left from before a
/// disk filled up, so turns are admitted until the store has met the full
/// disk. The prompts admitted, and the refusal.
async fn prompted_until_refused(client: &mut RawClient, session: &str) -> (Vec<String>, Value) {
    let mut admitted = vec!["before".to_owned()];
    loop {
        let prompt = format!("full {}", admitted.len());
        let answer = client.prompt(session, &prompt).await;
        if answer.get("error").is_some() {
            return (admitted, answer);
        }
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        assert!(
            client.agent_text(session).ends_with(&format!(
                "You said: \"{prompt}\". Before that you said: \"{}\".",
                admitted.last().map_or("", String::as_str)
            )),
            "a turn admitted runs to its end: {}",
            client.agent_text(session)
        );
        admitted.push(prompt);
        assert!(admitted.len() < 50, "the store never met the full disk");
    }
}

#[tokio::test]
async fn a_full_disk_refuses_new_turns_clearly_and_once_freed_the_store_has_every_turn() {
    let home = Home::new();
    let disk = Disk::mount(&home, "1m");
    let Prompted {
        mut server,
        workspace,
        database,
        mut client,
        session,
    } = prompted_once(home).await;

    let filler = disk.fill();
    let (admitted, refusal) = prompted_until_refused(&mut client, &session).await;
    assert_refused_for_the_store(&refusal, &database, "the disk is full");
    server
        .wait_for_log("cannot write to the session store")
        .await;
    assert_listed_first(&mut client, &session).await;
    let health = server.health().await;
    assert!(
        health["store"]
            .as_str()
            .is_some_and(|store| store.starts_with("cannot write to it:")),
        "{health}"
    );

    std::fs::remove_file(filler).expect("room again");
    server
        .wait_for_log("the session store is writable again")
        .await;
    assert_eq!(server.health().await["store"], "ok");
    let mut loader = server.initialized().await;
    let replay = load(&mut loader, &session, &workspace).await;
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        admitted.concat(),
        "every turn a client saw is stored"
    );
    let answer = client.prompt(&session, "after").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let last = admitted.last().map_or("", String::as_str);
    assert!(
        client
            .agent_text(&session)
            .ends_with(&format!("Before that you said: \"{last}\".")),
        "{}",
        client.agent_text(&session)
    );
    assert_no_panic(&server);
}

/// What a stopped server left beside its database when the disk was made
/// read-only.
#[derive(Clone, Copy)]
enum LeftBeside {
    /// The empty log and the shared-memory file a clean stop leaves: a
    /// reader maps the shared memory as it is, read-only.
    LogAndSharedMemory,
    /// Neither, as SQLite leaves a database whose last connection closed: it
    /// is read as a file nobody writes.
    Nothing,
}

#[tokio::test]
async fn a_load_while_the_disk_is_full_replays_what_was_not_yet_stored_and_nothing_twice() {
    let home = Home::new();
    let disk = Disk::mount(&home, "1m");
    let Prompted {
        mut server,
        workspace,
        database,
        mut client,
        session,
    } = prompted_once(home).await;
    let filler = disk.fill();
    let (admitted, refusal) = prompted_until_refused(&mut client, &session).await;
    assert_refused_for_the_store(&refusal, &database, "the disk is full");

    // The turns the disk refused are held in memory, waiting to be written:
    // a load now replays them with the rest, as their client saw them.
    let mut loader = server.initialized().await;
    let during = load(&mut loader, &session, &workspace).await;
    assert_eq!(
        text_of(&updates(&during, "user_message_chunk")),
        admitted.concat(),
        "every turn a client saw is replayed"
    );
    assert_eq!(agent_text(&during), client.agent_text(&session));

    std::fs::remove_file(filler).expect("room again");
    server
        .wait_for_log("the session store is writable again")
        .await;
    let mut later = server.initialized().await;
    let after = load(&mut later, &session, &workspace).await;
    assert_eq!(
        during, after,
        "a load replays the same before and after the held turns are stored"
    );

    // What was replayed is not sent again; what comes next is sent.
    let answer = client.prompt(&session, "after").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let last = admitted.last().map_or("", String::as_str);
    let answered = format!(
        "Turn {}. You said: \"after\". Before that you said: \"{last}\".",
        admitted.len() + 1
    );
    loader
        .receive_until(|seen| agent_text(seen).ends_with(&answered))
        .await;
    assert_eq!(agent_text(&loader.notifications), answered);
    assert_eq!(
        text_of(&updates(&loader.notifications, "user_message_chunk")),
        "after"
    );
    assert_no_panic(&server);
}

#[tokio::test]
async fn a_store_on_a_read_only_disk_is_served_for_reading_until_it_can_be_written() {
    read_only_until_writable(LeftBeside::LogAndSharedMemory).await;
}

#[tokio::test]
async fn a_store_without_its_log_on_a_read_only_disk_is_served_for_reading_until_it_can_be_written()
{
    read_only_until_writable(LeftBeside::Nothing).await;
}

/// A server started on a read-only disk serves what is stored, refuses
/// prompts, and once the disk can be written takes prompts again and stores
/// everything, as a restart shows.
async fn read_only_until_writable(left: LeftBeside) {
    let home = Home::new();
    let disk = Disk::mount(&home, "4m");
    let Prompted {
        mut server,
        workspace,
        database,
        session,
        ..
    } = prompted_once(home).await;
    server.signal(Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    for suffix in ["-wal", "-shm"] {
        let mut path = database.clone().into_os_string();
        path.push(suffix);
        let path = PathBuf::from(path);
        match left {
            LeftBeside::LogAndSharedMemory => {
                assert!(path.exists(), "a clean stop leaves {}", path.display());
            }
            LeftBeside::Nothing => {
                if let Ok(metadata) = std::fs::metadata(&path) {
                    if suffix == "-wal" {
                        assert_eq!(metadata.len(), 0, "a clean stop leaves an empty log");
                    }
                    std::fs::remove_file(path).expect("the file can be removed");
                }
            }
        }
    }
    disk.remount(true);

    let mut server = Server::start_in(server.home, &[]).await;
    server
        .wait_for_log("is read-only (its file system is mounted read-only): sessions can be listed and loaded, but prompts are refused")
        .await;
    let mut client = server.initialized().await;
    assert_listed_first(&mut client, &session).await;
    let replay = load(&mut client, &session, &workspace).await;
    assert_eq!(
        agent_text(&replay),
        "Turn 1. You said: \"before\". That is the first thing you said."
    );
    let refused = client.prompt(&session, "while read-only").await;
    assert_refused_for_the_store(&refused, &database, "it is read-only");
    let during = client.new_session(&workspace).await;
    let refused = client.prompt(&during, "first").await;
    assert_refused_for_the_store(&refused, &database, "it is read-only");
    assert_eq!(server.health().await["status"], "ok");

    disk.remount(false);
    server
        .wait_for_log("the session store is writable again")
        .await;
    // Every prompt from now on is taken, not only the first.
    for (turn, (said, before)) in [("after", "before"), ("later", "after")]
        .into_iter()
        .enumerate()
    {
        let answer = client.prompt(&session, said).await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        let expected = format!(
            "Turn {}. You said: \"{said}\". Before that you said: \"{before}\".",
            turn + 2
        );
        assert!(
            client.agent_text(&session).ends_with(&expected),
            "{}",
            client.agent_text(&session)
        );
    }
    let answer = client.prompt(&during, "first").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let mut other = server.initialized().await;
    let replay = load(&mut other, &session, &workspace).await;
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        "beforeafterlater",
        "what is written once the store can be is read back"
    );
    assert_no_panic(&server);

    // Stopped and started again, the server has every turn.
    server.signal(Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    let log = server.log();
    assert!(!log.contains("never stored"), "{log}");
    assert!(!log.contains("cannot write to the session store"), "{log}");
    let server = Server::start_in(server.home, &[]).await;
    let mut client = server.initialized().await;
    let replay = load(&mut client, &session, &workspace).await;
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        "beforeafterlater",
        "every turn is stored"
    );
    assert!(
        agent_text(&replay)
            .ends_with("Turn 3. You said: \"later\". Before that you said: \"after\"."),
        "{replay:?}"
    );
    let replay = load(&mut client, &during, &workspace).await;
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        "first",
        "the session made while the store could only be read is stored"
    );
    let listed = client.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_no_panic(&server);
}

#[tokio::test]
async fn a_store_past_the_file_size_limit_refuses_new_work_clearly_and_recovers_losing_nothing() {
    // A file size limit makes every write to a file fail (EFBIG), root's
    // too, and its signal, SIGXFSZ, kills a process by default: the server
    // must outlive it, and then behave as on a full disk.
    let Prompted {
        mut server,
        workspace,
        database,
        mut client,
        session,
    } = prompted_once(Home::new()).await;

    limit_file_size(&server, 0);

    // A turn already admitted runs to its end, and its client hears it all.
    let answer = client.prompt(&session, "while the disk is full").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(
        client.agent_text(&session).ends_with(
            "Turn 2. You said: \"while the disk is full\". Before that you said: \"before\"."
        ),
        "{}",
        client.agent_text(&session)
    );
    let shown = database.display().to_string();
    server
        .wait_for_log("cannot write to the session store")
        .await;
    server.wait_for_log("past the file size limit").await;
    assert!(server.log().contains(&shown), "{}", server.log());

    // New turns are refused with a reason and a way out, on any connection,
    // in any session…
    let mut other = server.initialized().await;
    let during = other.new_session(&workspace).await;
    for answer in [
        client.prompt(&session, "more").await,
        other.prompt(&during, "first").await,
    ] {
        assert_refused_for_the_store(&answer, &database, "cannot write");
    }
    // …while what is stored can still be read.
    assert_listed_first(&mut other, &session).await;

    // Room again: the store catches up, and nothing was lost.
    limit_file_size(&server, rlimit::INFINITY);
    server
        .wait_for_log("the session store is writable again")
        .await;
    let mut loader = server.initialized().await;
    let replay = load(&mut loader, &session, &workspace).await;
    assert_eq!(
        text_of(&updates(&replay, "user_message_chunk")),
        "beforewhile the disk is full",
        "the turn that ran while the store could not be written is stored"
    );
    assert!(
        agent_text(&replay).ends_with("Before that you said: \"before\"."),
        "{replay:?}"
    );
    let answer = client.prompt(&session, "after").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(client.agent_text(&session).ends_with(
        "Turn 3. You said: \"after\". Before that you said: \"while the disk is full\"."
    ));
    let answer = other.prompt(&during, "first").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let listed = other.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"].as_array().map(Vec::len),
        Some(2),
        "the session made while the store could not be written is stored: {listed}"
    );
    assert_no_panic(&server);
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_stops_the_server_at_once_with_one_clear_line() {
    let home = Home::new();
    // Something that is not a database where the database belongs.
    std::fs::create_dir_all(home.database()).expect("a directory in the database's place");
    let output = within(
        "punie serve to give up",
        home.command()
            .args(["serve", "--port", "0"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("punie serve runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let shown = home.database().display().to_string();
    assert!(last.starts_with("punie: the session store at "), "{stderr}");
    assert_eq!(
        last.matches(&shown).count(),
        1,
        "names the store once: {last}"
    );
    assert!(last.contains("cannot open"), "{last}");
}

/// How one short-lived client of the flood behaves before it disappears.
#[derive(Clone, Copy, Debug)]
enum Churn {
    /// Half a WebSocket handshake.
    MidHandshake,
    /// A WebSocket, and nothing said.
    Upgraded,
    /// Gone after `initialize`.
    Initialized,
    /// Gone right after sending a prompt.
    Prompted,
    /// Gone while its turn streams.
    Streaming,
}

const CHURN: [Churn; 5] = [
    Churn::MidHandshake,
    Churn::Upgraded,
    Churn::Initialized,
    Churn::Prompted,
    Churn::Streaming,
];

async fn churn_once(server: &Server, workspace: &Path, how: Churn, reset: bool) {
    if let Churn::MidHandshake = how {
        let mut tcp = tokio::net::TcpStream::connect(server.address)
            .await
            .expect("the server accepts");
        let partial = format!(
            "GET /acp HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
            server.address
        );
        tcp.write_all(partial.as_bytes())
            .await
            .expect("the request starts");
        if reset {
            tcp.set_zero_linger().expect("SO_LINGER can be set");
        }
        return;
    }
    let mut client = server.raw().await;
    match how {
        Churn::MidHandshake | Churn::Upgraded => {}
        Churn::Initialized => {
            client.initialize().await;
        }
        Churn::Prompted | Churn::Streaming => {
            client.initialize().await;
            let session = client.new_session(workspace).await;
            client.start_prompt(&session, "count to 10").await;
            if let Churn::Streaming = how {
                client.recv().await;
            }
        }
    }
    if reset {
        vanish(client);
    }
}

/// How long the thousand clients of the flood may take in all.
const FLOOD_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_coming_and_going_do_not_disturb_the_steady_ones() {
    const FLOOD: usize = 1000;
    const AT_ONCE: usize = 8;
    let server = std::sync::Arc::new(Server::start().await);
    let workspace = server.home.workspace();
    let flood_over = tokio_util::sync::CancellationToken::new();

    let mut steady = Vec::new();
    for _ in 0..3 {
        let mut client = server.initialized().await;
        let session = client.new_session(&workspace).await;
        steady.push((client, session));
    }
    let baseline = server.health().await;

    let steady_turns: Vec<_> = steady
        .into_iter()
        .map(|(mut client, session)| {
            let flood_over = flood_over.clone();
            tokio::spawn(async move {
                let mut turns = 0;
                while turns == 0 || !flood_over.is_cancelled() {
                    client.notifications.clear();
                    let answer = client.prompt(&session, "count to 20").await;
                    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
                    assert_eq!(client.agent_text(&session), counted(20));
                    turns += 1;
                }
                (client, turns)
            })
        })
        .collect();

    let flood: Vec<_> = (0..AT_ONCE)
        .map(|lane| {
            let server = server.clone();
            let workspace = workspace.clone();
            tokio::spawn(async move {
                for n in (lane..FLOOD).step_by(AT_ONCE) {
                    churn_once(&server, &workspace, CHURN[n % CHURN.len()], n % 2 == 0).await;
                }
            })
        })
        .collect();
    // A thousand clients of a debug build, on a machine that may be busy
    // with more than this test: the deadline is there to catch a hang.
    let flooded = tokio::time::timeout(FLOOD_DEADLINE, async {
        for lane in flood {
            lane.await.expect("no client of the flood failed");
        }
    })
    .await;
    assert!(
        flooded.is_ok(),
        "the flood of clients took over {FLOOD_DEADLINE:?}"
    );
    flood_over.cancel();

    let mut steady = Vec::new();
    for turns in steady_turns {
        let (client, turns) = within("the steady clients' turns", turns)
            .await
            .expect("every turn of the steady clients completed");
        assert!(turns >= 1);
        steady.push(client);
    }
    server
        .health_until("the flood's connections to be counted out", |health| {
            health["connections"] == baseline["connections"]
        })
        .await;
    server
        .health_until("the flood's turns to end", |health| {
            health["sessions"] == baseline["sessions"]
        })
        .await;
    drop(steady);
    let stored: i64 = rusqlite::Connection::open(server.home.database())
        .and_then(|db| db.query_row("SELECT count(*) FROM sessions", [], |row| row.get(0)))
        .expect("the store can be read");
    assert_eq!(
        usize::try_from(stored).ok(),
        Some(3 + 2 * FLOOD / CHURN.len()),
        "every session the flood made is stored"
    );
    assert_no_panic(&server);
}
