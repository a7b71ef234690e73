//! The command line: a flag or setting that cannot mean anything sensible is
//! a usage error (exit status 2) that says why, before anything starts; the
//! settings file takes what `punie serve --help` lists.

mod support;

use std::process::{Output, Stdio};

use nix::sys::signal::Signal;
use support::{Home, Server, text, within};

async fn punie(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Output {
    within(
        &format!("punie {}", args.join(" ")),
        home.command()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("punie runs")
}

fn assert_usage_error(output: &Output, expected: &str, what: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
    assert!(stderr.contains(expected), "{what}: {stderr}");
}

#[tokio::test]
async fn a_pong_timeout_not_longer_than_the_ping_interval_is_refused() {
    let home = Home::new();
    let output = punie(
        &home,
        &[
            "serve",
            "--port",
            "0",
            "--ping-interval",
            "30",
            "--pong-timeout",
            "3",
        ],
        &[],
    )
    .await;
    assert_usage_error(
        &output,
        "--pong-timeout (3 s) must be longer than --ping-interval (30 s)",
        "flags",
    );

    let home = Home::with_settings("[serve]\nping-interval = 30\npong-timeout = 30\n");
    let output = punie(&home, &["serve", "--port", "0"], &[]).await;
    assert_usage_error(&output, "must be longer than --ping-interval", "settings");
}

#[tokio::test]
async fn a_reply_limit_that_leaves_no_room_in_the_context_window_is_refused() {
    let home = Home::new();
    let output = punie(
        &home,
        &[
            "serve",
            "--port",
            "0",
            "--context-window",
            "8000",
            "--max-output-tokens",
            "8000",
        ],
        &[],
    )
    .await;
    assert_usage_error(
        &output,
        "--max-output-tokens (8000) must be less than --context-window (8000)",
        "flags",
    );
}

#[tokio::test]
async fn a_log_filter_that_filters_nothing_sensible_is_refused() {
    let home = Home::new();
    let nowhere = format!("http://127.0.0.1:{}", support::unused_port());
    for filter in ["nonsense=", "verbose", "punie=loud"] {
        let output = punie(
            &home,
            &["status", "--server", &nowhere, "--log-level", filter],
            &[],
        )
        .await;
        assert_usage_error(&output, "is not a log filter", filter);
    }

    let home = Home::with_settings("[serve]\nlog-level = \"nonsense=\"\n");
    let output = punie(&home, &["serve", "--port", "0"], &[]).await;
    assert_usage_error(&output, "config/punie/config.toml", "settings");
    assert_usage_error(&output, "log-level", "settings");
}

#[tokio::test]
async fn a_malformed_rust_log_is_reported_and_the_default_used() {
    let home = Home::new();
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("RUST_LOG", "nonsense=");
    let mut server = Server::spawn(home, command).await;
    server.wait_for_log("ignoring RUST_LOG").await;
    // An info line: the default filter is in force.
    server.wait_for_log("ready in").await;
}

#[tokio::test]
async fn the_settings_file_takes_the_log_level_and_file_and_flags_win() {
    for (flag, logged) in [(None, false), (Some("info"), true)] {
        let home = Home::new();
        let log = home.dir.path().join("serve.log");
        let settings = format!(
            "[serve]\nlog-level = \"error\"\nlog-file = \"{}\"\n",
            log.display()
        );
        let dir = home.dir.path().join("config/punie");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), settings).unwrap();
        let mut args = vec![];
        if let Some(level) = flag {
            args.extend(["--log-level", level]);
        }
        let mut server = Server::start_in(home, &args).await;
        server.signal(Signal::SIGTERM);
        assert!(server.exit_status().await.success());
        let written = std::fs::read_to_string(&log).expect("the log file from the settings");
        assert_eq!(
            written.contains("ready in"),
            logged,
            "--log-level {flag:?}: {written}"
        );
    }
}

#[tokio::test]
async fn serve_neither_lists_nor_takes_the_clients_server_flag() {
    let home = Home::new();
    let help = punie(&home, &["serve", "--help"], &[]).await;
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    assert!(!help.contains("--server"), "{help}");
    assert!(help.contains("--log-level"), "{help}");

    let output = punie(&home, &["serve", "--server", "ws://127.0.0.1:1/acp"], &[]).await;
    assert_usage_error(&output, "--host and --port", "serve --server");

    let status_help = punie(&home, &["status", "--help"], &[]).await;
    assert!(text(&status_help.stdout).contains("--server"));
}

