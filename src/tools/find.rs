//! `list_files` and `search`: walking and grepping the workspace with the
//! crates ripgrep is built from, so ignore files are respected the same way.
//! Inside a repository git's rules apply, from the repository's root down;
//! in a workspace no repository holds (or one that its repository ignores
//! whole, as a dotfiles repository in a home directory ignores everything),
//! only the workspace's own ignore files do: a `.gitignore` above a project
//! is about something else.
//! Hidden files are included, as `rg --hidden --glob '!.git'` would: a
//! project's `.github/` or `.env.example` is part of its code, while `.git`
//! is the repository's own store. Symlinks are listed with where they lead
//! but never followed, as ripgrep does: what they lead to inside the
//! workspace is found under its own name, and nothing outside is read.
//! Paths come back relative to the workspace root, whatever directory was
//! searched, because that is how every other tool takes them.
//! `search` matches bytes, so a line that is not UTF-8 is shown with
//! replacement characters rather than lost; a file that looks binary (a NUL
//! byte) is skipped in a walk, and counted, but searched when named. It
//! does not read files that usually hold secrets (`.env`, private keys,
//! `.ssh/`…) unless it is pointed at one: what it finds goes to the model's
//! provider. A cancel stops a walk before its next entry and a search
//! before its next buffer of a file, rather than letting them run on for a
//! turn that has ended.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use agent_client_protocol::v1::schema::ToolCallStatus;
use globset::{GlobBuilder, GlobMatcher};
use grep_matcher::Matcher as _;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use regex_syntax::ast::{self, Ast};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    ClientPort, Report, Stop, ToolContext, ToolOutcome, arguments, for_the_model, text_content,
};
use crate::workspace::{Workspace, WorkspaceError};

/// Most paths `list_files` returns.
const MAX_FILES: usize = 2000;

/// Most matching lines `search` returns.
const MAX_MATCHES: usize = 500;

/// Longest matching line `search` shows in full.
const MAX_LINE_CHARS: usize = 300;

/// How much of a long line is shown before its match.
const MATCH_LEAD_CHARS: usize = 100;

/// Most memory the search of one file may hold: its longest line, or the
/// whole file when the pattern reaches across lines.
const MAX_SEARCH_BUFFER: usize = 64 * 1024 * 1024;

/// Most files a search names among those it could not read.
const MAX_UNREADABLE_NAMED: usize = 3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    path: Option<String>,
    glob: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
    let dir = existing(context.workspace, args.path.as_deref())?;
    report.progress(Vec::new());
    let glob = args.glob.as_deref().map(glob_matcher).transpose()?;
    let stop = context.cancel.clone();
    let listing = blocking(context, move || {
        list_files(&root, &dir, glob.as_ref(), &stop)
    })
    .await?;
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
    let searched = existing(context.workspace, args.path.as_deref())?;
    report.progress(Vec::new());
    let glob = args.glob.as_deref().map(glob_matcher).transpose()?;
    // Compiling a pattern of large counted repetitions (`\w{1000}`) takes
    // seconds: off the async threads, and given up on by a cancel.
    let stop = context.cancel.clone();
    let found = blocking(context, move || -> Result<String, Stop> {
        let pattern = Pattern::new(&args.pattern)?;
        Ok(search_files(
            &root,
            &searched,
            &pattern,
            glob.as_ref(),
            &stop,
        ))
    })
    .await??;
    let found = for_the_model(&found);
    report.finish(ToolCallStatus::Completed, vec![text_content(&found)]);
    Ok(ToolOutcome::ok(found))
}

/// Where `path` (the workspace root when there is none) really is, if
/// something is there: a search of nothing is a mistake to tell the model,
/// not an empty result.
fn existing(workspace: &Workspace, path: Option<&str>) -> Result<PathBuf, Stop> {
    let path = Path::new(path.unwrap_or("."));
    let real = workspace.resolve(path)?;
    match std::fs::metadata(&real) {
        Ok(metadata) if metadata.is_dir() => Ok(real),
        // A named pipe or a device holds no lines to search, nor files to
        // list: said as the file tools say it, not as "no matches".
        Ok(_) => {
            workspace.file_size(path)?;
            Ok(real)
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            Err(WorkspaceError::NotFound(path.to_owned()).into())
        }
        Err(source) => Err(WorkspaceError::Io {
            path: path.to_owned(),
            source,
        }
        .into()),
    }
}

