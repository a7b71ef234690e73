//! The browser app: its files, built into the binary and served at `/`, and
//! how a browser signs in without ever seeing the access token.
//!
//! The app is a plain ACP client that runs in the page and talks to `/acp`
//! over a WebSocket like any other client; this module only serves it. It
//! owns the sign-in codes and browser cookies ([`sign_in`]), the HTTP answers
//! of the app's routes, and `punie open` ([`open`]). It must not know ACP or
//! sessions, check `Host` or `Origin` (that is [`crate::auth`]'s work, done
//! before any route here runs), or log a code or a cookie.

mod assets;
pub mod open;
pub mod sign_in;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use sign_in::{LINK_LIFETIME, LINK_PATH, SignIns};

/// What the app's pages may do: run only their own scripts and styles, talk
/// only to this server, and never be framed by another page. Markdown from
/// the model is sanitised as well; this is the second lock on that door.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The routes anyone who passes the `Host` and `Origin` checks may use: the
/// app, the sign-in link, and whether this browser is signed in.
pub fn routes(sign_ins: Arc<SignIns>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app/{*path}", get(asset))
        .route("/favicon.ico", get(icon))
        .route(&format!("{LINK_PATH}{{code}}"), get(sign_in))
        .route("/signed-in", get(signed_in))
        .route("/sign-out", post(sign_out))
        .with_state(sign_ins)
}

/// The route that makes a new sign-in link (`punie open` calls it); it must
/// sit behind the access token.
pub fn link_routes(sign_ins: Arc<SignIns>) -> Router {
    Router::new()
        .route("/sign-in", post(new_link))
        .with_state(sign_ins)
}

/// The sign-in link `punie serve` prints at start, for the server listening
/// at `address`.
pub fn startup_link(sign_ins: &SignIns, address: SocketAddr) -> anyhow::Result<String> {
    // A server on every address is reached through loopback from this machine.
    let host = match address.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let code = sign_ins.new_code()?;
    Ok(link(
        &SocketAddr::new(host, address.port()).to_string(),
        &code,
    ))
}

fn link(authority: &str, code: &str) -> String {
    format!("http://{authority}{LINK_PATH}{code}")
}

async fn index() -> Response {
    serve_asset(assets::INDEX)
}

async fn asset(Path(path): Path<String>) -> Response {
    serve_asset(&path)
}

async fn icon() -> Response {
    serve_asset("icon.svg")
}

fn serve_asset(path: &str) -> Response {
    let Some(asset) = assets::find(path) else {
        return (StatusCode::NOT_FOUND, "no such file in the app\n").into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // The files change only with the binary; a quick check each load
            // keeps a browser from running an old app against a new server.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response();
    protect(response.headers_mut());
    response
}

/// Headers every answer of the app carries.
fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A sign-in link must not travel on in a Referer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// `GET /sign-in/CODE`: use the code up, set the cookie, go to the app.
/// A `HEAD` (a chat app's link preview, a prefetch) uses nothing up.
async fn sign_in(
    State(sign_ins): State<Arc<SignIns>>,
    Path(code): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if method == Method::HEAD {
        return StatusCode::NO_CONTENT.into_response();
    }
    let cookie = match sign_ins.redeem(&code) {
        Ok(Some(cookie)) => cookie,
        // An old link opened again (from the terminal's scrollback, say) in
        // the browser it already signed in: that browser needs no new one.
        Ok(None) if sign_ins.signed_in(&headers) => return to_the_app(),
        Ok(None) => {
            tracing::warn!("refused a sign-in link that was used, expired or never made");
            return page(
                StatusCode::FORBIDDEN,
                "This sign-in link does not work",
                "It has been used already, or it is more than five minutes old. \
                 Run <code>punie open</code> for a new one.",
            );
        }
        Err(error) => {
            tracing::error!("{error}");
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot sign in",
                "The server could not make a sign-in cookie; see its log.",
            );
        }
    };
    let Some(set_cookie) = sign_ins.set_cookie(&cookie) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot sign in",
            "The server could not make a sign-in cookie; see its log.",
        );
    };
    tracing::info!("a browser signed in");
    let mut response = to_the_app();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie);
    response
}

fn to_the_app() -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/"))],
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    protect(headers);
    response
}

/// A small page that explains itself; `message` is trusted HTML.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Punie — {title}</title><link rel=\"stylesheet\" href=\"/app/style.css\">\
         <link rel=\"icon\" href=\"/app/icon.svg\"></head>\
         <body class=\"notice\"><main><h1>{title}</h1><p>{message}</p></main></body></html>\n"
    );
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    protect(response.headers_mut());
    response
}

/// `GET /signed-in`: whether this browser's cookie is good, so the page can
/// say what to do before its WebSocket is refused. Always 200: the answer is
/// in the body.
async fn signed_in(State(sign_ins): State<Arc<SignIns>>, headers: HeaderMap) -> Response {
    let mut response = Json(json!({ "signedIn": sign_ins.signed_in(&headers) })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /sign-out`: this browser's cookie stops working and is forgotten.
/// Connections it already opened stay until they close; the page closes its
/// own.
async fn sign_out(State(sign_ins): State<Arc<SignIns>>, headers: HeaderMap) -> Response {
    if sign_ins.sign_out(&headers) {
        tracing::info!("a browser signed out");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let answer = response.headers_mut();
    if let Some(cleared) = sign_ins.clear_cookie() {
        answer.insert(header::SET_COOKIE, cleared);
    }
    answer.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /sign-in`: a fresh sign-in link, named by the `Host` the client
/// used (checked already), so the cookie lands on the name the browser uses.
async fn new_link(State(sign_ins): State<Arc<SignIns>>, headers: HeaderMap) -> Response {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "no Host header\n").into_response();
    };
    match sign_ins.new_code() {
        Ok(code) => {
            let mut response = Json(json!({
                "url": link(host.trim(), &code),
                "expiresInSeconds": LINK_LIFETIME.as_secs(),
            }))
            .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::error!("{error}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_address_prints_a_loopback_link() {
        let sign_ins = SignIns::new(9);
        let link = startup_link(&sign_ins, "0.0.0.0:9".parse().unwrap()).unwrap();
        assert!(link.starts_with("http://127.0.0.1:9/sign-in/"), "{link}");
        let link = startup_link(&sign_ins, "[::]:9".parse().unwrap()).unwrap();
        assert!(link.starts_with("http://[::1]:9/sign-in/"), "{link}");
        let link = startup_link(&sign_ins, "192.168.1.5:9".parse().unwrap()).unwrap();
        assert!(link.starts_with("http://192.168.1.5:9/sign-in/"), "{link}");
    }
}
