//! The embedded store: every session and its whole history, in SQLite (WAL)
//! at `$XDG_DATA_HOME/punie/punie.db`, with versioned schema migrations.
//!
//! One connection writes ([`writer`]). Appends are queued without waiting and
//! written in batches, one transaction per batch; what the caller wanted done
//! after the write (sending an update to clients) runs only once the batch is
//! committed. That is how "write before you send" costs little: a client
//! never receives an update that is not already in the database file, so even
//! `kill -9` loses nothing a client saw. Reads use their own connections,
//! which WAL lets run beside the writer.
//!
//! When the disk refuses a write (full, read-only, failing), the writer keeps
//! what it could not write, in order, and tries again every second; clients
//! still get their updates meanwhile, and a history read meanwhile (a load)
//! has them too, numbered as they will be stored. Until it succeeds,
//! [`Store::writable`] fails, so that no new turn starts on the belief that
//! it is saved. A database the disk lets Punie read but not write is opened
//! for reading, and for writing once the disk allows it.
//!
//! The store knows sessions as rows and history as opaque JSON entries; what
//! an entry means (an ACP update, a model message) is [`crate::session`]'s
//! business. It never talks to clients or models.

mod files;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use writer::{Command, Shared, WriterConnection};

/// Read connections, opened at start and shared by every read.
const IDLE_READERS: usize = 4;

/// What a database file deleted or replaced under the server means.
pub(crate) const DISPLACED: &str = "the database file was deleted or replaced while the server \
     ran: what the server writes goes to the file it opened, which nothing names any more, and is \
     lost when the server stops. Stop the server to start over with a new store, or put the file \
     back";

/// How long a connection waits for a lock another holds (a checkpoint, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most memory, in KiB, each connection's page cache may hold. SQLite's
/// default (2 MiB) fills as the database grows and is kept for the life of the
/// connection, on each of the six; the kernel caches the file anyway, so a
/// small cache costs little.
const PAGE_CACHE_KIB: i64 = 256;

/// How often the writer tries again to write what the disk refused.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Something went wrong with the database; the message says what and where.
// The problem is kept as words, not as a source error: the message already
// carries it, and a chain would print it twice.
#[derive(Debug, thiserror::Error)]
#[error("the session store at {}: {problem}", path.display())]
pub struct StoreError {
    path: PathBuf,
    problem: String,
}

impl StoreError {
    /// An error described in words.
    pub fn message(path: &Path, message: String) -> Self {
        Self {
            path: path.to_owned(),
            problem: message,
        }
    }

    fn from_error(path: &Path, error: &(dyn std::error::Error + 'static)) -> Self {
        Self::message(path, describe(error))
    }
}

/// The kinds of history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A `session/update` as clients received it.
    Update,
    /// A message of the conversation as the model sees it.
    Message,
    /// A prompt began a turn; the body is the turn's number.
    TurnStarted,
    /// A turn ended; the body says how.
    TurnEnded,
}

impl EntryKind {
    fn code(self) -> i64 {
        match self {
            Self::Update => 0,
            Self::Message => 1,
            Self::TurnStarted => 2,
            Self::TurnEnded => 3,
        }
    }

    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Update,
            1 => Self::Message,
            2 => Self::TurnStarted,
            3 => Self::TurnEnded,
            _ => return None,
        })
    }
}

/// One stored history entry, oldest first by `seq`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: i64,
    pub kind: EntryKind,
    pub body: String,
}

/// A session as `session/list` shows it, and as it is revived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub cwd: PathBuf,
    pub title: Option<String>,
    /// The model spec the session was created with, e.g. `ollama:qwen3`.
    pub model: String,
    pub created_us: i64,
    pub updated_us: i64,
    /// Prompts answered so far.
    pub turns: i64,
    /// A turn had begun and not ended when the row was last written.
    pub running: bool,
    /// The session's lasting answers to permission requests, as
    /// [`crate::session`] encodes them; `None` until it has one.
    pub permissions: Option<String>,
    /// The session's permission mode, by its id; `None` until it is changed.
    pub mode: Option<String>,
}

/// A setting of a session that changes after it is created, each a column
/// of its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Title,
    /// The lasting answers to permission requests, as [`SessionRow::permissions`].
    Permissions,
    Model,
    /// The permission mode, as [`SessionRow::mode`].
    Mode,
}

impl Setting {
    /// The statement that sets it: `?1` the session, `?2` the value.
    fn update(self) -> &'static str {
        match self {
            Self::Title => "UPDATE sessions SET title = ?2 WHERE id = ?1",
            Self::Permissions => "UPDATE sessions SET permissions = ?2 WHERE id = ?1",
            Self::Model => "UPDATE sessions SET model = ?2 WHERE id = ?1",
            Self::Mode => "UPDATE sessions SET mode = ?2 WHERE id = ?1",
        }
    }
}

