//! The embedded store: every session and its whole history, in SQLite (WAL)
//! at `$XDG_DATA_HOME/punie/punie.db`, with versioned schema migrations.
//!
//! One writer thread owns the only writing connection. Appends are queued
//! without waiting and written in batches, one transaction per batch; what
//! the caller wanted done after the write (sending an update to clients) runs
//! only once the batch is committed. That is how "write before you send" costs
//! little: a client never receives an update that is not already in the
//! database file, so even `kill -9` loses nothing a client saw. Reads use
//! their own connections, which WAL lets run beside the writer.
//!
//! When the disk refuses a write (full, read-only, failing), the writer keeps
//! what it could not write, in order, and tries again every second; clients
//! still get their updates meanwhile. Until it succeeds, [`Store::writable`]
//! fails, so that no new turn starts on the belief that it is saved. A
//! database the disk lets Punie read but not write is opened for reading, and
//! for writing once the disk allows it.
//!
//! The store knows sessions as rows and history as opaque JSON entries; what
//! an entry means (an ACP update, a model message) is [`crate::session`]'s
//! business. It never talks to clients or models.

mod schema;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

/// Most commands written in one transaction.
const MAX_BATCH: usize = 1024;

/// Read connections, opened at start and shared by every read.
const IDLE_READERS: usize = 4;

/// How long a connection waits for a lock another holds (a checkpoint, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most memory, in KiB, each connection's page cache may hold. SQLite's
/// default (2 MiB) fills as the database grows and is kept for the life of the
/// connection, on each of the six; the kernel caches the file anyway, so a
/// small cache costs little.
const PAGE_CACHE_KIB: i64 = 256;

/// How often the writer tries again to write what the disk refused.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Most bytes of refused writes held for the next try; a disk that stays
/// full must not fill the memory too. Writes past it are lost (and logged).
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

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

/// Runs once the write it follows is committed (or has failed, logged).
pub type AfterWrite = Box<dyn FnOnce() + Send>;

/// Runs on the writer with a session's newest entry: see [`Store::at_newest`].
pub type AtNewest = Box<dyn FnOnce(Option<i64>) + Send>;

enum Command {
    CreateSession(SessionRow),
    Append {
        session: String,
        kind: EntryKind,
        body: String,
        at_us: i64,
        then: Option<AfterWrite>,
    },
    SetTitle {
        session: String,
        title: String,
    },
    TurnStarted {
        session: String,
        number: i64,
        at_us: i64,
    },
    TurnEnded {
        session: String,
        body: String,
        at_us: i64,
    },
    Delete {
        session: String,
        done: tokio::sync::oneshot::Sender<Result<bool, String>>,
    },
    /// Completes once everything queued before it is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// Runs, once everything queued before it is written, with the newest
    /// entry of the session (`None` if there is no such session).
    AtNewest {
        session: String,
        then: AtNewest,
    },
}

/// The pooled read connections.
struct Readers {
    idle: Vec<Connection>,
    /// Whether they read the database as a file nobody writes: see
    /// [`read_only_way_in`]. Replaced once the store can be written again.
    immutable: bool,
}

/// The writer's connection.
enum WriterConnection {
    Writing(Connection),
    /// The disk lets Punie only read the database: writes are refused (and
    /// held) until it can be opened for writing. Reads still run here.
    Reading(Connection),
}

/// The store of one server. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Why the disk refused the writes the writer still holds; `None` while
    /// everything queued could be written.
    refused: Arc<Mutex<Option<String>>>,
    writer: Mutex<Option<mpsc::Sender<Command>>>,
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

