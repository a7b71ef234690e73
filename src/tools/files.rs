//! `read_file`, `write_file` and `edit_file`: through the client's `fs/*`
//! when it offers them (so the IDE sees unsaved buffers and shows the
//! change), else on disk inside the workspace.
//!
//! Only regular files: a named pipe or a device would hold the turn for
//! ever. A read goes no further than the lines asked for and what the model
//! is shown at once; a change reads the whole file, so it takes files of at
//! most [`MAX_CHANGED_FILE_BYTES`], and writes nothing if the file changed
//! while the person was asked about it.
//!
//! Models write lines ending in `\n`: an edit of a file whose lines end in
//! `\r\n` matches and writes them so. Read from disk, UTF-16 text is shown
//! decoded, and a change to it is written back as UTF-16 of the same form
//! (byte order and byte-order mark), by Punie, as an editor that could not
//! read it would not write it so; a binary file is refused, saying what it
//! looks like (see `encoding`). Other bytes that are not UTF-8 are never
//! edited, as editing them as text would corrupt them; `write_file` may
//! replace such a file whole, as it needs its old content only for the
//! diff. An editor's answer is shown as it gives it.

use std::path::{Path, PathBuf};

use agent_client_protocol::v1::schema::{
    Diff, ReadTextFileRequest, ToolCallContent, ToolCallStatus, WriteTextFileRequest,
};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::encoding::{self, Kind, Utf16};
use super::permission;
use super::{
    ClientPort, MAX_CHANGED_FILE_BYTES, MODEL_OUTPUT_LIMIT, Report, Stop, ToolContext, ToolOutcome,
    arguments, ask_client, counted, text_content,
};
use crate::workspace::{self, End, Excerpt, ReadError, WorkspaceError};

/// An argument the tool does not take is refused, not ignored: `offset`
/// written for `line` would read from the top while the model believed
/// otherwise.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    line: Option<u32>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_text: String,
    new_text: String,
    #[serde(default)]
    replace_all: bool,
}

pub(super) async fn read<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: ReadArgs = arguments("read_file", arguments_json)?;
    a_file_named(&args.path)?;
    if args.line == Some(0) {
        return Err(Stop::Failed(
            "`line` counts from 1: there is no line 0; give 1 to read from the start".to_owned(),
        ));
    }
    if args.limit == Some(0) {
        return Err(Stop::Failed(
            "`limit` must be at least 1, or left out to read to the end".to_owned(),
        ));
    }
    let first = args.line.map_or(1, |line| line as usize);
    let limit = args.limit.map(|limit| limit as usize);
    let path = context.workspace.resolve(Path::new(&args.path))?;
    report.progress(Vec::new());
    let through_client = context.client.capabilities().fs.read_text_file;
    let wanted = Wanted {
        shown: &args.path,
        path: &path,
        first,
        limit,
    };
    let (excerpt, decoded) = if through_client {
        read_through_client(context, wanted).await?
    } else {
        read_from_disk(context, wanted).await?
    };
    // What the client read has been checked against its own end.
    if !through_client || decoded.is_some() {
        match excerpt.end {
            End::TextEnd { lines } if first > 1 && first > lines => {
                return Err(past_the_end(&args.path, first, lines));
            }
            _ => {}
        }
    }
    let mut text = shown_to_the_model(excerpt);
    if let Some(form) = decoded {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[… {} is {} text, shown decoded: edit_file and write_file keep it so …]",
            args.path,
            form.named()
        ));
    }
    report.finish(ToolCallStatus::Completed, vec![text_content(&text)]);
    Ok(ToolOutcome::ok(text))
}

/// Which lines of which file a read wants: `shown` as the model named it,
/// `path` as the workspace resolved it, lines `first` on, at most `limit`
/// of them.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    shown: &'a str,
    path: &'a Path,
    first: usize,
    limit: Option<usize>,
}

/// Lines `first` on (at most `limit` of them) of the file `shown`, `path`
/// resolved, as it is on disk, and the form of UTF-16 they were decoded
/// from if they were. A file that is not text is refused, saying what it
/// looks like: a model shown an image's or a program's bytes as text reads
/// garbage, and NULs that some providers refuse outright.
async fn read_from_disk<C: ClientPort>(
    context: &ToolContext<'_, C>,
    wanted: Wanted<'_>,
) -> Result<(Excerpt, Option<Utf16>), Stop> {
    let head = until_cancelled(context, head_of(context, wanted.shown)).await??;
    read_as_its_head_says(context, wanted, &head).await
}

/// The first bytes of the file `shown`, which tell what it is.
async fn head_of<C: ClientPort>(
    context: &ToolContext<'_, C>,
    shown: &str,
) -> Result<Vec<u8>, WorkspaceError> {
    context
        .workspace
        .read_bytes(Path::new(shown), encoding::HEAD_BYTES)
        .await
}

