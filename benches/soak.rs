//! Soak benchmark: many connections held for a long time, each running a turn
//! now and then, while the server's memory and open files are sampled.
//!
//! The targets: the server's RSS stays flat (within 5% after the warm-up), its
//! file descriptors do not grow, and every turn completes.
//!
//! `cargo bench --bench soak` holds 10,000 connections for 10 minutes, each
//! prompting about once a minute; `--quick` holds 1,000 for one minute.
//! `--connections=N`, `--minutes=M`, `--turn-every=SECONDS` and
//! `--warm-up=SECONDS` change the sizes; `PUNIE_BIN` measures another binary.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

mod support;
use support::{DEADLINE, Server, Table, print_machine, proc_status_kib, punie_binary, verdict};

/// Most RSS growth after the warm-up, as a fraction of the first sample.
const RSS_TOLERANCE: f64 = 0.05;

/// How often the server is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Connections opened at once while the soak ramps up.
const RAMP_BATCH: usize = 200;

const USAGE: &str = "\
usage: cargo bench --bench soak -- [options]

  --quick              1,000 connections for one minute
  --connections=N      connections held (default 10000)
  --minutes=M          how long they are held (default 10)
  --turn-every=S       each connection prompts about every S seconds (default 60)
  --warm-up=S          samples before this are not judged (default 60; quick 15)
  --idle=S             the server's --session-idle-timeout (default: the server's own)
  --turns-per-session=N  each connection closes its session and starts a new
                       one after N turns, so conversations stop growing
                       (default: one session for the whole soak)

PUNIE_BIN overrides the binary.";

struct Settings {
    quick: bool,
    connections: usize,
    duration: Duration,
    turn_every: Duration,
    warm_up: Duration,
    idle: Option<f64>,
    turns_per_session: Option<u64>,
}

impl Settings {
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let number = |arg: &str, option: &str| -> Result<f64, String> {
            let value = &arg[option.len()..];
            value
                .parse::<f64>()
                .ok()
                .filter(|number| *number > 0.0)
                .ok_or_else(|| format!("{option} takes a positive number, not `{value}`"))
        };
        let mut quick = false;
        let (mut connections, mut minutes, mut turn_every, mut warm_up) = (None, None, None, None);
        let mut idle = None;
        let mut turns_per_session = None;
        for arg in args {
            match arg.as_str() {
                "--bench" => {}
                "--quick" => quick = true,
                "-h" | "--help" => return Ok(None),
                _ if arg.starts_with("--connections=") => {
                    connections = Some(number(&arg, "--connections=")?);
                }
                _ if arg.starts_with("--minutes=") => minutes = Some(number(&arg, "--minutes=")?),
                _ if arg.starts_with("--turn-every=") => {
                    turn_every = Some(number(&arg, "--turn-every=")?);
                }
                _ if arg.starts_with("--warm-up=") => warm_up = Some(number(&arg, "--warm-up=")?),
                _ if arg.starts_with("--idle=") => idle = Some(number(&arg, "--idle=")?),
                _ if arg.starts_with("--turns-per-session=") => {
                    turns_per_session = Some(number(&arg, "--turns-per-session=")?.max(1.0) as u64);
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let (default_connections, default_minutes, default_warm_up) = if quick {
            (1_000.0, 1.0, 15.0)
        } else {
            (10_000.0, 10.0, 60.0)
        };
        Ok(Some(Self {
            quick,
            connections: connections.unwrap_or(default_connections) as usize,
            duration: Duration::from_secs_f64(minutes.unwrap_or(default_minutes) * 60.0),
            turn_every: Duration::from_secs_f64(turn_every.unwrap_or(60.0)),
            warm_up: Duration::from_secs_f64(warm_up.unwrap_or(default_warm_up)),
            idle,
            turns_per_session,
        }))
    }
}

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("soak: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("soak: cannot raise the open file limit: {error}");
    }
    support::block_on(
        "soak",
        tokio::runtime::Builder::new_multi_thread(),
        run(&settings),
    )
}

/// What the clients did, counted as they go.
#[derive(Default)]
struct Tally {
    turns_started: AtomicU64,
    turns_completed: AtomicU64,
    failures: AtomicU64,
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    turns_completed: u64,
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    let binary = punie_binary();
    ensure!(binary.is_file(), "no binary at {}", binary.display());
    print_machine("punie soak benchmark", &binary, settings.quick);
    // Room for every connection, plus a few for whoever looks in meanwhile.
    let room = (settings.connections + 64).to_string();
    let idle = settings.idle.map(|seconds| seconds.to_string());
    let mut args = vec!["--model", "test", "--max-connections", &room];
    if let Some(idle) = &idle {
        args.extend(["--session-idle-timeout", idle]);
    }
    let server = Server::start_with_args(&binary, &args, &[])?;
    let pid = server.pid().context("the server is running")?;
    let url = format!("ws://{}/acp", server.address);
    let workspace = server.home.file("workspace");
    let tally = Arc::new(Tally::default());
    let stop = tokio_util::sync::CancellationToken::new();

