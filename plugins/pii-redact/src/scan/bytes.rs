//! Byte-level helpers shared by the scanners: bounds-checked peeking and the character
//! classes that define word boundaries. Pure functions, nothing else.

/// The byte at `i`, or `None` past either end.
pub fn at(bytes: &[u8], i: usize) -> Option<u8> {
    bytes.get(i).copied()
}

/// The byte before `i`, or `None` at the start.
pub fn before(bytes: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| bytes.get(j).copied())
}

/// Whether `b` is part of a word: an ASCII letter, digit or `_`. Bytes of multi-byte
/// characters are not, so non-ASCII text acts as a boundary.
pub fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `b` is `Some` ASCII digit.
pub fn is_digit(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_digit())
}

/// Whether `b` is `Some` word byte.
pub fn is_word_at(b: Option<u8>) -> bool {
    b.is_some_and(is_word)
}

/// The end of the run of bytes matching `class` that starts at `i` (`i` itself when there is
/// none).
pub fn run_end(bytes: &[u8], i: usize, class: impl Fn(u8) -> bool) -> usize {
    match bytes.get(i..) {
        Some(rest) => rest
            .iter()
            .position(|&b| !class(b))
            .map_or(bytes.len(), |n| i + n),
        None => i,
    }
}

/// Whether `b` continues a number: one of `. , : / -` followed by a digit. Used on both
/// sides of a candidate so that dates, times, decimals and version strings are not split
/// into smaller matches.
pub fn continues_number(bytes: &[u8], i: usize) -> bool {
    matches!(at(bytes, i), Some(b'.' | b',' | b':' | b'/' | b'-')) && is_digit(at(bytes, i + 1))
}

/// Whether the number starting at `i` is glued to something before it: a word byte, a `+`,
/// or one of `. , : / -` that itself follows a digit.
pub fn glued_before(bytes: &[u8], i: usize) -> bool {
    match before(bytes, i) {
        None => false,
        Some(b) if is_word(b) || b == b'+' => true,
        Some(b'.' | b',' | b':' | b'/' | b'-') => i >= 2 && bytes[i - 2].is_ascii_digit(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeking() {
        let b = b"ab";
        assert_eq!(at(b, 1), Some(b'b'));
        assert_eq!(at(b, 2), None);
        assert_eq!(before(b, 0), None);
        assert_eq!(before(b, 1), Some(b'a'));
        assert_eq!(run_end(b"123x", 0, |c| c.is_ascii_digit()), 3);
        assert_eq!(run_end(b"x", 0, |c| c.is_ascii_digit()), 0);
    }

    #[test]
    fn number_glue() {
        assert!(glued_before(b"a1", 1));
        assert!(glued_before(b"1.2", 2));
        assert!(glued_before(b"+1", 1));
        assert!(!glued_before(b" 1", 1));
        assert!(!glued_before(b"x.1", 2));
        assert!(!glued_before(b"1", 0));
        assert!(continues_number(b"1:30", 1));
        assert!(!continues_number(b"1. ", 1));
    }
}
