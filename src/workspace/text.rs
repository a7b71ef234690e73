//! Text files opened, read and written without ever waiting on something
//! that is not a file.
//!
//! Opening a named pipe waits for the other end, and a device may never
//! stop giving bytes: a tool that did either would hold its session's turn
//! for ever. So a path is opened only when it names a regular file, without
//! blocking, and the file opened is checked again, since something else may
//! have taken the path in between. Reading goes one buffer at a time, only
//! as far as the lines asked for and a byte budget allow, so a huge file
//! costs no more than the part of it wanted, and a reader can be stopped
//! between buffers.

use std::fs::{File, FileType, Metadata};
use std::io::{BufRead, ErrorKind, Write as _};
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Bytes read at a time: also how far a reader goes on after it was told
/// to stop.
pub(super) const READ_BUFFER: usize = 64 * 1024;

/// Why a path was not opened: something other than a regular file is there.
#[derive(Debug, thiserror::Error)]
#[error("is {0}, not a file: only regular files can be read or written")]
pub struct NotAFile(&'static str);

impl NotAFile {
    /// The I/O error that carries this refusal.
    fn error(file_type: FileType) -> std::io::Error {
        std::io::Error::new(ErrorKind::InvalidInput, Self(named(file_type)))
    }
}

/// What a file that is not a regular one is, as a person names it.
fn named(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "something other than a regular file"
    }
}

/// `metadata` itself, when it is a regular file's.
pub(super) fn regular(metadata: Metadata) -> std::io::Result<Metadata> {
    if metadata.is_file() {
        Ok(metadata)
    } else {
        Err(NotAFile::error(metadata.file_type()))
    }
}

/// Flags every open takes: never wait (on a pipe's other end, say), never
/// become the process's terminal, never pass to a child.
fn flags() -> OFlags {
    OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

/// The regular file at `path`, open for reading.
pub(super) fn open_to_read(path: &Path) -> std::io::Result<File> {
    // Checked before opening too: opening a device may do something.
    regular(std::fs::metadata(path)?)?;
    let file = File::from(rustix::fs::open(
        path,
        OFlags::RDONLY | flags(),
        Mode::empty(),
    )?);
    regular(file.metadata()?)?;
    Ok(file)
}

/// Replace the regular file at `path` (created if missing) with `content`.
pub(super) fn write(path: &Path, content: &[u8]) -> std::io::Result<()> {
    // Checked before opening too: opening a device may do something.
    match std::fs::metadata(path).and_then(regular) {
        Err(error) if error.kind() != ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let opened = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | flags(),
        Mode::from_raw_mode(0o666),
    );
    let mut file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NXIO) => {
            // A named pipe nobody reads, put there since the check above.
            regular(std::fs::metadata(path)?)?;
            return Err(rustix::io::Errno::NXIO.into());
        }
        Err(errno) => return Err(errno.into()),
    };
    regular(file.metadata()?)?;
    // Truncated only once it is known to be a regular file.
    file.set_len(0)?;
    file.write_all(content)
}

/// Lines of a text, as far as a read of them went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    pub text: String,
    /// The number (1-based) of the line `text` starts with.
    pub first: usize,
    pub end: End,
}

/// Why an [`Excerpt`] ends where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The text ended; it has this many lines in all.
    TextEnd { lines: usize },
    /// As many lines as were asked for were read.
    Limit,
    /// The next line, `next`, would have gone past the byte budget; the
    /// excerpt ends with the line before it.
    Budget { next: usize },
    /// The first line alone is longer than the budget: the excerpt is its
    /// beginning, cut at a character's boundary.
    LongLine,
}

impl Excerpt {
    /// This excerpt, read from a text that started at line `first` of a
    /// longer one, numbered as the lines of that one.
    pub fn numbered_from(self, first: usize) -> Self {
        let shift = first.saturating_sub(1);
        let end = match self.end {
            End::TextEnd { lines } => End::TextEnd {
                lines: lines + shift,
            },
            End::Budget { next } => End::Budget { next: next + shift },
            other => other,
        };
        Self {
            first: self.first + shift,
            end,
            ..self
        }
    }
}

/// Why lines could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// What was read is not UTF-8.
    NotText,
    /// `stopped` said so.
    Stopped,
}

