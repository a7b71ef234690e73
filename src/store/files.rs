//! The store's files on disk before SQLite opens them: a directory and a
//! database only the user can read (history holds prompts, file contents and
//! command output), and the lock that keeps a second `punie serve` off a
//! database one already uses. Two servers on one database would each take
//! the other's running turns for ones a crash cut short.
//!
//! What is inside the files is the rest of the store's business.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// SQLite's own files beside the database, which it creates with the
/// database's mode.
const SQLITE_SIDE_FILES: [&str; 2] = ["-wal", "-shm"];

/// Which file `path` names now (device and inode), if any: a database
/// deleted or replaced while the server has it open no longer matches the
/// one it opened.
pub(super) fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).map(|meta| (meta.dev(), meta.ino()))
}

/// Whether `path` still names the file whose identity was `opened`: `Ok`
/// when it does, else what is wrong, worded for a person.
pub(super) fn still_there(path: &Path, opened: (u64, u64)) -> Result<(), String> {
    match identity(path) {
        Ok(now) if now == opened => Ok(()),
        Ok(_) => Err(super::DISPLACED.to_owned()),
        Err(error) if error.kind() == ErrorKind::NotFound => Err(super::DISPLACED.to_owned()),
        Err(error) => Err(format!("the database file cannot be checked: {error}")),
    }
}

/// Make the database's directory (0700) and the database itself (0600)
/// private; ones found readable by others (made by hand, or by another
/// program) are tightened, with a warning.
pub(super) fn prepare_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::auth::create_private_dir(dir)?;
        tighten(dir);
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // An empty file is an empty database to SQLite, which keeps its mode.
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        // Left to SQLite, which opens what it can for reading, or says why not.
        Err(error) if cannot_write(&error) => return Ok(()),
        Err(error) => return Err(error),
    }
    for file in std::iter::once(path.to_owned()).chain(side_files(path)) {
        tighten(&file);
    }
    Ok(())
}

/// Whether the disk lets Punie write the database and those of SQLite's
/// files beside it that exist. Opening them for writing creates and changes
/// nothing.
pub(super) fn may_write(path: &Path) -> bool {
    let writable = |file: &Path| OpenOptions::new().write(true).open(file);
    writable(path).is_ok()
        && side_files(path).all(|file| {
            writable(&file).is_ok()
                || fs::symlink_metadata(&file)
                    .is_err_and(|error| error.kind() == ErrorKind::NotFound)
        })
}

fn side_files(path: &Path) -> impl Iterator<Item = PathBuf> {
    SQLITE_SIDE_FILES.into_iter().map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Best effort: a file Punie cannot change (a read-only disk, another
/// owner) is opened as it is.
fn tighten(path: &Path) {
    let Ok(metadata) = fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "the session store was readable by others; now only by its owner"
        ),
        Err(error) => tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "the session store is readable by others, and cannot be changed: {error}"
        ),
    }
}

/// The lock one server holds on a database for as long as it runs; the
/// kernel lets go of it when the process ends, however it ends.
#[derive(Debug)]
pub(super) struct StoreLock {
    file: Option<File>,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum LockError {
    #[error(
        "another `punie serve`{} is using it, and one store serves one server; `punie status` shows that server and `punie stop` stops it, or give this one a store and a record of its own with another XDG_DATA_HOME and XDG_STATE_HOME",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Held { holder: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreLock {
    /// Take the lock for the database at `path`, in a file beside it that
    /// names this process. A directory Punie cannot write holds no lock file:
    /// the database in it is only read, and reading harms nothing.
    pub(super) fn take(path: &Path) -> Result<Self, LockError> {
        let lock_path = path.with_extension("lock");
        let io = |source| LockError::Io {
            path: lock_path.clone(),
            source,
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
        {
            Ok(file) => file,
            Err(error) if cannot_write(&error) => match File::open(&lock_path) {
                Ok(file) => file,
                Err(error) if error.kind() == ErrorKind::NotFound => {
                    return Ok(Self { file: None });
                }
                Err(error) => return Err(io(error)),
            },
            Err(error) => return Err(io(error)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
        // Only for the message a second server prints; the lock is the flock.
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        Ok(Self { file: Some(file) })
    }
}

impl Drop for StoreLock {
    /// Unlock before closing: a child process forked at this moment holds a
    /// copy of the descriptor until it execs, and a flock lives as long as
    /// any copy does. Unlocking lets go for every copy at once, so a store
    /// closed is free to reopen at once.
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = file.unlock();
        }
    }
}

fn cannot_write(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
    )
}

/// The pid the lock's holder wrote in the file.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_database_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("punie.db");
        let held = StoreLock::take(&database).unwrap();
        let refused = StoreLock::take(&database).unwrap_err();
        assert!(
            matches!(refused, LockError::Held { holder: Some(pid) } if pid == std::process::id()),
            "{refused:?}"
        );
        drop(held);
        StoreLock::take(&database).expect("free again once its holder let go");
    }

    #[test]
    fn a_lock_let_go_is_free_though_a_forked_child_still_holds_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("punie.db");
        let held = StoreLock::take(&database).unwrap();
        // What a child forked by another thread has until it execs.
        let childs_copy = held.file.as_ref().unwrap().try_clone().unwrap();
        drop(held);
        StoreLock::take(&database).expect("free once its holder let go");
        drop(childs_copy);
    }

    #[test]
    fn a_new_store_is_private_and_an_old_one_is_made_so() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("data/punie/punie.db");
        let store_dir = database.parent().unwrap().to_owned();
        prepare_private(&database).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store_dir), 0o700);
        assert_eq!(mode(&database), 0o600);

        let wal = side_files(&database).next().unwrap();
        fs::write(&wal, "").unwrap();
        for path in [&database, &wal] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::set_permissions(&store_dir, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_private(&database).unwrap();
        assert_eq!(mode(&store_dir), 0o700);
        assert_eq!(mode(&database), 0o600);
        assert_eq!(mode(&wal), 0o600);
    }
}
