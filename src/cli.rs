//! The command line: parses arguments with clap, sets up logging and the
//! runtime, and hands over to the module that does the work. Every fatal error
//! ends here as one line on stderr, and every command's outcome becomes one of
//! the documented exit codes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::client::ask::{self, AskExit, AskOptions, Conversation, OutputFormat};
use crate::client::bridge::{self, BridgeExit, DEFAULT_DRAIN_TIMEOUT};
use crate::client::sessions;
use crate::client::status::{self, Outcome};
use crate::client::{SERVER_ENV, ServerUrl, Target};
use crate::config::{
    self, ConnectionLimits, DEFAULT_CLIENT_REQUEST_TIMEOUT, DEFAULT_CONTEXT_WINDOW,
    DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_TOOL_ROUNDS,
    DEFAULT_MCP_CALL_TIMEOUT, DEFAULT_MCP_START_TIMEOUT, DEFAULT_OUTGOING_BYTES,
    DEFAULT_OUTGOING_QUEUE, DEFAULT_OUTGOING_STALL, DEFAULT_PING_INTERVAL, DEFAULT_PONG_TIMEOUT,
    DEFAULT_REATTACH_TIMEOUT, DEFAULT_SESSION_IDLE_TIMEOUT, MAX_MESSAGE_BYTES, Paths, ServeConfig,
};
use crate::model::{Model, ModelError, ModelSettings};
use crate::tools::PermissionMode;
use crate::{editors, logging, server, web};

/// Where `punie serve --model` may come from instead.
const MODEL_ENV: &str = "PUNIE_MODEL";

/// How long, after the work is done, the runtime may take to stop its helper threads.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(100);

/// Exit statuses, as `--help` and the README document them.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// An error.
    pub const ERROR: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
    /// No server answers.
    pub const NO_SERVER: u8 = 3;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "\
Exit status: 0 done, 1 error, 2 usage, 3 no server answers, 130 interrupted (Ctrl-C); \
`punie ask` ended by SIGTERM or SIGHUP, 143 or 129.";

/// The bridge exits 1 however the server fails it, unreachable included: an
/// IDE reads only success or failure, and shows the message it was answered.
const BRIDGE_EXIT_CODES: &str = "\
Exit status (the bridge): 0 stdin ended and every answer owed was delivered, 1 error \
(no server answers, it refuses the token, or it goes away), 2 usage. Each command's \
--help gives its own.";

const STATUS_EXIT_CODES: &str = "\
Exit status: 0 a server answers, 1 error, 2 usage, 3 no server answers.";

const STOP_EXIT_CODES: &str = "\
Exit status: 0 stopped, 1 error (the recorded pid is not the server that answers, \
or it did not exit), 2 usage, 3 no server to stop (none recorded, or not the one given \
with --server, or it does not answer).";

/// Punie: a coding agent server that editors and people attach to.
///
/// Without a command, `punie` is the stdio bridge an IDE launches as its ACP
/// agent: ACP messages on stdin and stdout, carried to and from the server.
#[derive(Debug, Parser)]
#[command(name = "punie", version, about, after_help = BRIDGE_EXIT_CODES)]
pub struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) for Punie, or a
    /// full RUST_LOG-style directive. Overrides RUST_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Also write diagnostics to this file.
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,

    /// The server to talk to (ws://, wss://, http:// or https://). Default:
    /// the one recorded by `punie serve`, else ws://127.0.0.1:8000/acp.
    #[arg(long, global = true, env = SERVER_ENV, value_name = "URL")]
    server: Option<String>,

    /// Bridge only: after stdin closes, how long to wait for answers still owed.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    drain_timeout: f64,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: ACP over WebSocket for many clients at once, in the
    /// background until SIGINT or SIGTERM.
    ///
    /// Every flag can also be set under [serve] in
    /// $XDG_CONFIG_HOME/punie/config.toml, by its long name
    /// (`max-connections = 8192`); a flag given here wins.
    Serve(ServeArgs),
    /// Say whether a server is running, and how it is.
    #[command(after_help = STATUS_EXIT_CODES)]
    Status {
        /// Print the answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Stop the running server (the one `punie serve` recorded) and wait for it to exit.
    #[command(after_help = STOP_EXIT_CODES)]
    Stop,
    /// Ask one question — in a new session, or going on with a kept one — and
    /// print the answer as it streams.
    #[command(after_help = EXIT_CODES)]
    Ask(AskArgs),
    /// List the sessions the server keeps, newest first, or delete one.
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Sessions(SessionsArgs),
    /// Register this punie binary as an ACP agent with your editor.
    Init(InitArgs),
    /// Open Punie in the browser, signed in with a fresh one-time link.
    #[command(after_help = EXIT_CODES)]
    Open {
        /// Print the link instead of opening a browser.
        #[arg(long)]
        print: bool,
    },
}

