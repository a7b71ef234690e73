//! `punie ask`: one question, a new session, the answer streamed to stdout.

mod support;

use std::process::{Output, Stdio};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use support::hand_written::HandWrittenAgent;
use support::terminal::Terminal;
use support::{
    Home, Server, full_disk, json_lines, make_fifo, reader_gone, run_with, stderr_of, text, within,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn ask(server: &Server, args: &[&str]) -> Output {
    ask_in(server, &server.home.workspace(), args).await
}

/// `punie ask <args>` run in `dir`, with nothing on stdin and no terminal:
/// nobody answers its questions, even when the tests run at one.
async fn ask_in(server: &Server, dir: &std::path::Path, args: &[&str]) -> Output {
    let mut command = server.home.command();
    command
        .arg("ask")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    within("punie ask", command.output())
        .await
        .expect("punie ask runs")
}

#[tokio::test]
async fn the_answer_streams_to_stdout_and_nothing_else_does() {
    let server = Server::start().await;
    let output = ask(&server, &["what is this?"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "Turn 1. You said: \"what is this?\". That is the first thing you said.\n"
    );
    assert!(
        !text(&output.stderr).contains('\u{1b}'),
        "no colour or spinner when stderr is not a terminal: {:?}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn every_invocation_is_a_new_session_in_the_workspace() {
    let server = Server::start().await;
    let other = server.home.dir.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let first = ask(&server, &["one", "--output", "json"]).await;
    let second = ask(
        &server,
        &[
            "two",
            "--output",
            "json",
            "--workspace",
            other.to_str().unwrap(),
        ],
    )
    .await;
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_ne!(first["sessionId"], second["sessionId"]);
    assert!(
        second["text"].as_str().unwrap().starts_with("Turn 1."),
        "a fresh conversation"
    );
    // Each in its own workspace: the current directory, or --workspace.
    let mut client = server.initialized().await;
    let listed = client.request("session/list", json!({})).await;
    let cwd_of = |answer: &Value| {
        let sessions = listed["result"]["sessions"].as_array().unwrap();
        let session = sessions
            .iter()
            .find(|session| session["sessionId"] == answer["sessionId"])
            .unwrap_or_else(|| panic!("{answer} in {listed}"));
        std::path::PathBuf::from(session["cwd"].as_str().unwrap())
    };
    let canonical = |path: &std::path::Path| std::fs::canonicalize(path).unwrap();
    assert_eq!(cwd_of(&first), canonical(&server.home.workspace()));
    assert_eq!(cwd_of(&second), canonical(&other));
}

#[tokio::test]
async fn json_prints_one_object_at_the_end() {
    let server = Server::start().await;
    let output = ask(&server, &["--output", "json", "hi"]).await;
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["stopReason"], "end_turn");
    assert_eq!(
        answer["text"],
        "Turn 1. You said: \"hi\". That is the first thing you said."
    );
    assert!(answer["sessionId"].as_str().is_some());
    assert_eq!(answer["toolCalls"], serde_json::json!([]));
}

#[tokio::test]
async fn stream_json_prints_every_update_as_a_line_then_the_result() {
    let server = Server::start().await;
    let output = ask(&server, &["--output", "stream-json", "hi"]).await;
    assert_eq!(output.status.code(), Some(0));
    let lines = json_lines(&output.stdout);
    let chunks: Vec<&Value> = lines
        .iter()
        .filter(|line| line["update"]["sessionUpdate"] == "agent_message_chunk")
        .collect();
    assert_eq!(chunks.len(), 4, "each chunk as it arrived");
    let last = lines.last().unwrap();
    assert_eq!(last["stopReason"], "end_turn");
    assert_eq!(last["sessionId"], lines[0]["sessionId"]);
    assert_eq!(
        last["text"], "Turn 1. You said: \"hi\". That is the first thing you said.",
        "the last line is the object --output json prints"
    );
    assert_eq!(last["toolCalls"], json!([]));
}

/// A server whose model reads a file, starts answering, then fails.
async fn failing_server() -> Server {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "read_file", "arguments": {"path": "notes.txt"}}}],
            [{"text": "Half an answer"}, {"error": "the model fell over"}]
        ]),
        &[],
    )
    .await;
    std::fs::write(server.home.workspace().join("notes.txt"), "notes\n").unwrap();
    server
}

