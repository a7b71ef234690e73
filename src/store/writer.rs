//! The writer: the only connection that writes the session store, the
//! queue of commands waiting for it, and the checkpointer beside it.
//!
//! Commands are queued without waiting and written in batches, one
//! transaction per batch; what waited on a command (sending an update to
//! clients) runs once its batch is committed. A burst is written by the
//! writer thread; a lone update after a quiet spell is written at once by
//! the thread that queued it, which skips two thread wake-ups. Either way
//! one writer at a time, in queue order. This module owns how and when
//! history reaches the disk; it knows nothing of what an entry means, and
//! never reads for a client.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, TryLockError, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{
    AfterWrite, AtNewest, Entry, EntryKind, RETRY_INTERVAL, Readers, SessionRow, Setting, describe,
    files, lock, open_for_writing, open_reader, open_writer, read_only_error,
};

/// Most commands written in one transaction.
const MAX_BATCH: usize = 1024;

/// Most commands a thread other than the writer's takes from the queue at
/// once: it came to write its own, and the others' follow-ups run there too.
const MAX_BATCH_ELSEWHERE: usize = 16;

/// Most bytes of refused writes held for the next try; a disk that stays
/// full must not fill the memory too. Writes past it are lost (and logged).
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

pub(super) enum Command {
    /// A new session, and the real path of its workspace (symlinks
    /// resolved), by which `session/list` finds it.
    CreateSession { row: SessionRow, real_cwd: String },
    Append {
        session: String,
        kind: EntryKind,
        body: String,
        at_us: i64,
        then: Option<AfterWrite>,
    },
    /// One of a session's settings changed.
    Set {
        session: String,
        setting: Setting,
        value: String,
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
        then: Option<AfterWrite>,
    },
    Delete {
        session: String,
        done: tokio::sync::oneshot::Sender<Result<bool, String>>,
    },
    /// Completes once everything queued before it is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// Runs, once everything queued before it is written, with the newest
    /// entry of the session (`None` if there is no such session).
    AtNewest { session: String, then: AtNewest },
}

/// The writer's connection.
pub(super) enum WriterConnection {
    Writing(Connection),
    /// The disk lets Punie only read the database: writes are refused (and
    /// held) until it can be opened for writing. Reads still run here.
    Reading(Connection),
    /// Neither: the reading connection was closed for a writer to open,
    /// which failed, and reading again failed too. Both are tried again
    /// with the next batch.
    Closed,
}

impl WriterConnection {
    fn reader(&self) -> Option<&Connection> {
        match self {
            Self::Writing(connection) | Self::Reading(connection) => Some(connection),
            Self::Closed => None,
        }
    }
}

/// Appends closer together than this are a burst: the writer thread takes
/// them, in batches. One that comes after a quiet spell, as a model's tokens
/// do, is written at once on the thread that queued it, when nothing else is
/// writing: handing a lone update to another thread and being woken when it
/// is done cost more than its commit (a halted vCPU wakes slowly).
pub(super) const BURST_GAP: Duration = Duration::from_micros(100);

/// What the store's handles and its writer thread share: the queue of
/// commands, and the writer, taken by whichever thread writes.
pub(super) struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer thread.
    wake: Condvar,
    writer: Mutex<Writer>,
    /// Set while the checkpointer holds the log's write lock: a thread that
    /// queued an update then leaves it to the writer thread rather than wait.
    checkpoint_blocks_writes: AtomicBool,
}

struct Queue {
    commands: VecDeque<Command>,
    open: bool,
    /// When a command was last queued, or last written where it was queued.
    last_queued: Option<Instant>,
    /// The writer thread has been asked to look again.
    nudged: bool,
    /// The writer thread is waiting on [`Shared::wake`].
    sleeping: bool,
}

/// The only writing connection, and what writing needs to remember.
pub(super) struct Writer {
    path: PathBuf,
    connection: WriterConnection,
    held: Held,
    stamps: Stamps,
    /// Sessions deleted since the store opened: what is still queued for
    /// them (the tail of a cancelled turn) is dropped.
    gone: HashSet<String>,
    /// What `refused` says, without taking its lock for every batch.
    refusal: Option<String>,
    refused: Arc<Mutex<Option<String>>>,
    readers: Arc<Mutex<Readers>>,
    since_checkpoint: usize,
    /// Dropped when the writer thread ends, so that the checkpointer does.
    checkpoint: Option<mpsc::Sender<()>>,
    /// When the writer thread wakes next with nothing queued; `None`: only
    /// when something is.
    wakes_at: Option<Instant>,
}

