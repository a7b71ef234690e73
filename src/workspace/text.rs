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
//! between buffers. A file is replaced by a new one written beside it, so a
//! write that fails (a full disk) leaves it as it was.

use std::fs::{File, FileType, Metadata};
use std::io::{BufRead, ErrorKind, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
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
/// become the process's terminal, never pass to a child, and never follow
/// a symlink — every path here was resolved inside the workspace already,
/// so a link found there now was swapped in since, and may lead out.
fn flags() -> OFlags {
    OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NOFOLLOW
}

/// The regular file at `path`, a path the workspace resolved, open for
/// reading: for a reader other than the workspace's own (a decoder, say).
pub fn open_to_read(path: &Path) -> std::io::Result<File> {
    open_regular(path, flags())
}

/// The regular file at `path`, open for reading without waiting, as
/// [`open_to_read`] opens one, but following a symlink: for a file a person
/// named outside any workspace (their own instructions, often a link; a
/// model script).
pub fn open_named_file(path: &Path) -> std::io::Result<File> {
    open_regular(path, flags() - OFlags::NOFOLLOW)
}

fn open_regular(path: &Path, flags: OFlags) -> std::io::Result<File> {
    // Checked before opening too: opening a device may do something.
    regular(std::fs::metadata(path)?)?;
    let file = File::from(rustix::fs::open(
        path,
        OFlags::RDONLY | flags,
        Mode::empty(),
    )?);
    // Something else may have taken the path since it was looked at.
    regular(file.metadata()?)?;
    Ok(file)
}

/// Replace the regular file at `path` (created if missing) with `content`.
///
/// The new content is written to a file beside it, which then takes its
/// place: a write that fails part way (a full disk) leaves the file as it
/// was. A file with other hard links is written in place, as replacing it
/// would part it from its other names; so is one whose owner the new file
/// could not be given, and one in a directory where no file can be created
/// (a file the user may write, in a directory they may not).
pub(super) fn write(path: &Path, content: &[u8]) -> std::io::Result<()> {
    // Checked before anything is written: a directory or a device is refused.
    let existing = match std::fs::metadata(path).and_then(regular) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    if existing.is_some() {
        // Replacing it needs only the directory's leave: a file the user
        // made read-only is refused, as writing it in place would be.
        rustix::fs::access(path, rustix::fs::Access::WRITE_OK)?;
    }
    match existing {
        Some(metadata) if metadata.nlink() > 1 => {
            write_in_place(path, content, "as it has other hard links")
        }
        _ => replace(path, content, existing.as_ref()),
    }
}

/// Write `content` to a new file beside `path` and rename it over `path`,
/// giving it the permissions and owner of the file it replaces, `existing`.
fn replace(path: &Path, content: &[u8], existing: Option<&Metadata>) -> std::io::Result<()> {
    let left_as_it_was = |error| LeftAsItWas::error(error, existing.is_some());
    let directory = path.parent().unwrap_or(Path::new("/"));
    let created = tempfile::Builder::new()
        .prefix(".punie-")
        .suffix(".tmp")
        // Private until it has the old file's mode: a new file as any,
        // while the one it replaces may be private (`.env`).
        .permissions(std::fs::Permissions::from_mode(if existing.is_some() {
            0o600
        } else {
            0o666
        }))
        .tempfile_in(directory);
    if let Err(error) = &created
        && existing.is_some()
        && error.kind() == ErrorKind::PermissionDenied
    {
        return write_in_place(path, content, "as no file can be created beside it");
    }
    let temporary = created.map_err(|error| {
        // Said by its kind: the temporary file's random name, which the
        // error carries, tells nobody anything.
        let kind = error.kind();
        left_as_it_was(std::io::Error::new(
            kind,
            format!("no file could be created beside it to write to: {kind}"),
        ))
    })?;
    if let Some(existing) = existing {
        if !takes_owner(temporary.as_file(), existing) {
            drop(temporary);
            return write_in_place(path, content, "as a new file could not be given its owner");
        }
        // Exactly the old bits, setuid ones too: set after the owner, since
        // a change of owner clears them.
        rustix::fs::fchmod(
            temporary.as_file(),
            Mode::from_raw_mode(existing.permissions().mode() & 0o7777),
        )
        .map_err(|errno| left_as_it_was(errno.into()))?;
    }
    let mut file = temporary.as_file();
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(left_as_it_was)?;
    temporary
        .persist(path)
        .map_err(|error| left_as_it_was(error.error))?;
    Ok(())
}

/// Whether `file` is owned as `existing` is, made so if need be: replacing a
/// file must not take it from its owner or group.
fn takes_owner(file: &File, existing: &Metadata) -> bool {
    let Ok(new) = file.metadata() else {
        return false;
    };
    if (new.uid(), new.gid()) == (existing.uid(), existing.gid()) {
        return true;
    }
    rustix::fs::fchown(
        file,
        Some(rustix::fs::Uid::from_raw(existing.uid())),
        Some(rustix::fs::Gid::from_raw(existing.gid())),
    )
    .is_ok()
}

/// Truncate the regular file at `path` and write `content` into it: the
/// same file, under all its names, but one a failed write leaves cut short.
/// `why` it is written so is said when the write fails.
fn write_in_place(path: &Path, content: &[u8], why: &str) -> std::io::Result<()> {
    let opened = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | flags(),
        Mode::from_raw_mode(0o666),
    );
    let mut file = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NXIO) => {
            // A named pipe nobody reads, put there since it was checked.
            regular(std::fs::metadata(path)?)?;
            return Err(rustix::io::Errno::NXIO.into());
        }
        Err(errno) => return Err(errno.into()),
    };
    regular(file.metadata()?)?;
    // Truncated only once it is known to be a regular file.
    file.set_len(0)?;
    file.write_all(content).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!(
                "{error}; it was being written in place, {why}, so it may now hold only part \
                 of the new text"
            ),
        )
    })
}