impl Store {
    /// Open (creating if need be) the database at `path`, bring its schema up
    /// to date, and start the writer. A database the disk lets Punie read but
    /// not write is opened for reading: sessions can be listed and loaded, new
    /// prompts are refused, and the writer tries again to open it for writing
    /// every [`RETRY_INTERVAL`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |error: &(dyn std::error::Error + 'static)| StoreError::from_error(path, error);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| fail(&error))?;
        }
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
        }));
        let refused = Arc::new(Mutex::new(read_only.map(|(reason, _)| {
            tracing::error!(
                "the session store at {} is read-only ({reason}): sessions can be listed and loaded, but prompts are refused until it can be written (the server tries again every {}s)",
                path.display(),
                RETRY_INTERVAL.as_secs()
            );
            describe(&read_only_error())
        })));
        let (sender, commands) = mpsc::channel();
        let (nudge, nudges) = mpsc::channel();
        let outside_nudge = nudge.clone();
        let thread_path = path.to_owned();
        let thread_refused = refused.clone();
        let thread_readers = readers.clone();
        let writer_thread = std::thread::Builder::new()
            .name("punie-store".into())
            .spawn(move || {
                write_loop(
                    &thread_path,
                    writer,
                    &commands,
                    &nudge,
                    &thread_refused,
                    &thread_readers,
                );
            })
            .map_err(|error| fail(&error))?;
        let checkpoint_path = path.to_owned();
        let checkpoint_thread = std::thread::Builder::new()
            .name("punie-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_path, checkpointer, &nudges))
            .map_err(|error| fail(&error))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                refused,
                writer: Mutex::new(Some(sender)),
                checkpoint_nudge: Mutex::new(Some(outside_nudge)),
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

    pub fn create_session(&self, row: SessionRow) {
        self.send(Command::CreateSession(row));
    }

    /// Queue an entry; `then` runs once it is committed.
    pub fn append(&self, session: &str, kind: EntryKind, body: String, then: Option<AfterWrite>) {
        let command = Command::Append {
            session: session.to_owned(),
            kind,
            body,
            at_us: now_us(),
            then,
        };
        if let Err(command) = self.try_send(command)
            && let Command::Append {
                then: Some(then), ..
            } = *command
        {
            // The store is closed (the server is stopping): still deliver.
            then();
        }
    }

    pub fn set_title(&self, session: &str, title: &str) {
        self.send(Command::SetTitle {
            session: session.to_owned(),
            title: title.to_owned(),
        });
    }

    pub fn turn_started(&self, session: &str, number: i64) {
        self.send(Command::TurnStarted {
            session: session.to_owned(),
            number,
            at_us: now_us(),
        });
    }

    /// Record the end of the running turn; `body` says how it ended.
    pub fn turn_ended(&self, session: &str, body: String) {
        self.send(Command::TurnEnded {
            session: session.to_owned(),
            body,
            at_us: now_us(),
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
        drop(lock(&self.inner.writer).take());
        // The writer ends first; the checkpointer follows when it does.
        for thread in std::mem::take(&mut *lock(&self.inner.threads)) {
            let _ = thread.join();
        }
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

    /// Every entry of one session's history, oldest first.
    pub async fn history(&self, session: &str) -> Result<Vec<Entry>, StoreError> {
        self.entries(session, None).await
    }

    /// Only the entries of `session` that are messages of the conversation,
    /// oldest first: what a prompt needs, without the updates clients were
    /// sent, which are most of a history and of no use to the model.
    pub async fn messages(&self, session: &str) -> Result<Vec<Entry>, StoreError> {
        self.entries(session, Some(EntryKind::Message)).await
    }

    /// The entries of `session`, oldest first: all, or those of one kind.
    async fn entries(
        &self,
        session: &str,
        only: Option<EntryKind>,
    ) -> Result<Vec<Entry>, StoreError> {
        let session = session.to_owned();
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, kind, body FROM entries \
                 WHERE session_id = ?1 AND (?2 IS NULL OR kind = ?2) ORDER BY seq",
            )?;
            let only = only.map(EntryKind::code);
            let rows = statement.query_map(params![session, only], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get(2)?))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (seq, kind, body) = row?;
                if let Some(kind) = EntryKind::from_code(kind) {
                    entries.push(Entry { seq, kind, body });
                }
            }
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

    fn send(&self, command: Command) {
        let _ = self.try_send(command);
    }

    /// Queue `command`; handed back if the store is closed.
    fn try_send(&self, command: Command) -> Result<(), Box<Command>> {
        match &*lock(&self.inner.writer) {
            Some(writer) => writer
                .send(command)
                .map_err(|mpsc::SendError(command)| Box::new(command)),
            None => Err(Box::new(command)),
        }
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
            let (idle, immutable) = {
                let mut readers = lock(&inner.readers);
                (readers.idle.pop(), readers.immutable)
            };
            let connection = match idle {
                Some(connection) => connection,
                None => open_reader(&inner.path, immutable)?,
            };
            let result = read(&connection);
            let mut readers = lock(&inner.readers);
            if readers.immutable == immutable {
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

const SESSION_COLUMNS: &str = "id, cwd, title, model, created_us, updated_us, turns, running";

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
    })
}

fn list_sessions(
    connection: &Connection,
    cwd: Option<&Path>,
    after: Option<ListPosition>,
    page: usize,
) -> rusqlite::Result<SessionRows> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions
         WHERE (?1 IS NULL OR cwd = ?1)
           AND (?2 IS NULL OR updated_us < ?2 OR (updated_us = ?2 AND id > ?3))
         ORDER BY updated_us DESC, id ASC
         LIMIT ?4"
    ))?;
    let cwd = cwd.map(|cwd| cwd.to_string_lossy().into_owned());
    let (after_ms, after_id) = match after {
        Some(position) => (Some(position.updated_us), Some(position.id)),
        None => (None, None),
    };
    let limit = i64::try_from(page.saturating_add(1)).unwrap_or(i64::MAX);
    let mut rows: Vec<SessionRow> = statement
        .query_map(params![cwd, after_ms, after_id, limit], session_row)?
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
    Ok(connection)
}

