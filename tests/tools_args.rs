//! Tool calls whose arguments a model gets slightly wrong: each is either
//! taken as the model meant it or refused with a message that says what to
//! give instead, before anyone is asked; the turn goes on.

mod support;

use agent_client_protocol::v1::schema::StopReason;
use serde_json::{Value, json};
use support::sdk::{Ide, Received, new_session, prompt};
use support::{Server, make_fifo, sdk_transport, within};

fn call(name: &str, arguments: Value) -> Value {
    json!({"tool_call": {"name": name, "arguments": arguments}})
}

/// The text of the last content item of `call` as the client last saw it.
fn content_text(call: &Value) -> &str {
    call["content"]
        .as_array()
        .and_then(|content| content.last())
        .and_then(|item| item["content"]["text"].as_str())
        .unwrap_or_else(|| panic!("text content: {call}"))
}

/// One turn of `server`'s script, prompted by `ide` in a new session: how
/// it stopped, and each call's final status and the text it ended with.
async fn one_turn(server: &Server, ide: &Ide) -> (StopReason, Vec<(String, String)>) {
    let received = Received::default();
    let workspace = server.home.workspace();
    let (stop, session) = ide
        .run(sdk_transport(server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            let stop = prompt(&cx, &session, "go").await?;
            Ok((stop, session))
        })
        .await;
    let ended = received
        .tool_calls(&session)
        .iter()
        .map(|call| {
            (
                call["status"].as_str().unwrap_or_default().to_owned(),
                content_text(call).to_owned(),
            )
        })
        .collect();
    (stop, ended)
}