/// Run filesystem work off the async threads, unless the turn is cancelled
/// first. The turn goes on at once; the work itself is told to stop by the
/// token it was given, which it checks between entries and buffers.
async fn blocking<C: ClientPort, T: Send + 'static>(
    context: &ToolContext<'_, C>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        () = context.cancel.cancelled() => Err(Stop::Cancelled),
        done = tokio::task::spawn_blocking(work) => {
            done.map_err(|error| Stop::Failed(format!("the search failed: {error}")))
        }
    }
}

/// What `search` looks for.
struct Pattern {
    matcher: RegexMatcher,
    /// Whether a match may reach across lines, which then are searched as
    /// one text.
    multi_line: bool,
}

impl Pattern {
    /// `pattern` as a matcher, or an error that quotes the pattern as the
    /// model wrote it: the matcher's own error shows the pattern as it
    /// wraps it.
    fn new(pattern: &str) -> Result<Self, Stop> {
        let multi_line = spans_lines(pattern);
        RegexMatcherBuilder::new()
            // `^` and `$` match at the ends of each line, a match across
            // lines too.
            .multi_line(true)
            // Otherwise a match stays within one line even for `\s` or
            // `[^x]`, which hold a newline.
            .line_terminator((!multi_line).then_some(b'\n'))
            .build(pattern)
            .map(|matcher| Self {
                matcher,
                multi_line,
            })
            .map_err(|error| invalid_pattern(pattern, &error))
    }

    /// A searcher for this pattern that treats a NUL byte as `binary` says.
    fn searcher(&self, binary: BinaryDetection) -> Searcher {
        SearcherBuilder::new()
            .binary_detection(binary)
            .line_number(true)
            .multi_line(self.multi_line)
            .heap_limit(Some(MAX_SEARCH_BUFFER))
            .build()
    }
}

fn invalid_pattern(pattern: &str, error: &grep_regex::Error) -> Stop {
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
}

/// Whether `pattern` asks to match across lines: it names a newline, or
/// sets the `s` flag that lets `.` match one. A class that merely holds a
/// newline (`\s`, `[^x]`) stays within a line, as in ripgrep: `\s+` is
/// written for the space between words, not to run on into the next lines.
fn spans_lines(pattern: &str) -> bool {
    ast::parse::Parser::new()
        .parse(pattern)
        .ok()
        .and_then(|parsed| ast::visit(&parsed, NewlineAsked::default()).ok())
        .unwrap_or(false)
}

/// Looks through a pattern for a sign that it means to match a newline.
#[derive(Default)]
struct NewlineAsked {
    asked: bool,
}

impl ast::Visitor for NewlineAsked {
    type Output = bool;
    type Err = std::convert::Infallible;

    fn finish(self) -> Result<bool, Self::Err> {
        Ok(self.asked)
    }

    fn visit_pre(&mut self, node: &Ast) -> Result<(), Self::Err> {
        self.asked |= match node {
            Ast::Literal(literal) => literal.c == '\n',
            Ast::Flags(set) => dot_matches_newline(&set.flags),
            Ast::Group(group) => {
                matches!(&group.kind, ast::GroupKind::NonCapturing(flags) if dot_matches_newline(flags))
            }
            _ => false,
        };
        Ok(())
    }

    fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), Self::Err> {
        self.asked |= matches!(item, ast::ClassSetItem::Literal(literal) if literal.c == '\n');
        Ok(())
    }
}

fn dot_matches_newline(flags: &ast::Flags) -> bool {
    flags.flag_state(ast::Flag::DotMatchesNewLine) == Some(true)
}

/// A glob matched against paths relative to the workspace root, and to the
/// directory searched; a glob without `/` also matches a file's name
/// anywhere. One that starts with `./` or `/` is anchored there, as a shell
/// and `.gitignore` read it: `./*.rs` is the `.rs` files at the top, not
/// a glob no path (`src/main.rs`, never `./src/main.rs`) could match.
fn glob_matcher(glob: &str) -> Result<GlobMatcher, Stop> {
    let anchored = glob
        .strip_prefix("./")
        .or_else(|| glob.strip_prefix('/'))
        .map(|rest| rest.trim_start_matches("./"));
    let pattern = match anchored {
        Some(rest) => rest.to_owned(),
        None if glob.contains('/') => glob.to_owned(),
        None => format!("**/{glob}"),
    };
    GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|error| Stop::Failed(format!("`{glob}` is not a valid glob: {error}")))
}