/// A connection that can write, or an error: SQLite opens a file it may not
/// write for reading, without a word.
fn open_for_writing(path: &Path) -> rusqlite::Result<Connection> {
    let connection = open_connection(path, OpenFlags::default())?;
    if connection.is_readonly(rusqlite::MAIN_DB)? {
        return Err(read_only_error());
    }
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

/// The writer thread: take what is queued, write it in one transaction, then
/// run what waited on it. Writes the disk refused are held and tried again,
/// before anything newer. Ends when every sender is gone.
fn write_loop(
    path: &Path,
    mut connection: WriterConnection,
    commands: &mpsc::Receiver<Command>,
    checkpoint: &mpsc::Sender<()>,
    refused: &Mutex<Option<String>>,
    readers: &Mutex<Readers>,
) {
    let mut held = Held::default();
    let mut stamps = Stamps::default();
    // What `refused` says, without taking its lock for every batch.
    let mut refusal: Option<String> = lock(refused).clone();
    let mut since_checkpoint = 0;
    loop {
        // Held writes, and a store that could only be read, are tried again
        // after a pause, with any time that is due.
        let wait = if held.commands.is_empty() && matches!(connection, WriterConnection::Writing(_))
        {
            stamps.next_due()
        } else {
            Some(RETRY_INTERVAL)
        };
        let next = match wait {
            None => commands
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(limit) => commands.recv_timeout(limit),
        };
        let stopping = matches!(next, Err(mpsc::RecvTimeoutError::Disconnected));
        let retried = held.commands.len();
        let mut batch = std::mem::take(&mut held.commands);
        held.bytes = 0;
        if let Ok(first) = next {
            batch.push(first);
            while batch.len() < retried + MAX_BATCH {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
        }
        let flush = stopping
            || batch
                .iter()
                .any(|command| matches!(command, Command::Barrier(_)));
        if let WriterConnection::Reading(_) = connection
            && let Ok(writer) = open_writer(path)
        {
            connection = WriterConnection::Writing(writer);
            // The file is about to change under connections that took it for
            // immutable; those out on a read are dropped when they return.
            let mut pool = lock(readers);
            pool.idle.clear();
            pool.immutable = false;
            drop(pool);
            // With writes held, the refusal stands until they are stored.
            // Cleared before it is said: whoever reads the line may prompt.
            if retried == 0 && refusal.take().is_some() {
                *lock(refused) = None;
                tracing::info!(store = %path.display(), "the session store is writable again");
            }
        }
        if batch.is_empty() && !stamps.any_due(flush) {
            if stopping {
                return;
            }
            continue;
        }
        let written = match &mut connection {
            WriterConnection::Writing(writer) => write_batch(writer, &batch, &stamps, flush),
            WriterConnection::Reading(_) => Err(read_only_error()),
        };
        let outcome = match written {
            Ok(Written { deletes, stamped }) => {
                stamps.record(stamped, &batch);
                held.overflowed = false;
                since_checkpoint += 1;
                if since_checkpoint >= CHECKPOINT_EVERY_BATCHES {
                    since_checkpoint = 0;
                    let _ = checkpoint.send(());
                }
                Outcome::Written(deletes)
            }
            Err(error) if batch.is_empty() => {
                // Only update times were due. They are not worth holding:
                // the end of each turn writes its session's again.
                stamps.forget_pending();
                tracing::debug!(store = %path.display(), "could not write sessions' update times: {}", describe(&error));
                Outcome::Dropped(describe(&error))
            }
            Err(error) if is_the_disks_doing(&error) => {
                let problem = describe(&error);
                if refusal.as_ref() != Some(&problem) {
                    // Refused before it is said: whoever reads the line may prompt.
                    *lock(refused) = Some(problem.clone());
                    refusal = Some(problem.clone());
                    tracing::error!(
                        "cannot write to the session store at {}: {problem}; clients still get their updates, which are held in memory and written once it can be (free disk space or make it writable)",
                        path.display()
                    );
                }
                Outcome::Held(problem)
            }
            Err(error) => {
                tracing::error!(
                    store = %path.display(),
                    commands = batch.len(),
                    "could not write to the session store: {error}; clients still get their updates, but this history is not stored"
                );
                Outcome::Dropped(describe(&error))
            }
        };
        let wrote = matches!(outcome, Outcome::Written(_));
        let (WriterConnection::Writing(reader) | WriterConnection::Reading(reader)) = &connection;
        finish_batch(reader, batch, outcome, &mut held, path);
        if wrote && held.commands.is_empty() && refusal.take().is_some() {
            *lock(refused) = None;
            tracing::info!(
                store = %path.display(),
                "the session store is writable again; {retried} held writes are stored"
            );
        }
        if stopping {
            if !held.commands.is_empty() {
                tracing::error!(
                    store = %path.display(),
                    "{} writes were never stored: the disk still refuses them",
                    held.commands.len()
                );
            }
            return;
        }
    }
}

/// Batches written between two nudges to the checkpointer.
const CHECKPOINT_EVERY_BATCHES: usize = 256;

/// How often the log is checkpointed when few batches are written.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The checkpointer thread: copy the write-ahead log into the database now
/// and then, without ever blocking the writer (`PASSIVE`). Ends, with a last
/// full checkpoint, when the writer does. A store that could only be read
/// has nothing to checkpoint until it can be written.
fn checkpoint_loop(path: &Path, mut connection: Option<Connection>, nudges: &mpsc::Receiver<()>) {
    loop {
        let last = matches!(
            nudges.recv_timeout(CHECKPOINT_INTERVAL),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        if connection.is_none() {
            connection = open_for_writing(path).ok();
        }
        let Some(connection) = &connection else {
            if last {
                return;
            }
            continue;
        };
        let mode = if last { "TRUNCATE" } else { "PASSIVE" };
        match checkpoint(connection, mode) {
            // Under steady writes a passive checkpoint never finds a moment
            // to start the log over, and the log would grow until the disk
            // is full. Past a bound, wait for one (the writer pauses
            // briefly). RESTART rather than TRUNCATE: the log is reused from
            // its start in place, where cutting a 64 MiB file took 20 ms more
            // with the writer waiting.
            Ok(log_pages) if !last && log_pages > MAX_LOG_PAGES => {
                if let Err(error) = checkpoint(connection, "RESTART") {
                    tracing::warn!(store = %path.display(), "could not shorten the session store's log: {}", describe(&error));
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(store = %path.display(), "could not checkpoint the session store: {}", describe(&error));
            }
        }
        if last {
            return;
        }
    }
}

/// Most pages the write-ahead log may hold before a checkpoint waits to
/// start it over: 16 MiB at the 1 KiB pages of a database created now, 64 MiB
/// at the 4 KiB pages of older ones.
const MAX_LOG_PAGES: i64 = 16 * 1024;

/// Run a checkpoint; the pages in the log, as SQLite reports them.
fn checkpoint(connection: &Connection, mode: &str) -> rusqlite::Result<i64> {
    connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get(1)
    })
}

/// What became of a batch.
enum Outcome {
    /// Committed; for each delete in it, whether it found its session.
    Written(Vec<bool>),
    /// Refused by the disk, for this reason: held for the next try.
    Held(String),
    /// Failed for good, for this reason.
    Dropped(String),
}

/// Writes the disk refused, oldest first, to try again.
#[derive(Default)]
struct Held {
    commands: Vec<Command>,
    /// Roughly what they take in memory.
    bytes: usize,
    /// Whether writes were lost for want of room to hold them.
    overflowed: bool,
}

impl Held {
    fn hold(&mut self, command: Command, path: &Path) {
        let size = 64
            + match &command {
                Command::Append { body, .. } | Command::TurnEnded { body, .. } => body.len(),
                Command::SetTitle { title, .. } => title.len(),
                _ => 0,
            };
        if self.bytes + size > MAX_HELD_BYTES {
            if !self.overflowed {
                tracing::error!(
                    store = %path.display(),
                    "the session store has refused writes for too long; newer history is lost until it can be written"
                );
                self.overflowed = true;
            }
            return;
        }
        self.bytes += size;
        self.commands.push(command);
    }
}

/// Whether a failed write may succeed later without Punie changing anything:
/// the disk is full, read-only or failing, or the file is locked.
fn is_the_disks_doing(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::FileLockingProtocolFailed
        )
    )
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

/// What one transaction wrote.
struct Written {
    /// For each delete in the batch, whether it found its session.
    deletes: Vec<bool>,
    /// Sessions whose `updated_us` it wrote, and those it left for later
    /// (`false`) with the time they should get.
    stamped: Vec<(String, i64, bool)>,
}

/// Write `batch` in one transaction, with the `updated_us` of the sessions it
/// touched where due (all of them when `flush`).
fn write_batch(
    connection: &mut Connection,
    batch: &[Command],
    stamps: &Stamps,
    flush: bool,
) -> rusqlite::Result<Written> {
    // BEGIN and COMMIT stay prepared like the statements between them: a
    // streamed update is often a transaction of its own, and parsing the two
    // anew each time was a tenth of its cost.
    if !connection.is_autocommit() {
        // A transaction an earlier failure left open would make every BEGIN
        // fail from now on.
        connection.execute_batch("ROLLBACK")?;
    }
    connection.prepare_cached("BEGIN")?.execute([])?;
    let written = write_commands(connection, batch, stamps, flush).and_then(|written| {
        connection.prepare_cached("COMMIT")?.execute([])?;
        Ok(written)
    });
    if written.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    written
}

/// The statements of [`write_batch`], inside its transaction.
fn write_commands(
    transaction: &Connection,
    batch: &[Command],
    stamps: &Stamps,
    flush: bool,
) -> rusqlite::Result<Written> {
    // Each session touched, its newest time, and whether that must be written
    // now. Times left for later come first, so a delete drops them too.
    let mut touched: Vec<(&str, i64, bool)> = stamps
        .pending()
        .map(|(session, at_us)| (session, at_us, false))
        .collect();
    let mut deletes = Vec::new();
    for command in batch {
        match command {
            Command::CreateSession(row) => {
                transaction
                    .prepare_cached(
                        "INSERT OR IGNORE INTO sessions (id, cwd, title, model, created_us, updated_us, turns, running)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
                    )?
                    .execute(params![
                        row.id,
                        row.cwd.to_string_lossy(),
                        row.title,
                        row.model,
                        row.created_us,
                        row.updated_us,
                        row.turns
                    ])?;
            }
            Command::Append {
                session,
                kind,
                body,
                at_us,
                ..
            } => {
                transaction.prepare_cached(INSERT_ENTRY)?.execute(params![
                    session,
                    kind.code(),
                    body
                ])?;
                touch(&mut touched, session, *at_us, false);
            }
            Command::SetTitle { session, title } => {
                transaction
                    .prepare_cached("UPDATE sessions SET title = ?2 WHERE id = ?1")?
                    .execute(params![session, title])?;
            }
            Command::TurnStarted {
                session,
                number,
                at_us,
            } => {
                transaction.prepare_cached(INSERT_ENTRY)?.execute(params![
                    session,
                    EntryKind::TurnStarted.code(),
                    number.to_string()
                ])?;
                transaction
                    .prepare_cached("UPDATE sessions SET running = 1 WHERE id = ?1")?
                    .execute([session])?;
                touch(&mut touched, session, *at_us, true);
            }
            Command::TurnEnded {
                session,
                body,
                at_us,
            } => {
                transaction.prepare_cached(INSERT_ENTRY)?.execute(params![
                    session,
                    EntryKind::TurnEnded.code(),
                    body
                ])?;
                transaction
                    .prepare_cached(
                        "UPDATE sessions SET running = 0, turns = turns + 1 WHERE id = ?1",
                    )?
                    .execute([session])?;
                touch(&mut touched, session, *at_us, true);
            }
            Command::Delete { session, .. } => {
                transaction
                    .prepare_cached("DELETE FROM entries WHERE session_id = ?1")?
                    .execute([session])?;
                let deleted = transaction
                    .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                    .execute([session])?;
                touched.retain(|(touched, ..)| touched != session);
                deletes.push(deleted > 0);
            }
            Command::Barrier(_) | Command::AtNewest { .. } => {}
        }
    }
    let mut stamped = Vec::with_capacity(touched.len());
    for (session, at_us, now) in touched {
        let now = now || flush || stamps.due(session);
        if now {
            transaction
                .prepare_cached(
                    "UPDATE sessions SET updated_us = max(updated_us, ?2) WHERE id = ?1",
                )?
                .execute(params![session, at_us])?;
        }
        stamped.push((session.to_owned(), at_us, now));
    }
    Ok(Written { deletes, stamped })
}

/// Entries of a deleted session (the tail of a cancelled turn) are dropped.
const INSERT_ENTRY: &str = "INSERT INTO entries (session_id, kind, body)
     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1)";

