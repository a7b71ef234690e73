//! The agent loop end to end: a `script:` model calls tools, the server
//! carries them out through the client (or itself), asks permission, and
//! stops when cancelled. The client is the official SDK's client role.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, ListSessionsRequest, LoadSessionRequest, PromptRequest, PromptResponse,
    SessionId, StopReason,
};
use agent_client_protocol::{Agent, Error, SentRequest, V1};
use serde_json::{Value, json};
use support::sdk::{Ide, Received, first_update, new_session, prompt};
use support::{Home, Server, ended, pid_in, sdk_transport};

fn call(name: &str, arguments: Value) -> Value {
    json!({"tool_call": {"name": name, "arguments": arguments}})
}

fn write_notes(server: &Server, text: &str) -> std::path::PathBuf {
    let notes = server.home.workspace().join("notes.txt");
    std::fs::write(&notes, text).unwrap();
    notes
}

/// Cancel `session`, whose prompt is `running`: it must answer `cancelled`
/// within 100 ms. Returns how many of the session's updates `received` held
/// when the answer came.
async fn cancelled_promptly(
    cx: &ConnectionTo<Agent>,
    received: &Received,
    session: &SessionId,
    running: SentRequest<PromptResponse, V1>,
) -> Result<usize, Error> {
    let (tell, answered) = tokio::sync::oneshot::channel();
    let (counted, id) = (received.clone(), session.clone());
    // Counted inside the SDK's dispatch, which takes in nothing that came
    // after the answer until this returns; a count taken once the answer
    // is awaited could already hold an update that followed it.
    running.on_receiving_result(move |answer| {
        let _ = tell.send((answer, updates_of(&counted, &id).len()));
        std::future::ready(Ok(()))
    })?;
    let cancelled_at = Instant::now();
    cx.send_notification(CancelNotification::new(session.clone()))?;
    let (answer, seen) = support::within("the cancelled prompt's answer", answered)
        .await
        .expect("the prompt is answered");
    let took = cancelled_at.elapsed();
    assert_eq!(answer?.stop_reason, StopReason::Cancelled);
    assert!(
        took < Duration::from_millis(100),
        "answered cancelled in {took:?}"
    );
    Ok(seen)
}

/// Every update `received` holds for `session`, oldest first.
fn updates_of(received: &Received, session: &SessionId) -> Vec<Value> {
    received
        .updates
        .lock()
        .unwrap()
        .iter()
        .filter(|n| &n.session_id == session)
        .map(|n| serde_json::to_value(&n.update).unwrap())
        .collect()
}

/// Nothing more of `session`'s cancelled turn reaches the client, which had
/// `seen` of its updates with the answer: a request sent now on the same
/// connection is answered with none arrived before it.
async fn nothing_follows_the_cancel(
    cx: &ConnectionTo<Agent>,
    received: &Received,
    session: &SessionId,
    seen: usize,
) -> Result<(), Error> {
    cx.send_request(ListSessionsRequest::new())
        .block_task()
        .await?;
    let updates = updates_of(received, session);
    let after = &updates[seen..];
    assert!(
        after.is_empty(),
        "updates after the cancelled answer: {after:#?}"
    );
    Ok(())
}

/// Prompt once as `ide` and return the stop reason and what was received.
async fn one_turn(
    server: &Server,
    ide: &Ide,
    text: &str,
) -> (
    StopReason,
    Received,
    agent_client_protocol::v1::schema::SessionId,
) {
    let received = Received::default();
    let workspace = server.home.workspace();
    let (stop, session) = ide
        .run(sdk_transport(server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            Ok((prompt(&cx, &session, text).await?, session))
        })
        .await;
    (stop, received, session)
}

/// The requests a turn that reads, edits (asking first) and runs a command
/// makes of a client that offers files and terminals. The edit reads the
/// file again once allowed, to see it did not change meanwhile.
const THROUGH_THE_CLIENT: [&str; 10] = [
    "fs/read_text_file",
    "fs/read_text_file",
    "session/request_permission",
    "fs/read_text_file",
    "fs/write_text_file",
    "session/request_permission",
    "terminal/create",
    "terminal/wait_for_exit",
    "terminal/output",
    "terminal/release",
];

#[tokio::test]
async fn a_turn_reads_asks_writes_and_runs_a_command_through_the_client() {
    let server = Server::scripted(
        json!([
            [{"text": "Let me look. "}, call("read_file", json!({"path": "notes.txt"}))],
            [call("edit_file", json!({"path": "notes.txt", "old_text": "old", "new_text": "new"}))],
            [call("run_command", json!({"command": "cat notes.txt; echo done-running"}))],
            [{"thought": "All good."}, {"text": "Done."}, {"usage": {"input_tokens": 100, "output_tokens": 20}}]
        ]),
        &[],
    )
    .await;
    let notes = write_notes(&server, "old text\n");
    let ide = Ide::new(&server.home.workspace(), true, true);
    let (stop, received, session) = one_turn(&server, &ide, "fix the notes").await;

    assert_eq!(stop, StopReason::EndTurn);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "new text\n");
    assert_eq!(
        ide.requests(),
        THROUGH_THE_CLIENT,
        "every tool went through the client"
    );
    let calls = received.tool_calls(&session);
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert_eq!(
            call["statuses"],
            json!(["pending", "in_progress", "completed"]),
            "{call}"
        );
    }
    assert_eq!(calls[0]["kind"], "read");
    assert_eq!(calls[0]["title"], "Read notes.txt");
    assert_eq!(calls[0]["rawInput"], json!({"path": "notes.txt"}));
    assert_eq!(calls[0]["locations"][0]["path"], json!(notes));
    assert_eq!(calls[1]["kind"], "edit");
    assert_eq!(
        calls[1]["content"][0],
        json!({"type": "diff", "path": notes, "oldText": "old text\n", "newText": "new text\n"})
    );
    assert_eq!(calls[2]["kind"], "execute");
    assert_eq!(calls[2]["content"][0]["type"], "terminal");
    let permission = &ide.permissions.lock().unwrap()[0];
    let kinds: Vec<Value> = permission
        .options
        .iter()
        .map(|option| serde_json::to_value(option.kind).unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["allow_once", "allow_always", "reject_once", "reject_always"]
    );
    let (text, _) = received.agent_text(&session);
    assert_eq!(text, "Let me look. Done.");
    let updates: Vec<Value> = received
        .updates
        .lock()
        .unwrap()
        .iter()
        .map(|n| serde_json::to_value(&n.update).unwrap())
        .collect();
    assert!(updates.iter().any(
        |u| u["sessionUpdate"] == "agent_thought_chunk" && u["content"]["text"] == "All good."
    ));
    assert!(
        updates
            .iter()
            .any(|u| u["sessionUpdate"] == "usage_update" && u["used"] == 120)
    );
}

