//! What each ACP method does on a connection.
//!
//! The SDK frames, parses and routes JSON-RPC; requests reach [`serve`]'s
//! handler untyped so that Punie, not serde, words the errors: each method
//! parses its own params and says exactly what is wrong with them. Long work
//! (a turn) runs as a task of the connection, never inside the SDK's dispatch
//! loop, so a running prompt blocks nothing else.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    AgentCapabilities, CancelNotification, CloseSessionRequest, CloseSessionResponse,
    DeleteSessionRequest, DeleteSessionResponse, Implementation, InitializeRequest,
    InitializeResponse, ListSessionsRequest, ListSessionsResponse, LoadSessionRequest,
    LoadSessionResponse, McpCapabilities, Meta, NewSessionRequest, NewSessionResponse,
    PromptCapabilities, PromptRequest, PromptResponse, ResumeSessionRequest, ResumeSessionResponse,
    SessionCapabilities, SessionCloseCapabilities, SessionConfigOption, SessionDeleteCapabilities,
    SessionId, SessionListCapabilities, SessionModeState, SessionNotification,
    SessionResumeCapabilities, SetSessionConfigOptionRequest, SetSessionConfigOptionResponse,
    SetSessionModeRequest, SetSessionModeResponse,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Channel, Client, Error, UntypedMessage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::connection::{ClientDescription, Connection};
use super::frames::INVALID_REQUEST_METHOD;
use super::options::{self, MODE_OPTION, MODEL_OPTION};
use super::{commands, errors};
use crate::config::SESSION_LIST_PAGE;
use crate::session::{BeginError, Session, Turn};

