//! Signing a browser in without the access token: one-time sign-in codes and
//! the cookies they are exchanged for, both held only in this process's memory.
//!
//! A code is 256 random bits, valid once and for [`LINK_LIFETIME`]; the link
//! that carries it is printed by `punie serve` or handed to `punie open`. Using
//! it sets a cookie holding another 256 random bits, which is what the page's
//! WebSocket presents. Both are compared in constant time and die with the
//! server. This module never logs a code or a cookie, and never sees the
//! access token.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq as _;

/// How long a sign-in link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Where a sign-in link points; the code follows.
pub const LINK_PATH: &str = "/sign-in/";

/// Random bytes in a code or a cookie: 256 bits.
const SECRET_BYTES: usize = 32;

/// Links not yet used that the server remembers; making one more forgets the
/// oldest, so asking for links over and over costs bounded memory.
const MAX_PENDING_CODES: usize = 32;

/// Signed-in browsers the server remembers; one more signs the oldest out.
const MAX_COOKIES: usize = 64;

/// A code or cookie value: hex text, never printed by `Debug`.
struct Secret(String);

impl Secret {
    fn generate() -> Result<Self, NoRandomness> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| NoRandomness(error.to_string()))?;
        Ok(Self(hex::encode(bytes)))
    }

    /// Whether `presented` is this secret, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The system gave no random bytes; nothing secret can be made.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a sign-in secret: {0}")]
pub struct NoRandomness(String);

/// The sign-in codes and browser cookies of one server.
#[derive(Debug)]
pub struct SignIns {
    cookie_name: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Unused codes, oldest first, with when each stops working.
    codes: VecDeque<(Secret, Instant)>,
    /// Cookies of signed-in browsers, oldest first.
    cookies: VecDeque<Secret>,
}

impl SignIns {
    /// Sign-ins for the server on `port`. Browsers keep cookies per host, not
    /// per port, so the port is in the cookie's name: two servers on one
    /// machine do not sign each other's browsers out.
    pub fn new(port: u16) -> Self {
        Self {
            cookie_name: format!("punie_{port}"),
            state: Mutex::default(),
        }
    }

    /// A new one-time code, valid for [`LINK_LIFETIME`].
    pub fn new_code(&self) -> Result<String, NoRandomness> {
        let code = Secret::generate()?;
        let text = code.0.clone();
        let mut state = self.lock();
        state.forget_expired_codes();
        if state.codes.len() >= MAX_PENDING_CODES {
            state.codes.pop_front();
        }
        state
            .codes
            .push_back((code, Instant::now() + LINK_LIFETIME));
        Ok(text)
    }

    /// Use `code`: if the server made it and it is neither used nor expired, it is
    /// used up and a new cookie value is returned.
    pub fn redeem(&self, code: &str) -> Result<Option<String>, NoRandomness> {
        let mut state = self.lock();
        state.forget_expired_codes();
        // Every pending code is compared, so the time taken says nothing
        // about which one (if any) matched.
        let mut found = None;
        for (index, (pending, _)) in state.codes.iter().enumerate() {
            if pending.matches(code.as_bytes()) {
                found = Some(index);
            }
        }
        let Some(index) = found else {
            return Ok(None);
        };
        state.codes.remove(index);
        let cookie = Secret::generate()?;
        let value = cookie.0.clone();
        if state.cookies.len() >= MAX_COOKIES {
            state.cookies.pop_front();
        }
        state.cookies.push_back(cookie);
        Ok(Some(value))
    }

    /// Whether the request carries the cookie of a signed-in browser.
    pub fn signed_in(&self, headers: &HeaderMap) -> bool {
        let presented: Vec<&[u8]> = cookie_values(headers, &self.cookie_name).collect();
        if presented.is_empty() {
            return false;
        }
        let state = self.lock();
        let mut matched = false;
        for value in presented {
            for cookie in &state.cookies {
                matched |= cookie.matches(value);
            }
        }
        matched
    }

    /// Sign the browser out: the cookies it presents stop working, here and
    /// in any copy of them. False if it was not signed in.
    pub fn sign_out(&self, headers: &HeaderMap) -> bool {
        let presented: Vec<&[u8]> = cookie_values(headers, &self.cookie_name).collect();
        let mut state = self.lock();
        let before = state.cookies.len();
        state
            .cookies
            .retain(|cookie| !presented.iter().any(|value| cookie.matches(value)));
        state.cookies.len() < before
    }

    /// The `Set-Cookie` header that makes the browser forget its cookie.
    pub fn clear_cookie(&self) -> Option<HeaderValue> {
        self.cookie_header("", "; Max-Age=0")
    }

