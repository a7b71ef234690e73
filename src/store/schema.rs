//! The store's schema, one migration per version. A released migration is
//! never edited: a change is a new migration at the end.

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

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
];

/// Bring the database to the newest schema, with the settings every
/// connection relies on.
pub fn migrate(
    connection: &mut Connection,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // WAL: readers never block the writer. NORMAL: a commit survives the
    // process being killed; only a power loss may take the last commits.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Migrations::from_slice(MIGRATIONS).to_latest(connection)?;
    Ok(())
}

/// Whether the database has exactly the schema this version reads, for a
/// database that cannot be written and so cannot be brought up to date.
pub fn is_current(
    connection: &Connection,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Migrations::from_slice(MIGRATIONS).pending_migrations(connection)? == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }
}
