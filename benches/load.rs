//! Load benchmark for `punie serve`: starts the release server binary as a
//! child process and measures it from outside, over real loopback sockets —
//! startup time (spawn to the first `GET /health` answer), turn throughput and
//! latency with 1, 100 and 1,000 WebSocket clients prompting in a closed loop,
//! resident memory with 1, 1,000 and 10,000 idle connections, and the time a
//! SIGTERM takes to stop a server holding 1,000 connections (every client must
//! get close frame 1001).
//!
//! Run everything with `cargo bench --bench load`, or name the measurements to
//! run: `cargo bench --bench load -- startup turns rss shutdown`. `--quick`
//! shortens every measurement for a smoke run. `cargo bench` builds the server
//! it measures (`target/release/punie`: benches use the release profile);
//! `PUNIE_BIN=/path/to/punie` measures another binary instead. The load
//! generator runs in this process, on the same machine as the server, from
//! one multi-threaded tokio runtime.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod support;
use support::{Table, get_health, percentile, verdict};

/// How long any single wait (a handshake, a response, a process exit) may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long opening a whole batch of clients may take.
const OPEN_DEADLINE: Duration = Duration::from_secs(300);

/// Handshakes in flight at once while clients connect.
const OPEN_CONCURRENCY: usize = 128;

/// Pause between two attempts to reach a server that is starting.
const POLL_INTERVAL: Duration = Duration::from_micros(100);

/// Pause after connections are opened or closed, before memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// How many times the memory measurement closes every connection and opens as
/// many again, to tell memory the allocator keeps from memory that leaks.
const REOPEN_CYCLES: usize = 3;

/// Read buffer of each client socket: the frames are small, the clients many.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (fixed on Linux).
const USER_HZ: f64 = 100.0;

/// The prompt of every measured turn.
const PROMPT: &str = "hello";

/// A prompt the test model answers slowly (one number per 20 ms): a turn that
/// is still running when the server is told to stop.
const LONG_PROMPT: &str = "count to 100000";

/// Open file descriptors this process needs: one per client socket, and room.
const FILES_NEEDED: u64 = 10_500;