#[tokio::test]
async fn a_failed_prompt_still_prints_what_was_done_and_exits_1() {
    let server = failing_server().await;
    let output = ask(&server, &["--yes", "--output", "json", "read the notes"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "one object: {stdout}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|error| error.contains("the model fell over")),
        "{answer}"
    );
    assert!(answer["sessionId"].as_str().is_some(), "{answer}");
    assert_eq!(answer["text"], "Half an answer");
    assert_eq!(answer["toolCalls"][0]["status"], "completed", "{answer}");
    assert!(text(&output.stderr).contains("the model fell over"));

    let output = ask(
        &server,
        &["--yes", "--output", "stream-json", "read the notes"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let lines = json_lines(&output.stdout);
    let last = lines.last().unwrap();
    assert!(last["error"].as_str().is_some(), "{last}");
    assert_eq!(last["sessionId"], lines[0]["sessionId"]);
    assert_eq!(last["text"], "Half an answer");

    let output = ask(&server, &["--yes", "read the notes"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stdout),
        "Half an answer\n",
        "the partial answer ends its line"
    );
}

/// A 1×1 PNG.
const PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

#[tokio::test]
async fn attached_files_go_with_the_question_pictures_as_images() {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let server = Server::start().await;
    let workspace = server.home.workspace();
    std::fs::write(
        workspace.join("dot.png"),
        BASE64_STANDARD.decode(PIXEL_PNG).unwrap(),
    )
    .unwrap();
    std::fs::write(workspace.join("notes.txt"), "the notes\n").unwrap();

    let output = ask(
        &server,
        &[
            "--output",
            "stream-json",
            "-a",
            "dot.png",
            "--attach",
            "notes.txt",
            "What is this?",
        ],
    )
    .await;

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines = json_lines(&output.stdout);
    let sent: Vec<&Value> = lines
        .iter()
        .filter(|line| line["update"]["sessionUpdate"] == "user_message_chunk")
        .map(|line| &line["update"]["content"])
        .collect();
    assert!(
        sent.is_empty(),
        "the prompt is not echoed back to its sender: {sent:?}"
    );
    let answer = lines.last().expect("the result");
    let said = answer["text"].as_str().unwrap_or_default();
    // Named by its absolute path, from the directory ask ran in.
    let notes = std::fs::canonicalize(workspace.join("notes.txt")).unwrap();
    assert!(
        said.contains(&format!(
            "What is this?\nfile://{}:\nthe notes",
            notes.display()
        )),
        "the text file is read by the model: {said}"
    );
    assert!(
        said.ends_with("You showed me 1 picture (image/png)."),
        "the picture is shown to the model: {said}"
    );
}

#[tokio::test]
async fn a_file_that_cannot_be_attached_is_named_before_anything_is_sent() {
    let server = Server::start().await;
    let output = ask(&server, &["--attach", "missing.png", "What is this?"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("cannot attach missing.png"), "{stderr}");
    let health = server.health().await;
    assert_eq!(health["sessions"], 0, "no session was started: {health}");
}

#[tokio::test]
async fn an_endless_or_unreadable_attachment_is_refused_at_the_limit_and_nothing_is_sent() {
    let server = Server::start().await;
    // /dev/zero has no size to check beforehand: it is counted as it is read.
    let endless = ask(&server, &["--attach", "/dev/zero", "What is this?"]).await;
    assert_eq!(endless.status.code(), Some(1));
    let stderr = text(&endless.stderr);
    assert!(
        stderr.contains("cannot attach /dev/zero: the files come to more than 32 MiB"),
        "{stderr}"
    );
    let directory = ask(&server, &["--attach", ".", "What is this?"]).await;
    assert_eq!(directory.status.code(), Some(1));
    let stderr = text(&directory.stderr);
    assert!(
        stderr.contains("cannot attach .: it is a directory"),
        "{stderr}"
    );
    let health = server.health().await;
    assert_eq!(health["sessions"], 0, "no session was started: {health}");
}

#[tokio::test]
async fn the_question_can_come_from_stdin() {
    let server = Server::start().await;
    for args in [&["--output", "json"][..], &["-", "--output", "json"][..]] {
        let mut child = server
            .home
            .command()
            .arg("ask")
            .args(args)
            .current_dir(server.home.workspace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all("a question\nover two lines\n".as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let output = within("punie ask", child.wait_with_output()).await.unwrap();
        assert_eq!(output.status.code(), Some(0));
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            answer["text"],
            "Turn 1. You said: \"a question\nover two lines\". That is the first thing you said."
        );
    }
}

#[tokio::test]
async fn text_piped_in_goes_with_the_question_fenced() {
    let server = Server::start().await;
    let piped = "line one\n```rust\nfn x() {}\n```\n";
    let expected = "Turn 1. You said: \"review this\n\n````\nline one\n```rust\nfn x() {}\n```\n````\". That is the first thing you said.";
    // By a pipe, and from a file.
    let file = server.home.dir.path().join("piped.txt");
    std::fs::write(&file, piped).unwrap();
    for from_a_file in [false, true] {
        let mut command = server.home.command();
        command
            .args(["ask", "--output", "json", "review this"])
            .current_dir(server.home.workspace())
            .stdout(Stdio::piped());
        if from_a_file {
            command.stdin(std::fs::File::open(&file).unwrap());
        } else {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(piped.as_bytes()).await.unwrap();
        }
        let output = within("punie ask", child.wait_with_output()).await.unwrap();
        assert_eq!(output.status.code(), Some(0));
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(answer["text"], expected, "from a file: {from_a_file}");
    }
}

#[tokio::test]
async fn exit_codes_say_what_went_wrong() {
    let home = Home::new();
    let nowhere = format!("ws://127.0.0.1:{}/acp", support::unused_port());
    let no_server = home
        .command()
        .args(["ask", "--server", &nowhere, "hello"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(no_server.status.code(), Some(3));
    assert!(
        text(&no_server.stderr).contains("punie serve"),
        "{}",
        text(&no_server.stderr)
    );

    let server = Server::start().await;
    // A server that refuses is there: an error, not "no server".
    let refused = server
        .home
        .command()
        .args(["ask", "hello"])
        .env("PUNIE_TOKEN", "f".repeat(64))
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("refused the access token (401)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&server.home.token_file().display().to_string()),
        "names the token file where it is: {stderr}"
    );
    assert!(
        stderr.contains("PUNIE_TOKEN is set, and the server does not take that token"),
        "blames the token that was presented: {stderr}"
    );

    let empty = ask(&server, &[""]).await;
    assert_eq!(
        empty.status.code(),
        Some(2),
        "an empty question is a usage error"
    );
    let unknown_flag = ask(&server, &["--frobnicate", "x"]).await;
    assert_eq!(unknown_flag.status.code(), Some(2));
    let no_workspace = ask(&server, &["--workspace", "/no/such/dir", "hello"]).await;
    assert_eq!(no_workspace.status.code(), Some(1));
    assert!(
        text(&no_workspace.stderr).contains("/no/such/dir"),
        "{}",
        text(&no_workspace.stderr)
    );

    let help = ask(&server, &["--help"]).await;
    let help = text(&help.stdout);
    for documented in [
        "0 done",
        "1 error",
        "2 usage",
        "3 no server",
        "130 interrupted",
        "SIGTERM or SIGHUP, 143 or 129",
    ] {
        assert!(
            help.contains(documented),
            "--help documents `{documented}`: {help}"
        );
    }
}

/// What `stdout` printed, read until it holds `text`.
async fn read_until(stdout: &mut tokio::process::ChildStdout, text: &str, what: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(text) {
        let read = within(what, stdout.read(&mut buffer)).await.unwrap();
        assert!(read > 0, "stdout ended early");
        seen.extend_from_slice(&buffer[..read]);
    }
    seen
}

#[tokio::test]
async fn ctrl_c_cancels_the_turn_prints_what_arrived_and_exits_130() {
    let server = Server::start().await;
    let mut child = server
        .home
        .command()
        .args(["ask", "count to 1000"])
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = read_until(&mut stdout, " 3", "the count to start").await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let status = within("punie ask to stop", child.wait()).await.unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    seen.extend_from_slice(&rest);
    let printed = String::from_utf8_lossy(&seen).into_owned();
    assert_eq!(status.code(), Some(130));
    assert!(printed.starts_with("1 2 3"), "{printed}");
    assert!(
        !printed.contains("1000"),
        "the turn was cancelled: {printed}"
    );
    let stderr = stderr_of(&mut child).await;
    assert!(stderr.contains("cancelled"), "{stderr}");
}

#[tokio::test]
async fn ctrl_c_while_connecting_exits_130_at_once() {
    // A server that takes the connection and never answers the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/acp", listener.local_addr().unwrap());
    let home = Home::new();
    let mut child = home
        .command()
        .args(["ask", "--server", &url, "hello"])
        .env("PUNIE_TOKEN", "t".repeat(64))
        .current_dir(home.workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_held, _) = within("ask to connect", listener.accept()).await.unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let status = within("punie ask to stop", child.wait()).await.unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "an exit status, not death by the signal: {status:?}"
    );
}

/// A server on a `script:` model that reads, edits and runs in the workspace.
async fn tool_using_server() -> Server {
    let server = Server::scripted(json!([
        [{"tool_call": {"name": "read_file", "arguments": {"path": "notes.txt"}}}],
        [{"tool_call": {"name": "edit_file", "arguments": {"path": "notes.txt", "old_text": "old", "new_text": "new"}}}],
        [{"tool_call": {"name": "run_command", "arguments": {"command": "cat notes.txt > copy.txt"}}}],
        [{"tool_call": {"name": "read_file", "arguments": {"path": "../outside.txt"}}}],
        [{"text": "All done."}]
    ]), &[])
    .await;
    std::fs::write(server.home.workspace().join("notes.txt"), "old notes\n").unwrap();
    std::fs::write(server.home.dir.path().join("outside.txt"), "secret").unwrap();
    server
}

#[tokio::test]
async fn ask_serves_files_and_commands_from_its_own_workspace() {
    let server = tool_using_server().await;
    let output = ask(&server, &["--yes", "--output", "json", "tidy the notes"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let workspace = server.home.workspace();
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes.txt")).unwrap(),
        "new notes\n"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("copy.txt")).unwrap(),
        "new notes\n"
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["text"], "All done.");
    let statuses: Vec<&str> = answer["toolCalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|call| call["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["completed", "completed", "completed", "failed"],
        "the escape was refused"
    );
    assert_eq!(answer["toolCalls"][2]["kind"], "execute");
}

#[tokio::test]
async fn the_answer_goes_on_in_a_new_paragraph_after_a_tool_call() {
    let server = Server::scripted(
        json!([
            [{"text": "Reading."}, {"tool_call": {"name": "read_file", "arguments": {"path": "notes.txt"}}}],
            [{"text": "It says old."}]
        ]),
        &[],
    )
    .await;
    std::fs::write(server.home.workspace().join("notes.txt"), "old\n").unwrap();
    let output = ask(&server, &["read the notes"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "Reading.\n\nIt says old.\n");
    let output = ask(&server, &["--output", "json", "read the notes"]).await;
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["text"], "Reading.\n\nIt says old.");
}

#[tokio::test]
async fn the_answer_goes_on_in_a_new_paragraph_after_a_plan() {
    let server = Server::scripted(
        json!([
            [{"text": "final answer"}, {"tool_call": {"name": "update_plan", "arguments": {"entries": [
                {"content": "Check it", "status": "completed"}
            ]}}}],
            [{"text": "end"}]
        ]),
        &[],
    )
    .await;
    let output = ask(&server, &["plan it"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "final answer\n\nend\n");
    let output = ask(&server, &["--output", "json", "plan it"]).await;
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["text"], "final answer\n\nend");
}

#[tokio::test]
async fn ask_runs_the_agents_commands_in_a_terminal_of_its_own() {
    // Run by the server, a command's result is text; run through the
    // client's terminal, the tool call shows that terminal.
    let server = tool_using_server().await;
    let output = ask(
        &server,
        &["--yes", "--output", "stream-json", "tidy the notes"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines = json_lines(&output.stdout);
    let terminals: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|line| line["update"]["sessionUpdate"] == "tool_call_update")
        .flat_map(|line| line["update"]["content"].as_array().into_iter().flatten())
        .filter(|content| content["type"] == "terminal")
        .filter_map(|content| content["terminalId"].as_str())
        .collect();
    assert_eq!(terminals.len(), 1, "{}", text(&output.stdout));
}

#[tokio::test]
async fn ask_shows_the_models_plan_as_a_short_list_on_stderr() {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "update_plan", "arguments": {"entries": [
                {"content": "Read the notes", "status": "completed"},
                {"content": "Tidy them", "status": "in_progress"},
                {"content": "Say what changed", "status": "pending"}
            ]}}}],
            [{"text": "Planned."}]
        ]),
        &[],
    )
    .await;
    let output = ask(&server, &["plan it"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "Planned.\n",
        "stdout carries only the answer"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("Plan:\n  [x] Read the notes\n  [>] Tidy them\n  [ ] Say what changed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn ask_reports_each_tool_call_on_stderr_and_rejects_when_nobody_can_answer() {
    let server = tool_using_server().await;
    let output = ask(&server, &["tidy the notes"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "All done.\n",
        "stdout carries only the answer"
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains("✓ Read notes.txt"), "{stderr}");
    assert!(stderr.contains("✗ Edit notes.txt"), "{stderr}");
    assert!(stderr.contains("rejected"), "says why: {stderr}");
    assert_eq!(
        std::fs::read_to_string(server.home.workspace().join("notes.txt")).unwrap(),
        "old notes\n",
        "nothing was changed without permission"
    );
    assert!(!server.home.workspace().join("copy.txt").exists());
}

#[tokio::test]
async fn ask_chooses_the_sessions_mode_and_model_and_says_when_it_cannot() {
    let server = tool_using_server().await;
    let output = ask(&server, &["--mode", "edit", "tidy the notes"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let workspace = server.home.workspace();
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes.txt")).unwrap(),
        "new notes\n",
        "the edit went ahead without asking"
    );
    assert!(
        !workspace.join("copy.txt").exists(),
        "the command still asked, and nobody could answer"
    );

    let output = ask(&server, &["--model", "no-such-model", "hello"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("unknown model `no-such-model`"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was asked");
    let output = ask(
        &server,
        &["--continue", "--model", "no-such-model", "hello"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot use the model `no-such-model`"),
        "{stderr}"
    );
    let sessions = server
        .home
        .command()
        .args(["sessions", "--json"])
        .output()
        .await
        .unwrap();
    let listed: Value = serde_json::from_slice(&sessions.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "a refused model left no session behind: {listed}"
    );

    let output = ask(&server, &["--mode", "yolo", "hello"]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("there is no mode `yolo`; the modes are `ask`, `edit`, `read-only`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn ask_completes_a_tool_using_turn_against_a_model_server() {
    use support::fake_provider::{FakeProvider, Reply, openai_text_reply, openai_tool_call_reply};
    let provider = FakeProvider::start([
        Reply::events(openai_tool_call_reply(
            "call_read",
            "read_file",
            json!({"path": "notes.txt"}),
        )),
        Reply::events(openai_tool_call_reply(
            "call_edit",
            "edit_file",
            json!({"path": "notes.txt", "old_text": "old", "new_text": "new"}),
        )),
        Reply::events(openai_tool_call_reply(
            "call_run",
            "run_command",
            json!({"command": "cat notes.txt; echo from-the-terminal"}),
        )),
        Reply::events(openai_text_reply(&["It printed ", "from-the-terminal."])),
    ])
    .await;
    let model = format!("local:{}/v1/fake", provider.url());
    let server = Server::start_in(Home::new(), &["--model", &model]).await;
    let notes = server.home.workspace().join("notes.txt");
    std::fs::write(&notes, "old notes\n").unwrap();
    let output = ask(&server, &["--yes", "tidy the notes, then run it"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "It printed from-the-terminal.\n");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "new notes\n");
    let stderr = text(&output.stderr);
    for done in [
        "✓ Read notes.txt",
        "✓ Edit notes.txt",
        "✓ Run `cat notes.txt; echo from-the-terminal`",
    ] {
        assert!(stderr.contains(done), "{done}: {stderr}");
    }
    // Each call's result is the last message of the next request.
    let requests = provider.requests();
    assert_eq!(requests.len(), 4);
    let result = |request: usize, id: &str| {
        let messages = requests[request].body["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        assert_eq!(last["role"], "tool", "{last}");
        assert_eq!(last["tool_call_id"], id, "{last}");
        last["content"].as_str().unwrap().to_owned()
    };
    assert_eq!(result(1, "call_read"), "old notes\n");
    assert_eq!(result(2, "call_edit"), "Edited notes.txt.");
    let ran = result(3, "call_run");
    assert!(
        ran.starts_with("exit code 0") && ran.contains("new notes\nfrom-the-terminal"),
        "the command saw the edit: {ran}"
    );
}

/// An agent that asks `punie ask` for files and a terminal outside the
/// workspace. Punie's server refuses such paths before they reach a client,
/// so only a misbehaving agent can show that `ask` refuses them too. It
/// answers the prompt once every request has been answered, and hands back
/// the answers by request id, and the capabilities the client offered.
async fn misbehaving_agent(
    listener: tokio::net::TcpListener,
    requests: Vec<(&'static str, Value)>,
) -> (std::collections::HashMap<u64, Value>, Value) {
    let mut agent = HandWrittenAgent::accept(listener).await;
    let mut answers = std::collections::HashMap::new();
    let mut prompt_id = None;
    while let Some(message) = agent.next().await {
        match message["method"].as_str() {
            Some("session/prompt") => {
                prompt_id = Some(message["id"].clone());
                for (id, (method, params)) in requests.iter().enumerate() {
                    agent
                        .send(json!({"jsonrpc": "2.0", "id": 100 + id, "method": method, "params": params}))
                        .await;
                }
            }
            Some(_) => {}
            None => {
                answers.insert(message["id"].as_u64().unwrap(), message);
                if answers.len() == requests.len() {
                    agent
                        .send(json!({"jsonrpc": "2.0", "id": prompt_id.take(), "result": {"stopReason": "end_turn"}}))
                        .await;
                }
            }
        }
    }
    (answers, agent.client_capabilities)
}

#[tokio::test]
async fn asks_own_files_and_terminals_refuse_paths_outside_the_workspace() {
    let home = Home::new();
    let workspace = home.workspace();
    std::fs::write(workspace.join("inside.txt"), "inside\n").unwrap();
    let outside = home.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), workspace.join("link")).unwrap();
    let escapes = [
        (
            "fs/read_text_file",
            json!({"sessionId": "s1", "path": outside.join("secret.txt")}),
        ),
        (
            "fs/read_text_file",
            json!({"sessionId": "s1", "path": workspace.join("../outside/secret.txt")}),
        ),
        (
            "fs/read_text_file",
            json!({"sessionId": "s1", "path": workspace.join("link")}),
        ),
        (
            "fs/write_text_file",
            json!({"sessionId": "s1", "path": outside.join("new.txt"), "content": "x"}),
        ),
        (
            "terminal/create",
            json!({"sessionId": "s1", "command": "touch", "args": ["made-here"], "cwd": outside}),
        ),
    ];
    let mut requests = escapes.to_vec();
    requests.push((
        "fs/read_text_file",
        json!({"sessionId": "s1", "path": workspace.join("inside.txt")}),
    ));
    // Not files at all: refused as the request's mistake, saying what is there.
    make_fifo(&workspace.join("fifo"));
    std::fs::create_dir(workspace.join("src")).unwrap();
    let not_files = [("fifo", "a named pipe"), ("src", "a directory")];
    for (name, _) in not_files {
        requests.push((
            "fs/read_text_file",
            json!({"sessionId": "s1", "path": workspace.join(name)}),
        ));
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/acp", listener.local_addr().unwrap());
    let agent = tokio::spawn(misbehaving_agent(listener, requests));
    let output = within(
        "punie ask",
        home.command()
            .args(["ask", "--server", &url, "--yes", "go"])
            .env("PUNIE_TOKEN", "t".repeat(64))
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let (answers, capabilities) = within("the agent's answers", agent).await.unwrap();
    assert_eq!(
        (
            &capabilities["fs"]["readTextFile"],
            &capabilities["fs"]["writeTextFile"],
            &capabilities["terminal"],
        ),
        (&json!(true), &json!(true), &json!(true)),
        "punie ask offers files and terminals: {capabilities}"
    );

    for (index, (method, _)) in escapes.iter().enumerate() {
        let answer = &answers[&(100 + index as u64)];
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            answer.get("result").is_none() && message.contains("outside the workspace"),
            "{method} #{index} refused with a clear message: {answer}"
        );
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
    }
    assert_eq!(answers[&105]["result"]["content"], "inside\n");
    for (index, (name, what)) in not_files.into_iter().enumerate() {
        let answer = &answers[&(106 + index as u64)];
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(name) && message.contains(what),
            "{name}: {answer}"
        );
    }
    assert!(!outside.join("new.txt").exists(), "nothing written outside");
    assert!(!outside.join("made-here").exists(), "nothing run outside");
}

#[tokio::test]
async fn punie_server_finds_the_server_when_the_record_points_elsewhere() {
    let server = Server::start().await;
    // Another home: its record names a server that is gone, and it has no token file.
    let home = Home::new();
    let recorded = home.record_a_gone_server();
    let asking = || {
        let mut command = home.command();
        command
            .args(["ask", "--output", "json", "who is there?"])
            .env("PUNIE_TOKEN", &server.token)
            .current_dir(home.workspace())
            .stdin(Stdio::null());
        command
    };

    let by_record = within("punie ask", asking().output()).await.unwrap();
    assert_eq!(by_record.status.code(), Some(3), "the record leads nowhere");
    let recorded_acp = format!("{}/acp", recorded.replace("http://", "ws://"));
    assert!(
        text(&by_record.stderr).contains(&recorded_acp),
        "{}",
        text(&by_record.stderr)
    );

    let by_override = within(
        "punie ask",
        asking().env("PUNIE_SERVER", server.ws_url()).output(),
    )
    .await
    .unwrap();
    assert_eq!(
        by_override.status.code(),
        Some(0),
        "{}",
        text(&by_override.stderr)
    );
    let answer: Value = serde_json::from_slice(&by_override.stdout).unwrap();
    assert_eq!(
        answer["text"],
        "Turn 1. You said: \"who is there?\". That is the first thing you said."
    );
    let mut client = server.initialized().await;
    let listed = client
        .request("session/list", json!({"cwd": home.workspace()}))
        .await;
    assert_eq!(
        listed["result"]["sessions"][0]["sessionId"], answer["sessionId"],
        "the session is on the server PUNIE_SERVER names: {listed}"
    );
}

#[tokio::test]
async fn with_nothing_recorded_and_no_override_ask_tries_the_default_address() {
    const DEFAULT: &str = "ws://127.0.0.1:8000/acp";
    let home = Home::new();
    let output = within(
        "punie ask",
        home.command()
            .args(["ask", "hello"])
            .current_dir(home.workspace())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    let stderr = text(&output.stderr);
    // Whatever may listen on port 8000 here, this home has no token to get
    // in with: every way of failing names the address it tried.
    assert!(stderr.contains(DEFAULT), "names {DEFAULT}: {stderr}");
    assert!(output.stdout.is_empty());
    match std::net::TcpStream::connect("127.0.0.1:8000") {
        Err(_) => assert_eq!(output.status.code(), Some(3), "no server: {stderr}"),
        Ok(_) => {
            eprintln!("note: something listens on 127.0.0.1:8000; only the message is checked");
            assert!(
                matches!(output.status.code(), Some(1 | 3)),
                "{:?}: {stderr}",
                output.status
            );
        }
    }
}

const THOUGHT: &str = "Thinking it over.";

/// `punie ask <args>` in the server's workspace, with its stdin and stderr
/// on a new terminal.
fn start_ask_on_a_terminal(
    server: &Server,
    args: &[&str],
    adjust: impl FnOnce(&mut tokio::process::Command),
) -> (Terminal, tokio::process::Child) {
    let mut command = server.home.command();
    command
        .arg("ask")
        .args(args)
        .current_dir(server.home.workspace());
    adjust(&mut command);
    Terminal::spawn(command)
}

/// Let a `punie ask` on `terminal` run to its end: its stdout, its exit
/// status and everything the terminal showed.
async fn to_the_end(
    mut terminal: Terminal,
    mut child: tokio::process::Child,
) -> (String, std::process::ExitStatus, String) {
    let mut stdout = String::new();
    within(
        "punie ask's stdout",
        child.stdout.take().unwrap().read_to_string(&mut stdout),
    )
    .await
    .unwrap();
    let status = within("punie ask to exit", child.wait()).await.unwrap();
    (stdout, status, terminal.closed().await)
}

/// `punie ask` with its stderr on a terminal; stdout, the exit status and
/// everything the terminal showed.
async fn ask_on_a_terminal(
    server: &Server,
    args: &[&str],
    adjust: impl FnOnce(&mut tokio::process::Command),
) -> (String, std::process::ExitStatus, String) {
    let (terminal, child) = start_ask_on_a_terminal(server, args, adjust);
    to_the_end(terminal, child).await
}

#[tokio::test]
async fn ask_writes_no_ansi_escapes_when_stderr_is_not_a_terminal_or_no_color_is_set() {
    let server = Server::scripted(json!([[{"thought": THOUGHT}, {"text": "Done."}]]), &[]).await;

    let piped = ask(&server, &["think"]).await;
    assert_eq!(piped.status.code(), Some(0), "{}", text(&piped.stderr));
    let stderr = text(&piped.stderr);
    assert!(stderr.contains(THOUGHT), "the thought is shown: {stderr:?}");
    assert!(!stderr.contains('\u{1b}'), "not a terminal: {stderr:?}");

    let (stdout, status, screen) = ask_on_a_terminal(&server, &["think"], |command| {
        command.env("NO_COLOR", "1");
    })
    .await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(stdout, "Done.\n");
    assert!(screen.contains(THOUGHT), "the thought is shown: {screen:?}");
    assert!(
        !screen.contains('\u{1b}'),
        "NO_COLOR: no colour and no spinner, even on a terminal: {screen:?}"
    );

    // Without NO_COLOR, or with it empty (no-color.org: only a value
    // counts), the same terminal gets the thought dimmed.
    for no_color in [None, Some("")] {
        let (_, status, screen) = ask_on_a_terminal(&server, &["think"], |command| {
            if let Some(value) = no_color {
                command.env("NO_COLOR", value);
            }
        })
        .await;
        assert_eq!(status.code(), Some(0), "{screen:?}");
        assert!(
            screen.contains(&format!("\u{1b}[2m{THOUGHT}")),
            "dimmed on a terminal, NO_COLOR {no_color:?}: {screen:?}"
        );
    }
}

/// A model that thinks in pieces, answers, and thinks again.
fn thinking_in_chunks() -> Value {
    json!([[
        {"thought": "The "}, {"thought": "user "}, {"thought": "wants "}, {"thought": "X."},
        {"text": "Hel"}, {"text": "lo."},
        {"thought": " More "}, {"thought": "thinking."},
        {"text": " End."}
    ]])
}

/// `text` without the terminal's styling (CSI sequences).
fn unstyled(text: &str) -> String {
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// A thought streamed in chunks reads as one, as the answer does: on a line
/// of its own, ended when something else comes — on stderr alone, or on the
/// terminal stdout shares.
#[tokio::test]
async fn ask_shows_a_thought_streamed_in_chunks_as_one() {
    let server = Server::scripted(thinking_in_chunks(), &[]).await;

    let piped = ask(&server, &["go"]).await;
    assert_eq!(piped.status.code(), Some(0), "{}", text(&piped.stderr));
    assert_eq!(text(&piped.stdout), "Hello. End.\n");
    assert_eq!(text(&piped.stderr), "The user wants X.\n More thinking.\n");

    // Stderr on a terminal, dimmed chunk by chunk.
    let (stdout, status, screen) = ask_on_a_terminal(&server, &["go"], |_| {}).await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(stdout, "Hello. End.\n");
    assert!(screen.contains("\u{1b}[2mThe "), "dimmed: {screen:?}");
    assert!(
        unstyled(&screen).ends_with("The user wants X.\r\n More thinking.\r\n"),
        "{screen:?}"
    );

    // Stdout and stderr on one terminal: the thought and the answer take
    // turns, each on lines of its own.
    let template = server.home.command();
    let mut command = tokio::process::Command::new("sh");
    for (key, value) in template.as_std().get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .args(["-c", "exec \"$0\" \"$@\" 2>&1", env!("CARGO_BIN_EXE_punie")])
        .args(["ask", "go"])
        .env("NO_COLOR", "1")
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let (mut terminal, mut child) = Terminal::spawn_writing_to_it(command);
    let status = within("punie ask to exit", child.wait()).await.unwrap();
    let screen = terminal.closed().await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(
        screen,
        "The user wants X.\r\nHello.\r\n More thinking.\r\n End.\r\n"
    );
}

/// The person asked at a terminal sees what they allow: a change's diff.
#[tokio::test]
async fn a_permission_question_at_a_terminal_shows_the_change() {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "edit_file",
                            "arguments": {"path": "notes.txt", "old_text": "old", "new_text": "new"}}}],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    std::fs::write(
        server.home.workspace().join("notes.txt"),
        "first\nold notes\nlast\n",
    )
    .unwrap();
    let (mut terminal, child) = start_ask_on_a_terminal(&server, &["tidy"], |command| {
        command.env("NO_COLOR", "1");
    });
    terminal.wait_for("Choose (anything else rejects): ").await;
    terminal.type_keys("1\n");
    let (_, status, screen) = to_the_end(terminal, child).await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert!(
        screen.contains(
            "  @@ -1,3 +1,3 @@\r\n   first\r\n  -old notes\r\n  +new notes\r\n   last\r\n"
        ),
        "{screen:?}"
    );
    assert_eq!(
        std::fs::read_to_string(server.home.workspace().join("notes.txt")).unwrap(),
        "first\nnew notes\nlast\n"
    );
}

/// What a model says, or a file it read, may carry a terminal's control
/// sequences: on a terminal `ask` shows the text without them — so nothing
/// retitles the window, clears the screen or rewrites the line that asks the
/// person's permission — while a pipe gets the answer exactly.
#[tokio::test]
async fn on_a_terminal_ask_shows_no_control_sequences_from_the_agent() {
    const ANSWER: &str = "A\u{1b}[2JB\u{9b}C\u{202e}D\n";
    let server = Server::scripted(
        json!([
            [{"thought": "Hmm\u{1b}]0;pwned\u{7} ok"},
             {"tool_call": {"name": "run_command",
                            "arguments": {"command": "true\r\u{1b}[2Kls"}}}],
            [{"text": ANSWER}]
        ]),
        &[],
    )
    .await;
    let (mut terminal, child) = start_ask_on_a_terminal(&server, &["go"], |command| {
        command.env("NO_COLOR", "1");
    });
    terminal.wait_for("Choose (anything else rejects): ").await;
    terminal.type_keys("x\n");
    let (stdout, status, screen) = to_the_end(terminal, child).await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(stdout, ANSWER, "a pipe gets the answer exactly");
    assert!(screen.contains("Hmm]0;pwned ok"), "{screen:?}");
    // The title writes the command's control characters out.
    assert!(
        screen.contains("Punie asks to: Run `true<U+000D><U+001B>[2Kls`"),
        "{screen:?}"
    );
    for control in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(
            !screen.contains(control),
            "{control:?} on the terminal: {screen:?}"
        );
    }

    let mut command = server.home.command();
    command
        .args(["ask", "--yes", "go"])
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let (mut terminal, mut child) = Terminal::spawn_writing_to_it(command);
    let status = within("punie ask to exit", child.wait()).await.unwrap();
    let screen = terminal.closed().await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert!(screen.contains("A[2JBCD"), "{screen:?}");
    assert!(!screen.contains('\u{1b}'), "{screen:?}");
}

#[tokio::test]
async fn on_a_terminal_a_spinner_shows_while_the_answer_is_awaited() {
    use support::fake_provider::{FakeProvider, Part, Reply, openai_text_reply};
    let answer_may_come = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut parts = vec![Part::Wait(answer_may_come.clone())];
    parts.extend(
        openai_text_reply(&["The answer."])
            .into_iter()
            .map(Part::Send),
    );
    let provider = FakeProvider::start([Reply::Stream(parts)]).await;
    let model = format!("local:{}/v1/fake", provider.url());
    let server = Server::start_in(Home::new(), &["--model", &model]).await;

    let (mut terminal, child) = start_ask_on_a_terminal(&server, &["hello"], |_| {});
    terminal.wait_for("waiting for Punie…").await;
    answer_may_come.notify_one();

    let (stdout, status, screen) = to_the_end(terminal, child).await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(stdout, "The answer.\n");
    let waited = screen.find("waiting for Punie…").expect("the spinner");
    assert!(
        screen[waited..].contains("\u{1b}[2K"),
        "the spinner's line is cleared once the answer comes: {screen:?}"
    );
}

/// The options a permission question on `screen` offers: number and name.
fn offered_options(screen: &str) -> Vec<(String, String)> {
    screen
        .lines()
        .filter_map(|line| {
            let (number, name) = line.trim().strip_prefix('[')?.split_once("] ")?;
            number.parse::<usize>().ok()?;
            Some((number.to_owned(), name.trim().to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn on_a_terminal_ask_asks_before_a_change_and_does_what_the_answer_says() {
    let server = Server::scripted(json!([
        [{"tool_call": {"name": "write_file", "arguments": {"path": "new.txt", "content": "written\n"}}}],
        [{"text": "Finished."}]
    ]), &[])
    .await;
    let file = server.home.workspace().join("new.txt");

    for (answer, written) in [("Reject", false), ("Allow", true)] {
        let (mut terminal, child) = start_ask_on_a_terminal(&server, &["write it"], |_| {});
        terminal.wait_for("Choose (anything else rejects): ").await;
        let screen = terminal.screen();
        assert!(screen.contains("Punie asks to: "), "{screen:?}");
        let options = offered_options(&screen);
        let names: Vec<&str> = options.iter().map(|(_, name)| name.as_str()).collect();
        assert!(
            names.contains(&"Allow")
                && names.contains(&"Always allow")
                && names.contains(&"Reject"),
            "allow once, allow always and reject are offered: {names:?}"
        );
        let (number, _) = options.iter().find(|(_, name)| name == answer).unwrap();
        terminal.type_keys(&format!("{number}\n"));

        let (stdout, status, screen) = to_the_end(terminal, child).await;
        assert_eq!(status.code(), Some(0), "{screen:?}");
        assert_eq!(stdout, "Finished.\n");
        if written {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "written\n");
            assert!(screen.contains("✓ "), "the write completed: {screen:?}");
        } else {
            assert!(!file.exists(), "rejected: nothing written");
            assert!(screen.contains("✗ "), "the write failed: {screen:?}");
        }
    }
}

/// An agent that streams a little of an answer and then never answers the
/// prompt, not even once it is cancelled: Punie's server always honours a
/// cancel at once, so only such an agent leaves `punie ask` waiting after
/// the first Ctrl-C. It hands over the `session/cancel` it receives.
async fn agent_that_ignores_cancel(
    listener: tokio::net::TcpListener,
    cancel_received: tokio::sync::oneshot::Sender<Value>,
) {
    let mut agent = HandWrittenAgent::accept(listener).await;
    let mut cancel_received = Some(cancel_received);
    while let Some(message) = agent.next().await {
        match message["method"].as_str() {
            Some("session/prompt") => {
                agent
                    .send(json!({"jsonrpc": "2.0", "method": "session/update", "params": {
                        "sessionId": "s1",
                        "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "partial answer"}},
                    }}))
                    .await;
            }
            Some("session/cancel") => {
                if let Some(received) = cancel_received.take() {
                    let _ = received.send(message);
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn on_a_terminal_the_first_ctrl_c_cancels_and_a_second_quits_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/acp", listener.local_addr().unwrap());
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(agent_that_ignores_cancel(listener, cancel_tx));
    let home = Home::new();
    let mut command = home.command();
    command
        .args(["ask", "--server", &url, "go on and on"])
        .env("PUNIE_TOKEN", "t".repeat(64))
        .current_dir(home.workspace());
    let (mut terminal, mut child) = Terminal::spawn(command);
    let mut stdout = child.stdout.take().unwrap();
    read_until(&mut stdout, "partial answer", "the answer to start").await;

    terminal.ctrl_c();
    let cancel = within("session/cancel to reach the agent", cancel_rx)
        .await
        .expect("the agent received session/cancel");
    assert_eq!(cancel["params"]["sessionId"], "s1", "{cancel}");
    terminal.wait_for("press Ctrl-C again").await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "after one Ctrl-C, ask waits for the cancelled turn to end"
    );

    terminal.ctrl_c();
    let status = within("punie ask to quit", child.wait()).await.unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "an exit status, not death by the signal: {status:?}"
    );
    let screen = terminal.closed().await;
    assert!(screen.contains("interrupted"), "{screen:?}");
    agent.abort();
}

#[tokio::test]
async fn after_ctrl_c_a_server_that_never_answers_the_cancel_is_not_waited_for() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/acp", listener.local_addr().unwrap());
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
    let agent = tokio::spawn(agent_that_ignores_cancel(listener, cancel_tx));
    let home = Home::new();
    let mut command = home.command();
    command
        .args(["ask", "--server", &url, "go on and on"])
        .env("PUNIE_TOKEN", "t".repeat(64))
        .current_dir(home.workspace());
    let (mut terminal, mut child) = Terminal::spawn(command);
    let mut stdout = child.stdout.take().unwrap();
    let mut shown = read_until(&mut stdout, "partial answer", "the answer to start").await;

    terminal.ctrl_c();
    within("session/cancel to reach the agent", cancel_rx)
        .await
        .expect("the agent received session/cancel");
    let status = within("punie ask to give up on the cancel", child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    stdout.read_to_end(&mut shown).await.unwrap();
    assert_eq!(
        text(&shown),
        "partial answer\n",
        "what arrived, its line ended"
    );
    let screen = terminal.closed().await;
    assert!(screen.contains("did not answer the cancel"), "{screen:?}");
    agent.abort();
}

/// A script whose first turn starts an answer and then waits a minute: long
/// enough for a test to act while it runs.
fn a_long_turn() -> Value {
    json!([[{"text": "Starting. "}, {"pause_ms": 60_000}, {"text": "Too late."}]])
}

/// `punie ask --output stream-json` on a long turn, once its answer has
/// begun: the process, its stdout, and the session's id.
async fn ask_in_a_long_turn(
    server: &Server,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    String,
) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = server
        .home
        .command()
        .args(["ask", "--output", "stream-json", "go on for long"])
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The session's commands come first, maybe before the turn has begun.
    let session = within("the answer to begin", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("an update");
            let update: Value = serde_json::from_str(&line).unwrap();
            if update["update"]["sessionUpdate"] == "agent_message_chunk" {
                return update["sessionId"].as_str().unwrap().to_owned();
            }
        }
    })
    .await;
    (child, lines, session)
}

#[tokio::test]
async fn a_turn_cancelled_by_someone_else_fails_saying_so() {
    let server = Server::scripted(a_long_turn(), &[]).await;
    let (mut child, mut lines, session) = ask_in_a_long_turn(&server).await;

    let mut other = server.initialized().await;
    let resumed = other
        .request(
            "session/resume",
            json!({"sessionId": session, "cwd": server.home.workspace()}),
        )
        .await;
    assert!(resumed.get("result").is_some(), "{resumed}");
    other
        .send(
            json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": session}}),
        )
        .await;

    let status = within("punie ask to exit", child.wait()).await.unwrap();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let stderr = stderr_of(&mut child).await;
    assert_eq!(status.code(), Some(1), "not done: {stderr}");
    assert!(
        stderr.contains("the turn was cancelled elsewhere"),
        "{stderr}"
    );
    let result = rest.last().expect("the result object");
    assert_eq!(result["stopReason"], "cancelled", "{result}");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|error| error.contains("cancelled elsewhere")),
        "{result}"
    );
}

#[tokio::test]
async fn a_turn_ended_by_a_delete_says_so() {
    let server = Server::scripted(a_long_turn(), &[]).await;
    let (mut child, _lines, session) = ask_in_a_long_turn(&server).await;
    let mut other = server.initialized().await;
    let deleted = other
        .request("session/delete", json!({"sessionId": session}))
        .await;
    assert!(deleted.get("result").is_some(), "{deleted}");
    let status = within("punie ask to exit", child.wait()).await.unwrap();
    let stderr = stderr_of(&mut child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("punie: the turn was cancelled elsewhere: the session was deleted"),
        "{stderr}"
    );
    let again = ask(&server, &["--session", &session, "still there?"]).await;
    assert_eq!(again.status.code(), Some(1));
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains(&format!(
            "session {session} was deleted; drop --session to start a new one"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn continuing_a_session_busy_with_another_clients_turn_prints_none_of_it() {
    let server = Server::scripted(a_long_turn(), &[]).await;
    let (_first, _lines, session) = ask_in_a_long_turn(&server).await;

    let output = ask(&server, &["--session", &session, "me too"]).await;

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "", "nothing of the other turn");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "session {session} is answering a prompt from another client"
        )),
        "{stderr}"
    );
    // The JSON result names the session it found busy.
    let output = ask(
        &server,
        &["--session", &session, "--output", "json", "me too"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["sessionId"], session.as_str(), "{result}");
    let unknown = ask(&server, &["--session", "no-such-session", "hello"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    let stderr = text(&unknown.stderr);
    assert!(
        stderr.contains("there is no session no-such-session; `punie sessions` lists them"),
        "{stderr}"
    );
}

/// What `Relay` holds back until it is told to let it through.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// `ask`'s prompt, on its way to the server.
    Prompt,
    /// The server's answer to that prompt, on its way to `ask`; what the
    /// server sends after it goes on meanwhile, as though sent before it.
    Answer,
}

/// A WebSocket relay between `punie ask` and the server that passes every
/// message on, but one: so that a test can have another client's turn fall
/// just before `ask`'s prompt is taken, or just before its answer, as the
/// server may send them when other clients are quick.
struct Relay {
    url: String,
    /// Every message passed on to `ask`.
    to_ask: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Told once the message is held.
    holding: Option<tokio::sync::oneshot::Receiver<()>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Relay {
    async fn start(server: &Server, hold: Hold) -> Self {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/acp", listener.local_addr().unwrap());
        let upstream = support::RawClient::connect(&server.ws_url(), &server.token).await;
        let (passed, to_ask) = tokio::sync::mpsc::unbounded_channel();
        let (release, mut released) = tokio::sync::oneshot::channel::<()>();
        let (held_it, holding) = tokio::sync::oneshot::channel::<()>();
        let mut held_it = Some(held_it);
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let ask = tokio_tungstenite::accept_async(stream).await.unwrap();
            let (mut to_server, mut from_server) = upstream.ws.split();
            let (mut to_client, mut from_client) = ask.split();
            let (mut prompt_id, mut held) = (None, None::<Message>);
            let mut releasing = true;
            loop {
                tokio::select! {
                    message = from_client.next() => {
                        let Some(Ok(message)) = message else { break };
                        if let Message::Text(text) = &message {
                            let sent: Value = serde_json::from_str(text).unwrap();
                            if sent["method"] == "session/prompt" {
                                prompt_id = Some(sent["id"].clone());
                                if hold == Hold::Prompt {
                                    held = Some(message);
                                    let _ = held_it.take().map(|told| told.send(()));
                                    continue;
                                }
                            }
                        }
                        if message.is_close() || to_server.send(message).await.is_err() {
                            break;
                        }
                    }
                    message = from_server.next() => {
                        let Some(Ok(message)) = message else { break };
                        if let Message::Text(text) = &message {
                            let answer: Value = serde_json::from_str(text).unwrap();
                            if hold == Hold::Answer
                                && prompt_id.is_some()
                                && answer.get("id") == prompt_id.as_ref()
                                && answer.get("method").is_none()
                            {
                                held = Some(message);
                                let _ = held_it.take().map(|told| told.send(()));
                                continue;
                            }
                            let _ = passed.send(answer);
                        }
                        if message.is_close() || to_client.send(message).await.is_err() {
                            break;
                        }
                    }
                    _ = &mut released, if releasing => {
                        releasing = false;
                        let Some(message) = held.take() else { continue };
                        let sent = match hold {
                            Hold::Prompt => to_server.send(message).await,
                            Hold::Answer => to_client.send(message).await,
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to_client.close().await;
            let _ = to_server.close().await;
        });
        Self {
            url,
            to_ask,
            holding: Some(holding),
            release: Some(release),
        }
    }

    /// Wait until the message is held.
    async fn holding(&mut self) {
        within(
            "the relay to hold its message",
            self.holding.take().unwrap(),
        )
        .await
        .expect("the relay holds the message");
    }

    /// Wait until a message passed on to `ask` carries `text`.
    async fn passed_on(&mut self, text: &str) {
        within(&format!("`{text}` on its way to ask"), async {
            while let Some(message) = self.to_ask.recv().await {
                if message.to_string().contains(text) {
                    return;
                }
            }
            panic!("the relay ended before `{text}` went by");
        })
        .await;
    }

    /// Let what is held go through.
    fn release(&mut self) {
        let _ = self.release.take().unwrap().send(());
    }
}

/// A server on `script`, a session on it that another client has prompted
/// once, that client, and the session's id.
async fn a_session_another_client_prompts(script: Value) -> (Server, support::RawClient, String) {
    let server = Server::scripted(script, &[]).await;
    let mut other = server.initialized().await;
    let session = other.new_session(&server.home.workspace()).await;
    let answer = other.prompt(&session, "first").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    other.notifications.clear();
    (server, other, session)
}

/// `punie ask <args>` through `relay`, started; its output comes with
/// [`tokio::process::Child::wait_with_output`].
fn ask_through(server: &Server, relay: &Relay, args: &[&str]) -> tokio::process::Child {
    server
        .home
        .command()
        .args(["ask", "--server", &relay.url])
        .args(args)
        .env("PUNIE_TOKEN", &server.token)
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether `messages` hold the end of a turn.
fn a_turn_ended(messages: &[Value]) -> bool {
    messages
        .iter()
        .any(|message| message["params"]["update"]["_meta"]["punie/turnEnded"].is_object())
}

/// Another client's whole turn, between `ask` attaching the session and its
/// prompt being taken, is not part of `ask`'s answer: not its text, not its
/// thoughts.
#[tokio::test]
async fn another_clients_turn_just_before_asks_prompt_is_not_its_answer() {
    let (server, mut other, session) = a_session_another_client_prompts(json!([
        [{"text": "First."}],
        [{"thought": "Their thought."}, {"text": "Their answer."}],
        [{"text": "My answer."}]
    ]))
    .await;
    let mut relay = Relay::start(&server, Hold::Prompt).await;
    let ask = ask_through(
        &server,
        &relay,
        &["--session", &session, "--output", "json", "mine"],
    );
    relay.holding().await;
    let answer = other.prompt(&session, "theirs").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    relay.passed_on("Their answer.").await;
    relay.release();

    let output = within("punie ask", ask.wait_with_output()).await.unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["text"], "My answer.", "{answer}");
    assert!(!stderr.contains("Their"), "{stderr}");
}

/// The next turn of another client, starting as `ask`'s turn ends and
/// reaching it before its answer, is not part of that answer.
#[tokio::test]
async fn another_clients_turn_just_after_asks_own_is_not_its_answer() {
    let (server, mut other, session) = a_session_another_client_prompts(json!([
        [{"text": "First."}],
        [{"text": "My answer."}],
        [{"thought": "Their thought."}, {"text": "Their answer."}]
    ]))
    .await;
    let mut relay = Relay::start(&server, Hold::Answer).await;
    let ask = ask_through(&server, &relay, &["--session", &session, "mine"]);
    other.receive_until(a_turn_ended).await;
    // The end reaches clients as the turn lets the session go: at once, or
    // a moment later; asked until it is free, within the test's deadline.
    within("the session to take another prompt", async {
        loop {
            let answer = other.prompt(&session, "theirs").await;
            if answer["result"]["stopReason"] == "end_turn" {
                break;
            }
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .is_some_and(|message| message.contains("already running a turn")),
                "{answer}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    relay.passed_on("Their answer.").await;
    relay.holding().await;
    relay.release();

    let output = within("punie ask", ask.wait_with_output()).await.unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&output.stdout), "My answer.\n");
    assert!(!stderr.contains("Their"), "{stderr}");
}

/// A prompt refused because another client's turn began after `ask` found
/// the session idle shows none of that turn, and says why as `ask` does when
/// it finds the session busy.
#[tokio::test]
async fn a_prompt_refused_for_another_clients_turn_shows_none_of_it() {
    for format in ["text", "json"] {
        let (server, mut other, session) = a_session_another_client_prompts(json!([
            [{"text": "First."}],
            [{"thought": "Their thought."}, {"text": "Their answer."}, {"pause_ms": 60_000}]
        ]))
        .await;
        let mut relay = Relay::start(&server, Hold::Prompt).await;
        let ask = ask_through(
            &server,
            &relay,
            &["--session", &session, "--output", format, "mine"],
        );
        relay.holding().await;
        other.start_prompt(&session, "theirs").await;
        relay.passed_on("Their answer.").await;
        relay.release();

        let output = within("punie ask", ask.wait_with_output()).await.unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let shown = match format {
            "json" => serde_json::from_slice::<Value>(&output.stdout).unwrap()["text"].clone(),
            _ => Value::from(text(&output.stdout)),
        };
        assert_eq!(shown, "", "--output {format}: none of the other turn");
        assert!(!stderr.contains("Their"), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "session {session} is answering a prompt from another client"
            )) && !stderr.contains("already running a turn"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn an_answer_stdout_cannot_take_ends_the_turn_without_a_panic() {
    let server = Server::scripted(a_long_turn(), &[]).await;
    let ask_hello = || {
        let mut command = server.home.command();
        command
            .args(["ask", "hello"])
            .current_dir(server.home.workspace());
        command
    };
    let full = run_with(&mut ask_hello(), b"", full_disk()).await;
    assert_eq!(full.status.code(), Some(1));
    let stderr = text(&full.stderr);
    assert!(
        stderr.contains("cannot write the answer to stdout") && !stderr.contains("panicked"),
        "{stderr}"
    );

    // A reader that went away (`| head`): quietly.
    let closed = run_with(&mut ask_hello(), b"", reader_gone()).await;
    assert_eq!(closed.status.code(), Some(1));
    let stderr = text(&closed.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Neither turn waits out its pause: both were cancelled.
    let mut watcher = server.initialized().await;
    let watched = watcher.request("_punie/watch", json!({})).await;
    let sessions = watched["result"]["sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .all(|session| session["status"] != "running"),
        "{watched}"
    );
}

#[tokio::test]
async fn on_a_terminal_the_spinner_is_gone_before_a_question_is_asked() {
    use support::fake_provider::{
        FakeProvider, Part, Reply, openai_text_reply, openai_tool_call_reply,
    };
    let call_may_come = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut parts = vec![Part::Wait(call_may_come.clone())];
    parts.extend(
        openai_tool_call_reply(
            "call_w",
            "write_file",
            json!({"path": "new.txt", "content": "written\n"}),
        )
        .into_iter()
        .map(Part::Send),
    );
    let provider = FakeProvider::start([
        Reply::Stream(parts),
        Reply::events(openai_text_reply(&["Finished."])),
    ])
    .await;
    let model = format!("local:{}/v1/fake", provider.url());
    let server = Server::start_in(Home::new(), &["--model", &model]).await;

    let (mut terminal, child) = start_ask_on_a_terminal(&server, &["write it"], |_| {});
    terminal.wait_for("waiting for Punie…").await;
    call_may_come.notify_one();
    terminal.wait_for("Choose (anything else rejects): ").await;
    let screen = terminal.screen();
    let asked = screen.find("Punie asks to: ").expect("the question");
    let last_spin = screen[..asked]
        .rfind("waiting for Punie…")
        .expect("the spinner before it");
    assert!(
        screen[last_spin..asked].contains("\u{1b}[2K"),
        "the spinner's line is cleared before the question: {screen:?}"
    );
    let (number, _) = offered_options(&screen)
        .into_iter()
        .find(|(_, name)| name == "Allow")
        .unwrap();
    terminal.type_keys(&format!("{number}\n"));

    let (stdout, status, screen) = to_the_end(terminal, child).await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(stdout, "Finished.\n");
    let asked = screen.find("Punie asks to: ").unwrap();
    assert!(
        !screen[asked..].contains("waiting for Punie…"),
        "no spinner over the question or after it: {screen:?}"
    );
}

#[tokio::test]
async fn a_prompt_larger_than_the_server_takes_is_refused_naming_the_limit() {
    let server = Server::start_in(Home::new(), &["--max-message-bytes", "4096"]).await;
    let long = "many words ".repeat(1000);
    let output = ask(&server, &[&long]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("was not sent: the server takes messages of up to")
            && stderr.contains("--max-message-bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("lost the connection"),
        "the connection was not lost over it: {stderr}"
    );
}

#[tokio::test]
async fn a_question_on_stdin_that_is_not_text_is_refused_saying_so() {
    let server = Server::start().await;
    let mut command = server.home.command();
    command.arg("ask").current_dir(server.home.workspace());
    let output = run_with(&mut command, b"what is \xff?", Stdio::piped()).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the question on stdin is not UTF-8 text (byte 8 is not)"),
        "{stderr}"
    );
    assert_eq!(server.health().await["sessions"], 0);
}

#[tokio::test]
async fn a_json_answer_stdout_cannot_take_is_a_failure() {
    let server = Server::start().await;
    for format in ["json", "stream-json"] {
        let ask_hello = || {
            let mut command = server.home.command();
            command
                .args(["ask", "--output", format, "hello"])
                .current_dir(server.home.workspace());
            command
        };
        let full = run_with(&mut ask_hello(), b"", full_disk()).await;
        let stderr = text(&full.stderr);
        assert_eq!(full.status.code(), Some(1), "{format}: {stderr}");
        assert!(
            stderr.contains("cannot write the answer to stdout"),
            "{format}: {stderr}"
        );
        let closed = run_with(&mut ask_hello(), b"", reader_gone()).await;
        assert_eq!(
            closed.status.code(),
            Some(1),
            "{format}: {}",
            text(&closed.stderr)
        );
    }
}

/// Whether process `pid` is gone: no longer there, or dead and not yet reaped.
fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn sigterm_and_sighup_stop_the_commands_ask_started_and_exit_128_plus_the_signal() {
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        // The shell would die with ask; what it started in the background
        // would not, unless its process group is killed.
        let server = Server::scripted(
            json!([
                [{"tool_call": {"name": "run_command",
                                "arguments": {"command": "sleep 60 & echo $! > started; wait"}}}],
                [{"text": "Done."}]
            ]),
            &[],
        )
        .await;
        let started = server.home.workspace().join("started");
        make_fifo(&started);
        let mut child = server
            .home
            .command()
            .args(["ask", "--yes", "go"])
            .current_dir(server.home.workspace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let sleeper = within("the command to start", tokio::fs::read_to_string(&started))
            .await
            .unwrap();
        let sleeper: i32 = sleeper.trim().parse().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = within("punie ask to stop", child.wait()).await.unwrap();
        assert_eq!(status.code(), Some(code), "{signal}: {status:?}");
        within("the command to be gone", async {
            while !gone(sleeper) {
                // Polled, not spun: the machine is small.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        // The turn was cancelled, not left waiting for a client to return.
        let mut watcher = server.initialized().await;
        let watched = watcher.request("_punie/watch", json!({})).await;
        let sessions = watched["result"]["sessions"].as_array().unwrap();
        assert!(
            sessions
                .iter()
                .all(|session| session["status"] != "running"),
            "{signal}: {watched}"
        );
    }
}

#[tokio::test]
async fn a_prompt_too_big_to_send_opens_no_session_and_is_told_once() {
    let server = Server::start_in(Home::new(), &["--max-message-bytes", "4096"]).await;
    let first = ask(&server, &["--output", "json", "hello"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();

    let big = server.home.dir.path().join("big.txt");
    std::fs::write(&big, "many words ".repeat(1000)).unwrap();
    let refused = ask(&server, &["-a", big.to_str().unwrap(), "what about this"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert_eq!(
        stderr.matches("was not sent").count(),
        1,
        "said once: {stderr}"
    );
    let mut client = server.initialized().await;
    let listed = client.request("session/list", json!({})).await;
    assert_eq!(
        listed["result"]["sessions"].as_array().unwrap().len(),
        1,
        "no empty session: {listed}"
    );

    let again = ask(&server, &["--continue", "--output", "json", "and now?"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["sessionId"], first["sessionId"]);
}

#[tokio::test]
async fn on_a_terminal_ctrl_c_while_waiting_takes_the_spinner_away_first() {
    use support::fake_provider::{FakeProvider, Part, Reply};
    // The answer never comes.
    let never = std::sync::Arc::new(tokio::sync::Notify::new());
    let provider = FakeProvider::start([Reply::Stream(vec![Part::Wait(never)])]).await;
    let model = format!("local:{}/v1/fake", provider.url());
    let server = Server::start_in(Home::new(), &["--model", &model]).await;

    let (mut terminal, child) = start_ask_on_a_terminal(&server, &["hello"], |_| {});
    terminal.wait_for("waiting for Punie…").await;
    within("the model to be asked", async {
        while provider.requests().is_empty() {
            // Polled, not spun: the machine is small.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    terminal.ctrl_c();
    terminal.wait_for("punie: cancelling").await;
    let (_stdout, status, screen) = to_the_end(terminal, child).await;
    assert_eq!(status.code(), Some(130), "{screen:?}");
    let cancelling = screen.find("punie: cancelling").unwrap();
    let last_spin = screen[..cancelling]
        .rfind("waiting for Punie…")
        .expect("the spinner before it");
    assert!(
        screen[last_spin..cancelling].contains("\u{1b}[2K"),
        "the spinner's line is cleared before the message: {screen:?}"
    );
    assert!(
        !screen[cancelling..].contains("waiting for Punie…"),
        "no spinner after it: {screen:?}"
    );
}

#[tokio::test]
async fn a_workspace_that_is_a_file_is_refused_here_saying_so() {
    let server = Server::start().await;
    let file = server.home.workspace().join("notes.txt");
    std::fs::write(&file, "notes\n").unwrap();
    let output = ask(&server, &["--workspace", file.to_str().unwrap(), "hello"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the workspace cannot be used") && stderr.contains("notes.txt"),
        "{stderr}"
    );
    assert!(!stderr.contains("session/new"), "{stderr}");
}

#[tokio::test]
async fn a_file_too_big_for_the_server_is_answered_with_an_error_at_once() {
    // The server's own wait for the file would outlast the test's deadline:
    // only an answer at once lets it finish.
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "read_file", "arguments": {"path": "big.txt"}}}],
            [{"text": "Could not read it."}]
        ]),
        &["--max-message-bytes", "2000"],
    )
    .await;
    std::fs::write(server.home.workspace().join("big.txt"), "x".repeat(3000)).unwrap();
    let output = ask(&server, &["--output", "stream-json", "read big.txt"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines = json_lines(&output.stdout);
    let last = lines.last().unwrap();
    assert_eq!(last["toolCalls"][0]["status"], "failed", "{last}");
    assert_eq!(last["text"], "Could not read it.");
    let told = text(&output.stdout);
    assert!(
        told.contains("over the server's limit") && told.contains("--max-message-bytes"),
        "the model is told why: {told}"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("punie: an answer of 3.0 KiB to the server's request was not sent")
            && stderr.contains("it was told so instead"),
        "{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "no raw log line: {stderr}");
}

/// The object `--output json` prints on a failure, and its error.
fn failure_object(output: &Output) -> (Value, String) {
    let answer: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("one object on stdout: {:?}", text(&output.stdout)));
    assert_eq!(answer["stopReason"], Value::Null, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default().to_owned();
    (answer, error)
}

#[tokio::test]
async fn a_workspace_whose_path_is_not_utf8_is_refused_saying_why() {
    use std::os::unix::ffi::OsStrExt as _;
    let server = Server::start().await;
    let dir = server
        .home
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&dir).unwrap();
    let output = ask_in(&server, &dir, &["hi"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("is not UTF-8, which ACP cannot carry"),
        "{stderr}"
    );
    let output = ask_in(&server, &dir, &["--output", "json", "hi"]).await;
    let (_, error) = failure_object(&output);
    assert!(error.contains("not UTF-8"), "{error}");
    assert_eq!(server.health().await["sessions"], 0);
}

#[tokio::test]
async fn every_failure_before_the_question_is_sent_prints_the_json_object_too() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let missing = ask_in(
        &server,
        &workspace,
        &["--output", "json", "-a", "/nonexist", "hi"],
    )
    .await;
    assert_eq!(missing.status.code(), Some(1));
    let (answer, error) = failure_object(&missing);
    assert!(error.contains("/nonexist"), "{error}");
    assert_eq!(answer["sessionId"], Value::Null);

    let mut command = server.home.command();
    command
        .args(["ask", "--output", "json"])
        .current_dir(&workspace);
    let not_text = run_with(&mut command, b"what is \xff?", Stdio::piped()).await;
    assert_eq!(not_text.status.code(), Some(1));
    let (_, error) = failure_object(&not_text);
    assert!(error.contains("not UTF-8"), "{error}");
}

/// `punie ask <args>` in a directory removed after it was entered, as a
/// shell still standing in it runs it.
async fn ask_in_a_removed_directory(server: &Server, args: &[&str]) -> Output {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = server.home.dir.path().join("removed");
    std::fs::create_dir(&dir).unwrap();
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut command = server.home.command();
    command
        .arg("ask")
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null());
    // SAFETY: rmdir is async-signal-safe, and `path` was made before the fork.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::rmdir(path.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    within("punie ask", command.output())
        .await
        .expect("punie ask runs")
}

#[tokio::test]
async fn a_current_directory_that_was_removed_is_named_with_the_way_out() {
    let server = Server::start().await;
    let output = ask_in_a_removed_directory(&server, &["hi"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the current directory is gone") && stderr.contains("--workspace"),
        "{stderr}"
    );
    let output = ask_in_a_removed_directory(&server, &["--output", "json", "hi"]).await;
    let (_, error) = failure_object(&output);
    assert!(error.contains("the current directory is gone"), "{error}");
}

#[tokio::test]
async fn a_kept_session_whose_workspace_was_removed_is_still_named() {
    let server = Server::start().await;
    let elsewhere = server.home.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let first = ask_in(&server, &elsewhere, &["--output", "json", "one"]).await;
    let id = serde_json::from_slice::<Value>(&first.stdout).unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_dir(&elsewhere).unwrap();
    let workspace = server.home.workspace();
    let output = ask_in(
        &server,
        &workspace,
        &["--output", "json", "--session", &id, "two"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let (answer, error) = failure_object(&output);
    assert_eq!(answer["sessionId"], id.as_str(), "{answer}");
    assert!(error.contains("elsewhere"), "{error}");
}

#[tokio::test]
async fn a_question_the_server_withdraws_is_ended_and_said_to_be_withdrawn() {
    let server = Server::scripted(
        json!([[{"tool_call": {"name": "write_file", "arguments": {"path": "c1.txt", "content": "c\n"}}}]]),
        &[],
    )
    .await;
    let (mut terminal, child) = start_ask_on_a_terminal(&server, &["write it"], |_| {});
    terminal.wait_for("Choose (anything else rejects): ").await;
    let mut other = server.initialized().await;
    let listed = other.request("session/list", json!({})).await;
    let session = listed["result"]["sessions"][0]["sessionId"].clone();
    let resumed = other
        .request(
            "session/resume",
            json!({"sessionId": session, "cwd": server.home.workspace()}),
        )
        .await;
    assert!(resumed.get("result").is_some(), "{resumed}");
    other
        .send(
            json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": session}}),
        )
        .await;

    let (_, status, screen) = to_the_end(terminal, child).await;
    assert_eq!(status.code(), Some(1), "{screen:?}");
    assert!(
        screen.contains("Choose (anything else rejects): \r\npunie: the question was withdrawn"),
        "{screen:?}"
    );
    assert!(!server.home.workspace().join("c1.txt").exists());
}

#[tokio::test]
async fn with_only_stderr_redirected_the_question_is_still_asked_on_the_terminal() {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "write_file", "arguments": {"path": "new.txt", "content": "written\n"}}}],
            [{"text": "Finished."}]
        ]),
        &[],
    )
    .await;
    let log = std::fs::File::create(server.home.dir.path().join("ask.log")).unwrap();
    let mut command = server.home.command();
    command
        .args(["ask", "write it"])
        .current_dir(server.home.workspace())
        .stdin(Stdio::null())
        .stderr(Stdio::from(log));
    let (mut terminal, mut child) = Terminal::spawn_writing_to_it(command);
    terminal.wait_for("Choose (anything else rejects): ").await;
    let options = offered_options(&terminal.screen());
    let (number, _) = options.iter().find(|(_, name)| name == "Allow").unwrap();
    terminal.type_keys(&format!("{number}\n"));
    let status = within("punie ask to exit", child.wait()).await.unwrap();
    let screen = terminal.closed().await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert_eq!(
        std::fs::read_to_string(server.home.workspace().join("new.txt")).unwrap(),
        "written\n"
    );
}

#[tokio::test]
async fn a_job_in_the_background_of_a_terminal_rejects_rather_than_wait_on_it() {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "write_file", "arguments": {"path": "new.txt", "content": "written\n"}}}],
            [{"text": "Finished."}]
        ]),
        &[],
    )
    .await;
    // `punie ask … &` from an interactive shell: job control puts it in a
    // process group of its own, not the terminal's foreground one.
    let punie = server.home.command();
    let mut command = tokio::process::Command::new("sh");
    for (name, value) in punie.as_std().get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command
        .args([
            "-c",
            "set -m; \"$0\" ask 'write it' </dev/null & wait $!",
            env!("CARGO_BIN_EXE_punie"),
        ])
        .current_dir(server.home.workspace());
    let (mut terminal, mut child) = Terminal::spawn(command);
    let status = within("punie ask to exit", child.wait()).await.unwrap();
    let screen = terminal.closed().await;
    assert_eq!(status.code(), Some(0), "{screen:?}");
    assert!(
        screen.contains("nobody"),
        "the rejection is explained: {screen:?}"
    );
    assert!(
        !screen.contains("Choose"),
        "no question was asked: {screen:?}"
    );
    assert!(!server.home.workspace().join("new.txt").exists());
}
