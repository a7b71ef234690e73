//! A workspace: the directory an agent may work in, and the file and process
//! operations confined to it.
//!
//! Every path an agent names is resolved here before it is touched: relative
//! paths are taken from the root, `..` is applied, and symlinks are followed —
//! dangling ones too, since writing through one creates its target; whatever
//! lands outside the root is refused with an error that says so. A path is
//! taken as the kernel would take it, and refused where a person would have
//! meant something else: one starting with `~` (no shell expanded it), one
//! ending with `/` to be written as a file, or one that would create a name
//! with a control character in it.
//! Only regular files are read or written, and never in a way that could
//! wait for ever (see `text`).
//! Used by `punie ask` to serve `fs/*` and `terminal/*`, and by the server's
//! own tools. Knows nothing of ACP or sessions.

mod terminals;
mod text;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use tokio_util::sync::CancellationToken;

pub use terminals::{ExitStatus, TerminalError, TerminalOutput, Terminals, die_with_this_process};
pub use text::{
    BadByte, End, Excerpt, NotAFile, ReadError, excerpt, open_named_file, open_to_read,
};

/// Symlinks one path may pass through: as many as Linux follows before it
/// gives up with `ELOOP`, so a loop is refused rather than walked forever.
const MAX_SYMLINKS: usize = 40;

/// Most text [`Workspace::read_text`] answers with: half a message at the
/// default limit, as JSON may escape some of it.
pub const MAX_READ_TEXT_BYTES: usize = crate::config::MAX_MESSAGE_BYTES / 2;

/// Why a path or file operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("`{path}` is outside the workspace {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error("`{0}` does not exist")]
    NotFound(PathBuf),
    #[error("{0}")]
    NotText(NotUtf8),
    // A refusal (`NotAFile`) travels as an I/O error, and reads as a
    // sentence about the path.
    #[error("`{path}`{}", after_path(.source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file that is not UTF-8 text, and where it stops being.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{}` is not UTF-8 text: byte {} (0x{:02X}, on line {}) is not valid UTF-8; it is binary, or \
     text in another encoding such as Latin-1",
    .path.display(), .at.offset, .at.byte, .at.line
)]
pub struct NotUtf8 {
    pub path: PathBuf,
    pub at: BadByte,
}

/// A path refused for how it is written: a sentence about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl Refused {
    /// The I/O error that carries this refusal of `path`.
    fn error(path: &Path, sentence: impl Into<String>) -> WorkspaceError {
        io_error(
            path,
            std::io::Error::new(ErrorKind::InvalidInput, Self(sentence.into())),
        )
    }
}

/// The directory an agent may work in.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Where it really is: every check and file operation goes by this.
    root: PathBuf,
    /// The root as it was given, which may pass through a symlink (`/tmp`
    /// on macOS): what a client that opened the project there knows it by.
    named_root: PathBuf,
}

impl Workspace {
    /// The workspace rooted at `root`, which must exist.
    pub fn new(root: &Path) -> Result<Self, WorkspaceError> {
        let real = std::fs::canonicalize(root).map_err(|source| io_error(root, source))?;
        let named_root = std::path::absolute(root)
            .ok()
            .and_then(|named| lexically_normal(&named))
            .unwrap_or_else(|| real.clone());
        Ok(Self {
            root: real,
            named_root,
        })
    }

    /// The workspace that was at `root` before the directory was removed:
    /// its name, for a stored session's history to be shown under. Nothing
    /// in it resolves until the directory is back, and then only by the
    /// path as named.
    pub fn gone(root: &Path) -> Self {
        let named_root = std::path::absolute(root)
            .ok()
            .and_then(|named| lexically_normal(&named))
            .unwrap_or_else(|| root.to_owned());
        Self {
            root: named_root.clone(),
            named_root,
        }
    }

    /// Whether the workspace's directory is there.
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    /// Where the workspace really is, every symlink followed.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root as the workspace was given: the one to show a client.
    pub fn named_root(&self) -> &Path {
        &self.named_root
    }

    /// `real`, a path [`Self::resolve`] gave, as a client knows it: under
    /// [`Self::named_root`]. A client that opened the project through a
    /// symlink finds its own buffers by these paths.
    pub fn as_named(&self, real: &Path) -> PathBuf {
        match real.strip_prefix(&self.root) {
            Ok(relative) if relative.as_os_str().is_empty() => self.named_root.clone(),
            Ok(relative) => self.named_root.join(relative),
            Err(_) => real.to_owned(),
        }
    }

