//! Sessions that survive: stored in SQLite, loaded and resumed by other
//! connections, shared by several at once, and kept across a `kill -9` of the
//! server.

mod support;

use std::path::Path;

use agent_client_protocol::v1::schema::PromptRequest;
use serde_json::{Value, json};
use support::fake_provider::{
    FakeProvider, Reply, Wire, llama_cpp_refuses_pictures, openai_delta, openai_done,
    openai_finish, openai_text_reply, picture_too_large,
};
use support::sdk::{Ide, Received, new_session};
use support::{Home, RawClient, Server, sdk_transport, text_of, turn_end, updates, within};

/// A script: turn 1 writes a file (asking permission first), turn 2 talks.
const SCRIPT: &str = r#"[
  [{"text": "Let me "}, {"text": "write it. "},
   {"tool_call": {"id": "call-1", "name": "write_file", "arguments": {"path": "note.txt", "content": "hello"}}}],
  [{"text": "Wrote "}, {"text": "note.txt."}],
  [{"text": "Second turn."}]
]"#;

fn script_server_args(home: &Home) -> Vec<String> {
    vec!["--model".to_owned(), home.script_model(SCRIPT)]
}

async fn script_server(extra: &[&str]) -> Server {
    Server::scripted(SCRIPT, extra).await
}

/// A session of the script server, created by `prompter` and resumed by
/// `watcher`.
struct Watched {
    server: Server,
    workspace: std::path::PathBuf,
    prompter: RawClient,
    session: String,
    watcher: RawClient,
}

async fn watched_session() -> Watched {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut prompter = server.initialized().await;
    let session = prompter.new_session(&workspace).await;
    let mut watcher = server.initialized().await;
    watcher.attach("session/resume", &session, &workspace).await;
    Watched {
        server,
        workspace,
        prompter,
        session,
        watcher,
    }
}

/// Turn 1 of the script, answered by `client`, to its end.
async fn first_turn(client: &mut RawClient, session: &str) {
    let id = client.start_prompt(session, "write a note").await;
    let request = client.permission_request().await;
    client.allow(&request).await;
    let answer = client.response_to(id).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
}

#[tokio::test]
async fn a_new_connection_loads_the_whole_history_and_continues_the_conversation() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let session = first.new_session(&workspace).await;
    first_turn(&mut first, &session).await;
    let live_text = first.agent_text(&session);
    assert_eq!(live_text, "Let me write it. Wrote note.txt.");
    drop(first);

    let mut second = server.initialized().await;
    second.attach("session/load", &session, &workspace).await;
    let replay = std::mem::take(&mut second.notifications);
    let prompts = updates(&replay, "user_message_chunk");
    assert_eq!(text_of(&prompts), "write a note", "the prompt is replayed");
    let agent = updates(&replay, "agent_message_chunk");
    assert_eq!(
        text_of(&agent),
        live_text,
        "the agent text is replayed whole"
    );
    assert!(
        agent.len() <= 2,
        "the text is coalesced into few chunks: {agent:?}"
    );
    let calls = updates(&replay, "tool_call");
    assert_eq!(calls.len(), 1, "{replay:?}");
    assert_eq!(calls[0]["toolCallId"], "call-1");
    assert_eq!(calls[0]["status"], "completed", "in its final state");
    assert!(
        updates(&replay, "tool_call_update").is_empty(),
        "folded into the tool call"
    );
    let titles = updates(&replay, "session_info_update");
    assert_eq!(titles[0]["title"], "write a note");

    let answer = second.prompt(&session, "and now?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        second.agent_text(&session),
        "Second turn.",
        "the script went on where the conversation was"
    );
}

/// The kinds of `session/update` a replay of the history is made of.
const HISTORY: [&str; 7] = [
    "user_message_chunk",
    "agent_message_chunk",
    "agent_thought_chunk",
    "tool_call",
    "tool_call_update",
    "plan",
    "session_info_update",
];

/// The updates among `messages` that carry history.
fn history_in(messages: &[Value]) -> Vec<&Value> {
    HISTORY
        .iter()
        .flat_map(|kind| updates(messages, kind))
        .collect()
}

#[tokio::test]
async fn a_resumed_session_is_not_replayed_and_its_next_prompt_continues_the_conversation() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let session = first.new_session(&workspace).await;
    first_turn(&mut first, &session).await;
    drop(first);

    let mut resumer = server.initialized().await;
    let answer = resumer.attach("session/resume", &session, &workspace).await;
    assert_eq!(
        answer["result"]["_meta"]["punie/running"], false,
        "{answer}"
    );
    let answer_text = answer.to_string();
    assert!(
        !answer_text.contains("write a note") && !answer_text.contains("Let me write it."),
        "the answer carries no history: {answer}"
    );
    assert!(
        history_in(&resumer.notifications).is_empty(),
        "nothing of the history came before the answer: {:?}",
        resumer.notifications
    );

    // The same session loaded: what a replay would have shown the resumer.
    let mut loader = server.initialized().await;
    loader.attach("session/load", &session, &workspace).await;
    for kind in [
        "user_message_chunk",
        "agent_message_chunk",
        "tool_call",
        "session_info_update",
    ] {
        assert!(
            !updates(&loader.notifications, kind).is_empty(),
            "a load replays {kind}: {:?}",
            loader.notifications
        );
    }

    let answer = resumer.prompt(&session, "and now?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        resumer.agent_text(&session),
        "Second turn.",
        "only the new turn reached the resumer, and the script went on where \
         the conversation was"
    );
    let seen = &resumer.notifications;
    assert!(
        updates(seen, "user_message_chunk").is_empty() && updates(seen, "tool_call").is_empty(),
        "the first turn never reached the resumer: {seen:?}"
    );
}

/// The refusal of a prompt to a session whose workspace was removed.
fn assert_refused_for_the_missing_workspace(answer: &Value, workspace: &Path) {
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "the session's workspace {} no longer exists",
            workspace.display()
        )) && message.contains("start a new session"),
        "{message}"
    );
}

/// A session outlives its project directory: its history still loads, and
/// a prompt, which its tools could not serve, is refused saying why.
#[tokio::test]
async fn a_session_whose_workspace_was_removed_still_loads_and_refuses_prompts_clearly() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let session = first.new_session(&workspace).await;
    first_turn(&mut first, &session).await;

    // Removed while the session is in memory, then once it has left.
    std::fs::remove_dir_all(&workspace).unwrap();
    let answer = first.prompt(&session, "and now?").await;
    assert_refused_for_the_missing_workspace(&answer, &workspace);
    drop(first);
    server
        .health_until("the session to leave memory", |health| {
            health["sessions"] == 0
        })
        .await;

    let elsewhere = server.home.dir.path().to_owned();
    let mut second = server.initialized().await;
    second.attach("session/load", &session, &elsewhere).await;
    assert_eq!(
        second.agent_text(&session),
        "Let me write it. Wrote note.txt.",
        "the history is replayed"
    );
    let answer = second.prompt(&session, "and now?").await;
    assert_refused_for_the_missing_workspace(&answer, &workspace);
}

#[tokio::test]
async fn a_session_attached_from_another_directory_keeps_its_own_and_says_which() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let session = first.new_session(&workspace).await;
    let elsewhere = server.home.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for method in ["session/resume", "session/load"] {
        let mut client = server.initialized().await;
        let response = client.attach(method, &session, &elsewhere).await;
        assert_eq!(
            response["result"]["_meta"]["punie/cwd"],
            workspace.to_str().unwrap(),
            "{method}: {response}"
        );
    }
    let listed = first
        .request("session/list", json!({"cwd": workspace}))
        .await;
    assert_eq!(
        listed["result"]["sessions"][0]["sessionId"],
        session.as_str()
    );
}

