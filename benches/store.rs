//! Store benchmark: what keeping every session on disk costs.
//!
//! - `load`: `session/load` of a session holding 10,000 updates, timed by a
//!   fresh WebSocket client from sending the request to its response (which
//!   follows the last replayed notification). The session is built through a
//!   real `punie serve --model script:…`: one prompt whose turn takes 40 model
//!   rounds of thoughts, text, `read_file` tool calls and usage, as a model
//!   would — once with thoughts and text in runs (a replay coalesces them),
//!   once alternating at every event (nothing to coalesce).
//! - `append`: the store's cost per update. In this process, through the
//!   library (`punie::store::Store`): bursts of appends whose follow-ups stamp
//!   each commit, appends one at a time back to back, and one at a time 1 ms
//!   apart (`--pace-us`); the CPU and writes of the writer thread and of the
//!   appending thread (which commits a lone update itself) from
//!   `/proc/self/task/<tid>/{schedstat,io}`. For contrast, turns of text
//!   streamed through a real server, with its writer thread's use.
//! - `rss`: the server's memory with 100 to 100,000 sessions stored. The
//!   database is filled before the server starts (schema by `Store::open`,
//!   rows by rusqlite in one transaction), then a fixed workload runs — list
//!   pages, load sessions, a new session and a prompt — and `VmRSS`/`VmHWM`
//!   are read from `/proc/<pid>/status`.
//! - `evict`: the server's memory over rounds in which one connection
//!   attaches 1,000 sessions and prompts each a few times, waits until
//!   `/health` counts no conversation in memory (`--session-idle-timeout`
//!   short), then closes; `VmRSS` read at each step.
//!
//! `cargo bench --bench store` runs everything; name measurements to run a
//! subset (`-- load append rss`); `--quick` for a smoke run. `cargo bench`
//! builds the binary it measures (`target/release/punie`); `PUNIE_BIN`
//! measures another one. Every server gets its own temporary XDG directories.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{ContentBlock, ContentChunk, SessionUpdate};
use anyhow::{Context as _, anyhow, bail, ensure};
use futures::{SinkExt as _, StreamExt as _};
use nix::libc;
use punie::model::Message as ModelMessage;
use punie::store::{EntryKind, SessionRow, Store};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

mod support;
use support::{
    DEADLINE, Home, Server, Table, percentile, print_machine, proc_status_kib, punie_binary,
    verdict,
};

/// Between one-at-a-time appends of the paced series, unless `--pace-us`
/// says otherwise: a model streaming a thousand tokens a second.
const PACE: Duration = Duration::from_millis(1);

/// Updates in the session `load` replays.
const LOAD_UPDATES: usize = 10_000;
const TARGET_LOAD: Duration = Duration::from_millis(100);
const TARGET_PER_UPDATE: Duration = Duration::from_micros(20);
/// Largest change of server RSS from the smallest store to any larger one.
const TARGET_RSS_CHANGE: f64 = 0.10;

/// The file the scripted tool calls read, in the session's workspace.
const READ_FILE: &str = "notes.md";

const USAGE: &str = "\
usage: cargo bench --bench store -- [load] [append] [rss] [evict] [options]

measurements (all of them when none is named):
  load      session/load of a session with 10,000 updates, send → response
            (target median <= 100 ms)
  append    the store's cost per update: in-process bursts and single appends
            (back to back, and 1 ms apart), and turns streamed through a
            server (target median cost <= 20 µs per update: amortised over
            a burst, or commit − append when paced)
  rss       server VmRSS after a fixed workload with 100 … 100,000 stored
            sessions (target within 10 % of the figure at 100)
  evict     server VmRSS over rounds of 1,000 sessions attached, prompted,
            left idle until their conversations are dropped, then closed
            (target: within 10 % of the figure after the first round)

options:
  --quick            fewer repetitions and smaller stores, for a smoke test
  --loads=N          timed session/loads per session shape (default 20, quick 5)
  --runs=N           bursts of appends, and streamed turns (default 11, quick 3)
  --appends=N        appends per burst (default 10000)
  --pace-us=N        between the appends of the paced series (default 1000)
  --sessions=A,B,…   stored-session counts of rss (default 100,1000,10000,100000;
                     quick 100,1000,10000)

PUNIE_BIN overrides the binary.";

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("store: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("store: cannot build the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("store: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: &Options) -> anyhow::Result<()> {
    let binary = punie_binary();
    ensure!(
        binary.is_file(),
        "the binary {} does not exist; build it with `cargo build --release --bin punie`",
        binary.display()
    );
    print_machine("punie store benchmark", &binary, options.quick);
    if options.wants(Measurement::Load) {
        measure_load(&binary, options)
            .await
            .context("the load measurement failed")?;
    }
    if options.wants(Measurement::Append) {
        measure_append(&binary, options)
            .await
            .context("the append measurement failed")?;
    }
    if options.wants(Measurement::Rss) {
        measure_rss(&binary, options)
            .await
            .context("the rss measurement failed")?;
    }
    if options.wants(Measurement::Evict) {
        measure_eviction(&binary, options)
            .await
            .context("the evict measurement failed")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measurement {
    Load,
    Append,
    Rss,
    Evict,
}

#[derive(Debug)]
struct Options {
    selected: Vec<Measurement>,
    quick: bool,
    help: bool,
    loads: usize,
    runs: usize,
    appends: usize,
    /// Between the appends of the paced series.
    pace: Duration,
    sessions: Vec<usize>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let count = |value: &str, option: &str| -> Result<usize, String> {
            value
                .replace('_', "")
                .parse()
                .ok()
                .filter(|count| *count > 0)
                .ok_or_else(|| format!("{option} takes a positive count, not `{value}`"))
        };
        let (mut selected, mut quick, mut help) = (Vec::new(), false, false);
        let (mut loads, mut runs, mut appends, mut sessions) = (None, None, None, None);
        let mut pace = None;
        for arg in args {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => quick = true,
                "-h" | "--help" => help = true,
                "load" => selected.push(Measurement::Load),
                "append" => selected.push(Measurement::Append),
                "rss" => selected.push(Measurement::Rss),
                "evict" => selected.push(Measurement::Evict),
                _ => {
                    let (option, value) = arg
                        .split_once('=')
                        .ok_or_else(|| format!("unknown argument `{arg}`"))?;
                    match option {
                        "--loads" => loads = Some(count(value, option)?),
                        "--runs" => runs = Some(count(value, option)?),
                        "--appends" => appends = Some(count(value, option)?),
                        "--pace-us" => {
                            pace = Some(Duration::from_micros(count(value, option)? as u64));
                        }
                        "--sessions" => {
                            sessions = Some(
                                value
                                    .split(',')
                                    .map(|part| count(part, option))
                                    .collect::<Result<Vec<_>, _>>()?,
                            );
                        }
                        _ => return Err(format!("unknown argument `{arg}`")),
                    }
                }
            }
        }
        let default_sessions: &[usize] = if quick {
            &[100, 1_000, 10_000]
        } else {
            &[100, 1_000, 10_000, 100_000]
        };
        Ok(Self {
            selected,
            quick,
            help,
            loads: loads.unwrap_or(if quick { 5 } else { 20 }),
            runs: runs.unwrap_or(if quick { 3 } else { 11 }),
            appends: appends.unwrap_or(10_000),
            pace: pace.unwrap_or(PACE),
            sessions: sessions.unwrap_or_else(|| default_sessions.to_vec()),
        })
    }

    fn wants(&self, measurement: Measurement) -> bool {
        self.selected.is_empty() || self.selected.contains(&measurement)
    }
}

// ---------------------------------------------------------------------------
// A server in a home prepared beforehand

/// A running `punie serve` in a home this benchmark may have filled first;
/// killed if dropped while running.
struct Serve {
    server: Server,
    pid: u32,
}

impl Serve {
    fn start(binary: &Path, home: Home, model: &str) -> anyhow::Result<Self> {
        Self::start_with_args(binary, home, &["--model", model])
    }

    fn start_with_args(binary: &Path, home: Home, args: &[&str]) -> anyhow::Result<Self> {
        let server = Server::start_in(binary, home, args, &[])?;
        let pid = server.pid().context("the server is running")?;
        Ok(Self { server, pid })
    }

    fn workspace(&self) -> PathBuf {
        self.server.home.file("workspace")
    }

    /// A `… kB` field of the server's `/proc/<pid>/status`, in KiB.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        proc_status_kib(self.pid, field)
    }

    /// User + system CPU time of the whole server (10 ms ticks).
    fn cpu(&self) -> anyhow::Result<Duration> {
        process_cpu(self.pid)
    }

    /// What the server's store threads have used so far.
    fn store_use(&self) -> anyhow::Result<StoreUse> {
        store_use(self.pid)
    }

    /// SIGTERM; the server must exit cleanly. Warnings and errors it logged
    /// are printed.
    fn stop(self) -> anyhow::Result<()> {
        self.server.stop()
    }
}