/// [`read_from_disk`], of a file that starts with `head`.
async fn read_as_its_head_says<C: ClientPort>(
    context: &ToolContext<'_, C>,
    wanted: Wanted<'_>,
    head: &[u8],
) -> Result<(Excerpt, Option<Utf16>), Stop> {
    let Wanted { shown, .. } = wanted;
    let (excerpt, decoded) = match encoding::kind(head) {
        Kind::Binary(what) => {
            let size = context
                .workspace
                .file_size(Path::new(shown))?
                .unwrap_or(head.len() as u64);
            return Err(Stop::Failed(format!(
                "`{shown}` is binary ({}; {what}): read_file reads text only",
                encoding::size(size)
            )));
        }
        Kind::Utf16(form) => {
            let read = read_utf16(wanted, form, context.cancel.clone());
            (until_cancelled(context, read).await??, Some(form))
        }
        Kind::Text => (utf8_lines(context, wanted).await??, None),
    };
    no_nul_in(context, shown, &excerpt)?;
    Ok((excerpt, decoded))
}

/// Lines `first` on of the UTF-8 file `shown`, as much as the model is
/// shown, read from disk unless the turn is cancelled first.
async fn utf8_lines<C: ClientPort>(
    context: &ToolContext<'_, C>,
    wanted: Wanted<'_>,
) -> Result<Result<Excerpt, WorkspaceError>, Stop> {
    let Wanted {
        shown,
        first,
        limit,
        ..
    } = wanted;
    let read = context.workspace.read_lines(
        Path::new(shown),
        first,
        limit,
        MODEL_OUTPUT_LIMIT,
        context.cancel.clone(),
    );
    until_cancelled(context, read).await
}

/// Refuse `excerpt` of the file `shown` if it holds a NUL, which text never
/// does: the file's first bytes looked like text, but it goes on as binary.
fn no_nul_in<C: ClientPort>(
    context: &ToolContext<'_, C>,
    shown: &str,
    excerpt: &Excerpt,
) -> Result<(), Stop> {
    let Some(at) = excerpt.text.find('\0') else {
        return Ok(());
    };
    let line = excerpt.first + excerpt.text[..at].matches('\n').count();
    let size = context.workspace.file_size(Path::new(shown))?.unwrap_or(0);
    Err(Stop::Failed(format!(
        "`{shown}` is binary from line {line} on ({}; line {line} holds NUL bytes): read_file \
         reads text only",
        encoding::size(size)
    )))
}

/// Lines `first` on of the UTF-16 file `shown` (`path` resolved), decoded
/// as far as they are read.
async fn read_utf16(
    wanted: Wanted<'_>,
    form: Utf16,
    stop: CancellationToken,
) -> Result<Excerpt, Stop> {
    let Wanted {
        shown,
        path,
        first,
        limit,
    } = wanted;
    let shown = shown.to_owned();
    let path = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let file = workspace::open_to_read(&path).map_err(|source| WorkspaceError::Io {
            path: PathBuf::from(&shown),
            source,
        })?;
        let text = encoding::Utf16Text::new(file, form);
        workspace::excerpt(text, first, limit, MODEL_OUTPUT_LIMIT, || {
            stop.is_cancelled()
        })
        .map_err(|error| match error {
            ReadError::Io(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                Stop::Failed(not_utf16(&shown, form, &error))
            }
            ReadError::Io(source) => WorkspaceError::Io {
                path: PathBuf::from(&shown),
                source,
            }
            .into(),
            ReadError::Stopped => Stop::Cancelled,
            // Decoded text is UTF-8 whatever the file held.
            ReadError::NotText(at) => Stop::Failed(format!(
                "`{shown}` could not be decoded as {} (at byte {})",
                form.named(),
                at.offset
            )),
        })
    });
    read.await
        .map_err(|error| Stop::Failed(format!("the read failed: {error}")))?
}

/// Why the file `shown` is not the UTF-16 text it starts as.
fn not_utf16(shown: &str, form: Utf16, error: &std::io::Error) -> String {
    format!(
        "`{shown}` starts as {} text but is not: {error}",
        form.named()
    )
}

