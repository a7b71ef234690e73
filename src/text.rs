//! Text from outside — a model's words, a file it read, a server's error —
//! made fit to show a person: without the characters a terminal acts on or
//! that change the order text reads in. It owns only that judgement; where
//! the text is shown, and how it is cut, is its callers'.

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_terminal_would_act_on_is_taken_out() {
        assert_eq!(terminal_safe("plain\n\ttext"), "plain\n\ttext");
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\u{9b}c\r\u{7}d\u{200f}e\u{2028}f\u{61c}g"),
            "a[2Jbcdefg"
        );
    }
}
