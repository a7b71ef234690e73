//! `punie status` and `punie stop`: they find the server `punie serve`
//! recorded, and stop exactly that one.

mod support;

use std::process::Output;

use serde_json::{Value, json};
use support::{Home, Server, full_disk, reader_gone, run_with, text, within};

async fn punie(home: &Home, args: &[&str]) -> Output {
    punie_with(home, args, &[]).await
}

/// `punie` with `env` set too.
async fn punie_with(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Output {
    within(
        &format!("punie {}", args.join(" ")),
        home.command()
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("punie runs")
}

#[tokio::test]
async fn status_describes_the_recorded_server() {
    let server = Server::start().await;
    let mut client = server.initialized().await;
    client.new_session(&server.home.workspace()).await;

    let output = punie(&server.home, &["status"]).await;
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("http://{}", server.address)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&server.child.id().unwrap().to_string()),
        "{stdout}"
    );
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    assert!(stdout.contains("uptime"), "{stdout}");
    assert!(
        !stdout.contains("store"),
        "a store that is fine goes unsaid: {stdout}"
    );

    let output = punie(&server.home, &["status", "--json"]).await;
    assert_eq!(output.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(status["url"], format!("http://{}", server.address));
    assert_eq!(status["pid"], json!(server.child.id().unwrap()));
    assert_eq!(status["connections"], 1);
    assert_eq!(status["sessions"], 1);
    assert!(status["uptimeSeconds"].as_f64().is_some());
    assert_eq!(status["running"], true);
    let health = server.health().await;
    for (key, value) in health.as_object().unwrap() {
        if key != "uptimeSeconds" {
            assert_eq!(&status[key], value, "`{key}`, as /health reports it");
        }
    }
    assert!(status.get("conversationsInMemory").is_some(), "{status}");

    // A store in trouble is worth a line.
    std::fs::remove_file(server.home.database()).unwrap();
    let output = punie(&server.home, &["status"]).await;
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("  store        the database file was deleted or replaced"),
        "{stdout}"
    );
}

#[tokio::test]
async fn status_with_no_server_exits_3_with_a_hint() {
    let home = Home::new();
    let port = support::unused_port();
    let output = punie(
        &home,
        &["status", "--server", &format!("http://127.0.0.1:{port}")],
    )
    .await;
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("punie serve"), "{stderr}");
    assert!(output.stdout.is_empty());

    let url = format!("http://127.0.0.1:{port}");
    let output = punie(&home, &["status", "--json", "--server", &url]).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output.stderr).contains("punie serve"));
    let status: Value =
        serde_json::from_slice(&output.stdout).expect("--json prints JSON even then");
    assert_eq!(status["running"], false);
    assert_eq!(status["url"], url);
    assert!(status["error"].as_str().is_some(), "{status}");

    // A record that cannot be read: an error, and still an answer on stdout.
    std::fs::create_dir_all(home.state_dir()).unwrap();
    std::fs::write(home.state_dir().join("server.json"), "garbage").unwrap();
    let output = punie(&home, &["status", "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let status: Value =
        serde_json::from_slice(&output.stdout).expect("--json prints JSON even then");
    assert_eq!(status["running"], false);
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("server.json"), "{status}");
}

