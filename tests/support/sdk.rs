//! The official Rust SDK's client role, as the tests use it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, ContentBlock, CreateTerminalRequest, FileSystemCapabilities,
    InitializeRequest, KillTerminalRequest, NewSessionRequest, PromptRequest, ReadTextFileRequest,
    ReleaseTerminalRequest, RequestPermissionOutcome, RequestPermissionRequest,
    RequestPermissionResponse, SelectedPermissionOutcome, SessionId, SessionNotification,
    SessionUpdate, StopReason, TerminalOutputRequest, WaitForTerminalExitRequest,
    WriteTextFileRequest,
};
use agent_client_protocol::{
    Agent, Client, ConnectTo, Error, on_receive_notification, on_receive_request,
};
use tokio::sync::Notify;

use super::within;

/// What one client has received: every `session/update`, and a bell rung on each.
#[derive(Clone, Default)]
pub struct Received {
    pub updates: Arc<Mutex<Vec<SessionNotification>>>,
    pub arrived: Arc<Notify>,
}

impl Received {
    /// The agent text of `session`, and in how many chunks it came.
    pub fn agent_text(&self, session: &SessionId) -> (String, usize) {
        let updates = self.updates.lock().unwrap();
        let chunks: Vec<String> = updates
            .iter()
            .filter(|n| &n.session_id == session)
            .filter_map(|n| match &n.update {
                SessionUpdate::AgentMessageChunk(chunk) => match &chunk.content {
                    ContentBlock::Text(text) => Some(text.text.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        (chunks.concat(), chunks.len())
    }

    pub fn sessions_seen(&self) -> Vec<String> {
        let mut seen: Vec<String> = self
            .updates
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.session_id.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }
}

/// Run `body` as an SDK client on `transport`, recording what it receives.
pub async fn client<R>(
    transport: impl ConnectTo<Client> + 'static,
    received: Received,
    body: impl AsyncFnOnce(ConnectionTo<Agent>) -> Result<R, Error>,
) -> R {
    let recorder = received.clone();
    let run = Client
        .v1()
        .name("protocol-test")
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                recorder.updates.lock().unwrap().push(notification);
                recorder.arrived.notify_one();
                Ok(())
            },
            on_receive_notification!(),
        )
        .connect_with(transport, body);
    within("the client to finish", run)
        .await
        .expect("the client ran without errors")
}

pub async fn initialize(cx: &ConnectionTo<Agent>) -> Result<(), Error> {
    cx.send_request(InitializeRequest::new(ProtocolVersion::V1))
        .block_task()
        .await?;
    Ok(())
}

pub async fn new_session(cx: &ConnectionTo<Agent>, cwd: &Path) -> Result<SessionId, Error> {
    Ok(cx
        .send_request(NewSessionRequest::new(cwd))
        .block_task()
        .await?
        .session_id)
}

pub async fn prompt(
    cx: &ConnectionTo<Agent>,
    session: &SessionId,
    text: &str,
) -> Result<StopReason, Error> {
    Ok(cx
        .send_request(PromptRequest::new(session.clone(), vec![text.into()]))
        .block_task()
        .await?
        .stop_reason)
}

/// Wait until `received` holds at least one update for `session`.
pub async fn first_update(received: &Received, session: &SessionId) {
    within("the first update", async {
        loop {
            let arrived = received.arrived.notified();
            if received
                .updates
                .lock()
                .unwrap()
                .iter()
                .any(|n| &n.session_id == session)
            {
                return;
            }
            arrived.await;
        }
    })
    .await;
}

/// An SDK client that serves the agent's requests the way an IDE would: files
/// and terminals in `workspace` (when it offers them), permission answers
/// from a queue, and a record of every request it was sent.
#[derive(Clone)]
pub struct Ide {
    pub offers_read: bool,
    pub offers_write: bool,
    pub offers_terminal: bool,
    /// Option ids to answer permission requests with, in order; `allow_once`
    /// when the queue is empty. `"cancel"` answers with the cancelled outcome.
    pub answers: Arc<Mutex<std::collections::VecDeque<&'static str>>>,
    /// Methods of the agent→client requests received, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// The permission requests received.
    pub permissions: Arc<Mutex<Vec<RequestPermissionRequest>>>,
    /// The path of every `fs/*` request received, in order.
    pub paths: Arc<Mutex<Vec<std::path::PathBuf>>>,
    /// Each terminal as it was created, killed and released: method and id.
    pub terminals: Arc<Mutex<Vec<(String, String)>>>,
    /// Rung on every request received.
    requested: Arc<Notify>,
    /// Methods whose answer waits until the test rings their bell.
    held: Arc<Mutex<std::collections::HashMap<&'static str, Arc<Notify>>>>,
    service: Arc<punie::client::service::LocalService>,
}

impl Ide {
    pub fn new(workspace: &Path, offers_fs: bool, offers_terminal: bool) -> Self {
        let workspace = punie::workspace::Workspace::new(workspace).expect("the workspace exists");
        Self {
            offers_read: offers_fs,
            offers_write: offers_fs,
            offers_terminal,
            answers: Arc::default(),
            requests: Arc::default(),
            permissions: Arc::default(),
            paths: Arc::default(),
            terminals: Arc::default(),
            requested: Arc::default(),
            held: Arc::default(),
            service: punie::client::service::LocalService::new(
                workspace,
                punie::client::service::Permissions::RejectAll,
            ),
        }
    }

    /// This IDE offering reading files, writing them, or both.
    pub fn files(mut self, read: bool, write: bool) -> Self {
        self.offers_read = read;
        self.offers_write = write;
        self
    }

    pub fn answer_with(self, answers: &[&'static str]) -> Self {
        self.answers.lock().unwrap().extend(answers.iter().copied());
        self
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn record(&self, method: &str) {
        self.requests.lock().unwrap().push(method.to_owned());
        self.requested.notify_waiters();
    }

    fn record_terminal(&self, method: &str, terminal: &str) {
        self.terminals
            .lock()
            .unwrap()
            .push((method.to_owned(), terminal.to_owned()));
        self.requested.notify_waiters();
    }

    /// Answer `method` (`terminal/create` or `terminal/output`) only once the
    /// returned bell has been rung.
    pub fn hold(&self, method: &'static str) -> Arc<Notify> {
        self.held.lock().unwrap().entry(method).or_default().clone()
    }

    fn bell(&self, method: &str) -> Option<Arc<Notify>> {
        self.held.lock().unwrap().get(method).cloned()
    }

    /// Wait until `done` holds for the methods requested so far.
    pub async fn until_requests(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        within(what, async {
            loop {
                let requested = self.requested.notified();
                if done(&self.requests()) {
                    return;
                }
                requested.await;
            }
        })
        .await;
    }

    /// The capabilities this IDE advertises in `initialize`.
    pub fn capabilities(&self) -> ClientCapabilities {
        ClientCapabilities::new()
            .fs(FileSystemCapabilities::new()
                .read_text_file(self.offers_read)
                .write_text_file(self.offers_write))
            .terminal(self.offers_terminal)
    }

    /// Run `body` as this IDE on `transport`, recording updates into `received`.
    pub async fn run<R>(
        &self,
        transport: impl ConnectTo<Client> + 'static,
        received: Received,
        body: impl AsyncFnOnce(ConnectionTo<Agent>) -> Result<R, Error>,
    ) -> R {
        let recorder = received.clone();
        let (a, b, c, d, e, f, g, h) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        let run = Client
            .v1()
            .name("test-ide")
            .on_receive_notification(
                async move |notification: SessionNotification, _cx| {
                    recorder.updates.lock().unwrap().push(notification);
                    recorder.arrived.notify_one();
                    Ok(())
                },
                on_receive_notification!(),
            )
            .on_receive_request(
                async move |request: ReadTextFileRequest, responder, _cx| {
                    a.paths.lock().unwrap().push(request.path.clone());
                    a.record("fs/read_text_file");
                    responder.respond_with_result(a.service.read(request).await)
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: WriteTextFileRequest, responder, _cx| {
                    b.paths.lock().unwrap().push(request.path.clone());
                    b.record("fs/write_text_file");
                    responder.respond_with_result(b.service.write(request).await)
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: CreateTerminalRequest, responder, cx| {
                    c.record("terminal/create");
                    let ide = c.clone();
                    let create = async move || {
                        let created = ide.service.create_terminal(request);
                        if let Ok(created) = &created {
                            ide.record_terminal("terminal/create", &created.terminal_id.0);
                        }
                        responder.respond_with_result(created)
                    };
                    match c.bell("terminal/create") {
                        None => create().await,
                        // Answered later, so the client goes on reading meanwhile.
                        Some(bell) => cx.spawn(async move {
                            bell.notified().await;
                            create().await
                        }),
                    }
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: TerminalOutputRequest, responder, cx| {
                    d.record("terminal/output");
                    let service = d.service.clone();
                    match d.bell("terminal/output") {
                        None => responder.respond_with_result(service.terminal_output(request)),
                        Some(bell) => cx.spawn(async move {
                            bell.notified().await;
                            responder.respond_with_result(service.terminal_output(request))
                        }),
                    }
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: WaitForTerminalExitRequest, responder, cx| {
                    e.record("terminal/wait_for_exit");
                    let service = e.service.clone();
                    cx.spawn(async move {
                        responder.respond_with_result(service.wait_for_exit(request).await)
                    })
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: KillTerminalRequest, responder, _cx| {
                    f.record_terminal("terminal/kill", &request.terminal_id.0);
                    f.record("terminal/kill");
                    responder.respond_with_result(f.service.kill_terminal(request))
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: ReleaseTerminalRequest, responder, _cx| {
                    g.record_terminal("terminal/release", &request.terminal_id.0);
                    g.record("terminal/release");
                    responder.respond_with_result(g.service.release_terminal(request))
                },
                on_receive_request!(),
            )
            .on_receive_request(
                async move |request: RequestPermissionRequest, responder, _cx| {
                    h.record("session/request_permission");
                    h.permissions.lock().unwrap().push(request);
                    let answer = h
                        .answers
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or("allow_once");
                    let outcome = if answer == "cancel" {
                        RequestPermissionOutcome::Cancelled
                    } else {
                        RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(answer))
                    };
                    responder.respond(RequestPermissionResponse::new(outcome))
                },
                on_receive_request!(),
            )
            .connect_with(transport, body);
        within("the IDE to finish", run)
            .await
            .expect("the IDE ran without errors")
    }

    /// `initialize` advertising this IDE's capabilities.
    pub async fn initialize(&self, cx: &ConnectionTo<Agent>) -> Result<(), Error> {
        cx.send_request(
            InitializeRequest::new(ProtocolVersion::V1).client_capabilities(self.capabilities()),
        )
        .block_task()
        .await?;
        Ok(())
    }
}

impl Received {
    /// The tool calls of `session` as the client last saw them: id, title,
    /// kind, status, and the content of the last update.
    pub fn tool_calls(&self, session: &SessionId) -> Vec<serde_json::Value> {
        let mut calls: Vec<serde_json::Value> = Vec::new();
        for notification in self
            .updates
            .lock()
            .unwrap()
            .iter()
            .filter(|n| &n.session_id == session)
        {
            let update = serde_json::to_value(&notification.update).unwrap();
            match update["sessionUpdate"].as_str() {
                Some("tool_call") => {
                    let mut call = update.clone();
                    // The schema leaves out `pending`, the default status.
                    let status = update
                        .get("status")
                        .cloned()
                        .unwrap_or_else(|| "pending".into());
                    call["status"] = status.clone();
                    call["statuses"] = serde_json::json!([status]);
                    calls.push(call);
                }
                Some("tool_call_update") => {
                    let call = calls
                        .iter_mut()
                        .find(|call| call["toolCallId"] == update["toolCallId"])
                        .expect("an update follows its tool_call");
                    for (key, value) in update.as_object().unwrap() {
                        if key != "sessionUpdate" {
                            call[key] = value.clone();
                        }
                    }
                    if let Some(status) = update.get("status") {
                        call["statuses"]
                            .as_array_mut()
                            .unwrap()
                            .push(status.clone());
                    }
                }
                _ => {}
            }
        }
        calls
    }
}