impl Shared {
    pub(super) fn new(
        path: &Path,
        connection: WriterConnection,
        refused: Arc<Mutex<Option<String>>>,
        readers: Arc<Mutex<Readers>>,
        checkpoint: mpsc::Sender<()>,
    ) -> Self {
        let refusal = lock(&refused).clone();
        Self {
            queue: Mutex::new(Queue {
                commands: VecDeque::new(),
                open: true,
                last_queued: None,
                nudged: false,
                sleeping: false,
            }),
            wake: Condvar::new(),
            writer: Mutex::new(Writer {
                path: path.to_owned(),
                connection,
                held: Held::default(),
                stamps: Stamps::default(),
                gone: HashSet::new(),
                refusal,
                refused,
                readers,
                since_checkpoint: 0,
                checkpoint: Some(checkpoint),
                wakes_at: None,
            }),
            checkpoint_blocks_writes: AtomicBool::new(false),
        }
    }

    /// Queue `command`; handed back if the store is closed. An entry is
    /// written on this thread when it comes alone after a quiet spell
    /// ([`BURST_GAP`]) and the writer is free; the rest by the writer thread.
    pub(super) fn submit(&self, command: Command) -> Result<(), Box<Command>> {
        let now = Instant::now();
        // Only an entry: the commands around a turn (its start, title and
        // end, a flush) come with others close behind, which one batch of
        // the writer thread takes better than a commit each here.
        let here = matches!(command, Command::Append { .. });
        let alone = {
            let mut queue = lock(&self.queue);
            if !queue.open {
                return Err(Box::new(command));
            }
            let quiet = queue
                .last_queued
                .is_none_or(|last| now.duration_since(last) >= BURST_GAP);
            queue.last_queued = Some(now);
            queue.commands.push_back(command);
            quiet && queue.commands.len() == 1
        };
        if !(here && alone && self.write_here()) {
            self.nudge();
        }
        Ok(())
    }

    /// Write what is queued on this thread, if the writer is free, well and
    /// not held up by a checkpoint; false if it was left to the writer thread.
    fn write_here(&self) -> bool {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        // Read with the writer held: see [`Shared::hold_writes_off_threads`].
        if !writer.is_well() || self.checkpoint_blocks_writes.load(Ordering::SeqCst) {
            return false;
        }
        let (batch, _) = self.take_queued(true);
        writer.write(batch, false);
        let wake_thread = writer.wakes_too_late();
        drop(writer);
        let mut queue = lock(&self.queue);
        // The quiet spell counts from now: a caller that appends again at
        // once is in a burst, however long this commit took.
        queue.last_queued = Some(Instant::now());
        // Whatever was queued meanwhile, by threads that found the writer
        // taken, is the writer thread's.
        let more = !queue.commands.is_empty();
        drop(queue);
        if wake_thread || more {
            self.nudge();
        }
        true
    }

    /// Take the oldest commands queued, as many as one transaction holds;
    /// for a thread other than the writer's, only those that may run there.
    /// Also whether the store is closed with nothing left queued.
    fn take_queued(&self, elsewhere: bool) -> (Vec<Command>, bool) {
        let mut queue = lock(&self.queue);
        let most = if elsewhere {
            MAX_BATCH_ELSEWHERE
        } else {
            MAX_BATCH
        };
        let mut batch = Vec::with_capacity(queue.commands.len().min(most));
        while batch.len() < most
            && let Some(command) = queue
                .commands
                .pop_front_if(|command| !elsewhere || command.may_run_anywhere())
        {
            // An attach point is answered with the newest entry once its
            // batch is committed: anything queued after it must wait for the
            // next batch, or the client attached there would be replayed it
            // and sent it live too.
            let attaches = matches!(command, Command::AtNewest { .. });
            batch.push(command);
            if attaches {
                break;
            }
        }
        (batch, !queue.open && queue.commands.is_empty())
    }

    /// The entries of `session` (only those of kind `only`, if given) held
    /// from writes the disk refused, oldest first, numbered as they will be
    /// stored.
    pub(super) fn held_entries(&self, session: &str, without: Option<EntryKind>) -> Vec<Entry> {
        let writer = lock(&self.writer);
        let held = &writer.held.commands;
        let Some(connection) = writer.connection.reader().filter(|_| !held.is_empty()) else {
            return Vec::new();
        };
        match number_held(connection, held, &writer.gone) {
            Ok(numbered) => numbered
                .filter(|entry| {
                    entry.session == session && without.is_none_or(|kind| entry.kind != kind)
                })
                .map(|entry| Entry {
                    seq: entry.seq,
                    kind: entry.kind,
                    body: entry.body.into_owned(),
                })
                .collect(),
            Err(error) => {
                tracing::warn!(
                    store = %writer.path.display(),
                    "cannot number the entries held from refused writes, so reads leave them out: {}",
                    describe(&error)
                );
                Vec::new()
            }
        }
    }

