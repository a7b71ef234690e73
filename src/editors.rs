//! Editor integration, `punie init`: registers this `punie` binary as an ACP
//! agent with JetBrains IDEs (`~/.jetbrains/acp.json`) and prints the entry
//! for Zed. It edits only its own entry and never loses what else a file holds.

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

/// The name editors show for Punie.
pub const AGENT_NAME: &str = "Punie";

/// What `punie init` did to the JetBrains file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry was already exactly right; nothing was written.
    Unchanged,
    /// There was no entry; it was added.
    Added,
    /// The entry was corrected: its command now runs this binary. The rest
    /// of it (the person's own `args`, `env`, …) is as it was.
    Updated,
    /// The old file could not be read as JSON, or its `agent_servers` was not
    /// a map of agents; it was kept at this path and a corrected file was
    /// written.
    Replaced { backup: PathBuf },
}

/// Where JetBrains IDEs look for ACP agents.
pub fn jetbrains_file() -> anyhow::Result<PathBuf> {
    let home = etcetera::home_dir().context("cannot find the home directory")?;
    Ok(home.join(".jetbrains").join("acp.json"))
}

/// This binary's absolute path, as editors should launch it: the path it
/// was run by, when that leads to this very file. A link such as
/// `~/bin/punie` → `/opt/punie-1.2/punie` then stays in the editor's entry
/// and still works once an upgrade moves the link, where the versioned file
/// it leads to today would be gone.
pub fn this_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe().context("cannot tell where this punie binary is")?;
    let resolved = fs::canonicalize(&path).unwrap_or(path);
    let invoked = std::env::args_os()
        .next()
        .and_then(|name| invoked_path(Path::new(&name)));
    Ok(match invoked {
        Some(invoked) if same_file(&invoked, &resolved) => invoked,
        _ => resolved,
    })
}

/// Where the program `name` (its `argv[0]`) was found, made absolute: a
/// path when it holds a slash, else the first executable of that name on
/// `PATH`, as the shell looks.
fn invoked_path(name: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    if name.as_os_str().is_empty() {
        return None;
    }
    if name.as_os_str().as_bytes().contains(&b'/') {
        return std::path::absolute(name).ok();
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|found| found.is_file() && found.permissions().mode() & 0o111 != 0)
        })
        .and_then(|found| std::path::absolute(found).ok())
}

/// Whether `a` and `b` lead to the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Add or correct the Punie entry in the JetBrains file at `path`, keeping
/// every other key and agent.
pub fn register_with_jetbrains(path: &Path, binary: &Path) -> anyhow::Result<Change> {
    let existing = match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let (mut document, mut backup) = match &existing {
        None => (Map::new(), None),
        Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(document)) => (document, None),
            _ => (Map::new(), Some(back_up(path)?)),
        },
    };
    let servers = document
        .entry("agent_servers")
        .or_insert_with(|| Value::Object(Map::new()));
    if !servers.is_object() {
        // Whatever it held is not ours to drop unseen.
        backup = Some(back_up(path)?);
        *servers = Value::Object(Map::new());
    }
    let Value::Object(servers) = servers else {
        unreachable!("agent_servers was just made an object")
    };
    let existed = servers.contains_key(AGENT_NAME);
    let entry = entry_for(servers.get(AGENT_NAME), binary);
    if backup.is_none() && servers.get(AGENT_NAME) == Some(&entry) {
        return Ok(Change::Unchanged);
    }
    servers.insert(AGENT_NAME.to_owned(), entry);
    write_json(path, &Value::Object(document), existing.is_some())?;
    Ok(match backup {
        Some(backup) => Change::Replaced { backup },
        None if existed => Change::Updated,
        None => Change::Added,
    })
}

/// Punie's entry launching `binary`. What the person put in an earlier entry
/// stays: arguments (`--server`, `--log-file`…), variables, any other key.
/// Only what keeps it from launching this binary is set.
fn entry_for(earlier: Option<&Value>, binary: &Path) -> Value {
    let mut entry = match earlier {
        Some(Value::Object(entry)) => entry.clone(),
        _ => Map::new(),
    };
    entry.insert("command".to_owned(), json!(binary));
    if !entry.get("args").is_some_and(Value::is_array) {
        entry.insert("args".to_owned(), json!([]));
    }
    if !entry.get("env").is_some_and(Value::is_object) {
        entry.insert("env".to_owned(), json!({}));
    }
    Value::Object(entry)
}

/// Punie's entry for Zed's `settings.json`, under the `agent_servers` it
/// goes in: an object to merge into the settings.
pub fn zed_entry(binary: &Path) -> Value {
    json!({
        "agent_servers": {
            AGENT_NAME: {"type": "custom", "command": binary, "args": [], "env": {}}
        }
    })
}

/// Most numbered backups tried before giving up.
const MAX_BACKUPS: usize = 1000;

