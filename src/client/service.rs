//! What a full ACP client offers the agent: files and terminals in its
//! workspace, and answers to permission requests. `punie ask` advertises `fs`
//! and `terminal`, so it must serve them; everything stays inside the
//! workspace, and a path outside it is a clear error, never an access.

use std::io::{BufRead as _, ErrorKind, Write as _};
use std::sync::Arc;

use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, CreateTerminalResponse, KillTerminalRequest, KillTerminalResponse,
    PermissionOption, PermissionOptionKind, ReadTextFileRequest, ReadTextFileResponse,
    ReleaseTerminalRequest, ReleaseTerminalResponse, RequestPermissionOutcome,
    RequestPermissionRequest, RequestPermissionResponse, SelectedPermissionOutcome,
    TerminalExitStatus, TerminalOutputRequest, TerminalOutputResponse, WaitForTerminalExitRequest,
    WaitForTerminalExitResponse, WriteTextFileRequest, WriteTextFileResponse,
};
use agent_client_protocol::{Error, ErrorCode};

use super::{painted, preview, terminal_safe};
use crate::workspace::{ExitStatus, TerminalError, Terminals, Workspace, WorkspaceError};

/// Who answers the agent's permission requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permissions {
    /// `--yes`: allow everything.
    AllowAll,
    /// Ask the person at the terminal.
    Ask,
    /// Nobody can answer: reject, and say so.
    RejectAll,
}

impl Permissions {
    /// Ask when a person is at the terminal, else reject. The question goes
    /// to `/dev/tty`, not stderr: with stderr sent to a file (`2>log`) the
    /// person is there all the same.
    pub fn for_terminal(yes: bool) -> Self {
        if yes {
            Self::AllowAll
        } else if in_the_terminals_foreground() {
            Self::Ask
        } else {
            Self::RejectAll
        }
    }
}

/// Whether this process has a terminal and is its foreground job. A job
/// sent to the background (`punie ask … &`) has the terminal too, but the
/// kernel would stop it at its first read of it, and the question would
/// wait unseen.
fn in_the_terminals_foreground() -> bool {
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return false;
    };
    rustix::termios::tcgetpgrp(&tty).is_ok_and(|group| group == rustix::process::getpgrp())
}

/// The files, terminals and permissions one `punie ask` serves.
pub struct LocalService {
    /// `None` until the session is open: a kept session may work elsewhere,
    /// and nothing is served before the server has said where.
    workspace: std::sync::RwLock<Option<Workspace>>,
    terminals: Terminals,
    /// The terminals not yet released, so that [`Self::stop_all`] can wait
    /// for each command to be gone.
    open_terminals: std::sync::Mutex<Vec<String>>,
    permissions: Permissions,
    /// The permission question the terminal shows, until it is answered or
    /// withdrawn.
    question: Arc<std::sync::Mutex<Option<OpenQuestion>>>,
}

/// A permission question waiting on the terminal for its answer.
struct OpenQuestion {
    /// The tool call it asks about.
    tool_call: String,
    tty: std::fs::File,
}

impl LocalService {
    pub fn new(workspace: Workspace, permissions: Permissions) -> Arc<Self> {
        Self::serving(Some(workspace), permissions)
    }

    /// A service that serves nothing until [`Self::open_in`] names the
    /// workspace: for a kept session, whose workspace the server names.
    pub fn unopened(permissions: Permissions) -> Arc<Self> {
        Self::serving(None, permissions)
    }

    fn serving(workspace: Option<Workspace>, permissions: Permissions) -> Arc<Self> {
        Arc::new(Self {
            workspace: std::sync::RwLock::new(workspace),
            terminals: Terminals::default(),
            open_terminals: std::sync::Mutex::default(),
            permissions,
            question: Arc::default(),
        })
    }

    /// Serve `workspace` from now on: the one the session works in.
    pub fn open_in(&self, workspace: Workspace) {
        *self
            .workspace
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(workspace);
    }