/// Serve ACP on `transport` for `connection` until the client leaves or the
/// input ends.
pub(super) async fn serve(connection: Arc<Connection>, transport: Channel) -> Result<(), Error> {
    let requests = connection.clone();
    let notifications = connection;
    Agent
        .v1()
        .name("punie")
        .on_receive_request(
            async move |request: UntypedMessage,
                        responder: Responder<Value>,
                        cx: ConnectionTo<Client>| {
                handle_request(&requests, request, responder, cx).await
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_notification(
            async move |notification: UntypedMessage, _cx: ConnectionTo<Client>| {
                handle_notification(&notifications, notification);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_to(transport)
        .await
}

async fn handle_request(
    connection: &Arc<Connection>,
    request: UntypedMessage,
    responder: Responder<Value>,
    cx: ConnectionTo<Client>,
) -> Result<(), Error> {
    let (method, params) = request.into_parts();
    tracing::debug!(connection = connection.id, method, "request");
    if method == INVALID_REQUEST_METHOD {
        return responder.respond_with_error(errors::invalid_request(&params));
    }
    if method != "initialize" && connection.client().is_none() {
        return responder.respond_with_error(errors::not_initialized(&method));
    }
    let result = match method.as_str() {
        "initialize" => initialize(connection, params),
        "session/new" | "session/load" | "session/resume" => {
            let attached = match method.as_str() {
                "session/new" => new_session(connection, params, cx.clone()).await,
                "session/load" => load_session(connection, params, cx.clone()).await,
                _ => resume_session(connection, params, cx.clone()).await,
            };
            return answer_then_offer_commands(connection, responder, &cx, attached);
        }
        "session/prompt" => return prompt(connection, params, responder).await,
        "session/list" => list_sessions(connection, params).await,
        "session/close" => close_session(connection, params),
        "session/delete" => delete_session(connection, params).await,
        "session/cancel" => cancel_by_request(connection, params),
        "session/set_config_option" => set_config_option(connection, params).await,
        "session/set_mode" => set_mode(connection, params).await,
        "_punie/connection" => describe_connection(connection),
        "_punie/info" => describe_server(connection),
        "_punie/models" => {
            list_models(connection, responder);
            return Ok(());
        }
        "_punie/watch" => watch_sessions(connection, cx),
        _ => Err(errors::method_not_found(&method)),
    };
    if let Err(error) = &result {
        tracing::debug!(connection = connection.id, method, code = error.code.value(), message = %error.message, "answered with an error");
    }
    responder.respond_with_result(result)
}

/// Answer a request that attached the connection to a session, then tell
/// the client which slash commands the session takes: after the answer,
/// which gives the client the session's id, and on the same queue, so in
/// that order.
fn answer_then_offer_commands(
    connection: &Connection,
    responder: Responder<Value>,
    cx: &ConnectionTo<Client>,
    attached: Result<(Value, Arc<Session>), Error>,
) -> Result<(), Error> {
    let (answer, session) = match attached {
        Ok(attached) => attached,
        Err(error) => return responder.respond_with_error(error),
    };
    responder.respond(answer)?;
    cx.send_notification(SessionNotification::new(
        session.id().clone(),
        commands::available(),
    ))?;
    // Only now may a running turn ask this client something: after the
    // answer that told it of the session, on the same queue.
    session.answered_attach(connection.id);
    Ok(())
}

fn handle_notification(connection: &Connection, notification: UntypedMessage) {
    let (method, params) = notification.into_parts();
    match method.as_str() {
        "session/cancel" => {
            if let Err(error) = cancel_turn(connection, params) {
                tracing::info!(
                    connection = connection.id,
                    "ignored session/cancel: {}",
                    error.message
                );
            }
        }
        // The SDK itself acts on request cancellation.
        "$/cancel_request" => {}
        // Not run: it could not be answered, nor refused. Said where the
        // person who wrote the client may look, since the client is told
        // nothing.
        _ if REQUESTS.contains(&method.as_str()) => tracing::info!(
            connection = connection.id,
            "ignored {method}: it came as a notification, without an id, and only a request (with an id) is run and answered"
        ),
        _ => tracing::debug!(
            connection = connection.id,
            method,
            "ignored an unknown notification"
        ),
    }
}

/// The requests [`handle_request`] serves, but for `session/cancel`, which
/// ACP makes a notification.
const REQUESTS: &[&str] = &[
    "initialize",
    "session/new",
    "session/load",
    "session/resume",
    "session/prompt",
    "session/list",
    "session/close",
    "session/delete",
    "session/set_config_option",
    "session/set_mode",
    "_punie/connection",
    "_punie/info",
    "_punie/models",
    "_punie/watch",
];

/// `session/cancel`: the session's running turn, if any, ends `cancelled`.
fn cancel_turn(connection: &Connection, params: Value) -> Result<(), Error> {
    let method = "session/cancel";
    let cancel = parse_params::<CancelNotification>(method, params)?;
    connection
        .attached_session(method, &cancel.session_id)?
        .cancel_turn();
    Ok(())
}

/// ACP makes `session/cancel` a notification, but a client that sends it with
/// an id still means it: the turn is cancelled, and the answer says whether
/// that could be done.
fn cancel_by_request(connection: &Connection, params: Value) -> Result<Value, Error> {
    tracing::debug!(
        connection = connection.id,
        "session/cancel came as a request; ACP sends it as a notification"
    );
    cancel_turn(connection, params).map(|()| Value::Null)
}

fn initialize(connection: &Connection, params: Value) -> Result<Value, Error> {
    let unreadable = unreadable_capabilities(&params);
    let request: InitializeRequest = parse_params("initialize", params)?;
    tracing::debug!(
        connection = connection.id,
        client = request.client_info.as_ref().map(|info| info.name.as_str()),
        "initialize"
    );
    let mut response = InitializeResponse::new(ProtocolVersion::V1)
        .agent_capabilities(agent_capabilities())
        .agent_info(Implementation::new("punie", crate::VERSION).title("Punie".to_owned()));
    if let Some(problem) = unreadable {
        // ACP reads what it cannot as absent, so that newer clients still
        // connect: the client is told, and the log says so, rather than
        // finding its files and terminal unused without a word.
        tracing::warn!(connection = connection.id, "{problem}");
        let mut meta = Meta::new();
        meta.insert(CAPABILITIES_META.to_owned(), problem.into());
        response = response.meta(meta);
    }
    connection.set_client(ClientDescription {
        capabilities: Arc::new(request.client_capabilities),
        info: request.client_info,
    });
    to_json(response)
}

/// Where `initialize`'s answer says which client capabilities could not be
/// read: `_meta["punie/unreadCapabilities"]`.
pub const CAPABILITIES_META: &str = "punie/unreadCapabilities";

/// A value a client sent, as its JSON, cut short: quoted back in the
/// answer and the log, it must not make either as large as it is.
fn shown(value: &Value) -> String {
    errors::quoted(&value.to_string()).into_owned()
}

/// What of `clientCapabilities` Punie uses but cannot read, said so the
/// client's author can fix it: the file system and terminal a client offers
/// decide where tools run.
fn unreadable_capabilities(params: &Value) -> Option<String> {
    // Null is as good as absent, anywhere: nothing offered.
    let capabilities = params
        .get("clientCapabilities")
        .filter(|value| !value.is_null())?;
    let mut problems = Vec::new();
    if !capabilities.is_object() {
        problems.push(format!(
            "`clientCapabilities` is {}, not an object",
            shown(capabilities)
        ));
    } else {
        match capabilities.get("fs") {
            None | Some(Value::Null) => {}
            Some(fs) if !fs.is_object() => {
                problems.push(format!(
                    "`clientCapabilities.fs` is {}, not an object",
                    shown(fs)
                ));
            }
            Some(fs) => {
                for key in ["readTextFile", "writeTextFile"] {
                    if let Some(value) = fs
                        .get(key)
                        .filter(|value| !value.is_boolean() && !value.is_null())
                    {
                        problems.push(format!(
                            "`clientCapabilities.fs.{key}` is {}, not true or false",
                            shown(value)
                        ));
                    }
                }
            }
        }
        if let Some(value) = capabilities
            .get("terminal")
            .filter(|value| !value.is_boolean() && !value.is_null())
        {
            problems.push(format!(
                "`clientCapabilities.terminal` is {}, not true or false",
                shown(value)
            ));
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{}: what cannot be read counts as not offered, and Punie does that work itself",
            problems.join("; ")
        )
    })
}

/// Only what Punie implements.
fn agent_capabilities() -> AgentCapabilities {
    AgentCapabilities::new()
        .load_session(true)
        .prompt_capabilities(PromptCapabilities::new().embedded_context(true).image(true))
        .mcp_capabilities(McpCapabilities::new().http(true))
        .session_capabilities(
            SessionCapabilities::new()
                .list(SessionListCapabilities::new())
                .resume(SessionResumeCapabilities::new())
                .close(SessionCloseCapabilities::new())
                .delete(SessionDeleteCapabilities::new()),
        )
}

async fn new_session(
    connection: &Connection,
    params: Value,
    cx: ConnectionTo<Client>,
) -> Result<(Value, Arc<Session>), Error> {
    const METHOD: &str = "session/new";
    let request: NewSessionRequest = parse_params(METHOD, params)?;
    let cwd = check_workspace(METHOD, &request.cwd).await?;
    let model = match request.meta.as_ref().and_then(|meta| meta.get(MODEL_META)) {
        None => None,
        Some(Value::String(spec)) => Some(spec.as_str()),
        Some(other) => {
            return Err(errors::invalid_params(
                METHOD,
                format!(
                    "`_meta.{MODEL_META}` must be a model spec such as \"ollama:qwen3\", not {other}"
                ),
            ));
        }
    };
    let session = connection
        .create_session(cwd, model, cx)
        .map_err(|error| errors::registry(METHOD, error))?;
    session.use_mcp_servers(&request.mcp_servers);
    // A client given the id may rely on it: the session is on disk first.
    session.settled().await;
    tracing::info!(connection = connection.id, session = %session.id(), cwd = %session.cwd().display(), "session created");
    let (modes, config_options) = settings_of(connection, &session);
    let answer = to_json(
        NewSessionResponse::new(session.id().clone())
            .modes(modes)
            .config_options(config_options),
    )?;
    Ok((answer, session))
}

/// The session's settings, as a client is shown them when it attaches. The
/// local model servers' lists are asked for again, for the next client, if
/// they are old.
fn settings_of(
    connection: &Connection,
    session: &Session,
) -> (SessionModeState, Vec<SessionConfigOption>) {
    connection.hub.refresh_models_if_stale();
    (
        options::mode_state(session),
        options::config_options(session, &connection.hub.models.known()),
    )
}

/// `session/set_config_option`: pick the session's model or mode.
async fn set_config_option(connection: &Connection, params: Value) -> Result<Value, Error> {
    const METHOD: &str = "session/set_config_option";
    // Said here: serde would say only that no variant matched.
    let boolean = params.get("type").is_some_and(|kind| kind == "boolean");
    if !boolean && params.get("value").is_some_and(|value| !value.is_string()) {
        return Err(errors::invalid_params(
            METHOD,
            "`value` must be a string: the id of one of the option's values",
        ));
    }
    let request: SetSessionConfigOptionRequest = parse_params(METHOD, params)?;
    let session = connection.attached_session(METHOD, &request.session_id)?;
    let option = &*request.config_id.0;
    let Some(value) = request.value.as_value_id() else {
        return Err(errors::invalid_params(
            METHOD,
            format!("`{option}` takes the id of one of its values, not true or false"),
        ));
    };
    let mode_changed = match option {
        MODEL_OPTION => {
            let model = connection
                .hub
                .sessions
                .model_choice(Some(&value.0))
                .map_err(|error| {
                    errors::invalid_params(
                        METHOD,
                        format!("cannot use the model `{value}`: {error}"),
                    )
                })?;
            tracing::info!(connection = connection.id, session = %session.id(), model = model.spec, "model chosen");
            session.set_model(model);
            false
        }
        MODE_OPTION => {
            change_mode(connection, &session, options::mode_named(METHOD, &value.0)?);
            true
        }
        other => {
            return Err(errors::invalid_params(
                METHOD,
                format!(
                    "there is no option `{other}`; the options are `{MODEL_OPTION}` and `{MODE_OPTION}`"
                ),
            ));
        }
    };
    let options = tell_others_of_change(connection, &session, mode_changed);
    // Answered once stored: a change the client was told of outlives a crash.
    session.settled().await;
    to_json(SetSessionConfigOptionResponse::new(options))
}

/// `session/set_mode`: the older way to pick the session's mode.
async fn set_mode(connection: &Connection, params: Value) -> Result<Value, Error> {
    const METHOD: &str = "session/set_mode";
    let request: SetSessionModeRequest = parse_params(METHOD, params)?;
    let session = connection.attached_session(METHOD, &request.session_id)?;
    change_mode(
        connection,
        &session,
        options::mode_named(METHOD, &request.mode_id.0)?,
    );
    tell_others_of_change(connection, &session, true);
    session.settled().await;
    to_json(SetSessionModeResponse::new())
}

fn change_mode(connection: &Connection, session: &Session, mode: crate::tools::PermissionMode) {
    tracing::info!(connection = connection.id, session = %session.id(), mode = mode.id(), "mode chosen");
    session.set_mode(mode);
}

/// Tell the session's other clients of a change of its settings; returns
/// the settings now, for the client that changed them.
fn tell_others_of_change(
    connection: &Connection,
    session: &Session,
    mode_changed: bool,
) -> Vec<SessionConfigOption> {
    let options = options::config_options(session, &connection.hub.models.known());
    for notice in options::change_notices(session, options.clone(), mode_changed) {
        session.tell_attached(notice, Some(connection.id));
    }
    options
}

/// Where `session/new` may name the session's model, e.g. `"ollama:qwen3"`.
pub const MODEL_META: &str = "punie/model";

/// `session/load`: attach, replay the whole history as `session/update`
/// notifications, then answer. A history that cannot be read is an error,
/// not an empty replay: the client would take the session for a new one.
async fn load_session(
    connection: &Connection,
    params: Value,
    cx: ConnectionTo<Client>,
) -> Result<(Value, Arc<Session>), Error> {
    const METHOD: &str = "session/load";
    let request: LoadSessionRequest = parse_params(METHOD, params)?;
    check_absolute(METHOD, &request.cwd)?;
    let id = request.session_id;
    let (session, attached) = connection
        .attach_session(&id, cx.clone(), true)
        .await
        .map_err(|error| errors::registry(METHOD, error))?;
    warn_of_other_cwd(&id, session.cwd(), &request.cwd);
    session.use_mcp_servers(&request.mcp_servers);
    let replay = match session.replay(attached.newest).await {
        Ok(replay) => replay,
        Err(error) => {
            // A client told the load failed must not go on receiving the
            // session's updates as if it had the history before them.
            connection.detach_session(&id);
            tracing::warn!(connection = connection.id, session = %id, "cannot replay the session: {error}");
            return Err(errors::internal(
                METHOD,
                format!(
                    "the history of session {id} could not be read, so it was not loaded: {error}"
                ),
            ));
        }
    };
    let replayed = replay.len();
    for update in replay {
        let _ = cx.send_notification(SessionNotification::new(id.clone(), update));
    }
    session.replayed(connection.id);
    if connection.hub.sessions.was_deleted(&id) {
        // Deleted as it loaded: the client must not take it for loaded.
        connection.detach_session(&id);
        return Err(errors::deleted_session(METHOD, &id));
    }
    tracing::info!(connection = connection.id, session = %id, updates = replayed, "session loaded");
    let (modes, config_options) = settings_of(connection, &session);
    let answer = to_json(
        LoadSessionResponse::new()
            .modes(modes)
            .config_options(config_options)
            .meta(workspace_meta(session.cwd())),
    )?;
    Ok((answer, session))
}

/// `session/resume`: attach without replay.
async fn resume_session(
    connection: &Connection,
    params: Value,
    cx: ConnectionTo<Client>,
) -> Result<(Value, Arc<Session>), Error> {
    const METHOD: &str = "session/resume";
    let request: ResumeSessionRequest = parse_params(METHOD, params)?;
    check_absolute(METHOD, &request.cwd)?;
    let id = request.session_id;
    // Held like a load's: the running turn's unfinished tool calls go
    // first, then what the turn does next.
    let (session, attached) = connection
        .attach_session(&id, cx.clone(), true)
        .await
        .map_err(|error| errors::registry(METHOD, error))?;
    warn_of_other_cwd(&id, session.cwd(), &request.cwd);
    session.use_mcp_servers(&request.mcp_servers);
    if attached.mid_turn {
        send_unfinished_tool_calls(connection, &session, attached.newest, &cx).await;
    }
    session.replayed(connection.id);
    let running = session.is_running();
    tracing::info!(connection = connection.id, session = %id, "session resumed");
    let (modes, config_options) = settings_of(connection, &session);
    if !running {
        // A turn that has just ended may still be delivering its last
        // updates, queued before its end and after this client attached:
        // they come before the answer that says no turn runs, not after it.
        session.settled().await;
    }
    let mut meta = workspace_meta(session.cwd());
    meta.insert(RUNNING_META.to_owned(), running.into());
    let answer = to_json(
        ResumeSessionResponse::new()
            .modes(modes)
            .config_options(config_options)
            .meta(meta),
    )?;
    Ok((answer, session))
}

/// Send a client resuming `session` mid-turn the turn's tool calls that
/// have not finished, so that their updates, and a permission request
/// about one, name a call it knows. Without them it still follows the turn.
async fn send_unfinished_tool_calls(
    connection: &Connection,
    session: &Session,
    newest: i64,
    cx: &ConnectionTo<Client>,
) {
    match session.unfinished_tool_calls(newest).await {
        Ok(calls) => {
            for call in calls {
                let _ = cx.send_notification(SessionNotification::new(session.id().clone(), call));
            }
        }
        Err(error) => {
            tracing::warn!(connection = connection.id, session = %session.id(), "cannot read the running turn's tool calls: {error}");
        }
    }
}

/// Whether a resumed session is running a turn as it is attached, for a
/// client about to prompt it: `_meta["punie/running"]`.
pub const RUNNING_META: &str = "punie/running";

/// Where a loaded or resumed session works, for a client that asked with
/// another directory (or none it knew): `_meta["punie/cwd"]`.
pub const CWD_META: &str = "punie/cwd";

fn workspace_meta(cwd: &Path) -> Meta {
    let mut meta = Meta::new();
    meta.insert(CWD_META.to_owned(), cwd.to_string_lossy().into());
    meta
}

/// A session keeps the workspace it was created in: its history's paths,
/// and the model's memory of them, are there.
fn warn_of_other_cwd(id: &SessionId, stored: &Path, asked: &Path) {
    if stored != asked {
        tracing::info!(session = %id, stored = %stored.display(), asked = %asked.display(), "the session keeps the workspace it was created in");
    }
}

/// Sessions are stored under absolute paths: a relative one would match none.
fn check_absolute(method: &str, cwd: &Path) -> Result<(), Error> {
    if cwd.is_absolute() {
        return Ok(());
    }
    Err(errors::invalid_params(
        method,
        format!(
            "cwd must be an absolute path, but `{}` is relative",
            cwd.display()
        ),
    ))
}

/// One spelling for each directory a client may name: `/ws/`, `/ws//` and
/// `/ws/.` are `/ws`, so that its sessions are listed, continued and grouped
/// together. A path that climbs (`..`) is resolved where it exists — taken
/// as text, `link/..` would be wrong.
async fn tidy_workspace(cwd: &Path) -> PathBuf {
    if cwd.components().any(|part| part == Component::ParentDir)
        && let Ok(real) = tokio::fs::canonicalize(cwd).await
    {
        return real;
    }
    cwd.components().collect()
}

/// A session's `cwd` must be an absolute path to an existing directory; it
/// is kept as [`tidy_workspace`] spells it.
async fn check_workspace(method: &str, cwd: &Path) -> Result<PathBuf, Error> {
    check_absolute(method, cwd)?;
    match tokio::fs::metadata(cwd).await {
        Ok(metadata) if metadata.is_dir() => Ok(tidy_workspace(cwd).await),
        Ok(_) => Err(errors::invalid_params(
            method,
            format!("cwd `{}` is not a directory", cwd.display()),
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(errors::invalid_params(
            method,
            format!("cwd `{}` does not exist", cwd.display()),
        )),
        Err(error) => Err(errors::invalid_params(
            method,
            format!("cwd `{}` cannot be used: {error}", cwd.display()),
        )),
    }
}

/// Admit a turn and run it as a task of the connection; the task answers the
/// request when the turn ends.
async fn prompt(
    connection: &Arc<Connection>,
    params: Value,
    responder: Responder<Value>,
) -> Result<(), Error> {
    const METHOD: &str = "session/prompt";
    let admitted = async {
        let request = parse_params::<PromptRequest>(METHOD, params)?;
        let session = connection.attached_session(METHOD, &request.session_id)?;
        let prompt = super::prompt::prompt_from(request.prompt)?;
        session
            .begin_turn(prompt, connection.id, connection.turn_cancel_token())
            .await
            .map_err(|error| match error {
                BeginError::Busy(busy) => errors::cannot_now(METHOD, busy),
                BeginError::WorkspaceGone(gone) => errors::cannot_now(METHOD, gone),
                BeginError::Store(error) => errors::internal(METHOD, error),
            })
    };
    let turn = match admitted.await {
        Ok(turn) => turn,
        Err(error) => {
            tracing::debug!(connection = connection.id, message = %error.message, "refused a prompt");
            return responder.respond_with_error(error);
        }
    };
    let play = play_turn(turn, responder, connection.hub.clone());
    if let Some(play) = connection.spawn_turn(play) {
        // The connection is winding down, so the turn is already cancelled and
        // ends at once; answering here keeps the answer ahead of the end of input.
        play.await;
    }
    Ok(())
}

async fn play_turn(turn: Turn, responder: Responder<Value>, hub: Arc<super::AgentHub>) {
    const METHOD: &str = "session/prompt";
    let session_id = turn.session_id().clone();
    let session = turn.session().clone();
    let cancel = turn.cancel_token();
    let request_cancelled = responder.cancellation();
    // On the heap: the turn's state is large, and this task's future is
    // moved whole when it is spawned.
    let mut run = Box::pin(turn.run());
    let outcome = tokio::select! {
        outcome = &mut run => outcome,
        () = request_cancelled.cancelled() => {
            cancel.cancel();
            run.await
        }
    };
    let answer = match outcome {
        Ok(stop_reason) => {
            tracing::debug!(session = %session_id, ?stop_reason, "turn ended");
            to_json(PromptResponse::new(stop_reason))
        }
        Err(error) => {
            tracing::warn!(session = %session_id, "turn failed: {error}");
            Err(errors::internal(METHOD, error))
        }
    };
    // Every update of the turn reaches the clients before its answer.
    hub.sessions.store().flush().await;
    hub.sessions.turn_ended(&session);
    if responder.respond_with_result(answer).is_err() {
        tracing::debug!(session = %session_id, "the client left before its prompt was answered");
    }
}

async fn list_sessions(connection: &Connection, params: Value) -> Result<Value, Error> {
    const METHOD: &str = "session/list";
    let request: ListSessionsRequest = parse_params(METHOD, params)?;
    let cwd = match &request.cwd {
        Some(cwd) => {
            check_absolute(METHOD, cwd)?;
            Some(tidy_workspace(cwd).await)
        }
        None => None,
    };
    let page = connection
        .hub
        .sessions
        .list(cwd.as_deref(), request.cursor.as_deref(), SESSION_LIST_PAGE)
        .await
        .map_err(|error| errors::registry(METHOD, error))?;
    to_json(ListSessionsResponse::new(page.sessions).next_cursor(page.next_cursor))
}

/// `session/close`: detach; the session stays stored. Its running turn is
/// cancelled, as ACP asks, when this connection prompted it or nobody else
/// is attached; a watcher closing leaves another client's turn running.
fn close_session(connection: &Connection, params: Value) -> Result<Value, Error> {
    const METHOD: &str = "session/close";
    let request: CloseSessionRequest = parse_params(METHOD, params)?;
    connection.attached_session(METHOD, &request.session_id)?;
    connection.close_session(&request.session_id);
    tracing::info!(connection = connection.id, session = %request.session_id, "session closed");
    to_json(CloseSessionResponse::new())
}

/// `session/delete`: gone from memory and disk; a running turn is cancelled.
async fn delete_session(connection: &Connection, params: Value) -> Result<Value, Error> {
    const METHOD: &str = "session/delete";
    let request: DeleteSessionRequest = parse_params(METHOD, params)?;
    let id = request.session_id;
    connection
        .hub
        .sessions
        .delete(&id)
        .await
        .map_err(|error| errors::registry(METHOD, error))?;
    // Only once it is deleted: a client whose delete failed is still attached.
    connection.detach_session(&id);
    tracing::info!(connection = connection.id, session = %id, "session deleted");
    to_json(DeleteSessionResponse::new())
}

/// `_punie/connection`: what the server knows about this connection, for
/// diagnosing a client.
fn describe_connection(connection: &Connection) -> Result<Value, Error> {
    let client = connection.client();
    Ok(json!({
        "connectionId": connection.id,
        "clientCapabilities": client.as_ref().map(|client| &*client.capabilities),
        "clientInfo": client.as_ref().and_then(|client| client.info.as_ref()),
    }))
}

/// `_punie/info`: what this server is, which model new sessions get, and
/// the largest message it takes.
fn describe_server(connection: &Connection) -> Result<Value, Error> {
    Ok(json!({
        "version": crate::VERSION,
        "defaultModel": connection.hub.sessions.default_model(),
        "maxMessageBytes": connection.hub.max_message_bytes,
    }))
}

/// `_punie/models`: models a new session could use — the server's default,
/// those it offers, then those the local model servers have installed, asked
/// for now. Answered from a task of its own: asking those servers may take a
/// moment, and other requests of the connection must not wait for it.
fn list_models(connection: &Connection, responder: Responder<Value>) {
    let hub = connection.hub.clone();
    tokio::spawn(async move {
        let models = hub.refresh_models().await;
        let _ = responder.respond_with_result(Ok(json!({ "models": models })));
    });
}

/// `_punie/watch`: the status of every session in memory now, then a
/// `_punie/session_status` notification for every change, whoever causes it,
/// until the connection ends.
fn watch_sessions(connection: &Connection, cx: ConnectionTo<Client>) -> Result<Value, Error> {
    let (now, mut changes) = connection.hub.sessions.watch();
    let id = connection.id;
    tokio::spawn(async move {
        loop {
            let status = tokio::select! {
                status = changes.recv() => status,
                () = cx.incoming_closed() => return,
            };
            let status = match status {
                Ok(status) => status,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        connection = id,
                        missed,
                        "a watcher fell behind on session statuses"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let sent = UntypedMessage::new("_punie/session_status", &status)
                .and_then(|notification| cx.send_notification(notification));
            if sent.is_err() {
                return;
            }
        }
    });
    Ok(json!({ "sessions": now }))
}

/// The params of `method` as `T`, or `-32602` naming what is wrong and where.
fn parse_params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, Error> {
    let params = match params {
        // Omitted, as JSON-RPC allows: a method whose parameters are all
        // optional takes none, and any other says which one it misses.
        Value::Null => Value::Object(serde_json::Map::new()),
        Value::Object(_) => params,
        // serde would speak of a struct's fields by position, or name the
        // type it wanted.
        other => {
            let given = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            };
            return Err(errors::invalid_params(
                method,
                format!("`params` must be an object of named parameters, not {given}"),
            ));
        }
    };
    // Told as such: "no session  on this server" reads as if an id had been
    // given and lost.
    if let Some(Value::String(id)) = params.get("sessionId")
        && id.trim().is_empty()
    {
        return Err(errors::invalid_params(
            method,
            "`sessionId` is empty; give the id of a session (session/list shows the sessions there are)",
        ));
    }
    serde_path_to_error::deserialize(params).map_err(|error| {
        let path = error.path().to_string();
        let problem = in_plain_words(&error.into_inner().to_string());
        if path == "." {
            errors::invalid_params(method, problem)
        } else {
            errors::invalid_params(method, format!("`{path}`: {problem}"))
        }
    })
}

/// serde's words for a value that fits none of a type's forms, said as what
/// would fit.
fn in_plain_words(problem: &str) -> String {
    match problem {
        "data did not match any variant of untagged enum SessionConfigOptionValue" => {
            "`value` is missing or of the wrong type: give the id of one of the option's values \
             as a string, or `type: \"boolean\"` and `value: true` or `false` for a switch"
                .to_owned()
        }
        "data did not match any variant of untagged enum McpServer" => {
            "not an MCP server: give `name`, `command`, `args` and `env` for one Punie starts, or \
             `type: \"http\"`, `name`, `url` and `headers` for one it connects to"
                .to_owned()
        }
        _ => problem.to_owned(),
    }
}

fn to_json(response: impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(response).map_err(Error::into_internal_error)
}
