//! What the network providers share: one HTTP client per model, the POST that
//! opens a server-sent event stream, retries with backoff until the answer
//! has begun (its first token), the idle timeout while it runs, and errors
//! worded for the person who has to fix them.
//!
//! This module knows HTTP and SSE, never a provider's JSON: each provider
//! ([`super::openai`], [`super::anthropic`]) builds its request body and turns
//! the events it gets back into [`ModelEvent`]s through a [`Decoder`]. It must
//! not read the environment; `from_spec` does that.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER,
};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sse_stream::{Sse, SseByteStream};

use super::{ModelError, ModelEvent, ModelRequest, ModelSettings, ModelStream};

/// How long connecting to a model server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between attempts. A `Retry-After` asking for more fails
/// the call at once, saying so, rather than waiting that long in silence.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The shortest wait before a retry that the person is told of, asked for
/// by the server or not: a shorter one passes before anyone wonders why
/// nothing happens.
const WAIT_TOLD_FROM: Duration = Duration::from_secs(1);

/// How much of an error body that is not JSON goes into an error message.
const ERROR_BODY_LIMIT: usize = 300;

/// How much of a model server's own error message goes into an error: enough
/// for any real one, while a runaway body cannot flood the terminal.
const MESSAGE_LIMIT: usize = 1000;

/// The most redirects one call follows.
const MAX_REDIRECTS: usize = 10;

/// Who is at the other end of the connection, for wording errors.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// How a person calls it: `OpenAI`, `Ollama`, `the model server`.
    pub name: &'static str,
    /// Where it is, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: Url,
    /// The model asked for, for a 404's hint.
    pub model: String,
    /// For a server on the person's own machine: the question that helps when
    /// nothing answers, e.g. `is Ollama running?`. `None` for cloud APIs.
    pub not_running_hint: Option<&'static str>,
    /// The environment variable holding the API key, for a 401's hint.
    pub key_variable: Option<&'static str>,
    /// Extra advice after a 404, e.g. how to download the model.
    pub missing_model_hint: Option<String>,
    /// Where the person sets the base URL, for the hint after a 404 or a
    /// redirect: an environment variable, or the model spec. `None` when it
    /// is fixed.
    pub base_url_source: Option<&'static str>,
}

/// One POST that answers with an event stream.
pub(crate) struct Call {
    pub url: Url,
    pub headers: HeaderMap,
    /// The JSON request body, serialised once and sent on every attempt.
    pub body: Arc<str>,
    /// Makes the body with every picture left out, for a server that
    /// refuses pictures; `None` when the conversation has none.
    without_pictures: Option<Box<dyn FnOnce() -> Arc<str> + Send + Sync>>,
}

impl Call {
    /// The call for `request`, whose body `body` makes, with pictures or
    /// without them.
    pub fn new(
        url: Url,
        headers: HeaderMap,
        request: ModelRequest,
        body: impl Fn(&ModelRequest, bool) -> Value + Send + Sync + 'static,
    ) -> Self {
        let pictures = !request.without_pictures;
        let with_pictures = Arc::from(body(&request, pictures).to_string());
        let without_pictures = (pictures && request.has_pictures()).then(|| {
            Box::new(move || Arc::from(body(&request, false).to_string()))
                as Box<dyn FnOnce() -> Arc<str> + Send + Sync>
        });
        Self {
            url,
            headers,
            body: with_pictures,
            without_pictures,
        }
    }
}

/// The client every call of one model goes through.
pub(crate) fn client_for(base_url: &Url) -> Result<reqwest::Client, ModelError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirect_policy());
    // A proxy configured for the internet should not swallow requests to a
    // model server on this machine.
    if is_loopback(base_url) {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|error| ModelError::Setup(format!("cannot set up an HTTP client: {error}")))
}

/// Which redirects a call follows: only a 307 or 308 (which keep the POST and
/// its body) to the same origin. A 301, 302 or 303 would turn the POST into a
/// GET the server cannot answer; another origin would be sent the request
/// without its `Authorization` (reqwest drops it there) but with Anthropic's
/// `x-api-key` (which reqwest does not know to drop). Either is answered with
/// the redirect itself, which [`redirect_error`] words.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_the_post = matches!(
            attempt.status(),
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
        );
        let same_origin = attempt
            .previous()
            .last()
            .is_some_and(|previous| previous.origin() == attempt.url().origin());
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if keeps_the_post && same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `base` with `path` appended to its path: `http://h/v1` + `chat/completions`.
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    url.set_path(&joined);
    url
}

/// Parse a base URL from a spec or the environment; `what` names its source.
pub(crate) fn parse_base_url(text: &str, what: &str) -> Result<Url, ModelError> {
    let url = Url::parse(text.trim())
        .map_err(|error| ModelError::Setup(format!("{what} `{text}` is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ModelError::Setup(format!(
            "{what} `{text}` must be an http:// or https:// URL"
        )));
    }
    Ok(url)
}

/// One server-sent event: its type (`message` unless it names one) and its
/// data, its `data:` lines joined with line feeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Event {
    pub event: String,
    pub data: String,
}

impl Event {
    /// The event `block` is, if it has data: a block of only `event:`,
    /// `id:` or `retry:` lines is none, as an `EventSource` sees it.
    fn from_block(block: Sse) -> Option<Self> {
        let data = block.data?;
        let event = block
            .event
            .filter(|event| !event.is_empty())
            .unwrap_or_else(|| "message".to_owned());
        Some(Self { event, data })
    }
}

/// Turns server-sent events into model events, one provider's wire format.
/// A call that is tried again gets a new decoder.
pub(crate) trait Decoder: Send + 'static {
    /// Push the model events `event` carries onto `out`; an `Err` ends the
    /// attempt (events already pushed are still delivered first).
    fn decode(&mut self, event: &Event, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError>;

    /// The stream ended without a [`ModelEvent::Stop`]: push what is still
    /// pending and the stop, or say why the reply is incomplete.
    fn finish(&mut self, out: &mut Vec<ModelEvent>) -> Result<(), DecodeError>;

    /// Whether the model has said why it stopped (a finish or stop
    /// reason): the reply is whole, and only usage and the stream's end
    /// may follow.
    fn finished(&self) -> bool;

    /// Whether the answer itself has begun: a piece of text, of a thought or
    /// of a tool call has arrived. Until then (a role, `message_start`,
    /// `ping`, usage) a failed attempt can be made again without the person
    /// seeing anything twice.
    fn started(&self) -> bool;
}

/// Why decoding ended an attempt.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub error: ModelError,
    /// The server is busy or broke (overloaded, rate limited, an internal
    /// error, the stream cut short): another attempt may succeed.
    pub transient: bool,
    /// The stream broke off (the connection, the server giving up): what
    /// came of the reply stands, and the model can go on from it.
    pub broke_off: bool,
}

impl From<ModelError> for DecodeError {
    fn from(error: ModelError) -> Self {
        Self {
            error,
            transient: false,
            broke_off: false,
        }
    }
}

