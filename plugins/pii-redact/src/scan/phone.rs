//! Telephone numbers: international (`+44 20 7946 0958`, `+15551234567`, `+1 (555) 123-4567`)
//! and common national shapes (`(555) 123-4567`, `555-123-4567`, `555.123.4567`,
//! `020 7946 0958`, `06 12 34 56 78`, `1-800-555-0199`, `555-1234`).
//!
//! A candidate is a run of digit groups separated by single spaces, dashes or dots, with an
//! optional leading `+` and an optional parenthesised area code. It must hold 7 to 15 digits
//! (the E.164 limit) and must not be glued to letters, to `@`, or to a neighbouring number
//! (`1,234`, `12:30`, `v1.2.3`, or a number and a space before it, as in an IBAN).
//!
//! A leading `+` is a strong signal, so those forms only need the digit count. National forms
//! are easy to confuse with dates, decimals, thousands and lists of numbers, so they must
//! also have a telephone shape:
//!
//! - at least two groups, all with the same separator (a bare run of digits is an id, an
//!   amount or a timestamp as often as a phone number);
//! - groups of 2 to 4 digits, except that with a leading `0` (a trunk prefix) the first
//!   group may have 1 to 5 and the last up to 8 (`07700 900123`, `0171 1234567`), and that
//!   `1` may open a North American number (`1-800-555-0199`);
//! - two groups only as `555-1234` or with a trunk prefix;
//! - space-separated only with a trunk prefix or as `555 123 4567` / `1 555 123 4567`;
//! - never a date (`2024-01-15`, `15.01.2024`), a decimal (`3.14159265`), dotted thousands
//!   (`1.234.567`), a dotted quad (`10.20.30.40`) or card-style groups of four.
//!
//! Each attempt reads at most 15 digits' worth of groups, and a failed attempt resumes after
//! its first group, so the scan is linear.

use std::ops::Range;

use super::bytes::{at, before, continues_number, glued_before, is_digit, is_word_at, run_end};

/// Fewest digits in a phone number.
pub(super) const MIN_DIGITS: usize = 7;
/// Most digits in a phone number (E.164).
const MAX_DIGITS: usize = 15;
/// Most digits inside parentheses (an area code or a trunk `(0)`).
const MAX_PAREN_DIGITS: usize = 5;

/// One group of digits, possibly in parentheses.
#[derive(Clone, Copy, Debug, Default)]
struct Group {
    /// First byte (the digit, or the `(`).
    start: usize,
    /// One past the last byte (the last digit, or the `)`).
    end: usize,
    /// How many digits the group holds.
    digits: usize,
    /// Whether the group is written `(...)`.
    paren: bool,
}

/// What one attempt read.
struct Candidate {
    /// Whether it starts with `+`.
    plus: bool,
    /// The groups, in order (at most one per digit).
    groups: [Group; MAX_DIGITS],
    /// How many of `groups` are used.
    count: usize,
    /// Total digits.
    digits: usize,
    /// The separator shared by the national groups, once one is seen.
    sep: Option<u8>,
}

/// Appends the byte range of every phone number in `bytes` to `out`.
pub fn find(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let may_start =
            b.is_ascii_digit() || (matches!(b, b'+' | b'(') && is_digit(at(bytes, i + 1)));
        // A number right after another number and a space continues it (`DE89 3704 0044 0532
        // 0130 00`, lists of numbers): not the start of a phone number.
        let after_number = b.is_ascii_digit()
            && before(bytes, i) == Some(b' ')
            && i >= 2
            && bytes[i - 2].is_ascii_digit();
        if !may_start || glued_before(bytes, i) || after_number {
            i += 1;
            continue;
        }
        match attempt(bytes, i) {
            Ok(end) => {
                out.push(i..end);
                i = end;
            }
            Err(resume) => i = resume.max(i + 1),
        }
    }
}

