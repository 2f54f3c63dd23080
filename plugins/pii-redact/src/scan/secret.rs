//! Secrets: API keys, tokens and private keys, recognised by their published shapes.
//!
//! | shape | example |
//! |---|---|
//! | OpenAI / Anthropic-style `sk-` keys (incl. `sk-proj-`, `sk-ant-`): 20+ key characters with a digit | `sk-proj-Ab3...` |
//! | Stripe secret and restricted keys: `sk_live_`, `sk_test_`, `rk_live_`, `rk_test_` + 16+ | `sk_live_4eC39H...` |
//! | AWS access key ids: `AKIA` / `ASIA` + 16 upper-case letters or digits | `AKIAIOSFODNN7EXAMPLE` |
//! | GitHub tokens: `ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_` + 30+; `github_pat_` + 22+ | `ghp_16C7e42F292c...` |
//! | Slack tokens: `xoxb-`, `xoxa-`, `xoxp-`, `xoxr-`, `xoxs-` + 10+ | `xoxb-123-456-abc` |
//! | Google API keys: `AIza` + exactly 35 | `AIzaSyA...` (39 characters) |
//! | PEM private keys: `-----BEGIN ... PRIVATE KEY-----` through the matching `END` line | |
//! | `Bearer <token>` (any case): the token, 16+ characters with a letter and a digit | `Bearer ya29.a0Af...` |
//! | JWTs: three base64url segments, the first two starting `eyJ` | `eyJhbGciOi...` |
//!
//! A key must not be glued to the characters it is made of (`task-...` is not an `sk-` key).
//! For `Bearer` only the token is the match, so the text keeps `Bearer [SECRET_1]`. A private
//! key with no `END` line (a truncated paste), or with text that is not base64 before it,
//! runs to the end of its base64 body.
//!
//! A failed attempt only reads a run of key characters, and no other attempt can start inside
//! that run (it would be glued), so the scan is linear. [`PemState`] remembers where the next
//! `END` line is and where its body stops being base64, so no byte is searched twice.

use std::ops::Range;

use super::bytes::{at, before, run_end};

/// Fewest key characters after `sk-`.
const MIN_SK_BODY: usize = 20;
/// Fewest characters after a Stripe prefix.
const MIN_STRIPE_BODY: usize = 16;
/// Key characters after `AKIA` / `ASIA`.
const AWS_BODY: usize = 16;
/// Fewest characters after a classic GitHub prefix (real tokens have 36).
const MIN_GITHUB_BODY: usize = 30;
/// Fewest characters after `github_pat_`.
const MIN_GITHUB_PAT_BODY: usize = 22;
/// Fewest characters after a Slack prefix.
const MIN_SLACK_BODY: usize = 10;
/// Characters after `AIza`.
const GOOGLE_BODY: usize = 35;
/// Fewest characters in a bearer token.
const MIN_BEARER_TOKEN: usize = 16;
/// Fewest characters in the first JWT segment (`eyJ` included).
const MIN_JWT_HEADER: usize = 10;

/// Appends the byte range of every secret in `bytes` to `out`.
pub fn find(bytes: &[u8], out: &mut Vec<Range<usize>>) {
    let mut pem = PemState::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // Every shape but PEM starts a word; inside a word, skip to its end at once.
        if b.is_ascii_alphanumeric() && before(bytes, i).is_some_and(|p| p.is_ascii_alphanumeric())
        {
            i = run_end(bytes, i, |b| b.is_ascii_alphanumeric());
            continue;
        }
        let found = match b {
            b's' | b'r' => sk_key(bytes, i).or_else(|| stripe_key(bytes, i)),
            b'A' => aws_key(bytes, i).or_else(|| google_key(bytes, i)),
            b'g' => github_token(bytes, i),
            b'x' => slack_token(bytes, i),
            b'e' => jwt(bytes, i),
            b'B' | b'b' => bearer_token(bytes, i),
            b'-' => private_key(bytes, i, &mut pem),
            _ => None,
        };
        match found {
            Some(range) => {
                i = range.end.max(i + 1);
                out.push(range);
            }
            None => i += 1,
        }
    }
}

/// Letters, digits, `_` and `-`: the characters of most key bodies (and of base64url).
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `bytes[i..]` starts with `prefix` and the byte before `i` is not in `class`.
fn starts_free(bytes: &[u8], i: usize, prefix: &[u8], class: impl Fn(u8) -> bool) -> bool {
    bytes[i..].starts_with(prefix) && !before(bytes, i).is_some_and(class)
}