/// Make `call` and decode its event stream into model events. The stream ends
/// after the first [`ModelEvent::Stop`], or with the first error.
///
/// An attempt that fails before the answer has begun (see
/// [`Decoder::started`]) is made again, up to `settings.retries` times: a
/// 429 or 5xx, a connection dropped, a stream that ends or reports an
/// overloaded server before its first token. What such an attempt decoded
/// (usage) is held back and dropped with it, so nothing is said twice; once
/// the answer has begun, a failure ends the call. A wait before another
/// attempt that a person would notice — the one the server asked for, or
/// Punie's own backoff — is told ([`ModelEvent::Waiting`]) before it is
/// waited out, with what went wrong.
///
/// A server that refuses a request holding pictures (many local models read
/// only text) is asked once more with the pictures left out, and the person
/// is told: otherwise every later turn of the conversation would fail too.
pub(crate) fn model_stream<D: Decoder>(
    client: reqwest::Client,
    mut call: Call,
    peer: Arc<Peer>,
    settings: ModelSettings,
    new_decoder: impl Fn() -> D + Send + 'static,
) -> ModelStream {
    let key = SentKey::of(&call.headers, &peer);
    async_stream::stream! {
        let mut retries_done = 0;
        // Reply text reached the person: an attempt that fails after that
        // is never made again, so this is the last attempt's.
        let mut text_shown = false;
        'attempts: loop {
            let may_retry = retries_done < settings.retries;
            let response = match open(&client, &call, &peer, settings.idle_timeout).await {
                Ok(response) => response,
                Err(failure) => {
                    if let Some(refusal) = failure.pictures_refused
                        && !matches!(failure.error, ModelError::TooLong(_))
                        && let Some(without_pictures) = call.without_pictures.take()
                    {
                        call.body = without_pictures();
                        yield Ok(ModelEvent::PicturesRefused {
                            why: key.hidden(failure.error).to_string(),
                            for_good: refusal == PictureRefusal::ModelReadsNone,
                        });
                        continue 'attempts;
                    }
                    if failure.retryable && may_retry {
                        let wait = retry_wait(&settings, retries_done, failure.retry_after);
                        let retry = Retry {
                            what_went_wrong: &failure.what_went_wrong,
                            wait,
                            asked: failure.retry_after.is_some(),
                        };
                        if let Some(words) = retry.notice(retries_done + 1, settings.retries) {
                            yield Ok(ModelEvent::Waiting(words));
                        }
                        tokio::time::sleep(wait).await;
                        retries_done += 1;
                        continue 'attempts;
                    }
                    yield Err(key.hidden(after_retries(failure.error, retries_done)));
                    return;
                }
            };
            let mut reading = Reading::new(&response, &settings);
            let bytes = reading.body_start.clone().kept(response.bytes_stream());
            let bytes = size_limited(idle_limited(bytes, settings.idle_timeout));
            let mut events = std::pin::pin!(SseByteStream::new(bytes));
            let mut decoder = new_decoder();
            // What this attempt decoded, held until the answer begins.
            let mut held = Vec::new();
            let failure = loop {
                let (decoded, ended) = reading
                    .step(&mut events, &mut decoder, &mut held, &peer)
                    .await;
                let stopped = held.iter().any(|event| matches!(event, ModelEvent::Stop(_)));
                if decoder.started() || stopped {
                    for model_event in held.drain(..) {
                        let stop = matches!(model_event, ModelEvent::Stop(_));
                        text_shown |= matches!(model_event, ModelEvent::Text(_));
                        yield Ok(model_event);
                        if stop {
                            return;
                        }
                    }
                }
                match decoded {
                    Err(failure) => break failure,
                    Ok(()) if ended => {
                        for model_event in held.drain(..) {
                            yield Ok(model_event);
                        }
                        return;
                    }
                    Ok(()) => {}
                }
            };
            if failure.transient && may_retry && !decoder.started() {
                let wait = retry_wait(&settings, retries_done, None);
                let retry = Retry {
                    what_went_wrong: &format!("{} failed before its reply began", peer.name),
                    wait,
                    asked: false,
                };
                if let Some(words) = retry.notice(retries_done + 1, settings.retries) {
                    yield Ok(ModelEvent::Waiting(words));
                }
                tokio::time::sleep(wait).await;
                retries_done += 1;
                continue 'attempts;
            }
            for model_event in held.drain(..) {
                text_shown |= matches!(model_event, ModelEvent::Text(_));
                yield Ok(model_event);
            }
            let mut error = after_retries(failure.error, retries_done);
            if failure.broke_off && decoder.started() {
                error = with_what_to_do(error, text_shown);
            }
            yield Err(key.hidden(error));
            return;
        }
    }
    .boxed()
}

/// The error of a reply that broke off after it began, saying what the
/// person can do: the text that came stays in the conversation (the turn
/// keeps it), so the model can go on from it.
fn with_what_to_do(error: ModelError, text_shown: bool) -> ModelError {
    let ModelError::Provider(message) = error else {
        return error;
    };
    let what_to_do = if text_shown {
        "the part of the reply that arrived is kept: send \"go on\" for the model to continue \
         from there, or send the prompt again"
    } else {
        "none of the reply's text had arrived: send the prompt again to retry"
    };
    ModelError::Provider(format!("{message}; {what_to_do}"))
}

/// How long a stream may go on once the model has said why it stopped,
/// waiting for what may still follow (OpenAI's usage chunk, `[DONE]`,
/// `message_stop`): some servers then send nothing and keep the connection
/// open, and the reply that came is whole. Never more than half the idle
/// timeout, so that the reply ends before the stream would be given up.
pub const FINISH_GRACE: Duration = Duration::from_secs(3);

/// How much of the start of a body is kept, to quote should it prove not to
/// be an event stream.
const BODY_SAMPLE: usize = 512;

/// How much of that start an error quotes.
const BODY_START_LIMIT: usize = 200;

/// One attempt's reading of its event stream.
struct Reading {
    /// The response's `Content-Type` (its media type) and `Content-Encoding`.
    content_type: Option<String>,
    content_encoding: Option<String>,
    body_start: BodyStart,
    /// An SSE block (an event, or a field of one) has arrived.
    saw_block: bool,
    idle_timeout: Duration,
    grace: Duration,
    /// When the stream is taken to have ended, counted from the stop
    /// reason: what comes after it (pings, empty chunks) does not put
    /// that off.
    ends_by: Option<tokio::time::Instant>,
}

impl Reading {
    fn new(response: &reqwest::Response, settings: &ModelSettings) -> Self {
        let header = |name| {
            let value = response.headers().get(name)?.to_str().ok()?;
            let essence = value.split(';').next().unwrap_or_default().trim();
            (!essence.is_empty()).then(|| essence.to_ascii_lowercase())
        };
        Self {
            content_type: header(CONTENT_TYPE),
            content_encoding: header(CONTENT_ENCODING),
            body_start: BodyStart::default(),
            saw_block: false,
            idle_timeout: settings.idle_timeout,
            grace: FINISH_GRACE.min(settings.idle_timeout / 2),
            ends_by: None,
        }
    }

    /// Read the next block of `events` into `decoder`, pushing what it makes
    /// of it onto `held`: how that went, and whether the stream has ended.
    /// Once the decoder has the reply's stop reason, a stream that goes
    /// quiet for [`FINISH_GRACE`], or breaks, has ended.
    async fn step<S, D>(
        &mut self,
        events: &mut S,
        decoder: &mut D,
        held: &mut Vec<ModelEvent>,
        peer: &Peer,
    ) -> (Result<(), DecodeError>, bool)
    where
        S: futures::Stream<Item = Result<Sse, sse_stream::Error>> + Unpin,
        D: Decoder,
    {
        let next = if decoder.finished() {
            let grace = self.grace;
            let ends_by = *self
                .ends_by
                .get_or_insert_with(|| tokio::time::Instant::now() + grace);
            tokio::time::timeout_at(ends_by, events.next())
                .await
                .unwrap_or(None)
        } else {
            // More of the reply came after all.
            self.ends_by = None;
            events.next().await
        };
        match next {
            None => match self.not_an_event_stream(peer) {
                Some(error) => (Err(error.into()), true),
                None => (decoder.finish(held), true),
            },
            Some(Ok(block)) => {
                self.saw_block = true;
                match Event::from_block(block) {
                    Some(event) => (decoder.decode(&event, held), false),
                    None => (Ok(()), false),
                }
            }
            // The reply was whole: a connection lost before the stream's
            // formal end (`[DONE]`, `message_stop`) takes nothing from it.
            Some(Err(error)) if decoder.finished() => {
                tracing::debug!(
                    "{} dropped the stream after the reply's end: {error}",
                    peer.name
                );
                (decoder.finish(held), true)
            }
            Some(Err(error)) => {
                let transient = matches!(
                    transport(&error),
                    Some(Transport::Http(error)) if is_dropped(error)
                );
                let error = stream_error(peer, &error, self.idle_timeout);
                (
                    Err(DecodeError {
                        error,
                        transient,
                        broke_off: true,
                    }),
                    false,
                )
            }
        }
    }

