//! A session's settings — its model and its permission mode — as ACP
//! clients see and change them (`configOptions`, `session/set_config_option`,
//! and the older `session/set_mode`), kept across restarts; and the standing
//! instructions (`AGENTS.md`) every turn gives the model.

mod support;

use std::path::Path;

use agent_client_protocol::v1::schema::{
    SessionConfigKind, SessionConfigOption, SessionConfigOptionCategory,
    SessionConfigSelectOptions, SetSessionConfigOptionRequest,
};
use serde_json::{Value, json};
use support::fake_provider::{
    FakeProvider, Reply, Wire, openai_text_reply, openai_tool_call_reply,
};
use support::sdk::{self, Received};
use support::{Home, RawClient, Server, sdk_transport};

/// The option `id` among a response's `configOptions`.
fn option<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["configOptions"]
        .as_array()
        .and_then(|options| options.iter().find(|option| option["id"] == id))
        .unwrap_or_else(|| panic!("no option `{id}` in {result}"))
}

/// The values an option offers.
fn values(option: &Value) -> Vec<&str> {
    option["options"]
        .as_array()
        .unwrap_or_else(|| panic!("no values in {option}"))
        .iter()
        .map(|choice| choice["value"].as_str().unwrap())
        .collect()
}

async fn set_option(client: &mut RawClient, session: &str, option: &str, value: Value) -> Value {
    client
        .request(
            "session/set_config_option",
            json!({"sessionId": session, "configId": option, "value": value}),
        )
        .await
}

/// The `session/update`s of kind `kind` among what `client` has received.
fn received<'a>(client: &'a RawClient, kind: &str) -> Vec<&'a Value> {
    client
        .notifications
        .iter()
        .filter(|message| message["params"]["update"]["sessionUpdate"] == kind)
        .collect()
}

#[tokio::test]
async fn a_session_shows_its_model_and_mode_and_a_change_reaches_every_client_and_outlives_a_restart()
 {
    let other = "local:http://127.0.0.1:9/v1/other-model";
    let settings = format!("[serve]\noffer-model = [\"{other}\"]\n");
    let server = Server::start_in(Home::with_settings(&settings), &[]).await;
    let workspace = server.home.workspace();
    let mut first = server.initialized().await;
    let created = first
        .request("session/new", json!({"cwd": workspace, "mcpServers": []}))
        .await;
    let result = &created["result"];
    let session = result["sessionId"].as_str().unwrap().to_owned();

    let model = option(result, "model");
    assert_eq!(model["category"], "model");
    assert_eq!(model["type"], "select");
    assert_eq!(model["currentValue"], "test");
    assert_eq!(
        values(model)[..2],
        ["test", other],
        "the default first, then those the settings file offers"
    );
    let mode = option(result, "mode");
    assert_eq!(mode["category"], "mode");
    assert_eq!(mode["currentValue"], "ask");
    assert_eq!(values(mode), ["ask", "edit", "read-only"]);
    assert_eq!(result["modes"]["currentModeId"], "ask");
    let mode_ids: Vec<&str> = result["modes"]["availableModes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mode| mode["id"].as_str().unwrap())
        .collect();
    assert_eq!(mode_ids, ["ask", "edit", "read-only"]);

    let mut second = server.initialized().await;
    second.attach("session/resume", &session, &workspace).await;

    let changed = set_option(&mut first, &session, "mode", json!("read-only")).await;
    assert_eq!(
        option(&changed["result"], "mode")["currentValue"],
        "read-only",
        "{changed}"
    );
    let changed = set_option(&mut first, &session, "model", json!(other)).await;
    assert_eq!(
        option(&changed["result"], "model")["currentValue"],
        other,
        "{changed}"
    );
    second
        .receive_until(|seen| {
            seen.iter()
                .filter(|m| m["params"]["update"]["sessionUpdate"] == "config_option_update")
                .count()
                == 2
        })
        .await;
    let updates = received(&second, "config_option_update");
    assert_eq!(
        option(&updates[1]["params"]["update"], "model")["currentValue"],
        other
    );
    assert_eq!(
        option(&updates[1]["params"]["update"], "mode")["currentValue"],
        "read-only"
    );
    let mode_updates = received(&second, "current_mode_update");
    assert_eq!(mode_updates.len(), 1);
    assert_eq!(
        mode_updates[0]["params"]["update"]["currentModeId"],
        "read-only"
    );
    assert!(
        received(&first, "config_option_update").is_empty(),
        "the client that changed it has the answer"
    );

    // The older way works as well, and is told the same way.
    let answer = first
        .request(
            "session/set_mode",
            json!({"sessionId": session, "modeId": "edit"}),
        )
        .await;
    assert_eq!(answer["result"], json!({}), "{answer}");
    second
        .receive_until(|seen| {
            seen.iter()
                .any(|m| m["params"]["update"]["currentModeId"] == "edit")
        })
        .await;

    let home = server.stop().await;
    let server = Server::start_in(home, &[]).await;
    let mut client = server.initialized().await;
    let loaded = client.attach("session/load", &session, &workspace).await;
    assert_eq!(option(&loaded["result"], "model")["currentValue"], other);
    assert_eq!(option(&loaded["result"], "mode")["currentValue"], "edit");
    assert_eq!(loaded["result"]["modes"]["currentModeId"], "edit");
}

#[tokio::test]
async fn a_wrong_setting_is_refused_with_what_would_do_and_changes_nothing() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;

    let cases = [
        (
            "colour",
            json!("blue"),
            "there is no option `colour`; the options are `model` and `mode`",
        ),
        (
            "mode",
            json!("yolo"),
            "there is no mode `yolo`; the modes are `ask`, `edit`, `read-only`",
        ),
        (
            "mode",
            json!(true),
            "`value` must be a string: the id of one of the option's values",
        ),
        ("model", json!("gpt-5"), "cannot use the model `gpt-5`"),
    ];
    for (option_id, value, message) in cases {
        let answer = set_option(&mut client, &session, option_id, value).await;
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        let said = answer["error"]["message"].as_str().unwrap();
        assert!(said.contains(message), "{said}");
    }
    let answer = client
        .request(
            "session/set_config_option",
            json!({"sessionId": session, "configId": "mode", "type": "boolean", "value": true}),
        )
        .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let said = answer["error"]["message"].as_str().unwrap();
    assert!(
        said.contains("`mode` takes the id of one of its values, not true or false"),
        "{said}"
    );
    let answer = client
        .request(
            "session/set_mode",
            json!({"sessionId": session, "modeId": "yolo"}),
        )
        .await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");

    // Another connection's session is not this one's to change.
    let mut stranger = server.initialized().await;
    let answer = set_option(&mut stranger, &session, "mode", json!("edit")).await;
    assert!(answer.get("error").is_some(), "{answer}");

    let resumed = client.attach("session/resume", &session, &workspace).await;
    assert_eq!(option(&resumed["result"], "mode")["currentValue"], "ask");
    assert_eq!(option(&resumed["result"], "model")["currentValue"], "test");
}

