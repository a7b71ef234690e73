//! `punie sessions --cwd` finds a workspace's sessions as `session/list`
//! does: by where the directory leads now, and as it was written.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{Server, text};

/// Two directories in the server's home, `first` and `second`, and `link`
/// to the first.
struct Linked {
    root: PathBuf,
    first: PathBuf,
    second: PathBuf,
    link: PathBuf,
}

impl Linked {
    fn new(server: &Server) -> Self {
        let root = server.home.dir.path().to_owned();
        let (first, second, link) = (root.join("first"), root.join("second"), root.join("link"));
        std::fs::create_dir(&first).expect("a directory");
        std::fs::create_dir(&second).expect("a directory");
        std::os::unix::fs::symlink(&first, &link).expect("a symlink");
        Self {
            root,
            first,
            second,
            link,
        }
    }

    /// `link` now leads to `second`.
    fn point_elsewhere(&self) {
        std::fs::remove_file(&self.link).expect("the link can be removed");
        std::os::unix::fs::symlink(&self.second, &self.link).expect("a symlink");
    }
}

/// The ids `punie sessions --cwd DIR --json` prints.
async fn listed_in(server: &Server, dir: &Path) -> Vec<String> {
    let dir = dir.to_str().expect("a UTF-8 temporary path");
    let output = server
        .home
        .run_in(
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
    let dirs = Linked::new(&server);
    let mut client = server.initialized().await;
    let session = vec![client.new_session(&dirs.link).await];
    assert_eq!(listed_in(&server, &dirs.link).await, session);
    assert_eq!(listed_in(&server, &dirs.first).await, session);

    dirs.point_elsewhere();
    assert_eq!(listed_in(&server, &dirs.link).await, session, "as written");
    assert!(listed_in(&server, &dirs.second).await.is_empty());

    // Said empty under the name it was given, not where it leads.
    let output = server
        .home
        .run_in(&dirs.root, &["sessions", "--cwd", "second"])
        .await;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stderr).contains(&format!("no sessions in {}", dirs.second.display())),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn ask_continue_through_a_link_pointed_elsewhere_goes_on_with_what_was_made_through_it() {
    let server = Server::start().await;
    let dirs = Linked::new(&server);
    let session = server.initialized().await.new_session(&dirs.link).await;

    dirs.point_elsewhere();
    let output = server
        .home
        .run_in(
            &dirs.root,
            &[
                "ask",
                "--continue",
                "--workspace",
                "link",
                "--output",
                "json",
                "again",
            ],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("it prints JSON");
    assert_eq!(answer["sessionId"], session.as_str(), "{answer}");
}