    /// Whether the writer has a connection that writes: until it has, the
    /// checkpointer opens none (see [`Writer::reopen_for_writing`]).
    fn writes(&self) -> bool {
        matches!(lock(&self.writer).connection, WriterConnection::Writing(_))
    }

    /// Keep writes on the writer thread while `work` runs (a checkpoint that
    /// holds the log's write lock): once the flag is up, no other thread takes
    /// the writer, and one that had taken it has finished.
    pub(super) fn hold_writes_off_threads<T>(&self, work: impl FnOnce() -> T) -> T {
        self.checkpoint_blocks_writes.store(true, Ordering::SeqCst);
        drop(lock(&self.writer));
        let done = work();
        self.checkpoint_blocks_writes.store(false, Ordering::SeqCst);
        done
    }

    fn nudge(&self) {
        let mut queue = lock(&self.queue);
        queue.nudged = true;
        if queue.sleeping {
            self.wake.notify_one();
        }
    }

    /// Stop taking commands; the writer thread writes what is queued and ends.
    pub(super) fn close(&self) {
        lock(&self.queue).open = false;
        self.nudge();
    }

    /// Wait until something is queued, the writer thread is nudged, the
    /// store closes, or `until`.
    fn wait_for_work(&self, until: Option<Instant>) {
        let mut queue = lock(&self.queue);
        while queue.commands.is_empty() && queue.open && !queue.nudged {
            queue.sleeping = true;
            queue = match until {
                None => self
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(until) => {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    self.wake
                        .wait_timeout(queue, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        queue.sleeping = false;
        queue.nudged = false;
    }
}

/// The writer thread: wait for commands (or for held writes and update
/// times to come due), write them in one transaction, then run what waited
/// on them. Ends once the store is closed and everything queued is written.
pub(super) fn write_loop(shared: &Shared) {
    let _ending = EndOfTheWriter(shared);
    loop {
        let until = lock(&shared.writer).plan_wake();
        shared.wait_for_work(until);
        let mut writer = lock(&shared.writer);
        // Taken with the writer held: batches are written in queue order.
        let (batch, stopping) = shared.take_queued(false);
        writer.write(batch, stopping);
        if stopping {
            return;
        }
    }
}

/// Whatever way the writer thread ends, the store stops taking commands and
/// lets go of what is queued (waiters are released), and the checkpointer
/// ends after it.
struct EndOfTheWriter<'a>(&'a Shared);

impl Drop for EndOfTheWriter<'_> {
    fn drop(&mut self) {
        let stranded = {
            let mut queue = lock(&self.0.queue);
            queue.open = false;
            std::mem::take(&mut queue.commands)
        };
        drop(stranded);
        lock(&self.0.writer).checkpoint = None;
    }
}

impl Command {
    /// What waits on the command's write (an entry's, a turn end's), taken
    /// out: it runs once, whether the command is written, held or refused.
    pub(super) fn take_follow_up(&mut self) -> Option<AfterWrite> {
        match self {
            Self::Append { then, .. } | Self::TurnEnded { then, .. } => then.take(),
            _ => None,
        }
    }

    /// The history entry the command adds: its session, kind and body.
    fn entry(&self) -> Option<(&str, EntryKind, Cow<'_, str>)> {
        match self {
            Self::Append {
                session,
                kind,
                body,
                ..
            } => Some((session, *kind, Cow::Borrowed(body))),
            Self::TurnStarted {
                session, number, ..
            } => Some((
                session,
                EntryKind::TurnStarted,
                Cow::Owned(number.to_string()),
            )),
            Self::TurnEnded { session, body, .. } => {
                Some((session, EntryKind::TurnEnded, Cow::Borrowed(body)))
            }
            _ => None,
        }
    }

    /// The session whose history the command adds to, if it does.
    fn session(&self) -> Option<&str> {
        match self {
            Self::Append { session, .. }
            | Self::TurnStarted { session, .. }
            | Self::TurnEnded { session, .. } => Some(session),
            _ => None,
        }
    }

    /// Whether the command may be written, and what waits on it run, on any
    /// thread that queues a command: not a delete (a long statement), nor
    /// [`Command::AtNewest`], whose follow-up takes the session registry's
    /// lock and must not run where a caller may hold it.
    fn may_run_anywhere(&self) -> bool {
        !matches!(self, Self::Delete { .. } | Self::AtNewest { .. })
    }
}

impl Writer {
    /// Whether a batch can go straight to the disk: nothing held from a
    /// refused write, and a connection that writes.
    fn is_well(&self) -> bool {
        self.held.commands.is_empty() && matches!(self.connection, WriterConnection::Writing(_))
    }

    /// When the writer thread must look again with nothing queued: to retry
    /// what the disk refused, or to write an update time that came due.
    fn next_wake(&self) -> Option<Instant> {
        if self.is_well() {
            self.stamps.next_due()
        } else {
            Some(Instant::now() + RETRY_INTERVAL)
        }
    }

    fn plan_wake(&mut self) -> Option<Instant> {
        self.wakes_at = self.next_wake();
        self.wakes_at
    }

    /// Whether a batch written off the writer thread left work that the
    /// thread, asleep, would come to too late.
    fn wakes_too_late(&self) -> bool {
        match (self.next_wake(), self.wakes_at) {
            (Some(due), Some(planned)) => due < planned,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Write `queued` after anything held from a refused write, in one
    /// transaction, then run what waited on it. `stopping`: the last batch,
    /// which writes every pending update time.
    fn write(&mut self, queued: Vec<Command>, stopping: bool) {
        let retried = self.held.commands.len();
        let mut batch = std::mem::take(&mut self.held.commands);
        self.held.bytes = 0;
        batch.extend(queued);
        let flush = stopping
            || batch
                .iter()
                .any(|command| matches!(command, Command::Barrier(_)));
        self.reopen_for_writing(retried);
        if batch.is_empty() && !self.stamps.any_due(flush) {
            self.say_unstored_if(stopping);
            return;
        }
        let written = match &mut self.connection {
            WriterConnection::Writing(writer) => {
                write_batch(writer, &batch, &self.stamps, &self.gone, flush)
            }
            WriterConnection::Reading(_) | WriterConnection::Closed => Err(read_only_error()),
        };
        let outcome = self.outcome(written, &batch);
        let wrote = matches!(outcome, Outcome::Written(_));
        if let (Outcome::Written(deletes), WriterConnection::Writing(writer)) =
            (&outcome, &self.connection)
            && deletes.contains(&true)
        {
            scrub_log(writer, &self.path);
        }
        finish_batch(
            self.connection.reader(),
            batch,
            outcome,
            &mut self.held,
            &self.gone,
            &self.path,
        );
        if wrote && self.held.commands.is_empty() && self.refusal.take().is_some() {
            *lock(&self.refused) = None;
            tracing::info!(
                store = %self.path.display(),
                "the session store is writable again; {retried} held writes are stored"
            );
        }
        self.say_unstored_if(stopping);
    }

    /// A store that could only be read is opened for writing once the disk
    /// allows it.
    fn reopen_for_writing(&mut self, retried: usize) {
        // Asked of the files first, so that the readers are not closed
        // every second while the disk stays read-only.
        if matches!(self.connection, WriterConnection::Writing(_)) || !files::may_write(&self.path)
        {
            return;
        }
        // Every connection that read while the disk was read-only goes
        // first: one left open keeps the log's shared memory mapped
        // read-only, for the writer too (see `open_for_writing`).
        let immutable = {
            let mut pool = lock(&self.readers);
            pool.idle.clear();
            pool.generation += 1;
            pool.immutable
        };
        self.connection = WriterConnection::Closed;
        let writer = match open_writer(&self.path) {
            Ok(writer) => writer,
            Err(error) => {
                // A read still under way may have held the mapping; by the
                // next try it has ended, and its connection is not pooled.
                tracing::debug!(store = %self.path.display(), "the session store cannot be opened for writing yet: {error}");
                self.connection = open_reader(&self.path, immutable)
                    .map_or(WriterConnection::Closed, WriterConnection::Reading);
                return;
            }
        };
        self.connection = WriterConnection::Writing(writer);
        // The file is about to change under connections that took it for
        // immutable, opened meanwhile.
        let mut pool = lock(&self.readers);
        pool.idle.clear();
        pool.generation += 1;
        pool.immutable = false;
        drop(pool);
        // With writes held, the refusal stands until they are stored.
        // Cleared before it is said: whoever reads the line may prompt.
        if retried == 0 && self.refusal.take().is_some() {
            *lock(&self.refused) = None;
            tracing::info!(store = %self.path.display(), "the session store is writable again");
        }
    }

    /// What became of a batch, from what writing it returned.
    fn outcome(&mut self, written: rusqlite::Result<Written>, batch: &[Command]) -> Outcome {
        let path = self.path.display();
        match written {
            Ok(Written { deletes, stamped }) => {
                self.stamps.record(stamped, batch);
                self.gone
                    .extend(batch.iter().filter_map(|command| match command {
                        Command::Delete { session, .. } => Some(session.clone()),
                        _ => None,
                    }));
                self.held.overflowed = false;
                self.since_checkpoint += 1;
                if self.since_checkpoint >= CHECKPOINT_EVERY_BATCHES {
                    self.since_checkpoint = 0;
                    if let Some(checkpoint) = &self.checkpoint {
                        let _ = checkpoint.send(());
                    }
                }
                Outcome::Written(deletes)
            }
            Err(error) if batch.is_empty() => {
                // Only update times were due. They are not worth holding:
                // the end of each turn writes its session's again.
                self.stamps.forget_pending();
                tracing::debug!(store = %path, "could not write sessions' update times: {}", describe(&error));
                Outcome::Dropped(describe(&error))
            }
            Err(error) if is_the_disks_doing(&error) => {
                let problem = describe(&error);
                if self.refusal.as_ref() != Some(&problem) {
                    // Refused before it is said: whoever reads the line may prompt.
                    *lock(&self.refused) = Some(problem.clone());
                    self.refusal = Some(problem.clone());
                    tracing::error!(
                        "cannot write to the session store at {path}: {problem}; clients still get their updates, which are held in memory and written once it can be (free disk space or make it writable)"
                    );
                }
                Outcome::Held(problem)
            }
            Err(error) => {
                tracing::error!(
                    store = %path,
                    commands = batch.len(),
                    "could not write to the session store: {error}; clients still get their updates, but this history is not stored"
                );
                Outcome::Dropped(describe(&error))
            }
        }
    }

    fn say_unstored_if(&self, stopping: bool) {
        if stopping && !self.held.commands.is_empty() {
            tracing::error!(
                store = %self.path.display(),
                "{} writes were never stored: the disk still refuses them",
                self.held.commands.len()
            );
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
pub(super) fn checkpoint_loop(
    path: &Path,
    mut connection: Option<Connection>,
    nudges: &mpsc::Receiver<()>,
    shared: &Shared,
    identity: Option<(u64, u64)>,
) {
    let mut told = false;
    loop {
        let last = matches!(
            nudges.recv_timeout(CHECKPOINT_INTERVAL),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        // Said once, loudly: nothing fails, and everything may be lost.
        if !told
            && let Some(opened) = identity
            && let Err(problem) = super::files::still_there(path, opened)
        {
            told = true;
            tracing::error!(store = %path.display(), "{problem}");
        }
        // Opened only once the writer writes: opened before, it could join
        // the shared memory the readers mapped read-only, and keep that
        // mapping alive for the writer too.
        if connection.is_none() && shared.writes() {
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
            Ok(done) if !last && done.log_pages > MAX_LOG_PAGES => {
                let restarted =
                    shared.hold_writes_off_threads(|| checkpoint(connection, "RESTART"));
                match restarted {
                    Ok(done) if done.blocked => {
                        tracing::debug!(store = %path.display(), "the session store's log could not be started over yet: a reader still needs it")
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(store = %path.display(), "could not shorten the session store's log: {}", describe(&error))
                    }
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

/// Empty the write-ahead log after a delete, before the delete is answered:
/// the log still holds the pages the deleted history was written in, and a
/// deleted session is gone from disk. (The database's own copies were
/// overwritten with zeros as they were freed: `secure_delete`.) It holds
/// writes back while the log is copied; deletes are rare.
fn scrub_log(connection: &Connection, path: &Path) {
    // SQLite does not wait for a checkpoint already running (the
    // checkpointer's): it reports itself blocked. Those are short.
    for _ in 0..SCRUB_ATTEMPTS {
        match checkpoint(connection, "TRUNCATE") {
            Ok(done) if done.blocked => std::thread::sleep(SCRUB_RETRY),
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(store = %path.display(), "a deleted session's history may stay in the session store's log until the server stops (its last checkpoint empties the log): {}", describe(&error));
                return;
            }
        }
    }
    tracing::warn!(store = %path.display(), "a deleted session's history may stay in the session store's log until the server stops (its last checkpoint empties the log): another connection kept it busy");
}

/// How often, and how far apart, emptying the log after a delete is tried
/// while a checkpoint or a reader holds it: 100 ms in all, at most, of
/// writes held back.
const SCRUB_ATTEMPTS: usize = 50;
const SCRUB_RETRY: Duration = Duration::from_millis(2);

/// What a checkpoint did.
struct Checkpointed {
    /// Another checkpoint, or a reader, kept it from finishing.
    blocked: bool,
    /// The pages in the log, as SQLite reports them.
    log_pages: i64,
}

/// Run a checkpoint; the pages in the log, as SQLite reports them.
fn checkpoint(connection: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok(Checkpointed {
            blocked: row.get::<_, i64>(0)? != 0,
            log_pages: row.get(1)?,
        })
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
                Command::Set { value, .. } => value.len(),
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
    gone: &HashSet<String>,
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
    let written = write_commands(connection, batch, stamps, gone, flush).and_then(|written| {
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
    gone: &HashSet<String>,
    flush: bool,
) -> rusqlite::Result<Written> {
    // Each session touched, its newest time, and whether that must be written
    // now. Times left for later come first, so a delete drops them too.
    let mut touched: Vec<Touched> = stamps
        .pending()
        .map(|(session, at_us)| Touched::new(session, at_us, false))
        .collect();
    let mut deletes = Vec::new();
    // Deleted earlier in this batch: `gone` learns of them only once the
    // batch is committed.
    let mut deleted_here: Vec<&str> = Vec::new();
    for command in batch {
        if command
            .session()
            .is_some_and(|session| gone.contains(session) || deleted_here.contains(&session))
        {
            continue;
        }
        if let Command::Delete { session, .. } = command {
            deletes.push(delete_session(transaction, session)?);
            touched.retain(|touched| touched.session != session);
            deleted_here.push(session);
        } else if let Some(touch) = write_command(transaction, command)? {
            touch.add_to(&mut touched);
        }
    }
    let stamped = stamp_sessions(transaction, touched, stamps, flush)?;
    Ok(Written { deletes, stamped })
}

/// Write one command other than a delete. Answers the session it touched,
/// when, and whether its time must be written now (a turn's start and end
/// show in `session/list` at once; they write it with the row they change).
fn write_command<'a>(
    transaction: &Connection,
    command: &'a Command,
) -> rusqlite::Result<Option<Touched<'a>>> {
    Ok(match command {
        Command::CreateSession { row, real_cwd } => {
            transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO sessions (id, cwd, title, model, created_us, updated_us, turns, running, real_cwd)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
                )?
                .execute(params![
                    row.id,
                    row.cwd.to_string_lossy(),
                    row.title,
                    row.model,
                    row.created_us,
                    row.updated_us,
                    row.turns,
                    real_cwd
                ])?;
            None
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
            Some(Touched::new(session, *at_us, false))
        }
        Command::Set {
            session,
            setting,
            value,
        } => {
            transaction
                .prepare_cached(setting.update())?
                .execute(params![session, value])?;
            None
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
                .prepare_cached(
                    "UPDATE sessions SET running = 1, updated_us = max(updated_us, ?2) WHERE id = ?1",
                )?
                .execute(params![session, at_us])?;
            Some(Touched::written(session, *at_us))
        }
        Command::TurnEnded {
            session,
            body,
            at_us,
            ..
        } => {
            transaction.prepare_cached(INSERT_ENTRY)?.execute(params![
                session,
                EntryKind::TurnEnded.code(),
                body
            ])?;
            transaction
                .prepare_cached(
                    "UPDATE sessions SET running = 0, turns = turns + 1, \
                     updated_us = max(updated_us, ?2) WHERE id = ?1",
                )?
                .execute(params![session, at_us])?;
            Some(Touched::written(session, *at_us))
        }
        Command::Delete { .. } | Command::Barrier(_) | Command::AtNewest { .. } => None,
    })
}

/// Delete a session and its history. True if it was there.
fn delete_session(transaction: &Connection, session: &str) -> rusqlite::Result<bool> {
    transaction
        .prepare_cached("DELETE FROM entries WHERE session_id = ?1")?
        .execute([session])?;
    let deleted = transaction
        .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([session])?;
    Ok(deleted > 0)
}

/// Write the times of the sessions touched that are due now (or all, on a
/// flush); the rest wait. Answers every session with whether it was written.
fn stamp_sessions(
    transaction: &Connection,
    touched: Vec<Touched>,
    stamps: &Stamps,
    flush: bool,
) -> rusqlite::Result<Vec<(String, i64, bool)>> {
    let mut stamped = Vec::with_capacity(touched.len());
    for Touched {
        session,
        latest_us: at_us,
        now,
        written_us,
    } in touched
    {
        let now = now || flush || stamps.due(session);
        if now && written_us < at_us {
            transaction
                .prepare_cached(
                    "UPDATE sessions SET updated_us = max(updated_us, ?2) WHERE id = ?1",
                )?
                .execute(params![session, at_us])?;
        }
        stamped.push((session.to_owned(), at_us, now));
    }
    Ok(stamped)
}

// Whether the session is still stored is known from `gone`: looking it up in
// `sessions` with every entry cost a paced update a fifth of its commit.
const INSERT_ENTRY: &str = "INSERT INTO entries (session_id, kind, body) VALUES (?1, ?2, ?3)";

/// A session a transaction touched, and what its `updated_us` should be.
struct Touched<'a> {
    session: &'a str,
    /// The time of its newest entry.
    latest_us: i64,
    /// Its time must be written with this transaction.
    now: bool,
    /// The newest time a statement of the transaction wrote already.
    written_us: i64,
}

impl<'a> Touched<'a> {
    fn new(session: &'a str, at_us: i64, now: bool) -> Self {
        Self {
            session,
            latest_us: at_us,
            now,
            written_us: i64::MIN,
        }
    }

    /// Touched by a statement that wrote its time, `at_us`, itself.
    fn written(session: &'a str, at_us: i64) -> Self {
        Self {
            written_us: at_us,
            ..Self::new(session, at_us, true)
        }
    }

    /// Count this touch in `touched`, one entry per session.
    fn add_to(self, touched: &mut Vec<Touched<'a>>) {
        match touched.iter_mut().find(|seen| seen.session == self.session) {
            Some(seen) => {
                seen.latest_us = seen.latest_us.max(self.latest_us);
                seen.now |= self.now;
                seen.written_us = seen.written_us.max(self.written_us);
            }
            None => touched.push(self),
        }
    }
}

/// How stale a session's `updated_us` may get while its turn streams. It
/// only orders `session/list`, and rewriting that row and its two indexes
/// with every update more than doubled the pages each small commit wrote.
/// The start and end of a turn, and a flush, always write it.
pub(super) const STAMP_EVERY: Duration = Duration::from_secs(1);

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

    /// When the first time left for later must be written: an instant
    /// fixed by when it was last written, so that asking twice gives the same.
    fn next_due(&self) -> Option<Instant> {
        self.0
            .values()
            .filter(|stamp| stamp.pending.is_some())
            .map(|stamp| stamp.written + STAMP_EVERY)
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
    connection: Option<&Connection>,
    batch: Vec<Command>,
    outcome: Outcome,
    held: &mut Held,
    gone: &HashSet<String>,
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
            Command::AtNewest { session, then } => {
                let newest = newest_entry(connection, &session, &held.commands, gone);
                follow_up(|| then(newest));
            }
            mut command @ (Command::Append { .. }
            | Command::TurnEnded { .. }
            | Command::CreateSession { .. }
            | Command::Set { .. }
            | Command::TurnStarted { .. }) => {
                if let Some(then) = command.take_follow_up() {
                    follow_up(then);
                }
                if holding {
                    held.hold(command, path);
                }
            }
        }
    }
}

/// Run what waited on a write. One that panics is logged and the rest still
/// run: a panic must not stop the writer, nor cut short a batch's follow-ups
/// on the thread that wrote it.
fn follow_up(work: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        tracing::error!(
            "something that waited on a write to the session store panicked; the store goes on"
        );
    }
}

/// The newest entry of a session, stored or `held` from a refused write
/// (numbered as it will be stored): 0 if it has none, `None` if the session
/// is neither stored nor held to be. A read that fails counts every entry.
fn newest_entry(
    connection: Option<&Connection>,
    session: &str,
    held: &[Command],
    gone: &HashSet<String>,
) -> Option<i64> {
    let newest = connection
        .ok_or_else(read_only_error)
        .and_then(|connection| {
            let stored = connection
                .prepare_cached(
                    "SELECT (SELECT coalesce(max(seq), 0) FROM entries WHERE session_id = ?1)
                 FROM sessions WHERE id = ?1",
                )?
                .query_row([session], |row| row.get(0))
                .optional()?;
            if held.is_empty() {
                return Ok(stored);
            }
            let created = held
                .iter()
                .any(|command| matches!(command, Command::CreateSession { row, .. } if row.id == session));
            let held = number_held(connection, held, gone)?
                .filter(|entry| entry.session == session)
                .map(|entry| entry.seq)
                .last();
            Ok(held.or(stored).or(created.then_some(0)))
        });
    match newest {
        Ok(newest) => newest,
        Err(error) => {
            tracing::warn!(
                "cannot read the newest entry of session {session}: {}",
                describe(&error)
            );
            Some(i64::MAX)
        }
    }
}

/// An entry held from a refused write, numbered as it will be stored.
struct HeldEntry<'a> {
    session: &'a str,
    seq: i64,
    kind: EntryKind,
    body: Cow<'a, str>,
}

/// The entries `held` adds, oldest first: held writes go first in the next
/// batch, in order, and SQLite numbers each entry one past the largest in
/// the file.
fn number_held<'a>(
    connection: &Connection,
    held: &'a [Command],
    gone: &'a HashSet<String>,
) -> rusqlite::Result<impl Iterator<Item = HeldEntry<'a>>> {
    let largest: i64 = connection
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM entries")?
        .query_row([], |row| row.get(0))?;
    Ok(held
        .iter()
        .filter_map(Command::entry)
        // Those of a deleted session are not written (see `write_commands`).
        .filter(|(session, ..)| !gone.contains(*session))
        .zip(1..)
        .map(move |((session, kind, body), n)| HeldEntry {
            session,
            seq: largest + n,
            kind,
            body,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(session: &str, body: String) -> Command {
        Command::Append {
            session: session.to_owned(),
            kind: EntryKind::Update,
            body,
            at_us: 1,
            then: None,
        }
    }

    fn stored(path: &Path, session: &str) -> Vec<String> {
        let reader = Connection::open(path).unwrap();
        let mut statement = reader
            .prepare("SELECT body FROM entries WHERE session_id = ?1 ORDER BY seq")
            .unwrap();
        statement
            .query_map([session], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_delete_the_disk_refused_leaves_the_session_to_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("punie.db");
        let connection = open_writer(&path).unwrap();
        for id in ["x", "y"] {
            connection
                .execute(
                    "INSERT INTO sessions (id, cwd, model, created_us, updated_us) \
                     VALUES (?1, '/w', 'test', 1, 1)",
                    [id],
                )
                .unwrap();
        }
        // The database may not grow: a batch that needs a page fails whole.
        let pages: i64 = connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        connection
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let readers = Arc::new(Mutex::new(Readers {
            idle: Vec::new(),
            immutable: false,
            generation: 0,
        }));
        let (checkpoint, _nudges) = mpsc::channel();
        let shared = Shared::new(
            &path,
            WriterConnection::Writing(connection),
            Arc::default(),
            readers,
            checkpoint,
        );
        let mut writer = lock(&shared.writer);
        let (done, deleted) = tokio::sync::oneshot::channel();
        let delete = Command::Delete {
            session: "x".to_owned(),
            done,
        };
        writer.write(vec![delete, append("y", "y".repeat(64 * 1024))], false);
        assert!(
            deleted.blocking_recv().unwrap().is_err(),
            "the delete was refused"
        );
        assert!(writer.gone.is_empty(), "{:?}", writer.gone);

        // Once the disk takes writes again, x's next entry is stored.
        let WriterConnection::Writing(connection) = &writer.connection else {
            panic!("the writer still writes");
        };
        connection
            .pragma_update(None, "max_page_count", 1 << 30)
            .unwrap();
        writer.write(vec![append("x", "later".to_owned())], false);
        assert_eq!(stored(&path, "x"), ["later"]);
        assert_eq!(
            stored(&path, "y").len(),
            1,
            "the held entry was written too"
        );
    }

    #[test]
    fn entries_held_from_refused_writes_are_read_under_the_numbers_they_are_stored_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("punie.db");
        let connection = open_writer(&path).unwrap();
        let shared = Shared::new(
            &path,
            WriterConnection::Writing(connection),
            Arc::default(),
            Arc::new(Mutex::new(Readers {
                idle: Vec::new(),
                immutable: false,
                generation: 0,
            })),
            mpsc::channel().0,
        );
        let mut writer = lock(&shared.writer);
        writer.write(vec![append("x", "stored".to_owned())], false);
        let WriterConnection::Writing(connection) = &writer.connection else {
            panic!("the writer writes");
        };
        let pages: i64 = connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        connection
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let turn = |session: &str| Command::TurnStarted {
            session: session.to_owned(),
            number: 2,
            at_us: 1,
        };
        writer.write(
            vec![
                append("y", "y".repeat(64 * 1024)),
                turn("x"),
                append("x", "held".to_owned()),
            ],
            false,
        );
        assert_eq!(writer.held.commands.len(), 3, "the disk refused them");
        drop(writer);

        let held = shared.held_entries("x", None);
        let read: Vec<_> = held
            .iter()
            .map(|entry| (entry.seq, entry.kind, entry.body.as_str()))
            .collect();
        assert_eq!(
            read,
            [
                (3, EntryKind::TurnStarted, "2"),
                (4, EntryKind::Update, "held")
            ]
        );
        let without_updates = shared.held_entries("x", Some(EntryKind::Update));
        assert_eq!(without_updates.len(), 1);
        assert_eq!(without_updates[0].kind, EntryKind::TurnStarted);

        let mut writer = lock(&shared.writer);
        let WriterConnection::Writing(connection) = &writer.connection else {
            panic!("the writer writes");
        };
        connection
            .pragma_update(None, "max_page_count", 1 << 30)
            .unwrap();
        writer.write(Vec::new(), false);
        assert!(
            writer.held.commands.is_empty(),
            "written once there is room"
        );
        drop(writer);
        let stored: Vec<(i64, String)> = Connection::open(&path)
            .unwrap()
            .prepare("SELECT seq, body FROM entries WHERE session_id = 'x' ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            stored,
            [
                (1, "stored".to_owned()),
                (3, "2".to_owned()),
                (4, "held".to_owned())
            ]
        );
        assert!(shared.held_entries("x", None).is_empty());
    }
}