#[tokio::test]
async fn a_workspace_reached_through_a_symlink_lists_the_same_sessions_under_either_path() {
    // An IDE may open a project through a symlinked home, a shell from where
    // it leads (macOS's /tmp is /private/tmp).
    let server = script_server(&[]).await;
    let real = std::fs::canonicalize(server.home.workspace()).unwrap();
    let link = server.home.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let mut client = server.initialized().await;
    let through_link = client.new_session(&link).await;
    let direct = client.new_session(&real).await;

    for filter in [&link, &real] {
        let listed = client.request("session/list", json!({"cwd": filter})).await;
        let sessions = listed["result"]["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut found: Vec<(&str, &str)> = sessions
            .iter()
            .filter_map(|session| Some((session["sessionId"].as_str()?, session["cwd"].as_str()?)))
            .collect();
        found.sort_unstable();
        let mut expected = vec![
            (through_link.as_str(), link.to_str().unwrap()),
            (direct.as_str(), real.to_str().unwrap()),
        ];
        expected.sort_unstable();
        assert_eq!(
            found,
            expected,
            "under {}: each keeps its own spelling",
            filter.display()
        );
    }

    // A link gone (or pointed elsewhere) still finds what was made through it.
    std::fs::remove_file(&link).unwrap();
    let listed = client.request("session/list", json!({"cwd": link})).await;
    let found: Vec<&str> = listed["result"]["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|session| session["sessionId"].as_str())
        .collect();
    assert_eq!(found, [through_link.as_str()], "{listed}");
}

#[tokio::test]
async fn every_attached_connection_receives_a_turns_updates_and_a_second_prompt_is_refused() {
    let Watched {
        server: _server,
        workspace: _,
        mut prompter,
        session,
        mut watcher,
    } = watched_session().await;

    let id = prompter.start_prompt(&session, "write a note").await;
    let request = prompter.permission_request().await;

    // While the turn waits for the person, the watcher may not start another.
    let refused = watcher.prompt(&session, "me too").await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("already running a turn"), "{message}");

    prompter.allow(&request).await;
    let answer = prompter.response_to(id).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");

    // The watcher sees the prompt and everything the agent said.
    within(
        "the watcher's updates",
        watcher.receive_until(|seen| {
            text_of(&updates(seen, "agent_message_chunk")) == "Let me write it. Wrote note.txt."
        }),
    )
    .await;
    let seen = &watcher.notifications;
    assert_eq!(
        text_of(&updates(seen, "user_message_chunk")),
        "write a note"
    );
    assert!(!updates(seen, "tool_call").is_empty());
    assert!(
        updates(&prompter.notifications, "user_message_chunk").is_empty(),
        "the prompter is not sent its own prompt back"
    );
}

/// How each turn ended, as `session_info_update`s among `messages` say.
fn turn_endings(messages: &[Value]) -> Vec<Value> {
    updates(messages, "session_info_update")
        .into_iter()
        .filter_map(|update| update["_meta"].get("punie/turnEnded").cloned())
        .collect()
}

#[tokio::test]
async fn clients_that_load_a_session_mid_turn_see_every_chunk_exactly_once() {
    // Each load meets the live stream at a different point: its replay and
    // the updates after it must neither overlap nor leave a gap.
    const NUMBERS: usize = 150;
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let mut prompter = server.initialized().await;
    let session = prompter.new_session(&workspace).await;
    let turn = prompter
        .start_prompt(&session, &format!("count to {NUMBERS}"))
        .await;
    let chunks = |seen: &[Value]| updates(seen, "agent_message_chunk").len();
    let mut loaders = Vec::new();
    for round in 1..=25 {
        let mut loader = server.initialized().await;
        loader.attach("session/load", &session, &workspace).await;
        loaders.push(loader);
        // The prompter's stream is the clock: a few numbers between loads.
        within(
            "more numbers",
            prompter.receive_until(|seen| chunks(seen) >= round * 5),
        )
        .await;
    }
    let answer = prompter.response_to(turn).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let expected = (1..=NUMBERS)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    for (at, loader) in loaders.iter_mut().enumerate() {
        within(
            "the loader to see the turn end",
            loader.receive_until(|seen| !turn_endings(seen).is_empty()),
        )
        .await;
        assert_eq!(loader.agent_text(&session), expected, "loader {at}");
    }
}

#[tokio::test]
async fn how_each_turn_ended_reaches_every_attached_client_and_every_replay() {
    let Watched {
        server,
        workspace,
        mut prompter,
        session,
        mut watcher,
    } = watched_session().await;

    first_turn(&mut prompter, &session).await;
    let answer = prompter.prompt(&session, "and now?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    // The script has no third response: the turn fails.
    let failed = prompter.prompt(&session, "and then?").await;
    let error = failed["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!error.is_empty(), "{failed}");

    within(
        "the watcher to learn how three turns ended",
        watcher.receive_until(|seen| turn_endings(seen).len() >= 3),
    )
    .await;
    let seen = turn_endings(&watcher.notifications);
    let mut later = server.initialized().await;
    later.attach("session/load", &session, &workspace).await;
    let replayed = turn_endings(&later.notifications);
    for endings in [&seen, &replayed, &turn_endings(&prompter.notifications)] {
        let reasons: Vec<&str> = endings
            .iter()
            .map(|ended| ended["stopReason"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(reasons, ["end_turn", "end_turn", "error"], "{endings:?}");
        let said = endings[2]["error"].as_str().unwrap_or_default();
        assert!(
            error.ends_with(said) && !said.is_empty(),
            "{said} / {error}"
        );
    }
}

/// Whether `message` is a request (to the client), not a notification or an answer.
fn is_request(message: &Value) -> bool {
    message.get("method").is_some() && message.get("id").is_some()
}

#[tokio::test]
async fn a_turns_requests_go_to_the_prompter_not_the_connection_attached_longest() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    // The creator is attached first, and stays.
    let mut creator = server.initialized().await;
    let session = creator.new_session(&workspace).await;
    let mut prompter = server.initialized().await;
    prompter.attach("session/load", &session, &workspace).await;

    let id = prompter.start_prompt(&session, "write a note").await;
    // Whichever connection is asked first: it must be the prompter.
    let request = within("the permission request", async {
        loop {
            tokio::select! {
                message = creator.recv() => {
                    assert!(!is_request(&message), "the creator was asked: {message}");
                    creator.notifications.push(message);
                }
                message = prompter.recv() => {
                    if message["method"] == "session/request_permission" {
                        return message;
                    }
                    prompter.notifications.push(message);
                }
            }
        }
    })
    .await;
    assert_eq!(request["params"]["sessionId"], session.as_str());
    prompter.allow(&request).await;
    let answer = prompter.response_to(id).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");

    // The creator saw the whole turn, and was asked nothing in it.
    within("the creator's updates", async {
        while !creator.agent_text(&session).ends_with("Wrote note.txt.") {
            let message = creator.recv().await;
            assert!(!is_request(&message), "the creator was asked: {message}");
            creator.notifications.push(message);
        }
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(workspace.join("note.txt")).unwrap(),
        "hello"
    );
}

#[tokio::test]
async fn when_the_prompter_leaves_mid_turn_another_attached_connection_answers() {
    let Watched {
        server: _server,
        workspace,
        mut prompter,
        session,
        mut watcher,
    } = watched_session().await;

    prompter.start_prompt(&session, "write a note").await;
    prompter.permission_request().await;
    drop(prompter);

    // The turn goes on: the question goes to the connection still attached.
    let request = watcher.permission_request().await;
    watcher.allow(&request).await;
    within(
        "the end of the turn",
        watcher.receive_until(|seen| {
            text_of(&updates(seen, "agent_message_chunk")).ends_with("Wrote note.txt.")
        }),
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(workspace.join("note.txt")).unwrap(),
        "hello"
    );
}

/// The answers to requests `ids` of `client`, in the order of `ids`,
/// whatever order they come in.
async fn answers_to(client: &mut RawClient, ids: &[u64]) -> Vec<Value> {
    let mut answers = vec![Value::Null; ids.len()];
    while answers.iter().any(Value::is_null) {
        let message = client.recv().await;
        match ids.iter().position(|id| message["id"] == json!(id)) {
            Some(index) if message.get("method").is_none() => answers[index] = message,
            _ => client.notifications.push(message),
        }
    }
    answers
}

/// ACP: closing a session cancels its ongoing work. A watcher closing it
/// leaves the prompter's turn running; the prompter closing it ends the turn
/// `cancelled`, for it and for whoever watches.
#[tokio::test]
async fn closing_a_session_cancels_the_closers_turn_but_not_another_clients() {
    let Watched {
        server: _server,
        workspace,
        mut prompter,
        session,
        mut watcher,
    } = watched_session().await;
    let turn = prompter.start_prompt(&session, "write a note").await;
    let request = prompter.permission_request().await;
    let closed = watcher
        .request("session/close", json!({"sessionId": session}))
        .await;
    assert_eq!(closed["result"], json!({}), "{closed}");
    prompter.allow(&request).await;
    let answer = prompter.response_to(turn).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("note.txt")).unwrap(),
        "hello"
    );

    let Watched {
        server: _server,
        workspace,
        mut prompter,
        session,
        mut watcher,
    } = watched_session().await;
    let turn = prompter.start_prompt(&session, "write a note").await;
    prompter.permission_request().await;
    let close = prompter
        .start_request("session/close", json!({"sessionId": session}))
        .await;
    let answers = within(
        "the answers to the prompt and the close",
        answers_to(&mut prompter, &[turn, close]),
    )
    .await;
    assert_eq!(
        answers[0]["result"]["stopReason"], "cancelled",
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["result"], json!({}), "{}", answers[1]);
    within(
        "the watcher to see the turn end",
        watcher.receive_until(|seen| !turn_endings(seen).is_empty()),
    )
    .await;
    let ended = &turn_endings(&watcher.notifications)[0];
    assert_eq!(ended["stopReason"], "cancelled");
    assert_eq!(
        ended["note"], "the client that sent the prompt closed the session",
        "the watcher is told why: {ended}"
    );
    assert!(!workspace.join("note.txt").exists(), "nothing was written");
}

#[tokio::test]
async fn a_turn_ended_by_a_delete_or_the_servers_stop_says_so() {
    let Watched {
        server,
        workspace: _,
        mut prompter,
        session,
        mut watcher,
    } = watched_session().await;
    let turn = prompter.start_prompt(&session, "write a note").await;
    prompter.permission_request().await;
    let deleted = watcher
        .request("session/delete", json!({"sessionId": session}))
        .await;
    assert_eq!(deleted["result"], json!({}), "{deleted}");
    let answer = prompter.response_to(turn).await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    let endings = turn_endings(&prompter.notifications);
    assert_eq!(
        endings.first().map(|ended| &ended["note"]),
        Some(&json!("the session was deleted")),
        "{endings:?}"
    );
    drop(server);

    // Stopped by SIGTERM mid-turn, the history says so, and the model is
    // told the same when the conversation goes on.
    let Watched {
        mut server,
        workspace: _,
        mut prompter,
        session,
        watcher: _watcher,
    } = watched_session().await;
    prompter.start_prompt(&session, "write a note").await;
    prompter.permission_request().await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    let ended = turn_end(&server.home.database(), &session).expect("the turn's end is stored");
    assert_eq!(ended["stopReason"], "cancelled", "{ended}");
    assert_eq!(
        ended["note"], "the server stopped during this turn",
        "{ended}"
    );
}

/// A `write_file` of "hello" to note.txt, as an OpenAI-compatible model
/// streams it.
fn write_call_reply() -> Reply {
    Reply::events([
        openai_delta(json!({"role": "assistant", "content": "Writing. "})),
        openai_delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "write_file", "arguments": "{\"path\": \"note.txt\", \"content\": \"hello\"}"}}]}),
        ),
        openai_finish("tool_calls"),
        openai_done(),
    ])
}

