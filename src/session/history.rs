//! Reading a stored history back: the conversation the model continues from,
//! the updates `session/load` replays, and what a turn cut short by a server
//! stop leaves to be recorded (the messages the model is owed, and the final
//! state of the tool calls the clients saw begin).
//!
//! A replay is what the clients saw, made compact: agent text and thoughts
//! coalesced into few chunks, each tool call in its final state, the latest
//! token usage once at the end.

use std::collections::HashMap;

use agent_client_protocol::v1::schema::{
    ContentBlock, ContentChunk, Meta, SessionInfoUpdate, SessionUpdate, TerminalId, TextContent,
    ToolCallContent, ToolCallId, ToolCallStatus, ToolCallUpdate, ToolCallUpdateFields,
};

use crate::model::Message;
use crate::store::{Entry, EntryKind};

/// Largest coalesced text chunk of a replay, in bytes.
const REPLAY_CHUNK_BYTES: usize = 64 * 1024;

/// What the model is told about a tool call the server never began.
const NOT_RUN_STOPPED: &str = "not run: the server stopped during the turn";

/// What the model is told about the tool call that had begun when the
/// server stopped: whether it had done anything is not known.
const BEGUN_STOPPED: &str = "begun, then not finished: the server stopped while it ran; \
                             it may have had effects (a file written, a command run) — \
                             check before doing it again";

/// What clients are shown of a tool call the server never finished.
const STOPPED: &str = "not finished: the server stopped during the turn; the turn was cancelled";

/// The conversation as the model sees it: every message, but for those of
/// turns the model refused (ACP's `refusal`: the prompt and all after it
/// are left out of the next prompt).
pub fn conversation(entries: &[Entry]) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut turn_starts_at = 0;
    for entry in entries {
        match entry.kind {
            EntryKind::TurnStarted => turn_starts_at = messages.len(),
            EntryKind::TurnEnded if ended_in_refusal(entry) => messages.truncate(turn_starts_at),
            EntryKind::Message => messages.extend(parse::<Message>(entry)),
            EntryKind::TurnEnded | EntryKind::Update => {}
        }
    }
    messages
}

fn ended_in_refusal(turn_ended: &Entry) -> bool {
    serde_json::from_str::<serde_json::Value>(&turn_ended.body)
        .is_ok_and(|ended| ended["stopReason"] == "refusal")
}

/// Where a notice to the person is marked in its chunk's `_meta`.
const NOTICE_MARK: &str = "punie/notice";

/// Agent text for the person, not from the model (a server that could not
/// start, pictures a model server refused): marked, so that a turn cut off
/// by a crash does not hand it to the model as its own words.
pub(super) fn notice(text: String) -> SessionUpdate {
    let mut meta = agent_client_protocol::v1::schema::Meta::new();
    meta.insert(NOTICE_MARK.to_owned(), serde_json::Value::Bool(true));
    SessionUpdate::AgentMessageChunk(ContentChunk::new(ContentBlock::from(text)).meta(meta))
}

fn is_notice(chunk: &ContentChunk) -> bool {
    chunk
        .meta
        .as_ref()
        .is_some_and(|meta| meta.contains_key(NOTICE_MARK))
}

/// The updates to replay, up to and including entry `newest`.
pub fn replay(entries: &[Entry], newest: i64) -> Vec<SessionUpdate> {
    let mut replay = Replay::default();
    for entry in entries.iter().take_while(|entry| entry.seq <= newest) {
        match entry.kind {
            EntryKind::Update => {
                if let Some(update) = parse::<SessionUpdate>(entry) {
                    // No client that loads a session knows a terminal of the
                    // turns before: the output is beside it as text.
                    replay.push(without_terminals(&update).unwrap_or(update));
                }
            }
            EntryKind::TurnStarted => replay.break_text(),
            EntryKind::TurnEnded => {
                let ended = serde_json::from_str(&entry.body).ok();
                match ended.as_ref().and_then(turn_ended_update) {
                    Some(update) => replay.push_other(update),
                    None => replay.break_text(),
                }
            }
            EntryKind::Message => {}
        }
    }
    replay.finish()
}

/// The tool calls of the turn running at entry `newest` that have not
/// finished, each as it stands: what a client attaching without a replay
/// needs to make sense of their next updates, and of a permission request
/// about one.
pub fn unfinished_tool_calls(entries: &[Entry], newest: i64) -> Vec<SessionUpdate> {
    let upto = entries.partition_point(|entry| entry.seq <= newest);
    let entries = &entries[..upto];
    let turn_start = entries
        .iter()
        .rposition(|entry| entry.kind == EntryKind::TurnStarted)
        .map_or(0, |at| at + 1);
    replay(&entries[turn_start..], newest)
        .into_iter()
        .filter(|update| {
            matches!(update, SessionUpdate::ToolCall(call)
                if matches!(call.status, ToolCallStatus::Pending | ToolCallStatus::InProgress))
        })
        .collect()
}

