//! The server's life: it starts in the background with no terminal, says where
//! it is, keeps serving, and stops cleanly on a signal.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::http_profile::{HttpProfileClient, next_message};
use support::{Home, RawClient, Server, within};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn in_the_background_with_stdin_closed_it_keeps_serving_through_many_clients() {
    let home = Home::new();
    let mut command = home.command();
    command.args(["serve", "--port", "0"]);
    // A session of its own: no controlling terminal, like `punie serve &` after logout.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut server = Server::spawn(home, command).await;

    let until = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while Instant::now() < until || rounds < 5 {
        let mut client = server.initialized().await;
        let session = client.new_session(&server.home.workspace()).await;
        let answer = client.prompt(&session, "still there?").await;
        assert_eq!(answer["result"]["stopReason"], "end_turn");
        client.ws.close(None).await.expect("the client closes");
        assert_eq!(server.health().await["status"], "ok");
        rounds += 1;
    }
    assert!(
        server
            .child
            .try_wait()
            .expect("the server's state")
            .is_none(),
        "the server is still running after {rounds} clients came and went"
    );

    server.signal(Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    assert_eq!(
        server.stdout().await,
        "",
        "the server writes nothing to stdout"
    );
}

#[tokio::test]
async fn it_records_where_it_listens_and_forgets_it_on_a_clean_exit() {
    let mut server = Server::start().await;
    let record: Value = serde_json::from_slice(
        &std::fs::read(server.home.server_file()).expect("server.json exists once ready"),
    )
    .expect("server.json is JSON");
    assert_eq!(record["url"], format!("http://{}", server.address));
    assert_eq!(record["pid"], json!(server.child.id().unwrap()));
    assert_eq!(record["version"], env!("CARGO_PKG_VERSION"));
    let started_at = record["startedAt"].as_str().expect("startedAt");
    assert!(
        humantime::parse_rfc3339(started_at).is_ok(),
        "startedAt is RFC 3339: {started_at}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(server.home.state_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files are left: {leftovers:?}"
    );

    let health = server.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["pid"], json!(server.child.id().unwrap()));
    assert_eq!(health["connections"], 0);
    assert_eq!(health["sessions"], 0);
    assert!(health["uptimeSeconds"].as_f64().is_some());
    assert_eq!(health["store"], "ok");

    server.signal(Signal::SIGINT);
    assert!(server.exit_status().await.success());
    assert!(
        !server.home.server_file().exists(),
        "server.json is removed on a clean exit"
    );
}

