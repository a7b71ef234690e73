//! Sessions the server keeps, seen from the command line: `punie ask
//! --session`/`--continue` going on with one, and `punie sessions` listing and
//! deleting them. The `test` model numbers its turns, so an answer shows
//! whether the conversation went on.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use support::{Home, Server, json_lines, text, within};

/// `punie <args>` from `dir`, which must succeed and print JSON.
async fn json(server: &Server, dir: &Path, args: &[&str]) -> Value {
    let output = server.home.run_in(dir, args).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "punie {}: {}",
        args.join(" "),
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("it prints JSON")
}

/// `punie ask --output json <args>` from `dir`.
async fn ask(server: &Server, dir: &Path, args: &[&str]) -> Value {
    json(server, dir, &[&["ask", "--output", "json"], args].concat()).await
}

/// A new session in `dir`, asked `prompt` once; its id.
async fn new_session(server: &Server, dir: &Path, prompt: &str) -> String {
    let answer = ask(server, dir, &[prompt]).await;
    answer["sessionId"]
        .as_str()
        .expect("the answer names its session")
        .to_owned()
}

/// `punie sessions --json <args>` from `dir`.
async fn listed(server: &Server, dir: &Path, args: &[&str]) -> Vec<Value> {
    match json(server, dir, &[&["sessions", "--json"], args].concat()).await {
        Value::Array(sessions) => sessions,
        other => panic!("--json prints an array, got {other}"),
    }
}

fn ids(sessions: &[Value]) -> Vec<&str> {
    sessions
        .iter()
        .map(|session| {
            session["sessionId"]
                .as_str()
                .expect("every session has an id")
        })
        .collect()
}

/// The two workspaces of a test, as the server records them: real paths.
fn workspaces(home: &Home) -> (PathBuf, PathBuf) {
    let elsewhere = home.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("a second workspace");
    (
        std::fs::canonicalize(home.workspace()).expect("the workspace exists"),
        std::fs::canonicalize(elsewhere).expect("the second workspace exists"),
    )
}

#[tokio::test]
async fn ask_with_a_session_id_goes_on_with_that_conversation() {
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let id = new_session(&server, &workspace, "first question").await;

    let second = ask(&server, &workspace, &["--session", &id, "second question"]).await;
    assert_eq!(second["sessionId"], id.as_str());
    assert_eq!(
        second["text"],
        "Turn 2. You said: \"second question\". Before that you said: \"first question\"."
    );

    let third = server
        .home
        .run_in(&workspace, &["ask", "--session", &id, "third"])
        .await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stderr));
    assert_eq!(
        text(&third.stdout),
        "Turn 3. You said: \"third\". Before that you said: \"second question\".\n",
        "only the new answer, no replay of the earlier turns"
    );
}

#[tokio::test]
async fn a_session_goes_on_in_its_own_workspace_wherever_ask_runs() {
    let home = Home::new();
    let script = home.script_model(
        r#"[[{"text": "Hello."}],
            [{"tool_call": {"id": "c1", "name": "read_file", "arguments": {"path": "notes.txt"}}}],
            [{"text": "Read it."}]]"#,
    );
    let server = Server::start_in(home, &["--model", &script]).await;
    let (workspace, elsewhere) = workspaces(&server.home);
    std::fs::write(
        workspace.join("notes.txt"),
        "kept in the session's workspace\n",
    )
    .unwrap();
    let id = new_session(&server, &workspace, "hello").await;

    // Run from another directory: the session's files are still the ones read.
    let answer = ask(&server, &elsewhere, &["--session", &id, "read the notes"]).await;
    assert_eq!(answer["stopReason"], "end_turn", "{answer}");
    assert_eq!(answer["toolCalls"][0]["status"], "completed", "{answer}");

    let both = server
        .home
        .run_in(
            &elsewhere,
            &["ask", "--session", &id, "--workspace", "/tmp", "x"],
        )
        .await;
    assert_eq!(both.status.code(), Some(2), "{}", text(&both.stderr));
}

