//! What `punie ask` shows under a permission question at a terminal, so
//! that the person sees what they allow: the diff of a change, or the text
//! the agent put with the question (an MCP tool's arguments, say). Only
//! what is shown; asking and answering are [`super::service`]'s.

use std::time::Duration;

use agent_client_protocol::v1::schema::{ContentBlock, Diff, ToolCallContent};
use similar::{ChangeTag, TextDiff};

use super::terminal_safe;

/// The most lines shown; a longer preview ends saying how many more there are.
const MOST_LINES: usize = 40;

/// The most characters of one line shown: a minified file's line would
/// flood the terminal and push the question out of sight.
const MOST_CHARACTERS: usize = 200;

/// How long the diff of a large change may take before an approximate one
/// is shown: the person is waiting.
const DIFF_TIME: Duration = Duration::from_millis(200);

/// Lines of context around each change.
const CONTEXT_LINES: usize = 2;

/// How a line of the preview is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Removed,
    Added,
    /// A hunk's position, or a note.
    Aside,
}

impl Kind {
    /// How a terminal draws it, colour allowing: removed lines red, added
    /// green, asides dimmed.
    pub fn style(self) -> anstyle::Style {
        match self {
            Self::Plain => anstyle::Style::new(),
            Self::Removed => anstyle::AnsiColor::Red.on_default(),
            Self::Added => anstyle::AnsiColor::Green.on_default(),
            Self::Aside => anstyle::Style::new().dimmed(),
        }
    }
}

/// The lines to show for `content`, at most [`MOST_LINES`] and a last one
/// saying what was left out; each safe for a terminal.
pub fn lines(content: &[ToolCallContent]) -> Vec<(Kind, String)> {
    let mut lines = Vec::new();
    for item in content {
        match item {
            ToolCallContent::Diff(diff) => lines.extend(diff_lines(diff)),
            ToolCallContent::Content(content) => {
                if let ContentBlock::Text(text) = &content.content {
                    lines.extend(text.text.lines().map(|line| (Kind::Plain, line.to_owned())));
                }
            }
            // A terminal shows itself; anything else has no text to show.
            _ => {}
        }
    }
    let more = lines.len().saturating_sub(MOST_LINES);
    lines.truncate(MOST_LINES);
    if more > 0 {
        lines.push((Kind::Aside, format!("… {more} more lines")));
    }
    lines
        .into_iter()
        .map(|(kind, line)| (kind, cut(&terminal_safe(&line))))
        .collect()
}

/// `line`, at most [`MOST_CHARACTERS`] of it, marked when cut.
fn cut(line: &str) -> String {
    match line.char_indices().nth(MOST_CHARACTERS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

/// A change as a unified diff's hunks: a new file is all additions.
fn diff_lines(diff: &Diff) -> Vec<(Kind, String)> {
    let old = diff.old_text.as_deref().unwrap_or_default();
    let compared = TextDiff::configure()
        .timeout(DIFF_TIME)
        .diff_lines(old, diff.new_text.as_str());
    let mut lines = vec![(Kind::Aside, diff.path.display().to_string())];
    for hunk in compared
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .iter_hunks()
    {
        lines.push((Kind::Aside, hunk.header().to_string()));
        for change in hunk.iter_changes() {
            let (kind, sign) = match change.tag() {
                ChangeTag::Equal => (Kind::Plain, ' '),
                ChangeTag::Delete => (Kind::Removed, '-'),
                ChangeTag::Insert => (Kind::Added, '+'),
            };
            let text = change.to_string_lossy();
            lines.push((
                kind,
                format!("{sign}{}", text.trim_end_matches(['\n', '\r'])),
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::v1::schema::Content;

    #[test]
    fn a_change_shows_as_its_hunks() {
        let diff = Diff::new("notes.txt", "one\ntwo-new\nthree\n").old_text("one\ntwo\nthree\n");
        let shown = lines(&[ToolCallContent::Diff(diff)]);
        let text: Vec<&str> = shown.iter().map(|(_, line)| line.as_str()).collect();
        assert_eq!(
            text,
            [
                "notes.txt",
                "@@ -1,3 +1,3 @@",
                " one",
                "-two",
                "+two-new",
                " three"
            ]
        );
        assert_eq!(shown[3].0, Kind::Removed);
        assert_eq!(shown[4].0, Kind::Added);
    }

    #[test]
    fn text_is_shown_safe_and_cut_to_the_most_lines() {
        let long: String = (0..100).map(|n| format!("line {n}\u{1b}[2J\n")).collect();
        let shown = lines(&[ToolCallContent::Content(Content::new(long))]);
        assert_eq!(shown.len(), MOST_LINES + 1);
        assert_eq!(shown[0].1, "line 0[2J");
        assert_eq!(shown[MOST_LINES].1, "… 60 more lines");
        let minified = lines(&[ToolCallContent::Content(Content::new("é".repeat(5_000)))]);
        assert_eq!(minified[0].1, format!("{}…", "é".repeat(MOST_CHARACTERS)));
    }
}