#[tokio::test]
async fn a_second_server_recording_itself_where_a_live_one_is_recorded_is_refused() {
    let server = Server::start().await;
    let recorded = std::fs::read(server.home.server_file()).unwrap();
    // Its own store, but the same place clients look for their server.
    let output = within(
        "a second punie serve",
        server
            .home
            .command()
            .args(["serve", "--port", "0"])
            .env("XDG_DATA_HOME", server.home.dir.path().join("data2"))
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let pid = server.child.id().unwrap();
    assert!(
        stderr.contains(&format!(
            "another `punie serve` (pid {pid}, http://{})",
            server.address
        )) && stderr.contains("XDG_STATE_HOME"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(server.home.server_file()).unwrap(), recorded);

    // A record left by a crash is no reason to refuse, though its pid now
    // names a live process: nothing answers for it at its address.
    let home = Home::new();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    let stale = json!({"url": "http://127.0.0.1:9", "pid": pid, "version": "0",
                       "startedAt": "2026-01-01T00:00:00Z"});
    std::fs::write(home.server_file(), stale.to_string()).unwrap();
    let second = Server::start_in(home, &[]).await;
    assert_eq!(second.health().await["status"], "ok");
}

#[tokio::test]
async fn health_counts_connections_and_sessions() {
    let server = Server::start().await;
    let mut first = server.initialized().await;
    let mut second = server.initialized().await;
    first.new_session(&server.home.workspace()).await;
    first.new_session(&server.home.workspace()).await;
    second.new_session(&server.home.workspace()).await;
    let health = server.health().await;
    assert_eq!(health["connections"], 2);
    assert_eq!(health["sessions"], 3);

    first.ws.close(None).await.unwrap();
    // The server closes its side once it has finished with the connection.
    first.close_frame().await;
    let health = server.health().await;
    assert_eq!(health["connections"], 1);
    assert_eq!(
        health["sessions"], 1,
        "a closed connection's sessions go with it"
    );
}

/// `punie serve <args>` in `home`, which is to give up at start.
async fn serve_that_gives_up(home: &Home, args: &[&str]) -> std::process::Output {
    within(
        "punie serve to give up",
        home.command()
            .arg("serve")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("punie serve runs")
}

#[tokio::test]
async fn a_port_in_use_is_a_one_line_error_naming_the_port() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = occupied.local_addr().unwrap().port();
    let home = Home::new();
    let output = serve_that_gives_up(&home, &["--port", &port.to_string()]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error: {stderr}");
    assert!(
        lines[0].contains(&port.to_string()),
        "names the port: {stderr}"
    );
    assert!(
        lines[0].contains("punie status"),
        "suggests punie status: {stderr}"
    );
    assert!(output.stdout.is_empty());
    assert!(!home.server_file().exists());
}

#[tokio::test]
async fn a_record_that_cannot_be_written_is_one_line_naming_its_cause_once() {
    let home = Home::new();
    // A directory that is not empty cannot be renamed over.
    std::fs::create_dir_all(home.server_file().join("inside")).unwrap();
    let output = serve_that_gives_up(&home, &["--port", "0"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let error = stderr
        .lines()
        .find(|line| line.starts_with("punie: "))
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "punie: cannot write {}",
            home.server_file().display()
        )),
        "{stderr}"
    );
    let cause = std::io::Error::from_raw_os_error(21).to_string();
    assert_eq!(error.matches(&cause).count(), 1, "{stderr}");
}

#[tokio::test]
async fn a_second_server_on_the_same_store_is_refused_and_the_first_goes_on() {
    let first = Server::start().await;
    let record = std::fs::read_to_string(first.home.server_file()).unwrap();
    // A record of its own, so that only the store stands in its way.
    let output = within(
        "punie serve to give up",
        first
            .home
            .command()
            .args(["serve", "--port", "0"])
            .env("XDG_STATE_HOME", first.home.dir.path().join("state2"))
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let holder = format!("another `punie serve` (pid {}) is using it", first.pid());
    assert!(stderr.contains(&holder), "{stderr}");
    assert!(stderr.contains("punie stop"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(first.home.server_file()).unwrap(),
        record,
        "the first server's record stays"
    );
    let mut client = first.initialized().await;
    let session = client.new_session(&first.home.workspace()).await;
    let answer = client.prompt(&session, "still here?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");
}

#[tokio::test]
async fn an_unknown_model_is_refused_at_start() {
    let home = Home::new();
    let output = serve_that_gives_up(&home, &["--port", "0", "--model", "nonesuch"]).await;
    assert_eq!(output.status.code(), Some(2), "a bad flag value");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("unknown model `nonesuch`"), "{stderr}");
}

#[tokio::test]
async fn punie_model_picks_the_model_and_the_flag_overrides_it() {
    let home = Home::new();
    let model = home.script_model(serde_json::json!([[{"text": "From the script."}]]));
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("PUNIE_MODEL", &model);
    let server = Server::spawn(home, command).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    client.prompt(&session, "hi").await;
    assert_eq!(client.agent_text(&session), "From the script.");

    let home = Home::new();
    let mut command = home.command();
    command
        .args(["serve", "--port", "0", "--model", "test"])
        .env("PUNIE_MODEL", "nonesuch");
    let server = Server::spawn(home, command).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    client.prompt(&session, "hi").await;
    assert!(
        client.agent_text(&session).starts_with("Turn 1."),
        "{}",
        client.agent_text(&session)
    );
}

#[tokio::test]
async fn sigterm_with_a_hundred_clients_closes_each_with_1001_and_exits_0_within_a_second() {
    stop_with_clients_and_a_running_turn(Signal::SIGTERM, 100).await;
}

/// Ctrl-C in the terminal that runs `punie serve` stops it as `punie stop` does.
#[tokio::test]
async fn sigint_with_clients_and_a_running_turn_cancels_the_turn_closes_each_with_1001_and_exits_0()
{
    stop_with_clients_and_a_running_turn(Signal::SIGINT, 3).await;
}

/// `signal` a server holding `idle` clients, each with a session, and one
/// more client in the middle of a turn: the turn is answered `cancelled`,
/// every client gets close 1001, and the server removes `server.json` and
/// exits 0 within a second.
async fn stop_with_clients_and_a_running_turn(signal: Signal, idle: usize) {
    let mut server = Server::start().await;
    let workspace = server.home.workspace();
    let mut clients = Vec::new();
    for _ in 0..idle {
        let mut client = server.initialized().await;
        client.new_session(&workspace).await;
        clients.push(client);
    }
    // One of them is in the middle of a turn.
    let mut busy = server.initialized().await;
    let session = busy.new_session(&workspace).await;
    let prompt = busy.start_prompt(&session, "count to 1000").await;
    let first_chunk = busy.recv().await;
    assert_eq!(first_chunk["method"], "session/update", "{first_chunk}");

    let signalled = Instant::now();
    server.signal(signal);
    let answer = busy.response_to(prompt).await;
    assert_eq!(
        answer["result"]["stopReason"], "cancelled",
        "{signal}: the running turn ends cancelled: {answer}"
    );
    clients.push(busy);
    let closes = futures::future::join_all(clients.iter_mut().map(RawClient::close_frame)).await;
    for frame in closes {
        let frame = frame.expect("the close frame carries a code");
        assert_eq!(
            frame.code,
            CloseCode::Away,
            "{signal}: close code 1001: {frame:?}"
        );
    }
    let status = server.exit_status().await;
    let took = signalled.elapsed();
    assert!(status.success(), "{signal}: exit 0, got {status:?}");
    assert!(
        took < Duration::from_secs(1),
        "{signal}: stopped within a second, took {took:?}"
    );
    assert!(
        !server.home.server_file().exists(),
        "{signal}: server.json is removed"
    );
}

#[tokio::test]
async fn sighup_does_not_stop_the_server() {
    let mut server = Server::start().await;
    server.signal(Signal::SIGHUP);
    server.wait_for_log("SIGHUP").await;
    assert_eq!(server.health().await["status"], "ok");
    server.signal(Signal::SIGTERM);
    assert!(server.exit_status().await.success());
}

/// A WebSocket upgrade to `url` with the token: `Ok` when the server took it,
/// else how it was refused. A refusal by HTTP must be 503.
async fn upgrade(url: &str, token: &str) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    match within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503, "refused as unavailable");
            Err(format!("HTTP {}", response.status()))
        }
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test]
async fn new_connections_are_refused_while_shutting_down_and_after() {
    use futures::StreamExt as _;
    let mut server = Server::start().await;
    // A client that does not answer the server's close frame keeps the
    // server draining: it waits for the answer (for a bounded time).
    let mut lingering = server.initialized().await;
    server.signal(Signal::SIGTERM);
    let frame = loop {
        match within("the close frame", lingering.ws.next())
            .await
            .expect("the connection is open")
            .expect("the frame is readable")
        {
            Message::Close(frame) => break frame.expect("the close frame carries a code"),
            _ => continue,
        }
    };
    // 1001 goes out only once the server has begun shutting down.
    assert_eq!(frame.code, CloseCode::Away, "{frame:?}");

    let acp = upgrade(&server.ws_url(), &server.token).await;
    let ws = upgrade(&server.ws_url().replace("/acp", "/ws"), &server.token).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}}))
        .send()
        .await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server was still draining while the new connections were tried"
    );
    assert!(acp.is_err(), "no WebSocket at /acp while shutting down");
    assert!(ws.is_err(), "no WebSocket at /ws while shutting down");
    if let Ok(response) = http {
        assert_eq!(
            response.status(),
            503,
            "no HTTP/SSE connection while shutting down"
        );
    }

    // The client answers the close; the server finishes and exits.
    while let Some(Ok(_)) = within("the end of the stream", lingering.ws.next()).await {}
    assert!(server.exit_status().await.success());
    assert!(
        upgrade(&server.ws_url(), &server.token).await.is_err(),
        "nothing listens after exit"
    );
}