/// Lines `first` on (at most `limit` of them) of the file `shown`, `path`
/// resolved, as the client has it, unsaved changes included; or, when the
/// client cannot read a file that is not UTF-8, as a read from disk finds
/// it (with the form of UTF-16 it was decoded from, if it was).
///
/// A client answers with every line asked for, so a large file would come
/// whole (past what one message may carry) to show the model 32 KiB of it.
/// Above that size the client is asked for only as many lines as fit in
/// what the model is shown of the file on disk; a first line too long to
/// show whole is shown from disk.
async fn read_through_client<C: ClientPort>(
    context: &ToolContext<'_, C>,
    wanted: Wanted<'_>,
) -> Result<(Excerpt, Option<Utf16>), Stop> {
    let Wanted {
        shown,
        path,
        first,
        limit,
    } = wanted;
    // Checked first: a client asked for what is not a file might wait for ever.
    let size = context.workspace.file_size(Path::new(shown))?;
    let on_disk = match size {
        Some(size) if size > MODEL_OUTPUT_LIMIT as u64 => {
            match utf8_lines(context, wanted).await? {
                Ok(excerpt) => Some(excerpt),
                // An editor would read it no better.
                Err(not_text @ WorkspaceError::NotText(_)) => {
                    let from_disk = not_text_by_its_head(context, wanted).await;
                    return from_disk.unwrap_or(Err(not_text.into()));
                }
                Err(error) => return Err(error.into()),
            }
        }
        _ => None,
    };
    let disk_end = on_disk.as_ref().map(|excerpt| excerpt.end);
    if let Some(long_line) = on_disk.filter(|excerpt| excerpt.end == End::LongLine) {
        // Shown from disk, so refused as a read from disk refuses it.
        no_nul_in(context, shown, &long_line)?;
        return Ok((long_line, None));
    }
    let (asked_limit, capped) = match disk_end {
        Some(End::Budget { next }) => (Some(next - first), true),
        _ => (limit, false),
    };
    let request =
        ReadTextFileRequest::new(context.session_id.clone(), context.workspace.as_named(path))
            .line(u32::try_from(first).ok().filter(|_| first > 1))
            .limit(asked_limit.and_then(|limit| u32::try_from(limit).ok()));
    let text = match client_text(context, request, wanted).await {
        ClientRead::Text(text) => text,
        ClientRead::FromDisk(read) => return read,
    };
    let mut excerpt =
        workspace::excerpt(text.as_bytes(), 1, asked_limit, MODEL_OUTPUT_LIMIT, || {
            false
        })
        .map_err(|_| Stop::Failed(format!("{shown} is not a text file")))?
        .numbered_from(first);
    if let (true, Some(count)) = (capped, asked_limit) {
        // All the lines asked for came: the file goes on past them.
        let all_came = match excerpt.end {
            End::Limit => true,
            End::TextEnd { lines } => lines + 1 == first + count,
            _ => false,
        };
        if all_came {
            excerpt.end = End::Budget {
                next: first + count,
            };
        }
    }
    // Nothing from a line past the end would read as an empty file.
    if excerpt.text.is_empty() && first > 1 {
        let lines = match disk_end {
            Some(End::TextEnd { lines }) if first > lines => lines,
            // The file on disk goes on: the editor's copy is shorter.
            Some(_) => {
                return Err(Stop::Failed(format!(
                    "{shown}, as the editor has it, ends before line {first}"
                )));
            }
            // A small file: its lines are counted in the client's text.
            None => {
                let request = ReadTextFileRequest::new(
                    context.session_id.clone(),
                    context.workspace.as_named(path),
                );
                match client_text(context, request, wanted).await {
                    ClientRead::Text(whole) => whole.split_inclusive('\n').count(),
                    ClientRead::FromDisk(read) => return read,
                }
            }
        };
        if first > lines {
            return Err(past_the_end(shown, first, lines));
        }
    }
    Ok((excerpt, None))
}

/// What a client answered to a read of `shown`, or what takes its place.
enum ClientRead {
    Text(String),
    /// Lines `first` on, as a read from disk finds them, or why it cannot.
    FromDisk(Result<(Excerpt, Option<Utf16>), Stop>),
}

/// Ask the client for `request`'s text of `shown` (`path` resolved); when
/// it cannot give it, or gives text holding NULs, which no text holds (it
/// read UTF-16 or a binary file as if it were UTF-8), lines `first` on of
/// the file as a read from disk finds them, if that says more.
async fn client_text<C: ClientPort>(
    context: &ToolContext<'_, C>,
    request: ReadTextFileRequest,
    wanted: Wanted<'_>,
) -> ClientRead {
    match ask_client(context, request).await {
        Ok(answer) if !answer.content.contains('\0') => ClientRead::Text(answer.content),
        Ok(answer) => match not_utf8_on_disk(context, wanted).await {
            Some(from_disk) => ClientRead::FromDisk(from_disk),
            None => ClientRead::Text(answer.content),
        },
        Err(Stop::Failed(problem)) => ClientRead::FromDisk(
            not_utf8_on_disk(context, wanted)
                .await
                .unwrap_or(Err(Stop::Failed(problem))),
        ),
        Err(stop) => ClientRead::FromDisk(Err(stop)),
    }
}

