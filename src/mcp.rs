//! The MCP servers a client hands a session (`mcpServers` in `session/new`,
//! `session/load` and `session/resume`): Punie starts each one — a process
//! for stdio, a connection for HTTP — lists its tools for the model, and
//! calls them.
//!
//! A session's servers live as long as the session is in memory: they start
//! in the background when a client names them (a turn waits for them, within
//! [`START_TIMEOUT`]), and stop when the session leaves memory or the server
//! stops; a stdio server's process group is killed with it, and the process
//! dies with Punie even by `kill -9`. Servers are known by name: a client that
//! names one again with the same launch keeps it running (or starts it again,
//! if it failed), with another launch replaces it. One that stops on its own
//! is started again for the next turn.
//!
//! This module speaks MCP only, through the official SDK (`rmcp`); how a call
//! is shown to the person and permitted is the tools module's business.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client_protocol::v1::schema::McpServer;
use process_wrap::tokio::{CommandWrap, ProcessGroup};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, ResourceContents,
};
use rmcp::service::{ClientInitializeError, NotificationContext, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt as _};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, Signal};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::watch;

use crate::model::ToolSpec;

/// How long a server may take to start and list its tools.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What every MCP tool's name starts with, as the model knows it.
pub const PREFIX: &str = "mcp__";

/// The longest tool name model providers accept.
const NAME_LIMIT: usize = 64;

/// Why an SSE server is not started.
const SSE_REFUSED: &str =
    "it speaks the old SSE transport, which Punie does not; give its Streamable HTTP URL instead";

/// The most MCP tools the model is given, with Punie's own: OpenAI takes
/// at most 128 in a request.
const MOST_TOOLS: usize = 100;

/// Lines of a stdio server's stderr kept to explain why it failed, and the
/// most of each line kept.
const STDERR_LINES: usize = 5;
const STDERR_LINE_BYTES: usize = 200;

/// The MCP servers of one session.
pub struct McpServers {
    /// Where stdio servers run: the session's workspace.
    cwd: PathBuf,
    /// How long one tool call may take.
    call_timeout: Duration,
    servers: Mutex<Vec<Arc<Server>>>,
}

/// One server, starting or started.
struct Server {
    name: String,
    launch: Launch,
    state: watch::Receiver<State>,
    /// Whether a failure to start has been told to a person already.
    told: AtomicBool,
    /// Starts the server; aborted if it is dropped before then.
    starting: Option<tokio::task::AbortHandle>,
}

impl Server {
    /// Starting, or started and still connected.
    fn usable(&self) -> bool {
        match &*self.state.borrow() {
            State::Starting => true,
            State::Ready(connected) => !connected.stopped(),
            State::Failed(_) => false,
        }
    }

    /// It had started, and its connection has ended since.
    fn stopped(&self) -> bool {
        matches!(&*self.state.borrow(), State::Ready(connected) if connected.stopped())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(starting) = &self.starting {
            starting.abort();
        }
    }
}

/// How a client asked for a server to be reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    Failed(Arc<str>),
}

/// A started server and the tools it offered.
struct Connected {
    /// Dropping it ends the connection.
    service: RunningService<RoleClient, Client>,
    /// As last listed: again after the server says they changed.
    tools: Mutex<Arc<Vec<rmcp::model::Tool>>>,
    tools_changed: Arc<AtomicBool>,
    /// A call failed in its transport, or got no answer: a new connection
    /// is made for the next turn (an HTTP server that restarted forgets its
    /// sessions; rmcp does not find out).
    broken: AtomicBool,
    /// A stdio server's process group, killed when dropped (after the
    /// connection: fields drop in order).
    group: Option<Group>,
    /// "Always" answers to a tool of this server are kept under its name and
    /// this: another server under the same name is asked about again.
    launch_hash: u64,
}

