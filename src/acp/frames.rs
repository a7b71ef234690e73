//! From the text of one message to the SDK frame a connection takes, before
//! it means anything: the WebSocket loop's first step, kept here so that the
//! fuzz tests take the same one. (The SDK's HTTP transport parses its POSTs
//! itself, with its own bare parse errors.)

use agent_client_protocol::{ErrorCode, TransportFrame};

/// Longest excerpt of a frame that is not JSON quoted back in the `-32700`
/// answer; a client sending megabytes of garbage gets a short answer.
const PARSE_ERROR_EXCERPT_BYTES: usize = 1024;

/// The SDK frame for a text frame. For text that is not JSON at all, the
/// SDK's bare "Parse error" gains what is wrong and where, and the text is
/// cut to an excerpt before the SDK quotes it back.
pub fn frame_from_text(text: &str) -> TransportFrame {
    match TransportFrame::parse_json(text) {
        TransportFrame::Malformed { raw, mut error } if error.code == ErrorCode::PARSE_ERROR => {
            if let Err(why) = serde_json::from_str::<serde::de::IgnoredAny>(&raw) {
                error.message = format!("Parse error: the message is not valid JSON ({why})");
            }
            let raw = excerpt(raw);
            error = error.data(serde_json::json!({ "line": raw }));
            TransportFrame::Malformed { raw, error }
        }
        frame => frame,
    }
}

/// At most [`PARSE_ERROR_EXCERPT_BYTES`] of `text`, marked when cut.
fn excerpt(mut text: String) -> String {
    if text.len() > PARSE_ERROR_EXCERPT_BYTES {
        let mut end = PARSE_ERROR_EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
