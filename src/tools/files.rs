//! `read_file`, `write_file` and `edit_file`: through the client's `fs/*`
//! when it offers them (so the IDE sees unsaved buffers and shows the
//! change), else on disk inside the workspace.

use std::path::{Path, PathBuf};

use agent_client_protocol::v1::schema::{
    Diff, ReadTextFileRequest, ToolCallContent, ToolCallStatus, WriteTextFileRequest,
};
use serde::Deserialize;
use serde_json::Value;

use super::permission;
use super::{
    ClientPort, Report, Stop, ToolContext, ToolOutcome, arguments, ask_client, counted,
    cut_for_the_model, text_content,
};

#[derive(Deserialize)]
struct ReadArgs {
    path: String,
    line: Option<u32>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
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
    let path = context.workspace.resolve(Path::new(&args.path))?;
    report.progress(Vec::new());
    let text = read_text(context, &path, args.line, args.limit).await?;
    // Nothing from a line past the end would read as an empty file.
    if text.is_empty()
        && let Some(line) = args.line.filter(|&line| line > 1)
    {
        let whole = read_text(context, &path, None, None).await?;
        let lines = whole.split_inclusive('\n').count();
        if line as usize > lines {
            return Err(Stop::Failed(format!(
                "{} has {}; line {line} is past its end",
                args.path,
                counted(lines, "line")
            )));
        }
    }
    // Line 0 is read as line 1.
    let first = args.line.unwrap_or(1).max(1) as usize;
    let text = cut_for_the_model(&text, |before, cut| {
        how_to_read_the_rest(first, before, cut)
    });
    report.finish(ToolCallStatus::Completed, vec![text_content(&text)]);
    Ok(ToolOutcome::ok(text))
}

/// How the model reads what was cut from a file's text that starts at line
/// `first`, given the text before the cut and the text cut: the lines of
/// its first and its last byte.
fn how_to_read_the_rest(first: usize, before: &str, cut: &str) -> String {
    let from = first + before.matches('\n').count();
    let newlines = |text: &[u8]| text.iter().filter(|&&byte| byte == b'\n').count();
    // The line of the cut's last byte: a newline that ends it ends that line.
    let to = from
        + cut
            .as_bytes()
            .split_last()
            .map_or(0, |(_, rest)| newlines(rest));
    if from == to {
        format!("all inside line {from}, too long to show whole")
    } else {
        format!(
            "lines {from} to {to} are not all shown: read them a part at a time with `line` and `limit`"
        )
    }
}

pub(super) async fn write<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: WriteArgs = arguments("write_file", arguments_json)?;
    let path = context.workspace.resolve(Path::new(&args.path))?;
    let old = current_text(context, &path).await?;
    let bytes = args.content.len();
    change(context, report, "write_file", path, old, args.content).await?;
    Ok(ToolOutcome::ok(format!(
        "Wrote {bytes} bytes to {}.",
        args.path
    )))
}

pub(super) async fn edit<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: EditArgs = arguments("edit_file", arguments_json)?;
    let path = context.workspace.resolve(Path::new(&args.path))?;
    let Some(old) = current_text(context, &path).await? else {
        return Err(Stop::Failed(format!(
            "{} does not exist; use write_file to create it",
            args.path
        )));
    };
    let new = replaced(&old, &args.old_text, &args.new_text, args.replace_all)
        .map_err(|problem| Stop::Failed(format!("{}: {problem}", args.path)))?;
    change(context, report, "edit_file", path, Some(old), new).await?;
    Ok(ToolOutcome::ok(format!("Edited {}.", args.path)))
}

/// Ask, then write `new` over `old` at `path`, reporting the diff. A rejection
/// writes nothing and tells the model so.
async fn change<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    tool: &str,
    path: PathBuf,
    old: Option<String>,
    new: String,
) -> Result<(), Stop> {
    let diff = ToolCallContent::Diff(Diff::new(path.clone(), new.clone()).old_text(old));
    let title = report.title().to_owned();
    permission::ask(context, report, tool, &title, vec![diff.clone()])
        .await
        .or_stop("the file was not modified")?;
    report.progress(Vec::new());
    if context.client.capabilities().fs.write_text_file {
        ask_client(
            context,
            WriteTextFileRequest::new(context.session_id.clone(), path, new),
        )
        .await?;
    } else {
        context.workspace.write_text(&path, &new).await?;
    }
    report.finish(ToolCallStatus::Completed, vec![diff]);
    Ok(())
}

/// The text at `path`, through the client when it can read files.
async fn read_text<C: ClientPort>(
    context: &ToolContext<'_, C>,
    path: &Path,
    line: Option<u32>,
    limit: Option<u32>,
) -> Result<String, Stop> {
    if context.client.capabilities().fs.read_text_file {
        let request = ReadTextFileRequest::new(context.session_id.clone(), path.to_owned())
            .line(line)
            .limit(limit);
        Ok(ask_client(context, request).await?.content)
    } else {
        Ok(context.workspace.read_text(path, line, limit).await?)
    }
}

/// The whole current text at `path`, or `None` for a file not yet there.
async fn current_text<C: ClientPort>(
    context: &ToolContext<'_, C>,
    path: &Path,
) -> Result<Option<String>, Stop> {
    match tokio::fs::try_exists(path).await {
        Ok(true) => read_text(context, path, None, None).await.map(Some),
        Ok(false) => Ok(None),
        Err(error) => Err(Stop::Failed(format!("{}: {error}", path.display()))),
    }
}

/// `text` with `old` replaced by `new`: exactly one occurrence, or all of them
/// when `all`.
fn replaced(text: &str, old: &str, new: &str, all: bool) -> Result<String, String> {
    if old.is_empty() {
        return Err("old_text is empty; give the exact text to replace".to_owned());
    }
    match text.matches(old).count() {
        0 => Err(
            "old_text was not found; it must match the file exactly, including whitespace"
                .to_owned(),
        ),
        1 => Ok(text.replacen(old, new, 1)),
        _ if all => Ok(text.replace(old, new)),
        count => Err(format!(
            "old_text occurs {count} times; include more surrounding text to make it unique, or set replace_all"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_file_says_which_lines_were_cut_and_how_to_read_them() {
        let text: String = (1..=20_000).map(|n| format!("line {n}\n")).collect();
        let first = 101;
        let shown = cut_for_the_model(&text, |before, cut| {
            how_to_read_the_rest(first, before, cut)
        });
        let (head, rest) = shown.split_once("\n[… ").unwrap();
        let (cut, mark) = rest.split_once(" bytes cut; ").unwrap();
        let cut: usize = cut.parse().unwrap();
        let line_at = |byte: usize| first + text[..byte].matches('\n').count();
        let (from, to) = (line_at(head.len()), line_at(head.len() + cut - 1));
        assert!(
            mark.starts_with(&format!(
                "lines {from} to {to} are not all shown: read them a part at a time with `line` and `limit`"
            )),
            "{mark}"
        );
        let one_line = "x".repeat(100_000);
        let shown = cut_for_the_model(&one_line, |before, cut| {
            how_to_read_the_rest(1, before, cut)
        });
        assert!(shown.contains("all inside line 1, too long to show whole"));
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
}