#[tokio::test]
async fn sigterm_ends_a_turn_running_over_the_http_profile_and_still_exits_promptly() {
    let mut server = Server::start().await;
    let client = HttpProfileClient::initialize(&server).await;
    let session = client.new_session(&server.home.workspace()).await;
    let mut session_events = client.events(Some(&session)).await;
    client
        .post(
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 2, "method": "session/prompt", "params": {"sessionId": session, "prompt": [{"type": "text", "text": "count to 1000"}]}}),
        )
        .await;
    // The session's commands may come first; the turn has begun at its text.
    loop {
        let update = next_message(&mut session_events)
            .await
            .expect("the first update");
        assert_eq!(update["method"], "session/update", "{update}");
        if update["params"]["update"]["sessionUpdate"] == "agent_message_chunk" {
            break;
        }
    }

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let answer = loop {
        let message = next_message(&mut session_events)
            .await
            .expect("the prompt is answered before the stream ends");
        if message["id"] == 2 {
            break message;
        }
    };
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    assert!(
        next_message(&mut session_events).await.is_none(),
        "then the stream ends"
    );
    let status = server.exit_status().await;
    assert!(status.success(), "exit 0, got {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "took {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn the_http_profile_answers_broken_messages_as_a_websocket_does() {
    let server = Server::start().await;
    let client = HttpProfileClient::initialize(&server).await;
    let mut events = client.events(None).await;

    // An invalid request whose id the client can match is answered with it.
    let invalid = client
        .post_text(r#"{"jsonrpc": "1.0", "id": 9, "method": "session/list"}"#)
        .await;
    assert_eq!(invalid.status(), 202);
    let answer = next_message(&mut events).await.expect("an answer to 9");
    assert_eq!(answer["id"], 9, "{answer}");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`jsonrpc` must be \"2.0\""), "{answer}");

    // A body that is not JSON is refused at once, saying where it breaks.
    let garbage = client.post_text("{\"jsonrpc\": \"2.0\", oops}").await;
    assert_eq!(garbage.status(), 400);
    let refusal: Value = garbage.json().await.expect("a JSON-RPC error");
    assert_eq!(refusal["error"]["code"], -32700, "{refusal}");
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not valid JSON") && message.contains("column"),
        "{refusal}"
    );

    // The connection goes on.
    client
        .post(
            None,
            json!({"jsonrpc": "2.0", "id": 10, "method": "session/list", "params": {}}),
        )
        .await;
    let listed = next_message(&mut events).await.expect("an answer to 10");
    assert_eq!(listed["id"], 10, "{listed}");
    assert!(listed["result"]["sessions"].is_array(), "{listed}");

    // Once it has ended, its id is refused saying what to do.
    client.delete().await;
    let ended = client
        .post_text(r#"{"jsonrpc": "2.0", "id": 11, "method": "session/list"}"#)
        .await;
    assert_eq!(ended.status(), 404);
    let why = ended.text().await.unwrap_or_default();
    assert!(why.contains("POST `initialize`"), "{why}");
}

#[tokio::test]
async fn a_connection_the_http_profile_client_ends_lets_its_sessions_go() {
    let server = Server::start().await;
    let client = HttpProfileClient::initialize(&server).await;
    client.new_session(&server.home.workspace()).await;
    let held = server.health().await;
    assert_eq!(held["sessions"], 1, "{held}");

    client.delete().await;
    server
        .health_until("the session to be let go", |health| {
            health["sessions"] == 0 && health["connections"] == 0
        })
        .await;
}

#[tokio::test]
async fn a_database_deleted_under_the_server_is_reported_by_health() {
    // `rm punie.db` to start over, with the server still running: it goes on
    // writing to the file it opened, which nothing names any more.
    let server = Server::start().await;
    std::fs::remove_file(server.home.database()).unwrap();
    let health = server.health().await;
    assert_eq!(health["status"], "ok", "the server still serves: {health}");
    let store = health["store"].as_str().unwrap_or_default();
    assert!(
        store.starts_with("the database file was deleted or replaced while the server ran")
            && store
                .ends_with("Stop the server to start over with a new store, or put the file back"),
        "{health}"
    );
}
