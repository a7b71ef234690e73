//! The tools the model can call, and how each call is carried out and
//! reported.
//!
//! Every call is reported to the client as ACP sees tool calls: `tool_call`
//! (kind, title, locations, raw input), then `tool_call_update` to
//! `in_progress`, then `completed` or `failed` with content — a diff for
//! writes and edits, a terminal for commands the client runs (and their
//! output as text, for clients that did not run them), text otherwise: what
//! the model was given, so cut at [`MODEL_OUTPUT_LIMIT`] like it. A call
//! refused before its work began goes through the same three steps.
//! Work is delegated by capability: when the client advertised
//! `fs.readTextFile`, `fs.writeTextFile` or `terminal`, it goes through the
//! client (the IDE sees unsaved buffers and shows the change); otherwise Punie
//! does it itself inside the session's workspace. Either way a path outside
//! the workspace is refused. Writing, editing and running commands ask
//! permission first. The plan the model keeps (`update_plan`) is not a tool
//! call to the person: it reaches the client as ACP's `plan` update. A tool
//! of an MCP server the session's clients named is called through
//! [`crate::mcp`] and reported the same way.
//!
//! This module speaks ACP's tool vocabulary but reaches the client only
//! through [`ClientPort`]; it holds no session state beyond what it is handed.

mod command;
mod encoding;
mod files;
mod find;
mod mcp;
mod permission;
mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agent_client_protocol::v1::schema::{
    ClientCapabilities, ContentBlock, SessionId, SessionUpdate, ToolCall as AcpToolCall,
    ToolCallContent, ToolCallId, ToolCallLocation, ToolCallStatus, ToolCallUpdate,
    ToolCallUpdateFields, ToolKind,
};
use agent_client_protocol::{Error, JsonRpcRequest};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use permission::{LastingAnswers, PermissionMemory, PermissionMode};

use crate::mcp::McpTools;
use crate::model::{Picture, ToolCall, ToolSpec};
use crate::text::code_span;
use crate::workspace::{Terminals, Workspace};

/// Most output of one tool call the model is shown; the rest is cut from the
/// middle (`read_file` reads no further, and says where to read on).
pub const MODEL_OUTPUT_LIMIT: usize = 32 * 1024;

/// Largest file `edit_file` and `write_file` change: they read the whole
/// file, and the diff the person is asked about carries it twice (old and
/// new text) in one message.
pub const MAX_CHANGED_FILE_BYTES: u64 = 16 * 1024 * 1024;

const _: () = assert!(2 * MAX_CHANGED_FILE_BYTES < crate::config::MAX_MESSAGE_BYTES as u64);

/// What a tool can ask of the client that sent the prompt.
pub trait ClientPort: Send + Sync {
    /// What the client that would answer a request now said it can do in
    /// `initialize`; nothing, when no client is there.
    fn capabilities(&self) -> Arc<ClientCapabilities>;

    /// Send a `session/update`; false if the turn should stop because
    /// nobody can receive it.
    fn notify(&self, update: SessionUpdate) -> bool;

    /// Send an agent→client request and wait for the answer. A request may
    /// be sent again to another client, hence `Clone` — but never one about
    /// a terminal, which only the client that created it knows. Once the
    /// turn is cancelled it stops waiting and fails; a `terminal/create`
    /// answered after that is killed and released by the port, since the
    /// caller never learns the terminal's id.
    fn request<R>(&self, request: R) -> impl Future<Output = Result<R::Response, Error>> + Send
    where
        R: JsonRpcRequest + Clone + Send + 'static,
        R::Response: Send + 'static;

    /// Send an agent→client request without waiting for the answer.
    fn send_detached<R>(&self, request: R)
    where
        R: JsonRpcRequest + Send + 'static,
        R::Response: Send + 'static;
}

/// Everything a tool call may use.
pub struct ToolContext<'a, C: ClientPort> {
    pub session_id: &'a SessionId,
    pub workspace: &'a Workspace,
    pub client: &'a C,
    /// Commands Punie runs itself, when the client has no terminal.
    pub terminals: &'a Terminals,
    pub permissions: &'a PermissionMemory,
    /// The tools of the session's MCP servers, as the turn found them.
    pub mcp: &'a McpTools,
    pub cancel: &'a CancellationToken,
}

