//! The person's standing instructions for the model, read for the system
//! prompt of every turn: their own, for every project
//! (`$XDG_CONFIG_HOME/punie/AGENTS.md`), then the project's (`AGENTS.md` at
//! the workspace root, the file many coding agents read). Looked at anew each
//! turn, so an edit applies to the next prompt; read again only when one of
//! the files changed.
//!
//! It only reads those two files; a project's file that leads outside the
//! workspace (a symlink) is not read.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::workspace::Workspace;

/// The project's instructions, at the workspace root.
pub const PROJECT_FILE: &str = "AGENTS.md";

/// Most bytes of one instructions file the model is given; a longer file is
/// cut there, and the model is told so. Both files are sent with every model
/// call, so they are kept to what a person writes by hand.
pub const MAX_INSTRUCTIONS_BYTES: u64 = 32 * 1024;

/// One session's instructions: where they are, and what they said when last
/// read.
pub struct Instructions {
    user_file: Option<PathBuf>,
    project_file: PathBuf,
    workspace: Workspace,
    last: Mutex<Option<LastRead>>,
}

/// The note as read, and how the files looked then.
struct LastRead {
    stamps: [Option<Stamp>; 2],
    note: Arc<str>,
}

/// What tells one version of a file from another without reading it. A
/// symlink has none: where it leads may change while it stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
}

impl Instructions {
    pub fn new(user_file: Option<PathBuf>, workspace: Workspace) -> Self {
        Self {
            user_file,
            project_file: workspace.root().join(PROJECT_FILE),
            workspace,
            last: Mutex::new(None),
        }
    }

