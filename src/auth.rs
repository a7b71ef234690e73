//! Who may talk to the server: the access token, and the checks every HTTP
//! request passes before any work is done for it.
//!
//! A browser does not apply CORS to `ws://`, so binding to loopback protects
//! nothing by itself: any web page could drive an agent that runs commands.
//! Three checks stop that, in this order: the `Host` header must name this
//! server (defeats DNS rebinding), a request carrying `Origin` comes from a web
//! page and is refused unless that page is the server's own app, and the ACP
//! endpoints need `Authorization: Bearer <token>`, compared in constant time —
//! or, from the app's own pages only, the cookie of a signed-in browser
//! ([`crate::web::sign_in`] keeps those). This module never logs or echoes a
//! token; it does not know about ACP.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::web::SignIns;

/// Environment variable that replaces the stored token.
pub const TOKEN_ENV: &str = "PUNIE_TOKEN";

/// Random bytes in a generated token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// Tokens shorter than this are accepted by the server with a warning.
const WEAK_TOKEN_CHARS: usize = 32;

/// Longest `Origin` quoted in the log; the header is the requester's text.
const MAX_LOGGED_ORIGIN_CHARS: usize = 100;

/// The secret a client presents as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct AccessToken(Arc<str>);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl AccessToken {
    /// The server's token: `PUNIE_TOKEN` if set, else the one stored in
    /// `token_file`, else a fresh one stored there with mode 0600. An empty
    /// token file holds nothing to keep: a fresh token takes its place.
    pub fn load_or_create(token_file: &Path) -> anyhow::Result<Self> {
        if let Some(token) = Self::from_env()? {
            token.warn_if_weak(TOKEN_ENV);
            return Ok(token);
        }
        match Self::read_file(token_file)? {
            Stored::Token(token) => {
                token.warn_if_weak(&format!("the token in {}", token_file.display()));
                return Ok(token);
            }
            Stored::Empty => return Self::replace_empty(token_file),
            Stored::Missing => {}
        }
        let created = Self::generate()?;
        match create_secret_file(token_file, created.as_str()) {
            Ok(()) => {
                tracing::info!(path = %token_file.display(), "created a new access token");
                Ok(created)
            }
            // Another server created it first: use theirs.
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                match Self::read_file(token_file)? {
                    Stored::Token(token) => Ok(token),
                    Stored::Empty => Self::replace_empty(token_file),
                    Stored::Missing => anyhow::bail!(
                        "the token file {} appeared and was removed at once; start the server again",
                        token_file.display()
                    ),
                }
            }
            Err(error) => Err(error)
                .with_context(|| format!("cannot write the token file {}", token_file.display())),
        }
    }

    /// Put a fresh token in place of the empty file at `token_file`. Under a
    /// lock on that file, so that servers starting at once all use the one
    /// token that ends up in it.
    fn replace_empty(token_file: &Path) -> anyhow::Result<Self> {
        let cannot = || {
            format!(
                "cannot replace the empty token file {}",
                token_file.display()
            )
        };
        let empty = fs::File::open(token_file).with_context(cannot)?;
        rustix::fs::flock(&empty, rustix::fs::FlockOperation::LockExclusive)
            .map_err(std::io::Error::from)
            .with_context(cannot)?;
        // Another server may have put its token there while this one waited.
        if let Stored::Token(token) = Self::read_file(token_file)? {
            return Ok(token);
        }
        let created = Self::generate()?;
        replace_secret_file(token_file, created.as_str()).with_context(cannot)?;
        tracing::warn!(path = %token_file.display(), "the token file was empty; put a new access token in it");
        Ok(created)
    }

    /// The token a client should send: `PUNIE_TOKEN` if set, else the stored
    /// one; or why there is none, for the person to put right.
    pub fn for_client(token_file: &Path) -> Result<Self, NoToken> {
        match Self::from_env() {
            Ok(Some(token)) => return Ok(token),
            Ok(None) => {}
            Err(error) => return Err(NoToken::InvalidEnv(format!("{error:#}"))),
        }
        match Self::read_file(token_file) {
            Ok(Stored::Token(token)) => Ok(token),
            Ok(Stored::Empty) => Err(NoToken::Empty),
            Ok(Stored::Missing) => Err(NoToken::Missing),
            Err(error) => Err(NoToken::Unreadable(format!("{error:#}"))),
        }
    }

    /// The token's text, for a client to put in its `Authorization` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// `PUNIE_TOKEN`. Set empty (by a launcher or an IDE setting every
    /// variable it knows) it names no token, as unset does, like an empty
    /// `PUNIE_SERVER`.
    fn from_env() -> anyhow::Result<Option<Self>> {
        let Some(value) = std::env::var_os(TOKEN_ENV) else {
            return Ok(None);
        };
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{TOKEN_ENV} is not valid UTF-8"))?;
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            value.chars().all(|c| c.is_ascii_graphic()),
            "{TOKEN_ENV} may only contain printable ASCII characters without spaces"
        );
        Ok(Some(Self(value.into())))
    }

    /// Tell the person running the server that `source` is easy to guess. A
    /// client cannot choose a better one: the server's token is the one it
    /// must present.
    fn warn_if_weak(&self, source: &str) {
        if self.0.len() < WEAK_TOKEN_CHARS {
            tracing::warn!(
                "{source} is shorter than {WEAK_TOKEN_CHARS} characters; a longer random token is safer"
            );
        }
    }

    fn read_file(token_file: &Path) -> anyhow::Result<Stored> {
        let text = match fs::read_to_string(token_file) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Stored::Missing),
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("cannot read the token file {}", token_file.display())
                });
            }
        };
        tighten_permissions(token_file)?;
        let token = text.trim();
        if token.is_empty() {
            return Ok(Stored::Empty);
        }
        Ok(Stored::Token(Self(token.into())))
    }

    fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|error| anyhow::anyhow!("no randomness for a token: {error}"))?;
        Ok(Self(hex::encode(bytes).into()))
    }
}