    /// The real location of `path` (absolute, or relative to the root), if it
    /// is inside the workspace. The path need not exist yet; if it ends with
    /// `/`, whatever is there must be a directory, as the kernel has it.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, WorkspaceError> {
        if path.as_os_str().as_bytes().starts_with(b"~") {
            // A shell would have meant a home directory: taken as a name, it
            // makes a directory `~` that a later `rm -rf ~` turns deadly.
            return Err(Refused::error(
                path,
                "starts with `~`, which is not expanded to a home directory here: paths are \
                 relative to the workspace root, or absolute inside it",
            ));
        }
        let outside = || WorkspaceError::Outside {
            path: path.to_owned(),
            root: self.root.clone(),
        };
        let joined = lexically_normal(&self.root.join(path)).ok_or_else(outside)?;
        let resolved = follow(&joined).map_err(|error| io_error(path, error))?;
        if !resolved.starts_with(&self.root) {
            return Err(outside());
        }
        // The trailing `/` went with the normalising; the kernel would
        // have refused a file named so.
        match std::fs::metadata(&resolved) {
            Ok(metadata) if names_a_directory(path) && !metadata.is_dir() => {
                Err(io_error(path, rustix::io::Errno::NOTDIR.into()))
            }
            _ => Ok(resolved),
        }
    }

    /// The real location of `path`, as [`Self::resolve`], for a file to be
    /// written there: refused when `path` names a directory, or would make
    /// a name with a control character (a line break, say) in it.
    pub fn resolve_to_write(&self, path: &Path) -> Result<PathBuf, WorkspaceError> {
        if names_a_directory(path) {
            return Err(Refused::error(
                path,
                "ends with `/`, so it names a directory, not a file to write; leave the `/` \
                 out to write a file",
            ));
        }
        let real = self.resolve(path)?;
        if let Some(control) = control_character_of_new_names(&real) {
            return Err(Refused::error(
                path,
                format!(
                    "would create a name with a control character in it (U+{:04X}); nothing \
                     was created",
                    u32::from(control)
                ),
            ));
        }
        Ok(real)
    }

    /// The size of the regular file at `path`, or `None` when nothing is
    /// there; anything else there is refused.
    pub fn file_size(&self, path: &Path) -> Result<Option<u64>, WorkspaceError> {
        let real = self.resolve(path)?;
        match std::fs::metadata(&real).and_then(text::regular) {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(path, error)),
        }
    }

    /// The text of the file at `path`, from line `line` (1-based) for at most
    /// `limit` lines, as `fs/read_text_file` answers it: whole, or not at all
    /// when it is longer than [`MAX_READ_TEXT_BYTES`], which one answer
    /// could not carry.
    pub async fn read_text(
        &self,
        path: &Path,
        line: Option<u32>,
        limit: Option<u32>,
    ) -> Result<String, WorkspaceError> {
        let first = line.map_or(1, |line| line as usize);
        let limit = limit.map(|limit| limit as usize);
        let excerpt = self
            .read_lines(
                path,
                first,
                limit,
                MAX_READ_TEXT_BYTES,
                CancellationToken::new(),
            )
            .await?;
        if matches!(excerpt.end, text::End::Budget { .. } | text::End::LongLine) {
            // The request's to change: asked for fewer lines, it is served.
            return Err(io_error(
                path,
                std::io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the text asked for is longer than {} MiB, more than one answer carries; \
                         ask for fewer lines",
                        MAX_READ_TEXT_BYTES / 1024 / 1024
                    ),
                ),
            ));
        }
        Ok(excerpt.text)
    }

    /// Lines `first..` (1-based) of the file at `path`, at most `limit` of
    /// them and `budget` bytes: only that much of the file is read. Reading
    /// ends early, failing, once `stop` is cancelled.
    pub async fn read_lines(
        &self,
        path: &Path,
        first: usize,
        limit: Option<usize>,
        budget: usize,
        stop: CancellationToken,
    ) -> Result<Excerpt, WorkspaceError> {
        let real = self.resolve(path)?;
        let shown = path.to_owned();
        let read = tokio::task::spawn_blocking(move || {
            let file = text::open_to_read(&real).map_err(|error| match error.kind() {
                ErrorKind::NotFound => WorkspaceError::NotFound(shown.clone()),
                _ => io_error(&shown, error),
            })?;
            let reader = std::io::BufReader::with_capacity(text::READ_BUFFER, file);
            excerpt(reader, first, limit, budget, || stop.is_cancelled()).map_err(|error| {
                match error {
                    ReadError::Io(error) => io_error(&shown, error),
                    ReadError::NotText(at) => WorkspaceError::NotText(NotUtf8 {
                        path: shown.clone(),
                        at,
                    }),
                    ReadError::Stopped => io_error(&shown, ErrorKind::Interrupted.into()),
                }
            })
        });
        read.await
            .map_err(|error| io_error(path, std::io::Error::other(error)))?
    }

    /// The first `most` bytes of the regular file at `path`.
    pub async fn read_bytes(&self, path: &Path, most: u64) -> Result<Vec<u8>, WorkspaceError> {
        let real = self.resolve(path)?;
        let shown = path.to_owned();
        let read = tokio::task::spawn_blocking(move || {
            let file = text::open_to_read(&real).map_err(|error| match error.kind() {
                ErrorKind::NotFound => WorkspaceError::NotFound(shown.clone()),
                _ => io_error(&shown, error),
            })?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, most), &mut bytes)
                .map_err(|error| io_error(&shown, error))?;
            Ok(bytes)
        });
        read.await
            .map_err(|error| io_error(path, std::io::Error::other(error)))?
    }

    /// Replace the file at `path` with `content`, creating missing
    /// directories. A write that fails leaves the file as it was, but for
    /// one written in place (see [`text::write`]).
    pub async fn write_text(&self, path: &Path, content: &str) -> Result<(), WorkspaceError> {
        self.write_bytes(path, content.as_bytes().to_vec()).await
    }

    /// [`write_text`](Self::write_text) for text already encoded.
    pub async fn write_bytes(&self, path: &Path, content: Vec<u8>) -> Result<(), WorkspaceError> {
        let real = self.resolve_to_write(path)?;
        // Creating the missing directories would bring back a workspace
        // someone removed, as an empty one.
        if !self.root.is_dir() {
            return Err(io_error(
                path,
                std::io::Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "the workspace {} no longer exists",
                        self.named_root.display()
                    ),
                ),
            ));
        }
        if let Some(parent) = real.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|error| io_error(path, error))?;
        }
        tokio::task::spawn_blocking(move || text::write(&real, &content))
            .await
            .map_err(std::io::Error::other)
            .and_then(|written| written)
            .map_err(|error| io_error(path, error))
    }
}

