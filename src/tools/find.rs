//! `list_files` and `search`: walking and grepping the workspace with the
//! crates ripgrep is built from, so `.gitignore` is respected the same way.
//! Hidden files are included, as `rg --hidden --glob '!.git'` would: a
//! project's `.github/` or `.env.example` is part of its code, while `.git`
//! is the repository's own store. Paths come back relative to the workspace
//! root, whatever directory was searched, because that is how every other
//! tool takes them. `search` does not read files that usually hold secrets
//! (`.env`, private keys, `.ssh/`…) unless it is pointed at one: what it
//! finds goes to the model's provider.

use std::os::unix::ffi::OsStrExt as _;
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
    let root = context.workspace.root().to_owned();
    let dir = context
        .workspace
        .resolve(Path::new(args.path.as_deref().unwrap_or(".")))?;
    report.progress(Vec::new());
    let glob = args.glob.as_deref().map(glob_matcher).transpose()?;
    let listing = blocking(context, move || list_files(&root, &dir, glob.as_ref())).await?;
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
    let root = context.workspace.root().to_owned();
    let searched = context
        .workspace
        .resolve(Path::new(args.path.as_deref().unwrap_or(".")))?;
    report.progress(Vec::new());
    let matcher = regex_matcher(&args.pattern)?;
    let glob = args.glob.as_deref().map(glob_matcher).transpose()?;
    let found = blocking(context, move || {
        search_files(&root, &searched, &matcher, glob.as_ref())
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

/// `pattern` as a matcher, or an error that quotes the pattern as the model
/// wrote it: the matcher's own error shows the pattern as it wraps it.
fn regex_matcher(pattern: &str) -> Result<RegexMatcher, Stop> {
    RegexMatcher::new(pattern).map_err(|error| {
        // Parsed again alone, for the message only; an error the parser does
        // not see (a size limit, say) is told as the matcher put it.
        let why = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern)
            .err()
            .map_or_else(|| error.to_string(), |error| error.to_string());
        Stop::Failed(format!(
            "`{pattern}` is not a valid regular expression: {why}"
        ))
    })
}

/// A glob matched against paths relative to the workspace root, and to the
/// directory searched; a glob without `/` also matches a file's name
/// anywhere.
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

/// The files under `dir` that `.gitignore` and friends do not hide, hidden
/// ones included but never what is inside `.git`: each one's real path, and
/// how the model names it (relative to the workspace `root`).
fn walk(
    root: &Path,
    dir: &Path,
    glob: Option<&GlobMatcher>,
) -> impl Iterator<Item = (PathBuf, PathBuf)> {
    let root = root.to_owned();
    let dir = dir.to_owned();
    let glob = glob.cloned();
    ignore::WalkBuilder::new(&dir)
        .hidden(false)
        .require_git(false)
        .filter_entry(|entry| entry.depth() == 0 || entry.file_name() != ".git")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_some_and(|kind| kind.is_file()))
        .filter_map(move |entry| {
            let relative = entry.path().strip_prefix(&root).ok()?.to_owned();
            // Also when `dir` itself is `.git` or inside it.
            if relative.components().any(|part| part.as_os_str() == ".git") {
                return None;
            }
            let wanted = glob.as_ref().is_none_or(|glob| {
                glob.is_match(&relative)
                    || entry
                        .path()
                        .strip_prefix(&dir)
                        .is_ok_and(|inside| glob.is_match(inside))
            });
            wanted.then(|| (entry.path().to_owned(), relative))
        })
}

/// `path` as the model is shown it. A name that is not UTF-8 cannot be
/// written in a tool's arguments, so rather than a lossy name that would
/// lead nowhere it is shown escaped and marked as such.
fn named(path: &Path) -> String {
    match path.to_str() {
        Some(name) => name.to_owned(),
        None => format!(
            "{} (this name is not UTF-8: no tool can open it by name)",
            path.as_os_str().as_bytes().escape_ascii()
        ),
    }
}

