//! Finding PII in a text: one hand-written scanner per kind, and the merge that decides which
//! match wins when two overlap.
//!
//! Every scanner is a single left-to-right pass over the bytes that never revisits more than
//! a bounded window (or a run it then skips), so the whole scan is linear in the text. None
//! of them allocates tables at start-up: the host creates a fresh instance for every request,
//! so anything built at start-up would be rebuilt per request.
//!
//! All patterns are ASCII and a match never starts or ends inside a multi-byte character, so
//! the byte ranges returned are always valid `str` boundaries.

mod bytes;
mod card;
mod email;
mod ip;
mod phone;
mod secret;

use std::ops::Range;

use crate::kind::{Kind, Kinds};

/// One match: the byte range of the original value in the text, and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The byte range in the scanned text.
    pub range: Range<usize>,
    /// What was found.
    pub kind: Kind,
}

/// Finds every match of `kinds` in `text`, without overlaps, ordered by position.
///
/// Detectors run in [`Kind::BY_PRIORITY`] order and a match is dropped when it overlaps one
/// already taken, so for example a key that contains digits stays one `SECRET` and an email
/// whose local part looks like a phone number stays one `EMAIL`.
pub fn find(text: &str, kinds: Kinds) -> Vec<Span> {
    let bytes = text.as_bytes();
    // A cheap pass that rules detectors out: a card needs 13 digits, a phone number 7, an
    // IP address at least one (IPv6 without a digit is not matched), an email an `@`.
    let digits = bytes
        .iter()
        .filter(|b| b.is_ascii_digit())
        .take(card::MIN_DIGITS)
        .count();
    let possible = |kind: Kind| match kind {
        Kind::CreditCard => digits >= card::MIN_DIGITS,
        Kind::Phone => digits >= phone::MIN_DIGITS,
        Kind::Ip => digits >= 1,
        Kind::Email => bytes.contains(&b'@'),
        Kind::Secret => true,
    };
    let mut taken: Vec<Span> = Vec::new();
    let mut found: Vec<Range<usize>> = Vec::new();
    for kind in Kind::BY_PRIORITY {
        if !kinds.contains(kind) || !possible(kind) {
            continue;
        }
        found.clear();
        match kind {
            Kind::Email => email::find(bytes, &mut found),
            Kind::Phone => phone::find(bytes, &mut found),
            Kind::CreditCard => card::find(bytes, &mut found),
            Kind::Ip => ip::find(bytes, &mut found),
            Kind::Secret => secret::find(bytes, &mut found),
        }
        for range in found.drain(..) {
            take_if_free(&mut taken, Span { range, kind });
        }
    }
    taken
}

/// Inserts `span` into the position-ordered `taken` unless it overlaps a span already there.
fn take_if_free(taken: &mut Vec<Span>, span: Span) {
    if span.range.is_empty() {
        return;
    }
    let at = taken.partition_point(|t| t.range.start < span.range.start);
    let clear_before = at == 0 || taken[at - 1].range.end <= span.range.start;
    let clear_after = at == taken.len() || span.range.end <= taken[at].range.start;
    if clear_before && clear_after {
        taken.insert(at, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn kinds_found(text: &str, kinds: Kinds) -> Vec<(Kind, &str)> {
        find(text, kinds)
            .into_iter()
            .map(|span| (span.kind, &text[span.range]))
            .collect()
    }

    #[test]
    fn finds_each_kind_in_order_of_position() {
        let text = "mail bob@example.com or call +1 415 555 0100 from 10.0.0.7, \
                    card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE";
        assert_eq!(
            kinds_found(text, Kinds::ALL),
            vec![
                (Kind::Email, "bob@example.com"),
                (Kind::Phone, "+1 415 555 0100"),
                (Kind::Ip, "10.0.0.7"),
                (Kind::CreditCard, "4111 1111 1111 1111"),
                (Kind::Secret, "AKIAIOSFODNN7EXAMPLE"),
            ]
        );
    }

    #[test]
    fn higher_priority_wins_an_overlap() {
        // The local part looks like a phone number; the address stays one email.
        assert_eq!(
            kinds_found("write to 555-123-4567@example.com", Kinds::ALL),
            vec![(Kind::Email, "555-123-4567@example.com")]
        );
        // Without the email detector the number alone is a phone number.
        assert_eq!(
            kinds_found(
                "write to 555-123-4567@example.com",
                Kinds::of(&[Kind::Phone])
            ),
            Vec::<(Kind, &str)>::new(),
            "a number glued to `@` is not a phone number on its own"
        );
    }

    #[test]
    fn only_the_requested_kinds() {
        let text = "bob@example.com 10.0.0.7";
        assert_eq!(
            kinds_found(text, Kinds::of(&[Kind::Ip])),
            vec![(Kind::Ip, "10.0.0.7")]
        );
        assert!(kinds_found(text, Kinds::NONE).is_empty());
    }

    #[test]
    fn non_ascii_text_around_matches_is_safe() {
        let text = "écrivez à zoë — bob@example.com — ou appelez le 06 12 34 56 78 ✓";
        assert_eq!(
            kinds_found(text, Kinds::ALL),
            vec![
                (Kind::Email, "bob@example.com"),
                (Kind::Phone, "06 12 34 56 78")
            ]
        );
    }

    #[test]
    fn random_text_yields_ordered_disjoint_spans_on_char_boundaries() {
        let mut rng = Rng::new();
        for _ in 0..20_000 {
            let text = rng.text(true);
            let spans = find(&text, Kinds::ALL);
            let mut last_end = 0;
            for span in &spans {
                assert!(span.range.start >= last_end, "{text:?}: {spans:?}");
                assert!(span.range.start < span.range.end, "{text:?}: {spans:?}");
                assert!(text.is_char_boundary(span.range.start), "{text:?}");
                assert!(text.is_char_boundary(span.range.end), "{text:?}");
                last_end = span.range.end;
            }
        }
    }

    #[test]
    fn take_if_free_keeps_order_and_rejects_overlaps() {
        let mut taken = Vec::new();
        let span = |start, end| Span {
            range: start..end,
            kind: Kind::Ip,
        };
        take_if_free(&mut taken, span(10, 20));
        take_if_free(&mut taken, span(0, 5));
        take_if_free(&mut taken, span(20, 25));
        take_if_free(&mut taken, span(4, 11));
        take_if_free(&mut taken, span(12, 13));
        take_if_free(&mut taken, span(7, 7));
        let ranges: Vec<_> = taken.into_iter().map(|s| s.range).collect();
        assert_eq!(ranges, vec![0..5, 10..20, 20..25]);
    }
}