    /// The error for a body that ended without one SSE block and does not
    /// begin as an event stream does: a whole JSON reply labelled
    /// `text/plain`, JSON lines, a compressed body. Asking again would get
    /// the same, so it is not retried.
    fn not_an_event_stream(&self, peer: &Peer) -> Option<ModelError> {
        let start = self.body_start.bytes();
        if self.saw_block || looks_like_an_event_stream(&start) {
            return None;
        }
        let what = self.content_type.as_deref().map_or_else(
            || "a body without a content type".to_owned(),
            |kind| shown(kind, 100),
        );
        let body = match body_text(&start) {
            Some(text) => format!(" beginning `{}`", shown(text, BODY_START_LIMIT)),
            None => " that is not text".to_owned(),
        };
        let encoding = self
            .content_encoding
            .as_deref()
            .map(|encoding| {
                format!(
                    ", compressed ({}), which Punie does not ask for",
                    shown(encoding, 100)
                )
            })
            .unwrap_or_default();
        let check = peer
            .base_url_source
            .map(|source| {
                format!(
                    " — check that {} is the model server's API ({source} sets it)",
                    peer.base_url
                )
            })
            .unwrap_or_default();
        Some(ModelError::Provider(format!(
            "{} did not answer with server-sent events: it sent {what}{body}{encoding}{check}",
            peer.name
        )))
    }
}

/// The first [`BODY_SAMPLE`] bytes of a body, kept as they pass.
#[derive(Debug, Clone, Default)]
struct BodyStart(Arc<std::sync::Mutex<Vec<u8>>>);

impl BodyStart {
    /// `bytes`, their start kept here as they pass.
    fn kept<B: AsRef<[u8]>, E>(
        self,
        bytes: impl futures::Stream<Item = Result<B, E>>,
    ) -> impl futures::Stream<Item = Result<B, E>> {
        bytes.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                self.keep(chunk.as_ref());
            }
        })
    }

    fn keep(&self, bytes: &[u8]) {
        if let Ok(mut kept) = self.0.lock() {
            let room = BODY_SAMPLE.saturating_sub(kept.len());
            kept.extend(bytes.iter().take(room));
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|kept| kept.clone()).unwrap_or_default()
    }
}

/// Whether a body that begins with `start` may be an event stream: nothing
/// but line breaks, or a first line that is a comment or an SSE field.
fn looks_like_an_event_stream(start: &[u8]) -> bool {
    let start = start.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(start);
    let Some(line) = start
        .split(|byte| matches!(byte, b'\n' | b'\r'))
        .find(|line| !line.is_empty())
    else {
        return true;
    };
    line.starts_with(b":")
        || ["data", "event", "id", "retry"].iter().any(|field| {
            line.strip_prefix(field.as_bytes())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b":"))
        })
}

/// `start` as text, if it is: UTF-8 (perhaps cut in the middle of a
/// character at its end) without NULs.
fn body_text(start: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(start) {
        Ok(text) => text,
        Err(error) if error.error_len().is_none() => {
            std::str::from_utf8(start.get(..error.valid_up_to())?).ok()?
        }
        Err(_) => return None,
    };
    (!text.contains('\0')).then_some(text)
}

/// A call that fails before it starts, e.g. for want of an API key.
pub(crate) fn failed(error: ModelError) -> ModelStream {
    futures::stream::iter([Err(error)]).boxed()
}

/// The error for a stream that ended before the reply said it was complete:
/// the server stopped short, and may well not the next time.
pub(crate) fn cut_short(peer: &Peer) -> DecodeError {
    DecodeError {
        error: ModelError::Provider(format!(
            "{} closed the stream before the reply was complete",
            peer.name
        )),
        transient: true,
        broke_off: true,
    }
}

/// The error for a reply the model server ended with a finish reason that
/// does not say it is whole (`abort`, `error`): what came is incomplete, and
/// the tools it asked for must not run. Before the answer has begun, another
/// attempt may well succeed.
pub(crate) fn stopped_early(peer: &Peer, finish_reason: &str) -> DecodeError {
    DecodeError {
        error: ModelError::Provider(format!(
            "{} stopped the reply early (finish reason `{}`), so it is incomplete and no tool \
             it asked for was run; its own log may say why — send the prompt again to retry",
            peer.name,
            shown(finish_reason, ERROR_BODY_LIMIT)
        )),
        transient: true,
        // Its words already say what to do.
        broke_off: false,
    }
}

/// How a server refused a request for its pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PictureRefusal {
    /// These pictures: too large, or not readable.
    TheseOnes,
    /// Any picture: the model reads only text.
    ModelReadsNone,
}

/// Whether an answer refuses a request for its pictures: one too large
/// (413), or a refusal that speaks of images (400, 415, 422, and llama.cpp's
/// 500 *image input is not supported*); and whether it says the model reads
/// none at all.
fn pictures_refused(status: StatusCode, body: &str) -> Option<PictureRefusal> {
    const IMAGES: [&str; 4] = ["image", "mmproj", "vision", "multimodal"];
    const NONE_READ: [&str; 4] = ["not supported", "does not support", "mmproj", "text-only"];
    let body = body.to_ascii_lowercase();
    let says = |marks: &[&str]| mentions_any(&body, marks);
    let refused = match status.as_u16() {
        413 => true,
        400 | 415 | 422 | 500 => says(&IMAGES),
        _ => false,
    };
    match refused {
        false => None,
        true if says(&IMAGES) && says(&NONE_READ) => Some(PictureRefusal::ModelReadsNone),
        true => Some(PictureRefusal::TheseOnes),
    }
}

/// Why an attempt failed, and whether another may succeed.
struct Failure {
    error: ModelError,
    /// The server refused the request for its pictures, it seems.
    pictures_refused: Option<PictureRefusal>,
    /// A 429, a 5xx, or a connection dropped before the answer.
    retryable: bool,
    /// The wait the server asked for before the next attempt, never more
    /// than [`MAX_RETRY_WAIT`]: a longer one fails the call at once.
    retry_after: Option<Duration>,
    /// What went wrong, in a few words for the person while Punie waits to
    /// try again: `OpenAI is rate-limiting`.
    what_went_wrong: String,
}

impl Failure {
    fn last(error: ModelError) -> Self {
        Self {
            error,
            pictures_refused: None,
            retryable: false,
            retry_after: None,
            what_went_wrong: String::new(),
        }
    }
}

/// The API key a call sends, kept out of what the model server says back:
/// a proxy or a local server may quote the key it refused, and its words
/// reach every client of the session and the log.
struct SentKey {
    key: Option<String>,
    /// What stands in its place.
    instead: String,
}

/// Keys shorter than this are not looked for: they would take pieces of
/// ordinary words with them.
const SHORTEST_KEY_HIDDEN: usize = 8;