    fn workspace(&self) -> Result<Workspace, Error> {
        self.workspace
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::INVALID_REQUEST,
                    "no session is open here yet, so there is no workspace to serve",
                )
            })
    }

    pub async fn read(&self, request: ReadTextFileRequest) -> Result<ReadTextFileResponse, Error> {
        let content = self
            .workspace()?
            .read_text(&request.path, request.line, request.limit)
            .await
            .map_err(workspace_error)?;
        Ok(ReadTextFileResponse::new(content))
    }

    pub async fn write(
        &self,
        request: WriteTextFileRequest,
    ) -> Result<WriteTextFileResponse, Error> {
        self.workspace()?
            .write_text(&request.path, &request.content)
            .await
            .map_err(workspace_error)?;
        Ok(WriteTextFileResponse::new())
    }

    pub fn create_terminal(
        &self,
        request: CreateTerminalRequest,
    ) -> Result<CreateTerminalResponse, Error> {
        let env: Vec<(String, String)> = request
            .env
            .into_iter()
            .map(|variable| (variable.name, variable.value))
            .collect();
        let limit = request
            .output_byte_limit
            .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX));
        let id = self
            .terminals
            .create(
                &self.workspace()?,
                &request.command,
                &request.args,
                &env,
                request.cwd.as_deref(),
                limit,
            )
            .map_err(terminal_error)?;
        self.open_terminals().push(id.clone());
        Ok(CreateTerminalResponse::new(id))
    }

    pub fn terminal_output(
        &self,
        request: TerminalOutputRequest,
    ) -> Result<TerminalOutputResponse, Error> {
        let output = self
            .terminals
            .output(&request.terminal_id.0)
            .map_err(terminal_error)?;
        Ok(
            TerminalOutputResponse::new(output.output, output.dropped > 0)
                .exit_status(output.exit.map(exit_status)),
        )
    }

    pub async fn wait_for_exit(
        &self,
        request: WaitForTerminalExitRequest,
    ) -> Result<WaitForTerminalExitResponse, Error> {
        let exit = self
            .terminals
            .wait(&request.terminal_id.0)
            .await
            .map_err(terminal_error)?;
        Ok(WaitForTerminalExitResponse::new(exit_status(exit)))
    }

    pub fn kill_terminal(
        &self,
        request: KillTerminalRequest,
    ) -> Result<KillTerminalResponse, Error> {
        self.terminals
            .kill(&request.terminal_id.0)
            .map_err(terminal_error)?;
        Ok(KillTerminalResponse::new())
    }

    pub fn release_terminal(
        &self,
        request: ReleaseTerminalRequest,
    ) -> Result<ReleaseTerminalResponse, Error> {
        self.terminals
            .release(&request.terminal_id.0)
            .map_err(terminal_error)?;
        self.open_terminals()
            .retain(|id| *id != request.terminal_id.0.as_ref());
        Ok(ReleaseTerminalResponse::new())
    }

    /// Stop every command the agent started here.
    pub fn release_all(&self) {
        self.open_terminals().clear();
        self.terminals.release_all();
    }

    /// Stop every command the agent started here, and wait until each is
    /// gone: the process is about to exit, and a kill only requested would
    /// never be carried out.
    pub async fn stop_all(&self) {
        // Left listed until gone: a second caller waits for them too.
        let ids = self.open_terminals().clone();
        for id in &ids {
            let _ = self.terminals.kill(id);
        }
        for id in &ids {
            let _ = self.terminals.wait(id).await;
        }
        self.release_all();
    }

    /// The server no longer waits for the answer to the question on the
    /// terminal, if one is asked (about `tool_call`, when given): its tool
    /// call ended, or the turn did. Its line is ended and it is said to be
    /// withdrawn, so that what is shown next does not follow `Choose`.
    pub fn withdraw_question(&self, tool_call: Option<&str>) {
        let mut question = lock(&self.question);
        if question
            .as_ref()
            .is_some_and(|open| tool_call.is_none_or(|id| id == open.tool_call))
            && let Some(mut open) = question.take()
        {
            let _ = writeln!(
                open.tty,
                "\npunie: the question was withdrawn: the server no longer waits for an answer"
            );
            let _ = open.tty.flush();
        }
    }

    fn open_terminals(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.open_terminals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answer a permission request as `--yes`, the person, or nobody would.
    pub async fn permission(&self, request: RequestPermissionRequest) -> RequestPermissionResponse {
        let title = request
            .tool_call
            .fields
            .title
            .clone()
            .unwrap_or_else(|| request.tool_call.tool_call_id.to_string());
        let chosen = match self.permissions {
            Permissions::AllowAll => first_of(
                &request.options,
                &[
                    PermissionOptionKind::AllowOnce,
                    PermissionOptionKind::AllowAlways,
                ],
            ),
            Permissions::RejectAll => {
                crate::say!(
                    "punie: rejected \"{}\": nobody is at a terminal to allow it (use --yes to allow)",
                    terminal_safe(&title)
                );
                first_of(
                    &request.options,
                    &[
                        PermissionOptionKind::RejectOnce,
                        PermissionOptionKind::RejectAlways,
                    ],
                )
            }
            Permissions::Ask => {
                let question = Question {
                    title,
                    preview: preview::lines(
                        request.tool_call.fields.content.as_deref().unwrap_or(&[]),
                    ),
                    options: request.options.clone(),
                    tool_call: request.tool_call.tool_call_id.to_string(),
                };
                let open = self.question.clone();
                tokio::task::spawn_blocking(move || ask_at_terminal(&question, &open))
                    .await
                    .ok()
                    .flatten()
            }
        };
        let outcome = match chosen {
            Some(option) => {
                RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(option.option_id))
            }
            None => RequestPermissionOutcome::Cancelled,
        };
        RequestPermissionResponse::new(outcome)
    }
}