const TARGET_STARTUP_MS: f64 = 20.0;
const TARGET_TURNS_PER_SECOND: f64 = 5_000.0;
const TARGET_TURNS_CLIENTS: usize = 100;
const TARGET_KB_PER_CONNECTION: f64 = 50.0;
const TARGET_SHUTDOWN_MS: f64 = 200.0;

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("load: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: cargo bench --bench load -- [startup] [turns] [rss] [shutdown] [options]

measurements (all four when none is named):
  startup   spawn to first /health answer, fresh and existing home (target <= 20 ms)
  turns     turns/s and latency at 1, 100, 1,000 clients (target >= 5,000 turns/s at 100)
  rss       server memory with 1, 1,000, 10,000 idle connections (target <= 50 KB each)
  shutdown  SIGTERM to exit with 1,000 clients, all closed with 1001 (target <= 200 ms)

options:
  --quick                short runs and fewer connections, for a smoke test
  --window=SECS          how long each turn measurement lasts (default 10, quick 2)
  --clients=1,100        client counts of the turn measurement (default 1,100,1000)
  --shutdown-clients=N   clients connected at SIGTERM (default 1000)

PUNIE_BIN overrides the server binary.";

fn run(options: &Options) -> anyhow::Result<()> {
    let files = raise_open_file_limit()?;
    let settings = Settings::new(options);
    let binary = server_binary();
    ensure!(
        binary.is_file(),
        "the server binary {} does not exist; build it with `cargo build --release --bin punie`",
        binary.display()
    );
    print_machine(&binary, files, options.quick);

    if options.wants(Measurement::Startup) {
        measure_startup(&binary, &settings)?;
    }
    let async_measurements = [Measurement::Turns, Measurement::Rss, Measurement::Shutdown];
    if !async_measurements.iter().any(|&m| options.wants(m)) {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(async {
        if options.wants(Measurement::Turns) {
            measure_turns(&binary, &settings).await?;
        }
        if options.wants(Measurement::Rss) {
            measure_rss(&binary, &settings).await?;
        }
        if options.wants(Measurement::Shutdown) {
            measure_shutdown(&binary, &settings).await?;
        }
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------
// Command line and settings

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measurement {
    Startup,
    Turns,
    Rss,
    Shutdown,
}

impl Measurement {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "startup" => Some(Self::Startup),
            "turns" => Some(Self::Turns),
            "rss" => Some(Self::Rss),
            "shutdown" => Some(Self::Shutdown),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Options {
    selected: Vec<Measurement>,
    quick: bool,
    help: bool,
    /// `--window=SECS`: how long turns are measured.
    window: Option<Duration>,
    /// `--clients=1,100`: the client counts of the turn measurement.
    turn_clients: Option<Vec<usize>>,
    /// `--shutdown-clients=N`: the clients connected when the server is stopped.
    shutdown_clients: Option<usize>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut options = Self::default();
        for arg in args {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => options.quick = true,
                "-h" | "--help" => options.help = true,
                _ if arg.starts_with("--window=") => {
                    let seconds = &arg["--window=".len()..];
                    let seconds: f64 = seconds
                        .parse()
                        .ok()
                        .filter(|seconds| *seconds > 0.0)
                        .ok_or_else(|| format!("--window takes seconds, not `{seconds}`"))?;
                    options.window = Some(Duration::from_secs_f64(seconds));
                }
                _ if arg.starts_with("--clients=") => {
                    let list = &arg["--clients=".len()..];
                    let counts: Result<Vec<usize>, _> =
                        list.split(',').map(|count| count.trim().parse()).collect();
                    match counts {
                        Ok(counts) if !counts.is_empty() && !counts.contains(&0) => {
                            options.turn_clients = Some(counts);
                        }
                        _ => {
                            return Err(format!("--clients takes counts like 1,100, not `{list}`"));
                        }
                    }
                }
                _ if arg.starts_with("--shutdown-clients=") => {
                    let count = &arg["--shutdown-clients=".len()..];
                    let count = count
                        .parse()
                        .ok()
                        .filter(|count| (1..=10_000).contains(count))
                        .ok_or_else(|| {
                            format!(
                                "--shutdown-clients takes a count from 1 to 10000, not `{count}`"
                            )
                        })?;
                    options.shutdown_clients = Some(count);
                }
                name => match Measurement::from_name(name) {
                    Some(measurement) => options.selected.push(measurement),
                    None => return Err(format!("unknown argument `{name}`")),
                },
            }
        }
        Ok(options)
    }

    fn wants(&self, measurement: Measurement) -> bool {
        self.selected.is_empty() || self.selected.contains(&measurement)
    }
}

/// How long and how big each measurement is.
struct Settings {
    startup_runs: usize,
    turn_clients: Vec<usize>,
    warm_up: Duration,
    window: Duration,
    rss_levels: Vec<usize>,
    shutdown_clients: usize,
}

impl Settings {
    fn new(options: &Options) -> Self {
        let mut settings = Self::defaults(options.quick);
        if let Some(window) = options.window {
            settings.window = window;
        }
        if let Some(clients) = &options.turn_clients {
            settings.turn_clients.clone_from(clients);
        }
        if let Some(clients) = options.shutdown_clients {
            settings.shutdown_clients = clients;
        }
        settings
    }

    fn defaults(quick: bool) -> Self {
        if quick {
            Self {
                startup_runs: 5,
                turn_clients: vec![1, 100, 1_000],
                warm_up: Duration::from_millis(500),
                window: Duration::from_secs(2),
                rss_levels: vec![1, 100, 1_000],
                shutdown_clients: 1_000,
            }
        } else {
            Self {
                startup_runs: 20,
                turn_clients: vec![1, 100, 1_000],
                warm_up: Duration::from_secs(2),
                window: Duration::from_secs(10),
                rss_levels: vec![1, 1_000, 10_000],
                shutdown_clients: 1_000,
            }
        }
    }
}

/// The `punie` binary to measure.
fn server_binary() -> PathBuf {
    match std::env::var_os("PUNIE_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_punie")),
    }
}

/// Raise this process's open file limit; every client holds a socket.
fn raise_open_file_limit() -> anyhow::Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .context("cannot raise the open file limit of the load generator")?;
    ensure!(
        limit >= FILES_NEEDED,
        "the open file limit is {limit}, but the load generator needs {FILES_NEEDED}; raise the hard limit (ulimit -Hn)"
    );
    Ok(limit)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn print_machine(binary: &Path, files: u64, quick: bool) {
    let cores = cores();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    println!(
        "punie load benchmark{}",
        if quick { " (quick)" } else { "" }
    );
    println!("  server binary: {}", binary.display());
    println!("  machine: {cores} cores, {cpu}, Linux {}", kernel.trim());
    println!(
        "  date: {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    println!("  open file limit of the load generator: {files}");
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "  load average before the run: {} (anything well above 0 disturbs the figures)",
        load.join(" ")
    );
}

// ---------------------------------------------------------------------------
// The server process

/// A temporary home: the XDG directories and the workspace of one server.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary home")?;
        let workspace = dir.path().join("workspace");
        fs::create_dir_all(&workspace)
            .with_context(|| format!("cannot create {}", workspace.display()))?;
        Ok(Self { dir })
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("state/punie/token")
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn log_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Start `punie serve` on `port`, its stderr going to `log`.
    fn spawn(&self, binary: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
        let stderr =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        Command::new(binary)
            .args(["serve", "--port", &port.to_string(), "--model", "test"])
            // Room for the most connections any measurement opens (10,000
            // idle ones), past the server's default limit of 4,096.
            .args(["--max-connections", "10100"])
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("PUNIE_TOKEN")
            .env_remove("PUNIE_MODEL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))
    }
}

/// A running `punie serve`, killed if it is dropped while still running.
struct ServerProcess {
    home: Home,
    child: Option<Child>,
    pid: u32,
    address: SocketAddr,
    token: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Start a server on a free port in a fresh home and wait until it is ready.
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let home = Home::new()?;
        let log = home.log_file("serve.log");
        let mut child = home.spawn(binary, 0, &log)?;
        let address = match wait_for_ready_line(&mut child, &log) {
            Ok(address) => address,
            Err(error) => {
                stop_child(&mut child);
                return Err(error);
            }
        };
        let token = fs::read_to_string(home.token_file())
            .context("the token file should exist once the server is ready")?
            .trim()
            .to_owned();
        Ok(Self {
            pid: child.id(),
            child: Some(child),
            home,
            address,
            token,
            log,
        })
    }

    /// [`Self::start`], on a blocking thread.
    async fn launch(binary: &Path) -> anyhow::Result<Self> {
        let binary = binary.to_owned();
        tokio::task::spawn_blocking(move || Self::start(&binary))
            .await
            .context("the task starting the server failed")?
    }

    /// [`Self::stop`], on a blocking thread.
    async fn terminate(self) -> anyhow::Result<ExitStatus> {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .context("the task stopping the server failed")?
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            token: self.token.clone(),
            cwd: self.home.workspace(),
        }
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid).context("the server's pid fits in an i32")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("cannot send {signal} to the server"))
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    /// The server's `/health`, asked from a blocking thread.
    async fn health(&self) -> anyhow::Result<Health> {
        let address = self.address;
        tokio::task::spawn_blocking(move || get_health(address))
            .await
            .context("the /health task failed")?
            .with_context(|| format!("GET /health on {address} failed"))
    }

    /// Wait until `/health` counts `connections` connections and `sessions` sessions.
    async fn wait_for_counts(&self, connections: usize, sessions: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let health = self.health().await?;
            if health.connections == connections && health.sessions == sessions {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the server counts {} connections and {} sessions after {DEADLINE:?}, expected {connections} and {sessions}",
                health.connections,
                health.sessions
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the server with SIGTERM and wait for it to exit.
    fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let mut child = self
            .child
            .take()
            .context("the server was already stopped")?;
        wait_with_deadline(&mut child, DEADLINE).context("the server did not exit after SIGTERM")
    }

    /// Warnings, errors and panics the server wrote to stderr.
    fn complaints(&self) -> Vec<String> {
        complaints_in(&self.log)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            stop_child(child);
        }
    }
}