impl SentKey {
    /// The key in `headers` (a bearer token, or Anthropic's `x-api-key`).
    fn of(headers: &HeaderMap, peer: &Peer) -> Self {
        let text = |name: &str| headers.get(name)?.to_str().ok();
        let key = text(AUTHORIZATION.as_str())
            .map(|value| value.strip_prefix("Bearer ").unwrap_or(value))
            .or_else(|| text("x-api-key"))
            .map(str::trim)
            .filter(|key| key.len() >= SHORTEST_KEY_HIDDEN)
            .map(str::to_owned);
        let instead = peer.key_variable.map_or_else(
            || "[the API key]".to_owned(),
            |variable| format!("[the key in {variable}]"),
        );
        Self { key, instead }
    }

    /// `error` without the key in its words.
    fn hidden(&self, error: ModelError) -> ModelError {
        let Some(key) = self.key.as_deref() else {
            return error;
        };
        let hide = |text: String| {
            if text.contains(key) {
                text.replace(key, &self.instead)
            } else {
                text
            }
        };
        match error {
            ModelError::UnknownModel(text) => ModelError::UnknownModel(hide(text)),
            ModelError::Setup(text) => ModelError::Setup(hide(text)),
            ModelError::Environment(text) => ModelError::Environment(hide(text)),
            ModelError::Provider(text) => ModelError::Provider(hide(text)),
            ModelError::TooLong(text) => ModelError::TooLong(hide(text)),
        }
    }
}

/// `error`, saying how often the request was retried, if it was.
fn after_retries(error: ModelError, retries_done: u32) -> ModelError {
    match (error, retries_done) {
        (ModelError::Provider(message), 1) => {
            ModelError::Provider(format!("{message} (after 1 retry)"))
        }
        (ModelError::Provider(message), n) if n > 1 => {
            ModelError::Provider(format!("{message} (after {n} retries)"))
        }
        (error, _) => error,
    }
}

/// Send `call` and wait for a successful status and an event stream.
async fn open(
    client: &reqwest::Client,
    call: &Call,
    peer: &Peer,
    idle_timeout: Duration,
) -> Result<reqwest::Response, Failure> {
    let request = client
        .post(call.url.clone())
        .headers(call.headers.clone())
        .body(call.body.to_string())
        .send();
    let response = match tokio::time::timeout(idle_timeout, request).await {
        Err(_elapsed) => return Err(Failure::last(idle_error(peer, idle_timeout))),
        Ok(Err(error)) => {
            // A refused connection means nothing listens: waiting rarely helps,
            // and the person should hear so at once. A dropped one may be passing.
            return Err(Failure {
                pictures_refused: None,
                retryable: is_dropped(&error),
                retry_after: None,
                what_went_wrong: format!("{} dropped the connection before answering", peer.name),
                error: request_error(peer, &error),
            });
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let not_streamed = not_an_event_stream(response.headers());
    if status.is_success() && not_streamed.is_none() {
        return Ok(response);
    }
    if status.is_redirection() {
        return Err(Failure::last(redirect_error(peer, &response)));
    }
    let retry_after = retry_after(response.headers());
    let response_url = response.url().to_string();
    let response_url = response_url.as_str();
    let body = answer_body(response, idle_timeout).await;
    // An account out of quota stays so however often it is asked.
    // A server that does not implement the request will not the next time.
    let retryable = (status == StatusCode::TOO_MANY_REQUESTS && !says_out_of_quota(&body))
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
    if status.is_success() {
        // A whole reply in one piece: asking again gets the same.
        let content_type = not_streamed.unwrap_or_default();
        return Err(Failure::last(not_streamed_error(
            peer,
            &content_type,
            &body,
            response_url,
        )));
    }
    match retry_after {
        // Retrying sooner than asked only earns another refusal; waiting that
        // long in silence looks like a hang. The person decides.
        Some(wait) if retryable && wait > MAX_RETRY_WAIT => {
            Err(Failure::last(wait_asked_error(peer, status, wait, &body)))
        }
        _ => Err(Failure {
            pictures_refused: pictures_refused(status, &body),
            error: status_error(peer, &call.url, status, &body, sends_a_key(&call.headers)),
            retryable,
            retry_after,
            what_went_wrong: waiting_state(peer, status),
        }),
    }
}

/// The start of an answer that is not the event stream asked for, as text:
/// at most [`ANSWER_BODY_LIMIT`] bytes of it. An error body is small; one
/// that is not (a proxy's page, a server that never stops sending) would
/// otherwise be held whole in memory. It may also never come, so the idle
/// timeout holds.
async fn answer_body(response: reqwest::Response, idle_timeout: Duration) -> String {
    let mut body = Vec::new();
    let mut chunks = std::pin::pin!(response.bytes_stream());
    let read = async {
        while let Some(Ok(chunk)) = chunks.next().await {
            let room = ANSWER_BODY_LIMIT.saturating_sub(body.len());
            body.extend_from_slice(chunk.get(..room).unwrap_or(&chunk));
            if body.len() >= ANSWER_BODY_LIMIT {
                break;
            }
        }
    };
    // What came before the time ran out is still worth quoting.
    let _ = tokio::time::timeout(idle_timeout, read).await;
    // A character cut by the limit is no sign of a binary body.
    let whole = match std::str::from_utf8(&body) {
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        _ => body.len(),
    };
    String::from_utf8_lossy(body.get(..whole).unwrap_or_default()).into_owned()
}

/// The most of an answer that is not an event stream that is read: far more
/// than any error a server words, far less than a page that floods.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

/// A redirect the call did not follow (see [`redirect_policy`]): the server
/// has moved, and the base URL should say where to.
fn redirect_error(peer: &Peer, response: &reqwest::Response) -> ModelError {
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(|location| {
            response
                .url()
                .join(location)
                .map_or_else(|_| location.to_owned(), String::from)
        });
    let Some(location) = location else {
        return ModelError::Provider(format!(
            "{} answered {} to POST {} without saying where to",
            peer.name,
            describe_status(status),
            response.url()
        ));
    };
    let fix = match peer.base_url_source {
        Some(source) => format!("point {source} at the new address"),
        None => "Punie does not follow it".to_owned(),
    };
    ModelError::Provider(format!(
        "{} redirected POST {} to {} ({}): {fix}",
        peer.name,
        response.url(),
        shown(&location, MESSAGE_LIMIT),
        describe_status(status),
    ))
}

/// Whether an error body says the account has no quota or credit left
/// (OpenAI's `insufficient_quota`), which waiting does not mend.
fn says_out_of_quota(body: &str) -> bool {
    mentions_any(&body.to_ascii_lowercase(), &["insufficient_quota"])
}

/// The media type of a successful answer that is not an event stream: JSON
/// (a server that ignores `stream: true`, or a proxy's answer) or an HTML
/// page. A missing or other type is read as events, as some servers label
/// their streams loosely.
fn not_an_event_stream(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let refused =
        essence == "application/json" || essence.ends_with("+json") || essence == "text/html";
    refused.then_some(essence)
}

/// A success that carried a whole reply, or an error, instead of a stream.
/// LM Studio answers a path it does not serve (a base URL without its
/// `/v1`) so: an error that says as much is told with where to look.
fn not_streamed_error(peer: &Peer, content_type: &str, body: &str, url: &str) -> ModelError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .filter(|value| value.get("error").is_some())
        .and_then(|value| json_error_message(&value));
    let said = message
        .as_deref()
        .map(|message| format!(": {message}"))
        .unwrap_or_default();
    // Words for a path, not a model, that the server does not know.
    let wrong_path = message.is_some_and(|message| {
        mentions_any(
            &message.to_ascii_lowercase(),
            &["endpoint", "route", "no such path", "unknown path"],
        )
    });
    let check = if wrong_path {
        let base = peer
            .base_url_source
            .map(|source| format!(" ({source})"))
            .unwrap_or_default();
        format!(" — POST {url}: check the base URL{base}")
    } else {
        String::new()
    };
    ModelError::Provider(format!(
        "{} did not stream its reply: it answered with {content_type}, not server-sent events \
         (text/event-stream){said}{check}",
        peer.name
    ))
}

/// What a server that answered `status` (a 429 or 5xx) is doing: `OpenAI
/// is rate-limiting`, `Anthropic is unavailable (503 Service
/// Unavailable)`.
fn waiting_state(peer: &Peer, status: StatusCode) -> String {
    if status == StatusCode::TOO_MANY_REQUESTS {
        format!("{} is rate-limiting", peer.name)
    } else {
        format!("{} is unavailable ({})", peer.name, describe_status(status))
    }
}

/// A 429 or 5xx whose `Retry-After` asks for longer than Punie waits.
fn wait_asked_error(peer: &Peer, status: StatusCode, wait: Duration, body: &str) -> ModelError {
    let said = error_message(body)
        .map(|message| format!(": {message}"))
        .unwrap_or_default();
    ModelError::Provider(format!(
        "{}{said}",
        asks_to_wait(&waiting_state(peer, status), wait)
    ))
}

/// `state` and the wait the server asked for: `OpenAI is rate-limiting: it
/// asks to wait 20 s before trying again`.
fn asks_to_wait(state: &str, wait: Duration) -> String {
    format!(
        "{state}: it asks to wait {} s before trying again",
        wait.as_secs_f64().ceil()
    )
}

/// A wait before another attempt.
struct Retry<'a> {
    /// `OpenAI is rate-limiting`.
    what_went_wrong: &'a str,
    wait: Duration,
    /// The server asked for the wait (`Retry-After`); else it is Punie's
    /// own backoff.
    asked: bool,
}

