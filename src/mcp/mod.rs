//! The MCP servers a client hands a session (`mcpServers` in `session/new`,
//! `session/load` and `session/resume`): Punie starts each one — a process
//! for stdio, a connection for HTTP — lists its tools for the model, and
//! calls them.
//!
//! A session's servers live as long as the session is in memory: they start
//! in the background when a client names them (a turn waits for them, within
//! `--mcp-start-timeout`), and stop when the session leaves memory or the server
//! stops. Servers are known by name: a client that names one again with the
//! same launch keeps it running (or starts it again, if it failed), with
//! another launch replaces it; a server no client names any more runs on
//! until the session leaves memory. One that stops on its own, or whose
//! connection fails, is started again for the next turn; one that could not
//! start is tried again at later turns, less and less often
//! ([`RETRY_AFTER`], doubling up to [`MOST_RETRY_WAIT`]).
//!
//! This module owns the servers' lifetimes; `connection` speaks MCP to one
//! server through the official SDK (`rmcp`), and `tools` turns what servers
//! offer into tools for the model. How a call is shown to the person and
//! permitted is the tools module's business (`crate::tools`), not this one's.

mod connection;
mod tools;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::McpServer;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use connection::Connected;
pub use tools::{McpResult, McpTool, McpTools};

/// How long a server may take: to start and list its tools
/// (`--mcp-start-timeout`), and to answer one call (`--mcp-call-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct McpTimeouts {
    pub start: Duration,
    pub call: Duration,
}

/// How long after a failed start a server is tried again, at the earliest;
/// the wait doubles with each failure in a row, up to [`MOST_RETRY_WAIT`]:
/// a server that is down is not waited for at every turn.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const MOST_RETRY_WAIT: Duration = Duration::from_secs(300);

/// Why an SSE server is not started.
const SSE_REFUSED: &str =
    "it speaks the old SSE transport, which Punie does not; give its Streamable HTTP URL instead";

/// The MCP servers of one session.
pub struct McpServers {
    /// Where stdio servers run: the session's workspace.
    cwd: PathBuf,
    timeouts: McpTimeouts,
    /// How long after its first failed start a server is tried again.
    retry_after: Duration,
    servers: Mutex<Vec<Arc<Server>>>,
}

/// One server, starting or started.
struct Server {
    name: String,
    launch: Launch,
    state: watch::Receiver<State>,
    /// How many starts of it failed in a row before this one: the person
    /// was told of the first, and is told when it is back.
    failed_before: u32,
    /// Whether what went wrong with it has been told to a person already.
    told: AtomicBool,
    /// Starts the server; aborted if it is dropped before then.
    starting: Option<tokio::task::AbortHandle>,
}

/// How a client asked for a server to be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Launch {
    Stdio {
        command: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
    /// The old SSE transport, which Punie does not speak.
    Sse { url: String },
}

#[derive(Clone)]
enum State {
    Starting,
    Ready(Arc<Connected>),
    Failed { why: Arc<str>, at: Instant },
}

impl Server {
    /// Starting, or started and still connected.
    fn usable(&self) -> bool {
        !self.stopped() && !matches!(&*self.state.borrow(), State::Failed { .. })
    }

    /// It had started, and its connection has ended or failed since; or its
    /// start ended without saying how (its task panicked).
    fn stopped(&self) -> bool {
        match &*self.state.borrow() {
            State::Ready(connected) => connected.stopped(),
            State::Starting => self.state.has_changed().is_err(),
            State::Failed { .. } => false,
        }
    }

    /// How many tools it would give the model, if there were room.
    fn tools_wanted(&self) -> usize {
        match &*self.state.borrow() {
            State::Ready(connected) => tools::givable(connected),
            _ => 0,
        }
    }

    /// Its start failed, and long enough ago to try again: the wait after
    /// `retry_after` doubles with every failure in a row. A refused server
    /// (SSE) would fail the same way every time.
    fn due_for_retry(&self, retry_after: Duration, now: Instant) -> bool {
        if matches!(self.launch, Launch::Sse { .. }) {
            return false;
        }
        match &*self.state.borrow() {
            State::Failed { at, .. } => now >= *at + retry_wait(retry_after, self.failed_before),
            _ => false,
        }
    }
}

