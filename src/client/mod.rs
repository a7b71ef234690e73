//! The thin clients of a Punie server: finding it, reaching it, and the
//! commands built on that (the IDE bridge, `punie ask`, `punie sessions`,
//! `status`, `stop`).
//!
//! Clients hold no session state: the server owns it all. This module resolves
//! which server to talk to, opens WebSockets to it and starts the ACP
//! conversations the SDK clients hold over them; it never touches the server's
//! internals, only its public endpoints.

pub mod ask;
pub mod attachments;
pub mod bridge;
pub mod preview;
pub mod service;
pub mod sessions;
pub mod status;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, Implementation, InitializeRequest, InitializeResponse,
};
use agent_client_protocol::{Agent, Channel, Error};
use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::auth::{AccessToken, NoToken};
use crate::config::{MAX_MESSAGE_BYTES, MESSAGE_LIMIT_HEADER, Paths};
use crate::server::ServerRecord;
pub(crate) use crate::text::{colour_wanted, terminal_safe};

/// `text` drawn in `style` where `colour` allows it, else as it is.
pub(crate) fn painted(text: &str, style: anstyle::Style, colour: bool) -> String {
    if colour && style != anstyle::Style::new() {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_owned()
    }
}

/// Where clients look when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "ws://127.0.0.1:8000/acp";

/// Environment variable naming the server, like `--server`.
pub const SERVER_ENV: &str = "PUNIE_SERVER";

/// How long a client waits for the server to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long an SDK client waits, once done, for its goodbye to reach the server.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

/// How much a client's WebSocket reads at a time. The library zero-fills its
/// whole read buffer before every read, 128 KiB by default: a client that
/// reads JSON-RPC messages of a few hundred bytes would make all of it
/// resident for nothing. A bigger message still arrives whole (the buffer
/// grows to hold its frame), in more reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The server a client talks to, and how to get in.
#[derive(Debug, Clone)]
pub struct Target {
    /// The ACP WebSocket endpoint, e.g. `ws://127.0.0.1:8000/acp`.
    pub acp_url: String,
    /// The server's base HTTP URL, e.g. `http://127.0.0.1:8000`.
    pub http_url: String,
    /// What `server.json` says, when it records this server.
    pub record: Option<ServerRecord>,
    /// Where the token is kept: read by the commands that present it
    /// ([`Self::token`]), named in advice when the server refuses it.
    pub token_file: PathBuf,
}

impl Target {
    /// The server named by `--server`/`PUNIE_SERVER`, else the one recorded in
    /// `server.json`, else [`DEFAULT_SERVER`]. The token is not read here:
    /// `status` and `stop` need none, and a missing or unreadable one is no
    /// reason for them to fail.
    pub fn locate(server: Option<&ServerUrl>, paths: &Paths) -> anyhow::Result<Self> {
        let token_file = paths.token_file();
        let (url, record) = match server {
            Some(url) => {
                // Only `stop` needs the record then, and it reads it again to
                // say what is wrong with it: a damaged one is no reason to
                // refuse a server named outright.
                let record = ServerRecord::read(&paths.server_file())
                    .ok()
                    .flatten()
                    .filter(|record| {
                        ServerUrl::parse(&record.url)
                            .is_ok_and(|recorded| recorded.same_server(url))
                    });
                (url.clone(), record)
            }
            None => match ServerRecord::read(&paths.server_file())? {
                Some(record) => {
                    let url = ServerUrl::parse(&record.url).with_context(|| {
                        format!("{} names no usable server", paths.server_file().display())
                    })?;
                    (url, Some(record))
                }
                None => (ServerUrl::parse(DEFAULT_SERVER)?, None),
            },
        };
        Ok(Self {
            acp_url: url.acp,
            http_url: url.http,
            record,
            token_file,
        })
    }

    /// The token to present: `PUNIE_TOKEN`, else the token file's; or why
    /// there is none.
    pub fn token(&self) -> Result<AccessToken, NoToken> {
        AccessToken::for_client(&self.token_file)
    }

