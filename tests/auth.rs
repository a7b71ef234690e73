//! Nobody but the token holder gets in, and web pages never do: every door is
//! checked before any WebSocket upgrade happens.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use nix::sys::signal::Signal;
use support::{Home, RawClient, Server, handshake_status, within};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn both_websocket_doors_refuse_before_the_upgrade() {
    let server = Server::start().await;
    let good = bearer(&server.token);
    let foreign_host = format!("evil.example:{}", server.port());
    for path in ["/acp", "/ws"] {
        let url = format!("ws://{}{path}", server.address);
        assert_eq!(handshake_status(&url, &[]).await, 401, "{path}: no token");
        assert_eq!(
            handshake_status(&url, &[("Authorization", "Bearer not-the-token")]).await,
            401,
            "{path}: wrong token"
        );
        assert_eq!(
            handshake_status(
                &url,
                &[("Authorization", &format!("Basic {}", server.token))]
            )
            .await,
            401,
            "{path}: not a bearer token"
        );
        assert_eq!(
            handshake_status(&format!("{url}?token={}", server.token), &[]).await,
            401,
            "{path}: a token in the query string is not accepted"
        );
        assert_eq!(
            handshake_status(
                &url,
                &[
                    ("Authorization", &good),
                    ("Origin", "http://localhost:3000")
                ]
            )
            .await,
            403,
            "{path}: a web page's Origin"
        );
        assert_eq!(
            handshake_status(&url, &[("Authorization", &good), ("Host", &foreign_host)]).await,
            403,
            "{path}: a foreign Host"
        );
        assert_eq!(
            handshake_status(&url, &[("Authorization", &good)]).await,
            101,
            "{path}: the right token"
        );
        let by_name = format!("ws://localhost:{}{path}", server.port());
        assert_eq!(
            handshake_status(&by_name, &[("Authorization", &good)]).await,
            101,
            "{path}: localhost names the server too"
        );
    }
}

#[tokio::test]
async fn the_http_profile_needs_the_token_too() {
    let server = Server::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}
    });
    let post = |token: Option<&str>| {
        let mut request = http
            .post(server.http_url("/acp"))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.header("Authorization", bearer(token));
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong")).await.unwrap().status(), 401);
    let accepted = post(Some(&server.token)).await.unwrap();
    assert_eq!(accepted.status(), 200);
    let body: serde_json::Value = accepted.json().await.unwrap();
    assert_eq!(body["result"]["agentInfo"]["name"], "punie");

    let from_a_page = http
        .post(server.http_url("/acp"))
        .header("Authorization", bearer(&server.token))
        .header("Origin", "https://example.com")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(from_a_page.status(), 403);
}

