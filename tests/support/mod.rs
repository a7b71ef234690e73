//! Shared by the integration tests: the real `punie` binary started in its own
//! temporary XDG directories, and clients that talk to it over real sockets.
#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod disk;
pub mod fake_provider;
pub mod hand_written;
pub mod http_profile;
pub mod mcp;
pub mod relay;
pub mod sdk;
pub mod terminal;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The code and message of a response, asserting it is an error.
pub fn error(response: &Value) -> (i64, String) {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {response}"));
    (
        error["code"].as_i64().expect("an integer code"),
        error["message"].as_str().expect("a message").to_owned(),
    )
}

/// The connection still works after whatever came before: a fresh session
/// can be prompted.
pub async fn still_usable(client: &mut RawClient, server: &Server) {
    let session = client.new_session(&server.home.workspace()).await;
    let answer = client.prompt(&session, "ping").await;
    assert_eq!(answer["result"]["stopReason"], "end_turn", "{answer}");
}

/// Output of a command, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Output of a command that prints one JSON value per line, parsed.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    text(bytes)
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

/// The session updates of `kind` among `messages`.
pub fn updates<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|m| m["method"] == "session/update")
        .map(|m| &m["params"]["update"])
        .filter(|u| u["sessionUpdate"] == kind)
        .collect()
}

/// The text the content chunks of `updates` carry, joined.
pub fn text_of(updates: &[&Value]) -> String {
    updates
        .iter()
        .map(|u| u["content"]["text"].as_str().unwrap_or_default())
        .collect()
}

/// Await `future`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Temporary XDG directories: everything Punie writes lands in here.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state/punie")
    }

    pub fn server_file(&self) -> PathBuf {
        self.state_dir().join("server.json")
    }

    pub fn token_file(&self) -> PathBuf {
        self.state_dir().join("token")
    }

    /// The session store's database file.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("data/punie/punie.db")
    }

    /// A home whose settings file holds `settings`.
    pub fn with_settings(settings: &str) -> Self {
        let home = Self::new();
        let dir = home.dir.path().join("config/punie");
        std::fs::create_dir_all(&dir).expect("the config directory");
        std::fs::write(dir.join("config.toml"), settings).expect("the settings file is written");
        home
    }

    /// A directory to use as a session's workspace.
    pub fn workspace(&self) -> PathBuf {
        let dir = self.dir.path().join("workspace");
        std::fs::create_dir_all(&dir).expect("workspace directory");
        dir
    }

    /// A `server.json` naming a server that is not there (nothing listens at
    /// its address); returns that address.
    pub fn record_a_gone_server(&self) -> String {
        std::fs::create_dir_all(self.state_dir()).expect("the state directory");
        let url = format!("http://127.0.0.1:{}", unused_port());
        let record = json!({
            "url": url,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "startedAt": "2026-01-01T00:00:00Z",
        });
        std::fs::write(self.server_file(), record.to_string()).expect("server.json is written");
        url
    }

    /// `--model` for a `script:` model that plays `responses` (JSON: a list
    /// of model turns), from a file in this home.
    pub fn script_model(&self, responses: impl ToString) -> String {
        let script = self.dir.path().join("script.json");
        std::fs::write(&script, responses.to_string()).expect("the script is written");
        format!("script:{}", script.display())
    }

    /// `punie` with its environment pointed at this home.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_punie"));
        command
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("PUNIE_TOKEN")
            .env_remove("PUNIE_SERVER")
            .env_remove("PUNIE_MODEL")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            // Nothing listens on port 9 of loopback: an Ollama running on
            // this machine adds no models to what a test sees.
            .env("OLLAMA_HOST", "127.0.0.1:9")
            .kill_on_drop(true);
        command
    }

    /// `punie <args>` run to its end from `dir`, with nothing on stdin.
    pub async fn run_in(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        within(
            &format!("punie {}", args.join(" ")),
            self.command()
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("punie runs")
    }
}

