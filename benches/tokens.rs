//! Token benchmark: the delay Punie adds between a model provider sending a
//! token and an ACP client receiving the frame that carries it.
//!
//! This process plays both ends. It serves a fake OpenAI Chat Completions
//! endpoint on 127.0.0.1 that streams numbered tokens (`⟦17⟧`), stamping the
//! moment each one is handed to the HTTP connection, and it is a WebSocket ACP
//! client of a real `punie serve --model local:http://…/v1/fake`, stamping the
//! moment each `agent_message_chunk` frame arrives. The delay of a token is the
//! difference: both loopback hops, the provider client's SSE and JSON parsing,
//! the turn loop, the notification's serialisation and the WebSocket write. A
//! bare loopback round trip is measured too, for contrast.
//!
//! `cargo bench --bench tokens` (target: p99 <= 1 ms); `--quick` for a smoke
//! run, `--turns=N`, `--tokens=N` (per turn), `--interval-us=N` (between
//! tokens), `--token-bytes=N` (each token padded to about N bytes: one event
//! of megabytes, to see that reading it takes time in proportion to its
//! size; the target is for small tokens). `PUNIE_BIN` measures another
//! binary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use axum::body::{Body, Bytes};
use axum::serve::ListenerExt as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

mod support;
use support::{DEADLINE, Server, Table, percentile, print_machine, punie_binary, verdict};

const TARGET_P99: Duration = Duration::from_millis(1);

const USAGE: &str = "\
usage: cargo bench --bench tokens -- [options]

  --quick            a short run, for a smoke test
  --turns=N          prompts, each answered by one streamed reply (default 20, quick 4)
  --tokens=N         tokens per reply (default 500, quick 200)
  --interval-us=N    pause between tokens (default 1000)
  --token-bytes=N    pad each token to about N bytes (default 0: a few bytes)

PUNIE_BIN overrides the binary.";

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tokens: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    support::block_on(
        "tokens",
        tokio::runtime::Builder::new_current_thread(),
        run(&settings),
    )
}

struct Settings {
    quick: bool,
    turns: usize,
    tokens: usize,
    interval: Duration,
    token_bytes: usize,
}

impl Settings {
    /// `None` when help was asked for.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let number = |arg: &str, option: &str| -> Result<u64, String> {
            let value = &arg[option.len()..];
            value
                .parse()
                .map_err(|_| format!("{option} takes a count, not `{value}`"))
        };
        let (mut quick, mut turns, mut tokens, mut interval_us) = (false, None, None, 1_000);
        let mut token_bytes = 0;
        for arg in args {
            match arg.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--quick" => quick = true,
                "-h" | "--help" => return Ok(None),
                _ if arg.starts_with("--turns=") => turns = Some(number(&arg, "--turns=")?),
                _ if arg.starts_with("--tokens=") => tokens = Some(number(&arg, "--tokens=")?),
                _ if arg.starts_with("--interval-us=") => {
                    interval_us = number(&arg, "--interval-us=")?;
                }
                _ if arg.starts_with("--token-bytes=") => {
                    token_bytes = usize::try_from(number(&arg, "--token-bytes=")?)
                        .map_err(|_| "--token-bytes is too large".to_owned())?;
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        let (default_turns, default_tokens) = if quick { (4, 200) } else { (20, 500) };
        let positive = |count: u64| usize::try_from(count).ok().filter(|count| *count > 0);
        Ok(Some(Self {
            quick,
            turns: positive(turns.unwrap_or(default_turns)).ok_or("--turns must be positive")?,
            tokens: positive(tokens.unwrap_or(default_tokens))
                .ok_or("--tokens must be positive")?,
            interval: Duration::from_micros(interval_us),
            token_bytes,
        }))
    }
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    let binary = punie_binary();
    ensure!(
        binary.is_file(),
        "the binary {} does not exist; build it with `cargo build --release --bin punie`",
        binary.display()
    );
    print_machine("punie token benchmark", &binary, settings.quick);

    let provider =
        Provider::start(settings.tokens, settings.interval, settings.token_bytes).await?;
    let model = format!("local:http://{}/v1/fake", provider.address);
    // Starting waits with blocking sleeps: nothing else needs this thread yet.
    let server = Server::start_with(&binary, &model, &[("OPENAI_API_KEY", "unused")])?;
    let delays = measure(&server, &provider, settings).await;
    let loopback = loopback_round_trips(2_000).await?;
    let stopped = server.stop();
    let delays = delays?;
    stopped?;
    report(settings, &delays, &loopback);
    Ok(())
}