/// Read `session`'s status changes until its turn has run and ended.
async fn until_turn_ended(watcher: &mut RawClient, session: &str) {
    let mut ran = false;
    loop {
        match next_status(watcher, session).await.as_str() {
            "running" => ran = true,
            "idle" if ran => return,
            _ => {}
        }
    }
}

/// The text of a replayed tool call's content.
fn content_text(call: &Value) -> String {
    call["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["content"]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn a_turn_nobody_can_answer_ends_cancelled_and_the_history_says_why() {
    let provider = FakeProvider::start([
        write_call_reply(),
        Reply::events(openai_text_reply(&["I see."])),
    ])
    .await;
    let model = fake_model(&provider);
    let server = Server::start_in(
        Home::new(),
        &["--model", &model, "--reattach-timeout", "0.3"],
    )
    .await;
    let workspace = server.home.workspace();
    let mut watcher = server.initialized().await;
    watcher.request("_punie/watch", json!({})).await;
    let mut prompter = server.initialized().await;
    let session = prompter.new_session(&workspace).await;
    prompter.start_prompt(&session, "write a note").await;
    prompter.permission_request().await;
    drop(prompter);
    within("the turn to end", until_turn_ended(&mut watcher, &session)).await;
    assert!(
        !workspace.join("note.txt").exists(),
        "nothing was written without permission"
    );

    // What a later client is shown: the call failed because nobody was
    // there to answer, not because the person declined.
    let mut later = server.initialized().await;
    later.attach("session/load", &session, &workspace).await;
    let replay = std::mem::take(&mut later.notifications);
    let calls = updates(&replay, "tool_call");
    assert_eq!(calls.len(), 1, "{replay:?}");
    assert_eq!(calls[0]["status"], "failed", "{}", calls[0]);
    let why = content_text(calls[0]);
    assert!(why.contains("no client was attached"), "{why}");
    assert!(why.contains("cancelled"), "{why}");
    assert!(!why.contains("declined"), "{why}");

    // How the turn ended, as stored (the load's answer came after everything
    // queued for the store before it) and as replayed: cancelled, and why.
    let stored = turn_end(&server.home.database(), &session).expect("the turn's end is stored");
    let replayed = turn_endings(&replay);
    assert_eq!(replayed.len(), 1, "{replay:?}");
    for ended in [&stored, &replayed[0]] {
        assert_eq!(ended["stopReason"], "cancelled", "{ended}");
        let note = ended["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("no client was attached")
                && note.contains("session/request_permission")
                && note.contains("--reattach-timeout"),
            "{ended}"
        );
    }

    // And what the model is told, as the conversation goes on.
    let answer = later.prompt(&session, "what happened?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let requests = provider.requests();
    let messages = &requests[1].body["messages"];
    assert_eq!(messages[3]["role"], "tool", "{messages}");
    assert_eq!(messages[3]["tool_call_id"], "call_1");
    let told = messages[3]["content"].as_str().unwrap_or_default();
    assert!(told.contains("no client was attached"), "{told}");
    assert!(!told.contains("declined"), "{told}");
}

#[tokio::test]
async fn a_connection_that_attaches_while_the_turn_waits_answers_it_and_the_turn_completes() {
    let mut server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut watcher = server.initialized().await;
    watcher.request("_punie/watch", json!({})).await;
    let mut prompter = server.initialized().await;
    let session = prompter.new_session(&workspace).await;
    prompter.start_prompt(&session, "write a note").await;
    prompter.permission_request().await;
    drop(prompter);
    server
        .wait_for_log("no client is attached to answer session/request_permission; waiting")
        .await;

    let mut later = server.initialized().await;
    later.attach("session/load", &session, &workspace).await;
    // Asked only once it knows the session: after the load's answer, and
    // after the replay of the tool call the question is about.
    assert!(
        later
            .notifications
            .iter()
            .all(|message| message["method"] != "session/request_permission"),
        "asked before the answer to session/load: {:?}",
        later.notifications
    );
    let replayed_call = updates(&later.notifications, "tool_call");
    assert_eq!(replayed_call.len(), 1, "{:?}", later.notifications);
    assert_eq!(replayed_call[0]["toolCallId"], "call-1");
    let request = later.permission_request().await;
    assert_eq!(request["params"]["toolCall"]["toolCallId"], "call-1");
    later.allow(&request).await;
    within("the end of the turn", async {
        while !text_of(&updates(&later.notifications, "agent_message_chunk"))
            .ends_with("Wrote note.txt.")
        {
            let message = later.recv().await;
            later.notifications.push(message);
        }
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(workspace.join("note.txt")).unwrap(),
        "hello"
    );
    // Once the turn is over, the session takes the next prompt.
    within("the turn to end", until_turn_ended(&mut watcher, &session)).await;
    let answer = later.prompt(&session, "and now?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
}

/// A raw client that advertises `capabilities` in `initialize`.
async fn initialized_with(server: &Server, capabilities: Value) -> RawClient {
    let mut client = server.raw().await;
    let response = client
        .request(
            "initialize",
            json!({"protocolVersion": 1, "clientCapabilities": capabilities,
                   "clientInfo": {"name": "raw-test", "version": "0"}}),
        )
        .await;
    assert!(response.get("result").is_some(), "{response}");
    client
}

/// Read `client`'s messages until its agent text of `session` ends with
/// `text`; fail if the server sends it any request but a permission request,
/// which it allows.
async fn answer_permissions_until(client: &mut RawClient, session: &str, text: &str) {
    within(&format!("`{text}`"), async {
        while !client.agent_text(session).ends_with(text) {
            let message = client.recv().await;
            if message.get("id").is_some() && message.get("method").is_some() {
                assert_eq!(
                    message["method"], "session/request_permission",
                    "a client without capabilities was sent {message}"
                );
                client.allow(&message).await;
            }
            client.notifications.push(message);
        }
    })
    .await;
}

/// The final state of `session`'s tool call `id` among `client`'s updates.
fn final_state(client: &RawClient, session: &str, id: &str) -> Value {
    let mut call = json!({});
    for message in &client.notifications {
        let update = &message["params"]["update"];
        if message["method"] == "session/update"
            && message["params"]["sessionId"] == session
            && update["toolCallId"] == id
        {
            for (key, value) in update.as_object().into_iter().flatten() {
                call[key] = value.clone();
            }
        }
    }
    call
}

#[tokio::test]
async fn a_command_whose_client_leaves_fails_at_once_and_its_terminal_is_asked_of_nobody_else() {
    let responses = json!([
        [{"tool_call": {"id": "run-1", "name": "run_command",
                        "arguments": {"command": "sleep 30", "timeout_secs": 3600}}}],
        [{"text": "It went away."}]
    ]);
    let server = Server::scripted(responses, &[]).await;
    let workspace = server.home.workspace();
    let ide = Ide::new(&workspace, true, true);
    let mut other = server.initialized().await;
    let session = ide
        .run(sdk_transport(&server), Received::default(), async |cx| {
            ide.initialize(&cx).await?;
            let session = new_session(&cx, &workspace).await?;
            other.attach("session/resume", &session.0, &workspace).await;
            // Detached: the IDE dies with the prompt outstanding, without
            // cancelling it.
            cx.send_request(PromptRequest::new(session.clone(), vec!["run".into()]))
                .detach();
            within("the command to run on the IDE", async {
                while !ide.requests().iter().any(|m| m == "terminal/wait_for_exit") {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            })
            .await;
            // Returning closes the IDE's connection mid-command.
            Ok(session.0.to_string())
        })
        .await;

    // Within the test's deadline, far short of the command's timeout.
    answer_permissions_until(&mut other, &session, "It went away.").await;
    let call = final_state(&other, &session, "run-1");
    assert_eq!(call["status"], "failed", "{call}");
    let why = content_text(&call);
    assert!(why.contains("went away"), "{why}");
}

#[tokio::test]
async fn a_client_resuming_mid_turn_is_first_told_of_the_tool_calls_still_unfinished() {
    let write = json!({"tool_call": {"id": "write-1", "name": "write_file",
                                     "arguments": {"path": "note.txt", "content": "hello"}}});
    let server = Server::scripted(json!([[write], [{"text": "Done."}]]), &[]).await;
    let workspace = server.home.workspace();
    let mut editor = server.initialized().await;
    let session = editor.new_session(&workspace).await;
    editor.start_prompt(&session, "write a note").await;
    editor.permission_request().await;

    let mut other = server.initialized().await;
    let answer = other.attach("session/resume", &session, &workspace).await;
    assert_eq!(answer["result"]["_meta"]["punie/running"], true, "{answer}");
    let calls = updates(&other.notifications, "tool_call");
    assert_eq!(calls.len(), 1, "{:?}", other.notifications);
    assert_eq!(calls[0]["toolCallId"], "write-1");
    // Pending, which the wire leaves out as the default.
    assert!(
        matches!(
            calls[0].get("status").and_then(Value::as_str),
            None | Some("pending")
        ),
        "{}",
        calls[0]
    );
    assert_eq!(calls[0]["kind"], "edit");
    assert_eq!(calls[0]["rawInput"]["path"], "note.txt");

    // The editor leaves; the question moves to the client that knows the call.
    drop(editor);
    answer_permissions_until(&mut other, &session, "Done.").await;
    assert_eq!(
        std::fs::read_to_string(workspace.join("note.txt")).unwrap(),
        "hello"
    );
}

#[tokio::test]
async fn a_new_session_and_a_changed_setting_are_on_disk_before_the_client_is_answered() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let database = rusqlite::Connection::open(server.home.database()).unwrap();
    let stored = |session: &str| -> Option<Option<String>> {
        database
            .query_row(
                "SELECT mode FROM sessions WHERE id = ?1",
                [session],
                |row| row.get(0),
            )
            .ok()
    };
    // Each answer is raced against the store's writer; many, so that a
    // writer behind its answers would be caught.
    for round in 0..20 {
        let session = client.new_session(&workspace).await;
        assert!(
            stored(&session).is_some(),
            "round {round}: {session} not stored"
        );
        let mode = if round % 2 == 0 { "edit" } else { "read-only" };
        let answer = client
            .request(
                "session/set_mode",
                json!({"sessionId": session, "modeId": mode}),
            )
            .await;
        assert!(answer.get("result").is_some(), "{answer}");
        assert_eq!(
            stored(&session),
            Some(Some(mode.to_owned())),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_conversation_dropped_from_memory_the_moment_its_turn_ends_is_read_back_whole() {
    // Each reply names its place in the script, which the model plays by
    // the replies its conversation holds: one missing plays a reply again.
    const TURNS: usize = 80;
    // Room for the turns either client begins as the other ends the last.
    let replies: Vec<Value> = (0..TURNS + 2)
        .map(|number| json!([{"text": format!("R{number}.")}]))
        .collect();
    let server = Server::scripted(json!(replies), &["--session-idle-timeout", "0"]).await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let session = first.new_session(&workspace).await;
    let mut second = server.initialized().await;
    second.attach("session/resume", &session, &workspace).await;
    // Two clients prompting as fast as they are let: each next turn begins
    // the moment the last ends, as its conversation is being dropped.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let prompting = |mut client: RawClient| {
        let (session, answered) = (session.clone(), answered.clone());
        tokio::spawn(async move {
            while answered.load(std::sync::atomic::Ordering::SeqCst) < TURNS {
                let answer = client.prompt(&session, "go on").await;
                if answer["result"]["stopReason"] == "end_turn" {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    assert_eq!(answer["error"]["code"], -32600, "only busy: {answer}");
                }
            }
        })
    };
    let (one, two) = (prompting(first), prompting(second));
    let (one, two) = within("the turns", async { (one.await, two.await) }).await;
    // A client's failed check fails the test.
    one.expect("the first client's turns");
    two.expect("the second client's turns");

    let mut reader = server.initialized().await;
    reader.attach("session/load", &session, &workspace).await;
    let turns = answered.load(std::sync::atomic::Ordering::SeqCst);
    let expected: String = (0..turns).map(|number| format!("R{number}.")).collect();
    assert_eq!(reader.agent_text(&session), expected);
}

#[tokio::test]
async fn a_connection_that_loads_its_session_again_mid_turn_gets_the_replay_then_the_rest_once() {
    // A long first turn makes the replay take a while to read and send.
    let first: Vec<Value> = (0..5000)
        .map(|n| json!({"text": format!("h{n} ")}))
        .collect();
    let mut second = Vec::new();
    for n in 0..100 {
        second.push(json!({"text": format!("a{n} ")}));
        second.push(json!({"pause_ms": 2}));
    }
    let server = Server::scripted(json!([first, second]), &[]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    client.prompt(&session, "first").await;

    let prompt = client.start_prompt(&session, "second").await;
    client
        .receive_until(|seen| text_of(&updates(seen, "agent_message_chunk")).contains("a10 "))
        .await;
    let load_sent = client.notifications.len();
    let load = client
        .start_request(
            "session/load",
            json!({"sessionId": session, "cwd": workspace, "mcpServers": []}),
        )
        .await;
    let answered = |seen: &[Value], id: u64| seen.iter().any(|m| m.get("id") == Some(&json!(id)));
    client
        .receive_until(|seen| answered(seen, prompt) && answered(seen, load))
        .await;
    // The replay begins with the history's first prompt; from there the
    // client has the whole conversation, each chunk once, in order.
    let after_load = &client.notifications[load_sent..];
    let replay_start = after_load
        .iter()
        .position(|m| m["params"]["update"]["sessionUpdate"] == "user_message_chunk")
        .expect("the replay");
    let seen = text_of(&updates(&after_load[replay_start..], "agent_message_chunk"));
    let first_turn: String = (0..5000).map(|n| format!("h{n} ")).collect();
    let second_turn: String = (0..100).map(|n| format!("a{n} ")).collect();
    assert!(seen.starts_with(&first_turn), "the first turn whole");
    assert_eq!(&seen[first_turn.len()..], second_turn);
}

#[tokio::test]
async fn a_request_is_not_rerouted_to_a_client_without_the_capability_it_needs() {
    let write = json!({"tool_call": {"name": "write_file",
                                     "arguments": {"path": "note.txt", "content": "hello"}}});
    let server = Server::scripted(json!([[write], [write], [{"text": "Done."}]]), &[]).await;
    let workspace = server.home.workspace();
    let mut editor = initialized_with(
        &server,
        json!({"fs": {"readTextFile": true, "writeTextFile": true}}),
    )
    .await;
    let session = editor.new_session(&workspace).await;
    let mut other = server.initialized().await;
    other.attach("session/resume", &session, &workspace).await;

    editor.start_prompt(&session, "write a note").await;
    let request = editor.permission_request().await;
    editor.allow(&request).await;
    loop {
        let message = editor.recv().await;
        if message["method"] == "fs/write_text_file" {
            break;
        }
    }
    // The editor leaves without writing.
    drop(editor);

    answer_permissions_until(&mut other, &session, "Done.").await;
    let calls: Vec<Value> = updates(&other.notifications, "tool_call")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let first = final_state(&other, &session, calls[0]["toolCallId"].as_str().unwrap());
    assert_eq!(first["status"], "failed", "{first}");
    let why = content_text(&first);
    assert!(why.contains("does not offer `fs.writeTextFile`"), "{why}");
    // Called again, the server writes the file itself.
    let second = final_state(&other, &session, calls[1]["toolCallId"].as_str().unwrap());
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("note.txt")).unwrap(),
        "hello"
    );
}

#[tokio::test]
async fn after_kill_9_mid_turn_a_restarted_server_lists_loads_and_continues_the_session() {
    let home = Home::new();
    let args = script_server_args(&home);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start_in(home, &args).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    client.start_prompt(&session, "write a note").await;
    // The turn is waiting for permission: everything before it was sent.
    client.permission_request().await;
    let seen = client.notifications.clone();
    server.signal(nix::sys::signal::Signal::SIGKILL);
    server.exit_status().await;
    drop(client);

    let home = server.home;
    let server = Server::start_in(home, &args).await;
    let mut client = server.initialized().await;
    let listed = client.request("session/list", json!({})).await;
    let sessions = listed["result"]["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(sessions[0]["sessionId"], session.as_str());
    assert_eq!(sessions[0]["title"], "write a note");

    client.attach("session/load", &session, &workspace).await;
    let replay = std::mem::take(&mut client.notifications);
    assert_eq!(
        text_of(&updates(&replay, "agent_message_chunk")),
        text_of(&updates(&seen, "agent_message_chunk")),
        "everything the client saw is replayed"
    );
    assert_eq!(
        text_of(&updates(&seen, "agent_message_chunk")),
        "Let me write it. "
    );
    let calls = updates(&replay, "tool_call");
    assert_eq!(calls.len(), 1, "{replay:?}");
    // It was waiting for permission when the server died; the turn is over,
    // so the call is too, and says why.
    assert_eq!(calls[0]["status"], "failed", "{}", calls[0]);
    let why = content_text(calls[0]);
    assert!(why.contains("the server stopped"), "{why}");

    let database = server.home.database();
    let ended = turn_end(&database, &session).expect("the interrupted turn is recorded as ended");
    assert_eq!(ended["stopReason"], "cancelled");

    // The conversation continues: the script's next response is the second.
    let answer = client.prompt(&session, "try again").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(client.agent_text(&session), "Wrote note.txt.");
}

/// Stop `server` as a person would (SIGTERM) and start it again in the
/// same home with `args`, after `meanwhile` has had the stopped server's
/// database.
async fn restart(mut server: Server, args: &[&str], meanwhile: impl FnOnce(&Path)) -> Server {
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.exit_status().await.success());
    let home = server.home;
    meanwhile(&home.database());
    Server::start_in(home, args).await
}

#[tokio::test]
async fn a_history_that_cannot_be_read_fails_the_load_instead_of_replaying_nothing() {
    let home = Home::new();
    let args = script_server_args(&home);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_in(home, &args).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    first_turn(&mut client, &session).await;
    drop(client);

    // One stored update of the session is damaged: its body is no longer text.
    let server = restart(server, &args, |database| {
        let connection = rusqlite::Connection::open(database).unwrap();
        let damaged = connection
            .execute(
                "UPDATE entries SET body = X'00FF' WHERE seq = \
                 (SELECT min(seq) FROM entries WHERE session_id = ?1 AND kind = 0)",
                [&session],
            )
            .unwrap();
        assert_eq!(damaged, 1);
    })
    .await;

    let mut client = server.initialized().await;
    let loaded = client
        .request(
            "session/load",
            json!({"sessionId": session, "cwd": workspace, "mcpServers": []}),
        )
        .await;
    assert_eq!(loaded["error"]["code"], -32603, "{loaded}");
    let message = loaded["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not be read"), "{message}");
    assert!(message.contains(&session), "{message}");
    assert!(
        message.contains("punie.db"),
        "it says where, and why: {message}"
    );
    assert!(
        updates(&client.notifications, "agent_message_chunk").is_empty(),
        "nothing was replayed: {:?}",
        client.notifications
    );
    // The failed load left the connection unattached.
    let refused = client.prompt(&session, "and now?").await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");
}

/// A script whose every turn writes a file (named for the turn) and runs a
/// command that would leave `ran.txt`, then talks.
const ALWAYS_SCRIPT: &str = r#"[
  [{"tool_call": {"name": "write_file", "arguments": {"path": "1.txt", "content": "one"}}},
   {"tool_call": {"name": "run_command", "arguments": {"command": "echo ran > ran.txt"}}}],
  [{"text": "Turn one."}],
  [{"tool_call": {"name": "write_file", "arguments": {"path": "2.txt", "content": "two"}}},
   {"tool_call": {"name": "run_command", "arguments": {"command": "echo ran > ran.txt"}}}],
  [{"text": "Turn two."}],
  [{"tool_call": {"name": "write_file", "arguments": {"path": "3.txt", "content": "three"}}},
   {"tool_call": {"name": "run_command", "arguments": {"command": "echo ran > ran.txt"}}}],
  [{"text": "Turn three."}]
]"#;

/// Answer a permission `request` with the option `option`.
async fn answer_permission(client: &mut RawClient, request: &Value, option: &str) {
    client
        .send(json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {"outcome": {"outcome": "selected", "optionId": option}},
        }))
        .await;
}

/// Prompt `session` and wait for the answer, failing if the server asks
/// `client` anything meanwhile.
async fn prompt_unasked(client: &mut RawClient, session: &str, text: &str) -> Value {
    let id = client.start_prompt(session, text).await;
    loop {
        let message = client.recv().await;
        if message["id"] == json!(id) && message.get("method").is_none() {
            return message;
        }
        assert!(
            message.get("method").is_none() || message.get("id").is_none(),
            "the person was asked again: {message}"
        );
        client.notifications.push(message);
    }
}

#[tokio::test]
async fn always_answers_hold_after_the_session_leaves_memory_and_after_a_restart() {
    let home = Home::new();
    let model = home.script_model(ALWAYS_SCRIPT);
    let args = ["--model", model.as_str()];
    let server = Server::start_in(home, &args).await;
    let workspace = server.home.workspace();

    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let id = client.start_prompt(&session, "one").await;
    let write = client.permission_request().await;
    answer_permission(&mut client, &write, "allow_always").await;
    let run = client.permission_request().await;
    answer_permission(&mut client, &run, "reject_always").await;
    let answer = client.response_to(id).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("1.txt")).unwrap(),
        "one"
    );

    // Nobody attached: the session leaves memory, and with it the tools'
    // memory of the answers.
    drop(client);
    server
        .health_until("the session to leave memory", |health| {
            health["sessions"] == 0
        })
        .await;
    let mut client = server.initialized().await;
    client.attach("session/load", &session, &workspace).await;
    client.notifications.clear();
    let answer = prompt_unasked(&mut client, &session, "two").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(client.agent_text(&session), "Turn two.");
    assert_eq!(
        std::fs::read_to_string(workspace.join("2.txt")).unwrap(),
        "two",
        "allowed always"
    );
    assert!(!workspace.join("ran.txt").exists(), "rejected always");
    drop(client);

    let server = restart(server, &args, |_| {}).await;
    let mut client = server.initialized().await;
    client.attach("session/resume", &session, &workspace).await;
    let answer = prompt_unasked(&mut client, &session, "three").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("3.txt")).unwrap(),
        "three",
        "still allowed always"
    );
    assert!(!workspace.join("ran.txt").exists(), "still rejected always");
}