/// Lines `first` on of `shown` (`path` resolved), as a read from disk finds
/// them, when a client could not read them and they are not UTF-8 text on
/// disk: UTF-16 decoded, or why they are not text, said as a read from disk
/// says it. `None` when the client's own reason stands.
async fn not_utf8_on_disk<C: ClientPort>(
    context: &ToolContext<'_, C>,
    wanted: Wanted<'_>,
) -> Option<Result<(Excerpt, Option<Utf16>), Stop>> {
    if let Some(read) = not_text_by_its_head(context, wanted).await {
        return Some(read);
    }
    match utf8_lines(context, wanted).await {
        Ok(Err(not_text @ WorkspaceError::NotText(_))) => Some(Err(not_text.into())),
        _ => None,
    }
}

/// [`read_from_disk`] of `shown` (`path` resolved), when its first bytes
/// say it is not UTF-8 text: UTF-16 decoded, or a binary file refused.
/// `None` for one that starts as text, or cannot be read.
async fn not_text_by_its_head<C: ClientPort>(
    context: &ToolContext<'_, C>,
    wanted: Wanted<'_>,
) -> Option<Result<(Excerpt, Option<Utf16>), Stop>> {
    let head = until_cancelled(context, head_of(context, wanted.shown))
        .await
        .ok()?
        .ok()?;
    if encoding::kind(&head) == Kind::Text {
        return None;
    }
    Some(read_as_its_head_says(context, wanted, &head).await)
}

fn past_the_end(path: &str, line: usize, lines: usize) -> Stop {
    Stop::Failed(format!(
        "{path} has {}; line {line} is past its end",
        counted(lines, "line")
    ))
}

/// What the model is shown of `excerpt`: when the read stopped at the byte
/// budget, the lines it holds and how to read on.
fn shown_to_the_model(excerpt: Excerpt) -> String {
    let Excerpt { text, first, end } = excerpt;
    match end {
        End::TextEnd { .. } | End::Limit => text,
        End::Budget { next } => format!(
            "{text}[… one read shows at most {} KiB: this is lines {first} to {}; read on from line {next} with `line` and `limit` …]",
            MODEL_OUTPUT_LIMIT / 1024,
            next - 1
        ),
        End::LongLine => format!(
            "{text}\n[… line {first} is too long to show whole: this is its first {} bytes; `search` shows the text around a match anywhere in it …]",
            text.len()
        ),
    }
}

/// `work`, unless the turn is cancelled first.
async fn until_cancelled<C: ClientPort, T>(
    context: &ToolContext<'_, C>,
    work: impl Future<Output = T>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        () = context.cancel.cancelled() => Err(Stop::Cancelled),
        done = work => Ok(done),
    }
}

pub(super) async fn write<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: WriteArgs = arguments("write_file", arguments_json)?;
    a_file_named(&args.path)?;
    let path = context.workspace.resolve_to_write(Path::new(&args.path))?;
    let old = current_file(context, "write_file", &args.path, &path).await?;
    let replaced = match &old {
        Found::NotText { bytes, .. } => format!(
            ", replacing {} that were not UTF-8 text",
            counted(bytes.len(), "byte")
        ),
        Found::Utf16 { form, .. } => format!(", as {} like the file it replaced", form.named()),
        _ => String::new(),
    };
    let change = Change {
        tool: "write_file",
        shown: &args.path,
        path,
        old,
        new: args.content,
    };
    let bytes = change.written_len();
    change.ask_and_write(context, report).await?;
    Ok(ToolOutcome::ok(format!(
        "Wrote {} to {}{replaced}.",
        counted(bytes, "byte"),
        args.path
    )))
}

pub(super) async fn edit<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: EditArgs = arguments("edit_file", arguments_json)?;
    a_file_named(&args.path)?;
    let path = context.workspace.resolve_to_write(Path::new(&args.path))?;
    let old = current_file(context, "edit_file", &args.path, &path).await?;
    let old_text = match &old {
        Found::Text(text) | Found::Utf16 { text, .. } => text,
        Found::Missing => {
            return Err(Stop::Failed(format!(
                "{} does not exist; use write_file to create it",
                args.path
            )));
        }
        Found::NotText { why, .. } => {
            return Err(Stop::Failed(format!(
                "{why}. edit_file changes only UTF-8 and UTF-16 text: editing other bytes as \
                 text would corrupt them; nothing was written"
            )));
        }
    };
    let (new, count) = replaced(old_text, &args.old_text, &args.new_text, args.replace_all)
        .map_err(|problem| Stop::Failed(format!("{}: {problem}", args.path)))?;
    let change = Change {
        tool: "edit_file",
        shown: &args.path,
        path,
        old,
        new,
    };
    change.ask_and_write(context, report).await?;
    // With `replace_all` the model could not know how many there were.
    if args.replace_all {
        return Ok(ToolOutcome::ok(format!(
            "Edited {}: replaced {}.",
            args.path,
            counted(count, "occurrence")
        )));
    }
    Ok(ToolOutcome::ok(format!("Edited {}.", args.path)))
}

