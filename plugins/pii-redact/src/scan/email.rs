//! E-mail addresses: `local@domain.tld`.
//!
//! The scanner jumps from one `@` to the next. Around each it grows the local part to the
//! left (letters, digits and `. _ % + - '`) and the domain to the right (letters, digits, `.`
//! and `-`), then checks the domain: at least two labels, none empty, none starting or ending
//! with `-`, and an alphabetic top-level label of two or more letters. A trailing `.` or `-`
//! is punctuation, not part of the address. The local part never grows past the previous
//! `@`, so the scan is linear.

use std::ops::Range;

/// Longest local part accepted (RFC 5321).
const MAX_LOCAL: usize = 64;
/// Longest domain accepted (RFC 1035).
const MAX_DOMAIN: usize = 253;
/// Longest domain label accepted (RFC 1035).
const MAX_LABEL: usize = 63;

/// Appends the byte range of every e-mail address in `bytes` to `out`.
pub fn find(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    // Nothing left of `floor` may become part of a local part: it belongs to an earlier
    // match or lies before an earlier `@`.
    let mut floor = 0;
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| b == b'@') {
        let at = from + offset;
        let mut start = at;
        while start > floor && is_local(bytes[start - 1]) {
            start -= 1;
        }
        while start < at && bytes[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain(bytes[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let local = &bytes[start..at];
        let domain = &bytes[at + 1..end];
        if !local.is_empty() && local.len() <= MAX_LOCAL && valid_domain(domain) {
            out.push(start..end);
            floor = end;
            from = end;
        } else {
            floor = at + 1;
            from = at + 1;
        }
    }
}

/// Bytes allowed in the local part (a practical subset of RFC 5322's `atext`).
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

/// Bytes allowed in the domain.
fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Whether `domain` is a dotted host name with an alphabetic top-level label.
fn valid_domain(domain: &[u8]) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return false;
    }
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > MAX_LABEL
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emails(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(text.as_bytes(), &mut out);
        out.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn common_addresses() {
        assert_eq!(emails("a@b.co"), vec!["a@b.co"]);
        assert_eq!(
            emails("mail Jane.Doe+news@mail.example.co.uk today"),
            vec!["Jane.Doe+news@mail.example.co.uk"]
        );
        assert_eq!(
            emails("<o'neil_99%x@sub-domain.example.org>"),
            vec!["o'neil_99%x@sub-domain.example.org"]
        );
        assert_eq!(emails("two: a@b.com,c@d.org"), vec!["a@b.com", "c@d.org"]);
    }

    #[test]
    fn trailing_punctuation_is_not_part_of_the_address() {
        assert_eq!(emails("Write to bob@example.com."), vec!["bob@example.com"]);
        assert_eq!(emails("(bob@example.com)"), vec!["bob@example.com"]);
        assert_eq!(emails("bob@example.com-"), vec!["bob@example.com"]);
        assert_eq!(emails("mailto:bob@example.com"), vec!["bob@example.com"]);
        assert_eq!(emails("..bob@example.com"), vec!["bob@example.com"]);
    }

    #[test]
    fn not_addresses() {
        for text in [
            "@handle",
            "user@localhost",
            "a@b",
            "a@b.c",
            "a@b.c0m",
            "a@-b.com",
            "a@b-.com",
            "a@b..com",
            "a@.com",
            "x @ y.com",
            "price: 5@3.50",
        ] {
            assert!(emails(text).is_empty(), "{text} matched {:?}", emails(text));
        }
    }

    #[test]
    fn ssh_remote_host_part_is_an_address_shape() {
        // `git@github.com:org/repo` does contain an address-shaped `git@github.com`; redacting
        // it is harmless and keeps the rule simple.
        assert_eq!(emails("git@github.com:org/repo"), vec!["git@github.com"]);
    }

    #[test]
    fn chained_at_signs_do_not_reuse_text() {
        assert_eq!(emails("a@b.com@c.org"), vec!["a@b.com"]);
        assert_eq!(emails("a@@b.com"), Vec::<&str>::new());
        assert_eq!(emails("@@@@"), Vec::<&str>::new());
    }

    #[test]
    fn length_limits() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(emails(&long_local).is_empty());
        let ok_local = format!("{}@example.com", "a".repeat(64));
        assert_eq!(emails(&ok_local).len(), 1);
    }
}