/// A glob written from the top as a shell writes one (`./*.txt`, or
/// `/*.txt` as `.gitignore` does) lists the files there, where it used to
/// match nothing and read as "no files"; under `path` it is from there.
#[tokio::test]
async fn a_glob_that_starts_with_dot_slash_or_slash_is_anchored_at_the_top() {
    let server = Server::scripted(
        json!([
            [
                call("list_files", json!({"glob": "./*.txt"})),
                call("list_files", json!({"glob": "/*.txt"})),
                call("list_files", json!({"path": "src", "glob": "./*.txt"})),
                call("search", json!({"pattern": "needle", "glob": "./*.txt"}))
            ],
            [{"text": "Listed."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::create_dir(workspace.join("src")).unwrap();
    std::fs::write(workspace.join("top.txt"), "needle\n").unwrap();
    std::fs::write(workspace.join("src/deep.txt"), "needle\n").unwrap();
    let ide = Ide::new(&workspace, false, false);
    let (stop, ended) = one_turn(&server, &ide).await;
    assert_eq!(stop, StopReason::EndTurn);
    let texts: Vec<&str> = ended.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(
        texts,
        ["top.txt", "top.txt", "src/deep.txt", "top.txt:1: needle"]
    );
}

/// An empty `path` or a blank command is refused saying what is missing —
/// not as "`` is a directory", and with nobody asked to allow a command
/// that is nothing; a named pipe given to `list_files` or `search` is
/// refused saying what it is, not answered "no files" or "no matches".
#[tokio::test]
async fn empty_arguments_and_a_pipe_to_search_are_refused_saying_what_is_wrong() {
    let server = Server::scripted(
        json!([
            [
                call("read_file", json!({"path": ""})),
                call("write_file", json!({"path": "", "content": "x"})),
                call("edit_file", json!({"path": "", "old_text": "a", "new_text": "b"})),
                call("run_command", json!({"command": "  "})),
                call("run_command", json!({"command": "", "args": []})),
                call("search", json!({"pattern": "x", "path": "fifo"})),
                call("list_files", json!({"path": "fifo"}))
            ],
            [{"text": "Refused."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    make_fifo(&workspace.join("fifo"));
    for on_the_client in [false, true] {
        let ide = Ide::new(&workspace, on_the_client, on_the_client);
        let (stop, ended) = one_turn(&server, &ide).await;
        let client = format!("client: {on_the_client}");
        assert_eq!(stop, StopReason::EndTurn, "{client}");
        let empty_path = "`path` is empty: give the file's path, relative to the workspace root";
        let empty_command =
            "`command` is empty: give the command line to run, or the program to run with `args`";
        let pipe = "`fifo` is a named pipe, not a file: only regular files can be read or written";
        let expected = [
            empty_path,
            empty_path,
            empty_path,
            empty_command,
            empty_command,
            pipe,
            pipe,
        ];
        assert_eq!(ended.len(), expected.len(), "{client}: {ended:?}");
        for ((status, text), expected) in ended.iter().zip(expected) {
            assert_eq!(status, "failed", "{client}: {text}");
            assert_eq!(text, expected, "{client}");
        }
        assert!(
            ide.requests().is_empty(),
            "{client}: nobody was asked anything: {:?}",
            ide.requests()
        );
    }
}

/// An argument a tool does not take (`offset` for `line`, as another
/// agent's read tool names it; `directory` for `cwd`) is refused naming the
/// ones it does take — ignored, the read would start at the top and the
/// command run at the root while the model believed otherwise — and a
/// number out of range is said in words, not Rust's type names.
#[tokio::test]
async fn an_argument_the_tool_does_not_take_is_refused_not_ignored() {
    let server = Server::scripted(
        json!([
            [
                call("read_file", json!({"path": "notes.txt", "offset": 2})),
                call("run_command", json!({"command": "touch ran", "directory": "src"})),
                call("read_file", json!({"path": "notes.txt", "line": -1}))
            ],
            [{"text": "Refused."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("notes.txt"), "one\ntwo\n").unwrap();
    let ide = Ide::new(&workspace, false, false);
    let (stop, ended) = one_turn(&server, &ide).await;
    assert_eq!(stop, StopReason::EndTurn);
    let texts: Vec<&str> = ended.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "invalid arguments for read_file: `offset`: unknown field `offset`, expected one of \
             `path`, `line`, `limit`",
            "invalid arguments for run_command: `directory`: unknown field `directory`, expected \
             one of `command`, `args`, `cwd`, `timeout_secs`",
            "invalid arguments for read_file: `line`: invalid value: integer `-1`, expected a \
             whole number from 0 to 4294967295"
        ]
    );
    assert!(ended.iter().all(|(status, _)| status == "failed"));
    assert!(ide.requests().is_empty(), "{:?}", ide.requests());
    assert!(!workspace.join("ran").exists());
}

/// A pattern of large counted repetitions takes seconds to compile (longer
/// still in a debug build): a cancel meanwhile ends the turn at once, as it
/// does while the search reads files, and the next prompt is served.
#[tokio::test]
async fn a_search_whose_pattern_is_slow_to_compile_is_cancelled_at_once() {
    let server = Server::scripted(
        json!([
            [call("search", json!({"pattern": r"\w{2000}", "path": "notes.txt"}))],
            [{"text": "Searched."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("notes.txt"), "words\n").unwrap();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let id = client.start_prompt(&session, "search").await;
    client
        .receive_until(|seen| {
            seen.iter().any(|message| {
                message["params"]["update"]["status"] == "in_progress"
                    && message["params"]["update"]["toolCallId"].is_string()
            })
        })
        .await;
    client
        .notify("session/cancel", json!({"sessionId": session}))
        .await;
    let cancelled = std::time::Instant::now();
    let answer = within("the cancelled prompt's answer", client.response_to(id)).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    // The search is given up on, not waited for: the next prompt is served
    // at once.
    let next = client.prompt(&session, "and now?").await;
    assert_eq!(next["result"]["stopReason"], "end_turn", "{next}");
    assert!(
        cancelled.elapsed() < std::time::Duration::from_secs(2),
        "the next prompt was answered {:?} after the cancel",
        cancelled.elapsed()
    );
}
