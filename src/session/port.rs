//! How a running turn reaches clients: its updates go to the store and then
//! to every attached connection; its requests (`fs/*`, `terminal/*`,
//! `session/request_permission`) go to the connection that sent the prompt,
//! or, once that one has gone, to another attached connection — waiting a
//! bounded time for one to attach, after which the turn ends cancelled.
//!
//! A request is only ever sent to a connection that can answer it: one that
//! refers to a terminal a client created goes to that client alone (no other
//! client knows the terminal), and one that needs a capability (`fs.*`,
//! `terminal`) fails at once when the connection that would answer it did
//! not advertise it.
//!
//! A cancelled turn stops waiting for answers at once. A `terminal/create`
//! still unanswered then is not forgotten: when the client answers it, the
//! terminal is killed and released, as the tool would have done had it
//! learnt the terminal's id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_client_protocol::v1::schema::{
    ClientCapabilities, KillTerminalRequest, ReleaseTerminalRequest, SessionUpdate,
};
use agent_client_protocol::{Error, ErrorCode, JsonRpcRequest, JsonRpcResponse};
use tokio_util::sync::CancellationToken;

use super::{ClientHandle, ConnectionId, Session};
use crate::tools::ClientPort;

/// The clients of one turn.
#[derive(Clone)]
pub struct SessionPort {
    pub(super) session: Arc<Session>,
    /// The connection that sent the prompt.
    pub(super) prompter: ConnectionId,
    pub(super) cancel: CancellationToken,
    /// The connection that created each client-side terminal of this turn:
    /// the terminal's requests go to it, and only it is shown the terminal
    /// in a tool call, even once the terminal is released.
    pub(super) terminals: Arc<Mutex<HashMap<String, ConnectionId>>>,
}

/// Requests that wait as long as they need: a person deciding, a command
/// running (under its own timeout).
const PATIENT_METHODS: &[&str] = &["session/request_permission", "terminal/wait_for_exit"];

/// Requests about a terminal that exists only on the client that created it.
const TERMINAL_FOLLOW_UPS: &[&str] = &[
    "terminal/output",
    "terminal/wait_for_exit",
    "terminal/kill",
    "terminal/release",
];

impl SessionPort {
    /// `answer`, within the client request timeout unless `method` waits for
    /// as long as it takes.
    async fn patient<T>(
        &self,
        method: &str,
        answer: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if PATIENT_METHODS.contains(&method) {
            return answer.await;
        }
        let limit = self.session.settings.client_request_timeout;
        tokio::time::timeout(limit, answer)
            .await
            .unwrap_or_else(|_| {
                Err(failure(format!(
                    "the client did not answer {method} within {limit:?} (--client-request-timeout)"
                )))
            })
    }

    /// Nobody attached in time: the turn ends cancelled, and says why.
    fn no_client(&self, method: &str) -> Error {
        let patience = self.session.settings.reattach_timeout;
        let reason = format!(
            "no client was attached within {patience:?} to answer {method} (--reattach-timeout)"
        );
        tracing::info!(session = %self.session.id, "{reason}; the turn is cancelled");
        self.session.note_turn_end(reason.clone());
        self.cancel.cancel();
        failure(format!("{reason}; the turn was cancelled"))
    }