    /// Open an authenticated WebSocket to the ACP endpoint.
    pub async fn connect(&self) -> Result<Connected, ConnectError> {
        self.connect_with(CONNECT_TIMEOUT, Some(MAX_MESSAGE_BYTES))
            .await
    }

    /// [`Self::connect`], giving up after `timeout`, and taking messages up
    /// to `max_message_bytes` (any size if `None`).
    pub async fn connect_with(
        &self,
        timeout: Duration,
        max_message_bytes: Option<usize>,
    ) -> Result<Connected, ConnectError> {
        // Without a token the connection is still tried: whether a server
        // answers at all is the first thing to tell, and one that asks for
        // the token gets the reason there is none.
        let token = self.token();
        let mut request = self
            .acp_url
            .as_str()
            .into_client_request()
            .map_err(|error| {
                ConnectError::new(
                    self,
                    token.as_ref().err(),
                    format!("`{}` is not a WebSocket URL: {error}", self.acp_url),
                )
            })?;
        if let Ok(token) = &token {
            let value =
                HeaderValue::from_str(&format!("Bearer {}", token.as_str())).map_err(|_| {
                    ConnectError::new(
                        self,
                        None,
                        "the access token is not a valid header value".into(),
                    )
                })?;
            request.headers_mut().insert("Authorization", value);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(max_message_bytes)
            .max_frame_size(max_message_bytes);
        match tokio::time::timeout(timeout, handshake(request, config)).await {
            Ok(Ok(socket)) => Ok(socket),
            Ok(Err(error)) => Err(ConnectError {
                // It answered, but refused: a server is there.
                answered: matches!(error, tokio_tungstenite::tungstenite::Error::Http(_)),
                ..ConnectError::new(
                    self,
                    token.as_ref().err(),
                    describe_handshake_error(token.is_ok(), &error),
                )
            }),
            Err(_) => Err(ConnectError::new(
                self,
                token.as_ref().err(),
                format!("no answer within {timeout:?}"),
            )),
        }
    }

    /// Connect, hand the connection to `conversation` as an SDK channel, and
    /// once it is over give the close frame a moment to go out, so the server
    /// sees a clean goodbye rather than a dropped socket.
    pub async fn converse<T>(
        &self,
        conversation: impl AsyncFnOnce(Channel) -> T,
    ) -> Result<T, ConnectError> {
        let connected = self.connect().await?;
        let (channel, closed) = transport::sdk_channel(connected.socket, connected.server_limit);
        let outcome = conversation(channel).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed).await;
        Ok(outcome)
    }
}

/// The WebSocket handshake. A plain `ws://` connection is opened here rather
/// than by the TLS-capable connector, which would bring its TLS code into
/// every client's start: a client's memory is mostly the pages of the binary
/// it touches.
async fn handshake(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    config: WebSocketConfig,
) -> Result<Connected, tokio_tungstenite::tungstenite::Error> {
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        return tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map(Connected::new);
    }
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?;
    stream.set_nodelay(true)?;
    tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .map(Connected::new)
}

/// An open WebSocket to the server, and what the server said of it.
pub struct Connected {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The largest message the server takes, when it says
    /// ([`MESSAGE_LIMIT_HEADER`]).
    pub server_limit: Option<usize>,
}

impl Connected {
    fn new(
        (socket, response): (
            WebSocketStream<MaybeTlsStream<TcpStream>>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
    ) -> Self {
        let server_limit = response
            .headers()
            .get(MESSAGE_LIMIT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        Self {
            socket,
            server_limit,
        }
    }
}

/// Write `text` to stdout. A reader that has gone (`| head -1`) took what it
/// wanted, and is not an error; any other failure (a full disk) is.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot write to stdout: {error}"))
        }
        _ => Ok(()),
    }
}

/// `initialize` as Punie's clients send it: protocol v1, naming the client.
pub async fn initialize(
    cx: &ConnectionTo<Agent>,
    name: &str,
    capabilities: ClientCapabilities,
) -> Result<InitializeResponse, Error> {
    cx.send_request(
        InitializeRequest::new(ProtocolVersion::V1)
            .client_capabilities(capabilities)
            .client_info(Implementation::new(name, crate::VERSION)),
    )
    .block_task()
    .await
}