/// Refuse an empty `path`, which would name the workspace itself and be
/// refused as a directory the model never named.
fn a_file_named(path: &str) -> Result<(), Stop> {
    if path.is_empty() {
        return Err(Stop::Failed(
            "`path` is empty: give the file's path, relative to the workspace root".to_owned(),
        ));
    }
    Ok(())
}

/// A file as a change finds it.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Missing,
    Text(String),
    /// UTF-16 text on disk, decoded; changed, it is written back so.
    Utf16 {
        text: String,
        form: Utf16,
    },
    /// Bytes that are not text: a file `write_file` may replace whole, but
    /// nothing can edit.
    NotText {
        bytes: Vec<u8>,
        /// A sentence saying where they stop being text.
        why: String,
    },
}

impl Found {
    /// The old text of a diff from this file: a note for bytes that are
    /// not text, which no diff could show.
    fn diff_text(&self) -> Option<String> {
        match self {
            Self::Missing => None,
            Self::Text(text) | Self::Utf16 { text, .. } => Some(text.clone()),
            Self::NotText { bytes, .. } => Some(format!(
                "({}, not UTF-8 text: binary, or another encoding)",
                counted(bytes.len(), "byte")
            )),
        }
    }
}

/// A change a tool makes to a file.
struct Change<'a> {
    tool: &'a str,
    /// The path as the model gave it.
    shown: &'a str,
    path: PathBuf,
    /// The file the change was worked out from.
    old: Found,
    new: String,
}

impl Change<'_> {
    /// The form of UTF-16 the new text is written in, if the file is UTF-16.
    fn utf16(&self) -> Option<Utf16> {
        match self.old {
            Found::Utf16 { form, .. } => Some(form),
            _ => None,
        }
    }

    /// How many bytes the new text takes in the file.
    fn written_len(&self) -> usize {
        match self.utf16() {
            Some(form) => 2 * (self.new.encode_utf16().count() + usize::from(form.bom)),
            None => self.new.len(),
        }
    }

    /// Ask, then write `new` over `old`, reporting the diff. A rejection
    /// writes nothing and tells the model so.
    async fn ask_and_write<C: ClientPort>(
        self,
        context: &ToolContext<'_, C>,
        report: &Report<'_, C>,
    ) -> Result<(), Stop> {
        let old_text = self.old.diff_text();
        self.fits_in_a_message(old_text.as_deref())?;
        let diff = ToolCallContent::Diff(
            Diff::new(context.workspace.as_named(&self.path), self.new.clone()).old_text(old_text),
        );
        let title = report.title().to_owned();
        let asked = permission::ask(context, report, self.tool, &title, vec![diff.clone()])
            .await
            .or_stop("the file was not modified")?;
        // The person approved a change to the text they were shown: whatever
        // they (or anyone) changed while they were asked is not overwritten.
        // Read through the same channel, which sees an editor's unsaved buffer.
        if asked && current_file(context, self.tool, self.shown, &self.path).await? != self.old {
            return Err(Stop::Failed(format!(
                "{} changed while the user was asked; nothing was written: read it again",
                self.shown
            )));
        }
        report.progress(Vec::new());
        if let Some(form) = self.utf16() {
            context
                .workspace
                .write_bytes(
                    Path::new(self.shown),
                    encoding::encode_utf16(&self.new, form),
                )
                .await?;
        } else if context.client.capabilities().fs.write_text_file {
            ask_client(
                context,
                WriteTextFileRequest::new(
                    context.session_id.clone(),
                    context.workspace.as_named(&self.path),
                    self.new,
                ),
            )
            .await?;
        } else {
            context
                .workspace
                .write_text(Path::new(self.shown), &self.new)
                .await?;
        }
        report.finish(ToolCallStatus::Completed, vec![diff]);
        Ok(())
    }

    /// Whether the change can be shown: its new text is no larger than a
    /// file the tools change, and its diff, `old_text` and new text as JSON,
    /// fits in one message to a client. Text full of control characters
    /// grows six-fold as JSON; a diff past a client's limit would end its
    /// connection.
    fn fits_in_a_message(&self, old_text: Option<&str>) -> Result<(), Stop> {
        let new_bytes = self.written_len() as u64;
        if new_bytes > MAX_CHANGED_FILE_BYTES {
            return Err(Stop::Failed(format!(
                "{} would be {} MiB after this {}, more than the {} MiB a tool writes; nothing was \
                 written",
                self.shown,
                new_bytes.div_ceil(1024 * 1024),
                self.tool,
                MAX_CHANGED_FILE_BYTES / (1024 * 1024)
            )));
        }
        let as_json = json_len(&self.new) + old_text.map_or(0, json_len);
        if as_json > MAX_DIFF_JSON_BYTES {
            return Err(Stop::Failed(format!(
                "{}'s diff would be {} MiB as JSON (where a control character takes six \
                 bytes, a quote or backslash two), more than the {} MiB one message to the user carries; nothing was \
                 written",
                self.shown,
                as_json.div_ceil(1024 * 1024),
                MAX_DIFF_JSON_BYTES / (1024 * 1024)
            )));
        }
        Ok(())
    }
}