/// What the token file holds.
enum Stored {
    Token(AccessToken),
    /// Nothing but white space.
    Empty,
    Missing,
}

/// Why a client has no token to present. Only a server that asks for one
/// makes that a problem: `punie status` and `punie stop` need none.
#[derive(Debug, Clone)]
pub enum NoToken {
    /// Neither `PUNIE_TOKEN` nor the token file.
    Missing,
    /// The token file holds nothing.
    Empty,
    /// The token file cannot be read: why.
    Unreadable(String),
    /// `PUNIE_TOKEN` is set to something that is no token: why.
    InvalidEnv(String),
}

/// Make sure only the owner can read the token file, or list the directory
/// it is in.
fn tighten_permissions(path: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the token file was readable by others; setting it to 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    // Best effort: a client reading the token from a directory it may not
    // change (a read-only mount) still works, as it did.
    if let Some(dir) = path.parent()
        && let Err(error) = make_dir_private(dir)
    {
        tracing::warn!(path = %dir.display(), "cannot make the state directory private: {error}");
    }
    Ok(())
}

/// Make the directory `dir`, which Punie alone keeps its state in, the
/// owner's only: one made before Punie was there may be open to others.
fn make_dir_private(dir: &Path) -> std::io::Result<()> {
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{mode:o}"), "the state directory was open to others; setting it to 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Create `path` holding `contents`, mode 0600, all at once; fails with
/// `AlreadyExists` rather than replacing an existing file.
fn create_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = token_dir(path)?;
    create_private_dir(dir)?;
    make_dir_private(dir)?;
    secret_file_beside(path, contents)?
        .persist_noclobber(path)
        .map_err(|error| error.error)?;
    Ok(())
}

/// Replace `path` with a file holding `contents`, mode 0600, all at once: a
/// reader sees the old file or the new one, never part of the token.
fn replace_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    secret_file_beside(path, contents)?
        .persist(path)
        .map_err(|error| error.error)?;
    Ok(())
}

/// A new file of mode 0600 in `path`'s directory holding `contents`, on
/// the disk, to take `path`'s name.
fn secret_file_beside(path: &Path, contents: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix(".token")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(token_dir(path)?)?;
    writeln!(file, "{contents}")?;
    file.as_file().sync_all()?;
    Ok(file)
}

fn token_dir(path: &Path) -> std::io::Result<&Path> {
    path.parent()
        .ok_or_else(|| std::io::Error::other("the token file has no parent directory"))
}

/// Create a directory (and its parents) readable only by the owner.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// What the request checks compare against; shared by all requests.
#[derive(Debug)]
pub struct RequestGuard {
    token: AccessToken,
    allowed_hosts: Vec<String>,
    /// Names given with `--allowed-host`: a reverse proxy's, which may serve
    /// the app over TLS.
    proxied_hosts: Vec<String>,
    /// The port, when the server listens on every address (`0.0.0.0`, `::`):
    /// then any IP address names it. DNS rebinding needs a name, never an
    /// address, so accepting addresses opens nothing to it.
    any_address_port: Option<u16>,
    browsers: Arc<SignIns>,
}