#[tokio::test]
async fn session_list_pages_through_every_session_newest_first() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let mut created = Vec::new();
    for _ in 0..205 {
        created.push(client.new_session(&workspace).await);
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(cursor) => json!({"cursor": cursor}),
            None => json!({}),
        };
        let page = client.request("session/list", params).await;
        pages += 1;
        for session in page["result"]["sessions"].as_array().unwrap() {
            listed.push(session["sessionId"].as_str().unwrap().to_owned());
        }
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(listed, created, "every session once, newest first");
    let bad = client
        .request("session/list", json!({"cursor": "not-a-cursor"}))
        .await;
    assert_eq!(bad["error"]["code"], -32602);
}

#[tokio::test]
async fn sessions_leave_memory_when_detached_or_idle_and_stay_stored() {
    let server = Server::start_in(Home::new(), &["--session-idle-timeout", "0.05"]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let session = client.new_session(&workspace).await;
        client.prompt(&session, "hello").await;
        sessions.push(session);
    }
    // Attached but idle: their conversations leave memory.
    server
        .health_until("idle conversations to be dropped", |health| {
            health["conversationsInMemory"] == 0
        })
        .await;
    // And read back when the session is used again.
    let answer = client.prompt(&sessions[0], "again").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn");
    assert!(client.agent_text(&sessions[0]).contains("Turn 2."));

    drop(client);
    server
        .health_until("detached sessions to leave memory", |health| {
            health["sessions"] == 0
        })
        .await;
    let mut client = server.initialized().await;
    let listed = client.request("session/list", json!({})).await;
    assert_eq!(listed["result"]["sessions"].as_array().unwrap().len(), 20);
}