/// The client terminals a tool call's update shows.
pub(super) fn terminals_shown(update: &SessionUpdate) -> impl Iterator<Item = &TerminalId> {
    let content = match update {
        SessionUpdate::ToolCall(call) => call.content.as_slice(),
        SessionUpdate::ToolCallUpdate(update) => update.fields.content.as_deref().unwrap_or(&[]),
        _ => &[],
    };
    content.iter().filter_map(|item| match item {
        ToolCallContent::Terminal(terminal) => Some(&terminal.terminal_id),
        _ => None,
    })
}

/// `update` without the client terminals it shows, when it shows any.
pub(super) fn without_terminals(update: &SessionUpdate) -> Option<SessionUpdate> {
    terminals_shown(update).next()?;
    let is_terminal = |item: &ToolCallContent| matches!(item, ToolCallContent::Terminal(_));
    let mut update = update.clone();
    match &mut update {
        SessionUpdate::ToolCall(call) => call.content.retain(|item| !is_terminal(item)),
        SessionUpdate::ToolCallUpdate(update) => {
            if let Some(content) = &mut update.fields.content {
                content.retain(|item| !is_terminal(item));
            }
        }
        _ => {}
    }
    Some(update)
}

/// Where a `session_info_update` says how a turn ended:
/// `_meta["punie/turnEnded"]`, with its `stopReason` (ACP's, or `error`),
/// and the `error` or the `note` saying why when there is one.
pub const TURN_ENDED_META: &str = "punie/turnEnded";

/// How a turn ended (a stored turn-end record), as clients are told it: ACP
/// has no notification for it, and only the client that sent the prompt gets
/// its answer. `None` for a record without a stop reason.
pub fn turn_ended_update(ended: &serde_json::Value) -> Option<SessionUpdate> {
    ended.get("stopReason")?.as_str()?;
    let said: serde_json::Map<_, _> = ended
        .as_object()?
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let mut meta = Meta::new();
    meta.insert(TURN_ENDED_META.to_owned(), said.into());
    Some(SessionUpdate::SessionInfoUpdate(
        SessionInfoUpdate::new().meta(meta),
    ))
}

#[derive(Default)]
struct Replay {
    updates: Vec<SessionUpdate>,
    /// Where each tool call is in `updates`.
    tool_calls: HashMap<String, usize>,
    usage: Option<SessionUpdate>,
    /// The last update may take more text.
    text_open: bool,
}

impl Replay {
    fn push(&mut self, update: SessionUpdate) {
        match update {
            SessionUpdate::AgentMessageChunk(chunk) => {
                self.push_text(chunk, SessionUpdate::AgentMessageChunk);
            }
            SessionUpdate::AgentThoughtChunk(chunk) => {
                self.push_text(chunk, SessionUpdate::AgentThoughtChunk);
            }
            SessionUpdate::UserMessageChunk(chunk) => {
                self.push_text(chunk, SessionUpdate::UserMessageChunk);
            }
            SessionUpdate::ToolCall(call) => {
                self.tool_calls
                    .insert(call.tool_call_id.0.to_string(), self.updates.len());
                self.push_other(SessionUpdate::ToolCall(call));
            }
            SessionUpdate::ToolCallUpdate(update) => {
                let known = self.tool_calls.get(&*update.tool_call_id.0).copied();
                match known.and_then(|index| self.updates.get_mut(index)) {
                    Some(SessionUpdate::ToolCall(call)) => call.update(update.fields),
                    _ => self.push_other(SessionUpdate::ToolCallUpdate(update)),
                }
            }
            SessionUpdate::UsageUpdate(usage) => {
                self.usage = Some(SessionUpdate::UsageUpdate(usage));
            }
            other => self.push_other(other),
        }
    }

    /// Text joins the previous chunk when both are text of the same kind.
    fn push_text(&mut self, chunk: ContentChunk, wrap: fn(ContentChunk) -> SessionUpdate) {
        if self.text_open
            && let ContentBlock::Text(text) = &chunk.content
            && let Some(last) = self.updates.last_mut()
            && let Some(previous) = same_kind_text(last, wrap)
            && previous.len() + text.text.len() <= REPLAY_CHUNK_BYTES
        {
            previous.push_str(&text.text);
            return;
        }
        let is_text = matches!(chunk.content, ContentBlock::Text(_));
        self.updates.push(wrap(chunk));
        self.text_open = is_text;
    }

