//! The file tools on what is not a small ordinary file left alone: a named
//! pipe, a file of a gigabyte, and a file the person changes while they are
//! asked about changing it, each done by the server itself and through a
//! client that offers `fs/*`; and a binary or UTF-16 file the server reads.

mod support;

use std::path::Path;

use agent_client_protocol::v1::schema::StopReason;
use serde_json::{Value, json};
use support::sdk::{Ide, Received, new_session, prompt};
use support::{RawClient, Server, make_fifo, sdk_transport, within};

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

/// Each call's final status and the text it ended with.
fn how_each_ended(calls: &[Value]) -> Vec<(&str, &str)> {
    calls
        .iter()
        .map(|call| (call["status"].as_str().unwrap(), content_text(call)))
        .collect()
}

/// Prompt `texts` one after another as `ide` in a new session; the stop
/// reasons, what was received, and the session.
async fn turns(
    server: &Server,
    ide: &Ide,
    texts: &[&str],
) -> (
    Vec<StopReason>,
    Received,
    agent_client_protocol::v1::schema::SessionId,
) {
    let received = Received::default();
    let workspace = server.home.workspace();
    let (stops, session) = ide
        .run(sdk_transport(server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            let mut stops = Vec::new();
            for text in texts {
                stops.push(prompt(&cx, &session, text).await?);
            }
            Ok((stops, session))
        })
        .await;
    (stops, received, session)
}

/// Prompt `text` in a new session, as a client that offers `fs/*` or not,
/// and see the turn end: the client, the tool calls it saw, and which
/// client it was, for messages.
async fn one_turn(server: &Server, on_the_client: bool, text: &str) -> (Ide, Vec<Value>, String) {
    let ide = Ide::new(&server.home.workspace(), on_the_client, on_the_client);
    let (stops, received, session) = turns(server, &ide, &[text]).await;
    let client = format!("client: {on_the_client}");
    assert_eq!(stops, [StopReason::EndTurn], "{client}");
    (ide, received.tool_calls(&session), client)
}

/// Each call's final status.
fn statuses(calls: &[Value]) -> Vec<&str> {
    calls
        .iter()
        .map(|call| call["status"].as_str().unwrap())
        .collect()
}

/// Opening a named pipe waits for its other end: a tool that did would hold
/// the turn, and the session, for ever. Every file tool refuses one at once
/// (through a symlink too), saying what it is, nothing reaches the client,
/// and the session takes the next prompt.
#[tokio::test]
async fn a_named_pipe_is_refused_at_once_and_the_session_takes_the_next_prompt() {
    for on_the_client in [false, true] {
        let server = Server::scripted(
            json!([
                [call("read_file", json!({"path": "fifo"}))],
                [call("edit_file", json!({"path": "fifo", "old_text": "a", "new_text": "b"}))],
                [call("write_file", json!({"path": "fifo", "content": "x"}))],
                [call("read_file", json!({"path": "link", "line": 1, "limit": 1}))],
                [{"text": "Refused."}],
                [{"text": "Next."}]
            ]),
            &[],
        )
        .await;
        let workspace = server.home.workspace();
        make_fifo(&workspace.join("fifo"));
        std::os::unix::fs::symlink("fifo", workspace.join("link")).unwrap();
        let ide = Ide::new(&workspace, on_the_client, on_the_client);
        let (stops, received, session) = turns(&server, &ide, &["read the pipe", "and now?"]).await;

        let client = format!("client: {on_the_client}");
        assert_eq!(
            stops,
            [StopReason::EndTurn, StopReason::EndTurn],
            "{client}"
        );
        assert_eq!(received.agent_text(&session).0, "Refused.Next.", "{client}");
        let calls = received.tool_calls(&session);
        assert_eq!(calls.len(), 4, "{client}");
        for (call, name) in calls.iter().zip(["fifo", "fifo", "fifo", "link"]) {
            assert_eq!(call["status"], "failed", "{client}: {call}");
            assert_eq!(
                content_text(call),
                format!(
                    "`{name}` is a named pipe, not a file: only regular files can be read or written"
                ),
                "{client}"
            );
        }
        assert!(
            ide.requests().is_empty(),
            "{client}: nothing was asked of the client: {:?}",
            ide.requests()
        );
    }
}