#[tokio::test]
async fn a_model_picked_mid_session_answers_the_next_prompt_knowing_the_conversation() {
    let provider =
        FakeProvider::start([Reply::events(openai_text_reply(&["From the fake."]))]).await;
    let fake = Wire::OpenAi.model_spec(&provider).0;
    let server = Server::start().await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;

    let answer = client.prompt(&session, "first question").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    let first_reply = client.agent_text(&session);
    assert!(provider.requests().is_empty());

    let changed = set_option(&mut client, &session, "model", json!(fake)).await;
    assert_eq!(
        option(&changed["result"], "model")["currentValue"],
        fake.as_str()
    );
    client.notifications.clear();
    let answer = client.prompt(&session, "second question").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert_eq!(client.agent_text(&session), "From the fake.");

    let requests = provider.requests();
    assert_eq!(requests.len(), 1);
    let messages = &requests[0].body["messages"];
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": "first question"})
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], first_reply.as_str());
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": "second question"})
    );
}

/// The names of the tools a request to the model server offered.
fn offered_tools(body: &Value) -> Vec<&str> {
    body["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {body}"))
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap())
        .collect()
}

fn system_prompt(body: &Value) -> &str {
    assert_eq!(body["messages"][0]["role"], "system", "{body}");
    body["messages"][0]["content"].as_str().unwrap()
}