/// Which ignore files a walk of the workspace obeys.
#[derive(Debug, PartialEq)]
enum IgnoreScope {
    /// The repository's, as git does: from its root down, none above it.
    Repository,
    /// The workspace's own, from its root down.
    Workspace,
}

fn ignore_scope(root: &Path) -> IgnoreScope {
    match enclosing_repository(root) {
        Some(top) if top == root || !repository_ignores(top, root) => IgnoreScope::Repository,
        _ => IgnoreScope::Workspace,
    }
}

/// The root of the git repository `dir` is in, if any.
fn enclosing_repository(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|dir| dir.join(".git").exists())
}

/// Whether the repository at `top` ignores `dir`, a directory below it.
/// Then the repository is not about the workspace: a home directory kept as
/// a dotfiles repository, `*` in its `.gitignore`, hides nothing of a
/// project under it that has no repository of its own yet.
fn repository_ignores(top: &Path, dir: &Path) -> bool {
    let gitignores = dir
        .ancestors()
        .skip(1)
        .take_while(|above| above.starts_with(top))
        .map(|above| rules(above, ".gitignore"));
    // Below every `.gitignore`, as git ranks them.
    let exclude = rules(top, ".git/info/exclude");
    gitignores
        .chain([exclude])
        .find_map(|rules| verdict(&rules.matched_path_or_any_parents(dir, true)))
        .unwrap_or(false)
}

/// What a set of rules says of a path: ignored (`true`), let through
/// (`false`), or nothing (`None`), leaving it to the rules above.
fn verdict<T>(found: &Match<T>) -> Option<bool> {
    match found {
        Match::None => None,
        Match::Ignore(_) => Some(true),
        Match::Whitelist(_) => Some(false),
    }
}

/// The rules of the ignore file `name` in `dir`; none when it is missing or
/// unreadable, as the walk takes it.
fn rules(dir: &Path, name: &str) -> Gitignore {
    let mut builder = GitignoreBuilder::new(dir);
    // An unreadable file or bad line drops only those rules.
    let _partly = builder.add(dir.join(name));
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}

/// The rules of the workspace's ignore files in the directories above `dir`,
/// up to the `root`, the nearest first: the walk reads those from `dir`
/// down itself.
fn inherited_rules(root: &Path, dir: &Path) -> Vec<Gitignore> {
    dir.ancestors()
        .skip(1)
        .take_while(|above| above.starts_with(root))
        .flat_map(|above| [rules(above, ".ignore"), rules(above, ".gitignore")])
        .filter(|rules| !rules.is_empty())
        .collect()
}

fn ignored_by(inherited: &[Gitignore], entry: &ignore::DirEntry) -> bool {
    let is_dir = entry.file_type().is_some_and(|kind| kind.is_dir());
    inherited
        .iter()
        .find_map(|rules| verdict(&rules.matched(entry.path(), is_dir)))
        .unwrap_or(false)
}

/// A file or symlink a walk found.
struct Found {
    /// Where it is.
    path: PathBuf,
    /// How the model names it: relative to the workspace root.
    relative: PathBuf,
    /// Whether it is a symlink, which is listed but not followed.
    link: bool,
}