/// Lines `first..` (1-based; 0 reads as 1) of what `reader` gives, at most
/// `limit` of them and `budget` bytes, with their line endings. Lines before
/// `first` are skipped a buffer at a time, never held; `stopped` is asked
/// before each buffer is read.
pub fn excerpt(
    mut reader: impl BufRead,
    first: usize,
    limit: Option<usize>,
    budget: usize,
    stopped: impl Fn() -> bool,
) -> Result<Excerpt, ReadError> {
    let first = first.max(1);
    // The line the next byte belongs to, and whether it is that line's first.
    let mut line = 1;
    let mut at_line_start = true;
    let mut taken: Vec<u8> = Vec::new();
    // Where in `taken` the line being taken starts.
    let mut line_start = 0;
    let end = 'reading: loop {
        if stopped() {
            return Err(ReadError::Stopped);
        }
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(ReadError::Io(error)),
        };
        if buffer.is_empty() {
            let lines = if at_line_start { line - 1 } else { line };
            break End::TextEnd { lines };
        }
        let mut used = 0;
        while used < buffer.len() {
            let rest = &buffer[used..];
            let newline = rest.iter().position(|&byte| byte == b'\n');
            let piece = &rest[..newline.map_or(rest.len(), |at| at + 1)];
            if line >= first {
                if at_line_start {
                    if limit.is_some_and(|limit| line - first >= limit) {
                        break 'reading End::Limit;
                    }
                    line_start = taken.len();
                }
                if taken.len() + piece.len() > budget {
                    if line_start > 0 {
                        taken.truncate(line_start);
                        break 'reading End::Budget { next: line };
                    }
                    taken.extend_from_slice(&piece[..budget - taken.len()]);
                    break 'reading End::LongLine;
                }
                taken.extend_from_slice(piece);
            }
            used += piece.len();
            at_line_start = newline.is_some();
            if at_line_start {
                line += 1;
            }
        }
        reader.consume(used);
    };
    let text = match String::from_utf8(taken) {
        Ok(text) => text,
        // A long line cut inside a character: the character goes.
        Err(error) if end == End::LongLine && error.utf8_error().error_len().is_none() => {
            let whole = error.utf8_error().valid_up_to();
            let mut bytes = error.into_bytes();
            bytes.truncate(whole);
            String::from_utf8(bytes).map_err(|_| ReadError::NotText)?
        }
        Err(_) => return Err(ReadError::NotText),
    };
    Ok(Excerpt { text, first, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, first: usize, limit: Option<usize>, budget: usize) -> Excerpt {
        excerpt(text.as_bytes(), first, limit, budget, || false).unwrap()
    }

    #[test]
    fn lines_are_selected_by_first_line_and_limit() {
        let text = "one\ntwo\nthree\nfour";
        let lines = |first, limit| read(text, first, limit, usize::MAX);
        assert_eq!(lines(2, Some(2)).text, "two\nthree\n");
        assert_eq!(lines(2, Some(2)).end, End::Limit);
        assert_eq!(lines(4, None).text, "four");
        assert_eq!(lines(1, Some(1)).text, "one\n");
        assert_eq!(lines(1, None).end, End::TextEnd { lines: 4 });
        assert_eq!(lines(9, None).text, "");
        assert_eq!(lines(9, None).end, End::TextEnd { lines: 4 });
        assert_eq!(read("a\n", 1, None, 10).end, End::TextEnd { lines: 1 });
        assert_eq!(read("", 1, None, 10).end, End::TextEnd { lines: 0 });
    }

    #[test]
    fn a_read_stops_at_the_budget_after_a_whole_line_or_inside_a_first_long_one() {
        let text = "12345\n12345\n12345\n";
        let cut = read(text, 1, None, 14);
        assert_eq!(cut.text, "12345\n12345\n");
        assert_eq!(cut.end, End::Budget { next: 3 });
        let exact = read(text, 2, None, 12);
        assert_eq!(exact.end, End::TextEnd { lines: 3 });
        let long = read("ééééé\nshort\n", 1, None, 5);
        assert_eq!(long.text, "éé", "a character cut across is left out");
        assert_eq!(long.end, End::LongLine);
    }

    #[test]
    fn reading_goes_a_buffer_at_a_time_and_stops_when_told() {
        let text = "x\n".repeat(READ_BUFFER);
        let reader = std::io::BufReader::with_capacity(1024, text.as_bytes());
        let asked = std::cell::Cell::new(0);
        let stopped = excerpt(reader, 1, None, usize::MAX, || {
            asked.set(asked.get() + 1);
            asked.get() > 3
        });
        assert!(matches!(stopped, Err(ReadError::Stopped)));
        assert_eq!(asked.get(), 4);
    }

    #[test]
    fn what_is_not_utf8_is_not_text() {
        let bytes: &[u8] = b"ok\n\xff\n";
        assert!(matches!(
            excerpt(bytes, 1, None, usize::MAX, || false),
            Err(ReadError::NotText)
        ));
        let first_line = excerpt(bytes, 1, Some(1), usize::MAX, || false).unwrap();
        assert_eq!(first_line.text, "ok\n", "only what is read must be text");
    }

    #[test]
    fn an_excerpt_of_a_part_is_numbered_as_the_whole() {
        let part = read("a\nb\nc\n", 1, None, 4).numbered_from(10);
        assert_eq!(part.first, 10);
        assert_eq!(part.end, End::Budget { next: 12 });
    }

    #[test]
    fn a_named_pipe_is_refused_without_waiting_for_a_writer_or_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for error in [
            open_to_read(&fifo).unwrap_err(),
            write(&fifo, b"x").unwrap_err(),
        ] {
            assert_eq!(
                error.to_string(),
                "is a named pipe, not a file: only regular files can be read or written"
            );
        }
        let error = open_to_read(dir.path()).unwrap_err();
        assert!(error.to_string().starts_with("is a directory"), "{error}");
    }
}