// ---------------------------------------------------------------------------
// The fake provider

/// When each token left the fake provider, by token number.
type Stamps = Arc<Mutex<Vec<Option<Instant>>>>;

struct Provider {
    address: SocketAddr,
    sent: Stamps,
}

impl Provider {
    async fn start(tokens: usize, interval: Duration, padding: usize) -> anyhow::Result<Self> {
        let sent: Stamps = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the fake provider")?;
        let address = listener.local_addr()?;
        let stamps = sent.clone();
        let app = axum::Router::new().fallback(move || {
            let stamps = stamps.clone();
            async move { stream_reply(stamps, tokens, interval, padding) }
        });
        // Streaming APIs send each event at once, as nginx and the cloud
        // providers do (`tcp_nodelay`); without it Nagle's algorithm holds
        // each small event back behind the previous one's acknowledgement.
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { address, sent })
    }

    fn sent_at(&self, token: usize) -> Option<Instant> {
        let sent = self.sent.lock().ok()?;
        sent.get(token).copied().flatten()
    }
}

/// One streamed reply: `tokens` numbered tokens, each followed by `padding`
/// bytes, numbered on from the last reply's, then the end of the stream.
fn stream_reply(
    stamps: Stamps,
    tokens: usize,
    interval: Duration,
    padding: usize,
) -> axum::response::Response {
    let pad = "x".repeat(padding);
    let events = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(Bytes::from(delta(json!({"role": "assistant", "content": ""}))));
        for _ in 0..tokens {
            tokio::time::sleep(interval).await;
            let event = {
                let Ok(mut sent) = stamps.lock() else { break };
                let number = sent.len();
                sent.push(Some(Instant::now()));
                delta(json!({"content": format!("⟦{number}⟧{pad}")}))
            };
            yield Ok(Bytes::from(event));
        }
        yield Ok(Bytes::from(finish()));
        yield Ok(Bytes::from("data: [DONE]\n\n"));
    };
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap_or_default()
}

fn delta(delta: Value) -> String {
    chunk(json!({"index": 0, "delta": delta, "finish_reason": null}))
}

fn finish() -> String {
    chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"}))
}

fn chunk(choice: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake",
        "choices": [choice],
    });
    format!("data: {chunk}\n\n")
}

// ---------------------------------------------------------------------------
// The ACP client

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn measure(
    server: &Server,
    provider: &Provider,
    settings: &Settings,
) -> anyhow::Result<Vec<Duration>> {
    let mut socket = connect(server).await?;
    call(
        &mut socket,
        1,
        "initialize",
        json!({"protocolVersion": 1, "clientCapabilities": {}}),
    )
    .await?;
    let cwd = server.home.file("workspace");
    let session = call(
        &mut socket,
        2,
        "session/new",
        json!({"cwd": cwd, "mcpServers": []}),
    )
    .await?;
    let session_id = session["sessionId"].clone();

    let mut delays = Vec::with_capacity(settings.turns * settings.tokens);
    for turn in 0..settings.turns {
        let id = 10 + turn as u64;
        let prompt = json!({"sessionId": session_id, "prompt": [{"type": "text", "text": "go"}]});
        send(&mut socket, id, "session/prompt", prompt).await?;
        let mut seen = 0;
        loop {
            let (frame, arrived) = next_frame(&mut socket).await?;
            if frame["id"] == id {
                ensure!(
                    frame["result"]["stopReason"] == "end_turn",
                    "turn {turn} did not end normally: {frame}"
                );
                break;
            }
            for token in tokens_in(&frame) {
                let sent = provider
                    .sent_at(token)
                    .with_context(|| format!("token {token} arrived but was never sent"))?;
                delays.push(arrived.saturating_duration_since(sent));
                seen += 1;
            }
        }
        ensure!(
            seen == settings.tokens,
            "turn {turn}: {seen} of {} tokens arrived",
            settings.tokens
        );
    }
    Ok(delays)
}

