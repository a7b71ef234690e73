//! Configuration: where Punie keeps its files and the settings and limits of
//! `punie serve`.
//!
//! Every file Punie writes lives under the XDG base directories
//! (`XDG_STATE_HOME`, `XDG_DATA_HOME`, `XDG_CONFIG_HOME`, with the usual
//! `~/.local/state`, `~/.local/share` and `~/.config` fallbacks), so pointing
//! those variables at a temporary directory isolates a test completely. This
//! module only resolves paths and holds values; it does no other I/O.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use etcetera::BaseStrategy as _;

/// Largest JSON-RPC message (one WebSocket message) the server accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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
/// memory, unless configured otherwise.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the server looks for idle sessions to evict.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

/// The settings of one `punie serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind; loopback unless the user says otherwise.
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// The model new sessions use, e.g. `test`.
    pub model: String,
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
    /// Where the server keeps its files.
    pub paths: Paths,
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
}
