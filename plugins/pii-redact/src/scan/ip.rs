//! IP addresses: dotted-quad IPv4 (`192.168.1.20`, each octet 0 to 255) and IPv6 in full
//! (`2001:0db8:0000:0000:0000:ff00:0042:8329`) and `::`-compressed (`2001:db8::8a2e:370:7334`,
//! `fe80::1`, `::1`, `::ffff:192.0.2.1`) forms.
//!
//! Both must stand alone: not glued to letters, digits, dots or colons on either side, so
//! `1.2.3.4.5`, `v1.2.3.4` and the middle of a longer token are not addresses. IPv6 also
//! needs exactly eight groups, or fewer with exactly one `::`, and at least one decimal
//! digit, so times (`12:30:45`), MAC addresses (`00:1a:2b:3c:4d:5e`) and hex words
//! (`dead::beef`) are not addresses either.
//!
//! The IPv4 scanner tries a parse only at the start of a run of digits and dots, the IPv6
//! scanner only around a `:`, and both then skip the run, so the scan is linear. IPv6 ranges are listed first, so an embedded IPv4
//! tail stays part of its IPv6 address.

use std::ops::Range;

use super::bytes::{at, before, is_digit, is_word, is_word_at, run_end};

/// Most hex digits in one IPv6 group.
const MAX_GROUP_HEX: usize = 4;
/// Groups in a full IPv6 address.
const IPV6_GROUPS: usize = 8;

/// Appends the byte range of every IPv6 and then every IPv4 address in `bytes` to `out`. An
/// IPv4 address that is the tail of an IPv6 one is not listed again.
pub fn find(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    let first_v6 = out.len();
    find_v6(bytes, out);
    let v6_end = out.len();
    let mut v4 = Vec::new();
    find_v4(bytes, &mut v4);
    let mut next_v6 = first_v6;
    for range in v4 {
        while next_v6 < v6_end && out[next_v6].end <= range.start {
            next_v6 += 1;
        }
        let inside_v6 = next_v6 < v6_end && out[next_v6].start < range.end;
        if !inside_v6 {
            out.push(range);
        }
    }
}

/// Bytes that can be part of an address-like token; runs of them are tried once and skipped.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'_')
}

/// Appends every IPv4 address.
fn find_v4(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let prev = before(bytes, i);
        let free = !prev.is_some_and(|b| is_word(b) || b == b'.');
        if free && let Some(end) = ipv4_at(bytes, i) {
            let next = at(bytes, end);
            let glued = is_word_at(next) || (next == Some(b'.') && is_digit(at(bytes, end + 1)));
            if !glued {
                out.push(i..end);
                i = end;
                continue;
            }
        }
        i = run_end(bytes, i, |b| b.is_ascii_digit() || b == b'.').max(i + 1);
    }
}