/// A running `punie serve`.
pub struct Server {
    pub home: Home,
    pub child: Child,
    pub address: SocketAddr,
    pub token: String,
    log: Arc<Mutex<String>>,
    log_grew: tokio::sync::watch::Receiver<usize>,
    stdout: Option<tokio::process::ChildStdout>,
}

impl Server {
    /// `punie serve --port 0` in a fresh home.
    pub async fn start() -> Self {
        Self::start_in(Home::new(), &[]).await
    }

    /// `punie serve --port 0 <extra>` in `home`, waiting for its ready line.
    /// A server in a new home on a `script:` model that plays `responses`,
    /// with `extra` flags.
    pub async fn scripted(responses: impl ToString, extra: &[&str]) -> Self {
        let home = Home::new();
        let model = home.script_model(responses);
        let mut args = vec!["--model", model.as_str()];
        args.extend_from_slice(extra);
        Self::start_in(home, &args).await
    }

    pub async fn start_in(home: Home, extra: &[&str]) -> Self {
        let mut command = home.command();
        command.args(["serve", "--port", "0"]).args(extra);
        Self::spawn(home, command).await
    }

    /// Start `command` (a `punie serve` built from `home`) and wait until it is ready.
    pub async fn spawn(home: Home, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("punie starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout = child.stdout.take();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (grew_tx, log_grew) = tokio::sync::watch::channel(0);
        tokio::spawn(collect_log(stderr, log.clone(), ready_tx, grew_tx));
        let address = match within("the ready line", ready_rx).await {
            Ok(address) => address,
            Err(_) => panic!(
                "punie serve exited before it was ready:\n{}",
                log.lock().unwrap()
            ),
        };
        let token = std::fs::read_to_string(home.token_file())
            .expect("the token file exists once the server is ready")
            .trim()
            .to_owned();
        Self {
            home,
            child,
            address,
            token,
            log,
            log_grew,
            stdout,
        }
    }

    /// Stop the server as `punie stop` does (SIGTERM) and wait for it to
    /// exit; its home, to start it again in.
    pub async fn stop(mut self) -> Home {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.exit_status().await;
        self.home
    }

    /// `punie serve --port <port> <extra>` in `home`: a server started again
    /// where its clients knew it.
    pub async fn start_on(home: Home, port: u16, extra: &[&str]) -> Self {
        let mut command = home.command();
        command
            .args(["serve", "--port", &port.to_string()])
            .args(extra);
        Self::spawn(home, command).await
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/acp", self.address)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().expect("the server is running") as i32)
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the server's stderr contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str) {
        let log = self.log.clone();
        within(&format!("`{needle}` in the server's log"), async {
            loop {
                if log.lock().unwrap().contains(needle) {
                    return;
                }
                self.log_grew
                    .changed()
                    .await
                    .expect("the server's stderr is open");
            }
        })
        .await;
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("the server can be signalled");
    }

    /// Wait for the server to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        within("the server to exit", self.child.wait())
            .await
            .expect("the exit status")
    }

    /// What the server wrote to stdout, once it has exited.
    pub async fn stdout(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            stdout.read_to_string(&mut text).await.expect("stdout");
        }
        text
    }

    /// `GET /health`.
    pub async fn health(&self) -> Value {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(self.http_url("/health"))
            .send()
            .await
            .expect("/health answers");
        assert_eq!(response.status(), 200);
        response.json().await.expect("/health is JSON")
    }

    /// `initialize` POSTed to the HTTP/SSE profile: the answer, whose
    /// `Acp-Connection-Id` names the connection it opened.
    pub async fn http_profile_initialize(&self) -> reqwest::Response {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client")
            .post(self.http_url("/acp"))
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                          "params": {"protocolVersion": 1}}))
            .send()
            .await
            .expect("the initialize POST is answered")
    }

    /// Poll `/health` until `done` holds for it; returns that answer.
    pub async fn health_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        within(what, async {
            loop {
                let health = self.health().await;
                if done(&health) {
                    return health;
                }
                // /health has no way to wait for a change; ask again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// A raw WebSocket client at `/acp`, with the token, not yet initialized.
    pub async fn raw(&self) -> RawClient {
        RawClient::connect(&self.ws_url(), &self.token).await
    }

    /// A raw WebSocket client that has completed `initialize`.
    pub async fn initialized(&self) -> RawClient {
        let mut client = self.raw().await;
        client.initialize().await;
        client
    }
}

async fn collect_log(
    stderr: tokio::process::ChildStderr,
    log: Arc<Mutex<String>>,
    ready: tokio::sync::oneshot::Sender<SocketAddr>,
    grew: tokio::sync::watch::Sender<usize>,
) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(address) = line.strip_prefix("punie listening on http://")
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(address.parse().expect("the ready line names an address"));
        }
        let length = {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
            log.len()
        };
        grew.send_replace(length);
    }
}