#[derive(Debug, Args)]
struct AskArgs {
    /// The question. `-`, or nothing while stdin is not a terminal, reads it from stdin.
    prompt: Option<String>,

    /// The directory the agent works in; the current directory by default.
    /// A session given with --session works in its own.
    #[arg(long, value_name = "DIR", conflicts_with = "session")]
    workspace: Option<PathBuf>,

    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    /// Allow every permission request without asking.
    #[arg(long, short)]
    yes: bool,

    /// Go on with this session (see `punie sessions`) instead of starting one.
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    session: Option<String>,

    /// Go on with the workspace's most recent session.
    #[arg(long = "continue", short = 'c', conflicts_with = "session")]
    continue_: bool,

    /// Send FILE with the question: a picture (.png, .jpg, .gif, .webp) for
    /// the model to see, text as a file to read, anything else as a blob.
    /// Give it again for more files.
    #[arg(long, short, value_name = "FILE")]
    attach: Vec<PathBuf>,

    /// The session's model from this prompt on, e.g. ollama:qwen3; a new
    /// session gets the server's by default.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,

    /// What Punie may do without asking in this session from this prompt
    /// on: ask (every change and command asks), edit (file changes go
    /// ahead, commands ask) or read-only (it changes nothing). A new session
    /// asks by default.
    #[arg(long, value_name = "MODE", value_parser = PermissionMode::named)]
    mode: Option<PermissionMode>,
}

#[derive(Debug, Args)]
struct SessionsArgs {
    /// Only the sessions whose workspace is this directory.
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,

    /// Print a JSON array of {sessionId, cwd, title, updatedAt}.
    #[arg(long)]
    json: bool,

    #[command(subcommand)]
    action: Option<SessionsAction>,
}

#[derive(Debug, Subcommand)]
enum SessionsAction {
    /// Delete a session: the server forgets it, on disk too.
    Delete {
        /// The session's id, as `punie sessions` shows it.
        #[arg(value_parser = parse_session_id)]
        id: String,
    },
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The JetBrains agent file to update [default: ~/.jetbrains/acp.json].
    #[arg(long, value_name = "PATH", conflicts_with = "zed")]
    output: Option<PathBuf>,

    /// Print the entry for Zed's settings.json instead.
    #[arg(long)]
    zed: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on. Anything but loopback makes the server reachable
    /// from other machines.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_host)]
    host: IpAddr,

    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    port: u16,

    /// Another name clients reach the server by, as it appears in their
    /// `Host` header (a reverse proxy's, e.g. punie.example.com); repeat for
    /// more. Loopback names always work, and with --host 0.0.0.0 so do IP
    /// addresses.
    #[arg(long = "allowed-host", value_name = "NAME", value_parser = parse_host_name)]
    allowed_hosts: Vec<String>,

    /// The model sessions use: test (offline, deterministic), openai:MODEL,
    /// anthropic:MODEL, ollama:MODEL, lmstudio:MODEL, local:URL/MODEL or
    /// script:PATH.
    #[arg(long, env = MODEL_ENV, default_value = "test")]
    model: String,

    /// Another model clients may pick for a session (the IDE's model menu,
    /// the browser's), besides --model and those Ollama and LM Studio have
    /// installed; repeat for more.
    #[arg(long = "offer-model", value_name = "MODEL")]
    offered_models: Vec<String>,