    /// The instructions that apply to a turn, as a note for the end of the
    /// system prompt; empty when there are none. Every turn asks, so the
    /// files are only looked at (two `lstat`s) unless one has changed; then
    /// both are read, off the runtime's threads.
    pub async fn note(&self) -> Arc<str> {
        let stamps = [
            self.user_file.as_deref().and_then(stamp),
            stamp(&self.project_file),
        ];
        let unchanged = |last: &LastRead| {
            last.stamps == stamps && stamps.iter().flatten().all(|stamp| !stamp.is_link())
        };
        if let Some(last) = self.lock().as_ref().filter(|last| unchanged(last)) {
            return last.note.clone();
        }
        let user_file = self.user_file.clone();
        let workspace = self.workspace.clone();
        let note: Arc<str> =
            tokio::task::spawn_blocking(move || read_note(user_file.as_deref(), &workspace))
                .await
                .unwrap_or_else(|error| {
                    tracing::error!("the instructions could not be read: {error}");
                    String::new()
                })
                .into();
        *self.lock() = Some(LastRead {
            stamps,
            note: note.clone(),
        });
        note
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<LastRead>> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Stamp {
    /// The stamp of a symlink: it never matches what it leads to.
    const LINK: Self = Self {
        device: 0,
        inode: 0,
        size: 0,
        modified_ns: 0,
    };

    fn is_link(self) -> bool {
        self == Self::LINK
    }
}

/// The stamp of the file at `path`; `None` when there is none there.
fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if metadata.is_symlink() {
        return Some(Stamp::LINK);
    }
    Some(Stamp {
        device: metadata.dev(),
        inode: metadata.ino(),
        size: metadata.size(),
        modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
            + i128::from(metadata.mtime_nsec()),
    })
}

fn read_note(user_file: Option<&Path>, workspace: &Workspace) -> String {
    let mut note = String::new();
    if let Some(path) = user_file
        && let Some(text) = read(path)
    {
        note.push_str(&section(
            "The user's instructions for every project",
            path,
            &text,
        ));
    }
    match workspace.resolve(Path::new(PROJECT_FILE)) {
        Ok(path) => {
            if let Some(text) = read(&path) {
                note.push_str(&section("The project's instructions", &path, &text));
            }
        }
        Err(error) => tracing::warn!("the project's {PROJECT_FILE} is not read: {error}"),
    }
    note
}

fn section(heading: &str, path: &Path, text: &str) -> String {
    format!(
        "\n\n{heading} (from {}); follow them unless the user says otherwise:\n\n{}",
        path.display(),
        text.trim_end()
    )
}

/// The text of the file at `path`, cut at [`MAX_INSTRUCTIONS_BYTES`]; `None`
/// when there is no such file, or nothing in it.
fn read(path: &Path) -> Option<String> {
    // Never waiting: a named pipe put there would otherwise hold every
    // turn of the session until something wrote to it.
    let file = match crate::workspace::open_named_file(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), "instructions not read: {error}");
            return None;
        }
    };
    let mut bytes = Vec::new();
    if let Err(error) = file
        .take(MAX_INSTRUCTIONS_BYTES + 1)
        .read_to_end(&mut bytes)
    {
        tracing::warn!(path = %path.display(), "instructions not read: {error}");
        return None;
    }
    let cut = bytes.len() as u64 > MAX_INSTRUCTIONS_BYTES;
    if cut {
        bytes.truncate(MAX_INSTRUCTIONS_BYTES as usize);
        tracing::warn!(
            path = %path.display(),
            "instructions longer than {MAX_INSTRUCTIONS_BYTES} bytes are cut there"
        );
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if text.trim().is_empty() {
        return None;
    }
    if cut {
        text.push_str(&format!(
            "\n\n[The file goes on; only its first {} KiB are given here.]",
            MAX_INSTRUCTIONS_BYTES / 1024
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> (tempfile::TempDir, PathBuf, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let workspace = Workspace::new(&project).unwrap();
        (dir, project, workspace)
    }

    #[tokio::test]
    async fn the_users_instructions_come_before_the_projects_and_a_long_file_is_cut() {
        let (dir, project, workspace) = project();
        let user_file = dir.path().join("AGENTS.md");
        std::fs::write(&user_file, "Answer in French.\n").unwrap();
        std::fs::write(
            project.join(PROJECT_FILE),
            "#".repeat(MAX_INSTRUCTIONS_BYTES as usize + 10),
        )
        .unwrap();

        let note = Instructions::new(Some(user_file), workspace).note().await;
        let user_at = note.find("Answer in French.").unwrap();
        let project_at = note.find("The project's instructions").unwrap();
        assert!(user_at < project_at, "{note}");
        assert_eq!(note.matches('#').count(), MAX_INSTRUCTIONS_BYTES as usize);
        assert!(
            note.ends_with("only its first 32 KiB are given here.]"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn named_pipes_are_passed_over_without_waiting_for_a_writer() {
        let (dir, project, workspace) = project();
        let user_file = dir.path().join("AGENTS.md");
        for pipe in [&user_file, &project.join(PROJECT_FILE)] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                pipe,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
                0,
            )
            .unwrap();
        }
        let instructions = Instructions::new(Some(user_file), workspace);
        // Opening either pipe to read would wait for ever: no one writes.
        let note = tokio::time::timeout(std::time::Duration::from_secs(10), instructions.note())
            .await
            .expect("the note comes without a writer on either pipe");
        assert_eq!(&*note, "");
    }

    #[tokio::test]
    async fn a_change_is_read_and_no_file_or_an_empty_one_makes_no_note() {
        let (dir, project, workspace) = project();
        let file = project.join(PROJECT_FILE);
        let instructions = Instructions::new(Some(dir.path().join("none.md")), workspace);
        assert_eq!(&*instructions.note().await, "");

        std::fs::write(&file, "Use tabs.\n").unwrap();
        assert!(instructions.note().await.ends_with("Use tabs."));
        std::fs::write(&file, "Use spaces.\n").unwrap();
        assert!(instructions.note().await.ends_with("Use spaces."));
        std::fs::write(&file, " \n\n").unwrap();
        assert_eq!(&*instructions.note().await, "");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(&*instructions.note().await, "");
    }

    #[tokio::test]
    async fn a_link_is_followed_inside_the_project_every_time_and_never_out_of_it() {
        let (dir, project, workspace) = project();
        let instructions = Instructions::new(None, workspace);
        let inside = project.join("docs.md");
        std::fs::write(&inside, "Inside.\n").unwrap();
        std::os::unix::fs::symlink(&inside, project.join(PROJECT_FILE)).unwrap();
        assert!(instructions.note().await.ends_with("Inside."));
        std::fs::write(&inside, "Still inside.\n").unwrap();
        assert!(instructions.note().await.ends_with("Still inside."));

        let secret = dir.path().join("secret.md");
        std::fs::write(&secret, "the secret").unwrap();
        std::fs::remove_file(project.join(PROJECT_FILE)).unwrap();
        std::os::unix::fs::symlink(&secret, project.join(PROJECT_FILE)).unwrap();
        assert_eq!(&*instructions.note().await, "");
    }
}