#[tokio::test]
async fn a_workspace_opened_through_a_symlink_keeps_its_name_in_what_the_client_is_sent() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "notes.txt"}))],
            [call("edit_file", json!({"path": "notes.txt", "old_text": "old", "new_text": "new"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let real = write_notes(&server, "old text\n");
    // The project as the editor opened it: through a link (as /tmp is on macOS).
    let linked = server.home.dir.path().join("linked-workspace");
    std::os::unix::fs::symlink(server.home.workspace(), &linked).unwrap();
    let notes = linked.join("notes.txt");
    let ide = Ide::new(&linked, true, false);
    let received = Received::default();
    let (stop, session) = ide
        .run(sdk_transport(&server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &linked).await?;
            Ok((prompt(&cx, &session, "fix the notes").await?, session))
        })
        .await;

    assert_eq!(stop, StopReason::EndTurn);
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "new text\n");
    let paths = ide.paths.lock().unwrap().clone();
    assert!(!paths.is_empty());
    assert!(
        paths.iter().all(|path| *path == notes),
        "every request names the file as the editor knows it: {paths:?}"
    );
    let calls = received.tool_calls(&session);
    assert_eq!(calls[0]["locations"][0]["path"], json!(notes));
    assert_eq!(calls[1]["locations"][0]["path"], json!(notes));
    assert_eq!(calls[1]["content"][0]["path"], json!(notes));
}

/// A server whose model overwrites `notes.txt`, then says it understood.
async fn overwriting_server() -> Server {
    Server::scripted(
        json!([
            [call("write_file", json!({"path": "notes.txt", "content": "overwritten"}))],
            [{"text": "Understood."}]
        ]),
        &[],
    )
    .await
}

/// A turn whose `write_file` over `notes.txt` the client answers with
/// `answer`, which allows nothing: the turn ends, the file stays byte for
/// byte as it was, and the call fails. What the model was told of the call,
/// and what the client was asked.
async fn an_overwrite_answered(answer: &'static str) -> (String, Vec<String>) {
    let server = overwriting_server().await;
    let notes = write_notes(&server, "precious\r\nbytes\n");
    let before = std::fs::read(&notes).unwrap();
    let ide = Ide::new(&server.home.workspace(), true, true).answer_with(&[answer]);
    let (stop, received, session) = one_turn(&server, &ide, "overwrite it").await;
    assert_eq!(stop, StopReason::EndTurn);
    assert_eq!(std::fs::read(&notes).unwrap(), before);
    let calls = received.tool_calls(&session);
    assert_eq!(calls[0]["status"], "failed");
    (content_text(&calls[0]).to_owned(), ide.requests())
}

#[tokio::test]
async fn a_rejected_write_leaves_the_file_byte_for_byte_untouched() {
    let (told, asked) = an_overwrite_answered("reject_once").await;
    assert!(!asked.contains(&"fs/write_text_file".to_owned()));
    assert!(told.contains("declined"), "{told}");
}

#[tokio::test]
async fn an_answer_that_was_not_offered_does_nothing_and_is_not_called_a_refusal() {
    let (told, asked) = an_overwrite_answered("maybe_later").await;
    assert!(!asked.contains(&"fs/write_text_file".to_owned()));
    assert!(told.contains("permission could not be asked"), "{told}");
    assert!(
        told.contains("`maybe_later`, which was not offered"),
        "{told}"
    );
    assert!(!told.contains("declined"), "{told}");
}

#[tokio::test]
async fn an_answer_that_is_not_a_permission_answer_does_nothing_and_says_so() {
    let server = overwriting_server().await;
    let notes = write_notes(&server, "precious\n");
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let prompted = client.start_prompt(&session, "overwrite it").await;
    let permission = client.permission_request().await;
    client
        .send(json!({"jsonrpc": "2.0", "id": permission["id"], "result": {"outcome": {"outcome": "maybe"}}}))
        .await;
    let answer = client.response_to(prompted).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "precious\n");
    let failed = client
        .notifications
        .iter()
        .map(|message| &message["params"]["update"])
        .find(|update| update["status"] == "failed")
        .expect("the write ends failed");
    let told = content_text(failed);
    assert!(
        told.contains("not a valid session/request_permission response"),
        "{told}"
    );
}

#[tokio::test]
async fn a_cancelled_permission_answer_ends_the_turn_cancelled_and_writes_nothing() {
    let server = Server::scripted(
        json!([
            [
                {"text": "Overwriting. "},
                call("write_file", json!({"path": "notes.txt", "content": "overwritten"})),
                call("run_command", json!({"command": "touch ran"}))
            ],
            [{"text": "Understood."}]
        ]),
        &[],
    )
    .await;
    let notes = write_notes(&server, "precious\r\nbytes\n");
    let before = std::fs::read(&notes).unwrap();
    let workspace = server.home.workspace();
    let database = server.home.database();
    let ide = Ide::new(&workspace, true, true).answer_with(&["cancel"]);
    let received = Received::default();
    let (stop, ended, next, session) = ide
        .run(sdk_transport(&server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            let stop = prompt(&cx, &session, "overwrite it").await?;
            // The turn's end is stored before its prompt is answered.
            let ended = support::turn_end(&database, &session.to_string());
            let next = prompt(&cx, &session, "never mind").await?;
            Ok((stop, ended, next, session))
        })
        .await;

    assert_eq!(stop, StopReason::Cancelled);
    assert_eq!(
        std::fs::read(&notes).unwrap(),
        before,
        "the file is untouched"
    );
    assert!(
        !workspace.join("ran").exists(),
        "the call after it was not run"
    );
    assert_eq!(
        ide.requests(),
        ["fs/read_text_file", "session/request_permission"],
        "read for the diff and asked once; nothing was written or run"
    );
    let calls = received.tool_calls(&session);
    assert_eq!(
        calls.len(),
        1,
        "only the call that asked is shown: {calls:?}"
    );
    assert_eq!(calls[0]["title"], "Write notes.txt");
    assert_eq!(calls[0]["status"], "failed", "{}", calls[0]);
    assert_eq!(content_text(&calls[0]), "Cancelled");
    let ended = ended.expect("the cancelled turn's end is stored");
    assert_eq!(ended["stopReason"], "cancelled", "{ended}");
    assert_eq!(
        ended["note"],
        Value::Null,
        "the person cancelled; nothing else needs saying: {ended}"
    );

    // The session is free again, and the script goes on where it was.
    assert_eq!(next, StopReason::EndTurn);
    assert_eq!(received.agent_text(&session).0, "Overwriting. Understood.");

    // A client that loads the session later is shown the same failed call.
    let watcher = loaded_afresh(&server, &session, &workspace).await;
    let replayed = watcher.tool_calls(&session);
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["status"], "failed");
    assert_eq!(replayed[0]["content"], calls[0]["content"]);
    assert_eq!(watcher.agent_text(&session).0, "Overwriting. Understood.");
}

#[tokio::test]
async fn a_cancelled_permission_answer_stops_an_edit_and_a_command_before_they_run() {
    let server = Server::scripted(
        json!([
            [call("edit_file", json!({"path": "notes.txt", "old_text": "old", "new_text": "new"}))],
            [call("run_command", json!({"command": "touch ran"}))],
            [{"text": "Fine."}]
        ]),
        &[],
    )
    .await;
    let notes = write_notes(&server, "old text\n");
    let workspace = server.home.workspace();
    // Without the client's fs and terminal: the server would do both itself.
    let ide = Ide::new(&workspace, false, false).answer_with(&["cancel", "cancel"]);
    let received = Received::default();
    let (stops, session) = ide
        .run(sdk_transport(&server), received.clone(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            let mut stops = Vec::new();
            for text in ["edit it", "run it", "then stop"] {
                stops.push(prompt(&cx, &session, text).await?);
            }
            Ok((stops, session))
        })
        .await;
    assert_eq!(
        stops,
        [
            StopReason::Cancelled,
            StopReason::Cancelled,
            StopReason::EndTurn
        ]
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "old text\n");
    assert!(!workspace.join("ran").exists(), "the command never ran");
    let calls = received.tool_calls(&session);
    let seen: Vec<(Value, Value)> = calls
        .iter()
        .map(|call| (call["kind"].clone(), call["status"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("edit"), json!("failed")),
            (json!("execute"), json!("failed"))
        ]
    );
}