    /// Rounds of tool calls one turn may take before it ends with
    /// max_turn_requests.
    #[arg(long, env = "PUNIE_MAX_TOOL_ROUNDS", default_value_t = DEFAULT_MAX_TOOL_ROUNDS, value_parser = parse_rounds)]
    max_tool_rounds: usize,

    /// The model's context window in tokens: reported with token usage, and
    /// a conversation that outgrows it is sent without its oldest prompts.
    #[arg(long, default_value_t = DEFAULT_CONTEXT_WINDOW)]
    context_window: u64,

    /// Give up on a model that sends nothing for this many seconds
    /// (keep-alive comments count as something).
    #[arg(long, value_name = "SECONDS", default_value_t = ModelSettings::default().idle_timeout.as_secs_f64())]
    model_idle_timeout: f64,

    /// Retries of a model call that fails before its first token (429, 5xx,
    /// a reset connection).
    #[arg(long, default_value_t = ModelSettings::default().retries)]
    model_retries: u32,

    /// The most tokens a model may write in one reply (a whole file a tool
    /// call writes included). Anthropic models get 8192 unless this is set;
    /// OpenAI-style servers use their own limit unless it is.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(1..))]
    max_output_tokens: Option<u32>,

    /// How long a turn whose client has gone waits for another client to
    /// attach when it needs one (a permission, a file), before it ends
    /// cancelled.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_REATTACH_TIMEOUT.as_secs_f64())]
    reattach_timeout: f64,

    /// How long an attached session may sit idle before its conversation is
    /// dropped from memory (it is read back from the store when needed).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SESSION_IDLE_TIMEOUT.as_secs_f64())]
    session_idle_timeout: f64,

    /// How long a tool of an MCP server may take before the model is told it
    /// did not answer (and the server is connected again for the next turn).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MCP_CALL_TIMEOUT.as_secs_f64())]
    mcp_call_timeout: f64,

    /// How long an MCP server may take to start and list its tools (a first
    /// `npx -y` or `docker run` downloads it) before it is said not to start.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_MCP_START_TIMEOUT.as_secs_f64())]
    mcp_start_timeout: f64,

    /// Largest message a client may send, in bytes; a bigger one closes its
    /// connection with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,

    /// Most connections at once; past it, new ones get 503.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Most messages waiting to be written to one client.
    #[arg(long, value_name = "MESSAGES", default_value_t = DEFAULT_OUTGOING_QUEUE)]
    outgoing_queue: usize,

    /// How long a client's outgoing queue may stay full (the client is not
    /// reading) before it is disconnected.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_OUTGOING_STALL.as_secs_f64())]
    outgoing_stall: f64,

    /// Most bytes of messages that may wait for one client behind its full
    /// queue; past it, the client is disconnected at once.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_OUTGOING_BYTES)]
    outgoing_bytes: usize,

    /// How long a client may take to answer a file or terminal request
    /// before the model is told it did not.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CLIENT_REQUEST_TIMEOUT.as_secs_f64())]
    client_request_timeout: f64,

    /// How often each WebSocket is pinged.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PING_INTERVAL.as_secs_f64())]
    ping_interval: f64,

    /// How long a WebSocket may stay silent (no pong, no message) before it
    /// is dropped; its sessions stay stored.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PONG_TIMEOUT.as_secs_f64())]
    pong_timeout: f64,

    /// How long a connection may take to send a request's headers, or sit
    /// idle between requests, before it is closed. An open WebSocket is past it;
    /// a request of the HTTP/SSE profile must also have sent its whole body by then.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs_f64())]
    header_timeout: f64,

    /// Takes the place of the clients' global `--server`, which would
    /// otherwise show in `punie serve --help`: the server listens where
    /// `--host` and `--port` say.
    #[arg(id = "server", long = "server", hide = true, value_parser = refuse_server)]
    _server: Option<String>,
}

fn refuse_server(_: &str) -> Result<String, String> {
    Err(
        "`punie serve` listens where --host and --port say; --server names the server for clients"
            .to_owned(),
    )
}

/// `count`, unless it is zero.
fn at_least_one(count: usize, flag: &str) -> Result<usize, UsageError> {
    if count == 0 {
        return Err(UsageError(format!("{flag} must be at least 1")));
    }
    Ok(count)
}

