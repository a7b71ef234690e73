//! The person's standing instructions for the model, read for the system
//! prompt of every turn: their own, for every project
//! (`$XDG_CONFIG_HOME/punie/AGENTS.md`), then the project's (`AGENTS.md` at
//! the workspace root, the file many coding agents read). Read anew each
//! turn, so an edit applies to the next prompt.
//!
//! It only reads those two files; a project's file that leads outside the
//! workspace (a symlink) is not read.

use std::io::Read as _;
use std::path::Path;

use crate::workspace::Workspace;

/// The project's instructions, at the workspace root.
pub const PROJECT_FILE: &str = "AGENTS.md";

/// Most bytes of one instructions file the model is given; a longer file is
/// cut there, and the model is told so. Both files are sent with every model
/// call, so they are kept to what a person writes by hand.
pub const MAX_INSTRUCTIONS_BYTES: u64 = 32 * 1024;

/// The instructions that apply to a turn in `workspace`, as a note for the
/// end of the system prompt; empty when there are none. Read off the
/// runtime's threads, both files in one go: every turn asks.
pub async fn note(user_file: Option<&Path>, workspace: &Workspace) -> String {
    let user_file = user_file.map(Path::to_owned);
    let workspace = workspace.clone();
    tokio::task::spawn_blocking(move || read_note(user_file.as_deref(), &workspace))
        .await
        .unwrap_or_else(|error| {
            tracing::error!("the instructions could not be read: {error}");
            String::new()
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
    let file = match std::fs::File::open(path) {
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

    #[tokio::test]
    async fn the_users_instructions_come_before_the_projects_and_a_long_file_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let user_file = dir.path().join("AGENTS.md");
        std::fs::write(&user_file, "Answer in French.\n").unwrap();
        std::fs::write(
            project.join(PROJECT_FILE),
            "#".repeat(MAX_INSTRUCTIONS_BYTES as usize + 10),
        )
        .unwrap();
        let workspace = Workspace::new(&project).unwrap();

        let note = note(Some(&user_file), &workspace).await;
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
    async fn no_files_or_empty_ones_make_no_note_and_a_link_out_of_the_project_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let workspace = Workspace::new(&project).unwrap();
        assert_eq!(
            note(Some(&dir.path().join("none.md")), &workspace).await,
            ""
        );

        std::fs::write(project.join(PROJECT_FILE), " \n\n").unwrap();
        assert_eq!(note(None, &workspace).await, "");

        let secret = dir.path().join("secret.md");
        std::fs::write(&secret, "the secret").unwrap();
        std::fs::remove_file(project.join(PROJECT_FILE)).unwrap();
        std::os::unix::fs::symlink(&secret, project.join(PROJECT_FILE)).unwrap();
        assert_eq!(note(None, &workspace).await, "");
    }
}