/// Reads the candidate at `start`: `Ok(end)` when it is a phone number, `Err(resume)` with
/// where to look next when it is not.
fn attempt(bytes: &[u8], start: usize) -> Result<usize, usize> {
    let plus = bytes[start] == b'+';
    let mut c = Candidate {
        plus,
        groups: [Group::default(); MAX_DIGITS],
        count: 0,
        digits: 0,
        sep: None,
    };
    let mut i = if plus { start + 1 } else { start };
    let mut resume = start + 1;
    while let Some(group) = group_at(bytes, i, &c) {
        if c.count == 0 {
            resume = group.end;
        }
        c.digits += group.digits;
        if c.digits > MAX_DIGITS {
            return Err(resume);
        }
        c.groups[c.count] = group;
        c.count += 1;
        i = group.end;
        match at(bytes, i) {
            Some(sep @ (b' ' | b'-' | b'.')) if group_starts(bytes, i + 1) => {
                // The separator after a country code or around an area code may differ from
                // the one between the other groups (`+1 555-123-4567`, `(555) 123-4567`).
                let free = group.paren || at(bytes, i + 1) == Some(b'(') || (plus && c.count == 1);
                if !free {
                    match c.sep {
                        None => c.sep = Some(sep),
                        Some(seen) if seen != sep => break,
                        Some(_) => {}
                    }
                }
                i += 1;
            }
            // `+49(0)30 ...`
            Some(b'(') if plus && c.count == 1 => {}
            // `(555)1234567`
            Some(b) if b.is_ascii_digit() && group.paren => {}
            _ => break,
        }
    }
    if c.count == 0 {
        return Err(resume);
    }
    let end = c.groups[c.count - 1].end;
    let next = at(bytes, end);
    if is_word_at(next) || next == Some(b'@') || continues_number(bytes, end) {
        return Err(resume);
    }
    if is_phone(bytes, &c) {
        Ok(end)
    } else {
        Err(resume)
    }
}

/// The group starting at `i`, if there is one that may come next in `c`.
fn group_at(bytes: &[u8], i: usize, c: &Candidate) -> Option<Group> {
    match at(bytes, i)? {
        b'(' => {
            // An area code comes first in a national number, or right after the country code.
            let allowed = if c.plus { c.count == 1 } else { c.count == 0 };
            let digits_end = run_end(bytes, i + 1, |b| b.is_ascii_digit());
            let digits = digits_end - (i + 1);
            let closed = at(bytes, digits_end) == Some(b')');
            (allowed && closed && (1..=MAX_PAREN_DIGITS).contains(&digits)).then_some(Group {
                start: i,
                end: digits_end + 1,
                digits,
                paren: true,
            })
        }
        b if b.is_ascii_digit() => {
            let end = run_end(bytes, i, |b| b.is_ascii_digit());
            Some(Group {
                start: i,
                end,
                digits: end - i,
                paren: false,
            })
        }
        _ => None,
    }
}

/// Whether a group (a digit, or `(` and a digit) starts at `i`.
fn group_starts(bytes: &[u8], i: usize) -> bool {
    is_digit(at(bytes, i)) || (at(bytes, i) == Some(b'(') && is_digit(at(bytes, i + 1)))
}

/// Whether the candidate has the shape of a phone number (see the module docs).
fn is_phone(bytes: &[u8], c: &Candidate) -> bool {
    if c.digits < MIN_DIGITS {
        return false;
    }
    let groups = &c.groups[..c.count];
    if c.plus {
        // A country code has 1 to 3 digits; `+15551234567` is one group.
        return groups.len() == 1 || groups[0].digits <= 3;
    }
    if groups[0].paren {
        return groups.len() >= 2
            && groups[0].digits >= 2
            && groups[1..].iter().all(|g| g.digits <= 8);
    }
    national_shape(bytes, groups, c.sep)
}

