//! The per-request table of redacted values: it hands out placeholders (`[EMAIL_1]`,
//! `[PHONE_2]`, ...) in order of first appearance, gives the same value the same placeholder
//! every time, and puts the originals back into the response.
//!
//! It lives in the stage value, so it exists for one request only (the host creates a fresh
//! instance per request) and is never logged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::kind::{Kind, Kinds};
use crate::scan;

/// Placeholders handed out so far and the values behind them.
///
/// Only the originals travel to the response phase (the stage state): restoring needs nothing
/// else, and handing out numbers happens in the request phase only.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Vault {
    /// Per kind (by [`Kind::index`]): original value → placeholder number.
    #[serde(skip)]
    numbers: [BTreeMap<String, usize>; 5],
    /// Per kind: the original values, placeholder `n` at index `n - 1`.
    originals: [Vec<String>; 5],
    /// Per kind: how many occurrences were replaced (a value seen twice counts twice).
    #[serde(skip)]
    replaced: [usize; 5],
}

/// The longest placeholder: `[` + the longest label (`CREDIT_CARD`) + `_` + 9 digits + `]`.
const PLACEHOLDER_MAX_LEN: usize = 1 + 11 + 1 + 9 + 1;

/// Where the end of `text` may be the start of a placeholder whose rest is still to come (a
/// `[` followed only by what a placeholder may contain, shorter than the longest one): that
/// tail must be held back until more text arrives. `text.len()` when there is none.
pub fn placeholder_prefix_start(text: &str) -> usize {
    let Some(open) = text.rfind('[') else {
        return text.len();
    };
    let tail = &text.as_bytes()[open + 1..];
    let could_be = tail.len() < PLACEHOLDER_MAX_LEN - 1
        && tail
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
    if could_be { open } else { text.len() }
}

impl Vault {
    /// Replaces every value of `kinds` in `text` with its placeholder, in place.
    pub fn redact(&mut self, text: &mut String, kinds: Kinds) {
        let spans = scan::find(text, kinds);
        if spans.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for span in spans {
            out.push_str(&text[copied..span.range.start]);
            let number = self.number_for(span.kind, &text[span.range.clone()]);
            push_placeholder(&mut out, span.kind, number);
            copied = span.range.end;
        }
        out.push_str(&text[copied..]);
        *text = out;
    }

    /// Replaces every placeholder this vault handed out with its original value, in place.
    /// Text that only looks like a placeholder (`[EMAIL_99]` when there is no 99th email,
    /// `[NAME_1]`) is left as it is.
    pub fn restore(&self, text: &mut String) {
        if self.is_empty() || !text.contains('[') {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut from = 0;
        while let Some(offset) = text[from..].find('[') {
            let open = from + offset;
            match self.placeholder_at(text, open) {
                Some((original, end)) => {
                    out.push_str(&text[copied..open]);
                    out.push_str(original);
                    copied = end;
                    from = end;
                }
                None => from = open + 1,
            }
        }
        if copied == 0 {
            return;
        }
        out.push_str(&text[copied..]);
        *text = out;
    }

    /// Whether nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.originals.iter().all(Vec::is_empty)
    }

    /// How many occurrences of each kind were replaced, for kinds with at least one; never
    /// the values.
    pub fn counts(&self) -> Vec<(Kind, usize)> {
        Kind::BY_PRIORITY
            .into_iter()
            .map(|kind| (kind, self.replaced[kind.index()]))
            .filter(|&(_, count)| count > 0)
            .collect()
    }

    /// The placeholder number of `value`, handing out the next one on first sight.
    fn number_for(&mut self, kind: Kind, value: &str) -> usize {
        let k = kind.index();
        self.replaced[k] += 1;
        if let Some(&number) = self.numbers[k].get(value) {
            return number;
        }
        self.originals[k].push(value.to_string());
        let number = self.originals[k].len();
        self.numbers[k].insert(value.to_string(), number);
        number
    }

    /// The original behind the placeholder that starts with the `[` at `open`, and the end
    /// of the placeholder.
    fn placeholder_at<'a>(&'a self, text: &str, open: usize) -> Option<(&'a str, usize)> {
        let rest = &text[open + 1..];
        let label_len = rest
            .bytes()
            .take_while(|&b| b.is_ascii_uppercase() || b == b'_')
            .count();
        // The label ends at the last `_` (`CREDIT_CARD_12` → `CREDIT_CARD`, `12`).
        let label_and_sep = &rest[..label_len];
        let sep = label_and_sep.rfind('_')?;
        if sep + 1 != label_len {
            return None;
        }
        let kind = Kind::from_label(&label_and_sep[..sep])?;
        let digits = rest[label_len..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let close = label_len + digits;
        if digits == 0 || digits > 9 || rest.as_bytes().get(close) != Some(&b']') {
            return None;
        }
        let number: usize = rest[label_len..close].parse().ok()?;
        let original = self.originals[kind.index()].get(number.checked_sub(1)?)?;
        Some((original.as_str(), open + 1 + close + 1))
    }
}

