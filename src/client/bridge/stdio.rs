//! The bridge's ends of stdin and stdout: lines in, lines out, and nothing
//! else.
//!
//! IDEs start the bridge with pipes, and a pipe is read and written on the
//! bridge's own runtime thread, without waking another thread per message:
//! that is most of the latency a proxy adds. Anything else (a terminal, a
//! regular file, a socket) gets a thread of its own doing blocking I/O, since
//! making those non-blocking would change them for whoever shares them. This
//! module must not look inside the lines: that is the bridge's business.

use std::io::{BufRead as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// Start reading stdin, one message per line, into `lines`. The sender is
/// dropped when stdin ends.
pub fn spawn_stdin_reader(lines: mpsc::Sender<String>) {
    match stdin_pipe() {
        Some(receiver) => {
            tokio::spawn(read_pipe(receiver, lines));
        }
        None => {
            std::thread::spawn(move || read_blocking(lines));
        }
    }
}

/// Start writing the lines sent to `lines` to stdout, flushing whenever no
/// more are waiting.
pub fn spawn_stdout_writer(lines: mpsc::Receiver<String>) -> StdoutWriter {
    match stdout_pipe() {
        Some(sender) => StdoutWriter::Task(tokio::spawn(write_pipe(sender, lines))),
        None => StdoutWriter::Thread(std::thread::spawn(move || write_blocking(lines))),
    }
}

/// The running stdout writer, to be waited for once its channel is closed.
/// It stops at the first write that fails, or when the reader of a pipe goes
/// away, and so closes its channel.
pub enum StdoutWriter {
    Task(tokio::task::JoinHandle<bool>),
    Thread(std::thread::JoinHandle<bool>),
}

impl StdoutWriter {
    /// Wait until every line sent has been written and flushed; whether
    /// they all were.
    pub async fn finish(self) -> bool {
        match self {
            Self::Task(task) => task.await.unwrap_or(false),
            Self::Thread(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .is_ok_and(|joined| joined.unwrap_or(false)),
        }
    }
}

/// stdin as a non-blocking pipe, when it is one.
fn stdin_pipe() -> Option<pipe::Receiver> {
    let fd = own_copy(std::io::stdin().as_fd())?;
    pipe::Receiver::from_owned_fd(fd).ok()
}

/// stdout as a non-blocking pipe, when it is one of its own. When stderr is
/// the same pipe (`2>&1`), it stays blocking: a non-blocking stderr would drop
/// log lines whenever the pipe is full.
fn stdout_pipe() -> Option<pipe::Sender> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    if same_file(stdout.as_fd(), stderr.as_fd()) {
        return None;
    }
    let fd = own_copy(stdout.as_fd())?;
    pipe::Sender::from_owned_fd(fd).ok()
}

/// A duplicate of a standard stream's descriptor: the stream itself stays
/// open for the rest of the process.
fn own_copy(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    fd.try_clone_to_owned().ok()
}

fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let identity = |fd: BorrowedFd<'_>| {
        let metadata = std::fs::File::from(own_copy(fd)?).metadata().ok()?;
        Some((metadata.dev(), metadata.ino()))
    };
    match (identity(a), identity(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

async fn read_pipe(receiver: pipe::Receiver, lines: mpsc::Sender<String>) {
    let mut reader = BufReader::new(receiver);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::error!("cannot read stdin: {error}");
                break;
            }
        }
        if let Some(line) = into_line(&mut buffer)
            && lines.send(line).await.is_err()
        {
            break;
        }
    }
    // Whoever shares the pipe gets it back as it was given.
    let _ = reader.into_inner().into_blocking_fd();
}

/// Read stdin on a thread of its own: a blocked read must not hold up the
/// bridge.
fn read_blocking(lines: mpsc::Sender<String>) {
    let mut stdin = std::io::stdin().lock();
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match stdin.read_until(b'\n', &mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::error!("cannot read stdin: {error}");
                return;
            }
        }
        if let Some(line) = into_line(&mut buffer)
            && lines.blocking_send(line).is_err()
        {
            return;
        }
    }
}

/// One line read from stdin as a message: without its `\n` (and a `\r`
/// before it), `None` when blank. Invalid UTF-8 is replaced, with a warning,
/// so the server can answer it.
fn into_line(buffer: &mut Vec<u8>) -> Option<String> {
    while matches!(buffer.last(), Some(b'\n' | b'\r')) {
        buffer.pop();
    }
    if buffer.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(match String::from_utf8(std::mem::take(buffer)) {
        Ok(line) => line,
        Err(error) => {
            tracing::warn!(
                "stdin line is not valid UTF-8; forwarding it with replacement characters"
            );
            String::from_utf8_lossy(error.as_bytes()).into_owned()
        }
    })
}

async fn write_pipe(sender: pipe::Sender, mut lines: mpsc::Receiver<String>) -> bool {
    let mut out = BufWriter::new(sender);
    loop {
        // A reader that goes away while nothing is being written is noticed
        // at once, not at the next message, which may be long in coming.
        // Nothing was lost then: the writer stops, and the bridge, finding
        // its channel closed, judges whether the IDE is gone or only its
        // reading.
        let line = tokio::select! {
            biased;
            line = lines.recv() => line,
            ready = out.get_ref().ready(tokio::io::Interest::ERROR) => {
                if ready.is_ok_and(|ready| !ready.is_error()) {
                    continue;
                }
                return true;
            }
        };
        let Some(line) = line else {
            break;
        };
        let mut written = write_line(&mut out, &line).await;
        if written.is_ok() && lines.is_empty() {
            written = out.flush().await;
        }
        if let Err(error) = written {
            tracing::error!("cannot write to stdout: {error}");
            return false;
        }
    }
    let flushed = out.flush().await;
    let _ = out.into_inner().into_blocking_fd();
    flushed.is_ok()
}

async fn write_line(out: &mut BufWriter<pipe::Sender>, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await
}

/// Write stdout on a thread of its own. Works for a pipe, a file or a
/// terminal alike.
fn write_blocking(mut lines: mpsc::Receiver<String>) -> bool {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(line) = lines.blocking_recv() {
        let mut written = out
            .write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"));
        if written.is_ok() && lines.is_empty() {
            written = out.flush();
        }
        if let Err(error) = written {
            tracing::error!("cannot write to stdout: {error}");
            return false;
        }
    }
    out.flush().is_ok()
}
