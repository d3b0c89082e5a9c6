//! Cleaning untrusted text (event fields, server and plugin messages, agent
//! output) for the places it is shown. One function per use, because the
//! uses need different things:
//!
//! * [`clean_line`]: one line for a log field, an environment value, a
//!   report or a Slack line. Control characters become spaces (words stay
//!   apart), the length is bounded in bytes (what the receiver limits).
//! * [`excerpt`]: a human-read excerpt of a longer message (a plugin's log
//!   line). Like `clean_line`, bounded in characters, and a cut is marked
//!   with `…`.
//! * [`terminal_cell`]: a cell of a table printed on an operator's
//!   terminal. Control characters are removed (an escape sequence must not
//!   leave a gap that shifts the columns), bounded in characters.

/// One line: control characters (NUL, newlines, escapes) become spaces and
/// the result is at most `max_bytes` bytes (cut at a character boundary).
pub fn clean_line(s: &str, max_bytes: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max_bytes {
        let mut cut = max_bytes;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// One line of at most `max_chars` characters (plus `…` when cut); control
/// characters become spaces.
pub fn excerpt(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// A terminal table cell: control characters removed, at most `max_chars`
/// characters.
pub fn terminal_cell(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_line_replaces_controls_and_bounds_bytes() {
        assert_eq!(clean_line("a\0b\nc\u{1b}[2J", 100), "a b c [2J");
        assert_eq!(clean_line("ééé", 3), "é");
        assert_eq!(clean_line("abc", 0), "");
    }

    #[test]
    fn excerpt_bounds_chars_and_marks_the_cut() {
        assert_eq!(excerpt("ééé", 3), "ééé");
        assert_eq!(excerpt("éééé", 3), "ééé…");
        assert_eq!(excerpt("a\nb", 10), "a b");
    }

    #[test]
    fn terminal_cell_removes_controls() {
        assert_eq!(terminal_cell("evil\u{1b}[2J\nfake", 60), "evil[2Jfake");
        assert_eq!(terminal_cell("abcdef", 3), "abc");
    }
}