#[tokio::test]
async fn health_needs_no_token_reveals_no_secret_and_still_refuses_pages_and_foreign_hosts() {
    let server = Server::start().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let body = http
        .get(server.http_url("/health"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(
        !body.contains(&server.token),
        "/health never shows the token"
    );

    let from_a_page = http
        .get(server.http_url("/health"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(from_a_page.status(), 403);
    let rebound = http
        .get(server.http_url("/health"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
}

/// For each `Host` value, whether the server takes it as its own name: the
/// token's WebSocket upgrade at both doors (101, else 403) and `/health`
/// (200, else 403), all through the server's one socket.
async fn assert_host_names(server: &Server, hosts: &[(String, bool)]) {
    let good = bearer(&server.token);
    for (host, own) in hosts {
        for path in ["/acp", "/ws"] {
            let url = format!("ws://{}{path}", server.address);
            assert_eq!(
                handshake_status(&url, &[("Authorization", &good), ("Host", host)]).await,
                if *own { 101 } else { 403 },
                "{path} with Host: {host}"
            );
        }
        let (status, _, body) =
            http_answer(server, reqwest::Method::GET, "/health", &[("Host", host)]).await;
        if *own {
            assert_eq!(status, 200, "/health with Host: {host}: {body}");
            assert!(body.contains("\"status\":\"ok\""), "{body}");
        } else {
            assert_eq!(status, 403, "/health with Host: {host}: {body}");
        }
    }
}

/// A port other than `port`.
fn another_port(port: u16) -> u16 {
    port.checked_add(1).unwrap_or(port - 1)
}

/// A browser or client on this machine may name the server `[::1]` though
/// it listens on 127.0.0.1; the port must still be the server's.
#[tokio::test]
async fn the_ipv6_loopback_with_the_port_is_let_in_and_a_foreign_host_is_not() {
    let server = Server::start().await;
    let port = server.port();
    assert_host_names(
        &server,
        &[
            (format!("[::1]:{port}"), true),
            (format!("[::1]:{}", another_port(port)), false),
            ("[::1]".to_owned(), false),
            (format!("[::2]:{port}"), false),
            (format!("evil.example:{port}"), false),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_server_on_another_loopback_address_answers_to_that_address_with_its_port() {
    let server = Server::start_in(Home::new(), &["--host", "127.0.0.2"]).await;
    assert_eq!(server.address.ip().to_string(), "127.0.0.2");
    let port = server.port();
    assert_host_names(
        &server,
        &[
            (format!("127.0.0.2:{port}"), true),
            (format!("127.0.0.1:{port}"), true),
            (format!("localhost:{port}"), true),
            (format!("[::1]:{port}"), true),
            (format!("127.0.0.2:{}", another_port(port)), false),
            (format!("127.0.0.3:{port}"), false),
        ],
    )
    .await;
}

/// The status line of the answer to `request`, sent as written.
async fn answer_to_raw(server: &Server, request: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("the answer", async {
        let mut buffer = [0u8; 1024];
        while !answer.windows(2).any(|pair| pair == b"\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the server closed without answering");
            answer.extend_from_slice(&buffer[..read]);
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

/// A request whose server or page is named twice, differently, is refused:
/// a check reading one name while another part of the stack acts on the
/// other would be no check.
#[tokio::test]
async fn a_request_naming_two_hosts_or_two_origins_is_refused() {
    let server = Server::start().await;
    let own = format!("127.0.0.1:{}", server.port());
    let token = &server.token;
    let refused = [
        format!("GET http://evil.example/health HTTP/1.1\r\nHost: {own}\r\n\r\n"),
        format!("GET /health HTTP/1.1\r\nHost: {own}\r\nHost: evil.example\r\n\r\n"),
        format!(
            "GET /acp HTTP/1.1\r\nHost: {own}\r\nOrigin: http://{own}\r\nOrigin: http://evil.example\r\n\
             Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    ];
    for request in &refused {
        let status = answer_to_raw(&server, request).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status}: {request:?}");
    }
    let same = format!("GET http://{own}/health HTTP/1.1\r\nHost: {own}\r\n\r\n");
    let status = answer_to_raw(&server, &same).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[tokio::test]
async fn the_token_file_is_private_and_reused_across_restarts() {
    let mut first = Server::start().await;
    let token_file = first.home.token_file();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is 0600, got {mode:o}");
    let dir_mode = std::fs::metadata(first.home.state_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "in a 0700 directory, got {dir_mode:o}");
    assert_eq!(first.token.len(), 64, "256 random bits, hex-encoded");
    assert!(first.token.chars().all(|c| c.is_ascii_hexdigit()));
    let token = first.token.clone();
    first.signal(Signal::SIGTERM);
    assert!(first.exit_status().await.success());

    let home = std::mem::replace(&mut first.home, Home::new());
    let second = Server::start_in(home, &[]).await;
    assert_eq!(second.token, token, "a restarted server keeps its token");
    second.initialized().await;
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_token_file_readable_by_others_is_made_private() {
    let home = Home::new();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::set_permissions(home.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        home.token_file(),
        "a-token-someone-left-lying-around-0123456789\n",
    )
    .unwrap();
    std::fs::set_permissions(home.token_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start_in(home, &[]).await;
    assert_eq!(server.token, "a-token-someone-left-lying-around-0123456789");
    assert_eq!(mode_of(&server.home.token_file()), 0o600);
    assert_eq!(mode_of(&server.home.state_dir()), 0o700);
    drop(server);

    // A directory open to others, with no token yet: closed before one is made.
    let home = Home::new();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::set_permissions(home.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start_in(home, &[]).await;
    assert_eq!(mode_of(&server.home.token_file()), 0o600);
    assert_eq!(mode_of(&server.home.state_dir()), 0o700);
}

#[tokio::test]
async fn an_empty_token_file_is_given_a_new_token() {
    let home = Home::new();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::write(home.token_file(), "\n").unwrap();
    std::fs::set_permissions(home.token_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start_in(home, &[]).await;
    assert_eq!(server.token.len(), 64, "a fresh token: {:?}", server.token);
    assert_eq!(
        std::fs::metadata(server.home.token_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    RawClient::connect(&server.ws_url(), &server.token).await;
}

#[tokio::test]
async fn an_empty_punie_token_is_no_token_and_the_stored_one_is_used() {
    let first = Server::start().await;
    let stored = first.token.clone();
    let home = first.stop().await;
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("PUNIE_TOKEN", "");
    let server = Server::spawn(home, command).await;
    assert_eq!(server.token, stored);
    RawClient::connect(&server.ws_url(), &stored).await;
}

#[tokio::test]
async fn punie_token_overrides_the_stored_token() {
    let stored = Server::start().await;
    let stored_token = stored.token.clone();
    drop(stored);
    let home = Home::new();
    let chosen = "chosen-by-the-user-0123456789abcdef0123456789";
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("PUNIE_TOKEN", chosen);
    // The stored token exists, but the environment wins.
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::write(home.token_file(), format!("{stored_token}\n")).unwrap();
    let server = Server::spawn(home, command).await;
    RawClient::connect(&server.ws_url(), chosen).await;
    assert_eq!(
        handshake_status(
            &server.ws_url(),
            &[("Authorization", &bearer(&stored_token))]
        )
        .await,
        401
    );
}

#[tokio::test]
async fn the_token_never_appears_in_the_logs() {
    let home = Home::new();
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("RUST_LOG", "trace");
    let mut server = Server::spawn(home, command).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    client.prompt(&session, "hello").await;
    let half = &server.token[..32];
    handshake_status(&server.ws_url(), &[("Authorization", &bearer(half))]).await;
    handshake_status(&server.ws_url(), &[]).await;
    server.signal(Signal::SIGTERM);
    within("the server to exit", server.child.wait())
        .await
        .unwrap();
    let log = server.log();
    assert!(log.contains("refused"), "the refusals were logged: {log}");
    assert!(!log.contains(&server.token), "the token is in the log");
    assert!(!log.contains(half), "part of the token is in the log");
}

#[tokio::test]
async fn a_client_tracing_everything_leaves_the_token_out_of_its_log() {
    let server = Server::start().await;
    // As RUST_LOG, and as a filter naming the WebSocket library itself.
    for (rust_log, flag) in [("trace", None), ("", Some("trace,tungstenite=trace"))] {
        let level = flag.unwrap_or(rust_log);
        let mut command = server.home.command();
        command.arg("sessions").env("RUST_LOG", rust_log);
        if let Some(flag) = flag {
            command.args(["--log-level", flag]);
        }
        let output = within(
            "punie sessions",
            command.stdin(std::process::Stdio::null()).output(),
        )
        .await
        .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{log}");
        assert!(log.contains("TRACE"), "--log-level {level} traces: {log}");
        assert!(
            !log.contains(&server.token),
            "--log-level {level}: the token is in the log: {log}"
        );
    }
}

/// What the server answers `method` on `path` with the given headers: status,
/// `WWW-Authenticate` and body.
async fn http_answer(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = http
        .request(method, server.http_url(path))
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}"#);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within("an HTTP answer", request.send()).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("WWW-Authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

/// What is wrong with a request, its path, its headers, and the status it gets.
type Refusal<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

#[tokio::test]
async fn every_http_door_refuses_like_the_websocket_doors() {
    let server = Server::start().await;
    let good = bearer(&server.token);
    let foreign_host = format!("evil.example:{}", server.port());
    let in_query = format!("/acp?token={}", server.token);
    let basic = format!("Basic {}", server.token);
    for method in [
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
    ] {
        let refusals: [Refusal; 6] = [
            ("no token", "/acp", vec![], 401),
            (
                "a wrong token",
                "/acp",
                vec![("Authorization", "Bearer not-the-token")],
                401,
            ),
            (
                "not a bearer token",
                "/acp",
                vec![("Authorization", &basic)],
                401,
            ),
            ("a token in the query string", &in_query, vec![], 401),
            (
                "a web page's Origin",
                "/acp",
                vec![
                    ("Authorization", &good),
                    ("Origin", "http://localhost:3000"),
                ],
                403,
            ),
            (
                "a foreign Host",
                "/acp",
                vec![("Authorization", &good), ("Host", &foreign_host)],
                403,
            ),
        ];
        for (what, path, headers, status) in refusals {
            let (answered, challenge, body) =
                http_answer(&server, method.clone(), path, &headers).await;
            assert_eq!(answered, status, "{method} {path}: {what}: {body}");
            if status == 401 {
                assert_eq!(
                    challenge.as_deref(),
                    Some("Bearer realm=\"punie\""),
                    "{method}: {what}"
                );
            }
            assert!(
                !body.contains(&server.token) && !body.contains("not-the-token"),
                "{method}: {what}: the answer echoes a token: {body}"
            );
        }
    }
    let (status, _, body) = http_answer(
        &server,
        reqwest::Method::POST,
        "/acp",
        &[("Authorization", &good)],
    )
    .await;
    assert_eq!(status, 200, "the right token is let in: {body}");
}

#[tokio::test]
async fn a_token_offered_any_way_but_the_authorization_header_is_refused_at_every_door() {
    let server = Server::start().await;
    let token = &server.token;
    let query_names = ["token", "access_token", "bearer", "authorization"];
    let header_ways = [
        ("Sec-WebSocket-Protocol", token.clone()),
        ("Sec-WebSocket-Protocol", format!("bearer, {token}")),
        ("Cookie", format!("token={token}")),
        ("X-Punie-Token", token.clone()),
        ("Proxy-Authorization", bearer(token)),
        ("Authorization", token.clone()),
        ("Authorization", format!("Bearer{token}")),
    ];
    for path in ["/acp", "/ws"] {
        for name in query_names {
            let url = format!("ws://{}{path}?{name}={token}", server.address);
            assert_eq!(handshake_status(&url, &[]).await, 401, "{path}?{name}=");
        }
        let url = format!("ws://{}{path}", server.address);
        for (header, value) in &header_ways {
            assert_eq!(
                handshake_status(&url, &[(header, value)]).await,
                401,
                "{path}: the token in {header}: {value}"
            );
        }
    }
    for name in query_names {
        let path = format!("/acp?{name}={token}");
        let (status, _, body) = http_answer(&server, reqwest::Method::POST, &path, &[]).await;
        assert_eq!(status, 401, "POST {path}: {body}");
    }
    for (header, value) in &header_ways {
        let (status, _, body) =
            http_answer(&server, reqwest::Method::POST, "/acp", &[(header, value)]).await;
        assert_eq!(status, 401, "POST /acp: the token in {header}: {body}");
    }
}

#[tokio::test]
async fn the_token_stays_out_of_a_trace_log_and_out_of_health_whatever_door_it_is_offered_at() {
    // Punie's own trace, then every crate's: the HTTP and WebSocket stacks see
    // the raw headers.
    offer_the_token_everywhere_and_read_the_log("trace").await;
    offer_the_token_everywhere_and_read_the_log("trace,punie=trace").await;
}

async fn offer_the_token_everywhere_and_read_the_log(log_level: &str) {
    let home = Home::new();
    let mut command = home.command();
    command.args(["serve", "--port", "0", "--log-level", log_level]);
    let mut server = Server::spawn(home, command).await;
    let token = server.token.clone();
    let good = bearer(&token);
    let half = &token[..32];
    // The token with its last character changed.
    let last = if token.ends_with('0') { '1' } else { '0' };
    let near = format!("{}{last}", &token[..63]);

    // Through every door: accepted, and refused with a wrong, partial or misplaced token.
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    client.prompt(&session, "hello").await;
    let ws = format!("ws://{}/ws", server.address);
    assert_eq!(
        handshake_status(&ws, &[("Authorization", &good)]).await,
        101
    );
    for url in [server.ws_url(), ws] {
        for value in [bearer(half), bearer(&near), token.clone()] {
            assert_eq!(
                handshake_status(&url, &[("Authorization", &value)]).await,
                401,
                "{url}: Authorization: {value}"
            );
        }
        assert_eq!(
            handshake_status(&format!("{url}?token={token}"), &[]).await,
            401
        );
        assert_eq!(
            handshake_status(&url, &[("Authorization", &good), ("Origin", "http://x")]).await,
            403
        );
    }
    let (status, _, _) = http_answer(
        &server,
        reqwest::Method::POST,
        "/acp",
        &[("Authorization", &good)],
    )
    .await;
    assert_eq!(status, 200);
    for value in [bearer(half), bearer(&near)] {
        let (status, _, _) = http_answer(
            &server,
            reqwest::Method::POST,
            "/acp",
            &[("Authorization", &value)],
        )
        .await;
        assert_eq!(status, 401);
    }
    let path = format!("/acp?token={token}");
    let (status, _, _) = http_answer(&server, reqwest::Method::POST, &path, &[]).await;
    assert_eq!(status, 401);
    let health = server.health().await.to_string();
    assert!(!health.contains(half), "/health shows the token: {health}");

    server.signal(Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    let log = server.log();
    assert!(
        log.contains("DEBUG") && log.contains("refused"),
        "--log-level {log_level}: the log is verbose and records the refusals:\n{log}"
    );
    if log_level.contains(',') {
        assert!(log.contains("TRACE"), "every crate logs at trace:\n{log}");
    }
    for secret in [&token[..], half, &token[32..], &near[..]] {
        assert!(
            !log.contains(secret),
            "--log-level {log_level}: the log holds (part of) a token: {secret}"
        );
    }
}

#[tokio::test]
async fn a_server_on_every_address_warns_and_answers_to_addresses_and_its_proxys_name() {
    // `--log-level error` must not hide the warning: it is not a log line.
    let mut server = Server::start_in(
        Home::new(),
        &[
            "--host",
            "0.0.0.0",
            "--allowed-host",
            "punie.example",
            "--log-level",
            "error",
        ],
    )
    .await;
    server
        .wait_for_log("is reachable from other machines, and the token")
        .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status_with = |host: String, origin: Option<&'static str>| {
        let mut request = http.get(server.http_url("/health")).header("Host", host);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let port = server.port();
    // Another machine reaches it by one of this machine's addresses.
    assert_eq!(status_with(format!("10.1.2.3:{port}"), None).await, 200);
    assert_eq!(status_with(format!("[fd00::7]:{port}"), None).await, 200);
    // A name is still refused, unless it is the proxy's.
    assert_eq!(status_with(format!("evil.example:{port}"), None).await, 403);
    assert_eq!(status_with("punie.example".into(), None).await, 200);
    // The app served through a TLS proxy is the server's own page.
    assert_eq!(
        status_with("punie.example".into(), Some("https://punie.example")).await,
        200
    );
    assert_eq!(
        status_with("punie.example".into(), Some("https://evil.example")).await,
        403
    );
}

#[tokio::test]
async fn an_address_from_the_settings_file_warns_as_the_flag_does() {
    let home = Home::with_settings("[serve]\nhost = \"0.0.0.0\"\n");
    let mut server = Server::start_in(home, &[]).await;
    server
        .wait_for_log("is reachable from other machines, and the token")
        .await;
}

#[tokio::test]
async fn a_server_on_loopback_gives_no_network_warning() {
    let mut server = Server::start().await;
    // The warning would come between the ready line and the sign-in link.
    server.wait_for_log("sign in from a browser").await;
    assert!(
        !server.log().contains("reachable from other machines"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn the_sign_in_link_is_written_only_where_no_one_else_can_read_it() {
    use std::os::unix::fs::OpenOptionsExt as _;
    for (mode, link_written) in [(0o600, true), (0o640, false), (0o644, false)] {
        let home = Home::new();
        let log = home.dir.path().join("punie.log");
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(&log)
            .unwrap();
        // The umask may have taken bits away.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .unwrap();
        let mut child = home
            .command()
            .args(["serve", "--port", "0"])
            .stdin(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        // Ready once it has recorded itself; then stopped, its log is whole.
        within("server.json", async {
            while !home.server_file().exists() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        assert!(
            within("the server to stop", child.wait())
                .await
                .unwrap()
                .success()
        );
        let written = std::fs::read_to_string(&log).unwrap();
        assert!(
            written.contains("sign in from a browser"),
            "{mode:o}: {written}"
        );
        assert_eq!(
            written.contains("/sign-in/"),
            link_written,
            "a log of mode {mode:o}: {written}"
        );
    }
}