/// A stdio server's process group, led by the process Punie started.
struct Group {
    leader: Pid,
    /// The leader, to tell whether it still runs: while it does, its pid
    /// (the group's id) cannot have been reused.
    pidfd: Option<OwnedFd>,
}

impl Connected {
    fn tools(&self) -> Arc<Vec<rmcp::model::Tool>> {
        self.tools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// List the tools again if the server said they changed; if that fails,
    /// the last list stays.
    async fn refresh_tools(&self, server: &str) {
        if !self.tools_changed.swap(false, Ordering::Relaxed) {
            return;
        }
        match tokio::time::timeout(START_TIMEOUT, self.service.list_all_tools()).await {
            Ok(Ok(tools)) => {
                tracing::info!(
                    mcp = server,
                    tools = tools.len(),
                    "MCP server's tools changed"
                );
                *self
                    .tools
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tools);
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    mcp = server,
                    "cannot list the MCP server's changed tools: {error}"
                );
            }
            Err(_) => tracing::warn!(
                mcp = server,
                "the MCP server did not list its changed tools"
            ),
        }
    }

    /// Its connection has ended or failed, or its process has.
    fn stopped(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
            || self.service.is_transport_closed()
            || self
                .group
                .as_ref()
                .is_some_and(|group| group.leader_ended() == Some(true))
    }
}

impl Drop for Group {
    /// The whole group goes at once: whatever the server started goes with
    /// it. (rmcp kills it too, from a task, when the connection's task ends:
    /// that does not happen while the runtime stops.) Not once the leader has
    /// ended: rmcp reaps it, and the id may then be another group's.
    fn drop(&mut self) {
        if self.leader_ended() == Some(false) {
            let _ = rustix::process::kill_process_group(self.leader, Signal::KILL);
        }
    }
}

impl Group {
    fn new(leader: Pid) -> Self {
        let pidfd = rustix::process::pidfd_open(leader, rustix::process::PidfdFlags::empty()).ok();
        Self { leader, pidfd }
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

/// The MCP tools one turn may call, fixed when it starts.
#[derive(Default, Clone)]
pub struct McpTools {
    tools: Vec<McpTool>,
}

/// One tool of an MCP server, as the model knows it.
#[derive(Clone)]
pub struct McpTool {
    /// `mcp__<server>__<tool>`, in the characters providers accept.
    pub name: String,
    pub server: String,
    /// The tool's own name, as its server knows it.
    tool: String,
    /// How the person is shown it.
    pub title: String,
    /// The server says calling it changes nothing.
    pub read_only: bool,
    /// What an "always" answer about it is kept under.
    pub permission_key: String,
    description: String,
    schema: Value,
    call_timeout: Duration,
    connected: Arc<Connected>,
}

/// What a tool call produced.
pub struct McpResult {
    /// The result as text, for the model.
    pub text: String,
    /// Images the tool returned (base64 data, MIME type), for the person.
    pub images: Vec<(String, String)>,
    /// The tool says it failed.
    pub is_error: bool,
}

impl McpServers {
    pub fn new(cwd: PathBuf, call_timeout: Duration) -> Self {
        Self {
            cwd,
            call_timeout,
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
            let (name, launch) = match server {
                McpServer::Stdio(stdio) => (
                    stdio.name.clone(),
                    Launch::Stdio {
                        command: stdio.command.clone(),
                        args: stdio.args.clone(),
                        env: stdio
                            .env
                            .iter()
                            .map(|var| (var.name.clone(), var.value.clone()))
                            .collect(),
                    },
                ),
                McpServer::Http(http) => (
                    http.name.clone(),
                    Launch::Http {
                        url: http.url.clone(),
                        headers: http
                            .headers
                            .iter()
                            .map(|header| (header.name.clone(), header.value.clone()))
                            .collect(),
                    },
                ),
                McpServer::Sse(sse) => {
                    refused.push(format!("MCP server `{}`: {SSE_REFUSED}", sse.name));
                    let launch = Launch::Sse {
                        url: sse.url.clone(),
                    };
                    (sse.name.clone(), launch)
                }
                _ => {
                    refused.push("an MCP server of a kind Punie does not know".to_owned());
                    continue;
                }
            };
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
            self.launch(name, launch)
        };
        servers.push(server);
    }

    /// Begin starting a server, in the background.
    fn launch(&self, name: String, launch: Launch) -> Arc<Server> {
        let (tell, state) = watch::channel(State::Starting);
        let cwd = self.cwd.clone();
        let (task_name, task_launch) = (name.clone(), launch.clone());
        let starting = tokio::spawn(async move {
            let connecting = connect(&task_name, &task_launch, &cwd);
            let outcome = match tokio::time::timeout(START_TIMEOUT, connecting).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "it did not start within {} s",
                    START_TIMEOUT.as_secs()
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
                    State::Failed(why.into())
                }
            };
            let _ = tell.send(state);
        })
        .abort_handle();
        Arc::new(Server {
            name,
            launch,
            state,
            told: AtomicBool::new(false),
            starting: Some(starting),
        })
    }