/// Most of a message a diff (old and new text, as JSON strings) may take:
/// the rest is room for the request or update that carries it.
const MAX_DIFF_JSON_BYTES: usize = crate::config::MAX_MESSAGE_BYTES - 1024 * 1024;

/// How long `text` is as a JSON string.
fn json_len(text: &str) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a `str` always serializes.
    let _ = serde_json::to_writer(&mut counter, text);
    counter.0
}

/// The file `shown` (the model's path, `path` resolved) as it is now:
/// read through the client when it can read files, or `None` for a file not
/// yet there. `tool` changes only files of at most
/// [`MAX_CHANGED_FILE_BYTES`], since it holds the whole text (twice, in the
/// diff).
async fn current_file<C: ClientPort>(
    context: &ToolContext<'_, C>,
    tool: &str,
    shown: &str,
    path: &Path,
) -> Result<Found, Stop> {
    let too_big = || {
        Stop::Failed(format!(
            "{shown} is larger than {} MiB, the most {tool} can change, since it reads the whole file",
            MAX_CHANGED_FILE_BYTES / (1024 * 1024)
        ))
    };
    let Some(size) = context.workspace.file_size(Path::new(shown))? else {
        return Ok(Found::Missing);
    };
    if size > MAX_CHANGED_FILE_BYTES {
        return Err(too_big());
    }
    let found = if context.client.capabilities().fs.read_text_file {
        let request =
            ReadTextFileRequest::new(context.session_id.clone(), context.workspace.as_named(path));
        match ask_client(context, request).await {
            // No text holds NULs: the editor may have read UTF-16 as if it
            // were UTF-8.
            Ok(answer) if answer.content.contains('\0') => match on_disk(context, shown).await? {
                found @ Found::Utf16 { .. } => found,
                _ => Found::Text(answer.content),
            },
            Ok(answer) => Found::Text(answer.content),
            // An editor may read a file in another encoding as text; when it
            // cannot, what counts is why.
            Err(Stop::Failed(problem)) => match on_disk(context, shown).await? {
                found @ (Found::NotText { .. } | Found::Utf16 { .. }) => found,
                _ => return Err(Stop::Failed(problem)),
            },
            Err(stop) => return Err(stop),
        }
    } else {
        on_disk(context, shown).await?
    };
    match &found {
        Found::Text(text) if text.len() as u64 > MAX_CHANGED_FILE_BYTES => Err(too_big()),
        Found::NotText { bytes, .. } if bytes.len() as u64 > MAX_CHANGED_FILE_BYTES => {
            Err(too_big())
        }
        _ => Ok(found),
    }
}

/// The file `shown` as it is on disk, as text if it is UTF-8 or UTF-16; the
/// read stops a byte past the most a tool changes.
async fn on_disk<C: ClientPort>(context: &ToolContext<'_, C>, shown: &str) -> Result<Found, Stop> {
    let read = context
        .workspace
        .read_bytes(Path::new(shown), MAX_CHANGED_FILE_BYTES + 1);
    let bytes = until_cancelled(context, read).await??;
    let head = &bytes[..bytes.len().min(encoding::HEAD_BYTES as usize)];
    // One too large to change is refused by its size, not decoded.
    if let Kind::Utf16(form) = encoding::kind(head)
        && bytes.len() as u64 <= MAX_CHANGED_FILE_BYTES
    {
        return Ok(match encoding::decode_utf16(&bytes, form) {
            Ok(text) => Found::Utf16 { text, form },
            Err(error) => Found::NotText {
                why: not_utf16(shown, form, &error),
                bytes,
            },
        });
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Found::Text(text),
        Err(error) => Found::NotText {
            why: workspace::NotUtf8 {
                path: PathBuf::from(shown),
                at: workspace::BadByte::in_text(&error),
            }
            .to_string(),
            bytes: error.into_bytes(),
        },
    })
}