/// The next `_punie/session_status` of `session` a watcher receives.
async fn next_status(watcher: &mut RawClient, session: &str) -> String {
    loop {
        let message = watcher.recv().await;
        if message["method"] == "_punie/session_status" && message["params"]["sessionId"] == session
        {
            return message["params"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
}

#[tokio::test]
async fn a_watcher_sees_every_sessions_status_change_on_the_server() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut watcher = server.initialized().await;
    let now = watcher.request("_punie/watch", json!({})).await;
    assert_eq!(now["result"]["sessions"], json!([]), "{now}");

    let mut ide = server.initialized().await;
    let session = ide.new_session(&workspace).await;
    assert_eq!(next_status(&mut watcher, &session).await, "idle");
    let id = ide.start_prompt(&session, "write a note").await;
    assert_eq!(next_status(&mut watcher, &session).await, "running");
    let request = ide.permission_request().await;
    assert_eq!(
        next_status(&mut watcher, &session).await,
        "waiting_for_permission"
    );
    ide.allow(&request).await;
    assert_eq!(next_status(&mut watcher, &session).await, "running");
    ide.response_to(id).await;
    assert_eq!(next_status(&mut watcher, &session).await, "idle");

    // A watcher that arrives later gets the sessions in memory at once.
    let mut late = server.initialized().await;
    let now = late.request("_punie/watch", json!({})).await;
    assert_eq!(now["result"]["sessions"][0]["sessionId"], session.as_str());
    assert_eq!(now["result"]["sessions"][0]["title"], "write a note");
    assert_eq!(now["result"]["sessions"][0]["status"], "idle");
    // And how its last turn ended, for a list that tells failed ones apart.
    assert_eq!(now["result"]["sessions"][0]["lastTurn"], "end_turn");
}

#[tokio::test]
async fn a_question_stays_waiting_while_its_asker_is_gone_and_another_answers_it() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut watcher = server.initialized().await;
    watcher.request("_punie/watch", json!({})).await;
    let mut ide = server.initialized().await;
    let session = ide.new_session(&workspace).await;
    assert_eq!(next_status(&mut watcher, &session).await, "idle");
    ide.start_prompt(&session, "write a note").await;
    assert_eq!(next_status(&mut watcher, &session).await, "running");
    ide.permission_request().await;
    assert_eq!(
        next_status(&mut watcher, &session).await,
        "waiting_for_permission"
    );

    // The question outlives the client it was put to: nothing changes for
    // watchers until somebody answers it.
    drop(ide);
    let mut browser = server.initialized().await;
    browser.attach("session/resume", &session, &workspace).await;
    let request = browser.permission_request().await;
    browser.allow(&request).await;
    assert_eq!(next_status(&mut watcher, &session).await, "running");
    assert_eq!(next_status(&mut watcher, &session).await, "idle");
}

#[tokio::test]
async fn a_new_session_may_choose_its_model() {
    let server = script_server(&[]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let info = client.request("_punie/info", json!({})).await;
    let default = info["result"]["defaultModel"].as_str().unwrap_or_default();
    assert!(default.starts_with("script:"), "{info}");

    let created = client
        .request(
            "session/new",
            json!({"cwd": workspace, "mcpServers": [], "_meta": {"punie/model": "test"}}),
        )
        .await;
    let session = created["result"]["sessionId"].as_str().unwrap().to_owned();
    client.prompt(&session, "hello").await;
    assert!(
        client.agent_text(&session).starts_with("Turn 1. You said"),
        "the test model answered, not the script"
    );

    let refused = client
        .request(
            "session/new",
            json!({"cwd": workspace, "mcpServers": [], "_meta": {"punie/model": "nonsense:x"}}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nonsense"), "{message}");
}

#[tokio::test]
async fn the_models_plan_reaches_the_client_as_a_plan_and_replays_with_the_history() {
    let plan = |first: &str| {
        json!({"tool_call": {"name": "update_plan", "arguments": {"entries": [
            {"content": "Read the notes", "status": first, "priority": "high"},
            {"content": "Tidy them", "status": "pending"}
        ]}}})
    };
    let server = Server::scripted(
        json!([[plan("in_progress")], [plan("completed")], [{"text": "Planned."}]]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let answer = client.prompt(&session, "plan it").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");

    let seen = |messages: &[Value]| -> Vec<Value> {
        updates(messages, "plan")
            .iter()
            .map(|plan| plan["entries"].clone())
            .collect()
    };
    let step =
        |status: &str| json!({"content": "Read the notes", "status": status, "priority": "high"});
    let tidy = json!({"content": "Tidy them", "status": "pending", "priority": "medium"});
    let expected = vec![
        json!([step("in_progress"), tidy]),
        json!([step("completed"), tidy]),
    ];
    assert_eq!(seen(&client.notifications), expected);
    assert!(
        updates(&client.notifications, "tool_call").is_empty(),
        "a plan is not shown as a tool call"
    );

    let mut later = server.initialized().await;
    later.attach("session/load", &session, &workspace).await;
    assert_eq!(
        seen(&later.notifications),
        expected,
        "the plans replay in order"
    );
}

#[tokio::test]
async fn the_models_thoughts_replay_as_thoughts_to_a_client_that_loads_the_session() {
    let server = Server::scripted(
        json!([[{"thought": "The user "}, {"thought": "wants a greeting."}, {"text": "Hello."}]]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let session = first.new_session(&workspace).await;
    let answer = first.prompt(&session, "greet me").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let thought = text_of(&updates(&first.notifications, "agent_thought_chunk"));
    assert_eq!(thought, "The user wants a greeting.");
    drop(first);

    let mut later = server.initialized().await;
    later.attach("session/load", &session, &workspace).await;
    let replay = &later.notifications;
    assert_eq!(
        text_of(&updates(replay, "agent_thought_chunk")),
        thought,
        "{replay:?}"
    );
    assert_eq!(
        later.agent_text(&session),
        "Hello.",
        "the thoughts are not replayed as the reply"
    );
    let said: Vec<&str> = replay
        .iter()
        .filter_map(|message| message["params"]["update"]["sessionUpdate"].as_str())
        .filter(|kind| kind.starts_with("agent_"))
        .collect();
    let thought_at = said.iter().rposition(|kind| *kind == "agent_thought_chunk");
    let reply_at = said.iter().position(|kind| *kind == "agent_message_chunk");
    assert!(
        matches!((thought_at, reply_at), (Some(thought), Some(reply)) if thought < reply),
        "thought, then replied: {said:?}"
    );
}

/// A server on the fake model server answering `replies` (with `extra`
/// flags), one client on it and a session of that client's.
async fn on_a_fake_model(
    replies: impl IntoIterator<Item = Reply>,
    extra: &[&str],
) -> (FakeProvider, Server, RawClient, String) {
    let provider = FakeProvider::start(replies).await;
    let model = fake_model(&provider);
    let mut args = vec!["--model", model.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start_in(Home::new(), &args).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    (provider, server, client, session)
}

/// The `--model` spec of `provider`, an OpenAI-compatible server.
fn fake_model(provider: &FakeProvider) -> String {
    Wire::OpenAi.model_spec(provider).0
}

/// A small PNG's bytes, as base64 (what a client sends).
const PICTURE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// Whether a request the model server received shows it `PICTURE`.
fn shows_the_picture(body: &Value) -> bool {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["role"] == "user")
        .filter_map(|message| message["content"].as_array())
        .flatten()
        .any(|part| part["image_url"]["url"] == format!("data:image/png;base64,{PICTURE}").as_str())
}

#[tokio::test]
async fn a_picture_in_a_prompt_reaches_the_model_every_replay_and_the_conversation_after_a_restart()
{
    let (provider, server, mut client, session) = on_a_fake_model(
        [
            Reply::events(openai_text_reply(&["A red dot."])),
            Reply::events(openai_text_reply(&["Still a red dot."])),
        ],
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let prompt = json!([
        {"type": "text", "text": "What is this?"},
        {"type": "image", "mimeType": "image/png", "data": PICTURE},
    ]);
    let answer = client
        .request(
            "session/prompt",
            json!({"sessionId": session, "prompt": prompt}),
        )
        .await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let [first] = provider.requests().try_into().expect("one model call");
    assert!(shows_the_picture(&first.body), "{}", first.body);
    drop(client);

    let server = restart(server, &["--model", &fake_model(&provider)], |_| {}).await;
    let mut client = server.initialized().await;
    client.attach("session/load", &session, &workspace).await;
    let replay = std::mem::take(&mut client.notifications);
    let prompts: Vec<&Value> = updates(&replay, "user_message_chunk")
        .into_iter()
        .map(|update| &update["content"])
        .collect();
    assert_eq!(
        prompts,
        prompt.as_array().unwrap().iter().collect::<Vec<_>>()
    );

    let answer = client.prompt(&session, "Are you sure?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let requests = provider.requests();
    assert!(
        shows_the_picture(&requests[1].body),
        "the restored conversation still shows it: {}",
        requests[1].body
    );
}

#[tokio::test]
async fn a_thinking_models_reasoning_goes_back_with_its_tool_calls_even_after_a_restart() {
    // DeepSeek and Kimi in thinking mode refuse a conversation whose replies
    // that called tools lack their `reasoning_content`.
    let reasoned = vec![
        openai_delta(
            json!({"role": "assistant", "content": null, "reasoning_content": "I should "}),
        ),
        openai_delta(json!({"reasoning_content": "read it."})),
        openai_delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}]}),
        ),
        openai_finish("tool_calls"),
        openai_done(),
    ];
    let (provider, server, mut client, session) = on_a_fake_model(
        [
            Reply::events(reasoned),
            Reply::events(openai_text_reply(&["Done."])),
            Reply::events(openai_text_reply(&["Again."])),
        ],
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    std::fs::write(workspace.join("a.txt"), "hello").unwrap();
    let answer = client.prompt(&session, "read a.txt").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    drop(client);

    let server = restart(server, &["--model", &fake_model(&provider)], |_| {}).await;
    let mut client = server.initialized().await;
    client.attach("session/load", &session, &workspace).await;
    let answer = client.prompt(&session, "once more").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");

    let requests = provider.requests();
    assert_eq!(requests.len(), 3);
    for (at, request) in requests.iter().enumerate().skip(1) {
        let replies: Vec<&Value> = request.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|message| message["role"] == "assistant")
            .collect();
        assert_eq!(
            replies[0]["reasoning_content"], "I should read it.",
            "request {at}: {}",
            request.body
        );
        assert_eq!(replies[0]["tool_calls"][0]["id"], "call_1");
    }
}

/// The prompts a request the model server received carries, in order.
fn prompts_sent(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|message| message["role"] == "user")
        .filter_map(|message| message["content"].as_str())
        .map(|text| text.chars().take(6).collect())
        .collect()
}

#[tokio::test]
async fn a_conversation_that_outgrows_the_context_window_sends_its_newest_prompts() {
    // Three quarters of the window is for input: room for the system prompt,
    // the tools and two of these prompts (8,000 tokens each, as estimated),
    // not three.
    let (provider, server, mut client, session) = on_a_fake_model(
        [
            Reply::events(openai_text_reply(&["One."])),
            Reply::events(openai_text_reply(&["Two."])),
            Reply::events(openai_text_reply(&["Three."])),
        ],
        &["--context-window", "30000"],
    )
    .await;
    for name in ["first", "second", "third"] {
        let prompt = format!("{name} {}", "x".repeat(24_000));
        let answer = client.prompt(&session, &prompt).await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    }

    let requests = provider.requests();
    let sent: Vec<Vec<String>> = requests.iter().map(|r| prompts_sent(&r.body)).collect();
    assert_eq!(
        sent,
        [
            vec!["first "],
            vec!["first ", "second"],
            vec!["second", "third "]
        ]
    );
    let system = |at: usize| {
        requests[at].body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(!system(1).contains("no longer"), "{}", system(1));
    assert!(
        system(2).contains(
            "This conversation outgrew your context window: its first prompt, and the replies \
             and tool calls that followed it, are no longer shown to you."
        ),
        "{}",
        system(2)
    );

    // Nothing is forgotten: the history still holds every prompt.
    let mut later = server.initialized().await;
    later
        .attach("session/load", &session, &server.home.workspace())
        .await;
    let replayed = text_of(&updates(&later.notifications, "user_message_chunk"));
    for name in ["first", "second", "third"] {
        assert!(replayed.contains(name), "{name} is replayed");
    }
}

/// How llama.cpp's server refuses a conversation longer than its context.
fn context_exceeded() -> Reply {
    Reply::status(
        400,
        json!({"error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        }}),
    )
}

#[tokio::test]
async fn a_model_server_that_refuses_the_conversation_as_too_long_is_sent_less_from_then_on() {
    // The default window (128,000 tokens) is far larger than the server's.
    let (provider, _server, mut client, session) = on_a_fake_model(
        [
            Reply::events(openai_text_reply(&["One."])),
            Reply::events(openai_text_reply(&["Two."])),
            context_exceeded(),
            Reply::events(openai_text_reply(&["Three."])),
            Reply::events(openai_text_reply(&["Four."])),
        ],
        &[],
    )
    .await;
    let mut texts = Vec::new();
    let mut windows = Vec::new();
    for name in ["first", "second", "third", "fourth"] {
        let answer = client
            .prompt(&session, &format!("{name} {}", "x".repeat(6_000)))
            .await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
        texts.push(client.agent_text(&session));
        windows.extend(
            client
                .notifications
                .iter()
                .map(|message| &message["params"]["update"])
                .filter(|update| update["sessionUpdate"] == "usage_update")
                .map(|update| update["size"].as_u64().unwrap()),
        );
        client.notifications.clear();
    }

    let sent: Vec<Vec<String>> = provider
        .requests()
        .iter()
        .map(|request| prompts_sent(&request.body))
        .collect();
    assert_eq!(
        sent,
        [
            vec!["first "],
            vec!["first ", "second"],
            vec!["first ", "second", "third "],
            vec!["third "],
            vec!["fourth"],
        ],
        "refused, the turn is sent half as much; later turns start from there"
    );
    assert_eq!(
        texts[2],
        "the model server answered 400 Bad Request: the request exceeds the available context \
         size, try increasing it (exceed_context_size_error); sent again without the \
         conversation's oldest prompts (set --context-window to the model's size to spare this \
         round trip)\n\nThree."
    );
    assert_eq!(texts[3], "Four.", "said once, when it happened");
    assert_eq!(windows.len(), 4, "{windows:?}");
    assert_eq!(windows[..2], [128_000, 128_000], "the configured window");
    assert!(
        windows[2] < 10_000 && windows[3] == windows[2],
        "the usage meter shows the window the conversation is fitted to now: {windows:?}"
    );
}

#[tokio::test]
async fn a_refusal_as_too_long_inside_the_stream_is_answered_by_sending_less() {
    // LM Studio refuses after `200 OK`, in an error event.
    let in_the_stream = Reply::events([
        "event: error\ndata: {\"error\":{\"message\":\"Input does not fit in context length.\"}}\n\n"
            .to_owned(),
    ]);
    let (provider, _server, mut client, session) = on_a_fake_model(
        [
            Reply::events(openai_text_reply(&["One."])),
            in_the_stream,
            Reply::events(openai_text_reply(&["Two."])),
        ],
        &[],
    )
    .await;
    for name in ["first", "second"] {
        let answer = client
            .prompt(&session, &format!("{name} {}", "x".repeat(6_000)))
            .await;
        assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    }
    let sent: Vec<Vec<String>> = provider
        .requests()
        .iter()
        .map(|request| prompts_sent(&request.body))
        .collect();
    assert_eq!(
        sent,
        [vec!["first "], vec!["first ", "second"], vec!["second"]]
    );
    assert!(
        client
            .agent_text(&session)
            .contains("reported an error: Input does not fit in context length; sent again"),
        "{}",
        client.agent_text(&session)
    );
}

#[tokio::test]
async fn a_refused_prompt_and_its_reply_are_left_out_of_the_next_and_its_tool_calls_never_run() {
    let refused = vec![
        openai_delta(json!({"role": "assistant", "content": "I can't help with that."})),
        openai_delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "write_file",
                         "arguments": "{\"path\":\"refused.txt\",\"content\":\"x\"}"}}]}),
        ),
        openai_finish("content_filter"),
        openai_done(),
    ];
    let (provider, server, mut client, session) = on_a_fake_model(
        [
            Reply::events(openai_text_reply(&["One."])),
            Reply::events(refused),
            Reply::events(openai_text_reply(&["Three."])),
            Reply::events(openai_text_reply(&["Four."])),
        ],
        &["--session-idle-timeout", "0.05"],
    )
    .await;
    let mut stop_reasons = Vec::new();
    for name in ["first", "second", "third"] {
        let answer = client.prompt(&session, &format!("{name} prompt")).await;
        stop_reasons.push(answer["result"]["stopReason"].clone());
    }
    assert_eq!(stop_reasons, ["end_turn", "refusal", "end_turn"]);
    // Read back from the store once the idle session has let it go, the
    // conversation still leaves the refused turn out.
    server
        .health_until("the idle conversation to be dropped", |health| {
            health["conversationsInMemory"] == 0
        })
        .await;
    let answer = client.prompt(&session, "fourth prompt").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(
        !server.home.workspace().join("refused.txt").exists(),
        "a refused reply's tool call is not run"
    );
    assert!(
        client.agent_text(&session).contains(
            "I can't help with that.\n\nThe model refused this prompt. It is left out of what \
             the model is sent from now on"
        ),
        "{}",
        client.agent_text(&session)
    );
    let requests = provider.requests();
    assert_eq!(
        requests.len(),
        4,
        "nothing more was asked in the refused turn"
    );
    assert_eq!(prompts_sent(&requests[2].body), ["first ", "third "]);
    assert_eq!(
        prompts_sent(&requests[3].body),
        ["first ", "third ", "fourth"]
    );
    assert!(
        !requests[2].body.to_string().contains("can't help"),
        "{}",
        requests[2].body
    );

    // The person's history keeps it.
    let mut later = server.initialized().await;
    later
        .attach("session/load", &session, &server.home.workspace())
        .await;
    let replayed = text_of(&updates(&later.notifications, "user_message_chunk"));
    assert!(replayed.contains("second"), "the history still shows it");
}

#[tokio::test]
async fn a_refusal_as_too_long_after_the_reply_began_thinking_is_not_sent_again() {
    // The thoughts have reached the clients: sent again, they would show twice.
    let (provider, _server, mut client, session) = on_a_fake_model(
        [
            Reply::events(openai_text_reply(&["One."])),
            Reply::events([
                openai_delta(json!({"role": "assistant", "reasoning_content": "Let me see."})),
                "event: error\ndata: {\"error\":{\"message\":\"Input does not fit in context length.\"}}\n\n"
                    .to_owned(),
            ]),
        ],
        &[],
    )
    .await;
    client.prompt(&session, "first").await;
    let answer = client.prompt(&session, "second").await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Input does not fit in context length"),
        "{answer}"
    );
    assert_eq!(provider.requests().len(), 2, "not asked again");
}