/// What follows the path in the message of an I/O error about it.
fn after_path(source: &std::io::Error) -> String {
    let inner = source.get_ref();
    if let Some(refusal) = inner.and_then(|inner| inner.downcast_ref::<NotAFile>()) {
        format!(" {refusal}")
    } else if let Some(refusal) = inner.and_then(|inner| inner.downcast_ref::<Refused>()) {
        format!(" {refusal}")
    } else {
        format!(": {source}")
    }
}

/// Whether `path`, as written, ends with `/`: a directory's name.
fn names_a_directory(path: &Path) -> bool {
    path.as_os_str().as_bytes().ends_with(b"/")
}

/// The first control character in the names `real` would add to the file
/// system: those of its components not there yet.
fn control_character_of_new_names(real: &Path) -> Option<char> {
    real.ancestors()
        .take_while(|missing| std::fs::symlink_metadata(missing).is_err())
        .filter_map(Path::file_name)
        .flat_map(|name| name.to_string_lossy().chars().collect::<Vec<_>>())
        .find(|character| character.is_control())
}

fn io_error(path: &Path, source: std::io::Error) -> WorkspaceError {
    WorkspaceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One step of a path being followed.
enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    path.components().filter_map(|component| match component {
        Component::Prefix(_) | Component::RootDir => Some(Step::Root),
        Component::CurDir => None,
        Component::ParentDir => Some(Step::Up),
        Component::Normal(name) => Some(Step::Name(name.to_owned())),
    })
}

