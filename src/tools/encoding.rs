//! What `read_file` finds in a file Punie reads itself, told by its first
//! bytes: UTF-8 text, UTF-16 text (decoded as it is read, so a read still
//! goes only as far as it needs), or something binary — an image, an
//! executable, an archive, anything with NUL bytes — which no model can
//! read as text and is refused, saying what it looks like.
//!
//! A UTF-16 file is decoded here, as the workspace reads only UTF-8; it is
//! opened by the workspace's own opener, from a path the workspace
//! resolved. What an editor answers for a file (`fs/read_text_file`) is its
//! own judgement, and not looked at here.

use std::io::{BufRead, ErrorKind, Read};

/// How much of a file's beginning tells what it is: as much as git looks at.
pub(super) const HEAD_BYTES: u64 = 8 * 1024;

/// Raw bytes read from a UTF-16 file at a time.
const UTF16_CHUNK: usize = 64 * 1024;

/// What a file is, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Anything else: read as UTF-8, which says where it is not.
    Text,
    Utf16(Utf16),
    /// Not text; what it looks like, as "it …" ends a sentence.
    Binary(&'static str),
}

/// How a UTF-16 file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Utf16 {
    pub big_endian: bool,
    /// Whether it starts with a byte-order mark, which is not its text.
    pub bom: bool,
}

impl Utf16 {
    /// As the model is told it.
    pub fn named(self) -> &'static str {
        match (self.big_endian, self.bom) {
            (false, true) => "UTF-16 (little-endian)",
            (true, true) => "UTF-16 (big-endian)",
            (false, false) => "UTF-16 (little-endian, without a byte-order mark)",
            (true, false) => "UTF-16 (big-endian, without a byte-order mark)",
        }
    }
}

/// Formats known by how their files start, and what each is.
const SIGNATURES: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "it starts like a PNG image"),
    (b"\xFF\xD8\xFF", "it starts like a JPEG image"),
    (b"GIF87a", "it starts like a GIF image"),
    (b"GIF89a", "it starts like a GIF image"),
    (b"%PDF-", "it starts like a PDF document"),
    (b"PK\x03\x04", "it starts like a zip archive"),
    (b"\x1F\x8B", "it starts like a gzip archive"),
    (b"\xFD7zXZ\x00", "it starts like an xz archive"),
    (b"\x28\xB5\x2F\xFD", "it starts like a zstd archive"),
    (b"7z\xBC\xAF\x27\x1C", "it starts like a 7z archive"),
    (b"\x7FELF", "it starts like an ELF executable or library"),
    (b"\0asm", "it starts like a WebAssembly module"),
    (b"SQLite format 3\0", "it starts like an SQLite database"),
    (
        b"\xCA\xFE\xBA\xBE",
        "it starts like a Java class or a Mach-O executable",
    ),
    (b"\xCF\xFA\xED\xFE", "it starts like a Mach-O executable"),
    (b"\xCE\xFA\xED\xFE", "it starts like a Mach-O executable"),
    // UTF-32's marks, before UTF-16's: FF FE starts both.
    (
        b"\xFF\xFE\0\0",
        "it is UTF-32 text, which read_file does not decode",
    ),
    (
        b"\0\0\xFE\xFF",
        "it is UTF-32 text, which read_file does not decode",
    ),
];

/// What the file that starts with `head` (at most [`HEAD_BYTES`]) is.
pub(super) fn kind(head: &[u8]) -> Kind {
    if let Some((_, what)) = SIGNATURES.iter().find(|(sign, _)| head.starts_with(sign)) {
        return Kind::Binary(what);
    }
    if head.get(257..262) == Some(b"ustar") {
        return Kind::Binary("it starts like a tar archive");
    }
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        return Kind::Binary("it starts like a WebP image");
    }
    match head {
        [0xFF, 0xFE, ..] => {
            return Kind::Utf16(Utf16 {
                big_endian: false,
                bom: true,
            });
        }
        [0xFE, 0xFF, ..] => {
            return Kind::Utf16(Utf16 {
                big_endian: true,
                bom: true,
            });
        }
        _ => {}
    }
    if !head.contains(&0) {
        return Kind::Text;
    }
    if let Some(form) = utf16_without_a_mark(head) {
        return Kind::Utf16(form);
    }
    if head.starts_with(b"MZ") {
        return Kind::Binary("it starts like a Windows executable");
    }
    Kind::Binary("it holds NUL bytes")
}