/// What an SDK client tells the person when a request fails: the server's own
/// message, or that the connection went away.
pub fn describe(error: &Error) -> String {
    if agent_client_protocol::is_incoming_transport_closed(error)
        || agent_client_protocol::is_connection_terminated(error)
    {
        "lost the connection to the Punie server before it answered; see `punie status`".to_owned()
    } else {
        error.message.clone()
    }
}

/// A server's URL, checked whole: every client that holds one can connect to
/// what it names without finding a mistake in it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// The ACP WebSocket endpoint, e.g. `ws://127.0.0.1:8000/acp`.
    acp: String,
    /// The base HTTP URL, e.g. `http://127.0.0.1:8000`.
    http: String,
    /// `wss://` or `https://`; `ws://` and `http://` reach the same server.
    secure: bool,
    /// Lowercase, an IPv6 address in brackets.
    host: String,
    port: u16,
}

impl ServerUrl {
    /// A server given by its ACP WebSocket URL or its base HTTP URL
    /// (`ws://`, `wss://`, `http://` or `https://`, a host, maybe a port and a
    /// path); the reason, naming the URL, when it cannot name a server.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").with_context(|| {
            format!("`{url}` is not a URL; expected something like {DEFAULT_SERVER}")
        })?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            other => anyhow::bail!(
                "`{url}`: unsupported scheme `{other}`; use ws://, wss://, http:// or https://"
            ),
        };
        // The URL parser would quietly drop a tab or a line break, and read a
        // space in the host as a foreign name it cannot encode.
        anyhow::ensure!(
            !url.contains(char::is_whitespace),
            "`{url}`: a URL has no spaces in it"
        );
        // Checked before the URL parser sees it: for these schemes it skips
        // extra slashes, and would read `ws:///acp` as the host `acp`.
        let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or_default();
        let host_and_port = authority.rsplit('@').next().unwrap_or_default();
        let host = match host_and_port.starts_with('[') {
            true => host_and_port,
            false => host_and_port.split(':').next().unwrap_or_default(),
        };
        anyhow::ensure!(!host.is_empty(), "`{url}` names no host");
        anyhow::ensure!(
            !host.starts_with('[') || host.contains(']'),
            "`{url}`: the IPv6 address has no closing `]`"
        );
        let parsed = url::Url::parse(url).map_err(|error| match error {
            url::ParseError::InvalidPort => port_error(url),
            url::ParseError::InvalidIpv6Address => anyhow::anyhow!(
                "`{url}`: invalid IPv6 address (one goes in brackets, like ws://[::1]:8000/acp)"
            ),
            url::ParseError::EmptyHost => anyhow::anyhow!("`{url}` names no host"),
            other => anyhow::anyhow!("`{url}`: {other}"),
        })?;
        let host = parsed
            .host_str()
            .with_context(|| format!("`{url}` names no host"))?
            .to_owned();
        if !parsed.username().is_empty() || parsed.password().is_some() {
            anyhow::bail!(
                "`{url}`: Punie's clients send no user name or password from the URL; the access token goes in {} or the token file",
                crate::auth::TOKEN_ENV
            );
        }
        anyhow::ensure!(
            parsed.fragment().is_none(),
            "`{url}`: a server's URL has no fragment (`#…`)"
        );
        // The parser drops a scheme's default port; ws:// and http:// share 80,
        // wss:// and https:// share 443, so the endpoints agree without it.
        let port = match (parsed.port(), secure) {
            (Some(0), _) => return Err(port_error(url)),
            (Some(port), _) => port,
            (None, false) => 80,
            (None, true) => 443,
        };
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let path = parsed.path().trim_end_matches('/');
        let path = if path.is_empty() { "/acp" } else { path };
        let query = parsed
            .query()
            .map(|query| format!("?{query}"))
            .unwrap_or_default();
        let (ws_scheme, http_scheme) = match secure {
            false => ("ws", "http"),
            true => ("wss", "https"),
        };
        let acp = format!("{ws_scheme}://{authority}{path}{query}");
        // What the WebSocket handshake will parse it as: whatever the URL
        // parser lets through that this refuses is refused now, not there.
        tokio_tungstenite::tungstenite::http::Uri::try_from(acp.as_str())
            .map_err(|error| anyhow::anyhow!("`{url}`: {error}"))?;
        Ok(Self {
            acp,
            http: format!("{http_scheme}://{authority}"),
            secure,
            host,
            port,
        })
    }

    /// Whether `other` names this server: the same host and port, however
    /// written (`ws://` or `http://`, with `/acp` or without, `localhost` or a
    /// loopback address).
    pub fn same_server(&self, other: &Self) -> bool {
        fn loopback(host: &str) -> bool {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
        }
        let (a, b) = (self.host.as_str(), other.host.as_str());
        // `localhost` may resolve to either loopback address; `stop` still checks
        // the pid the server reports before it signals anything.
        let same_host =
            a == b || ((a == "localhost" || b == "localhost") && loopback(a) && loopback(b));
        self.secure == other.secure && self.port == other.port && same_host
    }
}