impl Retry<'_> {
    /// What the person is told before the wait for retry number `retry`
    /// of `retries`: nothing for a wait too short to wonder about.
    fn notice(&self, retry: u32, retries: u32) -> Option<String> {
        if self.wait < WAIT_TOLD_FROM {
            return None;
        }
        let waits = if self.asked {
            format!(
                "{}, so Punie waits and then tries again",
                asks_to_wait(self.what_went_wrong, self.wait)
            )
        } else {
            format!(
                "{}, so Punie tries again in {} s",
                self.what_went_wrong,
                self.wait.as_secs_f64().ceil()
            )
        };
        Some(format!("{waits} (retry {retry} of {retries})"))
    }
}

/// The wait before retry number `retries_done + 1`.
fn retry_wait(settings: &ModelSettings, retries_done: u32, asked: Option<Duration>) -> Duration {
    let backoff = settings
        .retry_backoff
        .saturating_mul(2u32.saturating_pow(retries_done));
    asked.unwrap_or(backoff).min(MAX_RETRY_WAIT)
}

/// A `Retry-After` header, in seconds or as the date to try again at.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<f64>() {
        Ok(seconds) => (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)),
        // The header's other form: the time to try again at. One already
        // past means now.
        Err(_) => httpdate::parse_http_date(value).ok().map(|at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }),
    }
}

/// Why the bytes of an event stream stopped coming.
#[derive(Debug, thiserror::Error)]
enum Transport {
    #[error(transparent)]
    Http(reqwest::Error),
    /// Nothing came for the idle timeout.
    #[error("nothing came for the idle timeout")]
    Idle,
    /// One event grew past [`MAX_EVENT_BYTES`].
    #[error("an event of more than {} MiB", MAX_EVENT_BYTES / (1024 * 1024))]
    TooLarge,
}

/// The most bytes one server-sent event may hold. Far more than any piece
/// of a reply (a tool call's whole arguments included); the event parser
/// holds an event whole until it ends, so a server that never ends one
/// would otherwise fill the memory.
const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// `bytes`, ending with [`Transport::TooLarge`] once one event (what lies
/// between two blank lines) has grown past [`MAX_EVENT_BYTES`].
fn size_limited<B: AsRef<[u8]> + Send + 'static>(
    bytes: impl futures::Stream<Item = Result<B, Transport>> + Send + 'static,
) -> impl futures::Stream<Item = Result<B, Transport>> + Send + 'static {
    async_stream::stream! {
        let mut bytes = std::pin::pin!(bytes);
        let mut in_event = 0;
        // The line so far is empty; the last byte was a CR (a CRLF is one
        // line break).
        let (mut line_empty, mut after_cr) = (true, false);
        while let Some(chunk) = bytes.next().await {
            if let Ok(chunk) = &chunk {
                for &byte in chunk.as_ref() {
                    match byte {
                        b'\n' if after_cr => after_cr = false,
                        b'\n' | b'\r' => {
                            if line_empty {
                                in_event = 0;
                            }
                            line_empty = true;
                            after_cr = byte == b'\r';
                        }
                        _ => {
                            in_event += 1;
                            (line_empty, after_cr) = (false, false);
                        }
                    }
                }
                if in_event > MAX_EVENT_BYTES {
                    yield Err(Transport::TooLarge);
                    return;
                }
            }
            yield chunk;
        }
    }
}

/// The [`Transport`] failure that ended an event stream, if that is what did.
fn transport(error: &sse_stream::Error) -> Option<&Transport> {
    match error {
        sse_stream::Error::Body(error) => error.downcast_ref::<Transport>(),
        _ => None,
    }
}

/// `bytes`, ending with [`Transport::Idle`] once nothing has come for
/// `idle_timeout`. Timed below the event parser, so that whatever the server
/// sends counts — SSE comments too (`: keep-alive`, OpenRouter's
/// `: OPENROUTER PROCESSING`), which slow reasoning models are kept alive by
/// and which never become events.
fn idle_limited<B: Send + 'static>(
    bytes: impl futures::Stream<Item = Result<B, reqwest::Error>> + Send + 'static,
    idle_timeout: Duration,
) -> impl futures::Stream<Item = Result<B, Transport>> + Send + 'static {
    async_stream::stream! {
        let mut bytes = std::pin::pin!(bytes);
        loop {
            match tokio::time::timeout(idle_timeout, bytes.next()).await {
                Err(_elapsed) => {
                    yield Err(Transport::Idle);
                    return;
                }
                Ok(None) => return,
                Ok(Some(chunk)) => yield chunk.map_err(Transport::Http),
            }
        }
    }
}

fn is_refused_or_reset(error: &reqwest::Error) -> bool {
    io_error_kind(error).is_some_and(|kind| kind == std::io::ErrorKind::ConnectionRefused)
        || is_reset(error)
}

/// Whether the connection was reset or closed before the answer was complete:
/// a server restarting, a proxy giving up, or a keep-alive connection the
/// server closed just as it was reused. Another attempt may well succeed.
fn is_dropped(error: &reqwest::Error) -> bool {
    is_reset(error) || closed_before_answer(error) || closed_in_the_body(error)
}

/// The connection closed in the middle of a chunked body: a server that
/// crashed while it streamed.
fn closed_in_the_body(error: &reqwest::Error) -> bool {
    io_error_kind(error).is_some_and(|kind| kind == std::io::ErrorKind::UnexpectedEof)
}

/// hyper's `IncompleteMessage`: the server closed the connection (FIN) before
/// the whole answer came.
fn closed_before_answer(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        source = error.source();
    }
    false
}