/// The form of UTF-16 `head` is written in, when it has no byte-order
/// mark but a NUL byte beside each character of Latin text, and reads as
/// text: no control character but line breaks, tabs and form feeds.
fn utf16_without_a_mark(head: &[u8]) -> Option<Utf16> {
    let units = head.len() / 2;
    if units < 2 {
        return None;
    }
    let pairs = || head.chunks_exact(2);
    let zero_high = |big_endian: bool| {
        pairs()
            .filter(|pair| pair[usize::from(!big_endian)] == 0)
            .count()
    };
    let big_endian = zero_high(true) > zero_high(false);
    // Nearly every character Latin, as a NUL beside each says.
    if zero_high(big_endian) * 4 < units * 3 {
        return None;
    }
    let decoded = char::decode_utf16(pairs().map(|pair| unit([pair[0], pair[1]], big_endian)));
    let mut seen = 0;
    for character in decoded {
        seen += 1;
        match character {
            Ok(c) if c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0C') => return None,
            Ok(_) => {}
            // A pair cut by the end of the head is no sign either way.
            Err(_) if seen == units => {}
            Err(_) => return None,
        }
    }
    Some(Utf16 {
        big_endian,
        bom: false,
    })
}

fn unit(pair: [u8; 2], big_endian: bool) -> u16 {
    if big_endian {
        u16::from_be_bytes(pair)
    } else {
        u16::from_le_bytes(pair)
    }
}

/// UTF-16 text read from `inner`, given as UTF-8 a chunk at a time, so
/// the reader of lines above it reads no further than it would in a UTF-8
/// file. Text that is not UTF-16 — a lone surrogate, an odd byte at the
/// end — fails the read, saying where.
pub(super) struct Utf16Text<R> {
    inner: R,
    form: Utf16,
    /// Decoded text not yet consumed, from `at`.
    decoded: Vec<u8>,
    at: usize,
    raw: Vec<u8>,
    /// The first byte of a unit the last chunk cut.
    odd_byte: Option<u8>,
    /// A high surrogate the last chunk ended with, waiting for its pair.
    high: Option<u16>,
    /// Bytes of the file decoded so far: where the held unit or byte is.
    decoded_to: u64,
    /// Whether a unit was seen: the byte-order mark can only be the first.
    started: bool,
}

impl<R: Read> Utf16Text<R> {
    pub fn new(inner: R, form: Utf16) -> Self {
        Self {
            inner,
            form,
            decoded: Vec::new(),
            at: 0,
            raw: vec![0; UTF16_CHUNK],
            odd_byte: None,
            high: None,
            decoded_to: 0,
            started: false,
        }
    }

    /// Decode the next chunk into `decoded`; false at the end of the file.
    fn decode_more(&mut self) -> std::io::Result<bool> {
        let read = loop {
            match self.inner.read(&mut self.raw) {
                Ok(read) => break read,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        };
        if read == 0 {
            return match (self.high, self.odd_byte) {
                (Some(_), _) => Err(not_utf16(format!(
                    "byte {} starts half a surrogate pair, cut off by the end of the file",
                    self.decoded_to
                ))),
                (None, Some(_)) => Err(not_utf16(format!(
                    "it ends with half a character: an odd byte, at byte {}",
                    self.decoded_to
                ))),
                (None, None) => Ok(false),
            };
        }
        let mut bytes: Vec<u8> = self.odd_byte.take().into_iter().collect();
        bytes.extend_from_slice(&self.raw[..read]);
        if !bytes.len().is_multiple_of(2) {
            self.odd_byte = bytes.pop();
        }
        let mut units: Vec<u16> = self.high.take().into_iter().collect();
        units.extend(
            bytes
                .chunks_exact(2)
                .map(|pair| unit([pair[0], pair[1]], self.form.big_endian)),
        );
        if !self.started && !units.is_empty() {
            self.started = true;
            if self.form.bom && units.first() == Some(&0xFEFF) {
                units.remove(0);
                self.decoded_to += 2;
            }
        }
        // Its pair may be the first unit of the next chunk.
        if units
            .last()
            .is_some_and(|last| (0xD800..0xDC00).contains(last))
        {
            self.high = units.pop();
        }
        self.decoded.clear();
        self.at = 0;
        for character in char::decode_utf16(units) {
            match character {
                Ok(c) => {
                    let mut buffer = [0; 4];
                    self.decoded
                        .extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                    self.decoded_to += c.len_utf16() as u64 * 2;
                }
                Err(error) => {
                    return Err(not_utf16(format!(
                        "byte {} starts a lone surrogate (0x{:04X})",
                        self.decoded_to,
                        error.unpaired_surrogate()
                    )));
                }
            }
        }
        Ok(true)
    }
}

impl<R: Read> Read for Utf16Text<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let taken = available.len().min(buffer.len());
        buffer[..taken].copy_from_slice(&available[..taken]);
        self.consume(taken);
        Ok(taken)
    }
}

