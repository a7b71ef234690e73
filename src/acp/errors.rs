//! The JSON-RPC errors Punie answers with: the right code, and a message a
//! person can act on. Machine-readable details go in `data`.

use agent_client_protocol::v1::schema::SessionId;
use agent_client_protocol::{Error, ErrorCode};
use serde_json::json;

/// `-32602`: the params of `method` are wrong, and `problem` says how.
pub fn invalid_params(method: &str, problem: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::INVALID_PARAMS,
        fitted(format!("{method}: {problem}")),
    )
}

/// Longest message an error carries. Most quote what the client sent (a
/// cwd, a cursor, a mode, a model, serde's words about a value): a client
/// sending megabytes there gets a short answer, not its input back.
const MESSAGE_BYTES: usize = 1024;

/// `message`, when longer than [`MESSAGE_BYTES`], cut in the middle, where
/// the client's own input is: its start says what is wrong, its end what
/// would do.
fn fitted(message: String) -> String {
    if message.len() <= MESSAGE_BYTES {
        return message;
    }
    let head = message.floor_char_boundary(MESSAGE_BYTES / 2);
    let tail = message.ceil_char_boundary(message.len() - MESSAGE_BYTES / 4);
    format!("{}…{}", &message[..head], &message[tail..])
}

/// Longest piece of a client's own input (a method name, a session id)
/// quoted back in an error: a client sending megabytes gets a short answer.
const QUOTED_BYTES: usize = 200;

/// `text`, cut to [`QUOTED_BYTES`] and marked when cut.
pub(super) fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    excerpt(text, QUOTED_BYTES)
}

/// At most `bytes` of `text` (to a character's end), marked with `…` when cut.
pub(super) fn excerpt(text: &str, bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= bytes {
        return text.into();
    }
    format!("{}…", &text[..text.floor_char_boundary(bytes)]).into()
}

/// `-32601`: Punie does not offer `method`.
pub fn method_not_found(method: &str) -> Error {
    let method = quoted(method);
    let message = if CLIENT_METHODS.contains(&&*method) || method.starts_with("terminal/") {
        format!(
            "{method} is a method of the client, which the agent calls; a client does not send it to the agent"
        )
    } else if method.starts_with("session/") || method == "authenticate" {
        format!(
            "{method} is not supported by this Punie server; see agentCapabilities in the initialize response"
        )
    } else {
        format!("unknown method `{method}`")
    };
    Error::new(ErrorCode::METHOD_NOT_FOUND, message).data(json!({ "method": method }))
}

/// The methods ACP has the agent call on the client (with every
/// `terminal/` one): a client that sends one has the roles the wrong way
/// round, which "not supported" would not tell it.
const CLIENT_METHODS: &[&str] = &[
    "session/update",
    "session/request_permission",
    "fs/read_text_file",
    "fs/write_text_file",
];

/// `-32002`: no session with this id, in memory or stored.
pub fn unknown_session(method: &str, session_id: &SessionId) -> Error {
    let session_id = quoted(&session_id.0);
    Error::new(
        ErrorCode::RESOURCE_NOT_FOUND,
        format!(
            "{method}: no session {session_id} on this server; session/list shows the sessions there are, session/new creates one"
        ),
    )
    .data(json!({ "sessionId": session_id }))
}

/// `-32002`: this connection is not attached to the session, which may or
/// may not exist: finding out would cost a read of the store on a path any
/// client can call at will, so the message covers both.
pub fn not_attached(method: &str, session_id: &SessionId) -> Error {
    let session_id = quoted(&session_id.0);
    Error::new(
        ErrorCode::RESOURCE_NOT_FOUND,
        format!(
            "{method}: this connection is not attached to a session {session_id}; if it exists (session/list shows the sessions there are), attach with session/load or session/resume first, else create one with session/new"
        ),
    )
    .data(json!({ "sessionId": session_id }))
}

/// `-32002`: the session was deleted.
pub fn deleted_session(method: &str, session_id: &SessionId) -> Error {
    let session_id = quoted(&session_id.0);
    Error::new(
        ErrorCode::RESOURCE_NOT_FOUND,
        format!("{method}: session {session_id} was deleted; start a new one with session/new"),
    )
    .data(json!({ "sessionId": session_id }))
}

/// The error for a registry failure of `method`: the client's mistakes are
/// `-32602` or `-32002`, the server's own `-32603`.
pub fn registry(method: &str, error: crate::session::RegistryError) -> Error {
    use crate::session::RegistryError;
    match error {
        RegistryError::Unknown(id) => unknown_session(method, &id),
        RegistryError::Deleted(id) => deleted_session(method, &id),
        RegistryError::InvalidCursor(_) | RegistryError::Workspace(_) | RegistryError::Model(_) => {
            invalid_params(method, error)
        }
        RegistryError::Store(error) => internal(method, error),
    }
}

/// `-32600`: the request is well formed but cannot be served in the session's current state.
pub fn cannot_now(method: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::INVALID_REQUEST,
        fitted(format!("{method}: {why}")),
    )
}

/// `-32603`: something failed on the server's side; `problem` says what.
pub fn internal(method: &str, problem: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::INTERNAL_ERROR,
        fitted(format!("{method}: {problem}")),
    )
}

/// `-32600`: the client skipped `initialize`.
pub fn not_initialized(method: &str) -> Error {
    let method = quoted(method);
    Error::new(
        ErrorCode::INVALID_REQUEST,
        format!("{method}: the connection is not initialized; send initialize first"),
    )
}

/// A message that was not a valid request, answered with its own id.
pub fn invalid_request(params: &serde_json::Value) -> Error {
    let problem = params["problem"]
        .as_str()
        .unwrap_or("it is not a JSON-RPC 2.0 request");
    Error::new(
        ErrorCode::INVALID_REQUEST,
        format!("Invalid request: {problem}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_huge_input_is_quoted_short() {
        let method = "é".repeat(1_000_000);
        let error = method_not_found(&method);
        assert!(error.message.len() < 300, "{}", error.message.len());
        assert!(error.message.contains('…'));
        let error = not_initialized(&method);
        assert!(error.message.len() < 300);
        let error = unknown_session("session/prompt", &SessionId::new(method.clone()));
        assert!(error.message.len() < 500);
        assert!(error.data.is_some_and(|data| data.to_string().len() < 300));
        assert_eq!(quoted("session/new"), "session/new");
    }

    #[test]
    fn a_message_quoting_huge_input_keeps_its_start_and_its_advice() {
        let mode = "é".repeat(1_000_000);
        let error = invalid_params(
            "session/set_mode",
            format!("there is no mode `{mode}`; the modes are `ask`, `edit`, `read-only`"),
        );
        assert!(
            error.message.len() <= MESSAGE_BYTES + 4,
            "{}",
            error.message.len()
        );
        assert!(
            error
                .message
                .starts_with("session/set_mode: there is no mode `éé")
        );
        assert!(
            error
                .message
                .ends_with("éé`; the modes are `ask`, `edit`, `read-only`")
        );
        assert!(error.message.contains('…'));
        let short = invalid_params("session/new", "missing field `cwd`");
        assert_eq!(short.message, "session/new: missing field `cwd`");
    }
}