    /// The terminal a follow-up request refers to, and the connection that
    /// created it, when this turn created it on a client.
    fn terminal_owner<R: JsonRpcRequest>(&self, request: &R) -> Option<(String, ConnectionId)> {
        if !TERMINAL_FOLLOW_UPS.contains(&request.method()) {
            return None;
        }
        let message = request.to_untyped_message().ok()?;
        let terminal = message.params.get("terminalId")?.as_str()?.to_owned();
        let owner = *self.owners().get(&terminal)?;
        Some((terminal, owner))
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<String, ConnectionId>> {
        self.terminals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Send a follow-up about `terminal` to `owner`, the client running it,
    /// and to no other: another client would not know the terminal, and a
    /// wait for it would last until the command's timeout.
    async fn ask_owner<R>(
        &self,
        terminal: &str,
        owner: ConnectionId,
        request: R,
    ) -> Result<R::Response, Error>
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static,
    {
        let gone = || {
            failure(format!(
                "the client running the command (terminal {terminal}) went away; how the command ended is unknown"
            ))
        };
        let Some(target) = self.session.attachments.handle(owner) else {
            return Err(gone());
        };
        let method = request.method().to_owned();
        self.ask(&target, &method, request).await?.ok_or_else(gone)
    }

    /// Ask the prompter, or whichever client is attached when it is gone,
    /// until one answers.
    async fn ask_until_answered<R>(
        &self,
        method: &str,
        patience: Duration,
        request: R,
    ) -> Result<R::Response, Error>
    where
        R: JsonRpcRequest + Clone + Send + 'static,
        R::Response: Send + 'static,
    {
        loop {
            if self.session.attachments.target(self.prompter).is_none() {
                tracing::info!(
                    session = %self.session.id,
                    "no client is attached to answer {method}; waiting up to {patience:?} for one"
                );
            }
            let target = tokio::select! {
                target = self.session.attachments.wait_for_target(self.prompter, patience) => target,
                () = self.cancel.cancelled() => return Err(cancelled()),
            };
            let Some(target) = target else {
                return Err(self.no_client(method));
            };
            if let Some(capability) = lacking_capability(method, &target.capabilities) {
                return Err(failure(format!(
                    "the client this {method} was meant for is gone, and the client attached now \
                     does not offer `{capability}`; nothing was done. Called again, the tool does \
                     the work on the server instead"
                )));
            }
            let answer = self.ask(&target, method, request.clone()).await;
            // `None`: the connection went away before it answered; ask another.
            if let Some(response) = answer? {
                if method == "terminal/create" {
                    self.remember_terminal(method, &response, target.connection);
                }
                return Ok(response);
            }
        }
    }

    /// Send `request` to `target` and wait for the answer as long as
    /// `method` allows, or until the turn is cancelled. `None` when `target`
    /// went away before it answered; it is detached.
    async fn ask<R>(
        &self,
        target: &ClientHandle,
        method: &str,
        request: R,
    ) -> Result<Option<R::Response>, Error>
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static,
    {
        let mut answer = Box::pin(target.cx.send_request(request).block_task());
        let answer = tokio::select! {
            answer = self.patient(method, answer.as_mut()) => answer,
            () = self.cancel.cancelled() => {
                if method == "terminal/create" {
                    self.stop_when_created(target, method, answer);
                }
                return Err(cancelled());
            }
        };
        match answer {
            Ok(response) => Ok(Some(response)),
            Err(error) if has_gone(&error, target) => {
                self.session.attachments.detach(target.connection);
                Ok(None)
            }
            Err(error) if error.code == ErrorCode::PARSE_ERROR => Err(unreadable(method, error)),
            Err(error) => Err(error),
        }
    }

    /// The turn was cancelled while `target` was creating a terminal: once
    /// it answers, kill the terminal and release it. Nobody waits for that.
    fn stop_when_created<T: JsonRpcResponse + Send + 'static>(
        &self,
        target: &ClientHandle,
        method: &str,
        answer: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) {
        let limit = self.session.settings.client_request_timeout;
        let session = self.session.id.clone();
        let method = method.to_owned();
        let cx = target.cx.clone();
        tokio::spawn(async move {
            let Ok(Ok(created)) = tokio::time::timeout(limit, answer).await else {
                return;
            };
            let Some(terminal) = created
                .into_json(&method)
                .ok()
                .and_then(|created| created.get("terminalId")?.as_str().map(str::to_owned))
            else {
                return;
            };
            tracing::debug!(%session, terminal, "stopping a terminal created after the turn was cancelled");
            cx.send_request(KillTerminalRequest::new(session.clone(), terminal.clone()))
                .detach();
            cx.send_request(ReleaseTerminalRequest::new(session, terminal))
                .detach();
        });
    }

    /// Note which connection runs the terminal `response` names.
    fn remember_terminal<T: JsonRpcResponse>(
        &self,
        method: &str,
        response: &T,
        connection: ConnectionId,
    ) {
        let created = response.clone().into_json(method).ok();
        if let Some(terminal) = created
            .as_ref()
            .and_then(|created| created.get("terminalId"))
            .and_then(|terminal| terminal.as_str())
        {
            self.owners().insert(terminal.to_owned(), connection);
        }
    }

    /// The connection that created the client terminal `update` shows, if
    /// it shows one.
    fn terminal_client(&self, update: &SessionUpdate) -> Option<ConnectionId> {
        let terminal = super::history::terminals_shown(update).next()?;
        self.owners().get(&terminal.0.to_string()).copied()
    }
}

impl ClientPort for SessionPort {
    fn capabilities(&self) -> Arc<ClientCapabilities> {
        self.session
            .attachments
            .target(self.prompter)
            .map(|client| client.capabilities)
            .unwrap_or_default()
    }