/// A WebSocket client that speaks JSON-RPC by hand, to see exactly what is on the wire.
pub struct RawClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Notifications that arrived while waiting for a response.
    pub notifications: Vec<Value>,
}

impl RawClient {
    pub async fn connect(url: &str, token: &str) -> Self {
        let mut request = url.into_client_request().expect("a WebSocket URL");
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let (ws, response) = within(
            "the WebSocket handshake",
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("the server accepts the WebSocket");
        assert_eq!(response.status(), 101);
        Self {
            ws,
            next_id: 1,
            notifications: Vec::new(),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("the frame is sent");
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// The next JSON-RPC message from the server.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = within("a message from the server", self.ws.next())
                .await
                .expect("the connection is open")
                .expect("the frame is readable");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("every frame is JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Send a request and wait for its response, keeping notifications that
    /// arrive meanwhile in [`Self::notifications`].
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response_to(id).await
    }

    /// Wait for the response with `id`.
    pub async fn response_to(&mut self, id: u64) -> Value {
        loop {
            let message = self.recv().await;
            if message.get("id") == Some(&json!(id)) {
                return message;
            }
            self.notifications.push(message);
        }
    }

    /// Send a request without waiting; returns its id.
    pub async fn start_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await;
    }

    pub async fn initialize(&mut self) -> Value {
        let response = self
            .request(
                "initialize",
                json!({"protocolVersion": 1, "clientCapabilities": {}, "clientInfo": {"name": "raw-test", "version": "0"}}),
            )
            .await;
        assert!(
            response.get("result").is_some(),
            "initialize failed: {response}"
        );
        response
    }

    /// `session/new` in `cwd`, and the session's commands that follow its
    /// answer; returns the session id.
    pub async fn new_session(&mut self, cwd: &Path) -> String {
        let response = self
            .request("session/new", json!({"cwd": cwd, "mcpServers": []}))
            .await;
        let session = response["result"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("session/new failed: {response}"))
            .to_owned();
        let offered = self.recv().await;
        assert_eq!(
            offered["params"]["update"]["sessionUpdate"], "available_commands_update",
            "the session's commands follow its answer: {offered}"
        );
        session
    }

    /// `method` (`session/load` or `session/resume`) for `session` in `cwd`,
    /// which must succeed; the response.
    pub async fn attach(&mut self, method: &str, session: &str, cwd: &Path) -> Value {
        let response = self
            .request(
                method,
                json!({"sessionId": session, "cwd": cwd, "mcpServers": []}),
            )
            .await;
        assert!(
            response.get("result").is_some(),
            "{method} failed: {response}"
        );
        response
    }

    /// Prompt `session` with `text` and wait for the answer.
    pub async fn prompt(&mut self, session: &str, text: &str) -> Value {
        let id = self.start_prompt(session, text).await;
        self.response_to(id).await
    }

    /// Prompt `session` with `text` without waiting; returns the request's id.
    pub async fn start_prompt(&mut self, session: &str, text: &str) -> u64 {
        self.start_request(
            "session/prompt",
            json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}),
        )
        .await
    }