#[tokio::test]
async fn continue_goes_on_with_the_newest_session_of_the_workspace() {
    let server = Server::start().await;
    let (workspace, elsewhere) = workspaces(&server.home);
    new_session(&server, &workspace, "older").await;
    let newer = new_session(&server, &workspace, "newer").await;
    let other = new_session(&server, &elsewhere, "other workspace").await;

    let output = server
        .home
        .run_in(
            &workspace,
            &["ask", "--continue", "--output", "stream-json", "and then?"],
        )
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines = json_lines(&output.stdout);
    let result = lines.last().expect("a result line");
    assert_eq!(
        result["sessionId"],
        newer.as_str(),
        "the newest session of this workspace, not the newest of all"
    );
    let answer: String = lines
        .iter()
        .filter(|line| line["update"]["sessionUpdate"] == "agent_message_chunk")
        .filter_map(|line| line["update"]["content"]["text"].as_str())
        .collect();
    assert_eq!(
        answer,
        "Turn 2. You said: \"and then?\". Before that you said: \"newer\"."
    );

    let answer = ask(
        &server,
        &workspace,
        &[
            "--continue",
            "--workspace",
            elsewhere.to_str().expect("a UTF-8 path"),
            "more",
        ],
    )
    .await;
    assert_eq!(answer["sessionId"], other.as_str(), "--workspace picks it");
    assert_eq!(
        answer["text"],
        "Turn 2. You said: \"more\". Before that you said: \"other workspace\"."
    );
}