/// The shape rules for a national number without `+` or an area code in parentheses.
fn national_shape(bytes: &[u8], groups: &[Group], sep: Option<u8>) -> bool {
    let k = groups.len();
    let Some(sep) = sep else { return false };
    if k < 2 {
        return false;
    }
    let first_digit = bytes[groups[0].start];
    let trunk = first_digit == b'0';
    let mut lens = [0usize; MAX_DIGITS];
    for (len, group) in lens.iter_mut().zip(groups) {
        *len = group.digits;
    }
    let lens = &lens[..k];
    for (i, &len) in lens.iter().enumerate() {
        let max = match (trunk, i) {
            (true, 0) => 5,
            (true, i) if i == k - 1 => 8,
            _ => 4,
        };
        if len > max {
            return false;
        }
    }
    if k == 2 && !((trunk && sep != b'.') || (sep == b'-' && lens == [3, 4])) {
        return false;
    }
    if sep == b' ' && k >= 3 {
        let nanp = lens == [3, 3, 4] || (first_digit == b'1' && lens == [1, 3, 3, 4]);
        if !(trunk || nanp) {
            return false;
        }
    }
    if sep == b'.' && k >= 3 {
        let dotted_quad = k == 4 && lens.iter().all(|&len| len <= 3);
        let thousands = !trunk && lens[1..].iter().all(|&len| len == 3);
        if dotted_quad || thousands {
            return false;
        }
    }
    if k == 3 && matches!(sep, b'-' | b'.') {
        let ymd = lens[0] == 4 && lens[1] <= 2 && lens[2] <= 2;
        let dmy = lens[0] <= 2 && lens[1] <= 2 && (lens[2] == 4 || lens[2] == 2);
        if ymd || dmy {
            return false;
        }
    }
    if k >= 4 && lens.iter().filter(|&&len| len == 4).count() >= 3 {
        return false;
    }
    if lens[1..].iter().any(|&len| len < 2) {
        return false;
    }
    if lens[0] == 1 && !(trunk || (first_digit == b'1' && lens == [1, 3, 3, 4])) {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phones(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(text.as_bytes(), &mut out);
        out.into_iter().map(|r| &text[r]).collect()
    }

    fn is_one_phone(text: &str) {
        assert_eq!(
            phones(text),
            vec![text],
            "{text} should be one phone number"
        );
    }

    #[test]
    fn international_forms() {
        for text in [
            "+1 415 555 0100",
            "+44 20 7946 0958",
            "+33 6 12 34 56 78",
            "+15551234567",
            "+1-800-555-0199",
            "+1 (555) 123-4567",
            "+49 (0)30 1234567",
            "+49(0)30-1234567",
            "+44 (0) 20 7946 0958",
            "+1.415.555.0100",
        ] {
            is_one_phone(text);
        }
    }

    #[test]
    fn national_forms() {
        for text in [
            "(555) 123-4567",
            "(555)123-4567",
            "(555)1234567",
            "(020) 7946 0958",
            "555-123-4567",
            "555.123.4567",
            "555 123 4567",
            "1 555 123 4567",
            "1-800-555-0199",
            "555-1234",
            "020 7946 0958",
            "0171 1234567",
            "07700 900123",
            "06 12 34 56 78",
            "06.12.34.56.78",
            "123-45-6789",
        ] {
            is_one_phone(text);
        }
    }

    #[test]
    fn in_sentences() {
        assert_eq!(
            phones("Call me at 555-123-4567, or (555) 765-4321."),
            vec!["555-123-4567", "(555) 765-4321"]
        );
        assert_eq!(phones("tel:+1 415 555 0100;"), vec!["+1 415 555 0100"]);
        assert_eq!(phones("phone: 555-123-4567 2024"), vec!["555-123-4567"]);
        assert_eq!(
            phones("(see 555-123-4567)"),
            vec!["555-123-4567"],
            "a parenthesis that is not an area code is punctuation"
        );
        assert!(
            phones("12 555-123-4567").is_empty(),
            "a number right after another one continues it"
        );
        assert!(phones("IBAN DE89 3704 0044 0532 0130 00").is_empty());
        assert_eq!(
            phones("555-1234 (555) 987-6543"),
            vec!["555-1234", "(555) 987-6543"]
        );
    }

    #[test]
    fn dates_and_times_are_not_phones() {
        for text in [
            "2024-01-15",
            "on 2024-01-15 10:30",
            "15.01.2024",
            "15-01-2024",
            "2024.01.15",
            "1-15-2024",
            "12:30:45",
            "2024-01-15T10:30:00Z",
            "2023-2024",
            "1990 - 2000",
        ] {
            assert!(phones(text).is_empty(), "{text} matched {:?}", phones(text));
        }
    }

    #[test]
    fn plain_and_formatted_numbers_are_not_phones() {
        for text in [
            "42",
            "1234567",
            "5551234567",
            "order 20240115093000",
            "3.14159265",
            "0.1234567",
            "1.234.567",
            "1,234,567",
            "$1,234,567.89",
            "1 234 567",
            "20 000 000 people",
            "scores: 12 15 18 20 22",
            "in 2023 1500 people",
            "10.20.30.40",
            "1.2.3.4.5.6.7",
            "0.1.2.3.4.5.6",
            "1 2 3 4 5 6 7",
            "1-2-3-4-5-6-7",
            "v10.15.7",
            "978-3-16-148410-0",
            "94105-1234",
            "+1234",
            "abc555-123-4567",
            "555-123-4567abc",
            "555-123-4567@example.com",
            "1-234-567",
            "40.7128, -74.0060",
        ] {
            assert!(phones(text).is_empty(), "{text} matched {:?}", phones(text));
        }
    }

    #[test]
    fn card_shaped_numbers_are_not_phones() {
        for text in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4222-2222-2222-2",
            "4222 2222 2222 2",
            "3782 822463 10005",
            "3782-822463-10005",
            "4111111111111111",
        ] {
            assert!(phones(text).is_empty(), "{text} matched {:?}", phones(text));
        }
    }

    #[test]
    fn too_many_digits() {
        assert!(phones("+1 234 567 890 123 456").is_empty());
        assert!(phones("12345678901234567890").is_empty());
    }

    #[test]
    fn long_runs_stay_linear() {
        // A long list of numbers, all rejected: each attempt is bounded and resumes after
        // its first group.
        let text = "12 ".repeat(20_000);
        assert!(phones(&text).is_empty());
        let digits = "9".repeat(100_000);
        assert!(phones(&digits).is_empty());
    }
}
