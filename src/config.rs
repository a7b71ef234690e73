//! Configuration: where Punie keeps its files and the settings and limits of
//! `punie serve`.
//!
//! Every file Punie writes lives under the XDG base directories
//! (`XDG_STATE_HOME`, `XDG_DATA_HOME`, `XDG_CONFIG_HOME`, with the usual
//! `~/.local/state`, `~/.local/share` and `~/.config` fallbacks), so pointing
//! those variables at a temporary directory isolates a test completely.
//!
//! The user's settings file, `$XDG_CONFIG_HOME/punie/config.toml`, gives
//! `punie serve` other defaults: its `[serve]` table holds flags of `punie
//! serve` by their long names (`max-connections = 8192`), the global
//! `log-level` and `log-file` included. A flag on the
//! command line wins over an environment variable, which wins over the file.
//! This module resolves paths, reads that file and holds values; applying the
//! settings to the command line is [`crate::cli`]'s business.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use etcetera::BaseStrategy as _;

/// Largest JSON-RPC message (one WebSocket message) accepted, unless
/// configured otherwise; the clients use it too.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The response header of a WebSocket upgrade that tells a client the
/// largest message the server takes (`--max-message-bytes`): a client can
/// refuse a bigger one itself, with an answer, rather than lose its
/// connection to it.
pub const MESSAGE_LIMIT_HEADER: &str = "punie-max-message-bytes";

/// Most bytes `punie ask --attach` sends, all files together: in base64,
/// with the prompt, they stay under [`MAX_MESSAGE_BYTES`].
pub const MAX_ATTACHED_BYTES: u64 = 32 * 1024 * 1024;

/// Most connections the server holds at once, unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Most messages waiting to be written to one client, unless configured otherwise.
pub const DEFAULT_OUTGOING_QUEUE: usize = 4096;

/// Most bytes of messages that may wait for one client behind its full
/// outgoing queue, unless configured otherwise: a client further behind is
/// disconnected at once, whatever the stall.
pub const DEFAULT_OUTGOING_BYTES: usize = 256 * 1024 * 1024;

/// How long a client may stay behind with its outgoing queue full before it
/// is disconnected, unless configured otherwise.
pub const DEFAULT_OUTGOING_STALL: Duration = Duration::from_secs(10);

/// How long a client may take to answer `fs/*` and `terminal/*` requests,
/// unless configured otherwise. Permission requests wait for the person.
pub const DEFAULT_CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a tool of an MCP server may take, unless configured otherwise.
pub const DEFAULT_MCP_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long an MCP server may take to start and list its tools, unless
/// configured otherwise: a first `npx -y` or `docker run` downloads it.
pub const DEFAULT_MCP_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the server pings each WebSocket, unless configured otherwise.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);

/// How long a WebSocket may stay silent (no pong, no message) before it is
/// dropped, unless configured otherwise.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection may take to send a request's headers, or sit idle
/// between requests, unless configured otherwise. Without it a connection
/// that never finishes a request would hold a socket for ever, and it needs
/// no token to do so. An open WebSocket is past it.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server waits for a client to answer its close frame.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a graceful shutdown waits for connections to finish before exiting anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Rounds of tool calls a turn may take unless configured otherwise.
pub const DEFAULT_MAX_TOOL_ROUNDS: usize = 50;

/// Context window reported with token usage unless configured otherwise.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 128_000;

/// Most sessions one `session/list` page returns.
pub const SESSION_LIST_PAGE: usize = 100;

/// How long a turn whose client has gone waits for another to attach when
/// it needs one, unless configured otherwise.
pub const DEFAULT_REATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// How long an attached session may sit idle before its conversation leaves
/// memory, unless configured otherwise. Short on purpose: reading a
/// conversation back costs milliseconds at most (a session of 10,000 updates
/// replays in under 10 ms), far less than a model call, while holding every
/// idle conversation makes a server with thousands of sessions grow with all
/// they ever said. Two seconds still spares a client prompting back to back
/// the read.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the server looks for idle sessions to evict.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

/// The settings of one `punie serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind; loopback unless the user says otherwise.
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Other names clients reach the server by (a reverse proxy's).
    pub allowed_hosts: Vec<String>,
    /// The model new sessions use, e.g. `test`.
    pub model: String,
    /// More models clients may pick for a session, e.g. `openai:gpt-5`.
    pub offered_models: Vec<String>,
    /// How patient the model's provider is.
    pub model_settings: crate::model::ModelSettings,
    /// Rounds of tool calls one turn may take.
    pub max_tool_rounds: usize,
    /// The model's context window in tokens, reported with token usage.
    pub context_window: u64,
    /// How long a turn waits for a client to attach when it needs one.
    pub reattach_timeout: Duration,
    /// How long an attached session may sit idle before its conversation
    /// leaves memory.
    pub session_idle_timeout: Duration,
    /// How long a tool of an MCP server may take.
    pub mcp_call_timeout: Duration,
    /// How long an MCP server may take to start.
    pub mcp_start_timeout: Duration,
    /// What one connection may cost the server.
    pub limits: ConnectionLimits,
    /// Where the server keeps its files.
    pub paths: Paths,
}

