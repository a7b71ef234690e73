//! One connection to an MCP server, through the official SDK (`rmcp`): a
//! stdio server's process (in a process group of its own, killed whole, and
//! dying with Punie) or an HTTP server's session; its tools as last listed;
//! calls, and whether the connection can still take them. What the messages
//! say never carries an HTTP server's query or credentials. It knows nothing
//! of sessions or of the model.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process_wrap::tokio::{CommandWrap, ProcessGroup};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, Tool,
};
use rmcp::service::{ClientInitializeError, NotificationContext, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt as _};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, Signal};
use tokio::io::AsyncBufReadExt as _;

use super::{Launch, RETRY_AFTER, retry_wait};

/// Lines of a stdio server's stderr kept to explain why it failed, and the
/// most of each line kept.
const STDERR_LINES: usize = 5;
const STDERR_LINE_BYTES: usize = 200;

/// How long to wait for a failed server's last words on stderr.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// How often a call looks whether a stdio server's process has ended.
const EXIT_CHECK: Duration = Duration::from_millis(100);

/// How long a turn waits for a server to list its changed tools: not long,
/// as the last list serves meanwhile.
const LIST_AGAIN_WAIT: Duration = Duration::from_secs(3);

/// A started server and the tools it offered.
pub(super) struct Connected {
    /// Dropping it ends the connection.
    service: RunningService<RoleClient, Client>,
    /// As last listed: again after the server says they changed.
    tools: Mutex<Arc<Vec<Tool>>>,
    /// Set by the server's `notifications/tools/list_changed`.
    tools_changed: Arc<AtomicBool>,
    /// Listing its changed tools failed this many times in a row, the last
    /// at that time: a server that does not answer is not waited for again
    /// at every turn.
    relist_failed: Mutex<Option<(u32, Instant)>>,
    /// A call failed in its transport, or an HTTP server left it unanswered:
    /// a new connection is made for the next turn. (An HTTP server that
    /// restarted forgets its sessions; rmcp makes a new one only when it
    /// answers 404.)
    broken: AtomicBool,
    /// A stdio server's process group, killed when dropped (after the
    /// connection: fields drop in order).
    group: Option<Group>,
    /// An HTTP server's URL, kept out of what is said.
    url: Option<String>,
    /// What "always" answers about its tools are kept under.
    pub(super) launch_key: String,
}

/// A stdio server's process group, led by the process Punie started.
struct Group {
    leader: Pid,
    /// The leader, to tell whether it still runs: while it does, its pid
    /// (the group's id) cannot have been reused.
    pidfd: Option<OwnedFd>,
}

/// Punie's side of a connection to an MCP server: it says who it is, and
/// notes when the server's tools change; it offers nothing a server could
/// ask of it (roots, sampling, elicitation).
pub(super) struct Client {
    tools_changed: Arc<AtomicBool>,
}

impl rmcp::ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("punie", crate::VERSION).with_title("Punie"),
        )
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.store(true, Ordering::Relaxed);
    }
}

impl Connected {
    pub(super) fn tools(&self) -> Arc<Vec<Tool>> {
        self.tools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// List the tools again if the server said they changed, waiting
    /// [`LIST_AGAIN_WAIT`] at most. If that fails, or the turn waiting for
    /// it is cancelled, the last list stays and a later turn tries again:
    /// after a failure, not before a wait that grows with each.
    pub(super) async fn refresh_tools(&self, server: &str) {
        if !self.tools_changed.load(Ordering::Relaxed) || self.relisting_waits() {
            return;
        }
        self.tools_changed.store(false, Ordering::Relaxed);
        let again = ListAgain(&self.tools_changed);
        let why = match tokio::time::timeout(LIST_AGAIN_WAIT, self.service.list_all_tools()).await {
            Ok(Ok(tools)) => {
                std::mem::forget(again);
                tracing::info!(
                    mcp = server,
                    tools = tools.len(),
                    "MCP server's tools changed"
                );
                *self.relist_failures() = None;
                *self
                    .tools
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tools);
                return;
            }
            Ok(Err(error)) => self.scrub(&error.to_string()),
            Err(_) => format!("no answer within {} s", LIST_AGAIN_WAIT.as_secs()),
        };
        tracing::warn!(
            mcp = server,
            "cannot list the MCP server's changed tools: {why}; its last list is used"
        );
        let mut failed = self.relist_failures();
        let count = failed.map_or(0, |(count, _)| count + 1);
        *failed = Some((count, Instant::now()));
    }