impl RequestGuard {
    /// Checks for a server bound to `host:port`, also reached by the names
    /// in `proxied_hosts`, whose signed-in browsers are in `browsers`.
    pub fn new(
        token: AccessToken,
        (host, port): (IpAddr, u16),
        proxied_hosts: &[String],
        browsers: Arc<SignIns>,
    ) -> Self {
        Self {
            token,
            allowed_hosts: allowed_hosts(host, port),
            proxied_hosts: proxied_hosts
                .iter()
                .map(|name| name.trim().to_ascii_lowercase())
                .collect(),
            any_address_port: host.is_unspecified().then_some(port),
            browsers,
        }
    }

    /// The `Host` header, lowercased, if it names this server.
    fn allowed_host(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let host = host.trim().to_ascii_lowercase();
        let names_this_server = self.allowed_hosts.contains(&host)
            || self.proxied_hosts.contains(&host)
            || self.any_address_port.is_some_and(|port| {
                host.parse::<SocketAddr>()
                    .is_ok_and(|address| address.port() == port)
            });
        names_this_server.then_some(host)
    }

    /// Whether the request's `Origin` is this server's own: a page it served,
    /// under the name the request uses — over TLS too when that name is a
    /// proxy's. Pages on another port of the same host are other origins,
    /// even though browsers send them its cookies.
    fn own_origin(&self, headers: &HeaderMap) -> bool {
        let (Some(host), Some(origin)) = (self.allowed_host(headers), headers.get(header::ORIGIN))
        else {
            return false;
        };
        let origin = origin.as_bytes();
        origin.eq_ignore_ascii_case(format!("http://{host}").as_bytes())
            || (self.proxied_hosts.contains(&host)
                && origin.eq_ignore_ascii_case(format!("https://{host}").as_bytes()))
    }

    fn bearer_matches(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or("no access token: send `Authorization: Bearer <token>`")?;
        let presented = bearer_token(value).ok_or(
            "the Authorization header is not `Bearer <token>`: send `Authorization: Bearer <token>`",
        )?;
        if self.token.matches(presented) {
            Ok(())
        } else {
            Err("wrong access token")
        }
    }
}

/// The `Host` values that name a server bound to `host:port`.
fn allowed_hosts(host: IpAddr, port: u16) -> Vec<String> {
    let bound = match host {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "[::1]".to_owned(),
    ];
    if !names.contains(&bound) {
        names.push(bound);
    }
    names
        .into_iter()
        .map(|name| format!("{name}:{port}"))
        .collect()
}

fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Refuse requests that do not name this server in `Host`, or that come from
/// a web page (`Origin` present) other than the server's own app. Applies to
/// every route.
pub async fn check_host_and_origin(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(why) = ambiguous_host_or_origin(&request) {
        tracing::warn!("refused a request: {why}");
        return refusal(StatusCode::BAD_REQUEST, why);
    }
    if guard.allowed_host(request.headers()).is_none() {
        tracing::warn!("refused a request whose Host header does not name this server");
        return refusal(
            StatusCode::FORBIDDEN,
            "the Host header does not name this server; connect to localhost or 127.0.0.1, or start the server with --allowed-host NAME for a name of its own",
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !guard.own_origin(request.headers())
    {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let origin: String = origin.chars().take(MAX_LOGGED_ORIGIN_CHARS).collect();
        tracing::warn!(%origin, "refused a request from another web page");
        return refusal(
            StatusCode::FORBIDDEN,
            "requests from web pages other than Punie's own are refused (the request carries another Origin)",
        );
    }
    next.run(request).await
}

/// What makes the server a request is for, or the page it comes from,
/// ambiguous: two `Host` or `Origin` headers, or a request line naming a
/// host (`GET http://name/…`) other than its `Host`. Whichever one a check
/// read, another part of the stack might act on the other.
fn ambiguous_host_or_origin(request: &Request) -> Option<&'static str> {
    let headers = request.headers();
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some("the request has more than one Host header");
    }
    if headers.get_all(header::ORIGIN).iter().nth(1).is_some() {
        return Some("the request has more than one Origin header");
    }
    let named = request.uri().authority()?;
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    if host.is_some_and(|host| host.eq_ignore_ascii_case(named.as_str().as_bytes())) {
        return None;
    }
    Some("the request line names another host than the Host header")
}