/// One page of sessions, newest first.
#[derive(Debug, Clone)]
pub struct SessionRows {
    pub rows: Vec<SessionRow>,
    /// Where the next page starts, if there is one.
    pub next: Option<ListPosition>,
}

/// A place in the newest-first order of sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPosition {
    pub updated_us: i64,
    pub id: String,
}

/// Runs once the write it follows is committed (or has failed, logged): on
/// the writer thread, or before the call that queued it returns, on the
/// caller's thread. Either way in the order of the writes, one at a time;
/// it must not take a lock that a caller of the store may hold.
pub type AfterWrite = Box<dyn FnOnce() + Send>;

/// Runs on the writer with a session's newest entry: see [`Store::at_newest`].
pub type AtNewest = Box<dyn FnOnce(Option<i64>) + Send>;

/// The pooled read connections.
struct Readers {
    idle: Vec<Connection>,
    /// Whether they read the database as a file nobody writes: see
    /// [`read_only_way_in`]. Replaced once the store can be written again.
    immutable: bool,
    /// Changes when the connections opened so far must all be closed (the
    /// writer is about to open): one out on a read is dropped, not pooled,
    /// when it comes back.
    generation: u64,
}

/// The store of one server. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The file the store opened (see [`files::identity`]).
    identity: Option<(u64, u64)>,
    /// Held until the store is closed: no second server opens it meanwhile.
    lock: Mutex<Option<files::StoreLock>>,
    /// Why the disk refused the writes the writer still holds; `None` while
    /// everything queued could be written.
    refused: Arc<Mutex<Option<String>>>,
    /// The queue of commands and the writer.
    shared: Arc<Shared>,
    /// Asks the checkpointer for a checkpoint now; dropped on close, so that
    /// the checkpointer ends when the writer does.
    checkpoint_nudge: Mutex<Option<mpsc::Sender<()>>>,
    /// The writer and the checkpointer, joined on close.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Shared with the writer, which replaces immutable readers once it can write.
    readers: Arc<Mutex<Readers>>,
    /// One permit per pooled read connection.
    read_slots: Arc<tokio::sync::Semaphore>,
}