/// `sk-...`: OpenAI, Anthropic and compatible keys.
fn sk_key(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    if !starts_free(bytes, i, b"sk-", is_key_char) {
        return None;
    }
    let body = i + 3;
    let end = run_end(bytes, body, is_key_char);
    let has_digit = bytes[body..end].iter().any(u8::is_ascii_digit);
    (end - body >= MIN_SK_BODY && has_digit).then_some(i..end)
}

/// `sk_live_...` and friends: Stripe secret and restricted keys.
fn stripe_key(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    let prefix = [&b"sk_live_"[..], b"sk_test_", b"rk_live_", b"rk_test_"]
        .into_iter()
        .find(|p| starts_free(bytes, i, p, is_key_char))?;
    let body = i + prefix.len();
    let end = run_end(bytes, body, |b| b.is_ascii_alphanumeric());
    (end - body >= MIN_STRIPE_BODY && !at(bytes, end).is_some_and(is_key_char)).then_some(i..end)
}

/// `AKIA...` / `ASIA...`: AWS access key ids.
fn aws_key(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    if !(starts_free(bytes, i, b"AKIA", alnum) || starts_free(bytes, i, b"ASIA", alnum)) {
        return None;
    }
    let body = i + 4;
    let end = run_end(bytes, body, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit()
    });
    (end - body == AWS_BODY && !at(bytes, end).is_some_and(alnum)).then_some(i..end)
}

/// `AIza...`: Google API keys, exactly 39 characters.
fn google_key(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    if !starts_free(bytes, i, b"AIza", is_key_char) {
        return None;
    }
    let body = i + 4;
    let end = run_end(bytes, body, is_key_char);
    (end - body == GOOGLE_BODY).then_some(i..end)
}

/// `ghp_...`, `gho_...`, `ghs_...`, `ghu_...`, `ghr_...` and `github_pat_...`.
fn github_token(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    if starts_free(bytes, i, b"github_pat_", is_key_char) {
        let body = i + 11;
        let end = run_end(bytes, body, |b| b.is_ascii_alphanumeric() || b == b'_');
        return (end - body >= MIN_GITHUB_PAT_BODY).then_some(i..end);
    }
    let kind = at(bytes, i + 2)?;
    if !(starts_free(bytes, i, b"gh", is_key_char)
        && matches!(kind, b'p' | b'o' | b's' | b'u' | b'r')
        && at(bytes, i + 3) == Some(b'_'))
    {
        return None;
    }
    let body = i + 4;
    let end = run_end(bytes, body, |b| b.is_ascii_alphanumeric());
    (end - body >= MIN_GITHUB_BODY && !at(bytes, end).is_some_and(is_key_char)).then_some(i..end)
}

/// `xoxb-...` and friends: Slack tokens.
fn slack_token(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    if !(starts_free(bytes, i, b"xox", is_key_char)
        && matches!(at(bytes, i + 3), Some(b'b' | b'a' | b'p' | b'r' | b's'))
        && at(bytes, i + 4) == Some(b'-'))
    {
        return None;
    }
    let body = i + 5;
    let end = run_end(bytes, body, |b| b.is_ascii_alphanumeric() || b == b'-');
    (end - body >= MIN_SLACK_BODY).then_some(i..end)
}

/// `eyJ...` `.` `eyJ...` `.` `...`: a JSON Web Token.
fn jwt(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    let glued = |b: u8| is_key_char(b) || b == b'.';
    if !starts_free(bytes, i, b"eyJ", glued) {
        return None;
    }
    let header_end = run_end(bytes, i, is_key_char);
    if header_end - i < MIN_JWT_HEADER || at(bytes, header_end) != Some(b'.') {
        return None;
    }
    let payload = header_end + 1;
    if !bytes[payload..].starts_with(b"eyJ") {
        return None;
    }
    let payload_end = run_end(bytes, payload, is_key_char);
    if at(bytes, payload_end) != Some(b'.') {
        return None;
    }
    Some(i..run_end(bytes, payload_end + 1, is_key_char))
}