/// The files and symlinks under `dir` that ignore files do not hide, hidden
/// ones included but never what is inside `.git`; none once `stop` is
/// cancelled, so a walk of a large tree ends with the turn that wanted it.
fn walk(
    root: &Path,
    dir: &Path,
    glob: Option<&GlobMatcher>,
    stop: &CancellationToken,
) -> impl Iterator<Item = Found> {
    let stop = stop.clone();
    let root = root.to_owned();
    let dir = dir.to_owned();
    let glob = glob.cloned();
    let mut builder = ignore::WalkBuilder::new(&dir);
    builder.hidden(false).sort_by_file_name(|a, b| a.cmp(b));
    let inherited = match ignore_scope(&root) {
        IgnoreScope::Repository => {
            builder.parents(true).require_git(true);
            Vec::new()
        }
        // The walk would read ignore files up to the filesystem's root, or
        // none above `dir`: those between it and the workspace root are
        // applied here instead.
        IgnoreScope::Workspace => {
            builder.parents(false).require_git(false);
            inherited_rules(&root, &dir)
        }
    };
    builder
        .filter_entry(move |entry| entry.file_name() != ".git" && !ignored_by(&inherited, entry))
        .build()
        // Asked of every entry, directories too: those an ignore file
        // hides may be most of a tree.
        .take_while(move |_| !stop.is_cancelled())
        .filter_map(Result::ok)
        .filter_map(move |entry| {
            let kind = entry.file_type()?;
            if !kind.is_file() && !kind.is_symlink() {
                return None;
            }
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
            wanted.then(|| Found {
                path: entry.path().to_owned(),
                relative,
                link: kind.is_symlink(),
            })
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

fn list_files(
    root: &Path,
    dir: &Path,
    glob: Option<&GlobMatcher>,
    stop: &CancellationToken,
) -> String {
    let mut lines = Vec::new();
    let mut total = 0;
    for found in walk(root, dir, glob, stop) {
        total += 1;
        if lines.len() < MAX_FILES {
            lines.push(listed(root, &found));
        }
    }
    if total == 0 {
        return "no files".to_owned();
    }
    if total > lines.len() {
        lines.push(format!("… and {} more files", total - lines.len()));
    }
    lines.join(
        "
",
    )
}

fn listed(root: &Path, found: &Found) -> String {
    let name = named(&found.relative);
    if found.link {
        format!("{name} -> {}", link_target(root, &found.path))
    } else {
        name
    }
}

/// Where the symlink at `link` leads, as a listing shows it: the path in
/// the workspace, a directory's ending in `/`. Where a link leads outside
/// stays unsaid, as nothing there is the model's to know.
fn link_target(root: &Path, link: &Path) -> String {
    let Ok(target) = std::fs::canonicalize(link) else {
        return "(nothing: the link is broken)".to_owned();
    };
    let Ok(inside) = target.strip_prefix(root) else {
        return "(outside the workspace)".to_owned();
    };
    let shown = if inside.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        named(inside)
    };
    if target.is_dir() {
        format!("{shown}/")
    } else {
        shown
    }
}

/// Search `searched`, a file or a directory inside the workspace `root`,
/// until `stop` is cancelled.
fn search_files(
    root: &Path,
    searched: &Path,
    pattern: &Pattern,
    glob: Option<&GlobMatcher>,
    stop: &CancellationToken,
) -> String {
    let mut findings = Findings {
        stop: stop.clone(),
        ..Findings::default()
    };
    if searched.is_file() {
        // Named, so searched whatever it holds, as ripgrep searches a file
        // it is given: its NULs read as line ends, never shown.
        let mut searcher = pattern.searcher(BinaryDetection::convert(b'\0'));
        let relative = searched.strip_prefix(root).unwrap_or(searched);
        findings.search(&mut searcher, &pattern.matcher, searched, relative);
    } else {
        let mut searcher = pattern.searcher(BinaryDetection::quit(b'\0'));
        let files = walk(root, searched, glob, stop)
            .filter(|found| !found.link && !holds_secrets(&found.relative));
        for found in files {
            if findings.search(
                &mut searcher,
                &pattern.matcher,
                &found.path,
                &found.relative,
            ) {
                findings.binary += 1;
            }
        }
    }
    findings.told()
}

/// What a search found.
#[derive(Default)]
struct Findings {
    /// The first matching lines, as the model is shown them.
    lines: Vec<String>,
    /// How many lines matched in all.
    total: usize,
    /// Files left unsearched, or searched only in part, for looking binary.
    binary: usize,
    /// Each file that could not be read, with why.
    unreadable: Vec<String>,
    /// Cancelled when the turn is: a file is read no further.
    stop: CancellationToken,
}

impl Findings {
    /// Search the file at `path`, telling whether it looked binary.
    fn search(
        &mut self,
        searcher: &mut Searcher,
        matcher: &RegexMatcher,
        path: &Path,
        relative: &Path,
    ) -> bool {
        let name = named(relative);
        let mut sink = FileSink {
            name: &name,
            matcher,
            findings: self,
            binary: false,
        };
        let stop = sink.findings.stop.clone();
        let searched = File::open(path).and_then(|file| {
            searcher.search_reader(matcher, UntilStopped { file, stop }, &mut sink)
        });
        let binary = sink.binary;
        if let Err(error) = searched {
            self.unreadable.push(format!("{name}: {error}"));
        }
        binary
    }

    /// A matching line; `at` is where in it the match begins, if it does.
    fn add(&mut self, name: &str, number: u64, line: &[u8], at: Option<usize>) {
        self.total += 1;
        if self.lines.len() < MAX_MATCHES {
            self.lines
                .push(format!("{name}:{number}: {}", shown(line, at)));
        }
    }

    /// The findings as the model is told them.
    fn told(mut self) -> String {
        if self.total == 0 {
            self.lines.push("no matches".to_owned());
        } else if self.total > self.lines.len() {
            let more = self.total - self.lines.len();
            self.lines.push(format!("… and {more} more matches"));
        }
        if self.binary > 0 {
            self.lines.push(format!(
                "({} skipped as binary; name one as `path` to search it)",
                files(self.binary)
            ));
        }
        if !self.unreadable.is_empty() {
            let some =
                self.unreadable[..self.unreadable.len().min(MAX_UNREADABLE_NAMED)].join("; ");
            let etc = if self.unreadable.len() > MAX_UNREADABLE_NAMED {
                "; …"
            } else {
                ""
            };
            self.lines.push(format!(
                "(could not search {}: {some}{etc})",
                files(self.unreadable.len())
            ));
        }
        self.lines.join("\n")
    }
}

fn files(count: usize) -> String {
    if count == 1 {
        "1 file".to_owned()
    } else {
        format!("{count} files")
    }
}

/// A file searched, which fails to read once the turn is cancelled: a
/// search stops within a buffer of the cancel, not at the end of a file of
/// gigabytes.
struct UntilStopped {
    file: File,
    stop: CancellationToken,
}

impl Read for UntilStopped {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.is_cancelled() {
            return Err(std::io::Error::other("the turn was cancelled"));
        }
        self.file.read(buffer)
    }
}

/// Takes the matches of one file's search.
struct FileSink<'a> {
    name: &'a str,
    matcher: &'a RegexMatcher,
    findings: &'a mut Findings,
    binary: bool,
}