    /// Read messages into [`Self::notifications`] until `done` holds of them.
    pub async fn receive_until(&mut self, done: impl Fn(&[Value]) -> bool) {
        while !done(&self.notifications) {
            let message = self.recv().await;
            self.notifications.push(message);
        }
    }

    /// Read messages until the agent asks for permission; returns that
    /// request, keeping everything before it in [`Self::notifications`].
    pub async fn permission_request(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if message["method"] == "session/request_permission" {
                return message;
            }
            self.notifications.push(message);
        }
    }

    /// Answer a permission `request` with "allow once".
    pub async fn allow(&mut self, request: &Value) {
        self.send(json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {"outcome": {"outcome": "selected", "optionId": "allow_once"}},
        }))
        .await;
    }

    /// The agent text of `session` among the notifications collected so far.
    pub fn agent_text(&self, session: &str) -> String {
        self.notifications
            .iter()
            .filter(|n| n["method"] == "session/update" && n["params"]["sessionId"] == session)
            .filter(|n| n["params"]["update"]["sessionUpdate"] == "agent_message_chunk")
            .map(|n| {
                n["params"]["update"]["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Wait for the server's close frame, and answer it as a client should.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            match within("the close frame", self.ws.next()).await {
                Some(Ok(Message::Close(frame))) => {
                    // Reading on sends the queued answer and ends the stream.
                    while let Some(Ok(_)) = within("the end of the stream", self.ws.next()).await {}
                    return frame;
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("the connection failed before a close frame: {error}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    }
}

/// A WebSocket handshake to `url` with the given extra headers; the status the
/// server answered with (101 when it upgraded).
pub async fn handshake_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("the handshake failed without an HTTP answer: {error}"),
    }
}

/// The SDK's own WebSocket transport, carrying the server's token.
pub fn sdk_transport(server: &Server) -> agent_client_protocol_http::HttpClient {
    sdk_transport_to(&server.ws_url(), &server.token)
}

/// The SDK's HTTP or WebSocket transport to `url`, its path as given,
/// carrying `token`.
pub fn sdk_transport_to(url: &str, token: &str) -> agent_client_protocol_http::HttpClient {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    agent_client_protocol_http::HttpClient::builder_with_endpoint(url)
        .configure_http(|http| http.no_proxy().default_headers(headers))
        .build()
        .expect("a transport")
}

/// `punie` (the stdio bridge) as an IDE runs it, with its pipes in hand.
pub struct Bridge {
    pub child: Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Option<tokio::process::ChildStderr>,
}

impl Bridge {
    /// The bridge to `server`, with its token.
    pub fn to(server: &Server) -> Self {
        Self::spawn(&server.home, &server.ws_url(), &server.token)
    }

    /// The bridge to `url`, presenting `token`.
    pub fn spawn(home: &Home, url: &str, token: &str) -> Self {
        Self::spawn_with(home, url, token, |_| {})
    }

    /// The same, with `adjust` changing the command first.
    pub fn spawn_with(
        home: &Home,
        url: &str,
        token: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = home.command();
        adjust(&mut command);
        command.args(["--server", url]).env("PUNIE_TOKEN", token);
        Self::run(command)
    }

    /// The bridge as an IDE set up with nothing but the environment runs it:
    /// no `--server`, no `PUNIE_TOKEN`, only `home`'s XDG directories, where
    /// it finds the server's record and token.
    pub fn from_home(home: &Home) -> Self {
        Self::run(home.command())
    }

    /// `command` (`punie` with no command) started, its stdio piped.
    fn run(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the bridge starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self {
            stdin: child.stdin.take(),
            stderr: child.stderr.take(),
            stdout,
            child,
        }
    }

    pub async fn send_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt as _;
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("the bridge reads stdin");
        stdin
            .write_all(b"\n")
            .await
            .expect("the bridge reads stdin");
        stdin.flush().await.expect("the bridge reads stdin");
    }

    pub async fn send(&mut self, message: Value) {
        self.send_line(&message.to_string()).await;
    }

    /// Close stdin, as an IDE does when it is done.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line exactly as written, without its newline; `None`
    /// at end of output.
    pub async fn recv_line(&mut self) -> Option<String> {
        within("a line on the bridge's stdout", self.stdout.next_line())
            .await
            .expect("stdout is readable")
    }

    /// The next stdout line, parsed; `None` at end of output.
    pub async fn recv(&mut self) -> Option<Value> {
        let line = self.recv_line().await?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("stdout carries only JSON, got {line:?}")),
        )
    }

    /// Stdout lines until the response with `id`, which is returned.
    pub async fn response_to(&mut self, id: u64) -> Value {
        loop {
            let message = self.recv().await.expect("an answer before stdout ends");
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    /// Every remaining stdout line, until the bridge closes stdout.
    pub async fn rest(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        while let Some(message) = self.recv().await {
            lines.push(message);
        }
        lines
    }

    pub async fn exit_status(&mut self) -> ExitStatus {
        within("the bridge to exit", self.child.wait())
            .await
            .expect("an exit status")
    }

    /// Everything the bridge wrote to stderr; call after it exited.
    pub async fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            within("the bridge's stderr", stderr.read_to_string(&mut text))
                .await
                .expect("stderr is readable");
        }
        text
    }
}