fn list_files(root: &Path, dir: &Path, glob: Option<&GlobMatcher>) -> String {
    let mut lines = Vec::new();
    let mut total = 0;
    for (_, relative) in walk(root, dir, glob) {
        total += 1;
        if lines.len() < MAX_FILES {
            lines.push(named(&relative));
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

/// Search `searched`, a file or a directory inside the workspace `root`.
fn search_files(
    root: &Path,
    searched: &Path,
    matcher: &RegexMatcher,
    glob: Option<&GlobMatcher>,
) -> String {
    let mut searcher = SearcherBuilder::new()
        .binary_detection(BinaryDetection::quit(b'\x00'))
        .line_number(true)
        .build();
    let targets: Vec<(PathBuf, PathBuf)> = if searched.is_file() {
        let relative = searched.strip_prefix(root).unwrap_or(searched).to_owned();
        vec![(searched.to_owned(), relative)]
    } else {
        walk(root, searched, glob)
            .filter(|(_, relative)| !holds_secrets(relative))
            .collect()
    };
    let mut lines = Vec::new();
    let mut total = 0usize;
    for (path, relative) in targets {
        let name = named(&relative);
        let _ = searcher.search_path(
            matcher,
            &path,
            UTF8(|number, line| {
                total += 1;
                if lines.len() < MAX_MATCHES {
                    lines.push(format!("{name}:{number}: {}", shortened(line.trim_end())));
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

/// Whether a file, by its path, is one that usually holds secrets: an
/// environment file (not its `.example`), a private key, a credentials file,
/// or anything in a directory of keys.
fn holds_secrets(relative: &Path) -> bool {
    const DIRECTORIES: [&str; 3] = [".ssh", ".aws", ".gnupg"];
    const FILES: [&str; 7] = [
        ".netrc",
        ".npmrc",
        ".pypirc",
        "id_rsa",
        "id_ecdsa",
        "id_ed25519",
        "credentials.json",
    ];
    const TEMPLATES: [&str; 4] = [".example", ".sample", ".template", ".dist"];
    if relative
        .components()
        .any(|part| DIRECTORIES.iter().any(|dir| part.as_os_str() == *dir))
    {
        return true;
    }
    let Some(name) = relative.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let environment = name == ".env" || name.starts_with(".env.");
    (environment && !TEMPLATES.iter().any(|suffix| name.ends_with(suffix)))
        || FILES.contains(&name)
        || name.ends_with(".pem")
        || name.ends_with(".key")
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
        std::fs::write(root.join(".gitignore"), "target/\n.env\n").unwrap();
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

    /// `tree()` with what a repository holds besides its code: CI settings,
    /// an example environment, an ignored secret, and the repository itself.
    fn repository() -> tempfile::TempDir {
        let dir = tree();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".github/workflows")).unwrap();
        std::fs::write(root.join(".github/workflows/ci.yml"), "runs-on: x\n").unwrap();
        std::fs::write(root.join(".env.example"), "KEY=\n").unwrap();
        std::fs::write(root.join(".env"), "KEY=secret\n").unwrap();
        std::fs::create_dir_all(root.join(".git/refs")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(root.join(".git/config"), "runs-on: never\n").unwrap();
        dir
    }

    fn list(dir: &Path, glob: Option<&str>) -> String {
        let glob = glob.map(|glob| glob_matcher(glob).unwrap());
        list_files(dir, dir, glob.as_ref())
    }

    #[test]
    fn listing_respects_gitignore_and_globs() {
        let dir = tree();
        let all = list(dir.path(), None);
        assert_eq!(all, ".gitignore\nCargo.toml\nsrc/deep/lib.rs\nsrc/main.rs");
        assert_eq!(
            list(dir.path(), Some("*.rs")),
            "src/deep/lib.rs\nsrc/main.rs"
        );
        assert_eq!(list(dir.path(), Some("src/*.rs")), "src/main.rs");
    }

    #[test]
    fn hidden_files_are_listed_and_searched_but_never_the_git_directory() {
        let dir = repository();
        let root = dir.path();
        assert_eq!(
            list(root, None),
            ".env.example\n.github/workflows/ci.yml\n.gitignore\nCargo.toml\nsrc/deep/lib.rs\nsrc/main.rs"
        );
        assert_eq!(list(root, Some(".github/**")), ".github/workflows/ci.yml");
        assert_eq!(list(root, Some("**/*.yml")), ".github/workflows/ci.yml");
        assert_eq!(list(root, Some("HEAD")), "no files");
        let github = root.join(".github");
        assert_eq!(list_files(root, &github, None), ".github/workflows/ci.yml");
        let matcher = RegexMatcher::new("runs-on").unwrap();
        assert_eq!(
            search_files(root, root, &matcher, None),
            ".github/workflows/ci.yml:1: runs-on: x"
        );
        let secret = RegexMatcher::new("KEY=").unwrap();
        assert_eq!(
            search_files(root, root, &secret, None),
            ".env.example:1: KEY=",
            "an ignored file stays hidden"
        );
    }

    #[test]
    fn the_git_directory_is_not_shown_even_when_named() {
        let dir = repository();
        let root = dir.path();
        let git = root.join(".git");
        assert_eq!(list_files(root, &git, None), "no files");
        assert_eq!(list_files(root, &git.join("refs"), None), "no files");
        let matcher = RegexMatcher::new("runs-on").unwrap();
        assert_eq!(search_files(root, &git, &matcher, None), "no matches");
    }

    #[test]
    fn a_search_skips_files_that_hold_secrets_unless_pointed_at_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (file, text) in [
            (".env", "TOKEN=abc\n"),
            (".env.local", "TOKEN=abc\n"),
            (".env.example", "TOKEN=\n"),
            (".ssh/config", "TOKEN=abc\n"),
            ("deploy/server.key", "TOKEN=abc\n"),
            (".netrc", "TOKEN=abc\n"),
            ("app.py", "TOKEN = env('TOKEN')\n"),
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let matcher = RegexMatcher::new("TOKEN").unwrap();
        assert_eq!(
            search_files(root, root, &matcher, None),
            ".env.example:1: TOKEN=\napp.py:1: TOKEN = env('TOKEN')"
        );
        assert_eq!(
            search_files(root, &root.join(".env"), &matcher, None),
            ".env:1: TOKEN=abc"
        );
        // Their names are no secret.
        assert!(list(root, None).contains(".env.local"));
    }

    #[test]
    fn a_searched_directory_or_file_still_gives_paths_from_the_workspace_root() {
        let dir = tree();
        let root = dir.path();
        std::fs::write(root.join("src/config.toml"), "name = 'src'\n").unwrap();
        std::fs::write(root.join("config.toml"), "name = 'root'\n").unwrap();
        let src = root.join("src");
        assert_eq!(
            list_files(root, &src, None),
            "src/config.toml\nsrc/deep/lib.rs\nsrc/main.rs"
        );
        // A glob may be written from either place.
        for glob in ["*.toml", "src/*.toml", "config.toml"] {
            let glob = glob_matcher(glob).unwrap();
            assert_eq!(list_files(root, &src, Some(&glob)), "src/config.toml");
        }
        let deep = glob_matcher("deep/*.rs").unwrap();
        assert_eq!(list_files(root, &src, Some(&deep)), "src/deep/lib.rs");
        let name = RegexMatcher::new("name").unwrap();
        assert_eq!(
            search_files(root, &src, &name, None),
            "src/config.toml:1: name = 'src'"
        );
        let file = src.join("config.toml");
        assert_eq!(
            search_files(root, &file, &name, None),
            "src/config.toml:1: name = 'src'"
        );
    }

    #[test]
    fn a_name_that_is_not_utf8_is_marked_not_mangled() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(dir.path().join(name), "hello\n").unwrap();
        let listing = list(dir.path(), None);
        assert!(listing.starts_with("caf\\xe9.txt ("), "{listing}");
        assert!(listing.contains("not UTF-8"), "{listing}");
        assert!(!listing.contains('\u{fffd}'), "{listing}");
    }

    #[test]
    fn a_bad_pattern_is_quoted_as_written() {
        let Err(Stop::Failed(message)) = regex_matcher("(") else {
            panic!("`(` is not a regex")
        };
        assert!(message.starts_with("`(` is not a valid regular expression"));
        assert!(!message.contains("(?:"), "{message}");
        assert!(message.contains("unclosed group"), "{message}");
    }

    #[test]
    fn search_finds_lines_with_their_numbers_and_skips_ignored_files() {
        let dir = tree();
        let root = dir.path();
        let matcher = RegexMatcher::new(r"fn \w+").unwrap();
        let found = search_files(root, root, &matcher, None);
        assert_eq!(
            found,
            "src/deep/lib.rs:1: pub fn hi() {}\nsrc/main.rs:1: fn main() {"
        );
        let none = search_files(
            root,
            root,
            &RegexMatcher::new("nothing here").unwrap(),
            None,
        );
        assert_eq!(none, "no matches");
    }
}
