//! `punie sessions --cwd` finds a workspace's sessions as `session/list`
//! does: by where the directory leads now, and as it was written.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;
use support::{Home, Server, text, within};

/// `punie <args>` run from `dir` against `home`'s server.
async fn punie(home: &Home, dir: &Path, args: &[&str]) -> Output {
    within(
        &format!("punie {}", args.join(" ")),
        home.command()
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("punie runs")
}

/// The ids `punie sessions --cwd DIR --json` prints.
async fn listed_in(server: &Server, dir: &Path) -> Vec<String> {
    let dir = dir.to_str().expect("a UTF-8 temporary path");
    let output = punie(
        &server.home,
        &server.home.workspace(),
        &["sessions", "--cwd", dir, "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let sessions: Value = serde_json::from_slice(&output.stdout).expect("it prints JSON");
    sessions
        .as_array()
        .expect("an array")
        .iter()
        .map(|session| session["sessionId"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_link_pointed_elsewhere_still_lists_the_sessions_made_through_it() {
    let server = Server::start().await;
    let root = server.home.dir.path().to_owned();
    let (first, second, link) = (root.join("first"), root.join("second"), root.join("link"));
    std::fs::create_dir(&first).expect("a directory");
    std::fs::create_dir(&second).expect("a directory");
    std::os::unix::fs::symlink(&first, &link).expect("a symlink");
    let mut client = server.initialized().await;
    let session = vec![client.new_session(&link).await];
    assert_eq!(listed_in(&server, &link).await, session);
    assert_eq!(listed_in(&server, &first).await, session);

    std::fs::remove_file(&link).expect("the link can be removed");
    std::os::unix::fs::symlink(&second, &link).expect("a symlink");
    assert_eq!(listed_in(&server, &link).await, session, "as written");
    assert!(listed_in(&server, &second).await.is_empty());

    // Said empty under the name it was given, not where it leads.
    let output = punie(&server.home, &root, &["sessions", "--cwd", "second"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stderr).contains(&format!("no sessions in {}", second.display())),
        "{}",
        text(&output.stderr)
    );
}