/// How a tool call ended.
#[derive(Debug)]
pub enum ToolOutcome {
    /// The tool ran (or failed); tell the model this, and show it the
    /// pictures the tool returned.
    Result {
        content: String,
        is_error: bool,
        pictures: Vec<Picture>,
    },
    /// The person cancelled: the turn ends. `stopped` is `None` when the
    /// call's work had not begun (it was not run); else it was cut short,
    /// and this says what it had done so far, if anything is known (a
    /// command's output, say).
    Cancelled { stopped: Option<String> },
}

impl ToolOutcome {
    fn ok(content: impl Into<String>) -> Self {
        Self::Result {
            content: content.into(),
            is_error: false,
            pictures: Vec::new(),
        }
    }

    fn error(content: impl Into<String>) -> Self {
        Self::Result {
            content: content.into(),
            is_error: true,
            pictures: Vec::new(),
        }
    }
}

/// The tools, as the model is told about them.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        spec(
            "read_file",
            &format!(
                "Read a text file in the workspace. `line` (1-based) and `limit` select lines; one read shows at most {} KiB, and says where to read on.",
                MODEL_OUTPUT_LIMIT / 1024
            ),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace root, or absolute inside it"},
                    "line": {"type": "integer", "minimum": 1, "description": "First line to read"},
                    "limit": {"type": "integer", "minimum": 1, "description": "Most lines to read"}
                },
                "required": ["path"]
            }),
        ),
        spec(
            "write_file",
            &format!(
                "Create or replace a file in the workspace with `content`; a file to replace may be at most {} MiB. Asks the user first.",
                MAX_CHANGED_FILE_BYTES / (1024 * 1024)
            ),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string", "description": "The whole new content of the file"}
                },
                "required": ["path", "content"]
            }),
        ),
        spec(
            "edit_file",
            &format!(
                "Replace `old_text` with `new_text` in a file of at most {} MiB. `old_text` must match exactly (in a file with CRLF line endings, its line breaks match CRLF and `new_text` is written with them) and, unless `replace_all` is true, exactly once. Asks the user first.",
                MAX_CHANGED_FILE_BYTES / (1024 * 1024)
            ),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "old_text": {"type": "string", "description": "Exact text to replace, with enough context to be unique"},
                    "new_text": {"type": "string"},
                    "replace_all": {"type": "boolean", "description": "Replace every occurrence", "default": false}
                },
                "required": ["path", "old_text", "new_text"]
            }),
        ),
        spec(
            "list_files",
            "List files under a directory of the workspace, hidden ones included, respecting .gitignore; never what is inside .git. Paths are relative to the workspace root, as every tool takes them. `glob` filters them, e.g. `*.rs`, `src/**/*.toml` or `.github/**`.",
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Directory to list; the workspace root by default"},
                    "glob": {"type": "string", "description": "Only files matching this glob, from the workspace root or from `path`; without `/` it matches file names anywhere"}
                }
            }),
        ),
        spec(
            "search",
            "Search file contents with a regular expression, hidden files included, respecting .gitignore; never inside .git, and not in files that usually hold secrets (.env but not .env.example, private keys, .ssh/, .aws/, .netrc…) unless `path` names one. Prints `path:line: text` for each match, the path relative to the workspace root.",
            json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "A regular expression (Rust regex syntax)"},
                    "path": {"type": "string", "description": "File or directory to search; the workspace root by default"},
                    "glob": {"type": "string", "description": "Only files matching this glob, from the workspace root or from `path`; without `/` it matches file names anywhere"}
                },
                "required": ["pattern"]
            }),
        ),
        spec(
            "run_command",
            "Run a command in the workspace and return its exit status and output. Without `args`, `command` is a shell command line (sh -c); with `args`, it is a program run with those arguments. It returns when the command exits; anything it left running in the background (`cmd &`) is stopped then. Asks the user first.",
            json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "cwd": {"type": "string", "description": "Directory to run in; the workspace root by default"},
                    "timeout_secs": {"type": "integer", "minimum": 1, "maximum": command::MAX_TIMEOUT.as_secs(), "description": "Stop the command after this many seconds, from 1 to 3600 (default 120); more is cut to 3600, and the result says so"}
                },
                "required": ["command"]
            }),
        ),
        spec(
            plan::NAME,
            "Show the user your plan for a task of several steps. Each call replaces the whole plan: call it again with every step whenever one starts or is done.",
            json!({
                "type": "object",
                "properties": {
                    "entries": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "content": {"type": "string", "description": "What the step does"},
                                "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                                "priority": {"type": "string", "enum": ["high", "medium", "low"], "default": "medium"}
                            },
                            "required": ["content", "status"]
                        }
                    }
                },
                "required": ["entries"]
            }),
        ),
    ]
}