/// A session id, which is never blank: the server would answer that there
/// is no session "", which reads as if the id had been given and lost.
fn parse_session_id(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err(
            "it is blank; it needs the id of a session, and `punie sessions` lists them".to_owned(),
        );
    }
    Ok(value.to_owned())
}

/// A name as a `Host` header carries it — `punie.example.com`, with a
/// `:port` or not — rather than a URL, which no `Host` header would match.
fn parse_host_name(value: &str) -> Result<String, String> {
    let name = value.trim();
    if name.is_empty() {
        return Err("a host name is needed, e.g. punie.example.com".to_owned());
    }
    if name.contains("://")
        || name.contains(['/', '?', '#', '@'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "`{name}` is not a host name: give the name alone, as a Host header carries it (punie.example.com, or punie.example.com:8443)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// `seconds` as a duration greater than zero, or a usage error naming `flag`.
fn positive_seconds(value: f64, flag: &str) -> Result<Duration, UsageError> {
    let duration = seconds(value, flag)?;
    if duration.is_zero() {
        return Err(UsageError(format!("{flag} must be more than 0 seconds")));
    }
    Ok(duration)
}

/// `seconds` as a duration, or a usage error naming `flag`.
fn seconds(seconds: f64, flag: &str) -> Result<Duration, UsageError> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| UsageError(format!("{flag} must be a number of seconds")))
}

/// Run the command line and say how it went.
pub fn main() -> ExitCode {
    // TLS (model providers, wss:// servers) uses ring. Installed before
    // anything can need it; when a build links a second provider (tests do),
    // this keeps the choice the same.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cli, configured) = match parse_command_line() {
        Ok(parsed) => parsed,
        Err(error) => {
            crate::say!("punie: {error:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let levels = logging::Levels {
        flag: cli.log_level.as_deref(),
        configured: configured.log_level.as_deref(),
    };
    let log_file = cli.log_file.as_deref().or(configured.log_file.as_deref());
    if let Err(error) = logging::init(levels, log_file) {
        crate::say!("punie: {error:#}");
        if cli.command.is_none() {
            // The IDE that launched the bridge shows the reason too.
            let message = format!("{error:#}");
            let _ = single_threaded(|| async move {
                bridge::refuse(&message).await;
                Ok(())
            });
        }
        return ExitCode::from(exit::USAGE);
    }
    let ask_output = match &cli.command {
        Some(Command::Ask(args)) => Some(args.output),
        _ => None,
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if let Some(output) = ask_output {
                ask::fail_before_starting(output, &format!("{error:#}"));
            }
            crate::say!("punie: {error:#}");
            if error.is::<UsageError>() {
                exit::USAGE
            } else {
                exit::ERROR
            }
        }
    };
    ExitCode::from(code)
}

/// What the settings file says about logging, which the command line's
/// flags (global ones, not `punie serve`'s own) cannot carry as defaults.
#[derive(Debug, Default)]
struct ConfiguredLogging {
    log_level: Option<String>,
    log_file: Option<PathBuf>,
}

/// The command line, with `punie serve`'s defaults taken from the settings
/// file where it gives them. Help and usage errors exit here, as clap does.
fn parse_command_line() -> anyhow::Result<(Cli, ConfiguredLogging)> {
    forget_blank_variables(&Cli::command());
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).map_err(|error| error.exit())?;
    let mut logging = ConfiguredLogging::default();
    if !matches!(cli.command, Some(Command::Serve(_))) {
        return Ok((cli, logging));
    }
    let file = Paths::from_env()?.settings_file();
    let one_value = |name: &str, values: Vec<String>| match <[String; 1]>::try_from(values) {
        Ok([value]) => Ok(value),
        Err(_) => Err(config::SettingsError::new(
            &file,
            format!("[serve] {name} takes one value"),
        )),
    };
    let mut settings = Vec::new();
    for (name, values) in config::serve_settings(&file)? {
        match name.as_str() {
            "log-level" => {
                let level = one_value(&name, values)?;
                // Checked here, so that a bad value is blamed on the file.
                logging::filter(&level).map_err(|error| {
                    config::SettingsError::new(&file, format!("[serve] log-level: {error}"))
                })?;
                logging.log_level = Some(level);
            }
            "log-file" => logging.log_file = Some(one_value(&name, values)?.into()),
            _ => settings.push((name, values)),
        }
    }
    if settings.is_empty() {
        return Ok((cli, logging));
    }
    let mut command = Cli::command();
    let mut serve = command
        .find_subcommand_mut("serve")
        .context("`punie serve` is a command")?
        .clone();
    for (name, values) in settings {
        let arg = serve
            .get_arguments()
            .find(|arg| {
                arg.get_long() == Some(name.as_str()) && !arg.is_global_set() && !arg.is_hide_set()
            })
            .ok_or_else(|| {
                config::SettingsError::new(
                    &file,
                    format!("`{name}` is not a flag of `punie serve` (see `punie serve --help`)"),
                )
            })?;
        // Checked here, so that a bad value is blamed on the file, not on
        // a flag the user never typed.
        let id = arg.get_id().clone();
        let as_flags = values.iter().map(|value| format!("--{name}={value}"));
        if let Err(error) = serve
            .clone()
            .try_get_matches_from(std::iter::once("serve".to_owned()).chain(as_flags))
        {
            let why = error.to_string();
            let why = why.lines().next().unwrap_or_default();
            let why = why.strip_prefix("error: ").unwrap_or(why);
            return Err(config::SettingsError::new(&file, format!("[serve] {why}")).into());
        }
        serve = serve.mut_arg(id, |arg| arg.default_values(values));
    }
    let command = command.mut_subcommand("serve", |_| serve);
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).map_err(|error| error.exit())?;
    Ok((cli, logging))
}

