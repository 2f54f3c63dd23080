//! Payment card numbers: 13 to 19 digits, written in one piece or in groups separated by
//! single spaces or dashes (`4111 1111 1111 1111`, `3782-822463-10005`), that pass the Luhn
//! check. A number that fails Luhn is left alone.
//!
//! The scanner reads a run of digit groups that share one separator, then looks inside it
//! for the first stretch of whole groups that is a card: 13 to 19 digits, groups of 4 to 6
//! digits except the last (1 to 6), and a valid Luhn sum. This finds a card right after
//! another number (`order 12 4111 1111 1111 1111`) and two cards written back to back. Each
//! start tries at most 19 digits' worth of groups, so the scan is linear.

use std::ops::Range;

use super::bytes::{at, before, is_digit, is_word_at, run_end};

/// Fewest digits in a card number.
pub(super) const MIN_DIGITS: usize = 13;
/// Most digits in a card number.
const MAX_DIGITS: usize = 19;

/// Appends the byte range of every card number in `bytes` to `out`.
pub fn find(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let run = read_run(bytes, i, &mut groups);
        if !glued_before(bytes, i) && !glued_after(bytes, run.end) {
            find_in_run(bytes, &groups, out);
        }
        i = run.end;
    }
}

/// Reads the digit groups starting at `start` that share one separator into `groups`, and
/// returns the byte range they cover.
fn read_run(bytes: &[u8], start: usize, groups: &mut Vec<Range<usize>>) -> Range<usize> {
    groups.clear();
    let mut sep = None;
    let mut i = start;
    loop {
        let end = run_end(bytes, i, |b| b.is_ascii_digit());
        groups.push(i..end);
        match at(bytes, end) {
            Some(s @ (b' ' | b'-'))
                if is_digit(at(bytes, end + 1)) && sep.is_none_or(|seen| seen == s) =>
            {
                sep = Some(s);
                i = end + 1;
            }
            _ => return start..end,
        }
    }
}

/// Appends every card found among whole `groups` of one run to `out`.
fn find_in_run(bytes: &[u8], groups: &[Range<usize>], out: &mut Vec<Range<usize>>) {
    let mut first = 0;
    while first < groups.len() {
        match longest_card_from(bytes, groups, first) {
            Some(last) => {
                out.push(groups[first].start..groups[last].end);
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// The index of the last group of the longest card that starts with group `first`.
fn longest_card_from(bytes: &[u8], groups: &[Range<usize>], first: usize) -> Option<usize> {
    let mut digits = 0;
    let mut best = None;
    for (last, group) in groups.iter().enumerate().skip(first) {
        let len = group.len();
        digits += len;
        if digits > MAX_DIGITS {
            break;
        }
        let last_len_ok = last == first || (1..=6).contains(&len);
        if digits >= MIN_DIGITS && last_len_ok && luhn_valid(&bytes[groups[first].start..group.end])
        {
            best = Some(last);
        }
        // Beyond this point the group becomes an inner one: 4 to 6 digits.
        if !(4..=6).contains(&len) {
            break;
        }
    }
    best
}

/// Whether the number starting at `i` continues something before it: a word, a decimal or
/// a bigger number (`x4111...`, `1.4111...`).
fn glued_before(bytes: &[u8], i: usize) -> bool {
    match before(bytes, i) {
        Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'@') => true,
        Some(b'.' | b',') => i >= 2 && bytes[i - 2].is_ascii_digit(),
        _ => false,
    }
}

/// Whether the run ending at `end` is followed by a word, `@` or more number (`.5`, `,00`).
fn glued_after(bytes: &[u8], end: usize) -> bool {
    let next = at(bytes, end);
    is_word_at(next)
        || next == Some(b'@')
        || (matches!(next, Some(b'.' | b',')) && is_digit(at(bytes, end + 1)))
}

/// The Luhn (mod 10) check over the digits of `text`, ignoring separators.
pub fn luhn_valid(text: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &b in text.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(text.as_bytes(), &mut out);
        out.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"4111 1111 1111 1111"));
        assert!(luhn_valid(b"378282246310005"));
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"79927398710"));
    }

    #[test]
    fn valid_cards_in_every_layout() {
        for text in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555 5555 5555 4444",
            "378282246310005",
            "3782 822463 10005",
            "3782-822463-10005",
            "30569309025904",
            "3056 930902 5904",
            "4222222222222",
            "4222 2222 2222 2",
            "6011 0009 9013 9424",
            "6304000000000000000",
            "6304 0000 0000 0000 000",
        ] {
            assert_eq!(cards(text), vec![text], "{text}");
        }
    }

    #[test]
    fn failing_luhn_is_left_alone() {
        for text in [
            "4111111111111112",
            "4111 1111 1111 1112",
            "1234-5678-9012-3456",
            "378282246310006",
        ] {
            assert!(cards(text).is_empty(), "{text} matched");
        }
    }

    #[test]
    fn wrong_lengths_and_layouts() {
        for text in [
            "411111111111",
            "41111111111111111111",
            "4111  1111 1111 1111",
            "4111 1111-1111 1111",
            "4111.1111.1111.1111",
            "41 11 11 11 11 11 11 11",
            "411111111111111111111111",
        ] {
            assert!(cards(text).is_empty(), "{text} matched {:?}", cards(text));
        }
    }

    #[test]
    fn in_sentences() {
        assert_eq!(
            cards("pay with 4111 1111 1111 1111, thanks"),
            vec!["4111 1111 1111 1111"]
        );
        assert_eq!(
            cards("order 12 4111 1111 1111 1111"),
            vec!["4111 1111 1111 1111"]
        );
        assert_eq!(
            cards("4111 1111 1111 1111 5555 5555 5555 4444"),
            vec!["4111 1111 1111 1111", "5555 5555 5555 4444"]
        );
        assert_eq!(cards("(4111-1111-1111-1111)"), vec!["4111-1111-1111-1111"]);
    }

    #[test]
    fn glued_numbers_are_not_cards() {
        for text in [
            "x4111111111111111",
            "4111111111111111x",
            "1.4111111111111111",
            "4111111111111111.5",
            "4111111111111111@example.com",
            "id_4111111111111111",
        ] {
            assert!(cards(text).is_empty(), "{text} matched {:?}", cards(text));
        }
    }

    #[test]
    fn long_runs_stay_linear() {
        let text = "4111 ".repeat(50_000);
        // Every 16-digit window of this run is `4111 4111 4111 4111`, which fails Luhn.
        assert!(!luhn_valid(b"4111411141114111"));
        assert!(cards(&text).is_empty());
        assert!(cards(&"1 ".repeat(50_000)).is_empty());
    }
}