fn spec(name: &str, description: &str, parameters: Value) -> ToolSpec {
    ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters,
    }
}

/// Why a tool call stopped short.
#[derive(Debug)]
enum Stop {
    /// The turn was cancelled while the tool ran.
    Cancelled,
    /// The turn was cancelled after the tool's work began, which had done
    /// what this says (a command's output so far, say).
    Interrupted(String),
    /// The tool failed; the message is for the model (and the person).
    Failed(String),
}

impl From<String> for Stop {
    fn from(problem: String) -> Self {
        Self::Failed(problem)
    }
}

impl From<crate::workspace::WorkspaceError> for Stop {
    fn from(error: crate::workspace::WorkspaceError) -> Self {
        Self::Failed(error.to_string())
    }
}

/// Carry out one tool call the model made, reporting it to the client as `id`.
pub async fn run<C: ClientPort>(
    context: &ToolContext<'_, C>,
    call: &ToolCall,
    id: ToolCallId,
) -> ToolOutcome {
    if call.name == plan::NAME {
        return plan::update(context, &call.arguments);
    }
    let heading = heading(context, call);
    // Shown, and asked about, as it is: nothing in a title may make it read
    // as another file or another command.
    let title = crate::text::marks_shown(&heading.title).into_owned();
    let report = Report::new(context, call, id, title);
    report.start(heading.kind, heading.locations);
    let outcome = match call.name.as_str() {
        "read_file" => files::read(context, &report, &call.arguments).await,
        "write_file" => files::write(context, &report, &call.arguments).await,
        "edit_file" => files::edit(context, &report, &call.arguments).await,
        "list_files" => find::list(context, &report, &call.arguments).await,
        "search" => find::search(context, &report, &call.arguments).await,
        "run_command" => command::run(context, &report, &call.arguments).await,
        other => match context.mcp.get(other) {
            Some(tool) => mcp::call(context, &report, tool, &call.arguments).await,
            None => Err(no_such_tool(context, other)),
        },
    };
    match outcome {
        Ok(outcome) => outcome,
        Err(stop) => {
            let (message, outcome) = match stop {
                // Work that had begun was stopped, not skipped: a command may
                // have changed files already, and the model must not think
                // otherwise.
                Stop::Cancelled if report.began() => stopped_by_cancel(String::new()),
                Stop::Interrupted(so_far) => stopped_by_cancel(so_far),
                Stop::Cancelled => (
                    "Cancelled".to_owned(),
                    ToolOutcome::Cancelled { stopped: None },
                ),
                Stop::Failed(problem) => (problem.clone(), ToolOutcome::error(problem)),
            };
            report.finish(ToolCallStatus::Failed, vec![text_content(&message)]);
            outcome
        }
    }
}

/// The model called a tool it does not have: named are those the
/// session's mode offers it.
fn no_such_tool<C: ClientPort>(context: &ToolContext<'_, C>, name: &str) -> Stop {
    let mode = context.permissions.mode();
    let names: Vec<String> = specs()
        .into_iter()
        .filter(|tool| mode.offers(&tool.name))
        .chain(context.mcp.specs(mode.offers_asking_tools()))
        .map(|tool| tool.name)
        .collect();
    Stop::Failed(format!(
        "there is no tool named `{name}`; the tools are {}",
        names.join(", ")
    ))
}