#[tokio::test]
async fn stop_stops_the_recorded_server_and_waits_for_it() {
    let mut server = Server::start().await;
    let output = punie(&server.home, &["stop"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // `punie stop` returned only once the server had exited.
    assert!(
        server.child.try_wait().unwrap().is_some(),
        "the server had exited when stop returned"
    );
    assert!(server.exit_status().await.success());
    assert!(!server.home.server_file().exists());

    let again = punie(&server.home, &["stop"]).await;
    assert_eq!(again.status.code(), Some(3), "nothing left to stop");
}

#[tokio::test]
async fn stop_signals_nothing_when_the_record_names_another_process() {
    let server = Server::start().await;
    let mut bystander = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(server.home.server_file()).unwrap()).unwrap();
    record["pid"] = json!(bystander.id().unwrap());
    std::fs::write(server.home.server_file(), record.to_string()).unwrap();

    let output = punie(&server.home, &["stop"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("not signalling"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander lives"
    );
    assert_eq!(
        server.health().await["status"],
        "ok",
        "and so does the server"
    );
}

#[tokio::test]
async fn stop_forgets_a_record_whose_process_is_gone() {
    let home = Home::new();
    let mut gone = tokio::process::Command::new("true").spawn().unwrap();
    let pid = gone.id().unwrap();
    gone.wait().await.unwrap();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    let record = json!({
        "url": format!("http://127.0.0.1:{}", support::unused_port()),
        "pid": pid,
        "version": env!("CARGO_PKG_VERSION"),
        "startedAt": "2026-01-01T00:00:00Z",
    });
    std::fs::write(home.server_file(), record.to_string()).unwrap();
    let output = punie(&home, &["stop"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert!(!home.server_file().exists(), "the stale record is removed");
}

#[tokio::test]
async fn status_and_stop_help_document_their_exit_statuses() {
    let home = Home::new();
    let status = punie(&home, &["status", "--help"]).await;
    assert_eq!(status.status.code(), Some(0));
    let help = text(&status.stdout);
    for documented in ["0 a server answers", "1 error", "2 usage", "3 no server"] {
        assert!(
            help.contains(documented),
            "`punie status --help` documents `{documented}`: {help}"
        );
    }
    let stop = punie(&home, &["stop", "--help"]).await;
    assert_eq!(stop.status.code(), Some(0));
    let help = text(&stop.stdout);
    for documented in ["0 stopped", "1 error", "2 usage", "3 no server to stop"] {
        assert!(
            help.contains(documented),
            "`punie stop --help` documents `{documented}`: {help}"
        );
    }
}

#[tokio::test]
async fn punie_server_overrides_the_recorded_server_and_the_flag_overrides_both() {
    let server = Server::start().await;
    let home = Home::new();
    let recorded = home.record_a_gone_server();
    let live = format!("http://{}", server.address);

    let recorded_only = punie(&home, &["status", "--json"]).await;
    assert_eq!(
        recorded_only.status.code(),
        Some(3),
        "the record alone leads nowhere"
    );
    assert!(
        text(&recorded_only.stderr).contains(&recorded),
        "{}",
        text(&recorded_only.stderr)
    );

    let overridden = punie_with(
        &home,
        &["status", "--json"],
        &[("PUNIE_SERVER", &server.ws_url())],
    )
    .await;
    assert_eq!(
        overridden.status.code(),
        Some(0),
        "{}",
        text(&overridden.stderr)
    );
    let status: Value = serde_json::from_slice(&overridden.stdout).unwrap();
    assert_eq!(status["url"], live);
    assert_eq!(status["pid"], json!(server.child.id().unwrap()));

    let flag_wins = punie_with(
        &home,
        &["status", "--json", "--server", &live],
        &[("PUNIE_SERVER", &recorded)],
    )
    .await;
    assert_eq!(
        flag_wins.status.code(),
        Some(0),
        "{}",
        text(&flag_wins.stderr)
    );
    let status: Value = serde_json::from_slice(&flag_wins.stdout).unwrap();
    assert_eq!(status["url"], live);
}

#[tokio::test]
async fn stop_stops_the_recorded_server_when_punie_server_names_it_another_way() {
    let mut server = Server::start().await;
    // The record holds http://…; the same server as a WebSocket URL.
    let output = punie_with(
        &server.home,
        &["stop"],
        &[("PUNIE_SERVER", &server.ws_url())],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(server.exit_status().await.success());
    assert!(!server.home.server_file().exists());
}

#[tokio::test]
async fn stop_says_so_when_the_server_given_is_not_the_recorded_one() {
    let server = Server::start().await;
    let elsewhere = format!("http://127.0.0.1:{}", support::unused_port());
    let output = punie(&server.home, &["stop", "--server", &elsewhere]).await;
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{elsewhere} is not the server recorded in")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("http://{}", server.address)),
        "names the recorded one: {stderr}"
    );
    assert_eq!(server.health().await["status"], "ok", "nothing was stopped");
}

#[tokio::test]
async fn only_the_server_warns_about_a_short_token() {
    let home = Home::new();
    std::fs::create_dir_all(home.state_dir()).unwrap();
    let nowhere = format!("http://127.0.0.1:{}", support::unused_port());
    let client = punie_with(
        &home,
        &["status", "--server", &nowhere],
        &[("PUNIE_TOKEN", "abc")],
    )
    .await;
    assert_eq!(client.status.code(), Some(3));
    let stderr = text(&client.stderr);
    assert!(
        !stderr.contains("shorter than"),
        "a client has no say: {stderr}"
    );

    // A short token in the token file is as weak as a short PUNIE_TOKEN.
    std::fs::write(home.token_file(), "abc\n").unwrap();
    std::fs::set_permissions(
        home.token_file(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let warning = format!(
        "the token in {} is shorter than 32 characters",
        home.token_file().display()
    );
    let mut server = Server::start_in(home, &[]).await;
    server.wait_for_log(&warning).await;
}

#[tokio::test]
async fn a_stdout_that_cannot_be_written_is_an_error_and_a_reader_gone_is_not() {
    let server = Server::start().await;
    for args in [&["status"][..], &["sessions", "--json"][..]] {
        let output = run_with(server.home.command().args(args), b"", full_disk()).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write to stdout") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );

        let output = run_with(server.home.command().args(args), b"", reader_gone()).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// A `server.json` in `home` naming `url` and `pid`.
fn record(home: &Home, url: &str, pid: Value) {
    std::fs::create_dir_all(home.state_dir()).unwrap();
    let record = json!({
        "url": url,
        "pid": pid,
        "version": env!("CARGO_PKG_VERSION"),
        "startedAt": "2026-01-01T00:00:00Z",
    });
    std::fs::write(home.server_file(), record.to_string()).unwrap();
}

#[tokio::test]
async fn a_record_with_a_pid_no_process_can_have_is_a_bad_record() {
    let home = Home::new();
    let url = format!("http://127.0.0.1:{}", support::unused_port());
    for pid in [json!(4_294_967_295_u32), json!(2_147_483_648_u32), json!(0)] {
        record(&home, &url, pid.clone());
        let output = punie(&home, &["stop"]).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "pid {pid}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{} is not a server record",
                home.server_file().display()
            )) && stderr.contains(&format!("it records pid {pid}, which no process can have")),
            "pid {pid}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "pid {pid}: {stderr}");

        // Named outright, the server is not the recorded one, and the record
        // is no reason to signal anything.
        let output = punie(&home, &["stop", "--server", &url]).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "pid {pid}: {stderr}");
        assert!(
            stderr.contains("which no process can have; nothing to stop"),
            "pid {pid}: {stderr}"
        );
    }
}

/// A `/health` at a port of its own, answering for `pid` as a Punie server.
async fn health_for(pid: u32) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let body = json!({
                "status": "ok", "version": env!("CARGO_PKG_VERSION"), "pid": pid,
                "connections": 0, "sessions": 0, "uptimeSeconds": 1.0,
            })
            .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn a_server_that_does_not_exit_is_reported_once() {
    let home = Home::new();
    // A process that shrugs off SIGTERM, recorded as the server.
    let mut stubborn = tokio::process::Command::new("sh")
        .args(["-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut ready = String::new();
    within(
        "the stubborn process to be ready",
        tokio::io::AsyncReadExt::read_to_string(
            &mut tokio::io::AsyncReadExt::take(stubborn.stdout.take().unwrap(), 6),
            &mut ready,
        ),
    )
    .await
    .unwrap();
    let pid = stubborn.id().unwrap();
    record(&home, &health_for(pid).await, json!(pid));

    let output = punie(&home, &["stop"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("punie: pid {pid} did not exit within 10s"),
        "said once, without the timer's words"
    );
    assert!(stubborn.try_wait().unwrap().is_none(), "it is still there");
}

#[tokio::test]
async fn status_with_a_stderr_that_cannot_be_written_still_exits_3() {
    let home = Home::new();
    let url = format!("http://127.0.0.1:{}", support::unused_port());
    for args in [&["status"][..], &["status", "--json"][..], &["stop"][..]] {
        // Not `output()`, which would make stderr a pipe.
        let child = home
            .command()
            .args(args)
            .args(["--server", &url])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(support::full_disk())
            .spawn()
            .unwrap();
        let output = within("punie with stderr on a full disk", child.wait_with_output())
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        if args.contains(&"--json") {
            let status: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
            assert_eq!(status["running"], false);
        }
    }
}

#[tokio::test]
async fn status_and_stop_need_no_token() {
    let mut server = Server::start().await;
    let output = punie_with(&server.home, &["status"], &[("PUNIE_TOKEN", "")]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let output = punie_with(&server.home, &["status"], &[("PUNIE_TOKEN", "not a token")]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    // A token file that cannot be read, whoever runs this.
    std::fs::remove_file(server.home.token_file()).unwrap();
    std::fs::create_dir(server.home.token_file()).unwrap();
    let output = punie(&server.home, &["status", "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["running"], true);

    let output = punie_with(&server.home, &["stop"], &[("PUNIE_TOKEN", "")]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(server.exit_status().await.success());
}
