//! Escaping for everything `pf` prints that came from outside: manifest
//! strings, paths, server messages, error text. A hostile image must not be
//! able to forge an output line ("signature: verified") or drive the
//! terminal (escape sequences), so control characters and invisible
//! formatting characters are printed as `\n`, `\u{1b}`, ... instead.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal raw: C0/C1 controls and DEL, and
/// the invisible format characters that reorder or hide text (bidi
/// overrides and isolates, zero-width characters, line/paragraph
/// separators, the BOM).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `s` with every unsafe character escaped (`\n`, `\t`, `\r`, else
/// `\u{..}`); borrowed unchanged when there is none (the common case).
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`clean`] of anything displayable (paths via `.display()`, errors).
pub fn clean_display(v: impl std::fmt::Display) -> String {
    clean(&v.to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched_and_borrowed() {
        for s in ["agent-x 1.2.3", "dir/ünïcödé 文件.txt", "a\\nb", ""] {
            assert!(matches!(clean(s), Cow::Borrowed(t) if t == s), "{s}");
        }
    }

    #[test]
    fn controls_and_invisible_formatting_are_escaped() {
        let hostile = "x\nsignature: verified\r\x1b[2J\x07\u{9b}31m\u{202e}gnp.exe\u{200b}\t\u{7f}";
        let c = clean(hostile);
        assert_eq!(
            c,
            "x\\nsignature: verified\\r\\u{1b}[2J\\u{7}\\u{9b}31m\\u{202e}gnp.exe\\u{200b}\\t\\u{7f}"
        );
        assert!(!c.chars().any(unsafe_char));
        assert_eq!(
            clean_display(std::path::Path::new("a\nb").display()),
            "a\\nb"
        );
    }
}
