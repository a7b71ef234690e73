//! Client benchmark for the thin clients of `punie`: how long `punie ask
//! "hello"` takes against a warm `punie serve --model test` and how much
//! memory it needs at its peak; how long the stdio bridge (`punie` with no
//! command) takes from spawn to the answer of `initialize`; and how much
//! latency the bridge adds to each message, compared with a WebSocket client
//! talking to the server directly. Every client is a real child process of
//! this benchmark, timed from just before `spawn()`; its peak memory is the
//! `ru_maxrss` that `wait4` reports when it is reaped.
//!
//! Run everything with `cargo bench --bench clients`, or name the
//! measurements to run: `cargo bench --bench clients -- ask bridge-start
//! bridge-latency`. `--quick` makes every measurement short, for a smoke run;
//! `--runs=N` and `--messages=N` set the sizes. `cargo bench` builds the binary
//! it measures (`target/release/punie`); `PUNIE_BIN=/path/to/punie` measures
//! another one. Each measurement starts its own server in temporary XDG
//! directories.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures::{SinkExt as _, StreamExt as _};
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

mod support;
use support::{
    DEADLINE, Home, Server, Table, percentile, print_machine, proc_status_kib, punie_binary,
    verdict,
};

/// The question `punie ask` is measured with, and the test model's answer.
const PROMPT: &str = "hello";
const ANSWER: &str = "Turn 1. You said: \"hello\". That is the first thing you said.\n";

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1,"clientCapabilities":{}}}"#;

const TARGET_ASK_MS: f64 = 10.0;
/// MB = 1,000,000 bytes.
const TARGET_ASK_MB: f64 = 10.0;
const TARGET_BRIDGE_START_MS: f64 = 5.0;
const TARGET_BRIDGE_ADDED_US: f64 = 50.0;