#[tokio::test]
async fn bad_flag_values_are_usage_errors() {
    let home = Home::new();
    let output = punie(&home, &["serve", "--port", "0", "--model", "bogus"], &[]).await;
    assert_usage_error(&output, "unknown model `bogus`", "--model");

    let output = punie(
        &home,
        &["serve", "--port", "0"],
        &[("PUNIE_MODEL", "bogus")],
    )
    .await;
    assert_usage_error(&output, "unknown model `bogus`", "PUNIE_MODEL");

    let settings = Home::with_settings("[serve]\nmodel = \"bogus\"\n");
    let output = punie(&settings, &["serve", "--port", "0"], &[]).await;
    assert_usage_error(&output, "config/punie/config.toml", "model in the settings");

    let output = punie(
        &home,
        &["serve", "--port", "0", "--offer-model", "ollama:"],
        &[],
    )
    .await;
    assert_usage_error(&output, "--offer-model", "--offer-model");

    // A variable the model reads is named as the fault, not the spec.
    let output = punie(
        &home,
        &["serve", "--port", "0", "--model", "openai:gpt-4.1"],
        &[("OPENAI_BASE_URL", "127.0.0.1:5000/v1")],
    )
    .await;
    assert_usage_error(
        &output,
        "OPENAI_BASE_URL `127.0.0.1:5000/v1` is not a URL",
        "OPENAI_BASE_URL",
    );
    assert!(
        !text(&output.stderr).contains("from --model"),
        "{}",
        text(&output.stderr)
    );

    for (server, expected) in [
        ("ftp://x", "unsupported scheme"),
        ("notaurl", "is not a URL"),
    ] {
        let output = punie(&home, &["status", "--server", server], &[]).await;
        assert_usage_error(&output, expected, server);
        let output = punie(&home, &["ask", "hello"], &[("PUNIE_SERVER", server)]).await;
        assert_usage_error(&output, expected, server);
    }

    let output = punie(&home, &["--drain-timeout=-1"], &[]).await;
    assert_usage_error(&output, "--drain-timeout", "--drain-timeout");
}

#[tokio::test]
async fn a_server_url_that_names_no_server_is_a_usage_error_for_every_client() {
    let home = Home::new();
    for (server, expected) in [
        ("http://127.0.0.1:99999", "port must be a number"),
        ("http://127.0.0.1:0", "port must be a number"),
        ("http://[::1", "no closing `]`"),
        ("ws://user:pw@/acp", "names no host"),
        ("ws:///acp", "names no host"),
        ("http://a b", "no spaces"),
    ] {
        for (args, env) in [
            (vec!["status", "--server", server], vec![]),
            (vec!["ask", "--server", server, "hi"], vec![]),
            (vec!["ask", "hi"], vec![("PUNIE_SERVER", server)]),
        ] {
            let output = punie(&home, &args, &env).await;
            let what = format!("{args:?} {env:?}");
            assert_usage_error(&output, expected, &what);
            let stderr = text(&output.stderr);
            assert!(stderr.contains(server), "{what}: names the URL: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        }
    }
    for command in [&[][..], &["stop"], &["sessions"], &["open", "--print"]] {
        let args = [command, &["--server", "http://[::1"]].concat();
        let output = punie(&home, &args, &[]).await;
        assert_usage_error(&output, "no closing `]`", &format!("{args:?}"));
    }
}

#[tokio::test]
async fn an_empty_punie_server_names_no_server() {
    let home = Home::new();
    let recorded = home.record_a_gone_server();
    let output = punie(&home, &["status", "--json"], &[("PUNIE_SERVER", "")]).await;
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let status: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the answer is JSON");
    assert_eq!(status["url"], recorded, "the recorded server is asked");

    // Given on the command line, it is still a mistake.
    let output = punie(&home, &["status", "--server", ""], &[]).await;
    assert_usage_error(&output, "is not a URL", "--server ''");
}

#[tokio::test]
async fn the_log_on_a_terminal_is_coloured_unless_no_color_has_a_value() {
    // no-color.org: an empty NO_COLOR is as good as none.
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let home = Home::new();
        let mut command = home.command();
        command.args(["serve", "--port", "0"]);
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let (mut terminal, mut child) = support::terminal::Terminal::spawn(command);
        terminal.wait_for("ready in").await;
        let screen = terminal.screen();
        assert_eq!(
            screen.contains('\u{1b}'),
            coloured,
            "NO_COLOR {no_color:?}: {screen:?}"
        );
        let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("the server takes a signal");
        let status = within("the server to stop", child.wait()).await.unwrap();
        assert_eq!(status.code(), Some(0), "{}", terminal.screen());
    }
}

#[tokio::test]
async fn values_no_command_could_use_are_usage_errors() {
    let home = Home::new();
    for (args, expected) in [
        (
            &["serve", "--port", "0", "--model-idle-timeout", "0"][..],
            "--model-idle-timeout must be more than 0 seconds",
        ),
        (
            &["serve", "--port", "0", "--allowed-host", "http://x/"],
            "is not a host name",
        ),
        (
            &["serve", "--port", "0", "--allowed-host", " "],
            "a host name is needed",
        ),
        (&["sessions", "delete", " "], "needs the id of a session"),
        (
            &["ask", "--session", "", "hi"],
            "'--session <ID>': it is blank",
        ),
        (&["init", "--server", "ftp://x", "--zed"], "--server"),
    ] {
        let output = punie(&home, args, &[]).await;
        assert_usage_error(&output, expected, &args.join(" "));
    }
}

#[tokio::test]
async fn a_blank_variable_is_as_good_as_none() {
    let home = Home::new();
    let mut command = home.command();
    command
        .args(["serve", "--port", "0"])
        .env("PUNIE_MODEL", "")
        .env("PUNIE_MAX_TOOL_ROUNDS", " ");
    let server = Server::spawn(home, command).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let answer = client.prompt(&session, "hello").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
}