/// Refuse requests without this server's access token. Applies to the routes
/// only a program holding the token may use.
pub async fn require_token(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.bearer_matches(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => token_refusal(reason),
    }
}

/// Let in a client of the ACP endpoints: a program with the access token, or
/// the app's own page in a signed-in browser. A page never gets in by the
/// token (it cannot know it), nor a program by a cookie without the page's
/// Origin.
pub async fn require_client(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if !headers.contains_key(header::ORIGIN) {
        return require_token(State(guard), request, next).await;
    }
    if guard.own_origin(headers) && guard.browsers.signed_in(headers) {
        return next.run(request).await;
    }
    tracing::warn!("refused a page of this server's app that is not signed in");
    refusal(
        StatusCode::FORBIDDEN,
        "this browser is not signed in: open the sign-in link `punie serve` printed, or run `punie open`",
    )
}

fn token_refusal(reason: &str) -> Response {
    tracing::warn!(reason, "refused a request without the right access token");
    let mut response = refusal(
        StatusCode::UNAUTHORIZED,
        &format!("{reason}. The token is in $XDG_STATE_HOME/punie/token (or set {TOKEN_ENV})."),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"punie\""),
    );
    response
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_loopback_answers_to_its_loopback_names_with_the_port() {
        let hosts = allowed_hosts("127.0.0.1".parse().unwrap(), 8000);
        assert_eq!(hosts, ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"]);
    }

    #[test]
    fn a_server_on_another_address_also_answers_to_that_address() {
        let hosts = allowed_hosts("192.168.1.5".parse().unwrap(), 9);
        assert!(hosts.contains(&"192.168.1.5:9".to_owned()));
        let hosts = allowed_hosts("fe80::1".parse().unwrap(), 9);
        assert!(hosts.contains(&"[fe80::1]:9".to_owned()));
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_trimmed() {
        let value = HeaderValue::from_static("bearer  abc ");
        assert_eq!(bearer_token(&value), Some(&b"abc"[..]));
        assert_eq!(bearer_token(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer_token(&HeaderValue::from_static("Bearer ")), None);
    }

    #[test]
    fn tokens_match_only_themselves() {
        let token = AccessToken("secret-token".into());
        assert!(token.matches(b"secret-token"));
        assert!(!token.matches(b"secret-tokem"));
        assert!(!token.matches(b"secret"));
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
    }

    #[test]
    fn only_a_page_of_this_server_under_the_name_the_request_uses_is_its_own_origin() {
        let guard = RequestGuard::new(
            AccessToken("t".into()),
            ("127.0.0.1".parse().unwrap(), 8000),
            &["Punie.Example".to_owned()],
            Arc::new(SignIns::new(8000)),
        );
        let own = |host: &str, origin: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            guard.own_origin(&headers)
        };
        assert!(own("127.0.0.1:8000", "http://127.0.0.1:8000"));
        assert!(own("LOCALHOST:8000", "http://localhost:8000"));
        assert!(!own("127.0.0.1:8000", "http://localhost:8000"));
        assert!(!own("127.0.0.1:8000", "http://127.0.0.1:9000"));
        assert!(!own("127.0.0.1:8000", "https://127.0.0.1:8000"));
        assert!(!own("127.0.0.1:8000", "null"));
        assert!(!own("evil.example:8000", "http://evil.example:8000"));
        // A proxy's name, served over TLS or not.
        assert!(own("punie.example", "https://punie.example"));
        assert!(own("punie.example", "http://punie.example"));
        assert!(!own("punie.example", "https://evil.example"));
        // An address is a name only when the server listens on every address.
        assert!(!own("10.0.0.7:8000", "http://10.0.0.7:8000"));
    }

    #[test]
    fn a_server_on_every_address_answers_to_any_address_with_its_port() {
        let guard = RequestGuard::new(
            AccessToken("t".into()),
            ("0.0.0.0".parse().unwrap(), 8000),
            &[],
            Arc::new(SignIns::new(8000)),
        );
        let allowed = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            guard.allowed_host(&headers).is_some()
        };
        assert!(allowed("10.0.0.7:8000"));
        assert!(allowed("[fe80::1]:8000"));
        assert!(allowed("localhost:8000"));
        assert!(!allowed("10.0.0.7:9000"));
        assert!(!allowed("10.0.0.7"));
        assert!(!allowed("evil.example:8000"));
    }

    #[test]
    fn a_generated_token_has_256_bits() {
        let token = AccessToken::generate().unwrap();
        assert_eq!(token.as_str().len(), 64);
        assert!(token.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