/// Kill `child` if it is still running, and reap it.
fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Wait for `child` to exit, polling; kill it after `deadline`.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> anyhow::Result<ExitStatus> {
    let give_up = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for the server")? {
            return Ok(status);
        }
        if Instant::now() >= give_up {
            stop_child(child);
            bail!("still running after {deadline:?}; killed");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Wait for `punie listening on http://ADDRESS` in the server's log.
fn wait_for_ready_line(child: &mut Child, log: &Path) -> anyhow::Result<SocketAddr> {
    const READY: &str = "punie listening on http://";
    let give_up = Instant::now() + DEADLINE;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        // A line still being written has no newline yet.
        let mut complete_lines = text
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n'));
        if let Some(line) = complete_lines.find_map(|line| line.strip_prefix(READY)) {
            return line
                .trim()
                .parse()
                .with_context(|| format!("the ready line names no address: `{line}`"));
        }
        if let Some(status) = child.try_wait().context("cannot wait for the server")? {
            bail!("the server exited ({status}) before it was ready; its stderr:\n{text}");
        }
        ensure!(
            Instant::now() < give_up,
            "the server printed no ready line within {DEADLINE:?}; its stderr:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Lines of a server log that report a warning, an error or a panic.
fn complaints_in(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("panicked")
        })
        .map(str::to_owned)
        .collect()
}

fn print_complaints(what: &str, complaints: &[String]) {
    if complaints.is_empty() {
        println!("  server stderr during {what}: no warnings or errors");
        return;
    }
    println!(
        "  server stderr during {what}: {} warning/error lines, first ones:",
        complaints.len()
    );
    for line in complaints.iter().take(5) {
        println!("    {line}");
    }
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .with_context(|| format!("{path} has no VmRSS line"))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("VmRSS in {path} is not a number: `{line}`"))
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What `/health` reports.
#[derive(Debug, Deserialize)]
struct Health {
    pid: u32,
    connections: usize,
    sessions: usize,
}

// ---------------------------------------------------------------------------
// Clients

/// Where and how clients reach one server.
#[derive(Clone)]
struct Endpoint {
    address: SocketAddr,
    token: String,
    cwd: PathBuf,
}

/// One WebSocket client speaking JSON-RPC by hand.
struct Client {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
}

/// A JSON-RPC message from the server, with only the parts a client looks at.
#[derive(Deserialize)]
struct Incoming {
    id: Option<u64>,
    result: Option<Value>,
    error: Option<Value>,
}

/// How a client's connection ended.
struct Closed {
    ending: Ending,
    at: Instant,
    /// The stop reason of a turn that was running, if one was.
    stop_reason: Option<String>,
}

impl Closed {
    fn now(ending: Ending, stop_reason: Option<String>) -> Self {
        Self {
            ending,
            at: Instant::now(),
            stop_reason,
        }
    }
}

/// What ended a connection, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// A close frame with this code.
    Code(u16),
    /// A close frame without a code.
    NoCode,
    /// The socket ended without a close frame.
    NoFrame,
    /// The socket failed, e.g. reset by a server that exited.
    Failed,
}

impl Ending {
    fn describe(&self) -> String {
        match self {
            Self::Code(code) => code.to_string(),
            Self::NoCode => "close frame without code".to_owned(),
            Self::NoFrame => "no close frame".to_owned(),
            Self::Failed => "socket reset".to_owned(),
        }
    }
}