    /// The `Set-Cookie` header that hands `value` to the browser: never
    /// readable by scripts, never sent along with another site's requests.
    pub fn set_cookie(&self, value: &str) -> Option<HeaderValue> {
        self.cookie_header(value, "")
    }

    fn cookie_header(&self, value: &str, lifetime: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/{lifetime}; HttpOnly; SameSite=Strict",
            self.cookie_name
        ))
        .ok()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn forget_expired_codes(&mut self) {
        let now = Instant::now();
        self.codes.retain(|(_, expires)| *expires > now);
    }
}

/// The values of every cookie called `name` in the request's `Cookie` headers.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b';'))
        .filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let equals = pair.iter().position(|byte| *byte == b'=')?;
            let (key, value) = pair.split_at(equals);
            (key.trim_ascii() == name.as_bytes()).then(|| value[1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_code_works_once() {
        let sign_ins = SignIns::new(8000);
        let code = sign_ins.new_code().unwrap();
        assert_eq!(code.len(), 64, "256 bits, hex-encoded");
        let cookie = sign_ins.redeem(&code).unwrap().expect("the code works");
        assert_eq!(cookie.len(), 64);
        assert_ne!(cookie, code);
        assert!(sign_ins.redeem(&code).unwrap().is_none(), "but only once");
    }

    #[test]
    fn unknown_codes_and_prefixes_do_not_work() {
        let sign_ins = SignIns::new(8000);
        let code = sign_ins.new_code().unwrap();
        assert!(sign_ins.redeem(&code[..32]).unwrap().is_none());
        assert!(sign_ins.redeem("").unwrap().is_none());
        assert!(sign_ins.redeem(&format!("{code}0")).unwrap().is_none());
        assert!(sign_ins.redeem(&code).unwrap().is_some(), "still unused");
    }

    #[test]
    fn an_expired_code_does_not_work() {
        let sign_ins = SignIns::new(8000);
        let code = sign_ins.new_code().unwrap();
        sign_ins.lock().codes[0].1 = Instant::now();
        assert!(sign_ins.redeem(&code).unwrap().is_none());
    }

    #[test]
    fn the_oldest_unused_code_is_forgotten_first() {
        let sign_ins = SignIns::new(8000);
        let first = sign_ins.new_code().unwrap();
        let codes: Vec<String> = (0..MAX_PENDING_CODES)
            .map(|_| sign_ins.new_code().unwrap())
            .collect();
        assert!(sign_ins.redeem(&first).unwrap().is_none());
        assert!(sign_ins.redeem(&codes[0]).unwrap().is_some());
    }

    #[test]
    fn the_cookie_signs_in_under_this_servers_name_only() {
        let sign_ins = SignIns::new(8123);
        let code = sign_ins.new_code().unwrap();
        let cookie = sign_ins.redeem(&code).unwrap().unwrap();
        assert!(sign_ins.signed_in(&cookie_headers(&format!("punie_8123={cookie}"))));
        assert!(sign_ins.signed_in(&cookie_headers(&format!(
            "other=1; punie_8123={cookie} ; x=y"
        ))));
        assert!(!sign_ins.signed_in(&cookie_headers(&format!("punie_8000={cookie}"))));
        assert!(!sign_ins.signed_in(&cookie_headers(&format!("punie_8123={code}"))));
        assert!(!sign_ins.signed_in(&cookie_headers("punie_8123=")));
        assert!(!sign_ins.signed_in(&HeaderMap::new()));
        let set = sign_ins.set_cookie(&cookie).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with(&format!("punie_8123={cookie};")), "{set}");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    }

    #[test]
    fn a_signed_out_cookie_stops_working() {
        let sign_ins = SignIns::new(8000);
        let browser = |sign_ins: &SignIns| {
            let code = sign_ins.new_code().unwrap();
            let value = sign_ins.redeem(&code).unwrap().unwrap();
            cookie_headers(&format!("punie_8000={value}"))
        };
        let (leaving, staying) = (browser(&sign_ins), browser(&sign_ins));
        assert!(sign_ins.signed_in(&leaving));
        assert!(sign_ins.sign_out(&leaving));
        assert!(
            !sign_ins.signed_in(&leaving),
            "a copy of the cookie is refused too"
        );
        assert!(!sign_ins.sign_out(&leaving), "only once");
        assert!(
            sign_ins.signed_in(&staying),
            "another browser stays signed in"
        );
        let cleared = sign_ins.clear_cookie().unwrap();
        let cleared = cleared.to_str().unwrap();
        assert!(cleared.starts_with("punie_8000=;"), "{cleared}");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let sign_ins = SignIns::new(1);
        let code = sign_ins.new_code().unwrap();
        assert!(!format!("{sign_ins:?}").contains(&code));
    }
}