/// Keep a file next to itself as `<name>.bak` — or `<name>.bak.1`, `.bak.2`…
/// when earlier backups are there: an older backup is never overwritten.
///
/// The backup gets the file's mode: an entry's `env` often holds an API key,
/// and a file kept private must not leave a copy others can read.
fn back_up(path: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let read = |error| anyhow::Error::new(error).context(format!("cannot read {}", path.display()));
    let mut original = fs::File::open(path).map_err(read)?;
    let mode = original.metadata().map_err(read)?.permissions();
    let mut contents = Vec::new();
    original.read_to_end(&mut contents).map_err(read)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for number in 0..MAX_BACKUPS {
        let backup = match number {
            0 => path.with_file_name(format!("{name}.bak")),
            n => path.with_file_name(format!("{name}.bak.{n}")),
        };
        // Private from the start, so the contents are never readable by
        // others even before the mode is copied.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&backup)
        {
            Ok(mut file) => {
                file.set_permissions(mode.clone())
                    .and_then(|()| file.write_all(&contents))
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write {}", backup.display()))?;
                return Ok(backup);
            }
            Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("cannot back up {} to {}", path.display(), backup.display())
                });
            }
        }
    }
    anyhow::bail!(
        "cannot back up {}: {MAX_BACKUPS} backups are already there",
        path.display()
    )
}

/// Most symbolic links followed from the file to the one written, as the
/// kernel allows (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Replace `path` with `value`, all at once. A file that `existed` keeps its
/// mode; a new one gets the usual mode for the person's umask (the file holds
/// no secret).
///
/// When `path` is a symbolic link (a dotfile manager's, say), the file it
/// leads to is the one replaced: renaming over the link would leave the
/// person's real file unchanged and the link gone.
fn write_json(path: &Path, value: &Value, existed: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let target = link_target(path)?;
    let dir = match target
        .parent()
        .context("the file has no parent directory")?
    {
        dir if dir.as_os_str().is_empty() => Path::new("."),
        dir => dir,
    };
    if target == path {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    } else if !dir.is_dir() {
        anyhow::bail!(
            "cannot write {}: it is a symbolic link to {}, and the directory {} does not exist",
            path.display(),
            target.display(),
            dir.display()
        );
    }
    let mode = match existed {
        true => fs::metadata(&target)
            .ok()
            .map(|metadata| metadata.permissions()),
        false => None,
    };
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}"))
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    if let Some(mode) = mode {
        fs::set_permissions(file.path(), mode)
            .with_context(|| format!("cannot keep the mode of {}", target.display()))?;
    }
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    file.write_all(&text)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    // The persist error's message already ends with its cause, which it also
    // gives as its source: the cause alone, so it is said once.
    file.persist(&target)
        .map_err(|error| error.error)
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}

/// The file `path` leads to through any chain of symbolic links: `path`
/// itself when it is no link, the last link's target when that is missing.
fn link_target(path: &Path) -> anyhow::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let next = fs::read_link(&current)
                    .with_context(|| format!("cannot read the link {}", current.display()))?;
                // A relative target is relative to the link's directory. Not
                // resolved any further: the system follows `..` from where the
                // links really are.
                current = match current.parent() {
                    Some(dir) => dir.join(next),
                    None => next,
                };
            }
            Ok(_) => return Ok(current),
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(current),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", current.display()));
            }
        }
    }
    anyhow::bail!(
        "cannot write {}: more than {MAX_LINKS} symbolic links lead from it",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zed_entry_has_the_type_zed_requires() {
        let entry = zed_entry(Path::new("/bin/punie"));
        assert_eq!(entry["agent_servers"]["Punie"]["type"], "custom");
        assert_eq!(entry["agent_servers"]["Punie"]["command"], "/bin/punie");
    }

    #[test]
    fn a_non_object_agent_servers_is_backed_up_then_replaced_by_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acp.json");
        let original = r#"{"agent_servers": 3, "theme": "dark"}"#;
        fs::write(&path, original).unwrap();
        let backup = dir.path().join("acp.json.bak");
        assert_eq!(
            register_with_jetbrains(&path, Path::new("/p")).unwrap(),
            Change::Replaced {
                backup: backup.clone()
            }
        );
        assert_eq!(fs::read_to_string(&backup).unwrap(), original);
        let written: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["theme"], "dark");
        assert_eq!(written["agent_servers"]["Punie"]["command"], "/p");
    }

    #[test]
    fn a_failed_write_names_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        // A directory that is not empty cannot be renamed over.
        let path = dir.path().join("acp.json");
        fs::create_dir_all(path.join("inside")).unwrap();
        let error = format!("{:#}", write_json(&path, &json!({}), false).unwrap_err());
        assert!(
            error.starts_with(&format!("cannot write {}", path.display())),
            "{error}"
        );
        let cause = std::io::Error::from_raw_os_error(21).to_string();
        assert_eq!(error.matches(&cause).count(), 1, "{error}");
    }

    #[test]
    fn an_earlier_backup_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acp.json");
        fs::write(dir.path().join("acp.json.bak"), "first").unwrap();
        fs::write(&path, "not json").unwrap();
        let Change::Replaced { backup } = register_with_jetbrains(&path, Path::new("/p")).unwrap()
        else {
            panic!("an unreadable file is replaced")
        };
        assert_eq!(backup, dir.path().join("acp.json.bak.1"));
        assert_eq!(fs::read_to_string(&backup).unwrap(), "not json");
        assert_eq!(
            fs::read_to_string(dir.path().join("acp.json.bak")).unwrap(),
            "first"
        );
    }
}