/// The token after `Bearer ` (any case), not the word itself.
fn bearer_token(bytes: &[u8], i: usize) -> Option<Range<usize>> {
    let word = bytes.get(i..i + 6)?;
    if !word.eq_ignore_ascii_case(b"bearer") || before(bytes, i).is_some_and(is_key_char) {
        return None;
    }
    let token = run_end(bytes, i + 6, |b| b == b' ' || b == b'\t');
    if token == i + 6 {
        return None;
    }
    let is_token_char = |b: u8| is_key_char(b) || matches!(b, b'.' | b'~' | b'+' | b'/' | b'=');
    let end = run_end(bytes, token, is_token_char);
    let text = &bytes[token..end];
    let ok = text.len() >= MIN_BEARER_TOKEN
        && text.iter().any(u8::is_ascii_digit)
        && text.iter().any(u8::is_ascii_alphabetic);
    ok.then_some(token..end)
}

/// What the private-key scanner has learnt about the rest of the text, so that no byte is
/// searched or checked twice whatever the number of `BEGIN` lines.
#[derive(Default)]
struct PemState {
    /// The position of the next `-----END ` line found so far.
    next_end: Option<usize>,
    /// The first byte before `next_end` that cannot be part of a PEM body, if one was seen.
    bad_before_end: Option<usize>,
    /// No `-----END ` line follows the last search position.
    no_more_ends: bool,
}

impl PemState {
    /// The position of the first `-----END ` at or after `from`.
    fn end_after(&mut self, bytes: &[u8], from: usize) -> Option<usize> {
        if let Some(end) = self.next_end
            && end >= from
        {
            return Some(end);
        }
        if self.no_more_ends {
            return None;
        }
        let found = find_sub(&bytes[from..], PEM_END).map(|at| from + at);
        self.next_end = found;
        self.bad_before_end = None;
        self.no_more_ends = found.is_none();
        found
    }

    /// Whether `bytes[from..end]` (with `end` = [`next_end`](Self::next_end)) is a PEM body.
    fn body_ok(&mut self, bytes: &[u8], from: usize, end: usize) -> bool {
        if self.bad_before_end.is_some_and(|bad| bad >= from) {
            return false;
        }
        match bytes[from..end].iter().position(|&b| !is_pem_body(b)) {
            Some(bad) => {
                self.bad_before_end = Some(from + bad);
                false
            }
            None => true,
        }
    }
}

/// The start of a PEM footer line.
const PEM_END: &[u8] = b"-----END ";

/// Bytes of a PEM body: base64, line breaks and `Proc-Type: 4,ENCRYPTED`-style headers.
fn is_pem_body(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || b.is_ascii_whitespace()
        || matches!(b, b'+' | b'/' | b'=' | b':' | b',' | b'-')
}

/// A PEM `-----BEGIN ... PRIVATE KEY-----` block through its `END` line; without one (a
/// truncated paste), the header and the body lines that follow it.
fn private_key(bytes: &[u8], i: usize, pem: &mut PemState) -> Option<Range<usize>> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let is_label = |b: u8| b.is_ascii_uppercase() || b == b' ';
    if !bytes[i..].starts_with(BEGIN) {
        return None;
    }
    let label_start = i + BEGIN.len();
    let label_end = run_end(bytes, label_start, is_label);
    let label = &bytes[label_start..label_end];
    if !bytes[label_end..].starts_with(DASHES) || find_sub(label, b"PRIVATE KEY").is_none() {
        return None;
    }
    let header_end = label_end + DASHES.len();
    if let Some(end_at) = pem.end_after(bytes, header_end)
        && pem.body_ok(bytes, header_end, end_at)
    {
        let end_label_end = run_end(bytes, end_at + PEM_END.len(), is_label);
        let close = if bytes[end_label_end..].starts_with(DASHES) {
            end_label_end + DASHES.len()
        } else {
            end_label_end
        };
        return Some(i..close);
    }
    let mut end = header_end;
    let mut line = run_end(bytes, end, |b| b == b'\r' || b == b'\n');
    while line > end && line < bytes.len() {
        let line_end = run_end(bytes, line, |b| b != b'\r' && b != b'\n');
        let text = &bytes[line..line_end];
        let base64 = text
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        let header = text.contains(&b':') && text.iter().all(|&b| is_pem_body(b));
        if !(base64 || header) {
            break;
        }
        end = line_end;
        line = run_end(bytes, end, |b| b == b'\r' || b == b'\n');
    }
    Some(i..end)
}