    /// Whether listing the changed tools failed too lately to try again.
    fn relisting_waits(&self) -> bool {
        self.relist_failures()
            .is_some_and(|(count, at)| at.elapsed() < retry_wait(RETRY_AFTER, count))
    }

    fn relist_failures(&self) -> std::sync::MutexGuard<'_, Option<(u32, Instant)>> {
        self.relist_failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Its connection has ended or failed, or its process has.
    pub(super) fn stopped(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
            || self.service.is_transport_closed()
            || self
                .group
                .as_ref()
                .is_some_and(|group| group.leader_ended() == Some(true))
    }

    /// Call `params`, waiting at most `timeout`; what went wrong otherwise,
    /// for the model. Dropping the future cancels the call on the server.
    pub(super) async fn call(
        &self,
        params: CallToolRequestParams,
        timeout: Duration,
    ) -> Result<CallToolResult, String> {
        const AGAIN: &str = "it is connected again for the next turn";
        if self.stopped() {
            return Err(format!("its connection failed earlier; {AGAIN}"));
        }
        let calling = tokio::time::timeout(timeout, self.service.call_tool(params));
        let answer = tokio::select! {
            // An answer that came just before the server ended still counts.
            biased;
            answer = calling => answer,
            () = self.process_ended() => {
                self.broken.store(true, Ordering::Relaxed);
                return Err(format!("the server exited; {AGAIN}"));
            }
        };
        let Ok(answer) = answer else {
            // A stdio server that is slow is busy, not lost; an HTTP server
            // may have forgotten the session.
            if self.group.is_none() {
                self.broken.store(true, Ordering::Relaxed);
                return Err(format!(
                    "no answer within {} s; {AGAIN}",
                    timeout.as_secs_f64()
                ));
            }
            return Err(format!("no answer within {} s", timeout.as_secs_f64()));
        };
        answer.map_err(|error| match error {
            // The server's own answer: the connection is fine.
            ServiceError::McpError(error) => self.scrub(&error.message),
            ServiceError::TransportSend(error) => {
                self.broken.store(true, Ordering::Relaxed);
                let error = self.scrub(&error.error.to_string());
                format!("the request could not be sent ({error}); {AGAIN}")
            }
            ServiceError::TransportClosed => {
                self.broken.store(true, Ordering::Relaxed);
                format!("its connection closed; {AGAIN}")
            }
            other => self.scrub(&other.to_string()),
        })
    }

    /// Ends when a stdio server's process has ended, having killed what it
    /// left in its group: a child holding its stdout would keep the
    /// connection open, and calls waiting, until the call timeout. Never,
    /// for an HTTP server or when it cannot be known.
    async fn process_ended(&self) {
        match &self.group {
            Some(group) => {
                group.leader_exit().await;
                group.kill();
            }
            None => std::future::pending().await,
        }
    }

    /// `text` without the server's URL's query or credentials.
    fn scrub(&self, text: &str) -> String {
        scrubbed(self.url.as_deref(), text)
    }
}

/// Sets the flag again when dropped: the tools are listed again next time.
struct ListAgain<'a>(&'a AtomicBool);

impl Drop for ListAgain<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Group {
    /// The whole group goes at once: whatever the server started goes with
    /// it. (rmcp kills it too, from a task, when the connection's task ends:
    /// that does not happen while the runtime stops.)
    fn drop(&mut self) {
        self.kill();
    }
}