#[tokio::test]
async fn allow_always_skips_the_second_prompt_and_reject_always_refuses_without_asking() {
    let server = Server::scripted(
        json!([
            [call("write_file", json!({"path": "a.txt", "content": "a"}))],
            [call("write_file", json!({"path": "b.txt", "content": "b"}))],
            [call("run_command", json!({"command": "touch ran"}))],
            [call("run_command", json!({"command": "touch ran"}))],
            [{"text": "ok"}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let ide = Ide::new(&workspace, true, true).answer_with(&["allow_always", "reject_always"]);
    let (stop, received, session) = one_turn(&server, &ide, "write twice").await;
    assert_eq!(stop, StopReason::EndTurn);
    assert_eq!(
        std::fs::read_to_string(workspace.join("a.txt")).unwrap(),
        "a"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("b.txt")).unwrap(),
        "b"
    );
    let asked = ide
        .requests()
        .iter()
        .filter(|m| *m == "session/request_permission")
        .count();
    assert_eq!(asked, 2, "once for write_file, once for run_command");
    assert!(
        !workspace.join("ran").exists(),
        "the command was rejected, twice"
    );
    let statuses: Vec<Value> = received
        .tool_calls(&session)
        .iter()
        .map(|c| c["status"].clone())
        .collect();
    assert_eq!(statuses, ["completed", "completed", "failed", "failed"]);
    // The model learns that the refusal lasts, and that the second was
    // refused by it rather than by a person asked again.
    let told: Vec<String> = received.tool_calls(&session)[2..]
        .iter()
        .map(|c| content_text(c).to_owned())
        .collect();
    assert!(
        told[0].contains("every later call of this tool in this session"),
        "{}",
        told[0]
    );
    assert!(
        told[1].contains("chose earlier to decline every call of this tool")
            && told[1].contains("nobody was asked"),
        "{}",
        told[1]
    );
}

#[tokio::test]
async fn without_client_capabilities_the_same_turn_runs_on_the_server() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "notes.txt"}))],
            [call("edit_file", json!({"path": "notes.txt", "old_text": "old", "new_text": "new"}))],
            [call("run_command", json!({"command": "echo hello from the server > out.txt"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let notes = write_notes(&server, "old text\n");
    let ide = Ide::new(&server.home.workspace(), false, false);
    let (stop, received, session) = one_turn(&server, &ide, "fix the notes").await;
    assert_eq!(stop, StopReason::EndTurn);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "new text\n");
    assert_eq!(
        std::fs::read_to_string(server.home.workspace().join("out.txt")).unwrap(),
        "hello from the server\n"
    );
    assert_eq!(
        ide.requests(),
        ["session/request_permission", "session/request_permission"],
        "only permission goes to a client without fs or terminal"
    );
    let calls = received.tool_calls(&session);
    assert!(
        calls.iter().all(|call| call["status"] == "completed"),
        "{calls:?}"
    );
}

/// Each file capability is judged on its own: a client that offers only
/// reading is asked to read, while the server writes; one that offers only
/// writing is asked to write, while the server reads. A write is reported
/// as a diff either way.
#[tokio::test]
async fn reading_and_writing_go_to_the_client_each_by_its_own_capability() {
    for (read, write, expected) in [
        (
            true,
            false,
            // The second read is the old text, for the write's diff; the
            // third sees it unchanged once the write is allowed.
            [
                "fs/read_text_file",
                "fs/read_text_file",
                "session/request_permission",
                "fs/read_text_file",
            ]
            .as_slice(),
        ),
        (
            false,
            true,
            ["session/request_permission", "fs/write_text_file"].as_slice(),
        ),
    ] {
        let server = Server::scripted(
            json!([
                [call("read_file", json!({"path": "notes.txt"}))],
                [call("write_file", json!({"path": "notes.txt", "content": "rewritten\n"}))],
                [{"text": "Done."}]
            ]),
            &[],
        )
        .await;
        let notes = write_notes(&server, "old text\n");
        let ide = Ide::new(&server.home.workspace(), false, false).files(read, write);
        let (stop, received, session) = one_turn(&server, &ide, "rewrite the notes").await;

        assert_eq!(stop, StopReason::EndTurn);
        assert_eq!(ide.requests(), expected, "read {read}, write {write}");
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "rewritten\n");
        let calls = received.tool_calls(&session);
        assert_eq!(calls[0]["status"], "completed", "{calls:?}");
        assert_eq!(calls[0]["content"][0]["content"]["text"], "old text\n");
        assert_eq!(calls[1]["kind"], "edit");
        assert_eq!(
            calls[1]["content"][0],
            json!({"type": "diff", "path": notes, "oldText": "old text\n", "newText": "rewritten\n"})
        );
    }
}

#[tokio::test]
async fn paths_outside_the_workspace_are_refused_and_never_reach_the_client() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "../secret.txt"}))],
            [call("read_file", json!({"path": "/etc/passwd"}))],
            [call("read_file", json!({"path": "link/secret.txt"}))],
            [call("write_file", json!({"path": "link/planted.txt", "content": "x"}))],
            [{"text": "Refused."}]
        ]),
        &[],
    )
    .await;
    let outside = server.home.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::fs::write(server.home.dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(&outside, server.home.workspace().join("link")).unwrap();
    let ide = Ide::new(&server.home.workspace(), true, true);
    let (stop, received, session) = one_turn(&server, &ide, "try to escape").await;
    assert_eq!(stop, StopReason::EndTurn);
    assert!(
        ide.requests().is_empty(),
        "nothing reached the client: {:?}",
        ide.requests()
    );
    assert!(!outside.join("planted.txt").exists());
    for call in received.tool_calls(&session) {
        assert_eq!(call["status"], "failed");
        let message = call["content"][0]["content"]["text"].as_str().unwrap();
        assert!(message.contains("outside the workspace"), "{message}");
    }
}

/// The text of the last content item of `call` as the client last saw it.
/// What a new client that loads `session` is shown.
async fn loaded_afresh(
    server: &Server,
    session: &agent_client_protocol::v1::schema::SessionId,
    workspace: &Path,
) -> Received {
    let watcher = Received::default();
    support::sdk::client(sdk_transport(server), watcher.clone(), async |cx| {
        support::sdk::initialize(&cx).await?;
        cx.send_request(LoadSessionRequest::new(session.clone(), workspace))
            .block_task()
            .await?;
        Ok(())
    })
    .await;
    watcher
}

fn content_text(call: &Value) -> &str {
    let content = call["content"].as_array().expect("the call has content");
    content
        .last()
        .and_then(|item| item["content"]["text"].as_str())
        .unwrap_or_else(|| panic!("text content: {call}"))
}