fn touch<'a>(touched: &mut Vec<(&'a str, i64, bool)>, session: &'a str, at_us: i64, now: bool) {
    match touched.iter_mut().find(|(id, ..)| *id == session) {
        Some((_, latest, due)) => {
            *latest = (*latest).max(at_us);
            *due |= now;
        }
        None => touched.push((session, at_us, now)),
    }
}

/// How stale a session's `updated_us` may get while its turn streams. It
/// only orders `session/list`, and rewriting that row and its two indexes
/// with every update more than doubled the pages each small commit wrote.
/// The start and end of a turn, and a flush, always write it.
const STAMP_EVERY: Duration = Duration::from_secs(1);

/// When the writer last wrote the `updated_us` of each recently active
/// session, and a newer time it has not written yet.
#[derive(Default)]
struct Stamps(HashMap<String, Stamp>);

struct Stamp {
    written: Instant,
    pending: Option<i64>,
}

impl Stamps {
    /// Whether `session`'s time is written with the next transaction that
    /// touches it.
    fn due(&self, session: &str) -> bool {
        self.0
            .get(session)
            .is_none_or(|stamp| stamp.written.elapsed() >= STAMP_EVERY)
    }

    fn pending(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0
            .iter()
            .filter_map(|(session, stamp)| Some((session.as_str(), stamp.pending?)))
    }