/// Where the kernel lands when it opens or creates the absolute `path`: each
/// symlink is followed where it stands, a dangling one too (writing through
/// it creates its target, wherever that is). Past the first missing component
/// the rest is yet to be created, so it is taken as it is.
fn follow(path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: VecDeque<Step> = steps(path).collect();
    let mut landed = PathBuf::from("/");
    let mut missing = false;
    let mut links = 0;
    while let Some(step) = pending.pop_front() {
        match step {
            Step::Root => landed = PathBuf::from("/"),
            // The kernel cannot go up from something that does not exist.
            Step::Up if missing => return Err(ErrorKind::NotFound.into()),
            Step::Up => {
                landed.pop();
            }
            Step::Name(name) if missing => landed.push(name),
            Step::Name(name) => {
                let next = landed.join(name);
                match std::fs::symlink_metadata(&next) {
                    Ok(metadata) if metadata.is_symlink() => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(rustix::io::Errno::LOOP.into());
                        }
                        let target = std::fs::read_link(&next)?;
                        for step in steps(&target).rev() {
                            pending.push_front(step);
                        }
                    }
                    Ok(metadata) if !metadata.is_dir() && !pending.is_empty() => {
                        return Err(rustix::io::Errno::NOTDIR.into());
                    }
                    Ok(_) => landed = next,
                    Err(error) if error.kind() == ErrorKind::NotFound => {
                        missing = true;
                        landed = next;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }
    Ok(landed)
}

/// `path` with `.` and `..` applied, or `None` if `..` climbs above the root
/// of the filesystem.
fn lexically_normal(path: &Path) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !normal.pop() || normal.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    Some(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/src")).unwrap();
        std::fs::write(dir.path().join("root/src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(dir.path().join("secret"), "outside\n").unwrap();
        let workspace = Workspace::new(&dir.path().join("root")).unwrap();
        (dir, workspace)
    }

    #[test]
    fn paths_inside_resolve_whether_relative_absolute_or_not_yet_there() {
        let (_dir, workspace) = workspace();
        let root = workspace.root().to_owned();
        assert_eq!(
            workspace.resolve(Path::new("src/main.rs")).unwrap(),
            root.join("src/main.rs")
        );
        assert_eq!(
            workspace.resolve(&root.join("src/../src/main.rs")).unwrap(),
            root.join("src/main.rs")
        );
        assert_eq!(
            workspace.resolve(Path::new("new/dir/file")).unwrap(),
            root.join("new/dir/file")
        );
        assert_eq!(workspace.resolve(Path::new(".")).unwrap(), root);
    }

    #[test]
    fn escapes_by_dots_absolute_paths_and_symlinks_are_refused() {
        let (dir, workspace) = workspace();
        let root = workspace.root().to_owned();
        for escape in [
            "../secret",
            "src/../../secret",
            "/etc/passwd",
            "../../../../../../etc",
        ] {
            assert!(
                matches!(
                    workspace.resolve(Path::new(escape)),
                    Err(WorkspaceError::Outside { .. })
                ),
                "{escape} must be refused"
            );
        }
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        assert!(workspace.resolve(Path::new("link")).is_err());
        assert!(workspace.resolve(Path::new("up/secret")).is_err());
        assert!(workspace.resolve(Path::new("up/new-file")).is_err());
        // A dangling symlink leads where a write through it would create a file.
        std::os::unix::fs::symlink(dir.path().join("planted"), root.join("dangling")).unwrap();
        assert!(workspace.resolve(Path::new("dangling")).is_err());
        std::os::unix::fs::symlink("src/later.rs", root.join("pending")).unwrap();
        assert_eq!(
            workspace.resolve(Path::new("pending")).unwrap(),
            root.join("src/later.rs")
        );
        // A sibling directory whose name starts like the root is still outside.
        std::fs::create_dir_all(dir.path().join("root2")).unwrap();
        assert!(workspace.resolve(&dir.path().join("root2/x")).is_err());
    }

    #[tokio::test]
    async fn what_is_not_a_regular_file_is_refused_by_the_name_it_was_given() {
        let (_dir, workspace) = workspace();
        let root = workspace.root().to_owned();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink("fifo", root.join("link")).unwrap();
        for name in ["fifo", "link"] {
            let path = Path::new(name);
            let refused = format!(
                "`{name}` is a named pipe, not a file: only regular files can be read or written"
            );
            let read = workspace.read_text(path, None, None).await.unwrap_err();
            assert_eq!(read.to_string(), refused);
            let written = workspace.write_text(path, "x").await.unwrap_err();
            assert_eq!(written.to_string(), refused);
            assert_eq!(workspace.file_size(path).unwrap_err().to_string(), refused);
        }
        let directory = workspace.read_text(Path::new("src"), None, None).await;
        assert!(
            directory
                .unwrap_err()
                .to_string()
                .starts_with("`src` is a directory, not a file")
        );
        assert_eq!(workspace.file_size(Path::new("new.txt")).unwrap(), None);
        assert_eq!(
            workspace.file_size(Path::new("src/main.rs")).unwrap(),
            Some(13)
        );
    }

    #[tokio::test]
    async fn a_workspace_that_was_removed_is_not_brought_back_by_a_write() {
        let (dir, workspace) = workspace();
        std::fs::remove_dir_all(workspace.root()).unwrap();
        let error = workspace
            .write_text(Path::new("a/b.txt"), "hello\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("no longer exists"), "{error}");
        assert!(!workspace.root().exists());
        drop(dir);
    }

    #[tokio::test]
    async fn reading_and_writing_stay_inside() {
        let (_dir, workspace) = workspace();
        workspace
            .write_text(Path::new("a/b.txt"), "hello\nworld\n")
            .await
            .unwrap();
        assert_eq!(
            workspace
                .read_text(Path::new("a/b.txt"), Some(2), None)
                .await
                .unwrap(),
            "world\n"
        );
        assert!(
            workspace
                .write_text(Path::new("../escape.txt"), "x")
                .await
                .is_err()
        );
        assert!(matches!(
            workspace.read_text(Path::new("missing"), None, None).await,
            Err(WorkspaceError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_path_starting_with_a_tilde_is_refused_as_no_home_directory_is_meant_here() {
        let (_dir, workspace) = workspace();
        let refused = "`~/home.txt` starts with `~`, which is not expanded to a home directory \
                       here: paths are relative to the workspace root, or absolute inside it";
        let written = workspace.write_text(Path::new("~/home.txt"), "x").await;
        assert_eq!(written.unwrap_err().to_string(), refused);
        let read = workspace
            .read_text(Path::new("~/home.txt"), None, None)
            .await;
        assert_eq!(read.unwrap_err().to_string(), refused);
        assert!(!workspace.root().join("~").exists());
    }

    #[tokio::test]
    async fn a_path_ending_with_a_slash_names_a_directory() {
        let (_dir, workspace) = workspace();
        let root = workspace.root().to_owned();
        let written = workspace.write_text(Path::new("newdir/"), "x").await;
        assert_eq!(
            written.unwrap_err().to_string(),
            "`newdir/` ends with `/`, so it names a directory, not a file to write; leave the \
             `/` out to write a file"
        );
        assert!(!root.join("newdir").exists());
        let read = workspace
            .read_text(Path::new("src/main.rs/"), None, None)
            .await;
        assert_eq!(
            read.unwrap_err().to_string(),
            "`src/main.rs/`: Not a directory (os error 20)"
        );
        std::os::unix::fs::symlink("src/main.rs", root.join("link")).unwrap();
        assert!(workspace.resolve(Path::new("link/")).is_err());
        assert_eq!(
            workspace.resolve(Path::new("src/")).unwrap(),
            root.join("src")
        );
        assert!(matches!(
            workspace.resolve(Path::new("../secret/")),
            Err(WorkspaceError::Outside { .. })
        ));
    }

    #[tokio::test]
    async fn a_name_with_a_control_character_is_not_created() {
        let (_dir, workspace) = workspace();
        let root = workspace.root().to_owned();
        for (name, code) in [
            ("new\nline.txt", "000A"),
            ("dir\t/file.txt", "0009"),
            ("bell\u{7}", "0007"),
        ] {
            let written = workspace.write_text(Path::new(name), "x").await;
            assert_eq!(
                written.unwrap_err().to_string(),
                format!(
                    "`{name}` would create a name with a control character in it (U+{code}); \
                     nothing was created"
                )
            );
        }
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1, "only src");
        // One already there, made by someone else, can be written.
        std::fs::write(root.join("old\nname"), "old").unwrap();
        workspace
            .write_text(Path::new("old\nname"), "new")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("old\nname")).unwrap(),
            "new"
        );
    }

    /// A write through a symlink replaces the file it leads to: the link
    /// stays a link.
    #[tokio::test]
    async fn a_write_through_a_symlink_replaces_its_target() {
        let (_dir, workspace) = workspace();
        let root = workspace.root().to_owned();
        std::os::unix::fs::symlink("src/main.rs", root.join("link")).unwrap();
        workspace
            .write_text(Path::new("link"), "fn main() { run() }\n")
            .await
            .unwrap();
        assert!(root.join("link").is_symlink());
        assert_eq!(
            std::fs::read_to_string(root.join("src/main.rs")).unwrap(),
            "fn main() { run() }\n"
        );
    }

    #[tokio::test]
    async fn a_file_that_is_not_utf8_is_refused_saying_where_it_stops_being_text() {
        let (_dir, workspace) = workspace();
        std::fs::write(workspace.root().join("latin1.txt"), b"ok\ncaf\xe9\n").unwrap();
        let read = workspace
            .read_text(Path::new("latin1.txt"), None, None)
            .await;
        assert_eq!(
            read.unwrap_err().to_string(),
            "`latin1.txt` is not UTF-8 text: byte 6 (0xE9, on line 2) is not valid UTF-8; it is \
             binary, or text in another encoding such as Latin-1"
        );
    }
}