/// How long to wait before trying a server again, after `failed_before`
/// failures in a row and one more.
pub(super) fn retry_wait(retry_after: Duration, failed_before: u32) -> Duration {
    let doubled = retry_after.saturating_mul(1 << failed_before.min(16));
    doubled.min(MOST_RETRY_WAIT.max(retry_after))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(starting) = &self.starting {
            starting.abort();
        }
    }
}

impl Launch {
    /// What "always" answers about its tools are kept under: the program
    /// and its arguments, or the URL without its query; not the environment
    /// or headers, whose tokens change. Hashed, as arguments may hold a
    /// secret, with a hash that stays the same from one Punie to the next.
    fn key(&self) -> String {
        let said = match self {
            Self::Stdio { command, args, .. } => {
                let mut said = command.display().to_string();
                for arg in args {
                    said.push('\0');
                    said.push_str(arg);
                }
                said
            }
            Self::Http { url, .. } | Self::Sse { url } => connection::shown_url(url),
        };
        hex::encode(&Sha256::digest(said.as_bytes())[..8])
    }
}

impl McpServers {
    pub fn new(cwd: PathBuf, timeouts: McpTimeouts) -> Self {
        Self {
            cwd,
            timeouts,
            retry_after: RETRY_AFTER,
            servers: Mutex::default(),
        }
    }

    /// Start the servers a client named, unless they run already. Returns
    /// what could not be started at all, for the log (the next turn tells
    /// the person too).
    pub fn offer(&self, offered: &[McpServer]) -> Vec<String> {
        let mut refused = Vec::new();
        let mut named = std::collections::HashSet::new();
        for server in offered {
            let Some((name, launch)) = requested(server) else {
                refused.push("an MCP server of a kind Punie does not know".to_owned());
                continue;
            };
            if matches!(launch, Launch::Sse { .. }) {
                refused.push(format!("MCP server `{name}`: {SSE_REFUSED}"));
            }
            if !named.insert(name.clone()) {
                refused.push(format!(
                    "two MCP servers are named `{name}`; the last one given is used"
                ));
            }
            self.start(name, launch);
        }
        refused
    }

    /// Start `launch` as server `name`, unless it runs (or is starting)
    /// already: another launch under the same name replaces the server, and
    /// one that failed or stopped is started again. An SSE server is kept
    /// as refused, to be told once.
    fn start(&self, name: String, launch: Launch) {
        let refused = matches!(launch, Launch::Sse { .. });
        let mut servers = self.lock();
        if servers.iter().any(|server| {
            server.name == name && server.launch == launch && (refused || server.usable())
        }) {
            return;
        }
        servers.retain(|server| server.name != name);
        let server = if refused {
            refused_server(name, launch, SSE_REFUSED)
        } else {
            self.start_in_background(name, launch, 0)
        };
        servers.push(server);
    }