    fn any_due(&self, flush: bool) -> bool {
        self.pending()
            .any(|(session, _)| flush || self.due(session))
    }

    /// How long until the first time left for later must be written.
    fn next_due(&self) -> Option<Duration> {
        self.0
            .values()
            .filter(|stamp| stamp.pending.is_some())
            .map(|stamp| STAMP_EVERY.saturating_sub(stamp.written.elapsed()))
            .min()
    }

    fn forget_pending(&mut self) {
        for stamp in self.0.values_mut() {
            stamp.pending = None;
        }
    }

    /// Note what a committed transaction wrote, and forget sessions quiet
    /// for longer than [`STAMP_EVERY`].
    fn record(&mut self, stamped: Vec<(String, i64, bool)>, batch: &[Command]) {
        let now = Instant::now();
        for (session, at_us, written) in stamped {
            if written {
                self.0.insert(
                    session,
                    Stamp {
                        written: now,
                        pending: None,
                    },
                );
            } else if let Some(stamp) = self.0.get_mut(&session) {
                stamp.pending = Some(stamp.pending.map_or(at_us, |pending| pending.max(at_us)));
            }
        }
        for command in batch {
            if let Command::Delete { session, .. } = command {
                self.0.remove(session);
            }
        }
        self.0
            .retain(|_, stamp| stamp.pending.is_some() || stamp.written.elapsed() < STAMP_EVERY);
    }
}