fn is_reset(error: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    io_error_kind(error).is_some_and(|kind| {
        matches!(
            kind,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        )
    })
}

/// The kind of the I/O error underneath `error`, if there is one.
fn io_error_kind(error: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = error.source();
    }
    None
}

/// The innermost cause of `error`, which is the one that says what happened.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn idle_error(peer: &Peer, idle_timeout: Duration) -> ModelError {
    ModelError::Provider(format!(
        "{} sent nothing for {}; gave up waiting (if it is just slow, raise --model-idle-timeout)",
        peer.name,
        humantime::format_duration(idle_timeout)
    ))
}

/// A request that got no HTTP answer at all.
fn request_error(peer: &Peer, error: &reqwest::Error) -> ModelError {
    let reason = root_cause(error);
    let message = match peer.not_running_hint {
        // A server answered, but not in TLS: most often one that serves
        // plain HTTP, given an https:// URL. It is running; the URL is wrong.
        _ if tls_refused(error).is_some() => {
            let plain = matches!(tls_refused(error), Some(rustls::Error::InvalidMessage(_)));
            let fix = match (plain, peer.base_url_source) {
                (true, Some(source)) => format!(
                    ": if it serves plain HTTP, write http:// rather than https:// in {source}"
                ),
                (true, None) => ": if it serves plain HTTP, it needs http://".to_owned(),
                (false, _) => String::new(),
            };
            format!(
                "no secure (TLS) connection with {} ({reason}){fix}",
                origin(&peer.base_url)
            )
        }
        Some(hint) if error.is_connect() => {
            if is_refused_or_reset(error) {
                format!("no server at {} — {hint}", origin(&peer.base_url))
            } else {
                format!(
                    "no server at {} ({reason}) — {hint}",
                    origin(&peer.base_url)
                )
            }
        }
        _ if error.is_connect() => format!("cannot reach {}: {reason}", peer.base_url),
        _ => format!("the request to {} failed: {reason}", peer.base_url),
    };
    ModelError::Provider(message)
}

/// The TLS error that ended a connection before any answer, if one did.
fn tls_refused(error: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An I/O error's `source` skips the error it wraps (here, another
        // I/O error wrapping the TLS one).
        source = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        };
    }
    None
}

/// An event stream that broke, or went silent, after it started.
fn stream_error(peer: &Peer, error: &sse_stream::Error, idle_timeout: Duration) -> ModelError {
    let reason = match (transport(error), error) {
        (Some(Transport::Idle), _) => return idle_error(peer, idle_timeout),
        (Some(too_large @ Transport::TooLarge), _) => {
            return ModelError::Provider(format!(
                "{} sent {too_large}, more than any reply needs, so it was given up; its own \
                 log may say why",
                peer.name
            ));
        }
        (Some(Transport::Http(error)), _) => root_cause(error),
        (None, sse_stream::Error::Utf8Parse(error)) => {
            format!("it sent text that is not UTF-8 ({error})")
        }
        (None, error) => format!("it sent malformed server-sent events ({error})"),
    };
    ModelError::Provider(format!("the stream from {} broke: {reason}", peer.name))
}

/// An HTTP answer other than success to a request to `url`.
fn status_error(
    peer: &Peer,
    url: &Url,
    status: StatusCode,
    body: &str,
    key_sent: bool,
) -> ModelError {
    let code = status.as_u16();
    let message = error_message(body);
    let said = message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let text = match status {
        StatusCode::UNAUTHORIZED if key_sent => {
            let check = peer
                .key_variable
                .map(|variable| format!("; check {variable}"))
                .unwrap_or_default();
            format!("{} refused the API key ({code}){said}{check}", peer.name)
        }
        // A local server started with a key of its own (llama.cpp's and
        // vLLM's `--api-key`), asked without one.
        StatusCode::UNAUTHORIZED => {
            let set = peer
                .key_variable
                .map(|variable| format!("; set {variable} to the key it was given"))
                .unwrap_or_default();
            format!("{} wants an API key ({code}){said}{set}", peer.name)
        }
        // A good key may still be refused this model (one of an OpenAI
        // project without access to it, say): the server's words say why.
        StatusCode::FORBIDDEN => {
            let check = peer
                .key_variable
                .map(|variable| {
                    format!(
                        "; check that the key in {variable} may use model `{}`",
                        peer.model
                    )
                })
                .unwrap_or_default();
            format!("{} refused the request ({code}){said}{check}", peer.name)
        }
        StatusCode::TOO_MANY_REQUESTS if says_out_of_quota(body) => {
            let check = peer
                .key_variable
                .map(|variable| {
                    format!(
                        "; add credit to the account of the key in {variable}, or use another key"
                    )
                })
                .unwrap_or_default();
            format!(
                "{} says the account is out of quota or credit ({code}){said}{check}",
                peer.name
            )
        }
        StatusCode::NOT_FOUND => {
            // A wrong model and a wrong base URL (one missing its `/v1`, say)
            // both answer 404, often in the same words.
            let what = message.unwrap_or_else(|| format!("{} answered 404 Not Found", peer.name));
            let extra = peer
                .missing_model_hint
                .as_deref()
                .map(|hint| format!(" ({hint})"))
                .unwrap_or_default();
            let base = peer
                .base_url_source
                .map(|source| format!(" ({source})"))
                .unwrap_or_default();
            format!(
                "{what} — POST {url}: is the model name `{}` right?{extra} If it is, check \
                 the base URL{base}",
                peer.model
            )
        }
        // What answers so is no Chat Completions or Messages API: a web
        // server, or a base URL that leads elsewhere.
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
            let base = peer
                .base_url_source
                .map(|source| format!(" ({source})"))
                .unwrap_or_default();
            format!(
                "{} answered {}{said} to POST {url}: check the base URL{base}",
                peer.name,
                describe_status(status)
            )
        }
        _ => format!("{} answered {}{said}", peer.name, describe_status(status)),
    };
    if matches!(status.as_u16(), 400 | 413) && says_too_long(body) {
        return ModelError::TooLong(text);
    }
    // A reply limit above what the model writes (Anthropic's wire always
    // sends one, more than older models take), which no retry mends.
    if status == StatusCode::BAD_REQUEST && says_output_limit(body) {
        return ModelError::Provider(format!(
            "{text} — set --max-output-tokens to what the model allows"
        ));
    }
    ModelError::Provider(text)
}

/// Whether an error body speaks of the limit on a reply's length: Anthropic's
/// *max_tokens: 8192 > 4096, which is the maximum allowed number of output
/// tokens*, OpenAI's *max_tokens is too large*.
fn says_output_limit(body: &str) -> bool {
    mentions_any(
        &body.to_ascii_lowercase(),
        &["max_tokens", "max_completion_tokens", "output tokens"],
    )
}

/// Whether `headers` carry an API key (a bearer token, or Anthropic's
/// `x-api-key`).
fn sends_a_key(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || headers.contains_key("x-api-key")
}

/// Whether an error body says the conversation is longer than the model's
/// context window, in the words of OpenAI (`context_length_exceeded`),
/// Anthropic (`prompt is too long`, `exceed context limit`), llama.cpp
/// (`exceed_context_size_error`),
/// vLLM and LM Studio (`maximum context length`, `context length`).
fn says_too_long(body: &str) -> bool {
    const MARKS: [&str; 7] = [
        "context_length_exceeded",
        "exceed_context_size",
        "context length",
        "context size",
        "context window",
        "context limit",
        "prompt is too long",
    ];
    mentions_any(&body.to_ascii_lowercase(), &MARKS)
}