    fn push_other(&mut self, update: SessionUpdate) {
        self.updates.push(update);
        self.text_open = false;
    }

    /// A turn boundary: the next text starts a chunk of its own.
    fn break_text(&mut self) {
        self.text_open = false;
    }

    fn finish(mut self) -> Vec<SessionUpdate> {
        self.updates.extend(self.usage);
        self.updates
    }
}

/// The text of `update` if it is a text chunk of the kind `wrap` makes.
fn same_kind_text(
    update: &mut SessionUpdate,
    wrap: fn(ContentChunk) -> SessionUpdate,
) -> Option<&mut String> {
    let probe = wrap(ContentChunk::new(ContentBlock::Text(TextContent::new(""))));
    let chunk = match (update, probe) {
        (SessionUpdate::AgentMessageChunk(chunk), SessionUpdate::AgentMessageChunk(_))
        | (SessionUpdate::AgentThoughtChunk(chunk), SessionUpdate::AgentThoughtChunk(_))
        | (SessionUpdate::UserMessageChunk(chunk), SessionUpdate::UserMessageChunk(_)) => chunk,
        _ => return None,
    };
    match &mut chunk.content {
        ContentBlock::Text(text) => Some(&mut text.text),
        _ => None,
    }
}

/// The entries of the last turn, after its start; none if no turn began.
fn last_turn(entries: &[Entry]) -> &[Entry] {
    entries
        .iter()
        .rposition(|entry| entry.kind == EntryKind::TurnStarted)
        .map_or(&[], |start| &entries[start + 1..])
}

/// The updates a turn the server stopped in still owes its clients: each
/// tool call they saw begin but never saw end ends `failed`, saying why, so
/// that a replay shows no call still waiting or running.
pub fn unfinished_turn_updates(entries: &[Entry]) -> Vec<SessionUpdate> {
    // Every call the turn reported, in order, with its latest status.
    let mut calls: Vec<(ToolCallId, ToolCallStatus)> = Vec::new();
    for entry in last_turn(entries) {
        if entry.kind != EntryKind::Update {
            continue;
        }
        match parse(entry) {
            Some(SessionUpdate::ToolCall(call)) => calls.push((call.tool_call_id, call.status)),
            Some(SessionUpdate::ToolCallUpdate(update)) => {
                if let Some(status) = update.fields.status
                    && let Some((_, latest)) =
                        calls.iter_mut().find(|(id, _)| *id == update.tool_call_id)
                {
                    *latest = status;
                }
            }
            _ => {}
        }
    }
    calls
        .into_iter()
        .filter(|(_, status)| !matches!(status, ToolCallStatus::Completed | ToolCallStatus::Failed))
        .map(|(id, _)| {
            let why = ToolCallContent::from(ContentBlock::from(STOPPED.to_owned()));
            let fields = ToolCallUpdateFields::new()
                .status(ToolCallStatus::Failed)
                .content(vec![why]);
            SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(id, fields))
        })
        .collect()
}

/// The messages a turn the server stopped in still owes the conversation:
/// an answer for each tool call it never finished, then the text the clients
/// saw that no message holds yet.
pub fn unfinished_turn_messages(entries: &[Entry]) -> Vec<Message> {
    let turn = last_turn(entries);
    if turn.is_empty() {
        return Vec::new();
    }
    let messages: Vec<(usize, Message)> = turn
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.kind == EntryKind::Message)
        .filter_map(|(index, entry)| Some((index, parse::<Message>(entry)?)))
        .collect();

    let mut owed = Vec::new();
    if let Some((asked, calls)) =
        messages
            .iter()
            .enumerate()
            .rev()
            .find_map(|(at, (_, message))| match message {
                Message::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                    Some((at, tool_calls))
                }
                _ => None,
            })
    {
        let mut begun = calls_begun_after(&turn[messages[asked].0 + 1..]);
        for call in calls {
            // Only an answer after the call counts: a provider may reuse an
            // id an earlier round's call had.
            let answered = messages[asked + 1..].iter().any(|(_, message)| {
                matches!(message, Message::ToolResult { call_id, .. } if *call_id == call.id)
            });
            if !answered {
                let told = if took_begun(&mut begun, &call.id) {
                    BEGUN_STOPPED
                } else {
                    NOT_RUN_STOPPED
                };
                owed.push(Message::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: told.to_owned(),
                    is_error: true,
                });
            }
        }
    }

    let unsaid_from = messages.last().map_or(0, |(index, _)| index + 1);
    let text: String = turn[unsaid_from..]
        .iter()
        .filter(|entry| entry.kind == EntryKind::Update)
        .filter_map(|entry| match parse(entry)? {
            SessionUpdate::AgentMessageChunk(chunk) if is_notice(&chunk) => None,
            SessionUpdate::AgentMessageChunk(ContentChunk {
                content: ContentBlock::Text(text),
                ..
            }) => Some(text.text),
            _ => None,
        })
        .collect();
    if !text.is_empty() {
        owed.push(Message::assistant(text));
    }
    owed
}