impl Drop for Inner {
    /// A store dropped without [`Store::close`] still writes what is queued,
    /// and its threads end.
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Store {
    /// Open (creating if need be) the database at `path`, bring its schema up
    /// to date, and start the writer. A database the disk lets Punie read but
    /// not write is opened for reading: sessions can be listed and loaded, new
    /// prompts are refused, and the writer tries again to open it for writing
    /// every [`RETRY_INTERVAL`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |error: &(dyn std::error::Error + 'static)| StoreError::from_error(path, error);
        files::prepare_private(path).map_err(|error| fail(&error))?;
        let lock = files::StoreLock::take(path).map_err(|error| fail(&error))?;
        let (writer, read_only) = match open_writer(path) {
            Ok(writer) => (WriterConnection::Writing(writer), None),
            Err(error) => match why_read_only(path) {
                Some(reason) => {
                    let immutable = read_only_way_in(path).map_err(|error| fail(&*error))?;
                    let reader = open_reader(path, immutable).map_err(|error| fail(&error))?;
                    (WriterConnection::Reading(reader), Some((reason, immutable)))
                }
                None => return Err(fail(&*error)),
            },
        };
        // Opened now, so the server's open files do not creep up with its
        // first reads. A read-only store has none to spare.
        let checkpointer = match read_only {
            None => Some(open_for_writing(path).map_err(|error| fail(&error))?),
            Some(_) => None,
        };
        let immutable = read_only.is_some_and(|(_, immutable)| immutable);
        let readers = (0..IDLE_READERS)
            .map(|_| open_reader(path, immutable))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|error| fail(&error))?;
        let readers = Arc::new(Mutex::new(Readers {
            idle: readers,
            immutable,
            generation: 0,
        }));
        let refused = Arc::new(Mutex::new(read_only.map(|(reason, _)| {
            tracing::error!(
                "the session store at {} is read-only ({reason}): sessions can be listed and loaded, but prompts are refused until it can be written (the server tries again every {}s)",
                path.display(),
                RETRY_INTERVAL.as_secs()
            );
            describe(&read_only_error())
        })));
        let (nudge, nudges) = mpsc::channel();
        let shared = Arc::new(Shared::new(
            path,
            writer,
            refused.clone(),
            readers.clone(),
            nudge.clone(),
        ));
        let thread_shared = shared.clone();
        let writer_thread = std::thread::Builder::new()
            .name("punie-store".into())
            .spawn(move || writer::write_loop(&thread_shared))
            .map_err(|error| fail(&error))?;
        let identity = files::identity(path).ok();
        let checkpoint_path = path.to_owned();
        let checkpoint_shared = shared.clone();
        let checkpoint_thread = std::thread::Builder::new()
            .name("punie-checkpoint".into())
            .spawn(move || {
                writer::checkpoint_loop(
                    &checkpoint_path,
                    checkpointer,
                    &nudges,
                    &checkpoint_shared,
                    identity,
                );
            })
            .map_err(|error| fail(&error))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                identity,
                lock: Mutex::new(Some(lock)),
                refused,
                shared,
                checkpoint_nudge: Mutex::new(Some(nudge)),
                threads: Mutex::new(vec![writer_thread, checkpoint_thread]),
                readers,
                read_slots: Arc::new(tokio::sync::Semaphore::new(IDLE_READERS)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Fails while the disk refuses writes: what is written now would not be
    /// stored, so new turns should not start.
    pub fn writable(&self) -> Result<(), StoreError> {
        match &*lock(&self.inner.refused) {
            None => Ok(()),
            Some(problem) => Err(StoreError::message(
                &self.inner.path,
                format!(
                    "cannot write to it: {problem}. Prompts are refused until it can be written \
                     again; free disk space or make it writable (the server tries again every {}s)",
                    RETRY_INTERVAL.as_secs()
                ),
            )),
        }
    }

    /// What is wrong with the store, if anything, for `/health`: writes
    /// the disk refuses, or a database file deleted or replaced under the
    /// server.
    pub fn problem(&self) -> Option<String> {
        if let Some(problem) = &*lock(&self.inner.refused) {
            return Some(format!("cannot write to it: {problem}"));
        }
        let opened = self.inner.identity?;
        files::still_there(&self.inner.path, opened).err()
    }

    /// Record a new session; `real_cwd` is where its workspace really is,
    /// symlinks resolved (its [`crate::workspace::Workspace::root`]).
    pub fn create_session(&self, row: SessionRow, real_cwd: &Path) {
        let real_cwd = real_cwd.to_string_lossy().into_owned();
        self.send(Command::CreateSession { row, real_cwd });
    }

    /// Queue an entry; `then` runs once it is committed (see [`AfterWrite`]).
    pub fn append(&self, session: &str, kind: EntryKind, body: String, then: Option<AfterWrite>) {
        self.send(Command::Append {
            session: session.to_owned(),
            kind,
            body,
            at_us: now_us(),
            then,
        });
    }

    /// Change one of the session's settings to `value`.
    pub fn set(&self, session: &str, setting: Setting, value: String) {
        self.send(Command::Set {
            session: session.to_owned(),
            setting,
            value,
        });
    }

    pub fn turn_started(&self, session: &str, number: i64) {
        self.send(Command::TurnStarted {
            session: session.to_owned(),
            number,
            at_us: now_us(),
        });
    }

    /// Record the end of the running turn; `body` says how it ended. `then`
    /// runs once that is written, as an entry's does.
    pub fn turn_ended(&self, session: &str, body: String, then: Option<AfterWrite>) {
        self.send(Command::TurnEnded {
            session: session.to_owned(),
            body,
            at_us: now_us(),
            then,
        });
    }

    /// Run `then` on the writer once everything queued so far is written,
    /// with the sequence number of the session's newest entry (0 if none, and
    /// `None` if the session is not stored): anything appended later comes
    /// after that point, and nothing is written while `then` runs.
    pub fn at_newest(&self, session: &str, then: AtNewest) {
        let command = Command::AtNewest {
            session: session.to_owned(),
            then,
        };
        if let Err(command) = self.try_send(command)
            && let Command::AtNewest { then, .. } = *command
        {
            then(None);
        }
    }

    /// Wait until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.try_send(Command::Barrier(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// Delete a session and its history; false if there was no such session.
    pub async fn delete(&self, session: &str) -> Result<bool, String> {
        let (done, deleted) = tokio::sync::oneshot::channel();
        self.try_send(Command::Delete {
            session: session.to_owned(),
            done,
        })
        .map_err(|_| "the store is closed".to_owned())?;
        deleted
            .await
            .unwrap_or_else(|_| Err("the store stopped".to_owned()))
    }

    /// Start a checkpoint now, beside whatever else runs: at shutdown, so
    /// that the last one, on close, has little left to copy.
    pub fn checkpoint_soon(&self) {
        if let Some(nudge) = lock(&self.inner.checkpoint_nudge).as_ref() {
            let _ = nudge.send(());
        }
    }

    /// Write everything queued and stop the writer. Later appends are not
    /// stored, but their follow-ups still run.
    pub fn close(&self) {
        drop(lock(&self.inner.checkpoint_nudge).take());
        self.inner.shared.close();
        // The writer ends first; the checkpointer follows when it does.
        for thread in std::mem::take(&mut *lock(&self.inner.threads)) {
            let _ = thread.join();
        }
        // Nothing more is written: another server may have the database now.
        drop(lock(&self.inner.lock).take());
    }

    /// One session's row.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |connection| {
            connection
                .query_row(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                    [&id],
                    session_row,
                )
                .optional()
        })
        .await
    }

    /// Sessions newest first, only those in `cwd` if given, after `after`.
    pub async fn list(
        &self,
        cwd: Option<PathBuf>,
        after: Option<ListPosition>,
        page: usize,
    ) -> Result<SessionRows, StoreError> {
        // A session created just before, still queued, is listed too: missed
        // on the first page, it would fall before the cursor of the next.
        self.flush().await;
        self.read(move |connection| list_sessions(connection, cwd.as_deref(), after, page))
            .await
    }

    /// Every entry of one session's history, oldest first, with those the
    /// disk refused and the writer holds: clients were sent them.
    pub async fn history(&self, session: &str) -> Result<Vec<Entry>, StoreError> {
        self.entries(session, None).await
    }

    /// The entries of `session` that make its conversation, oldest first:
    /// its messages, and where each turn began and how it ended (a refused
    /// turn's messages are left out of what the model is sent). What a
    /// prompt needs, without the updates clients were sent, which are most
    /// of a history and of no use to the model.
    pub async fn messages(&self, session: &str) -> Result<Vec<Entry>, StoreError> {
        self.entries(session, Some(EntryKind::Update)).await
    }

    /// The entries of `session`, oldest first: all, or all but those of one
    /// kind.
    async fn entries(
        &self,
        session: &str,
        without: Option<EntryKind>,
    ) -> Result<Vec<Entry>, StoreError> {
        let session = session.to_owned();
        let shared = self.inner.shared.clone();
        let refused = self.inner.refused.clone();
        self.read(move |connection| {
            // Taken before the stored entries are read: written meanwhile,
            // they are read from the file too, under the same numbers, and
            // counted once.
            let held = if lock(&refused).is_some() {
                shared.held_entries(&session, without)
            } else {
                Vec::new()
            };
            let mut statement = connection.prepare_cached(
                "SELECT seq, kind, body FROM entries \
                 WHERE session_id = ?1 AND (?2 IS NULL OR kind <> ?2) ORDER BY seq",
            )?;
            let without = without.map(EntryKind::code);
            let rows = statement.query_map(params![session, without], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get(2)?))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (seq, kind, body) = row?;
                if let Some(kind) = EntryKind::from_code(kind) {
                    entries.push(Entry { seq, kind, body });
                }
            }
            let stored = entries.last().map_or(0, |entry| entry.seq);
            entries.extend(held.into_iter().filter(|entry| entry.seq > stored));
            Ok(entries)
        })
        .await
    }

    /// Sessions whose last turn never ended: the server stopped mid-turn.
    pub async fn interrupted(&self) -> Result<Vec<SessionRow>, StoreError> {
        self.read(|connection| {
            let mut statement = connection.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE running = 1"
            ))?;
            let rows = statement.query_map([], session_row)?;
            rows.collect()
        })
        .await
    }

    /// How many sessions are stored.
    pub async fn count(&self) -> Result<i64, StoreError> {
        self.read(|connection| {
            connection.query_row("SELECT count(*) FROM sessions", [], |row| row.get(0))
        })
        .await
    }

    /// Queue `command`. If the store is closed (the server is stopping),
    /// what waited on its write still runs: an update is still delivered.
    fn send(&self, command: Command) {
        if let Err(mut command) = self.try_send(command)
            && let Some(then) = command.take_follow_up()
        {
            then();
        }
    }

    /// Queue `command`; handed back if the store is closed.
    fn try_send(&self, command: Command) -> Result<(), Box<Command>> {
        self.inner.shared.submit(command)
    }

    /// Run `read` on a read connection, off the async threads.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        // Reads wait their turn for one of the pooled connections: the
        // server's open files stay the same however many read at once.
        let permit = self.inner.read_slots.clone().acquire_owned().await;
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (idle, immutable, generation) = {
                let mut readers = lock(&inner.readers);
                (readers.idle.pop(), readers.immutable, readers.generation)
            };
            let connection = match idle {
                Some(connection) => connection,
                None => open_reader(&inner.path, immutable)?,
            };
            let result = read(&connection);
            let mut readers = lock(&inner.readers);
            if readers.generation == generation {
                readers.idle.push(connection);
            }
            result
        })
        .await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::from_error(&self.inner.path, &error)),
            Err(join) => Err(StoreError::from_error(&self.inner.path, &join)),
        }
    }
}