/// The first position of `needle` in `hay` (naive; `needle` is a short constant).
fn find_sub(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(text.as_bytes(), &mut out);
        out.into_iter().map(|r| &text[r]).collect()
    }

    fn is_one_secret(text: &str) {
        assert_eq!(secrets(text), vec![text], "{text}");
    }

    #[test]
    fn api_keys() {
        for text in [
            "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_A-b7C",
            "sk-ant-api03-Zx9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "rk_test_51H8a9bC0dEfGhIjKlMn",
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJ",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxp-1234-5678-abcdef",
            "AIzaSyA-1234567890abcdefghijklmnopqrstu",
        ] {
            is_one_secret(text);
        }
    }

    #[test]
    fn keys_in_text_and_config_snippets() {
        assert_eq!(
            secrets("OPENAI_API_KEY=sk-abcdefghijklmnopqrst1234 and \"AKIAIOSFODNN7EXAMPLE\""),
            vec!["sk-abcdefghijklmnopqrst1234", "AKIAIOSFODNN7EXAMPLE"]
        );
    }

    #[test]
    fn look_alikes_are_not_secrets() {
        for text in [
            "sk-learn-is-a-great-library-for-machine-learning",
            "sk-short1",
            "task-abcdefghijklmnopqrstu1234",
            "risk_live_abcdefghijklmnop1234",
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLEX",
            "AKIAiosfodnn7example",
            "XAKIAIOSFODNN7EXAMPLE",
            "AIzaSyA-1234567890abcdefghijklmnopqrs",
            "AIzaSyA-1234567890abcdefghijklmnopqrstuv",
            "ghp_short123",
            "ghx_16C7e42F292c6912E7710c838347Ae178B4a",
            "xoxz-1234567890-abc",
            "xoxb-123",
            "Bearer of bad news",
            "the bearer   abcdefghijklmnopqrstuvwxyz",
            "eyJust kidding. eyJo.eyJ",
        ] {
            assert!(
                secrets(text).is_empty(),
                "{text} matched {:?}",
                secrets(text)
            );
        }
    }

    #[test]
    fn bearer_keeps_the_word() {
        let text = "Authorization: Bearer ya29.a0AfH6SMBx-Q_9z+abc/def==";
        assert_eq!(secrets(text), vec!["ya29.a0AfH6SMBx-Q_9z+abc/def=="]);
        assert_eq!(
            secrets("authorization: bearer\tabcDEF1234567890xyz"),
            vec!["abcDEF1234567890xyz"]
        );
    }

    #[test]
    fn jwts() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                   eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.\
                   SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        is_one_secret(jwt);
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
        is_one_secret(unsigned);
        let sentence = format!("token {jwt}. Thanks");
        assert_eq!(secrets(&sentence), vec![jwt]);
        let bearer = format!("Bearer {jwt}");
        assert_eq!(secrets(&bearer), vec![jwt]);
    }

    #[test]
    fn private_key_blocks() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn\n\
                   /ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n-----END RSA PRIVATE KEY-----";
        let text = format!("my key:\n{key}\nwhy does ssh reject it?");
        assert_eq!(secrets(&text), vec![key]);
        let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----";
        is_one_secret(openssh);
    }

    #[test]
    fn truncated_private_key_stops_after_its_body() {
        let text = "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMIIEvQIBADANBg\nkqhkiG9w0B==\n\
                    \nwhat is this?";
        assert_eq!(
            secrets(text),
            vec![
                "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMIIEvQIBADANBg\nkqhkiG9w0B=="
            ]
        );
        let two =
            "-----BEGIN PRIVATE KEY-----\nAAAA\nstop here\n-----BEGIN EC PRIVATE KEY-----\nBBBB";
        assert_eq!(
            secrets(two),
            vec![
                "-----BEGIN PRIVATE KEY-----\nAAAA",
                "-----BEGIN EC PRIVATE KEY-----\nBBBB"
            ]
        );
    }

    #[test]
    fn public_keys_and_certificates_are_not_secrets() {
        for text in [
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl\n-----END CERTIFICATE-----",
            "----- not a key -----",
        ] {
            assert!(secrets(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn long_runs_stay_linear() {
        assert!(secrets(&"eyJ".repeat(50_000)).is_empty());
        assert!(secrets(&"bearer ".repeat(50_000)).is_empty());
        assert!(secrets(&"-----BEGIN PRIVATE KEY-----x ".repeat(10_000)).len() == 10_000);
    }
}
