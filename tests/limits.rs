//! The server's limits: the largest message, the most connections, a client
//! that stops reading or goes silent, and a client slow to answer the agent.
//! Each costs only the client that breaks it.

mod support;

use futures::StreamExt as _;
use serde_json::{Value, json};
use support::http_profile::{HttpProfileClient, next_message};
use support::{Home, RawClient, Server, handshake_status, within};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn server_with(args: &[&str]) -> Server {
    Server::start_in(Home::new(), args).await
}

/// The close frame the server sends, skipping whatever comes before it.
async fn close_frame_of(client: &mut RawClient) -> (CloseCode, String) {
    within("the close frame", async {
        loop {
            match client.ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code, frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("the connection failed before its close frame: {error}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    })
    .await
}

async fn still_serves(server: &Server) {
    let mut other = server.initialized().await;
    let session = other.new_session(&server.home.workspace()).await;
    let answer = other.prompt(&session, "still there?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_that_connection_with_1009() {
    let server = server_with(&["--max-message-bytes", "4096"]).await;
    let mut bystander = server.initialized().await;
    let mut offender = server.initialized().await;
    let big = json!({"jsonrpc": "2.0", "id": 9, "method": "session/list", "params": {"pad": "x".repeat(8192)}});
    offender.send(big).await;
    let (code, reason) = close_frame_of(&mut offender).await;
    assert_eq!(code, CloseCode::Size);
    assert!(
        reason.contains("4096"),
        "the reason names the limit: {reason}"
    );
    // A message under the limit is fine, and nobody else noticed.
    let listed = bystander.request("session/list", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");
    still_serves(&server).await;
}

#[tokio::test]
async fn past_the_most_connections_new_upgrades_get_503() {
    let server = server_with(&["--max-connections", "2"]).await;
    let first = server.initialized().await;
    let _second = server.initialized().await;
    let auth = format!("Bearer {}", server.token);
    let status = handshake_status(&server.ws_url(), &[("Authorization", &auth)]).await;
    assert_eq!(status, 503);
    drop(first);
    // The slot comes back once the first connection has ended.
    within("a free slot", async {
        loop {
            let status = handshake_status(&server.ws_url(), &[("Authorization", &auth)]).await;
            if status == 101 {
                return;
            }
            assert_eq!(status, 503);
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_connection_that_never_finishes_a_request_is_closed_and_an_open_websocket_is_not() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = server_with(&["--header-timeout", "0.3"]).await;
    let mut websocket = server.initialized().await;
    let host = format!("Host: {}\r\n", server.address);

    let mut half_sent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let head = format!("GET /health HTTP/1.1\r\n{host}");
    half_sent.write_all(head.as_bytes()).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let request = format!("GET /health HTTP/1.1\r\n{host}\r\n");
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();

    let mut unanswered = Vec::new();
    within("the half-sent request's connection to close", async {
        half_sent.read_to_end(&mut unanswered).await
    })
    .await
    .unwrap();
    assert!(
        !String::from_utf8_lossy(&unanswered).contains("\"status\""),
        "a request never finished gets no answer"
    );
    // Answered, then kept alive: it may sit idle no longer than a request's
    // headers may take.
    let mut answered = Vec::new();
    within("the idle connection to close", async {
        idle.read_to_end(&mut answered).await
    })
    .await
    .unwrap();
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let mut nothing = Vec::new();
    within("the connection that sent nothing to close", async {
        silent.read_to_end(&mut nothing).await
    })
    .await
    .unwrap();

    let listed = websocket.request("session/list", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");
}

#[tokio::test]
async fn a_body_trickled_to_the_http_profile_is_cut_off_and_its_slot_comes_back() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = server_with(&["--header-timeout", "0.3", "--max-connections", "1"]).await;
    let mut trickling = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let head = format!(
        "POST /acp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\"",
        server.address, server.token
    );
    trickling.write_all(head.as_bytes()).await.unwrap();

    // The rest never comes: the request is answered with an error, or its
    // connection closed, once the header timeout has passed.
    let mut answer = Vec::new();
    within("the trickled request to be cut off", async {
        trickling.read_to_end(&mut answer).await
    })
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 2"), "not served: {answer}");
    // Its slot is free again.
    let mut websocket = server.initialized().await;
    let listed = websocket.request("session/list", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");
}

/// A client that has asked for forty replays of a session whose every
/// replay is megabytes long (it holds a long answer).
async fn forty_long_replays_asked(server: &Server) -> RawClient {
    let workspace = server.home.workspace();
    let mut author = server.initialized().await;
    let session = author.new_session(&workspace).await;
    let answer = author.prompt(&session, &"word ".repeat(200_000)).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");
    let mut asker = server.initialized().await;
    for id in 0..40 {
        asker
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "session/load",
                         "params": {"sessionId": session, "cwd": workspace, "mcpServers": []}}))
            .await;
    }
    asker
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_slows_nobody() {
    let mut server = server_with(&["--outgoing-queue", "4", "--outgoing-stall", "0.2"]).await;
    let mut sluggard = forty_long_replays_asked(&server).await;
    // While the sluggard reads nothing, everyone else is served as usual.
    still_serves(&server).await;
    server.wait_for_log("the client stopped reading").await;
    let (code, reason) = close_frame_of(&mut sluggard).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("stopped reading"), "{reason}");
    still_serves(&server).await;
}

/// The server's resident memory, from `/proc/<pid>/status`.
fn resident_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the server's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("a VmRSS line: {status}"));
    kib * 1024
}

#[tokio::test]
async fn a_client_that_stops_reading_a_session_it_shares_is_dropped_once_too_far_behind_and_costs_no_more()
 {
    // Each turn streams many small chunks: the conversation the session
    // keeps grows by little more than their text, while every frame made
    // for a client is a couple of hundred bytes on the wire, and more as a
    // message in memory. Many turns, each small: the reader falls behind
    // within a turn, and what waits for it then (one turn at most) must not
    // look like what the stalled client misses over all the turns.
    const TURNS: usize = 24;
    const CHUNKS: usize = 5_000;
    let chunk = |turn: usize, index: usize| format!("{turn}.{index} ");
    let script: Vec<Vec<Value>> = (0..TURNS)
        .map(|turn| {
            (0..CHUNKS)
                .map(|index| json!({"text": chunk(turn, index)}))
                .collect()
        })
        .collect();
    // Neither the stall nor the silence ends the stalled client within the
    // test: only the bytes waiting for it do.
    let mut server = Server::scripted(
        json!(script),
        &[
            "--outgoing-queue",
            "4",
            "--outgoing-stall",
            "3600",
            "--pong-timeout",
            "3600",
            "--outgoing-bytes",
            "2000000",
        ],
    )
    .await;
    let workspace = server.home.workspace();
    let mut reader = server.initialized().await;
    let session = reader.new_session(&workspace).await;
    let mut stalled = server.initialized().await;
    stalled.attach("session/resume", &session, &workspace).await;
    // From here on `stalled` reads nothing.

    let mut sent_to_stalled = 0;
    let mut sent_after_first = 0;
    let mut resident_after_first = 0;
    for turn in 0..TURNS {
        reader.notifications.clear();
        let answer = reader.prompt(&session, "go on").await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        let expected: String = (0..CHUNKS).map(|index| chunk(turn, index)).collect();
        // Not assert_eq!: a mismatch would print megabytes.
        assert!(
            reader.agent_text(&session) == expected,
            "turn {turn} reached the reading client whole"
        );
        // Every update the reader got was made for the stalled client too.
        let sent: u64 = reader
            .notifications
            .iter()
            .map(|update| update.to_string().len() as u64)
            .sum();
        sent_to_stalled += sent;
        if turn == 0 {
            resident_after_first = resident_bytes(&server);
        } else {
            sent_after_first += sent;
        }
    }
    let resident_after_last = resident_bytes(&server);

    // Its socket is full, so it may never read the close frame: the
    // server's own word, and its count of connections, say it was dropped.
    server
        .wait_for_log("the client stopped reading: over 2000000 bytes waited for it")
        .await;
    server
        .health_until("the stalled client to be gone", |health| {
            health["connections"] == 1
        })
        .await;
    drop(stalled);
    // Holding what it missed, even as the bytes sent, would take all of
    // `sent_after_first`; serving the reader alone grows the server by a
    // few megabytes at most.
    let growth = resident_after_last.saturating_sub(resident_after_first);
    assert!(
        growth < sent_after_first / 2,
        "the server grew by {growth} bytes (from {resident_after_first} to \
         {resident_after_last}) while {sent_after_first} bytes made for the stalled client \
         after the first turn went unread ({sent_to_stalled} in all)"
    );
}

#[tokio::test]
async fn a_client_that_reads_only_now_and_then_is_disconnected() {
    // It takes a message every 50 ms, well within the stall of 0.5 s, but
    // the queue never empties: what the server makes for it piles up.
    let mut server = server_with(&["--outgoing-queue", "4", "--outgoing-stall", "0.5"]).await;
    let mut laggard = forty_long_replays_asked(&server).await;
    let reading_slowly = async {
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            pace.tick().await;
            match laggard.ws.next().await {
                Some(Ok(Message::Close(_))) | None => {
                    panic!("the connection ended before the server said why")
                }
                Some(_) => {}
            }
        }
    };
    tokio::select! {
        () = server.wait_for_log("the client stopped reading") => {}
        () = reading_slowly => {}
    }
    let (code, reason) = close_frame_of(&mut laggard).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("stopped reading"), "{reason}");
    still_serves(&server).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_its_session_stays() {
    let mut server = server_with(&["--ping-interval", "0.05", "--pong-timeout", "0.3"]).await;
    let workspace = server.home.workspace();
    let mut silent = server.initialized().await;
    let session = silent.new_session(&workspace).await;
    // Not reading means not answering pings either.
    server.wait_for_log("no pong or message for").await;
    server
        .health_until("the connection to be gone", |health| {
            health["connections"] == 0
        })
        .await;
    // The session stays.
    let mut back = server.initialized().await;
    back.attach("session/load", &session, &workspace).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_even_while_a_write_to_it_is_stuck() {
    // A long history, written under the default pong timeout: sending its
    // megabytes of prompt can take longer than the short one below, and a
    // client is heard only once a whole message has arrived.
    let writing = server_with(&[]).await;
    let workspace = writing.home.workspace();
    let mut author = writing.initialized().await;
    let session = author.new_session(&workspace).await;
    let long = "word ".repeat(400_000);
    let answer = author.prompt(&session, &long).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");
    drop(author);

    // The queue is never full here (one large answer, then nothing), so only
    // the silence can end this connection.
    let mut server = Server::start_in(
        writing.stop().await,
        &[
            "--ping-interval",
            "0.05",
            "--pong-timeout",
            "0.3",
            "--outgoing-stall",
            "3600",
        ],
    )
    .await;

    // Megabytes more than the socket buffers hold, then neither reading nor
    // sending: the server's write to it can never finish.
    let mut stuck = server.initialized().await;
    for id in 0..16 {
        stuck
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "session/load",
                         "params": {"sessionId": session, "cwd": workspace, "mcpServers": []}}))
            .await;
    }
    server.wait_for_log("no pong or message for").await;
    server
        .health_until("the stuck connection to be gone", |health| {
            health["connections"] == 0
        })
        .await;
    still_serves(&server).await;
}

#[tokio::test]
async fn a_client_that_keeps_answering_pings_stays() {
    let server = server_with(&["--ping-interval", "0.05", "--pong-timeout", "0.3"]).await;
    let mut client = server.initialized().await;
    // Reading answers the pings; a second of that is several pong timeouts.
    let reading = async {
        let mut pings = 0;
        while let Some(message) = client.ws.next().await {
            match message {
                Ok(Message::Ping(_)) => pings += 1,
                other => panic!("only pings were expected, got {other:?}"),
            }
        }
        pings
    };
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(1), reading).await;
    assert!(outcome.is_err(), "the connection stayed open");
    let listed = client.request("session/list", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");
}

/// A script whose first response reads a file, then says what happened.
const READ_SCRIPT: &str = r#"[
  [{"tool_call": {"id": "r1", "name": "read_file", "arguments": {"path": "a.txt"}}}],
  [{"text": "done"}]
]"#;

/// A client offering `capabilities` never answers `method`, which the
/// model's tool call in `script` needs: the call fails at the request
/// timeout, saying why, and the turn goes on.
async fn a_request_the_client_never_answers(script: &str, capabilities: Value, method: &str) {
    let server = Server::scripted(script, &["--client-request-timeout", "0.2"]).await;
    let mut client = server.raw().await;
    let init = client
        .request(
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities": capabilities}),
        )
        .await;
    assert!(init.get("result").is_some());
    let session = client.new_session(&server.home.workspace()).await;
    let prompted = client.start_prompt(&session, "go").await;
    let answer = loop {
        let message = client.recv().await;
        if message["method"] == "session/request_permission" {
            client.allow(&message).await;
        } else if message["id"] == json!(prompted) && message.get("method").is_none() {
            break message;
        } else {
            client.notifications.push(message);
        }
    };
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let asked = client.notifications.iter().any(|m| m["method"] == method);
    assert!(asked, "the server asked the client: {method}");
    let failed: Vec<&Value> = client
        .notifications
        .iter()
        .filter(|m| m["params"]["update"]["sessionUpdate"] == "tool_call_update")
        .filter(|m| m["params"]["update"]["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", client.notifications);
    let said = failed[0].to_string();
    assert!(
        said.contains(&format!("did not answer {method}")),
        "the failure says why: {said}"
    );
}

#[tokio::test]
async fn a_client_slow_to_answer_a_file_request_times_out_for_the_model() {
    let capabilities = json!({"fs": {"readTextFile": true}});
    a_request_the_client_never_answers(READ_SCRIPT, capabilities, "fs/read_text_file").await;
}

#[tokio::test]
async fn a_client_slow_to_create_a_terminal_times_out_for_the_model() {
    let script = r#"[
      [{"tool_call": {"id": "c1", "name": "run_command", "arguments": {"command": "true"}}}],
      [{"text": "done"}]
    ]"#;
    a_request_the_client_never_answers(script, json!({"terminal": true}), "terminal/create").await;
}

/// A script whose first response writes a file, which asks permission first.
const WRITE_SCRIPT: &str = r#"[
  [{"tool_call": {"id": "w1", "name": "write_file", "arguments": {"path": "a.txt", "content": "x"}}}],
  [{"text": "done"}]
]"#;

#[tokio::test]
async fn a_permission_request_waits_for_the_person_past_the_timeout_and_can_be_cancelled() {
    let server = Server::scripted(WRITE_SCRIPT, &["--client-request-timeout", "0.1"]).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let id = client.start_prompt(&session, "write").await;
    let asked = within("the permission request", client.permission_request()).await;
    assert!(!asked["id"].is_null(), "{asked}");
    // Several request timeouts pass: the person is still being asked.
    let waited = tokio::time::timeout(std::time::Duration::from_millis(600), client.recv()).await;
    assert!(waited.is_err(), "nothing happens meanwhile: {waited:?}");
    client
        .notify("session/cancel", json!({"sessionId": session}))
        .await;
    let answer = client.response_to(id).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    assert!(!server.home.workspace().join("a.txt").exists());
}

fn connection_id_of(response: &reqwest::Response) -> String {
    response.headers()["acp-connection-id"]
        .to_str()
        .expect("a connection id")
        .to_owned()
}

#[tokio::test]
async fn both_doors_share_the_most_connections_and_a_held_connection_keeps_working() {
    let server = server_with(&["--max-connections", "1"]).await;
    let auth = format!("Bearer {}", server.token);
    let opened = server.http_profile_initialize().await;
    assert_eq!(opened.status(), 200);
    let id = connection_id_of(&opened);

    // The one slot is taken: neither door opens another connection.
    assert_eq!(
        handshake_status(&server.ws_url(), &[("Authorization", &auth)]).await,
        503
    );
    assert_eq!(server.http_profile_initialize().await.status(), 503);

    // Nor does an `initialize` that names the held connection: the
    // transport would open a new one for it all the same.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let reopened = http
        .post(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .header("Accept", "application/json, text/event-stream")
        .header("Acp-Connection-Id", &id)
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(reopened.status(), 503);
    server
        .health_until("one connection", |health| health["connections"] == 1)
        .await;

    // The connection that holds it is still served.
    let listed = http
        .post(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .header("Accept", "application/json, text/event-stream")
        .header("Acp-Connection-Id", &id)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "session/list", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 202);

    // Ended by the client, it gives its slot back.
    let ended = http
        .delete(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .header("Acp-Connection-Id", &id)
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    assert_eq!(
        handshake_status(&server.ws_url(), &[("Authorization", &auth)]).await,
        101
    );
}

#[tokio::test]
async fn a_silent_http_profile_connection_is_ended_and_gives_its_slot_back() {
    let mut server = server_with(&[
        "--max-connections",
        "1",
        "--ping-interval",
        "0.05",
        "--pong-timeout",
        "0.3",
    ])
    .await;
    let opened = server.http_profile_initialize().await;
    assert_eq!(opened.status(), 200);
    server
        .wait_for_log("it sent nothing for 300ms and holds no event stream")
        .await;
    server
        .health_until("the connection to be gone", |health| {
            health["connections"] == 0
        })
        .await;
    assert_eq!(server.http_profile_initialize().await.status(), 200);
}

/// The event stream of HTTP-profile connection `id`, opened and never read.
async fn unread_event_stream(server: &Server, id: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let get = format!(
        "GET /acp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAcp-Connection-Id: {id}\r\nAccept: text/event-stream\r\n\r\n",
        server.address, server.token
    );
    stream.write_all(get.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn an_http_profile_client_that_stops_reading_its_event_stream_is_dropped() {
    let mut server = server_with(&["--ping-interval", "0.05", "--outgoing-stall", "0.3"]).await;
    // Sessions to list: each answer is then kilobytes long.
    let mut bystander = server.initialized().await;
    for _ in 0..100 {
        bystander.new_session(&server.home.workspace()).await;
    }
    let opened = server.http_profile_initialize().await;
    let id = opened.headers()["acp-connection-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _unread = unread_event_stream(&server, &id).await;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let list = |request_id: u64| {
        http.post(server.http_url("/acp"))
            .bearer_auth(&server.token)
            .header("Acp-Connection-Id", &id)
            .json(&json!({"jsonrpc": "2.0", "id": request_id, "method": "session/list", "params": {}}))
            .send()
    };
    // Answers pile up behind the unread stream until the connection is gone.
    within("the connection to be ended", async {
        for request_id in 1.. {
            let status = list(request_id).await.unwrap().status();
            if status == 404 {
                return;
            }
            assert_eq!(status, 202);
        }
    })
    .await;
    server
        .wait_for_log("it stopped reading an event stream for 300ms")
        .await;
    let listed = bystander.request("session/list", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");
}

/// Each event stream counts apart: a client that reads a session's stream
/// but has stopped reading its connection's is dropped all the same.
#[tokio::test]
async fn an_http_profile_client_reading_one_event_stream_but_not_another_is_dropped() {
    let mut server = server_with(&["--ping-interval", "0.05", "--outgoing-stall", "0.3"]).await;
    let mut bystander = server.initialized().await;
    let workspace = server.home.workspace();
    for _ in 0..100 {
        bystander.new_session(&workspace).await;
    }
    let session = bystander.new_session(&workspace).await;
    let opened = server.http_profile_initialize().await;
    let id = opened.headers()["acp-connection-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _unread = unread_event_stream(&server, &id).await;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |body: Value| {
        http.post(server.http_url("/acp"))
            .bearer_auth(&server.token)
            .header("Acp-Connection-Id", &id)
            .json(&body)
            .send()
    };
    // The session's stream, read to its end.
    let session_stream = http
        .get(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .header("Acp-Connection-Id", &id)
        .header("Acp-Session-Id", &session)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(session_stream.status(), 200);
    let reader = tokio::spawn(async move {
        let mut chunks = session_stream.bytes_stream();
        while let Some(Ok(_)) = chunks.next().await {}
    });
    let resumed = post(json!({"jsonrpc": "2.0", "id": 1, "method": "session/resume",
                              "params": {"sessionId": session, "cwd": workspace, "mcpServers": []}}))
    .await
    .unwrap();
    assert_eq!(resumed.status(), 202);

    // Prompts keep the session's stream busy while answers pile up behind
    // the connection's.
    within("the connection to be ended", async {
        for request_id in (2..).step_by(2) {
            let listed = post(json!({"jsonrpc": "2.0", "id": request_id,
                                     "method": "session/list", "params": {}}));
            if listed.await.unwrap().status() == 404 {
                return;
            }
            let prompt = json!({"jsonrpc": "2.0", "id": request_id + 1, "method": "session/prompt",
                                "params": {"sessionId": session,
                                           "prompt": [{"type": "text", "text": "hi"}]}});
            let status = post(prompt).await.unwrap().status();
            if status == 404 {
                return;
            }
            assert_eq!(status, 202);
        }
    })
    .await;
    server
        .wait_for_log("it stopped reading an event stream for 300ms")
        .await;
    reader.abort();
}

/// The HTTP profile's transport parses a POST itself: one of more JSON
/// values than a message may hold is refused before it gets there, as on a
/// WebSocket (answered with its id when it has one), and the connection
/// goes on.
#[tokio::test]
async fn an_http_profile_message_of_too_many_values_is_refused_before_it_is_parsed() {
    let server = server_with(&[]).await;
    let client = HttpProfileClient::initialize(&server).await;
    let mut events = client.events(None).await;
    let too_many = |id: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "session/list",
               "params": {"padding": vec![0; 100_001]}})
        .to_string()
    };

    let refused = client.post_text(&too_many(json!(1))).await;
    assert_eq!(refused.status(), 202, "answered on the stream, with its id");
    let answer = next_message(&mut events).await.expect("an answer to 1");
    assert_eq!(answer["id"], 1, "{answer}");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("more than 100000 JSON values"),
        "{message}"
    );

    let anonymous = client.post_text(&too_many(Value::Null)).await;
    assert_eq!(
        anonymous.status(),
        400,
        "nothing on the stream could be matched"
    );
    let refusal: Value = anonymous.json().await.unwrap();
    assert_eq!(refusal["error"]["code"], -32600, "{refusal}");

    client
        .post(
            None,
            json!({"jsonrpc": "2.0", "id": 2, "method": "session/list",
                   "params": {"padding": "0,".repeat(100_001)}}),
        )
        .await;
    let listed = next_message(&mut events).await.expect("an answer to 2");
    assert_eq!(listed["id"], 2, "a long text is one value: {listed}");
    assert!(listed["result"]["sessions"].is_array(), "{listed}");
}

#[tokio::test]
async fn an_http_profile_message_over_the_limit_is_refused_with_413() {
    let server = server_with(&["--max-message-bytes", "4096"]).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let big = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                     "params": {"protocolVersion": 1, "pad": "x".repeat(8192)}});
    let declared = http
        .post(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    let why = declared.text().await.unwrap();
    assert!(
        why.contains("4096") && why.contains("--max-message-bytes"),
        "{why}"
    );
    // Sent in chunks, it says nothing of its size until it is read.
    let chunks = futures::stream::iter(
        big.to_string()
            .into_bytes()
            .chunks(1024)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = http
        .post(server.http_url("/acp"))
        .bearer_auth(&server.token)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);
    assert_eq!(server.http_profile_initialize().await.status(), 200);
}

/// `punie <args> --help` documents each flag of `defaults` with its default.
async fn assert_documented_defaults(args: &[&str], defaults: &[(&str, &str)]) {
    let help = Home::new()
        .command()
        .args(args)
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for (flag, default) in defaults {
        let start = help
            .find(&format!("  {flag} "))
            .unwrap_or_else(|| panic!("{flag} in the help"));
        let section = &help[start..];
        let end = section[2..]
            .find("\n  --")
            .map_or(section.len(), |end| end + 2);
        assert!(
            section[..end].contains(&format!("[default: {default}]")),
            "{flag} defaults to {default}: {}",
            &section[..end]
        );
    }
}

#[tokio::test]
async fn each_limit_has_its_documented_default() {
    assert_documented_defaults(
        &["serve"],
        &[
            ("--max-message-bytes", "67108864"),
            ("--max-connections", "4096"),
            ("--outgoing-queue", "4096"),
            ("--outgoing-stall", "10"),
            ("--outgoing-bytes", "268435456"),
            ("--client-request-timeout", "60"),
            ("--ping-interval", "20"),
            ("--pong-timeout", "60"),
            ("--header-timeout", "10"),
            ("--reattach-timeout", "120"),
        ],
    )
    .await;
    assert_documented_defaults(&[], &[("--drain-timeout", "10")]).await;
}

#[tokio::test]
async fn the_settings_file_sets_a_limit_and_a_flag_overrides_it() {
    let settings = "[serve]\nmax-connections = 1\n";
    let server = Server::start_in(Home::with_settings(settings), &[]).await;
    let auth = format!("Bearer {}", server.token);
    let _first = server.initialized().await;
    assert_eq!(
        handshake_status(&server.ws_url(), &[("Authorization", &auth)]).await,
        503
    );

    let server = Server::start_in(Home::with_settings(settings), &["--max-connections", "2"]).await;
    let auth = format!("Bearer {}", server.token);
    let _first = server.initialized().await;
    assert_eq!(
        handshake_status(&server.ws_url(), &[("Authorization", &auth)]).await,
        101
    );
}

/// A client that sends nothing and reads nothing (so answers no ping) in
/// `server` is dropped for silence once `pong_timeout` has passed, as the
/// server's log says. Its close frame is not read: reading would answer the
/// pings, and the server, expecting no answer from a silent client, may
/// already have reset the socket.
async fn a_silent_client_is_dropped_after(server: &mut Server, pong_timeout: &str) {
    let _silent = server.initialized().await;
    server
        .wait_for_log(&format!(
            "dropping a client: no pong or message for {pong_timeout}"
        ))
        .await;
    server
        .health_until("the connection to be gone", |health| {
            health["connections"] == 0
        })
        .await;
}

#[tokio::test]
async fn the_settings_file_sets_the_pong_timeout_and_a_flag_overrides_it() {
    // Left at 60 s, the timeout would outlast the test's deadline.
    let settings = "[serve]\nping-interval = 0.05\npong-timeout = 0.3\n";
    let mut server = Server::start_in(Home::with_settings(settings), &[]).await;
    a_silent_client_is_dropped_after(&mut server, "300ms").await;

    let mut server =
        Server::start_in(Home::with_settings(settings), &["--pong-timeout", "0.4"]).await;
    a_silent_client_is_dropped_after(&mut server, "400ms").await;
}

#[tokio::test]
async fn a_wrong_settings_file_is_a_usage_error_that_names_the_file_and_the_setting() {
    for (settings, expected) in [
        (
            "[serve]\nmax-conections = 1\n",
            "`max-conections` is not a flag",
        ),
        (
            "[serve]\nmax-connections = \"many\"\n",
            "invalid value 'many' for '--max-connections",
        ),
        ("[serve\n", "TOML parse error"),
        ("[server]\nport = 1\n", "there is no [server] table"),
    ] {
        let home = Home::with_settings(settings);
        let output = home
            .command()
            .args(["serve", "--port", "0"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{settings}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("config/punie/config.toml"), "{stderr}");
        assert!(stderr.contains(expected), "{settings}: {stderr}");
    }
}

#[tokio::test]
async fn a_zero_that_would_stop_everything_is_a_usage_error() {
    for (flag, expected) in [
        (
            "--max-tool-rounds",
            "invalid value '0' for '--max-tool-rounds <MAX_TOOL_ROUNDS>': a turn needs at least 1 round",
        ),
        (
            "--pong-timeout",
            "--pong-timeout must be more than 0 seconds",
        ),
        (
            "--outgoing-stall",
            "--outgoing-stall must be more than 0 seconds",
        ),
        (
            "--client-request-timeout",
            "--client-request-timeout must be more than 0 seconds",
        ),
    ] {
        let home = Home::new();
        let mut command = home.command();
        command
            .args(["serve", "--port", "0", flag, "0"])
            .stdin(std::process::Stdio::null());
        // A server that takes the 0 runs until the deadline kills it.
        let output = within(&format!("`serve {flag} 0` to exit"), command.output())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(expected), "{flag}: {stderr}");
    }
    let home = Home::with_settings("[serve]\nmax-tool-rounds = 0\n");
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .stdin(std::process::Stdio::null());
    let output = within("`serve` to refuse the setting", command.output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config/punie/config.toml"), "{stderr}");
    assert!(stderr.contains("a turn needs at least 1 round"), "{stderr}");
}
