//! `punie ask "…"`: a one-shot ACP client. One prompt in the workspace — in a
//! new session, or continuing one the server keeps — the answer streamed to
//! stdout as it arrives, then exit.
//!
//! It is a full ACP client: it advertises `fs` and `terminal` and serves them
//! from [`super::service`], confined to the workspace, and answers permission
//! requests. What the agent does along the way (tool calls, thoughts, plans)
//! goes to stderr, so stdout carries only the answer.
//!
//! The answer is this prompt's turn alone, even in a session other clients
//! prompt too: the server shows them all every turn, but starts another
//! client's with its prompt (which the prompter is not sent) and ends each
//! with a marker, so the turns around this one are told apart.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CancelNotification, ClientCapabilities, ContentBlock, CreateTerminalRequest,
    FileSystemCapabilities, InitializeResponse, KillTerminalRequest, Meta, NewSessionRequest, Plan,
    PlanEntryStatus, PromptRequest, ReadTextFileRequest, ReleaseTerminalRequest,
    RequestPermissionRequest, ResumeSessionRequest, SessionConfigOptionValue, SessionId,
    SessionNotification, SessionUpdate, SetSessionConfigOptionRequest, StopReason,
    TerminalOutputRequest, ToolCallStatus, WaitForTerminalExitRequest, WriteTextFileRequest,
};
use agent_client_protocol::{
    Agent, Client, Error, ErrorCode, on_receive_notification, on_receive_request,
};
use serde_json::{Value, json};

use super::service::{LocalService, Permissions};
use super::{Target, sessions, terminal_safe};
use crate::acp::{CWD_META, MODE_OPTION, MODEL_META, MODEL_OPTION, RUNNING_META};
use crate::session::TURN_ENDED_META;
use crate::tools::PermissionMode;
use crate::workspace::Workspace;

/// What `punie ask` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The answer's text, as it arrives.
    Text,
    /// One JSON object at the end: text, stopReason, sessionId, tool calls.
    Json,
    /// Every ACP update as one JSON line as it arrives, then the object
    /// `json` prints.
    StreamJson,
}

/// Which conversation the prompt goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    /// A new session in the workspace.
    New,
    /// The session with this id, as the server keeps it.
    Resume(String),
    /// The workspace's most recently used session.
    Continue,
}

/// What to ask, and how.
#[derive(Debug, Clone)]
pub struct AskOptions {
    pub prompt: String,
    /// Files sent with the prompt, as content blocks.
    pub attachments: Vec<ContentBlock>,
    pub workspace: PathBuf,
    pub conversation: Conversation,
    pub output: OutputFormat,
    /// Allow every permission request.
    pub yes: bool,
    /// The session's model from this prompt on, if the person chose one.
    pub model: Option<String>,
    /// The session's permission mode from this prompt on, if chosen.
    pub mode: Option<PermissionMode>,
}

/// How `ask` ended; the CLI turns it into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskExit {
    Done,
    Failed,
    NoServer,
    Interrupted,
}