/// The ids clients know the tool calls of a round by that had begun, from
/// the updates after the model asked for them: each is reported to its
/// clients as it begins (all but the plan, which is no tool call to them).
fn calls_begun_after(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Update)
        .filter_map(|entry| match parse(entry)? {
            SessionUpdate::ToolCall(call) => Some(call.tool_call_id.0.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether the call the model knows as `id` is among `begun`, which it
/// leaves: clients know it by that id, or by that id and a suffix when the
/// session had used it already (see `Turn::client_id`).
fn took_begun(begun: &mut Vec<String>, id: &str) -> bool {
    let known_as = |client_id: &String| {
        client_id
            .strip_prefix(id)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    };
    match begun.iter().position(known_as) {
        Some(at) => {
            begun.remove(at);
            true
        }
        None => false,
    }
}

fn parse<T: serde::de::DeserializeOwned>(entry: &Entry) -> Option<T> {
    match serde_json::from_str(&entry.body) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(
                seq = entry.seq,
                "skipped a stored entry that cannot be read: {error}"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::v1::schema::{
        ToolCall, ToolCallStatus, ToolCallUpdate, ToolCallUpdateFields,
    };

    fn entries(items: Vec<(EntryKind, String)>) -> Vec<Entry> {
        items
            .into_iter()
            .enumerate()
            .map(|(index, (kind, body))| Entry {
                seq: index as i64 + 1,
                kind,
                body,
            })
            .collect()
    }

    fn update(update: SessionUpdate) -> (EntryKind, String) {
        (EntryKind::Update, serde_json::to_string(&update).unwrap())
    }

    fn message(message: Message) -> (EntryKind, String) {
        (EntryKind::Message, serde_json::to_string(&message).unwrap())
    }

    fn text(kind: fn(ContentChunk) -> SessionUpdate, text: &str) -> SessionUpdate {
        kind(ContentChunk::new(ContentBlock::from(text.to_owned())))
    }

    fn tool_call(id: &str, name: &str) -> crate::model::ToolCall {
        crate::model::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: serde_json::json!({}),
        }
    }

    /// The model asking for `calls`.
    fn asked(calls: Vec<crate::model::ToolCall>) -> (EntryKind, String) {
        message(Message::Assistant {
            text: String::new(),
            tool_calls: calls,
            reasoning: Default::default(),
        })
    }

    /// A call's answer, as the model is given it.
    fn answered(id: &str, name: &str, content: &str) -> (EntryKind, String) {
        message(Message::ToolResult {
            call_id: id.into(),
            name: name.into(),
            content: content.into(),
            is_error: false,
        })
    }

    #[test]
    fn a_replay_coalesces_text_and_shows_tool_calls_in_their_final_state() {
        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            update(text(SessionUpdate::UserMessageChunk, "hi")),
            update(text(SessionUpdate::AgentMessageChunk, "Hel")),
            update(text(SessionUpdate::AgentMessageChunk, "lo")),
            update(SessionUpdate::ToolCall(ToolCall::new("c1", "Read a"))),
            update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                "c1",
                ToolCallUpdateFields::new().status(ToolCallStatus::Completed),
            ))),
            update(text(SessionUpdate::AgentMessageChunk, "done")),
            (EntryKind::TurnEnded, "{}".into()),
        ]);
        let replay = replay(&stored, i64::MAX);
        assert_eq!(replay.len(), 4, "{replay:?}");
        assert!(
            matches!(&replay[1], SessionUpdate::AgentMessageChunk(chunk) if matches!(&chunk.content, ContentBlock::Text(t) if t.text == "Hello"))
        );
        assert!(
            matches!(&replay[2], SessionUpdate::ToolCall(call) if call.status == ToolCallStatus::Completed)
        );
    }

    #[test]
    fn the_conversation_read_back_leaves_out_the_turns_the_model_refused() {
        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            message(Message::user("first")),
            message(Message::assistant("One.")),
            (EntryKind::TurnEnded, r#"{"stopReason":"end_turn"}"#.into()),
            (EntryKind::TurnStarted, "2".into()),
            message(Message::user("second")),
            message(Message::assistant("No.")),
            (EntryKind::TurnEnded, r#"{"stopReason":"refusal"}"#.into()),
            (EntryKind::TurnStarted, "3".into()),
            message(Message::user("third")),
        ]);
        assert_eq!(
            conversation(&stored),
            vec![
                Message::user("first"),
                Message::assistant("One."),
                Message::user("third")
            ]
        );
    }

    #[test]
    fn a_replay_stops_at_the_newest_entry_it_was_given() {
        let stored = entries(vec![
            update(text(SessionUpdate::AgentMessageChunk, "a")),
            update(text(SessionUpdate::AgentThoughtChunk, "b")),
        ]);
        assert_eq!(replay(&stored, 1).len(), 1);
    }

    #[test]
    fn an_interrupted_turn_owes_its_unanswered_calls_and_its_unsaid_text() {
        let call = tool_call("c1", "read_file");
        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            message(Message::user("go")),
            asked(vec![call.clone()]),
        ]);
        let owed = unfinished_turn_messages(&stored);
        assert!(matches!(&owed[..], [Message::ToolResult { call_id, .. }] if call_id == "c1"));

        // The same id again in the next round: the earlier answer is not its.
        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            message(Message::user("go")),
            asked(vec![call.clone()]),
            answered("c1", "read_file", "text"),
            asked(vec![call]),
        ]);
        let owed = unfinished_turn_messages(&stored);
        assert!(matches!(&owed[..], [Message::ToolResult { call_id, .. }] if call_id == "c1"));

        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            message(Message::user("go")),
            update(notice("a server could not start\n\n".to_owned())),
            update(text(SessionUpdate::AgentMessageChunk, "half an ")),
            update(text(SessionUpdate::AgentMessageChunk, "answer")),
        ]);
        assert_eq!(
            unfinished_turn_messages(&stored),
            vec![Message::assistant("half an answer")],
            "the model's words, without what was said to the person"
        );
    }

    #[test]
    fn an_interrupted_turn_tells_the_model_which_call_had_begun() {
        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            message(Message::user("go")),
            asked(vec![
                tool_call("plan", "update_plan"),
                tool_call("c1", "run_command"),
                tool_call("c2", "run_command"),
                tool_call("c3", "run_command"),
            ]),
            answered("plan", "update_plan", "Plan updated."),
            update(SessionUpdate::ToolCall(ToolCall::new("c1", "Run a"))),
            answered("c1", "run_command", "exit code 0"),
            update(SessionUpdate::ToolCall(ToolCall::new("c2", "Run b"))),
        ]);
        let owed = unfinished_turn_messages(&stored);
        let told: Vec<(&str, &str)> = owed
            .iter()
            .filter_map(|message| match message {
                Message::ToolResult {
                    call_id, content, ..
                } => Some((call_id.as_str(), content.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(told, [("c2", BEGUN_STOPPED), ("c3", NOT_RUN_STOPPED)]);
    }

    #[test]
    fn an_interrupted_turn_ends_the_tool_calls_it_left_unfinished() {
        let status = |id: &str, status| {
            update(SessionUpdate::ToolCallUpdate(ToolCallUpdate::new(
                id.to_owned(),
                ToolCallUpdateFields::new().status(status),
            )))
        };
        let stored = entries(vec![
            (EntryKind::TurnStarted, "1".into()),
            update(SessionUpdate::ToolCall(ToolCall::new("done", "Read a"))),
            status("done", ToolCallStatus::Completed),
            update(SessionUpdate::ToolCall(ToolCall::new("running", "Run b"))),
            status("running", ToolCallStatus::InProgress),
            update(SessionUpdate::ToolCall(ToolCall::new("asking", "Write c"))),
        ]);
        let owed = unfinished_turn_updates(&stored);
        let ended: Vec<&str> = owed
            .iter()
            .map(|update| match update {
                SessionUpdate::ToolCallUpdate(update) => {
                    assert_eq!(update.fields.status, Some(ToolCallStatus::Failed));
                    &*update.tool_call_id.0
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ended, ["running", "asking"]);

        let mut stored = stored;
        stored.extend(entries(owed.into_iter().map(update).collect()));
        let replayed = replay(&stored, i64::MAX);
        assert!(
            replayed.iter().all(|update| matches!(update,
                SessionUpdate::ToolCall(call) if matches!(call.status, ToolCallStatus::Completed | ToolCallStatus::Failed))),
            "{replayed:?}"
        );
    }
}