#[tokio::test]
async fn continue_without_a_session_in_the_workspace_says_so() {
    let server = Server::start().await;
    let (workspace, elsewhere) = workspaces(&server.home);
    new_session(&server, &elsewhere, "not here").await;

    let output = server
        .home
        .run_in(&workspace, &["ask", "--continue", "hello"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&workspace.display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("drop --continue"),
        "says how to go on: {stderr}"
    );
}

#[tokio::test]
async fn session_and_continue_cannot_be_combined() {
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let output = server
        .home
        .run_in(
            &workspace,
            &["ask", "--session", "some-id", "--continue", "hello"],
        )
        .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("--continue"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn an_unknown_session_is_reported_saying_where_the_sessions_are_listed() {
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);

    let output = server
        .home
        .run_in(
            &workspace,
            &["ask", "--session", "no-such-session", "hello"],
        )
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("no-such-session"), "{stderr}");

    let output = server
        .home
        .run_in(&workspace, &["sessions", "delete", "no-such-session"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("there is no session no-such-session; `punie sessions` lists them"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("session/"),
        "no protocol wording: {stderr}"
    );
    assert!(!stderr.contains("deleted"), "{stderr}");
}

#[tokio::test]
async fn sessions_lists_every_session_newest_first() {
    let server = Server::start().await;
    let (workspace, elsewhere) = workspaces(&server.home);
    let older = new_session(&server, &workspace, "older").await;
    let newer = new_session(&server, &workspace, "newer").await;
    let other = new_session(&server, &elsewhere, "other workspace").await;

    let sessions = listed(&server, &workspace, &[]).await;
    assert_eq!(ids(&sessions), [&other, &newer, &older]);
    assert_eq!(
        sessions[0]["cwd"],
        elsewhere.to_str().expect("a UTF-8 path")
    );
    assert_eq!(
        sessions[2]["cwd"],
        workspace.to_str().expect("a UTF-8 path")
    );
    assert_eq!(sessions[2]["title"], "older", "named by its first prompt");
    for session in &sessions {
        assert!(session["updatedAt"].is_string(), "{session}");
    }

    let output = server.home.run_in(&workspace, &["sessions"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and one line each: {table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    for (line, id) in lines[1..].iter().zip([&other, &newer, &older]) {
        assert!(line.starts_with(id.as_str()), "{table}");
    }
    assert!(lines[3].contains("older"), "{table}");
    assert!(
        lines[3].ends_with(workspace.to_str().expect("a UTF-8 path")),
        "{table}"
    );

    let here = listed(
        &server,
        &elsewhere,
        &["--cwd", workspace.to_str().expect("a UTF-8 path")],
    )
    .await;
    assert_eq!(ids(&here), [&newer, &older]);
    let relative = listed(&server, &elsewhere, &["--cwd", "."]).await;
    assert_eq!(ids(&relative), [&other]);
}

/// Titles of wide (CJK), combining and zero-width characters take as many
/// columns on a terminal as they show, and the table stays in line.
#[tokio::test]
async fn the_table_lines_up_titles_by_the_columns_they_take() {
    use unicode_width::UnicodeWidthStr as _;
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let titles = [
        "日本語のタイトル長い",
        "e\u{301}\u{301}\u{301} combining",
        "zero\u{200b}width\u{200d}",
    ];
    for title in titles {
        new_session(&server, &workspace, title).await;
    }
    let output = server.home.run_in(&workspace, &["sessions"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    let cwd = workspace.to_str().expect("a UTF-8 path");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let cwd_at = |line: &str, cwd: &str| {
        let at = line
            .rfind(cwd)
            .unwrap_or_else(|| panic!("{cwd} in {line:?}"));
        line[..at].width()
    };
    let header = cwd_at(lines[0], "CWD");
    for line in &lines[1..] {
        assert_eq!(cwd_at(line, cwd), header, "{table}");
    }
    for title in titles {
        assert!(table.contains(title), "{table}");
    }
}

/// However a client spells a directory, its sessions are listed together
/// under one spelling, and a filter finds them by any spelling.
#[tokio::test]
async fn a_workspace_has_one_spelling() {
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let named = workspace.to_str().expect("a UTF-8 path");
    let leaf = workspace
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a named workspace");
    let mut client = server.initialized().await;
    let mut created = Vec::new();
    for spelling in [
        named.to_owned(),
        format!("{named}/"),
        format!("{named}//"),
        format!("{named}/./"),
        format!("{named}/../{leaf}"),
    ] {
        created.push(client.new_session(Path::new(&spelling)).await);
    }
    created.sort_unstable();

    for filter in [
        named.to_owned(),
        format!("{named}/"),
        format!("{named}/../{leaf}/."),
    ] {
        let listed = client.request("session/list", json!({"cwd": filter})).await;
        let sessions = listed["result"]["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("a list: {listed}"));
        assert!(
            sessions.iter().all(|session| session["cwd"] == named),
            "one spelling: {listed}"
        );
        let mut found: Vec<&str> = sessions
            .iter()
            .filter_map(|session| session["sessionId"].as_str())
            .collect();
        found.sort_unstable();
        assert_eq!(found, created, "listed under `{filter}`");
    }
}

#[tokio::test]
async fn sessions_follows_every_page() {
    const SESSIONS: usize = 101; // one more than a page
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let mut client = server.initialized().await;
    for n in 0..SESSIONS {
        let session = client.new_session(&workspace).await;
        let response = client.prompt(&session, &format!("question {n}")).await;
        assert!(response.get("result").is_some(), "{response}");
    }

    let sessions = listed(&server, &workspace, &[]).await;
    let mut unique = ids(&sessions);
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), SESSIONS, "every session, once");
    assert_eq!(sessions.len(), SESSIONS);
}

#[tokio::test]
async fn a_deleted_session_is_gone() {
    const SECRET: &str = "the deleted session's secret 7f3a9c";
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let doomed = new_session(&server, &workspace, SECRET).await;
    let kept = new_session(&server, &workspace, "to be kept").await;
    let mut watcher = server.initialized().await;
    watcher.request("_punie/watch", json!({})).await;

    let output = server
        .home
        .run_in(&workspace, &["sessions", "delete", &doomed])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // A client watching the server hears of it, though the session was
    // not in memory.
    let told = loop {
        let message = watcher.recv().await;
        if message["method"] == "_punie/session_status" && message["params"]["sessionId"] == doomed
        {
            break message;
        }
    };
    assert_eq!(told["params"]["status"], "deleted", "{told}");
    assert_eq!(told["params"]["cwd"], json!(workspace), "{told}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&doomed), "{stderr}");

    assert_eq!(ids(&listed(&server, &workspace, &[]).await), [&kept]);
    let output = server
        .home
        .run_in(&workspace, &["ask", "--session", &doomed, "hello"])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));

    // Gone from disk, not only from the lists: neither the database's free
    // pages nor its write-ahead log keep the prompt.
    let database = server.home.database();
    for file in ["punie.db", "punie.db-wal"] {
        let path = database.with_file_name(file);
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes
                .windows(SECRET.len())
                .any(|window| window == SECRET.as_bytes()),
            "{} still holds the deleted prompt",
            path.display()
        );
    }
}

#[tokio::test]
async fn sessions_outlive_the_server() {
    let mut server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    let id = new_session(&server, &workspace, "before the restart").await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    let Server { home, .. } = server;

    let server = Server::start_in(home, &[]).await;
    assert_eq!(ids(&listed(&server, &workspace, &[]).await), [&id]);
    let answer = ask(&server, &workspace, &["--continue", "after it"]).await;
    assert_eq!(answer["sessionId"], id.as_str());
    assert_eq!(
        answer["text"],
        "Turn 2. You said: \"after it\". Before that you said: \"before the restart\"."
    );
}

#[tokio::test]
async fn no_sessions_is_an_empty_list() {
    let server = Server::start().await;
    let (workspace, _) = workspaces(&server.home);
    assert!(listed(&server, &workspace, &[]).await.is_empty());
    let output = server.home.run_in(&workspace, &["sessions"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
}

#[tokio::test]
async fn with_no_server_the_exit_status_is_3() {
    let home = Home::new();
    let nowhere = format!("ws://127.0.0.1:{}/acp", support::unused_port());
    for args in [
        &["sessions"][..],
        &["sessions", "--json"],
        &["sessions", "delete", "some-id"],
        &["ask", "--continue", "hello"],
        &["ask", "--session", "some-id", "hello"],
    ] {
        let output = home
            .run_in(&home.workspace(), &[args, &["--server", &nowhere]].concat())
            .await;
        assert_eq!(output.status.code(), Some(3), "punie {}", args.join(" "));
        assert!(output.stdout.is_empty(), "punie {}", args.join(" "));
        assert!(
            text(&output.stderr).contains("punie serve"),
            "punie {}: {}",
            args.join(" "),
            text(&output.stderr)
        );
    }
}

#[tokio::test]
async fn delete_takes_no_listing_flags() {
    let home = Home::new();
    let output = home
        .run_in(
            &home.workspace(),
            &["sessions", "--json", "delete", "some-id"],
        )
        .await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}

#[tokio::test]
async fn an_empty_token_file_is_named_as_empty_with_its_fix() {
    let server = Server::start().await;
    std::fs::write(server.home.token_file(), "").unwrap();
    let output = server
        .home
        .run_in(&server.home.workspace(), &["sessions"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("{} is empty", server.home.token_file().display()))
            && stderr.contains("punie serve")
            && stderr.contains("PUNIE_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("does not exist"), "{stderr}");

    // PUNIE_TOKEN set empty is no token either, not a mistake of its own.
    let output = within(
        "punie sessions",
        server
            .home
            .command()
            .arg("sessions")
            .env("PUNIE_TOKEN", "")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let stderr = text(&output.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
}

#[tokio::test]
async fn deleting_without_an_id_says_an_id_is_needed() {
    let home = Home::new();
    for id in ["", " "] {
        let output = home
            .run_in(home.dir.path(), &["sessions", "delete", id])
            .await;
        let stderr = text(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{id:?}: {stderr}");
        assert!(
            stderr.contains("needs the id of a session") && !stderr.contains("there is no session"),
            "{id:?}: {stderr}"
        );
    }
}