#[tokio::test]
async fn read_only_offers_no_tool_that_changes_things_and_refuses_one_called_anyway_without_asking()
{
    let provider = FakeProvider::start([
        Reply::events(openai_tool_call_reply(
            "call_w",
            "write_file",
            json!({"path": "notes.txt", "content": "changed"}),
        )),
        Reply::events(openai_text_reply(&["I could not."])),
    ])
    .await;
    let fake = Wire::OpenAi.model_spec(&provider).0;
    let server = Server::start_in(Home::new(), &["--model", &fake]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    set_option(&mut client, &session, "mode", json!("read-only")).await;

    let answer = client.prompt(&session, "change the notes").await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(!workspace.join("notes.txt").exists());
    assert!(
        client
            .notifications
            .iter()
            .all(|message| message["method"] != "session/request_permission"),
        "nobody is asked"
    );
    let ended = received(&client, "tool_call_update");
    let last = ended.last().unwrap();
    assert_eq!(last["params"]["update"]["status"], "failed", "{last}");
    let requests = provider.requests();
    let first = &requests[0].body;
    assert_eq!(
        offered_tools(first),
        ["read_file", "list_files", "search", "update_plan"]
    );
    assert!(
        system_prompt(first).contains("read-only"),
        "{}",
        system_prompt(first)
    );
    let told = requests[1].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        told.contains("the user has made this session read-only"),
        "{told}"
    );
}

/// A script: write a file, run a command, then say so.
const WRITE_THEN_RUN: &str = r#"[
  [{"tool_call": {"id": "w", "name": "write_file", "arguments": {"path": "notes.txt", "content": "hello"}}}],
  [{"tool_call": {"id": "r", "name": "run_command", "arguments": {"command": "touch ran"}}}],
  [{"text": "Done."}]
]"#;

#[tokio::test]
async fn edit_mode_writes_without_asking_while_a_command_still_asks() {
    let server = Server::scripted(WRITE_THEN_RUN, &[]).await;
    let workspace = server.home.workspace();
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;
    set_option(&mut client, &session, "mode", json!("edit")).await;

    let prompt = client.start_prompt(&session, "write and run").await;
    let asked = client.permission_request().await;

    assert_eq!(
        std::fs::read_to_string(workspace.join("notes.txt")).unwrap(),
        "hello",
        "written before anything was asked"
    );
    assert_eq!(
        asked["params"]["toolCall"]["title"], "Run `touch ran`",
        "{asked}"
    );
    client
        .send(json!({
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"outcome": {"outcome": "selected", "optionId": "reject_once"}},
        }))
        .await;
    let answer = client.response_to(prompt).await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(
        !workspace.join("ran").exists(),
        "the rejected command did not run"
    );
}

/// A turn that writes a.txt, then b.txt, then ends, started in a new
/// session: the server, the client, the session, the prompt's id and the
/// question about the first write, not answered yet.
async fn asked_about_the_first_of_two_writes() -> (Server, RawClient, String, u64, Value) {
    let script = r#"[
      [{"tool_call": {"id": "a", "name": "write_file", "arguments": {"path": "a.txt", "content": "a"}}}],
      [{"tool_call": {"id": "b", "name": "write_file", "arguments": {"path": "b.txt", "content": "b"}}}],
      [{"text": "Done."}]
    ]"#;
    let server = Server::scripted(script, &[]).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&server.home.workspace()).await;
    let prompt = client.start_prompt(&session, "write both").await;
    let asked = client.permission_request().await;
    (server, client, session, prompt, asked)
}

#[tokio::test]
async fn a_mode_chosen_while_a_turn_runs_applies_to_its_next_tool_call() {
    let (server, mut client, session, prompt, asked) = asked_about_the_first_of_two_writes().await;
    let workspace = server.home.workspace();
    let changed = set_option(&mut client, &session, "mode", json!("edit")).await;
    assert_eq!(option(&changed["result"], "mode")["currentValue"], "edit");
    client.allow(&asked).await;
    let answer = client.response_to(prompt).await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(workspace.join("a.txt").exists() && workspace.join("b.txt").exists());
    assert!(
        client
            .notifications
            .iter()
            .all(|message| message["method"] != "session/request_permission"),
        "the second write was not asked about"
    );
}

#[tokio::test]
async fn always_reject_for_a_tool_outweighs_edit_mode() {
    let (server, mut client, session, prompt, asked) = asked_about_the_first_of_two_writes().await;
    let workspace = server.home.workspace();
    set_option(&mut client, &session, "mode", json!("edit")).await;
    client
        .send(json!({
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"outcome": {"outcome": "selected", "optionId": "reject_always"}},
        }))
        .await;
    let answer = client.response_to(prompt).await;

    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
    assert!(!workspace.join("a.txt").exists());
    assert!(
        !workspace.join("b.txt").exists(),
        "the person's \"always reject\" for write_file holds in edit mode"
    );
    assert!(
        client
            .notifications
            .iter()
            .all(|message| message["method"] != "session/request_permission"),
        "nobody was asked again"
    );
    let ended = received(&client, "tool_call_update");
    let last = ended.last().unwrap();
    assert_eq!(last["params"]["update"]["status"], "failed", "{last}");
}