/// A stdout that takes nothing: a full disk.
pub fn full_disk() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens")
        .into()
}

/// A stdout whose reader has gone, as after `| head -1`.
pub fn reader_gone() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer.into()
}

/// Run `command` to its end with `input` on its stdin (then closed) and
/// `stdout` as its stdout; its exit status, stdout (if piped) and stderr.
/// Not `output()`, which would make stdout a pipe of its own.
pub async fn run_with(command: &mut Command, input: &[u8], stdout: Stdio) -> std::process::Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(input)
        .await
        .expect("the command reads stdin");
    drop(stdin);
    within("the command to exit", child.wait_with_output())
        .await
        .expect("an exit status")
}

/// Everything `child` wrote to its (piped) stderr, read to its end.
pub async fn stderr_of(child: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        within("the child's stderr", pipe.read_to_string(&mut stderr))
            .await
            .expect("stderr is readable");
    }
    stderr
}

/// The pid a command wrote to `file`.
pub fn pid_in(file: &Path) -> rustix::process::Pid {
    let text = std::fs::read_to_string(file).expect("the pid file");
    let pid: i32 = text.trim().parse().expect("a pid");
    rustix::process::Pid::from_raw(pid).expect("a real pid")
}

/// Wait until process `pid` has exited (it may be gone already).
pub async fn ended(pid: rustix::process::Pid) {
    // A pidfd turns readable when its process exits, reaped or not: an
    // orphan's reaper may be slow, or, in a container, absent.
    let process = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(process) => process,
        Err(rustix::io::Errno::SRCH) => return, // Gone already.
        Err(error) => panic!("cannot watch process {pid:?}: {error}"),
    };
    // SAFETY: the AsyncFd owns the pidfd and nothing else closes it.
    let process = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(process, tokio::io::Interest::READABLE)
    }
    .expect("the pidfd can be watched");
    let _ready = within(&format!("process {pid:?} to end"), process.readable())
        .await
        .expect("a pidfd turns readable");
}

/// A named pipe at `path`: opening it waits for its other end.
pub fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("a named pipe");
}

/// A port on 127.0.0.1 where nothing listens.
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// How `session`'s last turn ended, as the server stored it in `database`
/// (`stopReason`, and a `note` saying why when it was not the model's doing),
/// once it has ended.
pub fn turn_end(database: &Path, session: &str) -> Option<Value> {
    let connection =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let body: String = connection
        .query_row(
            "SELECT body FROM entries WHERE session_id = ?1 AND kind = 3 ORDER BY seq DESC LIMIT 1",
            [session],
            |row| row.get(0),
        )
        .ok()?;
    serde_json::from_str(&body).ok()
}