    /// Start again every server that stopped since it started (it crashed,
    /// say), so that the turn about to begin has its tools.
    fn restart_stopped(&self) {
        let mut servers = self.lock();
        for server in servers.iter_mut() {
            if server.stopped() {
                tracing::info!(mcp = server.name, "MCP server stopped; starting it again");
                *server = self.launch(server.name.clone(), server.launch.clone());
            }
        }
    }

    /// The tools of every server that has started, once none is starting
    /// any more; and, once per server, why one could not start or what of
    /// it the model is not given.
    pub async fn tools(&self) -> (McpTools, Vec<String>) {
        self.restart_stopped();
        loop {
            let servers = self.lock().clone();
            for server in &servers {
                let mut state = server.state.clone();
                let settled = state
                    .wait_for(|state| !matches!(state, State::Starting))
                    .await
                    .map(|state| state.clone());
                if let Ok(State::Ready(connected)) = settled {
                    connected.refresh_tools(&server.name).await;
                }
            }
            // A client may have named servers meanwhile: wait for them too.
            if !self.are(&servers) {
                continue;
            }
            // Nothing is awaited from here on, so a cancelled turn cannot
            // mark a note told without telling it.
            let mut tools = McpTools::default();
            let mut notes = Vec::new();
            for server in &servers {
                let note = match &*server.state.borrow() {
                    State::Ready(connected) => {
                        tools.add(&server.name, connected, self.call_timeout)
                    }
                    State::Failed(why) => Some(format!(
                        "MCP server `{}` could not start: {why}",
                        server.name
                    )),
                    State::Starting => None,
                };
                if let Some(note) = note
                    && !server.told.swap(true, Ordering::Relaxed)
                {
                    tracing::info!("told the person: {note}");
                    notes.push(note);
                }
            }
            return (tools, notes);
        }
    }