#[tokio::test]
async fn reads_listings_and_searches_show_the_client_what_the_model_was_given() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "notes.txt"}))],
            [call("list_files", json!({}))],
            [call("search", json!({"pattern": "needle"}))],
            [call("read_file", json!({"path": "big.txt"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    write_notes(&server, "a needle here\n");
    let big = "x".repeat(200 * 1024);
    std::fs::write(server.home.workspace().join("big.txt"), &big).unwrap();
    let ide = Ide::new(&server.home.workspace(), true, true);
    let (stop, received, session) = one_turn(&server, &ide, "look around").await;
    assert_eq!(stop, StopReason::EndTurn);
    let calls = received.tool_calls(&session);
    assert_eq!(calls.len(), 4);
    for call in &calls {
        assert_eq!(
            call["statuses"],
            json!(["pending", "in_progress", "completed"]),
            "{call}"
        );
    }
    assert_eq!(content_text(&calls[0]), "a needle here\n");
    assert_eq!(calls[1]["title"], "List the workspace");
    assert_eq!(content_text(&calls[1]), "big.txt\nnotes.txt");
    assert_eq!(calls[2]["title"], "Search for `needle` in the workspace");
    assert_eq!(content_text(&calls[2]), "notes.txt:1: a needle here");
    // A long file reaches the client cut as the model got it, saying so.
    let shown = content_text(&calls[3]);
    assert!(shown.len() < 40 * 1024, "{} bytes", shown.len());
    assert!(
        shown.ends_with("[… line 1 is too long to show whole: this is its first 32768 bytes; `search` shows the text around a match anywhere in it …]"),
        "{}",
        &shown[shown.len() - 100..]
    );
}

#[tokio::test]
async fn listings_and_searches_name_files_from_the_workspace_root_hidden_ones_included() {
    let server = Server::scripted(
        json!([
            [call("list_files", json!({"path": "src"}))],
            [call("search", json!({"pattern": "name", "path": "src"}))],
            [call("search", json!({"pattern": "name", "path": "src/config.toml"}))],
            [call("list_files", json!({"glob": ".github/**"}))],
            [call("search", json!({"pattern": "runs-on|KEY"}))],
            [call("search", json!({"pattern": "("}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    for (path, text) in [
        ("src/config.toml", "name = 'src'\n"),
        ("config.toml", "name = 'root'\n"),
        (".github/workflows/ci.yml", "runs-on: ubuntu\n"),
        (".env.example", "KEY=\n"),
        (".git/config", "runs-on: never listed\n"),
    ] {
        let path = workspace.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let ide = Ide::new(&workspace, true, true);
    let (stop, received, session) = one_turn(&server, &ide, "look around").await;
    assert_eq!(stop, StopReason::EndTurn);
    let calls = received.tool_calls(&session);
    let shown: Vec<&str> = calls.iter().map(content_text).collect();
    assert_eq!(
        shown[..5],
        [
            "src/config.toml",
            "src/config.toml:1: name = 'src'",
            "src/config.toml:1: name = 'src'",
            ".github/workflows/ci.yml",
            ".env.example:1: KEY=\n.github/workflows/ci.yml:1: runs-on: ubuntu",
        ]
    );
    assert_eq!(calls[5]["status"], "failed");
    assert!(
        shown[5].starts_with("`(` is not a valid regular expression") && !shown[5].contains("(?:"),
        "the model's own pattern is quoted: {}",
        shown[5]
    );
    // Only a file is a location a client may follow; a directory is none.
    assert!(calls[0].get("locations").is_none(), "{}", calls[0]);
    assert!(calls[1].get("locations").is_none(), "{}", calls[1]);
    assert_eq!(
        calls[2]["locations"][0]["path"],
        json!(workspace.join("src/config.toml").canonicalize().unwrap())
    );
}

#[tokio::test]
async fn a_title_reads_as_what_the_call_does_whatever_characters_it_holds() {
    // A right-to-left override would show this path as `invoiceexe.pdf`; a
    // command's own backticks would end its code span early.
    let server = Server::scripted(
        json!([
            [call("write_file", json!({"path": "invoice\u{202E}fdp.exe", "content": "MZ"}))],
            [call("run_command", json!({"command": "echo `date` \u{2067}hidden\u{2069}"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let ide =
        Ide::new(&server.home.workspace(), true, true).answer_with(&["reject_once", "reject_once"]);
    let (stop, received, session) = one_turn(&server, &ide, "deceive").await;
    assert_eq!(stop, StopReason::EndTurn);
    let titles: Vec<Value> = received
        .tool_calls(&session)
        .iter()
        .map(|call| call["title"].clone())
        .collect();
    assert_eq!(
        titles,
        [
            json!("Write invoice<U+202E>fdp.exe"),
            json!("Run ``echo `date` <U+2067>hidden<U+2069>``"),
        ]
    );
}

#[tokio::test]
async fn calls_that_fail_early_still_go_in_progress_and_keep_their_kind_and_title() {
    let server = Server::scripted(
        json!([
            [call("write_file", json!({"path": "notes.txt", "content": "x"}))],
            [call("edit_file", json!({"path": "notes.txt", "old_text": "missing", "new_text": "y"}))],
            [call("edit_file", json!({"path": "notes.txt", "old_text": "twice", "new_text": "y"}))],
            [call("read_file", json!({"path": "../secret.txt"}))],
            [call("run_command", json!({"command": "ls", "cwd": "/"}))],
            [call("run_command", json!({"command": 3}))],
            [call("list_files", json!({"path": "notes.txt", "glob": "[oops"}))],
            [call("no_such_tool", json!({}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let notes = write_notes(&server, "twice twice\n");
    let ide = Ide::new(&server.home.workspace(), true, true).answer_with(&["reject_once"]);
    let (stop, received, session) = one_turn(&server, &ide, "fail in every way").await;
    assert_eq!(stop, StopReason::EndTurn);
    let calls = received.tool_calls(&session);
    let seen: Vec<(Value, Value)> = calls
        .iter()
        .map(|call| (call["kind"].clone(), call["title"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("edit"), json!("Write notes.txt")),
            (json!("edit"), json!("Edit notes.txt")),
            (json!("edit"), json!("Edit notes.txt")),
            (json!("read"), json!("Read ../secret.txt")),
            (json!("execute"), json!("Run `ls` in /")),
            (json!("execute"), json!("Run a command")),
            (json!("search"), json!("List [oops in notes.txt")),
            // `other` is the schema's default kind, left out on the wire.
            (Value::Null, json!("Call `no_such_tool`")),
        ]
    );
    for call in &calls {
        assert_eq!(
            call["statuses"],
            json!(["pending", "in_progress", "failed"]),
            "{call}"
        );
        assert!(!content_text(call).is_empty(), "says why: {call}");
    }
    assert_eq!(calls[0]["locations"][0]["path"], json!(notes));
    assert_eq!(calls[1]["locations"][0]["path"], json!(notes));
    for refused in [&calls[3], &calls[4]] {
        assert!(
            refused.get("locations").is_none(),
            "a refused path is not offered to the client: {refused}"
        );
    }
    assert!(content_text(&calls[1]).contains("not found"));
    assert!(content_text(&calls[2]).contains("2 times"));
}

#[tokio::test]
async fn a_command_in_the_client_terminal_leaves_its_output_for_every_watcher() {
    let server = Server::scripted(
        json!([
            [call("run_command", json!({"command": "echo from-the-terminal"}))],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let ide = Ide::new(&workspace, true, true);
    let (stop, received, session) = one_turn(&server, &ide, "run it").await;
    assert_eq!(stop, StopReason::EndTurn);
    let calls = received.tool_calls(&session);
    assert_eq!(calls[0]["title"], "Run `echo from-the-terminal`");
    assert!(
        calls[0].get("locations").is_none(),
        "a directory is no location"
    );
    assert_eq!(calls[0]["content"][0]["type"], "terminal");
    assert_eq!(
        content_text(&calls[0]),
        "exit code 0; output:\nfrom-the-terminal\n"
    );

    // A client that loads the session later, with no terminal of its own,
    // still reads what the command printed, and is not shown the terminal.
    let watcher = loaded_afresh(&server, &session, &workspace).await;
    let replayed = watcher.tool_calls(&session);
    assert_eq!(replayed[0]["status"], "completed");
    assert_eq!(replayed[0]["content"], json!([calls[0]["content"][1]]));
}

#[tokio::test]
async fn a_command_that_exits_non_zero_shows_failed_with_its_output_in_order() {
    for on_the_client in [false, true] {
        let server = Server::scripted(
            json!([
                [call("run_command", json!({"command": "echo first; echo second >&2; exit 3"}))],
                [{"text": "It failed."}]
            ]),
            &[],
        )
        .await;
        let ide = Ide::new(&server.home.workspace(), false, on_the_client);
        let (stop, received, session) = one_turn(&server, &ide, "run it").await;
        assert_eq!(stop, StopReason::EndTurn, "the model reads the failure");
        let calls = received.tool_calls(&session);
        assert_eq!(
            calls[0]["status"], "failed",
            "client terminal: {on_the_client}"
        );
        assert_eq!(
            content_text(&calls[0]),
            "exit code 3; output:\nfirst\nsecond\n",
            "client terminal: {on_the_client}"
        );
    }
}

#[tokio::test]
async fn tool_results_tell_the_model_what_went_wrong_and_how_to_read_on() {
    for on_the_client in [false, true] {
        let server = Server::scripted(
            json!([
                [call("read_file", json!({"path": "notes.txt", "line": 3}))],
                [call("read_file", json!({"path": "notes.txt", "line": 2}))],
                [call("read_file", json!({"path": "big.txt", "line": 10}))],
                [call("run_command", json!({"command": "true", "timeout_secs": 0}))],
                [{"text": "Done."}]
            ]),
            &[],
        )
        .await;
        let workspace = server.home.workspace();
        write_notes(&server, "one\ntwo\n");
        let big: String = (1..=20_000).map(|n| format!("line {n}\n")).collect();
        std::fs::write(workspace.join("big.txt"), big).unwrap();
        let ide = Ide::new(&workspace, on_the_client, on_the_client);
        let (stop, received, session) = one_turn(&server, &ide, "read on").await;
        assert_eq!(stop, StopReason::EndTurn);
        let calls = received.tool_calls(&session);
        let ended: Vec<(&str, &str)> = calls
            .iter()
            .map(|call| (call["status"].as_str().unwrap(), content_text(call)))
            .collect();
        let client = format!("client: {on_the_client}");
        assert_eq!(
            ended[..2],
            [
                ("failed", "notes.txt has 2 lines; line 3 is past its end"),
                ("completed", "two\n")
            ],
            "{client}"
        );
        let (status, long) = ended[2];
        assert_eq!(status, "completed", "{client}");
        assert!(long.starts_with("line 10\nline 11\n"), "{client}");
        // Whole lines, as many as fit, then where to read on.
        let (lines, mark) = long.split_once("[… ").expect("the read says it stopped");
        let last = lines.lines().last().unwrap().strip_prefix("line ").unwrap();
        let next = last.parse::<usize>().unwrap() + 1;
        assert!(lines.len() <= 32 * 1024, "{client}: {} bytes", lines.len());
        assert_eq!(
            mark,
            format!(
                "one read shows at most 32 KiB: this is lines 10 to {last}; read on from line {next} with `line` and `limit` …]"
            ),
            "{client}"
        );
        let (status, refused) = ended[3];
        assert_eq!(status, "failed", "{client}");
        assert!(
            refused.starts_with("timeout_secs must be from 1 to 3600 seconds"),
            "{client}: {refused}"
        );
        assert!(
            ide.permissions.lock().unwrap().is_empty(),
            "a call refused for its arguments asks nothing"
        );
    }
}

#[tokio::test]
async fn a_turn_ends_with_max_turn_requests_after_its_rounds() {
    let round = json!([call("list_files", json!({}))]);
    let server = Server::scripted(
        json!([round, round, round, [{"text": "never"}]]),
        &["--max-tool-rounds", "2"],
    )
    .await;
    let ide = Ide::new(&server.home.workspace(), true, true);
    let (stop, received, session) = one_turn(&server, &ide, "loop").await;
    assert_eq!(stop, StopReason::MaxTurnRequests);
    assert_eq!(received.tool_calls(&session).len(), 2);
}

#[tokio::test]
async fn cancel_stops_a_streaming_reply_within_100_ms() {
    let server = Server::scripted(
        json!([[{"text": "one "}, {"pause_ms": 30000}, {"text": "never"}]]),
        &[],
    )
    .await;
    let ide = Ide::new(&server.home.workspace(), true, true);
    cancel_mid_turn(&server, &ide).await;
}

#[tokio::test]
async fn cancel_kills_a_long_command_on_the_client_and_releases_it() {
    let server = Server::scripted(
        json!([[call("run_command", json!({"command": "sleep 30"}))]]),
        &[],
    )
    .await;
    let ide = Ide::new(&server.home.workspace(), true, true);
    cancel_mid_turn(&server, &ide).await;
    let requests = ide.requests();
    let tail: Vec<&str> = requests
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["terminal/kill", "terminal/release"], "{requests:?}");
}

#[tokio::test]
async fn a_terminal_the_client_creates_after_the_cancel_is_killed_and_released() {
    cancel_while_the_client_holds("sleep 30", "terminal/create").await;
}

#[tokio::test]
async fn a_cancel_while_the_client_reads_a_terminal_still_releases_it() {
    cancel_while_the_client_holds("true", "terminal/output").await;
}

/// Prompt for `command` in the client's terminal; once the client has been
/// asked `method`, cancel, and answer `method` only after the prompt has
/// answered `cancelled` (within 100 ms). The terminal the client created is
/// still killed, then released, and nothing of the turn reaches the client
/// after its answer.
async fn cancel_while_the_client_holds(command: &str, method: &'static str) {
    let server = &Server::scripted(
        json!([[call("run_command", json!({"command": command}))]]),
        &[],
    )
    .await;
    let ide = &Ide::new(&server.home.workspace(), true, true);
    let bell = ide.hold(method);
    let workspace = server.home.workspace();
    let received = &Received::default();
    ide.run(sdk_transport(server), received.clone(), async |cx| {
        ide.initialize(&cx).await?;
        let session = new_session(&cx, &workspace).await?;
        let running = cx.send_request(PromptRequest::new(session.clone(), vec!["go".into()]));
        ide.until_requests(&format!("{method} to be asked"), |requests| {
            requests.iter().any(|m| m == method)
        })
        .await;
        let seen = cancelled_promptly(&cx, received, &session, running).await?;
        bell.notify_one();
        ide.until_requests("the terminal to be released", |requests| {
            requests.iter().any(|m| m == "terminal/release")
        })
        .await;
        nothing_follows_the_cancel(&cx, received, &session, seen).await
    })
    .await;
    let terminals = ide.terminals.lock().unwrap().clone();
    let Some((_, id)) = terminals.first() else {
        panic!("no terminal was created")
    };
    let expected: Vec<(String, String)> = ["terminal/create", "terminal/kill", "terminal/release"]
        .iter()
        .map(|method| ((*method).to_owned(), id.clone()))
        .collect();
    assert_eq!(terminals, expected);
}

#[tokio::test]
async fn cancel_kills_a_long_command_the_server_runs_itself() {
    let server = Server::scripted(
        json!([[call(
            "run_command",
            // The pid is renamed into place whole: the cancel may come as
            // soon as the file is there.
            json!({"command": "echo $$ > pid.new && mv pid.new pid; exec sleep 30"})
        )]]),
        &[],
    )
    .await;
    let ide = Ide::new(&server.home.workspace(), false, false);
    cancel_mid_turn(&server, &ide).await;
    ended(pid_in(&server.home.workspace().join("pid"))).await;
}

/// A shell that starts a background job, writes the job's pid to `pid` (whole,
/// by renaming it into place) and waits for it: the job is a grandchild of
/// Punie that the shell never passes a signal on to.
const BACKGROUND_JOB: &str = "sleep 30 & echo $! > pid.new && mv pid.new pid; wait";

#[tokio::test]
async fn cancel_kills_what_a_command_the_server_runs_has_started() {
    let server = Server::scripted(
        json!([[call("run_command", json!({"command": BACKGROUND_JOB}))]]),
        &[],
    )
    .await;
    let ide = Ide::new(&server.home.workspace(), false, false);
    cancel_mid_turn(&server, &ide).await;
    ended(pid_in(&server.home.workspace().join("pid"))).await;
}

#[tokio::test]
async fn a_command_that_times_out_is_stopped_with_what_it_has_started() {
    let server = Server::scripted(
        json!([
            [call(
                "run_command",
                json!({"command": BACKGROUND_JOB, "timeout_secs": 1})
            )],
            [{"text": "It took too long."}]
        ]),
        &[],
    )
    .await;
    let ide = Ide::new(&server.home.workspace(), false, false);
    let (stop, received, session) = one_turn(&server, &ide, "go").await;
    assert_eq!(stop, StopReason::EndTurn);
    let calls = received.tool_calls(&session);
    let result = content_text(&calls[0]);
    assert!(result.starts_with("timed out after 1 s"), "{result}");
    ended(pid_in(&server.home.workspace().join("pid"))).await;
}

/// Prompt, wait until the turn is visibly under way, cancel, and check the
/// prompt answers `cancelled` within 100 ms and nothing of the turn reaches
/// the client after that answer.
async fn cancel_mid_turn(server: &Server, ide: &Ide) {
    let received = Received::default();
    let workspace = server.home.workspace();
    ide.run(sdk_transport(server), received.clone(), async |cx| {
        ide.initialize(&cx).await?;
        let session = new_session(&cx, &workspace).await?;
        let running = cx.send_request(PromptRequest::new(session.clone(), vec!["go".into()]));
        first_update(&received, &session).await;
        // For a command, wait until it really runs.
        support::within("the command to start", async {
            while received
                .tool_calls(&session)
                .iter()
                .any(|c| c["kind"] == "execute" && c["status"] != "in_progress")
                || (received.tool_calls(&session).is_empty()
                    && received.agent_text(&session).0.is_empty())
            {
                let arrived = received.arrived.notified();
                arrived.await;
            }
            if received
                .tool_calls(&session)
                .iter()
                .any(|c| c["kind"] == "execute")
            {
                wait_for_file_or_request(&workspace.join("pid"), ide).await;
            }
        })
        .await;
        let seen = cancelled_promptly(&cx, &received, &session, running).await?;
        // The client's terminal is killed and released after the answer:
        // what the turn does on the way must not reach the client either.
        if ide.requests().iter().any(|m| m == "terminal/create") {
            ide.until_requests("the terminal to be released", |requests| {
                requests.iter().any(|m| m == "terminal/release")
            })
            .await;
        }
        nothing_follows_the_cancel(&cx, &received, &session, seen).await
    })
    .await;
}

/// A command is running once the client saw terminal/create, or, for the
/// server's own commands, once `file` (which it writes) exists.
async fn wait_for_file_or_request(file: &Path, ide: &Ide) {
    loop {
        if ide.requests().iter().any(|m| m == "terminal/wait_for_exit") || file.exists() {
            return;
        }
        // Polled, not spun: on a small machine a spinning test takes the CPU
        // the command needs to start.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

mod against_a_provider {
    //! The same loop with an OpenAI-compatible model server in place of the
    //! script: what the provider streams reaches the client, and what the
    //! tools return reaches the provider.

    use super::*;
    use support::fake_provider::{
        FakeProvider, Part, Reply, Wire, anthropic_message_end, anthropic_message_start,
        anthropic_text_reply, anthropic_tool_block, openai_delta, openai_done, openai_finish,
        openai_text_reply, openai_usage,
    };

    /// The `usage_update`s `session` received, as (used, size), in order.
    fn usage_updates(
        received: &Received,
        session: &agent_client_protocol::v1::schema::SessionId,
    ) -> Vec<(u64, u64)> {
        updates_of(received, session)
            .into_iter()
            .filter(|u| u["sessionUpdate"] == "usage_update")
            .map(|u| (u["used"].as_u64().unwrap(), u["size"].as_u64().unwrap()))
            .collect()
    }

    /// The role of each message of a request to the provider, in order.
    fn roles(messages: &Value) -> Vec<&str> {
        messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect()
    }

    /// Prompt a new session twice as `ide`: the two stop reasons.
    async fn prompted_twice(
        server: &Server,
        ide: &Ide,
        first: &str,
        second: &str,
    ) -> (StopReason, StopReason) {
        let workspace = server.home.workspace();
        ide.run(sdk_transport(server), Received::default(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            let first = prompt(&cx, &session, first).await?;
            Ok((first, prompt(&cx, &session, second).await?))
        })
        .await
    }

    fn tool_call_reply() -> Reply {
        Reply::events([
            openai_delta(json!({"role": "assistant", "content": "Reading. "})),
            openai_delta(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"pa"}}]}),
            ),
            openai_delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "th\": \"notes.txt\"}"}}]}),
            ),
            openai_finish("tool_calls"),
            openai_usage(50, 10),
            openai_done(),
        ])
    }

    async fn server_on(provider: &FakeProvider) -> Server {
        let model = Wire::OpenAi.model_spec(provider).0;
        Server::start_in(Home::new(), &["--model", &model]).await
    }

    /// A server in `home` whose model is `provider`, speaking `wire`.
    async fn server_speaking(wire: Wire, provider: &FakeProvider, home: Home) -> Server {
        let (model, env) = wire.model_spec(provider);
        let mut command = home.command();
        command
            .args(["serve", "--port", "0", "--model", &model])
            .envs(env);
        Server::spawn(home, command).await
    }

    /// A reply that calls `name` with `arguments` under the provider's `id`.
    fn openai_tool_reply(id: &str, name: &str, arguments: &str) -> Reply {
        Reply::events([
            openai_delta(json!({"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": id, "type": "function",
                 "function": {"name": name, "arguments": arguments}}
            ]})),
            openai_finish("tool_calls"),
            openai_done(),
        ])
    }

    /// The ids of the `tool_call`s among `notifications`, in order.
    fn tool_call_ids(notifications: &[Value]) -> Vec<String> {
        support::updates(notifications, "tool_call")
            .iter()
            .map(|call| call["toolCallId"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_tool_call_cut_off_by_the_output_limit_is_not_run_and_ends_the_turn() {
        for wire in Wire::ALL {
            let cut_off = r#"{"path": "notes.txt", "cont"#;
            let first = match wire {
                Wire::OpenAi => Reply::events([
                    openai_delta(
                        json!({"role": "assistant", "content": "Writing. ", "tool_calls": [
                            {"index": 0, "id": "call_w", "type": "function",
                             "function": {"name": "write_file", "arguments": cut_off}}
                        ]}),
                    ),
                    openai_finish("length"),
                    openai_done(),
                ]),
                Wire::Anthropic => {
                    let mut events = vec![anthropic_message_start(10)];
                    events.extend(anthropic_tool_block(0, "toolu_w", "write_file", &[cut_off]));
                    events.extend(anthropic_message_end("max_tokens", 8192));
                    Reply::events(events)
                }
            };
            let provider =
                FakeProvider::start([first, Reply::events(wire.text_reply(&["In parts, then."]))])
                    .await;
            let server = server_speaking(wire, &provider, Home::new()).await;
            let notes = write_notes(&server, "keep\n");
            let mut client = server.initialized().await;
            let session = client.new_session(&server.home.workspace()).await;

            let answer = client.prompt(&session, "rewrite the notes").await;
            assert_eq!(
                answer["result"]["stopReason"], "max_tokens",
                "{wire:?}: {answer}"
            );
            assert_eq!(
                std::fs::read_to_string(&notes).unwrap(),
                "keep\n",
                "{wire:?}"
            );
            assert_eq!(
                tool_call_ids(&client.notifications),
                [] as [&str; 0],
                "{wire:?}"
            );

            // The model hears why its call came to nothing.
            let answer = client.prompt(&session, "what now?").await;
            assert_eq!(
                answer["result"]["stopReason"], "end_turn",
                "{wire:?}: {answer}"
            );
            let requests = provider.requests();
            assert_eq!(
                requests.len(),
                2,
                "{wire:?}: the cut-off turn asked no more"
            );
            let told = requests[1].body["messages"].to_string();
            assert!(
                told.contains("not run: the reply was cut off at the output token limit"),
                "{wire:?}: {told}"
            );
        }
    }

    #[tokio::test]
    async fn tool_calls_the_provider_gives_one_id_stay_distinct_for_clients() {
        // A local server that numbers every reply's calls from `call_0`.
        let provider = FakeProvider::start([
            openai_tool_reply("call_0", "read_file", r#"{"path": "notes.txt"}"#),
            openai_tool_reply("call_0", "list_files", "{}"),
            Reply::events(openai_text_reply(&["Read and listed."])),
            openai_tool_reply("call_0", "read_file", r#"{"path": "notes.txt"}"#),
            Reply::events(openai_text_reply(&["Read again."])),
            openai_tool_reply("call_0", "list_files", "{}"),
            Reply::events(openai_text_reply(&["Listed again."])),
        ])
        .await;
        let server = server_speaking(Wire::OpenAi, &provider, Home::new()).await;
        write_notes(&server, "hi\n");
        let workspace = server.home.workspace();
        let mut client = server.initialized().await;
        let session = client.new_session(&workspace).await;
        for prompt in ["look around", "look again"] {
            let answer = client.prompt(&session, prompt).await;
            assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        }
        let live = tool_call_ids(&client.notifications);
        assert_eq!(live.len(), 3, "{live:?}");
        assert_eq!(live[0], "call_0", "an id not used before is kept");
        let distinct: std::collections::HashSet<&String> = live.iter().collect();
        assert_eq!(distinct.len(), 3, "{live:?}");
        for update in support::updates(&client.notifications, "tool_call_update") {
            assert!(live.contains(&update["toolCallId"].as_str().unwrap().to_owned()));
        }
        // The model's own conversation keeps the provider's id.
        let second = &provider.requests()[1].body["messages"];
        assert_eq!(second[2]["tool_calls"][0]["id"], "call_0");
        assert_eq!(second[3]["tool_call_id"], "call_0");
        drop(client);

        // After a restart, a replay shows each call on its own, and a new
        // call still gets an id of its own.
        let server = server_speaking(Wire::OpenAi, &provider, server.stop().await).await;
        let mut client = server.initialized().await;
        client.attach("session/load", &session, &workspace).await;
        let replayed = tool_call_ids(&client.notifications);
        assert_eq!(replayed, live);
        for call in support::updates(&client.notifications, "tool_call") {
            assert_eq!(call["status"], "completed", "{call}");
        }
        client.notifications.clear();
        let answer = client.prompt(&session, "once more").await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        let newest = tool_call_ids(&client.notifications);
        assert_eq!(newest.len(), 1, "{newest:?}");
        assert!(!live.contains(&newest[0]), "{newest:?} after {live:?}");
    }

    #[tokio::test]
    async fn the_system_prompt_names_the_workspace_root_the_platform_and_every_tool() {
        let provider = FakeProvider::start([Reply::events(openai_text_reply(&["Hi."]))]).await;
        let server = server_on(&provider).await;
        let workspace = server.home.workspace();
        let mut client = server.initialized().await;
        let session = client.new_session(&workspace).await;
        let answer = client.prompt(&session, "who are you?").await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");

        let requests = provider.requests();
        let first = &requests[0].body;
        assert_eq!(first["messages"][0]["role"], "system");
        let system = first["messages"][0]["content"].as_str().unwrap_or_default();
        assert!(system.contains("Punie"), "{system}");
        let root = std::fs::canonicalize(&workspace).unwrap();
        assert!(
            system.contains(&root.display().to_string()),
            "names the workspace root {}: {system}",
            root.display()
        );
        assert!(system.contains(std::env::consts::OS), "{system}");
        // Every tool the model is given, by the name it calls it with.
        let tools = first["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 7);
        for tool in tools {
            let name = tool["function"]["name"].as_str().unwrap();
            assert!(system.contains(name), "does not name {name}: {system}");
        }
    }

    #[tokio::test]
    async fn tool_results_reach_the_model_and_its_answer_reaches_the_client() {
        let provider = FakeProvider::start([
            tool_call_reply(),
            Reply::events(openai_text_reply(&["The notes ", "say hi."])),
        ])
        .await;
        let server = server_on(&provider).await;
        write_notes(&server, "hi there\n");
        let ide = Ide::new(&server.home.workspace(), true, true);
        let (stop, received, session) = one_turn(&server, &ide, "what do the notes say?").await;
        assert_eq!(stop, StopReason::EndTurn);
        assert_eq!(
            received.agent_text(&session).0,
            "Reading. The notes say hi."
        );
        // Each call's usage: 50 + 10 tokens, then 10 + 5.
        let window = punie::config::DEFAULT_CONTEXT_WINDOW;
        assert_eq!(
            usage_updates(&received, &session),
            [(60, window), (15, window)]
        );
        assert_eq!(ide.requests(), ["fs/read_text_file"]);

        let requests = provider.requests();
        assert_eq!(requests.len(), 2);
        let first = &requests[0].body;
        assert_eq!(first["model"], "fake-model");
        assert_eq!(first["stream"], true);
        assert_eq!(first["messages"][0]["role"], "system");
        assert_eq!(
            first["messages"][1],
            json!({"role": "user", "content": "what do the notes say?"})
        );
        let tools: Vec<&str> = first["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            tools,
            [
                "read_file",
                "write_file",
                "edit_file",
                "list_files",
                "search",
                "run_command",
                "update_plan"
            ]
        );
        let second = &requests[1].body["messages"];
        assert_eq!(
            second[2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\"notes.txt\"}"
        );
        assert_eq!(second[3]["role"], "tool");
        assert_eq!(second[3]["tool_call_id"], "call_1");
        assert_eq!(second[3]["content"], "hi there\n");
    }

    #[tokio::test]
    async fn the_next_prompt_sends_the_whole_conversation_with_its_tool_calls() {
        let provider = FakeProvider::start([
            tool_call_reply(),
            Reply::events(openai_text_reply(&["First answer."])),
            Reply::events(openai_text_reply(&["Second answer."])),
        ])
        .await;
        let server = server_on(&provider).await;
        write_notes(&server, "hi\n");
        let ide = Ide::new(&server.home.workspace(), false, false);
        prompted_twice(&server, &ide, "one", "two").await;
        let last = &provider.requests()[2].body["messages"];
        assert_eq!(
            roles(last),
            ["system", "user", "assistant", "tool", "assistant", "user"]
        );
        assert_eq!(last[5]["content"], "two");
    }

    #[tokio::test]
    async fn cancel_closes_the_providers_stream() {
        let dropped = std::sync::Arc::new(tokio::sync::Notify::new());
        let provider = FakeProvider::start([Reply::Stream(vec![
            Part::Send(openai_delta(
                json!({"role": "assistant", "content": "Thinking "}),
            )),
            Part::StallUntilDropped(dropped.clone()),
        ])])
        .await;
        let server = server_on(&provider).await;
        let ide = Ide::new(&server.home.workspace(), true, true);
        cancel_mid_turn(&server, &ide).await;
        support::within("the provider's stream to be closed", dropped.notified()).await;
    }

    #[tokio::test]
    async fn what_the_provider_streams_after_a_cancel_never_reaches_the_client() {
        let go_on = std::sync::Arc::new(tokio::sync::Notify::new());
        let provider = FakeProvider::start([
            Reply::Stream(vec![
                Part::Send(openai_delta(
                    json!({"role": "assistant", "content": "Thinking "}),
                )),
                Part::Wait(go_on.clone()),
                Part::Send(openai_delta(json!({"content": "too late"}))),
                Part::Send(openai_finish("stop")),
                Part::Send(openai_usage(50, 10)),
                Part::Send(openai_done()),
            ]),
            Reply::events(openai_text_reply(&["Next."])),
        ])
        .await;
        let server = server_on(&provider).await;
        let workspace = server.home.workspace();
        let ide = Ide::new(&workspace, true, true);
        let received = Received::default();
        let session = ide
            .run(sdk_transport(&server), received.clone(), async |cx| {
                ide.initialize(&cx).await?;
                let session = new_session(&cx, &workspace).await?;
                let running =
                    cx.send_request(PromptRequest::new(session.clone(), vec!["think".into()]));
                support::within("the reply to begin", async {
                    loop {
                        let arrived = received.arrived.notified();
                        if received.agent_text(&session).0 == "Thinking " {
                            break;
                        }
                        arrived.await;
                    }
                })
                .await;
                let seen = cancelled_promptly(&cx, &received, &session, running).await?;
                // Had the turn kept reading, the rest of the reply now reaches it.
                go_on.notify_one();
                nothing_follows_the_cancel(&cx, &received, &session, seen).await?;
                assert_eq!(prompt(&cx, &session, "go on").await?, StopReason::EndTurn);
                Ok(session)
            })
            .await;
        assert_eq!(
            received.agent_text(&session).0,
            "Thinking Next.",
            "after the cancelled answer, only the next turn's text"
        );
        let window = punie::config::DEFAULT_CONTEXT_WINDOW;
        assert_eq!(
            usage_updates(&received, &session),
            [(15, window)],
            "only the next turn's usage"
        );
        assert_eq!(provider.requests().len(), 2);
    }

    #[tokio::test]
    async fn after_a_cancelled_permission_answer_the_model_is_told_the_call_was_not_run() {
        let provider = FakeProvider::start([
            Reply::events([
                openai_delta(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_w", "type": "function", "function": {"name": "write_file", "arguments": "{\"path\": \"notes.txt\", \"content\": \"gone\"}"}}]}),
                ),
                openai_finish("tool_calls"),
                openai_done(),
            ]),
            Reply::events(openai_text_reply(&["Left it alone."])),
        ])
        .await;
        let server = server_on(&provider).await;
        let notes = write_notes(&server, "keep\n");
        let workspace = server.home.workspace();
        let ide = Ide::new(&workspace, true, true).answer_with(&["cancel"]);
        let stops = prompted_twice(&server, &ide, "overwrite the notes", "what happened?").await;
        assert_eq!(stops, (StopReason::Cancelled, StopReason::EndTurn));
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep\n");

        let requests = provider.requests();
        assert_eq!(
            requests.len(),
            2,
            "the cancelled turn asked the model no more"
        );
        let messages = &requests[1].body["messages"];
        assert_eq!(
            roles(messages),
            ["system", "user", "assistant", "tool", "user"]
        );
        assert_eq!(messages[3]["tool_call_id"], "call_w");
        assert_eq!(
            messages[3]["content"],
            "Error: not run: the user cancelled the turn"
        );
        assert_eq!(messages[4]["content"], "what happened?");
    }

    #[tokio::test]
    async fn a_command_running_when_the_turn_is_cancelled_is_told_as_stopped_not_as_not_run() {
        let command = "echo begun; touch started; exec sleep 30";
        let arguments = |value: Value| value.to_string();
        let provider = FakeProvider::start([
            Reply::events([
                openai_delta(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"index": 0, "id": "call_run", "type": "function", "function": {
                        "name": "run_command", "arguments": arguments(json!({"command": command}))}},
                    {"index": 1, "id": "call_read", "type": "function", "function": {
                        "name": "read_file", "arguments": arguments(json!({"path": "started"}))}}
                ]})),
                openai_finish("tool_calls"),
                openai_done(),
            ]),
            Reply::events(openai_text_reply(&["It was stopped."])),
        ])
        .await;
        let server = server_on(&provider).await;
        let workspace = server.home.workspace();
        let ide = Ide::new(&workspace, false, false);
        let received = Received::default();
        let (stops, session) = ide
            .run(sdk_transport(&server), received.clone(), async |cx| {
                ide.initialize(&cx).await?;
                let session = new_session(&cx, &workspace).await?;
                let running =
                    cx.send_request(PromptRequest::new(session.clone(), vec!["run it".into()]));
                support::within(
                    "the command to start",
                    wait_for_file_or_request(&workspace.join("started"), &ide),
                )
                .await;
                cx.send_notification(CancelNotification::new(session.clone()))?;
                let first = running.block_task().await?.stop_reason;
                let next = prompt(&cx, &session, "what happened?").await?;
                Ok(((first, next), session))
            })
            .await;
        assert_eq!(stops, (StopReason::Cancelled, StopReason::EndTurn));

        // The model is told the command began and was stopped, and that only
        // the call after it never ran.
        let requests = provider.requests();
        assert_eq!(requests.len(), 2);
        let messages = &requests[1].body["messages"];
        assert_eq!(
            roles(messages),
            ["system", "user", "assistant", "tool", "tool", "user"]
        );
        assert_eq!(messages[3]["tool_call_id"], "call_run");
        let told = messages[3]["content"].as_str().unwrap();
        assert!(
            told.starts_with(
                "Error: started, then stopped before it finished: the user cancelled the turn; until then, "
            ),
            "{told}"
        );
        assert!(!told.contains("not run"), "{told}");
        assert_eq!(messages[4]["tool_call_id"], "call_read");
        assert_eq!(
            messages[4]["content"],
            "Error: not run: the user cancelled the turn"
        );

        // The person sees it end failed, saying it was stopped; so does a
        // client that loads the session later.
        let calls = received.tool_calls(&session);
        assert_eq!(calls.len(), 1, "the call that never ran is not shown");
        assert_eq!(calls[0]["status"], "failed");
        let shown = content_text(&calls[0]);
        assert!(
            shown.starts_with("Stopped before it finished: the turn was cancelled; until then, "),
            "{shown}"
        );
        let watcher = loaded_afresh(&server, &session, &workspace).await;
        let replayed = watcher.tool_calls(&session);
        assert_eq!(replayed[0]["status"], "failed");
        assert_eq!(replayed[0]["content"], calls[0]["content"]);
    }

    #[tokio::test]
    async fn an_anthropic_reply_streams_its_text_and_usage_to_the_client() {
        let provider =
            FakeProvider::start([Reply::events(anthropic_text_reply(&["Hello ", "there."]))]).await;
        let home = Home::new();
        let (model, env) = Wire::Anthropic.model_spec(&provider);
        let mut command = home.command();
        command.args([
            "serve",
            "--port",
            "0",
            "--model",
            &model,
            "--context-window",
            "200000",
        ]);
        command.envs(env);
        let server = Server::spawn(home, command).await;
        let ide = Ide::new(&server.home.workspace(), false, false);
        let (stop, received, session) = one_turn(&server, &ide, "hi").await;
        assert_eq!(stop, StopReason::EndTurn);
        let (text, chunks) = received.agent_text(&session);
        assert_eq!((text.as_str(), chunks), ("Hello there.", 2));
        // message_start's 25 input tokens and message_delta's 15 output tokens.
        assert_eq!(usage_updates(&received, &session), [(40, 200_000)]);
        let requests = provider.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].path, "/v1/messages");
        assert_eq!(requests[0].headers["x-api-key"], "sk-ant-test");
        assert_eq!(requests[0].body["model"], "claude-fake");
        assert_eq!(requests[0].body["stream"], true);
    }

    #[tokio::test]
    async fn a_model_server_that_is_not_running_is_named_in_the_error() {
        let home = Home::new();
        let port = support::unused_port();
        let mut command = home.command();
        command
            .args(["serve", "--port", "0", "--model", "ollama:qwen3"])
            .env("OLLAMA_HOST", format!("127.0.0.1:{port}"));
        let server = Server::spawn(home, command).await;
        let mut client = server.initialized().await;
        let session = client.new_session(&server.home.workspace()).await;
        let started = Instant::now();
        let answer = client.prompt(&session, "hello").await;
        let message = answer["error"]["message"]
            .as_str()
            .expect("an error the user can act on");
        assert!(message.contains("is Ollama running?"), "{message}");
        assert!(message.contains(&port.to_string()), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10), "no hang");
        // The same error again, not one saying a turn still runs.
        let again = client.prompt(&session, "hello?").await;
        assert_eq!(
            again["error"]["message"].as_str(),
            Some(message),
            "the session is free for the next prompt: {again}"
        );
    }
}

/// Every key of `value` not inside an opaque part (a tool's own arguments and
/// output, `_meta`) that is not camelCase, with where it is.
fn keys_not_camel_case(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                if matches!(key.as_str(), "rawInput" | "rawOutput" | "_meta") {
                    continue;
                }
                if key.contains('_') || key.starts_with(|c: char| c.is_ascii_uppercase()) {
                    found.push(format!("{at}.{key}"));
                }
                keys_not_camel_case(inner, &format!("{at}.{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                keys_not_camel_case(inner, &format!("{at}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// What a client answers to each request a turn makes of it.
fn answer_for(request: &Value) -> Value {
    let params = &request["params"];
    match request["method"].as_str().unwrap_or_default() {
        "fs/read_text_file" => json!({"content": "old text\n"}),
        "session/request_permission" => json!({"outcome": {
            "outcome": "selected",
            "optionId": params["options"][0]["optionId"],
        }}),
        "terminal/create" => json!({"terminalId": "term-1"}),
        "terminal/wait_for_exit" => json!({"exitCode": 0}),
        "terminal/output" => {
            json!({"output": "done\n", "truncated": false, "exitStatus": {"exitCode": 0}})
        }
        // fs/write_text_file, terminal/release, terminal/kill
        _ => json!({}),
    }
}

/// A client's terminal is shown only to that client: another attached
/// client, or one that loads the session later, does not know its id (Zed
/// fails the whole update), and gets the command's output as text instead.
#[tokio::test]
async fn a_clients_terminal_is_shown_to_it_alone_and_never_replayed() {
    let server = Server::scripted(
        json!([
            [call("run_command", json!({"command": "echo", "args": ["done"], "timeout_secs": 5}))],
            [{"text": "Ran it."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let mut prompter = server.raw().await;
    prompter
        .request(
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities": {"terminal": true}}),
        )
        .await;
    let session = prompter.new_session(&workspace).await;
    let mut watcher = server.initialized().await;
    watcher.attach("session/resume", &session, &workspace).await;

    let turn = prompter.start_prompt(&session, "run it").await;
    loop {
        let message = prompter.recv().await;
        if message["id"] == json!(turn) && message.get("method").is_none() {
            assert_eq!(message["result"]["stopReason"], "end_turn", "{message}");
            break;
        }
        if message["method"].is_string() && message.get("id").is_some() {
            let result = answer_for(&message);
            prompter
                .send(json!({"jsonrpc": "2.0", "id": message["id"], "result": result}))
                .await;
        } else {
            prompter.notifications.push(message);
        }
    }
    let shown = Value::Array(prompter.notifications.clone()).to_string();
    assert!(shown.contains("\"terminalId\":\"term-1\""), "{shown}");

    let final_update = |messages: &[Value]| {
        messages
            .iter()
            .map(|message| &message["params"]["update"])
            .filter(|update| update["toolCallId"].is_string())
            .rfind(|update| update["status"] == "completed")
            .cloned()
            .expect("the command's final update")
    };
    watcher
        .receive_until(|messages| {
            messages
                .iter()
                .any(|message| message["params"]["update"]["status"] == "completed")
        })
        .await;
    let watched = final_update(&watcher.notifications);
    assert!(!watched.to_string().contains("terminal"), "{watched}");
    assert!(
        watched["content"][0]["content"]["text"]
            .as_str()
            .is_some_and(|text| text.contains("done"))
    );

    let mut loader = server.initialized().await;
    loader.attach("session/load", &session, &workspace).await;
    let replayed = Value::Array(loader.notifications.clone()).to_string();
    assert!(!replayed.contains("terminal"), "{replayed}");
    assert!(replayed.contains("done"), "{replayed}");
}

#[tokio::test]
async fn everything_the_agent_sends_a_client_is_camel_case_on_the_wire() {
    let server = Server::scripted(
        json!([
            [call("read_file", json!({"path": "notes.txt"}))],
            [call("edit_file", json!({"path": "notes.txt", "old_text": "old", "new_text": "new"}))],
            [call("run_command", json!({"command": "echo", "args": ["done"], "timeout_secs": 5}))],
            [{"thought": "Checked."}, {"text": "Done."}, {"usage": {"input_tokens": 10, "output_tokens": 2}}]
        ]),
        &[],
    )
    .await;
    write_notes(&server, "old text\n");
    let mut client = server.raw().await;
    let initialized = client
        .request(
            "initialize",
            json!({
                "protocolVersion": 1,
                "clientCapabilities": {"fs": {"readTextFile": true, "writeTextFile": true}, "terminal": true},
                "clientInfo": {"name": "wire-test", "version": "0"},
            }),
        )
        .await;
    let workspace = server.home.workspace();
    let created = client
        .request("session/new", json!({"cwd": workspace, "mcpServers": []}))
        .await;
    let session = created["result"]["sessionId"]
        .as_str()
        .expect("a session")
        .to_owned();
    let turn = client.start_prompt(&session, "fix the notes").await;
    let mut sent = vec![initialized, created];
    sent.append(&mut client.notifications);
    let mut methods = Vec::new();
    let answer = loop {
        let message = client.recv().await;
        if message["id"] == json!(turn) && message.get("method").is_none() {
            break message;
        }
        if let Some(method) = message["method"].as_str()
            && message.get("id").is_some()
        {
            methods.push(method.to_owned());
            let result = answer_for(&message);
            client
                .send(json!({"jsonrpc": "2.0", "id": message["id"], "result": result}))
                .await;
        }
        sent.push(message);
    };
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    sent.push(answer);
    // And what other requests answer: a listing, a replay, an error.
    sent.push(client.request("session/list", json!({})).await);
    let mut loader = server.initialized().await;
    sent.push(loader.attach("session/load", &session, &workspace).await);
    sent.append(&mut loader.notifications);
    let refused = client
        .request(
            "session/prompt",
            json!({"sessionId": "no-such-session", "prompt": []}),
        )
        .await;
    assert!(refused.get("error").is_some(), "{refused}");
    sent.push(refused);
    assert_eq!(
        methods, THROUGH_THE_CLIENT,
        "the turn went through the client"
    );
    let mut found = Vec::new();
    for message in &sent {
        keys_not_camel_case(message, "", &mut found);
    }
    assert!(found.is_empty(), "keys that are not camelCase: {found:?}");
    // The check sees what it must: ids and tool calls are in what was sent.
    let all = Value::Array(sent).to_string();
    for key in [
        "\"sessionId\"",
        "\"toolCallId\"",
        "\"optionId\"",
        "\"terminalId\"",
    ] {
        assert!(all.contains(key), "{key} was sent");
    }
}