/// A write that failed before it touched the file it was to replace.
#[derive(Debug, thiserror::Error)]
#[error("{source}; {}", if *.existed { "the file is unchanged" } else { "no file was created" })]
struct LeftAsItWas {
    source: std::io::Error,
    existed: bool,
}

impl LeftAsItWas {
    /// The I/O error that says so, of the kind of `source`.
    fn error(source: std::io::Error, existed: bool) -> std::io::Error {
        std::io::Error::new(source.kind(), Self { source, existed })
    }
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

/// The first byte of a text that is not UTF-8, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadByte {
    pub byte: u8,
    /// Bytes before it, from the start of the file.
    pub offset: u64,
    /// The number (1-based) of its line.
    pub line: usize,
}

impl BadByte {
    /// Where `error` found the bytes it holds stop being UTF-8.
    pub fn in_text(error: &std::string::FromUtf8Error) -> Self {
        Self::at(error.as_bytes(), error.utf8_error().valid_up_to())
    }

    /// The byte at `valid`, after the UTF-8 text `bytes[..valid]`.
    fn at(bytes: &[u8], valid: usize) -> Self {
        let before = &bytes[..valid];
        Self {
            byte: bytes.get(valid).copied().unwrap_or_default(),
            offset: valid as u64,
            line: 1 + before.iter().filter(|&&byte| byte == b'\n').count(),
        }
    }

    /// This byte, found in a text that was the part of a file from byte
    /// `skipped`, line `first`, placed in the whole file.
    fn numbered_from(self, skipped: u64, first: usize) -> Self {
        Self {
            offset: self.offset + skipped,
            line: self.line + first - 1,
            ..self
        }
    }
}