    println!(
        "  holding {} connections for {:?}, each prompting about every {:?}; --session-idle-timeout {}; {}",
        settings.connections,
        settings.duration,
        settings.turn_every,
        idle.map_or("not given".to_owned(), |seconds| format!("{seconds} s")),
        settings
            .turns_per_session
            .map_or("one session each".to_owned(), |turns| format!(
                "a new session every {turns} turns"
            )),
    );
    let ramp_started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for batch in (0..settings.connections)
        .collect::<Vec<_>>()
        .chunks(RAMP_BATCH)
    {
        let mut opened = tokio::task::JoinSet::new();
        for &index in batch {
            let (url, token, workspace) = (url.clone(), server.token.clone(), workspace.clone());
            opened.spawn(async move { Client::open(&url, &token, &workspace, index).await });
        }
        while let Some(client) = opened.join_next().await {
            let client = client.context("a client task panicked")??;
            let (tally, stop, every) = (tally.clone(), stop.clone(), settings.turn_every);
            clients.spawn(client.soak(tally, stop, every, settings.turns_per_session));
        }
    }
    println!(
        "  {} connections open after {:.1} s",
        settings.connections,
        ramp_started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    while started.elapsed() < settings.duration {
        ticks.tick().await;
        let sample = Sample {
            at: started.elapsed(),
            rss_kib: proc_status_kib(pid, "VmRSS:")?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
            turns_completed: tally.turns_completed.load(Ordering::Relaxed),
        };
        println!(
            "  {:>5.0} s  RSS {:>8} KiB  fds {:>6}  turns {:>8}  failures {}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.fds,
            sample.turns_completed,
            tally.failures.load(Ordering::Relaxed)
        );
        samples.push(sample);
    }
    stop.cancel();
    while let Some(finished) = clients.join_next().await {
        finished.context("a client task panicked")?;
    }
    server.stop()?;
    report(settings, &samples, &tally);
    Ok(())
}

fn report(settings: &Settings, samples: &[Sample], tally: &Tally) {
    let judged: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= settings.warm_up)
        .collect();
    let (Some(first), Some(last)) = (judged.first(), judged.last()) else {
        println!("  no samples after the warm-up: run longer");
        return;
    };
    let highest = judged.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let growth = (highest as f64 - first.rss_kib as f64) / first.rss_kib as f64;
    let fd_growth = judged.iter().map(|s| s.fds).max().unwrap_or(0) as i64 - first.fds as i64;
    let started = tally.turns_started.load(Ordering::Relaxed);
    let completed = tally.turns_completed.load(Ordering::Relaxed);
    let failures = tally.failures.load(Ordering::Relaxed);
    let mut table = Table::new(
        &format!(
            "Soak: {} connections for {:?} (warm-up {:?} not judged)",
            settings.connections, settings.duration, settings.warm_up
        ),
        &["what", "figure", "target"],
    );
    table.row(vec![
        "server RSS after warm-up: first → highest → last".to_owned(),
        format!(
            "{:.1} → {:.1} → {:.1} MiB ({:+.1}%)",
            first.rss_kib as f64 / 1024.0,
            highest as f64 / 1024.0,
            last.rss_kib as f64 / 1024.0,
            growth * 100.0
        ),
        verdict(growth <= RSS_TOLERANCE),
    ]);
    table.row(vec![
        "server file descriptors after warm-up: first → highest".to_owned(),
        format!(
            "{} → {} ({fd_growth:+})",
            first.fds,
            first.fds as i64 + fd_growth
        ),
        verdict(fd_growth <= 0),
    ]);
    table.row(vec![
        "turns completed / started (failures)".to_owned(),
        format!("{completed} / {started} ({failures})"),
        verdict(completed == started && failures == 0),
    ]);
    table.print();
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One soaking connection, with its session.
struct Client {
    socket: Socket,
    session: Value,
    workspace: Value,
    index: usize,
    next_id: u64,
}

impl Client {
    async fn open(
        url: &str,
        token: &str,
        workspace: &std::path::Path,
        index: usize,
    ) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
        let (socket, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
            .await
            .context("the connection took too long")??;
        let mut client = Self {
            socket,
            session: Value::Null,
            workspace: json!(workspace),
            index,
            next_id: 1,
        };
        client
            .call(
                "initialize",
                json!({"protocolVersion": 1, "clientCapabilities": {}}),
            )
            .await?;
        client.new_session().await?;
        Ok(client)
    }