impl Group {
    fn new(leader: Pid) -> Self {
        let pidfd = rustix::process::pidfd_open(leader, rustix::process::PidfdFlags::empty()).ok();
        Self { leader, pidfd }
    }

    /// Kill the whole group, even once the leader has ended: while the
    /// group has members, its id stays theirs and cannot be another's.
    fn kill(&self) {
        let _ = rustix::process::kill_process_group(self.leader, Signal::KILL);
    }

    /// Ends when the leader has ended; never, when that cannot be known.
    /// Looked at now and then: registering the pidfd with the runtime would
    /// take `unsafe`, and a call's wait is long next to the gap.
    async fn leader_exit(&self) {
        loop {
            match self.leader_ended() {
                Some(true) => return,
                Some(false) => tokio::time::sleep(EXIT_CHECK).await,
                None => std::future::pending().await,
            }
        }
    }

    /// Whether the leader has ended; `None` when that cannot be known.
    fn leader_ended(&self) -> Option<bool> {
        let pidfd = self.pidfd.as_ref()?;
        // A pidfd turns readable when its process ends.
        let mut poll = [PollFd::new(pidfd, PollFlags::IN)];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut poll, Some(&now))
            .ok()
            .map(|ready| ready > 0)
    }
}

/// Start the server and list its tools, or say why that failed.
pub(super) async fn connect(name: &str, launch: &Launch, cwd: &Path) -> Result<Connected, String> {
    let tools_changed = Arc::new(AtomicBool::new(false));
    let client = Client {
        tools_changed: tools_changed.clone(),
    };
    let (service, group, url) = match launch {
        Launch::Stdio { command, args, env } => {
            let (service, group) = start_process(name, client, command, args, env, cwd).await?;
            (service, group, None)
        }
        Launch::Http { url, headers } => (
            connect_http(client, url, headers).await?,
            None,
            Some(url.clone()),
        ),
        Launch::Sse { .. } => return Err(super::SSE_REFUSED.to_owned()),
    };
    // Failing here drops the group, which kills it.
    let tools = service.list_all_tools().await.map_err(|error| {
        let error = scrubbed(url.as_deref(), &error.to_string());
        format!("it did not list its tools: {error}")
    })?;
    Ok(Connected {
        service,
        tools: Mutex::new(Arc::new(tools)),
        tools_changed,
        relist_failed: Mutex::new(None),
        broken: AtomicBool::new(false),
        group,
        url,
        launch_key: launch.key(),
    })
}

/// Open a session with the Streamable HTTP server at `url`, sending
/// `headers` with every request.
async fn connect_http(
    client: Client,
    url: &str,
    headers: &[(String, String)],
) -> Result<RunningService<RoleClient, Client>, String> {
    let mut custom = std::collections::HashMap::new();
    for (name, value) in headers {
        let header = reqwest::header::HeaderName::try_from(name.as_str())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        let value = reqwest::header::HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("the value of header `{name}` is not valid in HTTP"))?;
        custom.insert(header, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom);
    client
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .map_err(|error| {
            let shown = shown_url(url);
            let why = without_url(&initialize_error(error), url, &shown);
            format!("could not connect to it at {shown}: {why}")
        })
}