impl<R: Read> BufRead for Utf16Text<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        // A chunk may decode to nothing (a byte-order mark, half a unit or
        // a pair alone): read on.
        while self.at == self.decoded.len() {
            if !self.decode_more()? {
                break;
            }
        }
        Ok(&self.decoded[self.at..])
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.decoded.len());
    }
}

/// The whole of a UTF-16 file, `bytes`, as text; or why it is not UTF-16
/// after all.
pub(super) fn decode_utf16(bytes: &[u8], form: Utf16) -> Result<String, std::io::Error> {
    let mut text = String::new();
    Utf16Text::new(bytes, form).read_to_string(&mut text)?;
    Ok(text)
}

/// `text` written as `form` has it, its byte-order mark included.
pub(super) fn encode_utf16(text: &str, form: Utf16) -> Vec<u8> {
    let mark = form.bom.then_some(0xFEFF);
    mark.into_iter()
        .chain(text.encode_utf16())
        .flat_map(|unit| {
            if form.big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            }
        })
        .collect()
}

/// The error that says a file is not the UTF-16 it started as, and why.
fn not_utf16(why: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, why)
}

/// `bytes` as a person reads a size: "12,345 bytes".
pub(super) fn size(bytes: u64) -> String {
    let digits = bytes.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if bytes == 1 {
        "1 byte".to_owned()
    } else {
        format!("{grouped} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        encode_utf16(
            text,
            Utf16 {
                big_endian,
                bom: false,
            },
        )
    }

    fn decoded(reader: impl Read, form: Utf16) -> std::io::Result<String> {
        let mut text = String::new();
        Utf16Text::new(reader, form).read_to_string(&mut text)?;
        Ok(text)
    }

    const LE_MARKED: Utf16 = Utf16 {
        big_endian: false,
        bom: true,
    };

    /// Hands over one byte a read: every unit and pair is cut somewhere.
    struct ByteAtATime<'a>(&'a [u8]);

    impl Read for ByteAtATime<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buffer[0] = first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_file_is_told_by_how_it_starts() {
        assert_eq!(kind(b"fn main() {}\n"), Kind::Text);
        assert_eq!(
            kind(b"caf\xe9\n"),
            Kind::Text,
            "Latin-1 is left to UTF-8's check"
        );
        assert_eq!(kind(b""), Kind::Text);
        assert_eq!(
            kind(b"\x89PNG\r\n\x1a\n\0\0"),
            Kind::Binary("it starts like a PNG image")
        );
        assert_eq!(
            kind(b"\x7FELF\x02\x01\x01\0"),
            Kind::Binary("it starts like an ELF executable or library")
        );
        assert_eq!(
            kind(b"MZ\x90\0\x03\0"),
            Kind::Binary("it starts like a Windows executable")
        );
        assert_eq!(kind(b"MZ is a name"), Kind::Text, "text may start with MZ");
        assert_eq!(kind(b"abc\0def"), Kind::Binary("it holds NUL bytes"));
        let mut tar = vec![b'a'; 512];
        tar[257..262].copy_from_slice(b"ustar");
        tar[100] = 0;
        assert_eq!(kind(&tar), Kind::Binary("it starts like a tar archive"));
        assert_eq!(
            kind(b"\xFF\xFE\0\0a\0\0\0"),
            Kind::Binary("it is UTF-32 text, which read_file does not decode")
        );
        assert_eq!(kind(b"\xFF\xFEa\0"), Kind::Utf16(LE_MARKED));
        assert_eq!(
            kind(b"\xFE\xFF\0a"),
            Kind::Utf16(Utf16 {
                big_endian: true,
                bom: true
            })
        );
        assert_eq!(
            kind(&utf16("plain\r\ntext\tand caf\u{e9}\n", true)),
            Kind::Utf16(Utf16 {
                big_endian: true,
                bom: false
            })
        );
        // A NUL beside every other byte, but no text: numbers, say.
        assert_eq!(
            kind(&[1, 0, 2, 0, 3, 0, 4, 0]),
            Kind::Binary("it holds NUL bytes")
        );
    }

    #[test]
    fn utf16_is_decoded_across_reads_however_they_cut_it() {
        let text = "h\u{e9}llo \u{1F980}\r\nw\u{f6}rld\n";
        let mut marked = vec![0xFF, 0xFE];
        marked.extend(utf16(text, false));
        assert_eq!(decoded(marked.as_slice(), LE_MARKED).unwrap(), text);
        assert_eq!(decoded(ByteAtATime(&marked), LE_MARKED).unwrap(), text);
        let big = Utf16 {
            big_endian: true,
            bom: false,
        };
        assert_eq!(decoded(ByteAtATime(&utf16(text, true)), big).unwrap(), text);
        // A pair across the boundary of two chunks.
        let across = format!("{}\u{1F980}b", "a".repeat(UTF16_CHUNK / 2 - 1));
        let bytes = utf16(&across, false);
        let no_mark = Utf16 {
            big_endian: false,
            bom: false,
        };
        assert_eq!(decoded(bytes.as_slice(), no_mark).unwrap(), across);
    }

    #[test]
    fn what_is_not_utf16_fails_the_read_saying_where() {
        let mut lone = vec![0xFF, 0xFE];
        lone.extend(utf16("ok\n", false));
        lone.extend(0xDC00u16.to_le_bytes());
        lone.extend(utf16("x", false));
        let error = decoded(lone.as_slice(), LE_MARKED).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert_eq!(error.to_string(), "byte 8 starts a lone surrogate (0xDC00)");
        let mut odd = utf16("ab", false);
        odd.push(b'c');
        let error = decoded(ByteAtATime(&odd), LE_MARKED).unwrap_err();
        assert_eq!(
            error.to_string(),
            "it ends with half a character: an odd byte, at byte 4"
        );
        let cut = utf16("a\u{1F980}", false);
        let error = decoded(&cut[..4], LE_MARKED).unwrap_err();
        assert_eq!(
            error.to_string(),
            "byte 2 starts half a surrogate pair, cut off by the end of the file"
        );
    }

    #[test]
    fn text_is_written_back_in_the_form_it_was_read() {
        let text = "héllo, 世界 🦀\r\n";
        for big_endian in [false, true] {
            for bom in [false, true] {
                let form = Utf16 { big_endian, bom };
                let bytes = encode_utf16(text, form);
                assert_eq!(
                    bytes.len(),
                    2 * text.encode_utf16().count() + 2 * usize::from(bom)
                );
                let mark: &[u8] = match (bom, big_endian) {
                    (false, _) => &[],
                    (true, false) => &[0xFF, 0xFE],
                    (true, true) => &[0xFE, 0xFF],
                };
                assert!(bytes.starts_with(mark), "{form:?}: {bytes:?}");
                assert_eq!(decode_utf16(&bytes, form).unwrap(), text, "{form:?}");
            }
        }
        let lone = [0x00, 0xD8, b'a', 0];
        assert!(decode_utf16(&lone, LE_MARKED).is_err());
    }

    #[test]
    fn sizes_are_grouped_in_thousands() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(999), "999 bytes");
        assert_eq!(size(1234), "1,234 bytes");
        assert_eq!(size(1_073_741_824), "1,073,741,824 bytes");
    }
}