fn port_error(url: &str) -> anyhow::Error {
    anyhow::anyhow!("`{url}`: the port must be a number from 1 to 65535")
}

/// Why a client could not reach the server, worded for the person at the keyboard.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Punie server at {url}: {reason}. {fix}")]
pub struct ConnectError {
    pub url: String,
    pub reason: String,
    pub fix: String,
    /// A server answered (and refused the connection), as opposed to none
    /// answering at all.
    pub answered: bool,
}

/// Whether the token presented came from the environment, not the file.
fn token_from_env() -> bool {
    std::env::var_os(crate::auth::TOKEN_ENV)
        .is_some_and(|value| !value.to_string_lossy().trim().is_empty())
}

/// What to do when the server wants a token and there is none to present,
/// for `why` there is none.
pub fn no_token_fix(why: &NoToken, token_file: &std::path::Path) -> String {
    let env = crate::auth::TOKEN_ENV;
    let file = token_file.display();
    match why {
        NoToken::Missing => format!(
            "There is no token to present: {file} does not exist. Start the server here with \
             `punie serve` (it writes one), or set {env} to the server's token"
        ),
        NoToken::Empty => format!(
            "There is no token to present: {file} is empty. `punie serve` puts a new token in \
             an empty token file when it starts (`punie stop`, then `punie serve`, for the \
             server here), or set {env} to the server's token"
        ),
        NoToken::Unreadable(error) => format!(
            "There is no token to present: {error}. Make it readable by this user, or set {env} \
             to the server's token"
        ),
        NoToken::InvalidEnv(error) => format!(
            "There is no token to present: {error}. Set it to the server's token, or unset it \
             to use the one in {file}"
        ),
    }
}

impl ConnectError {
    /// `missing` says why no token was presented, when none was.
    fn new(target: &Target, missing: Option<&NoToken>, reason: String) -> Self {
        let fix = if let (true, Some(why)) = (reason.contains("401"), missing) {
            no_token_fix(why, &target.token_file)
        } else if reason.contains("401") && token_from_env() {
            format!(
                "{} is set, and the server does not take that token: set it to the server's \
                 token, or unset it to use the one in {}; `punie status` shows which server is \
                 running",
                crate::auth::TOKEN_ENV,
                target.token_file.display()
            )
        } else if reason.contains("401") {
            format!(
                "Check the token: it is in {}, or set {}; `punie status` shows which server is running",
                target.token_file.display(),
                crate::auth::TOKEN_ENV
            )
        } else {
            "Start one with `punie serve`, or see `punie status`".to_owned()
        };
        Self {
            url: target.acp_url.clone(),
            reason,
            fix,
            answered: false,
        }
    }
}