impl Sink for FileSink<'_> {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, found: &SinkMatch<'_>) -> Result<bool, Self::Error> {
        // Every line of a match that reaches across lines, each numbered.
        let first = found.line_number().unwrap_or(1);
        for (number, line) in (first..).zip(found.lines()) {
            // Sought only in a line too long to show whole.
            let at = (line.len() > MAX_LINE_CHARS)
                .then(|| self.matcher.find(line).ok().flatten())
                .flatten()
                .map(|found| found.start());
            self.findings.add(self.name, number, line, at);
        }
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, Self::Error> {
        self.binary = true;
        Ok(true)
    }
}

/// A matching line as the model is shown it: bytes that are not UTF-8 as
/// replacement characters rather than losing the line, control characters
/// (a binary file's NULs) escaped, and a long line cut short around where
/// the match begins (`at`, a byte offset) — in a minified file, the match
/// may be a megabyte in.
fn shown(line: &[u8], at: Option<usize>) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    let match_char = at.map_or(0, |at| {
        String::from_utf8_lossy(line.get(..at).unwrap_or(line))
            .chars()
            .count()
    });
    let skipped = match_char.saturating_sub(MATCH_LEAD_CHARS);
    let mut chars = text.chars().skip(skipped);
    let mut shown = String::new();
    if skipped > 0 {
        shown.push('…');
    }
    for c in chars.by_ref().take(MAX_LINE_CHARS) {
        if c.is_control() && c != '\t' {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

/// Whether a file, by its path, is one that usually holds secrets: an
/// environment file (not its `.example`), a private key or certificate
/// store, a credentials or token file, Terraform's variables and state, or
/// anything in a directory of keys.
fn holds_secrets(relative: &Path) -> bool {
    const DIRECTORIES: [&str; 3] = [".ssh", ".aws", ".gnupg"];
    /// Files named for what they hold, wherever they are.
    const FILES: &[&str] = &[
        ".envrc",
        ".netrc",
        "_netrc",
        ".npmrc",
        ".pypirc",
        ".pgpass",
        ".git-credentials",
        ".htpasswd",
        ".vault-token",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ecdsa_sk",
        "id_ed25519",
        "id_ed25519_sk",
        "credentials.json",
    ];
    /// Files whose directory says what they are.
    const PATHS: [&str; 2] = [".docker/config.json", ".kube/config"];
    const EXTENSIONS: &[&str] = &[
        ".pem",
        ".key",
        ".p12",
        ".pfx",
        ".jks",
        ".keystore",
        ".tfvars",
        ".tfstate",
        ".tfstate.backup",
    ];
    const TEMPLATES: [&str; 4] = [".example", ".sample", ".template", ".dist"];
    if relative
        .components()
        .any(|part| DIRECTORIES.iter().any(|dir| part.as_os_str() == *dir))
        || PATHS.iter().any(|path| relative.ends_with(path))
    {
        return true;
    }
    let Some(name) = relative.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let environment = name == ".env" || name.starts_with(".env.");
    (environment && !TEMPLATES.iter().any(|suffix| name.ends_with(suffix)))
        || FILES.contains(&name)
        || EXTENSIONS.iter().any(|extension| name.ends_with(extension))
}

#[cfg(test)]
mod tests {
    use super::super::encoding::{Utf16, encode_utf16};
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

    fn pattern(text: &str) -> Pattern {
        Pattern::new(text).unwrap()
    }

    /// A search of a turn nobody cancels.
    fn search_files(
        root: &Path,
        searched: &Path,
        pattern: &Pattern,
        glob: Option<&GlobMatcher>,
    ) -> String {
        super::search_files(root, searched, pattern, glob, &CancellationToken::new())
    }

    /// A listing of a turn nobody cancels.
    fn list_files(root: &Path, dir: &Path, glob: Option<&GlobMatcher>) -> String {
        super::list_files(root, dir, glob, &CancellationToken::new())
    }

    /// A cancel ends a walk where it is, and a search inside a file: what
    /// they go on to find is nobody's any more.
    #[test]
    fn a_cancelled_walk_or_search_stops_where_it_is() {
        let dir = tree();
        let root = dir.path();
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert_eq!(super::list_files(root, root, None, &cancelled), "no files");
        let found = super::search_files(root, root, &pattern("fn"), None, &cancelled);
        assert_eq!(found, "no matches");
        let main = root.join("src/main.rs");
        let stopped = super::search_files(root, &main, &pattern("fn"), None, &cancelled);
        assert_eq!(
            stopped,
            "no matches\n(could not search 1 file: src/main.rs: the turn was cancelled)"
        );
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
        assert_eq!(list(dir.path(), Some("./*.toml")), "Cargo.toml");
        assert_eq!(list(dir.path(), Some("/*.toml")), "Cargo.toml");
        assert_eq!(list(dir.path(), Some("./src/*.rs")), "src/main.rs");
        assert_eq!(list(dir.path(), Some("./*.rs")), "no files");
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
        let matcher = pattern("runs-on");
        assert_eq!(
            search_files(root, root, &matcher, None),
            ".github/workflows/ci.yml:1: runs-on: x"
        );
        let secret = pattern("KEY=");
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
        let matcher = pattern("runs-on");
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
        let matcher = pattern("TOKEN");
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
        let name = pattern("name");
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
    fn a_match_deep_in_a_long_line_is_shown_with_what_surrounds_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let minified = format!("{}NEEDLE{}\n", "é".repeat(4000), "x".repeat(4000));
        write(root, "app.min.js", &minified);
        let found = search_files(root, root, &pattern("NEEDLE"), None);
        let shown = found
            .strip_prefix("app.min.js:1: …")
            .unwrap_or_else(|| panic!("{found}"));
        assert!(
            shown.starts_with(&format!("{}NEEDLE", "é".repeat(MATCH_LEAD_CHARS))),
            "{found}"
        );
        assert!(shown.ends_with("x…"), "{found}");
        assert_eq!(shown.chars().count(), MAX_LINE_CHARS + 1);
    }

    #[test]
    fn a_bad_pattern_is_quoted_as_written() {
        let Err(Stop::Failed(message)) = Pattern::new("(") else {
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
        let matcher = pattern(r"fn \w+");
        let found = search_files(root, root, &matcher, None);
        assert_eq!(
            found,
            "src/deep/lib.rs:1: pub fn hi() {}\nsrc/main.rs:1: fn main() {"
        );
        let none = search_files(root, root, &pattern("nothing here"), None);
        assert_eq!(none, "no matches");
    }

    fn write(root: &Path, file: &str, content: impl AsRef<[u8]>) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A workspace `ws` in a directory whose `.gitignore` ignores everything.
    fn under_an_ignore_all(outer: &Path) -> PathBuf {
        write(outer, ".gitignore", "*\n");
        let root = outer.join("ws");
        write(&root, "src/main.rs", "fn main() {}\n");
        write(&root, ".gitignore", "*.log\n");
        write(&root, "debug.log", "fn main() {}\n");
        root
    }

    #[test]
    fn a_gitignore_above_the_workspace_hides_nothing_in_it() {
        let outer = tempfile::tempdir().unwrap();
        let root = under_an_ignore_all(outer.path());
        let main = pattern("fn main");
        // In no repository: only the workspace's own ignore files count.
        assert_eq!(list(&root, None), ".gitignore\nsrc/main.rs");
        assert_eq!(
            search_files(&root, &root, &main, None),
            "src/main.rs:1: fn main() {}"
        );
        // A repository of its own: git's rules, from its root down.
        std::fs::create_dir_all(root.join(".git")).unwrap();
        assert_eq!(list(&root, None), ".gitignore\nsrc/main.rs");
        assert_eq!(
            search_files(&root, &root, &main, None),
            "src/main.rs:1: fn main() {}"
        );
    }

    #[test]
    fn a_dotfiles_repository_that_ignores_the_workspace_hides_nothing_in_it() {
        let outer = tempfile::tempdir().unwrap();
        let root = under_an_ignore_all(outer.path());
        std::fs::create_dir_all(outer.path().join(".git")).unwrap();
        assert_eq!(ignore_scope(&root), IgnoreScope::Workspace);
        assert_eq!(list(&root, None), ".gitignore\nsrc/main.rs");
    }

    #[test]
    fn a_workspace_inside_a_repository_keeps_its_rules_from_above() {
        let outer = tempfile::tempdir().unwrap();
        let outer = outer.path();
        std::fs::create_dir_all(outer.join(".git")).unwrap();
        write(outer, ".gitignore", "target/\n");
        let root = outer.join("package");
        write(&root, "src/lib.rs", "pub fn f() {}\n");
        write(&root, "target/built.rs", "pub fn f() {}\n");
        assert_eq!(ignore_scope(&root), IgnoreScope::Repository);
        assert_eq!(list(&root, None), "src/lib.rs");
    }

    #[test]
    fn a_listed_subdirectory_keeps_the_ignore_files_above_it_in_the_workspace() {
        for repository in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            if repository {
                std::fs::create_dir_all(root.join(".git")).unwrap();
            }
            write(root, ".gitignore", "*.log\n");
            write(root, "src/.gitignore", "!keep.log\n");
            write(root, "src/a.log", "x\n");
            write(root, "src/keep.log", "x\n");
            write(root, "src/lib.rs", "x\n");
            let src = root.join("src");
            let expected = if repository {
                "src/.gitignore\nsrc/keep.log\nsrc/lib.rs"
            } else {
                // Rules from above are applied after the walk's own, so
                // they win here where git would let `keep.log` through.
                "src/.gitignore\nsrc/lib.rs"
            };
            assert_eq!(list_files(root, &src, None), expected, "{repository}");
        }
    }

    #[test]
    fn lines_that_are_not_utf8_are_matched_and_shown_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "mixed.txt",
            b"needle ok\n\xff needle bad\nneedle after\n",
        );
        write(root, "latin1.txt", b"caf\xe9 needle\n");
        let needle = pattern("needle");
        assert_eq!(
            search_files(root, root, &needle, None),
            "latin1.txt:1: caf\u{fffd} needle\nmixed.txt:1: needle ok\n\
             mixed.txt:2: \u{fffd} needle bad\nmixed.txt:3: needle after"
        );
        assert_eq!(
            search_files(root, &root.join("latin1.txt"), &needle, None),
            "latin1.txt:1: caf\u{fffd} needle"
        );
    }

    /// As ripgrep does: a byte-order mark says a file is UTF-16, and it is
    /// searched decoded; without one, its NULs say binary.
    #[test]
    fn utf16_text_with_a_byte_order_mark_is_searched_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let little_endian = |bom| Utf16 {
            big_endian: false,
            bom,
        };
        let marked = encode_utf16("one\nneedle two\n", little_endian(true));
        write(root, "marked.txt", &marked);
        let bare = encode_utf16("bare needle\n", little_endian(false));
        write(root, "bare.txt", &bare);
        let needle = pattern("needle");
        assert_eq!(
            search_files(root, root, &needle, None),
            "marked.txt:2: needle two\n(1 file skipped as binary; name one as `path` to search it)"
        );
    }

    #[test]
    fn binary_files_are_counted_when_skipped_and_searched_when_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "blob.bin", b"\0\0needle here\0tail\n");
        write(root, "text.txt", "no match\n");
        let needle = pattern("needle");
        assert_eq!(
            search_files(root, root, &needle, None),
            "no matches\n(1 file skipped as binary; name one as `path` to search it)"
        );
        let named = search_files(root, &root.join("blob.bin"), &needle, None);
        assert_eq!(named, "blob.bin:3: needle here");
        // A match across lines reads the file whole, NULs and all.
        let across = search_files(
            root,
            &root.join("blob.bin"),
            &pattern("needle(?s:.)+tail"),
            None,
        );
        assert!(!across.contains('\0'), "{across}");
        assert!(
            across.contains("blob.bin:1: \\u{0}\\u{0}needle here\\u{0}tail"),
            "{across}"
        );
    }

    #[test]
    fn a_pattern_that_names_a_newline_matches_across_lines() {
        let dir = tree();
        let root = dir.path();
        let found = search_files(root, root, &pattern(r"main\(\) \{\n\s+println"), None);
        assert_eq!(
            found,
            "src/main.rs:1: fn main() {\nsrc/main.rs:2:     println!(\"hi\");"
        );
        let dot_all = search_files(root, root, &pattern(r"(?s)main.{4}\s+println"), None);
        assert_eq!(dot_all, found);
        assert_eq!(
            search_files(root, root, &pattern(r"\{$"), None),
            "src/main.rs:1: fn main() {"
        );
        // `\s` alone stays within a line, as in ripgrep.
        assert_eq!(
            search_files(root, root, &pattern(r"\{\s+println"), None),
            "no matches"
        );
        // `^` and `$` still mean a line's ends.
        assert_eq!(
            search_files(root, root, &pattern(r"\{$\n^\s+println"), None),
            found
        );
        assert!(!spans_lines(r"a\sb[^x]"));
        assert!(spans_lines(r"a[\n]b") && spans_lines("(?s:a.b)") && spans_lines("a\nb"));
    }

    #[test]
    fn a_path_that_does_not_exist_is_an_error() {
        let dir = tree();
        let workspace = Workspace::new(dir.path()).unwrap();
        let Err(Stop::Failed(message)) = existing(&workspace, Some("nothere")) else {
            panic!("`nothere` does not exist")
        };
        assert_eq!(message, "`nothere` does not exist");
        assert_eq!(
            existing(&workspace, None).unwrap(),
            workspace.root().to_owned()
        );
        assert!(existing(&workspace, Some("src/main.rs")).is_ok());
    }

    #[test]
    fn files_that_usually_hold_secrets_are_not_searched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let secrets = [
            ".envrc",
            ".git-credentials",
            ".pgpass",
            ".netrc",
            ".npmrc",
            ".pypirc",
            ".htpasswd",
            ".ssh/id_dsa",
            "keys/id_dsa",
            "keys/id_ecdsa",
            "keys/id_ed25519",
            "keys/id_rsa",
            ".docker/config.json",
            "home/.kube/config",
            "infra/terraform.tfvars",
            "infra/prod.auto.tfvars",
            "infra/terraform.tfstate",
            "infra/terraform.tfstate.backup",
            "certs/client.p12",
            "certs/client.pfx",
        ];
        for file in secrets {
            write(root, file, "TOKEN=abc\n");
        }
        write(root, "infra/terraform.tfvars.example", "TOKEN=\n");
        write(root, "docker/config.json", "TOKEN=\n");
        assert_eq!(
            search_files(root, root, &pattern("TOKEN"), None),
            "docker/config.json:1: TOKEN=\ninfra/terraform.tfvars.example:1: TOKEN="
        );
        for file in secrets {
            assert!(holds_secrets(Path::new(file)), "{file}");
        }
    }

    #[test]
    fn symlinks_are_listed_with_their_targets_but_not_followed() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.txt", "needle outside\n");
        let dir = tree();
        let root = dir.path();
        write(root, "real/inside.txt", "needle inside\n");
        symlink("src/main.rs", root.join("linkfile.rs")).unwrap();
        symlink("real", root.join("linkdir")).unwrap();
        symlink(outside.path().join("secret.txt"), root.join("escape.txt")).unwrap();
        symlink(outside.path(), root.join("escapedir")).unwrap();
        symlink("nowhere", root.join("broken")).unwrap();
        assert_eq!(
            list(root, None),
            ".gitignore\nCargo.toml\nbroken -> (nothing: the link is broken)\n\
             escape.txt -> (outside the workspace)\nescapedir -> (outside the workspace)\n\
             linkdir -> real/\nlinkfile.rs -> src/main.rs\nreal/inside.txt\n\
             src/deep/lib.rs\nsrc/main.rs"
        );
        assert_eq!(list(root, Some("*.rs")).lines().count(), 3);
        assert_eq!(
            search_files(root, root, &pattern("needle"), None),
            "real/inside.txt:1: needle inside"
        );
        assert_eq!(
            search_files(root, root, &pattern("fn main"), None),
            "src/main.rs:1: fn main() {"
        );
    }
}