/// The end of the dotted quad starting at `i`, if one does.
fn ipv4_at(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    for octet in 0..4 {
        if octet > 0 {
            if at(bytes, i) != Some(b'.') {
                return None;
            }
            i += 1;
        }
        let end = run_end(bytes, i, |b| b.is_ascii_digit());
        let digits = &bytes[i..end];
        if digits.is_empty() || digits.len() > 3 {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        if value > 255 {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// Appends every IPv6 address. Every address has a `:` within its first five bytes, so the
/// scan jumps from colon to colon and looks back at most four hex digits for the start.
fn find_v6(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| b == b':') {
        let colon = from + offset;
        let mut start = colon;
        while start > from && colon - start < MAX_GROUP_HEX && bytes[start - 1].is_ascii_hexdigit()
        {
            start -= 1;
        }
        let free = !before(bytes, start).is_some_and(is_token);
        if free && let Some(end) = ipv6_at(bytes, start) {
            out.push(start..end);
            from = end;
            continue;
        }
        // Nothing can start inside the rest of this token.
        from = run_end(bytes, colon, is_token).max(colon + 1);
    }
}

/// The end of the IPv6 address starting at `start`, if one does.
fn ipv6_at(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut groups = 0;
    let mut compressed = false;
    let mut has_digit = false;
    if at(bytes, i) == Some(b':') {
        if at(bytes, i + 1) != Some(b':') {
            return None;
        }
        compressed = true;
        i += 2;
    }
    loop {
        // An IPv4 tail takes the place of the last two groups.
        if groups <= IPV6_GROUPS - 2
            && let Some(end) = ipv4_at(bytes, i)
        {
            groups += 2;
            has_digit = true;
            i = end;
            break;
        }
        let end = run_end(bytes, i, |b| b.is_ascii_hexdigit());
        let hex = end - i;
        if hex == 0 {
            break;
        }
        if hex > MAX_GROUP_HEX {
            return None;
        }
        has_digit |= bytes[i..end].iter().any(u8::is_ascii_digit);
        groups += 1;
        i = end;
        match (at(bytes, i), at(bytes, i + 1)) {
            (Some(b':'), Some(b':')) => {
                if compressed {
                    return None;
                }
                compressed = true;
                i += 2;
            }
            (Some(b':'), Some(b)) if b.is_ascii_hexdigit() => i += 1,
            _ => break,
        }
    }
    let count_ok = if compressed {
        (1..IPV6_GROUPS).contains(&groups)
    } else {
        groups == IPV6_GROUPS
    };
    let next = at(bytes, i);
    let glued = is_word_at(next)
        || next == Some(b':')
        || (next == Some(b'.') && is_digit(at(bytes, i + 1)));
    (count_ok && has_digit && !glued).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(text.as_bytes(), &mut out);
        out.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn ipv4() {
        for text in [
            "192.168.1.20",
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "8.8.8.8",
        ] {
            assert_eq!(ips(text), vec![text]);
        }
        assert_eq!(
            ips("from 10.0.0.7, to 172.16.5.4:8080 (and 1.1.1.1)."),
            vec!["10.0.0.7", "172.16.5.4", "1.1.1.1"]
        );
        assert_eq!(ips("host=192.168.0.1/24"), vec!["192.168.0.1"]);
    }

    #[test]
    fn not_ipv4() {
        for text in [
            "256.1.1.1",
            "1.2.3.999",
            "1.2.3",
            "1.2.3.4.5",
            "v1.2.3.4",
            "1.2.3.4a",
            "a1.2.3.4",
            "1234.1.1.1",
            "1..2.3.4",
            "3.14",
            "version 10.15.7",
        ] {
            assert!(ips(text).is_empty(), "{text} matched {:?}", ips(text));
        }
    }

    #[test]
    fn ipv6() {
        for text in [
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
            "2001:db8::8a2e:370:7334",
            "2001:DB8::1",
            "fe80::1",
            "::1",
            "fe80::",
            "::ffff:192.0.2.1",
            "64:ff9b::192.0.2.33",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
        ] {
            assert_eq!(ips(text), vec![text], "{text}");
        }
        assert_eq!(
            ips("ping [2001:db8::1]:443 or fe80::1%eth0."),
            vec!["2001:db8::1", "fe80::1"]
        );
    }

    #[test]
    fn not_ipv6() {
        for text in [
            "12:30:45",
            "12:30",
            "at 10:00, 11:30 and 23:59:59",
            "00:1a:2b:3c:4d:5e",
            "dead::beef",
            "cafe:babe",
            "::",
            ":::",
            "1::2::3",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "12345::1",
            "std::vec::Vec",
            "Foo::Bar::baz",
            "a::b",
            "x2001:db8::1",
            "2001:db8::1x",
            "1:2:3:4:5:6:7::8",
        ] {
            assert!(ips(text).is_empty(), "{text} matched {:?}", ips(text));
        }
    }

    #[test]
    fn long_runs_stay_linear() {
        assert!(ips(&"1.".repeat(50_000)).is_empty());
        assert!(ips(&"a:".repeat(50_000)).is_empty());
        assert!(ips(&"1:".repeat(50_000)).is_empty());
    }
}