/// What the issue recorded for the Python Punie's `ask`, for contrast.
const PYTHON_ASK: &str = "0.8–0.97 s, 65 MB";

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("clients: {message}\n\n{USAGE}");
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
            eprintln!("clients: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How much of `link/client-functions.txt` the binary still has: names the
/// build lacks (after a dependency or compiler change) are code the linker
/// left scattered, and the clients' memory grows with them.
fn ordering_list_found(binary: &Path) -> String {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/client-functions.txt");
    let Ok(list) = fs::read_to_string(&list) else {
        return "clients' function list: not found".to_owned();
    };
    let wanted: std::collections::HashSet<&str> = list
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    // Read line by line: the whole symbol table would raise this process's
    // peak memory, which a child's `ru_maxrss` starts from.
    let nm = Command::new("nm")
        .arg(binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Some((mut nm, symbols)) = nm
        .ok()
        .and_then(|mut nm| nm.stdout.take().map(|symbols| (nm, symbols)))
    else {
        return "clients' function list: cannot read the binary's symbols (nm)".to_owned();
    };
    let found = io::BufRead::lines(io::BufReader::new(symbols))
        .map_while(Result::ok)
        .filter(|line| {
            line.split_whitespace()
                .last()
                .is_some_and(|name| wanted.contains(name))
        })
        .count();
    let _ = nm.wait();
    format!(
        "clients' function list: {found} of {} names in the binary{}",
        wanted.len(),
        if found * 10 < wanted.len() * 9 {
            " (stale: run scripts/client-order)"
        } else {
            ""
        }
    )
}

const USAGE: &str = "\
usage: cargo bench --bench clients -- [ask] [bridge-start] [bridge-latency] [options]

measurements (all three when none is named):
  ask             punie ask \"hello\", warm server: wall time (target median <= 10 ms)
                  and peak RSS (target <= 10 MB)
  bridge-start    spawn of the bridge to the answer of initialize (target median <= 5 ms)
  bridge-latency  session/list round trips through the bridge and directly
                  (target: the bridge adds <= 50 µs at p50)

options:
  --quick         short runs, for a smoke test
  --runs=N        measured processes of ask and bridge-start (default 50, quick 10)
  --messages=N    round trips per path of bridge-latency (default 20000, quick 2000)

PUNIE_BIN overrides the binary.";

fn run(options: &Options) -> anyhow::Result<()> {
    let settings = Settings::new(options);
    let binary = punie_binary();
    ensure!(
        binary.is_file(),
        "the binary {} does not exist; build it with `cargo build --release --bin punie`",
        binary.display()
    );
    print_machine("punie client benchmark", &binary, options.quick);
    println!("  {}", ordering_list_found(&binary));
    if options.wants(Measurement::Ask) {
        measure_ask(&binary, &settings).context("the ask measurement failed")?;
    }
    if options.wants(Measurement::BridgeStart) {
        measure_bridge_start(&binary, &settings).context("the bridge-start measurement failed")?;
    }
    if options.wants(Measurement::BridgeLatency) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the tokio runtime")?;
        runtime
            .block_on(measure_bridge_latency(&binary, &settings))
            .context("the bridge-latency measurement failed")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Command line and settings

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measurement {
    Ask,
    BridgeStart,
    BridgeLatency,
}

#[derive(Debug, Default)]
struct Options {
    selected: Vec<Measurement>,
    quick: bool,
    help: bool,
    runs: Option<usize>,
    messages: Option<usize>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let count = |arg: &str, option: &str| -> Result<usize, String> {
            let value = &arg[option.len()..];
            value
                .parse()
                .ok()
                .filter(|count| *count > 0)
                .ok_or_else(|| format!("{option} takes a positive count, not `{value}`"))
        };
        let mut options = Self::default();
        for arg in args {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => options.quick = true,
                "-h" | "--help" => options.help = true,
                "ask" => options.selected.push(Measurement::Ask),
                "bridge-start" => options.selected.push(Measurement::BridgeStart),
                "bridge-latency" => options.selected.push(Measurement::BridgeLatency),
                _ if arg.starts_with("--runs=") => options.runs = Some(count(&arg, "--runs=")?),
                _ if arg.starts_with("--messages=") => {
                    options.messages = Some(count(&arg, "--messages=")?);
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(options)
    }

    fn wants(&self, measurement: Measurement) -> bool {
        self.selected.is_empty() || self.selected.contains(&measurement)
    }
}

/// How big each measurement is.
struct Settings {
    /// Processes started and thrown away before the measured ones.
    warm_up_runs: usize,
    runs: usize,
    /// Round trips per path before the measured ones.
    warm_up_messages: usize,
    messages: usize,
}

impl Settings {
    fn new(options: &Options) -> Self {
        let (warm_up_runs, runs, warm_up_messages, messages) = if options.quick {
            (2, 10, 200, 2_000)
        } else {
            (5, 50, 1_000, 20_000)
        };
        Self {
            warm_up_runs,
            runs: options.runs.unwrap_or(runs),
            warm_up_messages,
            messages: options.messages.unwrap_or(messages),
        }
    }
}

// ---------------------------------------------------------------------------
// A client process, watched from outside

/// A child process whose stdout and exit two threads watch, each event
/// stamped with the moment the thread saw it. Reaped with `wait4`, for the
/// child's peak RSS.
struct Watched {
    pid: Pid,
    /// Just before `spawn()`.
    started: Instant,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Event>,
    output: Vec<u8>,
    first_output: Option<Instant>,
    /// When the first `\n` arrived on stdout.
    first_line: Option<Instant>,
    eof: bool,
    exit: Option<Exit>,
    what: String,
    stderr: PathBuf,
}

enum Event {
    Output(Instant, Vec<u8>),
    OutputEnded,
    Exited(Exit),
    WaitFailed(io::Error),
}

#[derive(Clone, Copy)]
struct Exit {
    at: Instant,
    /// Raw status, as `wait4` reports it.
    status: i32,
    /// Peak resident set size, in KiB (`ru_maxrss`).
    max_rss_kib: u64,
}

impl Watched {
    /// Start `command` with stdout piped and stderr going to the file
    /// `stderr`; stdin is whatever `command` says.
    fn spawn(mut command: Command, what: &str, stderr: PathBuf) -> anyhow::Result<Self> {
        let log =
            File::create(&stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
        command.stdout(Stdio::piped()).stderr(log);
        let (sender, events) = mpsc::channel();
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("a pid fits in an i32")?);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout is piped")?;
        // From here on `wait4` reaps the child; `Child` would only `waitpid`.
        drop(child);
        let output = sender.clone();
        std::thread::spawn(move || forward_output(stdout, &output));
        std::thread::spawn(move || {
            let _ = sender.send(match reap(pid) {
                Ok(exit) => Event::Exited(exit),
                Err(error) => Event::WaitFailed(error),
            });
        });
        Ok(Self {
            pid,
            started,
            stdin,
            events,
            output: Vec::new(),
            first_output: None,
            first_line: None,
            eof: false,
            exit: None,
            what: what.to_owned(),
            stderr,
        })
    }

    fn write_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin is not piped")?;
        // One `write`: the line and its newline together.
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("cannot write to the stdin of {}", self.what))
    }

    /// Close stdin; returns when.
    fn close_stdin(&mut self) -> Instant {
        drop(self.stdin.take());
        Instant::now()
    }

    /// Wait for the first complete line on stdout.
    fn first_line(&mut self) -> anyhow::Result<(Instant, String)> {
        let give_up = Instant::now() + DEADLINE;
        loop {
            if let Some(at) = self.first_line {
                let end = self.output.iter().position(|&b| b == b'\n').unwrap_or(0);
                return Ok((
                    at,
                    String::from_utf8_lossy(&self.output[..end]).into_owned(),
                ));
            }
            if self.eof {
                let status = self
                    .exit
                    .as_ref()
                    .map(|exit| describe_status(self.pid, exit));
                bail!(
                    "{} closed stdout without writing a line (exit: {}); its stderr:\n{}",
                    self.what,
                    status.unwrap_or_else(|| "still running".to_owned()),
                    self.stderr_text()
                );
            }
            self.next_event(give_up, "write a line on stdout")?;
        }
    }

    /// Close stdin and wait until the process has exited and closed stdout.
    fn finish(&mut self) -> anyhow::Result<Exit> {
        self.close_stdin();
        let give_up = Instant::now() + DEADLINE;
        while !(self.eof && self.exit.is_some()) {
            self.next_event(give_up, "exit")?;
        }
        let exit = self.exit.context("the process exited")?;
        ensure!(
            matches!(
                WaitStatus::from_raw(self.pid, exit.status),
                Ok(WaitStatus::Exited(_, 0))
            ),
            "{} ended with {}; its stdout:\n{}\nits stderr:\n{}",
            self.what,
            describe_status(self.pid, &exit),
            String::from_utf8_lossy(&self.output),
            self.stderr_text()
        );
        Ok(exit)
    }

    fn next_event(&mut self, give_up: Instant, to: &str) -> anyhow::Result<()> {
        let timeout = give_up.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(timeout) {
            Ok(Event::Output(at, bytes)) => {
                self.first_output.get_or_insert(at);
                if self.first_line.is_none() && bytes.contains(&b'\n') {
                    self.first_line = Some(at);
                }
                self.output.extend(bytes);
            }
            Ok(Event::OutputEnded) => self.eof = true,
            Ok(Event::Exited(exit)) => self.exit = Some(exit),
            Ok(Event::WaitFailed(error)) => bail!("cannot wait for {}: {error}", self.what),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = kill(self.pid, Signal::SIGKILL);
                bail!(
                    "{} did not {to} within {DEADLINE:?}; killed. Its stdout:\n{}\nits stderr:\n{}",
                    self.what,
                    String::from_utf8_lossy(&self.output),
                    self.stderr_text()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the threads watching {} stopped", self.what)
            }
        }
        Ok(())
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Not reaped yet, so the pid is still this child's; its waiting
        // thread reaps it.
        if self.exit.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }
}

fn forward_output(mut stdout: std::process::ChildStdout, events: &mpsc::Sender<Event>) {
    let mut buffer = [0_u8; 64 * 1024];
    loop {
        match stdout.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                let at = Instant::now();
                if events
                    .send(Event::Output(at, buffer[..read].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = events.send(Event::OutputEnded);
}

/// Wait for child `pid` to exit and reap it with `wait4`, which also reports
/// the child's peak RSS.
fn reap(pid: Pid) -> io::Result<Exit> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain integers, for which all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals that `wait4` only writes.
        let reaped = unsafe { libc::wait4(pid.as_raw(), &raw mut status, 0, &raw mut usage) };
        let at = Instant::now();
        if reaped == pid.as_raw() {
            return Ok(Exit {
                at,
                status,
                max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            });
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn describe_status(pid: Pid, exit: &Exit) -> String {
    match WaitStatus::from_raw(pid, exit.status) {
        Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Ok(WaitStatus::Signaled(_, signal, _)) => format!("signal {signal}"),
        _ => format!("wait status {:#x}", exit.status),
    }
}

/// The peak RSS of this process so far (`VmHWM`), in KiB. A child's
/// `ru_maxrss` is never below it: `execve` carries the high-water mark of the
/// memory it replaces — ours, since the child was spawned from this process —
/// into the child's figure.
fn own_peak_rss_kib() -> anyhow::Result<u64> {
    proc_status_kib("self", "VmHWM:")
}

/// `punie --version`: exec, dynamic linking, clap and exit, with no runtime
/// and no connection — the floor under every client command.
struct FloorSample {
    total: Duration,
    max_rss_kib: u64,
}

fn version_once(binary: &Path, home: &Home, run: usize) -> anyhow::Result<FloorSample> {
    let mut command = home.command(binary);
    command.arg("--version").stdin(Stdio::null());
    let mut version = Watched::spawn(
        command,
        "punie --version",
        home.file(&format!("version-{run}.log")),
    )?;
    let exit = version.finish()?;
    ensure!(
        version.output.starts_with(b"punie "),
        "punie --version printed {:?}",
        String::from_utf8_lossy(&version.output)
    );
    Ok(FloorSample {
        total: exit.at - version.started,
        max_rss_kib: exit.max_rss_kib,
    })
}

fn measure_floor(
    binary: &Path,
    home: &Home,
    settings: &Settings,
) -> anyhow::Result<Vec<FloorSample>> {
    for run in 0..settings.warm_up_runs {
        version_once(binary, home, run)?;
    }
    (0..settings.runs)
        .map(|run| version_once(binary, home, run))
        .collect()
}

// ---------------------------------------------------------------------------
// punie ask

struct AskSample {
    /// Spawn to exit (reaped).
    total: Duration,
    /// Spawn to the first bytes of the answer on stdout.
    answered: Duration,
    max_rss_kib: u64,
}

fn measure_ask(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let server = Server::start(binary)?;
    for run in 0..settings.warm_up_runs {
        ask_once(binary, &server, run).context("a warm-up ask failed")?;
    }
    let mut samples = Vec::with_capacity(settings.runs);
    for run in 0..settings.runs {
        samples.push(ask_once(binary, &server, run)?);
    }
    let mut direct = Vec::with_capacity(settings.runs);
    for _ in 0..settings.warm_up_runs {
        direct_ask(&server)?;
    }
    for _ in 0..settings.runs {
        direct.push(direct_ask(&server)?);
    }
    let floor = measure_floor(binary, &server.home, settings)?;
    let own_peak = own_peak_rss_kib()?;
    server.stop()?;

    let total = Spread::of(samples.iter().map(|s| s.total));
    let answered = Spread::of(samples.iter().map(|s| s.answered));
    let rss = RssSpread::of(samples.iter().map(|s| s.max_rss_kib));
    let direct = Spread::of(direct.into_iter());
    let floor_time = Spread::of(floor.iter().map(|s| s.total));
    let floor_rss = RssSpread::of(floor.iter().map(|s| s.max_rss_kib));
    let time_met = total.median.as_secs_f64() * 1e3 <= TARGET_ASK_MS;
    let rss_met = rss.max as f64 * 1024.0 / 1e6 <= TARGET_ASK_MB;

    let mut table = Table::new(
        &format!(
            "punie ask \"{PROMPT}\" against a warm server, {} runs after {} warm-up (target: median <= {TARGET_ASK_MS} ms, peak RSS <= {TARGET_ASK_MB} MB)",
            settings.runs, settings.warm_up_runs
        ),
        &[
            "process",
            "spawn→exit median",
            "p90",
            "max",
            "spawn→answer on stdout, median",
            "peak RSS median",
            "peak RSS max",
            "target",
        ],
    );
    table.row(vec![
        format!("punie ask \"{PROMPT}\""),
        format!("{} ms", ms(total.median)),
        format!("{} ms", ms(total.p90)),
        format!("{} ms", ms(total.max)),
        format!("{} ms", ms(answered.median)),
        mem(rss.median),
        mem(rss.max),
        format!("time {}, memory {}", verdict(time_met), verdict(rss_met)),
    ]);
    table.row(vec![
        "punie --version (floor)".to_owned(),
        format!("{} ms", ms(floor_time.median)),
        format!("{} ms", ms(floor_time.p90)),
        format!("{} ms", ms(floor_time.max)),
        "—".to_owned(),
        mem(floor_rss.median),
        mem(floor_rss.max),
        "—".to_owned(),
    ]);
    table.row(vec![
        "in this process: connect, initialize, session/new, prompt answered".to_owned(),
        format!("{} ms", ms(direct.median)),
        format!("{} ms", ms(direct.p90)),
        format!("{} ms", ms(direct.max)),
        "—".to_owned(),
        "—".to_owned(),
        "—".to_owned(),
        "—".to_owned(),
    ]);
    table.row(vec![
        "Python Punie (from the issue)".to_owned(),
        PYTHON_ASK.to_owned(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        "—".to_owned(),
    ]);
    table.print();
    println!(
        "  peak RSS: ru_maxrss from wait4 when each process is reaped; MiB = 2^20 bytes, MB = 10^6 bytes."
    );
    print_rss_floor(own_peak, rss.min.min(floor_rss.min));
    Ok(())
}

fn ask_once(binary: &Path, server: &Server, run: usize) -> anyhow::Result<AskSample> {
    let mut command = server.home.command(binary);
    command.args(["ask", PROMPT]).stdin(Stdio::null());
    let mut ask = Watched::spawn(
        command,
        "punie ask",
        server.home.file(&format!("ask-{run}.log")),
    )?;
    let exit = ask.finish()?;
    let output = String::from_utf8_lossy(&ask.output);
    ensure!(
        output == ANSWER,
        "punie ask printed {output:?}, expected {ANSWER:?}; its stderr:\n{}",
        ask.stderr_text()
    );
    let answered = ask.first_output.context("punie ask printed its answer")?;
    Ok(AskSample {
        total: exit.at - ask.started,
        answered: answered - ask.started,
        max_rss_kib: exit.max_rss_kib,
    })
}

/// Say whether the bench's own peak RSS could have set any child's figure.
fn print_rss_floor(own_peak_kib: u64, lowest_child_kib: u64) {
    if own_peak_kib < lowest_child_kib {
        println!(
            "  this process peaked at {} (VmHWM), below every child's figure: each figure is the child's own (execve carries the parent's high-water mark into a child's ru_maxrss).",
            mem(own_peak_kib)
        );
    } else {
        println!(
            "  WARNING: this process peaked at {} (VmHWM), at or above the lowest child figure ({}): execve carries the parent's high-water mark into a child's ru_maxrss, so those figures show this process, not the child.",
            mem(own_peak_kib),
            mem(lowest_child_kib)
        );
    }
}

// ---------------------------------------------------------------------------
// Bridge start

struct BridgeStartSample {
    /// Spawn to the answer of `initialize` on stdout.
    answered: Duration,
    /// stdin closed to exit (reaped).
    closed: Duration,
    max_rss_kib: u64,
}

fn measure_bridge_start(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let server = Server::start(binary)?;
    for run in 0..settings.warm_up_runs {
        bridge_start_once(binary, &server, run).context("a warm-up bridge failed")?;
    }
    let mut samples = Vec::with_capacity(settings.runs);
    for run in 0..settings.runs {
        samples.push(bridge_start_once(binary, &server, run)?);
    }
    let mut direct = Vec::with_capacity(settings.runs);
    for _ in 0..settings.warm_up_runs {
        direct_initialize(&server)?;
    }
    for _ in 0..settings.runs {
        direct.push(direct_initialize(&server)?);
    }
    let floor = measure_floor(binary, &server.home, settings)?;
    let own_peak = own_peak_rss_kib()?;
    server.stop()?;

    let answered = Spread::of(samples.iter().map(|s| s.answered));
    let closed = Spread::of(samples.iter().map(|s| s.closed));
    let rss = RssSpread::of(samples.iter().map(|s| s.max_rss_kib));
    let direct = Spread::of(direct.into_iter());
    let floor_time = Spread::of(floor.iter().map(|s| s.total));
    let floor_rss = RssSpread::of(floor.iter().map(|s| s.max_rss_kib));

    let mut table = Table::new(
        &format!(
            "Bridge start: spawn of `punie` to the answer of initialize on its stdout, {} runs after {} warm-up (target: median <= {TARGET_BRIDGE_START_MS} ms)",
            settings.runs, settings.warm_up_runs
        ),
        &[
            "what",
            "median",
            "p90",
            "max",
            "stdin EOF→exit median",
            "peak RSS median",
            "peak RSS max",
            "target",
        ],
    );
    table.row(vec![
        "bridge: spawn → initialize answered".to_owned(),
        format!("{} ms", ms(answered.median)),
        format!("{} ms", ms(answered.p90)),
        format!("{} ms", ms(answered.max)),
        format!("{} ms", ms(closed.median)),
        mem(rss.median),
        mem(rss.max),
        verdict(answered.median.as_secs_f64() * 1e3 <= TARGET_BRIDGE_START_MS),
    ]);
    table.row(vec![
        "punie --version: spawn → exit (floor)".to_owned(),
        format!("{} ms", ms(floor_time.median)),
        format!("{} ms", ms(floor_time.p90)),
        format!("{} ms", ms(floor_time.max)),
        "—".to_owned(),
        mem(floor_rss.median),
        mem(floor_rss.max),
        "—".to_owned(),
    ]);
    table.row(vec![
        "in this process: connect, handshake, initialize".to_owned(),
        format!("{} ms", ms(direct.median)),
        format!("{} ms", ms(direct.p90)),
        format!("{} ms", ms(direct.max)),
        "—".to_owned(),
        "—".to_owned(),
        "—".to_owned(),
        "—".to_owned(),
    ]);
    table.print();
    println!(
        "  the bridge finds the server through server.json and the token file, as an IDE would start it."
    );
    print_rss_floor(own_peak, rss.min.min(floor_rss.min));
    Ok(())
}

fn bridge_start_once(
    binary: &Path,
    server: &Server,
    run: usize,
) -> anyhow::Result<BridgeStartSample> {
    let mut command = server.home.command(binary);
    command.stdin(Stdio::piped());
    let mut bridge = Watched::spawn(
        command,
        "the bridge",
        server.home.file(&format!("bridge-{run}.log")),
    )?;
    bridge.write_line(INITIALIZE)?;
    let (answered_at, line) = bridge.first_line()?;
    check_answer(&line, 1).context("the bridge's first line is not the answer to initialize")?;
    let closed_at = bridge.close_stdin();
    let exit = bridge.finish()?;
    Ok(BridgeStartSample {
        answered: answered_at - bridge.started,
        closed: exit.at - closed_at,
        max_rss_kib: exit.max_rss_kib,
    })
}

/// What a bridge does once running, done from this process: connect,
/// WebSocket handshake, `initialize` and its answer.
fn direct_initialize(server: &Server) -> anyhow::Result<Duration> {
    let begin = Instant::now();
    let mut client = SyncClient::connect(server)?;
    client.call(INITIALIZE, 1)?;
    let elapsed = begin.elapsed();
    client.close();
    Ok(elapsed)
}

/// What `punie ask` does on the wire, done from this process: connect,
/// `initialize`, `session/new`, `session/prompt` until its answer.
fn direct_ask(server: &Server) -> anyhow::Result<Duration> {
    let begin = Instant::now();
    let mut client = SyncClient::connect(server)?;
    client.call(INITIALIZE, 1)?;
    let new = serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "session/new",
        "params": {"cwd": server.home.file("workspace"), "mcpServers": []},
    });
    let session = client.call(&new.to_string(), 2)?;
    let session: Value = serde_json::from_str(&session)?;
    let session = session["result"]["sessionId"]
        .as_str()
        .context("session/new answered without a sessionId")?;
    let prompt = serde_json::json!({
        "jsonrpc": "2.0", "id": 3, "method": "session/prompt",
        "params": {"sessionId": session, "prompt": [{"type": "text", "text": PROMPT}]},
    });
    client.call(&prompt.to_string(), 3)?;
    let elapsed = begin.elapsed();
    client.close();
    Ok(elapsed)
}

/// A blocking WebSocket client in this process.
struct SyncClient {
    socket: tungstenite::WebSocket<StdTcpStream>,
}

impl SyncClient {
    fn connect(server: &Server) -> anyhow::Result<Self> {
        let stream = StdTcpStream::connect(server.address)
            .with_context(|| format!("cannot connect to {}", server.address))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        let (socket, _) = tungstenite::client::client(acp_request(server)?, stream)
            .map_err(|error| anyhow!("the WebSocket handshake failed: {error}"))?;
        Ok(Self { socket })
    }

    /// Send `request`, whose id is `id`; read past notifications to its
    /// answer, which must be a success. Returns the answer's text.
    fn call(&mut self, request: &str, id: u64) -> anyhow::Result<String> {
        self.socket
            .send(Message::text(request))
            .with_context(|| format!("cannot send request {id}"))?;
        loop {
            match self
                .socket
                .read()
                .with_context(|| format!("no answer to request {id}"))?
            {
                Message::Text(text) => {
                    let reply: Reply = serde_json::from_str(text.as_str())
                        .with_context(|| format!("not JSON-RPC: {}", text.as_str()))?;
                    if reply.id.is_some() {
                        check_answer(text.as_str(), id)?;
                        return Ok(text.as_str().to_owned());
                    }
                }
                Message::Close(frame) => bail!("the server closed the WebSocket: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Close, and read until the server's close frame: the connection ends cleanly.
    fn close(mut self) {
        let _ = self.socket.close(None);
        while self.socket.read().is_ok() {}
    }
}

fn acp_request(server: &Server) -> anyhow::Result<Request> {
    let mut request = format!("ws://{}/acp", server.address).into_client_request()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {}", server.token))
            .context("the token is not a valid header value")?,
    );
    Ok(request)
}

/// A JSON-RPC response, with only the parts checked.
#[derive(Deserialize)]
struct Reply {
    id: Option<u64>,
    result: Option<IgnoredAny>,
    error: Option<Value>,
}

/// `line` must be the successful answer to request `id`.
fn check_answer(line: &str, id: u64) -> anyhow::Result<()> {
    let reply: Reply =
        serde_json::from_str(line).with_context(|| format!("not JSON-RPC: {line}"))?;
    if let Some(error) = reply.error {
        bail!("request {id} failed: {error}");
    }
    ensure!(
        reply.id == Some(id) && reply.result.is_some(),
        "expected the answer to request {id}, got {line}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Bridge latency

fn session_list(id: u64) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"session/list","params":{{}}}}"#)
}

/// A WebSocket client in this process.
struct DirectClient {
    ws: WebSocketStream<tokio::net::TcpStream>,
}

impl DirectClient {
    async fn connect(server: &Server) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(server.address)
            .await
            .with_context(|| format!("cannot connect to {}", server.address))?;
        stream.set_nodelay(true)?;
        let handshake = tokio_tungstenite::client_async(acp_request(server)?, stream);
        let (ws, _) = tokio::time::timeout(DEADLINE, handshake)
            .await
            .map_err(|_| anyhow!("the WebSocket handshake took longer than {DEADLINE:?}"))?
            .context("the server refused the WebSocket")?;
        Ok(Self { ws })
    }

    /// Send `request` (whose id is `id`), read its answer; the time between.
    async fn round_trip(&mut self, request: String, id: u64) -> anyhow::Result<Duration> {
        let begin = Instant::now();
        let exchange = async {
            self.ws.send(Message::text(request)).await?;
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => return anyhow::Ok(text),
                    Some(Ok(Message::Close(frame))) => {
                        bail!("the server closed the WebSocket: {frame:?}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error.into()),
                    None => bail!("the connection ended"),
                }
            }
        };
        let text = tokio::time::timeout(DEADLINE, exchange)
            .await
            .map_err(|_| anyhow!("no answer to request {id} within {DEADLINE:?}"))??;
        let elapsed = begin.elapsed();
        check_answer(text.as_str(), id)?;
        Ok(elapsed)
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(DEADLINE, self.ws.close(None)).await;
    }
}

/// A bridge process whose stdin and stdout this process drives.
struct BridgeClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
    line: String,
    stderr: PathBuf,
}

impl BridgeClient {
    fn spawn(binary: &Path, server: &Server) -> anyhow::Result<Self> {
        let stderr = server.home.file("bridge-latency.log");
        let log =
            File::create(&stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
        let mut command = tokio::process::Command::from(server.home.command(binary));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot start the bridge")?;
        Ok(Self {
            stdin: child.stdin.take().context("stdin is piped")?,
            stdout: BufReader::new(child.stdout.take().context("stdout is piped")?),
            child,
            line: String::new(),
            stderr,
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the bridge has exited")
    }

    async fn round_trip(&mut self, mut request: String, id: u64) -> anyhow::Result<Duration> {
        request.push('\n');
        self.line.clear();
        let begin = Instant::now();
        let exchange = async {
            self.stdin.write_all(request.as_bytes()).await?;
            self.stdout.read_line(&mut self.line).await
        };
        let read = tokio::time::timeout(DEADLINE, exchange)
            .await
            .map_err(|_| anyhow!("the bridge did not answer request {id} within {DEADLINE:?}"))?
            .context("cannot talk to the bridge")?;
        let elapsed = begin.elapsed();
        if read == 0 {
            bail!(
                "the bridge closed stdout; its stderr:\n{}",
                fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
        check_answer(self.line.trim_end(), id)?;
        Ok(elapsed)
    }

    /// Close stdin; the bridge must exit with status 0.
    async fn close(mut self) -> anyhow::Result<Duration> {
        drop(self.stdin);
        let closed = Instant::now();
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .map_err(|_| anyhow!("the bridge did not exit within {DEADLINE:?} of stdin closing"))?
            .context("cannot wait for the bridge")?;
        let elapsed = closed.elapsed();
        ensure!(
            status.success(),
            "the bridge exited with {status}; its stderr:\n{}",
            fs::read_to_string(&self.stderr).unwrap_or_default()
        );
        Ok(elapsed)
    }
}

/// User + system CPU time of process `pid`, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    /// Clock ticks per second of the CPU times in `/proc/<pid>/stat` (fixed on Linux).
    const USER_HZ: f64 = 100.0;
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let (_, fields) = stat
        .rsplit_once(')')
        .with_context(|| format!("{path} has no command name"))?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{path} has no CPU time in field {}", index + 3))
    };
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) as f64 / USER_HZ,
    ))
}

async fn measure_bridge_latency(binary: &Path, settings: &Settings) -> anyhow::Result<()> {
    let server = Server::start(binary)?;
    let mut direct = DirectClient::connect(&server).await?;
    direct.round_trip(INITIALIZE.to_owned(), 1).await?;
    let mut bridge = BridgeClient::spawn(binary, &server)?;
    bridge.round_trip(INITIALIZE.to_owned(), 1).await?;

    // One round trip on each path in turn, so that both see the same machine.
    let mut id = 1;
    for _ in 0..settings.warm_up_messages {
        id += 1;
        direct.round_trip(session_list(id), id).await?;
        bridge.round_trip(session_list(id), id).await?;
    }
    let pid = bridge.pid()?;
    let cpu_before = cpu_time(pid)?;
    let mut through_direct = Vec::with_capacity(settings.messages);
    let mut through_bridge = Vec::with_capacity(settings.messages);
    for _ in 0..settings.messages {
        id += 1;
        through_direct.push(direct.round_trip(session_list(id), id).await?);
        through_bridge.push(bridge.round_trip(session_list(id), id).await?);
    }
    let bridge_cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let bridge_rss = proc_status_kib(pid, "VmRSS:")?;
    let bridge_exit = bridge.close().await?;
    direct.close().await;
    server.stop()?;

    let direct = Spread::of(through_direct.into_iter());
    let bridged = Spread::of(through_bridge.into_iter());
    let added = bridged.median.as_secs_f64() * 1e6 - direct.median.as_secs_f64() * 1e6;
    let mut table = Table::new(
        &format!(
            "Bridge latency: session/list round trips, one at a time, {} per path after {} warm-up, paths alternating (target: the bridge adds <= {TARGET_BRIDGE_ADDED_US} µs at p50)",
            settings.messages, settings.warm_up_messages
        ),
        &["path", "p50", "p90", "p99", "max", "target"],
    );
    for (label, spread) in [
        ("direct WebSocket from this process", &direct),
        ("through a long-lived bridge (stdin → stdout)", &bridged),
    ] {
        table.row(vec![
            label.to_owned(),
            us(spread.median),
            us(spread.p90),
            us(spread.p99),
            us(spread.max),
            "—".to_owned(),
        ]);
    }
    table.row(vec![
        "added by the bridge (difference of p50s)".to_owned(),
        format!("{added:.1} µs"),
        format!(
            "{:.1} µs",
            bridged.p90.as_secs_f64() * 1e6 - direct.p90.as_secs_f64() * 1e6
        ),
        format!(
            "{:.1} µs",
            bridged.p99.as_secs_f64() * 1e6 - direct.p99.as_secs_f64() * 1e6
        ),
        "—".to_owned(),
        verdict(added <= TARGET_BRIDGE_ADDED_US),
    ]);
    table.print();
    println!(
        "  bridge CPU (user + system, all threads): {:.1} µs per round trip, from /proc/<pid>/stat at 10 ms resolution",
        bridge_cpu.as_secs_f64() * 1e6 / settings.messages as f64
    );
    println!(
        "  bridge VmRSS after {} round trips: {}; stdin EOF → exit: {} ms",
        settings.messages + settings.warm_up_messages + 1,
        mem(bridge_rss),
        ms(bridge_exit)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Statistics and tables

struct Spread {
    median: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Spread {
    fn of(samples: impl Iterator<Item = Duration>) -> Self {
        let mut sorted: Vec<Duration> = samples.collect();
        sorted.sort_unstable();
        Self {
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// Peak RSS figures, in KiB.
struct RssSpread {
    min: u64,
    median: u64,
    max: u64,
}

impl RssSpread {
    fn of(samples: impl Iterator<Item = u64>) -> Self {
        let mut sorted: Vec<u64> = samples.collect();
        sorted.sort_unstable();
        Self {
            min: sorted.first().copied().unwrap_or_default(),
            median: percentile(&sorted, 50.0),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

fn us(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

/// KiB as MiB, and as MB (the unit of the targets).
fn mem(kib: u64) -> String {
    format!(
        "{:.1} MiB ({:.1} MB)",
        kib as f64 / 1024.0,
        kib as f64 * 1024.0 / 1e6
    )
}