/// Whether `lowercase` (an error body, lowercased) holds any of `marks`.
fn mentions_any(lowercase: &str, marks: &[&str]) -> bool {
    marks.iter().any(|mark| lowercase.contains(mark))
}

/// `404 Not Found`; `529` for codes without a standard name.
fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The message in a provider's error body: `{"error": {"message": …}}` (OpenAI,
/// Anthropic, llama.cpp), `{"error": "…"}` (Ollama), `{"message": …}` (vLLM)
/// or `{"detail": …}`; else the body itself if it is short plain text.
pub(crate) fn error_message(body: &str) -> Option<String> {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return json_error_message(&value);
    }
    let body = body.trim();
    // An HTML page says nothing a person needs, and a binary body (NULs, or
    // bytes that were not UTF-8) nothing at all.
    if body.is_empty() || body.starts_with('<') || body.contains(['\0', '\u{FFFD}']) {
        return None;
    }
    Some(shown(body, ERROR_BODY_LIMIT))
}

/// The message of a JSON error object, as [`error_message`] describes.
pub(crate) fn json_error_message(value: &Value) -> Option<String> {
    let error = value.get("error").unwrap_or(value);
    let message = match error {
        Value::String(text) => Some(text.clone()),
        Value::Object(fields) => ["message", "detail"]
            .iter()
            .find_map(|key| fields.get(*key))
            .map(|message| match message {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
        _ => None,
    }?;
    let kind = error.get("type").and_then(Value::as_str);
    let message = match kind {
        Some(kind) if !message.contains(kind) => format!("{message} ({kind})"),
        _ => message,
    };
    Some(shown(&message, MESSAGE_LIMIT))
}

/// Text a model server wrote, fit to be shown in an error: a terminal obeys
/// the escape sequences a control character starts, a NUL cuts some logs
/// short, and marks that reorder text can make it read as something else. So
/// control characters and those marks are dropped, each run of line breaks
/// and tabs becomes one space (errors are one line), and at most `limit`
/// characters are kept, the cut marked with an ellipsis.
pub(crate) fn shown(text: &str, limit: usize) -> String {
    let mut kept = String::new();
    let mut count = 0;
    let mut gap = false;
    for c in text.trim().chars() {
        if c.is_control() || crate::text::reorders_text(c) {
            gap |= c.is_whitespace();
            continue;
        }
        if count == limit {
            kept.truncate(kept.trim_end().len());
            kept.push('…');
            return kept;
        }
        if std::mem::take(&mut gap) && !kept.is_empty() && !kept.ends_with(' ') {
            kept.push(' ');
        }
        kept.push(c);
        count += 1;
    }
    kept
}

/// An error the model server reported in the middle of its stream. Some
/// servers (LM Studio, llama.cpp) refuse a conversation longer than their
/// context this way, with a `200 OK` already sent: that is recognised as
/// what a `400` saying so would be, so the turn sends less.
pub(crate) fn reported_error(peer: &Peer, value: &Value) -> DecodeError {
    let message =
        json_error_message(value).unwrap_or_else(|| shown(&value.to_string(), MESSAGE_LIMIT));
    let text = format!("{} reported an error: {message}", peer.name);
    // Too long is never passing, whatever type the server gave it: sent
    // again unchanged, it would only be refused again.
    let too_long = says_too_long(&message);
    let error = if too_long {
        ModelError::TooLong(text)
    } else {
        ModelError::Provider(text)
    };
    // A server busy or failing mid-reply broke it off as a dropped
    // connection would.
    let transient = !too_long && is_transient(value);
    DecodeError {
        error,
        transient,
        broke_off: transient,
    }
}

/// The error for a stream that ended (`[DONE]`) with nothing in it, not even
/// a finish reason. Older llama.cpp servers end so after an `error:` line,
/// which is not an SSE field and so never reaches Punie.
pub(crate) fn ended_empty(peer: &Peer) -> DecodeError {
    DecodeError {
        error: ModelError::Provider(format!(
            "{} ended its stream without a reply or a finish reason; it may have sent an error \
             in a form Punie cannot read — its own log says more",
            peer.name
        )),
        transient: false,
        broke_off: false,
    }
}

/// Whether a reported error says the server is busy or broke rather than
/// that the request is wrong: the types Anthropic and OpenAI use for what
/// their 429, 500 and 529 answers mean, or such a status as the code.
fn is_transient(value: &Value) -> bool {
    let error = value.get("error").unwrap_or(value);
    let kind = error.get("type").and_then(Value::as_str);
    let transient_kind = matches!(
        kind,
        Some(
            "overloaded_error"
                | "rate_limit_error"
                | "api_error"
                | "server_error"
                | "timeout_error"
        )
    );
    let code = ["code", "status"]
        .iter()
        .find_map(|key| error.get(*key).and_then(Value::as_u64));
    transient_kind || code.is_some_and(|code| code == 429 || (500..600).contains(&code))
}

/// Parse one event's JSON data, or say the server sent something else.
pub(crate) fn parse_data<T: serde::de::DeserializeOwned>(
    peer: &Peer,
    event: &Event,
) -> Result<T, ModelError> {
    serde_json::from_str(&event.data).map_err(|error| {
        ModelError::Provider(format!(
            "{} sent an event Punie does not understand ({error}): {}",
            peer.name,
            shown(&event.data, ERROR_BODY_LIMIT)
        ))
    })
}

/// Tool arguments as the model wrote them: the JSON value if it is valid, else
/// the raw text as a string (see [`ModelEvent::ToolCall`]).
pub(crate) fn tool_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer {
            name: "Ollama",
            base_url: Url::parse("http://127.0.0.1:11434/v1").expect("a URL"),
            model: "qwen3".to_owned(),
            not_running_hint: Some("is Ollama running?"),
            key_variable: None,
            missing_model_hint: Some("`ollama pull qwen3` downloads it".to_owned()),
            base_url_source: Some("OLLAMA_HOST"),
        }
    }

    #[test]
    fn error_messages_come_from_every_common_shape() {
        assert_eq!(
            error_message(
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#
            )
            .as_deref(),
            Some("Incorrect API key (invalid_request_error)")
        );
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#
            )
            .as_deref(),
            Some("model: x (not_found_error)")
        );
        assert_eq!(
            error_message(r#"{"error":"model \"qwen3\" not found, try pulling it first"}"#)
                .as_deref(),
            Some("model \"qwen3\" not found, try pulling it first")
        );
        assert_eq!(
            error_message(r#"{"object":"error","message":"The model `m` does not exist."}"#)
                .as_deref(),
            Some("The model `m` does not exist.")
        );
        assert_eq!(error_message("<html>Bad Gateway</html>"), None);
        assert_eq!(
            error_message("upstream down").as_deref(),
            Some("upstream down")
        );
        assert_eq!(error_message(""), None);
    }

    #[test]
    fn status_errors_say_what_to_check() {
        let url = Url::parse("http://127.0.0.1:11434/v1/chat/completions").expect("a URL");
        let error =
            |status: StatusCode, body: &str| status_error(&peer(), &url, status, body, true);
        let unauthorized = error(StatusCode::UNAUTHORIZED, r#"{"error":"no"}"#);
        assert_eq!(
            unauthorized.to_string(),
            "Ollama refused the API key (401): no"
        );
        let missing = error(StatusCode::NOT_FOUND, r#"{"error":"model not found"}"#);
        assert_eq!(
            missing.to_string(),
            "model not found — POST http://127.0.0.1:11434/v1/chat/completions: is the model \
             name `qwen3` right? (`ollama pull qwen3` downloads it) If it is, check the base URL \
             (OLLAMA_HOST)"
        );
        let unasked = status_error(
            &peer(),
            &url,
            StatusCode::UNAUTHORIZED,
            r#"{"error":"Invalid API Key"}"#,
            false,
        );
        assert_eq!(
            unasked.to_string(),
            "Ollama wants an API key (401): Invalid API Key"
        );
        let old_model = error(
            StatusCode::BAD_REQUEST,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 8192 > 4096, which is the maximum allowed number of output tokens for claude-3-haiku-20240307"}}"#,
        );
        assert_eq!(
            old_model.to_string(),
            "Ollama answered 400 Bad Request: max_tokens: 8192 > 4096, which is the maximum \
             allowed number of output tokens for claude-3-haiku-20240307 \
             (invalid_request_error) — set --max-output-tokens to what the model allows"
        );
        let teapot = error(StatusCode::BAD_REQUEST, "");
        assert_eq!(teapot.to_string(), "Ollama answered 400 Bad Request");
        let overloaded = StatusCode::from_u16(529).expect("a status");
        let overloaded = error(overloaded, r#"{"error":"busy"}"#);
        assert_eq!(overloaded.to_string(), "Ollama answered 529: busy");
    }

    #[test]
    fn a_refusal_of_pictures_is_told_apart_from_other_refusals() {
        use PictureRefusal::{ModelReadsNone, TheseOnes};
        let status = |code: u16| StatusCode::from_u16(code).expect("a status");
        let llama_cpp = r#"{"error":{"code":500,"message":"image input is not supported - hint: if this is unexpected, you may need to provide the mmproj","type":"server_error"}}"#;
        let cases = [
            (500, llama_cpp, Some(ModelReadsNone)),
            (
                400,
                r#"{"error":"this model does not support vision"}"#,
                Some(ModelReadsNone),
            ),
            (
                400,
                r#"{"error":"image exceeds 5 MB maximum"}"#,
                Some(TheseOnes),
            ),
            (
                400,
                r#"{"error":"could not process image"}"#,
                Some(TheseOnes),
            ),
            (413, "", Some(TheseOnes)),
            (400, r#"{"error":"invalid tool schema"}"#, None),
            (500, r#"{"error":"out of memory"}"#, None),
            (503, "image server overloaded", None),
        ];
        for (code, body, expected) in cases {
            assert_eq!(
                pictures_refused(status(code), body),
                expected,
                "{code} {body}"
            );
        }
    }

    #[test]
    fn a_conversation_too_long_for_the_model_is_told_apart_in_every_servers_words() {
        let url = Url::parse("http://127.0.0.1:8080/v1/chat/completions").expect("a URL");
        let too_long = [
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError"}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000"}}"#,
        ];
        for body in too_long {
            let error = status_error(&peer(), &url, StatusCode::BAD_REQUEST, body, true);
            assert!(matches!(error, ModelError::TooLong(_)), "{body}: {error:?}");
        }
        let other = status_error(
            &peer(),
            &url,
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid tool schema"}"#,
            true,
        );
        assert!(matches!(other, ModelError::Provider(_)), "{other:?}");
        let unavailable = status_error(
            &peer(),
            &url,
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"context size is being changed"}"#,
            true,
        );
        assert!(
            matches!(unavailable, ModelError::Provider(_)),
            "{unavailable:?}"
        );
    }

    #[test]
    fn a_conversation_too_long_reported_in_the_stream_is_not_sent_again_unchanged() {
        let overflow = serde_json::json!({"error": {"type": "server_error", "code": 500,
            "message": "This model's maximum context length is 4096 tokens."}});
        let reported = reported_error(&peer(), &overflow);
        assert!(
            matches!(reported.error, ModelError::TooLong(_)),
            "{reported:?}"
        );
        assert!(!reported.transient);
        let busy = serde_json::json!({"error": {"type": "server_error", "message": "overloaded"}});
        assert!(reported_error(&peer(), &busy).transient);
    }

    #[test]
    fn a_wait_longer_than_punie_waits_is_reported_with_the_providers_words() {
        let limited = wait_asked_error(
            &peer(),
            StatusCode::TOO_MANY_REQUESTS,
            Duration::from_secs(3600),
            r#"{"error":"slow down"}"#,
        );
        assert_eq!(
            limited.to_string(),
            "Ollama is rate-limiting: it asks to wait 3600 s before trying again: slow down"
        );
        let down = wait_asked_error(
            &peer(),
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(90_500),
            "",
        );
        assert_eq!(
            down.to_string(),
            "Ollama is unavailable (503 Service Unavailable): it asks to wait 91 s before trying \
             again"
        );
    }

    #[test]
    fn waits_double_up_to_a_cap_and_respect_retry_after() {
        let settings = ModelSettings {
            retry_backoff: Duration::from_millis(100),
            ..ModelSettings::default()
        };
        assert_eq!(retry_wait(&settings, 0, None), Duration::from_millis(100));
        assert_eq!(retry_wait(&settings, 2, None), Duration::from_millis(400));
        assert_eq!(retry_wait(&settings, 40, None), MAX_RETRY_WAIT);
        assert_eq!(
            retry_wait(&settings, 0, Some(Duration::ZERO)),
            Duration::ZERO
        );
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3600".parse().expect("a header value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3600)));
        headers.insert(RETRY_AFTER, "1e300".parse().expect("a header value"));
        assert_eq!(retry_after(&headers), Some(Duration::MAX));
        headers.insert(RETRY_AFTER, "2".parse().expect("a header value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT"
                .parse()
                .expect("a header value"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a time past");
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(later)
                .parse()
                .expect("a header value"),
        );
        let wait = retry_after(&headers).expect("a wait");
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        headers.insert(RETRY_AFTER, "soon".parse().expect("a header value"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn paths_join_without_doubled_slashes() {
        let base = Url::parse("http://h:1/v1/").expect("a URL");
        assert_eq!(
            join(&base, "chat/completions").as_str(),
            "http://h:1/v1/chat/completions"
        );
        let root = Url::parse("https://api.anthropic.com").expect("a URL");
        assert_eq!(
            join(&root, "v1/messages").as_str(),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn a_body_is_told_for_an_event_stream_by_its_first_line() {
        for stream in [
            &b"data: {}\n\n"[..],
            b"\xEF\xBB\xBFevent: ping\n",
            b"\r\n: keep-alive\n\n",
            b"retry: 10\n",
            b"data",
            b"",
            b"\n\n",
        ] {
            assert!(looks_like_an_event_stream(stream), "{stream:?}");
        }
        for other in [
            &b"{\"choices\":[]}"[..],
            b"database: x\n",
            b"<html>",
            b"\x1f\x8b\x08\x00",
        ] {
            assert!(!looks_like_an_event_stream(other), "{other:?}");
        }
    }

    #[test]
    fn only_text_is_quoted_from_a_body() {
        assert_eq!(body_text(b"plain"), Some("plain"));
        assert_eq!(body_text("caf\u{e9}".as_bytes()), Some("caf\u{e9}"));
        // Cut in the middle of a character by the sample's end.
        assert_eq!(body_text(&"caf\u{e9}".as_bytes()[..4]), Some("caf"));
        assert_eq!(body_text(b"\x1f\x8b\x08\x00\xff\xfe"), None);
        assert_eq!(body_text(b"a\0b"), None);
    }

    #[test]
    fn malformed_arguments_are_kept_as_text() {
        assert_eq!(tool_arguments(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(tool_arguments(""), serde_json::json!({}));
        assert_eq!(
            tool_arguments(r#"{"a":"#),
            Value::String(r#"{"a":"#.to_owned())
        );
    }
}
