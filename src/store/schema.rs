//! The store's schema, one migration per version. A released migration is
//! never edited: a change is a new migration at the end.

use rusqlite::{Connection, Transaction, params};
use rusqlite_migration::{HookResult, M, Migrations};

/// Every migration, oldest first.
fn migrations() -> Migrations<'static> {
    let mut all = MIGRATIONS.to_vec();
    all.push(real_workspaces_migration());
    Migrations::new(all)
}

/// The migrations that are SQL alone.
const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE sessions (
         id         TEXT PRIMARY KEY NOT NULL,
         cwd        TEXT NOT NULL,
         title      TEXT,
         model      TEXT NOT NULL,
         created_us INTEGER NOT NULL,
         updated_us INTEGER NOT NULL,
         turns      INTEGER NOT NULL DEFAULT 0,
         running    INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     CREATE INDEX sessions_by_update ON sessions (updated_us DESC, id);
     CREATE INDEX sessions_by_cwd ON sessions (cwd, updated_us DESC, id);
     CREATE TABLE entries (
         seq        INTEGER PRIMARY KEY,
         session_id TEXT NOT NULL,
         kind       INTEGER NOT NULL,
         body       TEXT NOT NULL
     );
     CREATE INDEX entries_by_session ON entries (session_id, seq);",
    ),
    // Finding the turns a stopped server left running, at every start, must
    // not read every stored session.
    M::up("CREATE INDEX sessions_running ON sessions (id) WHERE running = 1;"),
    // "Always" answers to permission requests hold for the rest of a session,
    // which outlives the server process; they are read with the row when the
    // session is brought back into memory.
    M::up("ALTER TABLE sessions ADD COLUMN permissions TEXT;"),
    // The permission mode a client chose for the session (ask first, edit
    // without asking, read only); NULL is the default, asking first.
    M::up("ALTER TABLE sessions ADD COLUMN mode TEXT;"),
];

/// Sessions are listed by the real path of their workspace, symlinks
/// resolved, as well as by `cwd`, so that every spelling of a directory
/// (`~/link/project` and where it leads) finds the same sessions; `cwd`
/// keeps the client's spelling, which the paths it is sent use. The sessions
/// stored before are given theirs now.
fn real_workspaces_migration() -> M<'static> {
    M::up_with_hook(
        "ALTER TABLE sessions ADD COLUMN real_cwd TEXT;",
        fill_real_workspaces,
    )
}

/// Each workspace is resolved once, however many sessions it has; the index
/// is made once they are filled in.
fn fill_real_workspaces(transaction: &Transaction) -> HookResult {
    let workspaces: Vec<String> = transaction
        .prepare("SELECT DISTINCT cwd FROM sessions")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tracing::info!(
        workspaces = workspaces.len(),
        "finding where the stored sessions' workspaces lead"
    );
    let mut update = transaction.prepare("UPDATE sessions SET real_cwd = ?2 WHERE cwd = ?1")?;
    for cwd in workspaces {
        let real = super::real_workspace(std::path::Path::new(&cwd));
        update.execute(params![cwd, real])?;
    }
    transaction.execute_batch(
        "CREATE INDEX sessions_by_real_cwd ON sessions (real_cwd, updated_us DESC, id);",
    )?;
    Ok(())
}

/// Bytes per page of a new database. A third of the bytes per one-update
/// commit of 4096 (SQLite's default), at the price of somewhat slower reads of
/// a long history: more, smaller pages to walk.
const PAGE_SIZE: i64 = 1024;

/// Bring the database to the newest schema, with the settings every
/// connection relies on.
pub fn migrate(
    connection: &mut Connection,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Every commit writes whole pages to the log, and a streamed update
    // commits alone: one small entry rewrites its table page and its index
    // page. Smaller pages make that write, and the commit, cheaper. Only a
    // new file can take them (before its first table); an older database
    // keeps the size it was created with, which works as well.
    let pages: i64 = connection.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    if pages == 0 {
        connection.pragma_update(None, "page_size", PAGE_SIZE)?;
    }
    // WAL: readers never block the writer. NORMAL: a commit survives the
    // process being killed; only a power loss may take the last commits.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    migrations().to_latest(connection)?;
    Ok(())
}

/// Whether the database has exactly the schema this version reads, for a
/// database that cannot be written and so cannot be brought up to date.
pub fn is_current(
    connection: &Connection,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    Ok(migrations().pending_migrations(connection)? == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    fn page_size(connection: &Connection) -> i64 {
        connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_small_pages_and_an_older_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        let mut connection = Connection::open(&new).unwrap();
        migrate(&mut connection).unwrap();
        assert_eq!(page_size(&connection), PAGE_SIZE);

        // A database from before, at SQLite's default size and the first
        // schema, with history in it.
        let old = dir.path().join("old.db");
        let mut connection = Connection::open(&old).unwrap();
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .unwrap();
        Migrations::from_slice(&MIGRATIONS[..1])
            .to_latest(&mut connection)
            .unwrap();
        connection
            .execute_batch(
                "INSERT INTO sessions (id, cwd, model, created_us, updated_us) VALUES ('a', '/w', 'test', 1, 1);
                 INSERT INTO entries (session_id, kind, body) VALUES ('a', 0, '{}');",
            )
            .unwrap();
        drop(connection);
        let mut connection = Connection::open(&old).unwrap();
        migrate(&mut connection).unwrap();
        assert_eq!(page_size(&connection), 4096);
        let entries: i64 = connection
            .query_row(
                "SELECT count(*) FROM entries WHERE session_id = 'a'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(entries, 1);
    }

    #[test]
    fn sessions_stored_before_are_given_the_real_path_of_their_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let path = dir.path().join("punie.db");
        let mut connection = Connection::open(&path).unwrap();
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut connection)
            .unwrap();
        connection
            .execute(
                "INSERT INTO sessions (id, cwd, model, created_us, updated_us) VALUES
                 ('linked', ?1, 'test', 1, 1), ('gone', '/no/such/dir', 'test', 1, 1)",
                [link.to_str().unwrap()],
            )
            .unwrap();
        migrate(&mut connection).unwrap();
        let real_cwd = |id: &str| -> String {
            connection
                .query_row("SELECT real_cwd FROM sessions WHERE id = ?1", [id], |row| {
                    row.get(0)
                })
                .unwrap()
        };
        assert_eq!(real_cwd("linked"), real.to_str().unwrap());
        assert_eq!(real_cwd("gone"), "/no/such/dir");
    }
}