/// Run a stdio server in its own process group, in the workspace, with the
/// server's environment and `env` on top; its stderr goes to the log.
async fn start_process(
    name: &str,
    client: Client,
    command: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
) -> Result<(RunningService<RoleClient, Client>, Option<Group>), String> {
    let mut process = tokio::process::Command::new(command);
    process
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .current_dir(cwd);
    crate::workspace::die_with_this_process(&mut process);
    // Its own group, killed whole: a server started through `npx` or a
    // shell runs in a child of the process Punie started.
    let mut process = CommandWrap::from(process);
    process.wrap(ProcessGroup::leader());
    // Its arguments may hold a secret: the program alone is shown.
    let shown = command.display().to_string();
    let (transport, stderr) = TokioChildProcess::builder(process)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run `{shown}`: {error}"))?;
    // From here, the group is killed if the server does not start.
    let group = transport
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
        .map(Group::new);
    let said = Arc::new(Mutex::new(VecDeque::new()));
    let reading =
        stderr.map(|stderr| tokio::spawn(log_stderr(name.to_owned(), stderr, said.clone())));
    match client.serve(transport).await {
        Ok(service) => Ok((service, group)),
        Err(error) => {
            // The process has ended, or will as the transport goes: what it
            // said on the way out explains more than the protocol error.
            if let Some(reading) = reading {
                let _ = tokio::time::timeout(LAST_WORDS, reading).await;
            }
            let said = said
                .lock()
                .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join(" / "))
                .unwrap_or_default();
            drop(group);
            let error = initialize_error(error);
            let mut why = format!("`{shown}` did not start as an MCP server ({error})");
            if !said.is_empty() {
                let _ = write!(why, "; it said: {said}");
            }
            Err(why)
        }
    }
}

/// Pass a server's stderr to the log, keeping its last lines in `said`.
async fn log_stderr(
    name: String,
    stderr: tokio::process::ChildStderr,
    said: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(mut line)) = lines.next_line().await {
        tracing::debug!(mcp = name, "stderr: {line}");
        line.truncate(line.floor_char_boundary(STDERR_LINE_BYTES));
        if let Ok(mut said) = said.lock() {
            if said.len() == STDERR_LINES {
                said.pop_front();
            }
            said.push_back(line);
        }
    }
}

/// Why the MCP handshake failed, without the type names rmcp's own
/// messages carry.
fn initialize_error(error: ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, context } => {
            format!("{} while {context}", cause_shown(&*error.error))
        }
        other => other.to_string(),
    }
}

/// A transport's error as a person should read it. The HTTP transport
/// wraps its client's error without giving it as the source, so the cause
/// is looked for in the client's error itself.
fn cause_shown(error: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    match error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(client)) => with_first_cause(client),
        _ => with_first_cause(error),
    }
}

/// `error` and, when it has one, the cause at the bottom of its chain: an
/// HTTP client's "error sending request" means nothing to a person until
/// it is followed by "Connection refused".
fn with_first_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(deeper) = cause.source() {
        cause = deeper;
    }
    let (said, why) = (error.to_string(), cause.to_string());
    if std::ptr::addr_eq(cause, error) || said.contains(&why) {
        said
    } else {
        format!("{said}: {why}")
    }
}

/// A server's URL as it may be shown: without a query or credentials,
/// which often carry a secret.
pub(super) fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            url.set_query(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "a URL that cannot be read".to_owned(),
    }
}

/// `text` without the query or credentials of `url`, an HTTP server's.
fn scrubbed(url: Option<&str>, text: &str) -> String {
    match url {
        Some(url) => without_url(text, url, &shown_url(url)),
        None => text.to_owned(),
    }
}

/// `message` with every spelling of `url` in it (the client's, and the one
/// reqwest writes in its errors) as `shown`.
fn without_url(message: &str, url: &str, shown: &str) -> String {
    let mut message = message.replace(url, shown);
    if let Ok(parsed) = reqwest::Url::parse(url) {
        message = message.replace(parsed.as_str(), shown);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            shown_url("https://user:pass@mcp.example.com/mcp?token=abc"),
            "https://mcp.example.com/mcp"
        );
        assert_eq!(shown_url("not a url"), "a URL that cannot be read");
        let url = "http://127.0.0.1:9/mcp?key=secret";
        let said = "error sending request for url (http://127.0.0.1:9/mcp?key=secret)";
        let shown = shown_url(url);
        assert_eq!(
            without_url(said, url, &shown),
            "error sending request for url (http://127.0.0.1:9/mcp)"
        );
    }
}