/// Where the person's own instructions live in `home`.
fn users_instructions(home: &Home) -> std::path::PathBuf {
    let dir = home.dir.path().join("config/punie");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("AGENTS.md")
}

#[tokio::test]
async fn the_users_and_the_projects_instructions_reach_the_model_and_an_edit_applies_to_the_next_prompt()
 {
    let provider = FakeProvider::start([
        Reply::events(openai_text_reply(&["One."])),
        Reply::events(openai_text_reply(&["Two."])),
    ])
    .await;
    let fake = Wire::OpenAi.model_spec(&provider).0;
    let home = Home::new();
    std::fs::write(users_instructions(&home), "Answer in British English.\n").unwrap();
    let workspace = home.workspace();
    let project = workspace.join("AGENTS.md");
    std::fs::write(&project, "Run `make check` before you finish.\n").unwrap();
    let server = Server::start_in(home, &["--model", &fake]).await;
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;

    client.prompt(&session, "hello").await;
    std::fs::write(&project, "Use tabs, never spaces.\n").unwrap();
    client.prompt(&session, "again").await;

    let requests = provider.requests();
    let first = system_prompt(&requests[0].body);
    let users = first.find("Answer in British English.").expect(first);
    let projects = first
        .find("Run `make check` before you finish.")
        .expect(first);
    assert!(
        users < projects,
        "the project's have the last word: {first}"
    );
    assert!(first.contains(&project.display().to_string()), "{first}");
    let second = system_prompt(&requests[1].body);
    assert!(second.contains("Use tabs, never spaces."), "{second}");
    assert!(!second.contains("make check"), "{second}");
    assert_no_instructions_escape(&workspace, &server).await;
}

/// An `AGENTS.md` that links out of the workspace is not read.
async fn assert_no_instructions_escape(workspace: &Path, server: &Server) {
    let outside = server.home.dir.path().join("elsewhere.md");
    std::fs::write(&outside, "a secret from outside").unwrap();
    let project = workspace.join("AGENTS.md");
    std::fs::remove_file(&project).unwrap();
    std::os::unix::fs::symlink(&outside, &project).unwrap();
    let provider = FakeProvider::start([Reply::events(openai_text_reply(&["Three."]))]).await;
    let mut client = server.initialized().await;
    let session = client.new_session(workspace).await;
    let fake = Wire::OpenAi.model_spec(&provider).0;
    set_option(&mut client, &session, "model", json!(fake)).await;
    client.prompt(&session, "and now?").await;
    let requests = provider.requests();
    let system = system_prompt(&requests[0].body);
    assert!(!system.contains("a secret from outside"), "{system}");
}

#[tokio::test]
async fn the_sdk_reads_the_options_of_a_new_session_and_sets_one() {
    let server = Server::start().await;
    let workspace = server.home.workspace();
    let options = sdk::client(sdk_transport(&server), Received::default(), async |cx| {
        sdk::initialize(&cx).await?;
        let created = cx
            .send_request(agent_client_protocol::v1::schema::NewSessionRequest::new(
                &workspace,
            ))
            .block_task()
            .await?;
        let changed = cx
            .send_request(SetSessionConfigOptionRequest::new(
                created.session_id.clone(),
                "mode",
                "read-only",
            ))
            .block_task()
            .await?;
        Ok((
            created.config_options.unwrap_or_default(),
            changed.config_options,
        ))
    })
    .await;
    let (created, changed) = options;
    let current = |options: &[SessionConfigOption], category: SessionConfigOptionCategory| {
        let option = options
            .iter()
            .find(|option| option.category.as_ref() == Some(&category))
            .unwrap_or_else(|| panic!("no {category:?} option in {options:?}"));
        match &option.kind {
            SessionConfigKind::Select(select) => {
                let SessionConfigSelectOptions::Ungrouped(choices) = &select.options else {
                    panic!("grouped choices: {select:?}");
                };
                assert!(
                    choices
                        .iter()
                        .any(|choice| choice.value == select.current_value)
                );
                select.current_value.0.to_string()
            }
            other => panic!("not a select: {other:?}"),
        }
    };
    assert_eq!(
        current(&created, SessionConfigOptionCategory::Model),
        "test"
    );
    assert_eq!(current(&created, SessionConfigOptionCategory::Mode), "ask");
    assert_eq!(
        current(&changed, SessionConfigOptionCategory::Mode),
        "read-only"
    );
}