    async fn new_session(&mut self) -> anyhow::Result<()> {
        let params = json!({"cwd": self.workspace, "mcpServers": []});
        let session = self.call("session/new", params).await?;
        self.session = session["sessionId"].clone();
        Ok(())
    }

    /// Close the session (it stays stored) and start another.
    async fn next_session(&mut self) -> anyhow::Result<()> {
        self.call("session/close", json!({"sessionId": self.session}))
            .await?;
        self.new_session().await
    }

    /// Prompt about every `every`, spread over the period, until `stop`.
    async fn soak(
        mut self,
        tally: Arc<Tally>,
        stop: tokio_util::sync::CancellationToken,
        every: Duration,
        turns_per_session: Option<u64>,
    ) {
        let mut turns_in_session = 0;
        let offset = every.mul_f64((self.index % 997) as f64 / 997.0);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
        loop {
            // Reading between turns answers the server's pings.
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
                frame = self.socket.next() => match frame {
                    Some(Ok(Message::Close(frame))) => {
                        eprintln!("soak: the server closed a connection: {frame:?}");
                        tally.failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        eprintln!("soak: a connection ended between turns");
                        tally.failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
            }
            if turns_per_session == Some(turns_in_session) {
                turns_in_session = 0;
                if let Err(error) = self.next_session().await {
                    eprintln!("soak: could not start another session: {error:#}");
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            turns_in_session += 1;
            tally.turns_started.fetch_add(1, Ordering::Relaxed);
            let prompt =
                json!({"sessionId": self.session, "prompt": [{"type": "text", "text": "soak"}]});
            match self.call("session/prompt", prompt).await {
                Ok(answer) if answer["stopReason"] == "end_turn" => {
                    tally.turns_completed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(answer) => {
                    eprintln!("soak: a turn ended oddly: {answer}");
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    eprintln!("soak: a turn failed: {error:#}");
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let _ = self.socket.close(None).await;
    }

    /// Send a request and read until its answer; pings are answered by reading.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.socket.send(Message::text(request.to_string())).await?;
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.socket.next())
                .await
                .with_context(|| format!("no answer to {method} in time"))?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str())?;
                    if message["id"] == id {
                        return message
                            .get("result")
                            .cloned()
                            .with_context(|| format!("{method} failed: {message}"));
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("the server closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => bail!("the connection failed: {error}"),
                None => bail!("the connection ended"),
            }
        }
    }
}
