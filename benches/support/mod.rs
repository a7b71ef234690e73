//! What the benchmarks share: a `punie serve` in a temporary home, found and
//! stopped as a user would, and the way figures are reduced and printed.
//! Each benchmark includes it with `mod support;` and uses what it needs.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any single wait (a start, an answer, an exit) may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `punie` binary to measure.
pub fn punie_binary() -> PathBuf {
    match std::env::var_os("PUNIE_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_punie")),
    }
}

/// Run a benchmark's async `work` on a runtime from `builder`; a failure is
/// printed as `name: error` and ends the process with status 1.
pub fn block_on(
    name: &str,
    mut builder: tokio::runtime::Builder,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let outcome = builder
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")
        .and_then(|runtime| runtime.block_on(work));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The benchmark's title and what it runs on.
pub fn print_machine(title: &str, binary: &Path, quick: bool) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("{title}{}", if quick { " (quick)" } else { "" });
    println!("  binary: {}", binary.display());
    println!("  machine: {cores} cores, {cpu}, Linux {}", kernel.trim());
    println!(
        "  date: {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    println!(
        "  load average before the run: {} (anything well above 0 disturbs the figures)",
        load.join(" ")
    );
}

// ---------------------------------------------------------------------------
// The server, and the environment every process gets

/// A temporary home: the XDG directories and the workspace of one server and
/// its clients.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary home")?;
        let workspace = dir.path().join("workspace");
        fs::create_dir_all(&workspace)
            .with_context(|| format!("cannot create {}", workspace.display()))?;
        Ok(Self { dir })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `binary` with this home's XDG directories, run in its workspace: a
    /// client started so finds the server through `server.json` and the
    /// token file, as it would on a desktop.
    pub fn command(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .current_dir(self.dir.path().join("workspace"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("PUNIE_TOKEN")
            .env_remove("PUNIE_SERVER")
            .env_remove("PUNIE_MODEL")
            .env_remove("RUST_LOG");
        command
    }
}

/// A running `punie serve`, killed if dropped while running.
pub struct Server {
    pub home: Home,
    child: Option<Child>,
    pub address: SocketAddr,
    pub token: String,
    log: PathBuf,
    /// From just before `spawn()` to the ready line seen (polled every 1 ms).
    pub ready_in: Duration,
}

impl Server {
    /// Start `punie serve --model test` on a free port in a fresh home and
    /// wait for its ready line.
    pub fn start(binary: &Path) -> anyhow::Result<Self> {
        Self::start_with(binary, "test", &[])
    }

    /// Start a server on `model`, with `env` added to its environment.
    pub fn start_with(binary: &Path, model: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_args(binary, &["--model", model], env)
    }

    /// Start `punie serve --port 0 ARGS…`, with `env` added to its environment.
    pub fn start_with_args(
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_in(binary, Home::new()?, args, env)
    }

    /// Start `punie serve --port 0 ARGS…` in `home`, which may have been
    /// filled beforehand, with `env` added to its environment.
    pub fn start_in(
        binary: &Path,
        home: Home,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = home.file("serve.log");
        let stderr =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let begin = Instant::now();
        let mut child = home
            .command(binary)
            .args(["serve", "--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        let address = match wait_for_ready_line(&mut child, &log) {
            Ok(address) => address,
            Err(error) => {
                stop_child(&mut child);
                return Err(error);
            }
        };
        let ready_in = begin.elapsed();
        let token_file = home.file("state/punie/token");
        let token = fs::read_to_string(&token_file)
            .with_context(|| {
                format!(
                    "the server is ready but {} is missing",
                    token_file.display()
                )
            })?
            .trim()
            .to_owned();
        ensure!(
            home.file("state/punie/server.json").is_file(),
            "the server is ready but wrote no server.json; clients could not find it"
        );
        Ok(Self {
            home,
            child: Some(child),
            address,
            token,
            log,
            ready_in,
        })
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop the server with SIGTERM; it must exit cleanly and have logged no
    /// warning or error.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .take()
            .context("the server was already stopped")?;
        let pid = i32::try_from(child.id()).context("the server's pid fits in an i32")?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).context("cannot send SIGTERM to the server")?;
        let status = wait_with_deadline(&mut child)?;
        ensure!(status.success(), "the server exited with {status}");
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let complaints: Vec<&str> = log
            .lines()
            .filter(|line| {
                line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("panicked")
            })
            .collect();
        if complaints.is_empty() {
            println!("  server stderr: no warnings or errors");
        } else {
            println!(
                "  server stderr: {} warning/error lines, first ones:",
                complaints.len()
            );
            for line in complaints.iter().take(5) {
                println!("    {line}");
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            stop_child(child);
        }
    }
}

pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

pub fn wait_with_deadline(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let give_up = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for the server")? {
            return Ok(status);
        }
        if Instant::now() >= give_up {
            stop_child(child);
            bail!("the server was still running {DEADLINE:?} after SIGTERM; killed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Wait for `punie listening on http://ADDRESS` on the server's stderr.
pub fn wait_for_ready_line(child: &mut Child, log: &Path) -> anyhow::Result<SocketAddr> {
    const READY: &str = "punie listening on http://";
    let give_up = Instant::now() + DEADLINE;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        // A line still being written has no newline yet.
        let ready = text
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .find_map(|line| line.strip_prefix(READY));
        if let Some(address) = ready {
            return address
                .trim()
                .parse()
                .with_context(|| format!("the ready line names no address: `{address}`"));
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

/// A `… kB` field of `/proc/<pid>/status` (`pid` may be `self`), in KiB;
/// `field` includes its colon, e.g. `VmRSS:`.
pub fn proc_status_kib(pid: impl std::fmt::Display, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .with_context(|| format!("{path} has no {field} line"))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{field} in {path} is not a number: `{line}`"))
}

/// The nearest-rank percentile of sorted `values`.
pub fn percentile<T: Copy + Default>(sorted: &[T], percent: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn verdict(met: bool) -> String {
    if met { "met" } else { "MISSED" }.to_owned()
}

/// A Markdown table, printed when complete.
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            headers: headers.iter().map(|&header| header.to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The row added last, to fill in a cell known only later.
    pub fn last_row_mut(&mut self) -> Option<&mut Vec<String>> {
        self.rows.last_mut()
    }

    pub fn print(&self) {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                std::iter::once(&self.headers)
                    .chain(&self.rows)
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut text = String::from("|");
            for (cell, width) in cells.iter().zip(&widths) {
                let _ = write!(
                    text,
                    " {cell}{} |",
                    " ".repeat(width - cell.chars().count())
                );
            }
            text
        };
        println!("\n{}\n", self.title);
        println!("{}", line(&self.headers));
        let rule: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
        println!("{}", line(&rule));
        for row in &self.rows {
            println!("{}", line(row));
        }
        println!();
    }
}

/// `GET /health` over a fresh connection, read as `T`; a server that is not
/// listening yet is an [`io::ErrorKind::ConnectionRefused`] error.
pub fn get_health<T: serde::de::DeserializeOwned>(address: SocketAddr) -> io::Result<T> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid(format!("/health answered without headers: {text}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(invalid(format!("/health answered {head}")));
    }
    let health: serde_json::Value = serde_json::from_str(body)
        .map_err(|error| invalid(format!("/health is not JSON ({error}): {body}")))?;
    if health["status"] != "ok" {
        return Err(invalid(format!("/health says status {}", health["status"])));
    }
    serde_json::from_value(health).map_err(|error| {
        invalid(format!(
            "/health is not the expected JSON ({error}): {body}"
        ))
    })
}