/// What the client is shown of a call the cancel cut short, and the outcome
/// that tells the turn so.
fn stopped_by_cancel(so_far: String) -> (String, ToolOutcome) {
    let mut message = "Stopped before it finished: the turn was cancelled".to_owned();
    if !so_far.is_empty() {
        message.push_str("; ");
        message.push_str(&so_far);
    }
    let outcome = ToolOutcome::Cancelled {
        stopped: Some(so_far),
    };
    (message, outcome)
}

/// Send `request` to the client, unless the turn is cancelled first.
async fn ask_client<C, R>(context: &ToolContext<'_, C>, request: R) -> Result<R::Response, Stop>
where
    C: ClientPort,
    R: JsonRpcRequest + Send + 'static,
    R::Response: Send + 'static,
{
    let method = request.method().to_owned();
    tokio::select! {
        biased;
        () = context.cancel.cancelled() => Err(Stop::Cancelled),
        answer = context.client.request(request) => {
            answer.map_err(|error| Stop::Failed(format!("the client could not do {method}: {}", error.message)))
        }
    }
}

/// How a call is shown to the person.
struct Heading {
    kind: ToolKind,
    title: String,
    locations: Vec<PathBuf>,
}

/// How `call` is shown, worked out from its raw arguments alone: a call
/// refused for its arguments or its path is still shown as what it tried to
/// do. Only paths inside the workspace become locations: a client is never
/// pointed at a path the call was refused for.
fn heading<C: ClientPort>(context: &ToolContext<'_, C>, call: &ToolCall) -> Heading {
    let raw = &call.arguments;
    let text = |key: &str| raw.get(key).and_then(Value::as_str);
    let file = |kind, verb: &str| {
        let (place, location) = match text("path") {
            Some(path) => place(context, path),
            None => ("a file".to_owned(), None),
        };
        Heading {
            kind,
            title: format!("{verb} {place}"),
            locations: location.into_iter().collect(),
        }
    };
    let directory = |key: &str| match text(key) {
        Some(path) => place(context, path),
        None => (
            "the workspace".to_owned(),
            Some(context.workspace.named_root().to_owned()),
        ),
    };
    match call.name.as_str() {
        "read_file" => file(ToolKind::Read, "Read"),
        "write_file" => file(ToolKind::Edit, "Write"),
        "edit_file" => file(ToolKind::Edit, "Edit"),
        "list_files" | "search" => {
            let (place, location) = directory("path");
            let title = match (call.name.as_str(), text("glob"), text("pattern")) {
                ("list_files", Some(glob), _) => format!("List {glob} in {place}"),
                ("list_files", None, _) => format!("List {place}"),
                (_, _, Some(pattern)) => format!("Search for {} in {place}", code_span(pattern)),
                (_, _, None) => format!("Search {place}"),
            };
            // A location is a file a client may open to follow along: a
            // directory searched is none (Zed would try to open it).
            Heading {
                kind: ToolKind::Search,
                title,
                locations: location.filter(|path| path.is_file()).into_iter().collect(),
            }
        }
        "run_command" => {
            let (place, location) = directory("cwd");
            let at_root = location.as_deref() == Some(context.workspace.named_root());
            let title = match command_line(raw) {
                Some(line) if at_root => format!("Run {}", code_span(&line)),
                Some(line) => format!("Run {} in {place}", code_span(&line)),
                None => "Run a command".to_owned(),
            };
            // Where a command runs is no file to follow.
            Heading {
                kind: ToolKind::Execute,
                title,
                locations: Vec::new(),
            }
        }
        other => Heading {
            kind: ToolKind::Other,
            title: match context.mcp.get(other) {
                Some(tool) => format!("{} ({})", tool.title, tool.server),
                None => format!("Call {}", code_span(other)),
            },
            locations: Vec::new(),
        },
    }
}

/// A path argument as the person reads it, and where it is, as the client
/// knows the workspace, when the workspace allows it; a refused path is
/// shown as the model wrote it.
fn place<C: ClientPort>(context: &ToolContext<'_, C>, path: &str) -> (String, Option<PathBuf>) {
    match context.workspace.resolve(Path::new(path)) {
        Ok(real) => (
            shown(context, &real),
            Some(context.workspace.as_named(&real)),
        ),
        Err(_) => (path.to_owned(), None),
    }
}

/// The command line of a `run_command` call: `command`, then `args` if any.
fn command_line(raw: &Value) -> Option<String> {
    let command = raw.get("command")?.as_str()?;
    let args = raw.get("args").and_then(Value::as_array);
    Some(
        std::iter::once(command)
            .chain(args.into_iter().flatten().filter_map(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `path` as the person reads it: relative to the workspace when inside it.
fn shown(context: &ToolContext<'_, impl ClientPort>, path: &Path) -> String {
    match path.strip_prefix(context.workspace.root()) {
        Ok(relative) if relative.as_os_str().is_empty() => "the workspace".to_owned(),
        Ok(relative) => relative.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// The arguments of a tool call as `T`, or a message for the model saying what is wrong.
fn arguments<T: DeserializeOwned>(tool: &str, arguments: &Value) -> Result<T, String> {
    if let Value::String(raw) = arguments {
        return Err(format!("the arguments of {tool} are not valid JSON: {raw}"));
    }
    let mut arguments = arguments.clone();
    whole_floats_as_integers(&mut arguments);
    serde_path_to_error::deserialize(arguments).map_err(|error| {
        let path = error.path().to_string();
        let problem = in_plain_words(&error.into_inner().to_string());
        if path == "." {
            format!("invalid arguments for {tool}: {problem}")
        } else {
            format!("invalid arguments for {tool}: `{path}`: {problem}")
        }
    })
}

/// A deserializing error with Rust's names for numbers said as the model
/// reads a JSON schema: "expected u32" tells it nothing of what to write.
fn in_plain_words(problem: &str) -> String {
    problem
        .replace(
            "expected u32",
            &format!("expected a whole number from 0 to {}", u32::MAX),
        )
        .replace("expected u64", "expected a whole number, 0 or more")
}

/// Models write `30.0` for an integer now and then, and JSON Schema counts
/// it as one: read every whole float as the integer it is.
fn whole_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
                && float.abs() < 2f64.powi(53)
            {
                // Exact below 2^53, so the cast loses nothing.
                *number = serde_json::Number::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

/// Reports one tool call's progress to the client.
struct Report<'a, C: ClientPort> {
    client: &'a C,
    id: ToolCallId,
    title: String,
    raw_input: Value,
    /// Whether `in_progress` has been sent.
    progressed: AtomicBool,
    /// Whether the call's work has begun: a cancel from then on stops it
    /// part way rather than before it ran.
    began: AtomicBool,
}

impl<'a, C: ClientPort> Report<'a, C> {
    fn new(context: &ToolContext<'a, C>, call: &ToolCall, id: ToolCallId, title: String) -> Self {
        Self {
            client: context.client,
            id,
            title,
            raw_input: call.arguments.clone(),
            progressed: AtomicBool::new(false),
            began: AtomicBool::new(false),
        }
    }

    /// What the call does, as the person is asked about it.
    fn title(&self) -> &str {
        &self.title
    }

    /// `tool_call`: what is about to happen, pending.
    fn start(&self, kind: ToolKind, locations: Vec<PathBuf>) {
        let call = AcpToolCall::new(self.id.clone(), self.title.clone())
            .kind(kind)
            .status(ToolCallStatus::Pending)
            .locations(
                locations
                    .into_iter()
                    .map(ToolCallLocation::new)
                    .collect::<Vec<_>>(),
            )
            .raw_input(self.raw_input.clone());
        self.client.notify(SessionUpdate::ToolCall(call));
    }

    /// The fields of an update for this call.
    fn update(&self, fields: ToolCallUpdateFields) -> ToolCallUpdate {
        ToolCallUpdate::new(self.id.clone(), fields)
    }

    /// The call's work begins before it is shown in progress (a command
    /// the client is asked to start, say).
    fn begin(&self) {
        self.began.store(true, Ordering::Relaxed);
    }

    fn began(&self) -> bool {
        self.began.load(Ordering::Relaxed)
    }

    /// `in_progress`: the call's work begins.
    fn progress(&self, content: Vec<ToolCallContent>) {
        self.begin();
        self.progressed.store(true, Ordering::Relaxed);
        let mut fields = ToolCallUpdateFields::new().status(ToolCallStatus::InProgress);
        if !content.is_empty() {
            fields = fields.content(content);
        }
        self.client
            .notify(SessionUpdate::ToolCallUpdate(self.update(fields)));
    }

    /// The last update. A call that stopped before its work began still
    /// passes through `in_progress`, so every client sees the same sequence.
    fn finish(&self, status: ToolCallStatus, content: Vec<ToolCallContent>) {
        if !self.progressed.load(Ordering::Relaxed) {
            self.progress(Vec::new());
        }
        let fields = ToolCallUpdateFields::new().status(status).content(content);
        self.client
            .notify(SessionUpdate::ToolCallUpdate(self.update(fields)));
    }
}

fn text_content(text: &str) -> ToolCallContent {
    ToolCallContent::from(ContentBlock::from(text.to_owned()))
}

/// `text`, cut from the middle if it is longer than the model should read,
/// the cut marked with how many bytes it took.
fn for_the_model(text: &str) -> String {
    if text.len() <= MODEL_OUTPUT_LIMIT {
        return text.to_owned();
    }
    let half = MODEL_OUTPUT_LIMIT / 2;
    let head_end = text.floor_char_boundary(half);
    let tail_start = text.floor_char_boundary(text.len() - half);
    if tail_start <= head_end {
        // Just over the limit, with a character across the middle: both
        // halves end at its boundary and nothing would be cut.
        return text.to_owned();
    }
    format!(
        "{}\n[… {} bytes cut …]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

/// `count` `noun`s, in the singular for one: "1 line", "3 lines".
fn counted(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema() {
        let specs = specs();
        assert_eq!(specs.len(), 7);
        for spec in &specs {
            assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
        }
    }

    #[test]
    fn long_output_is_cut_from_the_middle() {
        let text = format!(
            "{}{}",
            "a".repeat(MODEL_OUTPUT_LIMIT),
            "é".repeat(MODEL_OUTPUT_LIMIT)
        );
        let cut = for_the_model(&text);
        assert!(cut.len() < MODEL_OUTPUT_LIMIT + 100);
        assert!(cut.starts_with('a') && cut.ends_with('é'));
        assert!(cut.contains("bytes cut"));
    }

    #[test]
    fn text_just_over_the_limit_with_a_character_across_the_middle_is_kept_whole() {
        let half = "a".repeat(MODEL_OUTPUT_LIMIT / 2);
        let text = format!("{half}é{}", &half[1..]);
        assert_eq!(text.len(), MODEL_OUTPUT_LIMIT + 1);
        assert_eq!(for_the_model(&text), text);
    }

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(counted(0, "step"), "0 steps");
        assert_eq!(counted(1, "step"), "1 step");
        assert_eq!(counted(2, "line"), "2 lines");
    }

    #[test]
    fn a_whole_float_is_read_as_an_integer_and_a_fraction_is_refused() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Args {
            line: u32,
            nested: Vec<u64>,
        }
        let read = arguments::<Args>("read_file", &json!({"line": 30.0, "nested": [2.0, 3]}));
        assert_eq!(
            read,
            Ok(Args {
                line: 30,
                nested: vec![2, 3]
            })
        );
        let error =
            arguments::<Args>("read_file", &json!({"line": 2.5, "nested": []})).unwrap_err();
        assert!(error.contains("`line`"), "{error}");
    }

    #[test]
    fn malformed_arguments_are_explained() {
        #[derive(serde::Deserialize, Debug)]
        struct Args {
            #[allow(dead_code)]
            path: String,
        }
        let error = arguments::<Args>("read_file", &json!({"path": 3})).unwrap_err();
        assert!(error.contains("`path`"), "{error}");
        let error = arguments::<Args>("read_file", &Value::String("{oops".into())).unwrap_err();
        assert!(error.contains("not valid JSON"), "{error}");
    }

    #[test]
    fn a_number_out_of_range_is_explained_without_rust_names() {
        #[derive(serde::Deserialize, Debug)]
        struct Args {
            #[allow(dead_code)]
            line: u32,
        }
        let error = arguments::<Args>("read_file", &json!({"line": -1})).unwrap_err();
        assert_eq!(
            error,
            "invalid arguments for read_file: `line`: invalid value: integer `-1`, expected a \
             whole number from 0 to 4294967295"
        );
    }
}