/// Ask once and print the answer.
pub async fn run(target: Target, options: AskOptions) -> AskExit {
    let interrupt = Arc::new(Interrupt::default());
    // A kept session may be finishing another client's turn as it is
    // attached: only what follows the prompt is this answer.
    let showing = match options.conversation {
        Conversation::New => Showing::Now,
        Conversation::Resume(_) | Conversation::Continue => Showing::NotYet,
    };
    let view = Arc::new(Mutex::new(View::new(
        options.output,
        interrupt.clone(),
        showing,
    )));
    // Found here, not as the server's refusal of a session worded for ACP.
    let workspace = match Workspace::new(&options.workspace).and_then(|workspace| {
        match std::fs::metadata(workspace.root()) {
            Ok(metadata) if !metadata.is_dir() => Err(crate::workspace::WorkspaceError::Io {
                path: options.workspace.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
            }),
            _ => Ok(workspace),
        }
    }) {
        Ok(workspace) => workspace,
        Err(error) => {
            lock(&view).fail(&format!("the workspace cannot be used: {error}"));
            return AskExit::Failed;
        }
    };
    // ACP carries paths as JSON strings: the request could not even be
    // written, and the server would be blamed for it.
    if workspace.root().to_str().is_none() {
        lock(&view).fail(&format!(
            "the workspace's path {} is not UTF-8, which ACP cannot carry; \
             work in a directory whose path is UTF-8",
            workspace.root().display()
        ));
        return AskExit::Failed;
    }
    let permissions = Permissions::for_terminal(options.yes);
    let service = match options.conversation {
        Conversation::New => LocalService::new(workspace.clone(), permissions),
        Conversation::Resume(_) | Conversation::Continue => LocalService::unopened(permissions),
    };
    let watching = interrupt.clone().watch(service.clone(), view.clone());

    // Not `Target::converse`: the prompt is measured against the server's
    // limit, which the handshake tells, before any session is opened for it.
    let outcome = match target.connect().await {
        Ok(connected) => {
            let limit = connected.server_limit;
            let reporter = view.clone();
            let (channel, closed) =
                super::transport::sdk_channel_reporting(connected.socket, limit, move |message| {
                    let mut view = lock(&reporter);
                    view.stop_spinner();
                    view.note(&format!("punie: {}", terminal_safe(message)));
                });
            let outcome = converse(
                channel, &service, &view, &interrupt, &options, &workspace, limit,
            )
            .await;
            interrupt
                .over
                .store(true, std::sync::atomic::Ordering::SeqCst);
            // The turn, or the connection, is over: nobody waits for an
            // answer to a question still asked.
            service.withdraw_question(None);
            service.stop_all().await;
            // The close frame's moment to go out, so the server sees a clean
            // goodbye rather than a dropped socket.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed).await;
            Ok(outcome)
        }
        Err(error) => Err(error),
    };
    watching.abort();
    if let Some(signal) = interrupt.terminated_by() {
        // A terminal that hung up takes nothing more.
        if let (SIGTERM, Ok(Ok(answer))) = (signal, &outcome) {
            lock(&view).finish(answer, None);
        }
        std::process::exit(128 + signal);
    }

    let mut view = lock(&view);
    let exit = match &outcome {
        Ok(Ok(answer)) => {
            if let Some(error) = view.stdout_failed.take() {
                stdout_lost(&error, "; the turn was cancelled");
                return AskExit::Failed;
            }
            if interrupt.was_pressed() {
                view.finish(answer, None);
                AskExit::Interrupted
            } else if answer.stop_reason == StopReason::Cancelled {
                let why = match view.end_note.take() {
                    Some(note) => format!("the turn was cancelled elsewhere: {note}"),
                    None => CANCELLED_ELSEWHERE.to_owned(),
                };
                view.finish(answer, Some(&why));
                AskExit::Failed
            } else {
                view.finish(answer, None);
                AskExit::Done
            }
        }
        Ok(Err(error)) => {
            if view.session_id.is_none() {
                view.session_id = error
                    .data
                    .as_ref()
                    .and_then(|data| data.get("sessionId"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            view.fail(&super::describe(error));
            AskExit::Failed
        }
        Err(error) => {
            view.fail(&error.to_string());
            if error.answered {
                AskExit::Failed
            } else {
                AskExit::NoServer
            }
        }
    };
    // In JSON output the object written last is all there is: losing it
    // loses the answer.
    match view.stdout_failed.take() {
        Some(error) => {
            stdout_lost(&error, "");
            match exit {
                AskExit::Done => AskExit::Failed,
                other => other,
            }
        }
        None => exit,
    }
}

/// `ask` failed before it could start (its question or its files could not
/// be read): in JSON output, the object every failure prints, so that a
/// script reads one whatever happened. The caller says why on stderr.
pub fn fail_before_starting(output: OutputFormat, message: &str) {
    if output == OutputFormat::Text {
        return;
    }
    let mut view = View::new(output, Arc::default(), Showing::NoMore);
    let result = view.result(Value::Null, Some(message));
    view.write_out(&format!("{result}\n"));
}

/// Say that stdout could not take the answer, unless its reader stopped
/// reading (`| head`), which knows why.
fn stdout_lost(error: &std::io::Error, consequence: &str) {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        crate::say!("punie: cannot write the answer to stdout ({error}){consequence}");
    }
}

/// How long the goodbye may take to reach the server, as for every client.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

/// Why a turn nobody here cancelled ended `cancelled`.
const CANCELLED_ELSEWHERE: &str = "the turn was cancelled elsewhere: by another client of the session, \
     by the session being deleted, or by the server stopping (see `punie status`)";

/// What Ctrl-C does: before the turn starts, quit at once (nothing to keep);
/// during it, cancel the turn and print what arrived; a second Ctrl-C quits.
/// One handler from the start, so that no Ctrl-C finds the process without
/// one and dies of the signal instead of exiting 130.
///
/// SIGTERM and SIGHUP end the process as Ctrl-C would, but it does not wait
/// long for the turn: the commands it started are killed at once (they run
/// in process groups of their own, which no signal to this one reaches), the
/// server is told to cancel, and the process exits with 128 + the signal.
#[derive(Default)]
struct Interrupt {
    /// The signal that arrived first, 0 before any did.
    signal: std::sync::atomic::AtomicI32,
    turn: Mutex<Option<(ConnectionTo<Agent>, SessionId)>>,
    /// The conversation has ended (the turn answered, or the connection
    /// gone): what is left is `run`'s to finish.
    over: std::sync::atomic::AtomicBool,
}

/// How long, after Ctrl-C, SIGTERM or SIGHUP, the server has to answer the
/// cancel.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

impl Interrupt {
    fn watch(
        self: Arc<Self>,
        service: Arc<LocalService>,
        view: Arc<Mutex<View>>,
    ) -> tokio::task::JoinHandle<()> {
        use tokio::signal::unix::{SignalKind, signal};
        // Created here, not in the task: the handlers are in place before the
        // first await, so a signal while connecting is not missed.
        let handlers = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        );
        tokio::spawn(async move {
            let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = handlers else {
                return;
            };
            let mut next = async || {
                tokio::select! {
                    Some(()) = interrupt.recv() => Some(SIGINT),
                    Some(()) = terminate.recv() => Some(SIGTERM),
                    Some(()) = hangup.recv() => Some(SIGHUP),
                    else => None,
                }
            };
            let Some(first) = next().await else {
                return;
            };
            self.signal
                .store(first, std::sync::atomic::Ordering::SeqCst);
            let turn = lock(&self.turn).take();
            if first == SIGINT {
                // The `^C` the terminal echoed goes with the spinner's line;
                // otherwise it ends a line of its own.
                let fresh_line = if lock(&view).stop_spinner() { "" } else { "\n" };
                match turn {
                    Some((connection, session)) => {
                        crate::say!(
                            "{fresh_line}punie: cancelling (press Ctrl-C again to quit at once)"
                        );
                        let _ = connection.send_notification(CancelNotification::new(session));
                    }
                    None => quit_interrupted(fresh_line),
                }
                // A server that does not answer the cancel (stopped, hung)
                // must not keep the person waiting: the turn's end, answering
                // it, ends the process sooner (see [`run`]).
                match tokio::time::timeout(TERMINATE_GRACE, next()).await {
                    Ok(Some(_)) => quit_interrupted("\n"),
                    Ok(None) => return,
                    // The server answered; `run` is only tidying up.
                    Err(_) if self.over.load(std::sync::atomic::Ordering::SeqCst) => return,
                    Err(_) => {}
                }
                service.stop_all().await;
                let mut view = lock(&view);
                view.finish(
                    &Answer {
                        stop_reason: StopReason::Cancelled,
                    },
                    None,
                );
                view.note(&format!(
                    "punie: the server did not answer the cancel within {} s; quitting",
                    TERMINATE_GRACE.as_secs()
                ));
                std::process::exit(i32::from(crate::cli::exit::INTERRUPTED));
            }
            if let Some((connection, session)) = &turn {
                let _ = connection.send_notification(CancelNotification::new(session.clone()));
            }
            service.stop_all().await;
            if turn.is_some() {
                // The turn's end, answering the cancel, ends the process
                // sooner (see [`run`]).
                let _ = tokio::time::timeout(TERMINATE_GRACE, next()).await;
            }
            std::process::exit(128 + first);
        })
    }

    fn turn_started(&self, connection: ConnectionTo<Agent>, session: SessionId) {
        *lock(&self.turn) = Some((connection, session));
    }

    /// Cancel the turn, if it has started: nobody reads its answer any more.
    fn cancel_unread_turn(&self) {
        if let Some((connection, session)) = lock(&self.turn).take() {
            let _ = connection.send_notification(CancelNotification::new(session));
        }
    }

    fn was_pressed(&self) -> bool {
        self.signal.load(std::sync::atomic::Ordering::SeqCst) == SIGINT
    }

    /// SIGTERM or SIGHUP, if one of them arrived first.
    fn terminated_by(&self) -> Option<i32> {
        let signal = self.signal.load(std::sync::atomic::Ordering::SeqCst);
        [SIGTERM, SIGHUP].contains(&signal).then_some(signal)
    }
}

const SIGINT: i32 = rustix::process::Signal::INT.as_raw();
const SIGTERM: i32 = rustix::process::Signal::TERM.as_raw();
const SIGHUP: i32 = rustix::process::Signal::HUP.as_raw();

fn quit_interrupted(fresh_line: &str) -> ! {
    crate::say!("{fresh_line}punie: interrupted");
    std::process::exit(i32::from(crate::cli::exit::INTERRUPTED));
}

/// How the prompt ended, when it did not fail.
#[derive(Debug)]
struct Answer {
    stop_reason: StopReason,
}

async fn converse(
    channel: agent_client_protocol::Channel,
    service: &Arc<LocalService>,
    view: &Arc<Mutex<View>>,
    interrupt: &Interrupt,
    options: &AskOptions,
    workspace: &Workspace,
    server_limit: Option<usize>,
) -> Result<Answer, Error> {
    let (watcher, asker) = (view.clone(), view.clone());
    let (withdrawer, read, write, create, output, wait, kill, release, permit) = (
        service.clone(),
        service.clone(),
        service.clone(),
        service.clone(),
        service.clone(),
        service.clone(),
        service.clone(),
        service.clone(),
        service.clone(),
    );
    Client
        .v1()
        .name("punie-ask")
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                // A tool call that ended needs no permission any more: the
                // server stopped waiting (its turn was cancelled).
                if let SessionUpdate::ToolCallUpdate(update) = &notification.update
                    && matches!(
                        update.fields.status,
                        Some(ToolCallStatus::Completed | ToolCallStatus::Failed)
                    )
                {
                    withdrawer.withdraw_question(Some(&update.tool_call_id.to_string()));
                }
                lock(&watcher).show(notification);
                Ok(())
            },
            on_receive_notification!(),
        )
        .on_receive_request(
            async move |request: ReadTextFileRequest, responder, _cx| {
                responder.respond_with_result(read.read(request).await)
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: WriteTextFileRequest, responder, _cx| {
                responder.respond_with_result(write.write(request).await)
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: CreateTerminalRequest, responder, _cx| {
                responder.respond_with_result(create.create_terminal(request))
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: TerminalOutputRequest, responder, _cx| {
                responder.respond_with_result(output.terminal_output(request))
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: WaitForTerminalExitRequest, responder, cx| {
                let wait = wait.clone();
                // Waiting may take long: out of the dispatch loop.
                cx.spawn(
                    async move { responder.respond_with_result(wait.wait_for_exit(request).await) },
                )
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: KillTerminalRequest, responder, _cx| {
                responder.respond_with_result(kill.kill_terminal(request))
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: ReleaseTerminalRequest, responder, _cx| {
                responder.respond_with_result(release.release_terminal(request))
            },
            on_receive_request!(),
        )
        .on_receive_request(
            async move |request: RequestPermissionRequest, responder, cx| {
                let permit = permit.clone();
                // Its redraws would wipe the question off the terminal, and
                // the question starts on a line of its own.
                {
                    let mut view = lock(&asker);
                    view.stop_spinner();
                    view.start_line();
                }
                // A person may take their time to answer.
                cx.spawn(async move { responder.respond(permit.permission(request).await) })
            },
            on_receive_request!(),
        )
        .connect_with(channel, async |cx| {
            let capabilities = ClientCapabilities::new()
                .fs(FileSystemCapabilities::new()
                    .read_text_file(true)
                    .write_text_file(true))
                .terminal(true);
            let server = super::initialize(&cx, "punie-ask", capabilities).await?;
            refuse_too_big(options, server_limit)?;
            let (session_id, elsewhere) =
                open_session(&cx, &server, options, workspace.root()).await?;
            service.open_in(elsewhere.unwrap_or_else(|| workspace.clone()));
            {
                let mut view = lock(view);
                view.session_id = Some(session_id.to_string());
                view.showing = Showing::Now;
            }
            interrupt.turn_started(cx.clone(), session_id.clone());
            let response = cx
                .send_request(PromptRequest::new(
                    session_id.clone(),
                    prompt_blocks(options),
                ))
                .block_task()
                .await;
            // The server sends a turn's updates before its answer, and they
            // are handled in the order they came, the answer too: every
            // update of this turn has been seen, and what follows is not it.
            lock(view).showing = Showing::NoMore;
            let response = response.map_err(|error| {
                // The race `open_kept_session` looks for, lost after the check.
                let refusal = crate::session::SessionBusy(session_id.clone()).to_string();
                if error.code == ErrorCode::INVALID_REQUEST && error.message.ends_with(&refusal) {
                    busy(&session_id)
                } else {
                    error
                }
            })?;
            Ok(Answer {
                stop_reason: response.stop_reason,
            })
        })
        .await
}

fn prompt_blocks(options: &AskOptions) -> Vec<ContentBlock> {
    std::iter::once(options.prompt.as_str().into())
        .chain(options.attachments.iter().cloned())
        .collect()
}

/// Refuse a prompt larger than the server takes before a session is opened
/// for it: a new session left empty would be the newest, and `--continue`
/// would pick it over the real conversation.
fn refuse_too_big(options: &AskOptions, server_limit: Option<usize>) -> Result<(), Error> {
    // A new session's id is a UUID; a request id is a small number, written
    // here at its longest.
    let session = match &options.conversation {
        Conversation::Resume(id) => id.clone(),
        Conversation::New | Conversation::Continue => uuid::Uuid::nil().to_string(),
    };
    let request = PromptRequest::new(SessionId::new(session), prompt_blocks(options));
    let message = json!({
        "jsonrpc": "2.0",
        "id": u64::MAX,
        "method": "session/prompt",
        "params": request,
    });
    match super::transport::too_big(&message.to_string(), server_limit) {
        Some(refusal) => Err(Error::new(ErrorCode::INVALID_REQUEST, refusal.message)),
        None => Ok(()),
    }
}

/// Set the session's option `option` to `value`, before the prompt.
async fn choose(
    cx: &ConnectionTo<Agent>,
    session_id: &SessionId,
    option: &'static str,
    value: &str,
) -> Result<(), Error> {
    cx.send_request(SetSessionConfigOptionRequest::new(
        session_id.clone(),
        option,
        SessionConfigOptionValue::value_id(value.to_owned()),
    ))
    .block_task()
    .await?;
    Ok(())
}

/// The session the prompt goes to, with the model and mode the person
/// chose: a new one, or a kept one attached to this connection without
/// replaying its history, so stdout gets only the new answer. A kept session
/// works where it was created: its workspace, when that is not `root`, comes
/// back too.
async fn open_session(
    cx: &ConnectionTo<Agent>,
    server: &InitializeResponse,
    options: &AskOptions,
    root: &Path,
) -> Result<(SessionId, Option<Workspace>), Error> {
    let (session_id, elsewhere) = match &options.conversation {
        // A model the server cannot use refuses the session, rather than
        // leave an empty one behind.
        Conversation::New => {
            let mut request = NewSessionRequest::new(root);
            if let Some(model) = &options.model {
                let mut meta = Meta::new();
                meta.insert(MODEL_META.to_owned(), model.as_str().into());
                request = request.meta(meta);
            }
            let created = cx.send_request(request).block_task().await?;
            (created.session_id, None)
        }
        Conversation::Resume(id) => open_kept_session(cx, server, Kept::Named(id), root).await?,
        Conversation::Continue => {
            // Looked up as written too: a link since pointed elsewhere still
            // finds the sessions made through it, which its target would not.
            let written =
                std::path::absolute(&options.workspace).unwrap_or_else(|_| root.to_owned());
            open_kept_session(cx, server, Kept::Newest(&written), root).await?
        }
    };
    let kept = !matches!(options.conversation, Conversation::New);
    if let (true, Some(model)) = (kept, &options.model) {
        choose(cx, &session_id, MODEL_OPTION, model).await?;
    }
    if let Some(mode) = options.mode {
        choose(cx, &session_id, MODE_OPTION, mode.id()).await?;
    }
    Ok((session_id, elsewhere))
}

/// Which kept session `punie ask` goes on with.
#[derive(Clone, Copy)]
enum Kept<'a> {
    /// The one `--session` names.
    Named(&'a str),
    /// The newest in this workspace (`--continue`).
    Newest(&'a Path),
}

impl Kept<'_> {
    /// The flag that chose the session, for a message saying to drop it.
    fn flag(&self) -> &'static str {
        match self {
            Kept::Named(_) => "--session",
            Kept::Newest(_) => "--continue",
        }
    }
}

/// A session kept from before, attached without its history, in `root`.
async fn open_kept_session(
    cx: &ConnectionTo<Agent>,
    server: &InitializeResponse,
    kept: Kept<'_>,
    root: &Path,
) -> Result<(SessionId, Option<Workspace>), Error> {
    let session_id = match kept {
        Kept::Named(id) => SessionId::new(id),
        Kept::Newest(workspace) => sessions::newest(cx, server, workspace).await?.ok_or_else(|| {
            Error::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                format!(
                    "there is no earlier session in {} to continue; drop --continue to start a new one",
                    workspace.display()
                ),
            )
        })?,
    };
    sessions::require(server, "session/resume", |offered| offered.resume.is_some())?;
    let resumed = cx
        .send_request(ResumeSessionRequest::new(session_id.clone(), root))
        .block_task()
        .await
        .map_err(|error| match error.code {
            // The server knows more than that it is not there: that it was
            // deleted, said here in the words of this command.
            ErrorCode::RESOURCE_NOT_FOUND if error.message.contains("was deleted") => Error::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                format!(
                    "session {session_id} was deleted; drop {} to start a new one",
                    kept.flag()
                ),
            ),
            ErrorCode::RESOURCE_NOT_FOUND => Error::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                format!("there is no session {session_id}; `punie sessions` lists them"),
            ),
            _ => error,
        })?;
    let said = |key: &str| resumed.meta.as_ref().and_then(|meta| meta.get(key));
    let running = said(RUNNING_META).and_then(serde_json::Value::as_bool);
    if running == Some(true) {
        return Err(busy(&session_id));
    }
    let its_own = said(CWD_META)
        .and_then(serde_json::Value::as_str)
        .map(Path::new)
        .filter(|cwd| *cwd != root);
    let elsewhere = match its_own {
        Some(cwd) => Some(Workspace::new(cwd).map_err(|error| {
            Error::new(
                ErrorCode::INTERNAL_ERROR,
                format!(
                    "session {session_id} works in {}, which cannot be used: {error}",
                    cwd.display()
                ),
            )
            // For the JSON result: the session was found, if not prompted.
            .data(json!({ "sessionId": session_id }))
        })?),
        None => None,
    };
    Ok((session_id, elsewhere))
}

/// Why a prompt is not sent, or was refused: the session is running another
/// client's turn.
fn busy(session_id: &SessionId) -> Error {
    Error::new(
        ErrorCode::INVALID_REQUEST,
        format!(
            "session {session_id} is answering a prompt from another client; \
             ask again once it has finished, or cancel it there"
        ),
    )
    // For the JSON result: the session was found, if not prompted.
    .data(json!({ "sessionId": session_id }))
}

/// Whether the session's updates are shown as this answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Showing {
    /// The prompt is not sent yet: a kept session may still be finishing
    /// another client's turn.
    NotYet,
    /// The prompt is sent (or the session is new), and not yet answered.
    Now,
    /// The prompt was answered or refused: what follows is not this answer.
    NoMore,
}

