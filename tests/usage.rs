//! The command line: a flag or setting that cannot mean anything sensible is
//! a usage error (exit status 2) that says why, before anything starts; the
//! settings file takes what `punie serve --help` lists.

mod support;

use std::process::{Output, Stdio};

use support::{Home, text, within};

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

/// A home whose settings file holds `settings`.
fn home_with_settings(settings: &str) -> Home {
    let home = Home::new();
    let dir = home.dir.path().join("config/punie");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), settings).unwrap();
    home
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

    let home = home_with_settings("[serve]\nping-interval = 30\npong-timeout = 30\n");
    let output = punie(&home, &["serve", "--port", "0"], &[]).await;
    assert_usage_error(&output, "must be longer than --ping-interval", "settings");
}