fn first_of(
    options: &[PermissionOption],
    kinds: &[PermissionOptionKind],
) -> Option<PermissionOption> {
    kinds
        .iter()
        .find_map(|kind| options.iter().find(|option| option.kind == *kind))
        .cloned()
}

/// What a permission question asks.
struct Question {
    title: String,
    /// What is to be done, shown under the question.
    preview: Vec<(preview::Kind, String)>,
    options: Vec<PermissionOption>,
    tool_call: String,
}

/// Ask on the terminal (not stdin, which may carry the prompt), keeping the
/// question in `open` while it waits. Anything but a listed choice rejects;
/// a question withdrawn meanwhile is answered cancelled.
fn ask_at_terminal(
    question: &Question,
    open: &std::sync::Mutex<Option<OpenQuestion>>,
) -> Option<PermissionOption> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut out = tty.try_clone().ok()?;
    {
        // Held while the question is written: a withdrawal waits for it to
        // be whole, so that it ends the question's line.
        let mut open = lock(open);
        let _ = writeln!(out, "\nPunie asks to: {}", terminal_safe(&question.title));
        let colour = super::colour_wanted();
        for (kind, line) in &question.preview {
            let _ = writeln!(out, "  {}", painted(line, kind.style(), colour));
        }
        for (number, option) in question.options.iter().enumerate() {
            let _ = writeln!(out, "  [{}] {}", number + 1, terminal_safe(&option.name));
        }
        let _ = write!(out, "Choose (anything else rejects): ");
        let _ = out.flush();
        *open = Some(OpenQuestion {
            tool_call: question.tool_call.clone(),
            tty: out,
        });
    }
    let mut answer = String::new();
    let read = std::io::BufReader::new(tty).read_line(&mut answer);
    // Taken back unless it was withdrawn while the person typed.
    lock(open).take()?;
    read.ok()?;
    let options = &question.options;
    let chosen = answer
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|number| options.get(number.checked_sub(1)?))
        .cloned();
    chosen.or_else(|| {
        first_of(
            options,
            &[
                PermissionOptionKind::RejectOnce,
                PermissionOptionKind::RejectAlways,
            ],
        )
    })
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn exit_status(exit: ExitStatus) -> TerminalExitStatus {
    TerminalExitStatus::new()
        .exit_code(exit.code)
        .signal(exit.signal)
}

fn workspace_error(error: WorkspaceError) -> Error {
    let code = match error {
        WorkspaceError::NotFound(_) => ErrorCode::RESOURCE_NOT_FOUND,
        WorkspaceError::Outside { .. } | WorkspaceError::NotText(_) => ErrorCode::INVALID_PARAMS,
        // Not a file to read or write (a directory, a named pipe): the
        // request, not the client, is at fault.
        WorkspaceError::Io { ref source, .. }
            if matches!(
                source.kind(),
                ErrorKind::InvalidInput | ErrorKind::IsADirectory
            ) =>
        {
            ErrorCode::INVALID_PARAMS
        }
        WorkspaceError::Io { .. } => ErrorCode::INTERNAL_ERROR,
    };
    Error::new(code, error.to_string())
}

fn terminal_error(error: TerminalError) -> Error {
    match error {
        TerminalError::Workspace(error) => workspace_error(error),
        TerminalError::Unknown(_) => Error::new(ErrorCode::RESOURCE_NOT_FOUND, error.to_string()),
        TerminalError::Cwd { .. } => Error::new(ErrorCode::INVALID_PARAMS, error.to_string()),
        TerminalError::Spawn { .. } | TerminalError::Pipe(_) => {
            Error::new(ErrorCode::INTERNAL_ERROR, error.to_string())
        }
    }
}