fn describe_handshake_error(
    presented_token: bool,
    error: &tokio_tungstenite::tungstenite::Error,
) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) if response.status() == 401 => {
            if presented_token {
                "it refused the access token (401)".to_owned()
            } else {
                "it wants an access token and none was found (401)".to_owned()
            }
        }
        Error::Http(response) => format!("it answered HTTP {}", response.status()),
        Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "nothing is listening there (connection refused)".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(url: &str) -> anyhow::Result<(String, String)> {
        let url = ServerUrl::parse(url)?;
        Ok((url.acp, url.http))
    }

    /// Whether `a` and `b` parse, and name the same server.
    fn same_server(a: &str, b: &str) -> bool {
        match (ServerUrl::parse(a), ServerUrl::parse(b)) {
            (Ok(a), Ok(b)) => a.same_server(&b),
            _ => false,
        }
    }

    #[test]
    fn a_base_url_gets_the_acp_path() {
        assert_eq!(
            endpoints("http://127.0.0.1:8000").unwrap(),
            (
                "ws://127.0.0.1:8000/acp".to_owned(),
                "http://127.0.0.1:8000".to_owned()
            )
        );
        assert_eq!(
            endpoints("https://agent.example/").unwrap(),
            (
                "wss://agent.example/acp".to_owned(),
                "https://agent.example".to_owned()
            )
        );
    }

    #[test]
    fn an_acp_url_is_kept() {
        assert_eq!(
            endpoints("ws://localhost:9/ws").unwrap(),
            (
                "ws://localhost:9/ws".to_owned(),
                "http://localhost:9".to_owned()
            )
        );
    }

    #[test]
    fn one_server_written_in_different_ways_is_the_same_server() {
        for (a, b) in [
            ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/acp"),
            ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/"),
            ("HTTP://LOCALHOST:8000", "ws://127.0.0.1:8000"),
            ("http://[::1]:8000", "ws://localhost:8000/acp"),
            ("https://agent.example", "wss://agent.example:443/acp"),
        ] {
            assert!(same_server(a, b), "{a} is {b}");
        }
        for (a, b) in [
            ("http://127.0.0.1:8000", "ws://127.0.0.1:8001/acp"),
            ("http://127.0.0.1:8000", "wss://127.0.0.1:8000/acp"),
            ("http://127.0.0.1:8000", "http://192.168.1.2:8000"),
            ("http://127.0.0.1:8000", "not a url"),
        ] {
            assert!(!same_server(a, b), "{a} is not {b}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_an_example() {
        assert!(
            endpoints("localhost:8000")
                .unwrap_err()
                .to_string()
                .contains(DEFAULT_SERVER)
        );
        assert!(endpoints("ftp://x").is_err());
        assert!(endpoints("ws://").is_err());
    }

    #[test]
    fn a_url_that_names_no_server_says_what_is_wrong_with_it() {
        for (url, why) in [
            (
                "http://127.0.0.1:99999",
                "port must be a number from 1 to 65535",
            ),
            (
                "http://127.0.0.1:0",
                "port must be a number from 1 to 65535",
            ),
            ("ws://h:http/acp", "port must be a number from 1 to 65535"),
            ("http://[::1", "no closing `]`"),
            ("http://[nope]", "invalid IPv6 address"),
            ("ws://user:pw@/acp", "names no host"),
            ("ws:///acp", "names no host"),
            ("http://:8000", "names no host"),
            ("ws://user:pw@host/acp", "no user name or password"),
            ("http://a b", "no spaces"),
            ("ws://h/acp#top", "no fragment"),
        ] {
            let error = format!("{:#}", ServerUrl::parse(url).unwrap_err());
            assert!(error.contains(why), "{url}: {error}");
            assert!(error.contains(url), "{url} is named: {error}");
        }
    }

    #[test]
    fn a_scheme_s_default_port_is_the_same_server() {
        assert_eq!(
            endpoints("ws://[::1]:80/").unwrap(),
            ("ws://[::1]/acp".to_owned(), "http://[::1]".to_owned())
        );
        assert_eq!(
            endpoints("wss://h:80/acp?x=1").unwrap(),
            ("wss://h:80/acp?x=1".to_owned(), "https://h:80".to_owned())
        );
        assert!(same_server("ws://h:80/acp", "http://h"));
        assert!(!same_server("wss://h:80/acp", "https://h"));
    }
}