    /// Whether the session's servers are still `servers`.
    fn are(&self, servers: &[Arc<Server>]) -> bool {
        let now = self.lock();
        now.len() == servers.len() && now.iter().zip(servers).all(|(a, b)| Arc::ptr_eq(a, b))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Server>>> {
        self.servers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl McpTools {
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&McpTool> {
        self.tools.iter().find(|tool| tool.name == name)
    }

    /// The tools as the model is told about them.
    pub fn specs(&self) -> impl Iterator<Item = ToolSpec> + '_ {
        self.tools.iter().map(|tool| ToolSpec {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: tool.schema.clone(),
        })
    }

    /// Add the tools of `server`, as many as the model may be given;
    /// what is left out, and why, if anything is.
    fn add(
        &mut self,
        server: &str,
        connected: &Arc<Connected>,
        call_timeout: Duration,
    ) -> Option<String> {
        let mut left_out = Vec::new();
        for tool in connected.tools().iter() {
            let name = exposed_name(server, &tool.name);
            let Some(schema) = arguments_schema(&tool.input_schema) else {
                left_out.push(format!(
                    "`{}` (its input schema is not an object's)",
                    tool.name
                ));
                continue;
            };
            if let Some(other) = self.get(&name) {
                left_out.push(format!(
                    "`{}` (as {name}, it would have the name of `{}` of server `{}`)",
                    tool.name, other.tool, other.server
                ));
                continue;
            }
            if self.tools.len() == MOST_TOOLS {
                left_out.push(format!("`{}` (past {MOST_TOOLS} MCP tools)", tool.name));
                continue;
            }
            let title = tool
                .title
                .clone()
                .or_else(|| {
                    tool.annotations
                        .as_ref()
                        .and_then(|notes| notes.title.clone())
                })
                .unwrap_or_else(|| tool.name.to_string());
            self.tools.push(McpTool {
                permission_key: format!("{name}#{:016x}", connected.launch_hash),
                name,
                server: server.to_owned(),
                tool: tool.name.to_string(),
                title,
                read_only: tool
                    .annotations
                    .as_ref()
                    .and_then(|notes| notes.read_only_hint)
                    .unwrap_or(false),
                description: tool.description.as_deref().unwrap_or_default().to_owned(),
                schema,
                call_timeout,
                connected: connected.clone(),
            });
        }
        if left_out.is_empty() {
            return None;
        }
        Some(format!(
            "MCP server `{server}`: the model is not given {}",
            left_out.join(", ")
        ))
    }
}

impl McpTool {
    /// Call the tool with the model's `arguments`. Dropping the future
    /// cancels the call on the server.
    pub async fn call(&self, arguments: &Value) -> Result<McpResult, String> {
        let arguments = match arguments {
            Value::Object(object) => Some(object.clone()),
            Value::Null => None,
            Value::String(raw) => {
                return Err(format!(
                    "the arguments of {} are not valid JSON: {raw}",
                    self.name
                ));
            }
            other => {
                return Err(format!(
                    "the arguments of {} must be a JSON object, not {other}",
                    self.name
                ));
            }
        };
        let mut params = CallToolRequestParams::new(self.tool.clone());
        params.arguments = arguments;
        let calling = self.connected.service.call_tool(params);
        let Ok(answer) = tokio::time::timeout(self.call_timeout, calling).await else {
            self.connected.broken.store(true, Ordering::Relaxed);
            return Err(format!(
                "the MCP server `{}` did not answer within {} s; it is connected again for the next turn",
                self.server,
                self.call_timeout.as_secs_f64()
            ));
        };
        answer.map(result).map_err(|error| {
            let why = match error {
                // The server's own answer: the connection is fine.
                ServiceError::McpError(error) => error.message.to_string(),
                ServiceError::TransportSend(error) => {
                    self.connected.broken.store(true, Ordering::Relaxed);
                    format!(
                        "the request could not be sent ({}); it is connected again for the next turn",
                        error.error
                    )
                }
                ServiceError::TransportClosed => {
                    self.connected.broken.store(true, Ordering::Relaxed);
                    "its connection closed; it is started again for the next turn".to_owned()
                }
                other => other.to_string(),
            };
            format!("the MCP server `{}` failed the call: {why}", self.server)
        })
    }
}

/// A tool's result as the model reads it, and the images in it.
fn result(answer: CallToolResult) -> McpResult {
    let mut text = String::new();
    let mut images = Vec::new();
    for block in answer.content {
        if !text.is_empty() {
            text.push('\n');
        }
        match block {
            ContentBlock::Text(block) => text.push_str(&block.text),
            ContentBlock::Image(image) => {
                let _ = write!(text, "[an image, {}, shown to the user]", image.mime_type);
                images.push((image.data, image.mime_type));
            }
            ContentBlock::Audio(audio) => {
                let _ = write!(text, "[audio, {}, not shown]", audio.mime_type);
            }
            ContentBlock::Resource(embedded) => match embedded.resource {
                ResourceContents::TextResourceContents {
                    uri, text: body, ..
                } => {
                    let _ = write!(text, "[{uri}]\n{body}");
                }
                ResourceContents::BlobResourceContents { uri, .. } => {
                    let _ = write!(text, "[{uri}: binary content, not shown]");
                }
                _ => text.push_str("[a resource of a kind Punie does not read]"),
            },
            ContentBlock::ResourceLink(link) => {
                let _ = write!(text, "[resource: {}]", link.uri);
            }
            _ => text.push_str("[content of a kind Punie does not read]"),
        }
    }
    if text.is_empty()
        && let Some(structured) = answer.structured_content
    {
        text = structured.to_string();
    }
    McpResult {
        text,
        images,
        is_error: answer.is_error.unwrap_or(false),
    }
}

/// A tool's input schema as providers take it: an object's, with
/// `properties`, without `$schema` and without `anyOf`, `oneOf`, `allOf` or
/// `not` at the top (OpenAI and Anthropic refuse the whole request for
/// either); `None` for a schema of anything else, which no provider takes.
/// The properties the combinations name are kept, so the model still knows
/// every argument; which go together is the server's to check.
fn arguments_schema(input: &rmcp::model::JsonObject) -> Option<Value> {
    let mut schema = input.clone();
    schema.remove("$schema");
    schema.remove("not");
    match schema.get("type") {
        None => {
            schema.insert("type".to_owned(), Value::from("object"));
        }
        Some(kind) if kind == "object" => {}
        Some(_) => return None,
    }
    let mut properties = match schema.remove("properties") {
        Some(Value::Object(properties)) => properties,
        _ => serde_json::Map::new(),
    };
    for combination in ["anyOf", "oneOf", "allOf"] {
        let Some(Value::Array(branches)) = schema.remove(combination) else {
            continue;
        };
        for branch in branches {
            if let Some(Value::Object(named)) = branch.get("properties") {
                for (name, property) in named {
                    properties
                        .entry(name.clone())
                        .or_insert_with(|| property.clone());
                }
            }
            // What every branch of `allOf` requires, the whole requires.
            if combination == "allOf"
                && let Some(Value::Array(needed)) = branch.get("required")
            {
                let required = schema
                    .entry("required")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(required) = required {
                    for name in needed {
                        if !required.contains(name) {
                            required.push(name.clone());
                        }
                    }
                }
            }
        }
    }
    schema.insert("properties".to_owned(), Value::Object(properties));
    Some(Value::Object(schema))
}

/// A server's URL as it may be shown: without a query or credentials,
/// which often carry a secret.
fn shown_url(url: &str) -> String {
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

/// Why the MCP handshake failed, without the type names rmcp's own
/// messages carry.
fn initialize_error(error: ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, context } => {
            format!("{} while {context}", error.error)
        }
        other => other.to_string(),
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

/// A server that was refused before it could start: told once, like one
/// that failed.
fn refused_server(name: String, launch: Launch, why: &str) -> Arc<Server> {
    let (_, state) = watch::channel(State::Failed(why.into()));
    Arc::new(Server {
        name,
        launch,
        state,
        told: AtomicBool::new(false),
        starting: None,
    })
}

/// `mcp__<server>__<tool>`, with every character providers refuse made `_`,
/// and no longer than they accept.
fn exposed_name(server: &str, tool: &str) -> String {
    let tidy = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut name = format!("{PREFIX}{}__{}", tidy(server), tidy(tool));
    name.truncate(NAME_LIMIT);
    name
}

/// Punie's side of a connection to an MCP server: it says who it is, and
/// notes when the server's tools change; it offers nothing a server could
/// ask of it (roots, sampling, elicitation).
pub struct Client {
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

/// Start the server and list its tools, or say why that failed.
async fn connect(name: &str, launch: &Launch, cwd: &Path) -> Result<Connected, String> {
    let tools_changed = Arc::new(AtomicBool::new(false));
    let client = Client {
        tools_changed: tools_changed.clone(),
    };
    let (service, group) = match launch {
        Launch::Stdio { command, args, env } => {
            start_process(name, client, command, args, env, cwd).await?
        }
        Launch::Http { url, headers } => {
            let mut custom = std::collections::HashMap::new();
            for (name, value) in headers {
                let header = reqwest::header::HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
                let value = reqwest::header::HeaderValue::try_from(value.as_str())
                    .map_err(|_| format!("the value of header `{name}` is not valid in HTTP"))?;
                custom.insert(header, value);
            }
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            let service = client
                .serve(StreamableHttpClientTransport::from_config(config))
                .await
                .map_err(|error| {
                    let shown = shown_url(url);
                    let why = without_url(&initialize_error(error), url, &shown);
                    format!("could not connect to it at {shown}: {why}")
                })?;
            (service, None)
        }
        Launch::Sse { .. } => return Err("Punie does not speak the SSE transport".to_owned()),
    };
    let tools = service
        .list_all_tools()
        .await
        .map_err(|error| format!("it did not list its tools: {error}"))?;
    let mut hasher = std::hash::DefaultHasher::new();
    launch.hash(&mut hasher);
    Ok(Connected {
        service,
        tools: Mutex::new(Arc::new(tools)),
        tools_changed,
        broken: AtomicBool::new(false),
        group,
        launch_hash: hasher.finish(),
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
    let group = transport
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(Pid::from_raw)
        .map(Group::new);
    // From here, the group is killed if the server does not start.
    let said = Arc::new(Mutex::new(VecDeque::new()));
    let reading =
        stderr.map(|stderr| tokio::spawn(log_stderr(name.to_owned(), stderr, said.clone())));
    match client.serve(transport).await {
        Ok(service) => Ok((service, group)),
        Err(error) => {
            // The process has ended, or will as the transport goes: what it
            // said on the way out explains more than the protocol error.
            if let Some(reading) = reading {
                let _ = tokio::time::timeout(Duration::from_secs(1), reading).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_what_providers_accept() {
        assert_eq!(exposed_name("files", "read"), "mcp__files__read");
        assert_eq!(
            exposed_name("my server", "do.it/now"),
            "mcp__my_server__do_it_now"
        );
        let long = exposed_name(&"s".repeat(50), &"t".repeat(50));
        assert_eq!(long.len(), NAME_LIMIT);
    }

    fn object(value: Value) -> rmcp::model::JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn input_schemas_are_made_what_providers_take() {
        let given = object(serde_json::json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"a": {"type": "number"}},
        }));
        assert_eq!(
            arguments_schema(&given),
            Some(serde_json::json!({"type": "object", "properties": {"a": {"type": "number"}}}))
        );
        assert_eq!(
            arguments_schema(&object(serde_json::json!({}))),
            Some(serde_json::json!({"type": "object", "properties": {}}))
        );
        assert_eq!(
            arguments_schema(&object(serde_json::json!({"type": "string"}))),
            None
        );
    }

    #[test]
    fn top_level_combinations_become_plain_properties() {
        let given = object(serde_json::json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "anyOf": [
                {"properties": {"a": {"type": "number"}}, "required": ["a"]},
                {"properties": {"b": {"type": "number"}}, "required": ["b"]}
            ],
            "allOf": [{"properties": {"c": {"type": "string"}}, "required": ["c"]}],
            "not": {"required": ["d"]}
        }));
        assert_eq!(
            arguments_schema(&given),
            Some(serde_json::json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "a": {"type": "number"},
                    "b": {"type": "number"},
                    "c": {"type": "string"}
                },
                "required": ["c"]
            }))
        );
    }

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