const SESSION_COLUMNS: &str =
    "id, cwd, title, model, created_us, updated_us, turns, running, permissions, mode";

fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: row.get(0)?,
        cwd: PathBuf::from(row.get::<_, String>(1)?),
        title: row.get(2)?,
        model: row.get(3)?,
        created_us: row.get(4)?,
        updated_us: row.get(5)?,
        turns: row.get(6)?,
        running: row.get(7)?,
        permissions: row.get(8)?,
        mode: row.get(9)?,
    })
}

/// The real path of workspace `cwd`, symlinks resolved, by which its
/// sessions are listed; as written if it no longer exists.
fn real_workspace(cwd: &Path) -> String {
    std::fs::canonicalize(cwd)
        .as_deref()
        .unwrap_or(cwd)
        .to_string_lossy()
        .into_owned()
}

fn list_sessions(
    connection: &Connection,
    cwd: Option<&Path>,
    after: Option<ListPosition>,
    page: usize,
) -> rusqlite::Result<SessionRows> {
    // A workspace is matched by where it leads now, or as it was written
    // (its directory gone, or a symlink to it pointed elsewhere since). Two
    // statements, so that SQLite searches the workspace indexes for the
    // filtered one rather than walk every session.
    let which = match cwd {
        Some(_) => "real_cwd = ?1 OR cwd = ?5",
        None => "?1 IS NULL AND ?5 IS NULL",
    };
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions
         WHERE ({which})
           AND (?2 IS NULL OR updated_us < ?2 OR (updated_us = ?2 AND id > ?3))
         ORDER BY updated_us DESC, id ASC
         LIMIT ?4"
    ))?;
    let written = cwd.map(|cwd| cwd.to_string_lossy().into_owned());
    let cwd = cwd.map(real_workspace);
    let (after_ms, after_id) = match after {
        Some(position) => (Some(position.updated_us), Some(position.id)),
        None => (None, None),
    };
    let limit = i64::try_from(page.saturating_add(1)).unwrap_or(i64::MAX);
    let mut rows: Vec<SessionRow> = statement
        .query_map(
            params![cwd, after_ms, after_id, limit, written],
            session_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    let next = if rows.len() > page {
        rows.truncate(page);
        rows.last().map(|row| ListPosition {
            updated_us: row.updated_us,
            id: row.id.clone(),
        })
    } else {
        None
    };
    Ok(SessionRows { rows, next })
}