/// User + system CPU time of process `pid`, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
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

/// The id of the thread of process `pid` called `name`, if there is one.
fn thread_named(pid: u32, name: &str) -> anyhow::Result<Option<u32>> {
    let tasks = format!("/proc/{pid}/task");
    for task in fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
        let task = task?;
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // The kernel keeps the first 15 bytes of a thread's name.
        if comm.trim_end() == &name[..name.len().min(15)]
            && let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse().ok())
        {
            return Ok(Some(tid));
        }
    }
    Ok(None)
}

/// What one thread has used: CPU and writes.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadUse {
    /// Time on a CPU, to the nanosecond: the first field of `schedstat`.
    cpu: Duration,
    /// Bytes handed to `write`-like system calls (`wchar` of `io`): the WAL,
    /// and the database file when a checkpoint copies the WAL back.
    written: u64,
}

impl ThreadUse {
    fn since(self, before: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(before.cpu),
            written: self.written.saturating_sub(before.written),
        }
    }
}

impl std::iter::Sum for ThreadUse {
    fn sum<I: Iterator<Item = Self>>(uses: I) -> Self {
        uses.fold(Self::default(), |total, used| Self {
            cpu: total.cpu + used.cpu,
            written: total.written + used.written,
        })
    }
}

/// What the store's threads in process `pid` have used so far: the writer
/// (`punie-store`), and the checkpointer (`punie-checkpoint`) in versions
/// that checkpoint off the writer.
#[derive(Debug, Clone, Copy, Default)]
struct StoreUse {
    writer: ThreadUse,
    checkpointer: ThreadUse,
}

impl StoreUse {
    fn since(self, before: Self) -> Self {
        Self {
            writer: self.writer.since(before.writer),
            checkpointer: self.checkpointer.since(before.checkpointer),
        }
    }
}

impl std::iter::Sum for StoreUse {
    fn sum<I: Iterator<Item = Self>>(uses: I) -> Self {
        let (writer, checkpointer): (Vec<ThreadUse>, Vec<ThreadUse>) =
            uses.map(|used| (used.writer, used.checkpointer)).unzip();
        Self {
            writer: writer.into_iter().sum(),
            checkpointer: checkpointer.into_iter().sum(),
        }
    }
}

fn store_use(pid: u32) -> anyhow::Result<StoreUse> {
    let writer = thread_named(pid, "punie-store")?
        .with_context(|| format!("process {pid} has no punie-store thread"))?;
    let checkpointer = match thread_named(pid, "punie-checkpoint")? {
        Some(tid) => thread_use(pid, tid)?,
        None => ThreadUse::default(),
    };
    Ok(StoreUse {
        writer: thread_use(pid, writer)?,
        checkpointer,
    })
}

/// What thread `tid` of process `pid` has used so far.
fn thread_use(pid: u32, tid: u32) -> anyhow::Result<ThreadUse> {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .with_context(|| format!("{path} does not start with a run time: `{stat}`"))?;
    let path = format!("/proc/{pid}/task/{tid}/io");
    let io = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let written = io
        .lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("{path} has no wchar line"))?;
    Ok(ThreadUse {
        cpu: Duration::from_nanos(nanos),
        written,
    })
}

// ---------------------------------------------------------------------------
// A WebSocket ACP client

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the client reads of every frame while timing: the rest is skipped.
#[derive(Deserialize)]
struct Head {
    id: Option<u64>,
    method: Option<String>,
    error: Option<Value>,
    params: Option<ParamsHead>,
}

#[derive(Deserialize)]
struct ParamsHead {
    update: Option<UpdateHead>,
}

#[derive(Deserialize)]
struct UpdateHead {
    #[serde(rename = "sessionUpdate")]
    kind: String,
}

impl Head {
    /// A `session/update` of the session's history. The slash commands a
    /// new session offers follow its creation, and may arrive while its
    /// first turn runs; they are not part of the turn.
    fn is_history(&self) -> bool {
        self.method.as_deref() == Some("session/update")
            && self
                .params
                .as_ref()
                .and_then(|params| params.update.as_ref())
                .is_none_or(|update| update.kind != "available_commands_update")
    }
}

/// Frames a client read while waiting for one response.
#[derive(Default)]
struct Received {
    /// `session/update` notifications.
    updates: usize,
    /// Every text frame, the response included.
    frames: usize,
    /// Bytes of every text frame's payload, the response included.
    bytes: usize,
    /// The notifications' text, kept when asked for.
    kept: Vec<String>,
}

struct Client {
    socket: Socket,
    next_id: u64,
}