/// Run what waited on `batch`, and hold what the disk refused to write.
fn finish_batch(
    connection: &Connection,
    batch: Vec<Command>,
    outcome: Outcome,
    held: &mut Held,
    path: &Path,
) {
    let holding = matches!(outcome, Outcome::Held(_));
    let (mut deleted, failure) = match outcome {
        Outcome::Written(deletes) => (deletes.into_iter(), None),
        Outcome::Held(problem) | Outcome::Dropped(problem) => {
            (Vec::new().into_iter(), Some(problem))
        }
    };
    for command in batch {
        match command {
            Command::Append {
                session,
                kind,
                body,
                at_us,
                then,
            } => {
                if let Some(then) = then {
                    then();
                }
                if holding {
                    let command = Command::Append {
                        session,
                        kind,
                        body,
                        at_us,
                        then: None,
                    };
                    held.hold(command, path);
                }
            }
            Command::Barrier(done) => {
                let _ = done.send(());
            }
            Command::Delete { done, .. } => {
                let outcome = match &failure {
                    None => Ok(deleted.next().unwrap_or(false)),
                    Some(problem) => Err(format!("cannot write to it: {problem}")),
                };
                let _ = done.send(outcome);
            }
            Command::AtNewest { session, then } => then(newest_entry(connection, &session)),
            command @ (Command::CreateSession(_)
            | Command::SetTitle { .. }
            | Command::TurnStarted { .. }
            | Command::TurnEnded { .. }) => {
                if holding {
                    held.hold(command, path);
                }
            }
        }
    }
}