/// Unset every variable a flag of `command` reads that is set but blank:
/// `PUNIE_MODEL=` (a launcher or an IDE setting every variable it knows)
/// means no model, as unset does, where clap would pass the blank on as a
/// value — and has no setting to ignore it.
fn forget_blank_variables(command: &clap::Command) {
    let arguments = command.get_arguments().chain(
        command
            .get_subcommands()
            .flat_map(clap::Command::get_arguments),
    );
    for name in arguments.filter_map(clap::Arg::get_env) {
        if std::env::var_os(name).is_some_and(|value| value.to_string_lossy().trim().is_empty()) {
            // SAFETY: the command line is read before any thread starts
            // (the runtime comes later), so nothing reads the environment
            // at the same time.
            unsafe { std::env::remove_var(name) };
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let paths = Paths::from_env()?;
    match cli.command {
        Some(Command::Serve(args)) => {
            let ping_interval = positive_seconds(args.ping_interval, "--ping-interval")?;
            let pong_timeout = positive_seconds(args.pong_timeout, "--pong-timeout")?;
            if pong_timeout <= ping_interval {
                // Silence is judged by the pong timeout, and an idle client
                // says something only when pinged.
                return Err(UsageError(format!(
                    "--pong-timeout ({} s) must be longer than --ping-interval ({} s), or every idle client is dropped before its next ping (on the command line or under [serve] in {})",
                    args.pong_timeout,
                    args.ping_interval,
                    paths.settings_file().display()
                ))
                .into());
            }
            if let Some(reply) = args.max_output_tokens
                && u64::from(reply) >= args.context_window
            {
                // Nothing of the conversation would fit beside the reply.
                return Err(UsageError(format!(
                    "--max-output-tokens ({reply}) must be less than --context-window ({}): the model's reply and what it is sent share the window (on the command line or under [serve] in {})",
                    args.context_window,
                    paths.settings_file().display()
                ))
                .into());
            }
            let config = ServeConfig {
                host: args.host,
                port: args.port,
                allowed_hosts: args.allowed_hosts,
                model: args.model,
                offered_models: args.offered_models,
                model_settings: ModelSettings {
                    idle_timeout: positive_seconds(
                        args.model_idle_timeout,
                        "--model-idle-timeout",
                    )?,
                    retries: args.model_retries,
                    max_output_tokens: args.max_output_tokens,
                    ..ModelSettings::default()
                },
                max_tool_rounds: args.max_tool_rounds,
                context_window: args.context_window,
                reattach_timeout: seconds(args.reattach_timeout, "--reattach-timeout")?,
                session_idle_timeout: seconds(args.session_idle_timeout, "--session-idle-timeout")?,
                mcp_call_timeout: positive_seconds(args.mcp_call_timeout, "--mcp-call-timeout")?,
                mcp_start_timeout: positive_seconds(args.mcp_start_timeout, "--mcp-start-timeout")?,
                limits: ConnectionLimits {
                    max_message_bytes: at_least_one(args.max_message_bytes, "--max-message-bytes")?,
                    max_connections: at_least_one(args.max_connections, "--max-connections")?,
                    outgoing_queue: at_least_one(args.outgoing_queue, "--outgoing-queue")?,
                    // 0 would end every connection, or every request to a
                    // client, at once.
                    outgoing_stall: positive_seconds(args.outgoing_stall, "--outgoing-stall")?,
                    outgoing_bytes: at_least_one(args.outgoing_bytes, "--outgoing-bytes")?,
                    client_request_timeout: positive_seconds(
                        args.client_request_timeout,
                        "--client-request-timeout",
                    )?,
                    ping_interval,
                    pong_timeout,
                    header_timeout: positive_seconds(args.header_timeout, "--header-timeout")?,
                },
                paths,
            };
            let model = serve_model(&config)?;
            multi_threaded(server::serve(config, model))?;
            Ok(exit::OK)
        }
        Some(Command::Status { json }) => {
            let target = match locate(cli.server.as_deref(), &paths) {
                Ok(target) => target,
                Err(error) => {
                    if json {
                        let _ = status::print_not_running(None, &format!("{error:#}"));
                    }
                    return Err(error);
                }
            };
            single_threaded(|| status::status(&target, json)).map(outcome_code)
        }
        Some(Command::Stop) => {
            let target = locate(cli.server.as_deref(), &paths)?;
            single_threaded(|| status::stop(&target, &paths)).map(outcome_code)
        }
        Some(Command::Ask(args)) => {
            let options = ask_options(args)?;
            let target = locate(cli.server.as_deref(), &paths)?;
            let exit = single_threaded(|| async move { Ok(ask::run(target, options).await) })?;
            Ok(match exit {
                AskExit::Done => exit::OK,
                AskExit::Failed => exit::ERROR,
                AskExit::NoServer => exit::NO_SERVER,
                AskExit::Interrupted => exit::INTERRUPTED,
            })
        }
        Some(Command::Sessions(args)) => {
            let target = locate(cli.server.as_deref(), &paths)?;
            single_threaded(|| async move {
                match args.action {
                    Some(SessionsAction::Delete { id }) => sessions::delete(&target, &id).await,
                    None => sessions::list(&target, args.cwd.as_deref(), args.json).await,
                }
            })
            .map(outcome_code)
        }
        Some(Command::Init(args)) => {
            // `init` names no server, but a --server it cannot mean is as
            // much a mistake here as for any other command.
            server_url(cli.server.as_deref())?;
            init(args)
        }
        Some(Command::Open { print }) => {
            let target = locate(cli.server.as_deref(), &paths)?;
            single_threaded(|| async move { web::open::run(&target, print).await })
                .map(outcome_code)
        }
        None => {
            let set_up = locate(cli.server.as_deref(), &paths)
                .and_then(|target| Ok((target, seconds(cli.drain_timeout, "--drain-timeout")?)));
            let (target, drain) = match set_up {
                Ok(set_up) => set_up,
                Err(error) => {
                    // The IDE that launched the bridge shows the reason too.
                    let message = format!("{error:#}");
                    single_threaded(|| async move {
                        bridge::refuse(&message).await;
                        Ok(())
                    })?;
                    return Err(error);
                }
            };
            let exit = single_threaded(|| async move { Ok(bridge::run(target, drain).await) })?;
            Ok(match exit {
                BridgeExit::Done => exit::OK,
                BridgeExit::ServerLost | BridgeExit::StdoutLost => exit::ERROR,
            })
        }
    }
}

/// The server `--server` (or `PUNIE_SERVER`) names, else the recorded one. A
/// URL that cannot name a server is a usage mistake, found here rather than
/// as a server that does not answer.
fn locate(server: Option<&str>, paths: &Paths) -> anyhow::Result<Target> {
    Target::locate(server_url(server)?.as_ref(), paths)
}

/// The server `--server` (or `PUNIE_SERVER`) names, if any, or the usage
/// mistake it is.
fn server_url(server: Option<&str>) -> Result<Option<ServerUrl>, UsageError> {
    server
        .map(ServerUrl::parse)
        .transpose()
        .map_err(|error| UsageError(format!("--server (or {SERVER_ENV}): {error:#}")))
}

/// A usage mistake: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn ask_options(args: AskArgs) -> anyhow::Result<AskOptions> {
    use std::io::{IsTerminal as _, Read as _};
    let prompt = match args.prompt.as_deref() {
        // `git diff | punie ask "review this"`: what is piped in goes with
        // the question. A terminal, /dev/null or a socket pipes nothing in.
        Some(prompt) if prompt != "-" && stdin_is_piped() => {
            with_piped_text(prompt, &read_stdin("the text piped in")?)
        }
        Some(prompt) if prompt != "-" => prompt.to_owned(),
        Some(_) => read_stdin("the question on stdin")?,
        None if !std::io::stdin().is_terminal() => read_stdin("the question on stdin")?,
        None => {
            return Err(UsageError(
                "no question: give it as an argument (`punie ask \"…\"`) or on stdin".to_owned(),
            )
            .into());
        }
    };
    fn read_stdin(what: &str) -> anyhow::Result<String> {
        let limit = crate::config::MAX_MESSAGE_BYTES as u64;
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what} from stdin"))?;
        if bytes.len() as u64 > limit {
            anyhow::bail!(
                "{what} is longer than {} MiB, more than one message carries",
                limit / 1024 / 1024
            );
        }
        let mut prompt = String::from_utf8(bytes).map_err(|error| {
            anyhow::anyhow!(
                "{what} is not UTF-8 text (byte {} is not); \
                 send other files with --attach",
                error.utf8_error().valid_up_to()
            )
        })?;
        // `echo question | punie ask` ends the question with a newline that is not part of it.
        let kept = prompt.trim_end_matches(['\n', '\r']).len();
        prompt.truncate(kept);
        Ok(prompt)
    }
    if prompt.trim().is_empty() {
        return Err(UsageError("the question is empty".to_owned()).into());
    }
    let workspace = match args.workspace {
        Some(workspace) => workspace,
        None => std::env::current_dir().map_err(|error| {
            // The directory a shell still stands in after it was removed.
            if error.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "the current directory is gone (it was removed); \
                     cd to one that exists, or give the workspace with --workspace DIR"
                )
            } else {
                anyhow::anyhow!(
                    "cannot tell the current directory ({error}); \
                     give the workspace with --workspace DIR"
                )
            }
        })?,
    };
    let conversation = match (args.session, args.continue_) {
        (Some(id), _) => Conversation::Resume(id),
        (None, true) => Conversation::Continue,
        (None, false) => Conversation::New,
    };
    let attachments = crate::client::attachments::attachments(&args.attach)?;
    Ok(AskOptions {
        prompt,
        attachments,
        workspace,
        conversation,
        output: args.output,
        yes: args.yes,
        model: args.model,
        mode: args.mode,
    })
}

