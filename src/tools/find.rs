//! `list_files` and `search`: walking and grepping the workspace with the
//! crates ripgrep is built from, so `.gitignore` is respected the same way.

use std::path::{Path, PathBuf};

use agent_client_protocol::v1::schema::ToolCallStatus;
use globset::{GlobBuilder, GlobMatcher};
use grep_regex::RegexMatcher;
use grep_searcher::sinks::UTF8;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ClientPort, Report, Stop, ToolContext, ToolOutcome, arguments, for_the_model, text_content,
};

/// Most paths `list_files` returns.
const MAX_FILES: usize = 2000;

/// Most matching lines `search` returns.
const MAX_MATCHES: usize = 500;

/// Longest matching line `search` shows in full.
const MAX_LINE_CHARS: usize = 300;

#[derive(Deserialize)]
struct ListArgs {
    path: Option<String>,
    glob: Option<String>,
}

#[derive(Deserialize)]
struct SearchArgs {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
}

pub(super) async fn list<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: ListArgs = arguments("list_files", arguments_json)?;
    let dir = context
        .workspace
        .resolve(Path::new(args.path.as_deref().unwrap_or(".")))?;
    report.progress(Vec::new());
    let glob = args.glob.as_deref().map(glob_matcher).transpose()?;
    let listing = blocking(context, move || list_files(&dir, glob.as_ref())).await?;
    let listing = for_the_model(&listing);
    report.finish(ToolCallStatus::Completed, vec![text_content(&listing)]);
    Ok(ToolOutcome::ok(listing))
}

pub(super) async fn search<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: SearchArgs = arguments("search", arguments_json)?;
    let root = context
        .workspace
        .resolve(Path::new(args.path.as_deref().unwrap_or(".")))?;
    report.progress(Vec::new());
    let matcher = RegexMatcher::new(&args.pattern).map_err(|error| {
        Stop::Failed(format!(
            "`{}` is not a valid regular expression: {error}",
            args.pattern
        ))
    })?;
    let glob = args.glob.as_deref().map(glob_matcher).transpose()?;
    let found = blocking(context, move || {
        search_files(&root, &matcher, glob.as_ref())
    })
    .await?;
    let found = for_the_model(&found);
    report.finish(ToolCallStatus::Completed, vec![text_content(&found)]);
    Ok(ToolOutcome::ok(found))
}

/// Run filesystem work off the async threads, unless the turn is cancelled first.
async fn blocking<C: ClientPort>(
    context: &ToolContext<'_, C>,
    work: impl FnOnce() -> String + Send + 'static,
) -> Result<String, Stop> {
    tokio::select! {
        biased;
        () = context.cancel.cancelled() => Err(Stop::Cancelled),
        done = tokio::task::spawn_blocking(work) => {
            done.map_err(|error| Stop::Failed(format!("the search failed: {error}")))
        }
    }
}

/// A glob matched against paths relative to the searched directory; a glob
/// without `/` also matches a file's name anywhere.
fn glob_matcher(glob: &str) -> Result<GlobMatcher, Stop> {
    let pattern = if glob.contains('/') {
        glob.to_owned()
    } else {
        format!("**/{glob}")
    };
    GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|error| Stop::Failed(format!("`{glob}` is not a valid glob: {error}")))
}

/// The files under `root` that `.gitignore` and friends do not hide.
fn walk(root: &Path, glob: Option<&GlobMatcher>) -> impl Iterator<Item = (PathBuf, PathBuf)> {
    let root = root.to_owned();
    let glob = glob.cloned();
    ignore::WalkBuilder::new(&root)
        .require_git(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_some_and(|kind| kind.is_file()))
        .filter_map(move |entry| {
            let relative = entry.path().strip_prefix(&root).ok()?.to_owned();
            let wanted = glob.as_ref().is_none_or(|glob| glob.is_match(&relative));
            wanted.then(|| (entry.path().to_owned(), relative))
        })
}

fn list_files(dir: &Path, glob: Option<&GlobMatcher>) -> String {
    let mut lines = Vec::new();
    let mut total = 0;
    for (_, relative) in walk(dir, glob) {
        total += 1;
        if lines.len() < MAX_FILES {
            lines.push(relative.display().to_string());
        }
    }
    if total == 0 {
        return "no files".to_owned();
    }
    if total > lines.len() {
        lines.push(format!("… and {} more files", total - lines.len()));
    }
    lines.join("\n")
}

fn search_files(root: &Path, matcher: &RegexMatcher, glob: Option<&GlobMatcher>) -> String {
    let mut searcher = SearcherBuilder::new()
        .binary_detection(BinaryDetection::quit(b'\x00'))
        .line_number(true)
        .build();
    let targets: Vec<(PathBuf, PathBuf)> = if root.is_file() {
        let name = root.file_name().map(PathBuf::from).unwrap_or_default();
        vec![(root.to_owned(), name)]
    } else {
        walk(root, glob).collect()
    };
    let mut lines = Vec::new();
    let mut total = 0usize;
    for (path, relative) in targets {
        let _ = searcher.search_path(
            matcher,
            &path,
            UTF8(|number, line| {
                total += 1;
                if lines.len() < MAX_MATCHES {
                    lines.push(format!(
                        "{}:{number}: {}",
                        relative.display(),
                        shortened(line.trim_end())
                    ));
                }
                Ok(true)
            }),
        );
    }
    if total == 0 {
        return "no matches".to_owned();
    }
    if total > lines.len() {
        lines.push(format!("… and {} more matches", total - lines.len()));
    }
    lines.join("\n")
}

fn shortened(line: &str) -> String {
    if line.chars().count() <= MAX_LINE_CHARS {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(MAX_LINE_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        std::fs::write(
            root.join("src/main.rs"),
            "fn main() {\n    println!(\"hi\");\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("src/deep/lib.rs"), "pub fn hi() {}\n").unwrap();
        std::fs::write(root.join("Cargo.toml"), "[package]\n").unwrap();
        std::fs::write(root.join("target/built.rs"), "fn hi() {}\n").unwrap();
        dir
    }

    #[test]
    fn listing_respects_gitignore_and_globs() {
        let dir = tree();
        let all = list_files(dir.path(), None);
        assert_eq!(all, "Cargo.toml\nsrc/deep/lib.rs\nsrc/main.rs");
        let rust = list_files(dir.path(), Some(&glob_matcher("*.rs").unwrap()));
        assert_eq!(rust, "src/deep/lib.rs\nsrc/main.rs");
        let top = list_files(dir.path(), Some(&glob_matcher("src/*.rs").unwrap()));
        assert_eq!(top, "src/main.rs");
    }

    #[test]
    fn search_finds_lines_with_their_numbers_and_skips_ignored_files() {
        let dir = tree();
        let matcher = RegexMatcher::new(r"fn \w+").unwrap();
        let found = search_files(dir.path(), &matcher, None);
        assert_eq!(
            found,
            "src/deep/lib.rs:1: pub fn hi() {}\nsrc/main.rs:1: fn main() {"
        );
        let none = search_files(
            dir.path(),
            &RegexMatcher::new("nothing here").unwrap(),
            None,
        );
        assert_eq!(none, "no matches");
    }
}