    /// A server whose start runs in a task of its own; `failed_before`
    /// starts of it failed in a row before.
    fn start_in_background(&self, name: String, launch: Launch, failed_before: u32) -> Arc<Server> {
        let (tell, state) = watch::channel(State::Starting);
        let cwd = self.cwd.clone();
        let start_timeout = self.timeouts.start;
        let (task_name, task_launch) = (name.clone(), launch.clone());
        let starting = tokio::spawn(async move {
            let connecting = connection::connect(&task_name, &task_launch, &cwd);
            let outcome = match tokio::time::timeout(start_timeout, connecting).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "it did not start within {} s (--mcp-start-timeout)",
                    start_timeout.as_secs_f64()
                )),
            };
            let state = match outcome {
                Ok(connected) => {
                    let tools = connected.tools().len();
                    tracing::info!(mcp = task_name, tools, "MCP server started");
                    State::Ready(Arc::new(connected))
                }
                Err(why) => {
                    tracing::warn!(mcp = task_name, "MCP server could not start: {why}");
                    State::Failed {
                        why: why.into(),
                        at: Instant::now(),
                    }
                }
            };
            let _ = tell.send(state);
        })
        .abort_handle();
        Arc::new(Server {
            name,
            launch,
            state,
            failed_before,
            told: AtomicBool::new(false),
            starting: Some(starting),
        })
    }

    /// Start again every server that stopped since it started (it crashed,
    /// say), and every one whose failed start is old enough to try again,
    /// so that the turn about to begin has their tools.
    fn restart_stopped(&self) {
        let now = Instant::now();
        let mut servers = self.lock();
        for server in servers.iter_mut() {
            let failed_before = if server.stopped() {
                tracing::info!(mcp = server.name, "MCP server stopped; starting it again");
                0
            } else if server.due_for_retry(self.retry_after, now) {
                tracing::info!(mcp = server.name, "trying the MCP server again");
                server.failed_before + 1
            } else {
                continue;
            };
            let (name, launch) = (server.name.clone(), server.launch.clone());
            *server = self.start_in_background(name, launch, failed_before);
        }
    }

    /// The tools of every server that has started, once none is starting
    /// any more; and, once per server, why one could not start or what of
    /// it the model is not given.
    pub async fn tools(&self) -> (McpTools, Vec<String>) {
        self.restart_stopped();
        loop {
            let servers = self.lock().clone();
            settle(&servers).await;
            // A client may have named servers meanwhile: wait for them too.
            if self.unchanged_since(&servers) {
                return self.collect(&servers);
            }
        }
    }

    /// The tools of `servers`, and what to tell the person about them. Not
    /// async: a cancelled turn cannot mark a note told without telling it.
    fn collect(&self, servers: &[Arc<Server>]) -> (McpTools, Vec<String>) {
        let mut tools = McpTools::default();
        let mut notes = Vec::new();
        let mut shares = tools::fair_shares(
            &servers
                .iter()
                .map(|server| server.tools_wanted())
                .collect::<Vec<_>>(),
        )
        .into_iter();
        for server in servers {
            let share = shares.next().unwrap_or(0);
            let said = match &*server.state.borrow() {
                State::Ready(connected) => {
                    let left_out = tools.add(&server.name, connected, self.timeouts.call, share);
                    let back = (server.failed_before > 0).then(|| {
                        format!(
                            "MCP server `{}` is back: its tools are offered again.",
                            server.name
                        )
                    });
                    back.into_iter().chain(left_out).collect()
                }
                // Told of the first failure in a row only.
                State::Failed { why, .. } if server.failed_before == 0 => {
                    vec![format!(
                        "MCP server `{}` could not start: {why}{}",
                        server.name,
                        retried_note(&server.launch)
                    )]
                }
                State::Failed { .. } | State::Starting => Vec::new(),
            };
            if !said.is_empty() && !server.told.swap(true, Ordering::Relaxed) {
                for note in said {
                    tracing::info!("told the person: {note}");
                    notes.push(note);
                }
            }
        }
        (tools, notes)
    }

    /// Whether the session's servers are still `servers`.
    fn unchanged_since(&self, servers: &[Arc<Server>]) -> bool {
        let now = self.lock();
        now.len() == servers.len() && now.iter().zip(servers).all(|(a, b)| Arc::ptr_eq(a, b))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Server>>> {
        self.servers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Wait until none of `servers` is starting; list again the tools of those
/// that said theirs changed.
async fn settle(servers: &[Arc<Server>]) {
    for server in servers {
        let mut state = server.state.clone();
        let settled = state
            .wait_for(|state| !matches!(state, State::Starting))
            .await
            .map(|state| state.clone());
        if let Ok(State::Ready(connected)) = settled {
            connected.refresh_tools(&server.name).await;
        }
    }
}

/// The name and launch of a server a client named; `None` for a kind Punie
/// does not know.
fn requested(server: &McpServer) -> Option<(String, Launch)> {
    let pairs = |pairs: &mut dyn Iterator<Item = (&String, &String)>| {
        pairs
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    };
    Some(match server {
        McpServer::Stdio(stdio) => (
            stdio.name.clone(),
            Launch::Stdio {
                command: stdio.command.clone(),
                args: stdio.args.clone(),
                env: pairs(&mut stdio.env.iter().map(|var| (&var.name, &var.value))),
            },
        ),
        McpServer::Http(http) => (
            http.name.clone(),
            Launch::Http {
                url: http.url.clone(),
                headers: pairs(&mut http.headers.iter().map(|h| (&h.name, &h.value))),
            },
        ),
        McpServer::Sse(sse) => (
            sse.name.clone(),
            Launch::Sse {
                url: sse.url.clone(),
            },
        ),
        _ => return None,
    })
}

/// What the person is told about a server that could not start, after why:
/// that it is tried again, unless it never could start.
fn retried_note(launch: &Launch) -> &'static str {
    match launch {
        Launch::Sse { .. } => "",
        _ => " (it is tried again at later turns)",
    }
}

/// A server that was refused before it could start: told once, like one
/// that failed.
fn refused_server(name: String, launch: Launch, why: &str) -> Arc<Server> {
    let (_, state) = watch::channel(State::Failed {
        why: why.into(),
        at: Instant::now(),
    });
    Arc::new(Server {
        name,
        launch,
        state,
        failed_before: 0,
        told: AtomicBool::new(false),
        starting: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("punie-mcp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    /// The test MCP server (tests/mcp/server.mjs, on Node) started through a
    /// shell, once the file `ready` is in its working directory; until then
    /// it fails to start.
    fn ready_when_told() -> Launch {
        let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("node"))
            .find(|path| path.is_file())
            .expect("node on the PATH");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.mjs");
        Launch::Stdio {
            command: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".to_owned(),
                r#"test -f ready && exec "$0" "$1"; echo not ready >&2; exit 1"#.to_owned(),
                node.display().to_string(),
                script.display().to_string(),
            ],
            env: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_server_that_could_not_start_is_tried_again_later_and_told_back() {
        let workspace = scratch("retry");
        let mut servers = McpServers::new(
            workspace.clone(),
            McpTimeouts {
                start: Duration::from_secs(10),
                call: Duration::from_secs(10),
            },
        );
        servers.retry_after = Duration::from_millis(500);
        servers.start("flaky".to_owned(), ready_when_told());

        let (tools, notes) = servers.tools().await;
        assert!(tools.is_empty());
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("MCP server `flaky` could not start: "),
            "{notes:?}"
        );
        assert!(
            notes[0].ends_with("(it is tried again at later turns)"),
            "{notes:?}"
        );

        std::fs::write(workspace.join("ready"), "").expect("a file");
        let (tools, notes) = servers.tools().await;
        assert!(
            tools.is_empty() && notes.is_empty(),
            "not tried again so soon"
        );

        tokio::time::sleep(Duration::from_millis(600)).await;
        let (tools, notes) = servers.tools().await;
        assert!(
            tools.get("mcp__flaky__add").is_some(),
            "tried again, it started"
        );
        assert_eq!(
            notes,
            ["MCP server `flaky` is back: its tools are offered again."]
        );
        let (_, notes) = servers.tools().await;
        assert!(notes.is_empty(), "told once: {notes:?}");
        let _ = std::fs::remove_dir_all(&workspace);
    }

    #[test]
    fn a_failing_server_is_tried_less_and_less_often() {
        let first = Duration::from_secs(30);
        assert_eq!(retry_wait(first, 0), first);
        assert_eq!(retry_wait(first, 1), Duration::from_secs(60));
        assert_eq!(retry_wait(first, 3), Duration::from_secs(240));
        assert_eq!(retry_wait(first, 4), MOST_RETRY_WAIT);
        assert_eq!(retry_wait(first, 100), MOST_RETRY_WAIT);
    }

    #[test]
    fn answers_are_kept_by_program_and_arguments_not_by_tokens() {
        let stdio = |args: &[&str], token: &str| Launch::Stdio {
            command: PathBuf::from("/usr/bin/npx"),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: vec![("TOKEN".to_owned(), token.to_owned())],
        };
        assert_eq!(stdio(&["a"], "one").key(), stdio(&["a"], "two").key());
        assert_ne!(stdio(&["a"], "one").key(), stdio(&["b"], "one").key());
        assert_ne!(
            stdio(&["a b"], "one").key(),
            stdio(&["a", "b"], "one").key()
        );
        let http = |url: &str| Launch::Http {
            url: url.to_owned(),
            headers: Vec::new(),
        };
        assert_eq!(
            http("https://x/mcp?key=1").key(),
            http("https://x/mcp?key=2").key()
        );
        assert_eq!(http("https://x/mcp").key().len(), 16);
    }
}