/// Whether stdin is a pipe or a file someone gave `punie ask`, rather than
/// a terminal, /dev/null or whatever a launcher left open.
fn stdin_is_piped() -> bool {
    use rustix::fs::FileType;
    rustix::fs::fstat(std::io::stdin()).is_ok_and(|stat| {
        matches!(
            FileType::from_raw_mode(stat.st_mode),
            FileType::Fifo | FileType::RegularFile
        )
    })
}

/// `question`, then `piped` fenced as a Markdown code block the text cannot
/// end early; the question alone when nothing was piped in.
fn with_piped_text(question: &str, piped: &str) -> String {
    if piped.trim().is_empty() {
        return question.to_owned();
    }
    let longest_run = piped.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{question}\n\n{fence}\n{piped}\n{fence}")
}

fn init(args: InitArgs) -> anyhow::Result<u8> {
    let binary = editors::this_binary()?;
    if args.zed {
        crate::client::print_out(&format!("{:#}\n", editors::zed_entry(&binary)))?;
        crate::say!(
            "Merge this into Zed's settings.json (~/.config/zed/settings.json): when it already has \"agent_servers\", add the \"Punie\" entry to those."
        );
        return Ok(exit::OK);
    }
    let path = match args.output {
        Some(path) => path,
        None => editors::jetbrains_file()?,
    };
    match editors::register_with_jetbrains(&path, &binary)? {
        editors::Change::Unchanged => {
            crate::say!("Punie is already set up in {}.", path.display());
        }
        editors::Change::Added => {
            crate::say!("Added Punie ({}) to {}.", binary.display(), path.display());
        }
        editors::Change::Updated => {
            crate::say!(
                "Updated Punie's entry in {}: it runs {} now; its other settings are kept.",
                path.display(),
                binary.display()
            );
        }
        editors::Change::Replaced { backup } => {
            crate::say!(
                "{} was not a JSON object with a map of agents; the old file is kept as {}. Wrote a corrected one with Punie ({}).",
                path.display(),
                backup.display(),
                binary.display()
            );
        }
    }
    Ok(exit::OK)
}

fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Done => exit::OK,
        Outcome::NoServer => exit::NO_SERVER,
    }
}

/// The server's runtime: one worker per core.
fn multi_threaded<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// A client's runtime: one thread is plenty, and starts fastest. Threads still
/// blocked (on stdin, say) are not waited for.
///
/// `make` creates the work, which goes on the heap before the runtime starts:
/// a client's futures are kilobytes big, and each stack frame that held one
/// by value (here, `run`, the runtime's `block_on`) would stay part of the
/// stack under everything the work does — tens of KiB of resident memory per
/// frame, since every page of a large frame is touched on entry.
fn single_threaded<T, F>(make: impl FnOnce() -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let work = on_heap(make);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(work);
    runtime.shutdown_background();
    result
}

/// The future `make` creates, moved to the heap. Never inlined: the frame that
/// briefly holds the future is gone before the future first runs.
#[inline(never)]
fn on_heap<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::pin(make())
}

/// `--max-tool-rounds`: with 0, a turn would end before asking the model
/// anything. Checked by clap, so that a 0 in the settings file is blamed on
/// the file.
fn parse_rounds(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("a turn needs at least 1 round".to_owned()),
        Ok(rounds) => Ok(rounds),
        Err(error) => Err(error.to_string()),
    }
}

/// The model `punie serve` runs, built once, with its settings, before the
/// server starts: a spec it cannot build from, or one of the models it
/// offers, is a usage error like any bad flag. A missing API key is not: the
/// server starts and says what to do.
fn serve_model(config: &ServeConfig) -> Result<Arc<dyn Model>, UsageError> {
    let settings_file = config.paths.settings_file();
    // The spec is named as the source unless the error names its own (an
    // environment variable).
    let from = |error: ModelError, source: &str| match error {
        ModelError::Environment(_) => UsageError(error.to_string()),
        error => UsageError(format!(
            "{error} (from {source} under [serve] in {})",
            settings_file.display()
        )),
    };
    for offered in &config.offered_models {
        crate::model::from_spec(offered, &config.model_settings)
            .map_err(|error| from(error, "--offer-model or `offer-model`"))?;
    }
    crate::model::from_spec(&config.model, &config.model_settings)
        .map_err(|error| from(error, &format!("--model, {MODEL_ENV} or `model`")))
}

/// An IP address, or `localhost`.
fn parse_host(value: &str) -> Result<IpAddr, String> {
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{value}` is not an IP address (or `localhost`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hosts_are_addresses_or_localhost() {
        assert_eq!(parse_host("localhost"), Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_host("[::1]"), Ok("::1".parse().unwrap()));
        assert!(parse_host("example.com").is_err());
    }
}
