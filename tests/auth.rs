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

#[tokio::test]
async fn the_token_file_is_private_and_reused_across_restarts() {
    let mut first = Server::start().await;
    let token_file = first.home.token_file();
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is 0600, got {mode:o}");
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

#[tokio::test]
async fn a_token_file_readable_by_others_is_made_private() {
    let home = Home::new();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::write(
        home.token_file(),
        "a-token-someone-left-lying-around-0123456789\n",
    )
    .unwrap();
    std::fs::set_permissions(home.token_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start_in(home, &[]).await;
    assert_eq!(server.token, "a-token-someone-left-lying-around-0123456789");
    let mode = std::fs::metadata(server.home.token_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
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