async fn connect(server: &Server) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{}/acp", server.address).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", server.token))?,
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("cannot connect to the server")?;
    Ok(socket)
}

async fn send(socket: &mut Socket, id: u64, method: &str, params: Value) -> anyhow::Result<()> {
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    socket.send(Message::text(request.to_string())).await?;
    Ok(())
}

async fn call(socket: &mut Socket, id: u64, method: &str, params: Value) -> anyhow::Result<Value> {
    send(socket, id, method, params).await?;
    loop {
        let (frame, _) = next_frame(socket).await?;
        if frame["id"] == id {
            return frame
                .get("result")
                .cloned()
                .with_context(|| format!("{method} failed: {frame}"));
        }
    }
}

/// The next text frame, and when it arrived.
async fn next_frame(socket: &mut Socket) -> anyhow::Result<(Value, Instant)> {
    loop {
        let frame = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .context("no frame from the server in time")?;
        let arrived = Instant::now();
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Ok((serde_json::from_str(text.as_str())?, arrived));
            }
            Some(Ok(Message::Close(close))) => bail!("the server closed the connection: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => bail!("the connection failed: {error}"),
            None => bail!("the connection ended"),
        }
    }
}

/// The numbers of the tokens an `agent_message_chunk` carries.
fn tokens_in(frame: &Value) -> Vec<usize> {
    let update = &frame["params"]["update"];
    if update["sessionUpdate"] != "agent_message_chunk" {
        return Vec::new();
    }
    let text = update["content"]["text"].as_str().unwrap_or_default();
    text.split('⟦')
        .filter_map(|part| part.split_once('⟧'))
        .filter_map(|(number, _)| number.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------
// Contrast and report

/// Round trips of one small message over a loopback TCP connection within
/// this process: what two hops cost with no Punie between them.
async fn loopback_round_trips(count: usize) -> anyhow::Result<Vec<Duration>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let mut buffer = [0u8; 64];
        while let Ok(read) = stream.read(&mut buffer).await {
            if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    });
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut round_trips = Vec::with_capacity(count);
    let mut buffer = [0u8; 1];
    for _ in 0..count {
        let start = Instant::now();
        stream.write_all(b"x").await?;
        stream.read_exact(&mut buffer).await?;
        round_trips.push(start.elapsed());
    }
    drop(stream);
    let _ = echo.await;
    Ok(round_trips)
}

fn report(settings: &Settings, delays: &[Duration], loopback: &[Duration]) {
    let mut delays = delays.to_vec();
    delays.sort_unstable();
    let mut loopback = loopback.to_vec();
    loopback.sort_unstable();
    let us = |duration: Duration| format!("{:.1} µs", duration.as_secs_f64() * 1e6);
    let p99 = percentile(&delays, 99.0);
    let mut table = Table::new(
        &format!(
            "Provider token → client frame: {} turns of {} tokens of {} bytes, {} µs apart (target, for small tokens: p99 <= 1 ms)",
            settings.turns,
            settings.tokens,
            if settings.token_bytes == 0 {
                "a few".to_owned()
            } else {
                format!("about {}", settings.token_bytes)
            },
            settings.interval.as_micros()
        ),
        &["what", "samples", "p50", "p90", "p99", "max", "target"],
    );
    table.row(vec![
        "token sent by the provider → frame received by the client".to_owned(),
        delays.len().to_string(),
        us(percentile(&delays, 50.0)),
        us(percentile(&delays, 90.0)),
        us(p99),
        us(delays.last().copied().unwrap_or_default()),
        if settings.token_bytes == 0 {
            verdict(p99 <= TARGET_P99)
        } else {
            "—".to_owned()
        },
    ]);
    table.row(vec![
        "for contrast: loopback TCP round trip, no Punie".to_owned(),
        loopback.len().to_string(),
        us(percentile(&loopback, 50.0)),
        us(percentile(&loopback, 90.0)),
        us(percentile(&loopback, 99.0)),
        us(loopback.last().copied().unwrap_or_default()),
        "—".to_owned(),
    ]);
    table.print();
}