/// The newest entry of a stored session: 0 if it has none, `None` if the
/// session is not stored. A read that fails counts every entry.
fn newest_entry(connection: &Connection, session: &str) -> Option<i64> {
    let newest = connection
        .prepare_cached(
            "SELECT (SELECT coalesce(max(seq), 0) FROM entries WHERE session_id = ?1)
             FROM sessions WHERE id = ?1",
        )
        .and_then(|mut statement| statement.query_row([session], |row| row.get(0)).optional());
    match newest {
        Ok(newest) => newest,
        Err(error) => {
            tracing::warn!("cannot read the newest entry of session {session}: {error}");
            Some(i64::MAX)
        }
    }
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
    use super::*;

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
        }
    }

    #[tokio::test]
    async fn entries_are_kept_in_order_and_follow_ups_run_after_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"));
        let (sent, delivered) = tokio::sync::oneshot::channel();
        for n in 0..100 {
            store.append("a", EntryKind::Update, n.to_string(), None);
        }
        let reader = store.clone();
        store.append(
            "a",
            EntryKind::Message,
            "last".into(),
            Some(Box::new(move || {
                let _ = sent.send(());
            })),
        );
        delivered.await.unwrap();
        let history = reader.history("a").await.unwrap();
        assert_eq!(history.len(), 101, "written before the follow-up ran");
        assert!(history.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(history[7].body, "7");
        assert_eq!(history[100].kind, EntryKind::Message);
    }

    #[tokio::test]
    async fn a_conversation_is_read_without_the_updates_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"));
        store.create_session(row("b", "/w"));
        for n in 0..10 {
            store.append("a", EntryKind::Update, format!("update {n}"), None);
            store.append("a", EntryKind::Message, format!("message {n}"), None);
            store.append("b", EntryKind::Message, format!("other {n}"), None);
        }
        store.append("a", EntryKind::TurnEnded, "{}".into(), None);
        store.flush().await;
        let messages = store.messages("a").await.unwrap();
        let bodies: Vec<&str> = messages.iter().map(|entry| entry.body.as_str()).collect();
        let expected: Vec<String> = (0..10).map(|n| format!("message {n}")).collect();
        assert_eq!(bodies, expected);
        assert!(
            messages
                .iter()
                .all(|entry| entry.kind == EntryKind::Message)
        );
    }

    #[tokio::test]
    async fn a_deleted_session_is_gone_and_its_late_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("punie.db")).unwrap();
        store.create_session(row("a", "/w"));
        store.create_session(row("b", "/x"));
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
        store.create_session(row("a", "/w"));
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

    #[tokio::test]
    async fn a_reopened_store_keeps_everything_and_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("punie.db");
        let store = Store::open(&path).unwrap();
        store.create_session(row("a", "/w"));
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