/// What one connection may cost the server, and how long it may keep it waiting.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Largest message; a bigger one closes the connection with 1009.
    pub max_message_bytes: usize,
    /// Most connections at once; past it, upgrades get 503.
    pub max_connections: usize,
    /// Most messages waiting to be written to one client.
    pub outgoing_queue: usize,
    /// How long a client may stay behind with that queue full before it is
    /// disconnected.
    pub outgoing_stall: Duration,
    /// Most bytes that may wait for a client behind that queue.
    pub outgoing_bytes: usize,
    /// How long a client may take to answer `fs/*` and `terminal/*`.
    pub client_request_timeout: Duration,
    /// How often each WebSocket is pinged.
    pub ping_interval: Duration,
    /// How long a WebSocket may stay silent before it is dropped.
    pub pong_timeout: Duration,
    /// How long a connection may take over a request's headers, or sit idle
    /// between requests.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            outgoing_queue: DEFAULT_OUTGOING_QUEUE,
            outgoing_stall: DEFAULT_OUTGOING_STALL,
            outgoing_bytes: DEFAULT_OUTGOING_BYTES,
            client_request_timeout: DEFAULT_CLIENT_REQUEST_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The directories Punie writes to, resolved once from the environment.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$XDG_STATE_HOME/punie`: the running server's record and the access token.
    pub state_dir: PathBuf,
    /// `$XDG_DATA_HOME/punie`: stored sessions.
    pub data_dir: PathBuf,
    /// `$XDG_CONFIG_HOME/punie`: user settings.
    pub config_dir: PathBuf,
}

impl Paths {
    /// Resolve the Punie directories from the XDG variables and the home directory.
    pub fn from_env() -> anyhow::Result<Self> {
        let xdg = etcetera::base_strategy::Xdg::new()
            .context("cannot find the home directory to place Punie's files under")?;
        let state_home = xdg
            .state_dir()
            .unwrap_or_else(|| xdg.home_dir().join(".local/state"));
        Ok(Self {
            state_dir: state_home.join("punie"),
            data_dir: xdg.data_dir().join("punie"),
            config_dir: xdg.config_dir().join("punie"),
        })
    }

    /// The record of the running server: `server.json`.
    pub fn server_file(&self) -> PathBuf {
        self.state_dir.join("server.json")
    }

    /// The session store.
    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join("punie.db")
    }

    /// The access token clients present to the server.
    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join("token")
    }

    /// The user's own instructions to the model, for every project.
    pub fn user_instructions_file(&self) -> PathBuf {
        self.config_dir
            .join(crate::session::instructions::PROJECT_FILE)
    }

    /// The user's settings: `config.toml`.
    pub fn settings_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
}

/// One setting of the settings file: a flag's long name and its values.
pub type Setting = (String, Vec<String>);

/// The settings file could not be used; the message says where and why.
#[derive(Debug, thiserror::Error)]
#[error("the settings file {}: {problem}", path.display())]
pub struct SettingsError {
    path: PathBuf,
    problem: String,
}

impl SettingsError {
    /// A problem with the file at `path`, in words.
    pub fn new(path: &Path, problem: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The `[serve]` settings of the file at `path`; none when there is no file.
pub fn serve_settings(path: &Path) -> Result<Vec<Setting>, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(SettingsError::new(path, error.to_string())),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| SettingsError::new(path, error.to_string()))?;
    let mut settings = Vec::new();
    for (section, value) in table {
        let toml::Value::Table(serve) = value else {
            return Err(SettingsError::new(
                path,
                format!("`{section}` is not a table; settings go under [serve]"),
            ));
        };
        if section != "serve" {
            return Err(SettingsError::new(
                path,
                format!("there is no [{section}] table; settings go under [serve]"),
            ));
        }
        for (name, value) in serve {
            let values = setting_values(&value).ok_or_else(|| {
                SettingsError::new(
                    path,
                    format!("[serve] {name} must be a number, a string, true or false, or a list of them"),
                )
            })?;
            settings.push((name, values));
        }
    }
    Ok(settings)
}

/// A setting's values as the command line would give them.
fn setting_values(value: &toml::Value) -> Option<Vec<String>> {
    let one = |value: &toml::Value| match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) => items.iter().map(one).collect(),
        single => one(single).map(|value| vec![value]),
    }
}
