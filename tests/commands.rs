//! Slash commands: offered to every client that opens a session, right after
//! the answer that opens it, and sent to the model as their instructions
//! while clients see the prompt as it was typed. And shell commands the model
//! runs: one that leaves a job in the background ends when its shell exits,
//! and one given a timeout past the most runs with the most, the model told.

mod support;

use std::process::Stdio;

use serde_json::{Value, json};
use support::fake_provider::{FakeProvider, Reply, Wire, openai_text_reply};
use support::{Home, Server, ended, json_lines, pid_in, text, updates, within};

/// The names of the commands an `available_commands_update` offers.
fn command_names(message: &Value) -> Vec<&str> {
    assert_eq!(message["method"], "session/update", "{message}");
    let update = &message["params"]["update"];
    assert_eq!(
        update["sessionUpdate"], "available_commands_update",
        "{message}"
    );
    update["availableCommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|command| {
            assert!(
                command["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            );
            assert!(command["input"]["hint"].is_string(), "{command}");
            command["name"].as_str().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_command_reaches_the_model_as_its_instructions_and_clients_see_what_was_typed() {
    let provider = FakeProvider::start([Reply::events(openai_text_reply(&["No problems."]))]).await;
    let fake = Wire::OpenAi.model_spec(&provider).0;
    let server = Server::start_in(Home::new(), &["--model", &fake]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let created = client
        .request("session/new", json!({"cwd": workspace, "mcpServers": []}))
        .await;
    let session = created["result"]["sessionId"].as_str().unwrap().to_owned();
    let offered = client.recv().await;
    assert_eq!(offered["params"]["sessionId"], session.as_str());
    assert_eq!(command_names(&offered), ["init", "review"]);

    let mut watcher = server.initialized().await;
    watcher.attach("session/resume", &session, &workspace).await;
    assert_eq!(command_names(&watcher.recv().await), ["init", "review"]);

    let answer = client.prompt(&session, "/review the parser, mostly").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");

    let requests = provider.requests();
    let asked = requests[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        asked.starts_with("Review the changes in this project"),
        "{asked}"
    );
    assert!(asked.contains("Do not change any file."), "{asked}");
    assert!(
        asked.ends_with("The user adds: the parser, mostly"),
        "{asked}"
    );
    watcher
        .receive_until(|seen| {
            seen.iter()
                .any(|m| m["params"]["update"]["sessionUpdate"] == "user_message_chunk")
        })
        .await;
    let shown = watcher
        .notifications
        .iter()
        .find(|m| m["params"]["update"]["sessionUpdate"] == "user_message_chunk")
        .unwrap();
    assert_eq!(
        shown["params"]["update"]["content"]["text"],
        "/review the parser, mostly"
    );

    let is_title = |m: &Value| m["params"]["update"]["title"].is_string();
    watcher
        .receive_until(|seen| seen.iter().any(is_title))
        .await;
    let titled = watcher
        .notifications
        .iter()
        .find(|m| is_title(m))
        .map(|m| m["params"]["update"]["title"].clone());
    assert_eq!(
        titled,
        Some(json!("/review the parser, mostly")),
        "the session is named by what was typed"
    );

    let mut loader = server.initialized().await;
    loader.attach("session/load", &session, &workspace).await;
    let replayed_prompt = loader
        .notifications
        .iter()
        .find(|m| m["params"]["update"]["sessionUpdate"] == "user_message_chunk")
        .unwrap();
    assert_eq!(
        replayed_prompt["params"]["update"]["content"]["text"], "/review the parser, mostly",
        "the history keeps what was typed"
    );
    assert_eq!(
        command_names(&loader.recv().await),
        ["init", "review"],
        "after the load's answer"
    );
}

#[tokio::test]
async fn a_slash_that_names_no_command_is_sent_as_written() {
    let provider = FakeProvider::start([Reply::events(openai_text_reply(&["Sure."]))]).await;
    let fake = Wire::OpenAi.model_spec(&provider).0;
    let server = Server::start_in(Home::new(), &["--model", &fake]).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    client.prompt(&session, "/usr/bin is on my PATH").await;
    let requests = provider.requests();
    assert_eq!(
        requests[0].body["messages"][1],
        json!({"role": "user", "content": "/usr/bin is on my PATH"})
    );
}

/// Exits at once, leaving a job that would run for 30 s holding its output
/// open; the job's pid is in `job.pid` before the shell exits.
const LEAVES_A_JOB: &str = "sleep 30 & echo $! > job.pid; echo started; exit 0";

async fn leaves_a_job() -> Server {
    Server::scripted(
        json!([
            [{"tool_call": {"name": "run_command", "arguments": {"command": LEAVES_A_JOB}}}],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await
}

/// The text a finished tool call's last update gave, and its status.
fn finished_call(updates: &[&Value]) -> (String, String) {
    let finished = updates
        .iter()
        .rfind(|update| update["status"] == "completed" || update["status"] == "failed")
        .unwrap_or_else(|| panic!("the call finished: {updates:?}"));
    let text = finished["content"]
        .as_array()
        .and_then(|content| content.last())
        .and_then(|item| item["content"]["text"].as_str())
        .unwrap_or_else(|| panic!("text content: {finished}"));
    (
        finished["status"].as_str().unwrap().to_owned(),
        text.to_owned(),
    )
}

#[tokio::test]
async fn a_command_ends_when_its_shell_exits_and_the_jobs_it_left_are_stopped() {
    let server = leaves_a_job().await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let prompt = client.start_prompt(&session, "start it").await;
    let asked = client.permission_request().await;
    client.allow(&asked).await;
    // The timeout is 120 s and the job runs for 30: only the shell's exit
    // ends the call in time.
    let answer = within("the call to end with its shell", client.response_to(prompt)).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let (status, result) = finished_call(&updates(&client.notifications, "tool_call_update"));
    assert_eq!(
        (status.as_str(), result.as_str()),
        (
            "completed",
            "exit code 0; background processes it left were stopped; output:\nstarted\n"
        )
    );
    // The server runs on: the job was stopped as the call ended.
    ended(pid_in(&workspace.join("job.pid"))).await;
}

#[tokio::test]
async fn in_the_terminal_ask_serves_a_command_ends_when_its_shell_exits() {
    let server = leaves_a_job().await;
    let workspace = server.home.workspace();
    let output = within(
        "punie ask to finish with the shell",
        server
            .home
            .command()
            .args(["ask", "--yes", "--output", "stream-json", "start it"])
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines = json_lines(&output.stdout);
    let calls: Vec<&Value> = lines
        .iter()
        .map(|line| &line["update"])
        .filter(|update| update["sessionUpdate"] == "tool_call_update")
        .collect();
    assert_eq!(
        finished_call(&calls),
        (
            "completed".to_owned(),
            "exit code 0; output:\nstarted\n".to_owned()
        )
    );
    ended(pid_in(&workspace.join("job.pid"))).await;
}

/// The schema says at most 3600 s: a model that asks for more has its
/// command run with 3600, and is told so rather than left to believe it has
/// the time it asked for. A timeout within it goes unremarked.
#[tokio::test]
async fn a_timeout_past_the_most_is_cut_to_it_and_the_model_told() {
    let server = Server::scripted(
        json!([
            [{"tool_call": {"name": "run_command", "arguments": {"command": "echo hi", "timeout_secs": 7200}}}],
            [{"tool_call": {"name": "run_command", "arguments": {"command": "echo hi", "timeout_secs": 3600}}}],
            [{"text": "Done."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    let prompt = client.start_prompt(&session, "run it").await;
    for _ in 0..2 {
        let asked = client.permission_request().await;
        client.allow(&asked).await;
    }
    let answer = within("the turn to end", client.response_to(prompt)).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let told: Vec<(&str, &str)> = updates(&client.notifications, "tool_call_update")
        .into_iter()
        .filter(|update| update["status"] == "completed" || update["status"] == "failed")
        .map(|update| {
            (
                update["status"].as_str().unwrap(),
                update["content"][0]["content"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        told,
        [
            (
                "completed",
                "it ran with timeout_secs 3600, the most, not the 7200 asked for; exit code 0; \
                 output:\nhi\n"
            ),
            ("completed", "exit code 0; output:\nhi\n"),
        ]
    );
}