/// Writes `[LABEL_n]`.
fn push_placeholder(out: &mut String, kind: Kind, number: usize) {
    // Writing to a String cannot fail.
    let _ = write!(out, "[{}_{}]", kind.label(), number);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact_all(vault: &mut Vault, text: &str) -> String {
        let mut text = text.to_string();
        vault.redact(&mut text, Kinds::ALL);
        text
    }

    #[test]
    fn placeholders_are_numbered_per_kind_in_order_of_first_appearance() {
        let mut vault = Vault::default();
        let first = redact_all(
            &mut vault,
            "b@x.org, a@x.org, 10.0.0.1 and b@x.org again; call 555-123-4567",
        );
        assert_eq!(
            first,
            "[EMAIL_1], [EMAIL_2], [IP_1] and [EMAIL_1] again; call [PHONE_1]"
        );
        // Numbering continues across texts of the same request.
        let second = redact_all(&mut vault, "a@x.org or c@x.org from 10.0.0.2");
        assert_eq!(second, "[EMAIL_2] or [EMAIL_3] from [IP_2]");
        assert_eq!(
            vault.counts(),
            vec![(Kind::Email, 5), (Kind::Ip, 2), (Kind::Phone, 1)]
        );
    }

    #[test]
    fn every_placeholder_format() {
        let mut vault = Vault::default();
        let text = redact_all(
            &mut vault,
            "e a@b.co p +44 20 7946 0958 c 4111 1111 1111 1111 i ::1 s AKIAIOSFODNN7EXAMPLE",
        );
        assert_eq!(
            text,
            "e [EMAIL_1] p [PHONE_1] c [CREDIT_CARD_1] i [IP_1] s [SECRET_1]"
        );
    }

    #[test]
    fn restore_round_trips() {
        let mut vault = Vault::default();
        let original = "Mail a@b.com, card 4111-1111-1111-1111, key sk-abcdefghijklmnopqrst1234.";
        let mut text = redact_all(&mut vault, original);
        assert!(!text.contains("a@b.com"));
        vault.restore(&mut text);
        assert_eq!(text, original);
    }

    #[test]
    fn restore_replaces_repeats_and_leaves_unknown_placeholders() {
        let mut vault = Vault::default();
        redact_all(&mut vault, "a@b.com and 4111 1111 1111 1111");
        let mut answer =
            "[EMAIL_1], again [EMAIL_1]; [CREDIT_CARD_1]; [EMAIL_2] [NAME_1] [EMAIL_] [EMAIL_0] \
             [EMAIL_1 [email_1] [[EMAIL_1]] [EMAIL_99999999999999999999]"
                .to_string();
        vault.restore(&mut answer);
        assert_eq!(
            answer,
            "a@b.com, again a@b.com; 4111 1111 1111 1111; [EMAIL_2] [NAME_1] [EMAIL_] [EMAIL_0] \
             [EMAIL_1 [email_1] [a@b.com] [EMAIL_99999999999999999999]"
        );
    }

    #[test]
    fn restore_with_an_empty_vault_is_a_no_op() {
        let vault = Vault::default();
        let mut text = "[EMAIL_1]".to_string();
        vault.restore(&mut text);
        assert_eq!(text, "[EMAIL_1]");
        assert!(vault.is_empty());
        assert!(vault.counts().is_empty());
    }

    #[test]
    fn restore_inverts_redact_on_random_text() {
        let mut rng = crate::testing::Rng::new();
        let mut vault = Vault::default();
        for _ in 0..20_000 {
            let original = rng.text(false);
            let mut text = original.clone();
            vault.redact(&mut text, Kinds::ALL);
            vault.restore(&mut text);
            assert_eq!(text, original);
        }
        assert!(!vault.is_empty(), "the generator should produce some PII");
    }

    #[test]
    fn text_without_pii_is_untouched() {
        let mut vault = Vault::default();
        let text = "Nothing to see: 42 apples, 3.14, 2024-01-15, 12:30, über [EMAIL_1].";
        assert_eq!(redact_all(&mut vault, text), text);
        assert!(vault.is_empty());
    }
}
