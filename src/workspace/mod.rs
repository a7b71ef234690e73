//! A workspace: the directory an agent may work in, and the file and process
//! operations confined to it.
//!
//! Every path an agent names is resolved here before it is touched: relative
//! paths are taken from the root, `..` is applied, and symlinks are followed —
//! dangling ones too, since writing through one creates its target; whatever
//! lands outside the root is refused with an error that says so.
//! Used by `punie ask` to serve `fs/*` and `terminal/*`, and by the server's
//! own tools. Knows nothing of ACP or sessions.

mod terminals;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

pub use terminals::{ExitStatus, TerminalError, TerminalOutput, Terminals, die_with_this_process};

/// Symlinks one path may pass through: as many as Linux follows before it
/// gives up with `ELOOP`, so a loop is refused rather than walked forever.
const MAX_SYMLINKS: usize = 40;

/// Why a path or file operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("`{path}` is outside the workspace {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error("`{0}` does not exist")]
    NotFound(PathBuf),
    #[error("`{0}` is not a text file (it is not valid UTF-8)")]
    NotText(PathBuf),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The directory an agent may work in.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace rooted at `root`, which must exist.
    pub fn new(root: &Path) -> Result<Self, WorkspaceError> {
        let root = std::fs::canonicalize(root).map_err(|source| io_error(root, source))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real location of `path` (absolute, or relative to the root), if it
    /// is inside the workspace. The path need not exist yet.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, WorkspaceError> {
        let outside = || WorkspaceError::Outside {
            path: path.to_owned(),
            root: self.root.clone(),
        };
        let joined = lexically_normal(&self.root.join(path)).ok_or_else(outside)?;
        let resolved = follow(&joined).map_err(|error| io_error(path, error))?;
        if resolved.starts_with(&self.root) {
            Ok(resolved)
        } else {
            Err(outside())
        }
    }

    /// The text of the file at `path`, from line `line` (1-based) for at most
    /// `limit` lines.
    pub async fn read_text(
        &self,
        path: &Path,
        line: Option<u32>,
        limit: Option<u32>,
    ) -> Result<String, WorkspaceError> {
        let real = self.resolve(path)?;
        let bytes = tokio::fs::read(&real)
            .await
            .map_err(|error| match error.kind() {
                ErrorKind::NotFound => WorkspaceError::NotFound(path.to_owned()),
                _ => io_error(path, error),
            })?;
        let text =
            String::from_utf8(bytes).map_err(|_| WorkspaceError::NotText(path.to_owned()))?;
        Ok(select_lines(&text, line, limit))
    }

    /// Replace the file at `path` with `content`, creating missing directories.
    pub async fn write_text(&self, path: &Path, content: &str) -> Result<(), WorkspaceError> {
        let real = self.resolve(path)?;
        if let Some(parent) = real.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|error| io_error(path, error))?;
        }
        tokio::fs::write(&real, content)
            .await
            .map_err(|error| io_error(path, error))
    }
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

/// Lines `line..line+limit` (1-based) of `text`, keeping their line endings.
fn select_lines(text: &str, line: Option<u32>, limit: Option<u32>) -> String {
    if line.is_none() && limit.is_none() {
        return text.to_owned();
    }
    let skip = line.map_or(0, |line| line.saturating_sub(1) as usize);
    let take = limit.map_or(usize::MAX, |limit| limit as usize);
    text.split_inclusive('\n').skip(skip).take(take).collect()
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

    #[test]
    fn line_and_limit_select_lines() {
        let text = "one\ntwo\nthree\nfour";
        assert_eq!(select_lines(text, Some(2), Some(2)), "two\nthree\n");
        assert_eq!(select_lines(text, Some(4), None), "four");
        assert_eq!(select_lines(text, None, Some(1)), "one\n");
        assert_eq!(select_lines(text, Some(9), None), "");
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
}