/// Why lines could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// What was read is not UTF-8: this byte is the first that is not.
    NotText(BadByte),
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
    // Bytes of the lines before `first`, where `taken` starts.
    let mut skipped: u64 = 0;
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
            } else {
                skipped += piece.len() as u64;
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
            String::from_utf8(bytes).map_err(|error| {
                ReadError::NotText(BadByte::in_text(&error).numbered_from(skipped, first))
            })?
        }
        Err(error) => {
            return Err(ReadError::NotText(
                BadByte::in_text(&error).numbered_from(skipped, first),
            ));
        }
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
    fn what_is_not_utf8_is_not_text_and_the_first_bad_byte_is_placed_in_the_file() {
        let bytes: &[u8] = b"ok\nfine\ncaf\xe9\n";
        let first_bad = BadByte {
            byte: 0xE9,
            offset: 11,
            line: 3,
        };
        for first in [1, 2, 3] {
            match excerpt(bytes, first, None, usize::MAX, || false) {
                Err(ReadError::NotText(at)) => assert_eq!(at, first_bad, "from line {first}"),
                other => panic!("from line {first}: {other:?}"),
            }
        }
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

    /// The file's name for a process of this test binary to write into
    /// under a file size limit.
    const LIMITED_WRITE: &str = "PUNIE_TEST_LIMITED_WRITE";

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A write past the file size limit fails part way, with `EFBIG`, as one
    /// on a full disk does with `ENOSPC`. A limit holds for a whole process,
    /// so the write is done by this test run again in a process of its own,
    /// under `ulimit -f`, with the signal that would kill it ignored.
    #[test]
    fn a_write_that_fails_part_way_leaves_the_file_as_it_was() {
        if let Some(file) = std::env::var_os(LIMITED_WRITE) {
            let error = write(Path::new(&file), &vec![b'n'; 900 * 1024]).unwrap_err();
            println!("the write failed: {error}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        let old = vec![b'o'; 590 * 1024];
        std::fs::write(&file, &old).unwrap();
        // 600 blocks: of 512 bytes in a POSIX shell, 1024 in some others.
        let limited = std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; ulimit -f 600; exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "workspace::text::tests::a_write_that_fails_part_way_leaves_the_file_as_it_was",
                "--nocapture",
            ])
            .env(LIMITED_WRITE, &file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&limited.stdout);
        assert!(limited.status.success(), "{said}");
        assert!(
            said.contains("the write failed: File too large (os error 27); the file is unchanged"),
            "{said}"
        );
        assert!(
            std::fs::read(&file).unwrap() == old,
            "the file is as it was"
        );
        assert_eq!(names_in(dir.path()), ["a.txt"], "nothing is left beside it");
    }

    #[test]
    fn a_replaced_file_keeps_its_permissions_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "old\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
        write(&script, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&script).unwrap(), "new\n");
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o750);
        write(&dir.path().join("created.txt"), b"hello\n").unwrap();
        assert_eq!(names_in(dir.path()), ["created.txt", "run.sh"]);
    }

    /// Replacing a file with other hard links would part it from them.
    #[test]
    fn a_file_with_other_hard_links_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "old\n").unwrap();
        std::fs::hard_link(&file, dir.path().join("b.txt")).unwrap();
        let inode = std::fs::metadata(&file).unwrap().ino();
        write(&file, b"new\n").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), inode);
        for name in ["a.txt", "b.txt"] {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(name)).unwrap(),
                "new\n"
            );
        }
    }

    /// Only a privileged process can give a file to someone else: elsewhere
    /// this test has nothing to set up.
    #[test]
    fn a_replaced_file_keeps_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "old\n").unwrap();
        if std::os::unix::fs::chown(&file, Some(4242), Some(4243)).is_err() {
            return;
        }
        write(&file, b"new\n").unwrap();
        let metadata = std::fs::metadata(&file).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (4242, 4243));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new\n");
    }

    /// Run the test `name` of this binary as `nobody`, whose file modes
    /// bind (root's do not): from a copy in a directory anyone may enter,
    /// wherever this one was built. Whether it passed.
    fn passes_as_nobody(name: &str) -> bool {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = scratch.path().join("tests");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .args(["--exact", name, "--test-threads=1"])
            .env("TMPDIR", "/tmp")
            .status()
            .expect("setpriv runs")
            .success()
    }

    /// A file the user made read-only is refused, as writing it in place
    /// would be, though its directory would let it be replaced.
    #[test]
    fn a_read_only_file_is_refused_and_left_as_it_was() {
        if rustix::process::geteuid().is_root() {
            assert!(passes_as_nobody(
                "workspace::text::tests::a_read_only_file_is_refused_and_left_as_it_was"
            ));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "old\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        let error = write(&file, b"new\n").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old\n");
        assert_eq!(names_in(dir.path()), ["a.txt"]);
    }

    /// A file the user may write in a directory they may not add to is
    /// written in place, as it was before files were replaced whole.
    #[test]
    fn a_file_whose_directory_takes_no_new_files_is_written_in_place() {
        if rustix::process::geteuid().is_root() {
            assert!(passes_as_nobody(
                "workspace::text::tests::a_file_whose_directory_takes_no_new_files_is_written_in_place"
            ));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        let file = locked.join("a.txt");
        std::fs::write(&file, "old\n").unwrap();
        let set_mode = |mode| {
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set_mode(0o555);
        let written = write(&file, b"new\n");
        set_mode(0o755);
        written.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new\n");
        assert_eq!(names_in(&locked), ["a.txt"]);
    }
}