/// What the person sees: the answer on stdout, the rest on stderr.
struct View {
    format: OutputFormat,
    colour: bool,
    spinner: Option<indicatif::ProgressBar>,
    /// The session the prompt went to, once it is open.
    session_id: Option<String>,
    /// What the session says is shown: in a new session from the start, in a
    /// kept one once the prompt is sent, until it is answered.
    showing: Showing,
    /// Another client of the session is having a turn: its updates are not
    /// this answer. The server starts a turn by showing its prompt (a
    /// `user_message_chunk`) to every client but the one that sent it, and
    /// ends it with a `punie/turnEnded` marker to all; what comes outside
    /// such a pair while the prompt is out is this prompt's turn.
    others_turn: bool,
    /// A thought is being shown on stderr: the next chunk of it continues it
    /// there, and anything else shown first ends its line.
    thinking: bool,
    /// The line notes go on is unfinished: a thought's, or (when stdout and
    /// stderr share one terminal) the answer's.
    mid_line: bool,
    /// Writing to stdout failed: nothing more is written, and the turn is
    /// cancelled.
    stdout_failed: Option<std::io::Error>,
    /// Cancels the turn when nobody reads its answer.
    interrupt: Arc<Interrupt>,
    /// Stdout and stderr both go to a terminal, where the answer and the
    /// notes share lines.
    one_screen: bool,
    /// Stdout goes to a terminal, which must not act on the answer's text.
    stdout_terminal: bool,
    text: String,
    /// A tool call or a plan came after some of the answer: the answer goes
    /// on in a paragraph of its own, not glued to the sentence before it.
    text_paused: bool,
    /// Why the server says this turn ended, when it says.
    end_note: Option<String>,
    tool_calls: BTreeMap<String, ToolCallRecord>,
    /// Order in which tool calls first appeared.
    tool_order: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct ToolCallRecord {
    title: String,
    kind: String,
    status: Option<ToolCallStatus>,
    reported: bool,
}

impl View {
    fn new(format: OutputFormat, interrupt: Arc<Interrupt>, showing: Showing) -> Self {
        // The spinner redraws itself with escapes too: NO_COLOR stops it as
        // well.
        let colour = std::io::stderr().is_terminal() && super::colour_wanted();
        let spinner = (format == OutputFormat::Text && colour).then(|| {
            let spinner = indicatif::ProgressBar::new_spinner().with_message("waiting for Punie…");
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        Self {
            format,
            colour,
            spinner,
            session_id: None,
            showing,
            others_turn: false,
            thinking: false,
            mid_line: false,
            stdout_failed: None,
            interrupt,
            one_screen: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            stdout_terminal: std::io::stdout().is_terminal(),
            text: String::new(),
            text_paused: false,
            end_note: None,
            tool_calls: BTreeMap::new(),
            tool_order: Vec::new(),
        }
    }

    /// Whether there was one to stop.
    fn stop_spinner(&mut self) -> bool {
        let spinner = self.spinner.take();
        if let Some(spinner) = &spinner {
            spinner.finish_and_clear();
        }
        spinner.is_some()
    }

    fn show(&mut self, notification: SessionNotification) {
        if !self.is_this_answer(&notification.update) {
            return;
        }
        if self.format == OutputFormat::StreamJson {
            let line = serde_json::to_string(&notification).unwrap_or_default();
            self.write_out(&format!("{line}\n"));
        }
        match notification.update {
            SessionUpdate::AgentMessageChunk(chunk) => {
                if let ContentBlock::Text(text) = chunk.content {
                    self.stop_spinner();
                    if !text.text.is_empty() && std::mem::take(&mut self.text_paused) {
                        self.start_paragraph();
                    }
                    if self.format == OutputFormat::Text {
                        self.end_thought();
                        // A pipe or a file gets the answer exactly.
                        if self.stdout_terminal {
                            self.write_out(&terminal_safe(&text.text));
                        } else {
                            self.write_out(&text.text);
                        }
                        if self.one_screen && !text.text.is_empty() {
                            self.mid_line = !text.text.ends_with('\n');
                        }
                    }
                    self.text.push_str(&text.text);
                }
            }
            SessionUpdate::AgentThoughtChunk(chunk) => {
                if let (ContentBlock::Text(text), OutputFormat::Text) = (chunk.content, self.format)
                {
                    self.stop_spinner();
                    self.think(&terminal_safe(&text.text));
                }
            }
            SessionUpdate::ToolCall(call) => {
                self.text_paused = !self.text.is_empty();
                let id = call.tool_call_id.to_string();
                let record = self.tool_call(&id);
                record.title = call.title;
                record.kind = serde_json::to_value(call.kind)
                    .ok()
                    .and_then(|kind| kind.as_str().map(str::to_owned))
                    .unwrap_or_default();
                record.status = Some(call.status);
                self.report_tool_call(&id);
            }
            SessionUpdate::ToolCallUpdate(update) => {
                let id = update.tool_call_id.to_string();
                let record = self.tool_call(&id);
                if let Some(title) = update.fields.title {
                    record.title = title;
                }
                if let Some(status) = update.fields.status {
                    record.status = Some(status);
                }
                self.report_tool_call(&id);
            }
            SessionUpdate::Plan(plan) => {
                // The model stopped to plan: what it says next is a new
                // paragraph, as after a tool call.
                self.text_paused = !self.text.is_empty();
                self.show_plan(&plan);
            }
            SessionUpdate::SessionInfoUpdate(info) => {
                // Why this turn ended, when it was not the model's doing.
                let note = info
                    .meta
                    .as_ref()
                    .and_then(|meta| meta.get(TURN_ENDED_META))
                    .and_then(|ended| ended.get("note"))
                    .and_then(Value::as_str);
                if let Some(note) = note {
                    self.end_note = Some(note.to_owned());
                }
            }
            _ => {}
        }
    }

    /// Whether `update` is part of this answer, following the other clients'
    /// turns as they start and end.
    fn is_this_answer(&mut self, update: &SessionUpdate) -> bool {
        match update {
            SessionUpdate::UserMessageChunk(_) => {
                self.others_turn = true;
                return false;
            }
            SessionUpdate::SessionInfoUpdate(info)
                if self.others_turn
                    && info
                        .meta
                        .as_ref()
                        .is_some_and(|meta| meta.contains_key(TURN_ENDED_META)) =>
            {
                self.others_turn = false;
                return false;
            }
            _ => {}
        }
        self.showing == Showing::Now && !self.others_turn
    }

    /// Have the answer go on after a blank line. A terminal that showed a
    /// tool call's line since has its line ended already.
    fn start_paragraph(&mut self) {
        let ending = self.text.chars().rev().take_while(|c| *c == '\n').take(2);
        let needed = 2 - ending.count();
        let separator = &"\n\n"[..needed];
        self.text.push_str(separator);
        if self.format == OutputFormat::Text {
            let shown = if self.one_screen && !self.mid_line && !separator.is_empty() {
                "\n"
            } else {
                separator
            };
            self.write_out(shown);
        }
    }

    fn tool_call(&mut self, id: &str) -> &mut ToolCallRecord {
        if !self.tool_calls.contains_key(id) {
            self.tool_order.push(id.to_owned());
        }
        self.tool_calls.entry(id.to_owned()).or_default()
    }

    /// One line per tool call, once it has finished.
    fn report_tool_call(&mut self, id: &str) {
        let Some(record) = self.tool_calls.get_mut(id) else {
            return;
        };
        let mark = match record.status {
            Some(ToolCallStatus::Completed) => "✓",
            Some(ToolCallStatus::Failed) => "✗",
            _ => return,
        };
        if record.reported || self.format != OutputFormat::Text {
            return;
        }
        record.reported = true;
        let line = format!("{mark} {}", terminal_safe(&record.title));
        self.stop_spinner();
        self.note(&line);
    }

    fn show_plan(&mut self, plan: &Plan) {
        if self.format != OutputFormat::Text {
            return;
        }
        self.stop_spinner();
        let mut lines = vec!["Plan:".to_owned()];
        for entry in &plan.entries {
            let mark = match entry.status {
                PlanEntryStatus::Completed => "[x]",
                PlanEntryStatus::InProgress => "[>]",
                _ => "[ ]",
            };
            lines.push(format!("  {mark} {}", terminal_safe(&entry.content)));
        }
        self.note(&lines.join("\n"));
    }

    /// A line on stderr, on a line of its own even mid-answer when both
    /// show on one terminal, or mid-thought.
    fn note(&mut self, line: &str) {
        self.start_line();
        crate::say!("{line}");
    }

    /// Have what stderr shows next start a line: after a thought, or
    /// mid-answer when both show on one terminal.
    fn start_line(&mut self) {
        self.thinking = false;
        if std::mem::take(&mut self.mid_line) {
            crate::say!();
        }
    }

    /// A chunk of a thought, dimmed on stderr: consecutive chunks read as one
    /// thought, as the answer's do.
    fn think(&mut self, chunk: &str) {
        if chunk.is_empty() {
            return;
        }
        let fresh_line = if !self.thinking && self.mid_line {
            "\n"
        } else {
            ""
        };
        let styled = self.styled(chunk, anstyle::Style::new().dimmed());
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{fresh_line}{styled}").and_then(|()| stderr.flush());
        self.thinking = true;
        self.mid_line = !chunk.ends_with('\n');
    }

    /// End the thought being shown, if its line is unfinished: something
    /// else is shown next.
    fn end_thought(&mut self) {
        if self.thinking {
            self.start_line();
        }
    }

    fn styled(&self, text: &str, style: anstyle::Style) -> String {
        super::painted(text, style, self.colour)
    }

    /// The prompt was answered; `error` says why that is a failure, if it is.
    fn finish(&mut self, answer: &Answer, error: Option<&str>) {
        self.stop_spinner();
        self.end_thought();
        let stop_reason = serde_json::to_value(answer.stop_reason).unwrap_or(Value::Null);
        match self.format {
            OutputFormat::Text => {
                self.end_line();
                if answer.stop_reason != StopReason::EndTurn && error.is_none() {
                    crate::say!(
                        "punie: the turn ended: {}",
                        stop_reason.as_str().unwrap_or("?")
                    );
                }
            }
            OutputFormat::Json | OutputFormat::StreamJson => {
                let result = self.result(stop_reason, error);
                self.write_out(&format!("{result}\n"));
            }
        }
        if let Some(error) = error {
            crate::say!("punie: {}", terminal_safe(error));
        }
    }

    /// The prompt failed with `message`: said on stderr, and in JSON output
    /// the usual result with the error, so that a script learns what was done
    /// before it (the session, the text so far, the tool calls).
    fn fail(&mut self, message: &str) {
        self.stop_spinner();
        self.end_thought();
        match self.format {
            OutputFormat::Text => self.end_line(),
            OutputFormat::Json | OutputFormat::StreamJson => {
                let result = self.result(Value::Null, Some(message));
                self.write_out(&format!("{result}\n"));
            }
        }
        crate::say!("punie: {}", terminal_safe(message));
    }

    /// Ends a partial answer's last line, so the shell's prompt starts on its
    /// own: on a terminal it shares with the notes, unless one came after it.
    fn end_line(&mut self) {
        let unfinished = if self.one_screen {
            std::mem::take(&mut self.mid_line)
        } else {
            !self.text.is_empty() && !self.text.ends_with('\n')
        };
        if unfinished {
            self.write_out("\n");
        }
    }

    /// Write `text` to stdout at once. The first failure (the reader went
    /// away, the disk is full) ends the writing and cancels the turn.
    fn write_out(&mut self, text: &str) {
        if self.stdout_failed.is_some() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            tracing::debug!("cannot write to stdout: {error}");
            self.stdout_failed = Some(error);
            self.interrupt.cancel_unread_turn();
        }
    }

    /// What `--output json` prints, and `stream-json` last: the answer and
    /// what led to it; `error` only when the prompt failed.
    fn result(&self, stop_reason: Value, error: Option<&str>) -> Value {
        let tool_calls: Vec<Value> = self
            .tool_order
            .iter()
            .filter_map(|id| self.tool_calls.get(id).map(|record| (id, record)))
            .map(|(id, record)| {
                json!({
                    "toolCallId": id,
                    "title": record.title,
                    "kind": record.kind,
                    "status": record.status.and_then(|status| serde_json::to_value(status).ok()),
                })
            })
            .collect();
        let mut result = json!({
            "sessionId": self.session_id,
            "stopReason": stop_reason,
            "text": self.text,
            "toolCalls": tool_calls,
        });
        if let Some(error) = error {
            result["error"] = error.into();
        }
        result
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