/// The writer's connection, with the schema brought up to date.
fn open_writer(path: &Path) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
    let mut connection = open_for_writing(path)?;
    schema::migrate(&mut connection)?;
    // Checkpoints copy the log into the database and sync it: slow, and
    // never on the path between a model's token and the client.
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    // What is deleted is overwritten, not just unlinked: a deleted session's
    // prompts and code must not linger in free pages.
    connection.pragma_update(None, "secure_delete", true)?;
    Ok(connection)
}

/// A connection that can write, or an error: SQLite opens a file it may not
/// write for reading, without a word. Nor does it say when the connection
/// joins a mapping of the log's shared memory made read-only: one mapping
/// serves every connection of the process to the database while any of them
/// is open, and one made while the disk was read-only stays so, refusing
/// every commit. Taking the write lock tells.
fn open_for_writing(path: &Path) -> rusqlite::Result<Connection> {
    let connection = open_connection(path, OpenFlags::default())?;
    if connection.is_readonly(rusqlite::MAIN_DB)? {
        return Err(read_only_error());
    }
    connection.execute_batch("BEGIN IMMEDIATE; ROLLBACK")?;
    Ok(connection)
}

/// Why the database at `path` can be read but not written, if that is why
/// it could not be opened for writing.
fn why_read_only(path: &Path) -> Option<&'static str> {
    let error = std::fs::OpenOptions::new().write(true).open(path).err()?;
    match error.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => Some("its file system is mounted read-only"),
        std::io::ErrorKind::PermissionDenied => Some("Punie may not write to the file"),
        _ => None,
    }
}

/// How a database that cannot be written is read: `false` as usual, `true`
/// as an immutable file. SQLite reads a WAL database through a shared-memory
/// file beside it, which it cannot create on a read-only disk; when that file
/// is missing and the log is empty (as after a clean stop), nothing is
/// missed by reading the database file alone.
fn read_only_way_in(path: &Path) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    // Opening is lazy: the first read tells whether the way in works.
    let (immutable, connection) = match open_reader(path, false).and_then(|reader| {
        reader.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(reader)
    }) {
        Ok(reader) => (false, reader),
        Err(error) if log_is_empty(path) => {
            tracing::debug!("reading the session store as an immutable file: {error}");
            (true, open_reader(path, true)?)
        }
        Err(error) => {
            tracing::debug!("cannot read the session store without writing: {error}");
            return Err("it is read-only, and its log (the `-wal` file beside it) holds writes that SQLite can only read where it may write; make it writable".into());
        }
    };
    if !schema::is_current(&connection)? {
        return Err("it is read-only, and its schema is not the one this version of Punie reads; make it writable so that it can be brought up to date".into());
    }
    Ok(immutable)
}

fn log_is_empty(path: &Path) -> bool {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    std::fs::metadata(log).map_or(true, |log| log.len() == 0)
}

/// What SQLite says of a write to a database opened read-only.
fn read_only_error() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
        None,
    )
}

/// Path characters an SQLite URI must have escaped.
const URI_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn open_reader(path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    if !immutable {
        return open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY);
    }
    use std::os::unix::ffi::OsStrExt as _;
    let uri = format!(
        "file:{}?immutable=1",
        percent_encoding::percent_encode(path.as_os_str().as_bytes(), URI_PATH)
    );
    open_connection(
        Path::new(&uri),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
}

fn open_connection(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // A negative size is in KiB.
    connection.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
    Ok(connection)
}