/// A diff carries the old and the new text in one message: a change whose
/// diff would not fit in one (text of control characters grows six-fold as
/// JSON), or whose new text is past the size the tools change, is refused
/// before the person is asked, and the file is left as it was.
#[tokio::test]
async fn a_change_too_large_to_show_is_refused_before_anyone_is_asked() {
    let control_characters = format!("marker\n{}", "\u{1}".repeat(6 << 20));
    let server = Server::scripted(
        json!([
            [call("edit_file", json!({"path": "controls.txt", "old_text": "marker", "new_text": "MARKER"}))],
            [call("edit_file", json!({"path": "grows.txt", "old_text": "a", "new_text": "a".repeat(17), "replace_all": true}))],
            [call("edit_file", json!({"path": "small.txt", "old_text": "a", "new_text": "b"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("controls.txt"), &control_characters).unwrap();
    let grows = "a".repeat(1 << 20);
    std::fs::write(workspace.join("grows.txt"), &grows).unwrap();
    std::fs::write(workspace.join("small.txt"), "a").unwrap();
    let ide = Ide::new(&workspace, false, false);
    let (stops, received, session) = turns(&server, &ide, &["change them"]).await;

    assert_eq!(stops, [StopReason::EndTurn]);
    let calls = received.tool_calls(&session);
    assert_eq!(
        how_each_ended(&calls[..2]),
        [
            (
                "failed",
                "controls.txt's diff would be 73 MiB as JSON (where a control character takes six \
                 bytes, a quote or backslash two), more than the 63 MiB one message to the user \
                 carries; nothing was written"
            ),
            (
                "failed",
                "grows.txt would be 17 MiB after this edit_file, more than the 16 MiB a tool \
                 writes; nothing was written"
            ),
        ]
    );
    assert_eq!(calls[2]["status"], "completed", "{}", calls[2]);
    assert_eq!(
        ide.requests(),
        ["session/request_permission"],
        "only the small change was asked about"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("controls.txt")).unwrap(),
        control_characters
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("grows.txt")).unwrap(),
        grows
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("small.txt")).unwrap(),
        "b"
    );
}

/// A file of a gigabyte (sparse: it costs no disk) whose first lines are
/// text, the fourth 40 KiB long, and whose last line is a gigabyte of NULs.
fn gigabyte_file(workspace: &Path) -> std::path::PathBuf {
    let path = workspace.join("big.txt");
    let long = "x".repeat(40 * 1024);
    std::fs::write(&path, format!("one\ntwo\nthree\n{long}\n")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    path
}

/// Reading a gigabyte to show 32 KiB of it took seconds and a gigabyte of
/// memory: a read goes only as far as the lines asked for, or what the model
/// is shown at once. The answers arrive within the test's deadline, which a
/// whole read would not meet. A change, which must read the whole file, is
/// refused above its limit before anything is read or asked.
#[tokio::test]
async fn a_huge_file_is_read_as_far_as_asked_and_refused_for_a_change() {
    for on_the_client in [false, true] {
        let script = vec![
            json!([call(
                "read_file",
                json!({"path": "big.txt", "line": 2, "limit": 2})
            )]),
            json!([call(
                "read_file",
                json!({"path": "big.txt", "line": 1, "limit": 1})
            )]),
            json!([call(
                "edit_file",
                json!({"path": "big.txt", "old_text": "two", "new_text": "2"})
            )]),
            json!([call(
                "write_file",
                json!({"path": "big.txt", "content": "small\n"})
            )]),
            // A client answers with every line asked for: it is asked for
            // the lines that fit in what the model is shown, not the
            // gigabyte, and a line too long for that is read from disk.
            json!([call("read_file", json!({"path": "big.txt"}))]),
            json!([call(
                "read_file",
                json!({"path": "big.txt", "line": 4, "limit": 1})
            )]),
            json!([call(
                "read_file",
                json!({"path": "big.txt", "line": 5, "limit": 1})
            )]),
            json!([{"text": "Done."}]),
        ];
        let server = Server::scripted(Value::Array(script), &[]).await;
        let workspace = server.home.workspace();
        let big = gigabyte_file(&workspace);
        let (ide, calls, client) = one_turn(&server, on_the_client, "read the big file").await;
        let ended = how_each_ended(&calls);
        assert_eq!(
            ended[..4],
            [
                ("completed", "two\nthree\n"),
                ("completed", "one\n"),
                (
                    "failed",
                    "big.txt is larger than 16 MiB, the most edit_file can change, since it reads the whole file"
                ),
                (
                    "failed",
                    "big.txt is larger than 16 MiB, the most write_file can change, since it reads the whole file"
                ),
            ],
            "{client}"
        );
        if on_the_client {
            assert_eq!(
                ide.requests(),
                [
                    "fs/read_text_file",
                    "fs/read_text_file",
                    "fs/read_text_file"
                ],
                "the changes and the long line asked the client nothing"
            );
        }
        assert_eq!(
            ended[4],
            (
                "completed",
                "one\ntwo\nthree\n[… one read shows at most 32 KiB: this is lines 1 to 3; \
                 read on from line 4 with `line` and `limit` …]"
            ),
            "{client}"
        );
        let (status, long) = ended[5];
        assert_eq!(status, "completed", "{client}");
        let (line, mark) = long.split_once('\n').unwrap();
        assert_eq!(line, "x".repeat(32 * 1024), "{client}");
        assert_eq!(
            mark,
            "[… line 4 is too long to show whole: this is its first 32768 bytes; `search` shows the text around a match anywhere in it …]",
            "{client}"
        );
        // Its NULs are not text, and not shown as if they were.
        assert_eq!(
            ended[6],
            (
                "failed",
                "`big.txt` is binary from line 5 on (1,073,741,824 bytes; line 5 holds NUL \
                 bytes): read_file reads text only"
            ),
            "{client}"
        );
        assert_eq!(std::fs::metadata(&big).unwrap().len(), 1 << 30, "{client}");
        assert!(ide.permissions.lock().unwrap().is_empty(), "{client}");
    }
}

/// Looking for a line past the end of 64 GiB means reading all of it, far
/// longer than the test's deadline: a cancel stops the read where it is,
/// the prompt answers `cancelled`, and the session takes the next prompt.
#[tokio::test]
async fn a_cancel_stops_a_long_read() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "huge.txt", "line": 1_000_000, "limit": 1}))],
            [{"text": "Next."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    // Text first, so it is read as text; then 64 GiB of NULs, sparse.
    let huge = workspace.join("huge.txt");
    std::fs::write(&huge, "line\n".repeat(4000)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let prompted = client.start_prompt(&session, "find the line").await;
    within(
        "the read to begin",
        client.receive_until(|messages| {
            messages
                .iter()
                .any(|message| message["params"]["update"]["status"] == "in_progress")
        }),
    )
    .await;
    client
        .notify("session/cancel", json!({"sessionId": session}))
        .await;
    let answer = within("the answer to the prompt", client.response_to(prompted)).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    assert_eq!(
        ended(&client),
        [(
            "failed".to_owned(),
            "Stopped before it finished: the turn was cancelled".to_owned()
        )]
    );
    let next = within("the next prompt", client.prompt(&session, "go on")).await;
    assert_eq!(next["result"]["stopReason"], "end_turn", "{next}");
    assert_eq!(client.agent_text(&session), "Next.");
}

#[tokio::test]
async fn line_0_and_limit_0_are_refused_as_the_schema_says() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "notes.txt", "line": 0}))],
            [call("read_file", json!({"path": "notes.txt", "limit": 0}))],
            [call("read_file", json!({"path": "notes.txt", "line": 1}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("notes.txt"), "one\ntwo\n").unwrap();
    let ide = Ide::new(&workspace, false, false);
    let (stops, received, session) = turns(&server, &ide, &["read"]).await;
    assert_eq!(stops, [StopReason::EndTurn]);
    let calls = received.tool_calls(&session);
    let ended = how_each_ended(&calls);
    assert_eq!(
        ended,
        [
            (
                "failed",
                "`line` counts from 1: there is no line 0; give 1 to read from the start"
            ),
            (
                "failed",
                "`limit` must be at least 1, or left out to read to the end"
            ),
            ("completed", "one\ntwo\n"),
        ]
    );
}

/// How each tool call of `client`'s notifications ended: its status and
/// the text it ended with (empty for a diff).
fn ended(client: &RawClient) -> Vec<(String, String)> {
    client
        .notifications
        .iter()
        .map(|message| &message["params"]["update"])
        .filter(|update| update["sessionUpdate"] == "tool_call_update")
        .filter(|update| update["status"] == "completed" || update["status"] == "failed")
        .map(|update| {
            let text = update["content"][0]["content"]["text"]
                .as_str()
                .unwrap_or_default();
            (
                update["status"].as_str().unwrap().to_owned(),
                text.to_owned(),
            )
        })
        .collect()
}

const CHANGED: &str = "a.txt changed while the user was asked; nothing was written: read it again";

/// The person appends a line to the file while an edit of it waits for
/// their answer, and then allows it: the edit was worked out from the text
/// before, so it writes nothing and fails, saying why — and so does a write
/// whose file changed. An edit of a file nobody touched meanwhile is written.
#[tokio::test]
async fn a_change_to_a_file_that_changed_while_the_user_was_asked_writes_nothing() {
    let server = Server::scripted(
        json!([
            [call("edit_file", json!({"path": "a.txt", "old_text": "l2", "new_text": "EDITED"}))],
            [call("write_file", json!({"path": "a.txt", "content": "replaced\n"}))],
            [call("edit_file", json!({"path": "a.txt", "old_text": "l2", "new_text": "EDITED"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let file = workspace.join("a.txt");
    std::fs::write(&file, "l1\nl2\nl3\n").unwrap();
    // No `fs` offered: the server reads and writes the file itself.
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let prompted = client.start_prompt(&session, "edit it").await;

    let asked = within("the permission request", client.permission_request()).await;
    std::fs::write(&file, "l1\nl2\nl3\nmine\n").unwrap();
    client.allow(&asked).await;
    let asked = within("the permission request", client.permission_request()).await;
    std::fs::write(&file, "l1\nl2\nl3\nmine\nmore\n").unwrap();
    client.allow(&asked).await;
    // Untouched this time.
    let asked = within("the permission request", client.permission_request()).await;
    client.allow(&asked).await;
    let answer = within("the answer to the prompt", client.response_to(prompted)).await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        ended(&client),
        [
            ("failed".to_owned(), CHANGED.to_owned()),
            ("failed".to_owned(), CHANGED.to_owned()),
            ("completed".to_owned(), String::new()),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "l1\nEDITED\nl3\nmine\nmore\n",
        "only the edit of the text as it was when asked was written"
    );
}

/// The same through an editor that offers `fs/*`: the text that counts is
/// its buffer, unsaved, so that is what is read again once the person
/// answers. A change typed meanwhile stops the edit before the editor is
/// asked to write anything.
#[tokio::test]
async fn an_edit_through_the_client_reads_its_buffer_again_before_writing() {
    let server = Server::scripted(
        json!([
            [call("edit_file", json!({"path": "a.txt", "old_text": "l2", "new_text": "EDITED"}))],
            [call("edit_file", json!({"path": "a.txt", "old_text": "l2", "new_text": "EDITED"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("a.txt"), "l1\nl2\nl3\n").unwrap();
    let mut client = server.raw().await;
    let initialized = client
        .request(
            "initialize",
            json!({"protocolVersion": 1,
                   "clientCapabilities": {"fs": {"readTextFile": true, "writeTextFile": true}}}),
        )
        .await;
    assert!(initialized.get("result").is_some(), "{initialized}");
    let session = client.new_session(&workspace).await;
    let prompted = client.start_prompt(&session, "edit it").await;

    // The editor's buffer of a.txt, which the disk does not see.
    let mut buffer = "l1\nl2\nl3\n".to_owned();
    let mut permissions = 0;
    let mut asked = Vec::new();
    let mut written = Vec::new();
    let answer = within("the turn", async {
        loop {
            let message = client.recv().await;
            if message["id"] == json!(prompted) && message.get("method").is_none() {
                return message;
            }
            let result = match message["method"].as_str() {
                Some("fs/read_text_file") => json!({"content": buffer}),
                Some("fs/write_text_file") => {
                    written.push(message["params"]["content"].clone());
                    json!({})
                }
                Some("session/request_permission") => {
                    permissions += 1;
                    if permissions == 1 {
                        buffer.push_str("typed\n");
                    }
                    json!({"outcome": {"outcome": "selected", "optionId": "allow_once"}})
                }
                _ => {
                    client.notifications.push(message);
                    continue;
                }
            };
            asked.push(message["method"].as_str().unwrap_or_default().to_owned());
            client
                .send(json!({"jsonrpc": "2.0", "id": message["id"], "result": result}))
                .await;
        }
    })
    .await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        asked,
        [
            "fs/read_text_file",
            "session/request_permission",
            "fs/read_text_file",
            "fs/read_text_file",
            "session/request_permission",
            "fs/read_text_file",
            "fs/write_text_file",
        ]
    );
    assert_eq!(written, [json!("l1\nEDITED\nl3\ntyped\n")]);
    assert_eq!(
        ended(&client),
        [
            ("failed".to_owned(), CHANGED.to_owned()),
            ("completed".to_owned(), String::new()),
        ]
    );
}

/// What a black-box probe of the file tools found, done through the
/// server and through an editor that offers `fs/*`: a file whose lines end
/// in `\r\n` edited with the `\n`s models write, text that occurs twice
/// overlapping, an edit that changes nothing, paths a shell would have
/// read otherwise, and files that are not UTF-8.
#[tokio::test]
async fn the_file_tools_take_crlf_files_odd_paths_and_files_that_are_not_utf8() {
    for on_the_client in [false, true] {
        let server = Server::scripted(
            json!([
                [call("edit_file", json!({"path": "crlf.txt", "old_text": "line one\nline two", "new_text": "line one\ntwo-a\ntwo-b"}))],
                [call("edit_file", json!({"path": "braces.rs", "old_text": "}\n}\n", "new_text": "}\n"}))],
                [call("edit_file", json!({"path": "braces.rs", "old_text": "    }", "new_text": "    }"}))],
                [call("write_file", json!({"path": "~/home.txt", "content": "x"}))],
                [call("write_file", json!({"path": "newdir/", "content": "x"}))],
                [call("read_file", json!({"path": "braces.rs/"}))],
                [call("write_file", json!({"path": "new\nline.txt", "content": "x"}))],
                [call("write_file", json!({"path": "latin1.txt", "content": "café\n"}))],
                [call("read_file", json!({"path": "also-latin1.txt"}))],
                [call("edit_file", json!({"path": "also-latin1.txt", "old_text": "caf", "new_text": "CAF"}))],
                [{"text": "Done."}]
            ]),
            &[],
        )
        .await;
        let workspace = server.home.workspace();
        std::fs::write(workspace.join("crlf.txt"), "line one\r\nline two\r\n").unwrap();
        let braces = "    }\n}\n}\n";
        std::fs::write(workspace.join("braces.rs"), braces).unwrap();
        std::fs::write(workspace.join("latin1.txt"), b"caf\xe9\n").unwrap();
        std::fs::write(workspace.join("also-latin1.txt"), b"caf\xe9\n").unwrap();
        let (ide, calls, client) = one_turn(&server, on_the_client, "probe the tools").await;
        assert_eq!(
            statuses(&calls),
            [
                "completed",
                "failed",
                "failed",
                "failed",
                "failed",
                "failed",
                "failed",
                "completed",
                "failed",
                "failed"
            ],
            "{client}"
        );
        assert_eq!(
            std::fs::read_to_string(workspace.join("crlf.txt")).unwrap(),
            "line one\r\ntwo-a\r\ntwo-b\r\n",
            "{client}"
        );
        let failed = |index: usize| content_text(&calls[index]);
        assert_eq!(
            failed(1),
            "braces.rs: old_text occurs 2 times, some overlapping; include more surrounding text \
             to make it unique, or set replace_all",
            "{client}"
        );
        assert_eq!(
            failed(2),
            "braces.rs: old_text and new_text are the same: the edit would change nothing; \
             nothing was written",
            "{client}"
        );
        assert_eq!(
            std::fs::read_to_string(workspace.join("braces.rs")).unwrap(),
            braces
        );
        assert_eq!(
            failed(3),
            "`~/home.txt` starts with `~`, which is not expanded to a home directory here: paths \
             are relative to the workspace root, or absolute inside it",
            "{client}"
        );
        assert_eq!(
            failed(4),
            "`newdir/` ends with `/`, so it names a directory, not a file to write; leave the `/` \
             out to write a file",
            "{client}"
        );
        assert_eq!(
            failed(5),
            "`braces.rs/`: Not a directory (os error 20)",
            "{client}"
        );
        assert_eq!(
            failed(6),
            "`new\nline.txt` would create a name with a control character in it (U+000A); \
             nothing was created",
            "{client}"
        );
        let mut names: Vec<String> = std::fs::read_dir(&workspace)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["also-latin1.txt", "braces.rs", "crlf.txt", "latin1.txt"],
            "{client}: nothing was created, and nothing is left beside what was written"
        );

        // A file that is not text is replaced whole, its diff from a note.
        assert_eq!(
            std::fs::read_to_string(workspace.join("latin1.txt")).unwrap(),
            "café\n",
            "{client}"
        );
        let permissions = ide.permissions.lock().unwrap().clone();
        assert_eq!(permissions.len(), 2, "{client}");
        let asked = serde_json::to_value(&permissions[1]).unwrap();
        assert_eq!(
            asked["toolCall"]["content"][0]["oldText"],
            "(5 bytes, not UTF-8 text: binary, or another encoding)",
            "{client}: {asked}"
        );
        let not_utf8 = "`also-latin1.txt` is not UTF-8 text: byte 3 (0xE9, on line 1) is not \
                        valid UTF-8; it is binary, or text in another encoding such as Latin-1";
        assert_eq!(failed(8), not_utf8, "{client}");
        assert_eq!(
            failed(9),
            format!(
                "{not_utf8}. edit_file changes only UTF-8 and UTF-16 text: editing other bytes \
                 as text would corrupt them; nothing was written"
            ),
            "{client}"
        );
        assert_eq!(
            std::fs::read(workspace.join("also-latin1.txt")).unwrap(),
            b"caf\xe9\n",
            "{client}"
        );
    }
}

/// A UTF-16 file, as Windows tools write it, is edited and rewritten as
/// UTF-16 of its own form — byte order, byte-order mark, line endings —
/// by the server itself, also when the client offers `fs/*` but cannot
/// read it; the person is shown its text decoded. One that only starts as
/// UTF-16 is left alone, saying where it stops being so.
#[tokio::test]
async fn a_utf16_file_is_edited_and_written_back_in_its_own_form() {
    for on_the_client in [false, true] {
        let server = Server::scripted(
            json!([
                [call("read_file", json!({"path": "windows.txt"}))],
                [call("edit_file", json!({"path": "windows.txt", "old_text": "second line\n", "new_text": "2nd line \u{2713}\n"}))],
                [call("edit_file", json!({"path": "mac.txt", "old_text": "two", "new_text": "deux \u{1F980}"}))],
                [call("write_file", json!({"path": "no-mark.txt", "content": "rewritten\n"}))],
                [call("edit_file", json!({"path": "broken.txt", "old_text": "ok", "new_text": "OK"}))],
                [{"text": "Done."}]
            ]),
            &[],
        )
        .await;
        let workspace = server.home.workspace();
        let windows = "first line\r\nsecond line\r\n";
        std::fs::write(
            workspace.join("windows.txt"),
            utf16(b"\xFF\xFE", windows, false),
        )
        .unwrap();
        std::fs::write(
            workspace.join("mac.txt"),
            utf16(b"\xFE\xFF", "one\ntwo\n", true),
        )
        .unwrap();
        std::fs::write(
            workspace.join("no-mark.txt"),
            utf16(b"", "plain text\n", false),
        )
        .unwrap();
        let mut broken = utf16(b"\xFF\xFE", "ok\n", false);
        broken.extend_from_slice(&0xDC00u16.to_le_bytes());
        std::fs::write(workspace.join("broken.txt"), &broken).unwrap();
        let (ide, calls, client) = one_turn(&server, on_the_client, "edit them").await;
        assert_eq!(
            statuses(&calls),
            ["completed", "completed", "completed", "completed", "failed"],
            "{client}: {calls:?}"
        );
        assert_eq!(
            content_text(&calls[0]),
            format!(
                "{windows}[… windows.txt is UTF-16 (little-endian) text, shown decoded: edit_file \
                 and write_file keep it so …]"
            ),
            "{client}"
        );
        assert_eq!(
            std::fs::read(workspace.join("windows.txt")).unwrap(),
            utf16(b"\xFF\xFE", "first line\r\n2nd line \u{2713}\r\n", false),
            "{client}"
        );
        assert_eq!(
            std::fs::read(workspace.join("mac.txt")).unwrap(),
            utf16(b"\xFE\xFF", "one\ndeux \u{1F980}\n", true),
            "{client}"
        );
        assert_eq!(
            std::fs::read(workspace.join("no-mark.txt")).unwrap(),
            utf16(b"", "rewritten\n", false),
            "{client}"
        );
        assert_eq!(
            content_text(&calls[4]),
            "`broken.txt` starts as UTF-16 (little-endian) text but is not: byte 8 starts a lone \
             surrogate (0xDC00). edit_file changes only UTF-8 and UTF-16 text: editing other \
             bytes as text would corrupt them; nothing was written",
            "{client}"
        );
        assert_eq!(std::fs::read(workspace.join("broken.txt")).unwrap(), broken);
        // The person was shown each change as text.
        let permissions = ide.permissions.lock().unwrap().clone();
        assert_eq!(permissions.len(), 3, "{client}");
        let asked = serde_json::to_value(&permissions[0]).unwrap();
        let diff = &asked["toolCall"]["content"][0];
        assert_eq!(diff["oldText"], windows, "{client}: {asked}");
        assert_eq!(
            diff["newText"], "first line\r\n2nd line \u{2713}\r\n",
            "{client}"
        );
        let asked = serde_json::to_value(&permissions[2]).unwrap();
        assert_eq!(
            asked["toolCall"]["content"][0]["oldText"], "plain text\n",
            "{client}"
        );
        assert!(
            !ide.requests()
                .iter()
                .any(|method| method == "fs/write_text_file"),
            "{client}: an editor that cannot read UTF-16 is not asked to write it: {:?}",
            ide.requests()
        );
    }
}

/// `text` in UTF-16, little-endian or big-endian, after `prefix`.
fn utf16(prefix: &[u8], text: &str, big_endian: bool) -> Vec<u8> {
    let mut bytes = prefix.to_vec();
    for unit in text.encode_utf16() {
        if big_endian {
            bytes.extend_from_slice(&unit.to_be_bytes());
        } else {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
    }
    bytes
}

/// Read by the server itself, a file that is not text — an image, a
/// program, anything holding NUL bytes — is refused, however little of it
/// is asked for, saying what it looks like and how big it is: its bytes as
/// text are garbage to a model. UTF-16 text, as Windows tools write it, is
/// shown decoded (a surrogate pair too), as far as it is asked for. So it
/// is when a client offers `fs/*`, but cannot read the file, or reads it as
/// text holding NULs.
#[tokio::test]
async fn a_binary_file_is_refused_saying_what_it_is_and_utf16_text_is_decoded() {
    for on_the_client in [false, true] {
        let reads = [
            json!({"path": "logo.png"}),
            json!({"path": "tool", "line": 1, "limit": 1}),
            json!({"path": "data.bin", "line": 2}),
            json!({"path": "windows.txt", "line": 2}),
            json!({"path": "mac.txt"}),
            json!({"path": "no-mark.txt"}),
            json!({"path": "long.txt"}),
            json!({"path": "long.txt", "line": 15_000, "limit": 2}),
            json!({"path": "broken.txt"}),
            json!({"path": "mac.txt", "line": 5}),
        ];
        let mut script: Vec<Value> = reads
            .iter()
            .map(|read| json!([call("read_file", read.clone())]))
            .collect();
        script.push(json!([{"text": "Done."}]));
        let server = Server::scripted(Value::Array(script), &[]).await;
        let workspace = server.home.workspace();
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0".to_vec();
        png.resize(1234, 0x5A);
        std::fs::write(workspace.join("logo.png"), &png).unwrap();
        // The start of a real program.
        let mut program = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(env!("CARGO_BIN_EXE_punie")).unwrap(),
                65_536,
            ),
            &mut program,
        )
        .unwrap();
        std::fs::write(workspace.join("tool"), &program).unwrap();
        std::fs::write(workspace.join("data.bin"), b"abc\ndef\0ghi\n").unwrap();
        std::fs::write(
            workspace.join("windows.txt"),
            utf16(b"\xFF\xFE", "h\u{e9}llo\r\nw\u{f6}rld \u{1F980}\r\n", false),
        )
        .unwrap();
        std::fs::write(
            workspace.join("mac.txt"),
            utf16(b"\xFE\xFF", "one\ntwo", true),
        )
        .unwrap();
        std::fs::write(
            workspace.join("no-mark.txt"),
            utf16(b"", "plain text\nwithout a mark\n", false),
        )
        .unwrap();
        let lines: String = (1..=20_000).map(|n| format!("line {n}\n")).collect();
        std::fs::write(
            workspace.join("long.txt"),
            utf16(b"\xFF\xFE", &lines, false),
        )
        .unwrap();
        let mut broken = utf16(b"\xFF\xFE", "ok\n", false);
        broken.extend_from_slice(&0xD800u16.to_le_bytes());
        broken.extend_from_slice(&utf16(b"", "x\n", false));
        std::fs::write(workspace.join("broken.txt"), &broken).unwrap();
        let (_, calls, client) = one_turn(&server, on_the_client, "read them").await;
        let ended = how_each_ended(&calls);
        assert_eq!(ended.len(), reads.len(), "{ended:?}");
        let note = |name: &str, form: &str| {
            format!(
                "[… {name} is UTF-16 ({form}) text, shown decoded: edit_file and write_file keep it \
                 so …]"
            )
        };
        assert_eq!(
            ended[..6],
            [
                (
                    "failed",
                    "`logo.png` is binary (1,234 bytes; it starts like a PNG image): read_file reads \
                     text only"
                ),
                (
                    "failed",
                    "`tool` is binary (65,536 bytes; it starts like an ELF executable or library): \
                     read_file reads text only"
                ),
                (
                    "failed",
                    "`data.bin` is binary (12 bytes; it holds NUL bytes): read_file reads text only"
                ),
                (
                    "completed",
                    format!(
                        "w\u{f6}rld \u{1F980}\r\n{}",
                        note("windows.txt", "little-endian")
                    )
                    .as_str()
                ),
                (
                    "completed",
                    format!("one\ntwo\n{}", note("mac.txt", "big-endian")).as_str()
                ),
                (
                    "completed",
                    format!(
                        "plain text\nwithout a mark\n{}",
                        note("no-mark.txt", "little-endian, without a byte-order mark")
                    )
                    .as_str()
                ),
            ]
        );
        // Decoded a chunk at a time, and only as far as asked for.
        let (status, long) = ended[6];
        assert_eq!(status, "completed");
        let (shown, marks) = long.split_once("[… one read").unwrap();
        assert!(shown.starts_with("line 1\nline 2\n"), "{shown}");
        let next = shown.lines().count() + 1;
        assert!(
            marks.starts_with(&format!(
                " shows at most 32 KiB: this is lines 1 to {}; read on from line {next} with `line` \
                 and `limit` …]\n",
                next - 1
            )),
            "{marks}"
        );
        assert_eq!(
            ended[7],
            (
                "completed",
                format!(
                    "line 15000\nline 15001\n{}",
                    note("long.txt", "little-endian")
                )
                .as_str()
            )
        );
        assert_eq!(
            ended[8],
            (
                "failed",
                "`broken.txt` starts as UTF-16 (little-endian) text but is not: byte 8 starts a lone \
                 surrogate (0xD800)"
            )
        );
        assert_eq!(
            ended[9],
            ("failed", "mac.txt has 2 lines; line 5 is past its end"),
            "{client}"
        );
    }
}
