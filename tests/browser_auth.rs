//! The browser's way in, over real HTTP and WebSockets: the app is served at
//! `/`, a one-time sign-in link becomes an HttpOnly, SameSite=Strict cookie,
//! and that cookie opens the ACP WebSocket only from the server's own page.
//! `punie open` hands the browser a fresh link.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{Home, Server, handshake_status, within};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A client that shows redirects instead of following them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The sign-in link `punie serve` printed.
async fn printed_link(server: &mut Server) -> String {
    let marker = "sign in from a browser with ";
    server.wait_for_log(marker).await;
    let log = server.log();
    let rest = &log[log.find(marker).unwrap() + marker.len()..];
    rest.split_whitespace().next().unwrap().to_owned()
}

/// Use `link`; the cookie it set (`name=value`), or the status it answered with.
async fn sign_in(link: &str) -> Result<String, u16> {
    let response = within("the sign-in link", http().get(link).send())
        .await
        .unwrap();
    if response.status() != 303 {
        return Err(response.status().as_u16());
    }
    assert_eq!(response.headers()["location"], "/");
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{set_cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{set_cookie}");
    assert!(attributes.contains(&"Path=/"), "{set_cookie}");
    Ok(attributes[0].to_owned())
}

async fn signed_in(server: &Server, cookie: Option<&str>) -> bool {
    let mut request = http().get(server.http_url("/signed-in"));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    answer["signedIn"].as_bool().unwrap()
}

#[tokio::test]
async fn the_app_is_served_at_the_root_from_the_binary_under_a_strict_policy() {
    let server = Server::start().await;
    let page = http().get(server.http_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("src=\"/app/app.js\""), "{html}");

    let script = http()
        .get(server.http_url("/app/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let missing = http()
        .get(server.http_url("/app/nonesuch.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let escape = http()
        .get(server.http_url("/app/..%2fCargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(escape.status(), 404);

    // The app is public, but other pages still may not read it, and the Host
    // rule still holds.
    let from_another_page = http()
        .get(server.http_url("/"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(from_another_page.status(), 403);
    let rebound = http()
        .get(server.http_url("/"))
        .header("Host", format!("evil.example:{}", server.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
}

#[tokio::test]
async fn the_printed_link_signs_a_browser_in_once() {
    let mut server = Server::start().await;
    let link = printed_link(&mut server).await;
    assert!(
        link.starts_with(&format!("http://{}/sign-in/", server.address)),
        "{link}"
    );
    assert!(!link.contains(&server.token), "the token is never in a URL");
    assert!(!signed_in(&server, None).await);

    // A link preview looks with HEAD: that uses nothing up.
    let looked = http().head(&link).send().await.unwrap();
    assert!(looked.status().is_success(), "{}", looked.status());
    assert!(looked.headers().get("set-cookie").is_none());

    let cookie = sign_in(&link).await.expect("the link works");
    let (name, value) = cookie.split_once('=').unwrap();
    assert_eq!(name, format!("punie_{}", server.port()));
    assert_eq!(value.len(), 64, "256 random bits, hex-encoded");
    assert_ne!(value, server.token);
    assert!(signed_in(&server, Some(&cookie)).await);
    assert!(!signed_in(&server, Some(&format!("{name}={}", server.token))).await);

    assert_eq!(sign_in(&link).await, Err(403), "a link works only once");
    // ... but the browser it signed in, opening it again, goes to the app.
    let again = http()
        .get(&link)
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"], "/");
    assert!(again.headers().get("set-cookie").is_none());
    let made_up = format!("http://{}/sign-in/{}", server.address, "0".repeat(64));
    assert_eq!(sign_in(&made_up).await, Err(403));
    let log = server.log();
    assert!(!log.contains(value), "the cookie is never logged");
}

/// A WebSocket handshake to `path` carrying `cookie` and `origin`.
async fn browser_handshake(
    server: &Server,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> u16 {
    let url = format!("ws://{}{path}", server.address);
    let mut headers = Vec::new();
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    handshake_status(&url, &headers).await
}

#[tokio::test]
async fn the_cookie_opens_the_websocket_only_from_the_servers_own_page() {
    let mut server = Server::start().await;
    let link = printed_link(&mut server).await;
    let cookie = sign_in(&link).await.unwrap();
    let own = format!("http://{}", server.address);
    let other_port = format!("http://127.0.0.1:{}", support::unused_port());
    let other_name = format!("http://localhost:{}", server.port());
    let wrong_cookie = format!("punie_{}={}", server.port(), "0".repeat(64));
    let bearer = format!("Bearer {}", server.token);
    for path in ["/acp", "/ws"] {
        assert_eq!(
            browser_handshake(&server, path, Some(&cookie), Some(&own)).await,
            101,
            "{path}: the signed-in app"
        );
        for (what, cookie, origin, status) in [
            (
                "a page on another port of this host (browsers send it the cookie)",
                Some(cookie.as_str()),
                Some(other_port.as_str()),
                403,
            ),
            (
                "a page under another name than the request uses",
                Some(&cookie),
                Some(&other_name),
                403,
            ),
            ("an opaque origin", Some(&cookie), Some("null"), 403),
            ("the app, not signed in", None, Some(&own), 403),
            (
                "the app with a made-up cookie",
                Some(&wrong_cookie),
                Some(&own),
                403,
            ),
            ("the cookie without a page", Some(&cookie), None, 401),
        ] {
            assert_eq!(
                browser_handshake(&server, path, cookie, origin).await,
                status,
                "{path}: {what}"
            );
        }
        let url = format!("ws://{}{path}", server.address);
        assert_eq!(
            handshake_status(&url, &[("Authorization", &bearer), ("Origin", &own)]).await,
            403,
            "{path}: a page never gets in with the token"
        );
        assert_eq!(
            handshake_status(&url, &[("Authorization", &bearer)]).await,
            101,
            "{path}: programs keep using the token"
        );
    }

    // The signed-in page speaks ACP like any client.
    let mut request = server.ws_url().into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    headers.insert("Origin", HeaderValue::from_str(&own).unwrap());
    let (mut ws, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .unwrap();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": 1, "clientCapabilities": {}}});
    ws.send(Message::text(initialize.to_string()))
        .await
        .unwrap();
    let answer = loop {
        match within("the answer to initialize", ws.next()).await {
            Some(Ok(Message::Text(text))) => break serde_json::from_str::<Value>(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    };
    assert_eq!(answer["result"]["agentInfo"]["name"], "punie", "{answer}");
}

#[tokio::test]
async fn a_new_link_needs_the_token_and_is_never_logged() {
    let server = Server::start().await;
    let url = server.http_url("/sign-in");
    let refused = http().post(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = http()
        .post(&url)
        .bearer_auth("not-it")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let from_a_page = http()
        .post(&url)
        .bearer_auth(&server.token)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(from_a_page.status(), 403);

    let answer: Value = http()
        .post(&url)
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["expiresInSeconds"], 300);
    let link = answer["url"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("http://{}/sign-in/", server.address)),
        "{link}"
    );
    let code = link.rsplit('/').next().unwrap();
    assert!(sign_in(link).await.is_ok());
    assert!(!server.log().contains(code), "the code is not logged");
}

/// A `$BROWSER` that records the link it was asked to open.
fn recording_browser(home: &Home) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = home.dir.path().join("browser");
    let opened = home.dir.path().join("opened");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, opened)
}

async fn punie_open(home: &Home, browser: &str, args: &[&str]) -> Output {
    within(
        "punie open",
        home.command()
            .arg("open")
            .args(args)
            .env("BROWSER", browser)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn punie_open_hands_the_browser_a_fresh_link() {
    let server = Server::start().await;
    let (browser, opened) = recording_browser(&server.home);

    let output = punie_open(&server.home, browser.to_str().unwrap(), &[]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stdout.is_empty(), "the link went to the browser");
    let link = std::fs::read_to_string(&opened).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("http://{}/sign-in/", server.address)),
        "{link}"
    );
    let cookie = sign_in(&link).await.expect("the link signs in");
    assert!(signed_in(&server, Some(&cookie)).await);
    assert_eq!(sign_in(&link).await, Err(403), "once");

    // No browser to be had: the link is printed instead, and works.
    let output = punie_open(&server.home, "/nonexistent/browser:also-not-a-browser", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open a browser"), "{stderr}");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_ne!(printed, link, "every link is fresh");
    assert!(sign_in(&printed).await.is_ok());

    // `BROWSER=:` names no browser: the system's opener is tried, and named
    // when there is none.
    let nothing_on_path = server.home.dir.path().join("empty-path");
    std::fs::create_dir_all(&nothing_on_path).unwrap();
    let output = within(
        "punie open",
        server
            .home
            .command()
            .arg("open")
            .env("BROWSER", ":")
            .env("PATH", &nothing_on_path)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open a browser (xdg-open"),
        "{stderr}"
    );

    let output = punie_open(&server.home, browser.to_str().unwrap(), &["--print"]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(sign_in(&printed).await.is_ok());
}

#[tokio::test]
async fn punie_open_without_a_server_exits_3() {
    let home = Home::new();
    let (browser, opened) = recording_browser(&home);
    // A token on file, as a stopped server leaves it.
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::write(home.token_file(), "a".repeat(64)).unwrap();
    std::fs::set_permissions(home.token_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("http://127.0.0.1:{}", support::unused_port());
    let output = punie_open(&home, browser.to_str().unwrap(), &["--server", &url]).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("punie serve"),
        "{output:?}"
    );
    assert!(!opened.exists());
}

#[tokio::test]
async fn punie_open_with_a_wrong_token_says_so() {
    let server = Server::start().await;
    let (browser, opened) = recording_browser(&server.home);
    let output = within(
        "punie open",
        server
            .home
            .command()
            .arg("open")
            .env("BROWSER", &browser)
            .env("PUNIE_TOKEN", "b".repeat(64))
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    let token_file = server.home.token_file().display().to_string();
    assert!(
        stderr.contains(&token_file),
        "names where the token is: {stderr}"
    );
    assert!(!opened.exists());
}

#[tokio::test]
async fn punie_open_without_a_server_or_a_token_says_nothing_listens() {
    let home = Home::new();
    let (browser, opened) = recording_browser(&home);
    let url = format!("http://127.0.0.1:{}", support::unused_port());
    let output = punie_open(&home, browser.to_str().unwrap(), &["--server", &url]).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing is listening") && stderr.contains("punie serve"),
        "{stderr}"
    );
    assert!(!stderr.contains("token"), "{stderr}");
    assert!(!opened.exists());

    // With a server there, the missing token is what is wrong, and said.
    let server = Server::start().await;
    let output = punie_open(
        &home,
        browser.to_str().unwrap(),
        &["--server", &server.http_url("")],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("There is no token to present"),
        "{stderr}"
    );
    assert!(!opened.exists());
}

#[tokio::test]
async fn a_browser_command_is_split_as_a_shell_would_and_a_failed_one_is_not_opened() {
    let server = Server::start().await;
    let (browser, opened) = recording_browser(&server.home);
    // Quoted words, `%s` quoted too: the script gets the link itself.
    let quoted = format!("'{}' '%s'", browser.display());
    let output = punie_open(&server.home, &quoted, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let link = std::fs::read_to_string(&opened).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("http://{}/sign-in/", server.address)),
        "{link}"
    );
    assert!(sign_in(&link).await.is_ok());

    // A command that fails opened nothing: the next is tried, then the
    // link is printed.
    std::fs::remove_file(&opened).unwrap();
    let output = punie_open(&server.home, "false %s:sh -c 'exit 3'", &[]).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("Opened"), "{stderr}");
    assert!(stderr.contains("cannot open a browser"), "{stderr}");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(sign_in(&printed).await.is_ok(), "{printed}");
}