    fn notify(&self, update: SessionUpdate) -> bool {
        let terminal_client = self.terminal_client(&update);
        self.session
            .publish_showing_terminals(update, terminal_client);
        true
    }

    async fn request<R>(&self, request: R) -> Result<R::Response, Error>
    where
        R: JsonRpcRequest + Clone + Send + 'static,
        R::Response: Send + 'static,
    {
        // Everything the turn said before this request reaches clients first.
        self.session.store.flush().await;
        if let Some((terminal, owner)) = self.terminal_owner(&request) {
            return self.ask_owner(&terminal, owner, request).await;
        }
        let method = request.method().to_owned();
        let patience = self.session.settings.reattach_timeout;
        let asks_the_person = method == "session/request_permission";
        if asks_the_person {
            // Waiting for a person, even while no client is attached to ask.
            self.session
                .set_activity(super::Activity::WaitingForPermission);
        }
        let answer = self.ask_until_answered(&method, patience, request).await;
        if asks_the_person && !self.cancel.is_cancelled() {
            self.session.set_activity(super::Activity::Running);
        }
        answer
    }

    fn send_detached<R>(&self, request: R)
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static,
    {
        let target = match self.terminal_owner(&request) {
            // With its client gone, there is nobody left to tell.
            Some((_, owner)) => self.session.attachments.handle(owner),
            None => self
                .session
                .attachments
                .target(self.prompter)
                .filter(|target| {
                    lacking_capability(request.method(), &target.capabilities).is_none()
                }),
        };
        if let Some(target) = target {
            target.cx.send_request(request).detach();
        }
    }
}

/// The capability, as `initialize` spells it, that `method` needs and
/// `capabilities` lacks.
fn lacking_capability(method: &str, capabilities: &ClientCapabilities) -> Option<&'static str> {
    let (needed, offered) = match method {
        "fs/read_text_file" => ("fs.readTextFile", capabilities.fs.read_text_file),
        "fs/write_text_file" => ("fs.writeTextFile", capabilities.fs.write_text_file),
        _ if method.starts_with("terminal/") => ("terminal", capabilities.terminal),
        _ => return None,
    };
    (!offered).then_some(needed)
}

/// The SDK's error for an answer that is not the response `method` asks
/// for says only "Parse error": say which answer, and what was wrong with it.
fn unreadable(method: &str, error: Error) -> Error {
    let mut message = format!("it answered with something that is not a valid {method} response");
    if let Some(why) = error.data.as_ref().and_then(|data| data.as_str()) {
        message = format!("{message} ({why})");
    }
    Error::new(ErrorCode::INVALID_PARAMS, message)
}

/// Whether `error` means `target` went away before it answered.
fn has_gone(error: &Error, target: &ClientHandle) -> bool {
    agent_client_protocol::is_incoming_transport_closed(error) || target.cx.is_incoming_closed()
}

fn cancelled() -> Error {
    failure("the turn was cancelled".to_owned())
}

/// A request that did not get an answer, said so the model (and the person)
/// can tell why.
fn failure(message: String) -> Error {
    Error::new(ErrorCode::INTERNAL_ERROR, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::v1::schema::FileSystemCapabilities;

    #[test]
    fn fs_and_terminal_requests_need_their_capability_and_permission_none() {
        let none = ClientCapabilities::new();
        assert_eq!(
            lacking_capability("fs/write_text_file", &none),
            Some("fs.writeTextFile")
        );
        assert_eq!(
            lacking_capability("terminal/create", &none),
            Some("terminal")
        );
        assert_eq!(
            lacking_capability("session/request_permission", &none),
            None
        );
        let all = ClientCapabilities::new()
            .fs(FileSystemCapabilities::new()
                .read_text_file(true)
                .write_text_file(true))
            .terminal(true);
        for method in ["fs/read_text_file", "fs/write_text_file", "terminal/create"] {
            assert_eq!(lacking_capability(method, &all), None, "{method}");
        }
    }
}
