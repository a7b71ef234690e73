//! Text from outside — a model's words, a file it read, a server's error —
//! made fit to show a person: without the characters a terminal acts on or
//! that change the order text reads in, and whether it may be coloured. It
//! owns only that judgement; where the text is shown, and how it is cut, is
//! its callers'.

use std::borrow::Cow;

/// Whether colour may be used on a terminal: not when `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
pub fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Unicode's marks that change the order or direction text is shown in:
/// with them, text can read as something other than what it is.
pub fn reorders_text(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` must not reach a terminal: a control character (but newline
/// and tab), a line or paragraph separator, or a mark that reorders text.
fn unsafe_on_a_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}')
        || reorders_text(c)
}

/// `text` as it may be shown on a terminal. A model's words, or a file it
/// read, could otherwise set the window's title, clear the screen, or
/// rewrite the line that asks the person's permission to say something else.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if text.contains(unsafe_on_a_terminal) {
        text.replace(unsafe_on_a_terminal, "").into()
    } else {
        text.into()
    }
}

/// Characters that show nothing, or change how the text around them is
/// shown: control characters, the marks that reorder text, and Unicode's
/// invisible formatting characters (zero-width spaces and joiners, the soft
/// hyphen, fillers, variation selectors, tags, the byte-order mark).
fn hides_itself(c: char) -> bool {
    c.is_control()
        || reorders_text(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2028}'..='\u{2029}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// `text` with every character that [hides itself](hides_itself) written
/// out as `<U+202E>`: for a line a person judges by its look — a tool call's
/// title, the question whether to run it — where `invoice\u{202E}fdp.exe`
/// would read as `invoiceexe.pdf`.
pub fn marks_shown(text: &str) -> Cow<'_, str> {
    if !text.contains(hides_itself) {
        return text.into();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut shown = String::with_capacity(text.len() + 8);
    for (at, &c) in chars.iter().enumerate() {
        if hides_itself(c) && !joins_its_neighbours(&chars, at) && !varies_its_base(&chars, at) {
            shown.push_str(&format!("<U+{:04X}>", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    shown.into()
}

/// A visible character that may take a joiner or a variation selector:
/// one of a script or an emoji, not ASCII text or a space.
fn visible_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_whitespace() && !hides_itself(c)
}

/// Whether the zero-width (non-)joiner at `at` joins two visible
/// characters of a script that needs it — Persian and the Indic scripts
/// between letters, emoji sequences (`🏳️‍🌈`, whose flag has its variation
/// selector) — rather than hiding in ASCII text or beside a space.
fn joins_its_neighbours(chars: &[char], at: usize) -> bool {
    let visible_before = at.checked_sub(1).is_some_and(|before| {
        chars
            .get(before)
            .is_some_and(|c| visible_non_ascii(*c) || varies_its_base(chars, before))
    });
    matches!(chars[at], '\u{200C}' | '\u{200D}')
        && visible_before
        && chars.get(at + 1).copied().is_some_and(visible_non_ascii)
}

/// Whether the variation selector at `at` is the one that chooses how the
/// visible character before it is drawn: text or emoji style (`❤️`, `♂️`,
/// a keycap `1️⃣`), or a variant of a CJK ideograph. Only one, and only
/// those: any selector after any letter could carry a hidden byte each.
fn varies_its_base(chars: &[char], at: usize) -> bool {
    let Some(&base) = at.checked_sub(1).and_then(|before| chars.get(before)) else {
        return false;
    };
    match chars[at] {
        '\u{FE0E}' | '\u{FE0F}' => {
            let keycap =
                matches!(base, '0'..='9' | '#' | '*') && chars.get(at + 1) == Some(&'\u{20E3}');
            visible_non_ascii(base) || keycap
        }
        '\u{FE00}'..='\u{FE0D}' | '\u{E0100}'..='\u{E01EF}' => is_cjk_ideograph(base),
        _ => false,
    }
}

/// The CJK ideographs, which alone take the variation selectors that pick
/// a glyph variant (and the compatibility ones, some standardized sequences).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        c,
        '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{3134F}'
    )
}

/// `text` as one Markdown code span, whatever backticks it holds: fenced by
/// a run of backticks longer than any inside it, and padded with a space
/// where it begins or ends with one (CommonMark's rules).
pub fn code_span(text: &str) -> String {
    if text.is_empty() {
        // No code span is empty; one of a space shows as near nothing.
        return "` `".to_owned();
    }
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    // A span that begins and ends with a space loses one of each when
    // shown, unless it is all spaces: padded, it keeps its own.
    let spaced = text.starts_with(' ') && text.ends_with(' ') && text.contains(|c| c != ' ');
    let pad = if text.starts_with('`') || text.ends_with('`') || spaced {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_hides_itself_is_written_out_and_the_rest_kept() {
        assert_eq!(marks_shown("plain مرحبا text"), "plain مرحبا text");
        assert_eq!(
            marks_shown("invoice\u{202E}fdp.exe"),
            "invoice<U+202E>fdp.exe"
        );
        assert_eq!(
            marks_shown("a\u{200B}b\u{2067}c\u{1b}d"),
            "a<U+200B>b<U+2067>c<U+001B>d"
        );
        // Joiners that join letters or emoji stay; one in ASCII text does not.
        assert_eq!(marks_shown("می\u{200C}خواهم"), "می\u{200C}خواهم");
        assert_eq!(marks_shown("👨\u{200D}💻"), "👨\u{200D}💻");
        // An emoji's own variation selector stays, in a sequence too; a
        // second one, or one after ASCII, is marked.
        for emoji in [
            "🏳\u{FE0F}\u{200D}🌈",
            "🏃\u{200D}♂\u{FE0F}",
            "1\u{FE0F}\u{20E3}",
            "❤\u{FE0F}",
        ] {
            assert_eq!(marks_shown(emoji), emoji);
        }
        assert_eq!(marks_shown("😀\u{FE0F}\u{E0101}x"), "😀\u{FE0F}<U+E0101>x");
        assert_eq!(marks_shown("a\u{FE0F}"), "a<U+FE0F>");
        // A glyph variant of an ideograph stays; a selector after any other
        // letter is marked.
        assert_eq!(marks_shown("葛\u{E0100}"), "葛\u{E0100}");
        assert_eq!(marks_shown("д\u{E0101}"), "д<U+E0101>");
        assert_eq!(marks_shown("д\u{FE01}"), "д<U+FE01>");
        assert_eq!(
            marks_shown("rm\u{200D}rf \u{200C}x"),
            "rm<U+200D>rf <U+200C>x"
        );
        assert_eq!(
            marks_shown("notes\u{E0020}\u{E0065}\u{00AD}x\u{FE0F}"),
            "notes<U+E0020><U+E0065><U+00AD>x<U+FE0F>"
        );
    }

    #[test]
    fn a_code_span_holds_any_backticks() {
        assert_eq!(code_span("ls -la"), "`ls -la`");
        assert_eq!(code_span("echo `date`"), "`` echo `date` ``");
        assert_eq!(code_span("a `` b"), "```a `` b```");
        assert_eq!(code_span(" TODO "), "`  TODO  `");
        assert_eq!(code_span("  "), "`  `");
        assert_eq!(code_span(""), "` `");
    }

    #[test]
    fn only_what_a_terminal_would_act_on_is_taken_out() {
        assert_eq!(terminal_safe("plain\n\ttext"), "plain\n\ttext");
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\u{9b}c\r\u{7}d\u{200f}e\u{2028}f\u{61c}g"),
            "a[2Jbcdefg"
        );
    }
}