#[tokio::test]
async fn a_prompt_too_long_on_its_own_ends_the_turn_saying_so() {
    let (provider, _server, mut client, session) = on_a_fake_model([context_exceeded()], &[]).await;
    let answer = client.prompt(&session, "a very long question").await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "exceeds the available context size, try increasing it (exceed_context_size_error): \
             even the newest prompt alone is more than the model takes"
        ),
        "{answer}"
    );
    assert_eq!(provider.requests().len(), 1, "nothing less to send");
}

/// Prompt `session` with `text` and a picture; the answer.
async fn prompt_with_picture(client: &mut RawClient, session: &str, text: &str) -> Value {
    let prompt = json!([
        {"type": "text", "text": text},
        {"type": "image", "mimeType": "image/png", "data": PICTURE},
    ]);
    client
        .request(
            "session/prompt",
            json!({"sessionId": session, "prompt": prompt}),
        )
        .await
}

#[tokio::test]
async fn a_model_server_that_refuses_pictures_is_not_sent_them_again() {
    let (provider, _server, mut client, session) = on_a_fake_model(
        [
            llama_cpp_refuses_pictures(),
            Reply::events(openai_text_reply(&["I cannot see it."])),
            Reply::events(openai_text_reply(&["Still text."])),
            Reply::events(openai_text_reply(&["Text again."])),
        ],
        &[],
    )
    .await;

    let answer = prompt_with_picture(&mut client, &session, "What is this?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let first = client.agent_text(&session);
    assert!(
        first.starts_with("the model server answered 500 Internal Server Error: image input is not supported")
            && first.contains("asked again with the conversation's pictures named in text instead, as they will be from now on in this session\n\n"),
        "{first}"
    );
    assert!(first.ends_with("I cannot see it."), "{first}");
    client.notifications.clear();

    let answer = client.prompt(&session, "And now?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        client.agent_text(&session),
        "Still text.",
        "nothing more to say"
    );
    client.notifications.clear();

    let answer = prompt_with_picture(&mut client, &session, "And this one?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(
        client.agent_text(&session),
        "This model server does not take pictures, so the prompt's pictures were named to it \
         in text instead.\n\nText again."
    );

    let requests = provider.requests();
    assert_eq!(requests.len(), 4, "refused once, never again");
    assert!(shows_the_picture(&requests[0].body));
    for later in &requests[1..] {
        assert!(!shows_the_picture(&later.body), "{}", later.body);
    }
}

#[tokio::test]
async fn pictures_refused_for_their_size_are_still_sent_on_later_calls() {
    let (provider, _server, mut client, session) = on_a_fake_model(
        [
            picture_too_large(),
            Reply::events(openai_text_reply(&["Too big to see."])),
            Reply::events(openai_text_reply(&["Now I see it."])),
        ],
        &[],
    )
    .await;

    let answer = prompt_with_picture(&mut client, &session, "What is this?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let first = client.agent_text(&session);
    assert!(
        first.contains("image exceeds 5 MB maximum; asked again with the conversation's pictures named in text instead\n\n"),
        "{first}"
    );
    assert!(!first.contains("from now on"), "{first}");

    let answer = prompt_with_picture(&mut client, &session, "And this smaller one?").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let requests = provider.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        shows_the_picture(&requests[2].body),
        "a model that reads pictures still gets them: {}",
        requests[2].body
    );
}