/// What went wrong, in words that point at the fix: SQLite's own messages
/// ("disk I/O error") do not say what to check.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    use rusqlite::ErrorCode;
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(code) = error
            .downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
        {
            let words = match code {
                ErrorCode::DiskFull => "the disk is full",
                ErrorCode::ReadOnly => "it is read-only",
                ErrorCode::SystemIoFailure => {
                    "the disk failed a read or write; it may be full, read-only or failing"
                }
                ErrorCode::CannotOpen => {
                    "cannot open it; it may be a directory, or in a directory Punie may not write to"
                }
                ErrorCode::PermissionDenied => "permission denied",
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::FileLockingProtocolFailed => {
                    "another process holds it locked, perhaps a second `punie serve` with the same data directory"
                }
                ErrorCode::NotADatabase => {
                    "it is not an SQLite database; move it aside and Punie starts a new one"
                }
                ErrorCode::DatabaseCorrupt => "it is damaged (SQLite reports corruption)",
                _ => break,
            };
            return words.to_owned();
        }
        cause = error.source();
    }
    error.to_string()
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::writer::STAMP_EVERY;
    use super::*;
    use std::time::Instant;

    fn row(id: &str, cwd: &str) -> SessionRow {
        SessionRow {
            id: id.to_owned(),
            cwd: PathBuf::from(cwd),
            title: None,
            model: "test".to_owned(),
            created_us: 1,
            updated_us: 1,
            turns: 0,
            running: false,
            permissions: None,
            mode: None,
        }
    }

    #[tokio::test]
    async fn entries_are_kept_in_order_and_follow_ups_run_after_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        let (sent, delivered) = tokio::sync::oneshot::channel();
        for n in 0..100 {
            store.append("a", EntryKind::Update, n.to_string(), None);
        }
        // The follow-up counts, on a connection of its own, what is stored.
        let path = store.path().to_owned();
        store.append(
            "a",
            EntryKind::Message,
            "last".into(),
            Some(Box::new(move || {
                let stored: i64 = Connection::open(&path)
                    .and_then(|reader| {
                        reader.query_row("SELECT count(*) FROM entries", [], |row| row.get(0))
                    })
                    .unwrap_or(-1);
                let _ = sent.send(stored);
            })),
        );
        assert_eq!(
            delivered.await.unwrap(),
            101,
            "written before the follow-up ran"
        );
        let history = store.history("a").await.unwrap();
        assert!(history.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(history[7].body, "7");
        assert_eq!(history[100].kind, EntryKind::Message);
    }

    #[tokio::test]
    async fn a_conversation_is_read_without_the_updates_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        store.create_session(row("b", "/w"), Path::new("/w"));
        store.turn_started("a", 1);
        for n in 0..10 {
            store.append("a", EntryKind::Update, format!("update {n}"), None);
            store.append("a", EntryKind::Message, format!("message {n}"), None);
            store.append("b", EntryKind::Message, format!("other {n}"), None);
        }
        store.append("a", EntryKind::TurnEnded, "{}".into(), None);
        store.flush().await;
        let messages = store.messages("a").await.unwrap();
        let bodies: Vec<&str> = messages.iter().map(|entry| entry.body.as_str()).collect();
        // The turn's bounds come too: how a turn ended decides whether its
        // messages are sent again (a refused one's are not).
        let expected: Vec<String> = std::iter::once("1".to_owned())
            .chain((0..10).map(|n| format!("message {n}")))
            .chain(std::iter::once("{}".to_owned()))
            .collect();
        assert_eq!(bodies, expected);
        assert!(messages.iter().all(|entry| entry.kind != EntryKind::Update));
    }

    #[tokio::test]
    async fn a_deleted_session_is_gone_and_its_late_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        store.create_session(row("b", "/x"), Path::new("/x"));
        store.append("a", EntryKind::Update, "{}".into(), None);
        assert_eq!(store.delete("a").await, Ok(true));
        assert_eq!(store.delete("a").await, Ok(false));
        store.append("a", EntryKind::Update, "late".into(), None);
        store.flush().await;
        assert!(store.history("a").await.unwrap().is_empty());
        assert_eq!(store.session("a").await.unwrap(), None);
        let listed = store.list(None, None, 10).await.unwrap();
        assert_eq!(listed.rows.len(), 1);
        assert_eq!(listed.rows[0].id, "b");
    }

    async fn updated_us(store: &Store, id: &str) -> i64 {
        store.session(id).await.unwrap().unwrap().updated_us
    }

    #[tokio::test]
    async fn a_streaming_session_gets_its_update_time_at_most_a_second_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        store.append("a", EntryKind::Update, "first".into(), None);
        let flushed = Instant::now();
        store.flush().await;
        let first = updated_us(&store, "a").await;
        assert!(first > 1, "the first update is stamped");

        // Within the second, the time waits; past it, it is written without
        // anything else to write.
        store.append("a", EntryKind::Update, "second".into(), None);
        while updated_us(&store, "a").await == first {
            assert!(
                flushed.elapsed() < STAMP_EVERY * 10,
                "the update time was never written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            flushed.elapsed() >= STAMP_EVERY,
            "written a second after the last, not at once"
        );

        // A flush writes it at once.
        store.append("a", EntryKind::Update, "third".into(), None);
        let before = updated_us(&store, "a").await;
        store.flush().await;
        assert!(updated_us(&store, "a").await > before);
    }

    /// Committed once this resolves: the follow-up of a write queued after
    /// everything before it.
    fn follow_up() -> (Option<AfterWrite>, tokio::sync::oneshot::Receiver<()>) {
        let (done, committed) = tokio::sync::oneshot::channel();
        let then: AfterWrite = Box::new(move || {
            let _ = done.send(());
        });
        (Some(then), committed)
    }

    #[tokio::test]
    async fn a_turns_start_and_end_write_the_session_time_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        store.append("a", EntryKind::Update, "before".into(), None);
        store.flush().await;
        let stamped = Instant::now();
        let first = updated_us(&store, "a").await;

        store.turn_started("a", 1);
        let (then, committed) = follow_up();
        store.append("a", EntryKind::Update, "reply".into(), then);
        committed.await.unwrap();
        let running = store.session("a").await.unwrap().unwrap();
        assert!(running.running);
        assert!(running.updated_us > first, "the start is stamped");
        assert_eq!(store.interrupted().await.unwrap().len(), 1);

        let (then, committed) = follow_up();
        store.turn_ended("a", "end_turn".into(), then);
        committed.await.unwrap();
        let ended = store.session("a").await.unwrap().unwrap();
        assert!(!ended.running);
        assert_eq!(ended.turns, 1);
        assert!(ended.updated_us > running.updated_us, "the end is stamped");
        assert!(store.interrupted().await.unwrap().is_empty());
        assert!(
            stamped.elapsed() < STAMP_EVERY,
            "written with the turn's start and end, not a second later"
        );
    }

    /// Which thread ran a follow-up, and in what order follow-ups ran.
    #[derive(Default)]
    struct FollowUps(Mutex<Vec<(String, Option<String>)>>);

    impl FollowUps {
        fn note(self: &Arc<Self>, body: &str) -> Option<AfterWrite> {
            let notes = self.clone();
            let body = body.to_owned();
            Some(Box::new(move || {
                let thread = std::thread::current().name().map(str::to_owned);
                lock(&notes.0).push((body, thread));
            }))
        }

        fn ran(&self) -> Vec<(String, Option<String>)> {
            lock(&self.0).clone()
        }

        /// The bodies of session `a`'s history, once it is checked that the
        /// follow-ups ran in the order of the writes.
        async fn ran_in_stored_order(&self, store: &Store) -> Vec<String> {
            let history = store.history("a").await.unwrap();
            let stored: Vec<String> = history.into_iter().map(|entry| entry.body).collect();
            let followed: Vec<String> = self.ran().into_iter().map(|(body, _)| body).collect();
            assert_eq!(
                stored, followed,
                "follow-ups ran in the order of the writes"
            );
            stored
        }
    }

    /// A store in a temporary directory, holding session `a`.
    async fn stored_session_a() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        store.flush().await;
        (dir, store)
    }

    #[tokio::test]
    async fn a_lone_update_is_written_by_its_own_thread_and_a_burst_by_the_writer() {
        let (_dir, store) = stored_session_a().await;
        let follow_ups = Arc::new(FollowUps::default());

        // After a quiet spell, the append is committed and its follow-up has
        // run by the time `append` returns, on the caller's thread — unless
        // the writer thread still held the writer, as it may for a moment
        // after a flush; then it is the writer thread's, and another try
        // comes after another quiet spell.
        let here = std::thread::current().name().map(str::to_owned);
        let mut tries = 0;
        loop {
            tries += 1;
            std::thread::sleep(writer::BURST_GAP * 2);
            let lone = format!("lone {tries}");
            store.append("a", EntryKind::Update, lone.clone(), follow_ups.note(&lone));
            if follow_ups.ran().last() == Some(&(lone, here.clone())) {
                break;
            }
            assert!(tries < 100, "no lone append was written where it was made");
        }
        store.flush().await;

        // Back to back, the rest of a burst goes to the writer thread.
        for n in 0..1000 {
            let body = n.to_string();
            store.append("a", EntryKind::Update, body.clone(), follow_ups.note(&body));
        }
        store.flush().await;
        let ran = follow_ups.ran();
        assert_eq!(ran.len(), tries + 1000);
        let by_writer = ran[tries..]
            .iter()
            .filter(|(_, thread)| thread.as_deref() == Some("punie-store"))
            .count();
        assert!(
            by_writer >= 990,
            "{by_writer} of 1,000 burst follow-ups ran on the writer"
        );
        follow_ups.ran_in_stored_order(&store).await;
    }

    #[tokio::test]
    async fn an_attach_point_in_a_burst_splits_the_entries_it_counts_from_those_delivered_after() {
        // What a client that attaches at this point is replayed (entries up
        // to the newest) and what it is delivered live (follow-ups run after
        // the attach) must neither overlap nor leave a gap, even when the
        // writer takes the attach and the appends around it in one go.
        let (_dir, store) = stored_session_a().await;
        // Each follow-up in the order it ran: an entry delivered (its body),
        // or an attach (with the newest entry it was given).
        type Events = Arc<Mutex<Vec<(String, Option<i64>)>>>;
        let events: Events = Arc::default();
        for n in 0..200 {
            if n % 40 == 20 {
                let events = events.clone();
                store.at_newest(
                    "a",
                    Box::new(move |newest| lock(&events).push(("attach".to_owned(), newest))),
                );
            }
            let events = events.clone();
            let body = n.to_string();
            store.append(
                "a",
                EntryKind::Update,
                body.clone(),
                Some(Box::new(move || lock(&events).push((body, None)))),
            );
        }
        store.flush().await;
        let seq_of: std::collections::HashMap<String, i64> = store
            .history("a")
            .await
            .unwrap()
            .into_iter()
            .map(|entry| (entry.body, entry.seq))
            .collect();
        let events = lock(&events).clone();
        let mut attached_at = Vec::new();
        for (what, newest) in &events {
            match newest {
                Some(newest) => attached_at.push(*newest),
                None => {
                    let seq = seq_of[what];
                    for newest in &attached_at {
                        assert!(
                            seq > *newest,
                            "entry {what} (seq {seq}) was delivered after an attach at {newest}, \
                             which replays it too"
                        );
                    }
                }
            }
        }
        assert_eq!(attached_at.len(), 5, "{events:?}");
    }

    #[tokio::test]
    async fn appends_from_many_threads_keep_each_threads_order_and_follow_ups_the_stores() {
        let (_dir, store) = stored_session_a().await;
        let follow_ups = Arc::new(FollowUps::default());
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let (store, follow_ups) = (store.clone(), follow_ups.clone());
                std::thread::spawn(move || {
                    for n in 0..300 {
                        let body = format!("{thread}:{n:03}");
                        store.append("a", EntryKind::Update, body.clone(), follow_ups.note(&body));
                        // Now and then a quiet spell, so that some appends
                        // are written where they were made, racing the rest.
                        if n % 7 == thread {
                            std::thread::sleep(writer::BURST_GAP * 3);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        store.flush().await;
        let ran = follow_ups.ran();
        let stored = follow_ups.ran_in_stored_order(&store).await;
        assert_eq!(stored.len(), 1200);
        for thread in 0..4 {
            let own: Vec<&str> = stored
                .iter()
                .map(String::as_str)
                .filter(|body| body.starts_with(&format!("{thread}:")))
                .collect();
            let mut sorted = own.clone();
            sorted.sort_unstable();
            assert_eq!(own, sorted, "thread {thread}'s appends stored out of order");
        }
        let elsewhere = ran
            .iter()
            .filter(|(_, thread)| thread.as_deref() != Some("punie-store"))
            .count();
        assert!(
            elsewhere > 0,
            "no append was written by the thread that made it"
        );
    }

    #[tokio::test]
    async fn a_follow_up_that_panics_stops_neither_the_writes_nor_the_follow_ups_after_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_dir, store) = stored_session_a().await;
        let ran = Arc::new(AtomicUsize::new(0));
        let follow_up = |fails: bool| -> Option<AfterWrite> {
            let ran = ran.clone();
            Some(Box::new(move || {
                assert!(!fails, "a follow-up that fails");
                ran.fetch_add(1, Ordering::SeqCst);
            }))
        };
        // In a burst, on the writer thread.
        for n in 0..50 {
            store.append("a", EntryKind::Update, n.to_string(), follow_up(n == 10));
        }
        store.flush().await;
        // Alone, on this thread (or the writer's, if it still held the writer).
        std::thread::sleep(writer::BURST_GAP * 2);
        store.append("a", EntryKind::Update, "lone".into(), follow_up(true));
        store.append("a", EntryKind::Update, "after".into(), follow_up(false));
        store.flush().await;
        assert_eq!(ran.load(Ordering::SeqCst), 50, "every other follow-up ran");
        assert_eq!(store.history("a").await.unwrap().len(), 52);
    }

    #[tokio::test]
    async fn a_reopened_store_keeps_everything_and_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("punie.db");
        let store = Store::open(&path).unwrap();
        store.create_session(row("a", "/w"), Path::new("/w"));
        store.turn_started("a", 1);
        store.close();
        let store = Store::open(&path).unwrap();
        let interrupted = store.interrupted().await.unwrap();
        assert_eq!(interrupted.len(), 1, "the turn never ended");
        assert_eq!(
            store.history("a").await.unwrap()[0].kind,
            EntryKind::TurnStarted
        );
    }
}
