//! Python string semantics that sacreBLEU relies on, reproduced exactly.

/// `str.isspace()` of Python 3: Unicode `White_Space` plus U+001C..U+001F (the information
/// separators, which Python counts as whitespace and Rust does not).
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `line.split()` (no argument): runs of whitespace separate, no empty items.
pub(crate) fn py_split(line: &str) -> impl Iterator<Item = &str> {
    line.split(is_py_space).filter(|t| !t.is_empty())
}

/// Python's `line.rstrip()` (no argument).
pub(crate) fn py_rstrip(line: &str) -> &str {
    line.trim_end_matches(is_py_space)
}

/// Python's `' '.join(line.split())`.
pub(crate) fn py_normalize_spaces(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for (i, tok) in py_split(line).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(tok);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace() {
        // Python: 'a\x1cb\u202fc\xa0d\u2028e\tf'.split() == ['a', 'b', 'c', 'd', 'e', 'f']
        let v: Vec<&str> = py_split("  a\u{1c}b\u{202f}c\u{a0}d\u{2028}e\tf \n").collect();
        assert_eq!(v, ["a", "b", "c", "d", "e", "f"]);
        // U+200B (zero width space) is not whitespace for Python either.
        assert_eq!(py_split("a\u{200b}b").count(), 1);
        assert_eq!(py_rstrip("x \u{1f}\u{3000}\r\n"), "x");
        assert_eq!(py_normalize_spaces("  a   b\u{85}c "), "a b c");
    }
}