impl Client {
    async fn connect(endpoint: &Endpoint) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(endpoint.address)
            .await
            .with_context(|| format!("cannot connect to {}", endpoint.address))?;
        stream.set_nodelay(true)?;
        let mut request = format!("ws://{}/acp", endpoint.address).into_client_request()?;
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", endpoint.token))
                .context("the token is not a valid header value")?,
        );
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
        let (ws, response) = tokio::time::timeout(DEADLINE, handshake)
            .await
            .map_err(|_| anyhow!("the WebSocket handshake took longer than {DEADLINE:?}"))?
            .context("the server refused the WebSocket")?;
        ensure!(
            response.status() == 101,
            "the WebSocket handshake answered {}",
            response.status()
        );
        Ok(Self { ws, next_id: 1 })
    }

    /// Connect, initialize and create one session; returns the session id.
    async fn open(endpoint: &Endpoint) -> anyhow::Result<(Self, String)> {
        let mut client = Self::connect(endpoint).await?;
        client
            .call(
                "initialize",
                json!({"protocolVersion": 1, "clientCapabilities": {}}),
            )
            .await?;
        let session = client
            .call(
                "session/new",
                json!({"cwd": endpoint.cwd, "mcpServers": []}),
            )
            .await?;
        let session = session["sessionId"]
            .as_str()
            .with_context(|| format!("session/new answered without a sessionId: {session}"))?
            .to_owned();
        Ok((client, session))
    }

    async fn send_request(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let text = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        tokio::time::timeout(DEADLINE, self.ws.send(Message::text(text.to_string())))
            .await
            .map_err(|_| anyhow!("sending {method} took longer than {DEADLINE:?}"))?
            .with_context(|| format!("cannot send {method}"))?;
        Ok(id)
    }

    /// The next message from the server.
    async fn next_incoming(&mut self, waiting_for: &str) -> anyhow::Result<Incoming> {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .map_err(|_| {
                    anyhow!("no message within {DEADLINE:?} while waiting for {waiting_for}")
                })?
                .with_context(|| {
                    format!("the server closed the socket while we waited for {waiting_for}")
                })?
                .with_context(|| format!("the socket failed while we waited for {waiting_for}"))?;
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).with_context(|| {
                        format!(
                            "the server sent a frame that is not JSON-RPC: {}",
                            text.as_str()
                        )
                    });
                }
                Message::Close(frame) => {
                    bail!(
                        "the server closed the WebSocket ({frame:?}) while we waited for {waiting_for}"
                    )
                }
                Message::Binary(_) => bail!("the server sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Read until the response to request `id`; returns its result and how
    /// many notifications came before it.
    async fn response(&mut self, id: u64, method: &str) -> anyhow::Result<(Value, u32)> {
        let mut notifications = 0;
        loop {
            let incoming = self.next_incoming(method).await?;
            match incoming.id {
                None => notifications += 1,
                Some(other) if other != id => {
                    bail!("expected the response to {method} (id {id}), got id {other}")
                }
                Some(_) => {
                    if let Some(error) = incoming.error {
                        bail!("{method} failed: {error}");
                    }
                    let result = incoming
                        .result
                        .with_context(|| format!("the response to {method} has no result"))?;
                    return Ok((result, notifications));
                }
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send_request(method, params).await?;
        Ok(self.response(id, method).await?.0)
    }

    /// One turn: prompt, then read until its answer, which must be `end_turn`
    /// after at least one update.
    async fn turn(&mut self, session: &str) -> anyhow::Result<()> {
        let id = self
            .send_request(
                "session/prompt",
                json!({"sessionId": session, "prompt": [{"type": "text", "text": PROMPT}]}),
            )
            .await?;
        let (result, updates) = self.response(id, "session/prompt").await?;
        ensure!(
            result["stopReason"] == "end_turn",
            "a turn ended with {result}, expected stopReason end_turn"
        );
        ensure!(updates > 0, "a turn ended without any session/update");
        Ok(())
    }

    /// Start a long turn and wait until its first update arrives; returns the
    /// id of the prompt request.
    async fn start_long_turn(&mut self, session: &str) -> anyhow::Result<u64> {
        let id = self
            .send_request(
                "session/prompt",
                json!({"sessionId": session, "prompt": [{"type": "text", "text": LONG_PROMPT}]}),
            )
            .await?;
        let first = self
            .next_incoming("the first update of a long turn")
            .await?;
        ensure!(
            first.id.is_none(),
            "a long turn was answered before it streamed anything"
        );
        Ok(id)
    }

    /// Read until the server closes the socket, and answer its close frame.
    /// `turn` is the id of a running prompt, whose answer is recorded.
    async fn wait_for_close(mut self, turn: Option<u64>) -> anyhow::Result<Closed> {
        let mut stop_reason = None;
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .map_err(|_| anyhow!("no close frame within {DEADLINE:?}"))?;
            match message {
                Some(Ok(Message::Close(frame))) => {
                    let at = Instant::now();
                    // Polling on flushes tungstenite's answer to the close frame.
                    let _ = tokio::time::timeout(DEADLINE, self.ws.next()).await;
                    let ending =
                        frame.map_or(Ending::NoCode, |frame| Ending::Code(u16::from(frame.code)));
                    return Ok(Closed {
                        ending,
                        at,
                        stop_reason,
                    });
                }
                Some(Ok(Message::Text(text))) => {
                    let incoming: Incoming = serde_json::from_str(text.as_str())
                        .context("the server sent a frame that is not JSON-RPC")?;
                    if incoming.id.is_some() && incoming.id == turn {
                        stop_reason = incoming
                            .result
                            .and_then(|result| result["stopReason"].as_str().map(str::to_owned))
                            .or(Some("(an error)".to_owned()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => return Ok(Closed::now(Ending::Failed, stop_reason)),
                None => return Ok(Closed::now(Ending::NoFrame, stop_reason)),
            }
        }
    }
}

/// Open `count` clients, each initialized with one session.
async fn open_clients(endpoint: &Endpoint, count: usize) -> anyhow::Result<Vec<(Client, String)>> {
    let opening = futures::stream::iter(0..count)
        .map(|_| Client::open(endpoint))
        .buffer_unordered(OPEN_CONCURRENCY)
        .try_collect();
    tokio::time::timeout(OPEN_DEADLINE, opening)
        .await
        .map_err(|_| anyhow!("opening {count} clients took longer than {OPEN_DEADLINE:?}"))?
        .with_context(|| format!("cannot open {count} clients"))
}

// ---------------------------------------------------------------------------
// Startup

/// One start of the server, timed from before the spawn.
struct StartSample {
    /// Until `spawn` returned.
    spawned: Duration,
    /// Until the first `/health` answer.
    healthy: Duration,
    /// What the server itself logs as its `ready in` time.
    ready_in: Option<Duration>,
    /// From SIGTERM to exit, idle.
    stopped: Duration,
}

fn measure_startup(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let mut fresh = Vec::new();
    for run in 0..settings.startup_runs {
        let home = Home::new()?;
        fresh.push(start_once(binary, &home, run).context("a start in a fresh home failed")?);
    }
    let home = Home::new()?;
    start_once(binary, &home, 0).context("the first start in the reused home failed")?;
    let mut existing = Vec::new();
    for run in 1..=settings.startup_runs {
        existing.push(start_once(binary, &home, run).context("a restart failed")?);
    }

    let mut table = Table::new(
        "Startup: spawn to first GET /health answer (target <= 20 ms)",
        &[
            "home",
            "runs",
            "spawn()",
            "server's ready in, median",
            "server's ready in, max",
            "health median",
            "health max",
            "target",
            "idle SIGTERM→exit median",
        ],
    );
    for (label, samples) in [("new (creates token)", &fresh), ("existing", &existing)] {
        let healthy = Stats::of(samples.iter().map(|s| s.healthy));
        let spawned = Stats::of(samples.iter().map(|s| s.spawned));
        let ready_in = Stats::of(samples.iter().filter_map(|s| s.ready_in));
        let stopped = Stats::of(samples.iter().map(|s| s.stopped));
        table.row(vec![
            label.to_owned(),
            samples.len().to_string(),
            format!("{} ms", ms(spawned.median)),
            format!("{} ms", ms(ready_in.median)),
            format!("{} ms", ms(ready_in.max)),
            format!("{} ms", ms(healthy.median)),
            format!("{} ms", ms(healthy.max)),
            verdict(healthy.max.as_secs_f64() * 1e3 <= TARGET_STARTUP_MS),
            format!("{} ms", ms(stopped.median)),
        ]);
    }
    table.print();
    Ok(())
}

/// Start the server in `home`, poll `/health` until it answers, stop it.
fn start_once(binary: &Path, home: &Home, run: usize) -> anyhow::Result<StartSample> {
    let port = free_port()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let log = home.log_file(&format!("start-{run}.log"));
    let begin = Instant::now();
    let mut child = home.spawn(binary, port, &log)?;
    let spawned = begin.elapsed();
    let health = match poll_health(address, begin) {
        Ok(health) => health,
        Err(error) => {
            stop_child(&mut child);
            let log = fs::read_to_string(&log).unwrap_or_default();
            return Err(error.context(format!("the server's stderr:\n{log}")));
        }
    };
    let healthy = begin.elapsed();
    ensure!(
        health.pid == child.id(),
        "port {port} is served by process {}, not by the server just started ({})",
        health.pid,
        child.id()
    );
    let stopping = Instant::now();
    let pid = i32::try_from(child.id()).context("the server's pid fits in an i32")?;
    kill(Pid::from_raw(pid), Signal::SIGTERM).context("cannot send SIGTERM to the server")?;
    let status = wait_with_deadline(&mut child, DEADLINE)?;
    let stopped = stopping.elapsed();
    ensure!(
        status.success(),
        "the server exited with {status} after SIGTERM"
    );
    let complaints = complaints_in(&log);
    ensure!(
        complaints.is_empty(),
        "the server complained while starting:\n{}",
        complaints.join("\n")
    );
    Ok(StartSample {
        spawned,
        healthy,
        ready_in: server_ready_time(&log),
        stopped,
    })
}

/// Poll `/health` until it answers; connection refused means not yet.
fn poll_health(address: SocketAddr, begin: Instant) -> anyhow::Result<Health> {
    loop {
        match get_health(address) {
            Ok(health) => return Ok(health),
            Err(error) if begin.elapsed() > DEADLINE => {
                bail!("/health on {address} did not answer within {DEADLINE:?}: {error}")
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(error) => bail!("/health on {address} failed: {error}"),
        }
    }
}

/// The server's own `ready in 1.23ms` log line.
fn server_ready_time(log: &Path) -> Option<Duration> {
    logged_duration(log, "ready in ")
}

/// The duration that follows `prefix` in the first log line that has it.
fn logged_duration(log: &Path, prefix: &str) -> Option<Duration> {
    let text = fs::read_to_string(log).ok()?;
    let rest = text
        .lines()
        .find_map(|line| line.split_once(prefix).map(|(_, rest)| rest))?;
    parse_debug_duration(rest.split_whitespace().next()?)
}

/// The server's own `every connection closed in 12.3ms` log line.
fn server_drain_time(log: &Path) -> Option<Duration> {
    logged_duration(log, "every connection closed in ")
}

/// The server's own `the session store closed in 12.3ms` log line: its last
/// writes and checkpoint, after the connections closed.
fn store_close_time(log: &Path) -> Option<Duration> {
    logged_duration(log, "the session store closed in ")
}

/// A duration as `Debug` prints it: `812.5µs`, `1.2ms`, `3s`.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => number / 1e9,
        "µs" | "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

// ---------------------------------------------------------------------------
// Turns

/// When the clients of one turn measurement start, start counting, and stop.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// What one client saw during the measurement window.
#[derive(Default)]
struct LoopStats {
    /// Turns that ended inside the window.
    completed: u64,
    /// Latencies, in µs, of turns that started and ended inside the window.
    latencies_us: Vec<u32>,
    /// Turns that ended in each second of the window.
    per_second: Vec<u64>,
    /// The slowest turns, slowest first: when several clients stall at the
    /// same moment, the server (or the machine) paused.
    slowest: Vec<SlowTurn>,
}

/// One slow turn: how long it took and when, in the window, it ended.
#[derive(Clone, Copy)]
struct SlowTurn {
    latency_us: u32,
    ended_ms: u32,
}

/// Slow turns kept, per client and overall.
const SLOWEST_KEPT: usize = 8;

impl LoopStats {
    fn record(&mut self, clock: &Clock, started: Instant, ended: Instant) {
        if ended < clock.measure_from || ended >= clock.end {
            return;
        }
        self.completed += 1;
        let second = (ended - clock.measure_from).as_secs() as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
        if started >= clock.measure_from {
            let micros = (ended - started).as_micros();
            let latency_us = u32::try_from(micros).unwrap_or(u32::MAX);
            self.latencies_us.push(latency_us);
            let ended_ms = u32::try_from((ended - clock.measure_from).as_millis()).unwrap_or(0);
            self.keep_if_slow(SlowTurn {
                latency_us,
                ended_ms,
            });
        }
    }

    fn keep_if_slow(&mut self, turn: SlowTurn) {
        let position = self
            .slowest
            .partition_point(|kept| kept.latency_us >= turn.latency_us);
        if position < SLOWEST_KEPT {
            self.slowest.insert(position, turn);
            self.slowest.truncate(SLOWEST_KEPT);
        }
    }

    fn merge(&mut self, other: Self) {
        self.completed += other.completed;
        self.latencies_us.extend(other.latencies_us);
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (total, count) in self.per_second.iter_mut().zip(other.per_second) {
            *total += count;
        }
        for turn in other.slowest {
            self.keep_if_slow(turn);
        }
    }
}

async fn measure_turns(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let mut table = Table::new(
        &format!(
            "Turns: closed loop, one session per client, {} s warm-up, {} s measured (target >= 5,000 turns/s at 100 clients)",
            settings.warm_up.as_secs_f64(),
            settings.window.as_secs_f64()
        ),
        &[
            "clients",
            "turns/s",
            "p50",
            "p99",
            "max",
            "first s",
            "last s",
            "server CPU",
            "generator CPU",
            "other CPU",
            "server CPU/turn",
            "server RSS after",
            "target",
        ],
    );
    let mut series = Vec::new();
    for &clients in &settings.turn_clients {
        let run = turns_at(binary, settings, clients)
            .await
            .with_context(|| format!("the turn measurement with {clients} clients failed"))?;
        let window = settings.window.as_secs_f64();
        let completed = run.stats.completed;
        let rate = completed as f64 / window;
        let mut latencies = run.stats.latencies_us;
        latencies.sort_unstable();
        let target = if clients == TARGET_TURNS_CLIENTS {
            verdict(rate >= TARGET_TURNS_PER_SECOND)
        } else {
            "—".to_owned()
        };
        let per_turn_us = run.cpu.server.as_secs_f64() * 1e6 / completed.max(1) as f64;
        table.row(vec![
            clients.to_string(),
            format!("{rate:.0}"),
            format!("{} ms", ms_us(percentile(&latencies, 50.0))),
            format!("{} ms", ms_us(percentile(&latencies, 99.0))),
            format!("{} ms", ms_us(latencies.last().copied().unwrap_or(0))),
            run.stats
                .per_second
                .first()
                .copied()
                .unwrap_or(0)
                .to_string(),
            run.stats
                .per_second
                .last()
                .copied()
                .unwrap_or(0)
                .to_string(),
            format!("{:.0} %", run.cpu.server.as_secs_f64() / window * 100.0),
            format!("{:.0} %", run.cpu.generator.as_secs_f64() / window * 100.0),
            format!("{:.0} %", run.cpu.rest.as_secs_f64() / window * 100.0),
            format!("{per_turn_us:.0} µs"),
            kib(run.rss_kib),
            target,
        ]);
        series.push((
            clients,
            run.stats.per_second,
            run.stats.slowest,
            run.generator_pause,
        ));
    }
    table.print();
    for (clients, per_second, slowest, pause) in &series {
        let rates: Vec<String> = per_second.iter().map(u64::to_string).collect();
        println!("  turns per second, {clients} clients: {}", rates.join(" "));
        let slow: Vec<String> = slowest
            .iter()
            .map(|turn| {
                format!(
                    "{} ms at {:.2} s",
                    ms_us(turn.latency_us),
                    f64::from(turn.ended_ms) / 1e3
                )
            })
            .collect();
        println!("  slowest turns, {clients} clients: {}", slow.join(", "));
        println!(
            "  longest pause of the load generator itself, {clients} clients: {} ms at {:.2} s",
            ms_us(pause.latency_us),
            f64::from(pause.ended_ms) / 1e3
        );
    }
    println!("  first s / last s: turns completed in the first and the last second of the window.");
    println!(
        "  CPU: user + system time over the window, in % of one core (this machine has {} cores);",
        cores()
    );
    println!(
        "  other CPU: the rest of the machine (other processes, interrupt work not charged to a process)."
    );
    Ok(())
}

/// One closed-loop run.
struct TurnRun {
    stats: LoopStats,
    /// The server's RSS once the clients stop, in KiB.
    rss_kib: u64,
    /// CPU time the server, the clients and the rest of the machine used during the window.
    cpu: CpuUse,
    /// The load generator's own longest stall.
    generator_pause: SlowTurn,
}

/// Run the closed loop with `clients` clients against a fresh server.
async fn turns_at(binary: &Path, settings: &Settings, clients: usize) -> anyhow::Result<TurnRun> {
    let server = ServerProcess::launch(binary).await?;
    let opened = open_clients(&server.endpoint(), clients).await?;
    let start = Instant::now() + Duration::from_millis(50);
    let clock = Clock {
        start,
        measure_from: start + settings.warm_up,
        end: start + settings.warm_up + settings.window,
    };
    let mut loops = tokio::task::JoinSet::new();
    for (client, session) in opened {
        loops.spawn(closed_loop(client, session, clock));
    }
    let cpu = tokio::spawn(cpu_during(server.pid, clock));
    let pause = tokio::spawn(longest_pause(clock));
    let mut stats = LoopStats::default();
    let give_up = clock.end + DEADLINE;
    while let Some(joined) = tokio::time::timeout_at(give_up.into(), loops.join_next())
        .await
        .map_err(|_| anyhow!("clients were still running {DEADLINE:?} after the window"))?
    {
        let (client_stats, client) = joined.context("a client task panicked")??;
        stats.merge(client_stats);
        drop(client);
    }
    let cpu = cpu.await.context("the CPU sampler panicked")??;
    let generator_pause = pause.await.context("the pause meter panicked")?;
    let rss_kib = server.rss_kib()?;
    let complaints = server.complaints();
    let status = server.terminate().await?;
    ensure!(status.success(), "the server exited with {status}");
    print_complaints(&format!("turns with {clients} clients"), &complaints);
    Ok(TurnRun {
        stats,
        rss_kib,
        cpu,
        generator_pause,
    })
}

/// The longest time, during the window, that a 1 ms timer of this runtime
/// fired late: a stall of the load generator itself, not of the server.
async fn longest_pause(clock: Clock) -> SlowTurn {
    const TICK: Duration = Duration::from_millis(1);
    let mut longest = SlowTurn {
        latency_us: 0,
        ended_ms: 0,
    };
    tokio::time::sleep_until(clock.measure_from.into()).await;
    loop {
        let before = Instant::now();
        if before >= clock.end {
            return longest;
        }
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let late = (now - before).saturating_sub(TICK);
        let late_us = u32::try_from(late.as_micros()).unwrap_or(u32::MAX);
        if late_us > longest.latency_us {
            longest = SlowTurn {
                latency_us: late_us,
                ended_ms: u32::try_from((now - clock.measure_from).as_millis()).unwrap_or(0),
            };
        }
    }
}

/// CPU time the server (`pid`) and this process use between
/// `clock.measure_from` and `clock.end`.
async fn cpu_during(pid: u32, clock: Clock) -> anyhow::Result<CpuUse> {
    let server = pid.to_string();
    let sample = || -> anyhow::Result<[Duration; 3]> {
        Ok([cpu_time(&server)?, cpu_time("self")?, machine_busy_time()?])
    };
    tokio::time::sleep_until(clock.measure_from.into()).await;
    let before = sample()?;
    tokio::time::sleep_until(clock.end.into()).await;
    let after = sample()?;
    let [server, generator, machine] = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]));
    Ok(CpuUse {
        server,
        generator,
        rest: machine.saturating_sub(server + generator),
    })
}

/// CPU time used over a measurement window.
struct CpuUse {
    server: Duration,
    generator: Duration,
    /// Everything else the machine did: other processes, and interrupt work
    /// not charged to a process.
    rest: Duration,
}

/// Busy CPU time of the whole machine, all cores, from the `cpu` line of `/proc/stat`.
fn machine_busy_time() -> anyhow::Result<Duration> {
    let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .context("/proc/stat has no cpu line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|field| {
            field
                .parse()
                .context("/proc/stat has a field that is not a number")
        })
        .collect::<anyhow::Result<_>>()?;
    // user nice system idle iowait irq softirq steal; guest time is already in user.
    let busy: u64 = ticks.iter().take(8).sum::<u64>()
        - ticks.get(3).copied().unwrap_or(0)
        - ticks.get(4).copied().unwrap_or(0);
    Ok(Duration::from_secs_f64(busy as f64 / USER_HZ))
}

/// User + system CPU time of process `pid` (a number or `self`), all threads.
fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let (_, fields) = stat
        .rsplit_once(')')
        .with_context(|| format!("{path} has no command name"))?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{path} has no CPU time in field {}", index + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / USER_HZ))
}

/// Prompt in a closed loop from `clock.start` to `clock.end`.
async fn closed_loop(
    mut client: Client,
    session: String,
    clock: Clock,
) -> anyhow::Result<(LoopStats, Client)> {
    let mut stats = LoopStats::default();
    tokio::time::sleep_until(clock.start.into()).await;
    loop {
        let started = Instant::now();
        if started >= clock.end {
            return Ok((stats, client));
        }
        client.turn(&session).await?;
        stats.record(&clock, started, Instant::now());
    }
}

// ---------------------------------------------------------------------------
// Memory

async fn measure_rss(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let server = ServerProcess::launch(binary).await?;
    let endpoint = server.endpoint();
    server.wait_for_counts(0, 0).await?;
    tokio::time::sleep(SETTLE).await;
    let baseline = server.rss_kib()?;

    let mut table = Table::new(
        "Server memory (VmRSS) with idle connections, each initialized with one session (target <= 50 KB per connection)",
        &[
            "connections",
            "VmRSS",
            "growth",
            "per added connection",
            "open time",
            "target",
        ],
    );
    table.row(vec![
        "0".into(),
        kib(baseline),
        "—".into(),
        "—".into(),
        "—".into(),
        "—".into(),
    ]);
    let mut clients = Vec::new();
    let mut previous = (0, baseline);
    let mut last_slope = None;
    for &level in &settings.rss_levels {
        let opening = Instant::now();
        clients.extend(open_clients(&endpoint, level - clients.len()).await?);
        let open_time = opening.elapsed();
        server.wait_for_counts(level, level).await?;
        tokio::time::sleep(SETTLE).await;
        let rss = server.rss_kib()?;
        let added = (level - previous.0) as f64;
        let slope_kb = (rss as f64 - previous.1 as f64) * 1.024 / added;
        last_slope = Some(slope_kb);
        table.row(vec![
            level.to_string(),
            kib(rss),
            kib(rss.saturating_sub(previous.1)),
            format!("{slope_kb:.1} KB"),
            format!("{:.2} s", open_time.as_secs_f64()),
            String::new(),
        ]);
        previous = (level, rss);
    }
    if let (Some(slope), Some(row)) = (last_slope, table.last_row_mut()) {
        row[5] = verdict(slope <= TARGET_KB_PER_CONNECTION);
    }
    drop(clients);
    server.wait_for_counts(0, 0).await?;
    tokio::time::sleep(SETTLE).await;
    let after = server.rss_kib()?;
    table.row(vec![
        "0 (all closed)".into(),
        kib(after),
        format!("{:+} KiB", after as i64 - previous.1 as i64),
        "—".into(),
        "—".into(),
        "—".into(),
    ]);
    let (peak_level, peak_rss) = previous;
    for cycle in 1..=REOPEN_CYCLES {
        let reopened = open_clients(&endpoint, peak_level).await?;
        server.wait_for_counts(peak_level, peak_level).await?;
        tokio::time::sleep(SETTLE).await;
        let again = server.rss_kib()?;
        table.row(vec![
            format!("{peak_level} (reopened, cycle {cycle})"),
            kib(again),
            format!(
                "{:+} KiB vs first {peak_level}",
                again as i64 - peak_rss as i64
            ),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);
        drop(reopened);
        server.wait_for_counts(0, 0).await?;
    }
    table.print();
    println!(
        "  KB = 1,000 bytes; VmRSS is read from /proc/<pid>/status after {SETTLE:?} of quiet."
    );
    println!(
        "  The reopened rows tell memory the allocator keeps from memory leaked: closing every connection and opening as many again should not grow it, cycle after cycle."
    );
    print_complaints("the memory measurement", &server.complaints());
    let status = server.terminate().await?;
    ensure!(status.success(), "the server exited with {status}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Shutdown

/// One shutdown: how long it took and what the clients saw.
struct ShutdownOutcome {
    /// What the server logs as the time its connections took to close.
    drained: Option<Duration>,
    /// What the server logs as the time its store took to close, after.
    store_closed: Option<Duration>,
    exited_after: Duration,
    last_close_after: Duration,
    status: ExitStatus,
    endings: Vec<(Ending, usize)>,
    stop_reasons: Vec<(Option<String>, usize)>,
}

async fn measure_shutdown(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let clients = settings.shutdown_clients;
    let mut table = Table::new(
        &format!(
            "Shutdown: SIGTERM to process exit with {clients} connected clients (target <= 200 ms)"
        ),
        &[
            "clients were",
            "SIGTERM→exit",
            "SIGTERM→last close frame",
            "server's drain (own log)",
            "then the store's close (own log)",
            "exit status",
            "close codes",
            "running turns ended",
            "target",
        ],
    );
    for running_turns in [false, true] {
        let outcome = shutdown_once(binary, clients, running_turns)
            .await
            .with_context(|| format!("the shutdown measurement with {clients} clients failed"))?;
        let all_1001 = outcome
            .endings
            .iter()
            .all(|(ending, _)| *ending == Ending::Code(1001));
        let met = all_1001
            && outcome.status.success()
            && outcome.exited_after.as_secs_f64() * 1e3 <= TARGET_SHUTDOWN_MS;
        table.row(vec![
            if running_turns {
                "each streaming a turn"
            } else {
                "idle, one session each"
            }
            .to_owned(),
            format!("{} ms", ms(outcome.exited_after)),
            format!("{} ms", ms(outcome.last_close_after)),
            outcome.drained.map_or("not logged".to_owned(), |drained| {
                format!("{} ms", ms(drained))
            }),
            outcome
                .store_closed
                .map_or("not logged".to_owned(), |closed| {
                    format!("{} ms", ms(closed))
                }),
            outcome.status.to_string(),
            describe_counts(&outcome.endings, Ending::describe),
            if running_turns {
                describe_counts(&outcome.stop_reasons, |r| {
                    r.clone().unwrap_or("no answer".into())
                })
            } else {
                "—".to_owned()
            },
            verdict(met),
        ]);
    }
    table.print();
    Ok(())
}

async fn shutdown_once(
    binary: &Path,
    clients: usize,
    running_turns: bool,
) -> anyhow::Result<ShutdownOutcome> {
    let mut server = ServerProcess::launch(binary).await?;
    let opened = open_clients(&server.endpoint(), clients).await?;
    let started: Vec<(Client, Option<u64>)> = if running_turns {
        futures::stream::iter(opened)
            .map(|(mut client, session)| async move {
                let turn = client.start_long_turn(&session).await?;
                anyhow::Ok((client, Some(turn)))
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .try_collect()
            .await?
    } else {
        opened
            .into_iter()
            .map(|(client, _)| (client, None))
            .collect()
    };
    let mut watchers = tokio::task::JoinSet::new();
    for (client, turn) in started {
        watchers.spawn(client.wait_for_close(turn));
    }
    server.wait_for_counts(clients, clients).await?;
    tokio::time::sleep(SETTLE).await;

    let mut child = server.child.take().context("the server is running")?;
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM)?;
    let exited = tokio::task::spawn_blocking(move || {
        let status = wait_with_deadline(&mut child, DEADLINE);
        (status, Instant::now())
    });
    let mut closes = Vec::with_capacity(clients);
    let give_up = signalled + DEADLINE;
    while let Some(joined) = tokio::time::timeout_at(give_up.into(), watchers.join_next())
        .await
        .map_err(|_| anyhow!("clients were still open {DEADLINE:?} after SIGTERM"))?
    {
        closes.push(joined.context("a client task panicked")??);
    }
    let (status, exited_at) = exited.await.context("the exit waiter failed")?;
    let status = status.context("the server did not exit after SIGTERM")?;
    print_complaints(
        &format!(
            "shutdown with {clients} {} clients",
            if running_turns { "busy" } else { "idle" }
        ),
        &server.complaints(),
    );
    let last_close = closes
        .iter()
        .map(|closed| closed.at)
        .max()
        .unwrap_or(signalled);
    Ok(ShutdownOutcome {
        drained: server_drain_time(&server.log),
        store_closed: store_close_time(&server.log),
        exited_after: exited_at - signalled,
        last_close_after: last_close.saturating_duration_since(signalled),
        status,
        endings: count_by(closes.iter().map(|closed| closed.ending.clone())),
        stop_reasons: count_by(closes.iter().map(|closed| closed.stop_reason.clone())),
    })
}

// ---------------------------------------------------------------------------
// Statistics and tables

struct Stats {
    median: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: impl Iterator<Item = Duration>) -> Self {
        let mut samples: Vec<Duration> = samples.collect();
        samples.sort_unstable();
        Self {
            median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// How often each distinct value occurs, in order of first appearance.
fn count_by<T: PartialEq>(values: impl Iterator<Item = T>) -> Vec<(T, usize)> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for value in values {
        match counts.iter_mut().find(|(seen, _)| *seen == value) {
            Some((_, count)) => *count += 1,
            None => counts.push((value, 1)),
        }
    }
    counts
}

fn describe_counts<T>(counts: &[(T, usize)], name: impl Fn(&T) -> String) -> String {
    let mut text = String::new();
    for (value, count) in counts {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let _ = write!(text, "{count}× {}", name(value));
    }
    text
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

fn ms_us(micros: u32) -> String {
    format!("{:.2}", f64::from(micros) / 1e3)
}

fn kib(value: u64) -> String {
    format!("{:.1} MiB", value as f64 / 1024.0)
}