/// `text` with `old` replaced by `new`: exactly one occurrence, or all of them
/// when `all`; and how many were replaced. Occurrences that overlap count
/// apart: replacing the first of them is a guess.
///
/// Models write lines ending in `\n`; in a text whose lines end in `\r\n`,
/// `old` not found as it is is looked for with its `\n`s read as `\r\n`,
/// and `new` is written with `\r\n`, so the text keeps one line ending.
fn replaced(text: &str, old: &str, new: &str, all: bool) -> Result<(String, usize), String> {
    if old.is_empty() {
        return Err("old_text is empty; give the exact text to replace".to_owned());
    }
    if old == new {
        return Err(
            "old_text and new_text are the same: the edit would change nothing; nothing was written"
                .to_owned(),
        );
    }
    let (old, new) = in_the_files_line_endings(text, old, new);
    let found = occurrences(text, &old);
    let changed = match found {
        Occurrences { count: 0, .. } => {
            return Err(
                "old_text was not found; it must match the file exactly, including whitespace"
                    .to_owned(),
            );
        }
        Occurrences { count: 1, .. } => (text.replacen(&old, &new, 1), 1),
        Occurrences {
            count,
            overlapping: false,
        } if all => (text.replace(&old, &new), count),
        Occurrences { count, .. } if all => {
            return Err(format!(
                "old_text occurs {count} times, some overlapping, so which to replace is \
                 ambiguous; include more surrounding text to make each occurrence distinct"
            ));
        }
        Occurrences { count, overlapping } => {
            let some_overlapping = if overlapping {
                ", some overlapping"
            } else {
                ""
            };
            return Err(format!(
                "old_text occurs {count} times{some_overlapping}; include more surrounding text \
                 to make it unique, or set replace_all"
            ));
        }
    };
    if changed.0 == text {
        return Err(
            "the edit would change nothing (new_text is old_text with the file's line endings); \
             nothing was written"
                .to_owned(),
        );
    }
    Ok(changed)
}

/// `old` and `new` as they are to be found and written in `text`. In a text
/// whose lines end in `\r\n`, `old` is looked for with its `\n`s read as
/// `\r\n` first — found as written, an `old` that begins with `\n` would
/// leave the `\r` before it behind — and `new` is written the same way; an
/// `old` found only as written (in a stretch of `\n` lines) keeps `new` as
/// written.
fn in_the_files_line_endings(text: &str, old: &str, new: &str) -> (String, String) {
    if ends_lines_with_crlf(text) {
        let old_crlf = with_crlf(old);
        if old_crlf == old || text.contains(&old_crlf) {
            return (old_crlf, with_crlf(new));
        }
    }
    (old.to_owned(), new.to_owned())
}

/// How often a text occurs in another, counting overlapping occurrences.
#[derive(Debug, PartialEq, Eq)]
struct Occurrences {
    count: usize,
    /// Whether one occurrence starts inside another.
    overlapping: bool,
}

/// Every occurrence of `wanted` (not empty) in `text`, overlapping ones too.
fn occurrences(text: &str, wanted: &str) -> Occurrences {
    let step = wanted.chars().next().map_or(1, char::len_utf8);
    let mut found = Occurrences {
        count: 0,
        overlapping: false,
    };
    let mut previous_end = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find(wanted).map(|at| from + at) {
        found.overlapping |= found.count > 0 && at < previous_end;
        found.count += 1;
        previous_end = at + wanted.len();
        from = at + step;
    }
    found
}

/// Whether most of the lines of `text` end in `\r\n`.
fn ends_lines_with_crlf(text: &str) -> bool {
    let crlf = text.matches("\r\n").count();
    let lf = text.matches('\n').count();
    crlf > lf - crlf
}