impl Client {
    async fn connect(server: &Serve) -> anyhow::Result<Self> {
        let mut request = format!("ws://{}/acp", server.server.address).into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", server.server.token))?,
        );
        let (socket, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| anyhow!("the WebSocket handshake took longer than {DEADLINE:?}"))?
            .context("cannot connect to the server")?;
        if let tokio_tungstenite::MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_nodelay(true)?;
        }
        let mut client = Self { socket, next_id: 0 };
        client
            .call(
                "initialize",
                json!({"protocolVersion": 1, "clientCapabilities": {}}),
            )
            .await?;
        Ok(client)
    }

    async fn send(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.socket.send(Message::text(request.to_string())).await?;
        Ok(id)
    }

    /// Send a request and return its result, skipping notifications.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send(method, params).await?;
        let (response, _) = self.response(id, method, false).await?;
        Ok(response)
    }

    /// Read until the response to `id`; its result, and what came before it.
    /// With `keep`, the notifications' text is kept.
    async fn response(
        &mut self,
        id: u64,
        method: &str,
        keep: bool,
    ) -> anyhow::Result<(Value, Received)> {
        let mut received = Received::default();
        loop {
            let text = self.next_text().await?;
            received.frames += 1;
            received.bytes += text.len();
            let head: Head = serde_json::from_str(&text)
                .with_context(|| format!("not JSON-RPC: {}", shorten(&text)))?;
            if head.id == Some(id) && head.method.is_none() {
                if let Some(error) = head.error {
                    bail!("{method} failed: {error}");
                }
                let mut frame: Value = serde_json::from_str(&text)?;
                return Ok((frame["result"].take(), received));
            }
            if head.is_history() {
                received.updates += 1;
                if keep {
                    received.kept.push(text);
                }
            } else if head
                .method
                .as_deref()
                .is_some_and(|method| method != "session/update")
            {
                bail!(
                    "the server sent a request this client does not expect while {method} ran: {}",
                    shorten(&text)
                );
            }
        }
    }

    async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .map_err(|_| anyhow!("no frame from the server within {DEADLINE:?}"))?;
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Close(close))) => {
                    bail!("the server closed the connection: {close:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("the connection failed: {error}"),
                None => bail!("the connection ended"),
            }
        }
    }

    async fn new_session(&mut self, cwd: &Path) -> anyhow::Result<String> {
        let session = self
            .call("session/new", json!({"cwd": cwd, "mcpServers": []}))
            .await?;
        session["sessionId"]
            .as_str()
            .map(str::to_owned)
            .context("session/new answered without a sessionId")
    }

    /// Prompt `session` and read the turn to its end, which must be
    /// `end_turn`: the updates received, and the time from sending to the
    /// answer.
    async fn prompt(&mut self, session: &str, text: &str) -> anyhow::Result<(Received, Duration)> {
        let begin = Instant::now();
        let id = self
            .send(
                "session/prompt",
                json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}),
            )
            .await?;
        let (result, received) = self.response(id, "session/prompt", false).await?;
        let elapsed = begin.elapsed();
        ensure!(
            result["stopReason"] == "end_turn",
            "the turn did not end normally: {result}"
        );
        Ok((received, elapsed))
    }

    /// Close, and read until the server's close frame: the connection ends
    /// cleanly and the server has detached it.
    async fn close(mut self) -> anyhow::Result<()> {
        let closing = async {
            self.socket.close(None).await?;
            while let Some(frame) = self.socket.next().await {
                frame?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(DEADLINE, closing)
            .await
            .map_err(|_| anyhow!("the server did not close within {DEADLINE:?}"))?
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_owned();
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

// ---------------------------------------------------------------------------
// Scripts for the script: model

/// A chunk of streamed text of about 40 bytes, different every time.
fn chunk_text(number: usize) -> String {
    format!("word {number:05}, then a few more words of text. ")
}

fn thought_text(number: usize) -> String {
    format!("thinking {number:05} about what the file says. ")
}

/// How the streamed events of a turn are arranged.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Each model round thinks, then writes, then calls tools, as models do:
    /// a replay coalesces each run of text into one chunk.
    Rounds,
    /// Thought and text alternate at every event: a replay has nothing to
    /// coalesce, so it sends one frame per stored text update.
    Alternating,
}

impl Shape {
    fn describe(self) -> &'static str {
        match self {
            Self::Rounds => "40 rounds: thoughts, then text, then 2 read_file calls",
            Self::Alternating => "40 rounds, thought and text alternating every event",
        }
    }
}

/// Model rounds in the session `load` replays; each but the last calls tools.
const ROUNDS: usize = 40;
const TOOL_CALLS_PER_ROUND: usize = 2;
const THOUGHTS_PER_ROUND: usize = 50;

/// A script whose first prompt produces `updates` updates for its prompter:
/// `ROUNDS` responses, each with thoughts, text and usage, all but the last
/// with `read_file` calls (three updates each). The prompter also receives
/// the session's title, counted in.
fn load_script(shape: Shape, updates: usize) -> Value {
    let per_round = (updates - 1) / ROUNDS;
    let mut responses = Vec::new();
    let mut number = 0;
    for round in 0..ROUNDS {
        let last = round + 1 == ROUNDS;
        let calls = if last { 0 } else { TOOL_CALLS_PER_ROUND };
        // The last round takes what the division left over.
        let budget = if last {
            updates - 1 - per_round * (ROUNDS - 1)
        } else {
            per_round
        };
        let streamed = budget - 3 * calls - 1;
        let thoughts = THOUGHTS_PER_ROUND.min(streamed);
        let mut events = Vec::new();
        for index in 0..streamed {
            number += 1;
            let thought = match shape {
                Shape::Rounds => index < thoughts,
                Shape::Alternating => index % 2 == 0,
            };
            events.push(if thought {
                json!({"thought": thought_text(number)})
            } else {
                json!({"text": chunk_text(number)})
            });
        }
        for _ in 0..calls {
            events.push(
                json!({"tool_call": {"name": "read_file", "arguments": {"path": READ_FILE}}}),
            );
        }
        events.push(
            json!({"usage": {"input_tokens": 1000 * (round + 1), "output_tokens": streamed}}),
        );
        responses.push(Value::Array(events));
    }
    Value::Array(responses)
}

/// A script of `turns` responses, each `events` text chunks with `pause_ms`
/// between them. Each new session plays the first response.
fn text_script(events: usize, pause_ms: u64) -> Value {
    let mut response = Vec::with_capacity(events * 2);
    for number in 0..events {
        if pause_ms > 0 && number > 0 {
            response.push(json!({"pause_ms": pause_ms}));
        }
        response.push(json!({"text": chunk_text(number)}));
    }
    json!([response])
}

/// Write `script` where no session's workspace is, and return its model spec.
fn script_model(dir: &Path, name: &str, script: &Value) -> anyhow::Result<String> {
    let path = dir.join(name);
    fs::write(&path, script.to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(format!("script:{}", path.display()))
}

/// A text file of about 1 KB for the scripted `read_file` calls.
fn notes() -> String {
    (1..=24)
        .map(|line| format!("line {line:02}: notes about the project, kept short.\n"))
        .collect()
}

// ---------------------------------------------------------------------------
// load

struct LoadRun {
    shape: Shape,
    /// Updates the prompting client received during the turn.
    streamed: usize,
    turn: Duration,
    loads: Vec<Duration>,
    /// Of the first load (every load sends the same).
    frames: usize,
    replayed: usize,
    bytes: usize,
}

async fn measure_load(binary: &Path, options: &Options) -> anyhow::Result<()> {
    let scripts = tempfile::tempdir().context("cannot create a directory for the scripts")?;
    let mut runs = Vec::new();
    for shape in [Shape::Rounds, Shape::Alternating] {
        runs.push(load_once(binary, options, scripts.path(), shape).await?);
    }
    let mut table = Table::new(
        &format!(
            "session/load of a session holding {} updates, fresh connection each time, send → response, {} loads (target: median <= {} ms)",
            thousands(LOAD_UPDATES),
            options.loads,
            TARGET_LOAD.as_millis()
        ),
        &[
            "turn that built the session",
            "updates streamed to the prompter",
            "turn took",
            "frames per load",
            "of which session/update",
            "bytes per load",
            "first load",
            "median",
            "p90",
            "max",
            "target",
        ],
    );
    for run in &runs {
        let mut sorted = run.loads.clone();
        sorted.sort_unstable();
        let median = percentile(&sorted, 50.0);
        table.row(vec![
            run.shape.describe().to_owned(),
            thousands(run.streamed),
            format!("{} ms", ms(run.turn)),
            thousands(run.frames),
            thousands(run.replayed),
            format!(
                "{} ({:.0} KiB)",
                thousands(run.bytes),
                run.bytes as f64 / 1024.0
            ),
            format!("{} ms", ms(run.loads[0])),
            format!("{} ms", ms(median)),
            format!("{} ms", ms(percentile(&sorted, 90.0))),
            format!("{} ms", ms(sorted.last().copied().unwrap_or_default())),
            verdict(median <= TARGET_LOAD && run.streamed >= LOAD_UPDATES),
        ]);
    }
    table.print();
    println!(
        "  each load: connect and initialize (not timed), then session/load timed until its response; the connection is then closed, so every load revives the session from the store."
    );
    Ok(())
}

async fn load_once(
    binary: &Path,
    options: &Options,
    scripts: &Path,
    shape: Shape,
) -> anyhow::Result<LoadRun> {
    let model = script_model(
        scripts,
        &format!("load-{shape:?}.json"),
        &load_script(shape, LOAD_UPDATES + 1),
    )?;
    let server = Serve::start(binary, Home::new()?, &model)?;
    let workspace = server.workspace();
    fs::write(workspace.join(READ_FILE), notes())?;

    let mut prompter = Client::connect(&server).await?;
    let session = prompter.new_session(&workspace).await?;
    let (received, turn) = prompter
        .prompt(&session, "Read the notes and tell me about them")
        .await?;
    prompter.close().await?;
    ensure!(
        received.updates >= LOAD_UPDATES,
        "the prompting client received {} updates; the session needs at least {LOAD_UPDATES}",
        received.updates
    );

    let mut loads = Vec::with_capacity(options.loads);
    let mut first: Option<Received> = None;
    for _ in 0..options.loads {
        let mut client = Client::connect(&server).await?;
        let params = json!({"sessionId": session, "cwd": workspace, "mcpServers": []});
        let begin = Instant::now();
        let id = client.send("session/load", params).await?;
        let (_, replay) = client.response(id, "session/load", first.is_none()).await?;
        loads.push(begin.elapsed());
        client.close().await?;
        if let Some(first) = &first {
            ensure!(
                (replay.frames, replay.bytes) == (first.frames, first.bytes),
                "two loads of the same session sent different replays"
            );
        } else {
            check_replay(&replay, shape)?;
            first = Some(replay);
        }
    }
    server.stop()?;
    let first = first.context("at least one load")?;
    Ok(LoadRun {
        shape,
        streamed: received.updates,
        turn,
        loads,
        frames: first.frames,
        replayed: first.updates,
        bytes: first.bytes,
    })
}

/// The replay holds all the text streamed, every tool call completed, and
/// the prompt.
fn check_replay(replay: &Received, shape: Shape) -> anyhow::Result<()> {
    let (mut text, mut thoughts, mut completed, mut prompts) = (0, 0, 0, 0);
    for frame in &replay.kept {
        let frame: Value = serde_json::from_str(frame)?;
        let update = &frame["params"]["update"];
        let length = update["content"]["text"].as_str().map_or(0, str::len);
        match update["sessionUpdate"].as_str() {
            Some("agent_message_chunk") => text += length,
            Some("agent_thought_chunk") => thoughts += length,
            Some("user_message_chunk") => prompts += 1,
            Some("tool_call") if update["status"] == "completed" => completed += 1,
            _ => {}
        }
    }
    let calls = (ROUNDS - 1) * TOOL_CALLS_PER_ROUND;
    ensure!(
        completed == calls,
        "{shape:?}: the replay shows {completed} completed tool calls of {calls}"
    );
    ensure!(
        prompts == 1,
        "{shape:?}: the replay shows {prompts} prompts"
    );
    ensure!(
        text > 0 && thoughts > 0,
        "{shape:?}: the replay lacks text or thoughts"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// append

const SESSION: &str = "bench-session";

/// A stored `agent_message_chunk`, as `Session::publish` serializes it.
fn update_body(number: usize) -> anyhow::Result<String> {
    let update =
        SessionUpdate::AgentMessageChunk(ContentChunk::new(ContentBlock::from(chunk_text(number))));
    Ok(serde_json::to_string(&update)?)
}

fn session_row(id: &str, cwd: &Path, number: i64) -> SessionRow {
    SessionRow {
        id: id.to_owned(),
        cwd: cwd.to_owned(),
        title: Some(format!("Session number {number}")),
        model: "test".to_owned(),
        created_us: 1_700_000_000_000_000 + number * 1_000,
        updated_us: 1_700_000_000_000_000 + number * 1_000 + 500,
        turns: 0,
        running: false,
        permissions: None,
        mode: None,
    }
}

/// A store in this process, with its one session.
async fn open_store(path: &Path, cwd: &Path) -> anyhow::Result<Store> {
    let store = Store::open(path)?;
    store.create_session(session_row(SESSION, cwd, 1), cwd);
    store.flush().await;
    Ok(store)
}

/// What closing a store cost this process: the writer finishing, the last
/// checkpoint, the connections closing.
struct Closed {
    /// Appends the store took since it was opened.
    appends: usize,
    cpu: Duration,
    written: u64,
}

fn close_measured(store: Store, appends: usize) -> anyhow::Result<Closed> {
    let (cpu, written) = (own_cpu(), own_written()?);
    store.close();
    // The read connections close with the last handle.
    drop(store);
    Ok(Closed {
        appends: appends.max(1),
        cpu: own_cpu().saturating_sub(cpu),
        written: own_written()?.saturating_sub(written),
    })
}

/// User + system CPU time of this process, every thread, ended ones too.
fn own_cpu() -> Duration {
    // SAFETY: `rusage` is plain integers, for which all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live local that `getrusage` only writes.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |value: libc::timeval| {
        Duration::from_secs(u64::try_from(value.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(value.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Bytes this process has handed to `write`-like calls, ended threads too.
fn own_written() -> anyhow::Result<u64> {
    let io = fs::read_to_string("/proc/self/io").context("cannot read /proc/self/io")?;
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|value| value.trim().parse().ok())
        .context("/proc/self/io has no wchar line")
}

/// One series of appends to an in-process store.
struct AppendRun {
    appends: usize,
    /// First append to last commit.
    total: Duration,
    /// Commit − append, per update.
    latencies: Vec<Duration>,
    /// What the store's threads used.
    used: StoreUse,
    /// What the appending thread used: the bench's loop, and the commits
    /// and follow-ups of appends written where they were made.
    caller: ThreadUse,
}

impl AppendRun {
    fn amortised(&self) -> Duration {
        self.total / u32::try_from(self.appends).unwrap_or(u32::MAX)
    }
}

/// The store's writer thread in this process.
fn own_store_use() -> anyhow::Result<StoreUse> {
    store_use(std::process::id())
}

/// The calling thread's CPU time so far, to the nanosecond.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the pointer is to a live local that `clock_gettime` only writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// What the calling thread has used so far.
fn this_thread_use() -> anyhow::Result<ThreadUse> {
    // SAFETY: `gettid` takes nothing and cannot fail.
    let tid = unsafe { libc::gettid() };
    thread_use(std::process::id(), u32::try_from(tid).unwrap_or(0))
}

/// `appends` appends queued back to back; each follow-up stamps its commit.
async fn burst(store: &Store, appends: usize, first: usize) -> anyhow::Result<AppendRun> {
    let bodies = (first..first + appends)
        .map(update_body)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = Instant::now();
    let committed: Arc<Vec<AtomicU64>> =
        Arc::new((0..appends).map(|_| AtomicU64::new(0)).collect());
    let mut appended = Vec::with_capacity(appends);
    let (before, caller) = (own_store_use()?, this_thread_use()?);
    for (index, body) in bodies.into_iter().enumerate() {
        let stamps = committed.clone();
        appended.push(nanos_since(base));
        store.append(
            SESSION,
            EntryKind::Update,
            body,
            Some(Box::new(move || {
                stamps[index].store(nanos_since(base), Ordering::Relaxed);
            })),
        );
    }
    // Follow-ups run in order, before the barrier completes.
    tokio::time::timeout(DEADLINE, store.flush())
        .await
        .map_err(|_| anyhow!("the store did not write {appends} appends within {DEADLINE:?}"))?;
    let (used, caller) = (
        own_store_use()?.since(before),
        this_thread_use()?.since(caller),
    );
    let committed: Vec<u64> = committed
        .iter()
        .map(|stamp| stamp.load(Ordering::Relaxed))
        .collect();
    ensure!(
        committed.iter().all(|&stamp| stamp > 0),
        "some follow-ups never ran"
    );
    let last = committed.iter().copied().max().unwrap_or(0);
    Ok(AppendRun {
        appends,
        total: Duration::from_nanos(last - appended[0]),
        latencies: committed
            .iter()
            .zip(&appended)
            .map(|(commit, append)| Duration::from_nanos(commit.saturating_sub(*append)))
            .collect(),
        used,
        caller,
    })
}

/// `appends` appends, each queued once the one before it is committed, and
/// `pause` after that: every transaction holds one update.
fn one_at_a_time(
    store: &Store,
    appends: usize,
    first: usize,
    pause: Duration,
) -> anyhow::Result<AppendRun> {
    let bodies = (first..first + appends)
        .map(update_body)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = Instant::now();
    let (sender, commits) = std::sync::mpsc::channel();
    let mut latencies = Vec::with_capacity(appends);
    let (before, caller) = (own_store_use()?, this_thread_use()?);
    let start = nanos_since(base);
    let mut last = start;
    // The appending thread's CPU inside `append` only: what the store did
    // there, not the bench's loop nor waking from its pause.
    let mut in_append = Duration::ZERO;
    for body in bodies {
        let sender = sender.clone();
        let cpu_before = thread_cpu();
        let appended = nanos_since(base);
        store.append(
            SESSION,
            EntryKind::Update,
            body,
            Some(Box::new(move || {
                let _ = sender.send(nanos_since(base));
            })),
        );
        in_append += thread_cpu().saturating_sub(cpu_before);
        last = commits
            .recv_timeout(DEADLINE)
            .map_err(|_| anyhow!("an append was not committed within {DEADLINE:?}"))?;
        latencies.push(Duration::from_nanos(last.saturating_sub(appended)));
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    let (used, caller) = (
        own_store_use()?.since(before),
        ThreadUse {
            cpu: in_append,
            ..this_thread_use()?.since(caller)
        },
    );
    Ok(AppendRun {
        appends,
        total: Duration::from_nanos(last - start),
        latencies,
        used,
        caller,
    })
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A turn of text streamed through a server.
struct StreamedTurn {
    updates: usize,
    wall: Duration,
    server_cpu: Duration,
    used: StoreUse,
}

async fn streamed_turns(
    binary: &Path,
    scripts: &Path,
    events: usize,
    pause_ms: u64,
    turns: usize,
) -> anyhow::Result<Vec<StreamedTurn>> {
    let model = script_model(
        scripts,
        &format!("text-{events}-{pause_ms}.json"),
        &text_script(events, pause_ms),
    )?;
    let server = Serve::start(binary, Home::new()?, &model)?;
    let workspace = server.workspace();
    let mut client = Client::connect(&server).await?;
    let mut measured = Vec::with_capacity(turns);
    // One turn not measured: the first one pays for warming up.
    for turn in 0..=turns {
        let session = client.new_session(&workspace).await?;
        let (cpu, store) = (server.cpu()?, server.store_use()?);
        let (received, wall) = client.prompt(&session, "Stream some text").await?;
        let (server_cpu, used) = (
            server.cpu()?.saturating_sub(cpu),
            server.store_use()?.since(store),
        );
        // The title, one update per event, then how the turn ended.
        ensure!(
            received.updates == events + 2,
            "a turn of {events} text events brought {} updates",
            received.updates
        );
        if turn > 0 {
            measured.push(StreamedTurn {
                updates: received.updates,
                wall,
                server_cpu,
                used,
            });
        }
    }
    client.close().await?;
    server.stop()?;
    Ok(measured)
}

async fn measure_append(binary: &Path, options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a directory for the databases")?;
    let bursts_path = dir.path().join("bursts.db");
    let store = open_store(&bursts_path, dir.path()).await?;
    // Warm up: the schema's pages, the writer's statement cache.
    let warm_up = options.appends.min(2_000);
    burst(&store, warm_up, 0).await?;
    let mut bursts = Vec::with_capacity(options.runs);
    for run in 0..options.runs {
        bursts.push(burst(&store, options.appends, warm_up + run * options.appends).await?);
    }
    let bursts_closed = close_measured(store, warm_up + options.runs * options.appends)?;

    let single_path = dir.path().join("single.db");
    let store = open_store(&single_path, dir.path()).await?;
    let warm_up = 100;
    one_at_a_time(&store, warm_up, 0, Duration::ZERO)?;
    let single_count = if options.quick { 500 } else { 2_000 };
    let single = one_at_a_time(&store, single_count, warm_up, Duration::ZERO)?;
    let single_closed = close_measured(store, warm_up + single_count)?;

    let paced_path = dir.path().join("paced.db");
    let store = open_store(&paced_path, dir.path()).await?;
    one_at_a_time(&store, warm_up, 0, options.pace)?;
    let paced_appends = one_at_a_time(&store, single_count, warm_up, options.pace)?;
    let paced_closed = close_measured(store, warm_up + single_count)?;

    let scripts = tempfile::tempdir().context("cannot create a directory for the scripts")?;
    let stream_events = 10_000;
    let streamed = streamed_turns(binary, scripts.path(), stream_events, 0, options.runs).await?;
    let paced_events = if options.quick { 200 } else { 1_000 };
    let paced = streamed_turns(binary, scripts.path(), paced_events, 1, 1).await?;

    let body = update_body(0)?;
    let text_bytes = chunk_text(0).len();
    let mut amortised: Vec<Duration> = bursts.iter().map(AppendRun::amortised).collect();
    amortised.sort_unstable();
    let median_amortised = percentile(&amortised, 50.0);
    let mut table = Table::new(
        &format!(
            "Store cost per update, in this process through punie::store::Store: agent_message_chunk bodies of {} bytes ({text_bytes} bytes of text) (target: median amortised cost <= {} µs, bursts)",
            body.len(),
            TARGET_PER_UPDATE.as_micros()
        ),
        &[
            "appends",
            "runs",
            "amortised (total / N), median of runs",
            "amortised, range",
            "throughput",
            "commit − append p50",
            "p99",
            "max",
            "store CPU per update: writer thread + appending thread",
            "of which the appending thread",
            "checkpointer CPU per update",
            "bytes written per update",
            "closing the store, per update",
            "target",
        ],
    );
    let closed = |closed: &Closed| {
        format!(
            "{} CPU, {:.0} B",
            us(closed.cpu / u32::try_from(closed.appends).unwrap_or(u32::MAX)),
            closed.written as f64 / closed.appends as f64
        )
    };
    // The columns from commit − append to closing, and the median of
    // commit − append.
    let measured = |runs: &[&AppendRun], closed_store: &Closed| {
        let mut latencies: Vec<Duration> = runs
            .iter()
            .flat_map(|run| run.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        let used: StoreUse = runs.iter().map(|run| run.used).sum();
        let caller: ThreadUse = runs.iter().map(|run| run.caller).sum();
        let count: usize = runs.iter().map(|run| run.appends).sum();
        let (cpu, caller_cpu, checkpoint, written) = per_update(used, caller, count);
        let median = percentile(&latencies, 50.0);
        let columns = vec![
            us(median),
            us(percentile(&latencies, 99.0)),
            us(latencies.last().copied().unwrap_or_default()),
            cpu,
            caller_cpu,
            checkpoint,
            written,
            closed(closed_store),
        ];
        (columns, median)
    };
    let throughput = |appends: usize, total: Duration| {
        format!(
            "{}/s",
            thousands((appends as f64 / total.as_secs_f64()) as usize)
        )
    };

    let burst_refs: Vec<&AppendRun> = bursts.iter().collect();
    let total: Duration = bursts.iter().map(|run| run.total).sum();
    let count: usize = bursts.iter().map(|run| run.appends).sum();
    let mut row = vec![
        format!(
            "bursts of {}, queued back to back",
            thousands(options.appends)
        ),
        options.runs.to_string(),
        us(median_amortised),
        format!(
            "{} – {}",
            us(amortised[0]),
            us(amortised.last().copied().unwrap_or_default())
        ),
        throughput(count, total),
    ];
    row.extend(measured(&burst_refs, &bursts_closed).0);
    row.push(verdict(median_amortised <= TARGET_PER_UPDATE));
    table.row(row);

    let mut row = vec![
        format!(
            "{} one at a time, each after the last commit",
            thousands(single.appends)
        ),
        "1".to_owned(),
        us(single.amortised()),
        "—".to_owned(),
        throughput(single.appends, single.total),
    ];
    row.extend(measured(&[&single], &single_closed).0);
    row.push(verdict(single.amortised() <= TARGET_PER_UPDATE));
    table.row(row);

    let mut row = vec![
        format!(
            "{} one at a time, {} µs apart (commit − append is the cost)",
            thousands(paced_appends.appends),
            options.pace.as_micros()
        ),
        "1".to_owned(),
        "—".to_owned(),
        "—".to_owned(),
        "—".to_owned(),
    ];
    let (columns, paced_median) = measured(&[&paced_appends], &paced_closed);
    row.extend(columns);
    row.push(verdict(paced_median <= TARGET_PER_UPDATE));
    table.row(row);
    table.print();
    println!(
        "  amortised: first append to last commit, divided by the appends. commit − append: from the append call to its follow-up running, after the commit (on the writer thread, or on the appending thread when the append came after a quiet spell and was written there). Store CPU: schedstat run time of punie-store (the writer thread; follow-ups here only store a timestamp) plus the appending thread's (in bursts all of it, the bench's loop included, which does little else; one at a time only its time inside `append`), and of punie-checkpoint; bytes written: wchar of all three, the WAL and the checkpoints. Closing the store: this process's CPU (getrusage) and bytes written (/proc/self/io) while it closes, the final checkpoint included, divided by every append the store took (warm-up too). Databases after closing: {:.1} MiB (bursts), {:.1} MiB (one at a time), {:.1} MiB ({} µs apart).",
        database_size(&bursts_path) as f64 / (1024.0 * 1024.0),
        database_size(&single_path) as f64 / (1024.0 * 1024.0),
        database_size(&paced_path) as f64 / (1024.0 * 1024.0),
        options.pace.as_micros()
    );

    let mut table = Table::new(
        "For contrast: turns of text streamed through punie serve (script: model), each in a new session, prompt sent → answer received",
        &[
            "turn",
            "turns",
            "updates per turn",
            "wall per update, median",
            "server CPU per update",
            "writer thread CPU per update",
            "checkpointer CPU per update",
            "store bytes written per update",
            "store threads' share of server CPU",
        ],
    );
    for (label, turns) in [
        (
            format!("{} text events, no pause", thousands(stream_events)),
            &streamed,
        ),
        (
            format!("{} text events, 1 ms apart", thousands(paced_events)),
            &paced,
        ),
    ] {
        let mut wall: Vec<Duration> = turns
            .iter()
            .map(|turn| turn.wall / u32::try_from(turn.updates).unwrap_or(u32::MAX))
            .collect();
        wall.sort_unstable();
        let updates: usize = turns.iter().map(|turn| turn.updates).sum();
        let server_cpu: Duration = turns.iter().map(|turn| turn.server_cpu).sum();
        let used: StoreUse = turns.iter().map(|turn| turn.used).sum();
        let (writer_cpu, _, checkpoint, written) = per_update(used, ThreadUse::default(), updates);
        table.row(vec![
            label,
            turns.len().to_string(),
            thousands(turns[0].updates),
            us(percentile(&wall, 50.0)),
            us(server_cpu / u32::try_from(updates).unwrap_or(u32::MAX)),
            writer_cpu,
            checkpoint,
            written,
            format!(
                "{:.0} %",
                100.0 * (used.writer.cpu + used.checkpointer.cpu).as_secs_f64()
                    / server_cpu.as_secs_f64().max(1e-9)
            ),
        ]);
    }
    table.print();
    println!(
        "  server CPU: /proc/<pid>/stat, all threads, 10 ms ticks. Store threads: the server's punie-store thread, which also hands each committed update it writes to the attached connections, and punie-checkpoint where there is one; updates that come after a quiet spell are written, and handed over, on the async thread that runs the turn, and count only in server CPU. The first turn of each server is not measured."
    );
    Ok(())
}

/// Per update, formatted: the CPU time of the writer and the appending
/// thread together, the appending thread's, the checkpointer's, and the bytes
/// all three wrote.
fn per_update(
    used: StoreUse,
    caller: ThreadUse,
    updates: usize,
) -> (String, String, String, String) {
    let count = u32::try_from(updates.max(1)).unwrap_or(u32::MAX);
    let written = used.writer.written + used.checkpointer.written + caller.written;
    (
        us((used.writer.cpu + caller.cpu) / count),
        us(caller.cpu / count),
        us(used.checkpointer.cpu / count),
        format!("{:.0} B", written as f64 / f64::from(count)),
    )
}

/// Bytes of a database file and its WAL.
fn database_size(path: &Path) -> u64 {
    let size = |path: &Path| fs::metadata(path).map_or(0, |metadata| metadata.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(Path::new(&wal))
}

// ---------------------------------------------------------------------------
// rss

/// Fill the store at `path` with `count` sessions in `cwd`, each with one
/// finished turn: its start, the prompt, two chunks of answer, the
/// conversation's two messages, its end.
fn populate(path: &Path, cwd: &Path, count: usize) -> anyhow::Result<()> {
    // The server's own migrations make the schema.
    Store::open(path)?.close();
    let mut connection = rusqlite::Connection::open(path)?;
    let transaction = connection.transaction()?;
    {
        let mut session = transaction.prepare(
            "INSERT INTO sessions (id, cwd, title, model, created_us, updated_us, turns, running)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
        )?;
        let mut entry = transaction
            .prepare("INSERT INTO entries (session_id, kind, body) VALUES (?1, ?2, ?3)")?;
        let text = |kind: fn(ContentChunk) -> SessionUpdate, text: String| {
            serde_json::to_string(&kind(ContentChunk::new(ContentBlock::from(text))))
        };
        let cwd_text = cwd.to_string_lossy();
        for number in 0..count {
            let id = format!("{number:08}-0000-4000-8000-000000000000");
            let row = session_row(&id, cwd, i64::try_from(number)?);
            let prompt = format!("Please look at file number {number} and fix it");
            session.execute(rusqlite::params![
                row.id,
                cwd_text,
                row.title,
                row.model,
                row.created_us,
                row.updated_us,
                1
            ])?;
            let answer = format!("Turn 1. You said: \"{prompt}\". ");
            let entries = [
                (2, "1".to_owned()),
                (0, text(SessionUpdate::UserMessageChunk, prompt.clone())?),
                (0, text(SessionUpdate::AgentMessageChunk, answer.clone())?),
                (
                    0,
                    text(SessionUpdate::AgentMessageChunk, "Done.".to_owned())?,
                ),
                (1, serde_json::to_string(&ModelMessage::user(prompt))?),
                (
                    1,
                    serde_json::to_string(&ModelMessage::assistant(answer + "Done."))?,
                ),
                (3, r#"{"stopReason":"end_turn","note":null}"#.to_owned()),
            ];
            for (kind, body) in entries {
                entry.execute(rusqlite::params![id, kind, body])?;
            }
        }
    }
    transaction.commit()?;
    connection.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    drop(connection);
    // On disk before the server starts: otherwise the server's first fsync
    // (its token, server.json) waits for the kernel to write this file back.
    File::open(path)?.sync_all()?;
    Ok(())
}

/// Timings of one pass of the workload.
struct Workload {
    first_page: Duration,
    pages: usize,
    loads: Vec<Duration>,
    prompt: Duration,
}

/// Pages of `session/list` the workload reads, at most.
const PAGES: usize = 5;

/// Connect, list the first pages, load the first session listed and the
/// last, create a session and prompt it, disconnect.
async fn workload(server: &Serve, stored: usize) -> anyhow::Result<Workload> {
    let mut client = Client::connect(server).await?;
    let mut cursor: Option<String> = None;
    let mut first_page = Duration::ZERO;
    let mut pages = 0;
    let mut to_load = Vec::new();
    let mut last_listed = Value::Null;
    while pages < PAGES {
        let begin = Instant::now();
        let page = client
            .call("session/list", json!({"cursor": cursor}))
            .await?;
        if pages == 0 {
            first_page = begin.elapsed();
        }
        pages += 1;
        let sessions = page["sessions"]
            .as_array()
            .context("session/list has no sessions")?;
        let (Some(first), Some(last)) = (sessions.first(), sessions.last()) else {
            bail!("session/list page {pages} is empty with {stored} sessions stored");
        };
        if pages == 1 {
            to_load.push(first["sessionId"].clone());
        }
        last_listed = last["sessionId"].clone();
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    to_load.push(last_listed);
    let workspace = server.workspace();
    let mut loads = Vec::new();
    for session in &to_load {
        let begin = Instant::now();
        let id = client
            .send(
                "session/load",
                json!({"sessionId": session, "cwd": workspace, "mcpServers": []}),
            )
            .await?;
        let (_, replay) = client.response(id, "session/load", false).await?;
        loads.push(begin.elapsed());
        ensure!(
            replay.updates > 0,
            "session/load of {session} replayed nothing"
        );
    }
    let session = client.new_session(&workspace).await?;
    let (_, prompt) = client.prompt(&session, "hello").await?;
    client.close().await?;
    Ok(Workload {
        first_page,
        pages,
        loads,
        prompt,
    })
}

struct RssRun {
    stored: usize,
    populate: Duration,
    database_bytes: u64,
    ready_in: Duration,
    rss_ready: u64,
    /// After each pass of the workload.
    rss_after: Vec<u64>,
    hwm: u64,
    workloads: Vec<Workload>,
}

async fn measure_rss(binary: &Path, options: &Options) -> anyhow::Result<()> {
    const PASSES: usize = 3;
    let mut runs: Vec<RssRun> = Vec::new();
    for &stored in &options.sessions {
        let home = Home::new()?;
        let database = home.file("data/punie/punie.db");
        let begin = Instant::now();
        populate(&database, &home.file("workspace"), stored)?;
        let populate_time = begin.elapsed();
        let database_bytes = database_size(&database);
        let server = Serve::start(binary, home, "test")?;
        let rss_ready = server.status_kib("VmRSS:")?;
        let mut rss_after = Vec::with_capacity(PASSES);
        let mut workloads = Vec::with_capacity(PASSES);
        for _ in 0..PASSES {
            workloads.push(workload(&server, stored).await?);
            rss_after.push(server.status_kib("VmRSS:")?);
        }
        let hwm = server.status_kib("VmHWM:")?;
        let ready_in = server.server.ready_in;
        server.stop()?;
        runs.push(RssRun {
            stored,
            populate: populate_time,
            database_bytes,
            ready_in,
            rss_ready,
            rss_after,
            hwm,
            workloads,
        });
    }

    let base = &runs[0];
    let base_rss = *base.rss_after.last().unwrap_or(&0) as f64;
    let base_hwm = base.hwm as f64;
    let mut table = Table::new(
        &format!(
            "Server memory with N sessions stored, after {PASSES} passes of the same workload (target: VmRSS within {:.0} % of the figure at {})",
            TARGET_RSS_CHANGE * 100.0,
            thousands(base.stored)
        ),
        &[
            "stored sessions",
            "database",
            "spawn → ready",
            "VmRSS at ready",
            "VmRSS after each pass",
            "change vs first row",
            "VmHWM",
            "change vs first row",
            "list pages read",
            "first list page, median",
            "load, median",
            "new + prompt, median",
            "target",
        ],
    );
    for run in &runs {
        let rss = *run.rss_after.last().unwrap_or(&0) as f64;
        let change = rss / base_rss - 1.0;
        let median = |pick: &dyn Fn(&Workload) -> Vec<Duration>| {
            let mut all: Vec<Duration> = run.workloads.iter().flat_map(pick).collect();
            all.sort_unstable();
            ms(percentile(&all, 50.0))
        };
        table.row(vec![
            thousands(run.stored),
            format!("{:.1} MiB", run.database_bytes as f64 / (1024.0 * 1024.0)),
            format!("{} ms", ms(run.ready_in)),
            mib(run.rss_ready),
            run.rss_after
                .iter()
                .map(|&kib| mib(kib))
                .collect::<Vec<_>>()
                .join(", "),
            format!("{:+.1} %", change * 100.0),
            mib(run.hwm),
            format!("{:+.1} %", (run.hwm as f64 / base_hwm - 1.0) * 100.0),
            run.workloads[0].pages.to_string(),
            format!("{} ms", median(&|workload| vec![workload.first_page])),
            format!("{} ms", median(&|workload| workload.loads.clone())),
            format!("{} ms", median(&|workload| vec![workload.prompt])),
            if std::ptr::eq(run, base) {
                "—".to_owned()
            } else {
                verdict(change.abs() <= TARGET_RSS_CHANGE)
            },
        ]);
    }
    table.print();
    println!(
        "  the workload: connect, initialize, session/list of up to {PAGES} pages (100 sessions each), session/load of the first and the last session listed, session/new, a prompt to the test model, close. Populating took {}.",
        runs.iter()
            .map(|run| format!("{} ms for {}", ms(run.populate), thousands(run.stored)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Sessions attached in each round of `evict`, prompts to each, and the
/// length of each prompt: 1,000 conversations of about 12 KB each, 12 MB a
/// round if they stayed in memory.
const EVICT_SESSIONS: usize = 1_000;
const EVICT_PROMPTS: usize = 3;
const EVICT_PROMPT_BYTES: usize = 2_000;
/// How long an attached session may sit idle in `evict` before its
/// conversation is dropped: short, so the rounds do not wait long.
const EVICT_IDLE: &str = "0.2";

/// What `/health` says of memory.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InMemory {
    sessions: usize,
    conversations_in_memory: usize,
}

struct EvictRound {
    attached: usize,
    conversations_at_end: usize,
    rss_attached: u64,
    evicted_in: Duration,
    rss_idle: u64,
    rss_detached: u64,
}

async fn measure_eviction(binary: &Path, options: &Options) -> anyhow::Result<()> {
    let rounds = if options.quick { 3 } else { 5 };
    let server = Serve::start_with_args(
        binary,
        Home::new()?,
        &["--model", "test", "--session-idle-timeout", EVICT_IDLE],
    )?;
    let address = server.server.address;
    let in_memory = move || -> anyhow::Result<InMemory> {
        support::get_health(address).context("GET /health failed")
    };
    let until = async |what: &str, done: &dyn Fn(&InMemory) -> bool| -> anyhow::Result<()> {
        let begin = Instant::now();
        loop {
            if done(&in_memory()?) {
                return Ok(());
            }
            ensure!(begin.elapsed() < DEADLINE, "{what} took over {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let workspace = server.workspace();
    let long_prompt = "word ".repeat(EVICT_PROMPT_BYTES / 5);
    let mut results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut client = Client::connect(&server).await?;
        for _ in 0..EVICT_SESSIONS {
            let session = client.new_session(&workspace).await?;
            for _ in 0..EVICT_PROMPTS {
                client.prompt(&session, &long_prompt).await?;
            }
        }
        let attached = in_memory()?;
        let rss_attached = server.status_kib("VmRSS:")?;
        let begin = Instant::now();
        until("dropping idle conversations", &|now| {
            now.conversations_in_memory == 0
        })
        .await?;
        let evicted_in = begin.elapsed();
        let rss_idle = server.status_kib("VmRSS:")?;
        client.close().await?;
        until("detaching the sessions", &|now| now.sessions == 0).await?;
        results.push(EvictRound {
            attached: attached.sessions,
            conversations_at_end: attached.conversations_in_memory,
            rss_attached,
            evicted_in,
            rss_idle,
            rss_detached: server.status_kib("VmRSS:")?,
        });
    }
    server.stop()?;

    let base = results[0].rss_detached as f64;
    let mut table = Table::new(
        &format!(
            "Server memory over rounds of one connection attaching {} sessions, prompting each {EVICT_PROMPTS} times ({} bytes a prompt), leaving them idle (--session-idle-timeout {EVICT_IDLE}) and closing (target: VmRSS after each round within {:.0} % of the first round's)",
            thousands(EVICT_SESSIONS),
            thousands(EVICT_PROMPT_BYTES),
            TARGET_RSS_CHANGE * 100.0
        ),
        &[
            "round",
            "sessions attached",
            "conversations in memory at the last prompt",
            "VmRSS then",
            "all dropped within",
            "VmRSS, attached and idle",
            "VmRSS, closed",
            "change vs round 1",
            "target",
        ],
    );
    for (index, round) in results.iter().enumerate() {
        let change = round.rss_detached as f64 / base - 1.0;
        table.row(vec![
            (index + 1).to_string(),
            thousands(round.attached),
            thousands(round.conversations_at_end),
            mib(round.rss_attached),
            format!("{} ms", ms(round.evicted_in)),
            mib(round.rss_idle),
            mib(round.rss_detached),
            format!("{:+.1} %", change * 100.0),
            if index == 0 {
                "—".to_owned()
            } else {
                verdict(change.abs() <= TARGET_RSS_CHANGE)
            },
        ]);
    }
    table.print();
    Ok(())
}

// ---------------------------------------------------------------------------
// Formatting

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

/// Microseconds, or milliseconds from 10 ms on.
fn us(duration: Duration) -> String {
    if duration >= Duration::from_millis(10) {
        format!("{:.1} ms", duration.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} µs", duration.as_secs_f64() * 1e6)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `12345` as `12,345`.
fn thousands(count: usize) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