/// `text` with each `\n` not after a `\r` written `\r\n`.
fn with_crlf(text: &str) -> String {
    let mut written = String::with_capacity(text.len());
    let mut after_cr = false;
    for character in text.chars() {
        if character == '\n' && !after_cr {
            written.push('\r');
        }
        written.push(character);
        after_cr = character == '\r';
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text an edit leaves.
    fn replaced(text: &str, old: &str, new: &str, all: bool) -> Result<String, String> {
        super::replaced(text, old, new, all).map(|(text, _)| text)
    }

    #[test]
    fn replacing_every_occurrence_counts_them() {
        assert_eq!(
            super::replaced("ab ab ab", "ab", "X", true),
            Ok(("X X X".to_owned(), 3))
        );
        assert_eq!(
            super::replaced("ab cd", "ab", "X", true),
            Ok(("X cd".to_owned(), 1))
        );
    }

    #[test]
    fn a_read_cut_at_the_budget_says_which_lines_it_shows_and_how_to_read_on() {
        let text: String = (1..=20_000).map(|n| format!("line {n}\n")).collect();
        let excerpt =
            workspace::excerpt(text.as_bytes(), 101, None, MODEL_OUTPUT_LIMIT, || false).unwrap();
        let End::Budget { next } = excerpt.end else {
            panic!("{:?}", excerpt.end)
        };
        let shown = shown_to_the_model(excerpt);
        let (lines, mark) = shown.split_once("[… ").unwrap();
        assert!(lines.len() <= MODEL_OUTPUT_LIMIT);
        assert!(lines.starts_with("line 101\n"));
        assert!(lines.ends_with(&format!("line {}\n", next - 1)));
        assert_eq!(
            mark,
            format!(
                "one read shows at most 32 KiB: this is lines 101 to {}; read on from line {next} with `line` and `limit` …]",
                next - 1
            )
        );
        let one_line = "x".repeat(100_000);
        let excerpt =
            workspace::excerpt(one_line.as_bytes(), 1, None, MODEL_OUTPUT_LIMIT, || false).unwrap();
        let shown = shown_to_the_model(excerpt);
        assert!(
            shown.ends_with(
                "\n[… line 1 is too long to show whole: this is its first 32768 bytes; `search` shows the text around a match anywhere in it …]"
            )
        );
    }

    #[test]
    fn an_edit_must_match_exactly_and_once() {
        assert_eq!(replaced("a b c", "b", "B", false).unwrap(), "a B c");
        assert!(
            replaced("a b c", "x", "B", false)
                .unwrap_err()
                .contains("not found")
        );
        assert!(
            replaced("b b", "b", "B", false)
                .unwrap_err()
                .contains("2 times")
        );
        assert_eq!(replaced("b b", "b", "B", true).unwrap(), "B B");
        assert!(replaced("b", "", "B", false).is_err());
    }

    /// Models write `\n`: in a file whose lines end in `\r\n` an edit
    /// still finds its text, and keeps the file to one line ending.
    #[test]
    fn an_edit_of_a_crlf_file_matches_and_writes_its_line_endings() {
        let text = "line one\r\nline two\r\n";
        assert_eq!(
            replaced(text, "line one\nline two", "line one\ntwo-a\ntwo-b", false).unwrap(),
            "line one\r\ntwo-a\r\ntwo-b\r\n"
        );
        assert_eq!(
            replaced(text, "line two", "two-a\ntwo-b", false).unwrap(),
            "line one\r\ntwo-a\r\ntwo-b\r\n",
            "found as it is, the new text still takes the file's line endings"
        );
        assert_eq!(
            replaced(text, "line one\r\n", "first\r\n", false).unwrap(),
            "first\r\nline two\r\n"
        );
        assert_eq!(
            replaced("a\nb\n", "a", "x\ny", false).unwrap(),
            "x\ny\nb\n",
            "a file of `\\n`s is left to them"
        );
        assert!(
            replaced(text, "line one\r\n", "line one\n", false)
                .unwrap_err()
                .contains("would change nothing")
        );
        // Text that begins with a line break takes the `\r` before it along.
        let code = "fn a() {\r\n    x();\r\n}\r\n";
        assert_eq!(
            replaced(code, "\n    x();", "\n    y();", false).unwrap(),
            "fn a() {\r\n    y();\r\n}\r\n"
        );
        assert_eq!(
            replaced(code, "\n    x();", "", false).unwrap(),
            "fn a() {\r\n}\r\n"
        );
        assert_eq!(
            replaced(code, "\n", " ", true).unwrap(),
            "fn a() {     x(); } "
        );
        // In a stretch of `\n` lines of a mostly `\r\n` file, `\n` stays.
        let mixed = "a\r\nb\r\nc\r\nd\ne\n";
        assert_eq!(
            replaced(mixed, "d\ne", "d\nE", false).unwrap(),
            "a\r\nb\r\nc\r\nd\nE\n"
        );
    }

    #[test]
    fn overlapping_occurrences_are_ambiguous() {
        let text = "    }\n}\n}\n";
        assert_eq!(
            replaced(text, "}\n}\n", "}\n", false).unwrap_err(),
            "old_text occurs 2 times, some overlapping; include more surrounding text to make it \
             unique, or set replace_all"
        );
        assert!(
            replaced(text, "}\n}\n", "}\n", true)
                .unwrap_err()
                .contains("some overlapping, so which to replace is ambiguous")
        );
        assert_eq!(
            occurrences("aaaa", "aa"),
            Occurrences {
                count: 3,
                overlapping: true
            }
        );
        assert_eq!(
            occurrences("ab ab", "ab"),
            Occurrences {
                count: 2,
                overlapping: false
            }
        );
        assert_eq!(occurrences("éé", "é").count, 2);
    }

    #[test]
    fn an_edit_that_changes_nothing_is_refused() {
        assert_eq!(
            replaced("a b c", "b", "b", false).unwrap_err(),
            "old_text and new_text are the same: the edit would change nothing; nothing was written"
        );
    }
}
